import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type BundleRun, bundlingDrift, runColdStart } from './cold-start.js';
import { ACCESS_TOKEN_LIFETIME_SECONDS, type BenchParams, PROVIDER_ID, startBenchEnv } from './env.js';
import { type HotPathRun, runHotPath } from './hot-path.js';
import { type ItemSizeRow, itemSizeTable, measureSessionItems } from './item-size-phase.js';
import { WORK_CLASSES, type WorkClass, type WorkCounter } from './meter.js';
import {
  DEPLOYMENT_DEFAULTS,
  grantReserveSeconds,
  maxSweepBudgetSeconds,
  perSession,
  predictSweepMs,
  type ReachRow,
  reach,
} from './model.js';
import { OIDC_TARGETS, type OidcFigure, oidcCommand, oidcRows, runOidcPhase } from './oidc-phase.js';
import { kb, markdownTable, ms, num, type Row, table, verdict } from './report.js';
import { median, round } from './stats.js';
import { runStorageFloor, type StorageFloorRun } from './storage-floor.js';
import { runSweep, type SweepRun } from './sweep-phase.js';

/**
 * `npm run bench`: the four figures of the performance issue, each against its own floor in the same
 * run, on the local stack (dynalite and a local token endpoint in child processes). Prints a table and
 * writes bench/results.json; `--update-docs` also rewrites the generated block of docs/performance.md.
 *
 * The sweep figures are medians of `--repeats` runs, interleaved with their floors so that a noisy
 * machine affects both alike; every run is kept in results.json.
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const { values: flags } = parseArgs({
  options: {
    sessions: { type: 'string', default: '2000' },
    latency: { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '32' },
    repeats: { type: 'string', default: '3' },
    'hot-requests': { type: 'string', default: '2000' },
    'hot-sessions': { type: 'string', default: '200' },
    'cold-runs': { type: 'string', default: '7' },
    'probe-sessions': { type: 'string', default: '160' },
    'probe-concurrency': { type: 'string', default: '4' },
    'access-token-bytes': { type: 'string', default: '1024' },
    'refresh-token-bytes': { type: 'string', default: '64' },
    shards: { type: 'string', default: String(DEPLOYMENT_DEFAULTS.shardCount) },
    'oidc-sessions': { type: 'string', default: '320,2000' },
    profile: { type: 'string' },
    out: { type: 'string', default: join(ROOT, 'bench/results.json') },
    'update-docs': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (flags.help) {
  process.stdout.write(
    'usage: npm run bench -- [--sessions 2000] [--latency 100] [--concurrency 32] [--repeats 3]\n' +
      '       [--hot-requests 2000] [--hot-sessions 200] [--cold-runs 7] [--probe-sessions 160]\n' +
      '       [--probe-concurrency 4] [--access-token-bytes 1024] [--refresh-token-bytes 64] [--shards 4]\n' +
      '       [--oidc-sessions 320,2000] [--profile sweep.cpuprofile]\n' +
      '       [--out bench/results.json] [--update-docs]\n',
  );
  process.exit(0);
}

const int = (name: string, value: string | undefined, min: number) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number >= ${min}`);
  return n;
};

const params: BenchParams = {
  sessions: int('sessions', flags.sessions, 1),
  latencyMs: int('latency', flags.latency, 1),
  concurrency: int('concurrency', flags.concurrency, 1),
  repeats: int('repeats', flags.repeats, 1),
  hotRequests: int('hot-requests', flags['hot-requests'], 10),
  hotSessions: int('hot-sessions', flags['hot-sessions'], 1),
  coldRuns: int('cold-runs', flags['cold-runs'], 1),
  accessTokenBytes: int('access-token-bytes', flags['access-token-bytes'], 16),
  refreshTokenBytes: int('refresh-token-bytes', flags['refresh-token-bytes'], 32),
  shardCount: int('shards', flags.shards, 1),
};
const oidcSessions = String(flags['oidc-sessions'])
  .split(',')
  .filter((v) => v !== '')
  .map((v) => int('oidc-sessions', v, 1));
const probe = {
  sessions: int('probe-sessions', flags['probe-sessions'], 1),
  concurrency: int('probe-concurrency', flags['probe-concurrency'], 1),
};

const TARGETS = {
  sweepEfficiency: 0.85,
  queryRequestsPerSession: 0.05,
  hotPathP50Ratio: 1.3,
  bundleBytes: 1_000_000,
  initMs: 150,
};

/** One refresh period later: the tokens a sweep committed are due again (see KeeperOptions). */
const STEP_MS = (ACCESS_TOKEN_LIFETIME_SECONDS - 600) * 1000;

