import type { Clock, Logger } from './ports.js';
import type { Refresher } from './refresher.js';
import type { LatestSweep, SweepService, SweepSummary } from './services.js';
import type { DueKey, SessionStore } from './store.js';

/**
 * The scheduled sweep: query every shard's due range of the sparse `byExpiry` index, then refresh
 * the due sessions, most urgent first, through a bounded pool. It stops taking work when the time
 * left would not cover one more grant; what it did not start is reported as backlog. Overlapping
 * sweeps are harmless: each session is refreshed only under its lease.
 */

export interface SweeperOptions {
  store: SessionStore;
  refresher: Pick<Refresher, 'refresh'>;
  clock: Clock;
  logger: Logger;
  shardCount: number;
  windowSeconds: number;
  concurrency: number;
  /** The sweep's own budget; the Lambda's remaining time may cut it shorter. */
  budgetMs: number;
  /** Time one more grant may need (the HTTP timeout plus a commit). */
  grantReserveMs: number;
}

export class Sweeper implements SweepService {
  private readonly o: SweeperOptions;

  constructor(options: SweeperOptions) {
    this.o = options;
  }

  async sweep(options: { remainingTimeMs?: () => number } = {}): Promise<SweepSummary> {
    const { clock, store } = this.o;
    const startedAt = clock.now();
    const dueBy = Math.floor(startedAt / 1000) + this.o.windowSeconds;
    const remaining = () =>
      Math.min(
        options.remainingTimeMs?.() ?? Number.POSITIVE_INFINITY,
        this.o.budgetMs - (clock.now() - startedAt),
      );

    const shards = Array.from({ length: this.o.shardCount }, (_, i) => i);
    const perShard = await Promise.all(
      shards.map(async (shard) => {
        const keys: DueKey[] = [];
        let cursor: Record<string, unknown> | undefined;
        do {
          const page = await store.queryDue(shard, dueBy, cursor);
          keys.push(...page.keys);
          cursor = page.cursor;
        } while (cursor);
        return keys;
      }),
    );
    const due = perShard.flat().sort((a, b) => a.dueAt - b.dueAt);

    const summary: SweepSummary = {
      due: due.length,
      refreshed: 0,
      skipped: 0,
      failedTransient: 0,
      reauthorizationRequired: 0,
      missed: 0,
      backlog: 0,
      durationMs: 0,
    };
    let next = 0;
    let stopped = false;
    const grantSlot = semaphore(this.o.concurrency);
    const outOfTime = () => stopped || remaining() < this.o.grantReserveMs;
    const worker = async () => {
      for (;;) {
        if (next >= due.length) return;
        if (outOfTime()) {
          stopped = true;
          return;
        }
        // A grant slot first, then the session: a session is leased only when its grant can start.
        const release = await grantSlot();
        if (next >= due.length || outOfTime()) {
          stopped ||= next < due.length;
          release();
          return;
        }
        const key = due[next++] as DueKey;
        if (key.dueAt <= Math.floor(clock.now() / 1000)) summary.missed++;
        try {
          const outcome = await this.o.refresher.refresh(
            { userId: key.userId, providerId: key.providerId },
            { kind: 'sweep', dueBy, seenDueAt: key.dueAt },
            // The sweep's (or the Lambda's) end: discovery and the grant are cut to fit before it.
            { grantDone: release, deadline: clock.now() + remaining() },
          );
          switch (outcome.kind) {
            case 'refreshed':
              summary.refreshed++;
              break;
            case 'refused':
            case 'no_time':
              summary.skipped++;
              break;
            case 'reauthorization_required':
              summary.reauthorizationRequired++;
              break;
            default:
              summary.failedTransient++;
          }
        } catch (err) {
          // A store fault on one session must not end the sweep; the lease expires on its own.
          summary.failedTransient++;
          this.o.logger.error('refresh raised unexpectedly', {
            userId: key.userId,
            providerId: key.providerId,
            error: (err as Error).name,
          });
        }
      }
    };
    // Twice as many workers as grant slots: a slot is freed as soon as a grant's answer is in, so one
    // session's commit overlaps the next session's lease and grant instead of holding the slot.
    const workers = Math.max(1, Math.min(2 * this.o.concurrency, due.length));
    await Promise.all(Array.from({ length: workers }, worker));
    summary.backlog = due.length - next;
    summary.durationMs = clock.now() - startedAt;
    try {
      await store.putLatestSweep({ summary: { ...summary }, startedAt, finishedAt: clock.now() });
    } catch (err) {
      this.o.logger.warn('latest sweep summary not stored', { error: (err as Error).name });
    }
    return summary;
  }

  async latest(): Promise<LatestSweep | undefined> {
    const stored = await this.o.store.getLatestSweep();
    if (!stored) return undefined;
    return {
      ...(stored.summary as unknown as SweepSummary),
      startedAt: Math.floor(stored.startedAt / 1000),
      finishedAt: Math.floor(stored.finishedAt / 1000),
    };
  }
}

/** A counting semaphore: `acquire()` resolves with a release function once one of `size` slots is free. */
export function semaphore(size: number): () => Promise<() => void> {
  let free = size;
  const waiting: (() => void)[] = [];
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else free++;
  };
  return () =>
    new Promise((resolve) => {
      const grant = () => {
        let released = false;
        resolve(() => {
          if (!released) {
            released = true;
            release();
          }
        });
      };
      if (free > 0) {
        free--;
        grant();
      } else waiting.push(grant);
    });
}
