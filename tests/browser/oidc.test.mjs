// The broker as an OpenID provider to a real, certified relying party: openid-client (panva)
// runs discovery, builds the authorization request (code + PKCE S256, state, nonce), redeems the
// code, checks the ID token (its signature too, against /jwks), calls userinfo, refreshes,
// introspects and revokes; headless Chromium plays the user's browser between the two. Runs on
// the backend of CONCIERGE_TEST_BACKEND; see helpers.mjs.
//
//   node --test --test-concurrency=1 tests/browser/*.test.mjs

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as client from 'openid-client';
import * as jose from 'jose';
import {
  startBackchannelReceiver,
  startProvider,
  startCallbackServer,
  launchBrowser,
  withLogs,
  sha256Hex,
  backend,
  authorizationRequest,
} from './helpers.mjs';

const SCOPE = 'openid email profile offline_access';
// Characters that must be form-encoded inside HTTP Basic (RFC 6749 2.3.1) are part of it.
const SECRET = `${randomBytes(24).toString('base64url')}+/=:%`;

/** Every HTTP request openid-client sends through `config`, recorded ({ url, method, headers, body }). */
function recordRequests(config) {
  const sent = [];
  config[client.customFetch] = (url, options) => {
    sent.push({
      url: new URL(url),
      method: options.method,
      headers: new Headers(options.headers),
      body: typeof options.body === 'string' || options.body instanceof URLSearchParams ? String(options.body) : options.body,
    });
    return fetch(url, options);
  };
  return sent;
}

/** The decoded protected header of a compact JWS. */
function jwsHeader(jws) {
  return JSON.parse(Buffer.from(jws.split('.')[0], 'base64url').toString('utf8'));
}

