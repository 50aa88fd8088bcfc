import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEPLOYMENT_DEFAULTS, type ReachRow, refreshPeriodSeconds } from './model.js';
import { markdownTable, type Row } from './report.js';

/**
 * `npm run cost`: the monthly AWS cost of one million sessions with one-hour access tokens, from the
 * figures `npm run bench` measured (bench/results.json), public list prices, and stated assumptions.
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
    'provider-latency-ms': { type: 'string', default: '100' },
  },
});

/**
 * Public on-demand list prices, AWS us-east-1, arm64 Lambda, in USD, as published when this file was
 * written (2025; DynamoDB on-demand after its November 2024 reduction). Free tiers are ignored.
 */
export const PRICES = {
  asOf: '2025 (AWS public pricing pages, us-east-1)',
  /** DynamoDB on-demand, Standard table class: per write request unit */
  dynamodbWriteRequestUnit: 0.625 / 1e6,
  /** per read request unit (one strongly consistent read up to 4 KB, or two eventually consistent) */
  dynamodbReadRequestUnit: 0.125 / 1e6,
  /** per GB-month of table and index storage (the first 25 GB each month are free; ignored) */
  dynamodbStorageGbMonth: 0.25,
  /** Lambda arm64, per GB-second (first pricing tier) */
  lambdaArmGbSecond: 0.0000133334,
  /** Lambda, per request */
  lambdaRequest: 0.2 / 1e6,
  /** API Gateway HTTP API, per request: first 300 million a month, then the next tier */
  httpApiRequestFirst300M: 1.0 / 1e6,
  httpApiRequestAfter300M: 0.9 / 1e6,
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
  /** memory of both functions (lib/tokenkeeper-stack.ts) */
  functionMemoryMb: 512,
  /** Lambda gives a function memory / 1769 MB of one vCPU */
  fullVcpuMemoryMb: 1769,
  /** in-region latency of one GetItem from Lambda, SDK included (not measurable here) */
  dynamodbGetItemMs: 5,
  /** START, END and REPORT lines Lambda writes per invocation (text format), bytes */
  lambdaPlatformLogBytesPerInvocation: 330,
  /** alarms, dashboards and secrets the stack creates (lib/monitoring.ts, lib/keyring-secret.ts) */
  alarms: 8,
  dashboards: 1,
  secrets: 1,
  /** EMF metrics: the sweep summary (8) and token metrics (2) every period; 4 more only when events happen */
  alwaysOnMetrics: 10,
  occasionalMetrics: 4,
  /** warm containers reading the keyring secret once per 5-minute cache period */
  keyringReadersApi: 5,
  keyringReadersRefresh: 1,
  /** share of sessions needing re-authorization per month (one EventBridge event each) */
  reauthorizationsPerSessionMonth: 0.01,
} as const;

// --- inputs ----------------------------------------------------------------------------------------

interface Results {
  date: string;
  machine: { cpus: number; model: string; node: string };
  params: { accessTokenBytes: number; refreshTokenBytes: number; concurrency: number };
  figures: {
    dynamodb: {
      perRefreshedSession: Record<string, { requests: number; rcu: number; wcu: number; gsiWcu: number }>;
      sessionItemBytes: number;
      indexEntryBytes: number;
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
      /** Where the figure comes from (the real-OAuth-server phase, or the fake endpoint's sweep). */
      keeperCpuSource?: string;
      lambda512Mb?: { rows: ReachRow[] };
    };
    coldStart: Record<string, { bytes: number; initMedianMs: number }>;
  };
}

const results = JSON.parse(readFileSync(flags.results as string, 'utf8')) as Results;
const f = results.figures;
const sessions = Number(flags.sessions);
const tokenRequestsPerSessionDay = Number(flags['token-requests-per-session-per-day']);
const latencyMs = Number(flags['provider-latency-ms']);
const A = ASSUMPTIONS;
const P = PRICES;

