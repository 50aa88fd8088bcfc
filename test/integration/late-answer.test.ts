import { describe, expect, it } from 'vitest';
import type { SessionRecord } from '../../functions/core/store/store.js';
import {
  type Connected,
  connect,
  eventsFor,
  getToken,
  keeperPerTest,
  record,
  type ServedToken,
  SkewedClock,
  storedRefreshToken,
} from '../support/keeper-flows.js';
import type { OAuthServer } from '../support/oauth-server.js';
import type { TestStack } from '../support/stack.js';

/**
 * A slow provider: oidc-provider (refresh-token rotation and reuse detection on) behind a proxy that
 * forwards each grant at once — so the provider redeems and rotates at once — but holds its answer
 * longer than the keeper's caller waits (the HTTP timeout of 2 s plus 2 s). The caller may get 503;
 * the grant stays open for its life (30 s) and its late answer is committed, so no refresh token is
 * presented twice and no session dies.
 */

const SESSIONS = 4;
/** Longer than the caller's wait (TOKENKEEPER_HTTP_TIMEOUT_MS 2 s + 2 s), far inside the grant's life. */
const ANSWER_DELAY_MS = 5_000;

let oauth: OAuthServer;
const { freshKeeper } = keeperPerTest({ accessTokenTtl: 3600 }, (server) => {
  oauth = server;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Refresh-grant answers the provider gave with invalid_grant (each a reuse the provider detected). */
function invalidGrants(): number {
  return oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token' && r.status === 400).length;
}

/** Waits (bounded) until every forwarded grant has been answered by the provider. */
async function providerAnswered(count: number): Promise<void> {
  const until = Date.now() + 15_000;
  const answered = () =>
    oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token' && r.status !== undefined).length;
  while (answered() < count && Date.now() < until) await sleep(50);
}

/** Waits (bounded) until each session's version moved past 1 (a commit), or gives up. */
async function committed(stack: TestStack, sessions: readonly Connected[], waitMs: number): Promise<void> {
  const until = Date.now() + waitMs;
  for (;;) {
    const versions = await Promise.all(sessions.map(async (s) => (await record(stack, s))?.version));
    if (versions.every((v) => (v ?? 0) > 1) || Date.now() >= until) return;
    await sleep(100);
  }
}

interface Figures {
  reuses: number;
  invalidGrants: number;
  dead: number;
}

/** Every session, forced once more with a prompt provider: the figures the issue counts. */
async function afterwards(stack: TestStack, sessions: readonly Connected[]): Promise<Figures> {
  oauth.proxy.setAnswerDelay(0);
  let dead = 0;
  for (const s of sessions) {
    const res = await getToken(stack, s, '?force=true');
    if (res.status === 409 || (await record(stack, s))?.status === 'reauthorization_required') dead++;
  }
  return { reuses: oauth.proxy.reuseCount(), invalidGrants: invalidGrants(), dead };
}

describe('a provider that answers after the caller stopped waiting', () => {
  it('forced calls: 503 at the wait, the late answers are committed, 0 reuses, every session refreshable', async () => {
    const clock = new SkewedClock();
    const stack = await freshKeeper(clock, { TOKENKEEPER_HTTP_TIMEOUT_MS: '2000' });
    const sessions: Connected[] = [];
    for (let i = 0; i < SESSIONS; i++) sessions.push(await connect(stack, oauth, 'mcp'));
    oauth.proxy.reset();
    oauth.proxy.setAnswerDelay(ANSWER_DELAY_MS);

    const started = Date.now();
    const forced = await Promise.all(sessions.map((s) => getToken(stack, s, '?force=true')));
    const waitedMs = Date.now() - started;
    // The caller's wait ended before the answer: 503 with Retry-After, the grant still open.
    for (const res of forced) {
      expect(res.status).toBe(503);
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    }
    expect(waitedMs).toBeLessThan(ANSWER_DELAY_MS);
    await providerAnswered(SESSIONS);
    await committed(stack, sessions, 10_000);

    // The token served after the late commit is the provider's new one, and nothing was sent again.
    const issued = oauth.proxy.issuedTokens();
    for (const s of sessions) {
      const after = (await record(stack, s)) as SessionRecord;
      expect(after).toMatchObject({ status: 'active', version: 2, failureCount: 0 });
      expect(after.leaseOwner).toBeUndefined();
      const served = await getToken(stack, s);
      expect(served.status).toBe(200);
      const token = (served.body as ServedToken).access_token;
      expect(token).not.toBe(s.tokens.access_token);
      expect(issued.has(token)).toBe(true);
      expect(issued.has((await storedRefreshToken(stack, s)) as string)).toBe(true);
      expect((await oauth.introspect(token)).active).toBe(true);
    }
    expect(oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token')).toHaveLength(SESSIONS);

    const figures = await afterwards(stack, sessions);
    console.log(`late answers, forced path: ${JSON.stringify(figures)} of ${SESSIONS} sessions`);
    expect(figures).toEqual({ reuses: 0, invalidGrants: 0, dead: 0 });
    for (const s of sessions) expect((await record(stack, s))?.version).toBe(3);
  });

  it('the sweep: slots stop waiting at the sweep end, the late answers are committed, 0 reuses', async () => {
    const clock = new SkewedClock();
    // The sweep stops waiting after 5 s; the answers come after 6 s.
    const stack = await freshKeeper(clock, {
      TOKENKEEPER_HTTP_TIMEOUT_MS: '2000',
      TOKENKEEPER_SWEEP_BUDGET_SECONDS: '5',
    });
    const sessions: Connected[] = [];
    // Hour-long tokens (the sweep keeps them: refreshMode scheduled), then the clock moves on until
    // 30 s of them are left: all due.
    for (let i = 0; i < SESSIONS; i++) sessions.push(await connect(stack, oauth, 'mcp'));
    clock.advance((3600 - 30) * 1000);
    oauth.proxy.reset();
    oauth.proxy.setAnswerDelay(ANSWER_DELAY_MS + 1_000);

    const summary = await stack.sweep();
    console.log(`late answers, sweep: ${JSON.stringify(summary)}`);
    expect(summary.due).toBe(SESSIONS);
    await providerAnswered(SESSIONS);
    await committed(stack, sessions, 10_000);
    for (const s of sessions) {
      expect(await record(stack, s)).toMatchObject({ status: 'active', version: 2, failureCount: 0 });
    }

    // A later sweep (past any backoff) finds nothing left to present again.
    clock.advance(15 * 60_000);
    oauth.proxy.setAnswerDelay(0);
    await stack.sweep();
    const figures = await afterwards(stack, sessions);
    console.log(`late answers, sweep path: ${JSON.stringify(figures)} of ${SESSIONS} sessions`);
    expect(figures).toEqual({ reuses: 0, invalidGrants: 0, dead: 0 });
    for (const s of sessions) {
      expect(eventsFor(stack.logs, 'SessionReauthorizationRequired', s)).toHaveLength(0);
    }
  });

  it('a connection closed after the grant was sent: grant_outcome_unknown, nothing else claimed', async () => {
    const clock = new SkewedClock();
    const stack = await freshKeeper(clock, { TOKENKEEPER_HTTP_TIMEOUT_MS: '2000' });
    const s = await connect(stack, oauth, 'mcp');
    oauth.proxy.reset();
    // The provider redeems and rotates; the proxy then closes the keeper's connection unanswered.
    oauth.proxy.setFault({ kind: 'forward-then-reset', times: 1 });

    const res = await getToken(stack, s, '?force=true');
    expect(res.status).toBe(503);
    await providerAnswered(1);
    const after = (await record(stack, s)) as SessionRecord;
    // Recorded as unknown; no refresh, no dead grant claimed; the old refresh token is kept.
    expect(after).toMatchObject({ status: 'active', version: 1, failureCount: 1 });
    expect(after.lastError?.code).toBe('grant_outcome_unknown');
    expect(after.leaseOwner).toBeUndefined();
    expect(await storedRefreshToken(stack, s)).toBe(s.tokens.refresh_token);
    expect(eventsFor(stack.logs, 'SessionReauthorizationRequired', s)).toHaveLength(0);
    const counted = stack.logs.filter((l) => l.message.includes('outcome is unknown'));
    expect(counted).toHaveLength(1);
    expect(JSON.stringify(counted)).not.toContain(s.tokens.refresh_token);
    // The still-valid access token is served meanwhile.
    const plain = await getToken(stack, s, '?minValidity=10');
    expect(plain.status).toBe(200);
    expect((plain.body as ServedToken).access_token).toBe(s.tokens.access_token);
  });
});
