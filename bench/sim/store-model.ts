import type { CircuitRecord, LastError, ProviderConfig, SessionKey } from '../../functions/core/model.js';
import {
  type CommittedTokens,
  circuitOf,
  type DueKey,
  type FailureKind,
  type LeaseCondition,
  type NewSession,
  type ProviderListing,
  type ProviderPage,
  type RevealedTokens,
  type SessionFilter,
  type SessionPage,
  type SessionRecord,
  type SessionStore,
  type StoredSweep,
} from '../../functions/core/store/store.js';
import type { Cpu, Rng, VirtualClock } from './clock.js';
import { type SessionTable, THROTTLED, type Throttled } from './table-model.js';

/**
 * One runtime's view of the modelled table: the SessionStore port the core uses, where every call is
 * a request with a latency (lognormal, in virtual time) and a share of the runtime's CPU, and a
 * throttled request is retried as the AWS SDK's standard retry strategy does (maxAttempts 5, backoff
 * random × min(20 s, 500 ms × 2^retry) for throttling, a retry quota of 500 tokens at 5 a retry).
 * Without a clock the calls answer at once (the conformance test).
 */

export interface StoreModelOptions {
  table: SessionTable;
  clock?: VirtualClock;
  rng?: Rng;
  latency?: { medianMs: number; sigma: number };
  cpu?: { cpu: Cpu; msFor(op: string): number };
  maxAttempts?: number;
}

export class ThrottlingError extends Error {
  override name = 'ProvisionedThroughputExceededException';
}

export interface StoreCallStats {
  retries: number;
  /** Requests that failed after the SDK gave up (the core saw the error). */
  failed: number;
}

export class ModelStore implements SessionStore {
  private quota = 500;
  readonly calls: StoreCallStats = { retries: 0, failed: 0 };

  constructor(private readonly o: StoreModelOptions) {}

  private now(): number {
    return this.o.clock?.now() ?? 0;
  }

  private latency(): number {
    const { latency, rng } = this.o;
    return latency && rng ? rng.lognormal(latency.medianMs, latency.sigma) : 0;
  }

  /** One request: CPU, then the operation at the server, then its latency; throttles retried. */
  private async call<T>(op: string, fn: (now: number) => T | Throttled): Promise<T> {
    const { clock, cpu } = this.o;
    if (cpu) await cpu.cpu.use(cpu.msFor(op));
    const max = this.o.maxAttempts ?? 5;
    for (let attempt = 1; ; attempt++) {
      const result = fn(this.now());
      if (clock) await clock.sleep(this.latency());
      if (result !== THROTTLED) {
        if (attempt === 1) this.quota = Math.min(500, this.quota + 1);
        return result as T;
      }
      if (attempt >= max || this.quota < 5 || !clock || !this.o.rng) {
        this.calls.failed++;
        throw new ThrottlingError(`${op}: throughput exceeded`);
      }
      this.quota -= 5;
      this.calls.retries++;
      await clock.sleep(this.o.rng.next() * Math.min(20_000, 500 * 2 ** (attempt - 1)));
    }
  }

  getSession(key: SessionKey, options: { consistent?: boolean } = {}): Promise<SessionRecord | undefined> {
    return this.call('getSession', (now) => this.o.table.getSession(now, key, options.consistent ?? false));
  }

  async listSessions(userId: string): Promise<SessionRecord[]> {
    return this.call('listSessions', () => {
      const records: SessionRecord[] = [];
      for (const providerId of this.o.table.listProviderIds()) {
        const row = this.o.table.row({ userId, providerId });
        const record = row < 0 ? undefined : this.o.table.record(row);
        if (record) records.push(record);
      }
      return records;
    });
  }

  async putSession(session: NewSession, now: number): Promise<{ created: boolean; record: SessionRecord }> {
    const result = await this.call('putSession', () => this.o.table.putSession(now, session));
    if (result === 'unknown_key') throw new Error('the model holds sessions of users u<row> only');
    return result;
  }

  deleteSession(key: SessionKey): Promise<SessionRecord | undefined> {
    return this.call('deleteSession', (now) => this.o.table.deleteSession(now, key));
  }

  async reveal(record: SessionRecord, which: 'access' | 'all' = 'all'): Promise<RevealedTokens> {
    // The model keeps tokens in clear, as strings, in the sealed fields (it models sizes, not crypto).
    return {
      accessToken: record.accessTokenSealed as string,
      refreshToken: which === 'access' ? undefined : (record.refreshTokenSealed as string | undefined),
    };
  }

  acquireLease(
    key: SessionKey,
    owner: string,
    condition: LeaseCondition,
    now: number,
    leaseUntil: number,
    liftBackoff?: { from: number; to: number },
  ): Promise<SessionRecord | undefined> {
    return this.call('acquireLease', (at) =>
      this.o.table.acquireLease(at, key, owner, condition, now, leaseUntil, liftBackoff),
    );
  }

