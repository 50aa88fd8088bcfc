import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createTelemetry } from '../functions/shared/powertools.js';
import {
  AUTO_SCALING_DEFAULTS,
  activityProfile,
  autoScaledDay,
  breakEvenUtilisation,
  type CallerPattern,
  keepAliveDay,
  MINUTES_PER_DAY,
  type ScaledDay,
  sealedTokenBytes,
  spread,
} from './cost-model.js';
import { writeUnits } from './item-size.js';
import { DEPLOYMENT_DEFAULTS, type ReachRow, refreshPeriodSeconds } from './model.js';
import { markdownTable, type Row } from './report.js';

/**
 * `npm run cost`: the monthly AWS cost of one million sessions with one-hour access tokens, from the
 * figures `npm run bench` measured (bench/results.json), public list prices, and stated assumptions,
 * for each configuration it compares: the eager and keepAlive refresh policies, on-demand and
 * provisioned (auto-scaled) DynamoDB, sealed tokens as text or binary, and the serving-side log trims.
 * Prints the model and writes docs/cost.md. Nothing is fetched: when prices change, edit PRICES and
 * run it again.
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const { values: flags } = parseArgs({
  options: {
    results: { type: 'string', default: join(ROOT, 'bench/results.json') },
    out: { type: 'string', default: join(ROOT, 'docs/cost.md') },
    sessions: { type: 'string', default: '1000000' },
    'token-requests-per-session-per-day': { type: 'string', default: '24' },
    'active-hours': { type: 'string', default: '8' },
    'start-spread-hours': { type: 'string', default: '2' },
    'provider-latency-ms': { type: 'string', default: '100' },
    'target-utilisation': { type: 'string', default: '70' },
    'eager-peak-to-average': { type: 'string', default: '1' },
  },
});

/**
 * Public list prices, AWS us-east-1, arm64 Lambda, in USD, as published when this file was written
 * (2025; DynamoDB on-demand after its November 2024 reduction). Free tiers are ignored.
 */
export const PRICES = {
  asOf: '2025 (AWS public pricing pages, us-east-1)',
  /** DynamoDB on-demand, Standard table class: per write request unit */
  dynamodbWriteRequestUnit: 0.625 / 1e6,
  /** per read request unit (one strongly consistent read up to 4 KB, or two eventually consistent) */
  dynamodbReadRequestUnit: 0.125 / 1e6,
  /** DynamoDB provisioned capacity, Standard table class: per write capacity unit-hour */
  dynamodbWcuHour: 0.00065,
  /** per read capacity unit-hour */
  dynamodbRcuHour: 0.00013,
  /** per GB-month of table and index storage (the first 25 GB each month are free; ignored) */
  dynamodbStorageGbMonth: 0.25,
  /** Lambda arm64, per GB-second (first pricing tier) */
  lambdaArmGbSecond: 0.0000133334,
  /** Lambda, per request */
  lambdaRequest: 0.2 / 1e6,
  /** API Gateway HTTP API, per request: first 300 million a month, then the next tier */
  httpApiRequestFirst300M: 1.0 / 1e6,
  httpApiRequestAfter300M: 0.9 / 1e6,
  /** SQS standard queue, per request (send batch, receive, delete; each 64 KB chunk) */
  sqsRequest: 0.4 / 1e6,
  /** CloudWatch: custom metric per month (EMF metrics are custom metrics), first 10,000 metrics */
  cloudwatchMetricMonth: 0.3,
  /** standard-resolution alarm, per alarm metric per month */
  cloudwatchAlarmMonth: 0.1,
  /** custom dashboard per month */
  cloudwatchDashboardMonth: 3.0,
  /** CloudWatch Logs ingestion per GB (Standard class; Lambda logs' first tier) */
  cloudwatchLogsIngestGb: 0.5,
  /** CloudWatch Logs archived storage per GB-month */
  cloudwatchLogsStorageGbMonth: 0.03,
  /** Secrets Manager per secret per month, and per 10,000 API calls */
  secretsManagerSecretMonth: 0.4,
  secretsManagerPer10kCalls: 0.05,
  /** EventBridge: custom events put on a bus, per event (scheduled rule invocations are free) */
  eventBridgeCustomEvent: 1.0 / 1e6,
} as const;

/** What the model assumes beyond the measurements; every one is a named input. */
export const ASSUMPTIONS = {
  daysPerMonth: 30,
  /**
   * the cost per million sessions a month of the baseline configuration (eager, sealed tokens as text,
   * on-demand DynamoDB, text platform logs), as the cost model before this one gave it
   */
  baselineUsd: 4416,
  /** memory of the refresh and API functions (lib/tokenkeeper-stack.ts) */
  functionMemoryMb: 512,
  /** Lambda gives a function memory / 1769 MB of one vCPU */
  fullVcpuMemoryMb: 1769,
  /** in-region latency of one GetItem from Lambda, SDK included (not measurable here) */
  dynamodbGetItemMs: 5,
  /** START, END and REPORT lines Lambda writes per invocation (text format), bytes */
  lambdaPlatformLogBytesPerInvocation: 330,
  /** callers' minValidity (the API's default, functions/api/validation.ts) */
  minValiditySeconds: 60,
  /** keepAlive: how long an unused grant is left before the sweep renews it (keepAliveSeconds) */
  keepAliveSeconds: 86_400,
  /** fan-out: sessions per slice message (the dispatcher's sliceSize) and messages per SendMessageBatch */
  sliceSize: 1000,
  sendBatch: 10,
  /** dispatcher: one invocation per schedule period, at this memory and duration (counts due keys per shard) */
  dispatcherMemoryMb: 256,
  dispatcherMs: 300,
  /** idle long-poll receives of the event source mapping's pollers (5 pollers × 3 a minute) */
  sqsIdleReceivesPerMinute: 15,
  /** alarms (lib/monitoring.ts: 9 before the fan-out, + slice dead letters, slice age, dispatcher errors, provider integrity), dashboards, secrets */
  alarms: 13,
  dashboards: 1,
  secrets: 1,
  /** EMF metrics: the sweep summary (8), the dispatch (2) and token metrics (2) every period; 5 more only when events happen */
  alwaysOnMetrics: 12,
  occasionalMetrics: 5,
  /** warm containers reading the keyring secret once per 5-minute cache period */
  keyringReaders: 6,
  /** share of sessions needing re-authorization per month (one EventBridge event each) */
  reauthorizationsPerSessionMonth: 0.01,
  /** provisioned: auto scaling bounds of the table and the index (lib/config.ts defaults) */
  minCapacity: 5,
  maxCapacity: 40_000,
} as const;

// --- inputs ----------------------------------------------------------------------------------------

interface Work {
  requests: number;
  rcu: number;
  wcu: number;
  gsiWcu: number;
}

