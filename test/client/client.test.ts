import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  InvalidRequestError,
  ProviderNotFoundError,
  ReauthorizationRequiredError,
  RefreshUnavailableError,
  ServiceUnavailableError,
  SessionNotFoundError,
  type Token,
  TokenKeeperApiError,
  TokenKeeperClient,
  type TokenKeeperClientOptions,
  TokenKeeperConnectionError,
  UnauthorizedError,
} from '../../client/index.js';

/**
 * The client's own behaviour against a scripted server (an injected fetch) and an injected clock:
 * the cache, coalescing, the 503 retries and the typed errors. test/client/local-stack.test.ts runs
 * the same client against the real local stack.
 */

const T0 = 1_750_000_000_000; // epoch ms
const T0S = T0 / 1000;

interface Seen {
  method: string;
  url: URL;
  headers: Headers;
  body?: string;
}

type Reply = { status: number; body?: unknown; headers?: Record<string, string> } | Error;

/** A fetch answering from a script; each call may be held until released. */
function scripted() {
  const seen: Seen[] = [];
  const replies: ((req: Seen) => Reply | Promise<Reply>)[] = [];
  let fallback: ((req: Seen) => Reply | Promise<Reply>) | undefined;
  const fetchImpl = (async (input: Parameters<typeof fetch>[0], init: RequestInit = {}) => {
    const req: Seen = {
      method: init.method ?? 'GET',
      url: new URL(String(input)),
      headers: new Headers(init.headers),
      body: init.body === undefined || init.body === null ? undefined : String(init.body),
    };
    seen.push(req);
    const next = replies.shift() ?? fallback;
    if (!next) throw new Error(`unexpected request ${req.method} ${req.url}`);
    const reply = await next(req);
    if (reply instanceof Error) throw reply;
    const text = reply.body === undefined ? null : JSON.stringify(reply.body);
    return new Response(text, {
      status: reply.status,
      headers: { ...(text === null ? {} : { 'content-type': 'application/json' }), ...reply.headers },
    });
  }) as typeof fetch;
  return {
    fetch: fetchImpl,
    seen,
    reply(...r: ((req: Seen) => Reply | Promise<Reply>)[]) {
      replies.push(...r);
    },
    always(r: (req: Seen) => Reply | Promise<Reply>) {
      fallback = r;
    },
  };
}

function token(accessToken: string, expiresAt: number | null, now = T0S): Token {
  return {
    access_token: accessToken,
    token_type: 'Bearer',
    expires_at: expiresAt,
    expires_in: expiresAt === null ? null : expiresAt - now,
  };
}

const ok =
  (body: unknown, status = 200) =>
  () => ({ status, body });
const err = (status: number, error: string, headers?: Record<string, string>) => () => ({
  status,
  body: { error, error_description: `${error} happened` },
  headers,
});

function deferred<T>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

function setup(options: Partial<TokenKeeperClientOptions> = {}) {
  const server = scripted();
  let now = T0;
  const sleeps: number[] = [];
  const client = new TokenKeeperClient({
    baseUrl: 'http://127.0.0.1:8787',
    auth: { kind: 'bearer', apiKey: 'test-key' },
    fetch: server.fetch,
    clock: () => now,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    ...options,
  });
  return {
    client,
    server,
    sleeps,
    advance(ms: number) {
      now += ms;
    },
  };
}

