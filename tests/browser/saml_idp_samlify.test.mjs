// The broker as a SAML 2.0 IdP, in Chromium, against a second independently written service
// provider: npm samlify (tests/peers/samlify_sp.mjs, started here on 127.0.0.1), which checks the
// signed Response with its own code (xml-crypto, the broker's metadata certificate), validates
// every message against the SAML schemas (@authenio/samlify-xmllint-wasm), decrypts an
// EncryptedAssertion with its own key (xml-encryption), and does in the peer the checks samlify
// leaves to the application (InResponseTo, Destination, Audience, subject confirmation).
// Issue #20: sign-in with NameID and attributes as configured, an encrypted variant, single
// sign-on with an OpenID app (openid-client) without a second page, Single Logout started from
// each side, and Responses the SP must refuse (a request it never sent, a replay, another SP's).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
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

/** The email's attribute name (eduPerson / RFC 4524 `mail`, NameFormat uri). */
const MAIL_OID = 'urn:oid:0.9.2342.19200300.100.1.3';
const require = createRequire(import.meta.url);
const samlify = require('samlify');

const APP_SECRET = randomBytes(24).toString('base64url');
const EMAIL_FORMAT = 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress';
const PERSISTENT_FORMAT = 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent';
const SUCCESS = 'urn:oasis:names:tc:SAML:2.0:status:Success';

/**
 * Starts tests/peers/samlify_sp.mjs on a free port with `args`; resolves with { url, logs, stop }
 * once it listens.
 */
async function startSamlifySp(args) {
  const output = [];
  const child = spawn(process.execPath, [join(REPO_ROOT, 'tests', 'peers', 'samlify_sp.mjs'), '--port', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr.on('data', (d) => output.push(d.toString()));
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`samlify SP did not start:\n${output.join('')}`)), 30_000);
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
      reject(new Error(`samlify SP exited (${code}); are the npm packages installed (scripts/test.sh)?\n${output.join('')}`));
    });
  });
  child.removeAllListeners('exit');
  return {
    url,
    logs: () => output.join(''),
    stop: () => new Promise((r) => { child.once('exit', r); child.kill('SIGTERM'); }),
  };
}

/** No internal error words on the page. */
async function assertNoLeak(page) {
  assert.doesNotMatch(await page.locator('body').innerText(), LEAK_PATTERN, `no internal error text at ${page.url()}`);
}

/** The `sid` of a logout token (its signature is checked by the OpenID suite). */
function jwtSid(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8')).sid;
}

