import { describe, expect, it, vi } from 'vitest';
import type { SessionRecord } from '../../functions/core/store/store.js';
import {
  type Connected,
  connect,
  eventsFor,
  forwardedGrants,
  getToken,
  keeperPerTest,
  record,
  retryAfterOf,
  type ServedToken,
  SkewedClock,
  storedRefreshToken,
} from '../support/keeper-flows.js';
import type { OAuthServer } from '../support/oauth-server.js';

/**
 * Crashes and time limits: a refresher that dies holding a lease, a grant that outlives its life
 * (the grant timeout), and a sweep whose Lambda runs out of time. The keeper's clock is real time plus a skew
 * the test steps, so waits still progress while a lease can be made to expire on demand.
 */

let oauth: OAuthServer;
const { freshKeeper } = keeperPerTest({ accessTokenTtl: 3600 }, (server) => {
  oauth = server;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a refresher that dies holding a lease', () => {
  it('delays that session by at most the lease time; its late commit is refused', async () => {
    const clock = new SkewedClock();
    // A 10 s lease: the test steps the clock past it while a call waits, and a call's own deadline
    // (29 s locally) must not end first.
    const stack = await freshKeeper(clock, {
      TOKENKEEPER_HTTP_TIMEOUT_MS: '1000',
      TOKENKEEPER_LEASE_SECONDS: '10',
    });
    const { config, store } = stack.stack.runtime;
    const leaseMs = config.leaseSeconds * 1000;
    const maxWaitMs = config.httpTimeoutMs + 2_000;
    // 30 s left: due for the sweep, and short of what a caller asking for 60 s needs.
    const s = await connect(stack, oauth, 'mcp', { expires_in: 30 });
    const before = (await record(stack, s)) as SessionRecord;
    oauth.proxy.reset();

    // The dead refresher: it took the lease and then vanished (Lambda killed mid-grant).
    const leasedAt = clock.now();
    const realStart = Date.now();
    const leased = await store.acquireLease(
      s,
      'dead-owner',
      { kind: 'forced', version: before.version },
      leasedAt,
      leasedAt + leaseMs,
    );
    expect(leased).toMatchObject({ leaseOwner: 'dead-owner', leaseUntil: leasedAt + leaseMs });

    // Callers the current token satisfies are served as usual.
    const plain = await getToken(stack, s, '?minValidity=10');
    expect(plain.status).toBe(200);
    expect((plain.body as ServedToken).access_token).toBe(s.tokens.access_token);

    // A caller that needs a refresh waits for the holder for a bounded time, then gets 503 with the
    // time the lease has left; it does not steal the lease.
    const started = Date.now();
    const waited = await getToken(stack, s, '?minValidity=60');
    const waitedMs = Date.now() - started;
    expect(waited.status).toBe(503);
    expect(waited.body).toMatchObject({ error: 'refresh_unavailable' });
    expect(waitedMs).toBeGreaterThanOrEqual(maxWaitMs - 50);
    expect(waitedMs).toBeLessThan(leaseMs);
    const retryAfter = retryAfterOf(waited);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(Math.ceil((leasedAt + leaseMs - clock.now()) / 1000) + 1);
    // A sweep leaves the leased session alone.
    expect(await stack.sweep()).toMatchObject({ due: 1, refreshed: 0, skipped: 1 });
    expect(oauth.proxy.requests).toHaveLength(0);

    // A caller that is still waiting when the lease runs out takes over and refreshes.
    const pending = getToken(stack, s, '?minValidity=60');
    await sleep(150);
    clock.advance(leaseMs);
    const taken = await pending;
    const realElapsed = Date.now() - realStart;
    expect(taken.status).toBe(200);
    const after = (await record(stack, s)) as SessionRecord;
    expect(after).toMatchObject({ status: 'active', version: before.version + 1, failureCount: 0 });
    expect(after.leaseOwner).toBeUndefined();
    expect(after.lastError).toBeUndefined();
    // The delay, on the keeper's clock, from the crash to the refresh: no more than the lease (the one
    // step of the clock) plus the real time this test spent in between; and not less than the lease.
    const delayMs = (after.refreshedAt as number) - leasedAt;
    expect(delayMs).toBeGreaterThanOrEqual(leaseMs);
    expect(delayMs).toBeLessThanOrEqual(leaseMs + realElapsed);
    expect(forwardedGrants(oauth)).toHaveLength(1);
    expect(oauth.proxy.reuseCount()).toBe(0);
    expect((await oauth.introspect((taken.body as ServedToken).access_token)).active).toBe(true);

    // The dead refresher comes back to life with an answer: its commit and its failure are refused.
    const zombie = await store.commitRefresh(
      s,
      'dead-owner',
      { accessToken: 'late-access', refreshToken: 'late-refresh', tokenType: 'Bearer', expiresAt: 1 },
      clock.now(),
    );
    expect(zombie).toBeUndefined();
    const zombieFailure = await store.recordFailure(s, 'dead-owner', {
      kind: 'reauthorization_required',
      error: { code: 'invalid_grant', description: 'late', at: clock.now() },
    });
    expect(zombieFailure).toBe(false);
    expect(await record(stack, s)).toEqual(after);
    expect(((await getToken(stack, s)).body as ServedToken).access_token).toBe(
      (taken.body as ServedToken).access_token,
    );
  });
});

