/**
 * The parts of the cost model (bench/cost.ts) that are more than arithmetic, kept pure so that they
 * can be tested: how often a keepAlive session is refreshed given when its callers ask, the load a
 * fleet of such sessions puts on DynamoDB minute by minute over a day, what DynamoDB auto scaling
 * provisions for that load, and the size of a sealed token in each stored form.
 */

export const MINUTES_PER_DAY = 1440;

/** When a session's callers ask for tokens. */
export interface CallerPattern {
  /** token requests per session per day */
  requestsPerDay: number;
  /** the requests fall in one window of this many hours a day (24 = spread over the whole day) */
  activeHours: number;
  /** the sessions' windows start uniformly over this many hours (a fleet does not start at one minute) */
  startSpreadHours: number;
}

export interface TokenTimes {
  /** access-token lifetime the provider issues */
  lifetimeSeconds: number;
  /** the callers' minValidity: a request refreshes when the token has less left than this */
  minValiditySeconds: number;
  /** the sweep's window: a session is refreshed once its due time is this close */
  windowSeconds: number;
  /** keepAlive: the grant is renewed by the sweep when it has not been used for this long */
  keepAliveSeconds: number;
}

export interface KeepAliveDay {
  /** expected refreshes per session and minute over one day, minute 0 = the window's start */
  perMinute: Float64Array;
  /** refreshes per session per day caused by a token request (the API function pays the grant) */
  onDemandPerDay: number;
  /** refreshes per session per day made by the sweep to keep an idle grant alive */
  keepAlivePerDay: number;
  /** the most on-demand refreshes a day can hold: one per token lifetime in the window, at most one per request */
  boundPerDay: number;
}

/**
 * Refreshes of one keepAlive session over a day, as expected values, minute by minute. Requests
 * arrive at random (Poisson) at a constant rate inside the active window and never outside it. A
 * request refreshes when the last grant is older than lifetime − minValidity; the sweep refreshes a
 * grant unused for keepAlive − window. Tracked as the distribution of the last grant's age over three
 * days from an expired token, the last day reported (steady state, also when the window is 24 h).
 */
export function keepAliveDay(callers: CallerPattern, t: TokenTimes): KeepAliveDay {
  const activeMinutes = Math.round(callers.activeHours * 60);
  const ratePerMinute = callers.requestsPerDay / activeMinutes;
  const pRequest = 1 - Math.exp(-ratePerMinute);
  const staleAfter = Math.max(1, Math.ceil((t.lifetimeSeconds - t.minValiditySeconds) / 60));
  const keepAliveAfter = Math.max(1, Math.ceil((t.keepAliveSeconds - t.windowSeconds) / 60));
  const ages = keepAliveAfter + 1;
  // age[a]: probability that the last grant was a minutes ago; the last bin collects everything older.
  let age = new Float64Array(ages);
  age[ages - 1] = 1;
  const perMinute = new Float64Array(MINUTES_PER_DAY);
  let onDemand = 0;
  let keepAlive = 0;
  const days = 3;
  for (let m = 0; m < days * MINUTES_PER_DAY; m++) {
    const active = m % MINUTES_PER_DAY < activeMinutes;
    let stale = 0;
    for (let a = staleAfter; a < ages; a++) stale += age[a] as number;
    const byRequest = active ? stale * pRequest : 0;
    const bySweep = (age[ages - 1] as number) * (active ? 1 - pRequest : 1);
    const next = new Float64Array(ages);
    for (let a = 0; a < ages - 1; a++) {
      const mass = age[a] as number;
      const refreshed = a >= staleAfter && active ? mass * pRequest : 0;
      const to = Math.min(a + 1, ages - 1);
      next[to] = (next[to] as number) + mass - refreshed;
    }
    // The oldest bin is either refreshed by a request, or by the sweep: none of it stays.
    next[0] = byRequest + bySweep;
    age = next;
    if (m >= (days - 1) * MINUTES_PER_DAY) {
      perMinute[m % MINUTES_PER_DAY] = byRequest + bySweep;
      onDemand += byRequest;
      keepAlive += bySweep;
    }
  }
  const boundPerDay = Math.min(
    callers.requestsPerDay,
    Math.floor((activeMinutes * 60) / (t.lifetimeSeconds - t.minValiditySeconds)) + 1,
  );
  return { perMinute, onDemandPerDay: onDemand, keepAlivePerDay: keepAlive, boundPerDay };
}

/** The share of the fleet whose window is open, minute by minute, with starts spread over the spread. */
export function activityProfile(callers: CallerPattern): Float64Array {
  const one = new Float64Array(MINUTES_PER_DAY);
  for (let m = 0; m < Math.round(callers.activeHours * 60); m++) one[m % MINUTES_PER_DAY] = 1;
  return spread(one, callers.startSpreadHours);
}

/** Averages a per-session daily profile over sessions whose day starts uniformly within `hours`. */
export function spread(profile: Float64Array, hours: number): Float64Array {
  const shifts = Math.max(1, Math.round(hours * 60));
  const out = new Float64Array(MINUTES_PER_DAY);
  for (let s = 0; s < shifts; s++) {
    for (let m = 0; m < MINUTES_PER_DAY; m++) {
      const to = (m + s) % MINUTES_PER_DAY;
      out[to] = (out[to] as number) + (profile[m] as number) / shifts;
    }
  }
  return out;
}