const t0 = performance.now();
const progress = (message: string) =>
  process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(0)}s] ${message}\n`);
const load = () => os.loadavg().map((v) => round(v, 2));

const cpus = os.cpus();
const machine = {
  cpus: cpus.length,
  model: cpus[0]?.model ?? 'unknown',
  memoryGb: round(os.totalmem() / 1024 ** 3, 1),
  node: process.version,
  os: `${os.type()} ${os.release()} ${os.arch()}`,
  loadAverageAtStart: load(),
  loadAverageAtEnd: [] as number[],
};

progress(
  `machine: ${machine.cpus} × ${machine.model}, ${machine.node}, load ${machine.loadAverageAtStart.join(' ')}`,
);
const drift = bundlingDrift(ROOT);
if (drift.length > 0)
  progress(`warning: lib/keeper-function.ts bundling differs from the bench's: ${drift.join(', ')}`);

// --- 4. cold start (child processes only, before the stack starts its own) ------------------------

progress(`cold start: bundling, then ${params.coldRuns} initialisations per bundle…`);
const workDir = await mkdtemp(join(os.tmpdir(), 'tokenkeeper-bench-'));
let cold: Record<string, BundleRun>;
try {
  cold = await runColdStart(ROOT, workDir, params.coldRuns);
} finally {
  await rm(workDir, { recursive: true, force: true });
}

// --- 1–3 on the local stack -----------------------------------------------------------------------

progress('starting dynalite and the token endpoint…');
const env = await startBenchEnv(params);
const sweeps: SweepRun[] = [];
const floors: SweepRun[] = [];
const storages: StorageFloorRun[] = [];
const probes: SweepRun[] = [];
let hot: HotPathRun;
let oidc: OidcFigure[] = [];
let itemSizes: ItemSizeRow[] = [];
try {
  const sweepTable = await env.createTable('sweep');
  const probeTable = await env.createTable('probe');
  progress(`seeding ${params.sessions} + ${probe.sessions} due sessions (not measured)…`);
  const keys = await env.seed(sweepTable, 'sweep', params.sessions, 60);
  const probeKeys = await env.seed(probeTable, 'probe', probe.sessions, 60);

  let sweepStep = 0;
  let probeStep = 0;
  progress('warm-up sweep (not measured)…');
  await runSweep(env, {
    label: 'warm-up',
    table: probeTable,
    keys: probeKeys,
    latencyMs: 0,
    concurrency: params.concurrency,
    clockOffsetMs: STEP_MS * probeStep++,
  });
  for (let r = 1; r <= params.repeats; r++) {
    const tag = `${r}/${params.repeats}`;
    progress(`sweep ${tag}: ${params.sessions} due, L=${params.latencyMs} ms, C=${params.concurrency}…`);
    sweeps.push(
      await runSweep(env, {
        label: `sweep ${tag}`,
        table: sweepTable,
        keys,
        latencyMs: params.latencyMs,
        clockOffsetMs: STEP_MS * sweepStep++,
      }),
    );
    progress(`throughput floor ${tag}: the same sweep with L=0…`);
    floors.push(
      await runSweep(env, {
        label: `floor ${tag}`,
        table: sweepTable,
        keys,
        latencyMs: 0,
        clockOffsetMs: STEP_MS * sweepStep++,
      }),
    );
    progress(`storage floor ${tag}: the lease and commit writes alone…`);
    storages.push(await runStorageFloor(env, sweepTable, keys, STEP_MS * sweepStep++));
    progress(`uncontended ${tag}: ${probe.sessions} due, L=${params.latencyMs} ms, C=${probe.concurrency}…`);
    probes.push(
      await runSweep(env, {
        label: `uncontended ${tag}`,
        table: probeTable,
        keys: probeKeys,
        latencyMs: params.latencyMs,
        concurrency: probe.concurrency,
        clockOffsetMs: STEP_MS * probeStep++,
      }),
    );
  }
  progress('item sizes: one session per access-token size, sealed tokens as Binary and as text…');
  const sizeTable = await env.createTable('item-size');
  itemSizes = await measureSessionItems({
    store: env.keeper({ table: sizeTable }).runtime.store,
    doc: env.doc,
    tableName: sizeTable,
    providerId: PROVIDER_ID,
    meter: env.meter,
    refreshTokenBytes: params.refreshTokenBytes,
  });
  progress(`hot path: ${params.hotRequests} token requests and as many bare GetItems…`);
  hot = await runHotPath(env, { requests: params.hotRequests, sessions: params.hotSessions });
  if (oidcSessions.length > 0) {
    oidc = await runOidcPhase(env, {
      sessions: oidcSessions,
      repeats: params.repeats,
      latencyMs: params.latencyMs,
      concurrency: params.concurrency,
      profile: flags.profile,
      progress,
    });
  }
} finally {
  await env.stop();
}
machine.loadAverageAtEnd = load();

