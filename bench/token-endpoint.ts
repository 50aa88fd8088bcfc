import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/**
 * The bench's OAuth token endpoint: answers `refresh_token` grants after a fixed latency with a new
 * access token and a rotated refresh token, and records every presentation of a refresh token that
 * was already redeemed (reuse; the bench asserts there is none). Control routes: `POST /config`
 * (`{"latencyMs"}`, also restarts the counters) and `GET /stats`.
 */

export interface TokenEndpointStats {
  grants: number;
  /** refresh tokens presented a second time */
  reuse: number;
  /** refresh tokens this endpoint never issued and the bench never seeded */
  unknown: number;
  /** other rejected requests (wrong grant type, missing client authentication) */
  rejected: number;
  maxInFlight: number;
  latencyMs: number;
}

export interface TokenEndpointOptions {
  accessTokenBytes: number;
  refreshTokenBytes: number;
  expiresIn: number;
  clientId: string;
  clientSecret: string;
}

/** Refresh tokens the bench seeds, and every one this endpoint issues, start with this. */
export const REFRESH_TOKEN_PREFIX = 'rt-';

/** A random base64url string of `length` characters. */
export function opaqueToken(length: number): string {
  return randomBytes(Math.ceil((length * 3) / 4) + 3)
    .toString('base64url')
    .slice(0, length);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** RFC 6749 §2.3.1 client_secret_basic: both parts form-urlencoded, then base64. */
function basicAuthMatches(header: string | undefined, clientId: string, clientSecret: string): boolean {
  const match = /^Basic (\S+)$/i.exec(header ?? '');
  if (!match) return false;
  const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return false;
  const part = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
  try {
    return part(decoded.slice(0, colon)) === clientId && part(decoded.slice(colon + 1)) === clientSecret;
  } catch {
    return false;
  }
}

export function createTokenEndpoint(options: TokenEndpointOptions): {
  server: Server;
  stats(): TokenEndpointStats;
} {
  const redeemed = new Set<string>();
  // Unique tokens cheaply: a random body per process and a counter in front of it.
  const accessBody = opaqueToken(options.accessTokenBytes);
  const refreshBody = opaqueToken(options.refreshTokenBytes);
  let counter = 0;
  let latencyMs = 0;
  let inFlight = 0;
  const stats = { grants: 0, reuse: 0, unknown: 0, rejected: 0, maxInFlight: 0 };

  const issue = (prefix: string, body: string, length: number) => {
    const id = `${prefix}${(++counter).toString(36)}.`;
    return (id + body).slice(0, Math.max(length, id.length));
  };

  const server = createServer(async (req, res) => {
    try {
      const body = await readBody(req);
      if (req.method === 'GET' && req.url === '/stats') {
        send(res, 200, { ...stats, latencyMs });
        return;
      }
      if (req.method === 'POST' && req.url === '/config') {
        const config = JSON.parse(body || '{}') as { latencyMs?: number };
        latencyMs = Math.max(0, Number(config.latencyMs ?? latencyMs));
        // Counters restart; the redeemed tokens are kept, so reuse across runs is caught too.
        Object.assign(stats, { grants: 0, reuse: 0, unknown: 0, rejected: 0, maxInFlight: 0 });
        send(res, 200, { latencyMs });
        return;
      }
      if (req.method !== 'POST' || req.url !== '/token') {
        send(res, 404, { error: 'not_found' });
        return;
      }
      const form = new URLSearchParams(body);
      if (!basicAuthMatches(req.headers.authorization, options.clientId, options.clientSecret)) {
        stats.rejected++;
        send(res, 401, { error: 'invalid_client' });
        return;
      }
      if (form.get('grant_type') !== 'refresh_token') {
        stats.rejected++;
        send(res, 400, { error: 'unsupported_grant_type' });
        return;
      }
      const presented = form.get('refresh_token') ?? '';
      if (!presented.startsWith(REFRESH_TOKEN_PREFIX)) {
        stats.unknown++;
        send(res, 400, { error: 'invalid_grant', error_description: 'unknown refresh token' });
        return;
      }
      if (redeemed.has(presented)) {
        stats.reuse++;
        send(res, 400, { error: 'invalid_grant', error_description: 'refresh token reused' });
        return;
      }
      redeemed.add(presented);
      inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, inFlight);
      if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
      inFlight--;
      stats.grants++;
      send(res, 200, {
        access_token: issue('at-', accessBody, options.accessTokenBytes),
        token_type: 'Bearer',
        expires_in: options.expiresIn,
        refresh_token: issue(REFRESH_TOKEN_PREFIX, refreshBody, options.refreshTokenBytes),
      });
    } catch {
      if (!res.headersSent) send(res, 500, { error: 'server_error' });
    }
  });
  return { server, stats: () => ({ ...stats, latencyMs }) };
}
