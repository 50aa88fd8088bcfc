import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { type ApiRequest, createApp } from '../../functions/api/app.js';
import { toApiRequest, toLambdaResult } from '../../functions/api/http.js';
import {
  parseId,
  parseJsonBody,
  parseProviderBody,
  parseSessionBody,
  parseTokenQuery,
} from '../../functions/api/validation.js';
import {
  InvalidRequestError,
  KeyUnavailableError,
  ProviderNotFoundError,
  ReauthorizationRequiredError,
  RefreshUnavailableError,
  SessionNotFoundError,
} from '../../functions/core/errors.js';
import type { Logger, Metrics } from '../../functions/core/ports.js';
import type { ProviderService, SessionService, TokenService } from '../../functions/core/services.js';

/** Runs `fn`, expects an InvalidRequestError, and returns its description. */
function invalid(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidRequestError);
    return (err as Error).message;
  }
  throw new Error('expected an InvalidRequestError');
}

describe('parseId', () => {
  it('accepts ordinary ids, including @ : + space and non-ASCII', () => {
    expect(parseId('userId', 'alice@example.com')).toBe('alice@example.com');
    expect(parseId('providerId', 'github:enterprise+1 é 😀')).toBe('github:enterprise+1 é 😀');
    expect(parseId('userId', 'ü'.repeat(256))).toBe('ü'.repeat(256));
    expect(parseId('userId', '...')).toBe('...');
  });

  it.each(['a/b', 'who?x', 'a#b', '100%', '%41', 'a\\b'])(
    'rejects %j: / ? # % \\ cannot be sent as they are',
    (id) => {
      expect(invalid(() => parseId('providerId', id))).toBe('providerId: must not contain / ? # % \\');
    },
  );

  it.each(['.', '..'])('rejects the dot segment %j', (id) => {
    expect(invalid(() => parseId('userId', id))).toBe('userId: must not be "." or ".."');
  });

  it('rejects an empty id, naming it', () => {
    expect(invalid(() => parseId('userId', ''))).toBe('userId: must not be empty');
  });

  it('rejects ids over 256 characters', () => {
    expect(invalid(() => parseId('providerId', 'a'.repeat(257)))).toBe(
      'providerId: must be at most 256 characters',
    );
  });

  it('counts characters, not UTF-16 units', () => {
    expect(parseId('userId', '😀'.repeat(256))).toHaveLength(512);
  });

  it.each(['a\u0000b', 'a\nb', '\u001f', 'a\u007fb', 'x\u0085', '\u009f'])(
    'rejects control characters %j',
    (id) => {
      expect(invalid(() => parseId('userId', id))).toBe('userId: must not contain control characters');
    },
  );

  it('accepts the characters right outside the control ranges', () => {
    expect(parseId('userId', ' ~\u00a0')).toBe(' ~\u00a0');
  });

  it('rejects lone surrogates', () => {
    expect(invalid(() => parseId('userId', 'a\ud800'))).toBe('userId: must be valid Unicode');
    expect(invalid(() => parseId('userId', '\udc00a'))).toBe('userId: must be valid Unicode');
  });
});

describe('parseProviderBody: refusals of insecure URLs', () => {
  const body = { tokenEndpoint: 'http://auth.example.com/token', clientId: 'c' };
  it('names the variable that allows them where it may be set (the local stack)', () => {
    expect(invalid(() => parseProviderBody(body, { allowInsecureHttp: false, insecureHttpHint: true }))).toBe(
      'tokenEndpoint: must be an https URL (TOKENKEEPER_ALLOW_INSECURE_HTTP=1 allows it on the local stack, for development and tests)',
    );
    const loopback = { ...body, tokenEndpoint: 'https://127.0.0.1/token' };
    expect(
      invalid(() => parseProviderBody(loopback, { allowInsecureHttp: false, insecureHttpHint: true })),
    ).toContain('TOKENKEEPER_ALLOW_INSECURE_HTTP=1');
  });

  it('does not name it in Lambda (refused there), nor for problems it would not lift', () => {
    expect(invalid(() => parseProviderBody(body, { allowInsecureHttp: false }))).toBe(
      'tokenEndpoint: must be an https URL',
    );
    const ftp = { ...body, tokenEndpoint: 'ftp://auth.example.com/token' };
    expect(
      invalid(() => parseProviderBody(ftp, { allowInsecureHttp: false, insecureHttpHint: true })),
    ).not.toContain('TOKENKEEPER_ALLOW_INSECURE_HTTP');
  });
});

