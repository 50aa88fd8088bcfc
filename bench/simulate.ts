import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_SIM, type SimConfig, type SimReport, simulate } from './sim/simulation.js';

/**
 * `npm run simulate`: the keeper at a million sessions, by discrete-event simulation with the real
 * sweep, refresher, circuit, OAuth client and token service (bench/sim/). One run per provider
 * latency given; prints the figures as a table and, with --out, writes every report as JSON.
 */

const HELP = `npm run simulate -- [options]
  --sessions N          sessions (default ${DEFAULT_SIM.sessions})
  --hours H             simulated hours (default ${DEFAULT_SIM.durationSeconds / 3600})
  --latency 100,1000    provider median latency in ms, one run each (default 100,1000)
  --mode fanout|single  dispatcher → queue → workers, or one sweep per schedule tick (default ${DEFAULT_SIM.mode})
  --workers M           concurrent refresh invocations at most (default ${DEFAULT_SIM.maxWorkers})
  --slice-size N        most due sessions per slice (default ${DEFAULT_SIM.sliceSize})
  --max-per-provider N  each provider's maxConcurrentRefreshes (default: none, C)
  --concurrency C       grants in flight per worker (default ${DEFAULT_SIM.concurrency})
  --shards S            refresh shards (default ${DEFAULT_SIM.shards})
  --partitions P        table partitions (default ${DEFAULT_SIM.tablePartitions})
  --providers N         providers, sessions spread evenly (default ${DEFAULT_SIM.providers})
  --provider-rate R     grants a second each provider accepts (default ${DEFAULT_SIM.providerRate})
  --cpu-ms X            keeper CPU per refresh on a worker, ms of wall time (default ${DEFAULT_SIM.cpuMsPerRefresh})
  --token-sample F      share of the token requests simulated (default ${DEFAULT_SIM.tokenSample})
  --seed N              random seed (default ${DEFAULT_SIM.seed})
  --progress SECONDS    print progress every this many simulated seconds
  --out FILE            write the reports as JSON`;

const { values } = parseArgs({
  options: {
    sessions: { type: 'string' },
    hours: { type: 'string' },
    latency: { type: 'string', default: '100,1000' },
    mode: { type: 'string' },
    workers: { type: 'string' },
    'slice-size': { type: 'string' },
    'max-per-provider': { type: 'string' },
    concurrency: { type: 'string' },
    shards: { type: 'string' },
    partitions: { type: 'string' },
    providers: { type: 'string' },
    'provider-rate': { type: 'string' },
    'cpu-ms': { type: 'string' },
    'token-sample': { type: 'string' },
    seed: { type: 'string' },
    progress: { type: 'string' },
    out: { type: 'string' },
    help: { type: 'boolean' },
  },
});

if (values.help) {
  console.log(HELP);
  process.exit(0);
}

const num = (v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) {
    console.error(`not a number: ${v}\n${HELP}`);
    process.exit(2);
  }
  return n;
};

const base: Partial<SimConfig> = {};
const set = <K extends keyof SimConfig>(k: K, v: SimConfig[K] | undefined) => {
  if (v !== undefined) base[k] = v;
};
set('sessions', num(values.sessions));
set('durationSeconds', values.hours === undefined ? undefined : (num(values.hours) as number) * 3600);
if (values.mode !== undefined && values.mode !== 'fanout' && values.mode !== 'single') {
  console.error(`--mode is fanout or single\n${HELP}`);
  process.exit(2);
}
set('mode', values.mode as SimConfig['mode'] | undefined);
set('maxWorkers', num(values.workers));
set('sliceSize', num(values['slice-size']));
set('maxConcurrentRefreshes', num(values['max-per-provider']));
set('concurrency', num(values.concurrency));
set('shards', num(values.shards));
set('tablePartitions', num(values.partitions));
set('providers', num(values.providers));
set('providerRate', num(values['provider-rate']));
set('cpuMsPerRefresh', num(values['cpu-ms']));
set('tokenSample', num(values['token-sample']));
set('seed', num(values.seed));
set('progressSeconds', num(values.progress));

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits }) : String(n);

