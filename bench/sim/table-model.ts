import type {
  CircuitRecord,
  LastError,
  ProviderConfig,
  SessionKey,
  SessionStatus,
} from '../../functions/core/model.js';
import {
  type CommittedTokens,
  circuitOf,
  DEFAULT_SCHEDULE,
  type FailureKind,
  type LeaseCondition,
  type NewSession,
  type RefreshMode,
  refreshSchedule,
  type SchedulePolicy,
  type SessionRecord,
  type StoredSweep,
  shardOf,
} from '../../functions/core/store/store.js';
import { readUnits, writeUnits } from '../item-size.js';
import type { Consumption, Throughput } from './capacity.js';

/**
 * The sessions table in memory, with DynamoSessionStore's conditional semantics (functions/core/
 * store/store.ts): every method is one item operation that checks its condition, asks the throughput
 * model for its capacity (a throttled request changes nothing and returns THROTTLED), then applies
 * its update at once. Sessions are compact columns indexed by a number: the session of user `u<i>`
 * is row i (one session per user in the simulation); tokens are kept as the strings the provider
 * model issues (`at.<i>.<n>`, `rt.<i>.<n>`), stored as their counter n. Nothing is encrypted: the
 * "sealed" value is the token itself.
 */

export const THROTTLED = Symbol('throttled');
export type Throttled = typeof THROTTLED;

/** Billed sizes (bytes) of a session item in its states, and of an index entry and a provider item. */
export interface ItemSizes {
  idle: number;
  leased: number;
  /** Extra bytes while a failure is recorded (lastError, nextAttemptAt). */
  failure: number;
  indexEntry: number;
  provider: number;
}

/** What the table reports about each commit, for the simulation's figures. */
export type CommitObserver = (
  row: number,
  now: number,
  before: { expiresAt: number; dueAt: number },
  lease: LeaseCondition['kind'],
) => void;

const NONE = Number.NaN;
const opt = (v: number): number | undefined => (Number.isNaN(v) ? undefined : v);
const STATUS: readonly (SessionStatus | undefined)[] = [undefined, 'active', 'reauthorization_required'];
const LEASE_KINDS: readonly LeaseCondition['kind'][] = ['sweep', 'onDemand', 'forced'];

/** A shard's entries in the byExpiry index: due second → rows, ascending by row (the key order). */
class ShardIndex {
  private readonly buckets = new Map<number, number[]>();
  private seconds: number[] = [];
  size = 0;

