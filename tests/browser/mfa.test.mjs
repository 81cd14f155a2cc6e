// The second factor through the real pages in headless Chromium, for a downstream app that is a
// real relying party (openid-client): TOTP enrolment with the QR code on a phone-sized screen and
// codes from an independent generator (Debian oathtool), recovery codes, email codes read back
// from a real SMTP server (aiosmtpd, tests/peers/smtp_sink.py), the pages in Korean, and step-up
// through `acr_values`. The broker runs the real plugins on the real clock. Each test starts its
// own broker on a fresh database of CONCIERGE_TEST_BACKEND.
//
// Needs, besides what every browser test needs (helpers.mjs): the plugins built by
// plugins/build.sh (or CONCIERGE_TEST_PLUGIN_DIR), Debian's `oathtool`, and a python with aiosmtpd
// (tests/peers/requirements.txt; ~/.cache/concierge/pyvenv or CONCIERGE_TEST_PYTHON).
//
//   node --test --test-concurrency=1 tests/browser/mfa.test.mjs

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import {
  startProvider,
  startCallbackServer,
  startSmtpSink,
  launchBrowser,
  sessionCookie,
  sha256Hex,
  pluginManifest,
  mfaToml,
  oathtool,
  backend,
  LEAK_PATTERN,
  REPO_ROOT,
  authorizationRequest,
} from './helpers.mjs';

const strings = (lang) =>
  JSON.parse(readFileSync(join(REPO_ROOT, 'templates', 'locales', `${lang}.json`), 'utf8'));
const EN = strings('en');
const KO = strings('ko');

const LOA1 = 'urn:concierge:loa:1';
const LOA2 = 'urn:concierge:loa:2';
const SCOPE = 'openid email profile';
const SECRET = randomBytes(24).toString('base64url');
const TOTP = () => pluginManifest('totp', { grants: ['clock', 'random', 'state', 'log'] });
const EMAIL_OTP = () => pluginManifest('email-otp', { grants: ['clock', 'random', 'state', 'email'] });
/** The plugins' own names for their factors (texts.rs of each plugin). */
const TOTP_NAME = { en: 'Authenticator app', ko: '인증 앱' };
const HANGUL = /[\uac00-\ud7a3]/;
const MOBILE = { viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };

/** A TOTP code for `secret` that is none of the codes of the steps around now (a surely wrong one). */
function wrongTotp(secret) {
  const now = Date.now() / 1000;
  const near = new Set([-90, -60, -30, 0, 30, 60, 90].map((d) => oathtool(secret, now + d)));
  return ['000000', '111111', '222222', '333333', '444444'].find((c) => !near.has(c));
}

/** The 6-digit code in an email's text. */
function codeIn(text) {
  const m = text.match(/(?<!\d)(\d{6})(?!\d)/);
  assert.ok(m, `no 6-digit code in:\n${text}`);
  return m[1];
}

/** A downstream app: openid-client configured from the broker's discovery document. */
async function downstreamApp(provider, callback) {
  const config = await client.discovery(new URL(provider.issuer), 'webapp', undefined, client.ClientSecretBasic(SECRET), {
    execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
  });
  return {
    /** A fresh authorization request (code + PKCE, state, nonce) with `extra` parameters. */
    request(extra = {}) {
      return authorizationRequest(config, callback.url, { scope: SCOPE, ...extra });
    },
    /** Redeems the code the browser brought back; resolves with the verified ID token's claims. */
    async redeem(req, currentUrl) {
      const tokens = await client.authorizationCodeGrant(config, currentUrl, {
        pkceCodeVerifier: req.pkceCodeVerifier,
        expectedState: req.expectedState,
        expectedNonce: req.expectedNonce,
      });
      const claims = tokens.claims();
      assert.ok(claims, 'an ID token was issued');
      return claims;
    },
  };
}