describe('parseJsonBody', () => {
  it('parses a JSON object', () => {
    expect(parseJsonBody('{"a":1}')).toEqual({ a: 1 });
  });

  it('rejects malformed JSON', () => {
    expect(invalid(() => parseJsonBody('{"a":'))).toBe('malformed JSON body');
  });

  it.each(['[]', 'null', '1', '"x"', 'true'])('rejects a non-object body %s', (text) => {
    expect(invalid(() => parseJsonBody(text))).toBe('body: must be a JSON object');
  });

  it('requires a body', () => {
    expect(invalid(() => parseJsonBody(undefined))).toBe('request body is required');
    expect(invalid(() => parseJsonBody('  '))).toBe('request body is required');
  });
});

describe('parseProviderBody', () => {
  const base = { tokenEndpoint: 'https://as.example.com/token', clientId: 'client' };

  it('accepts a public client and defaults clientAuthMethod to none', () => {
    expect(parseProviderBody(base)).toEqual({ ...base, clientAuthMethod: 'none' });
  });

  it('defaults clientAuthMethod to client_secret_basic with a secret or an ARN', () => {
    expect(parseProviderBody({ ...base, clientSecret: 's' }).clientAuthMethod).toBe('client_secret_basic');
    const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tokenkeeper/github-AbCdEf';
    expect(parseProviderBody({ ...base, clientSecretArn: arn })).toEqual({
      ...base,
      clientSecretArn: arn,
      clientAuthMethod: 'client_secret_basic',
    });
  });

  it('refuses http and non-public provider URLs unless insecure HTTP is allowed', () => {
    const body = { tokenEndpoint: 'http://127.0.0.1:4000/token', clientId: 'c' };
    expect(() => parseProviderBody(body)).toThrow(/tokenEndpoint: must be an https URL/);
    expect(() => parseProviderBody({ ...body, tokenEndpoint: 'https://169.254.169.254/token' })).toThrow(
      /tokenEndpoint: must not point to a non-public destination/,
    );
    expect(() => parseProviderBody({ issuer: 'https://localhost/', clientId: 'c' })).toThrow(/issuer:/);
    expect(parseProviderBody(body, { allowInsecureHttp: true }).tokenEndpoint).toBe(body.tokenEndpoint);
  });

  it('accepts a full configuration', () => {
    const full = {
      issuer: 'https://as.example.com',
      tokenEndpoint: 'https://as.example.com/token',
      revocationEndpoint: 'https://as.example.com/revoke',
      clientId: 'c',
      clientSecret: 's',
      clientAuthMethod: 'client_secret_post',
      resource: 'https://mcp.example.com/mcp',
      scope: 'openid offline_access',
    };
    expect(parseProviderBody(full)).toEqual(full);
  });

  it('requires issuer or tokenEndpoint', () => {
    expect(invalid(() => parseProviderBody({ clientId: 'c' }))).toBe(
      'issuer, tokenEndpoint: at least one is required',
    );
    expect(parseProviderBody({ issuer: 'https://as.example.com', clientId: 'c' }).issuer).toBe(
      'https://as.example.com',
    );
  });

  it.each([
    ['issuer', 'not a url', 'must not contain whitespace or control characters'],
    ['issuer', '/relative/path', 'must be an absolute URL'],
    ['tokenEndpoint', 'ftp://as.example.com/token', 'must be an http(s) URL'],
    ['tokenEndpoint', 'https://as.example.com/token#frag', 'must not contain a fragment'],
    ['tokenEndpoint', 'https://as.example.com/token#', 'must not contain a fragment'],
    ['revocationEndpoint', 'https://user:pw@as.example.com/revoke', 'must not contain credentials'],
    ['revocationEndpoint', 'https://@as.example.com/revoke', 'must not contain credentials'],
    ['tokenEndpoint', ' https://as.example.com/token', 'must not contain whitespace or control characters'],
    ['tokenEndpoint', `https://as.example.com/${'a'.repeat(2048)}`, 'must be at most 2048 characters'],
    ['tokenEndpoint', 42, 'must be a string'],
    ['resource', 'https://mcp.example.com/#x', 'must not contain a fragment'],
    ['resource', 'mcp', 'must be an absolute URL'],
  ])('rejects %s = %j', (field, value, message) => {
    expect(invalid(() => parseProviderBody({ ...base, [field]: value }))).toBe(`${field}: ${message}`);
  });

  it('accepts a non-http absolute URI as resource (RFC 8707)', () => {
    expect(parseProviderBody({ ...base, resource: 'urn:example:api' }).resource).toBe('urn:example:api');
  });

  it('validates clientId', () => {
    expect(invalid(() => parseProviderBody({ tokenEndpoint: base.tokenEndpoint }))).toBe(
      'clientId: is required',
    );
    expect(invalid(() => parseProviderBody({ ...base, clientId: '' }))).toBe(
      'clientId: must be a non-empty string',
    );
    expect(invalid(() => parseProviderBody({ ...base, clientId: 7 }))).toBe(
      'clientId: must be a non-empty string',
    );
    expect(parseProviderBody({ ...base, clientId: 'c'.repeat(1024) }).clientId).toHaveLength(1024);
    expect(invalid(() => parseProviderBody({ ...base, clientId: 'c'.repeat(1025) }))).toBe(
      'clientId: must be at most 1024 characters',
    );
  });

  it('validates clientSecret length and never echoes it', () => {
    expect(parseProviderBody({ ...base, clientSecret: 's'.repeat(4096) }).clientSecret).toHaveLength(4096);
    const message = invalid(() =>
      parseProviderBody({ ...base, clientSecret: `TOPSECRET${'s'.repeat(4096)}` }),
    );
    expect(message).toBe('clientSecret: must be at most 4096 characters');
    expect(invalid(() => parseProviderBody({ ...base, clientSecret: '' }))).toBe(
      'clientSecret: must be a non-empty string',
    );
  });

  it.each([
    'arn:aws:s3:::bucket',
    'arn:aws:secretsmanager:eu-west-1:123456789012:parameter:x',
    'arn:aws:secretsmanager:eu-west-1:1234:secret:x',
    'secret-name',
  ])('rejects clientSecretArn %j', (arn) => {
    expect(invalid(() => parseProviderBody({ ...base, clientSecretArn: arn }))).toMatch(
      /^clientSecretArn: must be a Secrets Manager secret ARN/,
    );
  });

  it('accepts ARNs in other partitions', () => {
    const arn = 'arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:x';
    expect(parseProviderBody({ ...base, clientSecretArn: arn }).clientSecretArn).toBe(arn);
  });

  it('rejects clientSecret together with clientSecretArn', () => {
    const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:x';
    expect(invalid(() => parseProviderBody({ ...base, clientSecret: 's', clientSecretArn: arn }))).toBe(
      'clientSecretArn: must not be given together with clientSecret',
    );
  });

  it('rejects an unknown clientAuthMethod', () => {
    expect(invalid(() => parseProviderBody({ ...base, clientAuthMethod: 'private_key_jwt' }))).toBe(
      'clientAuthMethod: must be one of client_secret_basic, client_secret_post, none',
    );
  });

  it('rejects a secret-based method without a secret', () => {
    expect(invalid(() => parseProviderBody({ ...base, clientAuthMethod: 'client_secret_post' }))).toBe(
      'clientAuthMethod: client_secret_post requires clientSecret or clientSecretArn',
    );
  });

  it('rejects none with a secret', () => {
    expect(invalid(() => parseProviderBody({ ...base, clientAuthMethod: 'none', clientSecret: 's' }))).toBe(
      'clientAuthMethod: none must not be combined with clientSecret or clientSecretArn',
    );
  });

  it('validates scope', () => {
    expect(invalid(() => parseProviderBody({ ...base, scope: 'x'.repeat(1025) }))).toBe(
      'scope: must be at most 1024 characters',
    );
    expect(invalid(() => parseProviderBody({ ...base, scope: ['a'] }))).toBe('scope: must be a string');
  });

  it('rejects unknown fields, naming them', () => {
    expect(invalid(() => parseProviderBody({ ...base, clientSecert: 's' }))).toBe(
      'unknown field "clientSecert"',
    );
    expect(invalid(() => parseProviderBody({ ...base, a: 1, b: 2 }))).toBe('unknown fields "a", "b"');
    expect(
      invalid(() => parseProviderBody(JSON.parse('{"__proto__":{},"clientId":"c","issuer":"https://a"}'))),
    ).toBe('unknown field "__proto__"');
  });

  it('rejects null for an optional field', () => {
    expect(invalid(() => parseProviderBody({ ...base, issuer: null }))).toBe('issuer: must be a string');
  });

  it('rejects a non-object', () => {
    expect(invalid(() => parseProviderBody([]))).toBe('body: must be a JSON object');
  });
});

