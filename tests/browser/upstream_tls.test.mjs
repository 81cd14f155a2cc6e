// An upstream OpenID provider behind https signed by a private CA (made here with the openssl
// CLI; npm oidc-provider mounted on a node https server). A broker configured with the CA in
// `[http] ca_file` signs the user in through it, ending at a downstream app; the broker also
// authenticates at the upstream's token endpoint with `private_key_jwt` (the upstream knows
// only the public key, as a JWK on its client). A broker without the CA setting refuses: a clear
// page, and a log line that says the upstream's certificate is the problem.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createPrivateKey, createPublicKey } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

const APP_SECRET = randomBytes(24).toString('base64url');
const ASSERTION_KID = 'concierge-test-1';

/** A private CA and a server certificate for 127.0.0.1 it signed, in `dir`. */
function makePki(dir) {
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem',
    '-days', '2', '-subj', '/CN=Concierge Test Private CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr',
    '-subj', '/CN=127.0.0.1');
  writeFileSync(join(dir, 'server.ext'), [
    'subjectAltName=IP:127.0.0.1',
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
  ].join('\n'));
  openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext');
  openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', 'assertion.pem');
  return {
    caFile: join(dir, 'ca.pem'),
    key: readFileSync(join(dir, 'server.key')),
    cert: readFileSync(join(dir, 'server.pem')),
    assertionKeyFile: join(dir, 'assertion.pem'),
  };
}

/** oidc-provider on https://127.0.0.1:PORT; its client `concierge` authenticates with private_key_jwt. */
async function startHttpsUpstream(pki, callbacks) {
  const port = await freePort();
  const issuer = `https://127.0.0.1:${port}`;
  const publicJwk = createPublicKey(createPrivateKey(readFileSync(pki.assertionKeyFile))).export({ format: 'jwk' });
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'concierge',
        redirect_uris: callbacks,
        token_endpoint_auth_method: 'private_key_jwt',
        token_endpoint_auth_signing_alg: 'RS256',
        jwks: { keys: [{ ...publicJwk, kid: ASSERTION_KID, alg: 'RS256', use: 'sig' }] },
      },
    ],
    cookies: { keys: [randomBytes(16).toString('hex')] },
    claims: { email: ['email', 'email_verified'], profile: ['name'] },
    findAccount: (_ctx, id) => ({
      accountId: id,
      async claims() {
        return { sub: `tls-${id}`, email: `${id}@private.example`, email_verified: true, name: `Private ${id}` };
      },
    }),
    features: { devInteractions: { enabled: true } },
    pkce: { required: () => true },
  });
  const server = createServer({ key: pki.key, cert: pki.cert }, provider.callback());
  server.listen(port, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return {
    issuer,
    close: () => closeServer(server),
  };
}


const upstreamToml = (issuer, pki, { withCa }) =>
  [
    ...(withCa ? ['[http]', `ca_file = ${JSON.stringify(pki.caFile)}`, ''] : []),
    '[[upstreams]]',
    'id = "private"',
    'name = "Private CA SSO"',
    'kind = "oidc"',
    `issuer = "${issuer}"`,
    'client_id = "concierge"',
    'token_endpoint_auth_method = "private_key_jwt"',
    `client_assertion_key_file = ${JSON.stringify(pki.assertionKeyFile)}`,
    `client_assertion_kid = "${ASSERTION_KID}"`,
  ].join('\n');

describe(`upstream behind a private CA (${backend})`, () => {
  let dir;
  let pki;
  let upstream;
  let trusting;
  let untrusting;
  let browser;
  let rp;
  let config;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'concierge-pki-'));
    pki = makePki(dir);
    rp = await startCallbackServer('/cb');
    const [p1, p2] = [await freePort(), await freePort()];
    upstream = await startHttpsUpstream(pki, [
      `http://127.0.0.1:${p1}/upstream/private/callback`,
      `http://127.0.0.1:${p2}/upstream/private/callback`,
    ]);
    const app = [{ id: 'app', secret_sha256: sha256Hex(APP_SECRET), redirect_uris: [rp.url] }];
    trusting = await startProvider({
      port: p1,
      clients: app,
      extraToml: upstreamToml(upstream.issuer, pki, { withCa: true }),
    });
    untrusting = await startProvider({
      port: p2,
      clients: app,
      extraToml: upstreamToml(upstream.issuer, pki, { withCa: false }),
    });
    config = await client.discovery(new URL(trusting.issuer), 'app', undefined, client.ClientSecretBasic(APP_SECRET), {
      execute: [client.allowInsecureRequests],
    });
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await trusting?.stop();
    await untrusting?.stop();
    await upstream?.close();
    await rp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('with [http] ca_file the user signs in through the upstream and reaches the app', { timeout: 90_000 },
    withLogs(() => trusting, async (t) => {
      // The browser is not what is tested here: it may visit the upstream's pages regardless.
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      t.after(() => context.close());
      const page = await context.newPage();
      const a = await authorizationRequest(config, rp.url);
      const arrived = rp.next();
      await page.goto(a.url.href);
      await page.click('a.upstream[data-upstream="private"]');
      await page.waitForURL(`${upstream.issuer}/**`);
      await upstreamLogin(page, 'dana');
      const back = await arrived;
      const tokens = await client.authorizationCodeGrant(config, back, {
        pkceCodeVerifier: a.pkceCodeVerifier,
        expectedState: a.expectedState,
        expectedNonce: a.expectedNonce,
      });
      assert.equal(tokens.claims().email, 'dana@private.example');
      assert.equal(tokens.claims().name, 'Private dana');
    }));

  it('without the CA the login fails with a clear page and a log line naming the certificate', { timeout: 60_000 },
    withLogs(() => untrusting, async (t) => {
      const context = await browser.newContext({ ignoreHTTPSErrors: true });
      t.after(() => context.close());
      const page = await context.newPage();
      await page.goto(`${untrusting.url}/login`);
      const [res] = await Promise.all([
        page.waitForResponse((r) => r.url().includes('/upstream/private/start')),
        page.click('a.upstream[data-upstream="private"]'),
      ]);
      assert.equal(res.status(), 502);
      await page.locator('#login-error').waitFor();
      assert.ok(page.url().startsWith(untrusting.url), 'never sent to the upstream');
      const acct = await context.request.get(`${untrusting.url}/account`, { maxRedirects: 0 });
      assert.equal(acct.status(), 303, 'no session');
      assert.match(untrusting.logs(), /upstream sign-in failed.*TLS certificate problem/);
    }));
});
