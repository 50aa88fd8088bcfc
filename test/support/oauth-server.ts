import { createHash, generateKeyPair, type JsonWebKey, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type {
  Adapter,
  AdapterPayload,
  Configuration,
  InteractionResults,
  default as ProviderClass,
  ResourceServer,
} from 'oidc-provider';
import { grantConsent } from '../../functions/local/demo/interaction-pages.js';
import { listenOnLoopback } from '../../functions/local/embedded.js';
import { followRedirects } from './connect-flow.js';
import { startTokenProxy, type TokenProxy } from './token-proxy.js';

/** The one resource (RFC 8707) the test server knows; login() requests it by default. */
export const MCP_RESOURCE = 'https://mcp.example.test/';
/** Scopes of MCP_RESOURCE; login() requests them by default. */
export const MCP_SCOPES = 'mcp:read mcp:write';
export const REDIRECT_URI = 'http://127.0.0.1/cb';

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'none';

export interface TestClient {
  clientId: string;
  /** Absent for the public client. */
  clientSecret?: string;
  authMethod: ClientAuthMethod;
  redirectUri: string;
}

export interface ConfidentialClient extends TestClient {
  clientSecret: string;
}

export interface TokenSet {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  token_type: string;
  scope?: string;
  id_token?: string;
}

export interface IntrospectionResult {
  active: boolean;
  [claim: string]: unknown;
}

export interface LoginOptions {
  clientId: string;
  /** Default MCP_SCOPES (no 'openid', so no id_token). Pass e.g. 'openid mcp:read' for OIDC. */
  scope?: string;
  /** Resource requested at authorization. Default MCP_RESOURCE; `null` requests none. */
  resource?: string | null;
  /** Default 'user-1'. */
  accountId?: string;
}

export interface OAuthServerOptions {
  /** Access-token lifetime in seconds. Default 3600. */
  accessTokenTtl?: number;
  /** Refresh-token lifetime in seconds. Default 14 days. */
  refreshTokenTtl?: number;
  /** Dynamic Client Registration (RFC 7591) at `/reg`, open to anyone. Default off. */
  registration?: boolean;
  /**
   * More resource indicators (RFC 8707) the server issues audience-bound tokens for, with the MCP
   * scopes: an MCP server's URL, say. Their tokens are opaque; introspection shows the audience.
   */
  resources?: readonly string[];
}

export interface OAuthServer {
  /** The token proxy's URL: every client-facing URL goes through the proxy. */
  readonly issuer: string;
  readonly tokenEndpoint: string;
  readonly revocationEndpoint: string;
  readonly introspectionEndpoint: string;
  /** The provider's own listener (bypasses the proxy). */
  readonly upstreamUrl: string;
  readonly proxy: TokenProxy;
  readonly provider: ProviderClass;
  readonly clients: {
    readonly basic: ConfidentialClient;
    readonly post: ConfidentialClient;
    readonly public: TestClient;
  };
  client(clientId: string): TestClient;
  /** Changes the lifetime of access tokens issued from now on. */
  setAccessTokenTtl(seconds: number): void;
  /**
   * A real authorization-code + PKCE flow over HTTP, interactions auto-approved. Talks to the provider's
   * own listener, so proxy faults, latency and records are not affected.
   */
  login(options: LoginOptions): Promise<TokenSet>;
  /** RFC 7662 introspection as tk-basic (directly, not through the proxy). */
  introspect(token: string): Promise<IntrospectionResult>;
  stop(): Promise<void>;
}

let signingKey: Promise<JsonWebKey> | undefined;

/** One RSA signing key per test process (RS256 is what clients expect for ID tokens by default). */
function loadSigningKey(): Promise<JsonWebKey> {
  signingKey ??= new Promise((resolve, reject) => {
    generateKeyPair('rsa', { modulusLength: 2048 }, (err, _publicKey, privateKey) => {
      if (err) reject(err);
      else
        resolve({ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'tk-test-rs256' });
    });
  });
  return signingKey;
}

const CLIENTS = {
  basic: {
    clientId: 'tk-basic',
    clientSecret: 'basic-secret-0123456789abcdef0123456789abcdef',
    authMethod: 'client_secret_basic',
    redirectUri: REDIRECT_URI,
  },
  post: {
    clientId: 'tk-post',
    clientSecret: 'post-secret-0123456789abcdef0123456789abcdef',
    authMethod: 'client_secret_post',
    redirectUri: REDIRECT_URI,
  },
  public: { clientId: 'tk-public', authMethod: 'none', redirectUri: REDIRECT_URI },
} as const satisfies Record<string, TestClient>;

export async function startOAuthServer(options: OAuthServerOptions = {}): Promise<OAuthServer> {
  const [{ default: Provider, errors }, jwk, proxy] = await Promise.all([
    import('oidc-provider'),
    loadSigningKey(),
    startTokenProxy({ tokenPath: '/token' }),
  ]);
  let accessTokenTtl = options.accessTokenTtl ?? 3600;
  const refreshTokenTtl = options.refreshTokenTtl ?? 14 * 24 * 3600;
  const issuer = proxy.url;

  const resourceServer = (audience = MCP_RESOURCE): ResourceServer => ({
    scope: MCP_SCOPES,
    audience,
    accessTokenFormat: 'opaque',
    accessTokenTTL: accessTokenTtl,
  });

  const configuration: Configuration = {
    adapter: createMemoryAdapterFactory(),
    jwks: { keys: [jwk as never] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    clients: Object.values(CLIENTS).map((c) => ({
      client_id: c.clientId,
      ...('clientSecret' in c ? { client_secret: c.clientSecret } : {}),
      token_endpoint_auth_method: c.authMethod,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [c.redirectUri],
    })),
    // The MCP scopes are also plain (non-resource) scopes, so a login without `resource` still grants them:
    // oidc-provider answers access_denied when an authorization ends with no scope granted at all.
    scopes: ['openid', 'offline_access', ...MCP_SCOPES.split(' ')],
    responseTypes: ['code'],
    pkce: { required: () => true },
    rotateRefreshToken: true,
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    clientBasedCORS: () => false,
    renderError: async (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
    ttl: {
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: () => refreshTokenTtl,
      Interaction: 600,
      Session: 24 * 3600,
      Grant: Math.max(refreshTokenTtl, 30 * 24 * 3600),
    },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true, allowedPolicy: async () => true },
      registration: { enabled: options.registration ?? false },
      revocation: {
        enabled: true,
        allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? undefined,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator === MCP_RESOURCE) return resourceServer();
          if (options.resources?.includes(indicator)) return resourceServer(indicator);
          throw new errors.InvalidTarget();
        },
      },
    },
  };

  const provider = new Provider(issuer, configuration);
  // Trust the token proxy's X-Forwarded-* headers: endpoint URLs are built from the request's origin.
  provider.proxy = true;
  const callback = provider.callback();

  const server = createServer((req, res) => {
    if (req.url?.startsWith('/interaction/')) {
      completeInteraction(provider, req, res).catch((err: unknown) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`interaction failed: ${String(err)}`);
        } else res.destroy();
      });
      return;
    }
    callback(req, res);
  });
  // The token proxy pools its connections to this listener: an idle one closed here (Node's default is
  // after 5 s) can be picked for a request at the moment it closes, and that request fails with a 502.
  server.keepAliveTimeout = 60_000;
  const upstreamUrl = `http://127.0.0.1:${await listenOnLoopback(server)}`;
  proxy.setUpstream(upstreamUrl);

  const byId = new Map<string, TestClient>(Object.values(CLIENTS).map((c) => [c.clientId, c]));
  const client = (clientId: string): TestClient => {
    const found = byId.get(clientId);
    if (!found) throw new Error(`unknown test client ${clientId}`);
    return found;
  };

  let stopped: Promise<void> | undefined;
  return {
    issuer,
    tokenEndpoint: `${issuer}/token`,
    revocationEndpoint: `${issuer}/token/revocation`,
    introspectionEndpoint: `${issuer}/token/introspection`,
    upstreamUrl,
    proxy,
    provider,
    clients: CLIENTS,
    client,
    setAccessTokenTtl(seconds) {
      accessTokenTtl = seconds;
    },
    login: (opts) => login({ issuer, upstreamUrl, client: client(opts.clientId), ...opts }),
    async introspect(token) {
      const res = await fetch(`${upstreamUrl}/token/introspection`, {
        method: 'POST',
        headers: {
          authorization: basicAuth(CLIENTS.basic.clientId, CLIENTS.basic.clientSecret),
          'content-type': 'application/x-www-form-urlencoded',
        },
        body: new URLSearchParams({ token }),
      });
      if (!res.ok) throw new Error(`introspection failed: ${res.status} ${await res.text()}`);
      return (await res.json()) as IntrospectionResult;
    },
    stop() {
      stopped ??= (async () => {
        await proxy.stop();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      })();
      return stopped;
    },
  };
}

