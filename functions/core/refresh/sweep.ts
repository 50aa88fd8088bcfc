import { randomUUID } from 'node:crypto';
import { semaphore } from '../concurrency.js';
import type { Clock, Logger } from '../ports.js';
import type { LatestSweep, SweepRecord, SweepService, SweepSummary } from '../services.js';
import type { DueKey, SessionStore, StoredSweep } from '../store/store.js';
import type { ProviderCircuit } from './circuit.js';
import type { Refresher } from './refresher.js';
import { countsOf, emptySummary, readDueKeys, type SweepSlice, startCounts } from './slices.js';

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
  /** Provider configurations (cached), for each provider's `maxConcurrentRefreshes`. */
  providers?: { get(providerId: string): Promise<{ maxConcurrentRefreshes?: number } | undefined> };
  /** A unique id per sweep (tests inject a sequence). */
  newId?: () => string;
  /** The schedule's period, when known: `latest()` then says when the next sweep is due. */
  intervalSeconds?: number;
}

/** Kept free at the end of an invocation after the last grant's commit: metrics, logs, the answer. */
const INVOCATION_END_MARGIN_MS = 5_000;

export class Sweeper implements SweepService {
  private readonly o: SweeperOptions;

  constructor(options: SweeperOptions) {
    this.o = options;
  }

  /** One whole sweep in this process: every shard's due range, one pool (the local stack's fallback and the tests'). */
  async sweep(options: { remainingTimeMs?: () => number } = {}): Promise<SweepSummary> {
    const startedAt = this.o.clock.now();
    const dueBy = Math.floor(startedAt / 1000) + this.o.windowSeconds;
    const shards = Array.from({ length: this.o.shardCount }, (_, i) => i);
    const perShard = await Promise.all(shards.map((shard) => this.dueKeys(shard, dueBy)));
    const due = perShard.flat().sort((a, b) => a.dueAt - b.dueAt);
    const sweepId = this.newId();
    await this.record(() =>
      this.o.store.startSweep({ sweepId, startedAt, summary: startCounts(due.length) }),
    );
    return this.run(due, dueBy, sweepId, startedAt, startedAt, options.remainingTimeMs);
  }

  /**
   * One slice of a fanned-out sweep (functions/core/refresh/dispatch.ts): one shard's due range, with
   * this invocation's own budget. Sessions that moved since the dispatch are simply not found, or found
   * not due by the lease; a session left over is due again at the next sweep.
   */
  async sweepSlice(
    slice: SweepSlice,
    options: { remainingTimeMs?: () => number } = {},
  ): Promise<SweepSummary> {
    const startedAt = this.o.clock.now();
    const due = await this.dueKeys(slice.shard, slice.to, slice.from);
    return this.run(
      due,
      slice.to,
      slice.sweepId,
      startedAt,
      slice.startedAt ?? startedAt,
      options.remainingTimeMs,
    );
  }

  private dueKeys(shard: number, dueBy: number, from?: number): Promise<DueKey[]> {
    return readDueKeys(this.o.store, shard, dueBy, from);
  }

  /** Each due provider's limit, read once per sweep from the (cached) provider configurations. */
  private async providerQueues(due: DueKey[], providerIds: string[]): Promise<ProviderQueues> {
    const limits = new Map<string, number>();
    const { providers } = this.o;
    if (providers) {
      await Promise.all(
        providerIds.map(async (providerId) => {
          const limit = (await providers.get(providerId).catch(() => undefined))?.maxConcurrentRefreshes;
          if (limit !== undefined) limits.set(providerId, limit);
        }),
      );
    }
    return new ProviderQueues(due, limits);
  }

  /** Records best-effort: the record is for operators, and a failed write must not fail the sweep. */
  private async record(write: () => Promise<void>): Promise<void> {
    try {
      await write();
    } catch (err) {
      this.o.logger.warn('sweep record not stored', { error: (err as Error).name });
    }
  }

  private newId(): string {
    return this.o.newId?.() ?? randomUUID();
  }

