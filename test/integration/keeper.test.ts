import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Connected,
  connect as connectSession,
  getToken,
  registerProviders,
  type ServedToken,
  type SessionMetadataView,
  metadata as sessionMetadata,
} from '../support/keeper-flows.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The whole keeper against a real OAuth server (oidc-provider, refresh-token rotation and reuse
 * detection on) and a real DynamoDB implementation (dynalite), through the local stack's HTTP API.
 * Access tokens live 300 s, inside the 600 s refresh window, so every session is due at once.
 */

let oauth: OAuthServer;
let keeper: TestStack;

/** The three providers of keeper-flows.ts, each registered fresh (201). */
async function register(stack: TestStack): Promise<void> {
  expect(Object.values(await registerProviders(stack, oauth))).toEqual([201, 201, 201]);
}

/** A real authorization-code + PKCE login, handed to the keeper as the provider returned it. */
function connect(
  providerId = 'mcp',
  stack = keeper,
  overrides: { expires_in?: number } = {},
): Promise<Connected> {
  return connectSession(stack, oauth, providerId, overrides);
}

function metadata(userId: string, providerId = 'mcp', stack = keeper): Promise<SessionMetadataView> {
  return sessionMetadata(stack, { userId, providerId });
}

const SCHEDULED_ENV = {
  TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '60',
  TOKENKEEPER_REFRESH_WINDOW_SECONDS: '600',
  TOKENKEEPER_SWEEP_BUDGET_SECONDS: '30',
  // A grant's life shorter than a caller's wait (HTTP timeout 2 s + 2 s): a hang ends inside the call.
  TOKENKEEPER_GRANT_TIMEOUT_MS: '2000',
};

function token(userId: string, query = '', providerId = 'mcp', stack = keeper) {
  return getToken(stack, { userId, providerId }, query);
}

beforeAll(async () => {
  oauth = await startOAuthServer({ accessTokenTtl: 300 });
  // A 1-minute schedule, so 5-minute tokens are kept fresh by the sweep (refreshMode 'scheduled');
  // with the default 5-minute schedule they would be served on demand.
  keeper = await startTestStack({ env: SCHEDULED_ENV });
  await register(keeper);
});

afterAll(async () => {
  await keeper?.stop();
  await oauth?.stop();
});

describe('scheduled sweep against oidc-provider', () => {
  it('refreshes every due session and persists each rotated refresh token (no idle expiry)', async () => {
    const sessions = [await connect('mcp'), await connect('mcp-post'), await connect('mcp-public')];
    oauth.proxy.reset();

    const first = await keeper.sweep();
    expect(first.refreshed).toBeGreaterThanOrEqual(3);
    expect(first.failedTransient).toBe(0);
    const afterFirst = oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token');

    const second = await keeper.sweep();
    // The figures the closing notes quote: `npx vitest run test/integration/keeper.test.ts`.
    console.log(
      `sweep summaries against oidc-provider: first ${JSON.stringify(first)}; second ${JSON.stringify(second)}`,
    );
    expect(second.refreshed).toBeGreaterThanOrEqual(3);
    // The second sweep presented the refresh tokens rotated by the first one: none was reused.
    expect(oauth.proxy.reuseCount()).toBe(0);
    const afterSecond = oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token');
    expect(afterSecond.length).toBeGreaterThan(afterFirst.length);

    for (const s of sessions) {
      const meta = await metadata(s.userId, s.providerId);
      expect(meta.status).toBe('active');
      expect(meta.refreshedAt).not.toBeNull();
      const served = await token(s.userId, '', s.providerId);
      expect(served.status).toBe(200);
      const introspection = await oauth.introspect((served.body as ServedToken).access_token);
      expect(introspection.active).toBe(true);
    }
    // The RFC 8707 resource went with each refresh of the provider that has one.
    const resources = afterSecond
      .filter((r) => r.clientId === oauth.clients.basic.clientId)
      .map((r) => r.resource);
    expect(resources.length).toBeGreaterThan(0);
    expect(new Set(resources)).toEqual(new Set([MCP_RESOURCE]));
  });

  it('keeps sessions fresh across a restart of the local stack (data persisted, keys kept)', async () => {
    const persisted = await startTestStack({ persist: true });
    const dataDir = persisted.dataDir;
    await register(persisted);
    const s = await connect('mcp', persisted);
    const before = (await token(s.userId, '', 'mcp', persisted)).body as ServedToken;
    await persisted.stop({ keepData: true });

    const restarted = await startTestStack({ persist: true, dataDir });
    try {
      const summary = await restarted.sweep();
      console.log(`sweep summary after a restart: ${JSON.stringify(summary)}`);
      expect(summary.refreshed).toBeGreaterThanOrEqual(1);
      const after = await token(s.userId, '', 'mcp', restarted);
      expect(after.status).toBe(200);
      expect((after.body as ServedToken).access_token).not.toBe(before.access_token);
      expect((await oauth.introspect((after.body as ServedToken).access_token)).active).toBe(true);
    } finally {
      await restarted.stop();
    }
  });
});

