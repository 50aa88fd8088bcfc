import {
  Agent,
  createServer,
  type IncomingMessage,
  request,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Socket } from 'node:net';
import { listenOnLoopback } from '../../functions/local/embedded.js';

/** A fault the proxy answers token-endpoint POSTs with, instead of forwarding them. */
export type TokenFault = (
  | { kind: 'status'; status: number; body?: string; headers?: Record<string, string> }
  | { kind: 'reset' }
  | { kind: 'hang' }
  | { kind: 'malformed-json' }
  | { kind: 'oauth-error-200'; error: string }
  | { kind: 'missing-access-token' }
  | { kind: 'oversized' }
  | { kind: 'oauth-error'; status: number; error: string; headers?: Record<string, string> }
  /**
   * Forwards the request (so the provider redeems — and rotates — the refresh token) and then destroys
   * the client's socket without answering: the "lost response" case.
   */
  | { kind: 'forward-then-reset' }
) & {
  /** Apply the fault to this many token requests, then pass through again. Default: until cleared. */
  times?: number;
};

export interface TokenRequestRecord {
  grantType?: string;
  refreshToken?: string;
  clientId?: string;
  resource?: string;
  /** Epoch milliseconds at which the proxy received the whole request. */
  at: number;
  /** Whether the request reached the OAuth server. */
  forwarded: boolean;
  /** The fault applied, if any. */
  fault?: TokenFault['kind'];
  /**
   * Status of the answer once known: the injected one, or the upstream's for forwarded requests (even
   * when the answer was then dropped). Absent for reset/hang.
   */
  status?: number;
}

export interface TokenProxy {
  /** `http://127.0.0.1:<port>`, suitable as the OAuth server's issuer. */
  readonly url: string;
  /** Every POST to the token endpoint, in arrival order, faulted or not. */
  readonly requests: TokenRequestRecord[];
  setUpstream(url: string): void;
  setFault(fault: TokenFault | null): void;
  /** Fixed delay before token requests are forwarded upstream. */
  setLatency(ms: number): void;
  /**
   * From now on, token requests are forwarded at once but the upstream's answers are held until
   * `releaseAnswers`: the provider has acted (rotated a refresh token) while the client still waits.
   */
  holdAnswers(): void;
  /**
   * Sends the held answers and stops holding: whole, or with `tailMs` the head and the first half of
   * each body now and the rest `tailMs` later (a slow answer). Returns how many were held.
   */
  releaseAnswers(options?: { tailMs?: number }): number;
  /**
   * Forwards token requests at once but holds the upstream's answer this long before passing it on
   * (a provider that rotates, then answers late).
   */
  setAnswerDelay(ms: number): void;
  /**
   * Once the next token answer has been written to the keeper's socket, calls `onPause` and blocks
   * this whole process's event loop for `ms`: a pause (GC, throttling, a suspended laptop) of a
   * keeper that has its answer waiting unread. On waking its timers run before its sockets are read.
   */
  pauseAfterNextAnswer(ms: number, onPause?: () => void): void;
  /** How often each refresh_token value was actually forwarded to the OAuth server. */
  refreshRedemptions(): Map<string, number>;
  /** Extra presentations of refresh tokens forwarded more than once (sum of count - 1). */
  reuseCount(): number;
  /** Every token value (access, refresh, id) the OAuth server issued through the token endpoint. */
  issuedTokens(): Set<string>;
  /** Clears the records, the fault, the latency, the answer delay and the hold (held answers are dropped). */
  reset(): void;
  stop(): Promise<void>;
}

export interface TokenProxyOptions {
  /** Path of the token endpoint on the upstream server. Default '/token'. */
  tokenPath?: string;
}

const OVERSIZED_BYTES = 5 * 1024 * 1024;

/**
 * A recording, fault-injecting reverse proxy for a whole OAuth server. It listens before the upstream
 * exists so that its URL can serve as the upstream's issuer; call `setUpstream` afterwards.
 */
