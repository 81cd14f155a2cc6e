// Issue #19 in headless Chromium: passkeys as a first factor without a password, and the
// phishing-resistant level (urn:concierge:loa:3). With the DevTools virtual authenticator (CTAP2,
// internal, resident keys, user verification), a user who added a passkey signs in to an app
// (openid-client) through the sign-in page's "Sign in with a passkey" button and through the
// browser's autofill of the email field (conditional UI), never typing a password; the ID token
// says loa:3 with amr hwk, user, phr, mfa. An app that requires loa:3 (client mfa =
// "phishing_resistant") and an app asking for it with acr_values get it only through a passkey: a
// password + TOTP session is stepped up, TOTP alone is not enough. An authenticator without user
// verification, and a forged answer, are refused with the page (never a 500).
//
// The broker's public_url is http://localhost:PORT (an IP address cannot be a WebAuthn RP id).
//
//   node --test --test-concurrency=1 tests/browser/passwordless.test.mjs

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
  pluginManifest,
  oathtool,
  pageWithAuthenticator,
  backend,
  LEAK_PATTERN,
  REPO_ROOT,
} from './helpers.mjs';

const EN = JSON.parse(readFileSync(join(REPO_ROOT, 'templates', 'locales', 'en.json'), 'utf8'));
const KO = JSON.parse(readFileSync(join(REPO_ROOT, 'templates', 'locales', 'ko.json'), 'utf8'));
const MOBILE = { viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };
const LOA2 = 'urn:concierge:loa:2';
const LOA3 = 'urn:concierge:loa:3';
const OPS_SECRET = randomBytes(24).toString('base64url');
const APP_SECRET = randomBytes(24).toString('base64url');
const TOTP = () => pluginManifest('totp', { grants: ['clock', 'random', 'state', 'log'] });

async function submit(page, selector) {
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && r.request().frame() === page.mainFrame()),
    page.click(selector),
  ]);
  await page.waitForLoadState('load');
  return res;
}

async function assertNoLeak(page) {
  assert.doesNotMatch(await page.locator('body').innerText(), LEAK_PATTERN, `no internal error text at ${page.url()}`);
}

async function passwordStep(page, provider) {
  await page.locator('main#login').waitFor({ timeout: 10_000 });
  await page.fill('#email', provider.email);
  await page.fill('#password', provider.password);
  await submit(page, '#login-submit');
}

/** Adds a passkey from /account (signed in, nothing else to prove first); back at /account. */
async function addPasskey(page, base) {
  await page.goto(`${base}/account`);
  await page.click('a#mfa-setup');
  await page.locator('main#mfa-choose').waitFor();
  await submit(page, 'button.enroll[data-factor="passkey"]');
  await page.locator('#passkey-start').waitFor({ state: 'visible' });
  await submit(page, '#passkey-start');
  await assertNoLeak(page);
  if (await page.locator('#recovery-codes').count()) {
    await submit(page, '#mfa-continue');
  }
  await page.waitForURL(`${base}/account`, { timeout: 10_000 });
}

/** An app on the broker: openid-client from discovery; `go` sends the browser and redeems. */
async function downstreamApp(provider, callback, id) {
  const config = await client.discovery(new URL(provider.issuer), id, undefined, client.ClientSecretBasic(APP_SECRET), {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
  });
  return {
    config,
    async start(page, extra = {}) {
      const req = await authorizationRequest(config, callback.url, extra);
      const arrived = callback.next({ timeoutMs: 30_000 });
      await page.goto(req.url.href);
      return { req, arrived, page };
    },
    async redeem({ req, arrived, page }) {
      const back = await arrived;
      // The browser is at the app now (before the next navigation starts).
      await page.waitForURL((u) => u.pathname === '/cb', { timeout: 10_000 });
      const tokens = await client.authorizationCodeGrant(config, back, {
        pkceCodeVerifier: req.pkceCodeVerifier,
        expectedState: req.expectedState,
        expectedNonce: req.expectedNonce,
      });
      return tokens.claims();
    },
  };
}