describe(`the broker as a SAML IdP to samlify, in Chromium (${backend})`, () => {
  let broker;
  let sp; // samlify, assertions in the clear, NameID the email
  let enc; // samlify, assertions encrypted to its key, a persistent NameID
  let other; // samlify, another SP of the same broker (for a Response that is not for `sp`)
  let spKeys;
  let browser;
  let rp;
  let bye;
  let backchannel;
  let config;
  let dir;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'concierge-samlify-'));
    spKeys = keyPair(dir, 'sp');
    const encSigning = keyPair(dir, 'enc-sp');
    const encKeys = keyPair(dir, 'enc-sp-decrypt');
    sp = await startSamlifySp(['--key', spKeys.key, '--cert', spKeys.cert, '--name-id-format', EMAIL_FORMAT]);
    enc = await startSamlifySp([
      '--key', encSigning.key, '--cert', encSigning.cert,
      '--enc-key', encKeys.key, '--enc-cert', encKeys.cert,
      '--name-id-format', PERSISTENT_FORMAT,
    ]);
    const otherKeys = keyPair(dir, 'other-sp');
    other = await startSamlifySp(['--key', otherKeys.key, '--cert', otherKeys.cert]);
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
        'name = "samlify SP"',
        `acs_urls = ["${sp.url}/acs"]`,
        `slo_url = "${sp.url}/sls"`,
        'name_id_format = "email"',
        `signing_cert_file = "${spKeys.cert}"`,
        // Its attributes: the email under its OID name (NameFormat uri), the display name.
        '[[saml_apps.attributes]]',
        `name = "${MAIL_OID}"`,
        'friendly_name = "mail"',
        'name_format = "uri"',
        'from = "email"',
        '[[saml_apps.attributes]]',
        'name = "displayName"',
        'from = "name"',
        '',
        '[[saml_apps]]',
        `entity_id = "${enc.url}/metadata"`,
        'name = "samlify SP, encrypted"',
        `acs_urls = ["${enc.url}/acs"]`,
        `slo_url = "${enc.url}/sls"`,
        'name_id_format = "persistent"',
        `signing_cert_file = "${encSigning.cert}"`,
        `encryption_cert_file = "${encKeys.cert}"`,
        '',
        '[[saml_apps]]',
        `entity_id = "${other.url}/metadata"`,
        'name = "another samlify SP"',
        `acs_urls = ["${other.url}/acs"]`,
        `signing_cert_file = "${otherKeys.cert}"`,
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
    await enc?.stop();
    await other?.stop();
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
        e.message = `${e.message}\n--- samlify SP ---\n${sp?.logs()}\n--- samlify SP, encrypted ---\n${enc?.logs()}`;
        throw e;
      }
    }));

  /** A page that records CSP violations in `violations`. */
  async function newPage(t) {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const violations = [];
    page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
    return { context, page, violations };
  }

  /**
   * Opens `peer`'s sign-in (an AuthnRequest over HTTP-Redirect), signs in with the password when
   * given; resolves with { status, body (the ACS's JSON), posted (the form the browser posted) }.
   */
  async function spSignIn(page, peer, { password, start = `${peer.url}/login?idp=${encodeURIComponent(`${broker.url}/saml/idp/metadata`)}` } = {}) {
    const acs = page.waitForResponse(
      (r) => r.request().method() === 'POST' && r.url() === `${peer.url}/acs`,
      { timeout: 30_000 },
    );
    await page.goto(start);
    if (password) {
      await page.waitForSelector('#email');
      await assertNoLeak(page);
      await page.fill('#email', DEMO_EMAIL);
      await page.fill('#password', password);
      await page.click('#login-submit');
    }
    const answer = await acs;
    const text = await answer.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error(`the samlify SP answered ${answer.status()}: ${text}`);
    }
    return { status: answer.status(), body, posted: new URLSearchParams(answer.request().postData() ?? '') };
  }

  /** As spSignIn, and the SP must have accepted the Response. */
  async function acceptedSignIn(page, peer, opts) {
    const r = await spSignIn(page, peer, opts);
    assert.equal(r.status, 200, `samlify refused the Response: ${JSON.stringify(r.body)}`);
    return r;
  }

  const authorization = () => authorizationRequest(config, rp.url);

  /** The OpenID app's sign-in in the same browser: resolves with its tokens. */
  async function openIdSignIn(page, { seen } = {}) {
    const a = await authorization();
    const arrived = rp.next();
    await page.goto(a.url.href);
    const back = await arrived;
    if (seen) assert.ok(!seen.includes('/login'), `no sign-in page on the way: ${seen.join(' -> ')}`);
    return client.authorizationCodeGrant(config, back, {
      pkceCodeVerifier: a.pkceCodeVerifier,
      expectedState: a.expectedState,
      expectedNonce: a.expectedNonce,
    });
  }

  /** Whether the broker still has a session in this browser (its account page, or the sign-in). */
  async function signedIn(page) {
    await page.goto(`${broker.url}/account`);
    return !new URL(page.url()).pathname.startsWith('/login');
  }

  // An RP-initiated logout at the OpenID app (with its ID token) that goes through samlify's
  // SingleLogoutService: samlify's answer to the broker's LogoutRequest, the `state` sent, and
  // the arrival at the post-logout redirect URI (a promise).
  async function logoutAtTheOpenIdApp(page, tokens) {
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
    return { sls: await atSp, state, arrived };
  }

  test('samlify signs the user in: its checks pass, NameID and attributes as configured; then an OpenID app needs no page', async (t) => {
    const { page, violations } = await newPage(t);
    const { body: saml, posted } = await acceptedSignIn(page, sp, { password: PROVIDER_PASSWORD });
    assert.equal(saml.name_id, DEMO_EMAIL);
    assert.equal(saml.name_id_format, EMAIL_FORMAT, 'name_id_format = "email"');
    assert.deepEqual(
      saml.attributes,
      { [MAIL_OID]: DEMO_EMAIL, displayName: 'Demo' },
      'the attributes [[saml_apps.attributes]] releases, under their names',
    );
    assert.equal(saml.relay_state, 'rs-1');
    assert.equal(saml.encrypted, 0, 'in the clear for this SP');
    assert.ok(saml.session_index, 'the Response names the broker session');
    assert.match(saml.in_response_to, /^_/, 'answers the request samlify made');
    assert.ok(posted.get('SAMLResponse'), 'the browser posted the Response');
    assert.deepEqual(violations, [], 'no CSP violation on the way');

    const seen = [];
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) seen.push(new URL(f.url()).pathname); });
    const tokens = await openIdSignIn(page, { seen });
    assert.equal(tokens.claims().email, DEMO_EMAIL, 'the same user');
    assert.equal(tokens.claims().sid, saml.session_index, 'from the same broker session');
  });

  test('the encrypted assertion: samlify decrypts and checks it; the browser never sees the email', async (t) => {
    const { page, violations } = await newPage(t);
    const { body: saml, posted } = await acceptedSignIn(page, enc, { password: PROVIDER_PASSWORD });
    assert.equal(saml.encrypted, 1, 'one EncryptedAssertion as posted');
    assert.equal(saml.name_id_format, PERSISTENT_FORMAT, 'name_id_format = "persistent"');
    assert.notEqual(saml.name_id, DEMO_EMAIL, 'a pairwise id, not the email');
    assert.match(saml.name_id, /^[A-Za-z0-9_-]{16,}$/);
    assert.equal(saml.attributes.email, DEMO_EMAIL, 'the attributes, after decryption');
    const xml = Buffer.from(posted.get('SAMLResponse'), 'base64').toString('utf8');
    assert.match(xml, /EncryptedAssertion/);
    assert.ok(!xml.includes(DEMO_EMAIL), 'no plaintext email in what the browser posted');
    assert.ok(!xml.includes(saml.name_id), 'nor the NameID');
    assert.doesNotMatch(xml, /<(\w+:)?Assertion[\s>]/, 'no clear Assertion');
    assert.deepEqual(violations, [], 'no CSP violation on the way');

    // The same user at the same SP gets the same persistent id from a new sign-in.
    const again = await acceptedSignIn(page, enc);
    assert.equal(again.body.name_id, saml.name_id, 'persistent');
  });

  test('samlify refuses a replay, a Response to a request it never sent, a changed one, and another SP\'s', async (t) => {
    const { page } = await newPage(t);
    const first = await acceptedSignIn(page, sp, { password: PROVIDER_PASSWORD });

    // A replay of the Response samlify just accepted: its InResponseTo was answered.
    const replay = await fetch(`${sp.url}/acs`, { method: 'POST', body: first.posted });
    const replayed = await replay.json();
    assert.equal(replay.status, 400, `a replay is refused: ${JSON.stringify(replayed)}`);
    assert.match(replayed.error, /answered before/);

    // A signed AuthnRequest with this SP's entity ID and key, made elsewhere (another instance
    // of the app, whose requests this one never saw): the broker answers it to this ACS, and the
    // SP refuses a Response to a request it did not send.
    const metadata = await (await fetch(`${broker.url}/saml/idp/metadata`)).text();
    const idp = samlify.IdentityProvider({
      metadata: metadata.replace('WantAuthnRequestsSigned="false"', 'WantAuthnRequestsSigned="true"'),
    });
    const elsewhere = samlify.ServiceProvider({
      entityID: `${sp.url}/metadata`,
      authnRequestsSigned: true,
      privateKey: readFileSync(spKeys.key, 'utf8'),
      signingCert: readFileSync(spKeys.cert, 'utf8'),
      nameIDFormat: [EMAIL_FORMAT],
      assertionConsumerService: [{ Binding: samlify.Constants.namespace.binding.post, Location: `${sp.url}/acs` }],
    });
    const { id, context } = elsewhere.createLoginRequest(idp, 'redirect', { relayState: 'rs-other' });
    const unknown = await spSignIn(page, sp, { start: context });
    assert.equal(unknown.status, 400, `a Response to another request is refused: ${JSON.stringify(unknown.body)}`);
    assert.match(unknown.body.error, new RegExp(`InResponseTo ${id} is not a request this SP sent`));

    // A Response changed on its way (another user's email in the signed assertion).
    const xml = Buffer.from(first.posted.get('SAMLResponse'), 'base64').toString('utf8');
    assert.ok(xml.includes(`>${DEMO_EMAIL}<`));
    const changed = new URLSearchParams(first.posted);
    changed.set('SAMLResponse', Buffer.from(xml.replaceAll(DEMO_EMAIL, 'boss@example.com')).toString('base64'));
    const tampered = await fetch(`${sp.url}/acs`, { method: 'POST', body: changed });
    const refused = await tampered.json();
    assert.equal(tampered.status, 400, `a changed Response is refused: ${JSON.stringify(refused)}`);
    assert.match(refused.error, /^samlify: .*SIGNATURE/, 'by samlify\'s signature check');

    // Another SP's Response (its Audience, its ACS, its request), posted to this SP.
    const theirs = await acceptedSignIn(page, other);
    const cross = await fetch(`${sp.url}/acs`, { method: 'POST', body: theirs.posted });
    const crossed = await cross.json();
    assert.equal(cross.status, 400, `another SP's Response is refused: ${JSON.stringify(crossed)}`);
    assert.match(crossed.error, /ERR_AUDIENCE_MISMATCH/, 'by samlify\'s audience check');
  });

  test('a logout at samlify ends the broker session, and the OpenID app gets its back-channel logout', async (t) => {
    const { page, violations } = await newPage(t);
    const { body: saml } = await acceptedSignIn(page, sp, { password: PROVIDER_PASSWORD });
    const tokens = await openIdSignIn(page);
    const sid = tokens.claims().sid;
    assert.equal(sid, saml.session_index, 'one broker session for both apps');

    // samlify's signed LogoutRequest (HTTP-Redirect) through the browser; its /sls reads the
    // broker's signed LogoutResponse.
    const answered = page.waitForResponse((r) => r.url().startsWith(`${sp.url}/sls?`), { timeout: 30_000 });
    const query = new URLSearchParams({ name_id: saml.name_id, session_index: saml.session_index });
    await page.goto(`${sp.url}/logout?${query}`);
    const answer = await answered;
    const got = JSON.parse(await answer.text());
    assert.equal(answer.status(), 200, `samlify refused the LogoutResponse: ${JSON.stringify(got)}`);
    assert.equal(got.status, SUCCESS);
    assert.equal(got.sub_status, null, 'every participant was told');
    assert.equal(got.signature_ok, true, 'the query signature was checked');
    assert.equal(got.issuer, `${broker.url}/saml/idp/metadata`);
    assert.equal(got.relay_state, 'rs-lo');
    assert.equal(await signedIn(page), false, 'the broker session ended');

    for (let i = 0; i < 100 && !backchannel.logoutTokens().some((b) => jwtSid(b) === sid); i += 1) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(backchannel.logoutTokens().some((b) => jwtSid(b) === sid), 'back-channel logout to the OpenID app');
    assert.deepEqual(violations, [], 'no CSP violation on the way');
  });

  test('samlify may answer the broker\'s LogoutRequest over HTTP-POST: its signed form ends the chain', async (t) => {
    const set = async (b) => assert.equal((await fetch(`${sp.url}/answer?binding=${b}`)).status, 204);
    await set('post');
    t.after(() => set('redirect'));
    const { page, violations } = await newPage(t);
    await acceptedSignIn(page, sp, { password: PROVIDER_PASSWORD });
    const tokens = await openIdSignIn(page);

    const posted = page.waitForRequest(
      (r) => r.method() === 'POST' && r.url() === `${broker.url}/saml/idp/slo`,
      { timeout: 30_000 },
    );
    const { sls, state, arrived } = await logoutAtTheOpenIdApp(page, tokens);
    assert.equal(sls.status(), 200, `samlify refused the broker's LogoutRequest: ${await sls.text().catch(() => '')}`);
    const form = new URLSearchParams((await posted).postData() ?? '');
    const answer = Buffer.from(form.get('SAMLResponse') ?? '', 'base64').toString();
    assert.match(answer, /LogoutResponse/, 'samlify posted its LogoutResponse');
    assert.match(answer, /SignatureValue/, 'signed enveloped');
    const back = await arrived;
    assert.equal(back.searchParams.get('state'), state, 'then the post-logout redirect URI');
    assert.ok(!page.url().includes('partial=1'), 'no partial logout');
    assert.equal(await signedIn(page), false, 'the broker session ended');
    assert.deepEqual(violations, [], 'no CSP violation on the way');
  });

  test('a logout at the OpenID app goes through samlify\'s SingleLogoutService, then to the post-logout URI', async (t) => {
    const { page, violations } = await newPage(t);
    await acceptedSignIn(page, sp, { password: PROVIDER_PASSWORD });
    const tokens = await openIdSignIn(page);

    // samlify checks the broker's signed LogoutRequest (signature, a NameID it got) and answers
    // with a signed LogoutResponse redirect back to the broker.
    const { sls, state, arrived } = await logoutAtTheOpenIdApp(page, tokens);
    assert.equal(sls.status(), 302, `samlify refused the broker's LogoutRequest: ${await sls.text().catch(() => '')}`);
    assert.ok(new URL(sls.url()).searchParams.get('Signature'), 'the LogoutRequest is signed');
    const location = new URL(sls.headers().location);
    assert.equal(`${location.origin}${location.pathname}`, `${broker.url}/saml/idp/slo`, 'answered to the broker');
    assert.ok(location.searchParams.get('SAMLResponse') && location.searchParams.get('Signature'), 'a signed LogoutResponse');
    const back = await arrived;
    assert.equal(back.searchParams.get('state'), state, 'then the post-logout redirect URI');
    assert.ok(!page.url().includes('partial=1'), 'no partial logout');
    assert.equal(await signedIn(page), false, 'the broker session ended');
    assert.deepEqual(violations, [], 'no CSP violation on the way');
  });
});
