import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { type DynamoDBClient, ScanCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer, type TokenSet } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The v1 HTTP contract (docs/api.md), route by route and error by error, as real HTTP requests to the
 * local stack, which hands each one to the Lambda API handler as an HTTP API payload 2.0 event.
 * Requests go through node:http so that paths reach the server byte for byte (fetch normalises them).
 */

type Json = Record<string, unknown>;

interface Res {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  body: Json;
}

interface SendOptions {
  /** A JSON value (serialised), raw text, or raw bytes. */
  body?: unknown;
  /** `undefined`: the right bearer key; `null`: no Authorization header; a string: that header. */
  auth?: string | null;
  headers?: Record<string, string>;
}

const META_KEYS = [
  'expiresAt',
  'failureCount',
  'lastError',
  'nextAttemptAt',
  'providerId',
  'refreshExpiresAt',
  'refreshMode',
  'refreshable',
  'refreshedAt',
  'status',
  'userId',
].sort();

const SECRET = 'contract-client-secret-7f3a9c1e5b';
const KIB64 = 64 * 1024;

let oauth: OAuthServer;
let keeper: TestStack;
let ddb: DynamoDBClient;
let tableName: string;
let seq = 0;

const nowSeconds = () => Math.floor(Date.now() / 1000);
const user = (prefix = 'user') => `${prefix}-${++seq}`;

function send(method: string, path: string, options: SendOptions = {}): Promise<Res> {
  const headers: Record<string, string> = { ...options.headers };
  const auth = options.auth === undefined ? `Bearer ${keeper.apiKey}` : options.auth;
  if (auth !== null) headers.authorization = auth;
  let payload: Buffer | undefined;
  if (options.body !== undefined) {
    const b = options.body;
    payload = Buffer.isBuffer(b) ? b : Buffer.from(typeof b === 'string' ? b : JSON.stringify(b), 'utf8');
    headers['content-type'] ??= 'application/json';
    headers['content-length'] = String(payload.length);
  }
  const { hostname, port } = new URL(keeper.url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ hostname, port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: Json = {};
        try {
          body = text ? (JSON.parse(text) as Json) : {};
        } catch {
          body = {};
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** Every item of the table, canonically serialised and sorted. */
async function snapshot(): Promise<string[]> {
  const canonical = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canonical);
    if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(
        Object.keys(v)
          .sort()
          .map((k) => [k, canonical((v as Json)[k])]),
      );
    }
    return v;
  };
  const items: string[] = [];
  let start: Json | undefined;
  do {
    const page = await ddb.send(
      new ScanCommand({
        TableName: tableName,
        ConsistentRead: true,
        ExclusiveStartKey: start as never,
      }),
    );
    for (const item of page.Items ?? []) items.push(JSON.stringify(canonical(item)));
    start = page.LastEvaluatedKey as Json | undefined;
  } while (start);
  return items.sort();
}

/**
 * Sends a request that must be rejected and, when it could write (any method but GET/HEAD, and the
 * token route, which refreshes), proves the table is byte for byte the same afterwards.
 */
async function rejected(method: string, path: string, options: SendOptions = {}): Promise<Res> {
  const couldWrite = !['GET', 'HEAD'].includes(method) || path.includes('/token');
  if (!couldWrite) {
    const res = await send(method, path, options);
    expect(res.status, `${method} ${path} → ${res.status} ${res.text}`).toBeGreaterThanOrEqual(400);
    return res;
  }
  const before = await snapshot();
  expect(before.length).toBeGreaterThan(0);
  const res = await send(method, path, options);
  expect(res.status, `${method} ${path} → ${res.status} ${res.text}`).toBeGreaterThanOrEqual(400);
  expect(await snapshot(), `${method} ${path} wrote to the table`).toEqual(before);
  return res;
}

function expectError(res: Res, status: number, code: string, mention?: string | RegExp): void {
  expect(res.status, res.text).toBe(status);
  expect(res.headers['content-type']).toBe('application/json');
  expect(Object.keys(res.body).sort()).toEqual(['error', 'error_description']);
  expect(res.body.error).toBe(code);
  expect(typeof res.body.error_description).toBe('string');
  if (typeof mention === 'string') expect(res.body.error_description).toContain(mention);
  else if (mention) expect(res.body.error_description).toMatch(mention);
}

/** API Gateway's own refusal of a malformed path (a bare or broken escape), before any handler. */
function expectGatewayBadRequest(res: Res): void {
  expect(res.status, res.text).toBe(400);
  expect(res.body).toEqual({ message: 'Bad Request' });
}

function expectMetadata(res: Res, status: number, key: { userId: string; providerId: string }): Json {
  expect(res.status, res.text).toBe(status);
  expect(res.headers['content-type']).toBe('application/json');
  expect(Object.keys(res.body).sort()).toEqual(META_KEYS);
  expect(res.body.userId).toBe(key.userId);
  expect(res.body.providerId).toBe(key.providerId);
  return res.body;
}

/** A real authorization-code + PKCE login at the OAuth server for the 'mcp' provider. */
function login(accountId: string): Promise<TokenSet> {
  return oauth.login({ clientId: oauth.clients.basic.clientId, accountId, resource: MCP_RESOURCE });
}

async function connect(body: (t: TokenSet) => Json = (t) => ({ ...t })) {
  const userId = user('oidc');
  const tokens = await login(userId);
  const res = await send('PUT', `/v1/sessions/${userId}/mcp`, { body: body(tokens) });
  expectMetadata(res, 201, { userId, providerId: 'mcp' });
  return { userId, tokens };
}

/** The tokens the keeper holds right now (the refresh token may have rotated). */
async function stored(userId: string, providerId = 'mcp') {
  const store = keeper.stack.runtime.store;
  const record = await store.getSession({ userId, providerId }, { consistent: true });
  if (!record) throw new Error('no such session');
  return store.reveal(record);
}

/** A session with made-up tokens on the 'plain' provider; never due for the sweep. */
async function fakeSession(userId = user(), providerId = 'plain') {
  const tokens = {
    access_token: `at-${userId}-${providerId}-0123456789`,
    refresh_token: `rt-${userId}-${providerId}-0123456789`,
    expires_in: 3600,
    token_type: 'Bearer',
  };
  const res = await send('PUT', `/v1/sessions/${encodeURIComponent(userId)}/${providerId}`, { body: tokens });
  expectMetadata(res, 201, { userId, providerId });
  return { userId, providerId, tokens };
}