  private static lowerBound(a: readonly number[], v: number): number {
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((a[mid] as number) < v) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  add(due: number, row: number): void {
    let bucket = this.buckets.get(due);
    if (!bucket) {
      bucket = [];
      this.buckets.set(due, bucket);
      this.seconds.splice(ShardIndex.lowerBound(this.seconds, due), 0, due);
    }
    bucket.splice(ShardIndex.lowerBound(bucket, row), 0, row);
    this.size++;
  }

  remove(due: number, row: number): void {
    const bucket = this.buckets.get(due);
    if (!bucket) return;
    const i = ShardIndex.lowerBound(bucket, row);
    if (bucket[i] !== row) return;
    bucket.splice(i, 1);
    this.size--;
    if (bucket.length === 0) {
      this.buckets.delete(due);
      this.seconds.splice(ShardIndex.lowerBound(this.seconds, due), 1);
    }
  }

  /** Entries with from <= due <= dueBy after `after`, ascending; at most `limit`. */
  page(
    dueBy: number,
    from: number | undefined,
    after: { due: number; row: number } | undefined,
    limit: number,
  ): { entries: [number, number][]; more: boolean } {
    const entries: [number, number][] = [];
    const start = Math.max(from ?? Number.NEGATIVE_INFINITY, after?.due ?? Number.NEGATIVE_INFINITY);
    for (let s = ShardIndex.lowerBound(this.seconds, start); s < this.seconds.length; s++) {
      const due = this.seconds[s] as number;
      if (due > dueBy) break;
      const bucket = this.buckets.get(due) as number[];
      let i = after !== undefined && due === after.due ? ShardIndex.lowerBound(bucket, after.row + 1) : 0;
      for (; i < bucket.length; i++) {
        if (entries.length === limit) return { entries, more: true };
        entries.push([due, bucket[i] as number]);
      }
    }
    return { entries, more: false };
  }
}

export interface SessionTableOptions {
  rows: number;
  shardCount: number;
  schedule?: SchedulePolicy;
  sizes: ItemSizes;
  throughput?: Throughput;
  onCommit?: CommitObserver;
}

export interface TableStats {
  /** Write units (table and index) by second since the first write, for the peak rate. */
  wcuBySecond: number[];
  wcu: number;
  indexWcu: number;
  rcu: number;
  requests: Record<string, number>;
  conditionFailures: Record<string, number>;
}

interface ProviderItem {
  config: ProviderConfig;
  /** The provider item's attributes besides the configuration (circuit, clientRejectedAt). */
  attrs: Record<string, unknown>;
}

export class SessionTable {
  readonly o: SessionTableOptions;
  private readonly policy: SchedulePolicy;
  // Columns; NaN / -1 / 0 = attribute absent.
  private readonly status: Uint8Array;
  private readonly mode: Uint8Array;
  private readonly provider: Uint16Array;
  private readonly shard: Uint16Array;
  private readonly leaseKind: Uint8Array;
  private readonly version: Int32Array;
  private readonly failureCount: Int32Array;
  private readonly accessN: Int32Array;
  private readonly refreshN: Int32Array;
  private readonly expiresAt: Float64Array;
  private readonly refreshExpiresAt: Float64Array;
  private readonly dueAt: Float64Array;
  private readonly leaseUntil: Float64Array;
  private readonly nextAttemptAt: Float64Array;
  private readonly issuedAt: Float64Array;
  private readonly refreshedAt: Float64Array;
  private readonly createdAt: Float64Array;
  // Rare attributes.
  private readonly leaseOwner = new Map<number, string>();
  private readonly lastError = new Map<number, LastError>();
  private readonly scope = new Map<number, string>();
  private readonly tokenType = new Map<number, string>();
  private readonly otherTokens = new Map<string, string>();
  private readonly indexes: ShardIndex[];
  private readonly providers = new Map<string, ProviderItem>();
  private readonly providerIds: string[] = [];
  private latestSweep: StoredSweep | undefined;
  readonly stats: TableStats = {
    wcuBySecond: [],
    wcu: 0,
    indexWcu: 0,
    rcu: 0,
    requests: {},
    conditionFailures: {},
  };
  private firstSecond: number | undefined;

  constructor(options: SessionTableOptions) {
    this.o = options;
    this.policy = options.schedule ?? DEFAULT_SCHEDULE;
    const n = options.rows;
    this.status = new Uint8Array(n);
    this.mode = new Uint8Array(n);
    this.provider = new Uint16Array(n);
    this.shard = new Uint16Array(n);
    this.leaseKind = new Uint8Array(n);
    this.version = new Int32Array(n);
    this.failureCount = new Int32Array(n);
    this.accessN = new Int32Array(n).fill(-1);
    this.refreshN = new Int32Array(n).fill(-1);
    const nan = () => new Float64Array(n).fill(NONE);
    this.expiresAt = nan();
    this.refreshExpiresAt = nan();
    this.dueAt = nan();
    this.leaseUntil = nan();
    this.nextAttemptAt = nan();
    this.issuedAt = nan();
    this.refreshedAt = nan();
    this.createdAt = nan();
    this.indexes = Array.from({ length: options.shardCount }, () => new ShardIndex());
  }

  /** The row of a session key, or -1 when the key is not one the table can hold. */
  row(key: SessionKey): number {
    const { userId } = key;
    if (userId.charCodeAt(0) !== 117 /* u */) return -1;
    const row = Number(userId.slice(1));
    if (!Number.isInteger(row) || row < 0 || row >= this.o.rows || `u${row}` !== userId) return -1;
    const p = this.providerIds.indexOf(key.providerId);
    if (p < 0) return -1;
    if (this.status[row] !== 0 && this.provider[row] !== p) return -1;
    return row;
  }

  static keyOf(row: number, providerId: string): SessionKey {
    return { userId: `u${row}`, providerId };
  }

  indexSize(shard: number): number {
    return this.indexes[shard]?.size ?? 0;
  }

  private count(op: string, conditionFailed = false): void {
    this.stats.requests[op] = (this.stats.requests[op] ?? 0) + 1;
    if (conditionFailed) this.stats.conditionFailures[op] = (this.stats.conditionFailures[op] ?? 0) + 1;
  }

  // ---- tokens -------------------------------------------------------------------------------