// --- figures -------------------------------------------------------------------------------------

/** The run with the median value of `by` (the lower middle for an even count). */
const medianRun = <T>(runs: T[], by: (r: T) => number): T => {
  const sorted = [...runs].sort((a, b) => by(a) - by(b));
  return sorted[Math.ceil(sorted.length / 2) - 1] as T;
};
const sweep = medianRun(sweeps, (r) => r.measuredMs);
const floorMsPerRefresh = median(floors.map((f) => f.measuredMs / f.sessions));
const storageMsPerSession = median(storages.map((s) => s.msPerSession));
const overheadMs = median(probes.map((p) => p.overheadPerRoundMs));
/** The keeper's CPU per refresh against the fake token endpoint (its client carries the bench's meter). */
const meteredCpuMs = median(sweeps.map((s) => s.cpuMsPerRefresh.keeper));
/** Against the real OAuth server at the largest N, the keeper building its own clients: what Lambda pays. */
const oidcLargest = [...oidc].sort((a, b) => b.sessions - a.sessions)[0];
const keeperCpuMs = oidcLargest?.keeperCpuMsPerRefresh ?? meteredCpuMs;
const oidcView = oidcRows(oidc);
const oidcReproduce = oidcCommand({
  sessions: oidcSessions,
  latencyMs: params.latencyMs,
  concurrency: params.concurrency,
  repeats: params.repeats,
});

const sumWork = (runs: SweepRun[]) => {
  const out = Object.fromEntries(
    WORK_CLASSES.map((k) => [k, { requests: 0, errors: 0, rcu: 0, wcu: 0, gsiWcu: 0, gsiUnknown: 0 }]),
  ) as Record<WorkClass, WorkCounter>;
  for (const run of runs) {
    for (const k of WORK_CLASSES) {
      for (const f of Object.keys(out[k]) as (keyof WorkCounter)[]) out[k][f] += run.work[k][f];
    }
  }
  return out;
};
const refreshed = sweeps.reduce((s, r) => s + r.sessions, 0);
const rawWork = sumWork(sweeps);
const work = perSession(rawWork, refreshed);
const total = WORK_CLASSES.reduce(
  (s, k) => ({
    requests: s.requests + work[k].requests,
    rcu: s.rcu + work[k].rcu,
    wcu: s.wcu + work[k].wcu,
    gsiWcu: s.gsiWcu + work[k].gsiWcu,
  }),
  { requests: 0, rcu: 0, wcu: 0, gsiWcu: 0 },
);

const reachInputs = { latencyOverheadMs: Math.max(0, overheadMs), throughputMsPerRefresh: floorMsPerRefresh };
const predictedMs = predictSweepMs(reachInputs, sweep.sessions, sweep.concurrency, sweep.latencyMs);
const bothFloorsMs = Math.max(sweep.idealMs, floorMsPerRefresh * sweep.sessions);
const maxBudget = maxSweepBudgetSeconds(
  DEPLOYMENT_DEFAULTS.refreshIntervalSeconds,
  DEPLOYMENT_DEFAULTS.refreshWindowSeconds,
  DEPLOYMENT_DEFAULTS.httpTimeoutMs,
);
const reachRows: ReachRow[] = [];
for (const budget of [DEPLOYMENT_DEFAULTS.sweepBudgetSeconds, maxBudget]) {
  for (const concurrency of new Set([DEPLOYMENT_DEFAULTS.refreshConcurrency, params.concurrency, 64])) {
    for (const latencyMs of [50, 100, 250, 500, 1000]) {
      reachRows.push(reach(reachInputs, latencyMs, concurrency, budget));
    }
  }
}
const usableMs =
  (DEPLOYMENT_DEFAULTS.sweepBudgetSeconds - grantReserveSeconds(DEPLOYMENT_DEFAULTS.httpTimeoutMs)) * 1000;
