// Browser tests of the foundation: sign-in through the real login page, sessions (logout, idle and
// absolute timeouts), CSRF, locale, security headers and bad input. They run against the built
// binary (CONCIERGE_BIN) on SQLite or PostgreSQL (CONCIERGE_TEST_BACKEND); see helpers.mjs.
//
//   node --test --test-concurrency=1 tests/browser/*.test.mjs

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  startBroker,
  launchBrowser,
  withLogs,
  loginViaPage,
  accountStatus,
  sessionCookie,
  csrfPair,
  sleep,
  backend,
  SESSION_COOKIE,
  DEMO_EMAIL,
  DEMO_PASSWORD,
  LEAK_PATTERN,
  REPO_ROOT,
} from './helpers.mjs';

const HANGUL = /[\uAC00-\uD7A3]/;

/** The English locale strings (templates/locales/en.json), for checking localized values. */
function englishStrings() {
  return JSON.parse(readFileSync(join(REPO_ROOT, 'templates', 'locales', 'en.json'), 'utf8'));
}
const SESSION_FIELDS = [
  'channel',
  'user_agent',
  'ip',
  'auth_time',
  'last_seen',
  'idle_expires_at',
  'expires_at',
  'upstream',
  'amr',
];

/** Resolves a Location header (relative or absolute) against the broker's URL. */
function located(location, base) {
  assert.ok(location, 'expected a Location header');
  return new URL(location, base);
}

/** Asserts a redirect to the login page (the answer to a request without a valid session). */
function assertToLogin({ status, location }, base, what) {
  assert.equal(status, 303, `${what}: expected 303 to /login, got ${status}`);
  assert.equal(located(location, base).pathname, '/login', `${what}: redirected to ${location}`);
}

/** Asserts a fetch Response is the HTML error page with `status`, leaking nothing. */
async function assertErrorPage(res, status, what) {
  const body = await res.text();
  assert.notEqual(res.status, 500, `${what}: answered 500\n${body.slice(0, 2000)}`);
  assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status}\n${body.slice(0, 2000)}`);
  assert.match(res.headers.get('content-type') || '', /^text\/html/i, `${what}: content-type`);
  const main = body.match(/<main[^>]*\bid="error-page"[^>]*>/i);
  assert.ok(main, `${what}: no <main id="error-page"> in\n${body.slice(0, 2000)}`);
  assert.match(main[0], new RegExp(`data-status="${status}"`), `${what}: ${main[0]}`);
  assert.doesNotMatch(body, LEAK_PATTERN, `${what}: the page leaks internals`);
}

/** Asserts the page in the browser is the error page with `status`. */
async function assertErrorPageShown(page, status) {
  await page.locator(`#error-page[data-status="${status}"]`).waitFor({ timeout: 5_000 });
  assert.ok((await page.textContent('#error-message')).trim(), 'error page has a message');
  assert.ok((await page.textContent('#request-id')).trim(), 'error page shows a request id');
  assert.doesNotMatch(await page.content(), LEAK_PATTERN);
}

/**
 * A request sent exactly as written (fetch would normalise `..` and `%2e%2e` in the path).
 * Resolves with { status, headers, text, reset }. A server may answer before reading a body it
 * refuses and then close the connection; `reset` says the answer was cut off that way after
 * its status line arrived (a reset before any answer rejects).
 */
