import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import {
  defaultSweepBudgetSeconds,
  loadConfig as loadCoreConfig,
  publicUrlProblem,
} from '../functions/core/config.js';

/**
 * Deployment configuration, read from CDK context (`cdk.json` "context" or `-c key=value`) and
 * validated at synth time, so a configuration the functions would refuse at start-up never deploys.
 * The rules mirror functions/core/config.ts with the context keys' names, and the core's own validation
 * runs as a backstop; test/lib/config.test.ts checks that both agree.
 */
export interface TokenKeeperConfig {
  /** Period of the refresh schedule in seconds (whole minutes: EventBridge rates are in minutes). */
  readonly refreshIntervalSeconds: number;
  /** Sessions expiring within this many seconds are refreshed by a sweep. */
  readonly refreshWindowSeconds: number;
  /** The longest a sweep runs; the refresh function's timeout is this plus a margin. */
  readonly sweepBudgetSeconds: number;
  /** Number of `byExpiry` index partitions a sweep queries. */
  readonly shardCount: number;
  /** Grants in flight at once within one sweep. */
  readonly refreshConcurrency: number;
  /**
   * Concurrency reserved for the refresh function, so API traffic can never take the account's
   * concurrency and starve the sweep's workers; at least `sweepMaxConcurrency`.
   */
  readonly refreshReservedConcurrency: number;
  /** The most due sessions the dispatcher puts in one slice (one SQS message, one worker invocation). */
  readonly sweepSliceSize: number;
  /** Slices swept at once: the event source mapping's maximum concurrency (2–1000). */
  readonly sweepMaxConcurrency: number;
  /** Timeout of one discovery, revocation or code-exchange request to a provider. */
  readonly httpTimeoutMs: number;
  /**
   * The life of one refresh grant: its answer is committed whenever it comes within it. In the
   * functions it is cut to fit the invocation: the API function's deadline, the refresh function's
   * timeout (which covers one whole grant past the sweep budget).
   */
  readonly grantTimeoutMs: number;
  /** How often the sweep renews an on-demand session's grant when its refresh-token expiry is unknown. */
  readonly keepAliveSeconds: number;
  /** Transient failures in a row, across a provider's sessions, that open its circuit. */
  readonly circuitFailureThreshold: number;
  /** Optional e-mail address subscribed to the alarm topic. */
  readonly alarmEmail?: string;
  /** What happens to the table, keyring and logs when the stack is deleted. */
  readonly removalPolicy: 'retain' | 'destroy';
  readonly logRetentionDays: number;
  readonly logLevel: LogLevel;
  /** Steady-state requests per second the HTTP API accepts. */
  readonly apiThrottleRateLimit: number;
  readonly apiThrottleBurstLimit: number;
  /** Sessions turning `reauthorization_required` within 15 minutes that raise the alarm. */
  readonly reauthAlarmThreshold: number;
  /** API responses with a 5xx status within 5 minutes that raise the alarm. */
  readonly api5xxAlarmThreshold: number;
  /** Name prefix of the Secrets Manager secrets providers may reference as `clientSecretArn`. */
  readonly clientSecretPrefix: string;
  /**
   * The keeper's public base URL when the API has a custom domain (https, no query). Without it the
   * API function gets the API's own execute-api URL.
   */
  readonly publicUrl?: string;
  /** Where the callback may send browsers afterwards: comma-separated https origins or URL prefixes. */
  readonly allowedRedirects: string;
  /**
   * How the sessions table is billed: `onDemand` (per request) or `provisioned` with auto scaling of
   * the table and its byExpiry index between the min and max capacities, at the target utilisation.
   */
  readonly billingMode: BillingModeName;
  readonly minReadCapacity: number;
  readonly maxReadCapacity: number;
  readonly minWriteCapacity: number;
  readonly maxWriteCapacity: number;
  readonly targetUtilizationPercent: number;
}