// Computed, not measured: in Lambda the keeper's own CPU sets the throughput bound (no dynalite
// beside it), and a function gets memory / 1769 MB of one vCPU (AWS Lambda documentation).
const lambdaCpuBound = [512, 1024, 1769].map((memoryMb) => {
  const msPerRefresh = keeperCpuMs / Math.min(1, memoryMb / 1769);
  return {
    memoryMb,
    msPerRefresh: round(msPerRefresh, 2),
    perSweepAtDefaultBudget: Math.floor(usableMs / msPerRefresh),
  };
});

const LAMBDA_MEMORY_MB = 512;
const lambdaInputs = {
  latencyOverheadMs: reachInputs.latencyOverheadMs,
  throughputMsPerRefresh: keeperCpuMs / Math.min(1, LAMBDA_MEMORY_MB / 1769),
};
const lambdaReachRows = reachRows
  .filter((r) => r.concurrency !== 64)
  .map((r) => reach(lambdaInputs, r.latencyMs, r.concurrency, r.budgetSeconds));

const logBytesPerRefresh = median(sweeps.map((s) => (s.logs.bytes - s.logs.emfBytes) / s.sessions));
const emfBytesPerSweep = median(sweeps.map((s) => s.logs.emfBytes));
const bundles = Object.entries(cold);
const queryOk = work.query.requests < TARGETS.queryRequestsPerSession;
const leaseOk = work.lease.requests === 1 && rawWork.lease.errors === 0;
const commitOk = work.commit.requests === 1 && rawWork.commit.errors === 0;
const targets: Record<string, { target: string; value: number; met: boolean }> = {
  sweepEfficiency: {
    target: `>= ${TARGETS.sweepEfficiency} (median of ${sweeps.length})`,
    value: round(sweep.efficiency, 3),
    met: sweep.efficiency >= TARGETS.sweepEfficiency,
  },
  leaseWritesPerSession: { target: 'exactly 1 conditional write', value: work.lease.requests, met: leaseOk },
  commitWritesPerSession: {
    target: 'exactly 1 conditional write',
    value: work.commit.requests,
    met: commitOk,
  },
  queryRequestsPerSession: {
    target: `< ${TARGETS.queryRequestsPerSession}`,
    value: round(work.query.requests, 4),
    met: queryOk,
  },
  hotPathP50Ratio: {
    target: `<= ${TARGETS.hotPathP50Ratio}`,
    value: round(hot.ratioP50, 3),
    met: hot.ratioP50 <= TARGETS.hotPathP50Ratio,
  },
};
for (const [name, b] of bundles) {
  targets[`${name}BundleBytes`] = {
    target: `< ${TARGETS.bundleBytes}`,
    value: b.bytes,
    met: b.bytes < TARGETS.bundleBytes,
  };
  targets[`${name}InitMs`] = {
    target: `< ${TARGETS.initMs} (median of ${b.initMs.length})`,
    value: round(b.initMedianMs, 1),
    met: b.initMedianMs < TARGETS.initMs,
  };
}
for (const f of oidc) {
  targets[`oidcKeeperCpuMsPerRefresh${f.sessions}`] = {
    target: `<= ${OIDC_TARGETS.keeperCpuMsPerRefresh} (median of ${f.runs.length})`,
    value: round(f.keeperCpuMsPerRefresh, 3),
    met: f.keeperCpuMsPerRefresh <= OIDC_TARGETS.keeperCpuMsPerRefresh,
  };
  targets[`oidcSweepEfficiency${f.sessions}`] = {
    target: `>= ${OIDC_TARGETS.efficiency} (median of ${f.runs.length})`,
    value: round(f.efficiency, 3),
    met: f.efficiency >= OIDC_TARGETS.efficiency,
  };
}
const allMet = Object.values(targets).every((t) => t.met);

function roundAll<T extends object>(o: T, digits = 3): T {
  return Object.fromEntries(
    Object.entries(o).map(([k, v]) => [k, typeof v === 'number' ? round(v, digits) : v]),
  ) as T;
}

const sweepView = (r: SweepRun) => ({
  label: r.label,
  measuredMs: round(r.measuredMs, 1),
  efficiency: Number.isNaN(r.efficiency) ? null : round(r.efficiency, 3),
  msPerRefresh: round(r.measuredMs / r.sessions, 3),
  overheadPerRoundMs: round(r.overheadPerRoundMs, 2),
  cpuMsPerRefresh: roundAll(r.cpuMsPerRefresh),
  summary: r.summary,
  maxGrantsInFlight: r.endpoint.maxInFlight,
  loadAverage1m: round(r.loadAverage, 2),
});

