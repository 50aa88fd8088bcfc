import { randomUUID } from 'node:crypto';
import type { Clock, Logger } from '../ports.js';
import type { SessionStore } from '../store/store.js';
import { readDueKeys, startCounts } from './sweep.js';

/**
 * The fan-out of a sweep. The schedule invokes the dispatcher, which reads each shard's due range of
 * the `byExpiry` index (keys only) and cuts it into slices of at most `sliceSize` sessions at due-time
 * boundaries; each slice is one queue message, swept by one refresh worker with its own budget
 * (Sweeper.sweepSlice). Slices are ranges, not lists: a session that moved meanwhile is simply not
 * found, and one that arrived is taken by whichever slice covers its due time. Overlapping slices or a
 * message delivered twice are harmless: every session is refreshed only under its lease.
 */

export interface SweepSlice {
  /** The dispatch this slice belongs to (its counts are added to that sweep's record). */
  sweepId: string;
  shard: number;
  /** Inclusive range of `refreshDueAt`, epoch seconds; no `from`: everything overdue. */
  from?: number;
  to: number;
  /** When the dispatch began (epoch ms): a session refreshed since is not refreshed again by this sweep. */
  startedAt?: number;
}

/** Where slices go: SQS in AWS, an in-process queue locally. */
export interface SliceQueue {
  send(slices: readonly SweepSlice[]): Promise<void>;
}

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

/**
 * Cuts one shard's ascending due times into contiguous inclusive ranges of at most `size` sessions,
 * never between two sessions due the same second. The first range is open below (everything overdue),
 * each next one starts the second after the last ended, the last ends at `dueBy`: together they cover
 * the whole due range, so a session that arrives meanwhile falls in one of them. An empty shard has none.
 */
export function sliceRanges(
  dueAts: readonly number[],
  size: number,
  dueBy: number,
): { from?: number; to: number }[] {
  const ranges: { from?: number; to: number }[] = [];
  let start = 0;
  while (start < dueAts.length) {
    let end = Math.min(start + size, dueAts.length);
    // Keep sessions of the same second together: extend over equal due times.
    while (end < dueAts.length && dueAts[end] === dueAts[end - 1]) end++;
    const last = end >= dueAts.length;
    const previous = ranges.at(-1);
    ranges.push({
      ...(previous ? { from: previous.to + 1 } : {}),
      to: last ? dueBy : (dueAts[end - 1] as number),
    });
    start = end;
  }
  return ranges;
}

/** Validates a slice read from a queue message; undefined when it is not one. */
export function parseSlice(body: string): SweepSlice | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  const int = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v);
  if (typeof r.sweepId !== 'string' || r.sweepId.length === 0 || r.sweepId.length > 100) return undefined;
  if (!int(r.shard) || (r.shard as number) < 0 || !int(r.to)) return undefined;
  if (r.from !== undefined && (!int(r.from) || (r.from as number) > (r.to as number))) return undefined;
  if (r.startedAt !== undefined && !int(r.startedAt)) return undefined;
  return {
    sweepId: r.sweepId,
    shard: r.shard as number,
    ...(r.from === undefined ? {} : { from: r.from as number }),
    to: r.to as number,
    ...(r.startedAt === undefined ? {} : { startedAt: r.startedAt as number }),
  };
}
