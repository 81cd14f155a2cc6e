// The broker as a SAML 2.0 IdP, in Chromium, against a real service provider (PyPI pysaml2 with
// Debian's xmlsec1, tests/peers/saml_sp.py, started here on 127.0.0.1): the SP's AuthnRequest
// brings the browser to the broker's sign-in page; after the password the broker's signed
// Response is auto-posted to the SP's ACS under the broker's CSP (the browser enforces
// `form-action` on the login form's redirect and on the auto-submitted form), and pysaml2 accepts
// it. One sign-in serves a SAML app and an OpenID app (openid-client), in both orders, and one
// logout ends both, started from either side (issue #20, item 4): the SP's signed LogoutRequest
// ends the session and the OpenID app gets its back-channel logout; the OpenID app's RP-initiated
// logout sends the browser through the SP's SingleLogoutService (the broker's signed
// LogoutRequest, pysaml2's answer) before its post-logout redirect URI.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import {
  REPO_ROOT,
  startProvider,
  startCallbackServer,
  startBackchannelReceiver,
  keyPair,
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

/**
 * Starts tests/peers/saml_sp.py on a free port, signing its requests with `keys`; resolves with
 * { url, logs, stop } once it listens.
 */
async function startSp(keys) {
  const python = process.env.CONCIERGE_TEST_PYTHON || 'python3';
  const output = [];
  const args = ['--port', '0', '--key', keys.key, '--cert', keys.cert];
  const child = spawn(python, [join(REPO_ROOT, 'tests', 'peers', 'saml_sp.py'), ...args], {
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
  let bye;
  let backchannel;
  let config;
  let dir;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'concierge-saml-idp-'));
    const spKeys = keyPair(dir, 'sp');
    sp = await startSp(spKeys);
    rp = await startCallbackServer('/cb');
    bye = await startCallbackServer('/bye');
    backchannel = await startBackchannelReceiver();
    broker = await startProvider({
      clients: [{
        id: 'app',
        secret_sha256: sha256Hex(APP_SECRET),
        redirect_uris: [rp.url],
        post_logout_redirect_uris: [bye.url],
        backchannel_logout_uri: backchannel.url,
      }],
      extraToml: [
        '[[saml_apps]]',
        `entity_id = "${sp.url}/metadata"`,
        'name = "pysaml2 SP"',
        `acs_urls = ["${sp.url}/acs"]`,
        `slo_url = "${sp.url}/sls"`,
        // The SP signs its requests: its LogoutRequests can end sessions.
        `signing_cert_file = "${spKeys.cert}"`,
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
    await bye?.close();
    await backchannel?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
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

  /** Signs in at the SP (password) and then at the OpenID app from the same session. */
  async function signInBoth(page) {
    const saml = await spSignIn(page, { password: PROVIDER_PASSWORD });
    const a = await authorization();
    const arrived = rp.next();
    await page.goto(a.url.href);
    const tokens = await client.authorizationCodeGrant(config, await arrived, {
      pkceCodeVerifier: a.pkceCodeVerifier,
      expectedState: a.expectedState,
      expectedNonce: a.expectedNonce,
    });
    assert.equal(tokens.claims().sid, saml.session_index, 'one broker session for both apps');
    return { saml, tokens };
  }

  /** Whether the broker still has a session in this browser (its account page, or the sign-in). */
  async function signedIn(page) {
    await page.goto(`${broker.url}/account`);
    return !new URL(page.url()).pathname.startsWith('/login');
  }

  test('a logout at the SAML app ends the session for the OpenID app too', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const violations = [];
    page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
    const { saml, tokens } = await signInBoth(page);

    // The SP's signed LogoutRequest (HTTP-Redirect), through the browser, and its answer back.
    const answered = page.waitForResponse((r) => r.url().startsWith(`${sp.url}/sls?`), { timeout: 30_000 });
    const query = new URLSearchParams({ name_id: saml.name_id, session_index: saml.session_index });
    await page.goto(`${sp.url}/logout?${query}`);
    const answer = await answered;
    const got = JSON.parse(await answer.text());
    assert.equal(answer.status(), 200, `pysaml2 refused the LogoutResponse: ${JSON.stringify(got)}`);
    assert.equal(got.status, 'urn:oasis:names:tc:SAML:2.0:status:Success');
    assert.equal(got.sub_status, null, 'every participant was told');
    assert.equal(got.signature_ok, true);
    assert.equal(await signedIn(page), false, 'the broker session ended');

    // The OpenID app of the same session was told, with a logout token for its session.
    const sid = tokens.claims().sid;
    for (let i = 0; i < 100 && !backchannel.logoutTokens().some((b) => jwtSid(b) === sid); i += 1) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(backchannel.logoutTokens().some((b) => jwtSid(b) === sid), 'back-channel logout to the OpenID app');
    assert.deepEqual(violations, [], 'no CSP violation on the way');
  });

  test('a logout at the OpenID app goes through the SAML app', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const violations = [];
    page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
    const { saml, tokens } = await signInBoth(page);

    // The SP's single logout service is visited with the broker's LogoutRequest; pysaml2 checks
    // it (signature, NameID it got) and answers with a redirect back to the broker.
    const atSp = page.waitForResponse(
      (r) => r.url().startsWith(`${sp.url}/sls?`) && new URL(r.url()).searchParams.has('SAMLRequest'),
      { timeout: 30_000 },
    );
    const state = client.randomState();
    const endSession = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: bye.url,
      state,
    });
    const arrived = bye.next();
    await page.goto(endSession.href);
    const sls = await atSp;
    assert.equal(sls.status(), 302, `pysaml2 refused the broker's LogoutRequest: ${await sls.text().catch(() => '')}`);
    const request = new URL(sls.url());
    assert.ok(request.searchParams.get('Signature'), 'the LogoutRequest is signed');
    const back = await arrived;
    assert.equal(back.searchParams.get('state'), state, 'then the post-logout redirect URI');
    assert.equal(await signedIn(page), false, 'the broker session ended');
    assert.ok(saml.session_index);
    assert.deepEqual(violations, [], 'no CSP violation on the way');
  });
});

/** The `sid` of a logout token (its signature is checked by the OpenID suite). */
function jwtSid(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8')).sid;
}