const results = {
  machine,
  date: new Date().toISOString(),
  durationSeconds: 0,
  params: {
    ...params,
    probeSessions: probe.sessions,
    probeConcurrency: probe.concurrency,
    keeper:
      'createRuntime (functions/core/runtime.ts) + createRefreshHandler / createApiHandler, Powertools logger and EMF metrics',
    dynamodb: 'dynalite 4, in memory, in a child process',
    tokenEndpoint: 'bench/token-endpoint.ts in a child process: rotating refresh tokens, reuse recorded',
    sweepConfig: {
      refreshIntervalSeconds: env.config.refreshIntervalSeconds,
      refreshWindowSeconds: env.config.refreshWindowSeconds,
      sweepBudgetSeconds: env.config.sweepBudgetSeconds,
      httpTimeoutMs: env.config.httpTimeoutMs,
    },
  },
  figures: {
    sweep: {
      sessions: sweep.sessions,
      latencyMs: sweep.latencyMs,
      concurrency: sweep.concurrency,
      idealMs: sweep.idealMs,
      measuredMs: round(sweep.measuredMs, 1),
      efficiency: round(sweep.efficiency, 3),
      efficiencyRuns: sweeps.map((r) => round(r.efficiency, 3)),
      overheadPerRoundMs: round(sweep.overheadPerRoundMs, 2),
      summary: sweep.summary,
      grants: sweep.endpoint.grants,
      refreshTokenReuse: sweeps.reduce((s, r) => s + r.endpoint.reuse, 0),
      cpuMsPerRefresh: roundAll(sweep.cpuMsPerRefresh),
      runs: sweeps.map(sweepView),
    },
    throughputFloor: {
      description: 'the same sweep with L=0: the rate the keeper and dynalite sustain on this machine',
      msPerRefresh: round(floorMsPerRefresh, 3),
      runs: floors.map(sweepView),
    },
    storageFloor: {
      description: 'lease- and commit-shaped UpdateItems alone, same sizes, same client, C at a time',
      msPerSession: round(storageMsPerSession, 3),
      runs: storages.map((s) => ({ ...roundAll(s), cpuMsPerSession: roundAll(s.cpuMsPerSession) })),
    },
    uncontended: {
      description: 'small sweeps at low concurrency: what a refresh adds to L when nothing queues',
      overheadPerRefreshMs: round(overheadMs, 2),
      runs: probes.map(sweepView),
    },
    sweepModel: {
      formula: 'max(ceil(N/C)·(L + uncontended overhead), N · throughput floor per refresh)',
      predictedMs: round(predictedMs, 0),
      measuredMs: round(sweep.measuredMs, 0),
      efficiencyAgainstBothFloors: round(bothFloorsMs / sweep.measuredMs, 3),
    },
    dynamodb: {
      refreshedSessions: refreshed,
      perRefreshedSession: Object.fromEntries(Object.entries(work).map(([k, v]) => [k, roundAll(v, 4)])),
      total: roundAll(total, 4),
      raw: rawWork,
      sessionItemBytes: round(sweep.sessionItemBytes, 0),
      sealedForm: sweep.sealedForm,
      indexEntryBytes: round(sweep.indexEntryBytes, 0),
      sessionItemBySize: {
        description:
          'one session per access-token size through the real store (bench/item-size-phase.ts): the item ' +
          'with its sealed tokens as Binary (as written) and as the tk1. text of the release before; ' +
          'wru = lease + commit + byExpiry index writes of one refresh, measured = dynalite for the Binary form',
        rows: itemSizes,
      },
      measuredVsComputed:
        'requests: counted; rcu and table wcu: ConsumedCapacity as dynalite reports it (DynamoDB sizing rules); ' +
        'gsiWcu: computed from the index keys before and after each write (dynalite does not report index writes)',
    },
    hotPath: {
      requests: hot.requests,
      warmup: hot.warmup,
      batch: hot.batch,
      handler: roundAll(hot.handler, 3),
      bareGetItem: roundAll(hot.bareGetItem, 3),
      ratioP50: round(hot.ratioP50, 3),
      ratioP99: round(hot.ratioP99, 3),
      dynamodbPerRequest: Object.fromEntries(
        Object.entries(hot.work)
          .filter(([, v]) => v.requests > 0)
          .map(([k, v]) => [k, roundAll({ requests: v.requests, rcu: v.rcu, wcu: v.wcu }, 4)]),
      ),
    },
    coldStart: Object.fromEntries(
      bundles.map(([name, b]) => [
        name,
        {
          ...b,
          initMedianMs: round(b.initMedianMs, 1),
          initNoSourceMapsMedianMs: round(b.initNoSourceMapsMedianMs, 1),
          rssMb: round(b.rssMb, 1),
        },
      ]),
    ),
    logs: {
      bytesPerRefresh: round(logBytesPerRefresh, 1),
      emfBytesPerSweep: emfBytesPerSweep,
      bytesPerTokenRequest: round(hot.logs.bytesPerRequest - hot.logs.emfBytesPerRequest, 1),
      emfBytesPerTokenRequest: round(hot.logs.emfBytesPerRequest, 1),
    },
    oidc: {
      description:
        'sweeps against oidc-provider (rotation + reuse detection) behind a token proxy adding L, in a child ' +
        'process; dynalite in another; the keeper alone in the bench process with its own clients; ' +
        'efficiency = the same grants sent straight to the token endpoint at C ÷ the sweep',
      command: oidcReproduce,
      figures: oidc.map((f) => ({
        ...roundAll({ ...f, runs: undefined }),
        runs: f.runs.map((r) => ({
          ...roundAll(r),
          cpuMsPerRefresh: roundAll(r.cpuMsPerRefresh),
          summary: r.summary,
        })),
      })),
    },
    reach: {
      inputs: roundAll(reachInputs, 3),
      keeperCpuMsPerRefresh: round(keeperCpuMs, 3),
      keeperCpuSource: oidcLargest
        ? `real OAuth server, N=${oidcLargest.sessions}, median of ${oidcLargest.runs.length}`
        : 'fake token endpoint, metered client',
      defaults: DEPLOYMENT_DEFAULTS,
      maxSweepBudgetSeconds: maxBudget,
      rows: reachRows,
      lambdaCpuBound,
      lambda512Mb: { inputs: roundAll(lambdaInputs, 3), rows: lambdaReachRows },
    },
  },
  targets: { ...targets, met: allMet },
};
results.durationSeconds = round((performance.now() - t0) / 1000, 1);