/** Auto-approves the pending interaction: login as `login_hint` (default user-1), then grant what is asked. */
async function completeInteraction(
  provider: ProviderClass,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params } = details;
  let result: InteractionResults;
  if (prompt.name === 'login') {
    const hint = params.login_hint;
    result = { login: { accountId: typeof hint === 'string' && hint ? hint : 'user-1' } };
  } else if (prompt.name === 'consent') {
    result = { consent: { grantId: await grantConsent(provider, details) } };
  } else {
    throw new Error(`unexpected prompt ${prompt.name}`);
  }
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

interface LoginContext extends LoginOptions {
  issuer: string;
  upstreamUrl: string;
  client: TestClient;
}

async function login(ctx: LoginContext): Promise<TokenSet> {
  const { client, issuer, upstreamUrl } = ctx;
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const state = randomBytes(16).toString('base64url');
  const resource = ctx.resource === undefined ? MCP_RESOURCE : ctx.resource;

  const authorize = new URL('/auth', upstreamUrl);
  const query: Record<string, string> = {
    client_id: client.clientId,
    response_type: 'code',
    redirect_uri: client.redirectUri,
    scope: ctx.scope ?? MCP_SCOPES,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
    login_hint: ctx.accountId ?? 'user-1',
  };
  if (resource) query.resource = resource;
  authorize.search = new URLSearchParams(query).toString();

  const upstreamOrigin = new URL(issuer).origin;
  const callback = await followRedirects(
    authorize,
    (next) => next.href.startsWith(client.redirectUri),
    (next) => (next.origin === upstreamOrigin ? new URL(next.pathname + next.search, upstreamUrl) : next),
  );
  const error = callback.searchParams.get('error');
  if (error) throw new Error(`login: ${error}: ${callback.searchParams.get('error_description') ?? ''}`);
  if (callback.searchParams.get('state') !== state) throw new Error('login: state mismatch');
  const code = callback.searchParams.get('code');
  if (!code) throw new Error(`login: no code in ${callback.href}`);

  const body = new URLSearchParams({
    grant_type: 'authorization_code',
    code,
    redirect_uri: client.redirectUri,
    code_verifier: verifier,
  });
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
  if (client.authMethod === 'client_secret_basic') {
    headers.authorization = basicAuth(client.clientId, client.clientSecret ?? '');
  } else {
    body.set('client_id', client.clientId);
    if (client.authMethod === 'client_secret_post') body.set('client_secret', client.clientSecret ?? '');
  }
  const res = await fetch(new URL('/token', upstreamUrl), { method: 'POST', headers, body });
  const json = (await res.json()) as Partial<TokenSet> & { error?: string; error_description?: string };
  if (!res.ok || !json.access_token || !json.refresh_token) {
    throw new Error(`login: token request failed (${res.status}): ${JSON.stringify(json)}`);
  }
  return json as TokenSet;
}