describe(`passkeys without a password, and the phishing-resistant level, in Chromium (${backend})`, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser({ locale: 'en-US' });
  });
  after(async () => {
    await browser?.close();
  });

  const test = (name, fn) =>
    it(name, { timeout: 180_000 }, async (t) => {
      let provider;
      const callback = await startCallbackServer('/cb');
      t.after(() => callback.close());
      const start = async ({ mfa = ['[mfa]', 'required = "optional"'], clients = [] } = {}) => {
        provider = await startProvider({
          extraToml: [...mfa, '', '[mfa.passkey]', 'enabled = true'].join('\n'),
          publicHost: 'localhost',
          clients: [
            opsClient(OPS_SECRET),
            ...clients.map((c) => ({
              name: c.id,
              secret_sha256: sha256Hex(APP_SECRET),
              redirect_uris: [callback.url],
              ...c,
            })),
          ],
        });
        t.after(() => provider.stop());
        return provider;
      };
      try {
        await fn({ t, start, callback });
      } catch (e) {
        if (provider && e && typeof e === 'object') e.message = `${e.message}\n${provider.logs()}`;
        throw e;
      }
    });

  test('with a passkey added, the user signs in to an app through the button without a password: loa:3, amr hwk user phr mfa', async ({ t, start, callback }) => {
    const provider = await start({ clients: [{ id: 'webapp' }] });
    const base = provider.url;
    const discovery = await (await fetch(`${provider.issuer}/.well-known/openid-configuration`)).json();
    assert.ok(discovery.acr_values_supported.includes(LOA3), 'discovery lists loa:3');
    const context = await browser.newContext();
    t.after(() => context.close());
    const { page, problems } = await pageWithAuthenticator(context, { autofill: false });
    await page.goto(`${base}/login`);
    await passwordStep(page, provider);
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await addPasskey(page, base);
    // The account page lists it; the user names it.
    const row = page.locator('#passkey-list li.passkey');
    assert.equal(await row.count(), 1, 'one passkey listed');
    assert.equal(await row.locator('[data-field="name"]').innerText(), 'Passkey 1');
    assert.match(await row.locator('[data-field="last_used"]').innerText(), new RegExp(EN.passkey_never_used));
    await row.locator('input[name="name"]').fill('Work laptop');
    await submit(page, '#passkey-list li.passkey .passkey-rename-submit');
    await page.waitForURL(`${base}/account#passkeys`);
    assert.equal(await page.locator('#passkey-list li.passkey [data-field="name"]').innerText(), 'Work laptop');
    await submit(page, '#logout-submit');
    assert.equal(await sessionCookie(context), undefined, 'signed out');

    const app = await downstreamApp(provider, callback, 'webapp');
    const flight = await app.start(page);
    await page.locator('main#login').waitFor();
    assert.equal(await page.getAttribute('#email', 'autocomplete'), 'username webauthn', 'the email field offers passkeys in autofill');
    const button = page.locator('#passkey-login');
    await button.waitFor({ state: 'visible' });
    assert.equal(await button.innerText(), EN.passkey_sign_in);
    await button.click();
    const claims = await app.redeem(flight);
    assert.equal(claims.acr, LOA3, `acr: ${claims.acr}`);
    for (const m of ['hwk', 'user', 'phr', 'mfa']) {
      assert.ok(claims.amr.includes(m), `amr has ${m}: ${JSON.stringify(claims.amr)}`);
    }
    assert.ok(!claims.amr.includes('pwd'), `no password: ${JSON.stringify(claims.amr)}`);
    assert.ok(await sessionCookie(context), 'a session');
    // Its use is on the account page now.
    await page.goto(`${base}/account`);
    assert.doesNotMatch(await page.locator('#passkey-list [data-field="last_used"]').innerText(), new RegExp(EN.passkey_never_used));
    assert.deepEqual(problems, [], 'no CSP violation or script error');
  });

  test('on a 360 px phone in Korean the sign-in page offers the passkey in Korean, fits the screen, and signs in with it', async ({ t, start }) => {
    const provider = await start();
    const base = provider.url;
    const context = await browser.newContext({ ...MOBILE, locale: 'ko-KR' });
    t.after(() => context.close());
    const { page, problems } = await pageWithAuthenticator(context, { autofill: false });
    await page.goto(`${base}/login`);
    await passwordStep(page, provider);
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await addPasskey(page, base);
    await submit(page, '#logout-submit');
    await page.goto(`${base}/login`);
    const button = page.locator('#passkey-login');
    await button.waitFor({ state: 'visible' });
    assert.equal(await button.innerText(), KO.passkey_sign_in);
    const box = await button.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= 360, `the button fits: ${JSON.stringify(box)}`);
    const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(scrollWidth <= 360, `no sideways scroll (scrollWidth ${scrollWidth})`);
    await submit(page, '#passkey-login');
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    const amr = await page.locator('#session-info [data-field="amr"]').innerText();
    assert.match(amr, /\bphr\b/, `the session amr: ${amr}`);
    assert.doesNotMatch(amr, /\bpwd\b/, `no password: ${amr}`);
    assert.deepEqual(problems, [], 'no CSP violation or script error');
  });

  test('the browser autofill (conditional UI) signs in with the passkey; the page posts it by itself', async ({ t, start, callback }) => {
    const provider = await start({ clients: [{ id: 'webapp' }] });
    const base = provider.url;
    const context = await browser.newContext();
    t.after(() => context.close());
    const { page, problems } = await pageWithAuthenticator(context);
    await page.goto(`${base}/login`);
    await passwordStep(page, provider);
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await addPasskey(page, base);
    await submit(page, '#logout-submit');

    const app = await downstreamApp(provider, callback, 'webapp');
    const postedPaths = [];
    page.on('request', (r) => {
      if (r.method() === 'POST') postedPaths.push(new URL(r.url()).pathname);
    });
    const posted = page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === '/login/passkey', { timeout: 30_000 });
    const flight = await app.start(page);
    // Nothing pressed, nothing typed: the browser offers the passkey in the email field's
    // autofill and the virtual authenticator picks it; the page posts the answer by itself.
    await posted;
    const claims = await app.redeem(flight);
    assert.equal(claims.acr, LOA3);
    assert.ok(claims.amr.includes('phr') && !claims.amr.includes('pwd'), JSON.stringify(claims.amr));
    assert.deepEqual(postedPaths, ['/login/passkey'], 'the passkey only: no password posted');
    assert.deepEqual(problems, [], 'no CSP violation or script error');
  });

  test('an authenticator without user verification, and a forged answer, are refused with the sign-in page (401, audited); the password still works', async ({ t, start }) => {
    const provider = await start();
    const base = provider.url;
    const admin = adminApi(provider, OPS_SECRET);
    const context = await browser.newContext();
    t.after(() => context.close());
    const { page, cdp, authenticatorId } = await pageWithAuthenticator(context, { autofill: false });
    await page.goto(`${base}/login`);
    await passwordStep(page, provider);
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await addPasskey(page, base);
    await submit(page, '#logout-submit');

    // A forged assertion through the page's own form.
    await page.goto(`${base}/login`);
    await page.locator('#passkey-login').waitFor({ state: 'visible' });
    const [forged] = await Promise.all([
      page.waitForNavigation({ waitUntil: 'load' }),
      page.evaluate(() => {
        document.getElementById('passkey-login-credential').value = JSON.stringify({
          id: 'AAAA',
          rawId: 'AAAA',
          type: 'public-key',
          response: { authenticatorData: 'AAAA', clientDataJSON: 'AAAA', signature: 'AAAA', userHandle: 'AAAA' },
        });
        setTimeout(() => document.getElementById('passkey-login-form').submit(), 0);
      }),
    ]);
    assert.equal(forged.status(), 401);
    assert.equal(await page.locator('#login-error').innerText(), EN.error_passkey_refused);
    await assertNoLeak(page);
    assert.equal(await sessionCookie(context), undefined, 'not signed in');

    // The same credential on an authenticator that cannot verify the user: refused.
    const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
    await cdp.send('WebAuthn.removeVirtualAuthenticator', { authenticatorId });
    const { authenticatorId: noUv } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'usb', hasResidentKey: true, hasUserVerification: false, automaticPresenceSimulation: true },
    });
    await cdp.send('WebAuthn.addCredential', { authenticatorId: noUv, credential: credentials[0] });
    await page.locator('#passkey-login').waitFor({ state: 'visible' });
    // Either the browser sends an assertion without the UV flag, or it refuses to ask.
    const res = await Promise.race([
      submit(page, '#passkey-login'),
      page.locator('#passkey-login-cancelled').waitFor({ state: 'visible', timeout: 30_000 }).then(() => null),
    ]);
    if (res) {
      // The browser sent an assertion without the UV flag: the broker refuses it.
      assert.equal(res.status(), 401);
      assert.equal(await page.locator('#login-error').innerText(), EN.error_passkey_refused);
    } else {
      // The browser itself refused to ask (UV required, none possible): the page says so.
      await page.locator('#passkey-login-cancelled').waitFor({ state: 'visible' });
    }
    await assertNoLeak(page);
    assert.equal(await sessionCookie(context), undefined, 'not signed in');
    const { events } = await admin.get('/admin/v1/audit?kind=login_failed');
    assert.ok(events.some((e) => (e.reason || '').startsWith('passkey:')), `a login_failed event for the passkey: ${JSON.stringify(events)}`);

    // The password still signs in.
    await page.goto(`${base}/login`);
    await passwordStep(page, provider);
    await page.waitForURL(/\/(account|login)/, { timeout: 10_000 });
    assert.ok(await sessionCookie(context) || (await page.locator('main#mfa-choose, main#mfa-form').count()) > 0, 'the password goes on');
  });

  test('an app that requires loa:3 refuses a password + TOTP session until a passkey is added and used; acr_values=loa:3 then asks only for the passkey', async ({ t, start, callback }) => {
    const provider = await start({
      mfa: ['[mfa]', 'required = "optional"', '', TOTP()],
      clients: [
        { id: 'mfaapp', mfa: 'required' },
        { id: 'adminapp', mfa: 'phishing_resistant' },
      ],
    });
    const context = await browser.newContext();
    t.after(() => context.close());
    const { page, problems } = await pageWithAuthenticator(context, { autofill: false });
    const mfaApp = await downstreamApp(provider, callback, 'mfaapp');
    const adminApp = await downstreamApp(provider, callback, 'adminapp');

    // The MFA app: password, then TOTP set up at this first sign-in (codes from oathtool).
    let flight = await mfaApp.start(page);
    await passwordStep(page, provider);
    await page.locator('main#mfa-choose').waitFor({ timeout: 10_000 });
    await submit(page, '.enroll[data-factor="totp"]');
    const secret = (await page.locator('#mfa-secret').innerText()).trim();
    await page.fill('input[name="code"]', oathtool(secret));
    await submit(page, '#mfa-submit');
    if (await page.locator('#recovery-codes').count()) {
      await submit(page, '#mfa-continue');
    }
    let claims = await mfaApp.redeem(flight);
    assert.equal(claims.acr, LOA2, 'password + TOTP is loa:2');

    // The admin app on that session: only a passkey, set up now (TOTP was just proven).
    flight = await adminApp.start(page);
    await page.locator('main#mfa-choose').waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('#mfa-phr-only').innerText(), EN.mfa_phr_only);
    assert.equal(await page.locator('.factor[data-factor="totp"]').count(), 0, 'TOTP is not offered for loa:3');
    await submit(page, 'button.enroll[data-factor="passkey"]');
    await page.locator('#passkey-start').waitFor({ state: 'visible' });
    await submit(page, '#passkey-start');
    claims = await adminApp.redeem(flight);
    assert.equal(claims.acr, LOA3, `acr: ${claims.acr}`);
    assert.ok(claims.amr.includes('phr') && claims.amr.includes('otp'), JSON.stringify(claims.amr));

    // A new sign-in to the admin app with password and TOTP is not enough: the passkey is asked.
    await page.goto(`${provider.url}/account`);
    await submit(page, '#logout-submit');
    flight = await adminApp.start(page);
    await passwordStep(page, provider);
    await page.locator('main#mfa-choose, main#mfa-form[data-factor="passkey"]').first().waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('.factor[data-factor="totp"]').count(), 0, 'TOTP is not offered for loa:3');
    if (await page.locator('main#mfa-choose').count()) {
      await submit(page, 'button.factor[data-factor="passkey"]');
    }
    await page.locator('#passkey-start').waitFor({ state: 'visible' });
    await submit(page, '#passkey-start');
    claims = await adminApp.redeem(flight);
    assert.equal(claims.acr, LOA3);

    // The MFA app asking with acr_values for loa:3 on a fresh password + TOTP session: the
    // passkey is asked as a step-up; the code comes only after it.
    await page.goto(`${provider.url}/account`);
    await submit(page, '#logout-submit');
    flight = await mfaApp.start(page);
    await passwordStep(page, provider);
    await page.locator('main#mfa-choose').waitFor({ timeout: 10_000 });
    await submit(page, 'button.factor[data-factor="totp"]');
    await page.fill('input[name="code"]', oathtool(secret, Date.now() / 1000 + 30));
    await submit(page, '#mfa-submit');
    claims = await mfaApp.redeem(flight);
    assert.equal(claims.acr, LOA2);
    flight = await mfaApp.start(page, { acr_values: LOA3 });
    await page.locator('main#mfa-choose, main#mfa-form[data-factor="passkey"]').first().waitFor({ timeout: 10_000 });
    assert.equal(await page.locator('.factor[data-factor="totp"]').count(), 0, 'TOTP is not offered for loa:3');
    if (await page.locator('main#mfa-choose').count()) {
      await submit(page, 'button.factor[data-factor="passkey"]');
    }
    await page.locator('#passkey-start').waitFor({ state: 'visible' });
    await submit(page, '#passkey-start');
    claims = await mfaApp.redeem(flight);
    assert.equal(claims.acr, LOA3);
    assert.deepEqual(problems, [], 'no CSP violation or script error');
  });

  test('a user with only TOTP, signing in to an app that requires loa:3, first passes TOTP, then adds a passkey; nothing is issued before', async ({ t, start, callback }) => {
    const provider = await start({
      mfa: ['[mfa]', 'required = "optional"', '', TOTP()],
      clients: [{ id: 'adminapp', mfa: 'phishing_resistant' }],
    });
    const base = provider.url;
    const context = await browser.newContext();
    t.after(() => context.close());
    const { page } = await pageWithAuthenticator(context);
    // TOTP from the account page (optional MFA: the first sign-in has no factor).
    await page.goto(`${base}/login`);
    await passwordStep(page, provider);
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await page.click('a#mfa-setup');
    await page.locator('main#mfa-choose').waitFor();
    await submit(page, '.enroll[data-factor="totp"]');
    const secret = (await page.locator('#mfa-secret').innerText()).trim();
    await page.fill('input[name="code"]', oathtool(secret));
    await submit(page, '#mfa-submit');
    if (await page.locator('#recovery-codes').count()) {
      await submit(page, '#mfa-continue');
    }
    await page.waitForURL(`${base}/account`, { timeout: 10_000 });
    await submit(page, '#logout-submit');

    const app = await downstreamApp(provider, callback, 'adminapp');
    let issued = false;
    const flight = await app.start(page);
    flight.arrived.then(() => {
      issued = true;
    }, () => {});
    await passwordStep(page, provider);
    await page.locator('main#mfa-choose, main#mfa-form[data-factor="totp"]').first().waitFor({ timeout: 10_000 });
    if (await page.locator('main#mfa-choose').count()) {
      assert.equal(await page.locator('#mfa-phr-first').innerText(), EN.mfa_phr_first);
      assert.equal(await page.locator('button.enroll[data-factor="passkey"]').count(), 0, 'no passkey set up on a password alone');
      await submit(page, 'button.factor[data-factor="totp"]');
    }
    await page.fill('input[name="code"]', oathtool(secret, Date.now() / 1000 + 30));
    await submit(page, '#mfa-submit');
    // TOTP passed: loa:2 is not enough, nothing issued; the passkey can be set up now.
    await page.locator('main#mfa-choose').waitFor({ timeout: 10_000 });
    assert.equal(issued, false, 'no code before the passkey');
    assert.equal(await page.locator('#mfa-phr-only').innerText(), EN.mfa_phr_only);
    await submit(page, 'button.enroll[data-factor="passkey"]');
    await page.locator('#passkey-start').waitFor({ state: 'visible' });
    await submit(page, '#passkey-start');
    const claims = await app.redeem(flight);
    assert.equal(claims.acr, LOA3);
  });
});