// --- output --------------------------------------------------------------------------------------

function figureRows(): Row[] {
  const rows: Row[] = [];
  rows.push([
    `1 sweep: ${sweep.sessions} due, L=${sweep.latencyMs} ms, C=${sweep.concurrency}`,
    ms(sweep.measuredMs, 0),
    `ideal ceil(N/C)·L = ${ms(sweep.idealMs, 0)}`,
    `efficiency ${sweep.efficiency.toFixed(3)} (runs ${sweeps.map((r) => r.efficiency.toFixed(2)).join(', ')}); target >= ${TARGETS.sweepEfficiency}`,
    verdict(targets.sweepEfficiency?.met ?? false),
  ]);
  rows.push([
    '  same sweep with L=0 (throughput floor)',
    ms(floorMsPerRefresh * sweep.sessions, 0),
    `${ms(floorMsPerRefresh, 2)} per refresh`,
    `measured ÷ max(ideal, this floor) = ${(bothFloorsMs / sweep.measuredMs).toFixed(3)}`,
    '',
  ]);
  rows.push([
    '  lease + commit writes alone (storage floor)',
    ms(storageMsPerSession * sweep.sessions, 0),
    `${ms(storageMsPerSession, 2)} per session`,
    `keeper's own share of the floor: ${ms(floorMsPerRefresh - storageMsPerSession, 2)} per refresh`,
    '',
  ]);
  rows.push([
    `  uncontended: ${probe.sessions} due, C=${probe.concurrency}`,
    `+${ms(overheadMs)}`,
    'beyond L per refresh',
    `efficiency ${median(probes.map((p) => p.efficiency)).toFixed(3)}`,
    '',
  ]);
  rows.push([
    '  model max(ceil(N/C)(L+o), N·floor)',
    ms(predictedMs, 0),
    `measured ${ms(sweep.measuredMs, 0)}`,
    `${(sweep.measuredMs / predictedMs).toFixed(2)}× the prediction`,
    '',
  ]);
  rows.push([
    '  CPU per refresh: keeper (metered client)',
    ms(meteredCpuMs, 2),
    `dynalite ${ms(sweep.cpuMsPerRefresh.dynalite ?? Number.NaN, 2)}`,
    `token endpoint ${ms(sweep.cpuMsPerRefresh.tokenEndpoint ?? Number.NaN, 2)}`,
    '',
  ]);
  rows.push([
    '2 DynamoDB per refreshed session',
    `${num(total.requests, 4)} req`,
    `${num(total.wcu + total.gsiWcu, 2)} WCU, ${num(total.rcu, 4)} RCU`,
    `lease ${num(work.lease.requests)} + commit ${num(work.commit.requests)} conditional writes; query ${num(work.query.requests, 4)} req (< 0.05)`,
    verdict(leaseOk && commitOk && queryOk),
  ]);
  for (const k of WORK_CLASSES) {
    const w = work[k];
    if (w.requests === 0) continue;
    rows.push([
      `  ${k}`,
      `${num(w.requests, 4)} req`,
      `${num(w.wcu, 3)} WCU${w.gsiWcu ? ` + ${num(w.gsiWcu, 3)} GSI WCU` : ''}`,
      `${num(w.rcu, 4)} RCU`,
      '',
    ]);
  }
  rows.push([
    `3 hot path: ${hot.requests} token requests`,
    `p50 ${ms(hot.handler.p50, 2)}`,
    `bare GetItem p50 ${ms(hot.bareGetItem.p50, 2)}`,
    `${hot.ratioP50.toFixed(2)}×; target <= ${TARGETS.hotPathP50Ratio}×`,
    verdict(targets.hotPathP50Ratio?.met ?? false),
  ]);
  rows.push([
    '  p99',
    `p99 ${ms(hot.handler.p99, 2)}`,
    `bare GetItem p99 ${ms(hot.bareGetItem.p99, 2)}`,
    `${hot.ratioP99.toFixed(2)}×`,
    '',
  ]);
  for (const [name, b] of bundles) {
    rows.push([
      `4 cold start: ${name} bundle`,
      `${kb(b.bytes)} (${b.bytes} B)`,
      `target < 1 MB (${TARGETS.bundleBytes} B)`,
      `gzip ${kb(b.gzipBytes)}`,
      verdict(targets[`${name}BundleBytes`]?.met ?? false),
    ]);
    rows.push([
      `  ${name} init, median of ${b.initMs.length}`,
      ms(b.initMedianMs),
      `target < ${TARGETS.initMs} ms`,
      `without source maps ${ms(b.initNoSourceMapsMedianMs)}; network calls ${b.networkCalls}`,
      verdict(targets[`${name}InitMs`]?.met ?? false),
    ]);
  }
  return rows;
}

