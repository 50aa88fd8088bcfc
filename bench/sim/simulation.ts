import { OAuthClient } from '../../functions/core/oauth/client.js';
import type { DomainEvent, Logger, Metrics } from '../../functions/core/ports.js';
import { ProviderCircuit } from '../../functions/core/refresh/circuit.js';
import { Dispatcher } from '../../functions/core/refresh/dispatch.js';
import { Refresher } from '../../functions/core/refresh/refresher.js';
import type { SliceQueue, SweepSlice } from '../../functions/core/refresh/slices.js';
import { Sweeper } from '../../functions/core/refresh/sweep.js';
import { DefaultTokenService } from '../../functions/core/refresh/token-service.js';
import { CachedProviders } from '../../functions/core/registry.js';
import type { SweepSummary } from '../../functions/core/services.js';
import { DYNAMODB_LIMITS, Throughput } from './capacity.js';
import { Cpu, Histogram, Rng, VirtualClock } from './clock.js';
import { ProviderModel, tokenEndpoint } from './provider-model.js';
import { sessionItemSizes } from './sizes.js';
import { ModelStore } from './store-model.js';
import { SessionTable } from './table-model.js';

/**
 * A discrete-event simulation of the keeper at scale: the real sweep, refresher, circuit, OAuth
 * client and token service run on a virtual clock against a modelled DynamoDB table (latency,
 * per-partition and hot-key throughput, SDK retries) and modelled providers (latency, rotation with
 * reuse detection, rate limit), inside a modelled Lambda fleet: a scheduled invocation every
 * interval, at most `maxWorkers` refresh invocations at once, each a runtime of its own (caches,
 * circuit view, one CPU that serialises the keeper's CPU time), kept warm between invocations.
 */

export interface SimConfig {
  /**
   * `fanout`: the schedule invokes the dispatcher, which sends slices to a queue consumed by at most
   * `maxWorkers` refresh invocations; `single`: the schedule invokes one refresh function that sweeps
   * every shard (the shape before the fan-out).
   */
  mode: 'fanout' | 'single';
  sessions: number;
  /** Simulated duration (s). */
  durationSeconds: number;
  tokenLifetimeSeconds: number;
  providers: number;
  providerLatencyMs: number;
  providerSigma: number;
  /** Grants a second each provider accepts before answering 429. */
  providerRate: number;
  dynamoLatencyMs: number;
  dynamoSigma: number;
  tablePartitions: number;
  shards: number;
  windowSeconds: number;
  intervalSeconds: number;
  /** Grants in flight per worker (C). */
  concurrency: number;
  budgetSeconds: number;
  httpTimeoutMs: number;
  leaseSeconds: number;
  /** Concurrent refresh invocations at most (the event source mapping's maximumConcurrency, M). */
  maxWorkers: number;
  /** The most due sessions in one slice (one message, one invocation). */
  sliceSize: number;
  /** From a message sent to the start of its invocation (SQS and the event source mapping's poll). */
  deliveryMs: number;
  /** Each provider's `maxConcurrentRefreshes` (grants one worker sends it at once); undefined: C. */
  maxConcurrentRefreshes?: number;
  /** The keeper's CPU per refresh on one worker, as wall time (ms). */
  cpuMsPerRefresh: number;
  coldStartMs: number;
  /** Token requests per session per day, and the share of them simulated. */
  tokenRequestsPerSessionDay: number;
  tokenSample: number;
  apiInstances: number;
  minValiditySeconds: number;
  accessTokenBytes: number;
  refreshTokenBytes: number;
  seed: number;
  /** Prints a progress line every this many simulated seconds (0: quiet). */
  progressSeconds: number;
}