describe('a grant that outlives its life', () => {
  it('is abandoned at the grant timeout, before the lease ends, as an unknown outcome; a token never consumed stays usable', async () => {
    const clock = new SkewedClock();
    const stack = await freshKeeper(clock, {
      TOKENKEEPER_HTTP_TIMEOUT_MS: '800',
      TOKENKEEPER_GRANT_TIMEOUT_MS: '800',
    });
    const { config, store } = stack.stack.runtime;
    const leaseMs = config.leaseSeconds * 1000;
    const s = await connect(stack, oauth, 'mcp', { expires_in: 30 });
    oauth.proxy.reset();
    const leases = vi.spyOn(store, 'acquireLease');

    // The endpoint takes the request and never answers (the proxy does not forward it).
    oauth.proxy.setFault({ kind: 'hang' });
    const started = Date.now();
    const res = await getToken(stack, s, '?force=true');
    const elapsed = Date.now() - started;
    expect(res.status).toBe(503);
    expect(elapsed).toBeGreaterThanOrEqual(config.grantTimeoutMs);
    expect(elapsed).toBeLessThan(leaseMs);

    const lease = (await leases.mock.results[0]?.value) as SessionRecord;
    const leaseUntil = lease.leaseUntil as number;
    const failed = (await record(stack, s)) as SessionRecord;
    expect(failed).toMatchObject({ status: 'active', version: 1, failureCount: 1 });
    // The keeper cannot tell a request the provider never saw from one whose answer was lost.
    expect(failed.lastError?.code).toBe('grant_outcome_unknown');
    expect(stack.logs.filter((l) => l.message.includes('outcome is unknown'))).toHaveLength(1);
    // Given up (and recorded) at about the grant timeout after taking the lease, long before it would
    // have ended; the lease is released.
    const gaveUpAfter = (failed.lastError?.at as number) - (leaseUntil - leaseMs);
    expect(gaveUpAfter).toBeGreaterThanOrEqual(config.grantTimeoutMs);
    expect(gaveUpAfter).toBeLessThan(config.grantTimeoutMs + 5_000);
    expect(failed.lastError?.at).toBeLessThan(leaseUntil - 20_000);
    expect(failed.leaseOwner).toBeUndefined();
    // The request never reached the provider: the refresh token is intact and still the session's.
    expect(oauth.proxy.requests).toMatchObject([{ fault: 'hang', forwarded: false }]);
    expect(await storedRefreshToken(stack, s)).toBe(s.tokens.refresh_token);
    leases.mockRestore();

    // Healthy again: after the backoff the same refresh token is redeemed, once.
    oauth.proxy.setFault(null);
    clock.advance((failed.nextAttemptAt as number) - clock.now() + 1);
    expect(await stack.sweep()).toMatchObject({ refreshed: 1 });
    expect(oauth.proxy.refreshRedemptions().get(s.tokens.refresh_token)).toBe(1);
    expect(oauth.proxy.reuseCount()).toBe(0);
    expect((await record(stack, s))?.version).toBe(2);
  });

  it("a response that arrives after the grant's life is never committed (the lost-response case)", async () => {
    const clock = new SkewedClock();
    const stack = await freshKeeper(clock, {
      TOKENKEEPER_HTTP_TIMEOUT_MS: '300',
      TOKENKEEPER_GRANT_TIMEOUT_MS: '300',
    });
    const s = await connect(stack, oauth, 'mcp', { expires_in: 30 });
    oauth.proxy.reset();

    // The proxy forwards the grant after 1 s: the provider redeems and rotates the refresh token,
    // but the grant's life ended at 300 ms. This is the one unavoidable loss — a request whose answer
    // never arrives cannot be told apart from one that was never processed — so all we assert is
    // that nothing is committed late and the outcome is recorded as unknown. (The next attempt
    // presents the consumed token and, with reuse detection, ends the session as
    // reauthorization_required: an explicit signal, never silence.) An answer that comes within the
    // grant's life, after the caller stopped waiting, is committed: test/integration/late-answer.test.ts.
    oauth.proxy.setLatency(1_000);
    const res = await getToken(stack, s, '?force=true');
    expect(res.status).toBe(503);
    const failed = (await record(stack, s)) as SessionRecord;
    expect(failed).toMatchObject({ status: 'active', version: 1, failureCount: 1 });
    expect(failed.lastError?.code).toBe('grant_outcome_unknown');

    // Wait until the provider has answered the abandoned request.
    const deadline = Date.now() + 5_000;
    while (oauth.proxy.requests[0]?.status === undefined && Date.now() < deadline) await sleep(50);
    expect(oauth.proxy.requests[0]).toMatchObject({ forwarded: true, status: 200 });
    await sleep(200);

    const later = (await record(stack, s)) as SessionRecord;
    expect(later).toEqual(failed);
    expect(later.refreshedAt).toBeUndefined();
    expect(await storedRefreshToken(stack, s)).toBe(s.tokens.refresh_token);
    expect(stack.logs.some((l) => l.message === 'session refreshed')).toBe(false);
    expect(((await getToken(stack, s, '?minValidity=10')).body as ServedToken).access_token).toBe(
      s.tokens.access_token,
    );
  });
});