const secondsPerMonth = A.daysPerMonth * 86_400;
const refreshPeriod = refreshPeriodSeconds(
  DEPLOYMENT_DEFAULTS.accessTokenLifetimeSeconds,
  DEPLOYMENT_DEFAULTS.refreshWindowSeconds,
);
const refreshesPerSessionMonth = secondsPerMonth / refreshPeriod;
const refreshes = sessions * refreshesPerSessionMonth;
const sweepsPerMonth = secondsPerMonth / DEPLOYMENT_DEFAULTS.refreshIntervalSeconds;
const tokenRequests = sessions * tokenRequestsPerSessionDay * A.daysPerMonth;
const memoryGb = A.functionMemoryMb / 1024;
const vcpuShare = Math.min(1, A.functionMemoryMb / A.fullVcpuMemoryMb);
const GB = 1024 ** 3;

const w = f.dynamodb.perRefreshedSession;
const sum = (pick: (v: { requests: number; rcu: number; wcu: number; gsiWcu: number }) => number) =>
  Object.values(w).reduce((s, v) => s + pick(v), 0);
const wruPerRefresh = sum((v) => v.wcu + v.gsiWcu);
const rruPerRefresh = sum((v) => v.rcu);
const rruPerTokenRequest = Object.values(f.hotPath.dynamodbPerRequest).reduce((s, v) => s + v.rcu, 0);

// Refresh function: billed for its wall time; C grants share it while they wait on the provider, and
// the keeper's CPU per refresh, stretched by the function's vCPU share, bounds it from below.
const concurrency = DEPLOYMENT_DEFAULTS.refreshConcurrency;
const refreshWallMs = Math.max(
  (latencyMs + f.reach.inputs.latencyOverheadMs) / concurrency,
  f.reach.keeperCpuMsPerRefresh / vcpuShare,
);
// API function: the keeper's own time on top of the GetItem (measured here), stretched by the vCPU
// share, plus an in-region GetItem; billed in whole milliseconds.
const keeperHotMs = Math.max(0, f.hotPath.handler.p50 - f.hotPath.bareGetItem.p50);
const apiBilledMs = Math.ceil(keeperHotMs / vcpuShare + A.dynamodbGetItemMs);

const itemStoredBytes = f.dynamodb.sessionItemBytes + 100;
const storageGb = (sessions * (itemStoredBytes + f.dynamodb.indexEntryBytes)) / GB;

const refreshLogBytes =
  refreshes * f.logs.bytesPerRefresh +
  sweepsPerMonth * (f.logs.emfBytesPerSweep + A.lambdaPlatformLogBytesPerInvocation);
const apiLogBytes =
  tokenRequests *
  (f.logs.bytesPerTokenRequest + f.logs.emfBytesPerTokenRequest + A.lambdaPlatformLogBytesPerInvocation);

const httpApi = (n: number) =>
  Math.min(n, 300e6) * P.httpApiRequestFirst300M + Math.max(0, n - 300e6) * P.httpApiRequestAfter300M;

interface Line {
  service: string;
  item: string;
  quantity: string;
  usd: number;
  part: 'sessions' | 'tokens' | 'fixed';
}

