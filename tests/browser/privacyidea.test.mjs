// The privacyIDEA factor (plugins/privacyidea, issue #18) in headless Chromium, for an app that is
// a real relying party (openid-client verifies the ID token): the user's second factor is checked
// by a real privacyIDEA 3.14 (tests/peers/privacyidea) with codes from an independent generator
// (Debian oathtool). The broker holds the service credential (a file) and writes it into the
// `Authorization` header of requests to privacyIDEA's origin only. A wrong code and a replayed one
// are refused and the page says which (in English, and in Korean); the right one signs the app in
// with amr otp and mfa.
//
// Needs, besides what every browser test needs (helpers.mjs): the plugins built by
// plugins/build.sh (or CONCIERGE_TEST_PLUGIN_DIR), Debian's `oathtool`, and the privacyIDEA venv
// (tests/peers/privacyidea/install.sh; the first start installs it).
//
//   node --test --test-concurrency=1 tests/browser/privacyidea.test.mjs

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import { startPrivacyIdea } from '../peers/privacyidea/privacyidea.mjs';
import {
  startProvider,
  startCallbackServer,
  launchBrowser,
  sessionCookie,
  sha256Hex,
  pluginManifest,
  mfaToml,
  oathtool,
  backend,
  LEAK_PATTERN,
  authorizationRequest,
} from './helpers.mjs';

const SECRET = randomBytes(24).toString('base64url');
const PASSWORD = 'alice-password-1';
const HANGUL = /[\uac00-\ud7a3]/;

/** A code for `seed` that is none of the codes privacyIDEA could accept now (±180 s, and more). */
function wrongCode(seed) {
  const now = Date.now() / 1000;
  const near = new Set();
  for (let k = -8; k <= 8; k++) near.add(oathtool(seed, now + 30 * k));
  for (let n = 0; ; n += 7919) {
    const code = String(n).padStart(6, '0');
    if (!near.has(code)) return code;
  }
}

/** The visible text of the element, whitespace collapsed. */
async function text(page, selector) {
  return ((await page.locator(selector).first().textContent()) ?? '').replace(/\s+/g, ' ').trim();
}

/** Clicks `selector` (a form's submit button) and resolves with the response to the POST it sends. */
async function submit(page, selector) {
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && r.request().frame() === page.mainFrame()),
    page.click(selector),
  ]);
  return res;
}

