// Federation through a real upstream OpenID provider (npm oidc-provider, started here on
// 127.0.0.1): Chromium signs in at the upstream's own login and consent pages, comes back to the
// broker, and ends at a downstream app (openid-client) whose ID token carries the upstream's
// claims. An upstream user whose unverified email matches an existing account does not take it
// over: the account must be proven with its password first, then the link is made.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';
import * as client from 'openid-client';
import {
  startProvider,
  startCallbackServer,
  launchBrowser,
  withLogs,
  freePort,
  sha256Hex,
  backend,
  authorizationRequest,
  oidcProviderLogin as upstreamLogin,
  closeServer,
} from './helpers.mjs';

const UPSTREAM_SECRET = randomBytes(24).toString('base64url');
const APP_SECRET = randomBytes(24).toString('base64url');

/** Upstream accounts: any login name; `*-unverified` names get email_verified false. */
function account(id) {
  const unverified = id.endsWith('-unverified');
  const local = unverified ? id.slice(0, -'-unverified'.length) : id;
  return {
    accountId: id,
    async claims() {
      return {
        sub: `corp-${id}`,
        email: `${local}@corp.example`,
        email_verified: !unverified,
        name: `Corp ${local}`,
        groups: ['staff'],
      };
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
    claims: { email: ['email', 'email_verified'], profile: ['name', 'groups'] },
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


describe(`upstream OpenID Connect (${backend})`, () => {
  let broker;
  let upstream;
  let browser;
  let rp;
  let config;
  before(async () => {
    rp = await startCallbackServer('/cb');
    // The broker's port must be known before the upstream registers its callback: pick it here.
    const brokerPort = await freePort();
    const callback = `http://127.0.0.1:${brokerPort}/upstream/corp/callback`;
    upstream = await startUpstream(callback, `http://127.0.0.1:${brokerPort}/upstream/corp/logged-out`);
    broker = await startProvider({
      port: brokerPort,
      users: [{ email: 'alice@corp.example', name: 'Alice (local)', password: 'alice-local-pw' }],
      clients: [
        {
          id: 'app',
          secret_sha256: sha256Hex(APP_SECRET),
          redirect_uris: [rp.url],
        },
      ],
      extraToml: [
        '[[upstreams]]',
        'id = "corp"',
        'name = "Corp SSO"',
        'kind = "oidc"',
        `issuer = "${upstream.issuer}"`,
        'client_id = "concierge"',
        `client_secret = "${UPSTREAM_SECRET}"`,
      ].join('\n'),
    });
    config = await client.discovery(new URL(broker.issuer), 'app', undefined, client.ClientSecretBasic(APP_SECRET), {
      execute: [client.allowInsecureRequests],
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await broker?.stop();
    await upstream?.close();
    await rp?.close();
  });
  const test = (name, fn) => it(name, { timeout: 90_000 }, withLogs(() => broker, fn));

  /** Starts a code flow for `app`. */
  const authorization = () => authorizationRequest(config, rp.url);

  test('a new upstream user signs in through Corp SSO and the app gets their claims', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    const a = await authorization();
    const arrived = rp.next();
    await page.goto(a.url.href);
    await page.click('a.upstream[data-upstream="corp"]');
    await upstreamLogin(page, 'bob');
    const back = await arrived;
    const tokens = await client.authorizationCodeGrant(config, back, {
      pkceCodeVerifier: a.pkceCodeVerifier,
      expectedState: a.expectedState,
      expectedNonce: a.expectedNonce,
    });
    const claims = tokens.claims();
    assert.equal(claims.email, 'bob@corp.example');
    assert.equal(claims.name, 'Corp bob');
    assert.notEqual(claims.sub, 'corp-bob', 'the broker has its own subject');
    const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    assert.equal(info.email, 'bob@corp.example');

    // The broker session remembers the upstream; a second app sign-in is SSO (no upstream trip).
    const acct = await context.newPage();
    await acct.goto(`${broker.url}/account`);
    assert.match(await acct.textContent('[data-field="upstream"]'), /Corp SSO/);
    const again = await authorization();
    const second = rp.next();
    await acct.goto(again.url.href);
    const url2 = await second;
    const tokens2 = await client.authorizationCodeGrant(config, url2, {
      pkceCodeVerifier: again.pkceCodeVerifier,
      expectedState: again.expectedState,
      expectedNonce: again.expectedNonce,
    });
    assert.equal(tokens2.claims().sub, claims.sub, 'same broker user');
  });

  test('an unverified upstream email does not take over the existing account', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    await page.goto(`${broker.url}/login`);
    await page.click('a.upstream[data-upstream="corp"]');
    await upstreamLogin(page, 'alice-unverified');
    // Back at the broker: not signed in, asked to prove the existing account.
    await page.locator('#login-error').waitFor();
    assert.match(await page.textContent('#login-error'), /already exists/);
    assert.equal(await page.inputValue('#email'), 'alice@corp.example');
    const before = await context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(before.status(), 303, 'no session from the unverified email');

    // Someone who cannot prove it gets nothing linked: a wrong password.
    await page.fill('#password', 'not-alices-password');
    await page.click('#login-submit');
    await page.locator('#login-error').waitFor();
    assert.equal(
      (await context.request.get(`${broker.url}/account`, { maxRedirects: 0 })).status(),
      303,
    );

    // A fresh browser: upstream again, then the real owner proves the account.
    const owner = await browser.newContext();
    t.after(() => owner.close());
    const p2 = await owner.newPage();
    await p2.goto(`${broker.url}/login`);
    await p2.click('a.upstream[data-upstream="corp"]');
    await upstreamLogin(p2, 'alice-unverified');
    await p2.locator('#login-error').waitFor();
    await p2.fill('#password', 'alice-local-pw');
    await p2.click('#login-submit');
    await p2.waitForURL(`${broker.url}/account`);
    assert.equal(await p2.textContent('#user-name'), 'Alice (local)', 'the existing account');

    // Linked now: the upstream alone signs into that account.
    const later = await browser.newContext();
    t.after(() => later.close());
    const p3 = await later.newPage();
    await p3.goto(`${broker.url}/login`);
    await p3.click('a.upstream[data-upstream="corp"]');
    await upstreamLogin(p3, 'alice-unverified');
    await p3.waitForURL(`${broker.url}/account`);
    assert.equal(await p3.textContent('#user-email'), 'alice@corp.example');
  });

  test('a refusal at the upstream is a clear page, not a session', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    // A callback nobody started (forged state): the pending-login page, no session.
    const res = await page.goto(`${broker.url}/upstream/corp/callback?state=forged&code=x`);
    assert.equal(res.status(), 400);
    await page.locator('#login-error').waitFor();
    assert.equal(
      (await context.request.get(`${broker.url}/account`, { maxRedirects: 0 })).status(),
      303,
    );
  });

  test('signing out at the broker signs out at the upstream too (RP-initiated logout)', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const page = await context.newPage();
    await page.goto(`${broker.url}/login`);
    await page.click('a.upstream[data-upstream="corp"]');
    await upstreamLogin(page, 'gina');
    await page.waitForURL(`${broker.url}/account`);
    await page.click('#logout-submit');
    // At the upstream's end_session_endpoint (reached with the upstream's ID token as hint).
    await page.waitForURL(`${upstream.issuer}/session/end**`);
    const yes = page.locator('button[value="yes"]');
    if (await yes.count()) await yes.click();
    await page.waitForURL(`${broker.url}/signed-out`);
    const acct = await context.request.get(`${broker.url}/account`, { maxRedirects: 0 });
    assert.equal(acct.status(), 303, 'the broker session is over');
    // The upstream session is over too: signing in again asks for the upstream login.
    await page.goto(`${broker.url}/login`);
    await page.click('a.upstream[data-upstream="corp"]');
    await page.locator('input[name="login"]').waitFor({ timeout: 10_000 });
  });
});
