import { describe, expect, it } from 'vitest';
import {
  connect,
  eventsFor,
  getToken,
  keeperPerTest,
  metadata,
  record,
  retryAfterOf,
  type ServedToken,
  SteppedClock,
} from '../support/keeper-flows.js';
import type { OAuthServer } from '../support/oauth-server.js';
import type { TokenFault } from '../support/token-proxy.js';

/**
 * The fault matrix: the token endpoint (behind the recording, fault-injecting proxy in front of
 * oidc-provider) fails in every way we know of, and for each we check what the keeper stores, what
 * the token route answers meanwhile, and that the session recovers on its own once the endpoint is
 * healthy. Only `invalid_grant` ends a session; `invalid_client` flags the provider.
 *
 * Each case runs on a fresh keeper (dynalite in memory) with a frozen clock the test steps, so
 * backoff needs no real waiting and Retry-After values can be compared exactly. Access tokens live
 * 300 s, inside the 600 s refresh window: every session is due for the sweep.
 */

let oauth: OAuthServer;
const { freshKeeper } = keeperPerTest({ accessTokenTtl: 300 }, (server) => {
  oauth = server;
});

/** First-failure backoff (DEFAULT_BACKOFF: 15 s base, jitter in [½, 1]). */
const FIRST_BACKOFF_MS: [number, number] = [7_500, 15_000];
const SECOND_BACKOFF_MS: [number, number] = [15_000, 30_000];

interface TransientCase {
  name: string;
  /** The fault for a request at keeper time `now` (HTTP-date Retry-After depends on it). */
  fault: (now: number) => TokenFault;
  /** `lastError.code` the keeper records. */
  code: string;
  /** Seconds the provider asked us to wait; absent: our own exponential backoff. */
  retryAfter?: number;
  /** HTTP timeout for this case (the hang needs a short one). */
  timeoutMs?: number;
}

const status = (s: number, headers?: Record<string, string>) => (): TokenFault => ({
  kind: 'status',
  status: s,
  headers,
});

const TRANSIENT: TransientCase[] = [
  { name: '500 Internal Server Error', fault: status(500), code: 'http_500' },
  { name: '502 Bad Gateway', fault: status(502), code: 'http_502' },
  { name: '503 Service Unavailable', fault: status(503), code: 'http_503' },
  { name: '504 Gateway Timeout', fault: status(504), code: 'http_504' },
  {
    name: '503 with Retry-After',
    fault: status(503, { 'retry-after': '45' }),
    code: 'http_503',
    retryAfter: 45,
  },
  { name: '429 without Retry-After', fault: status(429), code: 'http_429' },
  {
    name: '429 with Retry-After in seconds',
    fault: status(429, { 'retry-after': '120' }),
    code: 'http_429',
    retryAfter: 120,
  },
  {
    name: '429 with Retry-After as an HTTP date',
    fault: (now) => ({
      kind: 'status',
      status: 429,
      headers: { 'retry-after': new Date(now + 90_000).toUTCString() },
    }),
    code: 'http_429',
    retryAfter: 90,
  },
  // The request was sent and no answer came: the provider may have rotated, so the outcome is unknown.
  { name: 'a connection reset', fault: () => ({ kind: 'reset' }), code: 'grant_outcome_unknown' },
  {
    name: "a hang past the grant's life",
    fault: () => ({ kind: 'hang' }),
    code: 'grant_outcome_unknown',
    timeoutMs: 600,
  },
  { name: 'malformed JSON', fault: () => ({ kind: 'malformed-json' }), code: 'invalid_response' },
  {
    // Only invalid_grant / bad_refresh_token in a 200 body end the grant; any other code is transient.
    name: 'a 200 carrying an OAuth error body',
    fault: () => ({ kind: 'oauth-error-200', error: 'temporarily_unavailable' }),
    code: 'temporarily_unavailable',
  },
  {
    name: 'a 200 missing access_token',
    fault: () => ({ kind: 'missing-access-token' }),
    code: 'invalid_response',
  },
  {
    name: 'an oversized body (5 MiB > 256 KiB cap)',
    fault: () => ({ kind: 'oversized' }),
    code: 'response_too_large',
  },
  {
    name: 'a 400 with a non-fatal OAuth error (temporarily_unavailable)',
    fault: () => ({ kind: 'oauth-error', status: 400, error: 'temporarily_unavailable' }),
    code: 'temporarily_unavailable',
  },
];

