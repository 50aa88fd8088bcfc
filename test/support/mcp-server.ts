import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { listenOnLoopback } from '../../functions/local/embedded.js';
import type { IntrospectionResult } from './oauth-server.js';

/**
 * A small MCP-like resource server on 127.0.0.1, protected as the MCP authorization specification
 * asks: without a valid token it answers 401 with `WWW-Authenticate: Bearer resource_metadata="…"`,
 * it serves its protected resource metadata (RFC 9728) at the path-inserted well-known URL, and it
 * answers 200 only to a token the authorization server says is active and meant for it (its own URL
 * in the token's audience), checked by introspection.
 */

export interface McpServerOptions {
  /** The MCP endpoint's path. Default `/mcp`. */
  path?: string;
}

export interface McpServer {
  /** The MCP endpoint: its URL is also its resource identifier. */
  readonly url: string;
  readonly metadataUrl: string;
  /** Which authorization server protects it, and how tokens are checked. Set before use. */
  protect(options: { issuer: string; introspect(token: string): Promise<IntrospectionResult> }): void;
  /** Metadata mishaps for negative tests. */
  misbehave(options: {
    /** The `resource` the metadata names (a mix-up). */
    resource?: string;
    /** Answer 401 without `resource_metadata` (the client must try the well-known URLs). */
    bareChallenge?: boolean;
  }): void;
  /** Calls with a bearer token: accepted and refused. */
  readonly calls: { accepted: number; refused: number };
  /** One authenticated MCP request, as an MCP client sends it. */
  call(accessToken: string): Promise<{ status: number; body: unknown }>;
  stop(): Promise<void>;
}

export async function startMcpServer(options: McpServerOptions = {}): Promise<McpServer> {
  const path = options.path ?? '/mcp';
  let protection: { issuer: string; introspect(token: string): Promise<IntrospectionResult> } | undefined;
  let mishaps: { resource?: string; bareChallenge?: boolean } = {};
  const calls = { accepted: 0, refused: 0 };
  let url = '';
  let metadataUrl = '';

  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const target = new URL(req.url ?? '/', url);
    for await (const _ of req) {
      // drain the body
    }
    if (req.method === 'GET' && target.pathname === `/.well-known/oauth-protected-resource${path}`) {
      if (!protection) return json(res, 503, { error: 'not protected yet' });
      return json(res, 200, {
        resource: mishaps.resource ?? url,
        authorization_servers: [protection.issuer],
        scopes_supported: ['mcp:read', 'mcp:write'],
        bearer_methods_supported: ['header'],
      });
    }
    if (target.pathname !== path) return json(res, 404, { error: 'not found' });
    const challenge = (error?: string) => ({
      'www-authenticate': mishaps.bareChallenge
        ? 'Bearer'
        : `Bearer resource_metadata="${metadataUrl}"${error ? `, error="${error}"` : ''}`,
    });
    const token = /^Bearer (\S+)$/u.exec(req.headers.authorization ?? '')?.[1];
    if (!token || !protection) return json(res, 401, { error: 'unauthorized' }, challenge());
    const info = await protection.introspect(token);
    const audience = Array.isArray(info.aud) ? info.aud : [info.aud];
    if (info.active !== true || !audience.includes(url)) {
      calls.refused++;
      return json(res, 401, { error: 'invalid_token' }, challenge('invalid_token'));
    }
    calls.accepted++;
    return json(res, 200, { jsonrpc: '2.0', id: 1, result: { tools: [], sub: info.sub } });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) json(res, 500, { error: String(err) });
      else res.destroy();
    });
  });
  const port = await listenOnLoopback(server);
  url = `http://127.0.0.1:${port}${path}`;
  metadataUrl = `http://127.0.0.1:${port}/.well-known/oauth-protected-resource${path}`;

  return {
    url,
    metadataUrl,
    calls,
    protect(p) {
      protection = p;
    },
    misbehave(m) {
      mishaps = m;
    },
    async call(accessToken) {
      const res = await fetch(url, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${accessToken}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      });
      return { status: res.status, body: await res.json() };
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
