import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { listenOnLoopback } from '../functions/local/embedded.js';
import { MCP_RESOURCE, MCP_SCOPES, startOAuthServer, type TokenSet } from '../test/support/oauth-server.js';

/**
 * The bench's real OAuth server, run as a child process (bench/server-main.ts `oidc`): oidc-provider
 * (test/support/oauth-server.ts, refresh-token rotation and reuse detection on) behind its token
 * proxy, which adds the provider latency. A small control listener on its own port seeds sessions
 * with real authorization-code + PKCE logins, sets the latency and reports the proxy's records.
 *
 * Control routes (JSON bodies):
 * - POST /login {count, concurrency?}: `count` logins as users `bench-<i>`, every other one with
 *   `openid offline_access` (oidc-provider then answers each of their refreshes with an id_token);
 *   answers the token sets, in order.
 * - POST /latency {ms}: the token proxy waits this long before forwarding a token request.
 * - GET /stats: token requests since the last reset, refresh tokens presented twice, statuses.
 * - POST /reset: clears the proxy's records (not the latency).
 */

export const OIDC_SCOPES = `openid offline_access ${MCP_SCOPES}`;

export interface OidcStats {
  tokenRequests: number;
  refreshGrants: number;
  reuse: number;
  statuses: Record<string, number>;
}

export interface OidcServerInfo {
  port: number;
  issuer: string;
  tokenEndpoint: string;
  clientId: string;
  clientSecret: string;
  resource: string;
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export async function startOidcBenchServer(): Promise<{ info: OidcServerInfo; stop(): Promise<void> }> {
  const oauth = await startOAuthServer({ accessTokenTtl: 3600 });
  const client = oauth.clients.basic;
  let seq = 0;

  const login = async (count: number, concurrency: number): Promise<TokenSet[]> => {
    const out: TokenSet[] = new Array(count);
    let next = 0;
    const worker = async () => {
      while (next < count) {
        const i = next++;
        const n = seq++;
        out[i] = await oauth.login({
          clientId: client.clientId,
          accountId: `bench-${n}`,
          scope: n % 2 === 0 ? OIDC_SCOPES : MCP_SCOPES,
          resource: MCP_RESOURCE,
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
    return out;
  };

  const control = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    (async () => {
      if (req.method === 'POST' && path === '/login') {
        const body = await readJson(req);
        send(res, 200, await login(Number(body.count ?? 1), Number(body.concurrency ?? 8)));
      } else if (req.method === 'POST' && path === '/latency') {
        oauth.proxy.setLatency(Number((await readJson(req)).ms ?? 0));
        send(res, 200, {});
      } else if (req.method === 'POST' && path === '/reset') {
        // reset() also clears the latency: keep it.
        const kept = oauth.proxy.requests.length;
        oauth.proxy.requests.splice(0, kept);
        send(res, 200, {});
      } else if (req.method === 'GET' && path === '/stats') {
        const statuses: Record<string, number> = {};
        let refreshGrants = 0;
        for (const r of oauth.proxy.requests) {
          if (r.grantType === 'refresh_token') refreshGrants++;
          const s = String(r.status ?? 'none');
          statuses[s] = (statuses[s] ?? 0) + 1;
        }
        const stats: OidcStats = {
          tokenRequests: oauth.proxy.requests.length,
          refreshGrants,
          reuse: oauth.proxy.reuseCount(),
          statuses,
        };
        send(res, 200, stats);
      } else send(res, 404, { error: 'not found' });
    })().catch((err: unknown) => send(res, 500, { error: String(err) }));
  });
  control.keepAliveTimeout = 60_000;
  const port = await listenOnLoopback(control);
  return {
    info: {
      port,
      issuer: oauth.issuer,
      tokenEndpoint: oauth.tokenEndpoint,
      clientId: client.clientId,
      clientSecret: client.clientSecret,
      resource: MCP_RESOURCE,
    },
    async stop() {
      control.close();
      await oauth.stop();
    },
  };
}