describe('requests', () => {
  it('sends the bearer key, the path segments fully percent-encoded, and minValidity', async () => {
    const { client, server } = setup();
    server.reply(ok(token('a', T0S + 3600)));
    await client.getToken("alice@example.com:x+y'(1)", 'git hub', { minValidity: 120 });
    const [req] = server.seen;
    expect(req?.headers.get('authorization')).toBe('Bearer test-key');
    expect(req?.url.pathname).toBe('/v1/sessions/alice%40example.com%3Ax%2By%27%281%29/git%20hub/token');
    expect(req?.url.search).toBe('?minValidity=120');
  });

  it('keeps a stage path of the base URL', async () => {
    const { client, server } = setup({ baseUrl: 'https://api.example.test/prod/' });
    server.reply(ok({ sessions: [] }));
    await client.listSessions('u');
    expect(server.seen[0]?.url.href).toBe('https://api.example.test/prod/v1/sessions/u');
  });

  it('refuses ids a URL path cannot carry', async () => {
    const { client } = setup();
    await expect(client.getSession('', 'p')).rejects.toThrow(TypeError);
    await expect(client.getSession('..', 'p')).rejects.toThrow(/userId/);
    await expect(client.getToken('u', '.')).rejects.toThrow(/providerId/);
    await expect(client.getToken('u', 'p', { minValidity: -1 })).rejects.toThrow(/minValidity/);
  });

  it('PUTs JSON bodies and reports created or replaced', async () => {
    const { client, server } = setup();
    const provider = { providerId: 'p', clientId: 'c', clientAuthMethod: 'none', hasClientSecret: false };
    server.reply(ok(provider, 201), ok(provider, 200));
    expect((await client.putProvider('p', { issuer: 'https://i', clientId: 'c' })).created).toBe(true);
    expect((await client.putProvider('p', { issuer: 'https://i', clientId: 'c' })).created).toBe(false);
    expect(server.seen[0]?.method).toBe('PUT');
    expect(server.seen[0]?.headers.get('content-type')).toBe('application/json');
    expect(JSON.parse(server.seen[0]?.body ?? '')).toEqual({ issuer: 'https://i', clientId: 'c' });
  });
});

