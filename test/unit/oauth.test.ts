import { describe, expect, it } from 'vitest';
import type { ProviderConfig } from '../../functions/core/model.js';
import {
  type GrantFailure,
  type GrantResult,
  OAuthClient,
  type OAuthClientOptions,
  parseRetryAfter,
  scrubDescription,
} from '../../functions/core/oauth/client.js';
import type { FetchLike, Logger } from '../../functions/core/ports.js';

const ISSUER = 'https://as.example.com';
const TOKEN_ENDPOINT = 'https://as.example.com/oauth/token';
const REVOCATION_ENDPOINT = 'https://as.example.com/oauth/revoke';
const REFRESH_TOKEN = 'rt-opaque-0001';
const T0 = Date.UTC(2025, 0, 15, 12, 0, 0);

/** One request as the provider would see it. */
interface Recorded {
  url: string;
  method: string;
  headers: Headers;
  body?: URLSearchParams;
}

type Responder = (request: Recorded, init: RequestInit) => Response | Promise<Response>;

/** A fetch that records every request and answers with `respond`. */
function recordingFetch(respond: Responder): { fetch: FetchLike; requests: Recorded[] } {
  const requests: Recorded[] = [];
  const fetch: FetchLike = async (input, init = {}) => {
    const request: Recorded = {
      url: String(input),
      method: init.method ?? 'GET',
      headers: new Headers(init.headers),
      body: init.body == null ? undefined : new URLSearchParams(init.body as URLSearchParams),
    };
    requests.push(request);
    return respond(request, init);
  };
  return { fetch, requests };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

function tokenResponse(extra: Record<string, unknown> = {}): Response {
  return json(200, { access_token: 'at-new', token_type: 'bearer', expires_in: 3600, ...extra });
}

function provider(overrides: Partial<ProviderConfig> = {}): ProviderConfig {
  return {
    providerId: 'acme',
    tokenEndpoint: TOKEN_ENDPOINT,
    clientId: 'tokenkeeper',
    clientSecret: 'client-secret-1',
    clientAuthMethod: 'client_secret_basic',
    createdAt: T0,
    updatedAt: T0,
    ...overrides,
  };
}

interface Harness {
  client: OAuthClient;
  requests: Recorded[];
  clock: { now: () => number; t: number };
  warnings: { message: string; extra?: Record<string, unknown> }[];
}

function harness(respond: Responder, options: Partial<OAuthClientOptions> = {}): Harness {
  const { fetch, requests } = recordingFetch(respond);
  const clock = {
    t: T0,
    now() {
      return clock.t;
    },
  };
  const warnings: Harness['warnings'] = [];
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    warn: (message, extra) => warnings.push({ message, extra }),
    error: () => {},
  };
  const client = new OAuthClient({
    fetch,
    clock,
    logger,
    timeoutMs: 5_000,
    allowInsecureHttp: false,
    clientSecret: async (p) => p.clientSecret,
    ...options,
  });
  return { client, requests, clock, warnings };
}

function failure(result: GrantResult): GrantFailure {
  if (result.ok) throw new Error('expected the grant to fail');
  return result.failure;
}

function decodeBasic(header: string | null): string {
  expect(header).toMatch(/^Basic [A-Za-z0-9+/]+=*$/);
  return Buffer.from((header as string).slice('Basic '.length), 'base64').toString('utf8');
}

