import { ScanCommand } from '@aws-sdk/client-dynamodb';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiHandler } from '../../functions/api/adapter.js';
import { loadConfig } from '../../functions/core/config.js';
import { generateKeyringJson, parseKeyring } from '../../functions/core/crypto/crypto.js';
import { createRuntime } from '../../functions/core/runtime.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

/**
 * Threat: a crafted request crashes the API (a 5xx) or writes something while being refused.
 * fast-check generates bodies, ids and query strings; every answer must be below 500, and every
 * refused write must leave the table exactly as it was.
 */

const API_KEY = 'property-test-api-key-0123456789abcdef';
let db: DynaliteHandle;
let api: ReturnType<typeof createApiHandler>;

function event(
  method: string,
  rawPath: string,
  rawQueryString: string,
  body?: string,
  auth = true,
): APIGatewayProxyEventV2 {
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath,
    rawQueryString,
    headers: auth ? { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' } : {},
    requestContext: {
      accountId: 'local',
      apiId: 'local',
      domainName: 'localhost',
      domainPrefix: 'local',
      http: { method, path: rawPath, protocol: 'HTTP/1.1', sourceIp: '127.0.0.1', userAgent: 'fc' },
      requestId: 'r',
      routeKey: '$default',
      stage: '$default',
      time: '',
      timeEpoch: 0,
    },
    body: body === undefined ? undefined : Buffer.from(body, 'utf8').toString('base64'),
    isBase64Encoded: body !== undefined,
  };
}

async function tableSnapshot(): Promise<string> {
  const { Items } = await db.client.send(new ScanCommand({ TableName: db.tableName, ConsistentRead: true }));
  return JSON.stringify((Items ?? []).map((i) => JSON.stringify(i, Object.keys(i).sort())).sort());
}

beforeAll(async () => {
  db = await startDynalite();
  // One keyring for the whole run, as a deployment has: what one call seals or MACs, the next opens.
  const keyring = parseKeyring(generateKeyringJson());
  const runtime = createRuntime({
    config: loadConfig({ TOKENKEEPER_TABLE_NAME: db.tableName }),
    dynamodb: db.client,
    keyring: async () => keyring,
  });
  api = createApiHandler(runtime, { apiKey: API_KEY });
  // One valid provider and session so that hostile input also meets existing data.
  await runtime.providers.put('known', { tokenEndpoint: 'https://auth.example.com/token', clientId: 'c' });
  await runtime.sessions.put(
    { userId: 'alice', providerId: 'known' },
    { access_token: 'at', expires_in: 3600 },
  );
});

afterAll(async () => {
  await db?.stop();
});

const segment = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.string({ unit: 'grapheme', maxLength: 8 }),
  fc.constantFrom(
    '',
    '%',
    '%zz',
    '%00',
    '%2F',
    '..',
    '.',
    'known',
    'alice',
    '__proto__',
    'constructor',
    'a'.repeat(300),
  ),
);
const path = fc.oneof(
  fc.tuple(segment).map(([a]) => `/v1/providers/${a}`),
  fc.tuple(segment, segment).map(([a, b]) => `/v1/sessions/${a}/${b}`),
  fc.tuple(segment, segment).map(([a, b]) => `/v1/sessions/${a}/${b}/token`),
  fc.tuple(segment).map(([a]) => `/v1/sessions/${a}`),
  fc.array(segment, { maxLength: 5 }).map((parts) => `/${parts.join('/')}`),
);
const jsonValue = fc.jsonValue({ maxDepth: 3 });
const body = fc.oneof(
  fc.constant(undefined),
  fc.string({ maxLength: 40 }),
  jsonValue.map((v) => JSON.stringify(v)),
  fc
    .record(
      {
        access_token: fc.oneof(fc.string(), jsonValue),
        refresh_token: fc.oneof(fc.string(), jsonValue),
        expires_in: fc.oneof(fc.double(), fc.integer(), fc.string(), jsonValue),
        expires_at: fc.oneof(fc.double(), fc.bigInt().map(String), jsonValue),
        issuer: fc.oneof(fc.webUrl(), fc.string()),
        tokenEndpoint: fc.oneof(fc.webUrl(), fc.string()),
        clientId: fc.oneof(fc.string(), jsonValue),
        clientSecret: fc.oneof(fc.string(), jsonValue),
        clientAuthMethod: fc.oneof(
          fc.constantFrom('none', 'client_secret_basic', 'client_secret_post'),
          fc.string(),
        ),
        __proto__: jsonValue,
      },
      { requiredKeys: [] },
    )
    .map((v) => JSON.stringify(v)),
);
const query = fc.oneof(
  fc.constant(''),
  fc.string({ maxLength: 30 }),
  fc
    .record(
      {
        minValidity: fc.oneof(fc.integer(), fc.double().map(String), fc.string()),
        force: fc.string(),
        x: fc.string(),
      },
      { requiredKeys: [] },
    )
    .map((q) => new URLSearchParams(q as Record<string, string>).toString()),
);
const method = fc.constantFrom('GET', 'PUT', 'DELETE', 'POST', 'PATCH', 'HEAD', 'OPTIONS');

describe('hostile input', () => {
  it('no generated request gets a 5xx, and a refused write changes nothing', async () => {
    await fc.assert(
      fc.asyncProperty(method, path, query, body, fc.boolean(), async (m, p, q, b, auth) => {
        const isWrite = m === 'PUT' || m === 'DELETE' || m === 'POST' || m === 'PATCH';
        const before = isWrite ? await tableSnapshot() : '';
        const res = await api(event(m, p, q, b, auth));
        expect(res.statusCode ?? 0).toBeLessThan(500);
        if (isWrite && (res.statusCode ?? 0) >= 400) expect(await tableSnapshot()).toBe(before);
      }),
      { numRuns: 300 },
    );
  });

  it('bodies over 64 KiB are refused with 413 before parsing, nothing written', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 64 * 1024 + 1, max: 200 * 1024 }), async (size) => {
        const before = await tableSnapshot();
        const big = JSON.stringify({ access_token: 'x'.repeat(size) });
        const res = await api(event('PUT', '/v1/sessions/alice/known', '', big));
        expect(res.statusCode).toBe(413);
        expect(await tableSnapshot()).toBe(before);
      }),
      { numRuns: 5 },
    );
  });
});