/** A page that records its main-frame navigations and any error it meets (CSP included). */
async function watchedPage(context) {
  const page = await context.newPage();
  const navigations = [];
  const problems = [];
  page.on('request', (r) => {
    if (r.isNavigationRequest() && r.frame() === page.mainFrame()) navigations.push(new URL(r.url()));
  });
  page.on('requestfailed', (r) => {
    if (r.isNavigationRequest()) problems.push(`navigation to ${r.url()} failed: ${r.failure()?.errorText}`);
  });
  page.on('console', (m) => {
    // Chromium logs every 4xx answer (a wrong code is a 401) as "Failed to load resource".
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      problems.push(`console error: ${m.text().trim()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  const trail = () =>
    `the browser is at ${page.url()}\nnavigations:\n${navigations.map((u) => `  ${u.href}`).join('\n')}\n` +
    problems.map((p) => `  ${p}`).join('\n');
  return { page, navigations, problems, trail };
}

/** Clicks `selector` (a form's submit button) and resolves with the response to the POST it sends. */
async function submit(page, selector) {
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && r.request().frame() === page.mainFrame()),
    page.click(selector),
  ]);
  return res;
}

/** The broker's login page is showing (for the app's authorization request): sign in with the password. */
async function passwordStep(w, provider) {
  const here = new URL(w.page.url());
  assert.equal(here.origin, provider.url, `the broker's sign-in page; ${w.trail()}`);
  await w.page.locator('#login-form').waitFor({ timeout: 5_000 });
  // The app's request is kept server-side; the page names only its sign-in journey.
  assert.match(await w.page.inputValue('#login-form input[name="journey"]'), /^[A-Za-z0-9_-]{43}$/);
  await w.page.fill('#email', provider.email);
  await w.page.fill('#password', provider.password);
  const res = await submit(w.page, '#login-submit');
  assert.ok([200, 303].includes(res.status()), `POST /login answered ${res.status()}`);
  return res;
}

/** Runs `action` (which ends the sign-in) and waits until the browser is back at the app's redirect URI. */
async function backToApp(w, callback, action) {
  const arrived = callback.next({ timeoutMs: 15_000 });
  arrived.catch(() => {});
  await action();
  try {
    await arrived;
  } catch (e) {
    throw new Error(`${e.message}; ${w.trail()}`);
  }
  await w.page.waitForURL((u) => u.href.startsWith(callback.url), { timeout: 5_000 });
  return new URL(w.page.url());
}

/** The visible text of the element, whitespace collapsed. */
async function text(page, selector) {
  return ((await page.locator(selector).first().textContent()) ?? '').replace(/\s+/g, ' ').trim();
}

/** No internal error words on the page, and the `<html lang>` is `lang`. */
async function assertPage(page, lang) {
  const body = await page.locator('body').innerText();
  assert.doesNotMatch(body, LEAK_PATTERN, 'no internal error text');
  assert.equal(await page.getAttribute('html', 'lang'), lang);
}

/** No English text of the MFA pages on a page that should be in Korean. */
async function assertNoEnglish(page) {
  const body = await page.locator('body').innerText();
  for (const [key, value] of Object.entries(EN)) {
    if (key.startsWith('mfa_') && value.trim().length > 3) {
      assert.ok(!body.includes(value), `English "${value}" (${key}) on the Korean page ${page.url()}`);
    }
  }
}

function assertSecondFactor(claims, factor) {
  assert.ok(Array.isArray(claims.amr), `amr ${JSON.stringify(claims.amr)}`);
  for (const m of ['pwd', factor, 'mfa']) {
    assert.ok(claims.amr.includes(m), `amr ${JSON.stringify(claims.amr)} names ${m}`);
  }
  assert.equal(claims.acr, LOA2);
}

describe(`MFA through the pages in Chromium (${backend})`, () => {
  let browser;
  before(async () => {
    browser = await launchBrowser({ locale: 'en-US' });
  });
  after(async () => {
    await browser?.close();
  });

  /**
   * A test with its own broker: `start(opts)` starts it (startProvider with the app `webapp`
   * whose redirect URI is `callback`); a failure carries its output.
   */
  const test = (name, fn) =>
    it(name, { timeout: 120_000 }, async (t) => {
      let provider;
      const callback = await startCallbackServer('/cb');
      t.after(() => callback.close());
      const start = async ({ mfa, ...opts }) => {
        provider = await startProvider({
          clients: [{ id: 'webapp', name: 'Web App', secret_sha256: sha256Hex(SECRET), redirect_uris: [callback.url] }],
          extraToml: mfa,
          ...opts,
        });
        t.after(() => provider.stop());
        return { provider, app: await downstreamApp(provider, callback) };
      };
      const context = async (opts = {}) => {
        const c = await browser.newContext(opts);
        t.after(() => c.close());
        return c;
      };
      try {
        await fn({ t, start, callback, context });
      } catch (e) {
        if (provider && e && typeof e === 'object') e.message = `${e.message}\n${provider.logs()}`;
        throw e;
      }
    });

  test('TOTP: enrolment at first sign-in on a phone-sized screen (QR code, oathtool code, recovery codes), then the challenge, a wrong code, and a recovery code', async ({ start, callback, context }) => {
    const { provider, app } = await start({ mfa: mfaToml({ settings: { required: 'required' }, plugins: [TOTP()] }) });

    // First sign-in on a phone: the password, then the enrolment choice (nothing enrolled yet).
    const phone = await context(MOBILE);
    const w = await watchedPage(phone);
    const req = await app.request();
    await w.page.goto(req.url.href);
    await passwordStep(w, provider);
    await w.page.locator('main#mfa-choose').waitFor({ timeout: 10_000 });
    await assertPage(w.page, 'en');
    assert.equal(await text(w.page, 'h1'), EN.mfa_choose_heading);
    assert.equal(await text(w.page, 'main h2'), EN.mfa_enroll_heading);
    assert.equal(await w.page.locator('.factor[data-factor]').count(), 0, 'no enrolled factor to choose');
    const enroll = w.page.locator('.enroll[data-factor="totp"]');
    assert.equal(await enroll.textContent(), `${EN.mfa_enroll_prefix}${TOTP_NAME.en}${EN.mfa_enroll_suffix}`);
    assert.equal(await sessionCookie(phone), undefined, 'no session before the second factor');

    // The enrolment page: a QR code that fits the screen, and the key to type in by hand.
    await enroll.click();
    await w.page.locator('main#mfa-form[data-factor="totp"]').waitFor();
    const qr = w.page.locator('#mfa-qr svg');
    await qr.waitFor({ state: 'visible' });
    const box = await qr.boundingBox();
    assert.ok(box, 'the QR code has a box');
    assert.ok(box.width >= 150 && box.height >= 150, `the QR code is big enough to scan: ${JSON.stringify(box)}`);
    assert.ok(Math.abs(box.width - box.height) <= 1, `the QR code is square: ${JSON.stringify(box)}`);
    assert.ok(box.x >= 0 && box.x + box.width <= 360, `the QR code is within the 360px screen: ${JSON.stringify(box)}`);
    assert.equal(await w.page.getAttribute('#mfa-qr', 'aria-label'), EN.mfa_qr_label);
    const scrollWidth = await w.page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(scrollWidth <= 360, `the page does not scroll sideways on a phone (scrollWidth ${scrollWidth})`);
    const secretBox = await w.page.locator('#mfa-secret').boundingBox();
    assert.ok(secretBox && secretBox.x + secretBox.width <= 360, `the key fits the screen: ${JSON.stringify(secretBox)}`);
    const secret = await text(w.page, '#mfa-secret');
    assert.match(secret, /^[A-Z2-7]{16,}$/, 'a base32 key');
    const code = w.page.locator('input[name="code"]');
    assert.equal(await code.getAttribute('autocomplete'), 'one-time-code');
    assert.equal(await code.getAttribute('inputmode'), 'numeric');

    // A wrong code does not finish the enrolment; the same key stays on the page.
    await code.fill(wrongTotp(secret));
    let res = await submit(w.page, '#mfa-submit');
    assert.equal(res.status(), 401);
    await w.page.locator('#mfa-error').waitFor();
    assert.ok((await text(w.page, '#mfa-error')).length > 0);
    assert.equal(await text(w.page, '#mfa-secret'), secret);
    assert.equal(await sessionCookie(phone), undefined);

    // The code oathtool computes from the key, now: the recovery codes, shown once.
    await w.page.fill('input[name="code"]', oathtool(secret));
    res = await submit(w.page, '#mfa-submit');
    assert.equal(res.status(), 200);
    await w.page.locator('#recovery-codes').waitFor();
    assert.equal(await text(w.page, 'h1'), EN.mfa_codes_heading);
    const recovery = (await w.page.locator('#recovery-codes li code').allTextContents()).map((c) => c.trim());
    assert.equal(recovery.length, 10, `recovery codes: ${recovery}`);
    assert.equal(new Set(recovery).size, 10, 'all different');
    assert.equal(await sessionCookie(phone), undefined, 'the session opens when the codes are saved');
    assert.equal(await text(w.page, '#mfa-continue'), EN.mfa_codes_continue);

    // "I have saved them": back at the app, with a two-factor ID token.
    let back = await backToApp(w, callback, () => w.page.click('#mfa-continue'));
    let claims = await app.redeem(req, back);
    assert.equal(claims.email, provider.email);
    assertSecondFactor(claims, 'otp');
    assert.ok(await sessionCookie(phone), 'signed in');
    assert.deepEqual(w.problems, [], 'no CSP violation or failed navigation');

    // A second sign-in, in another browser: straight to the TOTP challenge.
    const laptop = await context();
    const w2 = await watchedPage(laptop);
    const req2 = await app.request();
    await w2.page.goto(req2.url.href);
    await passwordStep(w2, provider);
    await w2.page.locator('main#mfa-form[data-factor="totp"]').waitFor({ timeout: 10_000 });
    await assertPage(w2.page, 'en');
    assert.equal(await w2.page.locator('#mfa-qr').count(), 0, 'no QR code on a challenge');
    assert.equal(await w2.page.locator('#mfa-secret').count(), 0, 'no key on a challenge');
    assert.equal(await text(w2.page, 'h1'), TOTP_NAME.en);
    assert.ok(w2.navigations.every((u) => u.pathname !== '/login/mfa/choose'), 'no choice with one factor');

    // A wrong code: the error, and no session.
    await w2.page.fill('input[name="code"]', wrongTotp(secret));
    res = await submit(w2.page, '#mfa-submit');
    assert.equal(res.status(), 401);
    await w2.page.locator('#mfa-error').waitFor();
    assert.match(await text(w2.page, '#mfa-error'), /not correct/);
    assert.equal(await sessionCookie(laptop), undefined);

    // The right one. The enrolment used this time step's code (a code is good once), so this is
    // the next step's code: what an app whose clock runs a little ahead shows, within the one
    // step of skew the factor accepts.
    await w2.page.fill('input[name="code"]', oathtool(secret, Date.now() / 1000 + 30));
    back = await backToApp(w2, callback, () => w2.page.click('#mfa-submit'));
    claims = await app.redeem(req2, back);
    assertSecondFactor(claims, 'otp');
    assert.deepEqual(w2.problems, []);

    // Lost the phone: "another method" leads to the recovery codes; one signs in, once.
    const borrowed = await context();
    const w3 = await watchedPage(borrowed);
    const req3 = await app.request();
    await w3.page.goto(req3.url.href);
    await passwordStep(w3, provider);
    await w3.page.locator('main#mfa-form[data-factor="totp"]').waitFor({ timeout: 10_000 });
    assert.equal(await text(w3.page, '#mfa-other'), EN.mfa_other_options);
    await w3.page.click('#mfa-other');
    await w3.page.locator('main#mfa-choose').waitFor();
    assert.equal(await w3.page.locator('.factor[data-factor="totp"]').count(), 1, 'the enrolled factor is offered');
    await w3.page.click('#mfa-recovery summary');
    await w3.page.fill('#recovery-code', recovery[0]);
    back = await backToApp(w3, callback, () => w3.page.click('#recovery-submit'));
    claims = await app.redeem(req3, back);
    assert.ok(claims.amr.includes('mfa'), `amr ${JSON.stringify(claims.amr)}`);
    assert.equal(claims.acr, LOA2);

    const again = await context();
    const w4 = await watchedPage(again);
    await w4.page.goto((await app.request()).url.href);
    await passwordStep(w4, provider);
    await w4.page.locator('main#mfa-form').waitFor({ timeout: 10_000 });
    await w4.page.click('#mfa-other');
    await w4.page.locator('main#mfa-choose').waitFor();
    await w4.page.click('#mfa-recovery summary');
    await w4.page.fill('#recovery-code', recovery[0]);
    res = await submit(w4.page, '#recovery-submit');
    assert.equal(res.status(), 401, 'a used recovery code is refused');
    await w4.page.locator('#mfa-error').waitFor();
    assert.equal(await text(w4.page, '#mfa-error'), EN.mfa_wrong_recovery);
    assert.equal(await sessionCookie(again), undefined);
  });

  test('email code: sent through a real SMTP server, typed into the page, signs in; single use; in Korean for a Korean browser', async ({ start, callback, context }) => {
    const smtp = await startSmtpSink();
    try {
      const mfa = mfaToml({
        settings: { required: 'required' },
        smtp: { host: '127.0.0.1', port: smtp.port, tls: 'none', from: 'Concierge <no-reply@concierge.test>' },
        plugins: [EMAIL_OTP()],
      });
      const { provider, app } = await start({ mfa });

      // The password, then straight to the email factor (it needs no enrolment): a code is sent.
      const w = await watchedPage(await context());
      const req = await app.request();
      await w.page.goto(req.url.href);
      await passwordStep(w, provider);
      await w.page.locator('main#mfa-form[data-factor="email-otp"]').waitFor({ timeout: 10_000 });
      await assertPage(w.page, 'en');
      assert.match(await text(w.page, '#mfa-intro'), /6-digit code/);
      assert.doesNotMatch(await text(w.page, '#mfa-intro'), new RegExp(provider.email), 'the address is masked');
      const mail = await smtp.message(1);
      assert.equal(mail.to, provider.email);
      assert.match(mail.subject, /sign-in code/);
      const code = codeIn(mail.text);

      // A wrong code first, then the one from the email.
      await w.page.fill('input[name="code"]', code === '000000' ? '111111' : '000000');
      const res = await submit(w.page, '#mfa-submit');
      assert.equal(res.status(), 401);
      await w.page.locator('#mfa-error').waitFor();
      await w.page.fill('input[name="code"]', code);
      const back = await backToApp(w, callback, () => w.page.click('#mfa-submit'));
      const claims = await app.redeem(req, back);
      assertSecondFactor(claims, 'otp');
      assert.deepEqual(w.problems, []);

      // The next sign-in, from a Korean browser: a new code, in a Korean email; the old one is used up.
      const w2 = await watchedPage(await context({ locale: 'ko-KR' }));
      const req2 = await app.request();
      await w2.page.goto(req2.url.href);
      await passwordStep(w2, provider);
      await w2.page.locator('main#mfa-form[data-factor="email-otp"]').waitFor({ timeout: 10_000 });
      await assertPage(w2.page, 'ko');
      assert.match(await text(w2.page, '#mfa-intro'), HANGUL);
      assert.equal(await text(w2.page, '#mfa-submit'), KO.mfa_submit);
      const mail2 = await smtp.message(2);
      assert.match(mail2.subject, /인증 코드/, `a Korean subject: ${mail2.subject}`);
      assert.match(mail2.text, HANGUL);
      const code2 = codeIn(mail2.text);
      if (code2 !== code) {
        await w2.page.fill('input[name="code"]', code);
        assert.equal((await submit(w2.page, '#mfa-submit')).status(), 401, 'the first code is used up');
        await w2.page.locator('#mfa-error').waitFor();
        assert.match(await text(w2.page, '#mfa-error'), HANGUL);
      }
      await w2.page.fill('input[name="code"]', code2);
      const back2 = await backToApp(w2, callback, () => w2.page.click('#mfa-submit'));
      assertSecondFactor(await app.redeem(req2, back2), 'otp');
      assert.equal(smtp.count(), 2, 'one email per sign-in');
    } finally {
      await smtp.stop();
    }
  });

  test('Korean (Accept-Language ko): choice, enrolment, recovery codes and challenge pages show the strings of ko.json', async ({ start, callback, context }) => {
    const { provider, app } = await start({ mfa: mfaToml({ settings: { required: 'required' }, plugins: [TOTP()] }) });
    const w = await watchedPage(await context({ locale: 'ko-KR' }));
    const req = await app.request();
    await w.page.goto(req.url.href);
    await passwordStep(w, provider);

    await w.page.locator('main#mfa-choose').waitFor({ timeout: 10_000 });
    await assertPage(w.page, 'ko');
    assert.match(await w.page.title(), new RegExp(`^${KO.mfa_choose_title} · `));
    assert.equal(await text(w.page, 'h1'), KO.mfa_choose_heading);
    assert.equal(await text(w.page, 'main h2'), KO.mfa_enroll_heading);
    assert.equal(await text(w.page, 'main p.lead'), KO.mfa_enroll_intro);
    const enroll = w.page.locator('.enroll[data-factor="totp"]');
    assert.equal(await enroll.textContent(), `${KO.mfa_enroll_prefix}${TOTP_NAME.ko}${KO.mfa_enroll_suffix}`);
    await assertNoEnglish(w.page);

    await enroll.click();
    await w.page.locator('main#mfa-form[data-factor="totp"]').waitFor();
    await assertPage(w.page, 'ko');
    assert.equal(await text(w.page, 'h1'), `${KO.mfa_enroll_prefix}${TOTP_NAME.ko}${KO.mfa_enroll_suffix}`.trim());
    assert.equal(await w.page.getAttribute('#mfa-qr', 'aria-label'), KO.mfa_qr_label);
    assert.ok(await w.page.locator('#mfa-qr svg').isVisible(), 'the QR code is shown');
    assert.equal(await text(w.page, '#mfa-secret >> xpath=../preceding-sibling::p[1]'), KO.mfa_secret_label);
    assert.equal(await text(w.page, '#mfa-submit'), KO.mfa_submit);
    assert.equal(await text(w.page, '#mfa-other'), KO.mfa_other_options);
    assert.match(await text(w.page, '#mfa-intro'), HANGUL, 'the plugin speaks Korean too');
    assert.match(await text(w.page, 'label[for="f-code"]'), HANGUL);
    await assertNoEnglish(w.page);
    const secret = await text(w.page, '#mfa-secret');

    await w.page.fill('input[name="code"]', wrongTotp(secret));
    assert.equal((await submit(w.page, '#mfa-submit')).status(), 401);
    await w.page.locator('#mfa-error').waitFor();
    assert.match(await text(w.page, '#mfa-error'), HANGUL);
    await assertNoEnglish(w.page);

    await w.page.fill('input[name="code"]', oathtool(secret));
    await submit(w.page, '#mfa-submit');
    await w.page.locator('#recovery-codes').waitFor();
    await assertPage(w.page, 'ko');
    assert.match(await w.page.title(), new RegExp(`^${KO.mfa_codes_title} · `));
    assert.equal(await text(w.page, 'h1'), KO.mfa_codes_heading);
    assert.equal(await text(w.page, 'main p.lead'), KO.mfa_codes_intro);
    assert.equal(await text(w.page, '#mfa-continue'), KO.mfa_codes_continue);
    await assertNoEnglish(w.page);
    const recovery = (await w.page.locator('#recovery-codes li code').allTextContents()).map((c) => c.trim());
    const back = await backToApp(w, callback, () => w.page.click('#mfa-continue'));
    assertSecondFactor(await app.redeem(req, back), 'otp');

    // The challenge and the choice on the next sign-in, and a wrong recovery code, in Korean.
    const w2 = await watchedPage(await context({ locale: 'ko-KR' }));
    await w2.page.goto((await app.request()).url.href);
    await passwordStep(w2, provider);
    await w2.page.locator('main#mfa-form[data-factor="totp"]').waitFor({ timeout: 10_000 });
    await assertPage(w2.page, 'ko');
    assert.equal(await text(w2.page, 'h1'), TOTP_NAME.ko);
    assert.match(await text(w2.page, '#mfa-intro'), HANGUL);
    await assertNoEnglish(w2.page);
    await w2.page.fill('input[name="code"]', wrongTotp(secret));
    assert.equal((await submit(w2.page, '#mfa-submit')).status(), 401);
    await w2.page.locator('#mfa-error').waitFor();
    assert.match(await text(w2.page, '#mfa-error'), HANGUL);
    await w2.page.click('#mfa-other');
    await w2.page.locator('main#mfa-choose').waitFor();
    assert.equal(await text(w2.page, 'h1'), KO.mfa_choose_heading);
    assert.equal(await text(w2.page, 'main p.lead'), KO.mfa_choose_intro);
    assert.equal(await text(w2.page, '.factor[data-factor="totp"]'), TOTP_NAME.ko);
    assert.equal(await text(w2.page, '#mfa-recovery summary'), KO.mfa_recovery_use);
    await w2.page.click('#mfa-recovery summary');
    assert.equal(await text(w2.page, 'label[for="recovery-code"]'), KO.mfa_recovery_label);
    await w2.page.fill('#recovery-code', `${recovery[0]}x`);
    assert.equal((await submit(w2.page, '#recovery-submit')).status(), 401);
    await w2.page.locator('#mfa-error').waitFor();
    assert.equal(await text(w2.page, '#mfa-error'), KO.mfa_wrong_recovery);
    await assertNoEnglish(w2.page);
  });

  test('Korean by the app (ui_locales=ko) in an English browser: the MFA pages stay Korean', async ({ start, callback, context }) => {
    const { provider, app } = await start({ mfa: mfaToml({ settings: { required: 'required' }, plugins: [TOTP()] }) });
    const w = await watchedPage(await context({ locale: 'en-US' }));
    const req = await app.request({ ui_locales: 'ko' });
    await w.page.goto(req.url.href);
    await assertPage(w.page, 'ko'); // the login page
    await passwordStep(w, provider);
    await w.page.locator('main#mfa-choose').waitFor({ timeout: 10_000 });
    await assertPage(w.page, 'ko');
    assert.equal(await text(w.page, 'h1'), KO.mfa_choose_heading);
    await assertNoEnglish(w.page);
    await w.page.click('.enroll[data-factor="totp"]');
    await w.page.locator('main#mfa-form[data-factor="totp"]').waitFor();
    await assertPage(w.page, 'ko');
    assert.equal(await text(w.page, '#mfa-submit'), KO.mfa_submit);
    assert.match(await text(w.page, '#mfa-intro'), HANGUL);
    await assertNoEnglish(w.page);
    const secret = await text(w.page, '#mfa-secret');
    await w.page.fill('input[name="code"]', oathtool(secret));
    await submit(w.page, '#mfa-submit');
    await w.page.locator('#recovery-codes').waitFor();
    await assertPage(w.page, 'ko');
    assert.equal(await text(w.page, 'h1'), KO.mfa_codes_heading);
    const back = await backToApp(w, callback, () => w.page.click('#mfa-continue'));
    assertSecondFactor(await app.redeem(req, back), 'otp');
  });

  test('step-up: MFA off, a password session; the app asks acr_values=loa:2 and the browser goes through the second factor before it returns', async ({ start, callback, context }) => {
    const { provider, app } = await start({ mfa: mfaToml({ settings: { required: 'off' }, plugins: [TOTP()] }) });
    const w = await watchedPage(await context());

    // MFA off: the password alone brings the browser back to the app, at level 1.
    const req = await app.request();
    await w.page.goto(req.url.href);
    const back = await backToApp(w, callback, () => passwordStep(w, provider));
    const first = await app.redeem(req, back);
    assert.equal(first.acr, LOA1);
    assert.ok(!first.amr.includes('mfa'), `amr ${JSON.stringify(first.amr)}`);
    assert.ok(w.navigations.every((u) => !u.pathname.startsWith('/login/mfa')), 'no second-factor page');

    // The app asks for more: no password again, the second factor instead (set up now, as the
    // user has none), then back to the app.
    const req2 = await app.request({ acr_values: LOA2 });
    const from = w.navigations.length;
    await w.page.goto(req2.url.href);
    await w.page.locator('main#mfa-choose').waitFor({ timeout: 10_000 });
    assert.equal(await text(w.page, 'h1'), EN.mfa_step_up_heading);
    const path = w.navigations.slice(from).map((u) => u.pathname);
    assert.deepEqual(path, ['/authorize'], 'the step-up page at /authorize itself, no login page');
    await w.page.click('.enroll[data-factor="totp"]');
    await w.page.locator('main#mfa-form[data-factor="totp"]').waitFor();
    assert.ok(await w.page.locator('#mfa-qr svg').isVisible());
    const secret = await text(w.page, '#mfa-secret');
    await w.page.fill('input[name="code"]', wrongTotp(secret));
    assert.equal((await submit(w.page, '#mfa-submit')).status(), 401);
    await w.page.locator('#mfa-error').waitFor();
    await w.page.fill('input[name="code"]', oathtool(secret));
    await submit(w.page, '#mfa-submit');
    await w.page.locator('#recovery-codes').waitFor();
    const back2 = await backToApp(w, callback, () => w.page.click('#mfa-continue'));
    const stepped = await app.redeem(req2, back2);
    assertSecondFactor(stepped, 'otp');
    assert.equal(stepped.sid, first.sid, 'the same session, raised');
    assert.equal(stepped.sub, first.sub);
    assert.deepEqual(w.problems, [], 'no CSP violation or failed navigation');

    // The session now has the second factor: the next loa:2 request goes straight through.
    const req3 = await app.request({ acr_values: LOA2 });
    const from3 = w.navigations.length;
    const back3 = await backToApp(w, callback, () => w.page.goto(req3.url.href));
    assert.deepEqual(
      w.navigations.slice(from3).map((u) => `${u.origin}${u.pathname}`),
      [`${provider.url}/authorize`, callback.url],
      'straight from /authorize to the app',
    );
    const third = await app.redeem(req3, back3);
    assert.equal(third.acr, LOA2);
    assert.equal(third.sid, first.sid);
  });
});