describe('OAuthClient.refresh: the request', () => {
  it('posts grant_type=refresh_token and the refresh token to the token endpoint', async () => {
    // Prepare
    const { client, requests } = harness(() => tokenResponse());

    // Act
    await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(requests).toHaveLength(1);
    const [request] = requests as [Recorded];
    expect(request.url).toBe(TOKEN_ENDPOINT);
    expect(request.method).toBe('POST');
    expect(request.headers.get('content-type')).toBe('application/x-www-form-urlencoded;charset=UTF-8');
    expect(request.headers.get('accept')).toBe('application/json');
    expect(request.body?.get('grant_type')).toBe('refresh_token');
    expect(request.body?.get('refresh_token')).toBe(REFRESH_TOKEN);
  });

  it('client_secret_basic: form-urlencodes id and secret into an Authorization Basic header (RFC 6749 §2.3.1)', async () => {
    // Prepare
    const { client, requests } = harness(() => tokenResponse());
    const p = provider({ clientId: 'client id:1', clientSecret: 's3cr&t/+~ é' });

    // Act
    await client.refresh(p, REFRESH_TOKEN);

    // Assess
    const [request] = requests as [Recorded];
    expect(decodeBasic(request.headers.get('authorization'))).toBe('client+id%3A1:s3cr%26t%2F%2B%7E+%C3%A9');
    expect(request.body?.has('client_secret')).toBe(false);
    expect(request.body?.has('client_id')).toBe(false);
  });

  it('client_secret_post: sends client_id and client_secret in the body and no Authorization header', async () => {
    // Prepare
    const { client, requests } = harness(() => tokenResponse());
    const p = provider({ clientAuthMethod: 'client_secret_post' });

    // Act
    await client.refresh(p, REFRESH_TOKEN);

    // Assess
    const [request] = requests as [Recorded];
    expect(request.headers.has('authorization')).toBe(false);
    expect(request.body?.get('client_id')).toBe('tokenkeeper');
    expect(request.body?.get('client_secret')).toBe('client-secret-1');
  });

  it('none: sends only client_id in the body, no secret and no Authorization header', async () => {
    // Prepare
    let secretLookups = 0;
    const { client, requests } = harness(() => tokenResponse(), {
      clientSecret: async () => {
        secretLookups += 1;
        return 'never-used';
      },
    });
    const p = provider({ clientAuthMethod: 'none', clientSecret: undefined });

    // Act
    const result = await client.refresh(p, REFRESH_TOKEN);

    // Assess
    expect(result.ok).toBe(true);
    const [request] = requests as [Recorded];
    expect(request.headers.has('authorization')).toBe(false);
    expect(request.body?.get('client_id')).toBe('tokenkeeper');
    expect(request.body?.has('client_secret')).toBe(false);
    expect(secretLookups).toBe(0);
  });

  it('sends the RFC 8707 resource parameter when the provider has one', async () => {
    // Prepare
    const { client, requests } = harness(() => tokenResponse());
    const p = provider({ resource: 'https://mcp.example.com/' });

    // Act
    await client.refresh(p, REFRESH_TOKEN);

    // Assess
    expect(requests[0]?.body?.getAll('resource')).toEqual(['https://mcp.example.com/']);
  });

  it('sends no resource parameter when the provider has none', async () => {
    // Prepare
    const { client, requests } = harness(() => tokenResponse());

    // Act
    await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(requests[0]?.body?.has('resource')).toBe(false);
  });

  it('refuses an http:// token endpoint unless insecure HTTP is allowed, sending nothing', async () => {
    // Prepare
    const { client, requests } = harness(() => tokenResponse());
    const p = provider({ tokenEndpoint: 'http://as.example.com/oauth/token' });

    // Act
    const result = await client.refresh(p, REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'invalid_response' });
    expect(requests).toHaveLength(0);
  });

  it('posts to an http:// token endpoint when insecure HTTP is allowed', async () => {
    // Prepare
    const { client, requests } = harness(() => tokenResponse(), { allowInsecureHttp: true });
    const p = provider({ tokenEndpoint: 'http://127.0.0.1:9999/token' });

    // Act
    const result = await client.refresh(p, REFRESH_TOKEN);

    // Assess
    expect(result.ok).toBe(true);
    expect(requests.map((r) => r.url)).toEqual(['http://127.0.0.1:9999/token']);
  });

  it('reports a confidential provider without a secret as a client configuration problem without sending anything', async () => {
    // Prepare
    const { client, requests } = harness(() => tokenResponse());
    const p = provider({ clientSecret: undefined });

    // Act
    const result = await client.refresh(p, REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'client_rejected', code: 'client_misconfigured' });
    expect(requests).toHaveLength(0);
  });
});

describe('OAuthClient.refresh: token_type', () => {
  it('keeps a token type other than bearer as the provider gave it', async () => {
    const { client } = harness(() =>
      json(200, { access_token: 'at-dpop', token_type: 'DPoP', expires_in: 60 }),
    );
    const result = await client.refresh(provider(), REFRESH_TOKEN);
    expect(result.ok && result.tokens.tokenType).toBe('DPoP');
  });

  it.each([
    ['bearer', 'Bearer'],
    ['BEARER', 'Bearer'],
    ['BeArEr', 'Bearer'],
    [undefined, 'Bearer'],
    ['', 'Bearer'],
    ['bot', 'bot'],
    ['N_A', 'N_A'],
  ])('token_type %j is served as %j', async (given, served) => {
    const { client } = harness(() =>
      json(200, { access_token: 'at', refresh_token: 'rt', token_type: given }),
    );
    const result = await client.refresh(provider(), REFRESH_TOKEN);
    expect(result.ok && result.tokens.tokenType).toBe(served);
  });
});