const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits });
const lines: Line[] = [
  {
    service: 'DynamoDB',
    item: `writes: ${fmt(wruPerRefresh, 3)} WRU per refresh (lease + commit + byExpiry index)`,
    quantity: `${fmt(refreshes * wruPerRefresh)} WRU`,
    usd: refreshes * wruPerRefresh * P.dynamodbWriteRequestUnit,
    part: 'sessions',
  },
  {
    service: 'DynamoDB',
    item: `reads: ${fmt(rruPerRefresh, 4)} RRU per refresh (due-index queries, provider)`,
    quantity: `${fmt(refreshes * rruPerRefresh)} RRU`,
    usd: refreshes * rruPerRefresh * P.dynamodbReadRequestUnit,
    part: 'sessions',
  },
  {
    service: 'DynamoDB',
    item: `storage: ${fmt(itemStoredBytes)} B per item + ${fmt(f.dynamodb.indexEntryBytes)} B per index entry`,
    quantity: `${fmt(storageGb, 2)} GB-month`,
    usd: storageGb * P.dynamodbStorageGbMonth,
    part: 'sessions',
  },
  {
    service: 'Lambda',
    item: `refresh function: ${fmt(refreshWallMs, 2)} ms of ${A.functionMemoryMb} MB per refresh`,
    quantity: `${fmt((refreshes * refreshWallMs * memoryGb) / 1000)} GB-s`,
    usd: ((refreshes * refreshWallMs * memoryGb) / 1000) * P.lambdaArmGbSecond,
    part: 'sessions',
  },
  {
    service: 'Lambda',
    item: 'refresh function: one invocation per 5 minutes (per shard once fanned out)',
    quantity: `${fmt(sweepsPerMonth)} requests`,
    usd: sweepsPerMonth * P.lambdaRequest,
    part: 'fixed',
  },
  {
    service: 'CloudWatch Logs',
    item: `refresh logs: ${fmt(f.logs.bytesPerRefresh)} B per refresh, ${fmt(f.logs.emfBytesPerSweep)} B EMF + ${A.lambdaPlatformLogBytesPerInvocation} B platform per sweep; ingestion + 1 month stored`,
    quantity: `${fmt(refreshLogBytes / GB, 1)} GB`,
    usd: (refreshLogBytes / GB) * (P.cloudwatchLogsIngestGb + P.cloudwatchLogsStorageGbMonth),
    part: 'sessions',
  },
  {
    service: 'DynamoDB',
    item: `token requests: ${fmt(rruPerTokenRequest, 2)} RRU each (eventually consistent GetItem)`,
    quantity: `${fmt(tokenRequests * rruPerTokenRequest)} RRU`,
    usd: tokenRequests * rruPerTokenRequest * P.dynamodbReadRequestUnit,
    part: 'tokens',
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
    item: `API function: ${apiBilledMs} ms billed of ${A.functionMemoryMb} MB per token request`,
    quantity: `${fmt((tokenRequests * apiBilledMs * memoryGb) / 1000)} GB-s`,
    usd: ((tokenRequests * apiBilledMs * memoryGb) / 1000) * P.lambdaArmGbSecond,
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
    item: `API logs: ${fmt(f.logs.emfBytesPerTokenRequest + f.logs.bytesPerTokenRequest)} B EMF/log + ${A.lambdaPlatformLogBytesPerInvocation} B platform per request; ingestion + 1 month stored`,
    quantity: `${fmt(apiLogBytes / GB, 1)} GB`,
    usd: (apiLogBytes / GB) * (P.cloudwatchLogsIngestGb + P.cloudwatchLogsStorageGbMonth),
    part: 'tokens',
  },
  {
    service: 'CloudWatch',
    item: `${A.alwaysOnMetrics} EMF metrics always on (+${A.occasionalMetrics} when their events occur)`,
    quantity: `${A.alwaysOnMetrics}–${A.alwaysOnMetrics + A.occasionalMetrics} metrics`,
    usd: (A.alwaysOnMetrics + A.occasionalMetrics) * P.cloudwatchMetricMonth,
    part: 'fixed',
  },
  {
    service: 'CloudWatch',
    item: `${A.alarms} alarms, ${A.dashboards} dashboard`,
    quantity: `${A.alarms} + ${A.dashboards}`,
    usd: A.alarms * P.cloudwatchAlarmMonth + A.dashboards * P.cloudwatchDashboardMonth,
    part: 'fixed',
  },
  {
    service: 'Secrets Manager',
    item: `keyring secret, read once per 5 minutes by ~${A.keyringReadersApi + A.keyringReadersRefresh} warm containers`,
    quantity: `${A.secrets} secret, ${fmt((A.keyringReadersApi + A.keyringReadersRefresh) * sweepsPerMonth)} calls`,
    usd:
      A.secrets * P.secretsManagerSecretMonth +
      (((A.keyringReadersApi + A.keyringReadersRefresh) * sweepsPerMonth) / 10_000) *
        P.secretsManagerPer10kCalls,
    part: 'fixed',
  },
  {
    service: 'EventBridge',
    item: `schedule (free); ${A.reauthorizationsPerSessionMonth * 100}% of sessions re-authorized a month (1 event each)`,
    quantity: `${fmt(sessions * A.reauthorizationsPerSessionMonth)} events`,
    usd: sessions * A.reauthorizationsPerSessionMonth * P.eventBridgeCustomEvent,
    part: 'fixed',
  },
];

