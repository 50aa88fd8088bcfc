import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiHandler, createApiHandler } from '../../functions/api/adapter.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The Lambda side of the API adapter: hand-built API Gateway HTTP API (payload format 2.0) events
 * straight into `createApiHandler(runtime)`, on the same runtime (and table) as the local stack.
 */

type Json = Record<string, unknown>;

interface EventOptions {
  rawQueryString?: string;
  headers?: Record<string, string>;
  /** Sent base64-encoded unless `base64: false`. */
  body?: string | Buffer;
  base64?: boolean;
}

function event(method: string, rawPath: string, options: EventOptions = {}): APIGatewayProxyEventV2 {
  const now = Date.now();
  const base64 = options.base64 ?? true;
  const ev: APIGatewayProxyEventV2 = {
    version: '2.0',
    routeKey: '$default',
    rawPath,
    rawQueryString: options.rawQueryString ?? '',
    headers: { 'user-agent': 'contract-test', ...options.headers },
    requestContext: {
      accountId: '123456789012',
      apiId: 'api1234567',
      domainName: 'api1234567.execute-api.eu-west-1.amazonaws.com',
      domainPrefix: 'api1234567',
      http: {
        method,
        path: rawPath,
        protocol: 'HTTP/1.1',
        sourceIp: '203.0.113.7',
        userAgent: 'contract-test',
      },
      requestId: `req-${now}`,
      routeKey: '$default',
      stage: '$default',
      time: new Date(now).toUTCString(),
      timeEpoch: now,
    },
    isBase64Encoded: false,
  };
  if (options.body !== undefined) {
    const bytes = Buffer.isBuffer(options.body) ? options.body : Buffer.from(options.body, 'utf8');
    ev.body = base64 ? bytes.toString('base64') : bytes.toString('utf8');
    ev.isBase64Encoded = base64;
  }
  return ev;
}

function parse(result: APIGatewayProxyStructuredResultV2): Json {
  return result.body === undefined ? {} : (JSON.parse(result.body) as Json);
}

function expectError(
  result: APIGatewayProxyStructuredResultV2,
  status: number,
  code: string,
  mention?: string,
) {
  expect(result.statusCode, result.body).toBe(status);
  expect(result.isBase64Encoded).toBe(false);
  expect(result.headers?.['content-type']).toBe('application/json');
  const body = parse(result);
  expect(Object.keys(body).sort()).toEqual(['error', 'error_description']);
  expect(body.error).toBe(code);
  if (mention !== undefined) expect(body.error_description).toContain(mention);
}

let keeper: TestStack;
/** As deployed: IAM in front, no API key. */
let iam: ApiHandler;
/** With an API key, as the local stack runs it. */
let keyed: ApiHandler;
let flushes = 0;

beforeAll(async () => {
  keeper = await startTestStack();
  iam = createApiHandler(keeper.stack.runtime, { afterEach: () => flushes++ });
  keyed = createApiHandler(keeper.stack.runtime, { apiKey: 'lambda-contract-key-0123456789abcdef' });
  const provider = await iam(
    event('PUT', '/v1/providers/gh:enterprise', {
      body: JSON.stringify({
        tokenEndpoint: 'https://github.example.test/login/oauth/token',
        clientId: 'gh',
      }),
    }),
  );
  expect(provider.statusCode, provider.body).toBe(201);
});

afterAll(async () => {
  await keeper?.stop();
});