describe('OAuthClient.refresh: a 200 that carries a refresh token is committed', () => {
  /** A compact JWT with any claims; the keeper neither verifies nor needs it. */
  const idToken = (claims: Record<string, unknown>) =>
    [{ alg: 'RS256', kid: 'k1' }, claims, 'c2lnbmF0dXJl']
      .map((part, i) => (i === 2 ? part : Buffer.from(JSON.stringify(part)).toString('base64url')))
      .join('.');

  // Each answer rotates the refresh token to 'rt-next'; whatever else it holds must not lose it.
  it.each<[string, Record<string, unknown>]>([
    [
      'an id_token from a foreign issuer',
      { id_token: idToken({ iss: 'https://elsewhere.example', aud: 'x', exp: 1 }) },
    ],
    [
      'an id_token for another audience and long expired',
      { id_token: idToken({ iss: ISSUER, aud: 'other', exp: 1 }) },
    ],
    ['a malformed id_token', { id_token: 'not-a-jwt' }],
    ['an id_token that is not a string', { id_token: { nested: true } }],
    ['an odd token_type', { token_type: 'mac' }],
    ['a missing token_type', { token_type: undefined }],
    ['a missing expires_in', { expires_in: undefined }],
    ['a negative expires_in', { expires_in: -5 }],
    ['a non-numeric expires_in', { expires_in: 'soon' }],
    ['an expires_in of the wrong type', { expires_in: { s: 1 } }],
    ['unknown fields', { ext_expires_in: 7200, 'not-before-policy': 0, session_state: 'abc', ok: true }],
    ['a scope that is not a string', { scope: ['a', 'b'] }],
  ])('with %s', async (_shape, extra) => {
    const { client } = harness(() =>
      json(200, {
        access_token: 'at-next',
        refresh_token: 'rt-next',
        token_type: 'Bearer',
        expires_in: 600,
        ...extra,
      }),
    );
    const result = await client.refresh(provider({ issuer: ISSUER }), REFRESH_TOKEN);
    expect(result).toMatchObject({ ok: true, tokens: { accessToken: 'at-next', refreshToken: 'rt-next' } });
  });

  it('without a usable access token the rotated refresh token is still returned, with a warning', async () => {
    for (const access of [undefined, '', 42, 'x'.repeat(32 * 1024 + 1)]) {
      const { client, warnings } = harness(() =>
        json(200, { access_token: access, refresh_token: 'rt-next' }),
      );
      const result = await client.refresh(provider(), REFRESH_TOKEN);
      expect(result).toMatchObject({ ok: true, tokens: { refreshToken: 'rt-next' } });
      expect(result.ok && result.tokens.accessToken).toBeUndefined();
      expect(warnings.map((w) => w.message).join('\n')).toMatch(/no usable access token/);
      expect(JSON.stringify(warnings)).not.toContain('rt-next');
    }
  });

  it.each([
    [3599, 3599],
    ['3599', 3599],
    [' 3600 ', 3600],
    ['3599.9', 3599],
    [0, 0],
  ])('expires_in %j is read as %j seconds', async (given, seconds) => {
    const { client, warnings } = harness(() => json(200, { access_token: 'at', expires_in: given }));
    const result = await client.refresh(provider(), REFRESH_TOKEN);
    expect(result.ok && result.tokens.expiresIn).toBe(seconds);
    expect(warnings).toEqual([]);
  });

  it('a non-numeric expires_in counts as no expiry, with a warning that names the field only', async () => {
    const { client, warnings } = harness(() => json(200, { access_token: 'at', expires_in: 'one hour' }));
    const result = await client.refresh(provider(), REFRESH_TOKEN);
    expect(result.ok && result.tokens.expiresIn).toBeUndefined();
    expect(warnings).toEqual([
      {
        message: 'expires_in is not a number of seconds; treated as unknown',
        extra: { providerId: 'acme', field: 'expires_in', type: 'string' },
      },
    ]);
  });

  it.each<[string, Record<string, unknown>, number | undefined]>([
    ['Keycloak refresh_expires_in', { refresh_expires_in: 1800 }, 1800],
    ['Keycloak refresh_expires_in as a string', { refresh_expires_in: '1800' }, 1800],
    ['Keycloak offline token (refresh_expires_in 0: no idle expiry)', { refresh_expires_in: 0 }, undefined],
    ['GitHub App refresh_token_expires_in', { refresh_token_expires_in: 15_897_600 }, 15_897_600],
    ['no refresh-token lifetime', {}, undefined],
  ])('%s', async (_shape, extra, refreshExpiresIn) => {
    const { client } = harness(() => json(200, { access_token: 'at', refresh_token: 'rt-next', ...extra }));
    const result = await client.refresh(provider(), REFRESH_TOKEN);
    expect(result.ok && result.tokens.refreshExpiresIn).toBe(refreshExpiresIn);
  });

  it('keeps scope as the answer gives it, the empty string included; absent stays absent', async () => {
    for (const [scope, expected] of [
      ['a b', 'a b'],
      ['', ''],
      [undefined, undefined],
    ] as const) {
      const { client } = harness(() => json(200, { access_token: 'at', scope }));
      const result = await client.refresh(provider(), REFRESH_TOKEN);
      expect(result.ok && result.tokens.scope).toBe(expected);
    }
  });

  it('accepts a 16 KB JWT access token', async () => {
    const big = `eyJ${'A'.repeat(16 * 1024)}`;
    const { client } = harness(() => json(200, { access_token: big, refresh_token: 'rt-next' }));
    const result = await client.refresh(provider(), REFRESH_TOKEN);
    expect(result.ok && result.tokens.accessToken).toBe(big);
  });
});

