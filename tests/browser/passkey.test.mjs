// Issue #19 (first slice) in headless Chromium: a passkey as a native second factor. With the
// DevTools virtual authenticator (CTAP2, internal, resident keys, user verification), a user adds
// a passkey from the account page's factors journey, signs out, signs in with the password, is
// asked for the passkey, passes it, and the session's amr and an app's ID token have `hwk` (and
// `mfa`). Without the authenticator, or with a forged credential, the page says so: never a 500,
// never signed in. A counter that goes back is refused and audited; an IP-literal public_url
// offers no passkey.
//
// The broker's public_url is http://localhost:PORT (an IP address cannot be a WebAuthn RP id).
//
//   node --test --test-concurrency=1 tests/browser/passkey.test.mjs

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import {
  startProvider,
  startCallbackServer,
  authorizationRequest,
  sha256Hex,
  launchBrowser,
  sessionCookie,
  opsClient,
  adminApi,
  backend,
  pageWithAuthenticator,
  LEAK_PATTERN,
  REPO_ROOT,
} from './helpers.mjs';

const EN = JSON.parse(readFileSync(join(REPO_ROOT, 'templates', 'locales', 'en.json'), 'utf8'));

const OPS_SECRET = randomBytes(24).toString('base64url');
const APP_SECRET = randomBytes(24).toString('base64url');
const PASSKEY_TOML = ['[mfa]', 'required = "optional"', '', '[mfa.passkey]', 'enabled = true'].join('\n');

/**
 * These tests use the passkey as a second factor: the user does not pick it from the sign-in
 * page's autofill (passwordless.test.mjs covers that).
 */
const withAuthenticator = (context) => pageWithAuthenticator(context, { autofill: false });

async function submit(page, selector) {
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && r.request().frame() === page.mainFrame()),
    page.click(selector),
  ]);
  await page.waitForLoadState('load');
  return res;
}

async function signInWithPassword(page, base, provider) {
  await page.goto(`${base}/login`);
  await page.fill('#email', provider.email);
  await page.fill('#password', provider.password);
  const res = await submit(page, '#login-submit');
  assert.ok([200, 303].includes(res.status()), `POST /login answered ${res.status()}`);
}

async function assertNoLeak(page) {
  assert.doesNotMatch(await page.locator('body').innerText(), LEAK_PATTERN, `no internal error text at ${page.url()}`);
}

/** Signs in with the password, then the passkey page (straight to it, or through the choice). */
async function toPasskeyPage(page, base, provider) {
  await signInWithPassword(page, base, provider);
  if (await page.locator('main#mfa-choose').count()) {
    await submit(page, 'button.factor[data-factor="passkey"]');
  }
  await page.locator('main#mfa-form[data-factor="passkey"]').waitFor({ timeout: 10_000 });
}

/** Enrols a passkey from /account/factors (signed in already); ends back at /account. */
async function enrolPasskey(page, base) {
  await page.goto(`${base}/account`);
  await page.click('a#mfa-setup');
  await page.waitForURL(`${base}/account/factors`);
  await page.locator('main#mfa-choose').waitFor();
  const enroll = page.locator('button.enroll[data-factor="passkey"]');
  assert.equal(await enroll.count(), 1, 'adding a passkey is offered');
  await submit(page, 'button.enroll[data-factor="passkey"]');
  await page.locator('main#mfa-form[data-factor="passkey"]').waitFor();
  assert.equal(await page.locator('#mfa-form-heading').innerText(), EN.passkey_register_heading);
  await page.locator('#passkey-start').waitFor({ state: 'visible' });
  const answered = await submit(page, '#passkey-start');
  assert.ok([200, 303].includes(answered.status()), `the enrolment answer: ${answered.status()}`);
  await assertNoLeak(page);
  if (await page.locator('#recovery-codes').count()) {
    await submit(page, '#mfa-continue');
  }
  await page.waitForURL(`${base}/account`, { timeout: 10_000 });
  await page.locator('main#account').waitFor();
}