function basicAuth(clientId: string, secret: string): string {
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(clientId)}:${enc(secret)}`).toString('base64')}`;
}

/**
 * A small unbounded in-memory adapter, one store per server. (The bundled memory adapter is an LRU
 * capped at 1000 entries shared module-wide, which silently evicts tokens in larger runs.)
 */
function createMemoryAdapterFactory(): (model: string) => Adapter {
  interface Entry {
    payload: AdapterPayload;
    expiresAt: number;
  }
  const store = new Map<string, Entry>();
  const grants = new Map<string, Set<string>>();
  const sessionUids = new Map<string, string>();
  const userCodes = new Map<string, string>();

  const get = (key: string): AdapterPayload | undefined => {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  };

  return (model: string): Adapter => {
    const key = (id: string) => `${model}:${id}`;
    return {
      async upsert(id, payload, expiresIn) {
        const expiresAt =
          typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Number.POSITIVE_INFINITY;
        store.set(key(id), { payload, expiresAt });
        if (payload.grantId) {
          const members = grants.get(payload.grantId) ?? new Set<string>();
          members.add(key(id));
          grants.set(payload.grantId, members);
        }
        if (model === 'Session' && payload.uid) sessionUids.set(payload.uid, id);
        if (payload.userCode) userCodes.set(payload.userCode, id);
      },
      async find(id) {
        return get(key(id));
      },
      async findByUid(uid) {
        const id = sessionUids.get(uid);
        return id === undefined ? undefined : get(key(id));
      },
      async findByUserCode(userCode) {
        const id = userCodes.get(userCode);
        return id === undefined ? undefined : get(key(id));
      },
      async consume(id) {
        const payload = get(key(id));
        if (payload) payload.consumed = Math.floor(Date.now() / 1000);
      },
      async destroy(id) {
        store.delete(key(id));
      },
      async revokeByGrantId(grantId) {
        for (const member of grants.get(grantId) ?? []) store.delete(member);
        grants.delete(grantId);
      },
    };
  };
}
