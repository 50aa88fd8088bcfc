import { createHash, createHmac } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { TokenKeeperClient } from '../../client/index.js';
import {
  type AwsCredentials,
  createSigV4Signer,
  type RequestToSign,
  regionFromApiUrl,
} from '../../client/sigv4.js';
import { apiGatewayTarget } from '../../functions/local/apigw-path.js';

/**
 * SigV4 as a deployed API (API Gateway, IAM auth) receives it. The client sends real requests to a
 * capturing server; each received request is checked the way API Gateway checks it: the credential
 * scope names the date, region and `execute-api`, the signed headers include host and x-amz-date,
 * and signing the request *as received* (method, raw path, query, the signed headers, body bytes)
 * again with the AWS SDK's own SignatureV4 gives the same signature. No hand-written crypto.
 */

// The example credentials of the AWS Signature Version 4 test suite.
const CREDENTIALS = {
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
};
const TEMPORARY = { ...CREDENTIALS, sessionToken: 'session-token-example' };
const SIGNING_DATE = new Date('2025-01-02T03:04:05Z');
const REGION = 'eu-west-1';

const AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/u;

interface Received {
  method: string;
  rawUrl: string;
  headers: Record<string, string>;
  body: string;
}

let server: Server;
let baseUrl: string;
const received: Received[] = [];

function headersOf(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(',') : value;
  }
  return out;
}