  private encodeToken(row: number, kind: 'at' | 'rt', token: string): number {
    const prefix = `${kind}.${row}.`;
    if (token.startsWith(prefix)) {
      const n = Number(token.slice(prefix.length));
      if (Number.isInteger(n) && n >= 0 && `${prefix}${n}` === token) {
        this.otherTokens.delete(`${kind}${row}`);
        return n;
      }
    }
    this.otherTokens.set(`${kind}${row}`, token);
    return 0x7fffffff;
  }

  private decodeToken(row: number, kind: 'at' | 'rt', n: number): string | undefined {
    if (n < 0) return undefined;
    if (n === 0x7fffffff) return this.otherTokens.get(`${kind}${row}`);
    return `${kind}.${row}.${n}`;
  }

  // ---- sizes and capacity -------------------------------------------------------------------

  private size(row: number): number {
    if (this.status[row] === 0) return 0;
    const s = this.o.sizes;
    return (this.leaseOwner.has(row) ? s.leased : s.idle) + (this.lastError.has(row) ? s.failure : 0);
  }

  private indexUnits(row: number, newShard: number | undefined, newDue: number | undefined) {
    const oldDue = opt(this.dueAt[row] as number);
    const oldShard = oldDue === undefined ? undefined : (this.shard[row] as number);
    if (oldDue === newDue && oldShard === newShard) return [];
    const units = writeUnits(this.o.sizes.indexEntry);
    const out: { shard: number; units: number }[] = [];
    if (oldDue !== undefined) out.push({ shard: oldShard as number, units });
    if (newDue !== undefined) out.push({ shard: newShard as number, units });
    return out;
  }

  /** Capacity for one write: the larger of the item before and after, plus its index writes. */
  private admitWrite(now: number, row: number, after: number, index: Consumption['indexWcu'] = []): boolean {
    const wcu = writeUnits(Math.max(this.size(row), after));
    const { throughput } = this.o;
    if (throughput && !throughput.admit(now, { partition: row, wcu, indexWcu: index })) return false;
    this.stats.wcu += wcu;
    let units = wcu;
    for (const i of index) {
      this.stats.indexWcu += i.units;
      units += i.units;
    }
    this.firstSecond ??= Math.floor(now / 1000);
    const second = Math.floor(now / 1000) - this.firstSecond;
    this.stats.wcuBySecond[second] = (this.stats.wcuBySecond[second] ?? 0) + units;
    return true;
  }

  private admitRead(now: number, partition: number, bytes: number, consistent: boolean): boolean {
    const rcu = readUnits(bytes, consistent);
    if (this.o.throughput && !this.o.throughput.admit(now, { partition, rcu })) return false;
    this.stats.rcu += rcu;
    return true;
  }

  /** A write whose condition failed is billed too (the item's size), with no index write. */
  private refused(now: number, row: number, op: string): undefined | Throttled {
    if (!this.admitWrite(now, Math.max(0, row), row < 0 ? 0 : this.size(row))) return THROTTLED;
    this.count(op, true);
    return undefined;
  }

  // ---- index --------------------------------------------------------------------------------

  private setDue(row: number, due: number | undefined): void {
    const old = opt(this.dueAt[row] as number);
    if (old !== undefined) this.indexes[this.shard[row] as number]?.remove(old, row);
    if (due === undefined) {
      this.dueAt[row] = NONE;
      return;
    }
    this.dueAt[row] = due;
    this.indexes[this.shard[row] as number]?.add(due, row);
  }

  // ---- records ------------------------------------------------------------------------------

  record(row: number): SessionRecord | undefined {
    const status = STATUS[this.status[row] as number];
    if (status === undefined) return undefined;
    const providerId = this.providerIds[this.provider[row] as number] as string;
    return {
      userId: `u${row}`,
      providerId,
      accessTokenSealed: this.decodeToken(row, 'at', this.accessN[row] as number) as string,
      refreshTokenSealed: this.decodeToken(row, 'rt', this.refreshN[row] as number),
      tokenType: this.tokenType.get(row) ?? 'Bearer',
      scope: this.scope.get(row),
      expiresAt: opt(this.expiresAt[row] as number),
      refreshExpiresAt: opt(this.refreshExpiresAt[row] as number),
      refreshDueAt: opt(this.dueAt[row] as number),
      refreshMode: this.mode[row] === 1 ? 'on_demand' : 'scheduled',
      status,
      version: this.version[row] as number,
      createdAt: this.createdAt[row] as number,
      issuedAt: opt(this.issuedAt[row] as number),
      refreshedAt: opt(this.refreshedAt[row] as number),
      leaseOwner: this.leaseOwner.get(row),
      leaseUntil: opt(this.leaseUntil[row] as number),
      failureCount: this.failureCount[row] as number,
      nextAttemptAt: opt(this.nextAttemptAt[row] as number),
      lastError: this.lastError.get(row),
    };
  }

