import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConnectionNotFoundError,
  InvalidRequestError,
  ProviderNotFoundError,
  ReauthorizationRequiredError,
  RefreshUnavailableError,
  SessionNotFoundError,
  TokenKeeperClient,
  UnauthorizedError,
} from '../../client/index.js';
import { followToCallback, visit } from '../support/connect-flow.js';
import { type McpServer, startMcpServer } from '../support/mcp-server.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

const APP = 'http://127.0.0.1:9/app/';

/**
 * The typed client against the real local stack (dynalite, the API handler) and a real OAuth server
 * (oidc-provider with refresh-token rotation and reuse detection).
 */

let oauth: OAuthServer;
let keeper: TestStack;
let mcp: McpServer;
let requests: string[];
let sleeps: number[];
let client: TokenKeeperClient;
let seq = 0;

function newClient(apiKey = keeper.apiKey, maxRetries = 2): TokenKeeperClient {
  return new TokenKeeperClient({
    baseUrl: keeper.url,
    auth: { kind: 'bearer', apiKey },
    fetch: (input, init) => {
      requests.push(`${init?.method ?? 'GET'} ${new URL(String(input)).pathname}`);
      return fetch(input, init);
    },
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    maxRetries,
  });
}

async function connect(userId = `client-user-${++seq}`): Promise<{ userId: string; refreshToken: string }> {
  const tokens = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: userId });
  const put = await client.putSession(userId, 'mcp', tokens);
  expect(put.created).toBe(true);
  return { userId, refreshToken: tokens.refresh_token };
}

beforeAll(async () => {
  mcp = await startMcpServer();
  oauth = await startOAuthServer({ accessTokenTtl: 3600, registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: oauth.issuer, introspect: (token) => oauth.introspect(token) });
  keeper = await startTestStack({ env: { TOKENKEEPER_ALLOWED_REDIRECTS: APP } });
  requests = [];
  sleeps = [];
  client = newClient();
  const put = await client.putProvider('mcp', {
    issuer: oauth.issuer,
    clientId: oauth.clients.basic.clientId,
    clientSecret: oauth.clients.basic.clientSecret,
    resource: MCP_RESOURCE,
  });
  expect(put.created).toBe(true);
});

afterAll(async () => {
  await keeper?.stop();
  await oauth?.stop();
  await mcp?.stop();
});