function expectDelay(delayMs: number, c: { retryAfter?: number }, range: [number, number]): void {
  if (c.retryAfter !== undefined) expect(delayMs).toBe(c.retryAfter * 1000);
  else {
    expect(delayMs).toBeGreaterThanOrEqual(range[0]);
    expect(delayMs).toBeLessThanOrEqual(range[1]);
  }
}

describe('fault matrix: transient failures keep the session and back off', () => {
  it.each(TRANSIENT)('$name', async (c) => {
    const clock = new SteppedClock();
    const stack = await freshKeeper(
      clock,
      c.timeoutMs
        ? {
            TOKENKEEPER_HTTP_TIMEOUT_MS: String(c.timeoutMs),
            TOKENKEEPER_GRANT_TIMEOUT_MS: String(c.timeoutMs),
          }
        : {},
    );
    const s = await connect(stack, oauth);
    const original = s.tokens.access_token;
    oauth.proxy.reset();

    // --- the failure, through a forced call (the caller needs a new token now) ---
    oauth.proxy.setFault(c.fault(clock.now()));
    const forced = await getToken(stack, s, '?force=true');
    expect(forced.status).toBe(503);
    expect(forced.body).toMatchObject({ error: 'refresh_unavailable' });

    const failed = await record(stack, s);
    expect(failed).toBeDefined();
    if (!failed) return;
    expect(failed.status).toBe('active');
    expect(failed.failureCount).toBe(1);
    expect(failed.lastError?.code).toBe(c.code);
    expect(failed.lastError?.at).toBe(clock.now());
    expect(failed.version).toBe(1);
    expect(failed.leaseOwner).toBeUndefined();
    const nextAttemptAt = failed.nextAttemptAt as number;
    expectDelay(nextAttemptAt - clock.now(), c, FIRST_BACKOFF_MS);
    expect(retryAfterOf(forced)).toBe(Math.ceil((nextAttemptAt - clock.now()) / 1000));

    const meta = await metadata(stack, s);
    expect(meta).toMatchObject({ status: 'active', failureCount: 1, refreshable: true });
    expect(meta.lastError?.code).toBe(c.code);
    expect(meta.nextAttemptAt).toBe(Math.floor(nextAttemptAt / 1000));

    // One request reached the proxy; it was answered by the fault, so the refresh token was not consumed.
    expect(oauth.proxy.requests).toHaveLength(1);
    expect(oauth.proxy.requests[0]).toMatchObject({ forwarded: false, refreshToken: s.tokens.refresh_token });

    // --- meanwhile ---
    // A caller the current token still satisfies gets it.
    const plain = await getToken(stack, s);
    expect(plain.status).toBe(200);
    expect((plain.body as ServedToken).access_token).toBe(original);
    // A caller who needs a refresh gets 503 with the time of the next attempt, and no request is made.
    for (const query of ['?minValidity=400', '?force=true']) {
      const res = await getToken(stack, s, query);
      expect(res.status).toBe(503);
      expect(res.body).toMatchObject({ error: 'refresh_unavailable' });
      expect(retryAfterOf(res)).toBe(Math.ceil((nextAttemptAt - clock.now()) / 1000));
    }
    // A sweep inside the backoff leaves it alone.
    const early = await stack.sweep();
    expect(early).toMatchObject({ due: 1, refreshed: 0, skipped: 1 });
    expect(oauth.proxy.requests).toHaveLength(1);

    // --- still failing at the next attempt: the count grows, so does the delay ---
    clock.set(nextAttemptAt);
    oauth.proxy.setFault(c.fault(clock.now()));
    const second = await stack.sweep();
    expect(second).toMatchObject({ due: 1, refreshed: 0, failedTransient: 1 });
    const failedAgain = (await record(stack, s)) as NonNullable<typeof failed>;
    expect(failedAgain).toMatchObject({ status: 'active', failureCount: 2, version: 1 });
    expect(failedAgain.lastError?.code).toBe(c.code);
    expectDelay((failedAgain.nextAttemptAt as number) - clock.now(), c, SECOND_BACKOFF_MS);
    expect(oauth.proxy.requests).toHaveLength(2);
    expect(oauth.proxy.refreshRedemptions().size).toBe(0);

    // --- healthy again: the next sweep after the backoff recovers it, with no help ---
    oauth.proxy.setFault(null);
    clock.set((failedAgain.nextAttemptAt as number) + 1);
    const healed = await stack.sweep();
    expect(healed).toMatchObject({ due: 1, refreshed: 1, failedTransient: 0 });
    const recovered = await metadata(stack, s);
    expect(recovered).toMatchObject({
      status: 'active',
      failureCount: 0,
      lastError: null,
      nextAttemptAt: null,
    });
    expect(recovered.refreshedAt).toBe(clock.seconds());
    expect((await record(stack, s))?.version).toBe(2);
    const fresh = await getToken(stack, s, '?minValidity=200');
    expect(fresh.status).toBe(200);
    const served = (fresh.body as ServedToken).access_token;
    expect(served).not.toBe(original);
    expect((await oauth.introspect(served)).active).toBe(true);
    // The refresh token was presented upstream exactly once, by the successful attempt.
    expect(oauth.proxy.refreshRedemptions().get(s.tokens.refresh_token)).toBe(1);
    expect(oauth.proxy.reuseCount()).toBe(0);
    // Exactly one recovery signal, naming what failed.
    const events = eventsFor(stack.logs, 'SessionRecovered', s);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ previousError: c.code, failureCount: 2 });
    expect(eventsFor(stack.logs, 'SessionReauthorizationRequired', s)).toHaveLength(0);
  });
});