describe('getToken cache', () => {
  it('serves from memory until expires_at − minValidity, with expires_in as of now', async () => {
    const { client, server, advance } = setup();
    server.reply(ok(token('first', T0S + 600)), ok(token('second', T0S + 1200)));
    expect((await client.getToken('u', 'p')).access_token).toBe('first');
    advance(100_000);
    const cached = await client.getToken('u', 'p');
    expect(cached).toMatchObject({ access_token: 'first', expires_in: 500 });
    expect(server.seen).toHaveLength(1);
    // 600 − 60 = 540 s after T0 the token no longer satisfies the default minValidity.
    advance(439_000);
    expect((await client.getToken('u', 'p')).access_token).toBe('first');
    advance(1_000);
    expect((await client.getToken('u', 'p')).access_token).toBe('second');
    expect(server.seen).toHaveLength(2);
  });

  it('asks the server when the caller needs more validity than the cached token has', async () => {
    const { client, server } = setup();
    server.reply(ok(token('short', T0S + 300)), ok(token('long', T0S + 3600)));
    await client.getToken('u', 'p', { minValidity: 60 });
    expect((await client.getToken('u', 'p', { minValidity: 600 })).access_token).toBe('long');
    expect(server.seen[1]?.url.searchParams.get('minValidity')).toBe('600');
    // The longer-lived token now serves both.
    expect((await client.getToken('u', 'p', { minValidity: 60 })).access_token).toBe('long');
    expect(server.seen).toHaveLength(2);
  });

  it('keeps sessions apart', async () => {
    const { client, server } = setup();
    server.reply(ok(token('a', T0S + 3600)), ok(token('b', T0S + 3600)));
    expect((await client.getToken('u', 'p1')).access_token).toBe('a');
    expect((await client.getToken('u', 'p2')).access_token).toBe('b');
    expect((await client.getToken('u', 'p1')).access_token).toBe('a');
    expect(server.seen).toHaveLength(2);
  });

  it('force bypasses the cache and replaces it', async () => {
    const { client, server } = setup();
    server.reply(ok(token('old', T0S + 3600)), ok(token('new', T0S + 3600)));
    await client.getToken('u', 'p');
    expect((await client.getToken('u', 'p', { force: true })).access_token).toBe('new');
    expect(server.seen[1]?.url.searchParams.get('force')).toBe('true');
    expect((await client.getToken('u', 'p')).access_token).toBe('new');
    expect(server.seen).toHaveLength(2);
  });

  it('rejected: sends force and the refused token’s fingerprint, never the token itself', async () => {
    const { client, server } = setup();
    server.reply(ok(token('old', T0S + 3600)), ok(token('new', T0S + 3600)));
    await client.getToken('u', 'p');
    expect((await client.getToken('u', 'p', { rejected: 'old' })).access_token).toBe('new');
    const sent = server.seen[1]?.url.searchParams;
    expect(sent?.get('force')).toBe('true');
    expect(sent?.get('rejected')).toBe(createHash('sha256').update('old').digest('hex').slice(0, 16));
    expect(server.seen[1]?.url.href).not.toContain('old');
  });

  it('rejected: a cached token newer than the refused one is served without asking the keeper', async () => {
    const { client, server } = setup();
    server.reply(ok(token('new', T0S + 3600)));
    await client.getToken('u', 'p');
    expect((await client.getToken('u', 'p', { rejected: 'older' })).access_token).toBe('new');
    expect(server.seen).toHaveLength(1);
  });

  it('callWithToken: on a 401 asks once with rejected and calls again; a second 401 is returned as it came', async () => {
    const { client, server } = setup();
    server.reply(ok(token('t1', T0S + 3600)), ok(token('t2', T0S + 3600)));
    const used: string[] = [];
    const res = await client.callWithToken('u', 'p', async (t) => {
      used.push(t.access_token);
      return new Response(null, { status: used.length === 1 ? 401 : 200 });
    });
    expect(res.status).toBe(200);
    expect(used).toEqual(['t1', 't2']);
    expect(server.seen[1]?.url.searchParams.get('rejected')).toMatch(/^[0-9a-f]{16}$/);

    server.reply(ok(token('t3', T0S + 3600)));
    const refused = await client.callWithToken('u', 'p', async () => new Response('no', { status: 401 }));
    expect(refused.status).toBe(401);
    expect(await refused.text()).toBe('no');
    expect(server.seen).toHaveLength(3);
  });

  it('does not cache a token without a known expiry', async () => {
    const { client, server } = setup();
    server.always(ok(token('forever', null)));
    await client.getToken('u', 'p');
    const again = await client.getToken('u', 'p');
    expect(again).toEqual(token('forever', null));
    expect(server.seen).toHaveLength(2);
  });

  it('forgets a session on writes, on 404 and on 409', async () => {
    const { client, server } = setup();
    const meta = { userId: 'u', providerId: 'p' };
    server.reply(
      ok(token('a', T0S + 3600)),
      ok(meta, 200),
      ok(token('b', T0S + 3600)),
      () => ({ status: 204 }),
      err(404, 'session_not_found'),
    );
    await client.getToken('u', 'p');
    await client.putSession('u', 'p', { access_token: 'x' });
    expect((await client.getToken('u', 'p')).access_token).toBe('b');
    await client.deleteSession('u', 'p');
    await expect(client.getToken('u', 'p')).rejects.toThrow(SessionNotFoundError);
    expect(server.seen).toHaveLength(5);

    server.reply(ok(token('c', T0S + 3600)), err(409, 'reauthorization_required'));
    await client.getToken('u', 'q');
    await expect(client.getToken('u', 'q', { force: true })).rejects.toThrow(ReauthorizationRequiredError);
    server.reply(err(409, 'reauthorization_required'));
    await expect(client.getToken('u', 'q')).rejects.toThrow(ReauthorizationRequiredError);
  });

  it('clearCache forgets one session or all', async () => {
    const { client, server } = setup();
    server.always(ok(token('t', T0S + 3600)));
    await client.getToken('u', 'p');
    await client.getToken('u', 'q');
    client.clearCache('u', 'p');
    await client.getToken('u', 'p');
    await client.getToken('u', 'q');
    expect(server.seen).toHaveLength(3);
    client.clearCache();
    await client.getToken('u', 'q');
    expect(server.seen).toHaveLength(4);
  });
});

