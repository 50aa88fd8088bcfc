import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../functions/core/ports.js';
import { Dispatcher } from '../../functions/core/refresh/dispatch.js';
import { parseSlice, type SweepSlice, sliceRanges } from '../../functions/core/refresh/slices.js';
import { SqsSliceQueue } from '../../functions/core/refresh/sqs-queue.js';
import { Sweeper } from '../../functions/core/refresh/sweep.js';
import { shardOf } from '../../functions/core/store/store.js';
import { ensureTable } from '../../functions/core/store/table.js';
import { InProcessSliceQueue } from '../../functions/local/fanout.js';
import { createRefreshHandler } from '../../functions/refresh/adapter.js';
import {
  addProvider,
  addSession,
  type CoreFixture,
  createCoreFixture,
  rawItem,
  uniqueId,
} from '../support/core-fixture.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

describe('sliceRanges', () => {
  it('cuts ascending due times into contiguous ranges of at most `size`, open below, ending at dueBy', () => {
    expect(sliceRanges([10, 11, 12, 13, 14], 2, 100)).toEqual([
      { to: 11 },
      { from: 12, to: 13 },
      { from: 14, to: 100 },
    ]);
    expect(sliceRanges([10, 11], 5, 100)).toEqual([{ to: 100 }]);
    expect(sliceRanges([], 5, 100)).toEqual([]);
  });

  it('never separates sessions due the same second (a slice may then exceed the size)', () => {
    expect(sliceRanges([5, 7, 7, 7, 9], 2, 50)).toEqual([{ to: 7 }, { from: 8, to: 50 }]);
  });

  it('covers every due time exactly once, whatever the size (property over random inputs)', () => {
    for (let trial = 0; trial < 200; trial++) {
      const n = Math.floor(Math.random() * 40);
      const dueAts = Array.from({ length: n }, () => 1000 + Math.floor(Math.random() * 30)).sort(
        (a, b) => a - b,
      );
      const size = 1 + Math.floor(Math.random() * 6);
      const ranges = sliceRanges(dueAts, size, 2000);
      for (const t of dueAts) {
        expect(ranges.filter((r) => (r.from ?? Number.NEGATIVE_INFINITY) <= t && t <= r.to)).toHaveLength(1);
      }
      for (let i = 1; i < ranges.length; i++) expect(ranges[i]?.from).toBe((ranges[i - 1]?.to ?? 0) + 1);
      if (n > 0) expect(ranges.at(-1)?.to).toBe(2000);
    }
  });
});

describe('parseSlice', () => {
  it('accepts a slice and refuses anything else', () => {
    expect(parseSlice('{"sweepId":"s","shard":2,"from":5,"to":9}')).toEqual({
      sweepId: 's',
      shard: 2,
      from: 5,
      to: 9,
    });
    expect(parseSlice('{"sweepId":"s","shard":0,"to":9}')).toEqual({ sweepId: 's', shard: 0, to: 9 });
    for (const bad of [
      'not json',
      'null',
      '{"shard":0,"to":9}',
      '{"sweepId":"","shard":0,"to":9}',
      '{"sweepId":"s","shard":-1,"to":9}',
      '{"sweepId":"s","shard":1.5,"to":9}',
      '{"sweepId":"s","shard":0}',
      '{"sweepId":"s","shard":0,"from":10,"to":9}',
      '{"sweepId":"s","shard":"0","to":9}',
    ]) {
      expect(parseSlice(bad), bad).toBeUndefined();
    }
  });
});