describe('parseSessionBody', () => {
  it('accepts a minimal response and defaults token_type', () => {
    expect(parseSessionBody({ access_token: 'at' })).toEqual({ access_token: 'at', token_type: 'Bearer' });
  });

  it('keeps the known fields and drops every other one', () => {
    const parsed = parseSessionBody({
      access_token: 'at',
      refresh_token: 'rt',
      expires_in: 3600,
      token_type: 'bearer',
      scope: 'a b',
      id_token: 'eyJ...',
      refresh_expires_in: 1800,
      'not-before-policy': 0,
    });
    expect(parsed).toEqual({
      access_token: 'at',
      refresh_token: 'rt',
      expires_in: 3600,
      refresh_expires_in: 1800,
      token_type: 'bearer',
      scope: 'a b',
    });
  });

  it('reads the refresh token lifetime from refresh_expires_in (Keycloak) or refresh_token_expires_in (GitHub)', () => {
    expect(parseSessionBody({ access_token: 'a', refresh_token_expires_in: '15897600' })).toMatchObject({
      refresh_expires_in: 15_897_600,
    });
    expect(parseSessionBody({ access_token: 'a', refresh_expires_in: 0 })).toMatchObject({
      refresh_expires_in: 0,
    });
    expect(invalid(() => parseSessionBody({ access_token: 'a', refresh_expires_in: 'soon' }))).toBe(
      'refresh_expires_in: must be a non-negative number',
    );
  });

  it('requires a non-empty access_token', () => {
    expect(invalid(() => parseSessionBody({}))).toBe('access_token: is required');
    expect(invalid(() => parseSessionBody({ access_token: '' }))).toBe(
      'access_token: must be a non-empty string',
    );
    expect(invalid(() => parseSessionBody({ access_token: 1 }))).toBe(
      'access_token: must be a non-empty string',
    );
  });

  it('limits tokens to 32 KiB of UTF-8', () => {
    expect(parseSessionBody({ access_token: 'a'.repeat(32768) }).access_token).toHaveLength(32768);
    expect(invalid(() => parseSessionBody({ access_token: 'a'.repeat(32769) }))).toBe(
      'access_token: must be at most 32768 bytes',
    );
    expect(invalid(() => parseSessionBody({ access_token: 'é'.repeat(16385) }))).toBe(
      'access_token: must be at most 32768 bytes',
    );
    expect(invalid(() => parseSessionBody({ access_token: 'a', refresh_token: 'r'.repeat(32769) }))).toBe(
      'refresh_token: must be at most 32768 bytes',
    );
  });

  it('validates refresh_token', () => {
    expect(invalid(() => parseSessionBody({ access_token: 'a', refresh_token: '' }))).toBe(
      'refresh_token: must be a non-empty string',
    );
    expect(invalid(() => parseSessionBody({ access_token: 'a', refresh_token: 5 }))).toBe(
      'refresh_token: must be a non-empty string',
    );
  });

  it('treats null optional fields as absent', () => {
    expect(
      parseSessionBody({
        access_token: 'a',
        refresh_token: null,
        expires_in: null,
        scope: null,
        token_type: null,
      }),
    ).toEqual({ access_token: 'a', token_type: 'Bearer' });
  });

  it.each([
    [0, 0],
    [3600, 3600],
    ['3600', 3600],
    ['59.5', 59.5],
  ])('accepts expires_in %j', (value, expected) => {
    expect(parseSessionBody({ access_token: 'a', expires_in: value }).expires_in).toBe(expected);
  });

  it.each([-1, '-1', 'abc', '', ' 3600', '1e3', '0x10', true, {}, Number.MAX_SAFE_INTEGER * 4])(
    'rejects expires_in %j',
    (value) => {
      expect(invalid(() => parseSessionBody({ access_token: 'a', expires_in: value }))).toMatch(
        /^expires_in: /,
      );
    },
  );

  it('names the expires_in rule', () => {
    expect(invalid(() => parseSessionBody({ access_token: 'a', expires_in: -5 }))).toBe(
      'expires_in: must be a non-negative number',
    );
    expect(invalid(() => parseSessionBody({ access_token: 'a', expires_in: 'soon' }))).toBe(
      'expires_in: must be a non-negative number',
    );
  });

  it('rejects a NaN that got past JSON (non-finite numbers)', () => {
    expect(invalid(() => parseSessionBody({ access_token: 'a', expires_in: Number.NaN }))).toBe(
      'expires_in: must be a non-negative number',
    );
    expect(invalid(() => parseSessionBody({ access_token: 'a', expires_in: Number.POSITIVE_INFINITY }))).toBe(
      'expires_in: must be a non-negative number',
    );
  });

  it.each([
    [1_700_000_000, 1_700_000_000],
    ['1700000000', 1_700_000_000],
  ])('accepts expires_at %j', (value, expected) => {
    expect(parseSessionBody({ access_token: 'a', expires_at: value }).expires_at).toBe(expected);
  });

  it.each([0, -1, '0', 'tomorrow'])('rejects expires_at %j', (value) => {
    expect(invalid(() => parseSessionBody({ access_token: 'a', expires_at: value }))).toBe(
      'expires_at: must be positive epoch seconds',
    );
  });

  it('rejects expires_at given in milliseconds', () => {
    expect(invalid(() => parseSessionBody({ access_token: 'a', expires_at: 1_700_000_000_000 }))).toBe(
      'expires_at: must be epoch seconds, not milliseconds',
    );
  });

  it('validates token_type and scope', () => {
    expect(invalid(() => parseSessionBody({ access_token: 'a', token_type: '' }))).toBe(
      'token_type: must be a non-empty string',
    );
    expect(invalid(() => parseSessionBody({ access_token: 'a', token_type: 1 }))).toBe(
      'token_type: must be a non-empty string',
    );
    expect(invalid(() => parseSessionBody({ access_token: 'a', scope: 1 }))).toBe('scope: must be a string');
  });

  it('never echoes token values in errors', () => {
    const message = invalid(() => parseSessionBody({ access_token: 'SECRET-AT', expires_in: 'SECRET-EXP' }));
    expect(message).not.toContain('SECRET');
  });

  it('rejects a non-object', () => {
    expect(invalid(() => parseSessionBody('at'))).toBe('body: must be a JSON object');
  });
});