interface Results {
  date: string;
  machine: { cpus: number; model: string; node: string };
  params: { accessTokenBytes: number; refreshTokenBytes: number; concurrency: number };
  figures: {
    dynamodb: {
      perRefreshedSession: Record<string, Work>;
      sessionItemBytes: number;
      indexEntryBytes: number;
      /** how the measured item held its sealed tokens; text when absent (benches before the binary form) */
      sealedForm?: 'text' | 'binary';
      /** bench/item-size-phase.ts: the item as committed and as leased, per access-token size */
      sessionItemBySize?: {
        rows: { accessTokenBytes: number; binary: { itemBytes: number; leasedItemBytes: number } }[];
      };
    };
    hotPath: {
      handler: { p50: number };
      bareGetItem: { p50: number };
      dynamodbPerRequest: Record<string, { requests: number; rcu: number; wcu: number }>;
    };
    logs: {
      bytesPerRefresh: number;
      emfBytesPerSweep: number;
      bytesPerTokenRequest: number;
      emfBytesPerTokenRequest: number;
    };
    reach: {
      inputs: { latencyOverheadMs: number; throughputMsPerRefresh: number };
      keeperCpuMsPerRefresh: number;
      keeperCpuSource?: string;
      lambda512Mb?: { rows: ReachRow[] };
    };
    coldStart: Record<string, { bytes: number; initMedianMs: number }>;
  };
}

const results = JSON.parse(readFileSync(flags.results as string, 'utf8')) as Results;
const f = results.figures;
const sessions = Number(flags.sessions);
const requestsPerDay = Number(flags['token-requests-per-session-per-day']);
const latencyMs = Number(flags['provider-latency-ms']);
const target = Number(flags['target-utilisation']) / 100;
const eagerPeakToAverage = Number(flags['eager-peak-to-average']);
const A = ASSUMPTIONS;
const P = PRICES;

const workingDay: CallerPattern = {
  requestsPerDay,
  activeHours: Number(flags['active-hours']),
  startSpreadHours: Number(flags['start-spread-hours']),
};
const allDay: CallerPattern = { requestsPerDay, activeHours: 24, startSpreadHours: 0 };

const secondsPerMonth = A.daysPerMonth * 86_400;
const refreshPeriod = refreshPeriodSeconds(
  DEPLOYMENT_DEFAULTS.accessTokenLifetimeSeconds,
  DEPLOYMENT_DEFAULTS.refreshWindowSeconds,
);
const eagerRefreshesPerSessionDay = 86_400 / refreshPeriod;
const sweepsPerMonth = secondsPerMonth / DEPLOYMENT_DEFAULTS.refreshIntervalSeconds;
const tokenRequests = sessions * requestsPerDay * A.daysPerMonth;
const memoryGb = A.functionMemoryMb / 1024;
const vcpuShare = Math.min(1, A.functionMemoryMb / A.fullVcpuMemoryMb);
const GB = 1024 ** 3;
const tokenTimes = {
  lifetimeSeconds: DEPLOYMENT_DEFAULTS.accessTokenLifetimeSeconds,
  minValiditySeconds: A.minValiditySeconds,
  windowSeconds: DEPLOYMENT_DEFAULTS.refreshWindowSeconds,
  keepAliveSeconds: A.keepAliveSeconds,
};

// Measured DynamoDB work per refresh. Lease and commit are billed on the whole item (recomputed below
// for each sealed form); the index writes (delete + put of a small entry) and the reads are as measured.
const w = f.dynamodb.perRefreshedSession;
const sumWork = (pick: (v: Work) => number) => Object.values(w).reduce((s, v) => s + pick(v), 0);
const measuredWru = sumWork((v) => v.wcu + v.gsiWcu);
const indexWruPerRefresh = sumWork((v) => v.gsiWcu);
const otherWruPerRefresh = sumWork((v) => v.wcu) - (w.lease?.wcu ?? 0) - (w.commit?.wcu ?? 0);
const tableRruPerRefresh = sumWork((v) => v.rcu) - (w.query?.rcu ?? 0);
const indexRruPerRefresh = w.query?.rcu ?? 0;
const rruPerTokenRequest = Object.values(f.hotPath.dynamodbPerRequest).reduce((s, v) => s + v.rcu, 0);

/**
 * Bytes of EMF per token request when the API function batches the token metrics, measured with
 * Powertools itself: the document that carries 100 requests' values (after the first request's own).
 */
function measureBatchedEmfBytes(): number {
  const out: string[] = [];
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  }) as typeof process.stdout.write;
  try {
    const telemetry = createTelemetry(
      { serviceName: 'tokenkeeper' },
      { batching: { names: ['TokensServed', 'TokenLatency'], maxAgeMs: 60_000, now: () => 0 } },
    );
    for (let i = 0; i < 101; i++) {
      telemetry.metrics.add('TokensServed', 'Count', 1);
      telemetry.metrics.add('TokenLatency', 'Milliseconds', 1 + ((i * 37) % 23));
      telemetry.flush();
    }
  } finally {
    process.stdout.write = write;
  }
  const documents = out
    .join('')
    .split('\n')
    .filter((line) => line.includes('"_aws"'));
  const batch = documents[1];
  if (!batch) throw new Error('Powertools published no batched document');
  return Buffer.byteLength(batch) / 100;
}
const batchedEmfBytesPerTokenRequest = measureBatchedEmfBytes();

// The session item in either sealed form, from the measured one: its tokens swapped for the other form.
type SealedForm = 'text' | 'binary';
const measuredForm: SealedForm = f.dynamodb.sealedForm ?? 'text';
const tokensBytes = (access: number, form: SealedForm) =>
  sealedTokenBytes(access, form) + sealedTokenBytes(results.params.refreshTokenBytes, form);
const itemBytes = (form: SealedForm, accessBytes = results.params.accessTokenBytes) =>
  f.dynamodb.sessionItemBytes -
  tokensBytes(results.params.accessTokenBytes, measuredForm) +
  tokensBytes(accessBytes, form);
// Both UpdateItems are billed by the item as the lease leaves it (the larger image): the item plus the
// lease's attributes, as bench/item-size-phase.ts measured them.
const leaseRow = f.dynamodb.sessionItemBySize?.rows?.find(
  (r) => r.accessTokenBytes === results.params.accessTokenBytes,
);
const leaseBytes = leaseRow ? leaseRow.binary.leasedItemBytes - leaseRow.binary.itemBytes : 69;
const wruPerRefresh = (form: SealedForm, accessBytes?: number) =>
  2 * writeUnits(itemBytes(form, accessBytes) + leaseBytes) + indexWruPerRefresh + otherWruPerRefresh;

// Refresh function: billed for its wall time; C grants share it while they wait on the provider, and
// the keeper's CPU per refresh, stretched by the function's vCPU share, bounds it from below.
const concurrency = DEPLOYMENT_DEFAULTS.refreshConcurrency;
const grantMs = latencyMs + f.reach.inputs.latencyOverheadMs;
const refreshWallMs = Math.max(grantMs / concurrency, f.reach.keeperCpuMsPerRefresh / vcpuShare);
// API function: the keeper's own time on top of the GetItem (measured here), stretched by the vCPU
// share, plus an in-region GetItem; billed in whole milliseconds. A request that refreshes on demand
// also waits for the grant.
const keeperHotMs = Math.max(0, f.hotPath.handler.p50 - f.hotPath.bareGetItem.p50);
const apiBilledMs = Math.ceil(keeperHotMs / vcpuShare + A.dynamodbGetItemMs);