beforeAll(async () => {
  server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    received.push({
      method: req.method ?? '',
      rawUrl: req.url ?? '',
      headers: headersOf(req),
      body: Buffer.concat(chunks).toString('utf8'),
    });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ sessions: [], access_token: 't', token_type: 'Bearer', expires_at: null }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

afterEach(() => {
  received.length = 0;
  vi.unstubAllEnvs();
});

function parseAuthorization(header: string | undefined) {
  const m = AUTHORIZATION.exec(header ?? '');
  if (!m) throw new Error(`not a SigV4 Authorization header: ${header}`);
  const [, accessKeyId, date, region, service, signedHeaders, signature] = m as unknown as string[];
  return {
    accessKeyId,
    date,
    region,
    service,
    signedHeaders: (signedHeaders as string).split(';'),
    signature,
  };
}

/** Signs the request as the server received it, with the library, and returns the Authorization it gets. */
async function resign(r: Received, credentials: AwsCredentials): Promise<string> {
  const { signedHeaders, region, service } = parseAuthorization(r.headers.authorization);
  const [path = '', rawQuery = ''] = r.rawUrl.split('?');
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(rawQuery)) {
    const prev = query[k];
    query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  const headers: Record<string, string> = {};
  for (const name of signedHeaders) headers[name] = r.headers[name] ?? '';
  const amzDate = r.headers['x-amz-date'] ?? '';
  const date = new Date(
    `${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`,
  );
  const host = headers.host ?? '';
  const verifier = new SignatureV4({
    service: service as string,
    region: region as string,
    credentials,
    sha256: Sha256,
    applyChecksum: false,
  });
  const request = new HttpRequest({
    method: r.method,
    protocol: 'https:',
    hostname: host.split(':')[0],
    path,
    query,
    headers,
    body: r.body === '' ? undefined : r.body,
  });
  const signed = await verifier.sign(request, { signingDate: date });
  return signed.headers.authorization as string;
}

function sigv4Client(credentials: AwsCredentials = TEMPORARY) {
  return new TokenKeeperClient({
    baseUrl,
    auth: { kind: 'sigv4', region: REGION, credentials },
    clock: () => SIGNING_DATE.getTime(),
  });
}

describe('the request a deployed API receives', () => {
  it('GET token with a query: scope, signed headers, session token, and a signature that verifies', async () => {
    await sigv4Client().getToken('alice@example.com', 'git hub', { minValidity: 300, force: true });
    const [r] = received as [Received];
    expect(r.rawUrl).toBe('/v1/sessions/alice%40example.com/git%20hub/token?minValidity=300&force=true');
    const auth = parseAuthorization(r.headers.authorization);
    expect(auth).toMatchObject({
      accessKeyId: 'AKIDEXAMPLE',
      date: '20250102',
      region: REGION,
      service: 'execute-api',
    });
    expect(auth.signedHeaders).toEqual(
      expect.arrayContaining(['host', 'x-amz-date', 'x-amz-security-token']),
    );
    expect([...auth.signedHeaders].sort()).toEqual(auth.signedHeaders);
    expect(r.headers['x-amz-date']).toBe('20250102T030405Z');
    expect(r.headers['x-amz-security-token']).toBe('session-token-example');
    expect(r.headers['x-amz-content-sha256']).toBeUndefined();
    expect(await resign(r, TEMPORARY)).toBe(r.headers.authorization);
  });

  it('PUT with a body: content-type is signed and the body bytes are what was signed', async () => {
    await sigv4Client().putSession('bob', 'github', { access_token: 'ä-token', expires_in: 3600 });
    const [r] = received as [Received];
    expect(r.body).toBe('{"access_token":"ä-token","expires_in":3600}');
    const auth = parseAuthorization(r.headers.authorization);
    expect(auth.signedHeaders).toEqual(expect.arrayContaining(['content-type', 'host', 'x-amz-date']));
    expect(await resign(r, TEMPORARY)).toBe(r.headers.authorization);
    // A tampered body no longer verifies.
    expect(await resign({ ...r, body: r.body.replace('3600', '3601') }, TEMPORARY)).not.toBe(
      r.headers.authorization,
    );
  });

  it('a request a caller could not have signed does not verify (wrong secret)', async () => {
    await sigv4Client(CREDENTIALS).listSessions('carol');
    const [r] = received as [Received];
    expect(r.headers['x-amz-security-token']).toBeUndefined();
    expect(await resign(r, CREDENTIALS)).toBe(r.headers.authorization);
    expect(await resign(r, { ...CREDENTIALS, secretAccessKey: 'other' })).not.toBe(r.headers.authorization);
  });

  it('uses the AWS default credential chain when no credentials are given', async () => {
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIDFROMENVIRONMENT');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', 'secret-from-environment');
    vi.stubEnv('AWS_SESSION_TOKEN', 'token-from-environment');
    const client = new TokenKeeperClient({
      baseUrl,
      auth: { kind: 'sigv4', region: REGION },
      clock: () => SIGNING_DATE.getTime(),
    });
    await client.getProvider('github');
    const [r] = received as [Received];
    expect(parseAuthorization(r.headers.authorization).accessKeyId).toBe('AKIDFROMENVIRONMENT');
    expect(r.headers['x-amz-security-token']).toBe('token-from-environment');
    expect(
      await resign(r, {
        accessKeyId: 'AKIDFROMENVIRONMENT',
        secretAccessKey: 'secret-from-environment',
        sessionToken: 'token-from-environment',
      }),
    ).toBe(r.headers.authorization);
  });
});

