import { DynamoDBClient, type DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SQSClient } from '@aws-sdk/client-sqs';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { COMMIT_RESERVE_MS, type Config } from './config.js';
import { DynamoConnectionStore } from './connect/connections.js';
import { DefaultConnectService } from './connect/service.js';
import { DynamoStateStore } from './connect/state.js';
import { cachedKeyring, createFieldCipher, type Keyring } from './crypto/crypto.js';
import { readOrCreateLocalKeyring, readSecretString, SECRET_NOT_A_STRING } from './crypto/keyring.js';
import { createAuthenticator } from './crypto/mac.js';
import { clientSecretArnProblem } from './crypto/secret-arn.js';
import { EventBridgePublisher, LogEventPublisher } from './events.js';
import type { ProviderConfig } from './model.js';
import { ClientConfigurationError, OAuthClient } from './oauth/client.js';
import { createGuardedFetch } from './oauth/net-guard.js';
import {
  type Clock,
  type EventPublisher,
  type FetchLike,
  type Logger,
  type Metrics,
  noMetrics,
  type Random,
  realSleep,
  type Sleep,
  silentLogger,
  systemClock,
} from './ports.js';
import { ProviderCircuit } from './refresh/circuit.js';
import { Dispatcher } from './refresh/dispatch.js';
import { type BackoffPolicy, Refresher } from './refresh/refresher.js';
import type { SliceQueue } from './refresh/slices.js';
import { SqsSliceQueue } from './refresh/sqs-queue.js';
import { Sweeper } from './refresh/sweep.js';
import { DefaultTokenService } from './refresh/token-service.js';
import { CachedProviders, DefaultProviderService, DefaultSessionService } from './registry.js';
import type { ConnectService, ProviderService, SessionService, TokenService } from './services.js';
import { DynamoSessionStore, type SessionStore } from './store/store.js';

/**
 * Composition root: builds the core from configuration and injected clients. Lambda handlers, the
 * local stack and the tests all go through here, so they run the same code.
 */

export interface RuntimeDeps {
  config: Config;
  clock?: Clock;
  sleep?: Sleep;
  random?: Random;
  fetch?: FetchLike;
  dynamodb?: DynamoDBClient;
  secrets?: SecretsManagerClient;
  eventBridge?: EventBridgeClient;
  sqs?: SQSClient;
  /** Where the dispatcher sends sweep slices (the local stack's in-process queue); else SQS when configured. */
  sliceQueue?: SliceQueue;
  /** Overrides where the keyring comes from (tests). */
  keyring?: () => Promise<Keyring>;
  logger?: Logger;
  metrics?: Metrics;
  events?: EventPublisher;
  backoff?: BackoffPolicy;
  /** How long secrets (keyring, client secrets by ARN) are cached. */
  secretTtlMs?: number;
  /**
   * Whether the process keeps running after a caller is answered (default: outside Lambda). Tests of
   * the Lambda's deadlines set it false.
   */
  keepsRunning?: boolean;
}

export interface Runtime {
  config: Config;
  /** Loads the keyring now (it is otherwise read on first use), so a bad keyring fails at start-up. */
  ready(): Promise<void>;
  clock: Clock;
  logger: Logger;
  metrics: Metrics;
  store: SessionStore;
  oauth: OAuthClient;
  refresher: Refresher;
  circuit: ProviderCircuit;
  providers: ProviderService;
  sessions: SessionService;
  tokens: TokenService;
  sweeper: Sweeper;
  /** The fan-out's dispatcher; absent without a slice queue (no `sliceQueue`, no `sweepQueueUrl`). */
  dispatcher?: Dispatcher;
  connect: ConnectService;
}

const SECRET_TTL_MS = 5 * 60_000;

/**
 * Secrets Manager answers that no retry will change: the functions may not read the secret (IAM, or
 * kms:Decrypt on a customer-managed key), it does not exist (any more), or it cannot be decrypted.
 */
const SECRET_MISCONFIGURED = new Map([
  ['AccessDeniedException', 'access denied'],
  ['ResourceNotFoundException', 'no such secret'],
  ['DecryptionFailure', 'the secret cannot be decrypted'],
  ['KMSAccessDeniedException', 'access to its KMS key denied'],
  ['KMSInvalidStateException', 'its KMS key cannot be used'],
  ['KMSDisabledException', 'its KMS key is disabled'],
  ['KMSNotFoundException', 'its KMS key does not exist'],
]);