describe(`the privacyIDEA factor in Chromium (${backend})`, () => {
  let pi;
  let provider;
  let callback;
  let browser;
  let app;
  // privacyIDEA takes each time step's code once, and no code of a step before the last accepted
  // one; it takes codes up to 180 s ahead. Each accepted code is the next unused step's.
  let lastStep = 0;
  function freshCode() {
    lastStep = Math.max(Math.floor(Date.now() / 30_000), lastStep + 1);
    return oathtool(pi.seed_base32, lastStep * 30);
  }

  before(async () => {
    pi = await startPrivacyIdea();
    callback = await startCallbackServer('/cb');
    const plugin = pluginManifest('privacyidea', {
      grants: ['http'],
      more: { timeout: '5s' },
      config: { validate_url: pi.validate_url, user_name: 'local_part' },
    });
    const http = [
      '[mfa.plugins.http]',
      `origins = ["${pi.base_url}"]`,
      '',
      '[[mfa.plugins.http.secrets]]',
      'name = "pi-credential"',
      `file = ${JSON.stringify(pi.credential_file)}`,
      `origins = ["${pi.base_url}"]`,
      'header = "Authorization"',
    ].join('\n');
    provider = await startProvider({
      clients: [{ id: 'webapp', name: 'Web App', secret_sha256: sha256Hex(SECRET), redirect_uris: [callback.url] }],
      users: [{ email: pi.email, name: 'Alice', password: PASSWORD }],
      extraToml: mfaToml({
        settings: { required: 'required', max_attempts: 10 },
        plugins: [`${plugin}\n\n${http}`],
      }),
    });
    browser = await launchBrowser();
    const config = await client.discovery(new URL(provider.issuer), 'webapp', undefined, client.ClientSecretBasic(SECRET), {
      execute: [client.allowInsecureRequests],
    });
    app = {
      request: () => authorizationRequest(config, callback.url, { scope: 'openid email' }),
      redeem: async (req, url) =>
        (await client.authorizationCodeGrant(config, url, {
          pkceCodeVerifier: req.pkceCodeVerifier,
          expectedState: req.expectedState,
          expectedNonce: req.expectedNonce,
        })).claims(),
    };
  });

  after(async () => {
    await browser?.close();
    await provider?.stop();
    await callback?.close();
    await pi?.stop();
  });

  /** The app's sign-in up to the privacyIDEA page (the only factor: no choice). */
  async function toChallenge(page) {
    const req = await app.request();
    await page.goto(req.url.href);
    await page.fill('#email', provider.email);
    await page.fill('#password', provider.password);
    await submit(page, '#login-submit');
    await page.locator('main#mfa-form[data-factor="privacyidea"]').waitFor({ timeout: 10_000 });
    return req;
  }

  /** Types `code` and submits: the refusal's status and message. */
  async function refusedCode(page, code) {
    await page.fill('input[name="code"]', code);
    const res = await submit(page, '#mfa-submit');
    await page.locator('#mfa-error').waitFor();
    return { status: res.status(), message: await text(page, '#mfa-error') };
  }

  /** Types `code`, submits, and waits until the app has the ID token's claims. */
  async function accepted(page, req, code) {
    const arrived = callback.next({ timeoutMs: 20_000 });
    arrived.catch(() => {});
    await page.fill('input[name="code"]', code);
    await page.click('#mfa-submit');
    return app.redeem(req, await arrived);
  }

  function assertSecondFactor(claims) {
    assert.equal(claims.email, pi.email);
    for (const m of ['pwd', 'otp', 'mfa']) {
      assert.ok(claims.amr?.includes(m), `amr ${JSON.stringify(claims.amr)} names ${m}`);
    }
  }

  it('a wrong code is refused as wrong, then the right one signs the app in', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const req = await toChallenge(page);
      assert.match(await text(page, '#mfa-intro'), /token's code/);

      const wrong = await refusedCode(page, wrongCode(pi.seed_base32));
      assert.equal(wrong.status, 401);
      assert.match(wrong.message, /not correct/);
      assert.equal(await sessionCookie(context), undefined);

      const claims = await accepted(page, req, freshCode());
      assertSecondFactor(claims);
      assert.ok(await sessionCookie(context), 'signed in at the broker');
      assert.doesNotMatch(await page.content(), LEAK_PATTERN);
    } finally {
      await context.close();
    }
  });

  it('a replayed code is refused as already used (in Korean too); the next one signs in', async () => {
    // A code privacyIDEA accepts once.
    const code = freshCode();
    const next = freshCode();
    const first = await browser.newContext();
    try {
      const page = await first.newPage();
      const req = await toChallenge(page);
      assertSecondFactor(await accepted(page, req, code));
    } finally {
      await first.close();
    }

    // The same code again, from another browser: refused, the page says it was used.
    const second = await browser.newContext();
    try {
      const page = await second.newPage();
      const req = await toChallenge(page);
      const replayed = await refusedCode(page, code);
      assert.equal(replayed.status, 401);
      assert.match(replayed.message, /already used/);
      assert.equal(await sessionCookie(second), undefined);
      // The next step's code is unused: it signs in.
      assertSecondFactor(await accepted(page, req, next));
    } finally {
      await second.close();
    }

    // From a Korean browser, the code accepted last: the same refusal, in Korean.
    const korean = await browser.newContext({ locale: 'ko-KR' });
    try {
      const page = await korean.newPage();
      await toChallenge(page);
      assert.match(await text(page, '#mfa-intro'), HANGUL);
      const replayed = await refusedCode(page, next);
      assert.equal(replayed.status, 401);
      assert.match(replayed.message, /이미 사용한 코드/);
      assert.equal(await sessionCookie(korean), undefined);
    } finally {
      await korean.close();
    }
  });
});