const header: Row = ['figure', 'measured', 'floor / against', 'ratio / detail', 'target'];
const align: ('l' | 'r')[] = ['l', 'r', 'l', 'l', 'l'];
const reachHeader: Row = [
  'provider latency',
  'C',
  'sweep budget',
  'sessions per sweep',
  'bound',
  'sessions kept fresh',
];
const reachTable = (rows: ReachRow[]) =>
  rows.map((r) => [
    ms(r.latencyMs, 0),
    r.concurrency,
    `${r.budgetSeconds} s`,
    r.perSweep,
    r.limit,
    r.sessionsKeptFresh,
  ]);
const shownReach = reachRows.filter((r) => r.latencyMs !== 50 && r.concurrency !== 64);
const shownLambdaReach = lambdaReachRows.filter((r) => r.latencyMs !== 50);
const lambdaTitle =
  `In Lambda at ${LAMBDA_MEMORY_MB} MB (computed: the keeper's ${ms(keeperCpuMs, 2)} of CPU per refresh on ` +
  `${(LAMBDA_MEMORY_MB / 1769).toFixed(2)} vCPU = ${ms(lambdaInputs.throughputMsPerRefresh, 2)} per refresh in place of the throughput floor)`;
const machineLine =
  `${machine.cpus} × ${machine.model}, ${machine.memoryGb} GB, ${machine.os}, Node ${machine.node}; ` +
  `load average ${machine.loadAverageAtStart.join(' / ')} at start, ${machine.loadAverageAtEnd.join(' / ')} at end`;
const reachTitle =
  `How far one sweep goes: overhead ${ms(reachInputs.latencyOverheadMs)} per refresh beyond L, ` +
  `throughput floor ${ms(reachInputs.throughputMsPerRefresh, 2)} per refresh, one-hour tokens, ` +
  `window ${DEPLOYMENT_DEFAULTS.refreshWindowSeconds} s, every ${DEPLOYMENT_DEFAULTS.refreshIntervalSeconds} s`;
const itemSizeView = itemSizeTable(itemSizes);
const itemSizeAlign = itemSizeView.header.map((): 'r' => 'r');
const itemSizeTitle =
  `Session item by access-token size (refresh token ${params.refreshTokenBytes} B; sealed tokens as Binary, ` +
  'and as the tk1. text before) and write units of one refresh: lease + commit + byExpiry index';