export const BILLING_MODES = ['onDemand', 'provisioned'] as const;
export type BillingModeName = (typeof BILLING_MODES)[number];
/** The context keys that only mean something with billingMode=provisioned. */
export const CAPACITY_KEYS = [
  'minReadCapacity',
  'maxReadCapacity',
  'minWriteCapacity',
  'maxWriteCapacity',
  'targetUtilizationPercent',
] as const satisfies readonly (keyof TokenKeeperConfig)[];

export const LOG_LEVELS = ['DEBUG', 'INFO', 'WARN', 'ERROR'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** CloudWatch Logs accepts only these retention periods (days); "never expire" is not offered. */
export const LOG_RETENTION_DAYS: readonly number[] = Object.values(RetentionDays).filter(
  (days): days is RetentionDays => typeof days === 'number' && days !== RetentionDays.INFINITE,
);

export const DEFAULT_CONFIG: TokenKeeperConfig = {
  refreshIntervalSeconds: 300,
  refreshWindowSeconds: 600,
  sweepBudgetSeconds: 120,
  shardCount: 4,
  refreshConcurrency: 16,
  refreshReservedConcurrency: 10,
  sweepSliceSize: 1_000,
  sweepMaxConcurrency: 10,
  httpTimeoutMs: 10_000,
  grantTimeoutMs: 30_000,
  keepAliveSeconds: 86_400,
  circuitFailureThreshold: 3,
  removalPolicy: 'retain',
  logRetentionDays: 30,
  logLevel: 'INFO',
  apiThrottleRateLimit: 50,
  apiThrottleBurstLimit: 100,
  reauthAlarmThreshold: 5,
  api5xxAlarmThreshold: 5,
  clientSecretPrefix: 'tokenkeeper/',
  allowedRedirects: '',
  billingMode: 'onDemand',
  minReadCapacity: 5,
  maxReadCapacity: 4_000,
  minWriteCapacity: 5,
  maxWriteCapacity: 4_000,
  targetUtilizationPercent: 70,
};

/** The context keys this app reads; `-c <key>=<value>` on the command line or cdk.json "context". */
export const CONTEXT_KEYS = [
  'refreshIntervalSeconds',
  'refreshWindowSeconds',
  'sweepBudgetSeconds',
  'shardCount',
  'refreshConcurrency',
  'refreshReservedConcurrency',
  'sweepSliceSize',
  'sweepMaxConcurrency',
  'httpTimeoutMs',
  'grantTimeoutMs',
  'keepAliveSeconds',
  'circuitFailureThreshold',
  'alarmEmail',
  'removalPolicy',
  'logRetentionDays',
  'logLevel',
  'apiThrottleRateLimit',
  'apiThrottleBurstLimit',
  'reauthAlarmThreshold',
  'api5xxAlarmThreshold',
  'clientSecretPrefix',
  'publicUrl',
  'allowedRedirects',
  'billingMode',
  ...CAPACITY_KEYS,
] as const satisfies readonly (keyof TokenKeeperConfig)[];

/** Refreshes a second one refresh worker makes at most: its CPU bound at 512 MB (docs/performance.md). */
export const WORKER_REFRESHES_PER_SECOND = 100;
/** Write units a second DynamoDB gives one partition key value (here: one shard of the index). */
export const INDEX_KEY_WRITES_PER_SECOND = 1_000;

/**
 * The fewest shards that keep the index's hot keys below their write limit when `workers` refresh
 * workers run at full speed (two index writes per refresh): the rule `npm run simulate` showed.
 */
export function minShardCount(workers: number): number {
  return Math.ceil((2 * workers * WORKER_REFRESHES_PER_SECOND) / INDEX_KEY_WRITES_PER_SECOND);
}

/** API Gateway gives up on an integration after 30 s; the API function must answer before that. */
export const API_FUNCTION_TIMEOUT_SECONDS = 29;
/** Time the API function keeps for itself around an on-demand grant (DynamoDB, decrypt, response). */
const API_OVERHEAD_SECONDS = 9;

/**
 * The refresh function's timeout: the sweep budget, plus one grant that started just before the budget
 * ran out, plus time to commit it and flush metrics. A grant's life is cut to end with its commit 5 s
 * before the invocation does (so at least the HTTP timeout plus 13 s for a grant started last); no
 * grant outlives the invocation.
 */
export function refreshFunctionTimeoutSeconds(c: TokenKeeperConfig): number {
  return c.sweepBudgetSeconds + Math.ceil(c.httpTimeoutMs / 1000) + 20;
}

export class TokenKeeperConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(
      `Invalid tokenkeeper configuration (CDK context):\n${problems.map((p) => `  - ${p}`).join('\n')}\n` +
        'Set values in cdk.json "context" or with `npx cdk synth -c key=value`; see the README, section Deploy.',
    );
    this.name = 'TokenKeeperConfigError';
  }
}

