// Every form whose answer redirects off-site reaches its destination in Chromium, which applies
// the page's CSP `form-action` to each redirect after a submission: the session-limit page
// (refuse policy) continues to the app; the email-first page routes a domain to its OpenID
// upstream (npm oidc-provider) and to its SAML upstream (pysaml2); the account-link proof
// ends at the app, also for an address of a routed domain; the logout confirmation goes through the upstream's end-session endpoint
// to the post-logout redirect URI. Each page's policy lists exactly those origins, never `*`.
// Every ID token the app gets has its signature verified against the broker's JWKS.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';
import * as client from 'openid-client';
import * as jose from 'jose';
import {
  REPO_ROOT,
  startProvider,
  startCallbackServer,
  launchBrowser,
  withLogs,
  freePort,
  sha256Hex,
  backend,
  authorizationRequest,
  oidcProviderLogin as upstreamLogin,
  accountStatus,
  closeServer,
} from './helpers.mjs';

const UPSTREAM_SECRET = randomBytes(24).toString('base64url');
const APP_SECRET = randomBytes(24).toString('base64url');

/** Upstream accounts: a login with `@` is the email itself (verified); `x-unverified` is
 * x@corp.example, unverified; `x@y-unverified` is x@y, unverified. */
function account(id) {
  const unverified = id.endsWith('-unverified');
  const login = unverified ? id.slice(0, -'-unverified'.length) : id;
  const email = login.includes('@') ? login : `${login}@corp.example`;
  return {
    accountId: id,
    async claims() {
      return { sub: `corp-${id}`, email, email_verified: !unverified, name: `Corp ${id}` };
    },
  };
}

async function startUpstream(brokerCallback, brokerLoggedOut) {
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'concierge',
        client_secret: UPSTREAM_SECRET,
        redirect_uris: [brokerCallback],
        post_logout_redirect_uris: [brokerLoggedOut],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    cookies: { keys: [randomBytes(16).toString('hex')] },
    claims: { email: ['email', 'email_verified'], profile: ['name'] },
    findAccount: (_ctx, id) => account(id),
    features: { devInteractions: { enabled: true } },
    pkce: { required: () => true },
  });
  provider.proxy = false;
  const server = provider.listen(port, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return {
    issuer,
    close: () => closeServer(server),
  };
}