describe('OAuthClient.refresh: 200 with an error body', () => {
  it.each([
    ['invalid_grant', 'invalid_grant'],
    ['bad_refresh_token', 'invalid_grant'],
    ['invalid_refresh_token', 'invalid_grant'],
    ['temporarily_unavailable', 'transient'],
    ['server_error', 'transient'],
    ['ratelimited', 'transient'],
  ])('error %j is %s', async (error, cls) => {
    const { client } = harness(() => json(200, { ok: false, error, error_description: 'described' }));
    const result = await client.refresh(provider(), REFRESH_TOKEN);
    expect(failure(result)).toMatchObject({ class: cls, code: error });
  });
});

describe('OAuthClient.refresh: discovery', () => {
  const oauthMetadataUrl = `${ISSUER}/.well-known/oauth-authorization-server`;
  const oidcMetadataUrl = `${ISSUER}/.well-known/openid-configuration`;
  const metadata = { issuer: ISSUER, token_endpoint: 'https://as.example.com/discovered/token' };

  it('uses an explicit tokenEndpoint without any discovery request', async () => {
    // Prepare
    const { client, requests } = harness(() => tokenResponse());

    // Act
    await client.refresh(provider({ issuer: ISSUER }), REFRESH_TOKEN);

    // Assess
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([`POST ${TOKEN_ENDPOINT}`]);
  });

  it('discovers RFC 8414 metadata from the issuer first', async () => {
    // Prepare
    const { client, requests } = harness((r) =>
      r.url === oauthMetadataUrl ? json(200, metadata) : tokenResponse(),
    );

    // Act
    const result = await client.refresh(
      provider({ issuer: ISSUER, tokenEndpoint: undefined }),
      REFRESH_TOKEN,
    );

    // Assess
    expect(result.ok).toBe(true);
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      `GET ${oauthMetadataUrl}`,
      'POST https://as.example.com/discovered/token',
    ]);
  });

  it('falls back to OpenID discovery when RFC 8414 metadata is missing', async () => {
    // Prepare
    const { client, requests } = harness((r) => {
      if (r.url === oauthMetadataUrl) return new Response('not found', { status: 404 });
      if (r.url === oidcMetadataUrl) return json(200, metadata);
      return tokenResponse();
    });

    // Act
    const result = await client.refresh(
      provider({ issuer: ISSUER, tokenEndpoint: undefined }),
      REFRESH_TOKEN,
    );

    // Assess
    expect(result.ok).toBe(true);
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      `GET ${oauthMetadataUrl}`,
      `GET ${oidcMetadataUrl}`,
      'POST https://as.example.com/discovered/token',
    ]);
  });

  it('places the well-known suffixes correctly for an issuer with a path', async () => {
    // Prepare
    const issuer = 'https://as.example.com/tenant-a';
    const { client, requests } = harness((r) =>
      r.url.includes('openid-configuration')
        ? json(200, { issuer, token_endpoint: `${issuer}/token` })
        : new Response(null, { status: 404 }),
    );

    // Act
    await client.authorizationServer(provider({ issuer, tokenEndpoint: undefined }));

    // Assess
    expect(requests.map((r) => r.url)).toEqual([
      'https://as.example.com/.well-known/oauth-authorization-server/tenant-a',
      'https://as.example.com/tenant-a/.well-known/openid-configuration',
    ]);
  });

  it('rejects metadata whose issuer does not match and fails the grant transiently', async () => {
    // Prepare
    const { client, requests } = harness((r) =>
      r.method === 'GET' ? json(200, { ...metadata, issuer: 'https://evil.example.com' }) : tokenResponse(),
    );

    // Act
    const result = await client.refresh(
      provider({ issuer: ISSUER, tokenEndpoint: undefined }),
      REFRESH_TOKEN,
    );

    // Assess
    expect(failure(result).class).toBe('transient');
    expect(requests.every((r) => r.method === 'GET')).toBe(true);
  });

  it('caches discovered metadata: a second refresh makes no discovery request', async () => {
    // Prepare
    const { client, requests } = harness((r) => (r.method === 'GET' ? json(200, metadata) : tokenResponse()));
    const p = provider({ issuer: ISSUER, tokenEndpoint: undefined });
    await client.refresh(p, REFRESH_TOKEN);

    // Act
    await client.refresh(p, 'rt-opaque-0002');

    // Assess
    expect(requests.filter((r) => r.method === 'GET')).toHaveLength(1);
    expect(requests.filter((r) => r.method === 'POST')).toHaveLength(2);
  });

  it('re-discovers once discoveryTtlMs has passed on the injected clock', async () => {
    // Prepare
    const { client, requests, clock } = harness(
      (r) => (r.method === 'GET' ? json(200, metadata) : tokenResponse()),
      { discoveryTtlMs: 60_000 },
    );
    const p = provider({ issuer: ISSUER, tokenEndpoint: undefined });
    await client.refresh(p, REFRESH_TOKEN);
    clock.t += 59_999;
    await client.refresh(p, REFRESH_TOKEN);

    // Act
    clock.t += 1;
    await client.refresh(p, REFRESH_TOKEN);

    // Assess
    expect(requests.map((r) => r.method)).toEqual(['GET', 'POST', 'POST', 'GET', 'POST']);
  });
});