  commitRefresh(
    key: SessionKey,
    owner: string,
    tokens: CommittedTokens,
    now: number,
  ): Promise<SessionRecord | undefined> {
    return this.call('commitRefresh', (at) => this.o.table.commitRefresh(at, key, owner, tokens, now));
  }

  recordFailure(
    key: SessionKey,
    owner: string,
    failure: { kind: FailureKind; error: LastError; nextAttemptAt?: number },
  ): Promise<boolean> {
    return this.call('recordFailure', (at) => this.o.table.recordFailure(at, key, owner, failure));
  }

  releaseLease(key: SessionKey, owner: string): Promise<void> {
    return this.call('releaseLease', (at) => this.o.table.releaseLease(at, key, owner));
  }

  queryDue(
    shard: number,
    dueBy: number,
    cursor?: Record<string, unknown>,
    from?: number,
  ): Promise<{ keys: DueKey[]; cursor?: Record<string, unknown> }> {
    return this.call('queryDue', (at) => this.o.table.queryDue(at, shard, dueBy, cursor, from));
  }

  getProvider(providerId: string): Promise<ProviderConfig | undefined> {
    return this.call('getProvider', (at) => this.o.table.getProvider(at, providerId));
  }

  async putProvider(provider: ProviderConfig): Promise<{ created: boolean; createdAt: number }> {
    return this.call('putProvider', () => this.o.table.setProvider(provider));
  }

  async flagProviderRejected(providerId: string, at: number): Promise<void> {
    await this.call('flagProviderRejected', (now) =>
      this.o.table.providerUpdate(
        now,
        'flagProviderRejected',
        providerId,
        () => true,
        (a) => {
          a.clientRejectedAt = at;
        },
      ),
    );
  }

  async clearProviderRejected(providerId: string): Promise<void> {
    await this.call('clearProviderRejected', (now) =>
      this.o.table.providerUpdate(
        now,
        'clearProviderRejected',
        providerId,
        () => true,
        (a) => {
          delete a.clientRejectedAt;
        },
      ),
    );
  }

  async searchSessions(_filter: SessionFilter): Promise<SessionPage> {
    throw new Error('searchSessions is not modelled');
  }

  async inspectProvider(_providerId: string): Promise<ProviderListing | undefined> {
    throw new Error('inspectProvider is not modelled');
  }

  async listProviders(_page: { limit: number; cursor?: Record<string, string> }): Promise<ProviderPage> {
    throw new Error('listProviders is not modelled');
  }

  async startSweep(sweep: {
    sweepId: string;
    startedAt: number;
    summary: Record<string, number>;
  }): Promise<void> {
    await this.call('startSweep', (now) => this.o.table.startSweep(now, sweep));
  }

  async addToSweep(sweepId: string, counts: Record<string, number>, finishedAt: number): Promise<void> {
    await this.call('addToSweep', (now) => this.o.table.addToSweep(now, sweepId, counts, finishedAt));
  }

  async getLatestSweep(): Promise<StoredSweep | undefined> {
    return this.o.table.getLatestSweep();
  }

  /** The simulation keeps the latest sweep's record only (its cost model counts that write). */
  async listSweeps(): Promise<StoredSweep[]> {
    return [];
  }

  getCircuit(providerId: string): Promise<CircuitRecord | undefined> {
    return this.call('getCircuit', (now) => this.o.table.getCircuit(now, providerId));
  }

  /** A conditional circuit update; the circuit as returned, or undefined when refused. */
  private async circuitUpdate(
    op: string,
    providerId: string,
    condition: (a: Record<string, unknown>) => boolean,
    update: (a: Record<string, unknown>) => void,
    old = false,
  ): Promise<CircuitRecord | undefined> {
    const attrs = await this.call(op, (now) =>
      this.o.table.providerUpdate(now, op, providerId, condition, update, old),
    );
    return attrs ? circuitOf(attrs) : undefined;
  }