describe('parseTokenQuery', () => {
  it('defaults to minValidity 60, force false', () => {
    expect(parseTokenQuery({})).toEqual({ minValidity: 60, force: false });
  });

  it('parses both parameters', () => {
    expect(parseTokenQuery({ minValidity: '0', force: 'true' })).toEqual({ minValidity: 0, force: true });
    expect(parseTokenQuery({ minValidity: '86400', force: 'false' })).toEqual({
      minValidity: 86400,
      force: false,
    });
  });

  it.each(['86401', '-1', '1.5', '', 'abc', '60,30', '1e3', '9999999'])('rejects minValidity %j', (value) => {
    expect(invalid(() => parseTokenQuery({ minValidity: value }))).toBe(
      'minValidity: must be an integer from 0 to 86400',
    );
  });

  it.each(['1', 'TRUE', 'yes', '', 'true,true'])('rejects force %j', (value) => {
    expect(invalid(() => parseTokenQuery({ force: value }))).toBe('force: must be true or false');
  });

  it('takes rejected: 16 lower-case hex characters', () => {
    expect(parseTokenQuery({ force: 'true', rejected: '0123456789abcdef' })).toEqual({
      minValidity: 60,
      force: true,
      rejected: '0123456789abcdef',
    });
  });

  it.each(['0123456789ABCDEF', '0123456789abcde', '0123456789abcdef0', 'zzzzzzzzzzzzzzzz', ''])(
    'rejects rejected=%j',
    (value) => {
      expect(invalid(() => parseTokenQuery({ rejected: value }))).toMatch(
        /^rejected: must be 16 lower-case hex/,
      );
    },
  );

  it('rejects unknown query parameters', () => {
    expect(invalid(() => parseTokenQuery({ min_validity: '30' }))).toBe(
      'unknown query parameter "min_validity"',
    );
  });
});