describe('fault matrix: invalid_client flags the provider and keeps its sessions', () => {
  it.each([
    { status: 401, error: 'invalid_client' },
    { status: 400, error: 'invalid_client' },
    { status: 400, error: 'unauthorized_client' },
  ])('$status $error', async ({ status: httpStatus, error }) => {
    const clock = new SteppedClock();
    const stack = await freshKeeper(clock);
    const s = await connect(stack, oauth);
    const sibling = await connect(stack, oauth);
    oauth.proxy.reset();
    expect(
      ((await stack.call('GET', '/v1/providers/mcp')).body as Record<string, unknown>).clientRejectedAt,
    ).toBe(undefined);

    oauth.proxy.setFault({ kind: 'oauth-error', status: httpStatus, error });
    const forced = await getToken(stack, s, '?force=true');
    expect(forced.status).toBe(503);
    expect(forced.body).toMatchObject({ error: 'refresh_unavailable' });

    const failed = (await record(stack, s)) as NonNullable<Awaited<ReturnType<typeof record>>>;
    expect(failed).toMatchObject({ status: 'active', failureCount: 1, version: 1 });
    expect(failed.lastError?.code).toBe(error);
    const nextAttemptAt = failed.nextAttemptAt as number;
    expectDelay(nextAttemptAt - clock.now(), {}, FIRST_BACKOFF_MS);
    // A rejected client opens the provider's circuit at once (issue 11): the caller may come back at
    // its first probe (2 s base, jitter in [½, 1]), sooner than the session's own backoff.
    const provider = await stack.call('GET', '/v1/providers/mcp');
    const health = (provider.body as { health: { state: string; nextProbeAt: number } }).health;
    expect(health.state).toBe('open');
    expect(retryAfterOf(forced)).toBeGreaterThanOrEqual(1);
    expect(retryAfterOf(forced)).toBeLessThanOrEqual(2);

    // The provider is flagged...
    expect(provider.status).toBe(200);
    expect((provider.body as Record<string, unknown>).clientRejectedAt).toBe(clock.seconds());
    // ...and its sessions are untouched: the sibling was not refreshed, failed or ended.
    const siblingMeta = await metadata(stack, sibling);
    expect(siblingMeta).toMatchObject({
      status: 'active',
      failureCount: 0,
      lastError: null,
      refreshable: true,
    });
    expect(((await getToken(stack, sibling)).body as ServedToken).access_token).toBe(
      sibling.tokens.access_token,
    );
    // Meanwhile the failing session still serves its valid token and refuses what needs a refresh.
    expect(((await getToken(stack, s)).body as ServedToken).access_token).toBe(s.tokens.access_token);
    expect((await getToken(stack, s, '?minValidity=400')).status).toBe(503);
    expect(oauth.proxy.requests).toHaveLength(1);

    // The client is fixed at the provider: both sessions refresh on the next sweep.
    oauth.proxy.setFault(null);
    clock.set(nextAttemptAt + 1);
    const healed = await stack.sweep();
    expect(healed).toMatchObject({ due: 2, refreshed: 2 });
    for (const key of [s, sibling]) {
      expect(await metadata(stack, key)).toMatchObject({
        status: 'active',
        failureCount: 0,
        lastError: null,
      });
    }
    expect(oauth.proxy.reuseCount()).toBe(0);
    expect(eventsFor(stack.logs, 'SessionRecovered', s)).toHaveLength(1);
    expect(eventsFor(stack.logs, 'SessionRecovered', sibling)).toHaveLength(0);
    // A grant that works again clears the provider's flag.
    expect(
      ((await stack.call('GET', '/v1/providers/mcp')).body as Record<string, unknown>).clientRejectedAt,
    ).toBe(undefined);
  });
});