  /** Current expiry and index state of a row, for the simulation's end-of-run count. */
  peek(row: number): {
    active: boolean;
    expiresAt?: number;
    dueAt?: number;
    mode: RefreshMode;
    refreshToken?: string;
    leased: boolean;
  } {
    return {
      leased: this.leaseOwner.has(row),
      refreshToken: this.decodeToken(row, 'rt', this.refreshN[row] as number),
      active: this.status[row] === 1,
      expiresAt: opt(this.expiresAt[row] as number),
      dueAt: opt(this.dueAt[row] as number),
      mode: this.mode[row] === 1 ? 'on_demand' : 'scheduled',
    };
  }

  // ---- SessionStore operations (each one request) ------------------------------------------

  getSession(now: number, key: SessionKey, consistent: boolean): SessionRecord | undefined | Throttled {
    const row = this.row(key);
    const bytes = row < 0 ? 1 : this.size(row);
    if (!this.admitRead(now, Math.max(0, row), bytes, consistent)) return THROTTLED;
    this.count('getSession');
    return row < 0 ? undefined : this.record(row);
  }

  /** Seeds a session without a request (the simulation's starting state). */
  seed(row: number, session: NewSession, now: number): void {
    this.put(row, session, now);
  }

  putSession(
    now: number,
    session: NewSession,
  ): { created: boolean; record: SessionRecord } | Throttled | 'unknown_key' {
    let row = this.row(session);
    if (row < 0) {
      // A key of the table's form whose row is free (the provider must be registered).
      const r = Number(session.userId.slice(1));
      if (
        session.userId !== `u${r}` ||
        !Number.isInteger(r) ||
        r >= this.o.rows ||
        this.status[r] !== 0 ||
        !this.providerIds.includes(session.providerId)
      ) {
        return 'unknown_key';
      }
      row = r;
    }
    const dueAfter = session.refreshToken !== undefined ? 1 : 0;
    const index = this.indexUnits(
      row,
      dueAfter ? shardOf(session, this.o.shardCount) : undefined,
      dueAfter ? refreshSchedule(session, Math.floor(now / 1000), this.policy).dueAt : undefined,
    );
    if (!this.admitWrite(now, row, this.o.sizes.idle, index)) return THROTTLED;
    this.count('putSession');
    this.put(row, session, now);
    const record = this.record(row) as SessionRecord;
    return { created: record.version === 1, record };
  }

  private put(row: number, session: NewSession, now: number): void {
    const p = this.providerIds.indexOf(session.providerId);
    if (p < 0) throw new Error(`provider ${session.providerId} is not registered in the model`);
    const existed = this.status[row] !== 0;
    this.provider[row] = p;
    // The shard is a function of the key and the shard count, both fixed for a row: computed once.
    this.shard[row] = shardOf(session, this.o.shardCount);
    this.status[row] = 1;
    this.accessN[row] = this.encodeToken(row, 'at', session.accessToken);
    if (session.tokenType === 'Bearer') this.tokenType.delete(row);
    else this.tokenType.set(row, session.tokenType);
    if (!existed) this.createdAt[row] = now;
    this.version[row] = (existed ? (this.version[row] as number) : 0) + 1;
    this.failureCount[row] = 0;
    this.leaseOwner.delete(row);
    this.leaseUntil[row] = NONE;
    this.nextAttemptAt[row] = NONE;
    this.lastError.delete(row);
    this.refreshedAt[row] = NONE;
    this.issuedAt[row] = NONE;
    this.refreshN[row] =
      session.refreshToken !== undefined ? this.encodeToken(row, 'rt', session.refreshToken) : -1;
    if (session.scope !== undefined) this.scope.set(row, session.scope);
    else this.scope.delete(row);
    this.expiresAt[row] = session.expiresAt ?? NONE;
    this.refreshExpiresAt[row] =
      session.refreshExpiresAt !== undefined && session.refreshToken !== undefined
        ? session.refreshExpiresAt
        : NONE;
    const plan = refreshSchedule(session, Math.floor(now / 1000), this.policy);
    this.setDue(row, session.refreshToken !== undefined ? plan.dueAt : undefined);
    this.mode[row] = plan.mode === 'on_demand' ? 1 : 0;
  }