// How many refresh invocations per period the sessions need (from the bench's Lambda reach rows).
const keptFresh = f.reach.lambda512Mb?.rows.find(
  (r) =>
    r.latencyMs === latencyMs &&
    r.concurrency === DEPLOYMENT_DEFAULTS.refreshConcurrency &&
    r.budgetSeconds === DEPLOYMENT_DEFAULTS.sweepBudgetSeconds,
)?.sessionsKeptFresh;
const invocationsNeeded = keptFresh ? Math.ceil(sessions / keptFresh) : undefined;

const totalOf = (part?: Line['part']) =>
  lines.filter((l) => !part || l.part === part).reduce((s, l) => s + l.usd, 0);
const usd = (v: number) => (v >= 100 ? `$${fmt(v, 0)}` : v >= 1 ? `$${v.toFixed(2)}` : `$${v.toFixed(4)}`);

// Sensitivity: the write units of one refresh for other access-token sizes (computed from the measured
// item: a sealed value is base64url of nonce + ciphertext + tag plus a short header).
const sealedLength = (bytes: number) => Math.ceil(((12 + bytes + 16) * 4) / 3) + 8;
const tokenSizes = [40, 256, 600, 1024, 2048, 4096];
const sensitivity = tokenSizes.map((bytes) => {
  const item =
    f.dynamodb.sessionItemBytes - sealedLength(results.params.accessTokenBytes) + sealedLength(bytes);
  const writeUnits = Math.max(1, Math.ceil(item / 1024));
  const wru = 2 * writeUnits + (w.commit?.gsiWcu ?? 2);
  return { bytes, item, wru, usd: refreshes * wru * P.dynamodbWriteRequestUnit };
});

// --- output ------------------------------------------------------------------------------------

const costRows: Row[] = lines.map((l) => [l.service, l.item, l.quantity, usd(l.usd)]);
const summaryRows: Row[] = [
  [
    'keeping sessions fresh (refresh path, storage)',
    usd(totalOf('sessions')),
    usd(totalOf('sessions') / (sessions / 1e6)),
  ],
  [
    `serving ${tokenRequestsPerSessionDay} token requests per session per day`,
    usd(totalOf('tokens')),
    usd(totalOf('tokens') / (sessions / 1e6)),
  ],
  ['fixed (metrics, alarms, dashboard, secret, schedule)', usd(totalOf('fixed')), ''],
  ['total', usd(totalOf()), ''],
];
const perMillionTokenRequests = (totalOf('tokens') / tokenRequests) * 1e6;