describe('API Gateway HTTP API payload 2.0 → createApiHandler', () => {
  it('answers a structured result: status, lower-case headers, isBase64Encoded false, a JSON body', async () => {
    const result = await iam(event('GET', '/v1/health'));
    expect(result).toEqual({
      statusCode: 200,
      headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
      isBase64Encoded: false,
      body: '{"status":"ok"}',
    });
  });

  it('decodes a base64 body; takes rawPath ids as delivered (the gateway has decoded them)', async () => {
    const token = {
      access_token: 'lambda-access-0123456789',
      refresh_token: 'lambda-refresh-0123456789',
      expires_in: 3600,
      scope: 'repo read:user',
      token_type: 'bearer',
    };
    const userId = 'alice@example.com + zoë 😀';
    const path = `/v1/sessions/${userId}/gh:enterprise`;
    const put = await iam(event('PUT', path, { body: JSON.stringify(token) }));
    expect(put.statusCode, put.body).toBe(201);
    const meta = parse(put);
    expect(meta).toMatchObject({
      userId,
      providerId: 'gh:enterprise',
      refreshable: true,
    });
    expect(put.body).not.toContain(token.access_token);
    expect(put.body).not.toContain(token.refresh_token);

    // The local HTTP server, sent the percent-encoded path, reaches the very same session.
    const viaHttp = await keeper.call('GET', `/v1/sessions/${encodeURIComponent(userId)}/gh%3Aenterprise`);
    expect(viaHttp.status).toBe(200);
    expect(viaHttp.body).toEqual(meta);

    const served = await iam(event('GET', `${path}/token`, { rawQueryString: 'minValidity=0&force=false' }));
    expect(served.statusCode, served.body).toBe(200);
    expect(served.headers).toMatchObject({ 'cache-control': 'no-store', 'content-type': 'application/json' });
    expect(parse(served)).toEqual({
      access_token: token.access_token,
      token_type: 'bearer',
      expires_at: expect.any(Number),
      expires_in: expect.any(Number),
      scope: token.scope,
    });
    expect(served.body).not.toContain(token.refresh_token);

    const list = await iam(event('GET', `/v1/sessions/${userId}`));
    expect((parse(list).sessions as Json[]).map((s) => s.providerId)).toEqual(['gh:enterprise']);
  });

  it('never decodes rawPath a second time: a % left in it is refused, not read as an escape', async () => {
    // What the gateway delivers for `/v1/sessions/alice%2541` and `/v1/sessions/a%252Fb`-style
    // paths when only one decoding applied: the id would otherwise become `aA` or `a/b`.
    for (const rawPath of ['/v1/sessions/a%41', '/v1/sessions/a%2Fb', '/v1/sessions/alice/p%2Ftoken']) {
      const result = await iam(event('GET', rawPath));
      expectError(result, 400, 'invalid_request', 'must not contain / ? # % \\');
    }
    expectError(await iam(event('GET', '/v1/sessions/a\\b/p/token')), 400, 'invalid_request', 'userId:');
    expectError(await iam(event('GET', '/v1/sessions/a/p#x')), 400, 'invalid_request', 'providerId:');
  });

  it('takes a plain (not base64) body, a lower-case method and mixed-case header names', async () => {
    const put = await iam(
      event('put', '/v1/sessions/bob/gh:enterprise', {
        body: '{"access_token":"plain-body-0123456789"}',
        base64: false,
        headers: { 'Content-Type': 'application/json' },
      }),
    );
    expect(put.statusCode, put.body).toBe(201);
    expect(parse(put)).toMatchObject({ userId: 'bob', expiresAt: null, refreshable: false });
    const ok = await keyed(
      event('GET', '/v1/sessions/bob/gh:enterprise', {
        headers: { AUTHORIZATION: 'Bearer lambda-contract-key-0123456789abcdef' },
      }),
    );
    expect(ok.statusCode, ok.body).toBe(200);
  });

  it('reads the query from rawQueryString: repeated keys and bad values are 400', async () => {
    const path = '/v1/sessions/bob/gh:enterprise/token';
    const cases: [string, string][] = [
      ['force=true&force=false', 'force'],
      ['minValidity=%2D1', 'minValidity'],
      ['minValidity=60&minValidity=120', 'minValidity'],
      ['force=yes', 'force'],
      ['unknown=1', '"unknown"'],
      ['__proto__=1', '"__proto__"'],
    ];
    for (const [rawQueryString, mention] of cases) {
      expectError(await iam(event('GET', path, { rawQueryString })), 400, 'invalid_request', mention);
    }
    // queryStringParameters are not read: only rawQueryString is.
    const ev = event('GET', path, { rawQueryString: 'minValidity=0' });
    ev.queryStringParameters = { force: 'maybe' };
    expect((await iam(ev)).statusCode).toBe(200);
  });

  it('maps bad paths, bodies and sizes to 4xx, never throws', async () => {
    expectError(await iam(event('GET', '/v1/sessions/%E0%A4%A/x')), 400, 'invalid_request', 'userId:');
    expectError(
      await iam(event('GET', '/v1/sessions/a\u0001/x')),
      400,
      'invalid_request',
      'control characters',
    );
    expectError(
      await iam(event('PUT', '/v1/sessions/bob/gh:enterprise')),
      400,
      'invalid_request',
      'required',
    );
    expectError(
      await iam(event('PUT', '/v1/sessions/bob/gh:enterprise', { body: '{"access_token":' })),
      400,
      'invalid_request',
      'malformed JSON',
    );
    expectError(
      await iam(event('PUT', '/v1/sessions/bob/gh:enterprise', { body: Buffer.alloc(64 * 1024 + 1, 0x20) })),
      413,
      'payload_too_large',
    );
    expectError(
      await iam(event('PUT', '/v1/sessions/bob/nope', { body: '{"access_token":"a"}' })),
      404,
      'provider_not_found',
    );
    expectError(await iam(event('GET', '/v1/nope')), 404, 'not_found');
    const wrong = await iam(event('POST', '/v1/sessions/bob/gh:enterprise/token'));
    expectError(wrong, 405, 'method_not_allowed');
    expect(wrong.headers?.allow).toBe('GET');
    // An event with no headers at all.
    const bare = event('GET', '/v1/health');
    delete (bare as { headers?: unknown }).headers;
    expect((await iam(bare)).statusCode).toBe(200);
  });

  it('with an API key: 401 with WWW-Authenticate unless Authorization carries it', async () => {
    const variants: Record<string, string>[] = [
      {},
      { authorization: 'Bearer nope' },
      { Authorization: 'Basic abc' },
    ];
    for (const headers of variants) {
      const result = await keyed(event('GET', '/v1/sessions/bob/gh:enterprise', { headers }));
      expectError(result, 401, 'unauthorized');
      expect(result.headers?.['www-authenticate']).toBe('Bearer');
    }
    expect((await keyed(event('GET', '/v1/health'))).statusCode).toBe(200);
  });

  it('DELETE answers 204 with no body; afterEach runs once per event, errors included', async () => {
    const before = flushes;
    const del = await iam(event('DELETE', '/v1/sessions/bob/gh:enterprise'));
    expect(del).toEqual({
      statusCode: 204,
      headers: { 'cache-control': 'no-store' },
      isBase64Encoded: false,
    });
    expect('body' in del).toBe(false);
    expectError(await iam(event('DELETE', '/v1/sessions/bob/gh:enterprise')), 404, 'session_not_found');
    expectError(await iam(event('GET', '/v1/sessions/bob/gh:enterprise')), 404, 'session_not_found');
    expect(flushes - before).toBe(3);
  });
});