describe('SqsSliceQueue', () => {
  const slices = (n: number): SweepSlice[] =>
    Array.from({ length: n }, (_, i) => ({ sweepId: 's', shard: i % 4, to: i }));

  it('sends ten slices to a batch, each as its JSON', async () => {
    const sqs = mockClient(SQSClient);
    sqs.on(SendMessageBatchCommand).resolves({ Successful: [], Failed: [] });
    await new SqsSliceQueue(new SQSClient({ region: 'us-east-1' }), 'https://sqs.example/q').send(slices(23));
    const calls = sqs.commandCalls(SendMessageBatchCommand);
    expect(calls.map((c) => c.args[0].input.Entries?.length)).toEqual([10, 10, 3]);
    const bodies = calls
      .flatMap((c) => c.args[0].input.Entries ?? [])
      .map((e) => parseSlice(e.MessageBody ?? ''));
    expect(bodies).toEqual(slices(23));
    expect(calls.every((c) => c.args[0].input.QueueUrl === 'https://sqs.example/q')).toBe(true);
    sqs.restore();
  });

  it('sends the entries SQS refused once more, and throws when they are refused again', async () => {
    const sqs = mockClient(SQSClient);
    sqs
      .on(SendMessageBatchCommand)
      .resolvesOnce({ Failed: [{ Id: '1', Code: 'InternalError', SenderFault: false }] })
      .resolves({});
    const client = new SQSClient({ region: 'us-east-1' });
    await new SqsSliceQueue(client, 'q').send(slices(3));
    const retried = sqs.commandCalls(SendMessageBatchCommand)[1]?.args[0].input.Entries;
    expect(retried?.map((e) => parseSlice(e.MessageBody ?? ''))).toEqual([slices(3)[1]]);

    sqs.reset();
    sqs
      .on(SendMessageBatchCommand)
      .resolves({ Failed: [{ Id: '0', Code: 'InternalError', SenderFault: false }] });
    await expect(new SqsSliceQueue(client, 'q').send(slices(1))).rejects.toThrow(
      'SQS refused 1 of 1 sweep slices',
    );
    sqs.restore();
  });
});

describe('InProcessSliceQueue', () => {
  it('delivers each slice as a one-record SQS event, at most maxConcurrency at once', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const seen: SweepSlice[] = [];
    const queue = new InProcessSliceQueue({
      maxConcurrency: 2,
      maxReceiveCount: 3,
      logger: silentLogger,
      consume: async (event: SQSEvent): Promise<SQSBatchResponse> => {
        expect(event.Records).toHaveLength(1);
        expect(event.Records[0]?.eventSource).toBe('aws:sqs');
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await new Promise((r) => setTimeout(r, 5));
        seen.push(parseSlice(event.Records[0]?.body ?? '') as SweepSlice);
        inFlight--;
        return { batchItemFailures: [] };
      },
    });
    await queue.send(Array.from({ length: 7 }, (_, i) => ({ sweepId: 's', shard: 0, to: i })));
    await queue.idle();
    expect(seen.map((s) => s.to).sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(maxInFlight).toBe(2);
  });

  it('redelivers a reported failure and dead-letters it after maxReceiveCount deliveries', async () => {
    const deliveries = new Map<number, number>();
    const queue = new InProcessSliceQueue({
      maxConcurrency: 4,
      maxReceiveCount: 3,
      logger: silentLogger,
      consume: async (event) => {
        const record = event.Records[0];
        const slice = parseSlice(record?.body ?? '') as SweepSlice;
        deliveries.set(slice.to, (deliveries.get(slice.to) ?? 0) + 1);
        if (slice.to === 1) throw new Error('invocation crashed');
        // Slice 2 fails its first delivery only.
        const failed = slice.to === 0 || (slice.to === 2 && deliveries.get(2) === 1);
        return { batchItemFailures: failed ? [{ itemIdentifier: record?.messageId ?? '' }] : [] };
      },
    });
    await queue.send([0, 1, 2, 3].map((to) => ({ sweepId: 's', shard: 0, to })));
    await queue.idle();
    expect(Object.fromEntries(deliveries)).toEqual({ 0: 3, 1: 3, 2: 2, 3: 1 });
    expect(queue.deadLetters.map((s) => s.to).sort()).toEqual([0, 1]);
  });
});