  private async run(
    due: DueKey[],
    dueBy: number,
    sweepId: string,
    startedAt: number,
    sweepStartedAt: number,
    remainingTimeMs: (() => number) | undefined,
  ): Promise<SweepSummary> {
    const { clock } = this.o;
    const remaining = () =>
      Math.min(remainingTimeMs?.() ?? Number.POSITIVE_INFINITY, this.o.budgetMs - (clock.now() - startedAt));
    const { circuit } = this.o;
    const heldBack = new Map<string, number>();
    /** Per provider, the due sessions this sweep could not refresh: held back, or a transient failure. */
    const unrefreshed = new Map<string, number>();
    const providerIds = [...new Set(due.map((k) => k.providerId))];
    /** Providers whose circuit was open at some point of this sweep (its start, a hold-back, its end). */
    const openProviders = new Set<string>();
    // One fresh read of each due provider's circuit per sweep; workers then use the cached view.
    if (circuit) {
      await Promise.all(
        providerIds.map(async (p) => {
          if ((await circuit.view(p, { fresh: true })).state !== 'closed') openProviders.add(p);
        }),
      );
    }
    const queue = await this.providerQueues(due, providerIds);

    const summary: SweepSummary = { ...emptySummary(), due: due.length };
    let stopped = false;
    const grantSlot = semaphore(this.o.concurrency);
    const outOfTime = () => stopped || remaining() < this.o.grantReserveMs;
    const notRefreshed = (providerId: string) =>
      unrefreshed.set(providerId, (unrefreshed.get(providerId) ?? 0) + 1);
    const holdBack = (providerId: string) => {
      summary.skipped++;
      heldBack.set(providerId, (heldBack.get(providerId) ?? 0) + 1);
      notRefreshed(providerId);
      openProviders.add(providerId);
    };
    const worker = async () => {
      for (;;) {
        if (queue.empty()) return;
        if (outOfTime()) {
          stopped = true;
          return;
        }
        // The most urgent session whose provider is below its `maxConcurrentRefreshes`; when every
        // provider with work left is at its limit, wait until one of their grants is answered.
        const candidate = queue.peek();
        if (!candidate) {
          await queue.slotFreed();
          continue;
        }
        // An open circuit holds its provider's sessions back without a lease (a local probe is awaited).
        if (circuit && !(await circuit.mayTry(candidate.providerId))) {
          if (queue.drop(candidate)) holdBack(candidate.providerId);
          continue;
        }
        const taken = queue.take();
        if (!taken) continue;
        const { key, done: grantDone } = taken;
        if (key.dueAt <= Math.floor(clock.now() / 1000)) summary.missed++;
        try {
          // The session is leased at once and waits for a grant slot holding its lease (at most one
          // grant's time, as every slot's holder is mid-grant); the grant starts only with its whole
          // timeout and the commit left before the deadline and the lease's end, else nothing is sent.
          const outcome = await this.o.refresher.refresh(
            { userId: key.userId, providerId: key.providerId },
            { kind: 'sweep', dueBy, seenDueAt: key.dueAt, sweepStartedAt },
            // The sweep's (or the Lambda's) end: the slot stops waiting there. In a Lambda the grant's
            // life and its commit end before the invocation does (its timeout covers one whole grant
            // past the budget); discovery is cut to fit.
            {
              grantDone,
              grantSlot,
              deadline: clock.now() + remaining(),
              lifeBy:
                remainingTimeMs === undefined
                  ? undefined
                  : clock.now() + remainingTimeMs() - INVOCATION_END_MARGIN_MS,
            },
          );
          switch (outcome.kind) {
            case 'refreshed':
              summary.refreshed++;
              break;
            case 'refused':
            case 'provider_integrity':
            case 'pending':
              // Leased elsewhere or not due; an altered provider (nothing was sent; counted as
              // ProviderIntegrityFailed); or (pending) its grant outlives this sweep's wait and is
              // committed when the provider answers.
              summary.skipped++;
              break;
            case 'no_time':
              // Leased, but the sweep's time ran out before a grant slot was free: nothing was sent.
              summary.backlog++;
              break;
            case 'circuit_open':
              holdBack(key.providerId);
              break;
            case 'reauthorization_required':
              summary.reauthorizationRequired++;
              break;
            default:
              summary.failedTransient++;
              notRefreshed(key.providerId);
          }
        } catch (err) {
          // A store fault on one session must not end the sweep; the lease expires on its own.
          summary.failedTransient++;
          this.o.logger.error('refresh raised unexpectedly', {
            userId: key.userId,
            providerId: key.providerId,
            error: (err as Error).name,
          });
        } finally {
          grantDone();
        }
      }
    };
    // Twice as many workers as grant slots: a slot is taken after the lease and freed as soon as the
    // grant's answer is in, so the next session's lease and this one's commit overlap grants in flight
    // instead of holding a slot; a slot's next grant is sent as soon as it is freed.
    const workers = Math.max(1, Math.min(2 * this.o.concurrency, due.length));
    await Promise.all(Array.from({ length: workers }, worker));
    if (circuit) {
      // A circuit this sweep's failures opened counts too (this process's view: it reads the store
      // again only when its cache has expired).
      await Promise.all(
        providerIds.map(async (p) => {
          const state = await circuit.view(p).then(
            (c) => c.state,
            () => 'closed',
          );
          if (state !== 'closed') openProviders.add(p);
        }),
      );
    }
    // The circuit keeps the most due sessions one sweep could not refresh while it was open (held
    // back, or failed: an open circuit's probe fails too): ProviderRecovered's `sessionsAffected`.
    for (const [providerId, count] of unrefreshed) {
      if (!openProviders.has(providerId)) continue;
      await circuit?.heldBack(providerId, count, sweepId).catch((err: unknown) => {
        this.o.logger.warn('held-back count not recorded', { providerId, error: (err as Error).name });
      });
    }
    summary.backlog += queue.size();
    summary.durationMs = clock.now() - startedAt;
    const held = [...heldBack.values()].reduce((a, b) => a + b, 0);
    await this.record(() =>
      this.o.store.addToSweep(
        sweepId,
        { ...countsOf(summary), heldBack: held, openCircuits: openProviders.size },
        clock.now(),
        sweepStartedAt,
      ),
    );
    return summary;
  }

