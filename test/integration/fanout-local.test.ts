import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type Connected,
  connect,
  forwardedGrants,
  record,
  registerProviders,
} from '../support/keeper-flows.js';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The local stack sweeps as the deployed stack does: POST /local/sweep runs the dispatcher, whose
 * slices go through the in-process queue to the refresh handler as SQS events. Against oidc-provider
 * (rotation, reuse detection), with slices of 3 sessions and 2 workers, so one sweep is many slices.
 */

let oauth: OAuthServer;
let keeper: TestStack;
const SESSIONS = 14;

beforeAll(async () => {
  oauth = await startOAuthServer({ accessTokenTtl: 300 });
  keeper = await startTestStack({
    env: {
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '60',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '600',
      TOKENKEEPER_SWEEP_BUDGET_SECONDS: '30',
      TOKENKEEPER_SHARD_COUNT: '2',
      TOKENKEEPER_SWEEP_SLICE_SIZE: '3',
      TOKENKEEPER_SWEEP_WORKERS: '2',
    },
  });
  expect(Object.values(await registerProviders(keeper, oauth))).toEqual([201, 201, 201]);
});

afterAll(async () => {
  await keeper?.stop();
  await oauth?.stop();
});

describe('local stack: the sweep goes through the dispatcher and the slice queue', () => {
  it('one sweep is several slices, every due session refreshed once, the record adding them up', async () => {
    const sessions: Connected[] = [];
    for (let i = 0; i < SESSIONS; i++)
      sessions.push(await connect(keeper, oauth, i % 2 === 0 ? 'mcp-post' : 'mcp-public'));
    const grantsBefore = forwardedGrants(oauth).length;

    const summary = await keeper.sweep();
    // A later slice may find a session an earlier one refreshed (5-minute tokens are due again within
    // the window): the lease refuses it, since it was refreshed after the sweep began.
    expect(summary).toMatchObject({ refreshed: SESSIONS, missed: 0, backlog: 0, failedTransient: 0 });
    expect(summary.due - summary.skipped).toBe(SESSIONS);
    expect(forwardedGrants(oauth).length - grantsBefore).toBe(SESSIONS);

    const latest = await keeper.call('GET', '/v1/sweeps/latest');
    expect(latest.status).toBe(200);
    const body = latest.body as Record<string, number>;
    // 14 sessions in 2 shards: a slice per shard at least (logins of the same second stay together;
    // test/unit/dispatch.test.ts covers the cutting).
    expect(body.slices).toBeGreaterThanOrEqual(2);
    expect(body).toMatchObject({ due: SESSIONS, refreshed: SESSIONS, skipped: summary.skipped });
    // Each slice went through the refresh handler as an SQS message.
    const sliceLogs = keeper.logs.filter((l) => l.message === 'sweep finished' && l.extra?.slice);
    expect(sliceLogs.length).toBe(body.slices);
    for (const s of sessions) expect((await record(keeper, s))?.version).toBe(2);
    expect(oauth.proxy.reuseCount()).toBe(0);
  });
});