/**
 * A provider's client secret by ARN. A read Secrets Manager refuses for good is the provider's
 * misconfiguration (the refresher flags the provider, alarms and keeps its sessions), not a
 * transient network error retried forever. The SDK's message is not repeated: it names roles and keys.
 */
async function readClientSecret(client: SecretsManagerClient, arn: string): Promise<string> {
  try {
    return await readSecretString(client, arn);
  } catch (err) {
    const reason = SECRET_MISCONFIGURED.get((err as { name?: string } | undefined)?.name ?? '');
    if (reason !== undefined) {
      throw new ClientConfigurationError(
        `clientSecretArn: Secrets Manager refused GetSecretValue (${reason}); grant the functions ` +
          'secretsmanager:GetSecretValue on the secret and kms:Decrypt on its key, or fix the ARN',
      );
    }
    if (err instanceof Error && err.message === SECRET_NOT_A_STRING) {
      throw new ClientConfigurationError('clientSecretArn: the secret has no string value');
    }
    throw err;
  }
}

export function createRuntime(deps: RuntimeDeps): Runtime {
  const { config } = deps;
  const clock = deps.clock ?? systemClock;
  const logger = deps.logger ?? silentLogger;
  const metrics = deps.metrics ?? noMetrics;
  const secretTtlMs = deps.secretTtlMs ?? SECRET_TTL_MS;

  const clientConfig: DynamoDBClientConfig = {
    region: config.region,
    endpoint: config.dynamodbEndpoint,
    maxAttempts: 5,
    ...(config.dynamodbEndpoint && !config.inLambda
      ? { credentials: { accessKeyId: 'local', secretAccessKey: 'local' } }
      : {}),
  };
  const dynamodb = deps.dynamodb ?? new DynamoDBClient(clientConfig);
  const doc = DynamoDBDocumentClient.from(dynamodb, {
    marshallOptions: { removeUndefinedValues: true },
  });
  // The conditional writes (two per refresh) go through a plain client that resolves the SDK's
  // middleware stack once per command type (`cacheMiddleware`, which lib-dynamodb refuses on the
  // document client's base client), on the same connection pool: a third less CPU per write
  // (docs/performance.md). An injected client serves both.
  const writes =
    deps.dynamodb ??
    new DynamoDBClient({
      ...clientConfig,
      cacheMiddleware: true,
      requestHandler: dynamodb.config.requestHandler,
    });

  let secrets = deps.secrets;
  const secretsClient = () => {
    secrets ??= new SecretsManagerClient({ region: config.region });
    return secrets;
  };

  const keyring =
    deps.keyring ??
    cachedKeyring(
      config.keyringSecretArn
        ? () => readSecretString(secretsClient(), config.keyringSecretArn as string)
        : async () => (await readOrCreateLocalKeyring(config.dataDir)).json,
      config.keyringSecretArn ? secretTtlMs : Number.POSITIVE_INFINITY,
      () => clock.now(),
    );
  const cipher = createFieldCipher(keyring);
  const store = new DynamoSessionStore({
    doc,
    writes,
    tableName: config.tableName,
    cipher,
    mac: createAuthenticator(keyring),
    shardCount: config.shardCount,
    // Tokens that live shorter than one sweep period plus the longest sweep would be expired at every
    // sweep: they are served on demand, and the sweep only keeps their grant alive.
    schedule: {
      onDemandBelowSeconds: config.refreshIntervalSeconds + config.sweepBudgetSeconds,
      keepAliveSeconds: config.keepAliveSeconds,
    },
  });

  const secretRules = {
    prefix: config.clientSecretPrefix,
    keyringSecretArn: config.keyringSecretArn,
    region: config.region,
    accountId: config.accountId,
  };
  const secretCache = new Map<string, { value: string; at: number }>();
  const clientSecret = async (provider: ProviderConfig): Promise<string | undefined> => {
    if (provider.clientSecret !== undefined) return provider.clientSecret;
    if (!provider.clientSecretArn) return undefined;
    // Checked again here, not only at PUT: an item written before the rule, or by hand, must not
    // make the keeper send the keyring to a token endpoint.
    const problem = clientSecretArnProblem(provider.clientSecretArn, secretRules);
    if (problem) throw new ClientConfigurationError(problem);
    const hit = secretCache.get(provider.clientSecretArn);
    if (hit && clock.now() - hit.at < secretTtlMs) return hit.value;
    const value = await readClientSecret(secretsClient(), provider.clientSecretArn);
    secretCache.set(provider.clientSecretArn, { value, at: clock.now() });
    return value;
  };

  // https only, and never to loopback/private/metadata addresses, checked at resolution time.
  const fetch =
    deps.fetch ?? createGuardedFetch({ allowInsecureHttp: config.allowInsecureHttp, now: () => clock.now() });
  const oauth = new OAuthClient({
    fetch,
    clock,
    logger,
    timeoutMs: config.httpTimeoutMs,
    grantTimeoutMs: config.grantTimeoutMs,
    allowInsecureHttp: config.allowInsecureHttp,
    clientSecret,
  });

  const events =
    deps.events ??
    (config.inLambda
      ? new EventBridgePublisher(
          deps.eventBridge ?? new EventBridgeClient({ region: config.region }),
          config.eventBusName,
        )
      : new LogEventPublisher(logger));

  const providerCache = new CachedProviders(store, clock, 30_000);
  const random = deps.random ?? Math.random;
  const circuit = new ProviderCircuit({
    store,
    clock,
    random,
    logger,
    metrics,
    events,
    policy: {
      failureThreshold: config.circuitFailureThreshold,
      probeBaseMs: config.circuitProbeBaseMs,
      probeMaxMs: config.circuitProbeMaxMs,
      cacheTtlMs: config.circuitCacheMs,
      probeLeaseMs: config.leaseSeconds * 1000,
      grantConcurrency: config.refreshConcurrency,
    },
  });
  const sleep = deps.sleep ?? realSleep;
  const refresher = new Refresher({
    store,
    oauth,
    sleep,
    providers: providerCache,
    clock,
    logger,
    metrics,
    events,
    random,
    leaseMs: config.leaseSeconds * 1000,
    grantReserveMs: config.httpTimeoutMs + COMMIT_RESERVE_MS,
    grantTimeoutMs: config.grantTimeoutMs,
    commitReserveMs: COMMIT_RESERVE_MS,
    // A Lambda is frozen once its handler returns: no grant may outlive the invocation there. The
    // local stack's server keeps running, so its callers may stop waiting while a grant stays open.
    keepsRunning: deps.keepsRunning ?? !config.inLambda,
    backoff: deps.backoff,
    circuit,
  });
  const reserveMs = config.httpTimeoutMs + COMMIT_RESERVE_MS;
  const sessions = new DefaultSessionService(store, providerCache, oauth, clock, logger);
  const sliceQueue =
    deps.sliceQueue ??
    (config.sweepQueueUrl
      ? new SqsSliceQueue(deps.sqs ?? new SQSClient({ region: config.region }), config.sweepQueueUrl)
      : undefined);

  return {
    config,
    ready: async () => {
      await keyring();
    },
    clock,
    logger,
    metrics,
    store,
    oauth,
    refresher,
    circuit,
    providers: new DefaultProviderService(
      store,
      clock,
      providerCache,
      secretRules,
      circuit,
      config.publicUrl,
    ),
    sessions,
    tokens: new DefaultTokenService({
      store,
      refresher,
      clock,
      sleep,
      logger,
      metrics,
      maxWaitMs: reserveMs,
    }),
    sweeper: new Sweeper({
      store,
      refresher,
      clock,
      logger,
      shardCount: config.shardCount,
      windowSeconds: config.refreshWindowSeconds,
      concurrency: config.refreshConcurrency,
      budgetMs: config.sweepBudgetSeconds * 1000,
      grantReserveMs: reserveMs,
      circuit,
      providers: providerCache,
      intervalSeconds: config.refreshIntervalSeconds,
    }),
    dispatcher: sliceQueue
      ? new Dispatcher({
          store,
          queue: sliceQueue,
          clock,
          logger,
          shardCount: config.shardCount,
          windowSeconds: config.refreshWindowSeconds,
          sliceSize: config.sweepSliceSize,
        })
      : undefined,
    connect: new DefaultConnectService({
      store,
      invalidateProvider: (providerId) => {
        providerCache.invalidate(providerId);
        circuit?.forget(providerId);
      },
      states: new DynamoStateStore(doc, config.tableName, cipher),
      connections: new DynamoConnectionStore(doc, config.tableName, cipher),
      oauth,
      sessions,
      events,
      clock,
      logger,
      metrics,
      fetch,
      timeoutMs: config.httpTimeoutMs,
      allowInsecureHttp: config.allowInsecureHttp,
      publicUrl: config.publicUrl,
      allowedRedirects: config.allowedRedirects,
    }),
  };
}