const httpApi = (n: number) =>
  Math.min(n, 300e6) * P.httpApiRequestFirst300M + Math.max(0, n - 300e6) * P.httpApiRequestAfter300M;

// --- scenarios -------------------------------------------------------------------------------------

type Policy = 'eager' | 'keepAlive';
type Billing = 'onDemand' | 'provisioned';

interface Scenario {
  policy: Policy;
  sealed: SealedForm;
  billing: Billing;
  callers: CallerPattern;
  /** Lambda's START/END/REPORT lines (text logs; gone with JSON logs at system level WARN) */
  platformLogs: boolean;
  /** an EMF document per token request; otherwise only for requests that refreshed or failed */
  /** token-request EMF: one document per request, or held back and batched (functions/api/handler.ts) */
  tokenEmf: 'perRequest' | 'batched';
}

interface Line {
  service: string;
  item: string;
  quantity: string;
  usd: number;
  part: 'sessions' | 'tokens' | 'fixed';
}

interface Refreshes {
  /** per session per day, by the sweep (eager; keepAlive's keep-alive renewals) */
  sweepPerDay: number;
  /** per session per day, by a token request (keepAlive) */
  onDemandPerDay: number;
  /** expected refreshes per session, minute by minute over a day, across the fleet */
  profile: Float64Array;
  boundPerDay?: number;
}

const flat = (perDay: number) => new Float64Array(MINUTES_PER_DAY).fill(perDay / MINUTES_PER_DAY);

function refreshesOf(policy: Policy, callers: CallerPattern): Refreshes {
  if (policy === 'eager') {
    // Sessions' expiries are spread evenly; each is refreshed once per refresh period, whatever its callers do.
    return {
      sweepPerDay: eagerRefreshesPerSessionDay,
      onDemandPerDay: 0,
      profile: flat(eagerRefreshesPerSessionDay),
    };
  }
  const day = keepAliveDay(callers, tokenTimes);
  return {
    sweepPerDay: day.keepAlivePerDay,
    onDemandPerDay: day.onDemandPerDay,
    profile: spread(day.perMinute, callers.startSpreadHours),
    boundPerDay: day.boundPerDay,
  };
}

interface Provisioned {
  tableWrites: ScaledDay;
  indexWrites: ScaledDay;
  tableReads: ScaledDay;
  indexReads: ScaledDay;
  usd: { writes: number; reads: number };
}

/** Auto scaling of the table and the index, reads and writes, for one day of demand (units per second). */
function provision(s: Scenario, r: Refreshes): Provisioned {
  const perSecond = (profile: Float64Array, perEvent: number, peakToAverage = 1) =>
    profile.map((v) => (v * sessions * perEvent * peakToAverage) / 60);
  const burst = s.policy === 'eager' ? eagerPeakToAverage : 1;
  const requests = activityProfile(s.callers).map(
    (open) => (open * requestsPerDay) / (s.callers.activeHours * 60),
  );
  const scaling = {
    ...AUTO_SCALING_DEFAULTS,
    target,
    minCapacity: A.minCapacity,
    maxCapacity: A.maxCapacity,
  };
  const tableWru = wruPerRefresh(s.sealed) - indexWruPerRefresh;
  const tableWrites = autoScaledDay(perSecond(r.profile, tableWru, burst), scaling);
  const indexWrites = autoScaledDay(perSecond(r.profile, indexWruPerRefresh, burst), scaling);
  const tableReadProfile = perSecond(requests, rruPerTokenRequest).map(
    (v, i) => v + ((r.profile[i] as number) * sessions * tableRruPerRefresh) / 60,
  );
  const tableReads = autoScaledDay(tableReadProfile, scaling);
  // The sweep's (and the dispatcher's) due-range queries: reads of the index.
  const indexReads = autoScaledDay(perSecond(r.profile, 2 * indexRruPerRefresh, burst), scaling);
  const month = (d: ScaledDay, price: number) => d.unitHours * A.daysPerMonth * price;
  return {
    tableWrites,
    indexWrites,
    tableReads,
    indexReads,
    usd: {
      writes: month(tableWrites, P.dynamodbWcuHour) + month(indexWrites, P.dynamodbWcuHour),
      reads: month(tableReads, P.dynamodbRcuHour) + month(indexReads, P.dynamodbRcuHour),
    },
  };
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits });

function linesOf(
  s: Scenario,
  r: Refreshes = refreshesOf(s.policy, s.callers),
): { lines: Line[]; refreshes: Refreshes; provisioned?: Provisioned } {
  const perMonth = (perDay: number) => sessions * perDay * A.daysPerMonth;
  const sweepRefreshes = perMonth(r.sweepPerDay);
  const onDemandRefreshes = perMonth(r.onDemandPerDay);
  const refreshes = sweepRefreshes + onDemandRefreshes;
  const wru = wruPerRefresh(s.sealed);
  const item = itemBytes(s.sealed);
  // Fan-out: each sweep sends ceil(due / sliceSize) messages per shard, at least one per shard.
  const shards = DEPLOYMENT_DEFAULTS.shardCount;
  const duePerShard = sweepRefreshes / sweepsPerMonth / shards;
  const messages = sweepsPerMonth * shards * Math.max(1, Math.ceil(duePerShard / A.sliceSize));
  const sqsRequests =
    sweepsPerMonth * Math.ceil(messages / sweepsPerMonth / A.sendBatch) +
    2 * messages +
    A.sqsIdleReceivesPerMinute * (secondsPerMonth / 60);
  const indexReadsOnDemand = 2 * refreshes * indexRruPerRefresh; // the workers' queries and the dispatcher's count
  const prov = s.billing === 'provisioned' ? provision(s, r) : undefined;
  const platform = s.platformLogs ? A.lambdaPlatformLogBytesPerInvocation : 0;
  // Batched: the token metrics ride in shared documents; a request that refreshed adds an urgent metric,
  // which publishes a document of its own.
  const emfBytes =
    s.tokenEmf === 'perRequest'
      ? tokenRequests * f.logs.emfBytesPerTokenRequest
      : tokenRequests * batchedEmfBytesPerTokenRequest + onDemandRefreshes * f.logs.emfBytesPerTokenRequest;
  const apiLogBytes = tokenRequests * (f.logs.bytesPerTokenRequest + platform) + emfBytes;
  const workerLogBytes =
    refreshes * f.logs.bytesPerRefresh +
    messages * (f.logs.emfBytesPerSweep + platform) +
    sweepsPerMonth * platform;
  const storageGb = (sessions * (item + 100 + f.dynamodb.indexEntryBytes)) / GB;
  const apiGbSeconds = ((tokenRequests * apiBilledMs + onDemandRefreshes * grantMs) * memoryGb) / 1000;
  const sweepGbSeconds = (sweepRefreshes * refreshWallMs * memoryGb) / 1000;
  const dispatcherGbSeconds = (sweepsPerMonth * A.dispatcherMs * A.dispatcherMemoryMb) / 1024 / 1000;
  const logUsd = (bytes: number) =>
    (bytes / GB) * (P.cloudwatchLogsIngestGb + P.cloudwatchLogsStorageGbMonth);
  const who =
    s.policy === 'eager'
      ? `${fmt(r.sweepPerDay, 1)} a day by the sweep`
      : `${fmt(r.onDemandPerDay, 2)} a day on demand + ${fmt(r.sweepPerDay, 2)} keep-alive`;

  const lines: Line[] = [
    prov
      ? {
          service: 'DynamoDB',
          item: `writes, provisioned at ${fmt(target * 100)} % (table ${fmt(prov.tableWrites.peakCapacity)} / index ${fmt(prov.indexWrites.peakCapacity)} WCU at peak; ${fmt(wru, 3)} WRU per refresh)`,
          quantity: `${fmt((prov.tableWrites.unitHours + prov.indexWrites.unitHours) * A.daysPerMonth)} WCU-h`,
          usd: prov.usd.writes,
          part: 'sessions',
        }
      : {
          service: 'DynamoDB',
          item: `writes: ${fmt(wru, 3)} WRU per refresh (lease + commit of a ${fmt(item)} B item, byExpiry index)`,
          quantity: `${fmt(refreshes * wru)} WRU`,
          usd: refreshes * wru * P.dynamodbWriteRequestUnit,
          part: 'sessions',
        },
    {
      service: 'DynamoDB',
      item: `refreshes: ${who} = ${fmt(refreshes / sessions, 1)} per session per month`,
      quantity: `${fmt(refreshes)} refreshes`,
      usd: 0,
      part: 'sessions',
    },
    prov
      ? {
          service: 'DynamoDB',
          item: `reads, provisioned (token GetItems, due-index queries)`,
          quantity: `${fmt((prov.tableReads.unitHours + prov.indexReads.unitHours) * A.daysPerMonth)} RCU-h`,
          usd: prov.usd.reads,
          part: 'tokens',
        }
      : {
          service: 'DynamoDB',
          item: `reads: ${fmt(rruPerTokenRequest, 2)} RRU per token request, ${fmt(tableRruPerRefresh + 2 * indexRruPerRefresh, 4)} per refresh`,
          quantity: `${fmt(tokenRequests * rruPerTokenRequest + refreshes * tableRruPerRefresh + indexReadsOnDemand)} RRU`,
          usd:
            (tokenRequests * rruPerTokenRequest + refreshes * tableRruPerRefresh + indexReadsOnDemand) *
            P.dynamodbReadRequestUnit,
          part: 'tokens',
        },
    {
      service: 'DynamoDB',
      item: `storage: ${fmt(item + 100)} B per item + ${fmt(f.dynamodb.indexEntryBytes)} B per index entry`,
      quantity: `${fmt(storageGb, 2)} GB-month`,
      usd: storageGb * P.dynamodbStorageGbMonth,
      part: 'sessions',
    },
    {
      service: 'Lambda',
      item: `refresh workers: ${fmt(refreshWallMs, 2)} ms of ${A.functionMemoryMb} MB per sweep refresh`,
      quantity: `${fmt(sweepGbSeconds)} GB-s`,
      usd: sweepGbSeconds * P.lambdaArmGbSecond,
      part: 'sessions',
    },
    {
      service: 'Lambda',
      item: `fan-out: dispatcher every ${DEPLOYMENT_DEFAULTS.refreshIntervalSeconds} s (${A.dispatcherMs} ms of ${A.dispatcherMemoryMb} MB), one worker invocation per slice message`,
      quantity: `${fmt(sweepsPerMonth + messages)} requests, ${fmt(dispatcherGbSeconds)} GB-s`,
      usd: (sweepsPerMonth + messages) * P.lambdaRequest + dispatcherGbSeconds * P.lambdaArmGbSecond,
      part: 'sessions',
    },
    {
      service: 'SQS',
      item: `${fmt(messages / sweepsPerMonth, 1)} slice messages a sweep (≤ ${A.sliceSize} sessions each): send batches, receives, deletes, idle polls`,
      quantity: `${fmt(sqsRequests)} requests`,
      usd: sqsRequests * P.sqsRequest,
      part: 'sessions',
    },
    {
      service: 'CloudWatch Logs',
      item: `refresh logs: ${fmt(f.logs.emfBytesPerSweep)} B EMF per worker invocation${s.platformLogs ? ` + ${platform} B platform per invocation` : ''}`,
      quantity: `${fmt(workerLogBytes / GB, 2)} GB`,
      usd: logUsd(workerLogBytes),
      part: 'sessions',
    },
    {
      service: 'API Gateway',
      item: 'HTTP API requests',
      quantity: `${fmt(tokenRequests)} requests`,
      usd: httpApi(tokenRequests),
      part: 'tokens',
    },
    {
      service: 'Lambda',
      item:
        `API function: ${apiBilledMs} ms of ${A.functionMemoryMb} MB per token request` +
        (onDemandRefreshes > 0 ? ` + ${fmt(grantMs, 1)} ms per on-demand refresh (the grant)` : ''),
      quantity: `${fmt(apiGbSeconds)} GB-s`,
      usd: apiGbSeconds * P.lambdaArmGbSecond,
      part: 'tokens',
    },
    {
      service: 'Lambda',
      item: 'API function requests',
      quantity: `${fmt(tokenRequests)} requests`,
      usd: tokenRequests * P.lambdaRequest,
      part: 'tokens',
    },
    {
      service: 'CloudWatch Logs',
      item:
        (s.tokenEmf === 'perRequest'
          ? `API logs: ${fmt(f.logs.emfBytesPerTokenRequest)} B EMF per token request`
          : `API logs: ${fmt(batchedEmfBytesPerTokenRequest, 1)} B of batched EMF per token request, ${fmt(f.logs.emfBytesPerTokenRequest)} B per on-demand refresh`) +
        (s.platformLogs
          ? ` + ${platform} B platform per request`
          : ', no platform lines (JSON, system level WARN)'),
      quantity: `${fmt(apiLogBytes / GB, 1)} GB`,
      usd: logUsd(apiLogBytes),
      part: 'tokens',
    },
    {
      service: 'CloudWatch',
      item: `${A.alwaysOnMetrics}–${A.alwaysOnMetrics + A.occasionalMetrics} EMF metrics, ${A.alarms} alarms, ${A.dashboards} dashboard`,
      quantity: `${A.alwaysOnMetrics + A.occasionalMetrics} + ${A.alarms} + ${A.dashboards}`,
      usd:
        (A.alwaysOnMetrics + A.occasionalMetrics) * P.cloudwatchMetricMonth +
        A.alarms * P.cloudwatchAlarmMonth +
        A.dashboards * P.cloudwatchDashboardMonth,
      part: 'fixed',
    },
    {
      service: 'Secrets Manager',
      item: `keyring secret, read once per 5 minutes by ~${A.keyringReaders} warm containers`,
      quantity: `${A.secrets} secret, ${fmt(A.keyringReaders * sweepsPerMonth)} calls`,
      usd:
        A.secrets * P.secretsManagerSecretMonth +
        ((A.keyringReaders * sweepsPerMonth) / 10_000) * P.secretsManagerPer10kCalls,
      part: 'fixed',
    },
    {
      service: 'EventBridge',
      item: `schedule (free); ${A.reauthorizationsPerSessionMonth * 100}% of sessions re-authorized a month`,
      quantity: `${fmt(sessions * A.reauthorizationsPerSessionMonth)} events`,
      usd: sessions * A.reauthorizationsPerSessionMonth * P.eventBridgeCustomEvent,
      part: 'fixed',
    },
  ];
  return { lines, refreshes: r, provisioned: prov };
}