function rawRequest(baseUrl, method, path, headers = {}, body) {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolveRes, reject) => {
    let answered = null;
    const chunks = [];
    const done = (reset) => {
      const r = answered;
      resolveRes({ status: r.statusCode, headers: r.headers, text: Buffer.concat(chunks).toString('utf8'), reset });
    };
    const req = httpRequest({ host: hostname, port, method, path, headers }, (res) => {
      answered = res;
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => done(false));
      res.on('error', () => done(true));
      res.on('aborted', () => done(true));
    });
    req.on('error', (e) => (answered ? done(true) : reject(new Error(`${method} ${path}: ${e.message}`))));
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${path}: no answer in 10 s`)));
    req.end(body);
  });
}

/** Asserts a rawRequest answer is the HTML error page with `status`, leaking nothing. */
function assertRawErrorPage(res, status, what) {
  assert.notEqual(res.status, 500, `${what}: answered 500\n${res.text.slice(0, 2000)}`);
  assert.equal(res.status, status, `${what}: expected ${status}, got ${res.status}\n${res.text.slice(0, 2000)}`);
  assert.doesNotMatch(res.text, LEAK_PATTERN, `${what}: the page leaks internals`);
  if (res.reset) return; // the status arrived, the page was cut off by the connection reset
  assert.match(res.headers['content-type'] || '', /^text\/html/i, `${what}: content-type`);
  assert.match(res.text, /<main[^>]*\bid="error-page"[^>]*\bdata-status="\d+"|<main[^>]*\bdata-status="\d+"[^>]*\bid="error-page"/i,
    `${what}: no <main id="error-page">`);
  assert.match(res.text, new RegExp(`data-status="${status}"`), `${what}: data-status`);
}

/** A form-encoded body. */
function form(fields) {
  return new URLSearchParams(fields).toString();
}

const FORM_TYPE = 'application/x-www-form-urlencoded';

describe(`foundation (${backend}): pages, sign-in, CSRF, locale, headers, bad input`, () => {
  let broker;
  let browser;
  before(async () => {
    // Every test here signs the demo account in; at the default 10 sign-ins per minute per
    // account a fast run got 429s (sessions.test.mjs covers the limits themselves).
    broker = await startBroker({
      env: {
        CONCIERGE__RATE_LIMIT__LOGIN_PER_ACCOUNT: '1000/1m',
        CONCIERGE__RATE_LIMIT__LOGIN_PER_IP: '1000/1m',
      },
    });
    browser = await launchBrowser({ locale: 'en-US' });
  });
  after(async () => {
    await browser?.close();
    await broker?.stop();
  });

  // One fresh browser context per test, closed when the test ends.
  async function freshContext(t, opts = {}) {
    const context = await browser.newContext(opts);
    t.after(() => context.close());
    return context;
  }
  const test = (name, fn) => it(name, { timeout: 60_000 }, withLogs(() => broker, fn));

  test('demo sign-in through the login page lands on /account with the session details', async (t) => {
    const context = await freshContext(t);
    const page = await context.newPage();

    const root = await page.goto(`${broker.url}/`);
    assert.equal(new URL(page.url()).pathname, '/login', 'GET / without a session goes to /login');
    assert.equal(root.status(), 200);

    const response = await loginViaPage(page, broker.url);
    assert.equal(response.status(), 303, 'POST /login answers 303 on success');
    assert.equal(new URL(page.url()).pathname, '/account');
    assert.ok(await sessionCookie(context), 'the session cookie is set');

    assert.equal((await page.textContent('#user-email')).trim(), DEMO_EMAIL);
    for (const name of SESSION_FIELDS) {
      assert.equal(
        await page.locator(`#session-info dd[data-field="${name}"]`).count(),
        1,
        `#session-info has one dd[data-field="${name}"]`,
      );
    }
    const field = async (name) => (await page.textContent(`#session-info dd[data-field="${name}"]`)).trim();
    // channel and upstream are shown as the locale's words for `web` and `local`.
    const en = englishStrings();
    assert.ok((await field('channel')).includes(en.channel_web), `channel shows "${en.channel_web}"`);
    assert.ok((await field('upstream')).includes(en.upstream_local), `upstream shows "${en.upstream_local}"`);
    assert.match(await field('auth_time'), /\d/, 'auth_time is shown');
    assert.match(await field('ip'), /(^|[^\d.])127\.0\.0\.1([^\d.]|$)/);
    const ua = await page.evaluate(() => navigator.userAgent);
    assert.equal(await field('user_agent'), ua);

    await page.goto(`${broker.url}/`);
    assert.equal(new URL(page.url()).pathname, '/account', 'GET / with a session goes to /account');
  });

  test('return_to: a relative path is honoured, another site is not', async () => {
    for (const [returnTo, expectPath] of [
      ['/signed-out', '/signed-out'],
      ['//evil.example/steal', '/account'],
      ['https://evil.example/steal', '/account'],
      ['/\\evil.example/steal', '/account'],
    ]) {
      const { cookie, token } = await csrfPair(broker.url);
      const res = await fetch(`${broker.url}/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie, 'content-type': FORM_TYPE },
        body: form({ csrf_token: token, email: DEMO_EMAIL, password: DEMO_PASSWORD, return_to: returnTo }),
      });
      assert.equal(res.status, 303, `login with return_to=${returnTo}`);
      const target = located(res.headers.get('location'), broker.url);
      assert.equal(target.origin, new URL(broker.url).origin, `return_to=${returnTo} left the site: ${target}`);
      assert.equal(target.pathname, expectPath, `return_to=${returnTo}`);
      assert.ok(
        res.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=`)),
        'a successful login sets the session cookie',
      );
    }
  });

  test('wrong password: 401, an error on the login page, no session cookie', async (t) => {
    const context = await freshContext(t);
    const page = await context.newPage();
    const response = await loginViaPage(page, broker.url, { password: 'not-the-password' });
    assert.equal(response.status(), 401);
    await page.locator('#login-error').waitFor({ timeout: 5_000 });
    const message = (await page.textContent('#login-error')).trim();
    assert.ok(message, '#login-error has text');
    assert.equal(await page.inputValue('#email'), DEMO_EMAIL, 'the email is kept in the form');
    assert.equal(await page.inputValue('#password'), '', 'the password is not echoed back');
    assert.equal(await sessionCookie(context), undefined, 'no session cookie after a failed login');
    assertToLogin(await accountStatus(context, broker.url), broker.url, '/account after a failed login');

    // An unknown account gets the very same answer (no account enumeration).
    const unknown = await loginViaPage(page, broker.url, { email: 'nobody@example.com', password: 'x' });
    assert.equal(unknown.status(), 401);
    assert.equal((await page.textContent('#login-error')).trim(), message);
    assert.equal(await sessionCookie(context), undefined);
  });

  test('logout ends the session server-side: the old cookie is refused afterwards', async (t) => {
    const context = await freshContext(t);
    const page = await context.newPage();
    await loginViaPage(page, broker.url);
    assert.equal(new URL(page.url()).pathname, '/account');
    const old = (await sessionCookie(context))?.value;
    assert.ok(old, 'signed in with a session cookie');

    await Promise.all([page.waitForURL('**/signed-out'), page.click('#logout-submit')]);
    await page.locator('#signed-out').waitFor({ timeout: 5_000 });
    assert.equal(await page.getAttribute('#sign-in-again', 'href'), '/login');
    const after = await sessionCookie(context);
    assert.ok(!after || after.value === '', 'logout clears the session cookie');
    assertToLogin(await accountStatus(context, broker.url), broker.url, '/account after logout');

    // Replay the old cookie from a fresh browser...
    const replay = await freshContext(t);
    await replay.addCookies([{ name: SESSION_COOKIE, value: old, url: broker.url }]);
    const page2 = await replay.newPage();
    await page2.goto(`${broker.url}/account`);
    assert.equal(new URL(page2.url()).pathname, '/login', 'the old session cookie no longer works');

    // ...and by hand.
    const res = await fetch(`${broker.url}/account`, {
      redirect: 'manual',
      headers: { cookie: `${SESSION_COOKIE}=${old}` },
    });
    assertToLogin({ status: res.status, location: res.headers.get('location') }, broker.url, 'replayed cookie');
    const target = located(res.headers.get('location'), broker.url);
    assert.equal(target.searchParams.get('return_to'), '/account');
  });

  test('CSRF: a login POST without the token is refused with 403 and creates no session', async (t) => {
    const context = await freshContext(t);
    const page = await context.newPage();
    await page.goto(`${broker.url}/login`);
    await page.evaluate(() => document.querySelector('#login-form input[name="csrf_token"]').remove());
    await page.fill('#email', DEMO_EMAIL);
    await page.fill('#password', DEMO_PASSWORD);
    const responseP = page.waitForResponse((r) => r.request().method() === 'POST');
    await page.click('#login-submit');
    assert.equal((await responseP).status(), 403);
    await assertErrorPageShown(page, 403);
    assert.equal(await sessionCookie(context), undefined, 'no session cookie');
    assertToLogin(await accountStatus(context, broker.url), broker.url, '/account');

    // The same with a hand-made request carrying the CSRF cookie but no token.
    const res = await context.request.post(`${broker.url}/login`, {
      form: { email: DEMO_EMAIL, password: DEMO_PASSWORD },
      maxRedirects: 0,
    });
    assert.equal(res.status(), 403);
    assert.match(await res.text(), /id="error-page"[^>]*data-status="403"|data-status="403"[^>]*id="error-page"/);
    assert.equal(await sessionCookie(context), undefined, 'no session cookie');
  });

  test('CSRF: a login POST with a forged token or another browser\'s token is refused', async (t) => {
    // A token the attacker got from their own browser.
    const attacker = await freshContext(t);
    const attackerPage = await attacker.newPage();
    await attackerPage.goto(`${broker.url}/login`);
    const foreign = await attackerPage.inputValue('#login-form input[name="csrf_token"]');
    assert.ok(foreign, 'the login form carries a csrf_token');

    for (const [what, value] of [
      ['forged', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'],
      ["another browser's", foreign],
    ]) {
      const context = await freshContext(t);
      const page = await context.newPage();
      await page.goto(`${broker.url}/login`);
      await page.evaluate((v) => {
        document.querySelector('#login-form input[name="csrf_token"]').value = v;
      }, value);
      await page.fill('#email', DEMO_EMAIL);
      await page.fill('#password', DEMO_PASSWORD);
      const responseP = page.waitForResponse((r) => r.request().method() === 'POST');
      await page.click('#login-submit');
      assert.equal((await responseP).status(), 403, `${what} token`);
      await assertErrorPageShown(page, 403);
      assert.equal(await sessionCookie(context), undefined, `no session with a ${what} token`);
    }
  });

  test('CSRF: a logout POST without the token is refused with 403 and the session survives', async (t) => {
    const context = await freshContext(t);
    const page = await context.newPage();
    await loginViaPage(page, broker.url);
    assert.equal(new URL(page.url()).pathname, '/account');
    await page.evaluate(() => document.querySelector('#logout-form input[name="csrf_token"]').remove());
    const responseP = page.waitForResponse((r) => r.request().method() === 'POST');
    await page.click('#logout-submit');
    assert.equal((await responseP).status(), 403);
    await assertErrorPageShown(page, 403);
    assert.equal((await accountStatus(context, broker.url)).status, 200, 'still signed in');

    const res = await context.request.post(`${broker.url}/logout`, { form: {}, maxRedirects: 0 });
    assert.equal(res.status(), 403);
    assert.equal((await accountStatus(context, broker.url)).status, 200, 'still signed in');
  });

  test('Korean: Accept-Language ko-KR gives a Korean page, ui_locales switches', async (t) => {
    const context = await freshContext(t, { locale: 'ko-KR' });
    const page = await context.newPage();
    await page.goto(`${broker.url}/login`);
    assert.equal(await page.getAttribute('html', 'lang'), 'ko');
    assert.match(await page.textContent('#login-submit'), HANGUL, 'the submit button is in Korean');
    assert.match(await page.textContent('body'), HANGUL);

    // A failed login is answered in Korean too.
    await loginViaPage(page, broker.url, { password: 'wrong' });
    assert.match(await page.textContent('#login-error'), HANGUL, 'the login error is in Korean');

    await page.goto(`${broker.url}/login?ui_locales=en`);
    assert.equal(await page.getAttribute('html', 'lang'), 'en');
    const button = await page.textContent('#login-submit');
    assert.doesNotMatch(button, HANGUL);
    assert.match(button, /[A-Za-z]/);

    // ui_locales is a space-separated list: the first supported one wins.
    const english = await freshContext(t, { locale: 'en-US' });
    const page2 = await english.newPage();
    await page2.goto(`${broker.url}/login?ui_locales=fr%20ko`);
    assert.equal(await page2.getAttribute('html', 'lang'), 'ko');

    // Accept-Language preferences with quality values.
    const res = await fetch(`${broker.url}/login`, {
      headers: { 'accept-language': 'fr-CH, fr;q=0.9, ko;q=0.8, en;q=0.5' },
    });
    assert.match(await res.text(), /<html[^>]*\blang="ko"/);
    const fallback = await fetch(`${broker.url}/login`, { headers: { 'accept-language': 'de-DE, fr;q=0.9' } });
    assert.match(await fallback.text(), /<html[^>]*\blang="en"/, 'unsupported languages fall back to en');
  });

  test('security headers and cookie flags', async (t) => {
    const context = await freshContext(t);
    const page = await context.newPage();
    const response = await page.goto(`${broker.url}/login`);
    const headers = response.headers();
    const csp = headers['content-security-policy'];
    assert.ok(csp, 'Content-Security-Policy is set');
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    assert.doesNotMatch(csp, /unsafe-eval/);
    assert.equal(headers['referrer-policy'], 'no-referrer');
    assert.equal(headers['x-content-type-options'], 'nosniff');

    await loginViaPage(page, broker.url);
    const account = await context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(account.status(), 200);
    assert.match(account.headers()['cache-control'] || '', /no-store/, 'the account page is not cached');
    const cookie = await sessionCookie(context);
    assert.ok(cookie, 'session cookie present after sign-in');
    assert.equal(cookie.httpOnly, true, 'session cookie is HttpOnly');
    assert.equal(cookie.sameSite, 'Lax', 'session cookie is SameSite=Lax');
    assert.equal(cookie.path, '/');
  });

  test('pages obey the CSP (no violations) and the stylesheet loads', async (t) => {
    const context = await freshContext(t);
    const page = await context.newPage();
    const violations = [];
    page.on('console', (m) => {
      if (/Content Security Policy|Refused to/i.test(m.text())) violations.push(`${page.url()}: ${m.text()}`);
    });
    const css = [];
    const staticFailures = [];
    page.on('response', (r) => {
      const path = new URL(r.url()).pathname;
      if (path === '/static/style.css') css.push(r);
      if (path.startsWith('/static/') && r.status() !== 200) staticFailures.push(`${path}: ${r.status()}`);
    });

    await page.goto(`${broker.url}/login`);
    await page.goto(`${broker.url}/no-such-page`);
    await loginViaPage(page, broker.url);
    await Promise.all([page.waitForURL('**/signed-out'), page.click('#logout-submit')]);
    await page.waitForLoadState('load');
    assert.deepEqual(violations, [], 'CSP violations');

    assert.ok(css.length > 0, 'pages link /static/style.css');
    assert.deepEqual(staticFailures, [], 'every /static/ file the pages link is served');
    const res = await fetch(`${broker.url}/static/style.css`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') || '', /^text\/css/);
  });

  test('bad input: 404, 413 and 400 error pages, never a 500', async () => {
    await assertErrorPage(await fetch(`${broker.url}/no-such-page`), 404, 'unknown route');
    await assertErrorPage(await fetch(`${broker.url}/account/no/such/page.php?x=%00`), 404, 'odd unknown route');

    // Oversized form body (100 KiB), with a valid token so that only the size is wrong.
    {
      const { cookie, token } = await csrfPair(broker.url);
      const body = `${form({ csrf_token: token, email: DEMO_EMAIL })}&password=${'a'.repeat(100 * 1024)}`;
      const res = await rawRequest(broker.url, 'POST', '/login', {
        cookie,
        'content-type': FORM_TYPE,
        'content-length': Buffer.byteLength(body),
      }, body);
      assertRawErrorPage(res, 413, 'oversized form');
      assert.ok(!String(res.headers['set-cookie'] || '').includes(`${SESSION_COOKIE}=`), 'no session');
    }

    // A form that cannot be decoded into the login fields (a field given twice).
    {
      const { cookie, token } = await csrfPair(broker.url);
      const res = await fetch(`${broker.url}/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie, 'content-type': FORM_TYPE },
        body: `${form({ csrf_token: token, email: DEMO_EMAIL, password: DEMO_PASSWORD })}&email=x%40example.com`,
      });
      await assertErrorPage(res, 400, 'form with a duplicate field');
      assert.ok(!res.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=`)));
    }
  });

  test('bad input: a form body with invalid percent-encoding or non-UTF-8 bytes is a 400', async () => {
    // Valid CSRF token, then invalid percent-encoding and bytes that are not UTF-8.
    const { cookie, token } = await csrfPair(broker.url);
    const body = Buffer.concat([
      Buffer.from(`csrf_token=${encodeURIComponent(token)}&email=%ZZdemo%E0%A4&password=`),
      Buffer.from([0xff, 0xfe, 0x00, 0x25, 0xc3, 0x28]),
    ]);
    const res = await fetch(`${broker.url}/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie, 'content-type': FORM_TYPE },
      body,
    });
    await assertErrorPage(res, 400, 'malformed form');
    assert.ok(!res.headers.getSetCookie().some((c) => c.startsWith(`${SESSION_COOKIE}=`)));
  });

  test('odd requests never cause a 5xx or leak internals', async () => {
    const { cookie } = await csrfPair(broker.url);
    const cases = [
      ['GET', '/login?return_to=%ZZ%FF'],
      ['GET', `/login?ui_locales=${'x'.repeat(4000)}`],
      ['GET', '/login?ui_locales=%00'],
      ['GET', '/account', { cookie: `${SESSION_COOKIE}=%%%garbage` }],
      ['GET', '/account', { cookie: `${SESSION_COOKIE}=${'A'.repeat(3000)}` }],
      ['POST', '/login', { cookie, 'content-type': 'application/json' }, '{"email":"demo@example.com"}'],
      ['POST', '/login', { cookie, 'content-type': FORM_TYPE }, ''],
      ['POST', '/logout', { cookie, 'content-type': FORM_TYPE }, 'csrf_token='],
      ['DELETE', '/login'],
      ['GET', '/static/../Cargo.toml'],
      ['GET', '/static/%2e%2e/%2e%2e/Cargo.toml'],
      ['GET', '/static/..%2f..%2fCargo.toml'],
      ['GET', '/login/../../etc/passwd'],
    ];
    for (const [method, path, headers = {}, body] of cases) {
      const res = await rawRequest(broker.url, method, path, headers, body);
      const { text } = res;
      const what = `${method} ${path.slice(0, 80)}`;
      assert.ok(res.status < 500, `${what}: answered ${res.status}\n${text.slice(0, 1000)}`);
      assert.doesNotMatch(text, LEAK_PATTERN, `${what}: leaks internals`);
      assert.doesNotMatch(text, /\[workspace\]|\[package\]/, `${what}: served a file outside static/`);
    }
  });

  test('health, readiness and metrics endpoints', async () => {
    assert.equal((await fetch(`${broker.url}/healthz`)).status, 200);
    assert.equal((await fetch(`${broker.url}/readyz`)).status, 200);
    const metrics = await fetch(`${broker.url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^# (HELP|TYPE) /m);
  });
});

