import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followToCallback, pendingItems, visit } from '../support/connect-flow.js';
import { eventsFor, forwardedGrants, SkewedClock } from '../support/keeper-flows.js';
import { type McpServer, startMcpServer } from '../support/mcp-server.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { type ScriptedAs, startScriptedAs } from '../support/scripted-as.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * Issue 12 end to end: a provider registered by MCP server URL (RFC 9728 → RFC 8414 → client
 * registration), a user sent to authorize, the callback storing the session, and the token served
 * working at the MCP server, before and after the sweep refreshes it. Real servers on loopback:
 * oidc-provider with DCR, resource indicators and PKCE required; an MCP-like resource server that
 * checks token audiences by introspection; a scripted authorization server for the rest.
 */

const APP = 'http://127.0.0.1:9/app/';

let mcp: McpServer;
let oauth: OAuthServer;
let keeper: TestStack;
const clock = new SkewedClock();
let callbackPrefix: string;
let seq = 0;

beforeAll(async () => {
  mcp = await startMcpServer();
  oauth = await startOAuthServer({ registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: oauth.issuer, introspect: (token) => oauth.introspect(token) });
  keeper = await startTestStack({ clock, env: { TOKENKEEPER_ALLOWED_REDIRECTS: APP } });
  callbackPrefix = `${keeper.url}/oauth/callback/`;
  const put = await keeper.call('PUT', '/v1/providers/mcp-dcr', { mcpServerUrl: mcp.url });
  if (put.status !== 201) throw new Error(`PUT provider answered ${put.status}: ${put.text}`);
}, 60_000);

afterAll(async () => {
  await keeper?.stop();
  await oauth?.stop();
  await mcp?.stop();
});

const newUser = () => `connect-user-${++seq}`;

async function authorize(userId: string, providerId = 'mcp-dcr', body: Record<string, unknown> = {}) {
  return keeper.call('POST', `/v1/sessions/${userId}/${providerId}/authorize`, body);
}

async function startAndFollow(userId: string, body: Record<string, unknown> = {}, providerId = 'mcp-dcr') {
  const started = await authorize(userId, providerId, body);
  expect(started.status, started.text).toBe(201);
  const { authorizationUrl } = started.body as { authorizationUrl: string };
  return followToCallback(authorizationUrl, callbackPrefix, { loginHint: userId });
}

const pendingStates = () => pendingItems(keeper, 'CONNECT#');

function completeConnection(userId: string, connection: string, providerId = 'mcp-dcr') {
  return keeper.call('POST', `/v1/sessions/${userId}/${providerId}/connections/${connection}`);
}

async function sessionStatus(userId: string, providerId = 'mcp-dcr'): Promise<number> {
  return (await keeper.call('GET', `/v1/sessions/${userId}/${providerId}`)).status;
}

describe('registering a provider by MCP server URL', () => {
  it('discovers the resource and its authorization server, and registers dynamically (RFC 7591)', async () => {
    const res = await keeper.call('GET', '/v1/providers/mcp-dcr');
    expect(res.status).toBe(200);
    const provider = res.body as Record<string, unknown>;
    expect(provider).toMatchObject({
      mcpServerUrl: mcp.url,
      resource: mcp.url,
      issuer: oauth.issuer,
      authorizationEndpoint: `${oauth.issuer}/auth`,
      tokenEndpoint: `${oauth.issuer}/token`,
      registration: 'dynamic',
      clientAuthMethod: 'none',
      hasClientSecret: false,
      scopesSupported: ['mcp:read', 'mcp:write'],
    });
    expect(typeof provider.clientId).toBe('string');
    expect(provider).not.toHaveProperty('clientSecret');
  });

  it('falls back to the well-known URL when the 401 names no resource_metadata', async () => {
    mcp.misbehave({ bareChallenge: true });
    try {
      const res = await keeper.call('PUT', '/v1/providers/mcp-wellknown', {
        mcpServerUrl: mcp.url,
        clientId: oauth.clients.public.clientId,
        refreshPolicy: 'keepAlive',
        refreshTokenIdleSeconds: 7200,
        maxConcurrentRefreshes: 5,
      });
      expect(res.status, res.text).toBe(201);
      expect(res.body).toMatchObject({
        resource: mcp.url,
        registration: 'preregistered',
        clientId: 'tk-public',
        // The refresh settings are the operator's, kept beside what discovery found.
        refreshPolicy: 'keepAlive',
        refreshTokenIdleSeconds: 7200,
        maxConcurrentRefreshes: 5,
      });
      expect((await keeper.call('GET', '/v1/providers/mcp-wellknown')).body).toEqual(res.body);
    } finally {
      mcp.misbehave({});
    }
  });

  it('refuses metadata whose resource is not the MCP server URL (discovery_failed), storing nothing', async () => {
    mcp.misbehave({ resource: 'http://127.0.0.1:9/elsewhere' });
    try {
      const res = await keeper.call('PUT', '/v1/providers/mcp-mixup', { mcpServerUrl: mcp.url });
      expect(res.status).toBe(400);
      expect(res.body).toMatchObject({ error: 'discovery_failed' });
      expect((res.body as { error_description: string }).error_description).toMatch(
        /names resource "http:\/\/127\.0\.0\.1:9\/elsewhere", not the MCP server URL/u,
      );
      expect((await keeper.call('GET', '/v1/providers/mcp-mixup')).status).toBe(404);
    } finally {
      mcp.misbehave({});
    }
  });

  it('refuses an unreachable MCP server with a precise description', async () => {
    const res = await keeper.call('PUT', '/v1/providers/mcp-gone', {
      mcpServerUrl: 'http://127.0.0.1:9/mcp',
    });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'discovery_failed' });
    expect((res.body as { error_description: string }).error_description).toMatch(
      /MCP server: 127\.0\.0\.1:9/u,
    );
  });
});