export const DEFAULT_SIM: SimConfig = {
  mode: 'fanout',
  sessions: 1_000_000,
  durationSeconds: 7_200,
  tokenLifetimeSeconds: 3_600,
  providers: 4,
  providerLatencyMs: 100,
  providerSigma: 0.5,
  providerRate: 2_000,
  dynamoLatencyMs: 5,
  dynamoSigma: 0.3,
  tablePartitions: 8,
  shards: 4,
  windowSeconds: 600,
  intervalSeconds: 300,
  concurrency: 16,
  budgetSeconds: 120,
  httpTimeoutMs: 10_000,
  leaseSeconds: 30,
  maxWorkers: 50,
  sliceSize: 1_000,
  deliveryMs: 50,
  cpuMsPerRefresh: 10,
  coldStartMs: 250,
  tokenRequestsPerSessionDay: 24,
  tokenSample: 1,
  apiInstances: 20,
  minValiditySeconds: 60,
  accessTokenBytes: 1024,
  refreshTokenBytes: 64,
  seed: 1,
  progressSeconds: 0,
};

/** 2030-01-01T00:00:00Z. */
export const SIM_T0 = Date.UTC(2030, 0, 1);

/** How the keeper's CPU per refresh is spread over its calls (the rest of the calls: 5% each). */
const CPU_SHARE: Record<string, number> = {
  acquireLease: 0.35,
  commitRefresh: 0.35,
  grant: 0.3,
  queryDue: 2,
};
const cpuShare = (op: string) => CPU_SHARE[op] ?? 0.05;

export interface SimReport {
  config: SimConfig;
  sessions: number;
  simulatedSeconds: number;
  refreshes: { sweep: number; onDemand: number; forced: number; perSessionHour: number };
  /** Refreshes committed after the access token expired, plus sessions still expired at the end. */
  missed: number;
  missedAtEnd: number;
  /** The sweep summaries' own count: sessions already expired when a sweep picked them up. */
  sweepMissed: number;
  /**
   * Sweep refreshes: seconds from the first scheduled sweep whose window held the session (the first
   * sweep start at or after refreshDueAt − window) to the refresh's commit: the fleet's delay.
   */
  lateness: { p50: number; p99: number; max: number };
  /** Seconds from the moment the session entered the window (refreshDueAt − window) to its commit. */
  waited: { p50: number; p99: number; max: number };
  /** Seconds of validity left on the old access token when its refresh was committed. */
  margin: { min: number; p01: number };
  workers: {
    peak: number;
    invocations: number;
    coldStarts: number;
    overTimeout: number;
    cpuBusyShare: number;
  };
  queue: { dispatches: number; sent: number; peakWaiting: number; maxDispatchMs: number };
  sweeps: Record<keyof SweepSummary, number>;
  provider: {
    grants: number;
    peakInflight: number;
    reuses: number;
    /** Sessions whose stored refresh token is not the provider's current one (a rotation lost). */
    lostRotations: number;
    invalidGrants: number;
    rateLimited: number;
    abortedSignals: number;
  };
  dynamo: {
    wcuPerRefresh: number;
    tableWcuPerRefresh: number;
    indexWcuPerRefresh: number;
    rcuPerRefresh: number;
    requests: Record<string, number>;
    conditionFailures: Record<string, number>;
    throttles: { write: number; indexWrite: number; read: number; indexRead: number };
    sdkRetries: number;
    failedAfterRetries: number;
    itemBytes: number;
    /** Session writes (table + index units) a second: the busiest second, and the mean over the run. */
    peakWcuPerSecond: number;
    meanWcuPerSecond: number;
  };
  tokens: {
    requests: number;
    served: number;
    expiredServed: number;
    errors: Record<string, number>;
    p99Ms: number;
  };
  logs: Record<string, number>;
  metrics: Record<string, number>;
  wallSeconds: number;
  peakHeapMb: number;
  peakRssMb: number;
  events: number;
  turns: number;
}

class CountingLogger implements Logger {
  readonly counts: Record<string, number> = {};
  private note(level: string, message: string) {
    const k = `${level}: ${message}`;
    this.counts[k] = (this.counts[k] ?? 0) + 1;
  }
  debug() {}
  info() {}
  warn = (m: string) => this.note('warn', m);
  error = (m: string) => this.note('error', m);
}

interface Worker {
  id: number;
  cpu: Cpu;
  sweeper: Sweeper;
  busy: boolean;
}