/** How DynamoDB auto scaling (target tracking) is modelled. */
export interface AutoScaling {
  /** consumed ÷ provisioned it aims at, 0.2–0.9 */
  target: number;
  minCapacity: number;
  maxCapacity: number;
  /** the high alarm needs this many consecutive minutes above the target */
  scaleOutAfterMinutes: number;
  /** and the new capacity takes this long to become active */
  scaleOutDelayMinutes: number;
  /** the low alarm needs this many consecutive minutes below lowFraction × target */
  scaleInAfterMinutes: number;
  lowFraction: number;
  /** DynamoDB: 4 decreases a day at any time, then one more in each hour with no decrease before it */
  freeDecreasesPerDay: number;
}

export const AUTO_SCALING_DEFAULTS: Omit<AutoScaling, 'target' | 'minCapacity' | 'maxCapacity'> = {
  scaleOutAfterMinutes: 2,
  scaleOutDelayMinutes: 3,
  scaleInAfterMinutes: 15,
  lowFraction: 0.8,
  freeDecreasesPerDay: 4,
};

export interface ScaledDay {
  /** capacity units × hours provisioned over the day */
  unitHours: number;
  /** units consumed over the day, in unit-hours (consumed per second × hours) */
  consumedUnitHours: number;
  /** consumed ÷ provisioned over the day */
  utilisation: number;
  peakCapacity: number;
  decreases: number;
  /** share of the demand above the capacity and the 300 s burst bank: throttled, retried, delayed */
  throttledShare: number;
}

/**
 * Target tracking on a per-minute demand (units per second), over three identical days from the
 * minimum; the last day is reported. Scale-out follows the demand of the minute its alarm fired, after
 * a delay; scale-in follows the highest demand of the quiet stretch, and only as often as DynamoDB
 * allows decreases. Demand above capacity first spends the burst bank (up to 300 s of unused capacity).
 */
export function autoScaledDay(demand: Float64Array, s: AutoScaling): ScaledDay {
  const want = (units: number) =>
    Math.min(s.maxCapacity, Math.max(s.minCapacity, Math.ceil(units / s.target - 1e-9)));
  let capacity = s.minCapacity;
  let high = 0;
  let low = 0;
  let lowPeak = 0;
  let bank = 0;
  let pending: { at: number; capacity: number } | undefined;
  let decreasesToday = 0;
  let lastDecrease = Number.NEGATIVE_INFINITY;
  const result = {
    unitHours: 0,
    consumedUnitHours: 0,
    peakCapacity: 0,
    decreases: 0,
    throttled: 0,
    demand: 0,
  };
  const days = 3;
  for (let m = 0; m < days * MINUTES_PER_DAY; m++) {
    const minuteOfDay = m % MINUTES_PER_DAY;
    if (minuteOfDay === 0) decreasesToday = 0;
    if (pending && m >= pending.at) {
      capacity = Math.max(capacity, pending.capacity);
      pending = undefined;
    }
    const d = demand[minuteOfDay] as number;
    // Burst: unused capacity is banked, up to 300 seconds' worth; demand above capacity spends it.
    const over = (d - capacity) * 60;
    const fromBank = Math.min(bank, Math.max(0, over));
    bank = Math.min(capacity * 300, bank - fromBank + Math.max(0, -over));
    const throttled = Math.max(0, over) - fromBank;
    const last = m >= (days - 1) * MINUTES_PER_DAY;
    if (last) {
      result.unitHours += capacity / 60;
      // Throttled requests are retried later: all the demand is consumed (and billed) in the end.
      result.consumedUnitHours += d / 60;
      result.peakCapacity = Math.max(result.peakCapacity, capacity);
      result.throttled += throttled;
      result.demand += d * 60;
    }
    const utilisation = d / capacity;
    high = utilisation > s.target ? high + 1 : 0;
    if (high >= s.scaleOutAfterMinutes && !pending && want(d) > capacity) {
      pending = { at: m + s.scaleOutDelayMinutes, capacity: want(d) };
      high = 0;
    }
    if (utilisation < s.lowFraction * s.target) {
      low += 1;
      lowPeak = Math.max(lowPeak, d);
    } else {
      low = 0;
      lowPeak = 0;
    }
    const mayDecrease = decreasesToday < s.freeDecreasesPerDay || m - lastDecrease >= 60;
    if (low >= s.scaleInAfterMinutes && mayDecrease && want(lowPeak) < capacity && !pending) {
      capacity = want(lowPeak);
      decreasesToday += 1;
      lastDecrease = m;
      low = 0;
      lowPeak = 0;
      if (last) result.decreases += 1;
    }
  }
  return {
    unitHours: result.unitHours,
    consumedUnitHours: result.consumedUnitHours,
    utilisation: result.consumedUnitHours / result.unitHours,
    peakCapacity: result.peakCapacity,
    decreases: result.decreases,
    throttledShare: result.demand === 0 ? 0 : result.throttled / result.demand,
  };
}

/**
 * The utilisation at which provisioned capacity costs what on-demand does: the price of one unit for
 * one second, provisioned, over the on-demand price of one request unit.
 */
export function breakEvenUtilisation(unitHourPrice: number, requestUnitPrice: number): number {
  return unitHourPrice / 3600 / requestUnitPrice;
}

/**
 * Bytes of a sealed token in each stored form (functions/core/crypto/crypto.ts): the text envelope
 * `tk1.<keyId>.<nonce>.<ciphertext+tag>` in unpadded base64url, and the binary one: a version byte, the
 * key id's length and bytes, the 12-byte nonce, the ciphertext and the 16-byte tag.
 */
export function sealedTokenBytes(plaintextBytes: number, form: 'text' | 'binary', keyIdLength = 2): number {
  const b64 = (n: number) => Math.ceil((n * 4) / 3);
  return form === 'binary'
    ? 2 + keyIdLength + 12 + plaintextBytes + 16
    : 'tk1.'.length + keyIdLength + 1 + b64(12) + 1 + b64(plaintextBytes + 16);
}