type Raw = Record<string, unknown>;

/** Reads the configuration from a construct's context (normally the App). */
export function loadConfig(scope: Construct): TokenKeeperConfig {
  const raw: Raw = {};
  for (const key of CONTEXT_KEYS) {
    const value: unknown = scope.node.tryGetContext(key);
    if (value !== undefined) raw[key] = value;
  }
  return parseConfig(raw);
}

/** Parses and validates raw context values (strings from `-c`, numbers or strings from cdk.json). */
export function parseConfig(raw: Raw): TokenKeeperConfig {
  const problems: string[] = [];

  const int = (key: keyof TokenKeeperConfig, min: number, max: number): number => {
    const fallback = DEFAULT_CONFIG[key] as number;
    const value = raw[key];
    if (value === undefined || value === null || value === '') return fallback;
    const text = String(value).trim();
    if (!/^\d+$/.test(text)) {
      problems.push(`${key} must be a whole number, got ${JSON.stringify(value)}`);
      return fallback;
    }
    const n = Number(text);
    if (n < min || n > max) {
      problems.push(`${key} must be between ${min} and ${max}, got ${n}`);
      return fallback;
    }
    return n;
  };

  const oneOf = <T extends string>(
    key: keyof TokenKeeperConfig,
    allowed: readonly T[],
    normalize: (s: string) => string,
  ): T => {
    const fallback = DEFAULT_CONFIG[key] as T;
    const value = raw[key];
    if (value === undefined || value === null || value === '') return fallback;
    const text = normalize(String(value).trim());
    if (!(allowed as readonly string[]).includes(text)) {
      problems.push(`${key} must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
      return fallback;
    }
    return text as T;
  };

  const refreshIntervalSeconds = int('refreshIntervalSeconds', 60, 3_600);
  if (refreshIntervalSeconds % 60 !== 0) {
    problems.push(
      `refreshIntervalSeconds must be a whole number of minutes (EventBridge rate), got ${refreshIntervalSeconds}`,
    );
  }
  const refreshWindowSeconds = int('refreshWindowSeconds', 1, 86_400);
  const shardCount = int('shardCount', 1, 1_000);
  const refreshConcurrency = int('refreshConcurrency', 1, 1_000);
  const sweepSliceSize = int('sweepSliceSize', 1, 100_000);
  // Lambda's event source mappings take a maximum concurrency from 2 to 1000.
  const sweepMaxConcurrency = int('sweepMaxConcurrency', 2, 1_000);
  const refreshReservedConcurrency = int('refreshReservedConcurrency', 2, 1_000);
  if (refreshReservedConcurrency < sweepMaxConcurrency) {
    problems.push(
      `refreshReservedConcurrency (${refreshReservedConcurrency}) must be at least sweepMaxConcurrency ` +
        `(${sweepMaxConcurrency}), or the sweep's workers are throttled`,
    );
  }
  // Each shard is one partition key of the byExpiry index, which DynamoDB limits to 1,000 write units
  // a second; every refresh moves its entry (two index writes), and a 512 MB worker makes up to about
  // 100 refreshes a second. Too few shards throttle the index, and the sweep with it.
  const minShards = minShardCount(sweepMaxConcurrency);
  if (shardCount < minShards) {
    problems.push(
      `shardCount (${shardCount}) is too low for sweepMaxConcurrency (${sweepMaxConcurrency}): ` +
        `${sweepMaxConcurrency} workers move up to ${2 * sweepMaxConcurrency * WORKER_REFRESHES_PER_SECOND} index ` +
        `entries a second, and one shard takes ${INDEX_KEY_WRITES_PER_SECOND}; set shardCount to at least ${minShards}`,
    );
  }
  const httpTimeoutMs = int(
    'httpTimeoutMs',
    100,
    (API_FUNCTION_TIMEOUT_SECONDS - API_OVERHEAD_SECONDS) * 1000,
  );
  // Without a value, the same default the core derives: 40% of the interval, at least one grant.
  const sweepBudgetSeconds =
    raw.sweepBudgetSeconds === undefined || raw.sweepBudgetSeconds === null || raw.sweepBudgetSeconds === ''
      ? defaultSweepBudgetSeconds(refreshIntervalSeconds, httpTimeoutMs)
      : int('sweepBudgetSeconds', 1, 840);
  const grantTimeoutMs = int('grantTimeoutMs', 100, 600_000);
  const keepAliveSeconds = int('keepAliveSeconds', 60, 30 * 86_400);
  const circuitFailureThreshold = int('circuitFailureThreshold', 1, 1_000);
  const removalPolicy = oneOf('removalPolicy', ['retain', 'destroy'] as const, (s) => s.toLowerCase());
  const logLevel = oneOf('logLevel', LOG_LEVELS, (s) => s.toUpperCase());
  const logRetentionDays = int('logRetentionDays', 1, 3_653);
  if (!LOG_RETENTION_DAYS.includes(logRetentionDays)) {
    problems.push(
      `logRetentionDays must be one of ${LOG_RETENTION_DAYS.join(', ')}, got ${logRetentionDays}`,
    );
  }
  const apiThrottleRateLimit = int('apiThrottleRateLimit', 1, 10_000);
  const apiThrottleBurstLimit = int('apiThrottleBurstLimit', 1, 5_000);
  const reauthAlarmThreshold = int('reauthAlarmThreshold', 1, 1_000_000);
  const api5xxAlarmThreshold = int('api5xxAlarmThreshold', 1, 1_000_000);

  let alarmEmail: string | undefined;
  if (raw.alarmEmail !== undefined && raw.alarmEmail !== null && raw.alarmEmail !== '') {
    const text = String(raw.alarmEmail).trim();
    if (/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(text)) alarmEmail = text;
    else problems.push(`alarmEmail must be an e-mail address, got ${JSON.stringify(raw.alarmEmail)}`);
  }

  let clientSecretPrefix = DEFAULT_CONFIG.clientSecretPrefix;
  if (raw.clientSecretPrefix !== undefined && raw.clientSecretPrefix !== null) {
    const text = String(raw.clientSecretPrefix).trim();
    // A secret name allows letters, digits and /_+=.@-; an empty or bare "/" prefix would grant every secret.
    if (/^[A-Za-z0-9_+=.@-][A-Za-z0-9/_+=.@-]*\/$/.test(text)) clientSecretPrefix = text;
    else {
      problems.push(
        `clientSecretPrefix must be a non-empty secret-name prefix ending in "/", e.g. "tokenkeeper/", got ${JSON.stringify(raw.clientSecretPrefix)}`,
      );
    }
  }

  const text = (key: 'publicUrl' | 'allowedRedirects'): string | undefined => {
    const value = raw[key];
    return value === undefined || value === null || String(value).trim() === ''
      ? undefined
      : String(value).trim();
  };
  const publicUrl = text('publicUrl')?.replace(/\/+$/u, '');
  const publicUrlIssue = publicUrl === undefined ? undefined : publicUrlProblem(publicUrl, false);
  if (publicUrlIssue) problems.push(`publicUrl ${publicUrlIssue}, got ${JSON.stringify(raw.publicUrl)}`);
  const allowedRedirects = text('allowedRedirects') ?? '';
  for (const entry of allowedRedirects
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '')) {
    const issue = publicUrlProblem(entry, false);
    if (issue) problems.push(`allowedRedirects: ${JSON.stringify(entry)} ${issue}`);
  }

  const table = tableBilling(raw, int, oneOf, problems);

  // The same rules functions/core/config.ts enforces at start-up, with the context keys' names.
  if (refreshWindowSeconds <= refreshIntervalSeconds) {
    problems.push(
      `refreshWindowSeconds (${refreshWindowSeconds}) must exceed the schedule period refreshIntervalSeconds ` +
        `(${refreshIntervalSeconds}), or sessions expire between two sweeps`,
    );
  } else if (refreshWindowSeconds <= refreshIntervalSeconds + sweepBudgetSeconds) {
    problems.push(
      `refreshWindowSeconds (${refreshWindowSeconds}) must exceed the schedule period refreshIntervalSeconds ` +
        `(${refreshIntervalSeconds}) plus the longest sweep sweepBudgetSeconds (${sweepBudgetSeconds})`,
    );
  }

  const config: TokenKeeperConfig = {
    refreshIntervalSeconds,
    refreshWindowSeconds,
    sweepBudgetSeconds,
    shardCount,
    refreshConcurrency,
    refreshReservedConcurrency,
    sweepSliceSize,
    sweepMaxConcurrency,
    httpTimeoutMs,
    grantTimeoutMs,
    keepAliveSeconds,
    circuitFailureThreshold,
    alarmEmail,
    removalPolicy,
    logRetentionDays,
    logLevel,
    apiThrottleRateLimit,
    apiThrottleBurstLimit,
    reauthAlarmThreshold,
    api5xxAlarmThreshold,
    clientSecretPrefix,
    publicUrl,
    allowedRedirects,
    ...table,
  };

  if (sweepBudgetSeconds * 1000 <= httpTimeoutMs + 2_000) {
    problems.push(
      `sweepBudgetSeconds (${sweepBudgetSeconds}) must leave room for one grant: more than ` +
        `httpTimeoutMs (${httpTimeoutMs} ms) plus 2 s`,
    );
  }

  const timeout = refreshFunctionTimeoutSeconds(config);
  if (problems.length === 0 && timeout >= refreshIntervalSeconds) {
    problems.push(
      `the refresh function's timeout (sweepBudgetSeconds ${sweepBudgetSeconds} + one grant ` +
        `httpTimeoutMs ${httpTimeoutMs} + 20 s = ${timeout} s) must stay below the schedule period ` +
        `refreshIntervalSeconds (${refreshIntervalSeconds}); lower sweepBudgetSeconds or raise the period`,
    );
  }

  // Backstop: whatever else the functions check at start-up also fails the synth, not the first invocation.
  if (problems.length === 0) {
    try {
      loadCoreConfig({
        ...functionEnvironment(config, {
          tableName: 'synth-check',
          keyringSecretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:synth-check',
          eventBusName: 'default',
          accountId: '123456789012',
        }),
        AWS_LAMBDA_FUNCTION_NAME: 'synth-check',
      });
    } catch (err) {
      problems.push(`the functions would refuse this configuration at start-up: ${(err as Error).message}`);
    }
  }

  if (problems.length > 0) throw new TokenKeeperConfigError(problems);
  return config;
}