const total = (lines: Line[], part?: Line['part']) =>
  lines.filter((l) => !part || l.part === part).reduce((s, l) => s + l.usd, 0);
const usd = (v: number) => (v >= 100 ? `$${fmt(v, 0)}` : v >= 1 ? `$${v.toFixed(2)}` : `$${v.toFixed(4)}`);
const signed = (v: number) => `${v < 0 ? '−' : '+'}${usd(Math.abs(v))}`;
const ratio = (v: number) => `${(A.baselineUsd / v).toFixed(2)}×`;
const perMillion = (v: number) => v / (sessions / 1e6);

const today: Scenario = {
  policy: 'eager',
  // the baseline configuration writes the tk1. text form, whatever form the bench measured since
  sealed: 'text',
  billing: 'onDemand',
  callers: workingDay,
  platformLogs: true,
  tokenEmf: 'perRequest',
};
// What each change buys, one on top of the other, starting from the baseline configuration.
const changes: { label: string; change: string; delta: Partial<Scenario>; applied: string }[] = [
  {
    label: 'baseline',
    change: 'eager, text tokens, on-demand, text logs',
    delta: {},
    applied: 'the baseline configuration',
  },
  {
    label: '+ binary attributes',
    change: 'sealed tokens as DynamoDB Binary',
    delta: { sealed: 'binary' },
    applied: 'code (sealed-token form)',
  },
  {
    label: '+ keepAlive',
    change: `keepAlive policy, callers active ${workingDay.activeHours} h a day`,
    delta: { policy: 'keepAlive' },
    applied: "provider's refreshPolicy",
  },
  {
    label: '+ provisioned',
    change: `provisioned capacity, auto scaling at ${fmt(target * 100)} %`,
    delta: { billing: 'provisioned' },
    applied: 'CDK context billingMode=provisioned',
  },
  {
    label: '+ no platform log lines',
    change: "JSON logs, Lambda's system log level WARN",
    delta: { platformLogs: false },
    applied: 'CDK (lib/keeper-function.ts)',
  },
  {
    label: '+ batched token EMF',
    change: 'token-request metrics held back, up to 100 values a document, published at least once a minute',
    delta: { tokenEmf: 'batched' },
    applied: 'code (functions/api/handler.ts, functions/shared/powertools.ts)',
  },
];
let cumulative: Scenario = today;
const steps = changes.map((c) => {
  cumulative = { ...cumulative, ...c.delta };
  return { ...c, scenario: cumulative };
});
const trimmed = { sealed: 'binary', platformLogs: false, tokenEmf: 'batched' } as const;
const grid = (['eager', 'keepAlive'] as const).flatMap((policy) =>
  (policy === 'eager' ? [workingDay] : [workingDay, allDay]).map((callers) => ({
    policy,
    callers,
    onDemand: linesOf({ ...today, ...trimmed, policy, callers, billing: 'onDemand' }),
    provisioned: linesOf({ ...today, ...trimmed, policy, callers, billing: 'provisioned' }),
  })),
);

// --- output ------------------------------------------------------------------------------------

const baseline = linesOf(today);
const stepTotals = steps.map((s) => ({ ...s, usd: total(linesOf(s.scenario).lines) }));
const appliedSteps = stepTotals.filter((s) => !s.applied.startsWith('modelled'));
const cheapest = appliedSteps[appliedSteps.length - 1] as (typeof stepTotals)[number];
const cheapestModel = linesOf(cheapest.scenario);

const stepRows: Row[] = stepTotals.map((s, i) => [
  s.label,
  s.change,
  usd(perMillion(s.usd)),
  i === 0 ? '' : signed(perMillion(s.usd - (stepTotals[i - 1]?.usd ?? 0))),
  ratio(perMillion(s.usd)),
  s.applied,
]);

const callersLabel = (c: CallerPattern) =>
  c.activeHours >= 24 ? 'uniform over 24 h' : `${c.activeHours} h working day`;
const gridRows: Row[] = grid.map((g) => [
  g.policy,
  g.policy === 'eager' ? 'any' : callersLabel(g.callers),
  fmt((g.onDemand.refreshes.sweepPerDay + g.onDemand.refreshes.onDemandPerDay) * A.daysPerMonth, 0),
  usd(perMillion(total(g.onDemand.lines))),
  ratio(perMillion(total(g.onDemand.lines))),
  usd(perMillion(total(g.provisioned.lines))),
  ratio(perMillion(total(g.provisioned.lines))),
]);

const scalingRows: Row[] = grid.flatMap((g) => {
  const p = g.provisioned.provisioned as Provisioned;
  const writesOnDemand = g.onDemand.lines[0]?.usd ?? 0;
  return [
    [
      `${g.policy}${g.policy === 'eager' ? '' : `, ${callersLabel(g.callers)}`}`,
      `${fmt(p.tableWrites.peakCapacity)} / ${fmt(p.indexWrites.peakCapacity)}`,
      `${fmt(p.tableWrites.utilisation * 100, 0)} %`,
      String(p.tableWrites.decreases),
      `${fmt(p.tableWrites.throttledShare * 100, 2)} %`,
      usd(writesOnDemand),
      usd(p.usd.writes),
    ],
  ];
});

const keepAliveRows: Row[] = [
  workingDay,
  { ...workingDay, activeHours: 4 },
  { ...workingDay, activeHours: 12 },
  allDay,
].map((c) => {
  const d = keepAliveDay(c, tokenTimes);
  return [
    callersLabel(c),
    fmt(c.requestsPerDay / c.activeHours, 2),
    fmt(d.onDemandPerDay, 2),
    String(d.boundPerDay),
    fmt(d.keepAlivePerDay, 2),
    fmt((d.onDemandPerDay + d.keepAlivePerDay) * A.daysPerMonth, 0),
    `${fmt((eagerRefreshesPerSessionDay * A.daysPerMonth) / ((d.onDemandPerDay + d.keepAlivePerDay) * A.daysPerMonth), 1)}×`,
  ];
});
const idleDay = keepAliveDay({ requestsPerDay: 1e-9, activeHours: 8, startSpreadHours: 0 }, tokenTimes);
const shortIdle = keepAliveDay(workingDay, { ...tokenTimes, keepAliveSeconds: 8 * 3600 });

