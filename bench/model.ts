import type { WorkClass, WorkCounter } from './meter.js';

/**
 * Derived figures shared by the report (bench/run.ts) and the cost model (bench/cost.ts): DynamoDB work
 * per refreshed session, and how many sessions one refresh function keeps fresh.
 */

export interface WorkPerSession {
  requests: number;
  rcu: number;
  wcu: number;
  gsiWcu: number;
}

export function perSession(
  work: Record<WorkClass, WorkCounter>,
  sessions: number,
): Record<WorkClass, WorkPerSession> {
  return Object.fromEntries(
    Object.entries(work).map(([k, v]) => [
      k,
      {
        requests: v.requests / sessions,
        rcu: v.rcu / sessions,
        wcu: v.wcu / sessions,
        gsiWcu: v.gsiWcu / sessions,
      },
    ]),
  ) as Record<WorkClass, WorkPerSession>;
}

/** The deployment defaults the reach model assumes (lib/config.ts DEFAULT_CONFIG). */
export const DEPLOYMENT_DEFAULTS = {
  refreshIntervalSeconds: 300,
  refreshWindowSeconds: 600,
  sweepBudgetSeconds: 120,
  httpTimeoutMs: 10_000,
  refreshConcurrency: 16,
  shardCount: 4,
  accessTokenLifetimeSeconds: 3600,
} as const;

/** The time a sweep keeps back for one more grant (runtime.ts: HTTP timeout + 2 s). */
export const grantReserveSeconds = (httpTimeoutMs: number) => httpTimeoutMs / 1000 + 2;

/**
 * The largest sweep budget the CDK configuration accepts with a given schedule: the function timeout
 * (budget + one HTTP timeout + 20 s, lib/config.ts) must stay below the period, and the refresh
 * window must exceed period + budget.
 */
export function maxSweepBudgetSeconds(
  intervalSeconds: number,
  windowSeconds: number,
  httpTimeoutMs: number,
): number {
  const byTimeout = intervalSeconds - Math.ceil(httpTimeoutMs / 1000) - 20 - 1;
  const byWindow = windowSeconds - intervalSeconds - 1;
  return Math.max(1, Math.min(byTimeout, byWindow));
}

/**
 * How often a session is refreshed: a sweep refreshes it once it expires within the window, and sweeps
 * run every interval, so a token of lifetime T is replaced after T − window at the earliest (then the
 * sweeps' phase may add up to one interval). The cost model takes the earliest: the most refreshes.
 */
export function refreshPeriodSeconds(lifetime: number, windowSeconds: number): number {
  return Math.max(1, lifetime - windowSeconds);
}

export interface ReachInputs {
  /** measured time a refresh takes beyond the provider's latency when nothing queues (ms) */
  latencyOverheadMs: number;
  /** measured wall time per refresh when nothing waits on the provider (the L=0 floor), ms */
  throughputMsPerRefresh: number;
}

export interface ReachRow {
  latencyMs: number;
  concurrency: number;
  budgetSeconds: number;
  /** sessions one sweep refreshes within its budget */
  perSweep: number;
  /** which bound applies: C grants in flight, or the rate the keeper (and here dynalite) sustains */
  limit: 'latency' | 'throughput';
  /** sessions one refresh function keeps fresh (steady state, one-hour tokens) */
  sessionsKeptFresh: number;
}

/** Predicted duration of a sweep of n sessions: the slower of its latency and its throughput bound. */
export function predictSweepMs(
  inputs: ReachInputs,
  n: number,
  concurrency: number,
  latencyMs: number,
): number {
  return Math.max(
    Math.ceil(n / concurrency) * (latencyMs + inputs.latencyOverheadMs),
    n * inputs.throughputMsPerRefresh,
  );
}

/**
 * Sessions one sweep gets through in its usable budget (the budget less the reserve for one more
 * grant): C / (L + overhead) refreshes per ms while grants are the bottleneck, at most one per
 * throughput-floor interval. A function keeps fresh the sessions whose refreshes fall due within one
 * interval: perSweep × refresh period / interval.
 */
export function reach(
  inputs: ReachInputs,
  latencyMs: number,
  concurrency: number,
  budgetSeconds: number,
  d = DEPLOYMENT_DEFAULTS,
): ReachRow {
  const usableMs = (budgetSeconds - grantReserveSeconds(d.httpTimeoutMs)) * 1000;
  const byLatency = (concurrency * usableMs) / (latencyMs + inputs.latencyOverheadMs);
  const byThroughput = usableMs / Math.max(1e-6, inputs.throughputMsPerRefresh);
  const perSweep = Math.floor(Math.min(byLatency, byThroughput));
  const period = refreshPeriodSeconds(d.accessTokenLifetimeSeconds, d.refreshWindowSeconds);
  return {
    latencyMs,
    concurrency,
    budgetSeconds,
    perSweep,
    limit: byLatency <= byThroughput ? 'latency' : 'throughput',
    sessionsKeptFresh: Math.floor((perSweep * period) / d.refreshIntervalSeconds),
  };
}