describe('fan-out against DynamoDB (dynalite)', () => {
  let handle: DynaliteHandle;
  beforeAll(async () => {
    handle = await startDynalite();
  });
  afterAll(() => handle?.stop());

  const setup = async (env: Record<string, string> = {}) => {
    const tableName = uniqueId('fanout');
    await ensureTable(handle.client, tableName);
    const sent: SweepSlice[] = [];
    const fx = createCoreFixture(handle, { tableName, env: { TOKENKEEPER_SHARD_COUNT: '3', ...env } });
    const dispatcher = new Dispatcher({
      store: fx.runtime.store,
      queue: { send: async (slices) => void sent.push(...slices) },
      clock: fx.clock,
      logger: silentLogger,
      shardCount: fx.config.shardCount,
      windowSeconds: fx.config.refreshWindowSeconds,
      sliceSize: 4,
    });
    const providerId = await addProvider(fx);
    return { fx, dispatcher, sent, providerId };
  };
  const addMany = (fx: CoreFixture, providerId: string, expiresIn: number[]) =>
    Promise.all(expiresIn.map((e) => addSession(fx, { providerId, expiresIn: e })));

  it('slices every shard so that the slices, swept one by one, refresh each due session exactly once', async () => {
    const { fx, dispatcher, sent, providerId } = await setup();
    const due = await addMany(
      fx,
      providerId,
      Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? -5 - i : 20 + i * 7)),
    );
    const notDue = await addMany(fx, providerId, [fx.config.refreshWindowSeconds + 60, 7200]);

    const dispatched = await dispatcher.dispatch();
    expect(dispatched).toMatchObject({ due: 30, slices: sent.length });
    expect(sent.length).toBeGreaterThanOrEqual(Math.ceil(30 / 4));
    expect(new Set(sent.map((s) => s.shard))).toEqual(new Set([0, 1, 2]));
    expect(sent.every((s) => s.sweepId === dispatched.sweepId)).toBe(true);

    const summaries = [];
    for (const slice of sent) summaries.push(await fx.runtime.sweeper.sweepSlice(slice));
    for (const s of summaries) expect(s.due).toBeLessThanOrEqual(4);
    expect(summaries.reduce((n, s) => n + s.refreshed, 0)).toBe(30);
    expect(summaries.reduce((n, s) => n + s.missed, 0)).toBe(10);
    expect(fx.endpoint.presented().sort()).toEqual(due.map((s) => s.refreshToken).sort());
    for (const s of notDue) expect((await rawItem(fx, s.key))?.version).toBe(1);

    // The dispatch started the sweep's record; each slice added its counts to it.
    expect(await fx.runtime.sweeper.latest()).toMatchObject({
      due: 30,
      refreshed: 30,
      missed: 10,
      slices: sent.length,
    });
  });

  it('raising the shard count needs no migration: old entries are swept where they are and move at their next commit', async () => {
    const { fx, providerId } = await setup({ TOKENKEEPER_SHARD_COUNT: '2' });
    const sessions = await addMany(
      fx,
      providerId,
      Array.from({ length: 12 }, (_, i) => 30 + i),
    );
    const before = await Promise.all(sessions.map((s) => rawItem(fx, s.key)));
    expect(new Set(before.map((item) => item?.refreshShard))).toEqual(new Set([0, 1]));

    const wider = createCoreFixture(handle, {
      tableName: fx.config.tableName,
      clock: fx.clock,
      endpoint: fx.endpoint,
      keyringJson: fx.keyringJson,
      env: { TOKENKEEPER_SHARD_COUNT: '8' },
    });
    const sent: SweepSlice[] = [];
    const dispatcher = new Dispatcher({
      store: wider.runtime.store,
      queue: { send: async (slices) => void sent.push(...slices) },
      clock: wider.clock,
      logger: silentLogger,
      shardCount: 8,
      windowSeconds: wider.config.refreshWindowSeconds,
      sliceSize: 100,
    });
    expect((await dispatcher.dispatch()).due).toBe(12);
    for (const slice of sent) await wider.runtime.sweeper.sweepSlice(slice);
    expect(fx.endpoint.requests).toHaveLength(12);
    const after = await Promise.all(sessions.map((s) => rawItem(fx, s.key)));
    for (const [i, s] of sessions.entries()) {
      expect(after[i]?.refreshShard).toBe(shardOf(s.key, 8));
    }
    expect(new Set(after.map((item) => item?.refreshShard)).size).toBeGreaterThan(2);
  });

  it('a session refreshed by an earlier slice is not refreshed again by a later one whose range its new due time reaches', async () => {
    // 500 s tokens with a 600 s window: a refreshed session is due again within the window.
    const { fx, dispatcher, sent, providerId } = await setup({ TOKENKEEPER_SHARD_COUNT: '1' });
    const sessions = await addMany(
      fx,
      providerId,
      Array.from({ length: 12 }, (_, i) => 20 + 10 * i),
    );
    fx.endpoint.reply(...Array.from({ length: 12 }, () => ({ kind: 'rotate' as const, expiresIn: 500 })));
    await dispatcher.dispatch();
    expect(sent.length).toBe(3);
    const summaries = [];
    for (const slice of sent) {
      fx.clock.advance(1_000);
      summaries.push(await fx.runtime.sweeper.sweepSlice(slice));
    }
    expect(fx.endpoint.requests).toHaveLength(12);
    expect(new Set(fx.endpoint.presented())).toEqual(new Set(sessions.map((s) => s.refreshToken)));
    // The last slice's range (up to now + window) holds every refreshed session again: refused leases.
    expect(summaries.at(-1)?.skipped).toBeGreaterThan(0);
    expect(summaries.reduce((n, s) => n + s.refreshed, 0)).toBe(12);
  });

  it('a slice delivered twice, or two overlapping slices, grant nothing twice (the lease)', async () => {
    const { fx, dispatcher, sent, providerId } = await setup();
    await addMany(fx, providerId, [30, 40, 50]);
    await dispatcher.dispatch();
    const all = sent.flatMap((s) => [s, s]);
    await Promise.all(all.map((s) => fx.runtime.sweeper.sweepSlice(s)));
    expect(fx.endpoint.requests).toHaveLength(3);
    expect(new Set(fx.endpoint.presented()).size).toBe(3);
  });

  it('a newer sweep replaces the record; a late slice of the older one adds nothing to it', async () => {
    const { fx, dispatcher, sent, providerId } = await setup();
    await addMany(fx, providerId, [30]);
    await dispatcher.dispatch();
    const old = sent.splice(0);
    fx.clock.advance(1_000);
    const newer = await dispatcher.dispatch();
    expect(newer.due).toBe(1);
    for (const slice of old) await fx.runtime.sweeper.sweepSlice(slice);
    expect(await fx.runtime.sweeper.latest()).toMatchObject({ due: 1, refreshed: 0 });
    for (const slice of sent) await fx.runtime.sweeper.sweepSlice(slice);
    // The session was refreshed by the old slice; the new one finds it no longer due.
    expect(await fx.runtime.sweeper.latest()).toMatchObject({ due: 1, refreshed: 0 });
    expect(fx.endpoint.requests).toHaveLength(1);
  });

  it('the refresh handler sweeps SQS records and reports exactly the failed ones', async () => {
    const { fx, dispatcher, sent, providerId } = await setup();
    await addMany(fx, providerId, [30, 40]);
    await dispatcher.dispatch();
    const handler = createRefreshHandler(fx.runtime);
    const record = (messageId: string, body: string) => ({ messageId, body, eventSource: 'aws:sqs' });
    const event = {
      Records: [
        ...sent.map((s, i) => record(`ok-${i}`, JSON.stringify(s))),
        record('garbage', '{"hello":1}'),
      ],
    } as unknown as SQSEvent;
    const answer = await handler(event);
    expect(answer).toEqual({ batchItemFailures: [{ itemIdentifier: 'garbage' }] });
    expect(fx.endpoint.requests).toHaveLength(2);
    expect(fx.metrics.filter((m) => m.name === 'Refreshed').reduce((n, m) => n + m.value, 0)).toBe(2);
  });

  it('a slice whose due range cannot be read is reported failed, so SQS delivers it again', async () => {
    const { fx } = await setup();
    const handler = createRefreshHandler({
      ...fx.runtime,
      sweeper: Object.assign(Object.create(fx.runtime.sweeper), {
        sweepSlice: async () => {
          throw Object.assign(new Error('throttled'), { name: 'ProvisionedThroughputExceededException' });
        },
      }),
    });
    const answer = await handler({
      Records: [
        { messageId: 'm1', body: JSON.stringify({ sweepId: 's', shard: 0, to: 1 }), eventSource: 'aws:sqs' },
      ],
    } as unknown as SQSEvent);
    expect(answer).toEqual({ batchItemFailures: [{ itemIdentifier: 'm1' }] });
  });
});

