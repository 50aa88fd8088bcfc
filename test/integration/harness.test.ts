import { DescribeTableCommand } from '@aws-sdk/client-dynamodb';
import { GetCommand, PutCommand } from '@aws-sdk/lib-dynamodb';
import * as oauth from 'oauth4webapi';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TABLE } from '../../functions/core/store/table.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import type { TokenFault } from '../support/token-proxy.js';

describe('oauth test server', () => {
  let server: OAuthServer;
  let as: oauth.AuthorizationServer;
  const basic: oauth.Client = { client_id: 'tk-basic' };
  let basicAuth: oauth.ClientAuth;

  const refresh = async (refreshToken: string, resource?: string) => {
    const response = await oauth.refreshTokenGrantRequest(as, basic, basicAuth, refreshToken, {
      [oauth.allowInsecureRequests]: true,
      ...(resource ? { additionalParameters: { resource } } : {}),
    });
    const result = await oauth.processRefreshTokenResponse(as, basic, response);
    if (!result.refresh_token) throw new Error('no rotated refresh token');
    return { ...result, refresh_token: result.refresh_token };
  };

  beforeAll(async () => {
    server = await startOAuthServer();
    const issuer = new URL(server.issuer);
    const response = await oauth.discoveryRequest(issuer, {
      algorithm: 'oauth2',
      [oauth.allowInsecureRequests]: true,
    });
    as = await oauth.processDiscoveryResponse(issuer, response);
    basicAuth = oauth.ClientSecretBasic(server.clients.basic.clientSecret);
  });
  afterAll(() => server?.stop());
  afterEach(() => server.proxy.reset());

  it('serves metadata whose endpoints all go through the proxy', () => {
    expect(as.issuer).toBe(server.issuer);
    expect(as.token_endpoint).toBe(server.tokenEndpoint);
    expect(as.revocation_endpoint).toBe(server.revocationEndpoint);
    expect(as.introspection_endpoint).toBe(server.introspectionEndpoint);
  });

  it('logs in with an authorization code + PKCE and issues a refresh token without openid', async () => {
    const tokens = await server.login({ clientId: 'tk-basic' });
    expect(tokens).toMatchObject({ token_type: 'Bearer', expires_in: 3600, scope: 'mcp:read mcp:write' });
    expect(tokens.access_token).toEqual(expect.any(String));
    expect(tokens.refresh_token).toEqual(expect.any(String));
    expect(tokens.id_token).toBeUndefined();
    // login bypasses the proxy
    expect(server.proxy.requests).toHaveLength(0);
  });

  it('rotates refresh tokens and revokes the whole grant when an old one is reused', async () => {
    const first = await server.login({ clientId: 'tk-basic' });
    const second = await refresh(first.refresh_token);
    expect(second.refresh_token).toEqual(expect.any(String));
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect((await server.introspect(second.access_token)).active).toBe(true);
    expect(server.proxy.reuseCount()).toBe(0);

    // Reusing the rotated token: invalid_grant, and the grant (with the new tokens) is gone.
    const reuse = refresh(first.refresh_token);
    await expect(reuse).rejects.toBeInstanceOf(oauth.ResponseBodyError);
    await expect(reuse).rejects.toMatchObject({ error: 'invalid_grant', status: 400 });
    expect(server.proxy.reuseCount()).toBe(1);
    expect(server.proxy.refreshRedemptions().get(first.refresh_token)).toBe(2);

    await expect(refresh(second.refresh_token)).rejects.toMatchObject({ error: 'invalid_grant' });
    expect((await server.introspect(second.access_token)).active).toBe(false);
    expect(server.proxy.requests.map((r) => [r.grantType, r.clientId, r.forwarded, r.status])).toEqual([
      ['refresh_token', 'tk-basic', true, 200],
      ['refresh_token', 'tk-basic', true, 400],
      ['refresh_token', 'tk-basic', true, 400],
    ]);
  });

  it('accepts the RFC 8707 resource parameter on refresh', async () => {
    const first = await server.login({ clientId: 'tk-basic' });
    const second = await refresh(first.refresh_token, MCP_RESOURCE);
    expect(second.scope).toBe('mcp:read mcp:write');
    const info = await server.introspect(second.access_token);
    expect(info).toMatchObject({ active: true, aud: MCP_RESOURCE, client_id: 'tk-basic', sub: 'user-1' });
    expect(server.proxy.requests[0]?.resource).toBe(MCP_RESOURCE);
    // Without `resource`, a token for the granted resource is issued all the same (no openid scope).
    const third = await refresh(second.refresh_token);
    expect(await server.introspect(third.access_token)).toMatchObject({ active: true, aud: MCP_RESOURCE });
    // Surprise: oidc-provider rotates BEFORE checking the resource, so invalid_target consumes the
    // refresh token, and presenting it again is reuse (the grant is revoked).
    await expect(refresh(third.refresh_token, 'https://other.example.test/')).rejects.toMatchObject({
      error: 'invalid_target',
    });
    await expect(refresh(third.refresh_token)).rejects.toMatchObject({ error: 'invalid_grant' });
    expect((await server.introspect(third.access_token)).active).toBe(false);
  });

  it('supports openid logins (id_token) on request', async () => {
    const tokens = await server.login({ clientId: 'tk-basic', scope: 'openid mcp:read', accountId: 'alice' });
    expect(tokens.id_token).toEqual(expect.any(String));
    expect((await server.introspect(tokens.access_token)).sub).toBe('alice');
  });

  it('logs in without a resource (plain scopes, no audience)', async () => {
    const tokens = await server.login({ clientId: 'tk-basic', resource: null });
    expect(tokens.scope).toBe('mcp:read mcp:write');
    const info = await server.introspect(tokens.access_token);
    expect(info).toMatchObject({ active: true, scope: 'mcp:read mcp:write' });
    expect(info.aud).toBeUndefined();
  });

  it('logs in with client_secret_post and public clients, and refreshes them', async () => {
    for (const c of [server.clients.post, server.clients.public]) {
      const tokens = await server.login({ clientId: c.clientId });
      expect(tokens.refresh_token).toEqual(expect.any(String));
      const client: oauth.Client = { client_id: c.clientId };
      const auth = c.clientSecret ? oauth.ClientSecretPost(c.clientSecret) : oauth.None();
      const response = await oauth.refreshTokenGrantRequest(as, client, auth, tokens.refresh_token, {
        [oauth.allowInsecureRequests]: true,
      });
      const rotated = await oauth.processRefreshTokenResponse(as, client, response);
      expect(rotated.refresh_token).not.toBe(tokens.refresh_token);
    }
    expect(server.proxy.requests.map((r) => r.clientId)).toEqual(['tk-post', 'tk-public']);
  });

  describe('fault injection at the token endpoint', () => {
    const post = (refreshToken = 'rt-not-consumed', init: RequestInit = {}) =>
      fetch(server.tokenEndpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'refresh_token',
          refresh_token: refreshToken,
          client_id: 'x',
        }),
        ...init,
      });

    it.each([
      [{ kind: 'status', status: 503 }, 503, 'text/plain; charset=utf-8', 'Service Unavailable'],
      [
        { kind: 'status', status: 429, headers: { 'retry-after': '7' } },
        429,
        'text/plain; charset=utf-8',
        'Too Many Requests',
      ],
      [
        {
          kind: 'status',
          status: 502,
          body: '<html>bad gateway</html>',
          headers: { 'content-type': 'text/html' },
        },
        502,
        'text/html',
        '<html>bad gateway</html>',
      ],
      [{ kind: 'malformed-json' }, 200, 'application/json; charset=utf-8', null],
      [
        { kind: 'oauth-error-200', error: 'temporarily_unavailable' },
        200,
        'application/json; charset=utf-8',
        null,
      ],
      [{ kind: 'missing-access-token' }, 200, 'application/json; charset=utf-8', null],
      [
        { kind: 'oauth-error', status: 400, error: 'invalid_grant' },
        400,
        'application/json; charset=utf-8',
        null,
      ],
      [
        { kind: 'oauth-error', status: 401, error: 'invalid_client' },
        401,
        'application/json; charset=utf-8',
        null,
      ],
    ] as [TokenFault, number, string, string | null][])(
      '%o answers %i',
      async (fault, status, type, text) => {
        server.proxy.setFault(fault);
        const res = await post();
        expect(res.status).toBe(status);
        expect(res.headers.get('content-type')).toBe(type);
        const body = await res.text();
        if (text !== null) expect(body).toBe(text);
        if (fault.kind === 'status' && fault.status === 429) expect(res.headers.get('retry-after')).toBe('7');
        if (fault.kind === 'malformed-json') expect(() => JSON.parse(body)).toThrow();
        if (fault.kind === 'oauth-error-200' || fault.kind === 'oauth-error') {
          expect(JSON.parse(body)).toMatchObject({ error: fault.error });
        }
        if (fault.kind === 'missing-access-token') {
          expect(JSON.parse(body)).toEqual({ token_type: 'Bearer', expires_in: 3600 });
        }
        expect(server.proxy.requests).toMatchObject([
          {
            grantType: 'refresh_token',
            refreshToken: 'rt-not-consumed',
            forwarded: false,
            fault: fault.kind,
            status,
          },
        ]);
        expect(server.proxy.refreshRedemptions().size).toBe(0);
      },
    );

    it('oversized answers a ~5 MB JSON body', async () => {
      server.proxy.setFault({ kind: 'oversized' });
      const res = await post();
      expect(res.status).toBe(200);
      const body = await res.text();
      expect(body.length).toBeGreaterThan(5_000_000);
      expect(JSON.parse(body)).toMatchObject({ token_type: 'Bearer' });
    });

    it('reset destroys the connection', async () => {
      server.proxy.setFault({ kind: 'reset' });
      await expect(post()).rejects.toThrow(TypeError);
      expect(server.proxy.requests).toMatchObject([{ forwarded: false, fault: 'reset' }]);
    });

    it('hang never answers until the client aborts', async () => {
      server.proxy.setFault({ kind: 'hang' });
      const started = Date.now();
      await expect(post(undefined, { signal: AbortSignal.timeout(150) })).rejects.toMatchObject({
        name: 'TimeoutError',
      });
      expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    });

    it('times limits a fault, then requests pass through to the real server', async () => {
      const tokens = await server.login({ clientId: 'tk-basic' });
      server.proxy.setFault({ kind: 'status', status: 500, times: 2 });
      await expect(refresh(tokens.refresh_token)).rejects.toBeInstanceOf(oauth.OperationProcessingError);
      await expect(refresh(tokens.refresh_token)).rejects.toBeInstanceOf(oauth.OperationProcessingError);
      const rotated = await refresh(tokens.refresh_token);
      expect(rotated.refresh_token).not.toBe(tokens.refresh_token);
      expect(server.proxy.requests.map((r) => [r.forwarded, r.status])).toEqual([
        [false, 500],
        [false, 500],
        [true, 200],
      ]);
      expect(server.proxy.refreshRedemptions().get(tokens.refresh_token)).toBe(1);
      expect(server.proxy.reuseCount()).toBe(0);
    });

    it('forward-then-reset redeems the token upstream but loses the answer', async () => {
      const tokens = await server.login({ clientId: 'tk-basic' });
      server.proxy.setFault({ kind: 'forward-then-reset', times: 1 });
      await expect(refresh(tokens.refresh_token)).rejects.toThrow(TypeError);
      // The token was rotated upstream: presenting it again is reuse.
      await expect(refresh(tokens.refresh_token)).rejects.toMatchObject({ error: 'invalid_grant' });
      expect(server.proxy.reuseCount()).toBe(1);
    });

    it('adds latency to forwarded token requests', async () => {
      const tokens = await server.login({ clientId: 'tk-basic' });
      server.proxy.setLatency(100);
      const started = Date.now();
      await refresh(tokens.refresh_token);
      expect(Date.now() - started).toBeGreaterThanOrEqual(95);
    });
  });

  it('honours accessTokenTtl', async () => {
    const short = await startOAuthServer({ accessTokenTtl: 5 });
    try {
      const tokens = await short.login({ clientId: 'tk-public' });
      expect(tokens.expires_in).toBe(5);
    } finally {
      await short.stop();
    }
  });
});