  async latest(): Promise<LatestSweep | undefined> {
    const stored = await this.o.store.getLatestSweep();
    if (!stored) return undefined;
    const { heldBack: _, openCircuits: __, ...record } = sweepRecord(stored);
    const latest: LatestSweep = record;
    if (this.o.intervalSeconds !== undefined) {
      latest.nextSweepAt = latest.startedAt + this.o.intervalSeconds;
    }
    latest.refreshWindowSeconds = this.o.windowSeconds;
    return latest;
  }

  async history(since: number): Promise<SweepRecord[]> {
    return (await this.o.store.listSweeps(since * 1000)).map(sweepRecord);
  }
}

/** A stored sweep as the API shows it: every count (zero when absent), instants in epoch seconds. */
function sweepRecord(stored: StoredSweep): SweepRecord {
  const summary = { ...emptySummary(), heldBack: 0, openCircuits: 0, ...stored.summary } as SweepRecord;
  const finishedAt = stored.finishedAt ?? stored.startedAt;
  return {
    ...summary,
    durationMs: Math.max(0, finishedAt - stored.startedAt),
    startedAt: Math.floor(stored.startedAt / 1000),
    finishedAt: Math.floor(finishedAt / 1000),
  };
}

/**
 * The due sessions of one sweep, one queue per provider (each in due order), with each provider's
 * grants in flight counted against its `maxConcurrentRefreshes`. The next session is the most urgent
 * head among the providers below their limit: a provider at its limit holds back only its own sessions.
 */
export class ProviderQueues {
  private readonly queues: {
    providerId: string;
    keys: DueKey[];
    next: number;
    limit: number;
    inFlight: number;
  }[];
  private left: number;
  private waiting: (() => void)[] = [];

  constructor(due: readonly DueKey[], limits: ReadonlyMap<string, number>) {
    const byProvider = new Map<string, DueKey[]>();
    for (const key of due) {
      const keys = byProvider.get(key.providerId);
      if (keys) keys.push(key);
      else byProvider.set(key.providerId, [key]);
    }
    this.queues = [...byProvider].map(([providerId, keys]) => ({
      providerId,
      keys: keys.sort((a, b) => a.dueAt - b.dueAt),
      next: 0,
      limit: limits.get(providerId) ?? Number.POSITIVE_INFINITY,
      inFlight: 0,
    }));
    this.left = due.length;
  }

  empty(): boolean {
    return this.left === 0;
  }

  size(): number {
    return this.left;
  }

  /** The most urgent session a grant may start for now; undefined when every provider left is at its limit. */
  peek(): DueKey | undefined {
    const q = this.head();
    return q ? q.keys[q.next] : undefined;
  }

  /** Removes `key` without a grant (its provider's circuit is open); false when it was taken meanwhile. */
  drop(key: DueKey): boolean {
    const q = this.queues.find((q) => q.providerId === key.providerId);
    if (!q || q.keys[q.next] !== key) return false;
    q.next++;
    this.left--;
    return true;
  }

  /** Takes the most urgent session below its provider's limit; `done` gives the provider's slot back. */
  take(): { key: DueKey; done: () => void } | undefined {
    const q = this.head();
    if (!q) return undefined;
    const key = q.keys[q.next++] as DueKey;
    this.left--;
    q.inFlight++;
    let done = false;
    return {
      key,
      done: () => {
        if (done) return;
        done = true;
        q.inFlight--;
        const waiting = this.waiting;
        this.waiting = [];
        for (const wake of waiting) wake();
      },
    };
  }

  /** Resolves when some grant gives its provider's slot back. */
  slotFreed(): Promise<void> {
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private head() {
    let best: (typeof this.queues)[number] | undefined;
    for (const q of this.queues) {
      if (q.next >= q.keys.length || q.inFlight >= q.limit) continue;
      if (!best || (q.keys[q.next] as DueKey).dueAt < (best.keys[best.next] as DueKey).dueAt) best = q;
    }
    return best;
  }
}
