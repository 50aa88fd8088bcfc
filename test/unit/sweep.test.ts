import { QueryCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { semaphore } from '../../functions/core/concurrency.js';
import { shardOf } from '../../functions/core/store/store.js';
import { ensureTable, TABLE } from '../../functions/core/store/table.js';
import {
  addProvider,
  addSession,
  type CoreFixture,
  type CoreFixtureOptions,
  createCoreFixture,
  createPeer,
  rawItem,
  readSession,
  type TestSession,
  uniqueId,
} from '../support/core-fixture.js';
import { type DynaliteHandle, makeDynamoClient, startDynalite } from '../support/dynalite.js';

describe('Sweeper', () => {
  let handle: DynaliteHandle;

  beforeAll(async () => {
    handle = await startDynalite();
  });
  afterAll(() => handle?.stop());

  /** A fixture on its own table, so a sweep sees only this test's sessions. */
  const setup = async (env?: CoreFixtureOptions['env']) => {
    const tableName = uniqueId('sweep');
    await ensureTable(handle.client, tableName);
    const fx = createCoreFixture(handle, { tableName, env });
    const providerId = await addProvider(fx);
    return { fx, providerId };
  };
  /** Creates sessions concurrently; `expiresIn(i)` gives each one's lifetime. */
  const addMany = (fx: CoreFixture, providerId: string, n: number, expiresIn: (i: number) => number) =>
    Promise.all(Array.from({ length: n }, (_, i) => addSession(fx, { providerId, expiresIn: expiresIn(i) })));
  const reserveMs = (fx: CoreFixture) => fx.config.httpTimeoutMs + 2_000;
  const versionOf = async (fx: CoreFixture, s: TestSession) => (await rawItem(fx, s.key))?.version;
  /** Starts a sweep whose first grant is held at the endpoint, once a second session is leased too. */
  const holdFirstGrant = async (fx: CoreFixture, sessions: TestSession[]) => {
    const first = fx.endpoint.gate();
    const sweeping = fx.runtime.sweeper.sweep();
    await first.arrived;
    await vi.waitFor(async () => expect(await leasedCount(fx, sessions)).toBe(2), {
      timeout: 5_000,
      interval: 10,
    });
    return { first, sweeping };
  };
  /** How many of `sessions` hold a lease now. */
  const leasedCount = async (fx: CoreFixture, sessions: TestSession[]) =>
    (await Promise.all(sessions.map((s) => rawItem(fx, s.key)))).filter((item) => item?.leaseOwner).length;

  it("frees a grant slot when the answer is in: one session's commit overlaps the next grant", async () => {
    // Guards sweep throughput: with the slot held through the commit, every grant would wait on a write.
    const tableName = uniqueId('sweep');
    await ensureTable(handle.client, tableName);
    const client = makeDynamoClient(handle.endpoint);
    let releaseCommit: () => void = () => {};
    const commitHeld = new Promise<void>((resolve) => {
      releaseCommit = resolve;
    });
    let commits = 0;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { UpdateExpression?: string };
        if (
          context.commandName === 'UpdateItemCommand' &&
          input.UpdateExpression?.includes('version = version + :one')
        ) {
          if (commits++ === 0) await commitHeld;
        }
        return next(args);
      },
      { step: 'initialize', name: 'holdFirstCommit' },
    );
    const fx = createCoreFixture(handle, {
      tableName,
      env: { TOKENKEEPER_REFRESH_CONCURRENCY: '1' },
      dynamodb: client,
    });
    const providerId = await addProvider(fx);
    await addMany(fx, providerId, 2, (i) => 60 + i);
    const sweeping = fx.runtime.sweeper.sweep();
    // The first commit is held; the second session's grant must still go out on the one slot.
    await vi.waitFor(() => expect(fx.endpoint.requests).toHaveLength(2), { timeout: 5_000, interval: 10 });
    expect(fx.endpoint.maxInFlight).toBe(1);
    releaseCommit();
    expect(await sweeping).toMatchObject({ due: 2, refreshed: 2, backlog: 0 });
    client.destroy();
  });

  it('leases the next session while a grant is in flight: no grant slot waits on a lease write', async () => {
    // Guards sweep efficiency: with the lease inside the slot, every grant would start a write later.
    const { fx, providerId } = await setup({ TOKENKEEPER_REFRESH_CONCURRENCY: '1' });
    const sessions = await addMany(fx, providerId, 3, (i) => 60 + i);
    // One slot, one grant held at the endpoint: the next session is already leased, waiting for the slot…
    const { first, sweeping } = await holdFirstGrant(fx, sessions);
    expect(fx.endpoint.requests).toHaveLength(1);
    // …and goes out as soon as the slot is free; the slot never held two grants.
    first.release();
    expect(await sweeping).toMatchObject({ due: 3, refreshed: 3, skipped: 0, backlog: 0 });
    expect(fx.endpoint.maxInFlight).toBe(1);
    for (const s of sessions) expect(await versionOf(fx, s)).toBe(2);
  });

  it('a leased session waiting for its slot sends nothing when the circuit opened meanwhile', async () => {
    const { fx, providerId } = await setup({ TOKENKEEPER_REFRESH_CONCURRENCY: '1' });
    const sessions = await addMany(fx, providerId, 3, (i) => 60 + i);
    // The first grant's answer opens the circuit at once (503 with Retry-After)…
    fx.endpoint.reply({
      kind: 'error',
      status: 503,
      error: 'temporarily_unavailable',
      headers: { 'retry-after': '120' },
    });
    const { first, sweeping } = await holdFirstGrant(fx, sessions);
    first.release();
    // …so the session leased while it was in flight is given back unsent, and the last is not leased.
    expect(await sweeping).toMatchObject({ due: 3, refreshed: 0, failedTransient: 1, skipped: 2 });
    expect(fx.endpoint.requests).toHaveLength(1);
    expect(await leasedCount(fx, sessions)).toBe(0);
    for (const s of sessions) expect(await versionOf(fx, s)).toBe(1);
  });

  it('refreshes only due sessions (expiresAt <= now + window), across all shards', async () => {
    const { fx, providerId } = await setup();
    const window = fx.config.refreshWindowSeconds;
    const shards = fx.config.shardCount;
    // enough users that every shard holds due sessions, one of them exactly at the bound
    const userIds: string[] = [];
    const dueShards = new Set<number>();
    while (dueShards.size < shards || userIds.length < 2 * shards) {
      const userId = uniqueId('user');
      dueShards.add(shardOf({ userId, providerId }, shards));
      userIds.push(userId);
    }
    const due = await Promise.all(
      userIds.map((userId, i) =>
        addSession(fx, { providerId, userId, expiresIn: i === 0 ? window : 30 + i }),
      ),
    );
    const notDue = await Promise.all([
      addSession(fx, { providerId, expiresIn: window + 1 }),
      addSession(fx, { providerId, expiresIn: 7200 }),
      addSession(fx, { providerId, expiresIn: null }),
      addSession(fx, { providerId, expiresIn: 10, refreshToken: null }),
    ]);

    const summary = await fx.runtime.sweeper.sweep();

    expect(summary).toMatchObject({ due: due.length, refreshed: due.length, skipped: 0, backlog: 0 });
    expect(fx.endpoint.presented().sort()).toEqual(due.map((s) => s.refreshToken).sort());
    for (const s of due) expect(await versionOf(fx, s)).toBe(2);
    for (const s of notDue) {
      const item = await rawItem(fx, s.key);
      expect(item?.version).toBe(1);
      expect(item).not.toHaveProperty('leaseOwner');
    }
  });

  it('keeps an item per sweep, removed by the table TTL after 48 h, listed since a time with its held-back and open-circuit counts', async () => {
    const { fx, providerId } = await setup();
    await addSession(fx, { providerId, expiresIn: 100 });
    const first = await fx.runtime.sweeper.sweep();
    fx.clock.advance(60_000);
    // The provider's circuit open: the second sweep holds the session back.
    fx.endpoint.reply({ kind: 'status', status: 503, headers: { 'retry-after': '120' } });
    await addSession(fx, { providerId, expiresIn: 50 });
    const failing = await fx.runtime.sweeper.sweep();
    fx.clock.advance(10_000);
    const held = await fx.runtime.sweeper.sweep();
    const sweeps = await fx.runtime.sweeper.history(0);
    expect(sweeps.map((s) => [s.due, s.refreshed, s.failedTransient, s.heldBack])).toEqual([
      [first.due, first.refreshed, 0, 0],
      [failing.due, failing.refreshed, failing.failedTransient, 0],
      [held.due, 0, 0, held.skipped],
    ]);
    expect(held.skipped).toBeGreaterThan(0);
    // The circuit was open during the sweep whose failure opened it (nothing held back) and the next.
    expect(sweeps.map((s) => s.openCircuits)).toEqual([0, 1, 1]);
    expect(
      (await fx.runtime.sweeper.history(sweeps[1]?.startedAt as number)).map((s) => s.startedAt),
    ).toEqual(sweeps.slice(1).map((s) => s.startedAt));
    const { Items } = await fx.handle.doc.send(
      new QueryCommand({
        TableName: fx.config.tableName,
        KeyConditionExpression: '#pk = :pk',
        ExpressionAttributeNames: { '#pk': TABLE.partitionKey },
        ExpressionAttributeValues: { ':pk': 'SWEEP#history' },
      }),
    );
    expect(Items?.map((i) => i[TABLE.ttlAttribute])).toEqual(
      Items?.map((i) => Math.floor((i.startedAt as number) / 1000) + 48 * 3600),
    );
  });

  it('reports due, refreshed, skipped, failedTransient, reauthorizationRequired, missed, backlog, durationMs', async () => {
    const { fx, providerId } = await setup();
    fx.endpoint.clockAdvanceMs = 1_000;
    const refreshed = await addSession(fx, { providerId, expiresIn: 100 });
    const expired = await addSession(fx, { providerId, expiresIn: -10 });
    const dead = await addSession(fx, { providerId, expiresIn: 200 });
    const failing = await addSession(fx, { providerId, expiresIn: 300 });
    const leased = await addSession(fx, { providerId, expiresIn: 400 });
    const later = await addSession(fx, { providerId, expiresIn: 7200 });
    fx.endpoint.replyTo(dead.refreshToken as string, { kind: 'error', status: 400, error: 'invalid_grant' });
    fx.endpoint.replyTo(failing.refreshToken as string, { kind: 'status', status: 503 });
    const now = fx.clock.now();
    const lease = { kind: 'sweep', dueBy: fx.clock.seconds() + 600 } as const;
    expect(
      await fx.runtime.store.acquireLease(leased.key, 'elsewhere', lease, now, now + 30_000),
    ).toBeDefined();

    const summary = await fx.runtime.sweeper.sweep();
    expect(summary).toEqual({
      due: 5,
      refreshed: 2,
      skipped: 1,
      failedTransient: 1,
      reauthorizationRequired: 1,
      missed: 1,
      backlog: 0,
      // four grants, each taking one second of the fake clock
      durationMs: 4_000,
    });
    expect(fx.endpoint.presented().sort()).toEqual(
      [refreshed, expired, dead, failing].map((s) => s.refreshToken).sort(),
    );
    expect(await versionOf(fx, later)).toBe(1);
    expect(await rawItem(fx, leased.key)).toMatchObject({ version: 1, leaseOwner: 'elsewhere' });
    expect(await rawItem(fx, dead.key)).toMatchObject({ status: 'reauthorization_required' });
    expect(await rawItem(fx, failing.key)).toMatchObject({ status: 'active', failureCount: 1 });
  });

  it('an empty table gives an all-zero summary', async () => {
    const { fx } = await setup();
    expect(await fx.runtime.sweeper.sweep()).toEqual({
      due: 0,
      refreshed: 0,
      skipped: 0,
      failedTransient: 0,
      reauthorizationRequired: 0,
      missed: 0,
      backlog: 0,
      durationMs: 0,
    });
  });

  it('respects the concurrency bound', async () => {
    const { fx, providerId } = await setup({ TOKENKEEPER_REFRESH_CONCURRENCY: '3' });
    fx.endpoint.latencyMs = 25;
    await addMany(fx, providerId, 10, (i) => 60 + i);

    const summary = await fx.runtime.sweeper.sweep();
    expect(summary).toMatchObject({ due: 10, refreshed: 10, backlog: 0 });
    expect(fx.endpoint.maxInFlight).toBe(3);
    expect(fx.endpoint.requests).toHaveLength(10);
  });

  it('stops taking work when the remaining time would not cover one more grant', async () => {
    const { fx, providerId } = await setup({ TOKENKEEPER_REFRESH_CONCURRENCY: '1' });
    const sessions = await addMany(fx, providerId, 10, (i) => 60 + i);
    const before = await Promise.all(sessions.map((s) => rawItem(fx, s.key)));

    // The Lambda has plenty of time until four grants have been made, then less than one grant's worth.
    const summary = await fx.runtime.sweeper.sweep({
      remainingTimeMs: () => (fx.endpoint.requests.length >= 4 ? reserveMs(fx) - 1 : 60_000),
    });
    expect(summary).toMatchObject({ due: 10, refreshed: 4, backlog: 6 });
    // most urgent first
    expect(fx.endpoint.presented()).toEqual(sessions.slice(0, 4).map((s) => s.refreshToken));
    for (const s of sessions.slice(0, 4)) expect(await versionOf(fx, s)).toBe(2);
    // the rest were not started: no lease left behind, nothing changed
    for (const [i, s] of sessions.entries()) {
      if (i < 4) continue;
      expect(await rawItem(fx, s.key)).toEqual(before[i]);
    }
  });

  it('stops within its own budget as measured on the clock', async () => {
    const { fx, providerId } = await setup({ TOKENKEEPER_REFRESH_CONCURRENCY: '1' });
    fx.endpoint.clockAdvanceMs = 15_000;
    const sessions = await addMany(fx, providerId, 10, (i) => 200 + i);

    // Budget 120 s, reserve 12 s, one slot: grant k is sent at 15k s, so grants 0–7 fit (the last at
    // 105 s); session 8, leased at 105 s, is still waiting for the slot at 120 s and is given back
    // unsent, and session 9 is never taken. Both are backlog, neither keeps a lease.
    expect(fx.config.sweepBudgetSeconds).toBe(120);
    const summary = await fx.runtime.sweeper.sweep();
    expect(summary).toMatchObject({ due: 10, refreshed: 8, skipped: 0, backlog: 2, durationMs: 120_000 });
    expect(fx.endpoint.requests).toHaveLength(8);
    for (const s of sessions.slice(8)) {
      const item = await rawItem(fx, s.key);
      expect(item?.version).toBe(1);
      expect(item).not.toHaveProperty('leaseOwner');
    }
  });

  it('two overlapping sweeps refresh each session exactly once', async () => {
    const { fx, providerId } = await setup();
    const peer = createPeer(fx);
    fx.endpoint.latencyMs = 10;
    const sessions = await addMany(fx, providerId, 12, (i) => 60 + i);

    const [a, b] = await Promise.all([fx.runtime.sweeper.sweep(), peer.runtime.sweeper.sweep()]);

    // both saw every session due, so every session was contended
    expect([a.due, b.due]).toEqual([12, 12]);
    const presented = fx.endpoint.presented();
    expect(presented).toHaveLength(12);
    expect(new Set(presented)).toEqual(new Set(sessions.map((s) => s.refreshToken)));
    expect(a.refreshed + b.refreshed).toBe(12);
    expect(a.skipped + b.skipped).toBe(12);
    expect(a.failedTransient + b.failedTransient).toBe(0);
    for (const s of sessions) {
      const after = await readSession(fx, s.key);
      expect(after.record.version).toBe(2);
      expect(after.record.leaseOwner).toBeUndefined();
    }
    // and a third, later sweep finds nothing due
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 0, refreshed: 0 });
  });

  it('skips sessions that are backing off, and retries them once nextAttemptAt has passed', async () => {
    const { fx, providerId } = await setup();
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    fx.endpoint.reply({ kind: 'status', status: 503 });
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 1, failedTransient: 1 });
    const nextAttemptAt = (await rawItem(fx, s.key))?.nextAttemptAt as number;
    expect(nextAttemptAt).toBeGreaterThan(fx.clock.now());

    fx.clock.advance(nextAttemptAt - fx.clock.now() - 1);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 1, skipped: 1, refreshed: 0 });
    expect(fx.endpoint.requests).toHaveLength(1);

    fx.clock.advance(1);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 1, refreshed: 1 });
    expect(fx.endpoint.presented()).toEqual([s.refreshToken, s.refreshToken]);
    expect(fx.events.map((e) => e.detailType)).toEqual(['SessionRecovered']);
  });
});

describe('semaphore', () => {
  it('lets `size` holders in at once, queues the rest in order, and ignores a second release', async () => {
    const acquire = semaphore(2);
    const order: number[] = [];
    const a = await acquire();
    const b = await acquire();
    const c = acquire().then((release) => {
      order.push(3);
      return release;
    });
    const d = acquire().then((release) => {
      order.push(4);
      return release;
    });
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual([]);
    a();
    a();
    const releaseC = await c;
    await new Promise((r) => setTimeout(r, 5));
    expect(order).toEqual([3]);
    b();
    (await d)();
    releaseC();
    expect(order).toEqual([3, 4]);
  });
});
