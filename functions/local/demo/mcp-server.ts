import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type BrowserGuardRules, guarded, loopbackRules } from '../../../client/guard.js';
import { listenOnLoopback } from '../embedded.js';

/**
 * The demo's MCP-like resource server on 127.0.0.1, protected as the MCP authorization
 * specification asks: without a valid token it answers 401 with
 * `WWW-Authenticate: Bearer resource_metadata="…"`, it serves its protected resource metadata
 * (RFC 9728) at the path-inserted well-known URL, and it answers 200 only to a token whose audience
 * is its own URL (checked by the `verify` function it is given). Only the keeper calls it: it
 * answers no request carrying an `Origin` and none under another `Host` (client/guard.ts).
 */

export interface DemoMcpServer {
  /** The MCP endpoint; also its resource identifier. */
  readonly url: string;
  readonly metadataUrl: string;
  /** Names its authorization server and how a token is checked; set before the first call. */
  protect(options: {
    issuer: string;
    verify(token: string): Promise<{ audience: string[] } | undefined>;
  }): void;
  stop(): Promise<void>;
}

export async function startDemoMcpServer(path = '/mcp'): Promise<DemoMcpServer> {
  let protection:
    | { issuer: string; verify(token: string): Promise<{ audience: string[] } | undefined> }
    | undefined;
  let url = '';
  let metadataUrl = '';
  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
    res.end(JSON.stringify(body));
  };

  const answer = (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    const target = new URL(req.url ?? '/', url);
    if (req.method === 'GET' && target.pathname === `/.well-known/oauth-protected-resource${path}`) {
      if (!protection) return json(res, 503, { error: 'not protected yet' });
      return json(res, 200, {
        resource: url,
        authorization_servers: [protection.issuer],
        scopes_supported: ['mcp:read', 'mcp:write'],
        bearer_methods_supported: ['header'],
      });
    }
    if (target.pathname !== path) return json(res, 404, { error: 'not_found' });
    const challenge = (error?: string) => ({
      'www-authenticate': `Bearer resource_metadata="${metadataUrl}"${error ? `, error="${error}"` : ''}`,
    });
    const token = /^Bearer (\S+)$/u.exec(req.headers.authorization ?? '')?.[1];
    if (!token || !protection) return json(res, 401, { error: 'unauthorized' }, challenge());
    protection.verify(token).then(
      (info) => {
        if (!info?.audience.includes(url))
          return json(res, 401, { error: 'invalid_token' }, challenge('invalid_token'));
        return json(res, 200, { jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'demo.echo' }] } });
      },
      () => json(res, 500, { error: 'server_error' }),
    );
  };
  let guardRules: BrowserGuardRules = { hosts: [], origins: [] };
  const server = createServer(guarded(answer, () => guardRules));
  const port = await listenOnLoopback(server);
  guardRules = loopbackRules(port, { ownPages: false });
  url = `http://127.0.0.1:${port}${path}`;
  metadataUrl = `http://127.0.0.1:${port}/.well-known/oauth-protected-resource${path}`;
  return {
    url,
    metadataUrl,
    protect(p) {
      protection = p;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