const tokenSizes = [40, 256, 600, 1024, 1300, 2048, 4096];
const refreshesEager = sessions * eagerRefreshesPerSessionDay * A.daysPerMonth;
const sensitivityRows: Row[] = tokenSizes.map((bytes) => [
  `${bytes} B`,
  `${fmt(itemBytes('text', bytes))} B / ${fmt(itemBytes('binary', bytes))} B`,
  `${fmt(wruPerRefresh('text', bytes), 3)} / ${fmt(wruPerRefresh('binary', bytes), 3)}`,
  usd(refreshesEager * wruPerRefresh('text', bytes) * P.dynamodbWriteRequestUnit),
  usd(refreshesEager * wruPerRefresh('binary', bytes) * P.dynamodbWriteRequestUnit),
]);

const breakEven = breakEvenUtilisation(P.dynamodbWcuHour, P.dynamodbWriteRequestUnit);
const breakEvenReads = breakEvenUtilisation(P.dynamodbRcuHour, P.dynamodbReadRequestUnit);

const lineRows = (lines: Line[]): Row[] =>
  lines
    .filter((l) => l.usd >= 0.001 || l.item.startsWith('refreshes'))
    .map((l) => [l.service, l.item, l.quantity, l.usd === 0 ? '' : usd(l.usd)]);
const summaryRows = (lines: Line[]): Row[] => [
  ['keeping sessions fresh (refreshes, storage, fan-out)', usd(total(lines, 'sessions'))],
  [`serving ${requestsPerDay} token requests per session per day`, usd(total(lines, 'tokens'))],
  ['fixed (metrics, alarms, dashboard, secret, events)', usd(total(lines, 'fixed'))],
  ['total', usd(total(lines))],
];

const inputsRows: Row[] = [
  ['sessions', fmt(sessions), 'input'],
  [
    'access-token lifetime / callers’ minValidity',
    `${DEPLOYMENT_DEFAULTS.accessTokenLifetimeSeconds} s / ${A.minValiditySeconds} s`,
    'input / API default',
  ],
  [
    'refresh window / schedule period',
    `${DEPLOYMENT_DEFAULTS.refreshWindowSeconds} s / ${DEPLOYMENT_DEFAULTS.refreshIntervalSeconds} s`,
    'deployment default (lib/config.ts)',
  ],
  [
    'eager: refresh period (lifetime − window)',
    `${refreshPeriod} s = ${fmt(eagerRefreshesPerSessionDay * A.daysPerMonth)} a month`,
    'derived: the most refreshes the schedule can cause',
  ],
  ['token requests per session per day', String(requestsPerDay), 'input (the reference workload)'],
  [
    'keepAlive: callers’ active window',
    `${workingDay.activeHours} h a day, fleet starting over ${workingDay.startSpreadHours} h`,
    'input; 24 h shown too',
  ],
  ['keepAlive: keep-alive period', `${A.keepAliveSeconds} s`, 'keepAliveSeconds default'],
  [
    'DynamoDB per refresh (measured)',
    `${fmt(measuredWru, 3)} WRU (${fmt(indexWruPerRefresh)} of them index), ${fmt(tableRruPerRefresh + indexRruPerRefresh, 4)} RRU`,
    'bench: ConsumedCapacity; index writes computed',
  ],
  [
    'session item, text / binary tokens',
    `${fmt(itemBytes('text'))} B / ${fmt(itemBytes('binary'))} B`,
    `measured ${fmt(f.dynamodb.sessionItemBytes)} B (${measuredForm}), ${results.params.accessTokenBytes} B access and ${results.params.refreshTokenBytes} B refresh tokens; other form computed`,
  ],
  ['DynamoDB per token request', `${fmt(rruPerTokenRequest, 2)} RRU`, 'measured'],
  ['provider latency L', `${latencyMs} ms`, 'input'],
  [
    'refresh overhead beyond L',
    `${fmt(f.reach.inputs.latencyOverheadMs, 1)} ms`,
    'measured (uncontended sweep)',
  ],
  [
    'keeper CPU per refresh',
    `${fmt(f.reach.keeperCpuMsPerRefresh, 2)} ms on one core`,
    f.reach.keeperCpuSource ? `measured (${f.reach.keeperCpuSource})` : 'measured',
  ],
  [
    'function memory, vCPU share',
    `${A.functionMemoryMb} MB, ${fmt(vcpuShare, 3)} vCPU`,
    'lib/tokenkeeper-stack.ts; AWS Lambda documentation',
  ],
  [
    'sweep time per refresh',
    `${fmt(refreshWallMs, 2)} ms`,
    `max((L + overhead) / C=${concurrency}, CPU / vCPU share)`,
  ],
  [
    'API function billed per token request',
    `${apiBilledMs} ms`,
    `keeper ${fmt(keeperHotMs, 2)} ms (measured) / vCPU share + GetItem ${A.dynamodbGetItemMs} ms (assumed)`,
  ],
  [
    'API function, on-demand refresh',
    `+ ${fmt(grantMs, 1)} ms`,
    'L + overhead: the request waits for the grant',
  ],
  [
    'EMF per token request / per worker invocation',
    `${fmt(f.logs.emfBytesPerTokenRequest)} B / ${fmt(f.logs.emfBytesPerSweep)} B`,
    'measured (Powertools output captured)',
  ],
  [
    'Lambda platform log lines',
    `${A.lambdaPlatformLogBytesPerInvocation} B per invocation`,
    'assumption (text format)',
  ],
  [
    'provisioned: target utilisation, bounds',
    `${fmt(target * 100)} %, ${A.minCapacity}–${fmt(A.maxCapacity)} units`,
    'input; lib/config.ts defaults for the bounds',
  ],
  ['eager: write peak ÷ average within a sweep period', String(eagerPeakToAverage), 'assumption (see below)'],
];

const PRICE_UNITS: Record<string, string> = {
  dynamodbWriteRequestUnit: 'write request unit',
  dynamodbReadRequestUnit: 'read request unit',
  dynamodbWcuHour: 'write capacity unit-hour',
  dynamodbRcuHour: 'read capacity unit-hour',
  dynamodbStorageGbMonth: 'GB-month',
  lambdaArmGbSecond: 'GB-second (arm64)',
  lambdaRequest: 'request',
  httpApiRequestFirst300M: 'request, first 300 million a month',
  httpApiRequestAfter300M: 'request, beyond 300 million',
  sqsRequest: 'request',
  cloudwatchMetricMonth: 'custom metric-month',
  cloudwatchAlarmMonth: 'standard alarm-month',
  cloudwatchDashboardMonth: 'dashboard-month',
  cloudwatchLogsIngestGb: 'GB ingested',
  cloudwatchLogsStorageGbMonth: 'GB-month stored',
  secretsManagerSecretMonth: 'secret-month',
  secretsManagerPer10kCalls: '10,000 API calls',
  eventBridgeCustomEvent: 'custom event',
};
const priceRows: Row[] = Object.entries(PRICES)
  .filter(([k]) => k !== 'asOf')
  .map(([k, v]) => [
    k,
    PRICE_UNITS[k] ?? '',
    typeof v === 'number'
      ? v < 0.0001
        ? `$${Number((v * 1e6).toFixed(6))} per million`
        : `$${Number(v.toFixed(5))}`
      : String(v),
  ]);

