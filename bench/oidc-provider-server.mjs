// The reference OpenID provider for bench/provider.sh: npm oidc-provider with its default
// storage (the built-in in-memory adapter: no database, nothing written to disk), configured for
// the five operations the bench compares:
// - client `svc`: client_credentials issuing JWT access tokens through resource indicators,
//   signed with $ALG (ES256 or RS256);
// - client `web`: authorization code with a refresh token (rotated on every use), introspection
//   of its (opaque) access tokens, ID tokens signed with $ALG;
// - /interaction/:uid signs the user `bench-user` in at once (no page), and a grant of
//   `openid offline_access` is created on first use, so that an authorization request with a live
//   session cookie answers with a code directly, as Concierge's does.
// Usage: PORT=9100 ALG=ES256 SECRET=... node bench/oidc-provider-server.mjs
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT ?? 9100);
const alg = process.env.ALG ?? 'ES256';
const secret = process.env.SECRET ?? 'bench-secret-bench-secret-bench-secret';

const pair = alg === 'ES256'
  ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...pair.privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `bench-${alg}` };

const provider = new Provider(`http://127.0.0.1:${port}`, {
  cookies: { keys: ['bench-cookie-key'] },
  clients: [{
    client_id: 'svc',
    client_secret: secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: alg,
  }, {
    client_id: 'web',
    client_secret: secret,
    grant_types: ['authorization_code', 'refresh_token'],
    redirect_uris: ['http://127.0.0.1:9/cb'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: alg,
  }],
  jwks: { keys: [jwk] },
  // Concierge does not require PKCE of a confidential client either.
  pkce: { required: () => false },
  // A refresh token for every code of a client allowed the grant, rotated on every use.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  async loadExistingGrant(ctx) {
    const { client, session } = ctx.oidc;
    const existing = session.grantIdFor(client.clientId);
    if (existing) {
      const grant = await ctx.oidc.provider.Grant.find(existing);
      if (grant) return grant;
    }
    if (!session.accountId) return undefined;
    const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
    grant.addOIDCScope('openid offline_access');
    await grant.save();
    session.grantIdFor(client.clientId, grant.jti);
    return grant;
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Only client_credentials asks for the API; the code flow gets opaque userinfo tokens.
      defaultResource: (ctx) => (ctx.oidc.params?.grant_type === 'client_credentials' ? 'https://api.example' : undefined),
      useGrantedResource: () => false,
      getResourceServerInfo: () => ({
        scope: 'api:read',
        audience: 'https://api.example',
        accessTokenTTL: 900,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      }),
    },
  },
});

// The login "page": signs `bench-user` in and resumes the authorization request.
provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/interaction/')) {
    const to = await provider.interactionResult(ctx.req, ctx.res, {
      login: { accountId: 'bench-user' },
    }, { mergeWithLastSubmission: false });
    ctx.redirect(to);
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => console.error(`oidc-provider (${alg}) on 127.0.0.1:${port}`));
