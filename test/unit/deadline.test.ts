import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiHandler, DEADLINE_MARGIN_MS } from '../../functions/api/adapter.js';
import { loadConfig } from '../../functions/core/config.js';
import { generateKeyringJson, parseKeyring } from '../../functions/core/crypto/crypto.js';
import type { FetchLike } from '../../functions/core/ports.js';
import { createRuntime, type Runtime } from '../../functions/core/runtime.js';
import { ensureTable } from '../../functions/core/store/table.js';
import { uniqueId } from '../support/core-fixture.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

/**
 * Every API call finishes inside the Lambda's time: waits, discovery and revocation are cut to fit
 * the deadline taken from the context, and a grant is started only when its whole timeout and the
 * commit fit. Real clock, real dynalite; the provider's HTTP boundary is an injected fetch whose
 * discovery and revocation endpoints never answer.
 */

const ISSUER = 'http://127.0.0.1:9/idp';
const TOKEN_ENDPOINT = 'http://127.0.0.1:9/token';
const REVOCATION_ENDPOINT = 'http://127.0.0.1:9/revoke';
const HTTP_TIMEOUT_MS = 2_000;

interface Seen {
  url: string;
  at: number;
}

function hangingProvider(): { fetch: FetchLike; seen: Seen[] } {
  const seen: Seen[] = [];
  const fetch: FetchLike = async (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    seen.push({ url, at: Date.now() });
    if (url === TOKEN_ENDPOINT) {
      return Response.json({ access_token: 'at-new', refresh_token: 'rt-new', expires_in: 3600 });
    }
    // Discovery and revocation hang until the request's own signal gives up.
    return new Promise((_, reject) => {
      const signal = init?.signal;
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
  };
  return { fetch, seen };
}

function event(method: string, path: string): APIGatewayProxyEventV2 {
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: 'force=true',
    queryStringParameters: { force: 'true' },
    headers: {},
    requestContext: {
      accountId: '123456789012',
      apiId: 'api',
      domainName: 'api.example',
      domainPrefix: 'api',
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '10.0.0.1', userAgent: 'test' },
      requestId: 'req',
      routeKey: '$default',
      stage: '$default',
      time: '',
      timeEpoch: 0,
    },
    isBase64Encoded: false,
  };
}

describe('API calls work to the Lambda deadline', () => {
  let db: DynaliteHandle;
  let runtime: Runtime;
  let provider: ReturnType<typeof hangingProvider>;

  beforeAll(async () => {
    db = await startDynalite();
    const tableName = uniqueId('deadline');
    await ensureTable(db.client, tableName);
    provider = hangingProvider();
    const keyring = parseKeyring(generateKeyringJson());
    runtime = createRuntime({
      config: loadConfig({
        TOKENKEEPER_TABLE_NAME: tableName,
        TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
        TOKENKEEPER_HTTP_TIMEOUT_MS: String(HTTP_TIMEOUT_MS),
      }),
      dynamodb: db.client,
      fetch: provider.fetch,
      keyring: async () => keyring,
      // As in a Lambda: the invocation ends with the answer, so no grant may outlive the deadline.
      keepsRunning: false,
    });
    await runtime.providers.put('by-issuer', { issuer: ISSUER, clientId: 'c', clientAuthMethod: 'none' });
    await runtime.providers.put('by-endpoint', {
      tokenEndpoint: TOKEN_ENDPOINT,
      revocationEndpoint: REVOCATION_ENDPOINT,
      clientId: 'c',
      clientAuthMethod: 'none',
    });
  });
  afterAll(() => db?.stop());

  const session = async (providerId: string) => {
    const key = { userId: uniqueId('u'), providerId };
    await runtime.sessions.put(key, { access_token: 'at-old', refresh_token: 'rt-old', expires_in: 3600 });
    return key;
  };
  /** Runs one call with the given remaining Lambda time; returns the answer and how long it took. */
  const call = async (method: string, path: string, remainingMs: number) => {
    const handler = createApiHandler(runtime);
    const start = Date.now();
    const res = await handler(event(method, path), {
      getRemainingTimeInMillis: () => remainingMs - (Date.now() - start),
    });
    return { res, elapsedMs: Date.now() - start, deadlineMs: remainingMs - DEADLINE_MARGIN_MS };
  };
  const requestsTo = (url: string) => provider.seen.filter((s) => s.url === url);

  it('too little time for a grant and its commit: 503 at once, nothing sent, nothing recorded', async () => {
    const key = await session('by-endpoint');
    const { res, elapsedMs } = await call('GET', `/v1/sessions/${key.userId}/by-endpoint/token`, 4_000);
    expect(res.statusCode).toBe(503);
    expect(JSON.parse(res.body as string)).toMatchObject({ error: 'refresh_unavailable' });
    expect(res.headers?.['retry-after']).toBe('1');
    expect(elapsedMs).toBeLessThan(1_000);
    expect(requestsTo(TOKEN_ENDPOINT)).toHaveLength(0);
    const record = await runtime.store.getSession(key, { consistent: true });
    expect(record).toMatchObject({ failureCount: 0, version: 1 });
    expect(record?.leaseOwner).toBeUndefined();
  });

  it('a hanging discovery endpoint is cut to fit: 503 before the deadline, and no grant it could not commit', async () => {
    const key = await session('by-issuer');
    const before = provider.seen.length;
    // deadline = 7.0 − 1.5 = 5.5 s; a grant needs 2 s + 2 s, so discovery gets the first 1.5 s only.
    const { res, elapsedMs, deadlineMs } = await call(
      'GET',
      `/v1/sessions/${key.userId}/by-issuer/token`,
      7_000,
    );
    expect(res.statusCode).toBe(503);
    expect(elapsedMs).toBeLessThan(deadlineMs);
    expect(elapsedMs).toBeLessThan(HTTP_TIMEOUT_MS + 500);
    const sent = provider.seen.slice(before).map((s) => s.url);
    expect(sent.length).toBeGreaterThanOrEqual(1);
    expect(sent.every((url) => url.includes('/.well-known/'))).toBe(true);
    expect(requestsTo(TOKEN_ENDPOINT)).toHaveLength(0);
    // Our own lack of time is no failure of the session: no backoff, lease released.
    const record = await runtime.store.getSession(key, { consistent: true });
    expect(record).toMatchObject({ failureCount: 0, status: 'active' });
    expect(record?.nextAttemptAt).toBeUndefined();
    expect(record?.leaseOwner).toBeUndefined();
  });

  it('with time for it, the same call refreshes', async () => {
    const key = await session('by-endpoint');
    const { res } = await call('GET', `/v1/sessions/${key.userId}/by-endpoint/token`, 20_000);
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(res.body as string)).toMatchObject({ access_token: 'at-new' });
  });

  it('DELETE: a hanging revocation is bounded by the deadline and never turns the delete into an error', async () => {
    const key = await session('by-endpoint');
    const { res, elapsedMs, deadlineMs } = await call(
      'DELETE',
      `/v1/sessions/${key.userId}/by-endpoint`,
      3_000,
    );
    expect(res.statusCode).toBe(204);
    expect(elapsedMs).toBeLessThan(deadlineMs + 100);
    expect(requestsTo(REVOCATION_ENDPOINT).length).toBeGreaterThanOrEqual(1);
    expect(await runtime.store.getSession(key, { consistent: true })).toBeUndefined();
  });
});