describe('the connect flow against oidc-provider', () => {
  it('authorize → consent → callback stores the session; the token works at the MCP server, and after the sweep refreshes it', async () => {
    const userId = newUser();
    const started = await authorize(userId);
    expect(started.status, started.text).toBe(201);
    const { authorizationUrl, expiresAt } = started.body as { authorizationUrl: string; expiresAt: number };
    const now = Math.floor(clock.now() / 1000);
    expect(expiresAt).toBeGreaterThanOrEqual(now + 599);
    expect(expiresAt).toBeLessThanOrEqual(now + 601);
    const url = new URL(authorizationUrl);
    expect(`${url.origin}${url.pathname}`).toBe(`${oauth.issuer}/auth`);
    const q = url.searchParams;
    expect(q.get('response_type')).toBe('code');
    expect(q.get('redirect_uri')).toBe(`${keeper.url}/oauth/callback/mcp-dcr`);
    expect(q.get('code_challenge_method')).toBe('S256');
    expect(q.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/u);
    expect(Buffer.from(q.get('state') ?? '', 'base64url').length).toBeGreaterThanOrEqual(16);
    expect(q.get('resource')).toBe(mcp.url);
    expect(q.get('scope')).toBe('mcp:read mcp:write');
    expect(await pendingStates()).toBeGreaterThan(0);

    const callback = await followToCallback(authorizationUrl, callbackPrefix, { loginHint: userId });
    expect(callback.searchParams.get('iss')).toBe(oauth.issuer);
    const page = await visit(callback);
    expect(page.status).toBe(200);
    expect(page.text).toContain('Account connected');
    // One script only, the one that clears the address bar, allowed by its hash: nothing else runs.
    expect([...page.text.matchAll(/<script>([^<]*)<\/script>/giu)].map((m) => m[1])).toEqual([
      "history.replaceState(null,'',location.pathname)",
    ]);
    expect(page.text.match(/<script/giu)).toHaveLength(1);
    expect(page.headers.get('content-security-policy')).toMatch(
      /default-src 'none'.*script-src 'sha256-[^']+';/u,
    );
    expect(page.headers.get('referrer-policy')).toBe('no-referrer');
    expect(page.headers.get('cache-control')).toBe('no-store');
    const code = callback.searchParams.get('code') as string;
    expect(page.text).not.toContain(code);

    const key = { userId, providerId: 'mcp-dcr' };
    expect(eventsFor(keeper.logs, 'SessionRecovered', key)).toHaveLength(0);
    expect(keeper.logs.filter((l) => l.message === 'event SessionConnected')).toContainEqual(
      expect.objectContaining({ extra: expect.objectContaining({ detail: expect.objectContaining(key) }) }),
    );

    // The MCP server is strict: a token for another audience, or none, is refused.
    const elsewhere = await oauth.login({ clientId: oauth.clients.public.clientId, resource: MCP_RESOURCE });
    expect((await mcp.call(elsewhere.access_token)).status).toBe(401);

    const served = await keeper.call('GET', `/v1/sessions/${userId}/mcp-dcr/token`);
    expect(served.status).toBe(200);
    const first = (served.body as { access_token: string }).access_token;
    expect((await mcp.call(first)).status).toBe(200);

    // An hour on, the sweep refreshes it, with the resource, and the new token works too.
    clock.advance(3_600_000);
    const grantsBefore = forwardedGrants(oauth).length;
    const summary = await keeper.sweep();
    expect(summary.refreshed).toBeGreaterThanOrEqual(1);
    const grants = forwardedGrants(oauth).slice(grantsBefore);
    expect(grants.length).toBeGreaterThanOrEqual(1);
    expect(grants.every((g) => g.resource === mcp.url)).toBe(true);
    const after = await keeper.call('GET', `/v1/sessions/${userId}/mcp-dcr/token`);
    const second = (after.body as { access_token: string }).access_token;
    expect(second).not.toBe(first);
    expect((await mcp.call(second)).status).toBe(200);
    expect(mcp.calls.accepted).toBeGreaterThanOrEqual(2);

    // The same callback again: the state is spent. 400, and the session is untouched.
    const before = await keeper.call('GET', `/v1/sessions/${userId}/mcp-dcr`);
    const replay = await visit(callback);
    expect(replay.status).toBe(400);
    expect(replay.text).toContain('invalid_state');
    expect(replay.headers.get('cache-control')).toBe('no-store');
    expect((await keeper.call('GET', `/v1/sessions/${userId}/mcp-dcr`)).body).toEqual(before.body);
  }, 60_000);

  it('a session connected with 4-second tokens reads refreshMode on_demand right after the callback', async () => {
    oauth.setAccessTokenTtl(4);
    try {
      const userId = newUser();
      const grantsBefore = forwardedGrants(oauth).length;
      expect((await visit(await startAndFollow(userId))).status).toBe(200);
      const meta = await keeper.call('GET', `/v1/sessions/${userId}/mcp-dcr`);
      expect(meta.body).toMatchObject({ status: 'active', refreshable: true, refreshMode: 'on_demand' });
      const { expiresAt } = meta.body as { expiresAt: number };
      expect(expiresAt - Math.floor(clock.now() / 1000)).toBeLessThanOrEqual(4);
      // Decided from the tokens the callback stored, before any refresh.
      expect(forwardedGrants(oauth)).toHaveLength(grantsBefore);
    } finally {
      oauth.setAccessTokenTtl(3600);
    }
  });

  it('with a redirectUri: 303 back to the application with status=pending, and the application completes it', async () => {
    const userId = newUser();
    const callback = await startAndFollow(userId, { redirectUri: `${APP}done?from=keeper` });
    const answer = await visit(callback);
    expect(answer.status).toBe(303);
    const location = new URL(answer.location as string);
    expect(`${location.origin}${location.pathname}`).toBe(`${APP}done`);
    const connection = location.searchParams.get('connection') as string;
    expect(Object.fromEntries(location.searchParams)).toEqual({
      from: 'keeper',
      status: 'pending',
      connection,
      providerId: 'mcp-dcr',
    });
    expect(await sessionStatus(userId)).toBe(404);
    const done = await completeConnection(userId, connection);
    expect(done.status, done.text).toBe(200);
    expect(await sessionStatus(userId)).toBe(200);
  }, 30_000);

  it('a reconnect after reauthorization_required replaces the session and emits SessionRecovered', async () => {
    const userId = newUser();
    const key = { userId, providerId: 'mcp-dcr' };
    expect((await visit(await startAndFollow(userId))).status).toBe(200);
    oauth.proxy.setFault({ kind: 'oauth-error', status: 400, error: 'invalid_grant', times: 1 });
    const dead = await keeper.call('GET', `/v1/sessions/${userId}/mcp-dcr/token?force=true`);
    expect(dead.status).toBe(409);
    const version = (await keeper.stack.runtime.store.getSession(key, { consistent: true }))?.version ?? 0;

    expect((await visit(await startAndFollow(userId))).status).toBe(200);
    const record = await keeper.stack.runtime.store.getSession(key, { consistent: true });
    expect(record?.status).toBe('active');
    expect(record?.version).toBe(version + 1);
    expect(eventsFor(keeper.logs, 'SessionRecovered', key)).toEqual([
      expect.objectContaining({ via: 'reconnect', previousError: 'invalid_grant' }),
    ]);
    const token = (await keeper.call('GET', `/v1/sessions/${userId}/mcp-dcr/token`)).body as {
      access_token: string;
    };
    expect((await mcp.call(token.access_token)).status).toBe(200);
  }, 30_000);
});