describe('getToken coalescing', () => {
  it('concurrent calls for one session share one request', async () => {
    const { client, server } = setup();
    const gate = deferred<Reply>();
    server.reply(() => gate.promise);
    const calls = Array.from({ length: 10 }, () => client.getToken('u', 'p'));
    await Promise.resolve();
    gate.resolve({ status: 200, body: token('shared', T0S + 3600) });
    const tokens = await Promise.all(calls);
    expect(new Set(tokens.map((t) => t.access_token))).toEqual(new Set(['shared']));
    expect(server.seen).toHaveLength(1);
    // Each caller gets its own copy.
    expect(tokens[0]).not.toBe(tokens[1]);
  });

  it('concurrent forced calls collapse into one forced request', async () => {
    const { client, server } = setup();
    const gate = deferred<Reply>();
    server.reply(() => gate.promise);
    const calls = Array.from({ length: 5 }, () => client.getToken('u', 'p', { force: true }));
    gate.resolve({ status: 200, body: token('forced', T0S + 3600) });
    expect((await Promise.all(calls)).every((t) => t.access_token === 'forced')).toBe(true);
    expect(server.seen).toHaveLength(1);
  });

  it('a forced call does not settle for a plain request in flight; plain calls join the forced one', async () => {
    const { client, server } = setup();
    const plainGate = deferred<Reply>();
    const forcedGate = deferred<Reply>();
    server.reply(
      () => plainGate.promise,
      () => forcedGate.promise,
    );
    const plain = client.getToken('u', 'p');
    const forced = client.getToken('u', 'p', { force: true });
    const later = client.getToken('u', 'p');
    await new Promise((r) => setTimeout(r, 0));
    expect(server.seen.map((r) => r.url.searchParams.get('force'))).toEqual([null, 'true']);
    forcedGate.resolve({ status: 200, body: token('new', T0S + 3600) });
    plainGate.resolve({ status: 200, body: token('old', T0S + 3600) });
    expect((await plain).access_token).toBe('old');
    expect((await forced).access_token).toBe('new');
    expect((await later).access_token).toBe('new');
    // The plain answer started before the forced call must not replace the newer token.
    expect((await client.getToken('u', 'p')).access_token).toBe('new');
    expect(server.seen).toHaveLength(2);
  });

  it('a caller needing more validity than the shared answer gives asks again', async () => {
    const { client, server } = setup();
    const gate = deferred<Reply>();
    server.reply(() => gate.promise, ok(token('long', T0S + 7200)));
    const a = client.getToken('u', 'p', { minValidity: 60 });
    const b = client.getToken('u', 'p', { minValidity: 3600 });
    gate.resolve({ status: 200, body: token('short', T0S + 300) });
    expect((await a).access_token).toBe('short');
    expect((await b).access_token).toBe('long');
  });

  it('an error reaches every caller sharing the request', async () => {
    const { client, server } = setup();
    const gate = deferred<Reply>();
    server.reply(() => gate.promise);
    const calls = Array.from({ length: 3 }, () => client.getToken('u', 'p'));
    gate.resolve({ status: 404, body: { error: 'session_not_found', error_description: 'none' } });
    for (const call of calls) await expect(call).rejects.toThrow(SessionNotFoundError);
    expect(server.seen).toHaveLength(1);
  });
});

