import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import * as oauth from 'oauth4webapi';
import { afterEach, describe, expect, it } from 'vitest';
import type { ProviderConfig } from '../../functions/core/model.js';
import { type GrantResult, OAuthClient } from '../../functions/core/oauth/client.js';
import { AnswerDeadline } from '../../functions/core/oauth/deadline.js';
import { silentLogger } from '../../functions/core/ports.js';
import { listenOnLoopback } from '../../functions/local/embedded.js';

/**
 * An answer that arrived wins over a timer that ran late. The token endpoint is a real HTTP server in
 * this process: it writes its whole answer to the socket and then blocks the event loop past the
 * client's timeout (a GC pause, a throttled container, a suspended laptop). When the loop runs again
 * its timers come before its socket reads; the answer must still be read and used.
 */

let server: Server | undefined;

afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** Blocks the event loop for `ms` (the process is paused as far as its timers and sockets go). */
function blockLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // busy-wait
  }
}

async function tokenEndpoint(
  handle: (req: IncomingMessage, res: ServerResponse, body: string) => void,
): Promise<string> {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => handle(req, res, body));
  });
  const port = await listenOnLoopback(server);
  return `http://127.0.0.1:${port}/token`;
}

function provider(tokenEndpoint: string): ProviderConfig {
  return {
    providerId: 'acme',
    tokenEndpoint,
    clientId: 'tokenkeeper',
    clientAuthMethod: 'none',
    createdAt: 0,
    updatedAt: 0,
  };
}

function client(timeoutMs: number): OAuthClient {
  return new OAuthClient({
    fetch: (input, init) => fetch(input, init),
    clock: { now: () => Date.now() },
    logger: silentLogger,
    timeoutMs,
    grantTimeoutMs: timeoutMs,
    allowInsecureHttp: true,
    clientSecret: async () => undefined,
  });
}

const ANSWER = JSON.stringify({
  access_token: 'at-new',
  refresh_token: 'rt-rotated',
  token_type: 'Bearer',
  expires_in: 3600,
});

describe('a grant whose answer arrived while the event loop was blocked past its timeout', () => {
  it('is read and used, not discarded as a timeout', async () => {
    // Prepare: the provider answers at once, then the process stalls 4× the timeout
    const url = await tokenEndpoint((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(ANSWER);
      blockLoop(400);
    });

    // Act
    const result: GrantResult = await client(100).refresh(provider(url), 'rt-old');

    // Assess: the rotated refresh token is in hand (the old code returned a `timeout` failure)
    expect(result).toMatchObject({ ok: true, tokens: { accessToken: 'at-new', refreshToken: 'rt-rotated' } });
  });

  it('reads a body whose head came in time but whose rest came after the timeout', async () => {
    // Prepare: the head at once, the body after the request's own time is up
    const url = await tokenEndpoint((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.write(ANSWER.slice(0, 10));
      setTimeout(() => res.end(ANSWER.slice(10)), 300);
    });

    // Act
    const result = await client(100).refresh(provider(url), 'rt-old');

    // Assess
    expect(result).toMatchObject({ ok: true, tokens: { refreshToken: 'rt-rotated' } });
  });

  it('the code exchange keeps an answer that arrived while the loop was blocked', async () => {
    // Prepare
    const url = await tokenEndpoint((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(ANSWER);
      blockLoop(400);
    });
    const p = provider(url);
    const as = { issuer: new URL(url).origin, token_endpoint: url };
    const callback = oauth.validateAuthResponse(
      as,
      { client_id: p.clientId },
      new URLSearchParams({ code: 'code-1' }),
      oauth.skipStateCheck,
    );

    // Act
    const result = await client(100).exchangeCode(
      p,
      as,
      callback,
      'http://127.0.0.1/cb',
      'verifier-verifier-verifier-verifier-verifier-01',
    );

    // Assess
    expect(result).toMatchObject({ ok: true, tokens: { accessToken: 'at-new' } });
  });

  it('a grant that was sent and never answered ends at its time as grant_outcome_unknown', async () => {
    // Prepare: the provider takes the request and never answers
    const url = await tokenEndpoint(() => {});

    // Act
    const started = Date.now();
    const result = await client(150).refresh(provider(url), 'rt-old');

    // Assess
    expect(result).toMatchObject({
      ok: false,
      failure: { class: 'transient', code: 'grant_outcome_unknown' },
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    server?.closeAllConnections();
  });

  it('a connection closed after the request was sent is grant_outcome_unknown', async () => {
    // Prepare
    const url = await tokenEndpoint((req) => req.socket.destroy());

    // Act
    const result = await client(5_000).refresh(provider(url), 'rt-old');

    // Assess
    expect(result).toMatchObject({
      ok: false,
      failure: { class: 'transient', code: 'grant_outcome_unknown' },
    });
  });

  it('a connection refused (nothing sent) stays a network_error', async () => {
    // Prepare: a port nobody listens on
    const url = await tokenEndpoint(() => {});
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    server = undefined;

    // Act
    const result = await client(5_000).refresh(provider(url), 'rt-old');

    // Assess
    expect(result).toMatchObject({ ok: false, failure: { class: 'transient', code: 'network_error' } });
  });
});

describe('AnswerDeadline', () => {
  it('aborts when no answer came, and not once the answer is in', async () => {
    const unanswered = new AnswerDeadline(20);
    const answered = new AnswerDeadline(20);
    answered.headArrived();
    answered.finished();
    await new Promise((r) => setTimeout(r, 120));
    expect(unanswered.signal.aborted).toBe(true);
    expect((unanswered.signal.reason as Error).name).toBe('TimeoutError');
    expect(answered.signal.aborted).toBe(false);
  });
});
