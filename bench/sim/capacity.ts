/**
 * DynamoDB's throughput limits as the simulation models them. A table partition serves at most
 * 1,000 write units and 3,000 read units a second; items are spread over the table's partitions by
 * their key. The byExpiry index's partition key is the shard number, so all of one shard's index
 * entries sit under one key value: a hot key with the same limits (a key value cannot be split
 * across partitions). Each limit is a token bucket refilled continuously that may hold
 * `burstSeconds` of unused capacity; a request is admitted while its buckets are not empty (it may
 * take them below zero) and throttled otherwise, without consuming anything.
 */

export interface ThroughputOptions {
  tablePartitions: number;
  partitionWcu: number;
  partitionRcu: number;
  /** Per index key value (per shard). */
  keyWcu: number;
  keyRcu: number;
  burstSeconds: number;
}

export const DYNAMODB_LIMITS: Omit<ThroughputOptions, 'tablePartitions'> = {
  partitionWcu: 1_000,
  partitionRcu: 3_000,
  keyWcu: 1_000,
  keyRcu: 3_000,
  burstSeconds: 1,
};

class Bucket {
  private tokens: number;
  private last = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly rate: number,
    private readonly cap: number,
  ) {
    this.tokens = cap;
  }

  /** Refills to `now` (ms) and says whether a request may be admitted. */
  open(now: number): boolean {
    if (now > this.last) {
      this.tokens = Math.min(this.cap, this.tokens + ((now - this.last) / 1000) * this.rate);
      this.last = now;
    }
    return this.tokens > 0;
  }

  take(units: number): void {
    this.tokens -= units;
  }
}

export interface Consumption {
  /** The table partition the item lives in (from its key). */
  partition: number;
  wcu?: number;
  rcu?: number;
  /** Index writes by shard key value (an index entry removed and one added: two writes). */
  indexWcu?: readonly { shard: number; units: number }[];
  indexRcu?: { shard: number; units: number };
}

export class Throughput {
  private readonly tableW: Bucket[];
  private readonly tableR: Bucket[];
  private readonly keyW = new Map<number, Bucket>();
  private readonly keyR = new Map<number, Bucket>();
  throttled = { write: 0, indexWrite: 0, read: 0, indexRead: 0 };

  constructor(readonly o: ThroughputOptions) {
    const b = (rate: number) => new Bucket(rate, rate * o.burstSeconds);
    this.tableW = Array.from({ length: o.tablePartitions }, () => b(o.partitionWcu));
    this.tableR = Array.from({ length: o.tablePartitions }, () => b(o.partitionRcu));
  }

  private key(map: Map<number, Bucket>, shard: number, rate: number): Bucket {
    let bucket = map.get(shard);
    if (!bucket) {
      bucket = new Bucket(rate, rate * this.o.burstSeconds);
      map.set(shard, bucket);
    }
    return bucket;
  }

  /** Admits the request and consumes its units, or refuses it (a throttle) and consumes nothing. */
  admit(now: number, c: Consumption): boolean {
    const p = c.partition % this.o.tablePartitions;
    const w = this.tableW[p] as Bucket;
    const r = this.tableR[p] as Bucket;
    if (c.wcu !== undefined && !w.open(now)) {
      this.throttled.write++;
      return false;
    }
    if (c.rcu !== undefined && !r.open(now)) {
      this.throttled.read++;
      return false;
    }
    for (const i of c.indexWcu ?? []) {
      if (!this.key(this.keyW, i.shard, this.o.keyWcu).open(now)) {
        this.throttled.indexWrite++;
        return false;
      }
    }
    if (c.indexRcu && !this.key(this.keyR, c.indexRcu.shard, this.o.keyRcu).open(now)) {
      this.throttled.indexRead++;
      return false;
    }
    if (c.wcu !== undefined) w.take(c.wcu);
    if (c.rcu !== undefined) r.take(c.rcu);
    for (const i of c.indexWcu ?? []) this.key(this.keyW, i.shard, this.o.keyWcu).take(i.units);
    if (c.indexRcu) this.key(this.keyR, c.indexRcu.shard, this.o.keyRcu).take(c.indexRcu.units);
    return true;
  }
}