describe('OAuthClient.refresh: success', () => {
  it('maps access_token, refresh_token, token_type (Bearer spelled conventionally), scope and expires_in', async () => {
    // Prepare
    const { client } = harness(() =>
      json(200, {
        access_token: 'at-2',
        refresh_token: 'rt-2',
        token_type: 'Bearer',
        scope: 'mcp:read mcp:write',
        expires_in: 1800,
      }),
    );

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(result).toEqual({
      ok: true,
      tokens: {
        accessToken: 'at-2',
        refreshToken: 'rt-2',
        tokenType: 'Bearer',
        scope: 'mcp:read mcp:write',
        expiresIn: 1800,
      },
    });
  });

  it('leaves refreshToken, scope and expiresIn undefined when the provider omits them', async () => {
    // Prepare
    const { client } = harness(() => json(200, { access_token: 'at-3', token_type: 'bearer' }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(result).toEqual({
      ok: true,
      tokens: {
        accessToken: 'at-3',
        refreshToken: undefined,
        tokenType: 'Bearer',
        scope: undefined,
        expiresIn: undefined,
      },
    });
  });
});

describe('OAuthClient.refresh: failure classification', () => {
  it('400 invalid_grant ends the grant', async () => {
    // Prepare
    const { client } = harness(() =>
      json(400, { error: 'invalid_grant', error_description: 'refresh token revoked' }),
    );

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toEqual({
      class: 'invalid_grant',
      code: 'invalid_grant',
      description: 'refresh token revoked',
    });
  });

  it('401 invalid_client (JSON body) rejects the client', async () => {
    // Prepare
    const { client } = harness(() => json(401, { error: 'invalid_client' }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'client_rejected', code: 'invalid_client' });
  });

  it('400 unauthorized_client rejects the client', async () => {
    // Prepare
    const { client } = harness(() => json(400, { error: 'unauthorized_client' }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'client_rejected', code: 'unauthorized_client' });
  });

  it('401 with a WWW-Authenticate challenge rejects the client', async () => {
    // Prepare
    const { client } = harness(
      () => new Response(null, { status: 401, headers: { 'www-authenticate': 'Basic realm="as"' } }),
    );

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'client_rejected', code: 'invalid_client' });
  });

  it('another 4xx OAuth error is transient, keeping its code', async () => {
    // Prepare
    const { client } = harness(() => json(400, { error: 'invalid_request' }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'invalid_request' });
  });

  it('keeps a long standard OAuth error code such as temporarily_unavailable', async () => {
    // Prepare
    const { client } = harness(() => json(400, { error: 'temporarily_unavailable' }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'temporarily_unavailable' });
  });

  it('scrubs an error code that is not shaped like one', async () => {
    // Prepare
    const { client } = harness(() => json(400, { error: `bad token ${REFRESH_TOKEN}` }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'bad token [redacted]' });
  });

  it.each([500, 502, 503, 504])('HTTP %i is transient http_%i', async (status) => {
    // Prepare
    const { client } = harness(() => new Response('<html>upstream error</html>', { status }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: `http_${status}` });
  });

  it('a 5xx with an OAuth error body is still transient', async () => {
    // Prepare
    const { client } = harness(() => json(503, { error: 'invalid_grant' }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'http_503' });
  });

  it('429 with Retry-After: 30 is transient with retryAfterSeconds 30', async () => {
    // Prepare
    const { client } = harness(() => new Response(null, { status: 429, headers: { 'retry-after': '30' } }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'http_429', retryAfterSeconds: 30 });
  });

  it('429 with Retry-After as an HTTP-date counts from the injected clock', async () => {
    // Prepare
    const at = new Date(T0 + 90_000).toUTCString();
    const { client } = harness(() => new Response(null, { status: 429, headers: { 'retry-after': at } }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'http_429', retryAfterSeconds: 90 });
  });

  it('429 with a JSON error body keeps its Retry-After', async () => {
    // Prepare
    const { client } = harness(() => json(429, { error: 'slow_down' }, { 'retry-after': '12' }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'slow_down', retryAfterSeconds: 12 });
  });

  it('429 without Retry-After has no retryAfterSeconds', async () => {
    // Prepare
    const { client } = harness(() => new Response(null, { status: 429 }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    const f = failure(result);
    expect(f).toMatchObject({ class: 'transient', code: 'http_429' });
    expect(f.retryAfterSeconds).toBeUndefined();
  });

  it('a connection refused (the request never left) is a transient network_error', async () => {
    // Prepare
    const { client } = harness(() => {
      throw new TypeError('fetch failed', {
        cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }),
      });
    });

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({
      class: 'transient',
      code: 'network_error',
      description: 'fetch failed',
    });
  });

  it('a fetch that fails once the grant may have been sent leaves the outcome unknown', async () => {
    // Prepare: a socket error after the request was handed over (the answer is lost, not refused)
    const { client } = harness(() => {
      throw new TypeError('fetch failed', {
        cause: Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' }),
      });
    });

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'grant_outcome_unknown' });
    expect(failure(result).description).not.toContain(REFRESH_TOKEN);
  });

  it('no answer within the grant timeout leaves the outcome unknown (the grant was sent)', async () => {
    // Prepare: a provider that never answers; the request ends only through its signal
    const { client } = harness(
      (_request, init) =>
        new Promise<Response>((_resolve, reject) => {
          const signal = init.signal as AbortSignal;
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
        }),
      { timeoutMs: 50 },
    );

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toEqual({
      class: 'transient',
      code: 'grant_outcome_unknown',
      description:
        'the grant was sent and no answer came within 50 ms; the provider may have rotated the refresh token',
    });
  });

  it('a malformed JSON 200 is a transient invalid_response', async () => {
    // Prepare
    const { client } = harness(
      () =>
        new Response('{"access_token": "at-', {
          status: 200,
          headers: { 'content-type': 'application/json' },
        }),
    );

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'invalid_response' });
  });

  it('a 400 carrying GitHub’s bad_refresh_token ends the grant too', async () => {
    // Prepare
    const { client } = harness(() => json(400, { error: 'bad_refresh_token' }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'invalid_grant', code: 'bad_refresh_token' });
  });

  it('a 200 without access_token is a transient invalid_response', async () => {
    // Prepare
    const { client } = harness(() => json(200, { token_type: 'bearer', expires_in: 3600 }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'invalid_response' });
  });

  it('a body larger than maxResponseBytes is response_too_large, and reading stops', async () => {
    // Prepare
    let pulled = 0;
    let cancelled = false;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled += 1;
        if (pulled > 64) controller.close();
        else controller.enqueue(new Uint8Array(1024).fill(0x20));
      },
      cancel() {
        cancelled = true;
      },
    });
    const { client } = harness(() => new Response(stream, { status: 200 }), { maxResponseBytes: 4096 });

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({ class: 'transient', code: 'response_too_large' });
    expect(cancelled).toBe(true);
    expect(pulled).toBeLessThan(64);
  });

  it('a declared Content-Length above maxResponseBytes is refused before reading', async () => {
    // Prepare
    const { client } = harness(
      () =>
        new Response(JSON.stringify({ access_token: 'at', token_type: 'bearer' }), {
          status: 200,
          headers: { 'content-type': 'application/json', 'content-length': '1000000' },
        }),
      { maxResponseBytes: 4096 },
    );

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result)).toMatchObject({
      class: 'transient',
      code: 'response_too_large',
      description: 'response body of 1000000 bytes exceeds 4096',
    });
  });

  it('accepts a body of exactly maxResponseBytes', async () => {
    // Prepare
    const body = JSON.stringify({ access_token: 'at-exact', token_type: 'bearer' });
    const { client } = harness(
      () => new Response(body, { status: 200, headers: { 'content-type': 'application/json' } }),
      { maxResponseBytes: Buffer.byteLength(body) },
    );

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(result.ok).toBe(true);
  });
});