describe('toApiRequest / toLambdaResult', () => {
  function event(overrides: Partial<APIGatewayProxyEventV2> = {}): APIGatewayProxyEventV2 {
    return {
      version: '2.0',
      routeKey: '$default',
      rawPath: '/v1/sessions/a%2Fb/github/token',
      rawQueryString: 'minValidity=120&force=true',
      headers: { 'Content-Type': 'application/json', authorization: 'Bearer k' },
      queryStringParameters: { minValidity: '120', force: 'true' },
      requestContext: {
        accountId: '123456789012',
        apiId: 'api',
        domainName: 'api.example.com',
        domainPrefix: 'api',
        http: {
          method: 'GET',
          path: '/v1/sessions/a/b/github/token',
          protocol: 'HTTP/1.1',
          sourceIp: '127.0.0.1',
          userAgent: 't',
        },
        requestId: 'r',
        routeKey: '$default',
        stage: '$default',
        time: '',
        timeEpoch: 0,
      },
      isBase64Encoded: false,
      ...overrides,
    };
  }

  it('maps method, raw path, query and lower-cased headers', () => {
    expect(toApiRequest(event())).toEqual({
      method: 'GET',
      path: '/v1/sessions/a%2Fb/github/token',
      query: { minValidity: '120', force: 'true' },
      headers: { 'content-type': 'application/json', authorization: 'Bearer k' },
    });
  });

  it('parses rawQueryString, joining repeated keys so validation rejects them', () => {
    const req = toApiRequest(event({ rawQueryString: 'minValidity=60&minValidity=30&x=a%20b+c' }));
    expect(req.query).toEqual({ minValidity: '60,30', x: 'a b c' });
    expect(() => parseTokenQuery(req.query)).toThrow(InvalidRequestError);
  });

  it('handles an absent query string and absent headers', () => {
    const req = toApiRequest(event({ rawQueryString: '', headers: {} }));
    expect(req.query).toEqual({});
    expect(req.headers).toEqual({});
  });

  it('passes a text body through and decodes a base64 body as UTF-8', () => {
    expect(toApiRequest(event({ body: '{"a":"é"}' })).body).toBe('{"a":"é"}');
    const b64 = Buffer.from('{"a":"é"}', 'utf8').toString('base64');
    expect(toApiRequest(event({ body: b64, isBase64Encoded: true })).body).toBe('{"a":"é"}');
    expect(toApiRequest(event()).body).toBeUndefined();
  });

  it('builds a Lambda result, with no body for 204', () => {
    expect(
      toLambdaResult({ status: 200, headers: { 'content-type': 'application/json' }, body: '{}' }),
    ).toEqual({
      statusCode: 200,
      headers: { 'content-type': 'application/json' },
      body: '{}',
      isBase64Encoded: false,
    });
    expect(toLambdaResult({ status: 204, headers: {} })).toEqual({
      statusCode: 204,
      headers: {},
      isBase64Encoded: false,
    });
  });
});