  recordCircuitFailure(
    providerId: string,
    error: LastError,
    newSession = true,
  ): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(
      'recordCircuitFailure',
      providerId,
      () => true,
      (a) => {
        a.circuitFailures = num(a.circuitFailures, 0) + 1;
        a.circuitLastError = error;
        a.circuitRunFrom ??= error.at;
        a.circuitSessions = num(a.circuitSessions, 0) + (newSession ? 1 : 0);
      },
    );
  }

  openCircuit(
    providerId: string,
    now: number,
    nextProbeAt: number,
    minFailures: number,
  ): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(
      'openCircuit',
      providerId,
      (a) =>
        (a.circuitState === undefined || a.circuitState === 'closed') &&
        typeof a.circuitFailures === 'number' &&
        a.circuitFailures >= minFailures,
      (a) => {
        Object.assign(a, {
          circuitState: 'open',
          circuitSince: now,
          circuitNextProbeAt: nextProbeAt,
          circuitOpenings: 1,
        });
        delete a.circuitProbeOwner;
        delete a.circuitProbeUntil;
        delete a.circuitHeldBack;
        delete a.circuitHeldBackRun;
        delete a.circuitHeldBackSweep;
      },
    );
  }

  reopenCircuit(
    providerId: string,
    owner: string,
    error: LastError,
    nextProbeAt: number,
    newSession = true,
  ): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(
      'reopenCircuit',
      providerId,
      (a) => a.circuitProbeOwner === owner,
      (a) => {
        a.circuitState = 'open';
        a.circuitNextProbeAt = nextProbeAt;
        a.circuitLastError = error;
        a.circuitOpenings = num(a.circuitOpenings, 0) + 1;
        a.circuitFailures = num(a.circuitFailures, 0) + 1;
        a.circuitSessions = num(a.circuitSessions, 0) + (newSession ? 1 : 0);
        delete a.circuitProbeOwner;
        delete a.circuitProbeUntil;
      },
    );
  }

  claimCircuitProbe(
    providerId: string,
    owner: string,
    now: number,
    until: number,
  ): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(
      'claimCircuitProbe',
      providerId,
      (a) =>
        (a.circuitState === 'open' || a.circuitState === 'half_open') &&
        typeof a.circuitNextProbeAt === 'number' &&
        a.circuitNextProbeAt <= now &&
        (a.circuitProbeUntil === undefined || (a.circuitProbeUntil as number) < now),
      (a) => {
        a.circuitState = 'half_open';
        a.circuitProbeOwner = owner;
        a.circuitProbeUntil = until;
      },
    );
  }

  async releaseCircuitProbe(providerId: string, owner: string): Promise<void> {
    await this.circuitUpdate(
      'releaseCircuitProbe',
      providerId,
      (a) => a.circuitProbeOwner === owner,
      (a) => {
        delete a.circuitProbeOwner;
        delete a.circuitProbeUntil;
      },
    );
  }

  closeCircuit(providerId: string, now: number, sentAt: number): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(
      'closeCircuit',
      providerId,
      (a) =>
        (a.circuitState === 'open' || a.circuitState === 'half_open') &&
        typeof a.circuitSince === 'number' &&
        a.circuitSince <= sentAt,
      (a) => {
        const outageFrom = a.circuitRunFrom ?? a.circuitSince;
        a.circuitSince = now;
        a.circuitFailures = 0;
        a.circuitOutageTo = now;
        if (outageFrom !== undefined) a.circuitOutageFrom = outageFrom;
        for (const name of [
          'circuitState',
          'circuitNextProbeAt',
          'circuitProbeOwner',
          'circuitProbeUntil',
          'circuitRunFrom',
          'circuitOpenings',
          'circuitHeldBack',
          'circuitHeldBackRun',
          'circuitHeldBackSweep',
          'circuitSessions',
        ]) {
          delete a[name];
        }
      },
      true,
    );
  }

  async resetCircuitFailures(providerId: string): Promise<void> {
    await this.circuitUpdate(
      'resetCircuitFailures',
      providerId,
      (a) => typeof a.circuitFailures === 'number' && a.circuitFailures > 0 && a.circuitState === undefined,
      (a) => {
        a.circuitFailures = 0;
        delete a.circuitRunFrom;
        delete a.circuitSessions;
      },
    );
  }

  async noteCircuitHeldBack(providerId: string, sessions: number, sweepId: string): Promise<void> {
    const isOpen = (a: Record<string, unknown>) =>
      a.circuitState === 'open' || a.circuitState === 'half_open';
    const op = 'noteCircuitHeldBack';
    // As the store: add to this sweep's run; else fold the previous run into the largest and start this one.
    for (let attempt = 0; attempt < 3; attempt++) {
      const added = await this.circuitUpdate(
        op,
        providerId,
        (a) => isOpen(a) && a.circuitHeldBackSweep === sweepId,
        (a) => {
          a.circuitHeldBackRun = num(a.circuitHeldBackRun, 0) + sessions;
        },
      );
      if (added) return;
      await this.circuitUpdate(
        op,
        providerId,
        (a) =>
          isOpen(a) &&
          a.circuitHeldBackRun !== undefined &&
          (a.circuitHeldBack === undefined ||
            (a.circuitHeldBack as number) < (a.circuitHeldBackRun as number)),
        (a) => {
          a.circuitHeldBack = a.circuitHeldBackRun;
        },
      );
      const started = await this.circuitUpdate(
        op,
        providerId,
        (a) => isOpen(a) && a.circuitHeldBackSweep !== sweepId,
        (a) => {
          a.circuitHeldBackSweep = sweepId;
          a.circuitHeldBackRun = sessions;
        },
      );
      if (started) return;
    }
  }
}

function num(v: unknown, fallback: number): number {
  return typeof v === 'number' ? v : fallback;
}