describe('OAuthClient.refresh: scrubbed descriptions', () => {
  it('redacts a provider description that echoes the refresh token', async () => {
    // Prepare
    const { client } = harness(() =>
      json(400, { error: 'invalid_grant', error_description: `refresh token ${REFRESH_TOKEN} was revoked` }),
    );

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    expect(failure(result).description).toBe('refresh token [redacted] was revoked');
  });

  it('redacts a provider description that echoes the client secret', async () => {
    // Prepare
    const { client } = harness(() =>
      json(401, { error: 'invalid_client', error_description: 'secret sec-ret-7 does not match' }),
    );

    // Act
    const result = await client.refresh(provider({ clientSecret: 'sec-ret-7' }), REFRESH_TOKEN);

    // Assess
    expect(failure(result).description).toBe('secret [redacted] does not match');
  });

  it('redacts long opaque strings and bounds the description to 200 characters', async () => {
    // Prepare
    const jwt = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVlLWhlcmU';
    const description = `token ${jwt} expired; ${'please sign in again. '.repeat(20)}`;
    const { client } = harness(() => json(400, { error: 'invalid_grant', error_description: description }));

    // Act
    const result = await client.refresh(provider(), REFRESH_TOKEN);

    // Assess
    const text = failure(result).description;
    expect(text.startsWith('token [redacted] expired; please sign in again.')).toBe(true);
    expect(text).not.toContain('eyJ');
    expect(text).toHaveLength(200);
    expect(text.endsWith('…')).toBe(true);
  });
});

