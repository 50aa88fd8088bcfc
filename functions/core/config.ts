import { ConfigError } from './errors.js';

/**
 * The only module that reads environment variables. Everything else receives a `Config`.
 */
export interface Config {
  /** true inside AWS Lambda (AWS_LAMBDA_FUNCTION_NAME is set) */
  inLambda: boolean;
  tableName: string;
  dynamodbEndpoint?: string;
  region: string;
  /**
   * The AWS account the functions run in (set by the stack); a client secret by ARN must be in it.
   * Unknown locally, where the account check is skipped.
   */
  accountId?: string;
  dataDir: string;
  port: number;
  apiKey?: string;
  refreshIntervalSeconds: number;
  refreshWindowSeconds: number;
  refreshConcurrency: number;
  /** Time of one discovery, revocation or code-exchange request to a provider. */
  httpTimeoutMs: number;
  /**
   * The life of one refresh grant request: how long the keeper keeps it open for the provider's
   * answer, which it commits whenever it comes within this time (at most the lease minus the commit
   * reserve). Callers may stop waiting sooner.
   */
  grantTimeoutMs: number;
  leaseSeconds: number;
  shardCount: number;
  /** Upper bound of one sweep's duration; also the Lambda's budget below its timeout. */
  sweepBudgetSeconds: number;
  /**
   * The fan-out's queue (SQS URL, set by the stack): the dispatcher sends each sweep's slices there and
   * the refresh function consumes them. Locally the slices go through an in-process queue instead.
   */
  sweepQueueUrl?: string;
  /** The most due sessions the dispatcher puts in one slice (one queue message, one worker). */
  sweepSliceSize: number;
  /** Slices swept at once by the local stack's in-process queue (the event source's maximum concurrency in AWS). */
  sweepWorkers: number;
  /**
   * How often the sweep renews the grant of an on-demand session (tokens shorter-lived than the
   * sweep period) whose refresh token's expiry is unknown.
   */
  keepAliveSeconds: number;
  /** Transient failures in a row, across a provider's sessions, that open its circuit. */
  circuitFailureThreshold: number;
  /** First delay before a probe of an open circuit; it doubles (with jitter) up to the cap. */
  circuitProbeBaseMs: number;
  circuitProbeMaxMs: number;
  /** How long a process trusts its cached view of a provider's circuit. */
  circuitCacheMs: number;
  allowInsecureHttp: boolean;
  keyringSecretArn?: string;
  /** Provider client secrets referenced by ARN must be named under this prefix. */
  clientSecretPrefix: string;
  eventBusName: string;
  serviceName: string;
  /**
   * The keeper's public base URL (no trailing slash): the OAuth callback is `<publicUrl>/oauth/callback`
   * and the client metadata document `<publicUrl>/oauth/client-metadata`. Set by the stack in AWS;
   * locally it defaults to `http://127.0.0.1:<port>` once the server listens.
   */
  publicUrl?: string;
  /**
   * Where a user's browser may be sent after the callback: exact origins (`https://chat.example.com`,
   * any path on it) or URL prefixes (`https://chat.example.com/oauth/`). Empty: no redirect allowed.
   */
  allowedRedirects: string[];
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw.trim())) {
    throw new ConfigError(`${name} must be a whole number, got ${JSON.stringify(raw)}`);
  }
  const value = Number(raw.trim());
  if (value < min || value > max) {
    throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

function flag(env: Env, name: string): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '' || raw === '0' || raw.toLowerCase() === 'false') return false;
  if (raw === '1' || raw.toLowerCase() === 'true') return true;
  throw new ConfigError(`${name} must be 1 or 0, got ${JSON.stringify(raw)}`);
}

/** Time kept after a grant's life for its commit, inside the lease and inside an invocation. */
export const COMMIT_RESERVE_MS = 2_000;

/** The default life of a refresh grant: slow providers answer within it. */
export const DEFAULT_GRANT_TIMEOUT_MS = 30_000;