describe('concurrency against reuse detection', () => {
  it('many concurrent on-demand and forced calls plus overlapping sweeps: zero reuse, no lost session', async () => {
    // Sessions handed over 30 s before expiry: on-demand calls wanting 60 s must refresh.
    const sessions = await Promise.all(
      Array.from({ length: 5 }, () => connect('mcp', keeper, { expires_in: 30 })),
    );
    oauth.proxy.reset();
    const peers = [keeper.peer(), keeper.peer()];
    const served: string[] = [];
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 60; i++) {
      const s = sessions[i % sessions.length] as { userId: string };
      const force = i % 3 === 0;
      calls.push(
        token(s.userId, force ? '?force=true' : '?minValidity=60').then((r) => {
          expect(r.status).toBe(200);
          served.push((r.body as ServedToken).access_token);
        }),
      );
      // Other "Lambdas" serving tokens for the same sessions, with their own in-process state.
      const peer = peers[i % peers.length] as (typeof peers)[number];
      calls.push(
        peer.tokens
          .getToken({ userId: s.userId, providerId: 'mcp' }, { minValidity: 60, force })
          .then((t) => served.push(t.access_token)),
      );
    }
    calls.push(keeper.sweep(), ...peers.map((p) => p.sweeper.sweep()));
    await Promise.all(calls);

    expect(oauth.proxy.reuseCount()).toBe(0);
    for (const s of sessions) {
      const meta = await metadata(s.userId);
      expect(meta.status).toBe('active');
      expect(meta.failureCount).toBe(0);
    }
    // Every token handed out is still active at the provider: no grant was revoked by a reuse.
    for (const t of new Set(served)) expect((await oauth.introspect(t)).active).toBe(true);
    const grants = oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token' && r.forwarded).length;
    // 120 calls (40 forced) and three sweeps over five sessions collapse into far fewer grants.
    expect(grants).toBeLessThan(60);
  });
});

describe('failure handling', () => {
  it('invalid_grant: the session becomes reauthorization_required, is kept, and the token route answers 409', async () => {
    const s = await connect('mcp');
    const before = (await token(s.userId)).body as ServedToken;
    // The user revokes the grant at the provider (revoking the access token kills the whole grant).
    const revoke = await fetch(oauth.revocationEndpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${oauth.clients.basic.clientId}:${oauth.clients.basic.clientSecret}`).toString('base64')}`,
      },
      body: new URLSearchParams({ token: before.access_token }),
    });
    expect(revoke.status).toBe(200);

    const forced = await token(s.userId, '?force=true');
    expect(forced.status).toBe(409);
    expect(forced.body).toMatchObject({ error: 'reauthorization_required' });
    const meta = await metadata(s.userId);
    expect(meta.status).toBe('reauthorization_required');
    expect(meta.refreshable).toBe(false);
    expect(meta.lastError?.code).toBe('invalid_grant');
    expect((await token(s.userId)).status).toBe(409);
    // Out of the index: a sweep does not present its refresh token again.
    expect(oauth.proxy.refreshRedemptions().get(s.tokens.refresh_token)).toBe(1);
    await keeper.sweep();
    expect(oauth.proxy.refreshRedemptions().get(s.tokens.refresh_token)).toBe(1);
    expect((await metadata(s.userId)).failureCount).toBe(meta.failureCount);
    const events = keeper.logs.filter((l) => l.message === 'event SessionReauthorizationRequired');
    expect(
      events.some((e) => (e.extra?.detail as { userId?: string } | undefined)?.userId === s.userId),
    ).toBe(true);
  });

  it('a token endpoint answering 503 keeps the session active with backoff; it recovers when healthy', async () => {
    const s = await connect('mcp');
    oauth.proxy.setFault({ kind: 'status', status: 503, body: 'down for maintenance' });
    const forced = await token(s.userId, '?force=true');
    expect(forced.status).toBe(503);
    expect(forced.body).toMatchObject({ error: 'refresh_unavailable' });
    expect(Number(forced.headers.get('retry-after'))).toBeGreaterThan(0);
    const meta = await metadata(s.userId);
    expect(meta.status).toBe('active');
    expect(meta.failureCount).toBe(1);
    expect(meta.lastError?.code).toBe('http_503');
    expect(meta.nextAttemptAt).toBeGreaterThan(Math.floor(Date.now() / 1000));
    // Meanwhile the still-valid token is served to callers who can use it.
    const plain = await token(s.userId);
    expect(plain.status).toBe(200);
    oauth.proxy.setFault(null);
  });

  it("a token endpoint that hangs past the grant's life keeps the session active with backoff", async () => {
    const s = await connect('mcp');
    oauth.proxy.setFault({ kind: 'hang' });
    const forced = await token(s.userId, '?force=true');
    oauth.proxy.setFault(null);
    expect(forced.status).toBe(503);
    const meta = await metadata(s.userId);
    expect(meta.status).toBe('active');
    expect(meta.lastError?.code).toBe('grant_outcome_unknown');
    expect(meta.nextAttemptAt).not.toBeNull();
  });
});

describe('delete', () => {
  it('revokes at the provider, then the session is gone', async () => {
    const s = await connect('mcp-post');
    const served = (await token(s.userId, '', 'mcp-post')).body as ServedToken;
    expect((await oauth.introspect(served.access_token)).active).toBe(true);
    const del = await keeper.call('DELETE', `/v1/sessions/${s.userId}/mcp-post`);
    expect(del.status).toBe(204);
    expect((await keeper.call('GET', `/v1/sessions/${s.userId}/mcp-post`)).status).toBe(404);
    expect((await keeper.call('DELETE', `/v1/sessions/${s.userId}/mcp-post`)).status).toBe(404);
    // Revoking the refresh token ended the grant, and with it the access token.
    expect((await oauth.introspect(served.access_token)).active).toBe(false);
  });
});
