// A partner's OIDC IdP for Entente's federation tests: npm oidc-provider (panva, OpenID-certified),
// started by tests/peers/oidc_provider_process.py on a free 127.0.0.1 port. Test-only by design:
// in-memory storage, devInteractions (a login form that takes any account id, no password).
//
// Environment:
//   PORT         the port to listen on (127.0.0.1 only)
//   ADMIN_TOKEN  bearer for the two test endpoints below and the initial access token of
//                dynamic client registration (RFC 7591) at /reg
//
// Test endpoints (not part of any spec):
//   PUT /test/accounts/{sub}  JSON claims of the account whose `sub` is {sub} (email, email_verified,
//                             name, preferred_username); the devInteractions login takes {sub} as login
//
// Each Entente IdP connection registers its own client at /reg with its exact callback URL.
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 9010);
const adminToken = process.env.ADMIN_TOKEN;
if (!adminToken) {
  console.error('ADMIN_TOKEN is required');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// One fixed signing key per start, so oidc-provider does not fall back to its (warned) dev keys.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomUUID()}`, use: 'sig', alg: 'RS256' };

const accounts = new Map();

const provider = new Provider(issuer, {
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomUUID()] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true, initialAccessToken: adminToken },
    revocation: { enabled: true },
  },
  pkce: { required: () => true },
  async findAccount(ctx, sub) {
    const claims = accounts.get(sub);
    if (!claims) return undefined;
    return { accountId: sub, async claims() { return { ...claims, sub }; } };
  },
});

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

provider.use(async (ctx, next) => {
  const match = /^\/test\/accounts\/([^/]+)$/.exec(ctx.path);
  if (!match) return next();
  if (ctx.get('authorization') !== `Bearer ${adminToken}`) {
    ctx.status = 401;
    return undefined;
  }
  if (ctx.method !== 'PUT') {
    ctx.status = 405;
    return undefined;
  }
  accounts.set(decodeURIComponent(match[1]), await readJson(ctx.req));
  ctx.status = 204;
  return undefined;
});

provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