const eagerBest = grid.find((g) => g.policy === 'eager');
const allDayRow = grid.find((g) => g.policy === 'keepAlive' && g.callers.activeHours >= 24);
const cheapestProv = cheapestModel.provisioned as Provisioned;
const ka = cheapestModel.refreshes;

const doc = `# Cost

What tokenkeeper costs per month for **${fmt(sessions)} sessions with one-hour access tokens** and
${requestsPerDay} token requests per session per day, on AWS us-east-1 with arm64 Lambda, from the figures
\`npm run bench\` measured (bench/results.json of ${results.date.slice(0, 10)}, ${results.machine.cpus} × ${results.machine.model},
Node ${results.machine.node}) and the public list prices below. Generated by \`npm run cost\` (bench/cost.ts, with
bench/cost-model.ts); to recompute with other prices or inputs, edit \`PRICES\` / \`ASSUMPTIONS\` there or pass
\`--sessions\`, \`--token-requests-per-session-per-day\`, \`--active-hours\`, \`--start-spread-hours\`,
\`--provider-latency-ms\`, \`--target-utilisation\`, \`--eager-peak-to-average\`. Free tiers are ignored.

## What each change bought

The baseline configuration — eager refresh, sealed tokens as text, on-demand DynamoDB, Lambda's text platform logs —
costs **$${fmt(A.baselineUsd)} per million sessions a month**. Each row adds one change to the row above; the ratio is
against $${fmt(A.baselineUsd)}. The model's own baseline is ${usd(perMillion(total(baseline.lines)))}: the
same configuration with the fan-out's dispatcher, SQS requests, three more alarms and two more metrics, and this bench's
measurements.

${markdownTable(['step', 'change', 'per million sessions a month', 'change in $', 'ratio', 'where it lives'], stepRows, ['l', 'l', 'r', 'r', 'r', 'l'])}

The cheapest configuration in the code reaches **${usd(perMillion(cheapest.usd))}, ${ratio(perMillion(cheapest.usd))}**
below the baseline. That needs three things to hold, and they are assumptions, not measurements:

1. **The providers' refresh tokens outlive idleness**, so their sessions can use \`keepAlive\` (docs/api.md, "Choosing a
   refresh policy"). For providers that must stay \`eager\`, the best is ${eagerBest ? usd(perMillion(total(eagerBest.provisioned.lines))) : 'n/a'} (provisioned), ${eagerBest ? ratio(perMillion(total(eagerBest.provisioned.lines))) : ''}.
2. **Callers ask within a working day** (${workingDay.activeHours} h, the fleet's days starting over ${workingDay.startSpreadHours} h). Spread
   uniformly over 24 h — keepAlive's worst case — the ${requestsPerDay} requests cause ${fmt(allDayRow?.provisioned.refreshes.onDemandPerDay ?? 0, 1)} refreshes a day and the total is ${allDayRow ? usd(perMillion(total(allDayRow.provisioned.lines))) : 'n/a'}, ${allDayRow ? ratio(perMillion(total(allDayRow.provisioned.lines))) : ''}.
3. **Requests arrive at random within the window** (Poisson). Bursty callers (a conversation's calls minutes
   apart) refresh less; the bound of one refresh per token lifetime in the window (${ka.boundPerDay ?? ''} a day) would cost
   ${usd(perMillion(boundCost(cheapest.scenario)))}, ${ratio(perMillion(boundCost(cheapest.scenario)))}.

Binary attributes buy nothing at the reference token size: the item shrinks from ${fmt(itemBytes('text'))} B to ${fmt(itemBytes('binary'))} B, still
two write units per write. They pay at sizes near a kilobyte boundary (table below). The last row batches the token
route's two metrics: an API container holds their values back and publishes them up to 100 to a document, at least
once a minute (a request that refreshed, or any other metric, publishes at once), so the dashboard keeps
\`TokensServed\` and the \`TokenLatency\` percentiles for ${fmt(batchedEmfBytesPerTokenRequest, 1)} B of log per request instead of
${fmt(f.logs.emfBytesPerTokenRequest)} B (measured here with Powertools itself). The price: values a container holds when Lambda
retires it are lost, and a datapoint may land up to a minute late.

## Both policies × both billing modes

Binary tokens and no platform log lines in every cell; per million sessions a month, ratio against $${fmt(A.baselineUsd)}.

${markdownTable(['policy', 'callers', 'refreshes per session-month', 'on-demand', 'ratio', `provisioned (${fmt(target * 100)} %)`, 'ratio'], gridRows, ['l', 'l', 'r', 'r', 'r', 'r', 'r'])}

## keepAlive: how many refreshes callers cause

A keepAlive session is refreshed when a token request finds its access token within \`minValidity\`
(${A.minValiditySeconds} s) of expiry, or by the sweep when its grant has gone unused for the keep-alive period less the window.
The model follows one session's expected state minute by minute (bench/cost-model.ts \`keepAliveDay\`): ${requestsPerDay}
requests a day arrive at random in an active window and never outside it; a refresh makes the token good
for ${fmt((DEPLOYMENT_DEFAULTS.accessTokenLifetimeSeconds - A.minValiditySeconds) / 60)} minutes, and the next request after that refreshes again. The bound is one refresh per
token lifetime in the window. Eager refreshes ${fmt(eagerRefreshesPerSessionDay, 1)} times a day whatever the callers do.

${markdownTable(['callers', 'requests per active hour', 'on-demand refreshes a day', 'bound', 'keep-alive refreshes a day', 'refreshes a month', 'fewer than eager'], keepAliveRows, ['l', 'r', 'r', 'r', 'r', 'r', 'r'])}

A session used every day never needs a keep-alive refresh with the default 24-hour period: the night is
shorter. A session nobody uses costs ${fmt(idleDay.keepAlivePerDay * A.daysPerMonth, 0)} keep-alive refreshes a month (against ${fmt(eagerRefreshesPerSessionDay * A.daysPerMonth)} eager); a
provider whose refresh tokens die after 8 idle hours (\`refreshTokenIdleSeconds\` 28800) adds
${fmt(shortIdle.keepAlivePerDay, 1)} a day to a working-day session. Each on-demand refresh also costs the API function the grant's
wall time (${fmt(grantMs, 1)} ms at L=${latencyMs} ms, in the line items), and the caller waits for it once per token lifetime.

## Provisioned capacity and the break-even

Provisioned capacity costs what on-demand does at **${fmt(breakEven * 100, 1)} % utilisation** (writes: $${P.dynamodbWcuHour} per WCU-hour
÷ 3,600 s ÷ $${P.dynamodbWriteRequestUnit * 1e6} per million WRU; reads: ${fmt(breakEvenReads * 100, 1)} %). Above it, provisioned is cheaper;
at the ${fmt(target * 100)} % target it costs ${fmt((breakEven / target) * 100, 0)} % of on-demand for the same units.

How it is modelled (bench/cost-model.ts \`autoScaledDay\`): the table and the \`byExpiry\` index each scale their
reads and writes (four targets, as lib/sessions-table.ts deploys them) on the demand of each minute of a day,
repeated until steady. Target tracking scales out after ${AUTO_SCALING_DEFAULTS.scaleOutAfterMinutes} minutes above the target, taking
effect ${AUTO_SCALING_DEFAULTS.scaleOutDelayMinutes} minutes later; it scales in after ${AUTO_SCALING_DEFAULTS.scaleInAfterMinutes} minutes below ${fmt(AUTO_SCALING_DEFAULTS.lowFraction * 100)} % of the target, to the
quiet stretch's peak, and DynamoDB allows ${AUTO_SCALING_DEFAULTS.freeDecreasesPerDay} decreases a day plus one in each hour without one — a daily
curve needs a handful. Demand above the capacity first spends the burst bank (up to 300 s of unused
capacity); what remains is throttled and retried by the SDK: a sweep's refresh is late (the
missed-refresh alarm watches), an on-demand refresh keeps its caller waiting longer. Eager writes are flat over the day; keepAlive's follow the working day, with
the morning's first requests refreshing almost every session.

${markdownTable(['policy', 'peak WCU table / index', 'utilisation (table writes)', 'decreases a day', 'throttled', 'writes on-demand', 'writes provisioned'], scalingRows, ['l', 'r', 'r', 'r', 'r', 'r', 'r'])}

Eager's figures assume each sweep's writes spread over its 5-minute period
(\`--eager-peak-to-average ${eagerPeakToAverage}\`). A fan-out that refreshes a period's sessions in its first minute has a peak
of up to 5× the average within the period: auto scaling then follows the peak minute, and provisioned costs up
to that factor more (run with \`--eager-peak-to-average 5\`); pacing the slices over the period avoids it.
The million-session simulation (docs/performance.md) measured what an unpaced fan-out does: with 50 workers at
100 ms the busiest second wrote 16 × the mean (29,000 write units against 1,810), most of a period's
refreshes landing in its first minute; a provisioned eager fleet needs fewer workers (a slower, flatter sweep)
or capacity for that burst. The cheapest configuration is keepAlive, whose writes follow callers, not the sweep.

## Line items: the cheapest configuration in the code

keepAlive (callers active ${workingDay.activeHours} h a day), binary tokens, provisioned capacity at ${fmt(target * 100)} %, JSON logs without
Lambda's platform lines.

${markdownTable(['', 'per month'], summaryRows(cheapestModel.lines), ['l', 'r'])}

${markdownTable(['service', 'what', 'quantity', 'USD per month'], lineRows(cheapestModel.lines), ['l', 'l', 'r', 'r'])}

Auto scaling peaks at ${fmt(cheapestProv.tableWrites.peakCapacity)} WCU on the table and ${fmt(cheapestProv.indexWrites.peakCapacity)} on the index: below the default
\`maxWriteCapacity\` of 4,000 (lib/config.ts), which a larger fleet must raise.

## Line items: the baseline

${markdownTable(['', 'per month'], summaryRows(baseline.lines), ['l', 'r'])}

${markdownTable(['service', 'what', 'quantity', 'USD per month'], lineRows(baseline.lines), ['l', 'l', 'r', 'r'])}

## Token size: text or binary

Write units per refresh and eager's monthly write cost (on-demand) by access-token size, the refresh token
staying at ${results.params.refreshTokenBytes} B; text / binary. DynamoDB bills each lease and commit on the whole item, one unit per
started kilobyte, so the binary form pays where it moves an item below a boundary.

${markdownTable(['access token', 'session item', 'WRU per refresh', 'writes a month, text', 'binary'], sensitivityRows, ['r', 'r', 'r', 'r', 'r'])}

## Inputs

${markdownTable(['input', 'value', 'source'], inputsRows, ['l', 'r', 'l'])}

## Prices

As of ${PRICES.asOf}; check https://aws.amazon.com/dynamodb/pricing/on-demand/,
https://aws.amazon.com/dynamodb/pricing/provisioned/, https://aws.amazon.com/lambda/pricing/,
https://aws.amazon.com/api-gateway/pricing/, https://aws.amazon.com/sqs/pricing/,
https://aws.amazon.com/cloudwatch/pricing/, https://aws.amazon.com/secrets-manager/pricing/ and
https://aws.amazon.com/eventbridge/pricing/ before relying on them.

${markdownTable(['constant in bench/cost.ts', 'per', 'USD'], priceRows, ['l', 'l', 'r'])}

## What is left

Serving is now most of the bill: API Gateway's HTTP API (${usd(httpApi(tokenRequests))}) and Lambda's per-request charge
(${usd(tokenRequests * P.lambdaRequest)}) are fixed by the design (SigV4 through API Gateway, one invocation per request). Further levers,
none applied: keep the lease in a small item of its own (one write unit whatever the token size); EMF for
token requests aggregated in the container instead of one document per request; reserved DynamoDB
capacity for the steady part of the load.
`;