describe(`idle timeout (${backend})`, () => {
  let broker;
  let browser;
  before(async () => {
    broker = await startBroker({
      env: {
        CONCIERGE__SESSION__IDLE_TIMEOUT: '2s',
        CONCIERGE__SESSION__ABSOLUTE_TIMEOUT: '1h',
      },
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await broker?.stop();
  });
  const test = (name, fn) => it(name, { timeout: 60_000 }, withLogs(() => broker, fn));

  test('a session idle for longer than idle_timeout is signed out', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    await loginViaPage(page, broker.url);
    assert.equal(new URL(page.url()).pathname, '/account');
    assert.equal((await accountStatus(context, broker.url)).status, 200, '/account works right after sign-in');

    await sleep(3_000);
    assertToLogin(await accountStatus(context, broker.url), broker.url, '/account after 3 s idle');
    await page.goto(`${broker.url}/account`);
    assert.equal(new URL(page.url()).pathname, '/login');
  });

  test('activity keeps a session alive past idle_timeout', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    await loginViaPage(page, broker.url);
    assert.equal(new URL(page.url()).pathname, '/account');
    // A request every 0.5 s for 4 s (twice the idle timeout). The broker keeps whole-second
    // timestamps, so 1 s gaps could round up to the 2 s idle timeout; 0.5 s gaps cannot.
    const start = Date.now();
    while (Date.now() - start < 4_000) {
      await sleep(500);
      const s = await accountStatus(context, broker.url);
      assert.equal(s.status, 200, `signed out after ${Date.now() - start} ms of activity (location ${s.location})`);
    }
    await page.goto(`${broker.url}/account`);
    assert.equal(new URL(page.url()).pathname, '/account', 'still signed in after 4 s of activity');
  });
});