  deleteSession(now: number, key: SessionKey): SessionRecord | undefined | Throttled {
    const row = this.row(key);
    if (row < 0 || this.status[row] === 0) {
      if (!this.admitWrite(now, Math.max(0, row), 0)) return THROTTLED;
      this.count('deleteSession');
      return undefined;
    }
    if (!this.admitWrite(now, row, 0, this.indexUnits(row, undefined, undefined))) return THROTTLED;
    this.count('deleteSession');
    const before = this.record(row);
    this.setDue(row, undefined);
    this.status[row] = 0;
    this.leaseOwner.delete(row);
    this.lastError.delete(row);
    this.scope.delete(row);
    this.tokenType.delete(row);
    return before;
  }

  acquireLease(
    now: number,
    key: SessionKey,
    owner: string,
    condition: LeaseCondition,
    leaseNow: number,
    leaseUntil: number,
    liftBackoff?: { from: number; to: number },
  ): SessionRecord | undefined | Throttled {
    const row = this.row(key);
    const ok = row >= 0 && this.leaseConditionHolds(row, condition, leaseNow, liftBackoff);
    if (!ok) return this.refused(now, row, 'acquireLease');
    const leasedSize = this.o.sizes.leased + (this.lastError.has(row) ? this.o.sizes.failure : 0);
    if (!this.admitWrite(now, row, leasedSize)) return THROTTLED;
    this.count('acquireLease');
    this.leaseOwner.set(row, owner);
    this.leaseUntil[row] = leaseUntil;
    this.leaseKind[row] = LEASE_KINDS.indexOf(condition.kind);
    return this.record(row);
  }

  private leaseConditionHolds(
    row: number,
    condition: LeaseCondition,
    now: number,
    lift?: { from: number; to: number },
  ): boolean {
    if (this.status[row] !== 1 || (this.refreshN[row] as number) < 0) return false;
    const leaseUntil = opt(this.leaseUntil[row] as number);
    if (leaseUntil !== undefined && !(leaseUntil < now)) return false;
    const next = opt(this.nextAttemptAt[row] as number);
    if (next !== undefined && !(next <= now)) {
      const at = this.lastError.get(row)?.at;
      if (!lift || at === undefined || at < lift.from || at > lift.to) return false;
    }
    switch (condition.kind) {
      case 'sweep': {
        const due = opt(this.dueAt[row] as number);
        if (due === undefined || !(due <= condition.dueBy)) return false;
        return condition.seenDueAt === undefined || due === condition.seenDueAt;
      }
      case 'onDemand': {
        const exp = opt(this.expiresAt[row] as number);
        return exp !== undefined && exp < condition.minValidUntil;
      }
      case 'forced':
        return this.version[row] === condition.version;
    }
  }

  commitRefresh(
    now: number,
    key: SessionKey,
    owner: string,
    tokens: CommittedTokens,
    commitNow: number,
  ): SessionRecord | undefined | Throttled {
    const row = this.row(key);
    if (row < 0 || this.status[row] === 0 || this.leaseOwner.get(row) !== owner) {
      return this.refused(now, row, 'commitRefresh');
    }
    const plan = refreshSchedule(tokens, Math.floor(commitNow / 1000), this.policy);
    const due = tokens.dueAt ?? plan.dueAt;
    const index = this.indexUnits(row, due === undefined ? undefined : (this.shard[row] as number), due);
    if (!this.admitWrite(now, row, this.o.sizes.idle, index)) return THROTTLED;
    this.count('commitRefresh');
    const before = { expiresAt: this.expiresAt[row] as number, dueAt: this.dueAt[row] as number };
    this.refreshN[row] = this.encodeToken(row, 'rt', tokens.refreshToken);
    this.version[row] = (this.version[row] as number) + 1;
    this.refreshedAt[row] = commitNow;
    this.failureCount[row] = 0;
    this.leaseOwner.delete(row);
    this.leaseUntil[row] = NONE;
    this.nextAttemptAt[row] = NONE;
    this.lastError.delete(row);
    if (tokens.accessToken !== undefined) {
      this.accessN[row] = this.encodeToken(row, 'at', tokens.accessToken);
      if (tokens.tokenType === 'Bearer') this.tokenType.delete(row);
      else this.tokenType.set(row, tokens.tokenType);
      this.issuedAt[row] = commitNow;
    }
    if (tokens.scope !== undefined) this.scope.set(row, tokens.scope);
    this.expiresAt[row] = tokens.expiresAt ?? NONE;
    this.refreshExpiresAt[row] = tokens.refreshExpiresAt ?? NONE;
    this.setDue(row, due);
    if (tokens.accessToken !== undefined) this.mode[row] = plan.mode === 'on_demand' ? 1 : 0;
    this.o.onCommit?.(row, commitNow, before, LEASE_KINDS[this.leaseKind[row] as number] ?? 'sweep');
    return this.record(row);
  }