describe('TokenKeeperClient against the local stack', () => {
  it('providers: put (created, replaced) and get, never the secret', async () => {
    const again = await client.putProvider('mcp', {
      issuer: oauth.issuer,
      clientId: oauth.clients.basic.clientId,
      clientSecret: oauth.clients.basic.clientSecret,
      resource: MCP_RESOURCE,
    });
    expect(again.created).toBe(false);
    const provider = await client.getProvider('mcp');
    expect(provider).toMatchObject({
      providerId: 'mcp',
      clientId: oauth.clients.basic.clientId,
      clientAuthMethod: 'client_secret_basic',
      hasClientSecret: true,
      resource: MCP_RESOURCE,
    });
    expect(JSON.stringify(provider)).not.toContain(oauth.clients.basic.clientSecret);
    await expect(client.getProvider('missing')).rejects.toThrow(ProviderNotFoundError);
  });

  it('connect: putProvider by MCP server URL, authorize, and after the callback getToken serves the session', async () => {
    const put = await client.putProvider('by-mcp', { mcpServerUrl: mcp.url });
    expect(put.created).toBe(true);
    expect(put.value).toMatchObject({ mcpServerUrl: mcp.url, registration: 'dynamic', resource: mcp.url });
    const userId = `client-user-${++seq}`;
    requests.length = 0;
    const { authorizationUrl, expiresAt } = await client.authorize(userId, 'by-mcp', { scope: 'mcp:read' });
    expect(requests).toEqual([`POST /v1/sessions/${userId}/by-mcp/authorize`]);
    expect(expiresAt).toBeGreaterThan(Date.now() / 1000);
    expect(new URL(authorizationUrl).searchParams.get('scope')).toBe('mcp:read');
    const callback = await followToCallback(authorizationUrl, `${keeper.url}/oauth/callback`, {
      loginHint: userId,
    });
    expect((await visit(callback)).status).toBe(200);
    const token = await client.getToken(userId, 'by-mcp');
    expect((await mcp.call(token.access_token)).status).toBe(200);
    await expect(
      client.authorize(userId, 'by-mcp', { redirectUri: 'https://elsewhere.example/' }),
    ).rejects.toBeInstanceOf(InvalidRequestError);
    await expect(client.authorize(userId, 'nobody')).rejects.toBeInstanceOf(ProviderNotFoundError);
  });

  it('connect for an application: authorize with a redirectUri, the callback back to the app, completeConnection', async () => {
    const userId = `client-user-${++seq}`;
    const { authorizationUrl } = await client.authorize(userId, 'by-mcp', { redirectUri: `${APP}back` });
    const callback = await followToCallback(authorizationUrl, `${keeper.url}/oauth/callback/by-mcp`, {
      loginHint: userId,
    });
    const back = new URL((await visit(callback)).location as string);
    expect(back.searchParams.get('status')).toBe('pending');
    const connection = back.searchParams.get('connection') as string;
    await expect(client.getSession(userId, 'by-mcp')).rejects.toBeInstanceOf(SessionNotFoundError);
    const other = await client
      .completeConnection(`${userId}-other`, 'by-mcp', connection)
      .catch((e: unknown) => e);
    expect(other).toBeInstanceOf(ConnectionNotFoundError);
    expect(other).toMatchObject({ status: 404, code: 'connection_not_found' });
    requests.length = 0;
    const session = await client.completeConnection(userId, 'by-mcp', connection);
    expect(requests).toEqual([`POST /v1/sessions/${userId}/by-mcp/connections/${connection}`]);
    expect(session).toMatchObject({ userId, providerId: 'by-mcp', status: 'active' });
    expect(JSON.stringify(session)).not.toMatch(/access_token|refresh_token/u);
    expect((await mcp.call((await client.getToken(userId, 'by-mcp')).access_token)).status).toBe(200);
    await expect(client.completeConnection(userId, 'by-mcp', connection)).rejects.toBeInstanceOf(
      ConnectionNotFoundError,
    );
  });

  it('listSweeps: each sweep since a time, with its counts', async () => {
    const before = Math.floor(Date.now() / 1000);
    const summary = await client.sweepLocal();
    const sweeps = await client.listSweeps({ since: before });
    expect(sweeps).toHaveLength(1);
    expect(sweeps[0]).toMatchObject({ due: summary.due, refreshed: summary.refreshed, heldBack: 0 });
    expect(sweeps[0]?.startedAt).toBeGreaterThanOrEqual(before);
    expect(await client.listSweeps({ since: (sweeps[0]?.startedAt ?? 0) + 1 })).toEqual([]);
    expect((await client.listSweeps()).length).toBeGreaterThanOrEqual(1);
  });

  it('sessions: put, get, list, delete', async () => {
    const userId = 'dana@example.com';
    await connect(userId);
    const tokens = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: 'dana' });
    expect((await client.putSession(userId, 'mcp', tokens)).created).toBe(false);
    const session = await client.getSession(userId, 'mcp');
    expect(session).toMatchObject({ userId, providerId: 'mcp', status: 'active', refreshable: true });
    expect(await client.listSessions(userId)).toEqual([session]);
    await client.deleteSession(userId, 'mcp');
    expect(await client.listSessions(userId)).toEqual([]);
    const error = await client.getSession(userId, 'mcp').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SessionNotFoundError);
    expect(error).toMatchObject({ status: 404, code: 'session_not_found' });
    await expect(client.putSession('x', 'unregistered', tokens)).rejects.toThrow(ProviderNotFoundError);
    await expect(client.putSession('x', 'mcp', { access_token: '' })).rejects.toThrow(InvalidRequestError);
  });

  it('ids with @ : + space é 😀 work end to end over HTTP: provider, session, token, list, delete', async () => {
    const providerId = 'mcp:team+1 é😀';
    const userId = 'zoë.o+tools@example.com: team a 😀';
    const put = await client.putProvider(providerId, {
      issuer: oauth.issuer,
      clientId: oauth.clients.basic.clientId,
      clientSecret: oauth.clients.basic.clientSecret,
      resource: MCP_RESOURCE,
    });
    expect(put).toMatchObject({ created: true, value: { providerId } });
    expect((await client.getProvider(providerId)).providerId).toBe(providerId);
    const tokens = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: 'zoe' });
    expect((await client.putSession(userId, providerId, tokens)).value).toMatchObject({ userId, providerId });
    requests.length = 0;
    // A refresh through the keeper proves the provider id round-tripped to its stored configuration.
    const token = await client.getToken(userId, providerId, { force: true });
    expect(token.access_token).not.toBe(tokens.access_token);
    expect((await oauth.introspect(token.access_token)).active).toBe(true);
    // Sent encoded once: the server (as API Gateway) decodes it once.
    expect(requests).toEqual([
      `GET /v1/sessions/${encodeURIComponent(userId)}/${encodeURIComponent(providerId)}/token`,
    ]);
    expect((await client.listSessions(userId)).map((s) => [s.userId, s.providerId])).toEqual([
      [userId, providerId],
    ]);
    await client.deleteSession(userId, providerId);
    expect(await client.listSessions(userId)).toEqual([]);
    await expect(client.getToken(userId, providerId)).rejects.toThrow(SessionNotFoundError);
  });

  it('refuses ids with / ? # % \\ or control characters before sending', async () => {
    requests.length = 0;
    for (const id of ['a/b', 'who?x', 'a#b', '%41', 'a\\b', 'a\nb', '.', '..', '']) {
      await expect(client.getToken(id, 'mcp'), JSON.stringify(id)).rejects.toThrow(TypeError);
      await expect(
        client.putProvider(id, { tokenEndpoint: oauth.tokenEndpoint, clientId: 'c' }),
      ).rejects.toThrow(/providerId/u);
    }
    await expect(client.getSession('alice', 'p/token')).rejects.toThrow(
      'providerId must not contain / ? # % \\ or control characters',
    );
    expect(requests).toEqual([]);
  });

  it('getToken: a valid token, then from memory; concurrent calls share one request', async () => {
    const { userId } = await connect();
    requests.length = 0;
    const first = await client.getToken(userId, 'mcp', { minValidity: 300 });
    expect((await oauth.introspect(first.access_token)).active).toBe(true);
    expect(first.expires_in).toBeGreaterThan(300);
    const again = await Promise.all(Array.from({ length: 10 }, () => client.getToken(userId, 'mcp')));
    expect(new Set(again.map((t) => t.access_token))).toEqual(new Set([first.access_token]));
    expect(requests).toHaveLength(1);

    const fresh = newClient();
    requests.length = 0;
    const concurrent = await Promise.all(Array.from({ length: 10 }, () => fresh.getToken(userId, 'mcp')));
    expect(new Set(concurrent.map((t) => t.access_token)).size).toBe(1);
    expect(requests).toEqual([`GET /v1/sessions/${userId}/mcp/token`]);
  });

  it('getToken force: one new token for concurrent forced calls, and it replaces the cached one', async () => {
    const { userId } = await connect();
    const before = await client.getToken(userId, 'mcp');
    oauth.proxy.reset();
    requests.length = 0;
    const forced = await Promise.all(
      Array.from({ length: 5 }, () => client.getToken(userId, 'mcp', { force: true })),
    );
    const after = forced[0]?.access_token as string;
    expect(after).not.toBe(before.access_token);
    expect(new Set(forced.map((t) => t.access_token))).toEqual(new Set([after]));
    expect(requests).toHaveLength(1);
    expect(oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token')).toHaveLength(1);
    expect((await client.getToken(userId, 'mcp')).access_token).toBe(after);
    expect(requests).toHaveLength(1);
    expect((await oauth.introspect(after)).active).toBe(true);
  });

  it('a provider failing transiently: retried as Retry-After asks, then RefreshUnavailableError', async () => {
    const { userId } = await connect();
    await client.getToken(userId, 'mcp');
    oauth.proxy.setFault({ kind: 'status', status: 503, body: 'maintenance' });
    sleeps.length = 0;
    requests.length = 0;
    try {
      const error = await client.getToken(userId, 'mcp', { force: true }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RefreshUnavailableError);
      const unavailable = error as RefreshUnavailableError;
      expect(unavailable).toMatchObject({ status: 503, code: 'refresh_unavailable' });
      expect(unavailable.retryAfterSeconds).toBeGreaterThan(0);
      // The first try and two retries, each after the server's Retry-After.
      expect(requests).toHaveLength(3);
      expect(sleeps).toHaveLength(2);
      for (const ms of sleeps) expect(ms).toBeGreaterThanOrEqual(1000);
      const session = await client.getSession(userId, 'mcp');
      expect(session.status).toBe('active');
      expect(session.failureCount).toBeGreaterThan(0);
    } finally {
      oauth.proxy.setFault(null);
    }
  });

  it('a dead grant: ReauthorizationRequiredError with the server code, and the session is kept', async () => {
    const { userId } = await connect();
    await client.getToken(userId, 'mcp');
    oauth.proxy.setFault({ kind: 'oauth-error', status: 400, error: 'invalid_grant', times: 1 });
    const error = await client.getToken(userId, 'mcp', { force: true }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ReauthorizationRequiredError);
    expect(error).toMatchObject({ status: 409, code: 'reauthorization_required' });
    // The cached token is forgotten too: the next plain call asks the server and gets the same answer.
    await expect(client.getToken(userId, 'mcp')).rejects.toThrow(ReauthorizationRequiredError);
    expect((await client.getSession(userId, 'mcp')).status).toBe('reauthorization_required');
  });

  it('typed errors for bad input and a wrong key', async () => {
    const { userId } = await connect();
    const error = await client.getToken(userId, 'mcp', { minValidity: 999_999 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidRequestError);
    expect((error as InvalidRequestError).description).toContain('minValidity');
    await expect(client.getToken('nobody', 'mcp')).rejects.toThrow(SessionNotFoundError);
    const wrong = await newClient('not-the-key')
      .listSessions(userId)
      .catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(UnauthorizedError);
    expect(wrong).toMatchObject({ status: 401, code: 'unauthorized' });
  });

  it('health and the local sweep', async () => {
    expect(await client.health()).toEqual({ status: 'ok' });
    const summary = await client.sweepLocal();
    expect(summary).toMatchObject({ missed: 0 });
    expect(typeof summary.durationMs).toBe('number');
  });
});