describe('the callback under pressure', () => {
  it('two callbacks with the same state at once: one connects, the other gets 400, and the code is exchanged once', async () => {
    const userId = newUser();
    const callback = await startAndFollow(userId);
    const exchangesBefore = oauth.proxy.requests.filter((r) => r.grantType === 'authorization_code').length;
    const answers = await Promise.all([visit(callback), visit(callback)]);
    expect(answers.map((a) => a.status).sort()).toEqual([200, 400]);
    const exchanges = oauth.proxy.requests.filter((r) => r.grantType === 'authorization_code').length;
    expect(exchanges - exchangesBefore).toBe(1);
    expect(await sessionStatus(userId)).toBe(200);
  }, 30_000);

  it('no code, state, connection id, token or client secret appears in any log line or event', async () => {
    const userId = newUser();
    const started = await authorize(userId, 'mcp-dcr', { redirectUri: APP });
    const { authorizationUrl } = started.body as { authorizationUrl: string };
    const callback = await followToCallback(authorizationUrl, callbackPrefix, { loginHint: userId });
    const answer = await visit(callback);
    expect(answer.status).toBe(303);
    const connection = new URL(answer.location as string).searchParams.get('connection') as string;
    expect((await completeConnection(userId, connection)).status).toBe(200);
    const token = (await keeper.call('GET', `/v1/sessions/${userId}/mcp-dcr/token`)).body as {
      access_token: string;
    };
    const key = { userId, providerId: 'mcp-dcr' };
    const record = await keeper.stack.runtime.store.getSession(key, { consistent: true });
    const { refreshToken } = await keeper.stack.runtime.store.reveal(record as NonNullable<typeof record>);
    const secrets = [
      callback.searchParams.get('code'),
      callback.searchParams.get('state'),
      new URL(authorizationUrl).searchParams.get('code_challenge'),
      token.access_token,
      refreshToken,
    ];
    const logs = JSON.stringify(keeper.logs);
    for (const secret of secrets) {
      expect(secret).toBeTruthy();
      expect(logs).not.toContain(secret);
      expect(answer.location).not.toContain(secret);
    }
    // The pending connection's id goes to the application only, never into a log line.
    expect(logs).not.toContain(connection);
  }, 30_000);
});

