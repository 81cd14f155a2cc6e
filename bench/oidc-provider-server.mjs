// The reference OpenID provider for bench/provider.sh: npm oidc-provider issuing JWT access
// tokens for client_credentials through resource indicators, signed with $ALG (ES256 or RS256).
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
  }],
  jwks: { keys: [jwk] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'https://api.example',
      useGrantedResource: () => true,
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
provider.listen(port, '127.0.0.1', () => console.error(`oidc-provider (${alg}) on 127.0.0.1:${port}`));