const inputsRows: Row[] = [
  ['sessions', fmt(sessions), 'input'],
  ['access-token lifetime', `${DEPLOYMENT_DEFAULTS.accessTokenLifetimeSeconds} s`, 'input'],
  [
    'refresh window / schedule period',
    `${DEPLOYMENT_DEFAULTS.refreshWindowSeconds} s / ${DEPLOYMENT_DEFAULTS.refreshIntervalSeconds} s`,
    'deployment default (lib/config.ts)',
  ],
  [
    'refresh period (lifetime − window)',
    `${refreshPeriod} s`,
    'derived: the most refreshes the schedule can cause',
  ],
  [
    'refreshes per session per month',
    fmt(refreshesPerSessionMonth, 1),
    `derived (${A.daysPerMonth}-day month)`,
  ],
  ['refreshes per month', fmt(refreshes), 'derived'],
  ['token requests per session per day', String(tokenRequestsPerSessionDay), 'input'],
  [
    'DynamoDB per refresh',
    `${fmt(wruPerRefresh, 3)} WRU, ${fmt(rruPerRefresh, 4)} RRU`,
    'measured (bench: ConsumedCapacity; index writes computed)',
  ],
  [
    'session item / index entry',
    `${fmt(f.dynamodb.sessionItemBytes)} B / ${fmt(f.dynamodb.indexEntryBytes)} B`,
    `measured, ${results.params.accessTokenBytes} B access and ${results.params.refreshTokenBytes} B refresh tokens`,
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
    'refresh function time per refresh',
    `${fmt(refreshWallMs, 2)} ms`,
    `max((L + overhead) / C=${concurrency}, CPU / vCPU share)`,
  ],
  ['keeper time per token request', `${fmt(keeperHotMs, 2)} ms`, 'measured (handler p50 − bare GetItem p50)'],
  ['in-region GetItem', `${A.dynamodbGetItemMs} ms`, 'assumption'],
  ['API function billed per request', `${apiBilledMs} ms`, 'derived'],
  [
    'log bytes per refresh / per token request',
    `${fmt(f.logs.bytesPerRefresh)} B / ${fmt(f.logs.emfBytesPerTokenRequest + f.logs.bytesPerTokenRequest)} B`,
    'measured (Powertools output captured)',
  ],
  ['Lambda platform log lines', `${A.lambdaPlatformLogBytesPerInvocation} B per invocation`, 'assumption'],
];
const PRICE_UNITS: Record<string, string> = {
  dynamodbWriteRequestUnit: 'write request unit',
  dynamodbReadRequestUnit: 'read request unit',
  dynamodbStorageGbMonth: 'GB-month',
  lambdaArmGbSecond: 'GB-second (arm64)',
  lambdaRequest: 'request',
  httpApiRequestFirst300M: 'request, first 300 million a month',
  httpApiRequestAfter300M: 'request, beyond 300 million',
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
      ? v < 0.001
        ? `$${Number((v * 1e6).toFixed(6))} per million`
        : `$${v.toFixed(2)}`
      : String(v),
  ]);