describe('the signer', () => {
  const sign = createSigV4Signer({ region: REGION, credentials: TEMPORARY });
  const base: RequestToSign = {
    method: 'PUT',
    url: new URL('https://abc123.execute-api.eu-west-1.amazonaws.com/v1/sessions/alice%40example.com/github'),
    headers: { accept: 'application/json', 'content-type': 'application/json' },
    body: '{"access_token":"a","expires_in":3600}',
  };
  const signature = async (r: RequestToSign, date = SIGNING_DATE) =>
    parseAuthorization((await sign(r, date)).authorization).signature;

  it('matches the AWS Signature Version 4 test suite (get-vanilla)', async () => {
    const vanilla = createSigV4Signer({ region: 'us-east-1', service: 'service', credentials: CREDENTIALS });
    const headers = await vanilla(
      { method: 'GET', url: new URL('https://example.amazonaws.com/'), headers: {} },
      new Date('2015-08-30T12:36:00Z'),
    );
    expect(headers.authorization).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, ' +
        'SignedHeaders=host;x-amz-date, ' +
        'Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31',
    );
  });

  it('known answer for execute-api (pinned)', async () => {
    expect(await sign(base, SIGNING_DATE)).toEqual({
      accept: 'application/json',
      'content-type': 'application/json',
      host: 'abc123.execute-api.eu-west-1.amazonaws.com',
      'x-amz-date': '20250102T030405Z',
      'x-amz-security-token': 'session-token-example',
      authorization:
        'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/eu-west-1/execute-api/aws4_request, ' +
        'SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token, ' +
        'Signature=cc0d07359411ff462d70f8262bebf44702dc838583322fa1bbb80faeb48d3f7a',
    });
  });

  it('is deterministic, and changes with the path, the query, the body and the date', async () => {
    const reference = await signature(base);
    expect(await signature(base)).toBe(reference);
    const withUrl = (u: string) => ({ ...base, url: new URL(u) });
    const variants = [
      withUrl('https://abc123.execute-api.eu-west-1.amazonaws.com/v1/sessions/alice%40example.com/gitlab'),
      withUrl(
        'https://abc123.execute-api.eu-west-1.amazonaws.com/v1/sessions/alice%40example.com/github?x=1',
      ),
      { ...base, body: '{"access_token":"b","expires_in":3600}' },
      { ...base, method: 'POST' },
    ];
    for (const v of variants) expect(await signature(v)).not.toBe(reference);
    expect(await signature(base, new Date('2025-01-02T03:04:06Z'))).not.toBe(reference);
  });
});

/**
 * SigV4 worked out from the specification, independently of the SDK (node:crypto only): the
 * canonical request is written out here, so the test pins the canonical URI itself.
 * AWS: "Each path segment must be URI-encoded twice (except for Amazon S3 which only gets
 * URI-encoded once)": the path on the wire is the ids encoded once, and the canonical URI for
 * execute-api is that wire path URI-encoded once more (Smithy's SignatureV4 with uriEscapePath).
 */