export async function startTokenProxy(options: TokenProxyOptions = {}): Promise<TokenProxy> {
  const tokenPath = options.tokenPath ?? '/token';
  const requests: TokenRequestRecord[] = [];
  const sockets = new Set<Socket>();
  const agent = new Agent({ keepAlive: true });
  let upstream: URL | undefined;
  let fault: TokenFault | null = null;
  let faultRemaining = Number.POSITIVE_INFINITY;
  let latencyMs = 0;
  // While holding: answers read from the upstream, waiting to be sent (each takes the tail's length).
  let held: ((tailMs: number) => void)[] | undefined;
  let answerDelayMs = 0;
  let pauseNext: { ms: number; onPause?: () => void } | undefined;

  const takeFault = (): TokenFault | null => {
    if (!fault) return null;
    const applied = fault;
    faultRemaining -= 1;
    if (faultRemaining <= 0) fault = null;
    return applied;
  };

  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    body: Buffer | undefined,
    onStatus?: (status: number) => void,
    dropResponse = false,
    onBody?: (body: Buffer) => void,
    holdMs = 0,
    holdable = false,
  ): void => {
    if (!upstream) {
      sendPlain(res, 502, 'token proxy: no upstream configured');
      return;
    }
    // Host is rewritten to the upstream; the original goes in X-Forwarded-Host so that an upstream that
    // trusts proxy headers (oidc-provider with `proxy = true`) builds its URLs from the proxy's origin.
    const headers = {
      ...req.headers,
      host: upstream.host,
      'x-forwarded-host': req.headers.host ?? '',
      'x-forwarded-proto': 'http',
      'x-forwarded-for': req.socket.remoteAddress ?? '',
    };
    if (body) {
      delete headers['transfer-encoding'];
      headers['content-length'] = String(body.length);
    }
    const upstreamReq = request(
      {
        protocol: upstream.protocol,
        hostname: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers,
        agent,
      },
      (upstreamRes) => {
        onStatus?.(upstreamRes.statusCode ?? 0);
        if (holdable && held && !dropResponse) {
          // The whole answer is read now (the provider is done) and sent on only when released.
          const chunks: Buffer[] = [];
          upstreamRes.on('data', (c: Buffer) => chunks.push(c));
          upstreamRes.once('end', () => {
            const raw = Buffer.concat(chunks);
            onBody?.(raw);
            const send = (tailMs: number): void => {
              if (res.destroyed) return;
              const headers = { ...upstreamRes.headers, 'content-length': String(raw.length) };
              delete headers['transfer-encoding'];
              res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, headers);
              if (tailMs <= 0) {
                res.end(raw);
                return;
              }
              const cut = Math.floor(raw.length / 2);
              res.write(raw.subarray(0, cut));
              setTimeout(() => {
                if (!res.destroyed) res.end(raw.subarray(cut));
              }, tailMs);
            };
            if (held) held.push(send);
            else send(0);
          });
          return;
        }
        if (onBody) {
          const chunks: Buffer[] = [];
          upstreamRes.on('data', (c: Buffer) => chunks.push(c));
          upstreamRes.once('end', () => onBody(Buffer.concat(chunks)));
        }
        if (dropResponse || res.destroyed) {
          upstreamRes.resume();
          upstreamRes.once('end', () => req.socket.destroy());
          return;
        }
        const pause = onBody ? pauseNext : undefined;
        if (pause) pauseNext = undefined;
        if (holdMs > 0 || pause) {
          const chunks: Buffer[] = [];
          upstreamRes.on('data', (c: Buffer) => chunks.push(c));
          upstreamRes.once('end', () => {
            setTimeout(() => {
              if (res.destroyed) return;
              res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, upstreamRes.headers);
              res.end(Buffer.concat(chunks), () => {
                if (!pause) return;
                // Paused from the check phase: on waking the loop runs its timers before it polls the
                // keeper's socket, as after a real suspension.
                setImmediate(() => {
                  pause.onPause?.();
                  const until = performance.now() + pause.ms;
                  while (performance.now() < until) {
                    // the process is paused: no timer, no socket read
                  }
                });
              });
            }, holdMs);
          });
          return;
        }
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, upstreamRes.headers);
        upstreamRes.pipe(res);
      },
    );
    upstreamReq.on('error', (err) => {
      if (!res.headersSent) sendPlain(res, 502, `token proxy: upstream error: ${err.message}`);
      else res.destroy();
    });
    res.once('close', () => {
      if (!res.writableFinished) upstreamReq.destroy();
    });
    if (body) upstreamReq.end(body);
    else req.pipe(upstreamReq);
  };

  const issued = new Set<string>();
  const recordIssued = (raw: Buffer): void => {
    try {
      const json = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
      for (const field of ['access_token', 'refresh_token', 'id_token']) {
        const value = json[field];
        if (typeof value === 'string') issued.add(value);
      }
    } catch {
      // not JSON: nothing issued
    }
  };

  const handleToken = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const body = await readBody(req);
    const record: TokenRequestRecord = { ...parseTokenRequest(req, body), at: Date.now(), forwarded: false };
    requests.push(record);
    const applied = takeFault();
    if (applied) record.fault = applied.kind;
    if (!applied || applied.kind === 'forward-then-reset') {
      if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs));
      record.forwarded = true;
      forward(
        req,
        res,
        body,
        (status) => (record.status = status),
        applied?.kind === 'forward-then-reset',
        recordIssued,
        answerDelayMs,
        true,
      );
      return;
    }
    switch (applied.kind) {
      case 'status': {
        const text = applied.body ?? STATUS_CODES[applied.status] ?? '';
        record.status = applied.status;
        res.writeHead(applied.status, {
          'content-type': 'text/plain; charset=utf-8',
          'cache-control': 'no-store',
          ...applied.headers,
        });
        res.end(text);
        return;
      }
      case 'reset':
        req.socket.destroy();
        return;
      case 'hang':
        // Never answer; the socket is destroyed when the client aborts or the proxy stops.
        req.socket.setTimeout(0);
        return;
      case 'malformed-json':
        record.status = 200;
        sendJsonText(res, 200, '{"access_token": "abc", "token_type": "Bearer", ');
        return;
      case 'oauth-error-200':
        record.status = 200;
        sendJsonText(
          res,
          200,
          JSON.stringify({ error: applied.error, error_description: 'injected by token proxy' }),
        );
        return;
      case 'missing-access-token':
        record.status = 200;
        sendJsonText(res, 200, JSON.stringify({ token_type: 'Bearer', expires_in: 3600 }));
        return;
      case 'oversized':
        record.status = 200;
        sendJsonText(
          res,
          200,
          `{"access_token":"${'a'.repeat(OVERSIZED_BYTES)}","token_type":"Bearer","expires_in":3600}`,
        );
        return;
      case 'oauth-error':
        record.status = applied.status;
        sendJsonText(
          res,
          applied.status,
          JSON.stringify({ error: applied.error, error_description: 'injected by token proxy' }),
          applied.headers,
        );
        return;
    }
  };

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'POST' && path === tokenPath) {
      handleToken(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendPlain(res, 500, `token proxy: ${String(err)}`);
        else res.destroy();
      });
      return;
    }
    forward(req, res, undefined);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_err, socket) => socket.destroy());

  const port = await listenOnLoopback(server);

  let stopped: Promise<void> | undefined;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setUpstream(url) {
      upstream = new URL(url);
    },
    setFault(next) {
      fault = next;
      faultRemaining = next?.times ?? Number.POSITIVE_INFINITY;
      if (faultRemaining <= 0) fault = null;
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    holdAnswers() {
      held ??= [];
    },
    releaseAnswers(options = {}) {
      const sends = held ?? [];
      held = undefined;
      for (const send of sends) send(options.tailMs ?? 0);
      return sends.length;
    },
    setAnswerDelay(ms) {
      answerDelayMs = ms;
    },
    pauseAfterNextAnswer(ms, onPause) {
      pauseNext = { ms, onPause };
    },
    refreshRedemptions: () => countRedemptions(requests),
    reuseCount() {
      let extra = 0;
      for (const n of countRedemptions(requests).values()) if (n > 1) extra += n - 1;
      return extra;
    },
    issuedTokens: () => new Set(issued),
    reset() {
      requests.length = 0;
      fault = null;
      latencyMs = 0;
      held = undefined;
      answerDelayMs = 0;
      pauseNext = undefined;
    },
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
        agent.destroy();
      });
      return stopped;
    },
  };
}