describe('fault matrix: invalid_grant ends the session (and only it does)', () => {
  it.each([
    { name: '400 invalid_grant', fault: { kind: 'oauth-error', status: 400, error: 'invalid_grant' } },
    { name: '200 carrying invalid_grant', fault: { kind: 'oauth-error-200', error: 'invalid_grant' } },
    // GitHub answers a dead refresh token with HTTP 200 {"error":"bad_refresh_token"}.
    {
      name: '200 carrying bad_refresh_token (GitHub)',
      fault: { kind: 'oauth-error-200', error: 'bad_refresh_token' },
    },
  ] as const)(
    '$name: reauthorization_required, kept, out of the sweep, 409 on the token route',
    async (c) => {
      const clock = new SteppedClock();
      const stack = await freshKeeper(clock);
      const s = await connect(stack, oauth);
      const other = await connect(stack, oauth);
      oauth.proxy.reset();

      oauth.proxy.setFault({ ...c.fault, times: 1 });
      const forced = await getToken(stack, s, '?force=true');
      expect(forced.status).toBe(409);
      expect(forced.body).toMatchObject({ error: 'reauthorization_required' });

      const dead = (await record(stack, s)) as NonNullable<Awaited<ReturnType<typeof record>>>;
      expect(dead).toMatchObject({ status: 'reauthorization_required', failureCount: 1, version: 1 });
      expect(dead.lastError?.code).toBe(c.fault.error);
      expect(dead.nextAttemptAt).toBeUndefined();
      expect(dead.leaseOwner).toBeUndefined();
      // Kept: its metadata is still there, it is just not refreshable.
      expect(await metadata(stack, s)).toMatchObject({
        status: 'reauthorization_required',
        refreshable: false,
        failureCount: 1,
        nextAttemptAt: null,
      });
      // Every token request now answers 409, even one the old access token would have satisfied.
      for (const query of ['', '?minValidity=0', '?minValidity=400', '?force=true']) {
        const res = await getToken(stack, s, query);
        expect(res.status).toBe(409);
        expect(res.body).toMatchObject({ error: 'reauthorization_required' });
      }
      expect(eventsFor(stack.logs, 'SessionReauthorizationRequired', s)).toHaveLength(1);

      // The endpoint is healthy again: the dead session stays dead and its refresh token is never
      // presented again; the other session of the same provider is refreshed as usual.
      clock.advance(3_600_000);
      const summary = await stack.sweep();
      expect(summary).toMatchObject({ due: 1, refreshed: 1, reauthorizationRequired: 0 });
      expect((await metadata(stack, s)).status).toBe('reauthorization_required');
      expect(oauth.proxy.requests.filter((r) => r.refreshToken === s.tokens.refresh_token)).toHaveLength(1);
      expect(await metadata(stack, other)).toMatchObject({ status: 'active', failureCount: 0 });
      expect(eventsFor(stack.logs, 'SessionReauthorizationRequired', s)).toHaveLength(1);

      // The way back is a new authorization, handed over by the backend.
      const again = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: s.userId });
      expect((await stack.call('PUT', `/v1/sessions/${s.userId}/mcp`, again)).status).toBe(200);
      expect(await metadata(stack, s)).toMatchObject({ status: 'active', failureCount: 0, lastError: null });
      expect(((await getToken(stack, s)).body as ServedToken).access_token).toBe(again.access_token);
    },
  );
});