describe('getToken retries of 503', () => {
  it('waits Retry-After between attempts and returns the token once available', async () => {
    const { client, server, sleeps } = setup();
    server.reply(
      err(503, 'refresh_unavailable', { 'retry-after': '3' }),
      err(503, 'refresh_unavailable', { 'retry-after': '7' }),
      ok(token('finally', T0S + 3600)),
    );
    expect((await client.getToken('u', 'p')).access_token).toBe('finally');
    expect(sleeps).toEqual([3000, 7000]);
  });

  it('gives up after maxRetries with a RefreshUnavailableError carrying the code and Retry-After', async () => {
    const { client, server, sleeps } = setup({ maxRetries: 2 });
    server.always(err(503, 'refresh_unavailable', { 'retry-after': '5' }));
    const error = await client.getToken('u', 'p').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RefreshUnavailableError);
    expect(error).toMatchObject({ status: 503, code: 'refresh_unavailable', retryAfterSeconds: 5 });
    expect(server.seen).toHaveLength(3);
    expect(sleeps).toEqual([5000, 5000]);
  });

  it('does not wait out a Retry-After above the cap', async () => {
    const { client, server, sleeps } = setup({ maxRetryDelaySeconds: 10 });
    server.always(err(503, 'refresh_unavailable', { 'retry-after': '300' }));
    await expect(client.getToken('u', 'p')).rejects.toMatchObject({ retryAfterSeconds: 300 });
    expect(server.seen).toHaveLength(1);
    expect(sleeps).toEqual([]);
  });

  it('understands an HTTP-date Retry-After, and defaults to 1 s without one', async () => {
    const { client, server, sleeps } = setup();
    server.reply(
      err(503, 'key_unavailable', { 'retry-after': new Date(T0 + 4000).toUTCString() }),
      err(503, 'refresh_unavailable'),
      ok(token('t', T0S + 3600)),
    );
    await client.getToken('u', 'p');
    expect(sleeps).toEqual([4000, 1000]);
  });

  it('maxRetries 0 throws the first 503', async () => {
    const { client, server } = setup({ maxRetries: 0 });
    server.always(err(503, 'key_unavailable', { 'retry-after': '60' }));
    const error = await client.getToken('u', 'p').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ServiceUnavailableError);
    expect(error).not.toBeInstanceOf(RefreshUnavailableError);
    expect(error).toMatchObject({ code: 'key_unavailable', retryAfterSeconds: 60 });
  });

  it('other errors are not retried', async () => {
    const { client, server, sleeps } = setup();
    server.always(err(409, 'reauthorization_required'));
    await expect(client.getToken('u', 'p')).rejects.toThrow(ReauthorizationRequiredError);
    expect(server.seen).toHaveLength(1);
    expect(sleeps).toEqual([]);
  });
});

describe('typed errors', () => {
  it.each([
    [400, 'invalid_request', InvalidRequestError],
    [401, 'unauthorized', UnauthorizedError],
    [404, 'provider_not_found', ProviderNotFoundError],
    [404, 'session_not_found', SessionNotFoundError],
    [409, 'reauthorization_required', ReauthorizationRequiredError],
    [503, 'refresh_unavailable', RefreshUnavailableError],
    [404, 'not_found', TokenKeeperApiError],
  ] as const)('%i %s', async (status, code, type) => {
    const { client, server } = setup({ maxRetries: 0 });
    server.reply(err(status, code));
    const error = await client.getSession('u', 'p').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(type);
    expect(error).toBeInstanceOf(TokenKeeperApiError);
    expect(error).toMatchObject({ status, code, description: `${code} happened` });
    expect((error as Error).message).toBe(`${code}: ${code} happened`);
    expect((error as Error).name).toBe(type.name);
  });

  it("API Gateway's own 403 is an UnauthorizedError with its message", async () => {
    const { client, server } = setup();
    server.reply(() => ({
      status: 403,
      body: { message: 'The security token included in the request is invalid.' },
    }));
    const error = await client.getProvider('p').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnauthorizedError);
    expect(error).toMatchObject({
      status: 403,
      code: 'forbidden',
      description: 'The security token included in the request is invalid.',
    });
  });

  it('a network failure is a TokenKeeperConnectionError', async () => {
    const { client, server } = setup();
    server.reply(() => new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } }));
    const error = await client.listSessions('u').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TokenKeeperConnectionError);
    expect((error as Error).message).toBe('cannot reach http://127.0.0.1:8787: ECONNREFUSED');
  });

  it('a 2xx that is not JSON is an error, not a silent undefined', async () => {
    const { client, server } = setup();
    server.reply(() => ({ status: 200 }));
    await expect(client.getProvider('p')).rejects.toMatchObject({ code: 'invalid_response' });
  });
});