describe('dynalite', () => {
  let db: DynaliteHandle;
  beforeAll(async () => {
    db = await startDynalite();
  });
  afterAll(() => db?.stop());

  it('creates the sessions table with the sparse byExpiry index', async () => {
    const { Table } = await db.client.send(new DescribeTableCommand({ TableName: db.tableName }));
    expect(Table?.TableStatus).toBe('ACTIVE');
    const index = Table?.GlobalSecondaryIndexes?.find((i) => i.IndexName === TABLE.expiryIndex);
    expect(index?.KeySchema).toEqual([
      { AttributeName: TABLE.shardAttribute, KeyType: 'HASH' },
      { AttributeName: TABLE.dueAttribute, KeyType: 'RANGE' },
    ]);
    expect(index?.Projection?.ProjectionType).toBe('KEYS_ONLY');

    const Key = { pk: 'USER#u1', sk: 'SESSION#p1' };
    await db.doc.send(new PutCommand({ TableName: db.tableName, Item: { ...Key, status: 'active' } }));
    const { Item } = await db.doc.send(new GetCommand({ TableName: db.tableName, Key }));
    expect(Item).toEqual({ ...Key, status: 'active' });
  });

  it('gives every call its own table', async () => {
    const other = await startDynalite();
    try {
      expect(other.tableName).not.toBe(db.tableName);
      expect(other.endpoint).not.toBe(db.endpoint);
    } finally {
      await other.stop();
    }
  });
});