/** A self-signed RSA key pair made with the openssl CLI: { key, cert } paths. */
function keyPair(dir, name) {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  const r = spawnSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
    '-keyout', key, '-out', cert,
  ], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl failed: ${r.stderr}`);
  return { key, cert };
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

/** The `form-action` sources of a response's CSP. */
function formAction(response) {
  const csp = response.headers()['content-security-policy'] ?? '';
  const directive = csp.split(';').map((d) => d.trim()).find((d) => d.startsWith('form-action '));
  assert.ok(directive, `a form-action directive: ${csp}`);
  const sources = directive.split(/\s+/).slice(1);
  assert.ok(!sources.some((s) => s.includes('*')), `never a wildcard: ${directive}`);
  return sources;
}

describe(`forms whose answer leaves the site (${backend})`, () => {
  let broker;
  let upstream;
  let idp;
  let browser;
  let rp;
  let bye;
  let config;
  let dir;
  before(async () => {
    rp = await startCallbackServer('/cb');
    bye = await startCallbackServer('/bye'); // another origin (port) than the redirect URI
    dir = mkdtempSync(join(tmpdir(), 'concierge-form-action-'));
    const idpKeys = keyPair(dir, 'idp');
    const spKeys = keyPair(dir, 'sp');
    const [brokerPort, idpPort] = [await freePort(), await freePort()];
    const base = `http://127.0.0.1:${brokerPort}`;
    upstream = await startUpstream(`${base}/upstream/corp/callback`, `${base}/upstream/corp/logged-out`);
    broker = await startProvider({
      port: brokerPort,
      users: [
        { email: 'limit@example.com', name: 'Limit', password: 'limit-password-1' },
        { email: 'alice@corp.example', name: 'Alice (local)', password: 'alice-local-pw' },
        // A local account in a domain routed to the OpenID upstream (issue #13, hole 6).
        { email: 'alice@route.example', name: 'Alice (routed, local)', password: 'alice-route-pw' },
      ],
      clients: [
        {
          id: 'app',
          secret_sha256: sha256Hex(APP_SECRET),
          redirect_uris: [rp.url],
          post_logout_redirect_uris: [bye.url],
        },
      ],
      env: {
        CONCIERGE__SESSION__MAX_PER_USER: '1',
        CONCIERGE__SESSION__ON_LIMIT: 'refuse',
      },
      extraToml: [
        '[[upstreams]]',
        'id = "corp"',
        'name = "Corp SSO"',
        'kind = "oidc"',
        `issuer = "${upstream.issuer}"`,
        'client_id = "concierge"',
        `client_secret = "${UPSTREAM_SECRET}"`,
        'domains = ["route.example"]',
        '',
        '[[upstreams]]',
        'id = "corp-saml"',
        'name = "Corp SAML"',
        'kind = "saml"',
        `metadata_url = "http://127.0.0.1:${idpPort}/metadata"`,
        `signing_key_file = "${spKeys.key}"`,
        `signing_cert_file = "${spKeys.cert}"`,
        'domains = ["saml.example"]',
      ].join('\n'),
    });
    idp = await startIdp({
      port: idpPort,
      ...idpKeys,
      spMetadataUrl: `${broker.url}/upstream/corp-saml/saml/metadata`,
    });
    // enableNonRepudiationChecks: every ID token the app redeems has its signature verified
    // with the keys at the broker's jwks_uri (not only its claims).
    config = await client.discovery(new URL(broker.issuer), 'app', undefined, client.ClientSecretBasic(APP_SECRET), {
      execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await idp?.stop();
    await broker?.stop();
    await upstream?.close();
    await rp?.close();
    await bye?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const test = (name, fn) => it(name, { timeout: 90_000 }, withLogs(() => broker, fn));

  /** Starts a code flow for `app` in `page`; resolves with what the grant needs and the login
   * page's response. */
  async function toLoginPage(page) {
    const a = await authorizationRequest(config, rp.url);
    // The journey's sign-in page renders at /authorize itself.
    const login = await page.goto(a.url.href);
    assert.equal(new URL(login.url()).pathname, '/authorize');
    await page.locator('#login-form').waitFor();
    return { a, login };
  }

  /** The app received a code: redeem it; returns the claims of the ID token, whose signature
   * (jwks_uri), issuer, audience, nonce and expiry are verified. */
  async function redeem(a, arrived) {
    const tokens = await client.authorizationCodeGrant(config, await arrived, {
      pkceCodeVerifier: a.pkceCodeVerifier,
      expectedState: a.expectedState,
      expectedNonce: a.expectedNonce,
    });
    // And once more, independently of openid-client: the signature against the published keys.
    const jwks = jose.createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri));
    const { payload } = await jose.jwtVerify(tokens.id_token, jwks, { issuer: config.serverMetadata().issuer, audience: 'app' });
    assert.equal(payload.nonce, a.expectedNonce);
    return tokens.claims();
  }

  /** Resolves with the app's callback URL (`arrived`); a session-limit page on the way (this
   * broker allows one session per user) is answered by ending the other session. */
  async function atApp(page, arrived) {
    const limit = page.locator('#session-limit').waitFor({ timeout: 20_000 }).then(() => 'limit', () => 'none');
    if ((await Promise.race([arrived.then(() => 'app'), limit])) === 'limit') {
      await page.click('#limit-list button.limit-end');
    }
    return arrived;
  }

  test('session-limit page (refuse): "end this session and continue" ends at the app with a code', async (t) => {
    const signIn = async () => {
      const context = await browser.newContext();
      t.after(() => context.close());
      const page = await context.newPage();
      const { a } = await toLoginPage(page);
      await page.fill('#email', 'limit@example.com');
      await page.fill('#password', 'limit-password-1');
      return { context, page, a };
    };
    const first = await signIn();
    const arrived1 = rp.next();
    await first.page.click('#login-submit');
    assert.equal((await redeem(first.a, arrived1)).email, 'limit@example.com');

    const second = await signIn();
    const limitPage = second.page.waitForResponse((r) => new URL(r.url()).pathname === '/login' && r.request().method() === 'POST');
    await second.page.click('#login-submit');
    const res = await limitPage;
    await second.page.locator('#session-limit').waitFor();
    assert.ok(formAction(res).includes(new URL(rp.url).origin), 'the app may be reached');
    const arrived2 = rp.next();
    await second.page.click('#limit-list button.limit-end');
    const claims = await redeem(second.a, arrived2);
    assert.equal(claims.email, 'limit@example.com');
    const acct = await first.context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(acct.status(), 303, 'the chosen session ended');
  });

  test('email-first: a routed domain goes to its OpenID upstream and on to the app', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const { a, login } = await toLoginPage(page);
    const sources = formAction(login);
    assert.ok(sources.includes(upstream.issuer), `the upstream may be reached: ${sources}`);
    assert.ok(sources.includes(new URL(rp.url).origin), `the app may be reached: ${sources}`);
    assert.ok(sources.includes(idp.url), `the SAML IdP may be reached: ${sources}`);
    await page.fill('#email', 'bob@route.example');
    await page.click('#login-submit');
    await page.waitForURL(`${upstream.issuer}/**`);
    const arrived = rp.next();
    await upstreamLogin(page, 'bob@route.example');
    const claims = await redeem(a, arrived);
    assert.equal(claims.email, 'bob@route.example');
  });

  test('email-first: a routed domain goes to its SAML upstream and on to the app', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const { a } = await toLoginPage(page);
    await page.fill('#email', 'carol@saml.example');
    await page.click('#login-submit');
    await page.waitForURL(`${idp.url}/sso?*`);
    const arrived = rp.next();
    await page.fill('#user', 'carol');
    await page.click('#signin');
    const claims = await redeem(a, arrived);
    assert.equal(claims.email, 'carol@saml.example');
  });

  test('account-link proof: the password on the link page ends at the app', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const { a } = await toLoginPage(page);
    await page.click('a.upstream[data-upstream="corp"]');
    await upstreamLogin(page, 'alice-unverified');
    await page.locator('#login-error').waitFor();
    assert.equal(await page.inputValue('#email'), 'alice@corp.example');
    await page.fill('#password', 'alice-local-pw');
    const arrived = rp.next();
    await page.click('#login-submit');
    const claims = await redeem(a, arrived);
    assert.equal(claims.email, 'alice@corp.example');
    assert.equal(claims.name, 'Alice (local)', 'the existing account, now linked');

    // The link holds: the same upstream identity, in a fresh browser, goes straight to the app.
    const other = await browser.newContext();
    t.after(() => other.close());
    const page2 = await other.newPage();
    const second = await toLoginPage(page2);
    await page2.click('a.upstream[data-upstream="corp"]');
    const arrived2 = rp.next({ timeoutMs: 20_000 });
    await upstreamLogin(page2, 'alice-unverified');
    const again = await redeem(second.a, atApp(page2, arrived2));
    assert.equal(again.sub, claims.sub, 'linked to the local account');
  });

  // Issue #13, hole 6: a domain routed to an upstream, and a local account of an address in it.
  // The upstream vouches for the address without verifying it, so the account must be proven
  // with its password on the link page; that proof must finish the sign-in (at the app, the
  // upstream identity now linked), not send the browser to the routed upstream again.
  test('account-link proof on a routed domain: the password ends at the app and the link holds', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const { a } = await toLoginPage(page);
    await page.fill('#email', 'alice@route.example');
    await page.click('#login-submit');
    await page.waitForURL(`${upstream.issuer}/**`);
    await upstreamLogin(page, 'alice@route.example-unverified');
    await page.locator('#login-error').waitFor();
    assert.equal(new URL(page.url()).origin, broker.url, 'the link page is the broker\'s');
    assert.equal(await page.inputValue('#email'), 'alice@route.example');
    assert.equal((await accountStatus(context, broker.url)).status, 303, 'not signed in before the proof');

    // Every request the tab makes from here on, redirects included.
    const visited = [];
    page.on('request', (r) => {
      if (r.isNavigationRequest() && r.frame() === page.mainFrame()) visited.push(r.url());
    });
    await page.fill('#password', 'alice-route-pw');
    const arrived = rp.next({ timeoutMs: 20_000 });
    await page.click('#login-submit');
    let callback;
    try {
      callback = await arrived;
    } catch {
      assert.fail(`the app never got a code after the link proof; the tab went: ${visited.join(' -> ')} ` +
        `and shows ${page.url()}`);
    }
    assert.ok(!visited.some((u) => u.startsWith(upstream.issuer)),
      `not sent to the routed upstream again: ${visited.join(' -> ')}`);
    const claims = await redeem(a, callback);
    assert.equal(claims.email, 'alice@route.example');
    assert.equal(claims.name, 'Alice (routed, local)', 'the existing local account');

    // The link holds: the same upstream identity, in a fresh browser, goes straight to the app
    // as that account (no link page).
    const other = await browser.newContext();
    t.after(() => other.close());
    const page2 = await other.newPage();
    const second = await toLoginPage(page2);
    await page2.fill('#email', 'alice@route.example');
    await page2.click('#login-submit');
    await page2.waitForURL(`${upstream.issuer}/**`);
    const arrived2 = rp.next({ timeoutMs: 20_000 });
    await upstreamLogin(page2, 'alice@route.example-unverified');
    const again = await redeem(second.a, atApp(page2, arrived2));
    assert.equal(again.sub, claims.sub, 'linked to the local account');
    assert.equal(again.name, 'Alice (routed, local)');
  });

  test('logout confirmation: through the upstream end-session to the post-logout redirect URI', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const { a } = await toLoginPage(page);
    await page.click('a.upstream[data-upstream="corp"]');
    const arrived = rp.next();
    await upstreamLogin(page, 'dora');
    await redeem(a, arrived);
    await page.waitForURL(`${rp.url}?**`);

    // No id_token_hint: the broker asks before it signs the browser out.
    const endSession = client.buildEndSessionUrl(config, { post_logout_redirect_uri: bye.url, state: 's-1' });
    const confirm = await page.goto(endSession.href);
    await page.locator('#logout-confirm-form').waitFor();
    const sources = formAction(confirm);
    assert.ok(sources.includes(new URL(bye.url).origin), `post-logout URI: ${sources}`);
    assert.ok(sources.includes(upstream.issuer), `upstream end-session: ${sources}`);
    const gone = bye.next();
    await page.click('#logout-confirm-submit');
    await page.waitForURL(`${upstream.issuer}/session/end**`);
    const yes = page.locator('button[value="yes"]');
    if (await yes.count()) await yes.click();
    const back = await gone;
    assert.equal(back.searchParams.get('state'), 's-1');
    const acct = await context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(acct.status(), 303, 'signed out');
  });

  test('account page: signing out goes through the upstream and back', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    await page.goto(`${broker.url}/login`);
    await page.click('a.upstream[data-upstream="corp"]');
    await upstreamLogin(page, 'erik');
    await page.waitForURL(`${broker.url}/account`);
    const acct = await page.reload();
    assert.ok(formAction(acct).includes(upstream.issuer));
    await page.click('#logout-submit');
    await page.waitForURL(`${upstream.issuer}/session/end**`);
    const yes = page.locator('button[value="yes"]');
    if (await yes.count()) await yes.click();
    await page.waitForURL(`${broker.url}/signed-out`);
  });
});