async function revokeGrant(accessToken: string): Promise<void> {
  const basic = oauth.clients.basic;
  const res = await fetch(oauth.revocationEndpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from(`${basic.clientId}:${basic.clientSecret}`).toString('base64')}`,
    },
    body: new URLSearchParams({ token: accessToken }),
  });
  expect(res.status).toBe(200);
}

beforeAll(async () => {
  [oauth, keeper] = await Promise.all([
    startOAuthServer({ accessTokenTtl: 300 }),
    // As deployed: the stack sets the account; the region comes from Lambda's AWS_REGION.
    startTestStack({ env: { AWS_REGION: 'eu-west-1', TOKENKEEPER_ACCOUNT_ID: '123456789012' } }),
  ]);
  ddb = keeper.stack.dynamodbClient({ maxAttempts: 1 });
  tableName = keeper.stack.runtime.config.tableName;
  const mcp = await send('PUT', '/v1/providers/mcp', {
    body: {
      issuer: oauth.issuer,
      clientId: oauth.clients.basic.clientId,
      clientSecret: oauth.clients.basic.clientSecret,
      clientAuthMethod: 'client_secret_basic',
      resource: MCP_RESOURCE,
    },
  });
  expect(mcp.status, mcp.text).toBe(201);
  // Made-up sessions live here: no revocation endpoint, and never due, so never sent anywhere.
  const plain = await send('PUT', '/v1/providers/plain', {
    body: { tokenEndpoint: oauth.tokenEndpoint, clientId: oauth.clients.public.clientId },
  });
  expect(plain.status, plain.text).toBe(201);
});

afterAll(async () => {
  ddb?.destroy();
  await keeper?.stop();
  await oauth?.stop();
});

describe('health and authentication', () => {
  it('GET /v1/health answers 200 {"status":"ok"} without authentication', async () => {
    for (const auth of [null, 'Bearer wrong']) {
      const res = await send('GET', '/v1/health', { auth });
      expect(res.status).toBe(200);
      expect(res.headers['content-type']).toBe('application/json');
      expect(res.body).toEqual({ status: 'ok' });
    }
  });

  it('every other route answers 401 unauthorized with WWW-Authenticate, and writes nothing', async () => {
    const s = await fakeSession();
    const key = keeper.apiKey;
    const routes: [string, string, unknown?][] = [
      ['PUT', '/v1/providers/mcp', { tokenEndpoint: 'https://evil.example/token', clientId: 'x' }],
      ['PUT', '/v1/providers/brand-new', { tokenEndpoint: 'https://evil.example/token', clientId: 'x' }],
      ['GET', '/v1/providers/mcp'],
      ['PUT', `/v1/sessions/${s.userId}/plain`, { access_token: 'replaced' }],
      ['PUT', `/v1/sessions/${user()}/plain`, { access_token: 'new' }],
      ['GET', `/v1/sessions/${s.userId}/plain/token`],
      ['GET', `/v1/sessions/${s.userId}/plain/token?force=true`],
      ['GET', `/v1/sessions/${s.userId}/plain`],
      ['GET', `/v1/sessions/${s.userId}`],
      ['DELETE', `/v1/sessions/${s.userId}/plain`],
      ['POST', `/v1/sessions/${s.userId}/plain/connections/${'A'.repeat(43)}`],
      ['POST', '/local/sweep'],
    ];
    const credentials = [
      null,
      'Bearer wrong-key',
      `Bearer ${key}x`,
      `Basic ${key}`,
      key,
      `Bearer ${key} extra`,
    ];
    for (const [method, path, body] of routes) {
      for (const auth of credentials) {
        const res = await rejected(method, path, { auth, body });
        expectError(res, 401, 'unauthorized');
        expect(res.headers['www-authenticate']).toBe('Bearer');
        expect(res.text).not.toContain(s.tokens.access_token);
      }
    }
    // The scheme is case-insensitive; the key is not.
    expect((await send('GET', `/v1/sessions/${s.userId}/plain`, { auth: `bearer ${key}` })).status).toBe(200);
    const upper = key.toUpperCase() === key ? key.toLowerCase() : key.toUpperCase();
    expect((await send('GET', `/v1/sessions/${s.userId}/plain`, { auth: `Bearer ${upper}` })).status).toBe(
      401,
    );
  });
});

describe('PUT/GET /v1/providers/{providerId}', () => {
  const base = {
    issuer: 'https://auth.example.test',
    tokenEndpoint: 'https://auth.example.test/oauth/token',
    revocationEndpoint: 'https://auth.example.test/oauth/revoke',
    clientId: 'contract-client',
    clientSecret: SECRET,
    clientAuthMethod: 'client_secret_post',
    resource: 'https://mcp.example.test/',
    scope: 'read write',
  };

  /** A new provider's health: circuit closed, settings verified. */
  const HEALTHY = {
    state: 'closed',
    since: null,
    nextProbeAt: null,
    consecutiveFailures: 0,
    lastError: null,
    integrity: null,
  };

  it('201 on create, 200 on replace, GET 200 the same: the provider, never its secret', async () => {
    const created = await send('PUT', '/v1/providers/contract', { body: base });
    expect(created.status, created.text).toBe(201);
    expect(created.headers['content-type']).toBe('application/json');
    expect(created.text).not.toContain(SECRET);
    const { clientSecret: _secret, ...visible } = base;
    expect(created.body).toEqual({
      ...visible,
      providerId: 'contract',
      hasClientSecret: true,
      refreshPolicy: 'eager',
      // computed from the keeper's public URL: what to register at the authorization server
      redirectUri: `${keeper.url}/oauth/callback/contract`,
      createdAt: expect.any(Number),
      updatedAt: expect.any(Number),
      health: HEALTHY,
    });
    expect(Math.abs((created.body.createdAt as number) - nowSeconds())).toBeLessThanOrEqual(2);

    const got = await send('GET', '/v1/providers/contract');
    expect(got.status).toBe(200);
    expect(got.text).not.toContain(SECRET);
    expect(got.body).toEqual(created.body);

    const other = `${SECRET}-rotated`;
    const replaced = await send('PUT', '/v1/providers/contract', {
      body: { tokenEndpoint: base.tokenEndpoint, clientId: 'contract-client-2', clientSecret: other },
    });
    expect(replaced.status, replaced.text).toBe(200);
    expect(replaced.text).not.toContain(SECRET);
    expect(replaced.body).toEqual({
      providerId: 'contract',
      tokenEndpoint: base.tokenEndpoint,
      clientId: 'contract-client-2',
      // a secret without a method defaults to client_secret_basic
      clientAuthMethod: 'client_secret_basic',
      hasClientSecret: true,
      refreshPolicy: 'eager',
      redirectUri: created.body.redirectUri,
      createdAt: created.body.createdAt,
      updatedAt: expect.any(Number),
      health: HEALTHY,
    });
    expect(replaced.body.updatedAt).toBeGreaterThanOrEqual(created.body.updatedAt as number);
    const again = await send('GET', '/v1/providers/contract');
    expect(again.status).toBe(200);
    expect(again.text).not.toContain(SECRET);
    expect(again.body).toEqual(replaced.body);

    // A public client: no secret, method none by default; a secret by ARN is shown (it is not the secret).
    const pub = await send('PUT', '/v1/providers/contract', {
      body: { issuer: base.issuer, clientId: 'public' },
    });
    expect(pub.status).toBe(200);
    expect(pub.body).toMatchObject({ clientAuthMethod: 'none', hasClientSecret: false });
    // The stored configuration is replaced, not merged: the old endpoints and secret are gone, the
    // first createdAt stays.
    const stored = await send('GET', '/v1/providers/contract');
    expect(stored.body).toEqual(pub.body);
    expect(stored.body).not.toHaveProperty('tokenEndpoint');
    expect(stored.body).toMatchObject({ createdAt: created.body.createdAt });
    const outside = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf';
    const refused = await send('PUT', '/v1/providers/contract-arn', {
      body: { issuer: base.issuer, clientId: 'c', clientSecretArn: outside },
    });
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ error: 'invalid_request' });
    // The functions may read secrets in their own region and account only (that is all the stack grants).
    const elsewhere: [string, string][] = [
      [
        'arn:aws:secretsmanager:us-east-1:123456789012:secret:tokenkeeper/client-AbCdEf',
        "clientSecretArn: the secret must be in this keeper's region (eu-west-1)",
      ],
      [
        'arn:aws:secretsmanager:eu-west-1:210987654321:secret:tokenkeeper/client-AbCdEf',
        "clientSecretArn: the secret must be in this keeper's AWS account (123456789012)",
      ],
    ];
    for (const [clientSecretArn, description] of elsewhere) {
      const res = await rejected('PUT', '/v1/providers/contract-arn', {
        body: { issuer: base.issuer, clientId: 'c', clientSecretArn },
      });
      expectError(res, 400, 'invalid_request', description);
    }
    const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tokenkeeper/client-AbCdEf';
    const byArn = await send('PUT', '/v1/providers/contract-arn', {
      body: { issuer: base.issuer, clientId: 'c', clientSecretArn: arn },
    });
    expect(byArn.status).toBe(201);
    expect(byArn.body).toMatchObject({
      clientAuthMethod: 'client_secret_basic',
      hasClientSecret: true,
      clientSecretArn: arn,
    });
  });

  it('refresh settings: stored, returned, listed, and dropped by a replacement that leaves them out', async () => {
    const keepAlive = {
      tokenEndpoint: base.tokenEndpoint,
      clientId: 'c',
      refreshPolicy: 'keepAlive',
      refreshTokenIdleSeconds: 86_400,
      maxConcurrentRefreshes: 25,
    };
    const put = await send('PUT', '/v1/providers/contract-policy', { body: keepAlive });
    expect(put.status, put.text).toBe(201);
    expect(put.body).toMatchObject({
      refreshPolicy: 'keepAlive',
      refreshTokenIdleSeconds: 86_400,
      maxConcurrentRefreshes: 25,
    });
    expect((await send('GET', '/v1/providers/contract-policy')).body).toEqual(put.body);
    const listed = await send('GET', '/v1/providers?limit=100');
    expect((listed.body.providers as Json[]).find((p) => p.providerId === 'contract-policy')).toEqual(
      put.body,
    );
    // The bounds themselves are accepted; eager takes maxConcurrentRefreshes too.
    const bounds = await send('PUT', '/v1/providers/contract-policy', {
      body: { ...keepAlive, refreshTokenIdleSeconds: 600, maxConcurrentRefreshes: 1000 },
    });
    expect(bounds.body).toMatchObject({ refreshTokenIdleSeconds: 600, maxConcurrentRefreshes: 1000 });
    const eager = await send('PUT', '/v1/providers/contract-policy', {
      body: {
        tokenEndpoint: base.tokenEndpoint,
        clientId: 'c',
        refreshPolicy: 'eager',
        maxConcurrentRefreshes: 1,
      },
    });
    expect(eager.status, eager.text).toBe(200);
    expect(eager.body).toMatchObject({ refreshPolicy: 'eager', maxConcurrentRefreshes: 1 });
    expect(eager.body).not.toHaveProperty('refreshTokenIdleSeconds');
    const plain = await send('PUT', '/v1/providers/contract-policy', {
      body: { tokenEndpoint: base.tokenEndpoint, clientId: 'c' },
    });
    expect(plain.body).toMatchObject({ refreshPolicy: 'eager' });
    expect(plain.body).not.toHaveProperty('maxConcurrentRefreshes');
    expect((await send('GET', '/v1/providers/contract-policy')).body).toEqual(plain.body);
  });

  it('GET of an unknown provider is 404 provider_not_found', async () => {
    expectError(await send('GET', '/v1/providers/nobody'), 404, 'provider_not_found');
    expectError(await send('GET', '/v1/providers/no%20body'), 404, 'provider_not_found');
  });

  it('400 invalid_request naming the field for every bad body; nothing is written', async () => {
    const ok = { issuer: 'https://auth.example.test', clientId: 'c' };
    const cases: [unknown, string | RegExp][] = [
      [{ clientId: 'c' }, 'issuer, tokenEndpoint'],
      [{ clientId: 'c', clientSecret: SECRET }, 'issuer, tokenEndpoint'],
      [{ tokenEndpoint: 'not a url', clientId: 'c' }, 'tokenEndpoint'],
      [{ tokenEndpoint: '/relative/token', clientId: 'c' }, 'tokenEndpoint'],
      [{ issuer: 'ftp://auth.example.test', clientId: 'c' }, 'issuer'],
      [{ issuer: 'https://user:pw@auth.example.test', clientId: 'c' }, 'issuer'],
      [{ tokenEndpoint: 'https://auth.example.test/token#x', clientId: 'c' }, 'tokenEndpoint'],
      [{ ...ok, revocationEndpoint: 'revoke' }, 'revocationEndpoint'],
      [{ ...ok, resource: 'not a uri' }, 'resource'],
      [{ ...ok, clientAuthMethod: 'private_key_jwt', clientSecret: SECRET }, 'clientAuthMethod'],
      [{ ...ok, clientAuthMethod: 'CLIENT_SECRET_BASIC', clientSecret: SECRET }, 'clientAuthMethod'],
      [{ ...ok, clientAuthMethod: 'client_secret_basic' }, 'clientAuthMethod'],
      [{ ...ok, clientAuthMethod: 'client_secret_post' }, 'clientAuthMethod'],
      [{ ...ok, clientAuthMethod: 'none', clientSecret: SECRET }, 'clientAuthMethod'],
      [
        {
          ...ok,
          clientSecret: SECRET,
          clientSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:x',
        },
        'clientSecretArn',
      ],
      [{ ...ok, clientSecretArn: SECRET }, 'clientSecretArn'],
      [{ issuer: ok.issuer }, 'clientId'],
      [{ ...ok, clientId: '' }, 'clientId'],
      [{ ...ok, clientSecret: '' }, 'clientSecret'],
      [{ ...ok, unexpected: 1 }, '"unexpected"'],
      [{ ...ok, client_secret: SECRET }, '"client_secret"'],
      [{ ...ok, issuer: 42 }, 'issuer'],
      [{ ...ok, issuer: null }, 'issuer'],
      [{ ...ok, clientId: 42 }, 'clientId'],
      [{ ...ok, clientId: ['c'] }, 'clientId'],
      [{ ...ok, clientSecret: true }, 'clientSecret'],
      [{ ...ok, scope: ['read'] }, 'scope'],
      [{ ...ok, clientAuthMethod: 1 }, 'clientAuthMethod'],
      [{ ...ok, refreshPolicy: 'lazy' }, 'refreshPolicy: must be eager or keepAlive'],
      [{ ...ok, refreshPolicy: 'keepalive' }, 'refreshPolicy'],
      [{ ...ok, refreshPolicy: null }, 'refreshPolicy'],
      [{ ...ok, refreshPolicy: 'keepAlive', refreshTokenIdleSeconds: 599 }, 'refreshTokenIdleSeconds'],
      [{ ...ok, refreshPolicy: 'keepAlive', refreshTokenIdleSeconds: 34_560_001 }, 'refreshTokenIdleSeconds'],
      [{ ...ok, refreshPolicy: 'keepAlive', refreshTokenIdleSeconds: 3600.5 }, 'refreshTokenIdleSeconds'],
      [{ ...ok, refreshPolicy: 'keepAlive', refreshTokenIdleSeconds: '3600' }, 'refreshTokenIdleSeconds'],
      [
        { ...ok, refreshTokenIdleSeconds: 3600 },
        'refreshTokenIdleSeconds: applies only with refreshPolicy keepAlive',
      ],
      [{ ...ok, refreshPolicy: 'eager', refreshTokenIdleSeconds: 3600 }, 'refreshTokenIdleSeconds'],
      [{ ...ok, maxConcurrentRefreshes: 0 }, 'maxConcurrentRefreshes: must be an integer from 1 to 1000'],
      [{ ...ok, maxConcurrentRefreshes: 1001 }, 'maxConcurrentRefreshes'],
      [{ ...ok, maxConcurrentRefreshes: -5 }, 'maxConcurrentRefreshes'],
      [{ ...ok, maxConcurrentRefreshes: 2.5 }, 'maxConcurrentRefreshes'],
      [{ ...ok, maxConcurrentRefreshes: '10' }, 'maxConcurrentRefreshes'],
      ['{"issuer":"https://auth.example.test","clientId":', 'malformed JSON'],
      ["{'clientId':'c'}", 'malformed JSON'],
      ['', 'request body is required'],
      ['   ', 'request body is required'],
      ['[]', 'body: must be a JSON object'],
      ['[{"issuer":"https://auth.example.test","clientId":"c"}]', 'body: must be a JSON object'],
      ['"text"', 'body: must be a JSON object'],
      ['42', 'body: must be a JSON object'],
      ['null', 'body: must be a JSON object'],
      ['true', 'body: must be a JSON object'],
    ];
    for (const id of ['mcp', 'never-created']) {
      for (const [body, mention] of cases) {
        const res = await rejected('PUT', `/v1/providers/${id}`, { body });
        expectError(res, 400, 'invalid_request', mention);
        expect(res.text).not.toContain(SECRET);
      }
    }
    expectError(await send('GET', '/v1/providers/never-created'), 404, 'provider_not_found');
  });

  it('400 for bad provider ids; nothing is written', async () => {
    const body = { tokenEndpoint: 'https://auth.example.test/token', clientId: 'c' };
    const cases: [string, string][] = [
      ['/v1/providers/', 'providerId: must not be empty'],
      [`/v1/providers/${'p'.repeat(257)}`, 'providerId: must be at most 256 characters'],
      ['/v1/providers/a%01b', 'providerId: must not contain control characters'],
      ['/v1/providers/a%7F', 'providerId: must not contain control characters'],
      ['/v1/providers/a%C2%85', 'providerId: must not contain control characters'],
      ['/v1/providers/100%25', 'providerId: must not contain / ? # % \\'],
      ['/v1/providers/a%5Cb', 'providerId: must not contain / ? # % \\'],
      ['/v1/providers/a%23b', 'providerId: must not contain / ? # % \\'],
      ['/v1/providers/%2E%2E', 'providerId: must not be "." or ".."'],
    ];
    for (const [path, mention] of cases) {
      expectError(await rejected('PUT', path, { body }), 400, 'invalid_request', mention);
      expectError(await send('GET', path), 400, 'invalid_request', mention);
    }
    for (const path of ['/v1/providers/%E0%A4%A', '/v1/providers/%ZZ', '/v1/providers/%ED%A0%80']) {
      expectGatewayBadRequest(await rejected('PUT', path, { body }));
    }
    // 256 characters (code points, not bytes) is the limit.
    const longest = encodeURIComponent('ü'.repeat(256));
    const put = await send('PUT', `/v1/providers/${longest}`, { body });
    expect(put.status).toBe(201);
    expect(put.body.providerId).toBe('ü'.repeat(256));
  });
});

describe('PUT /v1/sessions/{userId}/{providerId}', () => {
  it('201 on create, 200 on replace: session metadata, never a token', async () => {
    const userId = user();
    const body = {
      access_token: 'access-0123456789-put',
      refresh_token: 'refresh-0123456789-put',
      expires_in: 3600,
      token_type: 'Bearer',
      scope: 'read write',
      id_token: 'ignored.id.token',
      refresh_expires_in: 86400,
    };
    const created = await send('PUT', `/v1/sessions/${userId}/plain`, { body });
    const at = nowSeconds();
    const meta = expectMetadata(created, 201, { userId, providerId: 'plain' });
    expect(meta).toEqual({
      userId,
      providerId: 'plain',
      status: 'active',
      expiresAt: expect.any(Number),
      refreshExpiresAt: expect.any(Number),
      refreshMode: 'scheduled',
      refreshable: true,
      refreshedAt: null,
      failureCount: 0,
      lastError: null,
      nextAttemptAt: null,
    });
    expect(Math.abs((meta.expiresAt as number) - (at + 3600))).toBeLessThanOrEqual(2);
    // The refresh token's own lifetime (Keycloak's refresh_expires_in) is kept.
    expect(Math.abs((meta.refreshExpiresAt as number) - (at + 86400))).toBeLessThanOrEqual(2);
    for (const secret of [body.access_token, body.refresh_token, body.id_token]) {
      expect(created.text).not.toContain(secret);
    }
    // Unknown fields are not stored either.
    expect((await snapshot()).join('\n')).not.toContain(body.id_token);

    const replaced = await send('PUT', `/v1/sessions/${userId}/plain`, {
      body: { access_token: 'access-replaced-0123456789' },
    });
    expect(expectMetadata(replaced, 200, { userId, providerId: 'plain' })).toMatchObject({
      status: 'active',
      expiresAt: null,
      refreshable: false,
    });
    expect(replaced.text).not.toContain('access-replaced-0123456789');
  });

  it('honours expires_at (epoch seconds) and numeric strings; expires_at wins over expires_in', async () => {
    const at = nowSeconds() + 5000;
    const cases: [Json, number][] = [
      [{ expires_at: at }, at],
      [{ expires_at: String(at) }, at],
      [{ expires_at: at + 0.9 }, at],
      [{ expires_at: at, expires_in: 10 }, at],
      [{ expires_in: '7200' }, nowSeconds() + 7200],
    ];
    for (const [fields, expected] of cases) {
      const userId = user();
      const res = await send('PUT', `/v1/sessions/${userId}/plain`, {
        body: { access_token: 'a-0123456789', ...fields },
      });
      const meta = expectMetadata(res, 201, { userId, providerId: 'plain' });
      expect(Math.abs((meta.expiresAt as number) - expected), JSON.stringify(fields)).toBeLessThanOrEqual(1);
      const got = await send('GET', `/v1/sessions/${userId}/plain`);
      expect(got.body).toEqual(meta);
    }
  });

  it('refreshMode follows the lifetime the session is stored with, from the PUT on', async () => {
    // This stack sweeps every 300 s, its longest sweep 120 s: 4-second tokens are kept on demand.
    const cases: [Json, string][] = [
      [{ expires_in: 4 }, 'on_demand'],
      [{ expires_at: nowSeconds() + 4 }, 'on_demand'],
      [{ expires_in: 3600 }, 'scheduled'],
    ];
    for (const [fields, mode] of cases) {
      const userId = user();
      const path = `/v1/sessions/${userId}/plain`;
      const body = { access_token: 'a-0123456789', refresh_token: 'r-0123456789', ...fields };
      const put = expectMetadata(await send('PUT', path, { body }), 201, { userId, providerId: 'plain' });
      expect(put, JSON.stringify(fields)).toMatchObject({ refreshMode: mode, refreshable: true });
      expect((await send('GET', path)).body, JSON.stringify(fields)).toMatchObject({ refreshMode: mode });
    }
  });

  it('takes percent-encoded ids, decoded once (by the gateway): @ : + spaces, non-ASCII, 256 characters', async () => {
    const ids = ['alice@example.com', 'a:b+c', 'a b', 'zoë', 'ü'.repeat(256), '😀', 'a.b~c_d-e'];
    for (const userId of ids) {
      const path = `/v1/sessions/${encodeURIComponent(userId)}/plain`;
      const put = await send('PUT', path, { body: { access_token: 'a-0123456789' } });
      expectMetadata(put, 201, { userId, providerId: 'plain' });
      expectMetadata(await send('GET', path), 200, { userId, providerId: 'plain' });
      const list = await send('GET', `/v1/sessions/${encodeURIComponent(userId)}`);
      expect((list.body.sessions as Json[]).map((s) => s.userId)).toEqual([userId]);
    }
  });

  it('404 provider_not_found for an unregistered provider; nothing is written', async () => {
    const res = await rejected('PUT', `/v1/sessions/${user()}/ghost`, { body: { access_token: 'a' } });
    expectError(res, 404, 'provider_not_found', 'ghost');
    const existing = await fakeSession();
    expectError(
      await rejected('PUT', `/v1/sessions/${existing.userId}/ghost`, { body: existing.tokens }),
      404,
      'provider_not_found',
    );
  });

  it('400 invalid_request naming the field for every bad body; nothing is written', async () => {
    const existing = await fakeSession();
    const big = 'x'.repeat(32 * 1024 + 1);
    const cases: [unknown, string | RegExp][] = [
      [{}, 'access_token: is required'],
      [{ refresh_token: 'r', expires_in: 3600 }, 'access_token: is required'],
      [{ access_token: '' }, 'access_token'],
      [{ access_token: 5 }, 'access_token'],
      [{ access_token: null }, 'access_token'],
      [{ access_token: ['a'] }, 'access_token'],
      [{ access_token: big }, 'access_token'],
      [{ access_token: 'a', refresh_token: '' }, 'refresh_token'],
      [{ access_token: 'a', refresh_token: 5 }, 'refresh_token'],
      [{ access_token: 'a', refresh_token: big }, 'refresh_token'],
      [{ access_token: 'a', expires_in: -1 }, 'expires_in'],
      [{ access_token: 'a', expires_in: -0.5 }, 'expires_in'],
      [{ access_token: 'a', expires_in: '-1' }, 'expires_in'],
      [{ access_token: 'a', expires_in: 'abc' }, 'expires_in'],
      [{ access_token: 'a', expires_in: '1e3' }, 'expires_in'],
      [{ access_token: 'a', expires_in: '' }, 'expires_in'],
      [{ access_token: 'a', expires_in: true }, 'expires_in'],
      [{ access_token: 'a', expires_in: {} }, 'expires_in'],
      [{ access_token: 'a', expires_in: 1e300 }, 'expires_in'],
      [{ access_token: 'a', expires_in: Number.MAX_SAFE_INTEGER }, 'expires_in: is too large'],
      [{ access_token: 'a', expires_in: 100_000_000_001 }, 'expires_in: is too large'],
      ['{"access_token":"a","expires_in":1e400}', 'expires_in'],
      [{ access_token: 'a', expires_at: 0 }, 'expires_at'],
      [{ access_token: 'a', expires_at: -5 }, 'expires_at'],
      [{ access_token: 'a', expires_at: Date.now() }, 'expires_at: must be epoch seconds, not milliseconds'],
      [{ access_token: 'a', expires_at: 'tomorrow' }, 'expires_at'],
      [{ access_token: 'a', token_type: '' }, 'token_type'],
      [{ access_token: 'a', token_type: 1 }, 'token_type'],
      [{ access_token: 'a', scope: 5 }, 'scope'],
      [{ access_token: 'a', scope: ['read'] }, 'scope'],
      ['{"access_token":"a",', 'malformed JSON'],
      ['access_token=a&expires_in=3600', 'malformed JSON'],
      ['', 'request body is required'],
      ['[]', 'body: must be a JSON object'],
      ['["access_token"]', 'body: must be a JSON object'],
      ['null', 'body: must be a JSON object'],
      ['"a"', 'body: must be a JSON object'],
      ['3600', 'body: must be a JSON object'],
    ];
    for (const userId of [existing.userId, user()]) {
      for (const [body, mention] of cases) {
        const res = await rejected('PUT', `/v1/sessions/${userId}/plain`, { body });
        expectError(res, 400, 'invalid_request', mention);
        expect(res.text).not.toContain(big);
      }
    }
  });

  it('400 for bad ids (empty, 257 characters, control characters, bad escapes); nothing is written', async () => {
    const body = { access_token: 'a-0123456789', refresh_token: 'r-0123456789', expires_in: 3600 };
    const cases: [string, string][] = [
      ['/v1/sessions//plain', 'userId: must not be empty'],
      ['/v1/sessions/alice/', 'providerId: must not be empty'],
      [`/v1/sessions/${'u'.repeat(257)}/plain`, 'userId: must be at most 256 characters'],
      [`/v1/sessions/${encodeURIComponent('ü'.repeat(257))}/plain`, 'userId: must be at most 256 characters'],
      [`/v1/sessions/alice/${'p'.repeat(257)}`, 'providerId: must be at most 256 characters'],
      ['/v1/sessions/a%01b/plain', 'userId: must not contain control characters'],
      ['/v1/sessions/a%00/plain', 'userId: must not contain control characters'],
      ['/v1/sessions/a%0Ab/plain', 'userId: must not contain control characters'],
      ['/v1/sessions/a%1F/plain', 'userId: must not contain control characters'],
      ['/v1/sessions/alice/pl%7Fain', 'providerId: must not contain control characters'],
      ['/v1/sessions/alice%C2%9F/plain', 'userId: must not contain control characters'],
      ['/v1/sessions/%2525/plain', 'userId: must not contain / ? # % \\'],
      ['/v1/sessions/a%25zz/plain', 'userId: must not contain / ? # % \\'],
      ['/v1/sessions/alice/a%5Cb', 'providerId: must not contain / ? # % \\'],
      ['/v1/sessions/alice/a%23b', 'providerId: must not contain / ? # % \\'],
      ['/v1/sessions/%2E/plain', 'userId: must not be "." or ".."'],
    ];
    for (const [path, mention] of cases) {
      expectError(await rejected('PUT', path, { body }), 400, 'invalid_request', mention);
      expectError(await send('GET', path), 400, 'invalid_request', mention);
      expectError(await rejected('DELETE', path), 400, 'invalid_request', mention);
      expectError(await send('GET', `${path}/token`), 400, 'invalid_request', mention);
    }
    // Broken escapes never reach the keeper: the gateway refuses them.
    for (const path of ['/v1/sessions/%E0%A4%A/plain', '/v1/sessions/%/plain', '/v1/sessions/alice/%G1']) {
      expectGatewayBadRequest(await rejected('PUT', path, { body }));
      expectGatewayBadRequest(await send('GET', `${path}/token`));
    }
    expectError(await send('GET', '/v1/sessions/a%01'), 400, 'invalid_request', 'userId');
    expectError(await send('GET', '/v1/sessions/'), 400, 'invalid_request', 'userId: must not be empty');
  });

  it('a token with no expiry: expiresAt null, never swept, served as is, refreshed only when forced', async () => {
    const { userId, tokens } = await connect(({ expires_in: _dropped, ...t }) => ({ ...t }));
    const path = `/v1/sessions/${userId}/mcp`;
    const before = expectMetadata(await send('GET', path), 200, { userId, providerId: 'mcp' });
    expect(before).toMatchObject({ status: 'active', expiresAt: null, refreshable: true, refreshedAt: null });

    const served = await send('GET', `${path}/token?minValidity=86400`);
    expect(served.status, served.text).toBe(200);
    expect(served.body).toMatchObject({
      access_token: tokens.access_token,
      expires_at: null,
      expires_in: null,
    });

    await keeper.sweep();
    expect((await send('GET', path)).body).toEqual(before);
    expect(oauth.proxy.refreshRedemptions().get(tokens.refresh_token)).toBeUndefined();
    expect((await stored(userId)).accessToken).toBe(tokens.access_token);

    const forced = await send('GET', `${path}/token?force=true`);
    expect(forced.status, forced.text).toBe(200);
    expect(forced.body.access_token).not.toBe(tokens.access_token);
    expect(Math.abs((forced.body.expires_at as number) - (nowSeconds() + 300))).toBeLessThanOrEqual(2);
    expect(oauth.proxy.refreshRedemptions().get(tokens.refresh_token)).toBe(1);
    const after = expectMetadata(await send('GET', path), 200, { userId, providerId: 'mcp' });
    expect(after.expiresAt).toBe(forced.body.expires_at);
    expect(after.refreshedAt).toEqual(expect.any(Number));
  });
});

describe('GET /v1/sessions/{userId}/{providerId}/token', () => {
  it('200 {access_token, token_type, expires_at, expires_in, scope}, no-store, never a refresh token', async () => {
    const { userId, tokens } = await connect();
    const path = `/v1/sessions/${userId}/mcp/token`;
    for (const query of [
      '',
      '?minValidity=60',
      '?minValidity=0',
      '?force=false',
      '?minValidity=200&force=false',
    ]) {
      const res = await send('GET', `${path}${query}`);
      expect(res.status, res.text).toBe(200);
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.headers['content-type']).toBe('application/json');
      expect(Object.keys(res.body).sort()).toEqual([
        'access_token',
        'expires_at',
        'expires_in',
        'scope',
        'token_type',
      ]);
      expect(res.body).toEqual({
        access_token: tokens.access_token,
        token_type: tokens.token_type,
        expires_at: expect.any(Number),
        expires_in: expect.any(Number),
        scope: tokens.scope,
      });
      const expiresIn = res.body.expires_in as number;
      expect(expiresIn).toBeGreaterThan(290);
      expect(expiresIn).toBeLessThanOrEqual(300);
      expect(Math.abs((res.body.expires_at as number) - nowSeconds() - expiresIn)).toBeLessThanOrEqual(1);
      expect(res.text).not.toMatch(/refresh/i);
      expect(res.text).not.toContain(tokens.refresh_token);
    }

    const forced = await send('GET', `${path}?force=true`);
    expect(forced.status, forced.text).toBe(200);
    expect(forced.headers['cache-control']).toBe('no-store');
    expect(forced.body.access_token).not.toBe(tokens.access_token);
    expect((await oauth.introspect(forced.body.access_token as string)).active).toBe(true);
    const now = await stored(userId);
    expect(now.refreshToken).toBeDefined();
    expect(now.refreshToken).not.toBe(tokens.refresh_token);
    expect(forced.text).not.toMatch(/refresh/i);
    expect(forced.text).not.toContain(now.refreshToken as string);
    expect(forced.text).not.toContain(tokens.refresh_token);
  });

  it('a token without scope or expiry leaves scope out and gives null expiry', async () => {
    const userId = user();
    await send('PUT', `/v1/sessions/${userId}/plain`, { body: { access_token: 'bare-0123456789' } });
    const res = await send('GET', `/v1/sessions/${userId}/plain/token`);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      access_token: 'bare-0123456789',
      token_type: 'Bearer',
      expires_at: null,
      expires_in: null,
    });
  });

  it('400 invalid_request for bad query parameters, before anything is refreshed', async () => {
    const s = await fakeSession();
    const path = `/v1/sessions/${s.userId}/plain/token`;
    const cases: [string, string][] = [
      ['minValidity=-1', 'minValidity'],
      ['minValidity=abc', 'minValidity'],
      ['minValidity=1.5', 'minValidity'],
      ['minValidity=1e3', 'minValidity'],
      ['minValidity=', 'minValidity'],
      ['minValidity=%2060', 'minValidity'],
      ['minValidity=0x10', 'minValidity'],
      ['minValidity=86401', 'minValidity'],
      ['minValidity=9999999999999999999999', 'minValidity'],
      ['minValidity=60&minValidity=60', 'minValidity'],
      ['force=maybe', 'force'],
      ['force=TRUE', 'force'],
      ['force=1', 'force'],
      ['force=', 'force'],
      ['force', 'force'],
      ['force=true&force=true', 'force'],
      ['force=true&minValidity=-1', 'minValidity'],
      ['foo=1', '"foo"'],
      ['min_validity=60', '"min_validity"'],
      ['force=true&access_token=x', '"access_token"'],
      ['__proto__=1', '"__proto__"'],
      ['constructor=1&force=true', '"constructor"'],
    ];
    for (const [query, mention] of cases) {
      const res = await rejected('GET', `${path}?${query}`);
      expectError(res, 400, 'invalid_request', mention);
    }
    // Well-formed values are accepted (the stored token has ~3600 s left).
    expect((await send('GET', `${path}?minValidity=3000&force=false`)).status).toBe(200);
  });

  it('minValidity beyond what the provider issues: 200 with the freshest token and its true expires_in, one grant', async () => {
    const { userId, tokens } = await connect();
    const grants = () => oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token').length;
    const before = grants();
    const res = await send('GET', `/v1/sessions/${userId}/mcp/token?minValidity=86400`);
    expect(res.status, res.text).toBe(200);
    expect(res.body.access_token).not.toBe(tokens.access_token);
    // This file's provider issues 5-minute tokens: the answer says so instead of refusing.
    expect(res.body.expires_in).toBeGreaterThan(290);
    expect(res.body.expires_in).toBeLessThanOrEqual(300);
    expect(grants()).toBe(before + 1);
    // The same wish again: the token just minted is served, no second grant chasing the lifetime.
    const again = await send('GET', `/v1/sessions/${userId}/mcp/token?minValidity=86400`);
    expect(again.body.access_token).toBe(res.body.access_token);
    expect(grants()).toBe(before + 1);
  });

  it('404 session_not_found for an unknown session', async () => {
    const s = await fakeSession();
    for (const path of [
      `/v1/sessions/${user()}/plain/token`,
      `/v1/sessions/${s.userId}/mcp/token`,
      `/v1/sessions/${s.userId}/ghost/token?force=true`,
      `/v1/sessions/${s.userId.toUpperCase()}/plain/token`,
    ]) {
      expectError(await rejected('GET', path), 404, 'session_not_found');
    }
  });

  it('409 reauthorization_required once the grant is revoked at the provider; the session is kept', async () => {
    const { userId, tokens } = await connect();
    const path = `/v1/sessions/${userId}/mcp`;
    await revokeGrant(tokens.access_token);
    const forced = await send('GET', `${path}/token?force=true`);
    expectError(forced, 409, 'reauthorization_required');
    expect(forced.text).not.toContain(tokens.refresh_token);
    expect(forced.text).not.toContain(tokens.access_token);
    // Every later call answers 409 too, without asking the provider again.
    const grants = oauth.proxy.requests.length;
    expectError(await send('GET', `${path}/token`), 409, 'reauthorization_required');
    expectError(await send('GET', `${path}/token?force=true`), 409, 'reauthorization_required');
    expect(oauth.proxy.requests.length).toBe(grants);
    const meta = expectMetadata(await send('GET', path), 200, { userId, providerId: 'mcp' });
    expect(meta).toMatchObject({ status: 'reauthorization_required', refreshable: false });
    expect((meta.lastError as Json).code).toBe('invalid_grant');
    // A new login heals it.
    const fresh = await login(userId);
    expectMetadata(await send('PUT', path, { body: fresh }), 200, { userId, providerId: 'mcp' });
    expect((await send('GET', `${path}/token`)).body.access_token).toBe(fresh.access_token);
  });

  it('409 reauthorization_required when a new token is needed and there is no refresh token', async () => {
    const userId = user();
    const path = `/v1/sessions/${userId}/plain`;
    await send('PUT', path, { body: { access_token: 'no-refresh-0123456789', expires_in: 120 } });
    expectError(await send('GET', `${path}/token?force=true`), 409, 'reauthorization_required');
    expectError(await send('GET', `${path}/token?minValidity=600`), 409, 'reauthorization_required');
    expect((await send('GET', `${path}/token?minValidity=60`)).status).toBe(200);
  });

  it('503 refresh_unavailable with Retry-After when the provider fails; the valid token is still served', async () => {
    const { userId, tokens } = await connect();
    const path = `/v1/sessions/${userId}/mcp`;
    oauth.proxy.setFault({ kind: 'status', status: 503, headers: { 'retry-after': '7' }, times: 1 });
    // The stored token has ~300 s left: asking for more needs a refresh, which fails.
    const res = await send('GET', `${path}/token?minValidity=400`);
    expectError(res, 503, 'refresh_unavailable');
    expect(res.headers['retry-after']).toBe('7');
    expect(res.text).not.toContain(tokens.refresh_token);
    // Backing off: a forced call is refused at once, without a request to the provider.
    const requests = oauth.proxy.requests.length;
    const forced = await send('GET', `${path}/token?force=true`);
    expectError(forced, 503, 'refresh_unavailable');
    const retry = Number(forced.headers['retry-after']);
    expect(Number.isInteger(retry)).toBe(true);
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(7);
    expect(oauth.proxy.requests.length).toBe(requests);
    // Callers who can use the stored token still get it.
    const plain = await send('GET', `${path}/token`);
    expect(plain.status).toBe(200);
    expect(plain.body.access_token).toBe(tokens.access_token);
    const meta = expectMetadata(await send('GET', path), 200, { userId, providerId: 'mcp' });
    expect(meta).toMatchObject({ status: 'active', failureCount: 1, refreshable: true });
    expect((meta.lastError as Json).code).toBe('http_503');
    expect(meta.nextAttemptAt).toBeGreaterThan(nowSeconds());
    // A 503 with Retry-After opens the provider's circuit at once, until the time the provider asked for.
    const provider = await send('GET', '/v1/providers/mcp');
    expect(provider.body.health).toMatchObject({
      state: 'open',
      consecutiveFailures: 1,
      lastError: { code: 'http_503' },
    });
    expect((provider.body.health as Json).nextProbeAt).toBeGreaterThanOrEqual(nowSeconds() + 5);
    // The operator re-registers the provider: a new configuration starts with a closed circuit (and the
    // next tests of this file find the provider usable).
    const {
      createdAt: _c,
      updatedAt: _u,
      hasClientSecret: _h,
      health: _health,
      providerId: _p,
      redirectUri: _r,
      ...config
    } = provider.body as Json;
    const put = await send('PUT', '/v1/providers/mcp', {
      body: { ...config, clientSecret: oauth.clients.basic.clientSecret },
    });
    expect(put.status, put.text).toBe(200);
    expect((put.body.health as Json).state).toBe('closed');
  });

  it("a provider's absurd expires_in is clamped: the redeemed grant is committed and served", async () => {
    const { userId } = await connect();
    oauth.proxy.setFault({
      kind: 'status',
      status: 200,
      times: 1,
      headers: { 'content-type': 'application/json' },
      body: '{"access_token":"forever-0123456789","token_type":"Bearer","expires_in":1e300}',
    });
    const res = await send('GET', `/v1/sessions/${userId}/mcp/token?force=true`);
    expect(res.status, res.text).toBe(200);
    expect(res.body.access_token).toBe('forever-0123456789');
    expect(Number.isSafeInteger(res.body.expires_at)).toBe(true);
    expect(res.body.expires_at).toBeGreaterThan(nowSeconds() + 1e10);
  });

  it('503 refresh_unavailable with Retry-After on a forced call when the provider is down', async () => {
    const { userId } = await connect();
    oauth.proxy.setFault({ kind: 'status', status: 503 });
    try {
      const res = await send('GET', `/v1/sessions/${userId}/mcp/token?force=true`);
      expectError(res, 503, 'refresh_unavailable');
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
    } finally {
      oauth.proxy.setFault(null);
    }
  });
});

describe('GET /v1/sessions/{userId}[/{providerId}]', () => {
  it('metadata has exactly the documented keys and no token of any kind; the list is that user only', async () => {
    const { userId, tokens } = await connect();
    await fakeSession(userId, 'plain');
    const neighbours = [`${userId}0`, `${userId.slice(0, -1)}`, userId.toUpperCase()];
    for (const other of neighbours) await fakeSession(other, 'plain');

    const one = await send('GET', `/v1/sessions/${userId}/mcp`);
    const meta = expectMetadata(one, 200, { userId, providerId: 'mcp' });
    expect(meta).toEqual({
      userId,
      providerId: 'mcp',
      status: 'active',
      expiresAt: expect.any(Number),
      refreshExpiresAt: null,
      // Stored with the provider's 300-second tokens, shorter than this stack's sweep period plus its longest sweep.
      refreshMode: 'on_demand',
      refreshable: true,
      refreshedAt: null,
      failureCount: 0,
      lastError: null,
      nextAttemptAt: null,
    });
    const held = await stored(userId);
    for (const secret of [tokens.access_token, tokens.refresh_token, held.accessToken, held.refreshToken]) {
      expect(one.text).not.toContain(secret);
    }

    const list = await send('GET', `/v1/sessions/${userId}`);
    expect(list.status).toBe(200);
    expect(list.headers['content-type']).toBe('application/json');
    expect(Object.keys(list.body)).toEqual(['sessions']);
    const sessions = list.body.sessions as Json[];
    expect(sessions.map((s) => s.providerId).sort()).toEqual(['mcp', 'plain']);
    for (const s of sessions) {
      expect(Object.keys(s).sort()).toEqual(META_KEYS);
      expect(s.userId).toBe(userId);
      expect(s).toEqual((await send('GET', `/v1/sessions/${userId}/${s.providerId as string}`)).body);
    }
    expect(list.text).not.toContain(tokens.access_token);
    expect(list.text).not.toContain(tokens.refresh_token);
    expect(list.text).not.toContain(`at-${userId}-plain`);
    expect(list.text).not.toContain(`rt-${userId}-plain`);
  });

  it('an unknown user has an empty list; an unknown session is 404 session_not_found', async () => {
    const empty = await send('GET', `/v1/sessions/${user()}`);
    expect(empty.status).toBe(200);
    expect(empty.body).toEqual({ sessions: [] });
    expectError(await send('GET', `/v1/sessions/${user()}/plain`), 404, 'session_not_found');
    const s = await fakeSession();
    expectError(await send('GET', `/v1/sessions/${s.userId}/mcp`), 404, 'session_not_found');
  });
});

describe('DELETE /v1/sessions/{userId}/{providerId}', () => {
  it('204 with no body; then GET is 404 and DELETE again is 404 session_not_found', async () => {
    const s = await fakeSession();
    const other = await fakeSession(s.userId, 'mcp');
    const path = `/v1/sessions/${s.userId}/plain`;
    const del = await send('DELETE', path);
    expect(del.status).toBe(204);
    expect(del.text).toBe('');
    expect(del.headers['cache-control']).toBe('no-store');
    expectError(await send('GET', path), 404, 'session_not_found');
    expectError(await send('GET', `${path}/token`), 404, 'session_not_found');
    expectError(await rejected('DELETE', path), 404, 'session_not_found');
    const list = await send('GET', `/v1/sessions/${s.userId}`);
    expect((list.body.sessions as Json[]).map((m) => m.providerId)).toEqual([other.providerId]);
  });

  it('revokes the grant at the provider (RFC 7009)', async () => {
    const { userId } = await connect();
    const served = await send('GET', `/v1/sessions/${userId}/mcp/token`);
    const accessToken = served.body.access_token as string;
    expect((await oauth.introspect(accessToken)).active).toBe(true);
    expect((await send('DELETE', `/v1/sessions/${userId}/mcp`)).status).toBe(204);
    expect((await oauth.introspect(accessToken)).active).toBe(false);
    expectError(await send('DELETE', `/v1/sessions/${userId}/mcp`), 404, 'session_not_found');
  });

  it('a never-created session is 404 session_not_found; nothing is written', async () => {
    expectError(await rejected('DELETE', `/v1/sessions/${user()}/plain`), 404, 'session_not_found');
    expectError(await rejected('DELETE', `/v1/sessions/${user()}/ghost`), 404, 'session_not_found');
  });
});

describe('routing and size limits', () => {
  it('unknown routes are 404 not_found', async () => {
    const paths = [
      '/',
      '/v1',
      '/v1/',
      '/v2/health',
      '/V1/health',
      '/v1/health/',
      '/v1/healthz',
      '/v1//',
      '/v1/providers/a/b/c',
      '/v1/providers/a/b',
      '/v1/sweeps/',
      '/v1/sweeps/first',
      '/v1/sessions/a/b/c',
      '/v1/sessions/a/b/refresh/',
      '/v1/sessions/a/b/token/',
      '/v1/sessions/a/b/tokens',
      '/v1/sessions/a/b/c/token',
      '/v1/sessions/a/b/connections',
      '/v1/sessions/a/b/connections/c/d',
      '/oauth/callback',
      '/oauth/callback/a/b',
      '/oauth/client-metadata',
      '/oauth/unknown/a',
      '/v1/unknown',
      '/local/unknown',
    ];
    for (const path of paths) {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const res = await rejected(method, path, {
          body: method === 'PUT' ? { access_token: 'a' } : undefined,
        });
        expectError(res, 404, 'not_found');
      }
    }
  });

  it('wrong methods are 405 method_not_allowed with Allow', async () => {
    const cases: [string, string, string][] = [
      ['POST', '/v1/health', 'GET'],
      ['PUT', '/v1/health', 'GET'],
      ['DELETE', '/v1/health', 'GET'],
      ['POST', '/v1/providers/mcp', 'GET, PUT'],
      ['DELETE', '/v1/providers/mcp', 'GET, PUT'],
      ['PATCH', '/v1/providers/mcp', 'GET, PUT'],
      ['POST', '/v1/sessions/u/plain', 'GET, PUT, DELETE'],
      ['PATCH', '/v1/sessions/u/plain', 'GET, PUT, DELETE'],
      ['OPTIONS', '/v1/sessions/u/plain', 'GET, PUT, DELETE'],
      ['PUT', '/v1/sessions/u', 'GET'],
      ['POST', '/v1/sessions/u', 'GET'],
      ['DELETE', '/v1/sessions/u', 'GET'],
      ['POST', '/v1/sessions/u/plain/token', 'GET'],
      ['PUT', '/v1/sessions/u/plain/token', 'GET'],
      ['DELETE', '/v1/sessions/u/plain/token', 'GET'],
      ['GET', '/local/sweep', 'POST'],
      ['GET', '/v1/sessions/u/plain/connections/c', 'POST'],
      ['PUT', '/v1/sessions/u/plain/connections/c', 'POST'],
      ['POST', '/oauth/callback/plain', 'GET'],
    ];
    for (const [method, path, allow] of cases) {
      const res = await rejected(method, path, { body: { access_token: 'a' } });
      expectError(res, 405, 'method_not_allowed');
      expect(res.headers.allow).toBe(allow);
    }
    const head = await send('HEAD', '/v1/sessions/u/plain/token');
    expect(head.status).toBe(405);
    expect(head.headers.allow).toBe('GET');
  });

  it('bodies over 64 KiB are 413 payload_too_large (bytes, not characters); 64 KiB is accepted', async () => {
    const padded = (bytes: number, fields: Json = { access_token: 'a-0123456789' }) => {
      const json = JSON.stringify(fields);
      return `${json.slice(0, -1)}${' '.repeat(bytes - Buffer.byteLength(json))}}`;
    };
    const s = await fakeSession();
    const path = `/v1/sessions/${s.userId}/plain`;
    for (const body of [
      padded(KIB64 + 1),
      padded(KIB64 + 1, { ...s.tokens, access_token: 'replaced-0123456789' }),
      `{"access_token":"a","scope":"${'€'.repeat(22_000)}"}`,
      padded(2 * 1024 * 1024),
    ]) {
      expect(body.length).toBeLessThan(2 * 1024 * 1024 + 1);
      for (const p of [path, `/v1/sessions/${user()}/plain`]) {
        const res = await rejected('PUT', p, { body });
        expectError(res, 413, 'payload_too_large');
      }
    }
    expectError(
      await rejected('PUT', '/v1/providers/plain', {
        body: padded(KIB64 + 1, { tokenEndpoint: 'https://x.example/t', clientId: 'c' }),
      }),
      413,
      'payload_too_large',
    );
    // Authentication comes first.
    expectError(await rejected('PUT', path, { body: padded(KIB64 + 1), auth: null }), 401, 'unauthorized');

    const exact = padded(KIB64, { access_token: 'exactly-64-kib' });
    expect(Buffer.byteLength(exact)).toBe(KIB64);
    expectMetadata(await send('PUT', path, { body: exact }), 200, { userId: s.userId, providerId: 'plain' });
    expect((await send('GET', `${path}/token`)).body.access_token).toBe('exactly-64-kib');
  });
});

describe('no input gives a 5xx', () => {
  it('survives odd JSON, huge numbers, unicode, __proto__ keys, deep nesting, odd paths and queries', async () => {
    const errorsBefore = keeper.logs.filter((l) => l.level === 'error').length;
    const session = `/v1/sessions/nasty-${++seq}/plain`;
    const provider = '/v1/providers/nasty';
    const deep = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
    const deepObject = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;
    const bodies: unknown[] = [
      '{"__proto__":{"access_token":"x"}}',
      '{"access_token":"a","__proto__":{"refresh_token":"r","isAdmin":true}}',
      '{"access_token":"a","constructor":{"prototype":{"polluted":true}}}',
      '{"access_token":"a","expires_in":1e400}',
      '{"access_token":"a","expires_in":-1e400}',
      '{"access_token":"a","expires_in":9007199254740991}',
      '{"access_token":"a","expires_in":9007199254740993}',
      '{"access_token":"a","expires_in":0}',
      '{"access_token":"a","expires_in":0.5}',
      '{"access_token":"a","expires_in":"99999999999999999999999"}',
      '{"access_token":"a","expires_in":"3600.000000000000000000001"}',
      '{"access_token":"a","expires_at":99999999999}',
      '{"access_token":"a","expires_at":1e-300}',
      '{"access_token":"a","expires_at":5e-324,"refresh_token":null,"expires_in":null}',
      '{"access_token":"\\u0000\\u0001"}',
      '{"access_token":"\\ud800","scope":"\\udfff"}',
      '{"access_token":"😀","scope":"\\u202e\\u200b","token_type":"🙂"}',
      '{"access_token":"a","token_type":"\\u0000"}',
      '{"access_token":"a","access_token":"b"}',
      '{"access_token":{"nested":{"deep":[1,2,{"x":null}]}}}',
      '{"access_token":["a"],"refresh_token":{"a":1}}',
      '{"access_token":"a"} trailing',
      '\uFEFF{"access_token":"a"}',
      '{"access_token":"a"}\u0000',
      'NaN',
      'undefined',
      '-0',
      '1e999',
      '"\\ud800"',
      '{}',
      '{"":""}',
      deep(30_000),
      deepObject(10_000),
      `{"access_token":"a",${Array.from({ length: 3000 }, (_, i) => `"k${i}":${i}`).join(',')}}`,
      Buffer.from([0x7b, 0xff, 0xfe, 0x7d]),
      Buffer.concat([Buffer.from('{"access_token":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]),
      { access_token: 'a', expires_in: Number.MAX_VALUE },
      { access_token: 'a', expires_in: Number.MIN_VALUE },
      { access_token: 'a', scope: 'x'.repeat(16 * 1024) },
      [{ access_token: 'a' }],
    ];
    const providerBodies: unknown[] = [
      '{"__proto__":{"clientId":"x"},"issuer":"https://a.example"}',
      '{"issuer":"https://a.example","clientId":"c","constructor":{}}',
      '{"issuer":"https://a.example","clientId":"c","toString":"x"}',
      { issuer: 'https://[::1]/', clientId: 'c' },
      { issuer: 'https://[::1', clientId: 'c' },
      { issuer: 'http://%zz', clientId: 'c' },
      { issuer: 'https://xn--', clientId: 'c' },
      { issuer: `https://${'a'.repeat(3000)}.example`, clientId: 'c' },
      { tokenEndpoint: 'javascript:alert(1)', clientId: 'c' },
      { tokenEndpoint: 'file:///etc/passwd', clientId: 'c' },
      { tokenEndpoint: 'https://a.example/t', clientId: '\u0000\ud800', resource: 'urn:x' },
      { tokenEndpoint: 'https://a.example/t', clientId: 'c', scope: 'x'.repeat(2000) },
      { tokenEndpoint: 'https://a.example/t', clientId: 'c', clientSecret: 'x'.repeat(5000) },
      { tokenEndpoint: 'https://a.example/t', clientId: 'c', clientAuthMethod: '__proto__' },
      { tokenEndpoint: 'https://a.example/t', clientId: 'c', clientAuthMethod: 'toString' },
      deepObject(5000),
    ];
    const requests: [string, string, unknown?][] = [
      ...bodies.map((b): [string, string, unknown] => ['PUT', session, b]),
      ...providerBodies.map((b): [string, string, unknown] => ['PUT', provider, b]),
      ['PUT', '/v1/providers/__proto__', { tokenEndpoint: 'https://a.example/t', clientId: 'c' }],
      ['GET', '/v1/providers/__proto__'],
      ['GET', '/v1/providers/constructor'],
      ['GET', '/v1/providers/hasOwnProperty'],
      ['PUT', '/v1/sessions/__proto__/plain', { access_token: 'a' }],
      ['PUT', '/v1/sessions/constructor/__proto__', { access_token: 'a' }],
      ['GET', '/v1/sessions/__proto__'],
      ['GET', '/v1/sessions/__proto__/plain/token?__proto__=1'],
      ['GET', '/v1/sessions/toString/valueOf/token?constructor=1&hasOwnProperty=2'],
      ['GET', '/v1/sessions/%2F/%00'],
      ['GET', '/v1/sessions/%2F/%2F'],
      ['GET', '/v1/sessions/%2F/%2F/token'],
      ['GET', '/v1//'],
      ['GET', '/v1///'],
      ['GET', '/v1/sessions//'],
      ['GET', '/v1/sessions///token'],
      ['GET', '/v1/sessions/%'],
      ['GET', '/v1/sessions/%25'],
      ['GET', '/v1/sessions/%E2%82'],
      ['GET', '/v1/sessions/%F4%90%80%80'],
      ['GET', '/v1/sessions/%EF%BF%BF/%EF%BB%BF'],
      ['GET', '/v1/sessions/..'],
      ['GET', '/v1/sessions/../../v1/health'],
      ['GET', '/v1/sessions/a/b/../../../health'],
      ['GET', '/v1/providers/.%2E'],
      ['GET', '//v1/health'],
      ['GET', '///'],
      ['GET', '/v1/health?x=1&x=2'],
      ['GET', '/v1/health#fragment'],
      ['GET', '/v1/sessions/a;b/c'],
      ['GET', `/v1/sessions/${'a'.repeat(8000)}`],
      ['GET', `/v1/sessions/${'%41'.repeat(2000)}/plain`],
      ['GET', '/v1/sessions/a/b/token?minValidity=9999999999999999999999'],
      ['GET', '/v1/sessions/a/b/token?minValidity=1&minValidity=2&minValidity=3'],
      ['GET', '/v1/sessions/a/b/token?force=true&force=true'],
      ['GET', '/v1/sessions/a/b/token?=&&&='],
      ['GET', '/v1/sessions/a/b/token?%ZZ=1&force=%ZZ'],
      ['GET', '/v1/sessions/a/b/token?force=%00'],
      ['GET', '/v1/sessions/a/b/token?minValidity=%F0%9F%98%80'],
      ['GET', '/v1/sessions/a/b/token??force=true'],
      ['GET', `${session}/token?minValidity=86400&force=true`],
      ['GET', `${session}/token`],
      ['GET', `${session}`],
      ['DELETE', `${session}`],
      ['DELETE', `${session}`],
      ['PUT', '/v1/sessions/a/plain', { access_token: 'a' }],
      ['PATCH', '/v1/sessions/a/plain', '{}'],
      ['OPTIONS', '*'],
      ['PROPFIND', '/v1/health'],
      ['POST', '/local/sweep', '{"force":true}'],
    ];
    for (const [method, path, body] of requests) {
      const res = await send(method, path, { body });
      const label = `${method} ${path.slice(0, 80)} ${String(typeof body === 'string' ? body.slice(0, 80) : '')}`;
      expect(res.status, `${label} → ${res.status} ${res.text.slice(0, 200)}`).toBeLessThan(500);
      if (res.status >= 400 && method !== 'HEAD' && res.text !== '') {
        // The keeper's error shape, or the gateway's own refusal of a broken escape.
        const shape = Object.keys(res.body).sort();
        if (shape.length === 1) expect(res.body, label).toEqual({ message: 'Bad Request' });
        else expect(shape, label).toEqual(['error', 'error_description']);
      }
    }
    // The same paths with odd headers.
    const oddHeaders: Record<string, string>[] = [
      { 'content-type': 'text/plain' },
      { 'content-type': 'application/json; charset=latin1' },
      { 'content-encoding': 'gzip' },
      { 'x-forwarded-for': '1.2.3.4, evil' },
      { accept: '*/*', 'accept-encoding': 'br' },
    ];
    for (const headers of oddHeaders) {
      const res = await send('PUT', session, { body: { access_token: 'a' }, headers });
      expect(res.status, JSON.stringify(headers)).toBeLessThan(500);
    }
    expect((await send('GET', '/v1/health', { auth: null })).status).toBe(200);
    const errors = keeper.logs.filter((l) => l.level === 'error').slice(errorsBefore);
    expect(errors.map((e) => e.message)).toEqual([]);
  });
});
