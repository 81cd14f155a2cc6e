// Federation through a real SAML 2.0 IdP (PyPI pysaml2 with Debian's xmlsec1, tests/peers/
// saml_idp.py, started here on 127.0.0.1): Chromium follows the broker's signed AuthnRequest to
// the IdP's login page, the IdP posts its signed (and, when asked, encrypted) Response to the
// broker's ACS, and the login ends at a downstream app (openid-client) whose ID token carries the
// IdP's attributes. The IdP's refusal reaches the app as access_denied.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import {
  startBackchannelReceiver,
  keyPair,
  REPO_ROOT,
  startProvider,
  startCallbackServer,
  launchBrowser,
  withLogs,
  freePort,
  sha256Hex,
  backend,
  authorizationRequest,
} from './helpers.mjs';

const APP_SECRET = randomBytes(24).toString('base64url');

/** The claims of a JWT (no verification: the OIDC suite checks logout token signatures). */
function jwtClaims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

/** Starts tests/peers/saml_idp.py; resolves once it listens. */
async function startIdp({ port, key, cert, spMetadataUrl }) {
  const python = process.env.CONCIERGE_TEST_PYTHON || 'python3';
  const output = [];
  const child = spawn(python, [
    join(REPO_ROOT, 'tests', 'peers', 'saml_idp.py'),
    '--port', String(port), '--key', key, '--cert', cert, '--sp-metadata-url', spMetadataUrl,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr.on('data', (d) => output.push(d.toString()));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`pysaml2 IdP did not start:\n${output.join('')}`)), 30_000);
    child.stdout.on('data', (d) => {
      output.push(d.toString());
      if (d.toString().includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`pysaml2 IdP exited (${code}); is pysaml2 installed (scripts/test.sh)?\n${output.join('')}`));
    });
  });
  child.removeAllListeners('exit');
  return {
    url: `http://127.0.0.1:${port}`,
    logs: () => output.join(''),
    stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }),
  };
}