describe("the sweep's time budget", () => {
  it('stops taking new work when the remaining time runs out, reports the backlog, leaves nothing half-written', async () => {
    const clock = new SkewedClock();
    const stack = await freshKeeper(clock, { TOKENKEEPER_REFRESH_CONCURRENCY: '2' });
    const { config, sweeper } = stack.stack.runtime;
    const reserveMs = config.httpTimeoutMs + 2_000;
    const providerIds = ['mcp', 'mcp-post', 'mcp-public'];
    const sessions: Connected[] = [];
    for (let i = 0; i < 12; i++) {
      sessions.push(await connect(stack, oauth, providerIds[i % 3], { expires_in: 30 }));
    }
    oauth.proxy.reset();
    // Each grant takes ~400 ms; the Lambda has room for the reserve plus about a second more.
    oauth.proxy.setLatency(400);
    const invokedAt = Date.now();
    const summary = await sweeper.sweep({
      remainingTimeMs: () => reserveMs + 1_200 - (Date.now() - invokedAt),
    });
    const returnedRequests = oauth.proxy.requests.length;
    console.log(`sweep budget: ${JSON.stringify(summary)}`);

    expect(summary.due).toBe(12);
    expect(summary.refreshed).toBeGreaterThanOrEqual(2);
    expect(summary.refreshed).toBeLessThanOrEqual(6);
    expect(summary.backlog).toBeGreaterThanOrEqual(6);
    expect(summary.failedTransient + summary.reauthorizationRequired + summary.skipped).toBe(0);
    expect(
      summary.refreshed +
        summary.backlog +
        summary.skipped +
        summary.failedTransient +
        summary.reauthorizationRequired,
    ).toBe(summary.due);

    // Nothing is in flight after it returned, and every session is either refreshed or untouched.
    await sleep(600);
    expect(oauth.proxy.requests).toHaveLength(returnedRequests);
    let refreshed = 0;
    for (const s of sessions) {
      const r = (await record(stack, s)) as SessionRecord;
      expect(r.leaseOwner).toBeUndefined();
      expect(r.leaseUntil).toBeUndefined();
      expect(r).toMatchObject({ status: 'active', failureCount: 0 });
      expect(r.lastError).toBeUndefined();
      expect(r.nextAttemptAt).toBeUndefined();
      if (r.version === 2) {
        refreshed++;
        expect(r.refreshedAt).toBeDefined();
        expect(r.expiresAt).toBeGreaterThan(Math.floor(clock.now() / 1000) + 3000);
      } else {
        expect(r.version).toBe(1);
        expect(r.refreshedAt).toBeUndefined();
        expect(await storedRefreshToken(stack, s)).toBe(s.tokens.refresh_token);
      }
    }
    expect(refreshed).toBe(summary.refreshed);
    expect(forwardedGrants(oauth)).toHaveLength(summary.refreshed);

    // The next sweep takes the backlog.
    oauth.proxy.setLatency(0);
    const next = await stack.sweep();
    expect(next).toMatchObject({ due: summary.backlog, refreshed: summary.backlog, backlog: 0 });
    expect(oauth.proxy.reuseCount()).toBe(0);
    for (const s of sessions) expect((await record(stack, s))?.version).toBe(2);
    expect(eventsFor(stack.logs, 'SessionRecovered', sessions[0] as Connected)).toHaveLength(0);
  });
});