  recordFailure(
    now: number,
    key: SessionKey,
    owner: string,
    failure: { kind: FailureKind; error: LastError; nextAttemptAt?: number },
  ): boolean | Throttled {
    const row = this.row(key);
    if (row < 0 || this.status[row] === 0 || this.leaseOwner.get(row) !== owner) {
      return this.refused(now, row, 'recordFailure') ?? false;
    }
    const dead = failure.kind === 'reauthorization_required';
    const index = dead ? this.indexUnits(row, undefined, undefined) : [];
    if (!this.admitWrite(now, row, this.o.sizes.idle + this.o.sizes.failure, index)) return THROTTLED;
    this.count('recordFailure');
    this.failureCount[row] = (this.failureCount[row] as number) + 1;
    this.lastError.set(row, failure.error);
    this.leaseOwner.delete(row);
    this.leaseUntil[row] = NONE;
    if (dead) {
      this.status[row] = 2;
      this.setDue(row, undefined);
      this.nextAttemptAt[row] = NONE;
    } else if (failure.nextAttemptAt !== undefined) {
      this.nextAttemptAt[row] = failure.nextAttemptAt;
    }
    return true;
  }

  releaseLease(now: number, key: SessionKey, owner: string): undefined | Throttled {
    const row = this.row(key);
    if (row < 0 || this.status[row] === 0 || this.leaseOwner.get(row) !== owner) {
      return this.refused(now, row, 'releaseLease');
    }
    if (!this.admitWrite(now, row, this.o.sizes.idle)) return THROTTLED;
    this.count('releaseLease');
    this.leaseOwner.delete(row);
    this.leaseUntil[row] = NONE;
  }

  queryDue(
    now: number,
    shard: number,
    dueBy: number,
    cursor?: Record<string, unknown>,
    from?: number,
  ):
    | { keys: { userId: string; providerId: string; dueAt: number }[]; cursor?: Record<string, unknown> }
    | Throttled {
    const index = this.indexes[shard];
    if (!index) return { keys: [] };
    // A Query page stops at 1 MB of index entries read.
    const limit = Math.max(1, Math.floor((1024 * 1024) / this.o.sizes.indexEntry));
    const after =
      cursor && typeof cursor.due === 'number' && typeof cursor.row === 'number'
        ? { due: cursor.due, row: cursor.row }
        : undefined;
    const page = index.page(dueBy, from, after, limit);
    const rcu = readUnits(Math.max(1, page.entries.length * this.o.sizes.indexEntry), false);
    if (
      this.o.throughput &&
      !this.o.throughput.admit(now, { partition: 0, indexRcu: { shard, units: rcu } })
    ) {
      return THROTTLED;
    }
    this.stats.rcu += rcu;
    this.count('queryDue');
    const keys = page.entries.map(([due, row]) => ({
      userId: `u${row}`,
      providerId: this.providerIds[this.provider[row] as number] as string,
      dueAt: due,
    }));
    const last = page.entries[page.entries.length - 1];
    return { keys, cursor: page.more && last ? { due: last[0], row: last[1] } : undefined };
  }

  // ---- providers and their circuit --------------------------------------------------------------

  private providerPartition(providerId: string): number {
    return this.o.rows + Math.max(0, this.providerIds.indexOf(providerId));
  }

