import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Configuration, default as ProviderClass, ResourceServer } from 'oidc-provider';
import { type BrowserGuardRules, guarded, loopbackRules } from '../../../client/guard.js';
import { listenOnLoopback } from '../embedded.js';
import {
  escapeHtml,
  INTERACTION_PREFIX,
  interactionPages,
  PAGE_HEADERS,
  pageHtml,
} from './interaction-pages.js';

/**
 * The demo's authorization server: oidc-provider on 127.0.0.1 with real login and consent pages a
 * person can click (its own, ./interaction-pages.ts: any login and password; nothing loaded from another
 * host), 60-second access tokens for the
 * demo's MCP server, refresh-token rotation with reuse detection, PKCE, RFC 8707 resource
 * indicators and open dynamic client registration. An outage switch makes the token endpoint answer
 * 503 for a while. For the demo only: oidc-provider is a development dependency.
 *
 * Its pages are meant for the operator's browser: the authorization endpoint and the redirects
 * between login, consent and the keeper's callback are top-level navigations (a GET carries no
 * `Origin`), and the login and consent forms post to this server's own origin. So it accepts its own
 * origin and no other, and only its own `Host` (client/guard.ts); a preflight gets no CORS approval, so
 * oidc-provider's own CORS answers never reach another site's page.
 */

export const DEMO_ACCESS_TOKEN_SECONDS = 60;
export const DEMO_SCOPES = 'mcp:read mcp:write';
/** The pre-registered public client, for keepers without dynamic registration. */
export const DEMO_CLIENT_ID = 'tokenkeeper-demo';
/** What the token endpoint asks callers to wait during an outage. */
export const OUTAGE_RETRY_AFTER_SECONDS = 5;

export interface DemoOAuthServer {
  readonly issuer: string;
  readonly tokenEndpoint: string;
  readonly provider: ProviderClass;
  /** Epoch seconds until which the token endpoint fails, or null. */
  outageUntil(): number | null;
  /** Fails the token endpoint with 503 for `seconds` from now (0 ends an outage). */
  setOutage(seconds: number): void;
  stop(): Promise<void>;
}

export interface DemoOAuthOptions {
  /** The MCP server's URL: the one resource (RFC 8707) tokens are issued for. */
  resource: string;
  /** Redirect URIs of the pre-registered client. */
  redirectUris: string[];
  clock?: () => number;
}

export async function startDemoOAuthServer(options: DemoOAuthOptions): Promise<DemoOAuthServer> {
  const { default: Provider, errors } = await import('oidc-provider');
  const now = options.clock ?? Date.now;
  const server = createServer();
  const port = await listenOnLoopback(server);
  const issuer = `http://127.0.0.1:${port}`;
  const guardRules: BrowserGuardRules = loopbackRules(port, { ownPages: true });
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const resourceServer: ResourceServer = {
    scope: DEMO_SCOPES,
    audience: options.resource,
    accessTokenFormat: 'opaque',
    accessTokenTTL: DEMO_ACCESS_TOKEN_SECONDS,
  };

  const configuration: Configuration = {
    jwks: {
      keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256', kid: 'demo' } as never],
    },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    clients: [
      {
        client_id: DEMO_CLIENT_ID,
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: options.redirectUris,
      },
    ],
    scopes: ['openid', 'offline_access', ...DEMO_SCOPES.split(' ')],
    responseTypes: ['code'],
    pkce: { required: () => true },
    rotateRefreshToken: true,
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    ttl: {
      AccessToken: DEMO_ACCESS_TOKEN_SECONDS,
      AuthorizationCode: 120,
      IdToken: 3600,
      RefreshToken: 7 * 24 * 3600,
      Interaction: 1800,
      Session: 24 * 3600,
      Grant: 30 * 24 * 3600,
    },
    interactions: { url: async (_ctx, interaction) => `${INTERACTION_PREFIX}${interaction.uid}` },
    // oidc-provider's own error and logout pages load a web font from another host: these load nothing.
    renderError: async (ctx, out) => {
      const text = Object.entries(out)
        .map(([k, v]) => `<p><code>${escapeHtml(k)}</code>: ${escapeHtml(String(v))}</p>`)
        .join('');
      ctx.set(PAGE_HEADERS);
      ctx.body = pageHtml('Error', `<h1>Something went wrong</h1>${text}`);
    },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.set(PAGE_HEADERS);
          ctx.body = pageHtml(
            'Sign out',
            `<h1>Sign out?</h1>${form}<button type="submit" form="op.logoutForm" value="yes" name="logout">Sign out</button>`,
          );
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.set(PAGE_HEADERS);
          ctx.body = pageHtml('Signed out', '<h1>Signed out</h1>');
        },
      },
      registration: { enabled: true },
      revocation: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => options.resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator) => {
          if (indicator === options.resource) return resourceServer;
          throw new errors.InvalidTarget();
        },
      },
    },
  };
  const provider = new Provider(issuer, configuration);
  const callback = provider.callback();

  let outageUntil: number | null = null;
  const answer = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'POST' && path === '/token' && outageUntil !== null && now() / 1000 < outageUntil) {
      res.writeHead(503, {
        'content-type': 'application/json',
        'retry-after': String(OUTAGE_RETRY_AFTER_SECONDS),
        'cache-control': 'no-store',
      });
      res.end(JSON.stringify({ error: 'temporarily_unavailable', error_description: 'demo outage' }));
      req.resume();
      return;
    }
    interactionPages(provider, req, res).then(
      (answered) => {
        if (!answered) callback(req, res);
      },
      () => {
        if (!res.headersSent) res.writeHead(500).end();
      },
    );
  };
  server.on(
    'request',
    guarded(answer, () => guardRules),
  );

  let stopped: Promise<void> | undefined;
  return {
    issuer,
    tokenEndpoint: `${issuer}/token`,
    provider,
    outageUntil: () => (outageUntil !== null && now() / 1000 < outageUntil ? outageUntil : null),
    setOutage(seconds) {
      outageUntil = seconds > 0 ? Math.round(now() / 1000 + seconds) : null;
    },
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      return stopped;
    },
  };
}