const doc = `# Cost

What tokenkeeper costs per month for **${fmt(sessions)} sessions with one-hour access tokens**, on AWS
us-east-1 with arm64 Lambda, from the figures \`npm run bench\` measured (bench/results.json of
${results.date.slice(0, 10)}, ${results.machine.cpus} × ${results.machine.model}, Node ${results.machine.node}) and the public
list prices below. Generated by \`npm run cost\` (bench/cost.ts); to recompute with new prices or
inputs, edit \`PRICES\` / \`ASSUMPTIONS\` there or pass \`--sessions\`, \`--token-requests-per-session-per-day\`,
\`--provider-latency-ms\`, and run it again. Free tiers are ignored.

## Summary

${markdownTable(['', 'per month', `per million sessions`], summaryRows, ['l', 'r', 'r'])}

Serving tokens costs **${usd(perMillionTokenRequests)} per million token requests** (API Gateway is most of it).

## Line items

${markdownTable(['service', 'what', 'quantity', 'USD per month'], costRows, ['l', 'l', 'r', 'r'])}

## Inputs

${markdownTable(['input', 'value', 'source'], inputsRows, ['l', 'r', 'l'])}

How often a session is refreshed: a sweep refreshes every session whose access token expires within
the window (600 s), and sweeps run every 300 s, so a one-hour token is replaced after 3000 s at the
earliest and 3300 s at the latest (depending on where the sweeps fall). The model takes the earliest:
${fmt(refreshesPerSessionMonth, 0)} refreshes per session per month, not the 720 a refresh exactly at expiry would
need; at 3300 s every refresh-path figure is 9 % lower.

## Prices

As of ${PRICES.asOf}; check https://aws.amazon.com/dynamodb/pricing/on-demand/,
https://aws.amazon.com/lambda/pricing/, https://aws.amazon.com/api-gateway/pricing/,
https://aws.amazon.com/cloudwatch/pricing/, https://aws.amazon.com/secrets-manager/pricing/ and
https://aws.amazon.com/eventbridge/pricing/ before relying on them.

${markdownTable(['constant in bench/cost.ts', 'per', 'USD'], priceRows, ['l', 'l', 'r'])}

## What drives the cost

DynamoDB writes are almost all of the refresh path. Each refresh writes the session item twice (the
lease and the commit, each one conditional UpdateItem) and the \`byExpiry\` index twice (the commit
moves the entry: a delete and a put). DynamoDB bills an UpdateItem by the larger of the item before
and after, so **both writes pay for the whole item, tokens included**: with a
${results.params.accessTokenBytes}-byte access token the item is ${fmt(f.dynamodb.sessionItemBytes)} B, two write units per write. The
units per refresh, and the write cost per month, by access-token size (computed from the measured
item; the refresh token stays at ${results.params.refreshTokenBytes} B):

${markdownTable(
  ['access token', 'session item', 'WRU per refresh', 'DynamoDB writes per month'],
  sensitivity.map((s) => [`${s.bytes} B`, `${fmt(s.item)} B`, s.wru, usd(s.usd)]),
  ['r', 'r', 'r', 'r'],
)}

One refresh function does not keep ${fmt(sessions)} sessions fresh: at ${A.functionMemoryMb} MB, C=${DEPLOYMENT_DEFAULTS.refreshConcurrency}, a
${DEPLOYMENT_DEFAULTS.sweepBudgetSeconds} s sweep budget and L=${latencyMs} ms it keeps about ${keptFresh ? fmt(keptFresh) : 'n/a'} (docs/performance.md), so
${invocationsNeeded ?? 'n/a'} invocations per period are needed (fan-out across shards, or more memory, concurrency and
budget). The Lambda line above is per refresh and does not change with the fan-out; the extra
invocations cost ${usd(((invocationsNeeded ?? 1) - 1) * sweepsPerMonth * P.lambdaRequest)} a month. INIT time (${fmt(f.coldStart.refresh?.initMedianMs ?? 0)} ms refresh,
${fmt(f.coldStart.api?.initMedianMs ?? 0)} ms API, measured) is billed per cold start and is left out: a few per hour cost cents.

Levers, none of them applied: keep the lease in a small item of its own (the lease would cost one
unit whatever the token size); refresh less often than the access-token lifetime forces when only
the refresh token's idle lifetime matters (the cost is proportional to refreshes per month); log the
per-refresh "session refreshed" line at DEBUG (it is ${fmt(f.logs.bytesPerRefresh)} B of the refresh path's log volume);
switch Lambda's system log lines to JSON/WARN to drop the ${A.lambdaPlatformLogBytesPerInvocation} B per invocation.
`;

writeFileSync(flags.out as string, doc);
process.stdout.write(
  [
    `tokenkeeper cost model — ${fmt(sessions)} sessions, one-hour tokens, ${tokenRequestsPerSessionDay} token requests per session per day`,
    '',
    ...summaryRows.map((r) => `  ${String(r[0]).padEnd(64)} ${String(r[1]).padStart(10)}`),
    '',
    ...lines.map((l) => `  ${l.service.padEnd(16)} ${usd(l.usd).padStart(10)}  ${l.item} (${l.quantity})`),
    '',
    `per million token requests: ${usd(perMillionTokenRequests)}`,
    `written: ${flags.out}`,
    '',
  ].join('\n'),
);