describe(`absolute timeout (${backend})`, () => {
  let broker;
  let browser;
  before(async () => {
    broker = await startBroker({
      env: {
        // idle_timeout may not exceed absolute_timeout (config validation), so both are 3 s;
        // the activity below every second keeps the idle deadline moving.
        CONCIERGE__SESSION__IDLE_TIMEOUT: '3s',
        CONCIERGE__SESSION__ABSOLUTE_TIMEOUT: '3s',
      },
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await broker?.stop();
  });

  it(
    'an active session still ends at absolute_timeout',
    { timeout: 60_000 },
    withLogs(
      () => broker,
      async (t) => {
        const context = await browser.newContext();
        t.after(() => context.close());
        const page = await context.newPage();
        const beforeLogin = Date.now(); // the server's auth_time is after this...
        await loginViaPage(page, broker.url);
        const afterLogin = Date.now(); // ...and before this
        assert.equal(new URL(page.url()).pathname, '/account');

        let checked = 0;
        while (Date.now() - afterLogin < 4_000) {
          await sleep(Math.max(0, Math.min(500, 4_000 - (Date.now() - afterLogin))));
          const s = await accountStatus(context, broker.url);
          // Timestamps are whole seconds: only under 2 s after sign-in is "still alive" certain.
          if (Date.now() - beforeLogin < 1_900) {
            assert.equal(s.status, 200, `signed out only ${Date.now() - beforeLogin} ms after sign-in`);
            checked += 1;
          }
        }
        assert.ok(checked >= 1, 'the session was seen alive while active');
        assertToLogin(await accountStatus(context, broker.url), broker.url, '/account 4 s after sign-in');
        await page.goto(`${broker.url}/account`);
        assert.equal(new URL(page.url()).pathname, '/login');
      },
    ),
  );
});