describe('router rejections (services must not be called)', () => {
  const untouchable = new Proxy(
    {},
    {
      get: (_target, prop) => () => {
        throw new Error(`service called: ${String(prop)}`);
      },
    },
  );
  const logged: string[] = [];
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    warn: () => {},
    error: (message) => logged.push(message),
  };
  const metrics: Metrics = { add: () => {} };
  const app = createApp({
    providers: untouchable as ProviderService,
    sessions: untouchable as SessionService,
    tokens: untouchable as TokenService,
    logger,
    metrics,
    clock: { now: () => 0 },
    apiKey: 'the-key',
  });
  const auth = { authorization: 'Bearer the-key' };
  const req = (r: Partial<ApiRequest>): ApiRequest => ({
    method: 'GET',
    path: '/',
    query: {},
    headers: auth,
    ...r,
  });
  const errorOf = (body: string | undefined) => JSON.parse(body ?? '{}').error;

  it('serves health without authentication', async () => {
    const res = await app(req({ path: '/v1/health', headers: {} }));
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body ?? '')).toEqual({ status: 'ok' });
    expect(res.headers['content-type']).toBe('application/json');
  });

  it.each([
    '/',
    '/v1',
    '/v2/health',
    '/v1/providers/a/b',
    '/v1/sessions/u/p/refresh/x',
    '/v1/sessions/u/p/tokens',
    '/v1/sessions/u/p/token/x',
  ])('404 for %s', async (path) => {
    const res = await app(req({ path }));
    expect(res.status).toBe(404);
    expect(errorOf(res.body)).toBe('not_found');
  });

  it('405 with Allow for a known route and wrong method', async () => {
    const res = await app(req({ method: 'POST', path: '/v1/sessions/u/p' }));
    expect(res.status).toBe(405);
    expect(errorOf(res.body)).toBe('method_not_allowed');
    expect(res.headers.allow).toBe('GET, PUT, DELETE');
    expect((await app(req({ method: 'DELETE', path: '/v1/health' }))).headers.allow).toBe('GET');
  });

  it.each([undefined, 'Bearer wrong', 'Bearer the-key-2', 'Basic the-key', 'the-key', 'Bearer '])(
    '401 for authorization %j',
    async (authorization) => {
      const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
      const res = await app(req({ method: 'PUT', path: '/v1/providers/p', headers, body: 'not json' }));
      expect(res.status).toBe(401);
      expect(errorOf(res.body)).toBe('unauthorized');
      expect(res.headers['www-authenticate']).toBe('Bearer');
    },
  );

  it('413 for a body over 64 KiB of UTF-8, before parsing', async () => {
    const res = await app(req({ method: 'PUT', path: '/v1/providers/p', body: 'é'.repeat(32769) }));
    expect(res.status).toBe(413);
    expect(errorOf(res.body)).toBe('payload_too_large');
  });

  it('400 for a bad percent-escape, invalid body or query', async () => {
    const cases: Partial<ApiRequest>[] = [
      { path: '/v1/providers/%E0%A4%A' },
      { path: '/v1/sessions/%00/p' },
      { method: 'PUT', path: '/v1/providers/p' },
      { method: 'PUT', path: '/v1/providers/p', body: '{' },
      { method: 'PUT', path: '/v1/sessions/u/p', body: '{"access_token":""}' },
      { path: '/v1/sessions/u/p/token', query: { minValidity: '-1' } },
    ];
    for (const c of cases) {
      const res = await app(req(c));
      expect(res.status, JSON.stringify(c)).toBe(400);
      expect(errorOf(res.body)).toBe('invalid_request');
    }
  });

  it('a service error becomes a generic 500 and is logged without the request', async () => {
    const res = await app(req({ path: '/v1/providers/p' }));
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body ?? '')).toEqual({
      error: 'internal_error',
      error_description: 'an internal error occurred',
    });
    expect(logged).toEqual(['unhandled error']);
  });

  it('refuses an empty apiKey', () => {
    const deps = {
      providers: untouchable as ProviderService,
      sessions: untouchable as SessionService,
      tokens: untouchable as TokenService,
      logger,
      metrics,
      clock: { now: () => 0 },
    };
    expect(() => createApp({ ...deps, apiKey: '' })).toThrow();
    expect(() => createApp(deps)).not.toThrow();
  });
});