/** The keepAlive scenario with every on-demand refresh the bound allows (one per token lifetime in the window). */
function boundCost(s: Scenario): number {
  const day = keepAliveDay(s.callers, tokenTimes);
  const scale = day.boundPerDay / day.onDemandPerDay;
  const r = refreshesOf(s.policy, s.callers);
  const scaled: Refreshes = {
    ...r,
    onDemandPerDay: r.onDemandPerDay * scale,
    profile: r.profile.map((v) => v * scale),
  };
  return total(linesOf(s, scaled).lines);
}

writeFileSync(flags.out as string, doc);
process.stdout.write(
  [
    `tokenkeeper cost model — ${fmt(sessions)} sessions, one-hour tokens, ${requestsPerDay} token requests per session per day`,
    '',
    ...stepTotals.map(
      (s) =>
        `  ${s.label.padEnd(28)} ${usd(perMillion(s.usd)).padStart(8)}  ${ratio(perMillion(s.usd)).padStart(6)}  ${s.applied}`,
    ),
    '',
    ...grid.map(
      (g) =>
        `  ${`${g.policy}, ${g.policy === 'eager' ? 'any callers' : callersLabel(g.callers)}`.padEnd(36)} on-demand ${usd(perMillion(total(g.onDemand.lines))).padStart(8)}  provisioned ${usd(perMillion(total(g.provisioned.lines))).padStart(8)}`,
    ),
    '',
    `break-even utilisation (provisioned = on-demand): ${fmt(breakEven * 100, 1)} %`,
    `written: ${flags.out}`,
    '',
  ].join('\n'),
);