const missed = Object.entries(targets)
  .filter(([, t]) => !t.met)
  .map(([k]) => k);

process.stdout.write(
  [
    '',
    `tokenkeeper bench — ${results.date} — ${results.durationSeconds} s`,
    machineLine,
    `N=${params.sessions} L=${params.latencyMs} ms C=${params.concurrency} repeats=${params.repeats} ` +
      `shards=${params.shardCount}; access token ${params.accessTokenBytes} B, refresh token ` +
      `${params.refreshTokenBytes} B, session item ${results.figures.dynamodb.sessionItemBytes} B`,
    '',
    table(header, figureRows(), align),
    '',
    ...(oidc.length > 0
      ? [
          'Against a real OAuth server (oidc-provider + 100 ms proxy in a child process, dynalite in another):',
          table(oidcView.header, oidcView.rows, oidcView.align),
          `reproduce: ${oidcReproduce}`,
          '',
        ]
      : []),
    `${reachTitle}:`,
    table(reachHeader, reachTable(shownReach)),
    '',
    `${lambdaTitle}:`,
    table(reachHeader, reachTable(shownLambdaReach)),
    '',
    `${itemSizeTitle}:`,
    table(itemSizeView.header, itemSizeView.rows, itemSizeAlign),
    '',
    `token endpoint: ${results.figures.sweep.grants} grants per sweep, ` +
      `${results.figures.sweep.refreshTokenReuse} refresh-token reuses in all runs`,
    `logs: ${logBytesPerRefresh.toFixed(0)} B per refresh, ${emfBytesPerSweep} B EMF per sweep, ` +
      `${hot.logs.emfBytesPerRequest.toFixed(0)} B EMF per token request`,
    `targets: ${allMet ? 'all met' : `missed ${missed.join(', ')}`}`,
    `results: ${flags.out}`,
    '',
  ].join('\n'),
);

await writeFile(flags.out as string, `${JSON.stringify(results, null, 2)}\n`);

if (flags['update-docs']) {
  const path = join(ROOT, 'docs/performance.md');
  const begin = '<!-- bench:begin (generated by `npm run bench -- --update-docs`) -->';
  const end = '<!-- bench:end -->';
  const block = [
    begin,
    '',
    `Measured ${results.date.slice(0, 16).replace('T', ' ')} UTC in ${results.durationSeconds} s on ${machineLine}.`,
    '',
    `Parameters: N=${params.sessions} due sessions, provider latency L=${params.latencyMs} ms, concurrency ` +
      `C=${params.concurrency}, ${params.repeats} runs of each sweep (medians shown), ${params.shardCount} shards, ` +
      `access tokens of ${params.accessTokenBytes} B and refresh tokens of ${params.refreshTokenBytes} B ` +
      `(session item ${results.figures.dynamodb.sessionItemBytes} B), ${hot.requests} hot-path requests after ` +
      `${hot.warmup} warm-up, ${params.coldRuns} initialisations per bundle.`,
    '',
    markdownTable(
      header,
      figureRows().map((r) => r.map((c) => String(c).replace(/^ {2}/, '↳ '))),
      align,
    ),
    '',
    ...(oidc.length > 0
      ? [
          'Against a real OAuth server (oidc-provider behind a token proxy adding L, in a child process; ' +
            'dynalite in another; the keeper alone in the bench process, building its own clients):',
          '',
          markdownTable(
            oidcView.header,
            oidcView.rows.map((r) => r.map((c) => String(c).replace(/^ {2}/, '↳ '))),
            oidcView.align,
          ),
          '',
          `Reproduce: \`${oidcReproduce}\` (this phase alone), or \`npm run bench\`.`,
          '',
        ]
      : []),
    `${reachTitle}:`,
    '',
    markdownTable(reachHeader, reachTable(shownReach)),
    '',
    `${lambdaTitle}:`,
    '',
    markdownTable(reachHeader, reachTable(shownLambdaReach)),
    '',
    `${itemSizeTitle}:`,
    '',
    markdownTable(itemSizeView.header, itemSizeView.rows, itemSizeAlign),
    '',
    end,
  ].join('\n');
  const text = await readFile(path, 'utf8').catch(() => `# Performance\n\n${begin}\n${end}\n`);
  const from = text.indexOf('<!-- bench:begin');
  const to = text.indexOf(end);
  if (from < 0 || to < 0) throw new Error('docs/performance.md has no bench:begin … bench:end block');
  await writeFile(path, text.slice(0, from) + block + text.slice(to + end.length));
  progress('docs/performance.md updated');
}