describe('error mapping (services that only throw)', () => {
  const cases: [Error, number, string, Record<string, string>][] = [
    [new InvalidRequestError('minValidity: too long for this token'), 400, 'invalid_request', {}],
    [new ProviderNotFoundError('p'), 404, 'provider_not_found', {}],
    [new SessionNotFoundError(), 404, 'session_not_found', {}],
    [new ReauthorizationRequiredError('the grant was revoked'), 409, 'reauthorization_required', {}],
    [
      new RefreshUnavailableError('provider is down', 12.2),
      503,
      'refresh_unavailable',
      { 'retry-after': '13' },
    ],
    [new KeyUnavailableError('key k1 missing'), 503, 'key_unavailable', { 'retry-after': '60' }],
    [new TypeError('boom'), 500, 'internal_error', {}],
  ];

  it.each(cases)('%s → %i %s', async (thrown, status, code, headers) => {
    const errors: Record<string, unknown>[] = [];
    const tokens: TokenService = {
      getToken: async () => {
        throw thrown;
      },
    };
    const app = createApp({
      providers: {} as ProviderService,
      sessions: {} as SessionService,
      tokens,
      logger: {
        debug: () => {},
        info: () => {},
        warn: () => {},
        error: (_m, extra) => errors.push(extra ?? {}),
      },
      metrics: {
        add: () => {
          throw new Error('no metric on failure');
        },
      },
      clock: { now: () => 0 },
    });
    const res = await app({
      method: 'GET',
      path: '/v1/sessions/u/p/token',
      query: { force: 'true' },
      headers: { authorization: 'Bearer SECRET' },
    });
    expect(res.status).toBe(status);
    expect(JSON.parse(res.body ?? '').error).toBe(code);
    expect(res.headers).toMatchObject({ 'content-type': 'application/json', ...headers });
    expect(JSON.stringify(errors)).not.toContain('SECRET');
    if (status === 500)
      expect(errors).toEqual([expect.objectContaining({ errorName: 'TypeError', errorMessage: 'boom' })]);
  });

  it('an unexpected error that quotes a token is logged with the token scrubbed', async () => {
    const token = 'eyJhbGciOiJSUzI1NiJ9.leaked-access-token-value.sig';
    const errors: Record<string, unknown>[] = [];
    const app = createApp({
      providers: {} as ProviderService,
      sessions: {} as SessionService,
      tokens: {
        getToken: async () => {
          throw new Error(`cannot marshal ${token}`);
        },
      },
      logger: {
        debug: () => {},
        info: () => {},
        warn: () => {},
        error: (_m, extra) => errors.push(extra ?? {}),
      },
      metrics: { add: () => {} },
      clock: { now: () => 0 },
    });
    const res = await app({ method: 'GET', path: '/v1/sessions/u/p/token', query: {}, headers: {} });
    expect(res.status).toBe(500);
    expect(JSON.stringify(errors)).not.toContain(token);
    expect(errors).toEqual([expect.objectContaining({ errorMessage: 'cannot marshal [redacted]' })]);
  });
});