/** The default lease: the grant's whole life and its commit, and at least 30 s and three HTTP timeouts. */
export function defaultLeaseSeconds(httpTimeoutMs: number, grantTimeoutMs: number): number {
  return Math.max(
    30,
    Math.ceil((3 * httpTimeoutMs) / 1000),
    Math.ceil((grantTimeoutMs + COMMIT_RESERVE_MS) / 1000),
  );
}

/** A sweep must leave room for one grant: its budget must exceed the HTTP timeout plus 2 s. */
export function minSweepBudgetSeconds(httpTimeoutMs: number): number {
  return Math.floor((httpTimeoutMs + 2_000) / 1000) + 1;
}

/**
 * The default sweep budget: 40% of the refresh interval, so the window check (window > interval +
 * budget) passes for any window over 1.4 × the interval; never less than one grant needs.
 */
export function defaultSweepBudgetSeconds(refreshIntervalSeconds: number, httpTimeoutMs: number): number {
  return Math.min(
    900,
    Math.max(Math.floor(0.4 * refreshIntervalSeconds), minSweepBudgetSeconds(httpTimeoutMs)),
  );
}

/** Reads and validates configuration. Throws ConfigError with a message a person can act on. */
export function loadConfig(env: Env = process.env): Config {
  const inLambda = Boolean(env.AWS_LAMBDA_FUNCTION_NAME);
  const httpTimeoutMs = int(env, 'TOKENKEEPER_HTTP_TIMEOUT_MS', 10_000, 100, 120_000);
  const refreshIntervalSeconds = int(env, 'TOKENKEEPER_REFRESH_INTERVAL_SECONDS', 300, 1, 86_400);
  const circuitProbeBaseMs = int(env, 'TOKENKEEPER_CIRCUIT_PROBE_BASE_MS', 2_000, 10, 3_600_000);
  // Without a grant timeout, a lease set by hand bounds the default one (the grant must fit in it).
  const explicitLease =
    env.TOKENKEEPER_LEASE_SECONDS === undefined || env.TOKENKEEPER_LEASE_SECONDS === ''
      ? undefined
      : int(env, 'TOKENKEEPER_LEASE_SECONDS', 30, 1, 3_600);
  const grantTimeoutMs = int(
    env,
    'TOKENKEEPER_GRANT_TIMEOUT_MS',
    explicitLease === undefined
      ? DEFAULT_GRANT_TIMEOUT_MS
      : Math.max(100, Math.min(DEFAULT_GRANT_TIMEOUT_MS, explicitLease * 1000 - COMMIT_RESERVE_MS)),
    100,
    3_600_000,
  );
  const config: Config = {
    inLambda,
    tableName: env.TOKENKEEPER_TABLE_NAME || 'tokenkeeper-sessions',
    dynamodbEndpoint: env.TOKENKEEPER_DYNAMODB_ENDPOINT || undefined,
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1',
    accountId: env.TOKENKEEPER_ACCOUNT_ID || undefined,
    dataDir: env.TOKENKEEPER_DATA_DIR || '.data',
    port: int(env, 'PORT', 8787, 0, 65_535),
    apiKey: env.TOKENKEEPER_API_KEY || undefined,
    refreshIntervalSeconds,
    refreshWindowSeconds: int(env, 'TOKENKEEPER_REFRESH_WINDOW_SECONDS', 600, 1, 86_400),
    refreshConcurrency: int(env, 'TOKENKEEPER_REFRESH_CONCURRENCY', 16, 1, 1_000),
    httpTimeoutMs,
    grantTimeoutMs,
    leaseSeconds: explicitLease ?? defaultLeaseSeconds(httpTimeoutMs, grantTimeoutMs),
    shardCount: int(env, 'TOKENKEEPER_SHARD_COUNT', 4, 1, 1_000),
    sweepQueueUrl: env.TOKENKEEPER_SWEEP_QUEUE_URL || undefined,
    sweepSliceSize: int(env, 'TOKENKEEPER_SWEEP_SLICE_SIZE', 1_000, 1, 100_000),
    sweepWorkers: int(env, 'TOKENKEEPER_SWEEP_WORKERS', 4, 1, 1_000),
    sweepBudgetSeconds: int(
      env,
      'TOKENKEEPER_SWEEP_BUDGET_SECONDS',
      defaultSweepBudgetSeconds(refreshIntervalSeconds, httpTimeoutMs),
      1,
      900,
    ),
    keepAliveSeconds: int(env, 'TOKENKEEPER_KEEPALIVE_SECONDS', 86_400, 60, 30 * 86_400),
    circuitFailureThreshold: int(env, 'TOKENKEEPER_CIRCUIT_FAILURE_THRESHOLD', 3, 1, 1_000),
    circuitProbeBaseMs,
    circuitProbeMaxMs: int(
      env,
      'TOKENKEEPER_CIRCUIT_PROBE_MAX_MS',
      Math.max(10_000, circuitProbeBaseMs),
      10,
      3_600_000,
    ),
    circuitCacheMs: int(env, 'TOKENKEEPER_CIRCUIT_CACHE_MS', 2_000, 0, 10_000),
    allowInsecureHttp: flag(env, 'TOKENKEEPER_ALLOW_INSECURE_HTTP'),
    keyringSecretArn: env.TOKENKEEPER_KEYRING_SECRET_ARN || undefined,
    clientSecretPrefix: env.TOKENKEEPER_CLIENT_SECRET_PREFIX || 'tokenkeeper/',
    eventBusName: env.TOKENKEEPER_EVENT_BUS_NAME || 'default',
    serviceName: env.POWERTOOLS_SERVICE_NAME || 'tokenkeeper',
    publicUrl: env.TOKENKEEPER_PUBLIC_URL ? env.TOKENKEEPER_PUBLIC_URL.replace(/\/+$/u, '') : undefined,
    allowedRedirects: (env.TOKENKEEPER_ALLOWED_REDIRECTS ?? '')
      .split(',')
      .map((entry) => entry.trim())
      .filter((entry) => entry !== ''),
  };
  validateConfig(config);
  return config;
}