function referenceAuthorization(input: {
  method: string;
  canonicalUri: string;
  canonicalQuery: string;
  headers: Record<string, string>;
  payload: string;
  date: Date;
  credentials: AwsCredentials;
}): string {
  const hex = (data: string) => createHash('sha256').update(data, 'utf8').digest('hex');
  const hmac = (key: string | Buffer, data: string) =>
    createHmac('sha256', key).update(data, 'utf8').digest();
  const amzDate = input.date.toISOString().replace(/[-:]|\.\d{3}/gu, '');
  const day = amzDate.slice(0, 8);
  const names = Object.keys(input.headers).sort();
  const canonicalRequest = [
    input.method,
    input.canonicalUri,
    input.canonicalQuery,
    ...names.map((n) => `${n}:${(input.headers[n] as string).trim()}`),
    '',
    names.join(';'),
    hex(input.payload),
  ].join('\n');
  const scope = `${day}/${REGION}/execute-api/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, hex(canonicalRequest)].join('\n');
  let key = hmac(`AWS4${input.credentials.secretAccessKey}`, day);
  for (const part of [REGION, 'execute-api', 'aws4_request']) key = hmac(key, part);
  const signature = createHmac('sha256', key).update(stringToSign, 'utf8').digest('hex');
  return `AWS4-HMAC-SHA256 Credential=${input.credentials.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
}

describe('ids with @ : + space é 😀: the canonical path for execute-api', () => {
  const host = 'abc123.execute-api.eu-west-1.amazonaws.com';
  const cases: [userId: string, providerId: string, wirePath: string, canonicalUri: string][] = [
    [
      'alice@example.com',
      'git hub',
      '/v1/sessions/alice%40example.com/git%20hub/token',
      '/v1/sessions/alice%2540example.com/git%2520hub/token',
    ],
    [
      'a:b+c',
      'mcp:notion',
      '/v1/sessions/a%3Ab%2Bc/mcp%3Anotion/token',
      '/v1/sessions/a%253Ab%252Bc/mcp%253Anotion/token',
    ],
    ['zoë', 'café', '/v1/sessions/zo%C3%AB/caf%C3%A9/token', '/v1/sessions/zo%25C3%25AB/caf%25C3%25A9/token'],
    [
      '😀',
      "it's (x)",
      '/v1/sessions/%F0%9F%98%80/it%27s%20%28x%29/token',
      '/v1/sessions/%25F0%259F%2598%2580/it%2527s%2520%2528x%2529/token',
    ],
  ];

  it.each(cases)('%j / %j', async (userId, providerId, wirePath, canonicalUri) => {
    await sigv4Client().getToken(userId, providerId, { minValidity: 120 });
    const [r] = received as [Received];
    // On the wire: each id encoded once, so API Gateway, which decodes once, routes the ids as given.
    expect(r.rawUrl).toBe(`${wirePath}?minValidity=120`);
    const target = apiGatewayTarget(r.rawUrl);
    expect(target).toEqual({
      ok: true,
      rawPath: `/v1/sessions/${userId}/${providerId}/token`,
      rawQueryString: 'minValidity=120',
    });
    // The signature is over the wire path encoded once more: the canonical URI written out above.
    const sign = createSigV4Signer({ region: REGION, credentials: TEMPORARY });
    const signed = await sign(
      { method: 'GET', url: new URL(`https://${host}${wirePath}?minValidity=120`), headers: {} },
      SIGNING_DATE,
    );
    expect(signed.authorization).toBe(
      referenceAuthorization({
        method: 'GET',
        canonicalUri,
        canonicalQuery: 'minValidity=120',
        headers: {
          host,
          'x-amz-date': '20250102T030405Z',
          'x-amz-security-token': TEMPORARY.sessionToken,
        },
        payload: '',
        date: SIGNING_DATE,
        credentials: TEMPORARY,
      }),
    );
    // Signed with the path encoded only once, the signature would differ: API Gateway would answer 403.
    const once = referenceAuthorization({
      method: 'GET',
      canonicalUri: wirePath,
      canonicalQuery: 'minValidity=120',
      headers: { host, 'x-amz-date': '20250102T030405Z', 'x-amz-security-token': TEMPORARY.sessionToken },
      payload: '',
      date: SIGNING_DATE,
      credentials: TEMPORARY,
    });
    expect(signed.authorization).not.toBe(once);
    // And what the capturing server received verifies with the SDK's signer as well.
    expect(await resign(r, TEMPORARY)).toBe(r.headers.authorization);
  });

  it('the reference reproduces the pinned execute-api known answer above', () => {
    const auth = referenceAuthorization({
      method: 'PUT',
      canonicalUri: '/v1/sessions/alice%2540example.com/github',
      canonicalQuery: '',
      headers: {
        accept: 'application/json',
        'content-type': 'application/json',
        host,
        'x-amz-date': '20250102T030405Z',
        'x-amz-security-token': TEMPORARY.sessionToken,
      },
      payload: '{"access_token":"a","expires_in":3600}',
      date: SIGNING_DATE,
      credentials: TEMPORARY,
    });
    expect(auth).toContain('Signature=cc0d07359411ff462d70f8262bebf44702dc838583322fa1bbb80faeb48d3f7a');
  });
});

describe('regionFromApiUrl', () => {
  it.each([
    ['https://abc123.execute-api.eu-west-1.amazonaws.com', 'eu-west-1'],
    ['https://abc123.execute-api.us-gov-west-1.amazonaws.com/prod', 'us-gov-west-1'],
    ['https://abc123.execute-api.cn-north-1.amazonaws.com.cn', 'cn-north-1'],
    ['https://tokens.example.com', undefined],
    ['not a url', undefined],
  ])('%s → %s', (url, region) => {
    expect(regionFromApiUrl(url)).toBe(region);
  });
});