describe(`OpenID provider with openid-client (${backend}): code + PKCE, SSO, native app, introspection, revocation, logout`, () => {
  let provider;
  let browser;
  let webCallback; // redirect URI of `webapp` and `second`
  let byeCallback; // post-logout redirect URI of `logout`
  let backchannel; // back-channel logout endpoint of `logout`
  let ssoContext; // the browser that signs in once and then gets SSO
  let lastSub; // the subject of the first flow, to compare with later ones

  before(async () => {
    webCallback = await startCallbackServer('/cb');
    byeCallback = await startCallbackServer('/bye');
    backchannel = await startBackchannelReceiver('/backchannel-logout');
    provider = await startProvider({
      clients: [
        {
          id: 'logout',
          name: 'Logout App',
          secret_sha256: sha256Hex(SECRET),
          redirect_uris: [webCallback.url],
          post_logout_redirect_uris: [byeCallback.url],
          backchannel_logout_uri: backchannel.url,
        },
        {
          id: 'webapp',
          name: 'Web App',
          secret_sha256: sha256Hex(SECRET),
          redirect_uris: [webCallback.url],
        },
        {
          id: 'second',
          name: 'Second App',
          secret_sha256: sha256Hex(SECRET),
          auth_method: 'client_secret_post',
          signing_alg: 'ES256',
          redirect_uris: [webCallback.url],
        },
        {
          id: 'native',
          name: 'Native App',
          public: true,
          channel: 'mobile',
          redirect_uris: ['http://127.0.0.1/callback'],
        },
      ],
    });
    browser = await launchBrowser({ locale: 'en-US' });
    ssoContext = await browser.newContext();
  });
  after(async () => {
    await browser?.close();
    await provider?.stop();
    await webCallback?.close();
    await byeCallback?.close();
    await backchannel?.close();
  });

  const test = (name, fn) => it(name, { timeout: 60_000 }, withLogs(() => provider, fn));

  /** openid-client's configuration for one client, from discovery; plain http is fine on loopback. */
  function discover(clientId, metadata, auth) {
    return client.discovery(new URL(provider.issuer), clientId, metadata, auth, {
      // enableNonRepudiationChecks: verify the ID token's signature with the keys at jwks_uri
      // (openid-client skips that by default for ID tokens from the token endpoint).
      execute: [client.allowInsecureRequests, client.enableNonRepudiationChecks],
    });
  }

  /**
   * Opens `url` in a new page of `context` and follows it until the browser lands on `callback`.
   * login: 'required' (the broker's login page must appear; it is filled in), 'forbidden' (it must
   * not), 'if-shown'. Returns { currentUrl, received, navigations } where `received` is what the
   * callback server got and `navigations` every main-frame request of the page.
   */
  async function driveToCallback(context, url, callback, { login }) {
    const page = await context.newPage();
    const waiting = new AbortController();
    try {
      const navigations = [];
      const problems = []; // failed navigations and console errors (e.g. CSP violations), for the message
      let navigationFailed;
      const failedNavigation = new Promise((resolve) => {
        navigationFailed = resolve;
      });
      page.on('request', (r) => {
        if (r.isNavigationRequest() && r.frame() === page.mainFrame()) navigations.push(new URL(r.url()));
      });
      page.on('requestfailed', (r) => {
        if (!r.isNavigationRequest() || r.frame() !== page.mainFrame()) return;
        problems.push(`navigation to ${r.url()} failed: ${r.failure()?.errorText}`);
        navigationFailed();
      });
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(`console error: ${m.text().trim()}`);
      });
      const arrived = callback.next({ signal: waiting.signal });
      arrived.catch(() => {}); // awaited below; a timeout must not be an unhandled rejection
      // A navigation that fails on the way to the redirect URI will not reach it: stop waiting then
      // (after a moment, for the console message that says why).
      const gaveUp = failedNavigation.then(() => new Promise((resolve) => setTimeout(resolve, 500))).then(() => {
        throw new Error(`the browser never reached ${callback.url}`);
      });
      gaveUp.catch(() => {});
      await page.goto(url.href);
      const here = new URL(page.url());
      // The sign-in page of the journey renders at /authorize itself (or /login).
      const onLoginPage = here.origin === provider.url && (await page.locator('#login-form').count()) > 0;
      if (login === 'required' || (login === 'if-shown' && onLoginPage)) {
        assert.ok(onLoginPage, `expected the broker's login page, the browser is at ${page.url()}`);
        await page.locator('#login-form').waitFor({ timeout: 5_000 });
        // The app's request is kept server-side; the page names only its sign-in journey.
        assert.match(await page.inputValue('#login-form input[name="journey"]'), /^[A-Za-z0-9_-]{43}$/, `journey of ${page.url()}`);
        assert.equal(await page.locator('input[name="return_to"]').count(), 0, 'no return_to in the page');
        await page.fill('#email', provider.email);
        await page.fill('#password', provider.password);
        await page.click('#login-submit');
      }
      let received;
      try {
        received = await Promise.race([arrived, gaveUp]);
      } catch (e) {
        const trail = navigations.map((u) => `  ${u.href}`).join('\n');
        throw new Error(
          `${e.message}; the browser stayed at ${page.url()}\n` +
            `navigations:\n${trail}\n${problems.map((p) => `  ${p}`).join('\n')}`,
        );
      }
      await page.waitForURL((u) => u.href.startsWith(callback.url), { timeout: 5_000 });
      const currentUrl = new URL(page.url());
      assert.equal(currentUrl.href, received.href, 'the browser shows what the redirect URI received');
      if (login === 'forbidden') {
        const loginPages = navigations.filter((u) => u.origin === provider.url && u.pathname === '/login');
        assert.deepEqual(loginPages.map(String), [], 'the login page was never shown');
        assert.deepEqual(
          navigations.map((u) => `${u.origin}${u.pathname}`),
          [`${provider.url}/authorize`, callback.url],
          'straight from /authorize to the redirect URI',
        );
      }
      return { currentUrl, received, navigations };
    } finally {
      waiting.abort();
      await page.close();
    }
  }

  /** Discovery, a browser round trip and the code grant; returns { config, tokens, claims, sent }. */
  async function codeFlow({ clientId, metadata, auth, context, callback, redirectUri = callback.url, login }) {
    const config = await discover(clientId, metadata, auth);
    const sent = recordRequests(config);
    const req = await authorizationRequest(config, redirectUri, { scope: SCOPE });
    const { currentUrl } = await driveToCallback(context, req.url, callback, { login });
    assert.equal(currentUrl.searchParams.get('iss'), provider.issuer, 'RFC 9207 iss in the response');
    const tokens = await client.authorizationCodeGrant(config, currentUrl, {
      pkceCodeVerifier: req.pkceCodeVerifier,
      expectedState: req.expectedState,
      expectedNonce: req.expectedNonce,
    });
    const claims = tokens.claims();
    assert.ok(claims, 'an ID token was issued');
    assert.equal(claims.nonce, req.expectedNonce);
    return { config, tokens, claims, sent };
  }

  test('discovery, login page, code + PKCE, verified ID token, userinfo, refresh rotation (client_secret_basic)', async () => {
    const config = await discover('webapp', undefined, client.ClientSecretBasic(SECRET));
    const meta = config.serverMetadata();
    assert.equal(meta.issuer, provider.issuer);
    assert.equal(meta.authorization_endpoint, `${provider.issuer}/authorize`);
    assert.ok(meta.supportsPKCE('S256'), 'S256 advertised');
    const sent = recordRequests(config);

    const req = await authorizationRequest(config, webCallback.url, { scope: SCOPE });
    assert.equal(req.url.origin + req.url.pathname, `${provider.issuer}/authorize`);
    const { currentUrl } = await driveToCallback(ssoContext, req.url, webCallback, { login: 'required' });
    assert.ok(currentUrl.searchParams.get('code'), `a code in ${currentUrl}`);
    assert.equal(currentUrl.searchParams.get('state'), req.expectedState);
    assert.equal(currentUrl.searchParams.get('iss'), provider.issuer);

    const tokens = await client.authorizationCodeGrant(config, currentUrl, {
      pkceCodeVerifier: req.pkceCodeVerifier,
      expectedState: req.expectedState,
      expectedNonce: req.expectedNonce,
    });
    const tokenRequest = sent.find((r) => r.url.pathname === '/token');
    assert.match(tokenRequest.headers.get('authorization') || '', /^Basic /, 'client_secret_basic');
    const tokenBody = new URLSearchParams(tokenRequest.body);
    assert.equal(tokenBody.get('code_verifier'), req.pkceCodeVerifier);
    assert.equal(tokenBody.get('redirect_uri'), webCallback.url);
    assert.equal(tokenBody.get('client_secret'), null);

    assert.equal(tokens.token_type.toLowerCase(), 'bearer');
    assert.ok(tokens.access_token && tokens.refresh_token && tokens.id_token);
    assert.ok(tokens.expiresIn() > 0);
    const claims = tokens.claims();
    assert.equal(claims.iss, provider.issuer);
    assert.equal(claims.aud, 'webapp');
    assert.equal(claims.nonce, req.expectedNonce);
    assert.equal(typeof claims.sub, 'string');
    assert.ok(claims.sub.length > 0, 'sub');
    assert.equal(claims.email, provider.email);
    assert.ok(Array.isArray(claims.amr) && claims.amr.includes('pwd'), `amr ${JSON.stringify(claims.amr)}`);
    assert.equal(typeof claims.sid, 'string');
    assert.ok(claims.sid.length > 0, 'sid');
    assert.equal(typeof claims.auth_time, 'number');
    // The signature was checked against the published keys: the JWKS was fetched and has the kid.
    const { kid, alg } = jwsHeader(tokens.id_token);
    assert.equal(alg, 'RS256', 'the provider default');
    assert.ok(sent.some((r) => r.url.href === meta.jwks_uri), 'the JWKS was fetched');
    const jwks = client.getJwksCache(config);
    assert.ok(jwks?.jwks?.keys?.some((k) => k.kid === kid), `kid ${kid} in the cached JWKS`);

    const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    assert.equal(userinfo.sub, claims.sub);
    assert.equal(userinfo.email, provider.email);

    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
    assert.ok(refreshed.access_token, 'a new access token');
    assert.ok(refreshed.refresh_token, 'a new refresh token');
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'the refresh token rotated');
    if (refreshed.id_token) {
      const again = refreshed.claims();
      assert.equal(again.sub, claims.sub);
      assert.equal(again.sid, claims.sid);
    }
    lastSub = claims.sub;
  });

  test('SSO: a second client (client_secret_post, ES256) gets a code without the login page', async () => {
    const { config, tokens, claims, sent } = await codeFlow({
      clientId: 'second',
      // No ClientAuth given: with a client_secret openid-client defaults to client_secret_post.
      metadata: { client_secret: SECRET, id_token_signed_response_alg: 'ES256' },
      auth: undefined,
      context: ssoContext,
      callback: webCallback,
      login: 'forbidden',
    });
    assert.equal(claims.aud, 'second');
    assert.equal(claims.email, provider.email);
    if (lastSub) assert.equal(claims.sub, lastSub, 'the same user as the first client');
    assert.equal(jwsHeader(tokens.id_token).alg, 'ES256');
    const tokenRequest = sent.find((r) => r.url.pathname === '/token');
    assert.equal(tokenRequest.headers.get('authorization'), null, 'no Basic header');
    assert.equal(new URLSearchParams(tokenRequest.body).get('client_secret'), SECRET, 'client_secret_post');
    const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    assert.equal(userinfo.email, provider.email);
  });

  test('native app: public client, loopback redirect on a random port, PKCE and no secret', async (t) => {
    const listener = await startCallbackServer('/callback');
    t.after(() => listener.close());
    const context = await browser.newContext();
    t.after(() => context.close());
    assert.notEqual(listener.port, 80);
    const { config, tokens, claims, sent } = await codeFlow({
      clientId: 'native',
      metadata: undefined,
      auth: client.None(),
      context,
      callback: listener,
      redirectUri: listener.url, // registered as http://127.0.0.1/callback (RFC 8252 7.3)
      login: 'required',
    });
    assert.equal(claims.aud, 'native');
    assert.equal(claims.email, provider.email);
    assert.ok(claims.amr.includes('pwd'));
    const tokenRequest = sent.find((r) => r.url.pathname === '/token');
    const body = new URLSearchParams(tokenRequest.body);
    assert.equal(tokenRequest.headers.get('authorization'), null, 'no client authentication header');
    assert.equal(body.get('client_id'), 'native');
    assert.equal(body.get('client_secret'), null, 'no secret');
    assert.ok(body.get('code_verifier'), 'PKCE verifier sent');
    assert.equal(body.get('redirect_uri'), listener.url);
    assert.ok(tokens.refresh_token, 'offline_access gives a refresh token');
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
    assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
  });

  test('introspection and revocation through openid-client', async () => {
    const { config, tokens, claims } = await codeFlow({
      clientId: 'webapp',
      metadata: undefined,
      auth: client.ClientSecretBasic(SECRET),
      context: ssoContext,
      callback: webCallback,
      login: 'if-shown',
    });
    const at = await client.tokenIntrospection(config, tokens.access_token);
    assert.equal(at.active, true, JSON.stringify(at));
    assert.equal(at.client_id, 'webapp');
    assert.equal(at.sub, claims.sub);
    assert.equal(at.iss, provider.issuer);
    const rt = await client.tokenIntrospection(config, tokens.refresh_token, { token_type_hint: 'refresh_token' });
    assert.equal(rt.active, true, JSON.stringify(rt));
    assert.equal(rt.client_id, 'webapp');

    await client.tokenRevocation(config, tokens.access_token, { token_type_hint: 'access_token' });
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false, 'access token revoked');
    await assert.rejects(client.fetchUserInfo(config, tokens.access_token, claims.sub), (e) => {
      assert.equal(e.status, 401, `${e.name}: ${e.message}`);
      return true;
    });

    await client.tokenRevocation(config, tokens.refresh_token, { token_type_hint: 'refresh_token' });
    assert.equal((await client.tokenIntrospection(config, tokens.refresh_token)).active, false, 'refresh token revoked');
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token), (e) => {
      assert.equal(e.error, 'invalid_grant', `${e.name}: ${e.message}`);
      return true;
    });
  });

  test('a public client without PKCE gets error=invalid_request on its redirect URI, and no code', async (t) => {
    const listener = await startCallbackServer('/callback');
    t.after(() => listener.close());
    const context = await browser.newContext();
    t.after(() => context.close());
    const state = client.randomState();
    const url = new URL(`${provider.issuer}/authorize`);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: 'native',
      redirect_uri: listener.url,
      scope: 'openid email',
      state,
      nonce: client.randomNonce(),
    }).toString();
    const { currentUrl } = await driveToCallback(context, url, listener, { login: 'forbidden' });
    const params = currentUrl.searchParams;
    assert.equal(params.get('error'), 'invalid_request', `${currentUrl}`);
    assert.equal(params.get('state'), state);
    assert.equal(params.get('code'), null, 'no code issued');
    assert.equal(listener.hits.length, 1);

    // openid-client reads it as the authorization server's error, without calling /token.
    const config = await discover('native', undefined, client.None());
    const sent = recordRequests(config);
    await assert.rejects(client.authorizationCodeGrant(config, currentUrl, { expectedState: state }), (e) => {
      assert.equal(e.error, 'invalid_request', `${e.name}: ${e.message}`);
      return true;
    });
    assert.deepEqual(sent.map((r) => r.url.pathname), [], 'no token request');
  });

  test('RP-initiated logout through openid-client ends the session, and the back-channel receiver gets a valid logout token', async (t) => {
    const context = await browser.newContext();
    t.after(() => context.close());
    const { config, tokens, claims } = await codeFlow({
      clientId: 'logout',
      auth: client.ClientSecretBasic(SECRET),
      context,
      callback: webCallback,
      login: 'required',
    });
    assert.ok(claims.sid, 'the ID token names its session');
    assert.equal(config.serverMetadata().backchannel_logout_supported, true);

    const state = client.randomState();
    const endSession = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: byeCallback.url,
      state,
    });
    assert.equal(endSession.origin + endSession.pathname, `${provider.issuer}/oidc/logout`);
    const page = await context.newPage();
    const arrived = byeCallback.next();
    await page.goto(endSession.href);
    const bye = await arrived;
    assert.equal(bye.searchParams.get('state'), state, 'state comes back to the post-logout URI');

    // The broker session is over: the account page asks to sign in again.
    await page.goto(`${provider.url}/account`);
    assert.equal(new URL(page.url()).pathname, '/login');
    await page.close();

    // The back-channel logout arrives without the user waiting for it; verify it independently.
    for (let i = 0; i < 50 && backchannel.bodies.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(backchannel.bodies.length, 1, 'one logout token delivered');
    const logoutToken = new URLSearchParams(backchannel.bodies[0]).get('logout_token');
    const jwks = jose.createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri));
    const { payload, protectedHeader } = await jose.jwtVerify(logoutToken, jwks, {
      issuer: provider.issuer,
      audience: 'logout',
      typ: 'logout+jwt',
    });
    assert.equal(payload.sid, claims.sid);
    assert.equal(payload.sub, claims.sub);
    assert.deepEqual(payload.events, { 'http://schemas.openid.net/event/backchannel-logout': {} });
    assert.equal(payload.nonce, undefined, 'a logout token has no nonce');
    assert.ok(typeof payload.jti === 'string' && payload.iat > 0 && payload.exp > payload.iat);
    assert.ok(protectedHeader.kid);

    // Its tokens died with the session.
    assert.equal((await client.tokenIntrospection(config, tokens.access_token)).active, false);
    await assert.rejects(client.refreshTokenGrant(config, tokens.refresh_token), (e) => e.error === 'invalid_grant');
  });
});