  /** Registers or replaces a provider (no request: the simulation's setup, and putProvider). */
  setProvider(config: ProviderConfig): { created: boolean; createdAt: number } {
    const existing = this.providers.get(config.providerId);
    const createdAt = existing?.config.createdAt ?? config.createdAt;
    if (!existing) this.providerIds.push(config.providerId);
    if (this.providerIds.length > 0xffff) throw new Error('too many providers for the model');
    const { circuit: _ignored, clientRejectedAt: _flag, ...rest } = config;
    // A new configuration starts with a closed circuit and no rejection flag (as putProvider).
    this.providers.set(config.providerId, { config: { ...rest, createdAt }, attrs: {} });
    return existing ? { created: false, createdAt } : { created: true, createdAt };
  }

  getProvider(now: number, providerId: string): ProviderConfig | undefined | Throttled {
    if (!this.admitRead(now, this.providerPartition(providerId), this.o.sizes.provider, true))
      return THROTTLED;
    this.count('getProvider');
    const item = this.providers.get(providerId);
    if (!item) return undefined;
    const rejected = item.attrs.clientRejectedAt;
    return {
      ...item.config,
      clientRejectedAt: typeof rejected === 'number' ? rejected : undefined,
      circuit: circuitOf(item.attrs),
    };
  }

  listProviderIds(): string[] {
    return [...this.providerIds];
  }

  getCircuit(now: number, providerId: string): CircuitRecord | undefined | Throttled {
    if (!this.admitRead(now, this.providerPartition(providerId), this.o.sizes.provider, true))
      return THROTTLED;
    this.count('getCircuit');
    const item = this.providers.get(providerId);
    return item ? circuitOf(item.attrs) : undefined;
  }

  /**
   * One conditional update of a provider item: `condition` sees its attributes (the item must exist),
   * `update` changes them. Returns the attributes after (or before, with `old`), or undefined.
   */
  providerUpdate(
    now: number,
    op: string,
    providerId: string,
    condition: (a: Record<string, unknown>) => boolean,
    update: (a: Record<string, unknown>) => void,
    old = false,
  ): Record<string, unknown> | undefined | Throttled {
    const partition = this.providerPartition(providerId);
    const units = this.o.sizes.provider;
    if (this.o.throughput && !this.o.throughput.admit(now, { partition, wcu: writeUnits(units) })) {
      return THROTTLED;
    }
    this.stats.wcu += writeUnits(units);
    const item = this.providers.get(providerId);
    if (!item || !condition(item.attrs)) {
      this.count(op, true);
      return undefined;
    }
    this.count(op);
    const before = { ...item.attrs };
    update(item.attrs);
    return old ? before : { ...item.attrs };
  }

  /** Starts the latest sweep's record (replacing the previous sweep's). */
  startSweep(now: number, sweep: { sweepId: string; startedAt: number; summary: Record<string, number> }) {
    if (!this.admitSweepWrite(now)) return THROTTLED;
    // A late dispatch never replaces a newer sweep's record.
    if (this.latestSweep && this.latestSweep.startedAt > sweep.startedAt) {
      this.count('startSweep', true);
      return undefined;
    }
    this.count('startSweep');
    this.latestSweep = { sweepId: sweep.sweepId, startedAt: sweep.startedAt, summary: { ...sweep.summary } };
    return undefined;
  }

  /** Adds a slice's counts to the sweep's record; ignored once a newer sweep replaced it. */
  addToSweep(now: number, sweepId: string, counts: Record<string, number>, finishedAt: number) {
    if (!this.admitSweepWrite(now)) return THROTTLED;
    const sweep = this.latestSweep;
    if (sweep?.sweepId !== sweepId || (sweep.finishedAt !== undefined && sweep.finishedAt > finishedAt)) {
      this.count('addToSweep', true);
      return undefined;
    }
    this.count('addToSweep');
    for (const [k, v] of Object.entries(counts)) sweep.summary[k] = (sweep.summary[k] ?? 0) + v;
    sweep.finishedAt = finishedAt;
    return undefined;
  }

  /** The sweep record is one small item: every slice of every sweep writes it. */
  private admitSweepWrite(now: number): boolean {
    if (this.o.throughput && !this.o.throughput.admit(now, { partition: this.o.rows + 0xffff, wcu: 1 })) {
      return false;
    }
    this.stats.wcu += 1;
    return true;
  }

  getLatestSweep(): StoredSweep | undefined {
    return this.latestSweep;
  }
}