/**
 * The sessions table's billing: on-demand, or provisioned capacity that auto scaling keeps at the target
 * utilisation between the bounds. Capacity keys without billingMode=provisioned are refused rather than
 * ignored, so a cdk.json that sets them cannot deploy an on-demand table by mistake.
 */
function tableBilling(
  raw: Raw,
  int: (key: keyof TokenKeeperConfig, min: number, max: number) => number,
  oneOf: (
    key: keyof TokenKeeperConfig,
    allowed: readonly BillingModeName[],
    normalize: (s: string) => string,
  ) => BillingModeName,
  problems: string[],
): Pick<TokenKeeperConfig, 'billingMode' | (typeof CAPACITY_KEYS)[number]> {
  const billingMode = oneOf('billingMode', BILLING_MODES, (s) =>
    s.toLowerCase() === 'ondemand' ? 'onDemand' : s.toLowerCase(),
  );
  // DynamoDB's default per-table quota is 40,000 read and 40,000 write capacity units.
  const capacity = {
    minReadCapacity: int('minReadCapacity', 1, 40_000),
    maxReadCapacity: int('maxReadCapacity', 1, 40_000),
    minWriteCapacity: int('minWriteCapacity', 1, 40_000),
    maxWriteCapacity: int('maxWriteCapacity', 1, 40_000),
    // Application Auto Scaling accepts target values from 20 to 90 percent for DynamoDB.
    targetUtilizationPercent: int('targetUtilizationPercent', 20, 90),
  };
  if (billingMode === 'onDemand') {
    const given = CAPACITY_KEYS.filter((k) => raw[k] !== undefined && raw[k] !== null && raw[k] !== '');
    if (given.length > 0) {
      problems.push(
        `${given.join(', ')} ${given.length === 1 ? 'applies' : 'apply'} only with billingMode=provisioned ` +
          '(the table is on-demand); set billingMode=provisioned or remove them',
      );
    }
  }
  for (const kind of ['Read', 'Write'] as const) {
    const min = capacity[`min${kind}Capacity`];
    const max = capacity[`max${kind}Capacity`];
    if (min > max) problems.push(`min${kind}Capacity (${min}) must not exceed max${kind}Capacity (${max})`);
  }
  return { billingMode, ...capacity };
}