function countRedemptions(requests: readonly TokenRequestRecord[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of requests) {
    if (r.forwarded && r.grantType === 'refresh_token' && r.refreshToken !== undefined) {
      counts.set(r.refreshToken, (counts.get(r.refreshToken) ?? 0) + 1);
    }
  }
  return counts;
}

/** A request's whole body (the test servers' token endpoints read small forms). */
export function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

function formDecode(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return value;
  }
}

function parseTokenRequest(
  req: IncomingMessage,
  body: Buffer,
): Pick<TokenRequestRecord, 'grantType' | 'refreshToken' | 'clientId' | 'resource'> {
  const form = new URLSearchParams(body.toString('utf8'));
  let clientId = form.get('client_id') ?? undefined;
  const authorization = req.headers.authorization;
  if (!clientId && authorization?.toLowerCase().startsWith('basic ')) {
    const decoded = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon >= 0) clientId = formDecode(decoded.slice(0, colon));
  }
  return {
    grantType: form.get('grant_type') ?? undefined,
    refreshToken: form.get('refresh_token') ?? undefined,
    clientId,
    resource: form.get('resource') ?? undefined,
  };
}

function sendPlain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(text);
}

function sendJsonText(
  res: ServerResponse,
  status: number,
  text: string,
  headers?: Record<string, string>,
): void {
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}