describe('the callback refuses, storing nothing', () => {
  it('an expired state (over 10 minutes): 400 page', async () => {
    const userId = newUser();
    const callback = await startAndFollow(userId, { redirectUri: `${APP}x` });
    clock.advance(601_000);
    const answer = await visit(callback);
    expect(answer.status).toBe(400);
    expect(answer.headers.get('content-type')).toMatch(/text\/html/u);
    expect(answer.text).toContain('invalid_state');
    expect(await sessionStatus(userId)).toBe(404);
  }, 30_000);

  it('a wrong iss (RFC 9207): 303 with error=invalid_issuer, and the state is spent', async () => {
    const userId = newUser();
    const callback = await startAndFollow(userId, { redirectUri: APP });
    const tampered = new URL(callback);
    tampered.searchParams.set('iss', 'http://127.0.0.1:9/evil');
    const answer = await visit(tampered);
    expect(answer.status).toBe(303);
    const location = new URL(answer.location as string);
    expect(location.searchParams.get('status')).toBe('error');
    expect(location.searchParams.get('error')).toBe('invalid_issuer');
    expect(await sessionStatus(userId)).toBe(404);
    expect((await visit(callback)).status).toBe(400);
    expect(await sessionStatus(userId)).toBe(404);
  }, 30_000);

  it('error=access_denied: 303 with status=error, or the error page without a redirectUri', async () => {
    for (const redirectUri of [APP, undefined]) {
      const userId = newUser();
      const started = await authorize(userId, 'mcp-dcr', redirectUri ? { redirectUri } : {});
      const state = new URL((started.body as { authorizationUrl: string }).authorizationUrl).searchParams.get(
        'state',
      ) as string;
      const denied = new URL(`${callbackPrefix}mcp-dcr`);
      denied.search = new URLSearchParams({ error: 'access_denied', state, iss: oauth.issuer }).toString();
      const answer = await visit(denied);
      if (redirectUri) {
        expect(answer.status).toBe(303);
        expect(new URL(answer.location as string).search).toBe('?status=error&error=access_denied');
      } else {
        expect(answer.status).toBe(400);
        expect(answer.text).toContain('access_denied');
        expect(answer.headers.get('referrer-policy')).toBe('no-referrer');
      }
      expect(await sessionStatus(userId)).toBe(404);
      expect((await visit(denied)).status).toBe(400);
    }
  }, 30_000);

  it('a callback without state, or with one never issued: 400 page', async () => {
    expect((await visit(`${callbackPrefix}mcp-dcr?code=abc`)).status).toBe(400);
    const unknown = await visit(`${callbackPrefix}mcp-dcr?code=abc&state=${'A'.repeat(43)}`);
    expect(unknown.status).toBe(400);
    expect(unknown.text).toContain('invalid_state');
  });
});