describe('scrubDescription', () => {
  it('keeps ordinary text', () => {
    expect(scrubDescription('The refresh token has expired')).toBe('The refresh token has expired');
  });

  it('returns an empty string for anything but a string', () => {
    expect(scrubDescription(undefined)).toBe('');
    expect(scrubDescription({ message: 'x' })).toBe('');
  });

  it('redacts every occurrence of each given secret', () => {
    expect(scrubDescription('a=abcd b=abcd c=wxyz', ['abcd', undefined, 'wxyz'])).toBe(
      'a=[redacted] b=[redacted] c=[redacted]',
    );
  });

  it('ignores secrets shorter than 4 characters rather than shredding the text', () => {
    expect(scrubDescription('a bad request', ['a'])).toBe('a bad request');
  });

  it('redacts runs of 20 or more token characters, with base64 padding', () => {
    expect(scrubDescription('key AbCdEfGhIjKlMnOpQrSt== used')).toBe('key [redacted] used');
    expect(scrubDescription('key AbCdEfGhIjKlMnOpQrS used')).toBe('key AbCdEfGhIjKlMnOpQrS used');
  });

  it('replaces control characters and trims', () => {
    expect(scrubDescription('  line one\nline two\u0000\t ')).toBe('line one line two');
  });

  it('bounds the text to 200 characters, ending with an ellipsis', () => {
    const text = scrubDescription('word '.repeat(100));
    expect(text).toHaveLength(200);
    expect(text).toBe(`${'word '.repeat(40).slice(0, 199)}…`);
  });

  it('leaves a text of exactly 200 characters untouched', () => {
    const exact = `${'abc '.repeat(49)}abcd`;
    expect(scrubDescription(exact)).toBe(exact);
  });
});

describe('parseRetryAfter', () => {
  it('is undefined without a header', () => {
    expect(parseRetryAfter(null, T0)).toBeUndefined();
    expect(parseRetryAfter('', T0)).toBeUndefined();
  });

  it('reads delta-seconds', () => {
    expect(parseRetryAfter('30', T0)).toBe(30);
    expect(parseRetryAfter(' 7 ', T0)).toBe(7);
    expect(parseRetryAfter('0', T0)).toBe(0);
  });

  it('reads an HTTP-date relative to now, rounding up', () => {
    expect(parseRetryAfter(new Date(T0 + 90_000).toUTCString(), T0)).toBe(90);
    expect(parseRetryAfter(new Date(T0 + 90_000).toUTCString(), T0 + 500)).toBe(90);
  });

  it('reads an HTTP-date in the past as 0', () => {
    expect(parseRetryAfter(new Date(T0 - 60_000).toUTCString(), T0)).toBe(0);
  });

  it('caps the delay at one hour', () => {
    expect(parseRetryAfter('86400', T0)).toBe(3600);
    expect(parseRetryAfter(new Date(T0 + 86_400_000).toUTCString(), T0)).toBe(3600);
  });

  it('reads the obsolete RFC 850 date form too', () => {
    expect(parseRetryAfter('Wednesday, 15-Jan-25 12:01:00 GMT', T0)).toBe(60);
  });

  it.each([['soon'], ['30s'], ['-5'], ['1.5'], ['12 34']])('ignores the malformed value %j', (value) => {
    expect(parseRetryAfter(value, T0)).toBeUndefined();
  });
});

