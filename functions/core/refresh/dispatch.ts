import { randomUUID } from 'node:crypto';
import type { Clock, Logger } from '../ports.js';
import type { SessionStore } from '../store/store.js';
import { readDueKeys, type SliceQueue, type SweepSlice, sliceRanges, startCounts } from './slices.js';

/**
 * The fan-out of a sweep. The schedule invokes the dispatcher, which reads each shard's due range of
 * the `byExpiry` index (keys only) and cuts it into slices of at most `sliceSize` sessions at due-time
 * boundaries; each slice is one queue message, swept by one refresh worker with its own budget
 * (Sweeper.sweepSlice). Slices are ranges, not lists: a session that moved meanwhile is simply not
 * found, and one that arrived is taken by whichever slice covers its due time. Overlapping slices or a
 * message delivered twice are harmless: every session is refreshed only under its lease.
 */

export interface DispatchSummary {
  sweepId: string;
  due: number;
  slices: number;
  durationMs: number;
}

export interface DispatcherOptions {
  store: Pick<SessionStore, 'queryDue' | 'startSweep'>;
  queue: SliceQueue;
  clock: Clock;
  logger: Logger;
  shardCount: number;
  windowSeconds: number;
  /** The most sessions one slice may hold (unless they share one due second). */
  sliceSize: number;
  newId?: () => string;
}

export class Dispatcher {
  private readonly o: DispatcherOptions;

  constructor(options: DispatcherOptions) {
    this.o = options;
  }

  async dispatch(): Promise<DispatchSummary> {
    const { clock, store } = this.o;
    const startedAt = clock.now();
    const dueBy = Math.floor(startedAt / 1000) + this.o.windowSeconds;
    const sweepId = this.o.newId?.() ?? randomUUID();
    const shards = Array.from({ length: this.o.shardCount }, (_, i) => i);
    const perShard = await Promise.all(
      shards.map(async (shard) => ({
        shard,
        dueAts: (await readDueKeys(store, shard, dueBy)).map((key) => key.dueAt),
      })),
    );
    const slices: SweepSlice[] = [];
    let due = 0;
    for (const { shard, dueAts } of perShard) {
      due += dueAts.length;
      for (const range of sliceRanges(dueAts, this.o.sliceSize, dueBy)) {
        slices.push({ sweepId, shard, ...range, startedAt });
      }
    }
    // The record first, so the slices' counts have somewhere to go.
    try {
      await store.startSweep({
        sweepId,
        startedAt,
        summary: { ...startCounts(due), slices: slices.length },
      });
    } catch (err) {
      this.o.logger.warn('sweep record not stored', { error: (err as Error).name });
    }
    // The most urgent slices first: a queue consumed at a bounded concurrency takes them in order.
    slices.sort((a, b) => (a.from ?? Number.NEGATIVE_INFINITY) - (b.from ?? Number.NEGATIVE_INFINITY));
    if (slices.length > 0) await this.o.queue.send(slices);
    return { sweepId, due, slices: slices.length, durationMs: clock.now() - startedAt };
  }
}
