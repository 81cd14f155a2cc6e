// The broker as a SAML 2.0 IdP, in Chromium, against a real service provider (PyPI pysaml2 with
// Debian's xmlsec1, tests/peers/saml_sp.py, started here on 127.0.0.1): the SP's AuthnRequest
// brings the browser to the broker's sign-in page; after the password the broker's signed
// Response is auto-posted to the SP's ACS under the broker's CSP (the browser enforces
// `form-action` on the login form's redirect and on the auto-submitted form), and pysaml2 accepts
// it. One sign-in serves a SAML app and an OpenID app (openid-client), in both orders.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import {
  REPO_ROOT,
  startProvider,
  startCallbackServer,
  launchBrowser,
  withLogs,
  sha256Hex,
  backend,
  authorizationRequest,
  DEMO_EMAIL,
  PROVIDER_PASSWORD,
  LEAK_PATTERN,
} from './helpers.mjs';

const APP_SECRET = randomBytes(24).toString('base64url');

/** No internal error words on the page. */
async function assertNoLeak(page) {
  assert.doesNotMatch(await page.locator('body').innerText(), LEAK_PATTERN, `no internal error text at ${page.url()}`);
}

/** Starts tests/peers/saml_sp.py on a free port; resolves with { url, logs, stop } once it listens. */
async function startSp() {
  const python = process.env.CONCIERGE_TEST_PYTHON || 'python3';
  const output = [];
  const child = spawn(python, [join(REPO_ROOT, 'tests', 'peers', 'saml_sp.py'), '--port', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr.on('data', (d) => output.push(d.toString()));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pysaml2 SP did not start:\n${output.join('')}`)), 30_000);
    child.stdout.on('data', (d) => {
      output.push(d.toString());
      const m = d.toString().match(/ready (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`pysaml2 SP exited (${code}); is pysaml2 installed (scripts/test.sh)?\n${output.join('')}`));
    });
  });
  child.removeAllListeners('exit');
  return {
    url,
    logs: () => output.join(''),
    stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }),
  };
}

describe(`the broker as a SAML IdP to pysaml2, in Chromium (${backend})`, () => {
  let broker;
  let sp;
  let browser;
  let rp;
  let config;
  before(async () => {
    sp = await startSp();
    rp = await startCallbackServer('/cb');
    broker = await startProvider({
      clients: [{ id: 'app', secret_sha256: sha256Hex(APP_SECRET), redirect_uris: [rp.url] }],
      extraToml: [
        '[[saml_apps]]',
        `entity_id = "${sp.url}/metadata"`,
        'name = "pysaml2 SP"',
        `acs_urls = ["${sp.url}/acs"]`,
      ].join('\n'),
    });
    config = await client.discovery(new URL(broker.issuer), 'app', undefined, client.ClientSecretBasic(APP_SECRET), {
      execute: [client.allowInsecureRequests],
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await sp?.stop();
    await broker?.stop();
    await rp?.close();
  });
  const test = (name, fn) =>
    it(name, { timeout: 90_000 }, withLogs(() => broker, async (t) => {
      try {
        await fn(t);
      } catch (e) {
        e.message = `${e.message}\n--- pysaml2 SP ---\n${sp?.logs()}`;
        throw e;
      }
    }));

  /** Opens the SP's sign-in (an AuthnRequest over HTTP-Redirect); resolves with the ACS's answer. */
  async function spSignIn(page, { password } = {}) {
    const acs = page.waitForResponse(
      (r) => r.request().method() === 'POST' && r.url() === `${sp.url}/acs`,
      { timeout: 30_000 },
    );
    await page.goto(`${sp.url}/login?idp=${encodeURIComponent(`${broker.url}/saml/idp/metadata`)}`);
    if (password) {
      await page.waitForSelector('#email');
      await assertNoLeak(page);
      await page.fill('#email', DEMO_EMAIL);
      await page.fill('#password', password);
      await page.click('#login-submit');
    }
    const answer = await acs;
    const body = await answer.text();
    assert.equal(answer.status(), 200, `pysaml2 refused the Response: ${body}`);
    return JSON.parse(body);
  }

  const authorization = () => authorizationRequest(config, rp.url);

  test('the SP signs the user in with the broker password; then an OpenID app needs no second sign-in', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const violations = [];
    page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
    const saml = await spSignIn(page, { password: PROVIDER_PASSWORD });
    assert.equal(saml.name_id, DEMO_EMAIL);
    assert.equal(saml.relay_state, 'rs-1');
    assert.ok(saml.session_index, 'the Response names the broker session');
    assert.deepEqual(violations, [], 'no CSP violation on the way');

    const a = await authorization();
    const arrived = rp.next();
    await page.goto(a.url.href);
    const back = await arrived;
    const tokens = await client.authorizationCodeGrant(config, back, {
      pkceCodeVerifier: a.pkceCodeVerifier,
      expectedState: a.expectedState,
      expectedNonce: a.expectedNonce,
    });
    assert.equal(tokens.claims().email, DEMO_EMAIL, 'the same user, from the same session');
  });

  test('after an OpenID sign-in the SAML app is answered from the session: no page', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const a = await authorization();
    const arrived = rp.next();
    await page.goto(a.url.href);
    await page.fill('#email', DEMO_EMAIL);
    await page.fill('#password', PROVIDER_PASSWORD);
    await page.click('#login-submit');
    await arrived;

    const seen = [];
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) seen.push(new URL(f.url()).pathname); });
    const saml = await spSignIn(page);
    assert.equal(saml.name_id, DEMO_EMAIL);
    assert.ok(!seen.includes('/login'), `no sign-in page on the way: ${seen.join(' -> ')}`);
  });

  test('a wrong password leaves the SP without a Response', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    let posted = false;
    page.on('request', (r) => { if (r.method() === 'POST' && r.url() === `${sp.url}/acs`) posted = true; });
    await page.goto(`${sp.url}/login?idp=${encodeURIComponent(`${broker.url}/saml/idp/metadata`)}`);
    await page.fill('#email', DEMO_EMAIL);
    await page.fill('#password', 'not the password');
    await page.click('#login-submit');
    await page.waitForLoadState('load');
    assert.ok(page.url().startsWith(broker.url), `still at the broker: ${page.url()}`);
    await assertNoLeak(page);
    assert.equal(posted, false, 'nothing was posted to the SP');
  });
});