describe('OAuthClient.revoke', () => {
  it('posts the token and token_type_hint to the revocation endpoint with client authentication', async () => {
    // Prepare
    const { client, requests } = harness(() => new Response(null, { status: 200 }));
    const p = provider({ revocationEndpoint: REVOCATION_ENDPOINT });

    // Act
    const accepted = await client.revoke(p, REFRESH_TOKEN, 'refresh_token');

    // Assess
    expect(accepted).toBe(true);
    expect(requests).toHaveLength(1);
    const [request] = requests as [Recorded];
    expect(request.url).toBe(REVOCATION_ENDPOINT);
    expect(request.method).toBe('POST');
    expect(request.body?.get('token')).toBe(REFRESH_TOKEN);
    expect(request.body?.get('token_type_hint')).toBe('refresh_token');
    // HTML 4.01 form encoding, as oauth4webapi applies it: every non-alphanumeric is escaped, even '-'
    expect(decodeBasic(request.headers.get('authorization'))).toBe('tokenkeeper:client%2Dsecret%2D1');
  });

  it('uses the revocation endpoint from discovered metadata', async () => {
    // Prepare
    const { client, requests } = harness((r) =>
      r.method === 'GET'
        ? json(200, {
            issuer: ISSUER,
            token_endpoint: TOKEN_ENDPOINT,
            revocation_endpoint: REVOCATION_ENDPOINT,
          })
        : new Response(null, { status: 200 }),
    );
    const p = provider({ issuer: ISSUER, tokenEndpoint: undefined, clientAuthMethod: 'client_secret_post' });

    // Act
    const accepted = await client.revoke(p, 'at-1', 'access_token');

    // Assess
    expect(accepted).toBe(true);
    const post = requests.find((r) => r.method === 'POST');
    expect(post?.url).toBe(REVOCATION_ENDPOINT);
    expect(post?.body?.get('token_type_hint')).toBe('access_token');
    expect(post?.body?.get('client_secret')).toBe('client-secret-1');
  });

  it('returns false without a request when the revocation endpoint is unknown', async () => {
    // Prepare
    const { client, requests } = harness(() => new Response(null, { status: 200 }));

    // Act
    const accepted = await client.revoke(provider(), REFRESH_TOKEN, 'refresh_token');

    // Assess
    expect(accepted).toBe(false);
    expect(requests).toHaveLength(0);
  });

  it('returns false, and logs without the token, when the endpoint fails', async () => {
    // Prepare
    const { client, warnings } = harness(() => json(400, { error: 'unsupported_token_type' }));
    const p = provider({ revocationEndpoint: REVOCATION_ENDPOINT });

    // Act
    const accepted = await client.revoke(p, REFRESH_TOKEN, 'refresh_token');

    // Assess
    expect(accepted).toBe(false);
    expect(warnings).toEqual([
      { message: 'token revocation failed', extra: { providerId: 'acme', code: 'unsupported_token_type' } },
    ]);
    expect(JSON.stringify(warnings)).not.toContain(REFRESH_TOKEN);
  });

  it('returns false when the endpoint answers 503', async () => {
    // Prepare
    const { client } = harness(() => new Response(null, { status: 503 }));
    const p = provider({ revocationEndpoint: REVOCATION_ENDPOINT });

    // Act
    const accepted = await client.revoke(p, REFRESH_TOKEN, 'refresh_token');

    // Assess
    expect(accepted).toBe(false);
  });

  it('returns false when the network fails', async () => {
    // Prepare
    const { client } = harness(() => {
      throw new TypeError('fetch failed');
    });
    const p = provider({ revocationEndpoint: REVOCATION_ENDPOINT });

    // Act
    const accepted = await client.revoke(p, REFRESH_TOKEN, 'refresh_token');

    // Assess
    expect(accepted).toBe(false);
  });
});
