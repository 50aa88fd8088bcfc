import type { Clock, Logger } from '../ports.js';
import type { LatestSweep, SweepService, SweepSummary } from '../services.js';
import type { DueKey, SessionStore } from '../store/store.js';
import type { ProviderCircuit } from './circuit.js';
import type { Refresher } from './refresher.js';

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
  /** The providers' circuits: sessions of a provider whose circuit is open are not even leased. */
  circuit?: Pick<ProviderCircuit, 'view' | 'mayTry' | 'heldBack'>;
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
    const { circuit } = this.o;
    const heldBack = new Map<string, number>();
    // One fresh read of each due provider's circuit per sweep; workers then use the cached view.
    if (circuit) {
      const providers = [...new Set(due.map((k) => k.providerId))];
      await Promise.all(providers.map((p) => circuit.view(p, { fresh: true })));
    }

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
        // An open circuit holds its provider's sessions back without a lease (a local probe is awaited).
        const candidate = due[next] as DueKey;
        if (circuit && !(await circuit.mayTry(candidate.providerId))) {
          if (due[next] === candidate) {
            next++;
            summary.skipped++;
            heldBack.set(candidate.providerId, (heldBack.get(candidate.providerId) ?? 0) + 1);
          }
          continue;
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
            case 'circuit_open':
              summary.skipped++;
              heldBack.set(key.providerId, (heldBack.get(key.providerId) ?? 0) + 1);
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
    for (const [providerId, count] of heldBack) {
      await circuit?.heldBack(providerId, count).catch((err: unknown) => {
        this.o.logger.warn('held-back count not recorded', { providerId, error: (err as Error).name });
      });
    }
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