describe('the reauthorization signal: at most once per transition, also under retries', () => {
  it('many runtimes hitting one invalid_grant at once publish SessionReauthorizationRequired once', async () => {
    const clock = new SteppedClock();
    const stack = await freshKeeper(clock);
    const s = await connect(stack, oauth);
    const peers = [stack.peer(), stack.peer(), stack.peer()];
    oauth.proxy.reset();
    // Every request would be answered invalid_grant; the lease lets only one through.
    oauth.proxy.setFault({ kind: 'oauth-error', status: 400, error: 'invalid_grant' });

    const outcomes: string[] = [];
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 12; i++) {
      const query = i % 2 === 0 ? '?force=true' : '?minValidity=400';
      calls.push(getToken(stack, s, query).then((r) => outcomes.push(String(r.status))));
      for (const peer of peers) {
        calls.push(
          peer.tokens.getToken(s, { minValidity: 400, force: i % 2 === 0 }).then(
            () => outcomes.push('200'),
            (err: Error) => outcomes.push(err.constructor.name),
          ),
        );
      }
    }
    const sweeps = [stack.sweep(), ...peers.map((p) => p.sweeper.sweep())];
    await Promise.all([...calls, ...sweeps]);

    expect(outcomes).toHaveLength(48);
    expect(new Set(outcomes)).toEqual(new Set(['409', 'ReauthorizationRequiredError']));
    expect(oauth.proxy.requests).toHaveLength(1);
    expect((await record(stack, s))?.status).toBe('reauthorization_required');
    expect(eventsFor(stack.logs, 'SessionReauthorizationRequired', s)).toHaveLength(1);

    // Redelivered sweeps and retried calls later on: still one event, no further request.
    clock.advance(600_000);
    await Promise.all([stack.sweep(), ...peers.map((p) => p.sweeper.sweep())]);
    expect((await getToken(stack, s, '?force=true')).status).toBe(409);
    expect(oauth.proxy.requests).toHaveLength(1);
    expect(eventsFor(stack.logs, 'SessionReauthorizationRequired', s)).toHaveLength(1);
  });

  it('a session that fails transiently several times, in several runtimes, publishes SessionRecovered once', async () => {
    const clock = new SteppedClock();
    const stack = await freshKeeper(clock);
    const s = await connect(stack, oauth);
    const peers = [stack.peer(), stack.peer()];
    oauth.proxy.reset();
    const nextAttempt = async () => ((await record(stack, s))?.nextAttemptAt as number) + 1;

    // Three failures, each met by a different runtime and path.
    oauth.proxy.setFault({ kind: 'status', status: 503, times: 1 });
    expect((await getToken(stack, s, '?force=true')).status).toBe(503);
    clock.set(await nextAttempt());
    oauth.proxy.setFault({ kind: 'reset', times: 1 });
    expect(await (peers[0] as (typeof peers)[0]).sweeper.sweep()).toMatchObject({ failedTransient: 1 });
    clock.set(await nextAttempt());
    oauth.proxy.setFault({ kind: 'status', status: 502, times: 1 });
    await expect(
      (peers[1] as (typeof peers)[0]).tokens.getToken(s, { minValidity: 400, force: false }),
    ).rejects.toThrow(/http_502/);
    expect((await record(stack, s))?.failureCount).toBe(3);
    expect(eventsFor(stack.logs, 'SessionRecovered', s)).toHaveLength(0);

    // Healthy: everybody piles in at once after the backoff.
    clock.set(await nextAttempt());
    const served: string[] = [];
    const calls: Promise<unknown>[] = [stack.sweep(), ...peers.map((p) => p.sweeper.sweep())];
    for (let i = 0; i < 8; i++) {
      calls.push(getToken(stack, s, '?force=true').then((r) => served.push(String(r.status))));
      for (const peer of peers) {
        calls.push(
          peer.tokens.getToken(s, { minValidity: 60, force: true }).then(
            () => served.push('200'),
            (err: Error) => served.push(err.message),
          ),
        );
      }
    }
    await Promise.all(calls);
    expect(new Set(served)).toEqual(new Set(['200']));
    expect(await metadata(stack, s)).toMatchObject({ status: 'active', failureCount: 0, lastError: null });
    const recovered = eventsFor(stack.logs, 'SessionRecovered', s);
    expect(recovered).toHaveLength(1);
    expect(recovered[0]).toMatchObject({ failureCount: 3, previousError: 'http_502' });

    // Later refreshes of a healthy session are not recoveries.
    expect((await getToken(stack, s, '?force=true')).status).toBe(200);
    await stack.sweep();
    expect(eventsFor(stack.logs, 'SessionRecovered', s)).toHaveLength(1);
    expect(oauth.proxy.reuseCount()).toBe(0);
  });
});