export async function simulate(partial: Partial<SimConfig> = {}): Promise<SimReport> {
  const c: SimConfig = { ...DEFAULT_SIM, ...partial };
  const wallStart = performance.now();
  const clock = new VirtualClock(SIM_T0);
  const rng = new Rng(c.seed);
  const end = SIM_T0 + c.durationSeconds * 1000;
  const t0s = Math.floor(SIM_T0 / 1000);
  const sizes = await sessionItemSizes(c.accessTokenBytes, c.refreshTokenBytes);
  const throughput = new Throughput({ tablePartitions: c.tablePartitions, ...DYNAMODB_LIMITS });

  const lateness = new Histogram(0.1, 0, 40_000);
  const waited = new Histogram(0.1, 0, 40_000);
  const margin = new Histogram(1, -c.tokenLifetimeSeconds, 3 * c.tokenLifetimeSeconds);
  const refreshes = { sweep: 0, onDemand: 0, forced: 0 };
  let missed = 0;
  const table = new SessionTable({
    rows: c.sessions,
    shardCount: c.shards,
    sizes,
    throughput,
    onCommit: (_row, now, before, kind) => {
      refreshes[kind]++;
      if (!Number.isNaN(before.expiresAt)) {
        if (now >= before.expiresAt * 1000) missed++;
        margin.add(before.expiresAt - now / 1000);
      }
      if (kind === 'sweep' && !Number.isNaN(before.dueAt)) {
        const entered = before.dueAt - c.windowSeconds;
        waited.add(now / 1000 - entered);
        // The first scheduled sweep whose window held the session (sweeps start every interval from t0).
        const firstSweep =
          t0s + Math.max(0, Math.ceil((entered - t0s) / c.intervalSeconds)) * c.intervalSeconds;
        lateness.add(now / 1000 - firstSweep);
      }
    },
  });

  const provider = new ProviderModel({
    clock,
    rng,
    rows: c.sessions,
    latency: { medianMs: c.providerLatencyMs, sigma: c.providerSigma },
    ratePerSecond: c.providerRate,
    retryAfterSeconds: 1,
    expiresIn: c.tokenLifetimeSeconds,
  });
  const providerIds = Array.from({ length: c.providers }, (_, i) => `p${i}`);
  for (const [i, providerId] of providerIds.entries()) {
    table.setProvider({
      providerId,
      tokenEndpoint: tokenEndpoint(i),
      clientId: 'tokenkeeper',
      clientAuthMethod: 'none',
      maxConcurrentRefreshes: c.maxConcurrentRefreshes,
      createdAt: SIM_T0,
      updatedAt: SIM_T0,
    });
  }
  // Sessions with 1-hour tokens whose expiries are spread evenly over one lifetime, as in steady state:
  // the sweep one interval before the start took everything due by then (t0 + window - interval).
  const firstDue = t0s + c.windowSeconds - c.intervalSeconds;
  for (let row = 0; row < c.sessions; row++) {
    table.seed(
      row,
      {
        userId: `u${row}`,
        providerId: providerIds[row % c.providers] as string,
        accessToken: `at.${row}.0`,
        refreshToken: provider.currentRefreshToken(row),
        tokenType: 'Bearer',
        expiresAt: firstDue + 1 + Math.floor((row * c.tokenLifetimeSeconds) / c.sessions),
      },
      SIM_T0,
    );
  }

  const logger = new CountingLogger();
  const metricCounts: Record<string, number> = {};
  const metrics: Metrics = {
    add: (name, _unit, value) => {
      metricCounts[name] = (metricCounts[name] ?? 0) + value;
    },
  };
  const events = { publish: async (_e: DomainEvent) => {} };
  const stores: ModelStore[] = [];
  const reserveMs = c.httpTimeoutMs + 2_000;

  /** One runtime: what createRuntime wires, on the models. Workers charge their CPU; API instances do not. */
  const runtime = (id: string, cpu: Cpu | undefined) => {
    const store = new ModelStore({
      table,
      clock,
      rng,
      latency: { medianMs: c.dynamoLatencyMs, sigma: c.dynamoSigma },
      cpu: cpu ? { cpu, msFor: (op) => cpuShare(op) * c.cpuMsPerRefresh } : undefined,
    });
    stores.push(store);
    const fetch: typeof provider.fetch = cpu
      ? async (input, init) => {
          await cpu.use(cpuShare('grant') * c.cpuMsPerRefresh);
          return provider.fetch(input, init);
        }
      : provider.fetch;
    const oauth = new OAuthClient({
      fetch,
      clock,
      logger,
      timeoutMs: c.httpTimeoutMs,
      allowInsecureHttp: false,
      clientSecret: async () => undefined,
    });
    const providers = new CachedProviders(store, clock, 30_000);
    const circuit = new ProviderCircuit({
      store,
      clock,
      random: rng.next,
      logger,
      metrics,
      events,
      policy: { probeLeaseMs: c.leaseSeconds * 1000, grantConcurrency: c.concurrency },
    });
    const refresher = new Refresher({
      store,
      oauth,
      providers,
      clock,
      logger,
      metrics,
      events,
      random: rng.next,
      leaseMs: c.leaseSeconds * 1000,
      grantReserveMs: reserveMs,
      circuit,
      instanceId: id,
      sleep: clock.sleep,
    });
    return { store, refresher, circuit, providers };
  };

  // ---- the refresh fleet ----------------------------------------------------------------------
  const workers: Worker[] = [];
  const fleet = { active: 0, peak: 0, invocations: 0, coldStarts: 0, overTimeout: 0 };
  const sweepTotals: Record<string, number> = {};
  const timeoutMs = c.budgetSeconds * 1000 + c.httpTimeoutMs + 20_000;
  const queueStats = { dispatches: 0, sent: 0, peakWaiting: 0, maxDispatchMs: 0 };

  const acquireWorker = (): { worker: Worker; cold: boolean } => {
    const idle = workers.find((w) => !w.busy);
    if (idle) {
      idle.busy = true;
      return { worker: idle, cold: false };
    }
    const id = workers.length;
    const cpu = new Cpu(clock);
    const { store, refresher, circuit, providers } = runtime(`w${id}`, cpu);
    const sweeper = new Sweeper({
      store,
      refresher,
      clock,
      logger,
      shardCount: c.shards,
      windowSeconds: c.windowSeconds,
      concurrency: c.concurrency,
      budgetMs: c.budgetSeconds * 1000,
      grantReserveMs: reserveMs,
      circuit,
      providers,
    });
    const worker: Worker = { id, cpu, sweeper, busy: true };
    workers.push(worker);
    return { worker, cold: true };
  };

  /** One invocation of the refresh function: a warm runtime if one is idle, else a cold start. */
  const invoke = async (work: (w: Worker, remainingTimeMs: () => number) => Promise<SweepSummary>) => {
    fleet.invocations++;
    fleet.active++;
    fleet.peak = Math.max(fleet.peak, fleet.active);
    const startedAt = clock.now();
    const deadline = startedAt + timeoutMs;
    const { worker, cold } = acquireWorker();
    try {
      if (cold) {
        fleet.coldStarts++;
        await clock.sleep(c.coldStartMs);
      }
      const summary = await work(worker, () => deadline - clock.now());
      for (const [k, v] of Object.entries(summary)) sweepTotals[k] = (sweepTotals[k] ?? 0) + v;
      if (clock.now() > deadline) fleet.overTimeout++;
    } finally {
      worker.busy = false;
      fleet.active--;
    }
  };

  if (c.mode === 'single') {
    // The shape before the fan-out: the scheduled rule invokes the refresh function, which sweeps every shard.
    for (let at = SIM_T0; at < end; at += c.intervalSeconds * 1000) {
      clock.schedule(at, () => {
        void invoke((w, remainingTimeMs) => w.sweeper.sweep({ remainingTimeMs }));
      });
    }
  } else {
    // The fan-out: the scheduled rule invokes the dispatcher (a function of its own); its slices go to
    // the queue, whose event source mapping runs at most M refresh invocations at once, one slice each.
    const waiting: SweepSlice[] = [];
    let starting = 0;
    const pump = () => {
      while (waiting.length > 0 && fleet.active + starting < c.maxWorkers) {
        const slice = waiting.shift() as SweepSlice;
        starting++;
        clock.schedule(clock.now() + c.deliveryMs, () => {
          starting--;
          void invoke((w, remainingTimeMs) => w.sweeper.sweepSlice(slice, { remainingTimeMs })).then(
            pump,
            pump,
          );
        });
      }
    };
    const queue: SliceQueue = {
      send: async (slices) => {
        await clock.sleep(c.dynamoLatencyMs * Math.ceil(slices.length / 10));
        waiting.push(...slices);
        queueStats.sent += slices.length;
        queueStats.peakWaiting = Math.max(queueStats.peakWaiting, waiting.length);
        pump();
      },
    };
    const dispatcherRuntime = runtime('dispatcher', new Cpu(clock));
    const dispatcher = new Dispatcher({
      store: dispatcherRuntime.store,
      queue,
      clock,
      logger,
      shardCount: c.shards,
      windowSeconds: c.windowSeconds,
      sliceSize: c.sliceSize,
    });
    for (let at = SIM_T0; at < end; at += c.intervalSeconds * 1000) {
      clock.schedule(at, () => {
        void dispatcher.dispatch().then((d) => {
          queueStats.dispatches++;
          queueStats.maxDispatchMs = Math.max(queueStats.maxDispatchMs, d.durationMs);
        });
      });
    }
  }

  // ---- token requests through the API's token service -------------------------------------------
  const tokenStats = { requests: 0, served: 0, expiredServed: 0, errors: {} as Record<string, number> };
  const tokenLatency = new Histogram(1, 0, 60_000);
  const apis = Array.from({ length: c.apiInstances }, (_, i) => {
    const { store, refresher } = runtime(`api${i}`, undefined);
    return new DefaultTokenService({
      store,
      refresher,
      clock,
      sleep: clock.sleep,
      logger,
      metrics,
      maxWaitMs: reserveMs,
    });
  });
  const ratePerMs = (c.sessions * c.tokenRequestsPerSessionDay * c.tokenSample) / 86_400_000;
  const nextRequest = () => {
    if (ratePerMs <= 0) return;
    const at = clock.now() + rng.exponential(1 / ratePerMs);
    if (at >= end) return;
    clock.schedule(at, () => {
      nextRequest();
      const row = rng.int(c.sessions);
      const api = apis[rng.int(apis.length)] as DefaultTokenService;
      const started = clock.now();
      tokenStats.requests++;
      api
        .getToken(
          { userId: `u${row}`, providerId: providerIds[row % c.providers] as string },
          { minValidity: c.minValiditySeconds, force: false },
          { deadline: started + 29_000 },
        )
        .then(
          (result) => {
            tokenStats.served++;
            if ((result.expires_in ?? 1) <= 0) tokenStats.expiredServed++;
          },
          (err: Error) => {
            tokenStats.errors[err.name] = (tokenStats.errors[err.name] ?? 0) + 1;
          },
        )
        .finally(() => tokenLatency.add(clock.now() - started));
    });
  };
  nextRequest();

  // ---- run ------------------------------------------------------------------------------------
  let peakHeap = 0;
  let peakRss = 0;
  const sample = () => {
    const m = process.memoryUsage();
    peakHeap = Math.max(peakHeap, m.heapUsed);
    peakRss = Math.max(peakRss, m.rss);
  };
  const step = c.progressSeconds > 0 ? c.progressSeconds * 1000 : 60_000;
  for (let t = SIM_T0 + step; ; t += step) {
    await clock.run(Math.min(t, end));
    sample();
    if (c.progressSeconds > 0) {
      const s = (clock.now() - SIM_T0) / 1000;
      process.stderr.write(
        `  t=${s}s refreshes=${refreshes.sweep + refreshes.onDemand + refreshes.forced} missed=${missed}` +
          ` workers=${fleet.active}/${fleet.peak} grants in flight=${provider.stats.inflight}` +
          ` wall=${((performance.now() - wallStart) / 1000).toFixed(0)}s heap=${(peakHeap / 2 ** 20).toFixed(0)}MB\n`,
      );
    }
    if (t >= end) break;
  }

  // Sessions the sweep keeps (scheduled) whose token had expired by the end without a refresh.
  let missedAtEnd = 0;
  let lostRotations = 0;
  for (let row = 0; row < c.sessions; row++) {
    const s = table.peek(row);
    // A rotation the store never recorded (and no lease left to commit it): the next grant would be a reuse.
    if (
      s.active &&
      !s.leased &&
      !provider.revoked(row) &&
      s.refreshToken !== provider.currentRefreshToken(row)
    ) {
      lostRotations++;
    }
    if (s.active && s.mode === 'scheduled' && s.expiresAt !== undefined && s.expiresAt * 1000 <= end) {
      missedAtEnd++;
    }
  }

  const total = refreshes.sweep + refreshes.onDemand + refreshes.forced;
  const per = (n: number) => (total > 0 ? n / total : 0);
  const busy = workers.reduce((sum, w) => sum + w.cpu.busyMs, 0);
  return {
    config: c,
    sessions: c.sessions,
    simulatedSeconds: c.durationSeconds,
    refreshes: { ...refreshes, perSessionHour: total / c.sessions / (c.durationSeconds / 3600) },
    missed: missed + missedAtEnd,
    missedAtEnd,
    sweepMissed: sweepTotals.missed ?? 0,
    lateness: { p50: lateness.quantile(0.5), p99: lateness.quantile(0.99), max: lateness.max },
    waited: { p50: waited.quantile(0.5), p99: waited.quantile(0.99), max: waited.max },
    margin: { min: margin.min, p01: margin.quantile(0.01) },
    workers: {
      peak: fleet.peak,
      invocations: fleet.invocations,
      coldStarts: fleet.coldStarts,
      overTimeout: fleet.overTimeout,
      cpuBusyShare: workers.length > 0 ? busy / (workers.length * c.durationSeconds * 1000) : 0,
    },
    queue: queueStats,
    sweeps: {
      due: sweepTotals.due ?? 0,
      refreshed: sweepTotals.refreshed ?? 0,
      skipped: sweepTotals.skipped ?? 0,
      failedTransient: sweepTotals.failedTransient ?? 0,
      reauthorizationRequired: sweepTotals.reauthorizationRequired ?? 0,
      missed: sweepTotals.missed ?? 0,
      backlog: sweepTotals.backlog ?? 0,
      durationMs: sweepTotals.durationMs ?? 0,
    },
    provider: {
      grants: provider.stats.grants,
      peakInflight: provider.stats.peakInflight,
      reuses: provider.stats.reuses,
      lostRotations,
      invalidGrants: provider.stats.invalidGrants,
      rateLimited: provider.stats.rateLimited,
      abortedSignals: provider.stats.abortedSignals,
    },
    dynamo: {
      wcuPerRefresh: per(table.stats.wcu + table.stats.indexWcu),
      tableWcuPerRefresh: per(table.stats.wcu),
      indexWcuPerRefresh: per(table.stats.indexWcu),
      rcuPerRefresh: per(table.stats.rcu),
      requests: table.stats.requests,
      conditionFailures: table.stats.conditionFailures,
      throttles: { ...throughput.throttled },
      sdkRetries: stores.reduce((s, x) => s + x.calls.retries, 0),
      failedAfterRetries: stores.reduce((s, x) => s + x.calls.failed, 0),
      itemBytes: sizes.idle,
      peakWcuPerSecond: table.stats.wcuBySecond.reduce((m, x) => Math.max(m, x ?? 0), 0),
      meanWcuPerSecond: (table.stats.wcu + table.stats.indexWcu) / c.durationSeconds,
    },
    tokens: { ...tokenStats, p99Ms: tokenLatency.quantile(0.99) },
    logs: logger.counts,
    metrics: metricCounts,
    wallSeconds: (performance.now() - wallStart) / 1000,
    peakHeapMb: peakHeap / 2 ** 20,
    peakRssMb: peakRss / 2 ** 20,
    events: clock.events,
    turns: clock.turns,
  };
}
