import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadBuiltConsole } from './console-assets.js';
import { type BrowserGuardRules, loopbackRules, refusal, sendRefusal } from './guard.js';
import type { RequestSigner } from './sigv4.js';

/**
 * `tokenkeeper console --url <ApiUrl>`: the console for a deployed stack, as `kubectl proxy` does it.
 * Serves the console page (as built ahead of time: ./console-assets.ts) on 127.0.0.1 and forwards
 * `/v1/*` to the API, each call signed with SigV4 from the caller's credentials (or, against a local
 * stack, with its bearer key). The page authenticates to this proxy with a random key that only the
 * printed URL's fragment carries; the deployed API gains no public surface.
 */

export type UpstreamAuth = { kind: 'sigv4'; sign: RequestSigner } | { kind: 'bearer'; apiKey: string };

export interface ConsoleProxyOptions {
  /** The API's base URL (a stage path is kept). */
  apiUrl: string;
  auth: UpstreamAuth;
  /** 0 (default): any free port. */
  port?: number;
  fetch?: typeof fetch;
  clock?: () => number;
}

export interface ConsoleProxy {
  url: string;
  /** The console's URL with the proxy's key in the fragment. */
  consoleUrl: string;
  stop(): Promise<void>;
}

const MAX_BODY_BYTES = 64 * 1024;
/** Answer headers passed back to the page; nothing else of the API's answer is. */
const PASSED_HEADERS = ['content-type', 'cache-control', 'retry-after', 'allow', 'pragma'];

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export async function startConsoleProxy(options: ConsoleProxyOptions): Promise<ConsoleProxy> {
  const assets = await loadBuiltConsole();
  const doFetch = options.fetch ?? fetch;
  const clock = options.clock ?? Date.now;
  const key = randomBytes(32).toString('base64url');
  const expected = createHash('sha256').update(key).digest();
  const base = new URL(options.apiUrl);
  const basePath = base.pathname.replace(/\/+$/u, '');
  let guardRules: BrowserGuardRules = { hosts: [], origins: [] };

  const keyOk = (authorization: string | undefined) => {
    const presented = /^Bearer (\S+)$/u.exec(authorization ?? '')?.[1];
    return (
      presented !== undefined && timingSafeEqual(createHash('sha256').update(presented).digest(), expected)
    );
  };

  async function forward(req: IncomingMessage, res: ServerResponse, pathAndQuery: string): Promise<void> {
    const body = await readBody(req);
    if (body === undefined) {
      return send(res, 413, { error: 'payload_too_large', error_description: 'request body exceeds 64 KiB' });
    }
    // The path goes on as the page encoded it (each id percent-encoded once), under the API's stage path.
    const target = new URL(`${base.origin}${basePath}${pathAndQuery}`);
    const method = (req.method ?? 'GET').toUpperCase();
    const headers: Record<string, string> = { accept: 'application/json' };
    const text = body.length > 0 ? body.toString('utf8') : undefined;
    if (text !== undefined) headers['content-type'] = 'application/json';
    const signed =
      options.auth.kind === 'sigv4'
        ? await options.auth.sign({ method, url: target, headers, body: text }, new Date(clock()))
        : { ...headers, authorization: `Bearer ${options.auth.apiKey}` };
    const upstream = await doFetch(target, { method, headers: signed, body: text, redirect: 'manual' });
    const answer = Buffer.from(await upstream.arrayBuffer());
    const out: Record<string, string> = {};
    for (const name of PASSED_HEADERS) {
      const value = upstream.headers.get(name);
      if (value !== null) out[name] = value;
    }
    res.writeHead(upstream.status, out);
    res.end(answer);
  }

  const server = createServer((req, res) => {
    (async () => {
      // Only this address and the console's own origin: a page of another origin, or a DNS-rebinding
      // name, cannot drive the proxy.
      const refused = refusal(req.headers, guardRules);
      if (refused) {
        req.resume();
        return sendRefusal(res, refused);
      }
      const raw = req.url ?? '/';
      const path = raw.split('?')[0] ?? '/';
      const method = (req.method ?? 'GET').toUpperCase();
      const page = assets.respond(method, path);
      if (page) {
        res.writeHead(page.status, page.headers);
        res.end(page.body);
        return;
      }
      if (!path.startsWith('/v1/'))
        return send(res, 404, { error: 'not_found', error_description: 'no such resource' });
      if (!keyOk(req.headers.authorization)) {
        return send(res, 401, { error: 'unauthorized', error_description: 'missing or invalid proxy key' });
      }
      await forward(req, res, raw);
    })().catch((err: unknown) => {
      if (res.headersSent) return res.destroy();
      send(res, 502, {
        error: 'bad_gateway',
        error_description: `the API could not be reached (${(err as Error).name})`,
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  guardRules = loopbackRules(port, { ownPages: true });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    consoleUrl: `${url}/console#key=${key}`,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