describe('authorize refuses', () => {
  it('a redirectUri outside TOKENKEEPER_ALLOWED_REDIRECTS (400), storing no state', async () => {
    const before = await pendingStates();
    for (const redirectUri of [
      'http://127.0.0.1:9/other',
      'http://127.0.0.1:9/appx',
      'http://127.0.0.1:10/app/',
      'https://127.0.0.1:9/app/',
      'http://evil.example/app/',
    ]) {
      const res = await authorize(newUser(), 'mcp-dcr', { redirectUri });
      expect(res.status, redirectUri).toBe(400);
      expect((res.body as { error_description: string }).error_description).toMatch(
        /TOKENKEEPER_ALLOWED_REDIRECTS/u,
      );
    }
    expect(await pendingStates()).toBe(before);
  });

  it('an unknown provider (404) and a provider without an authorization endpoint (400)', async () => {
    expect((await authorize(newUser(), 'nope')).status).toBe(404);
    const put = await keeper.call('PUT', '/v1/providers/token-only', {
      tokenEndpoint: oauth.tokenEndpoint,
      clientId: oauth.clients.public.clientId,
    });
    expect(put.status).toBe(201);
    const res = await authorize(newUser(), 'token-only');
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'invalid_request' });
  });

  it('works for a provider registered by issuer: the discovered authorization endpoint, with its resource', async () => {
    const put = await keeper.call('PUT', '/v1/providers/by-issuer', {
      issuer: oauth.issuer,
      clientId: oauth.clients.public.clientId,
      resource: MCP_RESOURCE,
      scope: 'mcp:read',
    });
    expect(put.status).toBe(201);
    const res = await authorize(newUser(), 'by-issuer', { scope: 'mcp:write' });
    expect(res.status, res.text).toBe(201);
    const url = new URL((res.body as { authorizationUrl: string }).authorizationUrl);
    expect(`${url.origin}${url.pathname}`).toBe(`${oauth.issuer}/auth`);
    expect(url.searchParams.get('client_id')).toBe('tk-public');
    expect(url.searchParams.get('resource')).toBe(MCP_RESOURCE);
    expect(url.searchParams.get('scope')).toBe('mcp:write');
  });
});

