import { randomUUID } from 'node:crypto';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { type ApiHandler, createApiHandler } from '../functions/api/adapter.js';
import { type Config, loadConfig } from '../functions/core/config.js';
import { generateKeyringJson, parseKeyring } from '../functions/core/crypto/crypto.js';
import type { SessionKey } from '../functions/core/model.js';
import { createRuntime, type Runtime } from '../functions/core/runtime.js';
import { ensureTable } from '../functions/core/store/table.js';
import { createRefreshHandler, type RefreshHandler } from '../functions/refresh/adapter.js';
import { createTelemetry } from '../functions/shared/powertools.js';
import { StdoutCapture } from './capture.js';
import { type Child, startChild } from './children.js';
import { DynamoMeter } from './meter.js';
import { opaqueToken, REFRESH_TOKEN_PREFIX, type TokenEndpointStats } from './token-endpoint.js';

/**
 * The bench's local stack: dynalite and the token endpoint in child processes, one DynamoDBClient
 * (with the meter) shared by every keeper built here, and keepers built by `createRuntime` exactly
 * as the Lambda handlers build theirs, with the real Powertools logger and metrics (their output is
 * captured and measured, see capture.ts). Each phase has its own table, so a sweep sees only its
 * own sessions.
 */

export interface BenchParams {
  sessions: number;
  latencyMs: number;
  concurrency: number;
  repeats: number;
  hotRequests: number;
  hotSessions: number;
  coldRuns: number;
  accessTokenBytes: number;
  refreshTokenBytes: number;
  shardCount: number;
}

export interface Keeper {
  runtime: Runtime;
  refresh: RefreshHandler;
  api: ApiHandler;
}

export interface KeeperOptions {
  table: string;
  concurrency?: number;
  /**
   * Added to the keeper's clock. A later sweep over the same sessions runs "one refresh period later"
   * (offset k × (lifetime − window)), so their tokens are due again without seeding them anew.
   */
  clockOffsetMs?: number;
  /**
   * Let the keeper build its own DynamoDB client from the configuration, as the Lambda handlers do
   * (default: the bench's shared client, which carries the meter).
   */
  ownClients?: boolean;
}

export interface BenchEnv {
  params: BenchParams;
  dynalite: Child;
  token: Child;
  client: DynamoDBClient;
  doc: DynamoDBDocumentClient;
  meter: DynamoMeter;
  capture: StdoutCapture;
  config: Config;
  /** Creates a sessions table (with the byExpiry index) holding the bench provider. */
  createTable(label: string): Promise<string>;
  /** A keeper as a freshly started Lambda container has it (cold provider cache). */
  keeper(options: KeeperOptions): Keeper;
  setLatency(ms: number): Promise<void>;
  tokenStats(): Promise<TokenEndpointStats>;
  /** Stores `count` sessions `<prefix>-<i>` whose access tokens expire in `expiresIn` seconds. */
  seed(table: string, prefix: string, count: number, expiresIn: number): Promise<SessionKey[]>;
  stop(): Promise<void>;
}

export const PROVIDER_ID = 'bench-provider';
const CLIENT_ID = 'bench-client';
const CLIENT_SECRET = `bench-${opaqueToken(32)}`;
/** The access-token lifetime the token endpoint grants (the cost model's one hour). */
export const ACCESS_TOKEN_LIFETIME_SECONDS = 3600;

export const BENCH_ENV = {
  // A sweep budget and window far beyond one sweep here, so neither cuts a measured sweep short.
  TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '300',
  TOKENKEEPER_SWEEP_BUDGET_SECONDS: '600',
  TOKENKEEPER_REFRESH_WINDOW_SECONDS: '1200',
  TOKENKEEPER_HTTP_TIMEOUT_MS: '10000',
  TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
  AWS_REGION: 'us-east-1',
  POWERTOOLS_SERVICE_NAME: 'tokenkeeper',
} as const;

export async function pool<T>(
  count: number,
  concurrency: number,
  task: (i: number) => Promise<T>,
): Promise<T[]> {
  const results: T[] = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return results;
}

export async function startBenchEnv(params: BenchParams): Promise<BenchEnv> {
  const [dynalite, token] = await Promise.all([
    startChild('dynalite'),
    startChild('token', {
      accessTokenBytes: params.accessTokenBytes,
      refreshTokenBytes: params.refreshTokenBytes,
      expiresIn: ACCESS_TOKEN_LIFETIME_SECONDS,
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
    }),
  ]);
  // The same client settings createRuntime uses for an outside endpoint.
  const client = new DynamoDBClient({
    endpoint: dynalite.url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: 5,
  });
  const meter = new DynamoMeter();
  meter.attach(client);
  const doc = DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });

  const config = loadConfig({
    ...BENCH_ENV,
    TOKENKEEPER_DYNAMODB_ENDPOINT: dynalite.url,
    TOKENKEEPER_REFRESH_CONCURRENCY: String(params.concurrency),
    TOKENKEEPER_SHARD_COUNT: String(params.shardCount),
  });
  const ring = parseKeyring(generateKeyringJson());
  const capture = new StdoutCapture();

  const keeper = (options: KeeperOptions): Keeper => {
    const telemetry = createTelemetry(config);
    const offset = options.clockOffsetMs ?? 0;
    const runtime = createRuntime({
      config: {
        ...config,
        tableName: options.table,
        refreshConcurrency: options.concurrency ?? config.refreshConcurrency,
      },
      ...(options.ownClients ? {} : { dynamodb: client }),
      keyring: async () => ring,
      logger: telemetry.logger,
      metrics: telemetry.metrics,
      ...(offset ? { clock: { now: () => Date.now() + offset } } : {}),
    });
    return {
      runtime,
      refresh: createRefreshHandler(runtime, { afterEach: telemetry.flush }),
      api: createApiHandler(runtime, { afterEach: telemetry.flush }),
    };
  };

  const control = async (path: string, body?: unknown) => {
    const res = await fetch(`${token.url}${path}`, {
      method: body === undefined ? 'GET' : 'POST',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`token endpoint ${path} answered ${res.status}`);
    return res.json();
  };

  const accessToken = opaqueToken(params.accessTokenBytes);
  return {
    params,
    dynalite,
    token,
    client,
    doc,
    meter,
    capture,
    config,
    keeper,
    async createTable(label) {
      const table = `tk-bench-${label}-${randomUUID().slice(0, 8)}`;
      await ensureTable(client, table);
      await keeper({ table }).runtime.providers.put(PROVIDER_ID, {
        tokenEndpoint: `${token.url}/token`,
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        clientAuthMethod: 'client_secret_basic',
      });
      return table;
    },
    async setLatency(ms) {
      await control('/config', { latencyMs: ms });
    },
    async tokenStats() {
      return (await control('/stats')) as TokenEndpointStats;
    },
    async seed(table, prefix, count, expiresIn) {
      const { store } = keeper({ table }).runtime;
      const now = Date.now();
      return pool(count, 32, async (i) => {
        const key = { userId: `${prefix}-${String(i).padStart(6, '0')}`, providerId: PROVIDER_ID };
        await store.putSession(
          {
            ...key,
            accessToken,
            refreshToken: `${REFRESH_TOKEN_PREFIX}seed-${prefix}-${i}-${opaqueToken(Math.max(8, params.refreshTokenBytes - 24))}`,
            tokenType: 'Bearer',
            expiresAt: Math.floor(now / 1000) + expiresIn,
          },
          now,
        );
        return key;
      });
    },
    async stop() {
      client.destroy();
      dynalite.stop();
      token.stop();
    },
  };
}