function table(reports: SimReport[]): string {
  const row = (label: string, f: (r: SimReport) => string) => `| ${label} | ${reports.map(f).join(' | ')} |`;
  return [
    `| figure | ${reports.map((r) => `L = ${r.config.providerLatencyMs} ms`).join(' | ')} |`,
    `| :-- | ${reports.map(() => '--:').join(' | ')} |`,
    row('missed refreshes (target 0)', (r) => `**${fmt(r.missed)}**`),
    row('↳ expired at the end, never refreshed', (r) => fmt(r.missedAtEnd)),
    row('↳ sweeps that found a session already expired', (r) => fmt(r.sweepMissed)),
    row('refreshes (sweep / on demand)', (r) => `${fmt(r.refreshes.sweep)} / ${fmt(r.refreshes.onDemand)}`),
    row('refreshes per session-hour', (r) => fmt(r.refreshes.perSessionHour, 3)),
    row('lateness after the first sweep due, p50 / p99 / max (s)', (r) =>
      [r.lateness.p50, r.lateness.p99, r.lateness.max].map((x) => fmt(x, 1)).join(' / '),
    ),
    row('↳ since entering the window, p50 / p99 / max (s)', (r) =>
      [r.waited.p50, r.waited.p99, r.waited.max].map((x) => fmt(x, 1)).join(' / '),
    ),
    row('margin left at commit, min / p1 (s)', (r) => `${fmt(r.margin.min, 1)} / ${fmt(r.margin.p01, 1)}`),
    row('peak concurrent workers', (r) => fmt(r.workers.peak)),
    row('invocations (cold starts)', (r) => `${fmt(r.workers.invocations)} (${fmt(r.workers.coldStarts)})`),
    row('invocations past the Lambda timeout', (r) => fmt(r.workers.overTimeout)),
    row(
      'slices sent (most waiting in the queue)',
      (r) => `${fmt(r.queue.sent)} (${fmt(r.queue.peakWaiting)})`,
    ),
    row('worker CPU busy', (r) => `${fmt(100 * r.workers.cpuBusyShare, 1)} %`),
    row('peak grants in flight', (r) => fmt(r.provider.peakInflight)),
    row('refresh-token reuses (must be 0)', (r) => `**${fmt(r.provider.reuses)}**`),
    row('rotations lost (stored refresh token behind the provider’s)', (r) => fmt(r.provider.lostRotations)),
    row('provider 429s', (r) => fmt(r.provider.rateLimited)),
    row(
      'write units per refresh (table + index)',
      (r) =>
        `${fmt(r.dynamo.wcuPerRefresh, 2)} (${fmt(r.dynamo.tableWcuPerRefresh, 2)} + ${fmt(r.dynamo.indexWcuPerRefresh, 2)})`,
    ),
    row(
      'write units a second, mean / busiest second',
      (r) => `${fmt(r.dynamo.meanWcuPerSecond)} / ${fmt(r.dynamo.peakWcuPerSecond)}`,
    ),
    row('read units per refresh (incl. token requests)', (r) => fmt(r.dynamo.rcuPerRefresh, 3)),
    row('throttled requests (write / index write / read)', (r) =>
      [
        r.dynamo.throttles.write,
        r.dynamo.throttles.indexWrite,
        r.dynamo.throttles.read + r.dynamo.throttles.indexRead,
      ]
        .map((x) => fmt(x))
        .join(' / '),
    ),
    row(
      '↳ SDK retries / failed after retries',
      (r) => `${fmt(r.dynamo.sdkRetries)} / ${fmt(r.dynamo.failedAfterRetries)}`,
    ),
    row(
      'token requests simulated (errors)',
      (r) => `${fmt(r.tokens.requests)} (${fmt(Object.values(r.tokens.errors).reduce((a, b) => a + b, 0))})`,
    ),
    row('simulation wall time / peak heap', (r) => `${fmt(r.wallSeconds)} s / ${fmt(r.peakHeapMb)} MB`),
  ].join('\n');
}

const latencies = String(values.latency)
  .split(',')
  .map((s) => num(s.trim()) as number);
const reports: SimReport[] = [];
for (const latency of latencies) {
  const config = { ...base, providerLatencyMs: latency };
  console.error(`simulating ${fmt(config.sessions ?? DEFAULT_SIM.sessions)} sessions, L=${latency} ms …`);
  const report = await simulate(config);
  reports.push(report);
  console.error(`  done in ${fmt(report.wallSeconds)} s`);
}
const c = reports[0]?.config ?? DEFAULT_SIM;
console.log(
  `${fmt(c.sessions)} sessions of ${c.tokenLifetimeSeconds / 60}-minute tokens over ${fmt(c.durationSeconds / 3600, 1)} simulated hours;` +
    ` ${c.mode === 'fanout' ? `fan-out in slices of ${fmt(c.sliceSize)}` : 'one sweep per tick'}, M=${c.maxWorkers} workers × C=${c.concurrency}, ${c.shards} shards, ${c.tablePartitions} table partitions,` +
    ` ${c.providers} providers at ${fmt(c.providerRate)} grants/s each, ${c.cpuMsPerRefresh} ms CPU per refresh,` +
    ` token requests ${c.tokenRequestsPerSessionDay}/session/day (${fmt(100 * c.tokenSample)} % simulated).\n`,
);
console.log(table(reports));
if (values.out) writeFileSync(values.out, `${JSON.stringify(reports, null, 2)}\n`);