export function validateConfig(c: Config): void {
  if (c.refreshWindowSeconds <= c.refreshIntervalSeconds) {
    throw new ConfigError(
      `TOKENKEEPER_REFRESH_WINDOW_SECONDS (${c.refreshWindowSeconds}) must be larger than ` +
        `TOKENKEEPER_REFRESH_INTERVAL_SECONDS (${c.refreshIntervalSeconds}), or sessions expire between sweeps`,
    );
  }
  if (c.refreshWindowSeconds <= c.refreshIntervalSeconds + c.sweepBudgetSeconds) {
    const minBudget = minSweepBudgetSeconds(c.httpTimeoutMs);
    const maxBudget = c.refreshWindowSeconds - c.refreshIntervalSeconds - 1;
    const fix =
      maxBudget >= minBudget
        ? `set TOKENKEEPER_SWEEP_BUDGET_SECONDS=${maxBudget} (or less, at least ${minBudget}), or ` +
          `TOKENKEEPER_REFRESH_WINDOW_SECONDS=${c.refreshIntervalSeconds + c.sweepBudgetSeconds + 1} (or more)`
        : `set TOKENKEEPER_REFRESH_WINDOW_SECONDS=${c.refreshIntervalSeconds + c.sweepBudgetSeconds + 1} (or more)`;
    throw new ConfigError(
      `TOKENKEEPER_REFRESH_WINDOW_SECONDS (${c.refreshWindowSeconds}) must exceed the refresh interval ` +
        `(${c.refreshIntervalSeconds}) plus the longest sweep (TOKENKEEPER_SWEEP_BUDGET_SECONDS=${c.sweepBudgetSeconds}): ${fix}`,
    );
  }
  if (c.leaseSeconds * 1000 < 3 * c.httpTimeoutMs) {
    throw new ConfigError(
      `TOKENKEEPER_LEASE_SECONDS (${c.leaseSeconds}) must be at least three times TOKENKEEPER_HTTP_TIMEOUT_MS ` +
        `(${c.httpTimeoutMs} ms): a refresh may need discovery (two requests) and the grant, all inside its lease`,
    );
  }
  if (c.grantTimeoutMs + COMMIT_RESERVE_MS > c.leaseSeconds * 1000) {
    throw new ConfigError(
      `TOKENKEEPER_GRANT_TIMEOUT_MS (${c.grantTimeoutMs} ms) must fit in the lease with the commit: at most ` +
        `TOKENKEEPER_LEASE_SECONDS (${c.leaseSeconds}) minus ${COMMIT_RESERVE_MS / 1000} s; set ` +
        `TOKENKEEPER_GRANT_TIMEOUT_MS=${c.leaseSeconds * 1000 - COMMIT_RESERVE_MS} (or less), or ` +
        `TOKENKEEPER_LEASE_SECONDS=${Math.ceil((c.grantTimeoutMs + COMMIT_RESERVE_MS) / 1000)} (or more)`,
    );
  }
  if (c.sweepBudgetSeconds * 1000 <= c.httpTimeoutMs + 2_000) {
    throw new ConfigError(
      `TOKENKEEPER_SWEEP_BUDGET_SECONDS (${c.sweepBudgetSeconds}) must leave room for one grant: more than ` +
        `TOKENKEEPER_HTTP_TIMEOUT_MS (${c.httpTimeoutMs} ms) plus 2 s; set TOKENKEEPER_SWEEP_BUDGET_SECONDS=` +
        `${minSweepBudgetSeconds(c.httpTimeoutMs)} (or more)`,
    );
  }
  if (c.circuitProbeMaxMs < c.circuitProbeBaseMs) {
    throw new ConfigError(
      `TOKENKEEPER_CIRCUIT_PROBE_MAX_MS (${c.circuitProbeMaxMs}) must be at least TOKENKEEPER_CIRCUIT_PROBE_BASE_MS ` +
        `(${c.circuitProbeBaseMs}); set TOKENKEEPER_CIRCUIT_PROBE_MAX_MS=${c.circuitProbeBaseMs} (or more)`,
    );
  }
  if (c.accountId !== undefined && !/^\d{12}$/.test(c.accountId)) {
    throw new ConfigError(
      `TOKENKEEPER_ACCOUNT_ID must be a 12-digit AWS account id, got ${JSON.stringify(c.accountId)}`,
    );
  }
  if (!/^[A-Za-z0-9/_+=.@-]+$/.test(c.clientSecretPrefix)) {
    throw new ConfigError(
      `TOKENKEEPER_CLIENT_SECRET_PREFIX must be a secret-name prefix such as "tokenkeeper/", got ${JSON.stringify(c.clientSecretPrefix)}`,
    );
  }
  if (c.publicUrl !== undefined) {
    const problem = publicUrlProblem(c.publicUrl, c.allowInsecureHttp);
    if (problem)
      throw new ConfigError(`TOKENKEEPER_PUBLIC_URL ${problem}, got ${JSON.stringify(c.publicUrl)}`);
  }
  for (const entry of c.allowedRedirects) {
    const problem = publicUrlProblem(entry, c.allowInsecureHttp);
    if (problem) {
      throw new ConfigError(
        `TOKENKEEPER_ALLOWED_REDIRECTS: ${JSON.stringify(entry)} ${problem} (a comma-separated list of origins or URL prefixes)`,
      );
    }
  }
  if (c.inLambda && c.allowInsecureHttp) {
    throw new ConfigError(
      'TOKENKEEPER_ALLOW_INSECURE_HTTP is for local development only and is refused in Lambda',
    );
  }
  if (c.inLambda && !c.keyringSecretArn) {
    throw new ConfigError('TOKENKEEPER_KEYRING_SECRET_ARN must name the keyring secret in Lambda');
  }
}

/** Why a public base URL (or an allowed-redirect entry) is unusable, or undefined: an absolute https URL (http only with the insecure flag), no query or fragment. */
export function publicUrlProblem(value: string, allowInsecureHttp: boolean): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an absolute URL';
  }
  if (url.protocol !== 'https:' && !(allowInsecureHttp && url.protocol === 'http:')) {
    return 'must be an https URL';
  }
  if (url.search !== '' || url.hash !== '' || value.includes('?') || value.includes('#')) {
    return 'must not have a query or fragment';
  }
  if (url.username !== '' || url.password !== '') return 'must not contain credentials';
  return undefined;
}