describe('against a scripted authorization server', () => {
  let scripted: ScriptedAs[] = [];
  let servers: McpServer[] = [];

  afterAll(async () => {
    await Promise.all([...scripted, ...servers].map((s) => s.stop()));
  });

  async function mcpBehind(options: Parameters<typeof startScriptedAs>[0]) {
    const as = await startScriptedAs(options);
    const server = await startMcpServer();
    server.protect({
      issuer: as.issuer,
      introspect: async (token) => ({ active: as.accepts(token, server.url), aud: server.url }),
    });
    scripted = [...scripted, as];
    servers = [...servers, server];
    return { as, server };
  }

  it('without S256 in code_challenge_methods_supported: 400 discovery_failed', async () => {
    const { server } = await mcpBehind({ codeChallengeMethods: ['plain'], registrationEndpoint: true });
    const res = await keeper.call('PUT', '/v1/providers/no-s256', { mcpServerUrl: server.url });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'discovery_failed' });
    expect((res.body as { error_description: string }).error_description).toMatch(/S256/u);
    expect((await keeper.call('GET', '/v1/providers/no-s256')).status).toBe(404);
  });

  it('with no way to register: 400 client_registration_unavailable, asking for a clientId', async () => {
    const { server } = await mcpBehind({});
    const res = await keeper.call('PUT', '/v1/providers/no-reg', { mcpServerUrl: server.url });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'client_registration_unavailable' });
    expect((res.body as { error_description: string }).error_description).toMatch(/clientId/u);
    expect((await keeper.call('GET', '/v1/providers/no-reg')).status).toBe(404);
  });

  it('Client ID Metadata Document: the server fetches and checks the keeper’s document; the flow completes and refreshes with the resource', async () => {
    const { as, server } = await mcpBehind({
      clientIdMetadataDocumentSupported: true,
      registrationEndpoint: true,
    });
    const put = await keeper.call('PUT', '/v1/providers/cimd', { mcpServerUrl: server.url });
    expect(put.status, put.text).toBe(201);
    const documentUrl = `${keeper.url}/oauth/client-metadata/cimd`;
    expect(put.body).toMatchObject({
      registration: 'metadata_document',
      clientId: documentUrl,
      hasClientSecret: false,
    });

    const userId = newUser();
    const callback = await startAndFollow(userId, {}, 'cimd');
    expect(as.documents).toEqual([expect.objectContaining({ url: documentUrl, status: 200 })]);
    expect(as.documents[0]?.problem).toBeUndefined();
    expect(as.documents[0]?.document).toMatchObject({
      client_id: documentUrl,
      redirect_uris: [`${keeper.url}/oauth/callback/cimd`],
      token_endpoint_auth_method: 'none',
    });
    expect((await visit(callback)).status).toBe(200);
    const first = (await keeper.call('GET', `/v1/sessions/${userId}/cimd/token`)).body as {
      access_token: string;
    };
    expect((await server.call(first.access_token)).status).toBe(200);
    const forced = (await keeper.call('GET', `/v1/sessions/${userId}/cimd/token?force=true`)).body as {
      access_token: string;
    };
    expect(forced.access_token).not.toBe(first.access_token);
    expect((await server.call(forced.access_token)).status).toBe(200);
    expect(as.tokenRequests.map((r) => [r.grant_type, r.client_id, r.resource])).toEqual([
      ['authorization_code', documentUrl, server.url],
      ['refresh_token', documentUrl, server.url],
    ]);
  }, 30_000);
});

describe('the client metadata documents', () => {
  it('are public JSON, one per provider, each naming only that provider’s callback', async () => {
    for (const providerId of ['mcp-dcr', 'cimd']) {
      const res = await fetch(`${keeper.url}/oauth/client-metadata/${providerId}`);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({
        client_id: `${keeper.url}/oauth/client-metadata/${providerId}`,
        client_name: 'tokenkeeper',
        client_uri: keeper.url,
        redirect_uris: [`${keeper.url}/oauth/callback/${providerId}`],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      });
    }
  });

  it('exist only for known providers, and the shared paths of old are gone (404)', async () => {
    const unknown = await fetch(`${keeper.url}/oauth/client-metadata/nobody`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: 'provider_not_found' });
    for (const path of ['/oauth/client-metadata', '/oauth/callback']) {
      const res = await fetch(`${keeper.url}${path}?state=x&code=y`);
      expect(res.status, path).toBe(404);
      expect(await res.json()).toMatchObject({ error: 'not_found' });
    }
  });
});

describe('the provider’s redirect URI', () => {
  it('is shown in the provider’s answer, under the keeper’s public URL, and is what authorize sends', async () => {
    const provider = (await keeper.call('GET', '/v1/providers/mcp-dcr')).body as { redirectUri: string };
    expect(provider.redirectUri).toBe(`${keeper.url}/oauth/callback/mcp-dcr`);
    const listed = (await keeper.call('GET', '/v1/providers')).body as {
      providers: { providerId: string; redirectUri: string }[];
    };
    expect(listed.providers.find((p) => p.providerId === 'mcp-dcr')?.redirectUri).toBe(provider.redirectUri);
    const started = await authorize(newUser());
    const sent = new URL((started.body as { authorizationUrl: string }).authorizationUrl);
    expect(sent.searchParams.get('redirect_uri')).toBe(provider.redirectUri);
  });
});