describe('maxConcurrentRefreshes', () => {
  let handle: DynaliteHandle;
  beforeAll(async () => {
    handle = await startDynalite();
  });
  afterAll(() => handle?.stop());

  it("reads the cap from the provider's stored configuration (PUT /v1/providers/{id} maxConcurrentRefreshes)", async () => {
    const tableName = uniqueId('limit');
    await ensureTable(handle.client, tableName);
    const fx = createCoreFixture(handle, {
      tableName,
      env: { TOKENKEEPER_SHARD_COUNT: '1', TOKENKEEPER_REFRESH_CONCURRENCY: '8' },
    });
    const providerId = await addProvider(fx);
    const stored = await fx.runtime.providers.get(providerId);
    await fx.runtime.providers.put(providerId, {
      tokenEndpoint: fx.endpoint.url,
      clientId: 'tk-client',
      clientSecret: 'client-secret-for-unit-tests',
      clientAuthMethod: 'client_secret_basic',
      resource: stored?.resource,
      maxConcurrentRefreshes: 3,
    });
    await Promise.all(
      Array.from({ length: 12 }, (_, i) => addSession(fx, { providerId, expiresIn: 30 + i })),
    );
    fx.endpoint.latencyMs = 25;
    const summary = await fx.runtime.sweeper.sweep();
    expect(summary).toMatchObject({ due: 12, refreshed: 12 });
    expect(fx.endpoint.maxInFlight).toBe(3);
  });

  it("caps one provider's grants per worker while other providers use the remaining slots", async () => {
    const tableName = uniqueId('limit');
    await ensureTable(handle.client, tableName);
    const fx = createCoreFixture(handle, { tableName, env: { TOKENKEEPER_SHARD_COUNT: '1' } });
    const limited = await addProvider(fx);
    const free = await addProvider(fx);
    // The limited provider's sessions are the most urgent: a plain queue would fill every slot with them.
    await Promise.all([
      ...Array.from({ length: 12 }, (_, i) => addSession(fx, { providerId: limited, expiresIn: 10 + i })),
      ...Array.from({ length: 12 }, (_, i) => addSession(fx, { providerId: free, expiresIn: 100 + i })),
    ]);
    const inFlight = new Map<string, number>();
    const maxInFlight = new Map<string, number>();
    let freeStartedWhileLimitedLeft = false;
    let limitedDone = 0;
    const sweeper = new Sweeper({
      store: fx.runtime.store,
      clock: fx.clock,
      logger: silentLogger,
      shardCount: 1,
      windowSeconds: 600,
      concurrency: 8,
      budgetMs: 60_000,
      grantReserveMs: 1_000,
      providers: { get: async (id) => (id === limited ? { maxConcurrentRefreshes: 2 } : undefined) },
      refresher: {
        refresh: async (key, _reason, options) => {
          const n = (inFlight.get(key.providerId) ?? 0) + 1;
          inFlight.set(key.providerId, n);
          maxInFlight.set(key.providerId, Math.max(maxInFlight.get(key.providerId) ?? 0, n));
          if (key.providerId === free && limitedDone < 12) freeStartedWhileLimitedLeft = true;
          await new Promise((r) => setTimeout(r, 15));
          inFlight.set(key.providerId, (inFlight.get(key.providerId) ?? 1) - 1);
          if (key.providerId === limited) limitedDone++;
          options?.grantDone?.();
          return { kind: 'refreshed' } as never;
        },
      },
    });
    const summary = await sweeper.sweep();
    expect(summary).toMatchObject({ due: 24, refreshed: 24, backlog: 0 });
    expect(maxInFlight.get(limited)).toBe(2);
    expect(maxInFlight.get(free)).toBeGreaterThan(2);
    expect(freeStartedWhileLimitedLeft).toBe(true);
  });
});
