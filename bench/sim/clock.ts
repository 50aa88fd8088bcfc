import type { Clock } from '../../functions/core/ports.js';

/**
 * Virtual time for the simulation: a priority queue of events (time, then arrival order). Every
 * latency in the models is a promise this queue resolves at its virtual instant; after the events of
 * one instant are released, the run loop lets every microtask they started settle (one macrotask turn)
 * before it moves the clock on, so the core code reads the instant it was woken at. Times are whole
 * milliseconds (rounded up), like Date.now(), which also lets one turn release many events.
 */
export class VirtualClock implements Clock {
  private t: number;
  private readonly times: number[] = [];
  private readonly seqs: number[] = [];
  private readonly fns: (() => void)[] = [];
  private seq = 0;
  /** Events released so far, and macrotask turns taken. */
  events = 0;
  turns = 0;

  constructor(start: number) {
    this.t = start;
  }

  now = (): number => this.t;

  /** Runs `fn` at virtual time `at` (not before now). */
  schedule(at: number, fn: () => void): void {
    this.push(Math.max(this.t, Math.ceil(at)), fn);
  }

  /** Resolves at virtual time `at`. */
  at(at: number): Promise<void> {
    return new Promise((resolve) => this.schedule(at, resolve));
  }

  sleep = (ms: number): Promise<void> => this.at(this.t + ms);

  /** Pending events. */
  get pending(): number {
    return this.times.length;
  }

  /**
   * Releases events in order until none is left before `until`, then sets the clock to `until`.
   * `stop` ends the run early (checked after every instant).
   */
  async run(until: number, stop?: () => boolean): Promise<void> {
    while (this.times.length > 0 && (this.times[0] as number) <= until) {
      const at = this.times[0] as number;
      this.t = at;
      while (this.times.length > 0 && this.times[0] === at) {
        const fn = this.pop();
        this.events++;
        fn();
      }
      this.turns++;
      await new Promise(setImmediate);
      if (stop?.()) return;
    }
    if (this.t < until) this.t = until;
  }

  private less(i: number, j: number): boolean {
    const ti = this.times[i] as number;
    const tj = this.times[j] as number;
    return ti < tj || (ti === tj && (this.seqs[i] as number) < (this.seqs[j] as number));
  }

  private swap(i: number, j: number): void {
    const { times, seqs, fns } = this;
    [times[i], times[j]] = [times[j] as number, times[i] as number];
    [seqs[i], seqs[j]] = [seqs[j] as number, seqs[i] as number];
    [fns[i], fns[j]] = [fns[j] as () => void, fns[i] as () => void];
  }

  private push(at: number, fn: () => void): void {
    this.times.push(at);
    this.seqs.push(this.seq++);
    this.fns.push(fn);
    let i = this.times.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.less(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  private pop(): () => void {
    const top = this.fns[0] as () => void;
    const last = this.times.length - 1;
    this.swap(0, last);
    this.times.pop();
    this.seqs.pop();
    this.fns.pop();
    let i = 0;
    const n = this.times.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.less(l, m)) m = l;
      if (r < n && this.less(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
    return top;
  }
}

/**
 * One CPU: work is served in arrival order, so a runtime cannot do more than its CPU allows. `use`
 * resolves when this piece of work is done.
 */
export class Cpu {
  private freeAt = 0;
  busyMs = 0;

  constructor(private readonly clock: VirtualClock) {}

  use(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    const start = Math.max(this.clock.now(), this.freeAt);
    this.freeAt = start + ms;
    this.busyMs += ms;
    return this.clock.at(this.freeAt);
  }
}

/** A seeded generator (mulberry32) and the distributions the models draw from. */
export class Rng {
  private s: number;
  private spare: number | undefined;

  constructor(seed: number) {
    this.s = seed >>> 0;
  }

  next = (): number => {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };

  normal(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    const u = 1 - this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Lognormal with the given median and shape (sigma of the underlying normal). */
  lognormal(median: number, sigma: number): number {
    return median * Math.exp(sigma * this.normal());
  }

  exponential(mean: number): number {
    return -mean * Math.log(1 - this.next());
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }
}

/** A histogram of non-negative values in fixed bins, for percentiles over millions of samples. */
export class Histogram {
  private readonly bins: Float64Array;
  count = 0;
  min = Number.POSITIVE_INFINITY;
  max = Number.NEGATIVE_INFINITY;
  sum = 0;

  constructor(
    private readonly binWidth: number,
    private readonly lowest: number,
    bins: number,
  ) {
    this.bins = new Float64Array(bins);
  }

  add(value: number): void {
    this.count++;
    this.sum += value;
    if (value < this.min) this.min = value;
    if (value > this.max) this.max = value;
    const i = Math.min(this.bins.length - 1, Math.max(0, Math.floor((value - this.lowest) / this.binWidth)));
    this.bins[i] = (this.bins[i] as number) + 1;
  }

  /** The value below which a share `q` of the samples fall (the upper edge of its bin, within min/max). */
  quantile(q: number): number {
    if (this.count === 0) return Number.NaN;
    const target = q * this.count;
    let seen = 0;
    for (let i = 0; i < this.bins.length; i++) {
      seen += this.bins[i] as number;
      if (seen >= target)
        return Math.min(this.max, Math.max(this.min, this.lowest + (i + 1) * this.binWidth));
    }
    return this.max;
  }
}