/** The environment the functions read through functions/core/config.ts. */
export function functionEnvironment(
  c: TokenKeeperConfig,
  resources: { tableName: string; keyringSecretArn: string; eventBusName: string; accountId: string },
): Record<string, string> {
  return {
    TOKENKEEPER_TABLE_NAME: resources.tableName,
    TOKENKEEPER_ACCOUNT_ID: resources.accountId,
    TOKENKEEPER_KEYRING_SECRET_ARN: resources.keyringSecretArn,
    TOKENKEEPER_EVENT_BUS_NAME: resources.eventBusName,
    TOKENKEEPER_REFRESH_INTERVAL_SECONDS: String(c.refreshIntervalSeconds),
    TOKENKEEPER_REFRESH_WINDOW_SECONDS: String(c.refreshWindowSeconds),
    TOKENKEEPER_REFRESH_CONCURRENCY: String(c.refreshConcurrency),
    TOKENKEEPER_HTTP_TIMEOUT_MS: String(c.httpTimeoutMs),
    TOKENKEEPER_GRANT_TIMEOUT_MS: String(c.grantTimeoutMs),
    TOKENKEEPER_SHARD_COUNT: String(c.shardCount),
    TOKENKEEPER_SWEEP_BUDGET_SECONDS: String(c.sweepBudgetSeconds),
    TOKENKEEPER_SWEEP_SLICE_SIZE: String(c.sweepSliceSize),
    TOKENKEEPER_KEEPALIVE_SECONDS: String(c.keepAliveSeconds),
    TOKENKEEPER_CIRCUIT_FAILURE_THRESHOLD: String(c.circuitFailureThreshold),
    TOKENKEEPER_CLIENT_SECRET_PREFIX: c.clientSecretPrefix,
    POWERTOOLS_LOG_LEVEL: c.logLevel,
    ...(c.allowedRedirects === '' ? {} : { TOKENKEEPER_ALLOWED_REDIRECTS: c.allowedRedirects }),
    ...(c.publicUrl === undefined ? {} : { TOKENKEEPER_PUBLIC_URL: c.publicUrl }),
  };
}