describe(`upstream SAML 2.0 through pysaml2 (${backend})`, () => {
  let broker;
  let idp;
  let browser;
  let rp;
  let config;
  let dir;
  let backchannel;
  before(async () => {
    backchannel = await startBackchannelReceiver();
    dir = mkdtempSync(join(tmpdir(), 'concierge-saml-'));
    const idpKeys = keyPair(dir, 'idp');
    const spKeys = keyPair(dir, 'sp');
    rp = await startCallbackServer('/cb');
    const [brokerPort, idpPort] = [await freePort(), await freePort()];
    broker = await startProvider({
      port: brokerPort,
      clients: [
        {
          id: 'app',
          secret_sha256: sha256Hex(APP_SECRET),
          redirect_uris: [rp.url],
          backchannel_logout_uri: backchannel.url,
        },
      ],
      extraToml: [
        '[[upstreams]]',
        'id = "corp-saml"',
        'name = "Corp SAML"',
        'kind = "saml"',
        `metadata_url = "http://127.0.0.1:${idpPort}/metadata"`,
        `signing_key_file = "${spKeys.key}"`,
        `signing_cert_file = "${spKeys.cert}"`,
        `decryption_key_file = "${spKeys.key}"`,
        `decryption_cert_file = "${spKeys.cert}"`,
        '[upstreams.attributes]',
        'groups = "eduPersonAffiliation"',
      ].join('\n'),
    });
    idp = await startIdp({
      port: idpPort,
      ...idpKeys,
      spMetadataUrl: `${broker.url}/upstream/corp-saml/saml/metadata`,
    });
    config = await client.discovery(new URL(broker.issuer), 'app', undefined, client.ClientSecretBasic(APP_SECRET), {
      execute: [client.allowInsecureRequests],
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await idp?.stop();
    await broker?.stop();
    await rp?.close();
    await backchannel?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const test = (name, fn) =>
    it(name, { timeout: 90_000 }, withLogs(() => broker, async (t) => {
      try {
        await fn(t);
      } catch (e) {
        e.message = `${e.message}\n--- pysaml2 IdP ---\n${idp?.logs()}`;
        throw e;
      }
    }));

  /** Starts a code flow for `app`. */
  const authorization = () => authorizationRequest(config, rp.url);

  /** At the IdP's login page: sign in as `user` with the given options, or deny. */
  async function atIdp(page, user, { encrypt = false, signResponse = false, deny = false } = {}) {
    await page.waitForURL(`${idp.url}/sso?*`);
    await page.fill('#user', user);
    if (encrypt) await page.check('#encrypt');
    if (signResponse) await page.check('#sign-response');
    await page.click(deny ? '#deny' : '#signin');
  }

  test('a user signs in at the SAML IdP and the app gets their attributes', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const a = await authorization();
    const arrived = rp.next();
    await page.goto(a.url.href);
    await page.click('a.upstream[data-upstream="corp-saml"]');
    await atIdp(page, 'bob');
    const back = await arrived;
    const tokens = await client.authorizationCodeGrant(config, back, {
      pkceCodeVerifier: a.pkceCodeVerifier,
      expectedState: a.expectedState,
      expectedNonce: a.expectedNonce,
    });
    const claims = tokens.claims();
    assert.equal(claims.email, 'bob@saml.example');
    assert.equal(claims.name, 'SAML bob');
    assert.notEqual(claims.sub, 'pysaml2-bob', 'the broker has its own subject');
    assert.ok(claims.amr.includes('pwd'), `PasswordProtectedTransport: ${claims.amr}`);
    const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    assert.equal(info.email, 'bob@saml.example');

    // The broker session names the upstream; the next app sign-in needs no trip to the IdP.
    const acct = await context.newPage();
    await acct.goto(`${broker.url}/account`);
    assert.match(await acct.textContent('[data-field="upstream"]'), /Corp SAML/);
    const again = await authorization();
    const second = rp.next();
    await acct.goto(again.url.href);
    const tokens2 = await client.authorizationCodeGrant(config, await second, {
      pkceCodeVerifier: again.pkceCodeVerifier,
      expectedState: again.expectedState,
      expectedNonce: again.expectedNonce,
    });
    assert.equal(tokens2.claims().sub, claims.sub, 'same broker user');
  });

  test('an encrypted assertion in a signed response signs in', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    await page.goto(`${broker.url}/login`);
    await page.click('a.upstream[data-upstream="corp-saml"]');
    await atIdp(page, 'carol', { encrypt: true, signResponse: true });
    await page.waitForURL(`${broker.url}/account`);
    assert.equal(await page.textContent('#user-email'), 'carol@saml.example');
  });

  test("the IdP's refusal reaches the app as access_denied", async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const a = await authorization();
    const arrived = rp.next();
    await page.goto(a.url.href);
    await page.click('a.upstream[data-upstream="corp-saml"]');
    await atIdp(page, 'dave', { deny: true });
    const back = await arrived;
    assert.equal(back.searchParams.get('error'), 'access_denied');
    assert.equal(back.searchParams.get('state'), a.expectedState);
    assert.equal(back.searchParams.get('iss'), broker.issuer);
    assert.equal(back.searchParams.get('code'), null);
    const acct = await context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(acct.status(), 303, 'no session');
  });

  test('signing out at the broker signs out at the IdP too (SAML Single Logout)', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    await page.goto(`${broker.url}/login`);
    await page.click('a.upstream[data-upstream="corp-saml"]');
    await atIdp(page, 'erin');
    await page.waitForURL(`${broker.url}/account`);
    // The account page's sign-out leads, through redirects, to the IdP and back.
    await Promise.all([page.waitForURL(`${broker.url}/signed-out`), page.click('#logout-submit')]);
    const acct = await context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(acct.status(), 303, 'the broker session is over');
    const log = await (await fetch(`${idp.url}/log`)).json();
    const request = log.filter((m) => m.kind === 'LogoutRequest' && m.name_id === 'pysaml2-erin');
    assert.equal(request.length, 1, JSON.stringify(log));
    assert.ok(request[0].signed, 'the LogoutRequest is signed');
    assert.equal(request[0].session_index.length, 1);
    assert.ok(
      request[0].issued_session_indexes.includes(request[0].session_index[0]),
      'it names the SessionIndex the IdP issued',
    );
  });

  test("the IdP's LogoutRequest ends the broker session and the app hears of it", async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const a = await authorization();
    const arrived = rp.next();
    await page.goto(a.url.href);
    await page.click('a.upstream[data-upstream="corp-saml"]');
    await atIdp(page, 'frank');
    const tokens = await client.authorizationCodeGrant(config, await arrived, {
      pkceCodeVerifier: a.pkceCodeVerifier,
      expectedState: a.expectedState,
      expectedNonce: a.expectedNonce,
    });
    const sid = tokens.claims().sid;
    assert.ok(sid);
    await page.waitForURL(`${rp.url}?**`); // the app's page has finished loading
    // Single Logout started at the IdP: the browser carries its LogoutRequest to the broker.
    await page.goto(`${idp.url}/logout-user?user=frank`);
    await page.locator('#idp-logged-out').waitFor();
    const acct = await context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(acct.status(), 303, 'the broker session is over');
    const log = await (await fetch(`${idp.url}/log`)).json();
    assert.ok(
      log.some((m) => m.kind === 'LogoutResponse' && m.status.endsWith(':Success')),
      JSON.stringify(log),
    );
    // The app got a back-channel logout token for that session.
    for (let i = 0; i < 100 && !backchannel.logoutTokens().some((b) => jwtClaims(b).sid === sid); i += 1) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(
      backchannel.logoutTokens().some((b) => jwtClaims(b).sid === sid),
      'a logout token for the session reached the app',
    );
  });

  test("the IdP's LogoutRequest naming one SessionIndex ends only that device's session", async (t) => {
    // Two devices (browser contexts) signed in as the same IdP user: two IdP sessions.
    const devices = [];
    for (let i = 0; i < 2; i += 1) {
      const context = await browser.newContext();
      t.after(() => context.close());
      const page = await context.newPage();
      const a = await authorization();
      const arrived = rp.next();
      await page.goto(a.url.href);
      await page.click('a.upstream[data-upstream="corp-saml"]');
      await atIdp(page, 'grace');
      await arrived;
      await page.waitForURL(`${rp.url}?**`);
      const acct = await context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
      assert.equal(acct.status(), 200, `device ${i} is signed in`);
      devices.push({ context, page });
    }
    // The IdP ends its latest session (the second device's): its LogoutRequest names that
    // SessionIndex only. It travels through the first device's browser, which must keep its
    // own session and cookie.
    const [first, second] = devices;
    await first.page.goto(`${idp.url}/logout-user?user=grace`);
    await first.page.locator('#idp-logged-out').waitFor();
    const log = await (await fetch(`${idp.url}/log`)).json();
    const request = log.filter((m) => m.kind === 'IdpLogoutRequest').at(-1);
    assert.equal(request.issued_session_indexes.length, 2, JSON.stringify(log));
    assert.deepEqual(request.session_index, [request.issued_session_indexes[1]]);
    const gone = await second.context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(gone.status(), 303, "the second device's broker session is over");
    const kept = await first.context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(kept.status(), 200, 'the first device stays signed in');
  });
});