describe(`passkeys as a second factor in Chromium (${backend})`, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser({ locale: 'en-US' });
  });
  after(async () => {
    await browser?.close();
  });

  const test = (name, fn) =>
    it(name, { timeout: 120_000 }, async (t) => {
      let provider;
      const start = async (clients = []) => {
        provider = await startProvider({
          extraToml: PASSKEY_TOML,
          publicHost: 'localhost',
          clients: [opsClient(OPS_SECRET), ...clients],
        });
        t.after(() => provider.stop());
        return provider;
      };
      try {
        await fn({ t, start });
      } catch (e) {
        if (provider && e && typeof e === 'object') e.message = `${e.message}\n${provider.logs()}`;
        throw e;
      }
    });

  test('a user adds a passkey from the account page, signs out, signs in with the password and the passkey, and the session and ID token amr have hwk', async ({ t, start }) => {
    const callback = await startCallbackServer('/cb');
    t.after(() => callback.close());
    const provider = await start([
      { id: 'webapp', name: 'Web App', secret_sha256: sha256Hex(APP_SECRET), redirect_uris: [callback.url] },
    ]);
    const base = provider.url;
    assert.match(base, /^http:\/\/localhost:\d+$/);
    const context = await browser.newContext();
    t.after(() => context.close());
    const { page, cdp, authenticatorId, problems } = await withAuthenticator(context);

    // First sign-in: no factor yet, and MFA is optional: straight to the account.
    await signInWithPassword(page, base, provider);
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await enrolPasskey(page, base);
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.equal(credentials.length, 1, 'one credential on the authenticator');

    // Sign out, sign in: the password, then the passkey (the only factor: straight to it).
    await submit(page, '#logout-submit');
    assert.equal(await sessionCookie(context), undefined, 'signed out');
    await signInWithPassword(page, base, provider);
    if (await page.locator('main#mfa-choose').count()) {
      await submit(page, 'button.factor[data-factor="passkey"]');
    }
    await page.locator('main#mfa-form[data-factor="passkey"]').waitFor({ timeout: 10_000 });
    assert.equal(await sessionCookie(context), undefined, 'no session before the passkey');
    assert.equal(await page.locator('#mfa-form-heading').innerText(), EN.passkey_authenticate_heading);
    await page.locator('#passkey-start').waitFor({ state: 'visible' });
    await submit(page, '#passkey-start');
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    const amr = await page.locator('#session-info [data-field="amr"]').innerText();
    assert.match(amr, /\bhwk\b/, `the session amr: ${amr}`);
    assert.match(amr, /\bmfa\b/, `the session amr: ${amr}`);
    assert.match(amr, /\bpwd\b/, `the session amr: ${amr}`);
    const after = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.ok(after.credentials[0].signCount >= 1, 'the authenticator counted the assertion');

    // An app's sign-in on this session: its ID token says the same (computed from the evidence).
    const config = await client.discovery(new URL(provider.issuer), 'webapp', undefined, client.ClientSecretBasic(APP_SECRET), {
      execute: [client.allowInsecureRequests],
    });
    const req = await authorizationRequest(config, callback.url);
    const arrived = callback.next({ timeoutMs: 20_000 });
    await page.goto(req.url.href);
    const back = await arrived;
    const tokens = await client.authorizationCodeGrant(config, back, {
      pkceCodeVerifier: req.pkceCodeVerifier,
      expectedState: req.expectedState,
      expectedNonce: req.expectedNonce,
    });
    const claims = tokens.claims();
    assert.ok(claims.amr.includes('hwk') && claims.amr.includes('mfa'), `ID token amr: ${JSON.stringify(claims.amr)}`);
    assert.deepEqual(problems, [], 'no CSP violation or script error');
  });

  test('without the authenticator, or with a forged credential, the passkey page says so and nothing is signed in (never a 500); five wrong answers lock it', async ({ t, start }) => {
    const provider = await start();
    const base = provider.url;
    const context = await browser.newContext();
    t.after(() => context.close());
    const { page, cdp, authenticatorId } = await withAuthenticator(context);
    await signInWithPassword(page, base, provider);
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await enrolPasskey(page, base);
    await submit(page, '#logout-submit');

    await signInWithPassword(page, base, provider);
    if (await page.locator('main#mfa-choose').count()) {
      await submit(page, 'button.factor[data-factor="passkey"]');
    }
    await page.locator('main#mfa-form[data-factor="passkey"]').waitFor({ timeout: 10_000 });

    // A forged credential posted through the page's own form: refused with the page, 401.
    const postForged = async () => {
      await page.evaluate(() => {
        document.getElementById('passkey-credential').value = JSON.stringify({
          id: 'AAAA',
          rawId: 'AAAA',
          type: 'public-key',
          response: { authenticatorData: 'AAAA', clientDataJSON: 'AAAA', signature: 'AAAA', userHandle: null },
        });
      });
      // Submitted after evaluate returns (the navigation must not end the evaluation); resolves
      // once the answer's page has loaded, so the next evaluation runs in it.
      const [res] = await Promise.all([
        page.waitForNavigation({ waitUntil: 'load' }),
        page.evaluate(() => setTimeout(() => document.getElementById('mfa-answer').submit(), 0)),
      ]);
      return res;
    };
    const forged = await postForged();
    assert.equal(forged.status(), 401, 'a forged credential is refused');
    await page.locator('main#mfa-form[data-factor="passkey"]').waitFor();
    assert.ok((await page.locator('#mfa-error').innerText()).length > 0, 'the page says why');
    await assertNoLeak(page);
    assert.equal(await sessionCookie(context), undefined, 'not signed in');

    // The authenticator is gone: a new authenticator without the credential answers nothing
    // usable; the page shows its message and stays.
    await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
    await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true },
    });
    await page.locator('#passkey-start').waitFor({ state: 'visible' });
    await page.click('#passkey-start');
    await page.locator('#passkey-cancelled').waitFor({ state: 'visible', timeout: 30_000 });
    assert.equal(await page.locator('#passkey-cancelled').innerText(), EN.passkey_cancelled);
    await assertNoLeak(page);
    assert.equal(await sessionCookie(context), undefined, 'not signed in');

    // The host's attempt limit holds for a native factor too: the fifth wrong answer locks it.
    for (let i = 2; i <= 4; i++) {
      assert.equal((await postForged()).status(), 401, `forged answer ${i}`);
    }
    const locked = await postForged();
    assert.equal(locked.status(), 429, 'the fifth wrong answer locks the passkey');
    await page.locator('main#mfa-choose').waitFor();
    assert.equal(await page.locator('#mfa-error').innerText(), EN.mfa_locked);
    await assertNoLeak(page);
    assert.equal(await sessionCookie(context), undefined, 'not signed in');
  });

  test('an authenticator whose signature counter goes back (a cloned key) is refused and audited', async ({ t, start }) => {
    const provider = await start();
    const base = provider.url;
    const admin = adminApi(provider, OPS_SECRET);
    const context = await browser.newContext();
    t.after(() => context.close());
    const { page, cdp, authenticatorId } = await withAuthenticator(context);
    await signInWithPassword(page, base, provider);
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await enrolPasskey(page, base);
    await submit(page, '#logout-submit');
    // One good sign-in: the broker now knows the counter the authenticator reached.
    await toPasskeyPage(page, base, provider);
    await submit(page, '#passkey-start');
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await submit(page, '#logout-submit');

    // The "clone": the same key with its counter back at zero.
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    assert.equal(credentials.length, 1);
    assert.ok(credentials[0].signCount >= 1, `counter ${credentials[0].signCount}`);
    await cdp.send('WebAuthn.clearCredentials', { authenticatorId });
    await cdp.send('WebAuthn.addCredential', { authenticatorId, credential: { ...credentials[0], signCount: 0 } });

    await toPasskeyPage(page, base, provider);
    const refused = await submit(page, '#passkey-start');
    assert.equal(refused.status(), 401, 'a counter that went back is refused');
    await page.locator('main#mfa-form[data-factor="passkey"]').waitFor();
    assert.match(await page.locator('#mfa-error').innerText(), /copied/, 'the page says why');
    await assertNoLeak(page);
    assert.equal(await sessionCookie(context), undefined, 'not signed in');
    const { events } = await admin.get('/admin/v1/audit?kind=mfa_failed');
    assert.ok(
      events.some((e) => e.reason === 'passkey:counter_regressed' && e.user_id),
      `an mfa_failed event for the counter: ${JSON.stringify(events)}`,
    );
  });

  it('with an IP address in public_url the broker warns at start and offers no passkey', { timeout: 60_000 }, async (t) => {
    const provider = await startProvider({ extraToml: PASSKEY_TOML });
    t.after(() => provider.stop());
    assert.match(provider.url, /^http:\/\/127\.0\.0\.1:/);
    const logs = provider.logs();
    assert.match(logs, /server\.public_url/, 'the warning names server.public_url');
    assert.match(logs, /passkeys are not offered/);
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    await signInWithPassword(page, provider.url, provider);
    await page.waitForURL(`${provider.url}/account`, { timeout: 10_000 });
    assert.equal(await page.locator('a#mfa-setup').count(), 0, 'no second factor to set up');
  });
});
