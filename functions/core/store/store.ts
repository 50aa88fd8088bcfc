import { createHash } from 'node:crypto';
import {
  ConditionalCheckFailedException,
  type DynamoDBClient,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import {
  DeleteCommand,
  type DynamoDBDocumentClient,
  GetCommand,
  QueryCommand,
  ScanCommand,
  UpdateCommand,
  type UpdateCommandInput,
} from '@aws-sdk/lib-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { type FieldCipher, isSealed, type Sealed } from '../crypto/crypto.js';
import type { Authenticator, MacCheck } from '../crypto/mac.js';
import { KeyUnavailableError, ProviderIntegrityError } from '../errors.js';
import {
  type CircuitRecord,
  type ClientAuthMethod,
  type ClientRegistration,
  type LastError,
  PROVIDER_OPTIONAL_FIELDS,
  type ProviderConfig,
  type ProviderRefreshSettings,
  type RefreshPolicy,
  type SessionKey,
  type SessionStatus,
} from '../model.js';
import { integrityProblem, PROVIDER_MAC_FIELDS, providerMacMessage } from './provider-mac.js';
import { TABLE } from './table.js';

/**
 * The session store: the port the refresher, sweep and services use, and its DynamoDB adapter.
 * Every write that matters is a single conditional item write (no transactions): the lease, the
 * commit and the failure record are each one UpdateItem whose condition names the state it expects.
 */

/** A session as stored: metadata in clear, tokens still sealed. `reveal` opens them. */
export interface SessionRecord extends SessionKey {
  /** Binary envelopes, or `tk1.` text ones in items not written since the binary form came in. */
  accessTokenSealed: Sealed;
  refreshTokenSealed?: Sealed;
  tokenType: string;
  scope?: string;
  expiresAt?: number;
  /** The refresh token's own expiry (epoch seconds), when the provider said. */
  refreshExpiresAt?: number;
  /** When the sweep must act (epoch seconds): the index's sort key; absent when not refreshable. */
  refreshDueAt?: number;
  refreshMode: RefreshMode;
  status: SessionStatus;
  version: number;
  createdAt: number;
  /**
   * When a refresh grant issued the current access token (epoch ms). Absent for a token handed over
   * at login, whose age the keeper cannot know.
   */
  issuedAt?: number;
  refreshedAt?: number;
  leaseOwner?: string;
  leaseUntil?: number;
  failureCount: number;
  nextAttemptAt?: number;
  lastError?: LastError;
}

export interface RevealedTokens {
  accessToken: string;
  refreshToken?: string;
}

/** What a lease asks for beyond "active, refreshable, not leased, not backing off". */
export type LeaseCondition =
  /**
   * `seenDueAt`: the due time the index showed; a session refreshed since then is not leased again.
   * `sweepStartedAt` (epoch ms): neither is one refreshed after the sweep began — a slice queried later
   * may see a session an earlier slice already refreshed when its new due time is still in the window.
   */
  | { kind: 'sweep'; dueBy: number; seenDueAt?: number; sweepStartedAt?: number }
  | { kind: 'onDemand'; minValidUntil: number }
  | { kind: 'forced'; version: number };

export interface NewSession extends SessionKey {
  accessToken: string;
  refreshToken?: string;
  tokenType: string;
  scope?: string;
  expiresAt?: number;
  refreshExpiresAt?: number;
  /** The provider's refresh policy, which decides the session's schedule; absent: eager. */
  provider?: ProviderRefreshSettings;
}

export interface CommittedTokens {
  /** Absent when the answer carried no usable access token: the old one stays, marked due. */
  accessToken?: string;
  /** The refresh token to keep: the rotated one, or the old one when none was returned. */
  refreshToken: string;
  tokenType: string;
  scope?: string;
  expiresAt?: number;
  refreshExpiresAt?: number;
  /** Overrides the schedule: the session is due then (a grant that issued no usable access token). */
  dueAt?: number;
  /** The provider's refresh policy as the grant found it, which decides the schedule; absent: eager. */
  provider?: ProviderRefreshSettings;
}

export type FailureKind = 'transient' | 'reauthorization_required' | 'client_rejected';

export interface DueKey extends SessionKey {
  /** The index's sort key: when the sweep must act (epoch seconds). */
  dueAt: number;
}

/**
 * How a session's access token is kept: `scheduled` — the sweep refreshes it before it expires;
 * `on_demand` — its tokens live shorter than a sweep period (or have no expiry), so callers refresh
 * it when they ask, and the sweep only keeps its grant alive.
 */
export type RefreshMode = 'scheduled' | 'on_demand';

export interface SchedulePolicy {
  /** Access tokens issued for less than this (seconds) are served on demand: the sweep period plus a margin. */
  onDemandBelowSeconds: number;
  /** An on-demand session's grant is renewed this often (seconds) when the refresh token's expiry is unknown. */
  keepAliveSeconds: number;
}

export const DEFAULT_SCHEDULE: SchedulePolicy = { onDemandBelowSeconds: 0, keepAliveSeconds: 86_400 };

/**
 * When the sweep must act on a refreshable session (epoch seconds), and why. Scheduled: the earlier of
 * the access token's expiry and the refresh token's. On demand: only to keep the grant alive — before
 * the refresh token's known expiry, else one keep-alive period on. Without either expiry the session
 * is out of the index (no invented lifetime) and refreshed only when asked.
 *
 * A provider whose `refreshPolicy` is `keepAlive` makes every session on demand, due when its grant
 * would die: the refresh token's stated expiry, or `refreshTokenIdleSeconds` after this grant when the
 * operator declared it (the earlier of the two when both are known), else one keep-alive period on.
 */
export function refreshSchedule(
  s: { expiresAt?: number; refreshExpiresAt?: number },
  nowSeconds: number,
  policy: SchedulePolicy,
  provider: ProviderRefreshSettings = {},
): { mode: RefreshMode; dueAt?: number } {
  if (provider.refreshPolicy === 'keepAlive') {
    const idle = provider.refreshTokenIdleSeconds;
    const idleDue = idle === undefined ? undefined : nowSeconds + idle;
    const known = [s.refreshExpiresAt, idleDue].filter((t): t is number => t !== undefined);
    const dueAt = known.length > 0 ? Math.min(...known) : nowSeconds + policy.keepAliveSeconds;
    return { mode: 'on_demand', dueAt };
  }
  if (s.expiresAt === undefined) return { mode: 'on_demand', dueAt: s.refreshExpiresAt };
  if (policy.onDemandBelowSeconds > 0 && s.expiresAt - nowSeconds < policy.onDemandBelowSeconds) {
    return { mode: 'on_demand', dueAt: s.refreshExpiresAt ?? nowSeconds + policy.keepAliveSeconds };
  }
  const dueAt = s.refreshExpiresAt === undefined ? s.expiresAt : Math.min(s.expiresAt, s.refreshExpiresAt);
  return { mode: 'scheduled', dueAt };
}

/** One page of sessions across users; `cursor` continues where this page stopped. */
export interface SessionPage {
  records: SessionRecord[];
  cursor?: Record<string, string>;
}

export interface SessionFilter {
  providerId?: string;
  status?: SessionStatus;
  /** At most this many records. */
  limit: number;
  cursor?: Record<string, string>;
}

/**
 * A provider as listed: its configuration without the client secret, which is not even decrypted.
 * `integrityProblem`: why its settings failed their MAC check (functions/core/store/provider-mac.ts);
 * absent when they passed.
 */
export type ProviderListing = Omit<ProviderConfig, 'clientSecret'> & {
  hasClientSecret: boolean;
  integrityProblem?: string;
};

/** One page of providers; `cursor` continues where this page stopped. */
export interface ProviderPage {
  providers: ProviderListing[];
  cursor?: Record<string, string>;
}

/** The latest sweep's summary, as its dispatch and slices stored it (epoch ms). */
export interface StoredSweep {
  sweepId?: string;
  summary: Record<string, number>;
  startedAt: number;
  /** When the last slice so far finished; absent while none has. */
  finishedAt?: number;
}

export interface SessionStore {
  getSession(key: SessionKey, options?: { consistent?: boolean }): Promise<SessionRecord | undefined>;
  listSessions(userId: string): Promise<SessionRecord[]>;
  /** Replaces the session with fresh tokens (a new login). Returns whether it was created. */
  putSession(session: NewSession, now: number): Promise<{ created: boolean; record: SessionRecord }>;
  /** Returns the deleted record, or undefined when there was none. */
  deleteSession(key: SessionKey): Promise<SessionRecord | undefined>;
  /** Opens the sealed tokens; `access` leaves the refresh token sealed. */
  reveal(record: SessionRecord, which?: 'access' | 'all'): Promise<RevealedTokens>;
  /**
   * One conditional write; returns the leased record, or undefined when the condition refused.
   * `liftBackoff`: a session whose last failure falls in this window (a provider outage the circuit
   * handled) may be leased before its `nextAttemptAt`.
   */
  acquireLease(
    key: SessionKey,
    owner: string,
    condition: LeaseCondition,
    now: number,
    leaseUntil: number,
    liftBackoff?: { from: number; to: number },
  ): Promise<SessionRecord | undefined>;
  /** Conditional on `leaseOwner = owner`; undefined when the lease was lost. */
  commitRefresh(
    key: SessionKey,
    owner: string,
    tokens: CommittedTokens,
    now: number,
  ): Promise<SessionRecord | undefined>;
  /** Conditional on `leaseOwner = owner`; false when the lease was lost. */
  recordFailure(
    key: SessionKey,
    owner: string,
    failure: { kind: FailureKind; error: LastError; nextAttemptAt?: number },
  ): Promise<boolean>;
  releaseLease(key: SessionKey, owner: string): Promise<void>;
  /**
   * One page of due keys in one shard, ascending by due time: `refreshDueAt <= dueBy`, and
   * `>= from` when given (a slice of the shard's due range).
   */
  queryDue(
    shard: number,
    dueBy: number,
    cursor?: Record<string, unknown>,
    from?: number,
  ): Promise<{ keys: DueKey[]; cursor?: Record<string, unknown> }>;
  /**
   * The provider's configuration with its client secret opened, for use in a grant or a discovery.
   * Throws ProviderIntegrityError, before any secret is decrypted, when its settings do not match
   * their MAC.
   */
  getProvider(providerId: string): Promise<ProviderConfig | undefined>;
  /** The provider as stored, with the result of its MAC check, never decrypting its client secret. */
  inspectProvider(providerId: string): Promise<ProviderListing | undefined>;
  /** Replaces the provider's configuration, keeping its first createdAt. */
  putProvider(provider: ProviderConfig): Promise<{ created: boolean; createdAt: number }>;
  flagProviderRejected(providerId: string, at: number): Promise<void>;
  /** Sessions across users, filtered, one bounded page at a time (a paginated Scan). */
  searchSessions(filter: SessionFilter): Promise<SessionPage>;
  /** Providers, one bounded page at a time (a paginated Scan), never decrypting a client secret. */
  listProviders(page: { limit: number; cursor?: Record<string, string> }): Promise<ProviderPage>;
  /**
   * Starts the latest sweep's record: a fanned-out sweep is one dispatch and many slices, each of
   * which adds its counts with `addToSweep`. A newer sweep replaces the record.
   */
  startSweep(sweep: { sweepId: string; startedAt: number; summary: Record<string, number> }): Promise<void>;
  /**
   * Adds one slice's counts to the sweep's record (atomic counters, so slices finishing together add
   * up); ignored when a newer sweep has replaced the record.
   */
  addToSweep(
    sweepId: string,
    counts: Record<string, number>,
    finishedAt: number,
    /** When the sweep (not the slice) started: its history item's key. */
    sweepStartedAt?: number,
  ): Promise<void>;
  getLatestSweep(): Promise<StoredSweep | undefined>;
  /** The sweeps that started at or after `since` (epoch ms), oldest first, from their history items (kept SWEEP_HISTORY_SECONDS). */
  listSweeps(since: number): Promise<StoredSweep[]>;
  /** Clears the flag once a grant with the provider succeeds again. */
  clearProviderRejected(providerId: string): Promise<void>;

  // The provider's circuit (functions/core/refresh/circuit.ts): single conditional writes on the provider item.
  /** Consistent read of the circuit; undefined when the provider is not registered. */
  getCircuit(providerId: string): Promise<CircuitRecord | undefined>;
  /** Counts one more failure in the run (and starts the run); returns the circuit as written. */
  recordCircuitFailure(
    providerId: string,
    error: LastError,
    /** False when this session already failed in the current run (it is counted once). */
    newSession?: boolean,
  ): Promise<CircuitRecord | undefined>;
  /** Closed → open, when the run has at least `minFailures` failures; undefined when refused. */
  openCircuit(
    providerId: string,
    now: number,
    nextProbeAt: number,
    minFailures: number,
  ): Promise<CircuitRecord | undefined>;
  /** The probe failed: open again until `nextProbeAt`; conditional on holding the probe. */
  reopenCircuit(
    providerId: string,
    owner: string,
    error: LastError,
    nextProbeAt: number,
    newSession?: boolean,
  ): Promise<CircuitRecord | undefined>;
  /** Takes the single probe of an open circuit whose probe is due; undefined when refused. */
  claimCircuitProbe(
    providerId: string,
    owner: string,
    now: number,
    until: number,
  ): Promise<CircuitRecord | undefined>;
  /** Gives the probe back unused (its session could not be leased). */
  releaseCircuitProbe(providerId: string, owner: string): Promise<void>;
  /**
   * Open → closed after a success of a grant sent at `sentAt` (after the circuit opened). Returns the
   * circuit as it was before, or undefined when it was not open (or opened after the grant was sent).
   */
  closeCircuit(providerId: string, now: number, sentAt: number): Promise<CircuitRecord | undefined>;
  /** A success while closed ends the run of failures. */
  resetCircuitFailures(providerId: string): Promise<void>;
  /**
   * Counts the due sessions one sweep held back while the circuit is open: the slices of one sweep
   * add up, and the circuit keeps the largest sweep's total.
   */
  noteCircuitHeldBack(providerId: string, sessions: number, sweepId: string): Promise<void>;
}

export function shardOf(key: SessionKey, shardCount: number): number {
  const digest = createHash('sha256').update(key.userId).update('\u0000').update(key.providerId).digest();
  return digest.readUInt32BE(0) % shardCount;
}

const sessionPk = (userId: string) => `USER#${userId}`;
const sessionSk = (providerId: string) => `SESSION#${providerId}`;
const providerPk = (providerId: string) => `PROVIDER#${providerId}`;
const PROVIDER_SK = 'PROVIDER';
const SWEEP_KEY = { pk: 'SWEEP#latest', sk: 'SWEEP' };
/** One item per sweep, sorted by start, removed by the table's TTL after this long. */
const SWEEP_HISTORY_PK = 'SWEEP#history';
export const SWEEP_HISTORY_SECONDS = 48 * 3600;
const sweepHistoryKey = (startedAt: number, sweepId: string) => ({
  [TABLE.partitionKey]: SWEEP_HISTORY_PK,
  [TABLE.sortKey]: `${String(startedAt).padStart(15, '0')}#${sweepId}`,
});
/** A search reads at most this many items per call (Scan pages of SCAN_PAGE), then hands back a cursor. */
const SCAN_PAGE = 200;
const SCAN_MAX_PAGES = 10;

function keyOf(key: SessionKey) {
  return { [TABLE.partitionKey]: sessionPk(key.userId), [TABLE.sortKey]: sessionSk(key.providerId) };
}

/** Additional authenticated data: the item's key and the attribute, so a sealed value cannot move. */
export function aadFor(pk: string, sk: string, attribute: string): string {
  return `${pk}\u0000${sk}\u0000${attribute}`;
}

function isConditionFailure(err: unknown): boolean {
  return (
    err instanceof ConditionalCheckFailedException ||
    (err as { name?: string } | undefined)?.name === 'ConditionalCheckFailedException'
  );
}

type Item = Record<string, unknown>;

function keyCursor(item: Record<string, unknown>): Record<string, string> {
  return {
    [TABLE.partitionKey]: String(item[TABLE.partitionKey]),
    [TABLE.sortKey]: String(item[TABLE.sortKey]),
  };
}

function toRecord(item: Item): SessionRecord {
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const lastError = item.lastError as LastError | undefined;
  return {
    userId: item.userId as string,
    providerId: item.providerId as string,
    accessTokenSealed: item.accessToken as Sealed,
    refreshTokenSealed: isSealed(item.refreshToken) ? item.refreshToken : undefined,
    tokenType: (str(item.tokenType) ?? 'Bearer') as string,
    scope: str(item.scope),
    expiresAt: num(item.expiresAt),
    refreshExpiresAt: num(item.refreshExpiresAt),
    refreshDueAt: num(item[TABLE.dueAttribute]),
    refreshMode: item.refreshMode === 'on_demand' ? 'on_demand' : 'scheduled',
    status: (item.status as SessionStatus) ?? 'active',
    version: num(item.version) ?? 0,
    createdAt: num(item.createdAt) ?? 0,
    issuedAt: num(item.issuedAt),
    refreshedAt: num(item.refreshedAt),
    leaseOwner: str(item.leaseOwner),
    leaseUntil: num(item.leaseUntil),
    failureCount: num(item.failureCount) ?? 0,
    nextAttemptAt: num(item.nextAttemptAt),
    lastError: lastError && typeof lastError.code === 'string' ? lastError : undefined,
  };
}

/** The provider item's circuit attributes (functions/core/refresh/circuit.ts); none of them is a reserved word. */
const CIRCUIT_ATTRIBUTES = [
  'circuitState',
  'circuitSince',
  'circuitNextProbeAt',
  'circuitFailures',
  'circuitOpenings',
  'circuitRunFrom',
  'circuitProbeOwner',
  'circuitProbeUntil',
  'circuitLastError',
  'circuitOutageFrom',
  'circuitOutageTo',
  'circuitHeldBack',
  'circuitHeldBackRun',
  'circuitHeldBackSweep',
  'circuitSessions',
] as const;

function maxOf(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.max(a, b);
}

export function circuitOf(item: Item): CircuitRecord {
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  const state =
    item.circuitState === 'open' || item.circuitState === 'half_open' ? item.circuitState : 'closed';
  const lastError = item.circuitLastError as LastError | undefined;
  const from = num(item.circuitOutageFrom);
  const to = num(item.circuitOutageTo);
  return {
    state,
    since: num(item.circuitSince),
    nextProbeAt: num(item.circuitNextProbeAt),
    consecutiveFailures: num(item.circuitFailures) ?? 0,
    openings: num(item.circuitOpenings) ?? 0,
    runFrom: num(item.circuitRunFrom),
    probeOwner: typeof item.circuitProbeOwner === 'string' ? item.circuitProbeOwner : undefined,
    probeUntil: num(item.circuitProbeUntil),
    lastError: lastError && typeof lastError.code === 'string' ? lastError : undefined,
    lastOutage: from !== undefined && to !== undefined ? { from, to } : undefined,
    heldBack: maxOf(num(item.circuitHeldBack), num(item.circuitHeldBackRun)),
    sessionsFailed: num(item.circuitSessions),
  };
}

function storedSweep(item: Item): StoredSweep {
  return {
    sweepId: typeof item.sweepId === 'string' ? item.sweepId : undefined,
    summary: item.summary as Record<string, number>,
    startedAt: item.startedAt as number,
    finishedAt: typeof item.finishedAt === 'number' ? item.finishedAt : undefined,
  };
}

/** The MAC attribute of a provider item (functions/core/store/provider-mac.ts). */
const PROVIDER_MAC_ATTRIBUTE = 'settingsMac';

/** A provider item without its client secret (sealed; only getProvider opens it). */
function toProviderListing(item: Item): ProviderListing {
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  const num = (v: unknown) => (typeof v === 'number' ? v : undefined);
  return {
    providerId: item.providerId as string,
    issuer: str(item.issuer),
    tokenEndpoint: str(item.tokenEndpoint),
    revocationEndpoint: str(item.revocationEndpoint),
    clientId: item.clientId as string,
    hasClientSecret: isSealed(item.clientSecret) || typeof item.clientSecretArn === 'string',
    clientSecretArn: str(item.clientSecretArn),
    clientAuthMethod: item.clientAuthMethod as ClientAuthMethod,
    resource: str(item.resource),
    scope: str(item.scope),
    createdAt: item.createdAt as number,
    updatedAt: item.updatedAt as number,
    clientRejectedAt: typeof item.clientRejectedAt === 'number' ? item.clientRejectedAt : undefined,
    circuit: circuitOf(item),
    mcpServerUrl: str(item.mcpServerUrl),
    authorizationEndpoint: str(item.authorizationEndpoint),
    registration: str(item.registration) as ClientRegistration | undefined,
    scopesSupported: Array.isArray(item.scopesSupported)
      ? item.scopesSupported.filter((s): s is string => typeof s === 'string')
      : undefined,
    issParameterSupported: item.issParameterSupported === true ? true : undefined,
    refreshPolicy:
      item.refreshPolicy === 'keepAlive' || item.refreshPolicy === 'eager'
        ? (item.refreshPolicy as RefreshPolicy)
        : undefined,
    refreshTokenIdleSeconds: num(item.refreshTokenIdleSeconds),
    maxConcurrentRefreshes: num(item.maxConcurrentRefreshes),
  };
}

/**
 * The document client's marshalling options (functions/core/runtime.ts), for the plain writes. A
 * separate object on purpose: lib-dynamodb writes `convertTopLevelContainer: true` into the options
 * object it is given, which would make these writes marshal every value wrongly.
 */
const MARSHALL = { removeUndefinedValues: true } as const;

export interface DynamoSessionStoreOptions {
  doc: DynamoDBDocumentClient;
  /**
   * The client for the conditional writes (the lease and the commit of every refresh among them):
   * a plain client, ideally built with `cacheMiddleware: true`, which resolves the SDK's middleware
   * stack once per command type instead of on every call (lib-dynamodb refuses the option on a
   * document client's base client). It may be that base client itself (an injected client).
   */
  writes: DynamoDBClient;
  tableName: string;
  cipher: FieldCipher;
  /** Makes and checks the MAC of provider items, under the same keyring as `cipher`. */
  mac: Authenticator;
  shardCount: number;
  schedule?: SchedulePolicy;
}

export class DynamoSessionStore implements SessionStore {
  private readonly doc: DynamoDBDocumentClient;
  private readonly writes: DynamoDBClient;
  private readonly tableName: string;
  private readonly cipher: FieldCipher;
  private readonly mac: Authenticator;
  private readonly shardCount: number;
  private readonly policy: SchedulePolicy;

  constructor(options: DynamoSessionStoreOptions) {
    this.doc = options.doc;
    this.writes = options.writes;
    this.tableName = options.tableName;
    this.cipher = options.cipher;
    this.mac = options.mac;
    this.shardCount = options.shardCount;
    this.policy = options.schedule ?? DEFAULT_SCHEDULE;
  }

  /**
   * One conditional UpdateItem. Returns the item as written (when `ReturnValues` asks for it), `{}`
   * when written without return values, or undefined when the condition refused the write.
   */
  private async conditionalUpdate(input: Omit<UpdateCommandInput, 'TableName'>): Promise<Item | undefined> {
    try {
      // Marshalled here as the document client would (util-dynamodb, undefined values dropped), and
      // sent as a plain UpdateItem on the writes client.
      const { Attributes } = await this.writes.send(
        new UpdateItemCommand({
          ...input,
          TableName: this.tableName,
          Key: marshall(input.Key, MARSHALL),
          ExpressionAttributeValues: input.ExpressionAttributeValues
            ? marshall(input.ExpressionAttributeValues, MARSHALL)
            : undefined,
        }),
      );
      return Attributes ? unmarshall(Attributes) : {};
    } catch (err) {
      if (isConditionFailure(err)) return undefined;
      throw err;
    }
  }

  async getSession(
    key: SessionKey,
    options: { consistent?: boolean } = {},
  ): Promise<SessionRecord | undefined> {
    const { Item } = await this.doc.send(
      new GetCommand({
        TableName: this.tableName,
        Key: keyOf(key),
        ConsistentRead: options.consistent ?? false,
      }),
    );
    return Item ? toRecord(Item) : undefined;
  }

  async listSessions(userId: string): Promise<SessionRecord[]> {
    const records: SessionRecord[] = [];
    let cursor: Record<string, unknown> | undefined;
    do {
      const page = await this.doc.send(
        new QueryCommand({
          TableName: this.tableName,
          KeyConditionExpression: '#pk = :pk AND begins_with(#sk, :prefix)',
          ExpressionAttributeNames: { '#pk': TABLE.partitionKey, '#sk': TABLE.sortKey },
          ExpressionAttributeValues: { ':pk': sessionPk(userId), ':prefix': 'SESSION#' },
          ExclusiveStartKey: cursor,
        }),
      );
      for (const item of page.Items ?? []) records.push(toRecord(item));
      cursor = page.LastEvaluatedKey;
    } while (cursor);
    return records;
  }

  /** Sealed as a Binary attribute; `reveal` opens the text form older items hold as well. */
  private async seal(key: SessionKey, attribute: string, value: string): Promise<Uint8Array> {
    return this.cipher.encrypt(value, aadFor(sessionPk(key.userId), sessionSk(key.providerId), attribute));
  }

  async reveal(record: SessionRecord, which: 'access' | 'all' = 'all'): Promise<RevealedTokens> {
    const pk = sessionPk(record.userId);
    const sk = sessionSk(record.providerId);
    const accessToken = await this.cipher.decrypt(record.accessTokenSealed, aadFor(pk, sk, 'accessToken'));
    const refreshToken =
      record.refreshTokenSealed === undefined || which === 'access'
        ? undefined
        : await this.cipher.decrypt(record.refreshTokenSealed, aadFor(pk, sk, 'refreshToken'));
    return { accessToken, refreshToken };
  }

  async putSession(session: NewSession, now: number): Promise<{ created: boolean; record: SessionRecord }> {
    // One UpdateItem: replaces the tokens, bumps the version (so a forced call that saw the old
    // version never leases the new session by mistake), keeps createdAt, and clears any lease,
    // failure or dead status left by the previous grant.
    const names: Record<string, string> = { '#status': 'status', '#type': 'type' };
    const values: Record<string, unknown> = {
      ':type': 'session',
      ':userId': session.userId,
      ':providerId': session.providerId,
      ':at': await this.seal(session, 'accessToken', session.accessToken),
      ':tt': session.tokenType,
      ':active': 'active',
      ':now': now,
      ':zero': 0,
      ':one': 1,
    };
    const set = [
      '#type = :type',
      'userId = :userId',
      'providerId = :providerId',
      'accessToken = :at',
      'tokenType = :tt',
      '#status = :active',
      'createdAt = if_not_exists(createdAt, :now)',
      'version = if_not_exists(version, :zero) + :one',
      'failureCount = :zero',
    ];
    const remove = ['leaseOwner', 'leaseUntil', 'nextAttemptAt', 'lastError', 'refreshedAt', 'issuedAt'];
    if (session.refreshToken !== undefined) {
      set.push('refreshToken = :rt');
      values[':rt'] = await this.seal(session, 'refreshToken', session.refreshToken);
    } else {
      remove.push('refreshToken');
    }
    if (session.scope !== undefined) {
      set.push('#scope = :scope');
      names['#scope'] = 'scope';
      values[':scope'] = session.scope;
    } else {
      remove.push('#scope');
      names['#scope'] = 'scope';
    }
    if (session.expiresAt !== undefined) {
      set.push('expiresAt = :exp');
      values[':exp'] = session.expiresAt;
    } else {
      remove.push('expiresAt');
    }
    if (session.refreshExpiresAt !== undefined && session.refreshToken !== undefined) {
      set.push('refreshExpiresAt = :rexp');
      values[':rexp'] = session.refreshExpiresAt;
    } else {
      remove.push('refreshExpiresAt');
    }
    // The mode follows from the lifetime the session is stored with (its tokens' expires_in at a
    // login or a hand-over), and each grant decides it again from the lifetime the provider issued.
    // A keepAlive provider's session is on demand from the start, due when its grant would die.
    const plan = refreshSchedule(session, Math.floor(now / 1000), this.policy, session.provider);
    this.schedule(session, session.refreshToken !== undefined ? plan.dueAt : undefined, set, remove, values);
    set.push('refreshMode = :mode');
    values[':mode'] = plan.mode;
    const { Attributes } = await this.doc.send(
      new UpdateCommand({
        TableName: this.tableName,
        Key: keyOf(session),
        UpdateExpression: `SET ${set.join(', ')} REMOVE ${remove.join(', ')}`,
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
        ReturnValues: 'ALL_NEW',
      }),
    );
    const record = toRecord(Attributes as Item);
    return { created: record.version === 1, record };
  }

  /**
   * The index entry: a refreshable session with a due time is in the sparse `byExpiry` index (shard +
   * due time); any other session is out of it, and costs the sweep nothing.
   */
  private schedule(
    key: SessionKey,
    dueAt: number | undefined,
    set: string[],
    remove: string[],
    values: Record<string, unknown>,
  ): void {
    if (dueAt === undefined) {
      remove.push(TABLE.shardAttribute, TABLE.dueAttribute);
      return;
    }
    set.push(`${TABLE.shardAttribute} = :shard`, `${TABLE.dueAttribute} = :due`);
    values[':shard'] = shardOf(key, this.shardCount);
    values[':due'] = dueAt;
  }

  async deleteSession(key: SessionKey): Promise<SessionRecord | undefined> {
    const { Attributes } = await this.doc.send(
      new DeleteCommand({ TableName: this.tableName, Key: keyOf(key), ReturnValues: 'ALL_OLD' }),
    );
    return Attributes ? toRecord(Attributes) : undefined;
  }

  async acquireLease(
    key: SessionKey,
    owner: string,
    condition: LeaseCondition,
    now: number,
    leaseUntil: number,
    liftBackoff?: { from: number; to: number },
  ): Promise<SessionRecord | undefined> {
    const names: Record<string, string> = { '#status': 'status' };
    let lifted = '';
    if (liftBackoff) {
      lifted = ' OR lastError.#at BETWEEN :liftFrom AND :liftTo';
      names['#at'] = 'at';
    }
    const values: Record<string, unknown> = {
      ':active': 'active',
      ':now': now,
      ':owner': owner,
      ':until': leaseUntil,
    };
    if (liftBackoff) {
      values[':liftFrom'] = liftBackoff.from;
      values[':liftTo'] = liftBackoff.to;
    }
    let extra: string;
    switch (condition.kind) {
      case 'sweep':
        extra = `${TABLE.dueAttribute} <= :bound`;
        values[':bound'] = condition.dueBy;
        if (condition.seenDueAt !== undefined) {
          extra += ` AND ${TABLE.dueAttribute} = :seen`;
          values[':seen'] = condition.seenDueAt;
        }
        if (condition.sweepStartedAt !== undefined) {
          extra += ' AND (attribute_not_exists(refreshedAt) OR refreshedAt < :sweepStart)';
          values[':sweepStart'] = condition.sweepStartedAt;
        }
        break;
      case 'onDemand':
        extra = 'expiresAt < :bound';
        values[':bound'] = condition.minValidUntil;
        break;
      case 'forced':
        extra = 'version = :version';
        values[':version'] = condition.version;
        break;
    }
    const item = await this.conditionalUpdate({
      Key: keyOf(key),
      UpdateExpression: 'SET leaseOwner = :owner, leaseUntil = :until',
      ConditionExpression:
        '#status = :active AND attribute_exists(refreshToken)' +
        ' AND (attribute_not_exists(leaseUntil) OR leaseUntil < :now)' +
        ` AND (attribute_not_exists(nextAttemptAt) OR nextAttemptAt <= :now${lifted})` +
        ` AND ${extra}`,
      ExpressionAttributeNames: names,
      ExpressionAttributeValues: values,
      ReturnValues: 'ALL_NEW',
    });
    return item ? toRecord(item) : undefined;
  }

  async commitRefresh(
    key: SessionKey,
    owner: string,
    tokens: CommittedTokens,
    now: number,
  ): Promise<SessionRecord | undefined> {
    // Seal before the write so nothing can fail between the grant's answer and the commit.
    const values: Record<string, unknown> = {
      ':owner': owner,
      ':rt': await this.seal(key, 'refreshToken', tokens.refreshToken),
      ':one': 1,
      ':zero': 0,
      ':now': now,
    };
    const set = [
      'refreshToken = :rt',
      'version = version + :one',
      'refreshedAt = :now',
      'failureCount = :zero',
    ];
    const remove = ['leaseOwner', 'leaseUntil', 'nextAttemptAt', 'lastError'];
    if (tokens.accessToken !== undefined) {
      set.push('accessToken = :at', 'tokenType = :tt', 'issuedAt = :now');
      values[':at'] = await this.seal(key, 'accessToken', tokens.accessToken);
      values[':tt'] = tokens.tokenType;
    }
    if (tokens.scope !== undefined) {
      set.push('#scope = :scope');
      values[':scope'] = tokens.scope;
    }
    if (tokens.expiresAt !== undefined) {
      set.push('expiresAt = :exp');
      values[':exp'] = tokens.expiresAt;
    } else {
      // No lifetime given: no invented expiry (swept only for a known refresh-token expiry).
      remove.push('expiresAt');
    }
    if (tokens.refreshExpiresAt !== undefined) {
      set.push('refreshExpiresAt = :rexp');
      values[':rexp'] = tokens.refreshExpiresAt;
    } else {
      remove.push('refreshExpiresAt');
    }
    const plan = refreshSchedule(tokens, Math.floor(now / 1000), this.policy, tokens.provider);
    this.schedule(key, tokens.dueAt ?? plan.dueAt, set, remove, values);
    if (tokens.accessToken !== undefined) {
      set.push('refreshMode = :mode');
      values[':mode'] = plan.mode;
    }
    const item = await this.conditionalUpdate({
      Key: keyOf(key),
      UpdateExpression: `SET ${set.join(', ')} REMOVE ${remove.join(', ')}`,
      ConditionExpression: 'leaseOwner = :owner',
      ExpressionAttributeNames: tokens.scope !== undefined ? { '#scope': 'scope' } : undefined,
      ExpressionAttributeValues: values,
      ReturnValues: 'ALL_NEW',
    });
    return item ? toRecord(item) : undefined;
  }

  async recordFailure(
    key: SessionKey,
    owner: string,
    failure: { kind: FailureKind; error: LastError; nextAttemptAt?: number },
  ): Promise<boolean> {
    const values: Record<string, unknown> = {
      ':owner': owner,
      ':zero': 0,
      ':one': 1,
      ':err': failure.error,
    };
    const set = ['failureCount = if_not_exists(failureCount, :zero) + :one', 'lastError = :err'];
    const remove = ['leaseOwner', 'leaseUntil'];
    const names: Record<string, string> = {};
    if (failure.kind === 'reauthorization_required') {
      set.push('#status = :reauth');
      names['#status'] = 'status';
      values[':reauth'] = 'reauthorization_required';
      remove.push(TABLE.shardAttribute, TABLE.dueAttribute, 'nextAttemptAt');
    } else if (failure.nextAttemptAt !== undefined) {
      set.push('nextAttemptAt = :next');
      values[':next'] = failure.nextAttemptAt;
    }
    const written = await this.conditionalUpdate({
      Key: keyOf(key),
      UpdateExpression: `SET ${set.join(', ')} REMOVE ${remove.join(', ')}`,
      ConditionExpression: 'leaseOwner = :owner',
      ExpressionAttributeNames: Object.keys(names).length > 0 ? names : undefined,
      ExpressionAttributeValues: values,
    });
    return written !== undefined;
  }

  async releaseLease(key: SessionKey, owner: string): Promise<void> {
    await this.conditionalUpdate({
      Key: keyOf(key),
      UpdateExpression: 'REMOVE leaseOwner, leaseUntil',
      ConditionExpression: 'leaseOwner = :owner',
      ExpressionAttributeValues: { ':owner': owner },
    });
  }

  async queryDue(
    shard: number,
    dueBy: number,
    cursor?: Record<string, unknown>,
    from?: number,
  ): Promise<{ keys: DueKey[]; cursor?: Record<string, unknown> }> {
    const page = await this.doc.send(
      new QueryCommand({
        TableName: this.tableName,
        IndexName: TABLE.expiryIndex,
        KeyConditionExpression:
          from === undefined
            ? '#shard = :shard AND #due <= :dueBy'
            : '#shard = :shard AND #due BETWEEN :from AND :dueBy',
        ExpressionAttributeNames: { '#shard': TABLE.shardAttribute, '#due': TABLE.dueAttribute },
        ExpressionAttributeValues: {
          ':shard': shard,
          ':dueBy': dueBy,
          ...(from === undefined ? {} : { ':from': from }),
        },
        ExclusiveStartKey: cursor,
      }),
    );
    const keys: DueKey[] = [];
    for (const item of page.Items ?? []) {
      const pk = item[TABLE.partitionKey];
      const sk = item[TABLE.sortKey];
      if (typeof pk !== 'string' || typeof sk !== 'string') continue;
      if (!pk.startsWith('USER#') || !sk.startsWith('SESSION#')) continue;
      keys.push({
        userId: pk.slice('USER#'.length),
        providerId: sk.slice('SESSION#'.length),
        dueAt: item[TABLE.dueAttribute] as number,
      });
    }
    return { keys, cursor: page.LastEvaluatedKey };
  }

  /** The provider item's MAC check. */
  private async checkProvider(providerId: string, item: Item, listing: ProviderListing): Promise<MacCheck> {
    return this.mac.verify(
      providerMacMessage(providerId, listing, item.clientSecret),
      item[PROVIDER_MAC_ATTRIBUTE],
    );
  }

  private async readProviderItem(providerId: string): Promise<Item | undefined> {
    const { Item } = await this.doc.send(
      new GetCommand({
        TableName: this.tableName,
        Key: { [TABLE.partitionKey]: providerPk(providerId), [TABLE.sortKey]: PROVIDER_SK },
        ConsistentRead: true,
      }),
    );
    return Item;
  }

  async inspectProvider(providerId: string): Promise<ProviderListing | undefined> {
    const Item = await this.readProviderItem(providerId);
    if (!Item) return undefined;
    // The id is the item's key, which the MAC binds, not its providerId attribute, which it does not.
    const listing = { ...toProviderListing(Item), providerId };
    const check = await this.checkProvider(providerId, Item, listing);
    return check.ok ? listing : { ...listing, integrityProblem: integrityProblem(check) };
  }

  async getProvider(providerId: string): Promise<ProviderConfig | undefined> {
    const Item = await this.readProviderItem(providerId);
    if (!Item) return undefined;
    // Checked before anything is decrypted or returned: nothing from an altered item reaches a request.
    const check = await this.checkProvider(providerId, Item, toProviderListing(Item));
    if (!check.ok) {
      // A MAC under a key the keyring no longer holds cannot be checked: the key is missing (as for a
      // sealed value), not the settings proven altered. Either way nothing is opened or used.
      if (check.reason === 'unknown_key') throw new KeyUnavailableError(integrityProblem(check));
      throw new ProviderIntegrityError(providerId, integrityProblem(check));
    }
    const clientSecret = isSealed(Item.clientSecret)
      ? await this.cipher.decrypt(
          Item.clientSecret,
          aadFor(providerPk(providerId), PROVIDER_SK, 'clientSecret'),
        )
      : undefined;
    return { ...toProviderListing(Item), providerId, clientSecret };
  }

  async putProvider(provider: ProviderConfig): Promise<{ created: boolean; createdAt: number }> {
    // One UpdateItem that replaces the configuration (what is not given is removed, and so is a
    // rejection flag from the configuration it replaces) but keeps the first createdAt.
    const pk = providerPk(provider.providerId);
    const names: Record<string, string> = { '#type': 'type' };
    const values: Record<string, unknown> = {
      ':type': 'provider',
      ':providerId': provider.providerId,
      ':clientId': provider.clientId,
      ':method': provider.clientAuthMethod,
      ':createdAt': provider.createdAt,
      ':updatedAt': provider.updatedAt,
    };
    const set = [
      '#type = :type',
      'providerId = :providerId',
      'clientId = :clientId',
      'clientAuthMethod = :method',
      'createdAt = if_not_exists(createdAt, :createdAt)',
      'updatedAt = :updatedAt',
    ];
    // A new configuration (a fixed client secret, say) starts with a closed circuit.
    const remove = ['clientRejectedAt', ...CIRCUIT_ATTRIBUTES];
    for (const field of PROVIDER_OPTIONAL_FIELDS) {
      names[`#${field}`] = field;
      if (provider[field] === undefined) remove.push(`#${field}`);
      else {
        set.push(`#${field} = :${field}`);
        values[`:${field}`] = provider[field];
      }
    }
    for (const field of ['scopesSupported', 'issParameterSupported'] as const) {
      if (provider[field] === undefined) remove.push(field);
      else {
        set.push(`${field} = :${field}`);
        values[`:${field}`] = provider[field];
      }
    }
    let sealedSecret: Uint8Array | undefined;
    if (provider.clientSecret === undefined) remove.push('clientSecret');
    else {
      set.push('clientSecret = :secret');
      sealedSecret = await this.cipher.encrypt(
        provider.clientSecret,
        aadFor(pk, PROVIDER_SK, 'clientSecret'),
      );
      values[':secret'] = sealedSecret;
    }
    // The MAC over the settings as they will be read back (the same parsing as every read).
    const asRead = toProviderListing({
      ...Object.fromEntries(PROVIDER_MAC_FIELDS.map((f) => [f, provider[f]])),
      providerId: provider.providerId,
    });
    set.push(`${PROVIDER_MAC_ATTRIBUTE} = :mac`);
    values[':mac'] = await this.mac.sign(providerMacMessage(provider.providerId, asRead, sealedSecret));
    const { Attributes } = await this.doc.send(
      new UpdateCommand({
        TableName: this.tableName,
        Key: { [TABLE.partitionKey]: pk, [TABLE.sortKey]: PROVIDER_SK },
        UpdateExpression: `SET ${set.join(', ')} REMOVE ${remove.join(', ')}`,
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: values,
        ReturnValues: 'UPDATED_OLD',
      }),
    );
    const previousCreatedAt = Attributes?.createdAt;
    return typeof previousCreatedAt === 'number'
      ? { created: false, createdAt: previousCreatedAt }
      : { created: true, createdAt: provider.createdAt };
  }

  async searchSessions(filter: SessionFilter): Promise<SessionPage> {
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = {};
    const conditions: string[] = [];
    if (filter.providerId !== undefined) {
      conditions.push('providerId = :providerId');
      values[':providerId'] = filter.providerId;
    }
    if (filter.status !== undefined) {
      names['#status'] = 'status';
      conditions.push('#status = :status');
      values[':status'] = filter.status;
    }
    const page = await this.scanPage('session', { conditions, names, values }, filter.limit, filter.cursor);
    return { records: page.items.map(toRecord), cursor: page.cursor };
  }

  async listProviders(page: { limit: number; cursor?: Record<string, string> }): Promise<ProviderPage> {
    const found = await this.scanPage(
      'provider',
      { conditions: [], names: {}, values: {} },
      page.limit,
      page.cursor,
    );
    const providers = await Promise.all(
      found.items.map(async (item) => {
        const id = String(item[TABLE.partitionKey]).slice('PROVIDER#'.length);
        const listing = { ...toProviderListing(item), providerId: id };
        const check = await this.checkProvider(id, item, listing);
        return check.ok ? listing : { ...listing, integrityProblem: integrityProblem(check) };
      }),
    );
    return { providers, cursor: found.cursor };
  }

  /**
   * One bounded page of the items of one type: a Scan of at most SCAN_MAX_PAGES pages of SCAN_PAGE
   * items, stopping at `limit` matches. The cursor is the key of the last item returned (or the last
   * key read), so nothing is skipped or repeated.
   */
  private async scanPage(
    type: 'session' | 'provider',
    filter: { conditions: string[]; names: Record<string, string>; values: Record<string, unknown> },
    limit: number,
    start: Record<string, string> | undefined,
  ): Promise<{ items: Item[]; cursor?: Record<string, string> }> {
    const found: Item[] = [];
    let cursor: Record<string, unknown> | undefined = start;
    for (let page = 0; page < SCAN_MAX_PAGES && found.length < limit; page++) {
      const result = await this.doc.send(
        new ScanCommand({
          TableName: this.tableName,
          FilterExpression: ['#type = :type', ...filter.conditions].join(' AND '),
          ExpressionAttributeNames: { '#type': 'type', ...filter.names },
          ExpressionAttributeValues: { ':type': type, ...filter.values },
          ExclusiveStartKey: cursor,
          Limit: SCAN_PAGE,
        }),
      );
      const items = result.Items ?? [];
      for (const [i, item] of items.entries()) {
        if (found.length === limit) {
          // Full: continue after the last item taken, so nothing is skipped or repeated.
          return { items: found, cursor: keyCursor(items[i - 1] as Item) };
        }
        found.push(item);
      }
      cursor = result.LastEvaluatedKey;
      if (!cursor) return { items: found };
    }
    return { items: found, cursor: cursor ? keyCursor(cursor) : undefined };
  }

  async startSweep(sweep: {
    sweepId: string;
    startedAt: number;
    summary: Record<string, number>;
  }): Promise<void> {
    // UpdateItems, not a PutItem: the refresh functions are granted GetItem, Query and UpdateItem only.
    await this.doc
      .send(
        new UpdateCommand({
          TableName: this.tableName,
          Key: { [TABLE.partitionKey]: SWEEP_KEY.pk, [TABLE.sortKey]: SWEEP_KEY.sk },
          UpdateExpression:
            'SET #type = :type, sweepId = :id, summary = :summary, startedAt = :startedAt REMOVE finishedAt',
          // A late dispatch (a retry of an older one) never replaces a newer sweep's record.
          ConditionExpression: 'attribute_not_exists(startedAt) OR startedAt <= :startedAt',
          ExpressionAttributeNames: { '#type': 'type' },
          ExpressionAttributeValues: {
            ':type': 'sweep',
            ':id': sweep.sweepId,
            ':summary': sweep.summary,
            ':startedAt': sweep.startedAt,
          },
        }),
      )
      .catch((err: unknown) => {
        if ((err as { name?: string }).name !== 'ConditionalCheckFailedException') throw err;
      });
    await this.doc.send(
      new UpdateCommand({
        TableName: this.tableName,
        Key: sweepHistoryKey(sweep.startedAt, sweep.sweepId),
        UpdateExpression:
          'SET #type = :type, sweepId = :id, summary = :summary, startedAt = :startedAt, #ttl = :ttl',
        ExpressionAttributeNames: { '#type': 'type', '#ttl': TABLE.ttlAttribute },
        ExpressionAttributeValues: {
          ':type': 'sweep',
          ':id': sweep.sweepId,
          ':summary': sweep.summary,
          ':startedAt': sweep.startedAt,
          ':ttl': Math.floor(sweep.startedAt / 1000) + SWEEP_HISTORY_SECONDS,
        },
      }),
    );
  }

  async addToSweep(
    sweepId: string,
    counts: Record<string, number>,
    finishedAt: number,
    sweepStartedAt?: number,
  ): Promise<void> {
    const names: Record<string, string> = {};
    const values: Record<string, unknown> = { ':id': sweepId, ':finishedAt': finishedAt };
    const add: string[] = [];
    Object.entries(counts).forEach(([field, n], i) => {
      names[`#c${i}`] = field;
      values[`:c${i}`] = n;
      add.push(`summary.#c${i} :c${i}`);
    });
    await this.conditionalUpdate({
      Key: { [TABLE.partitionKey]: SWEEP_KEY.pk, [TABLE.sortKey]: SWEEP_KEY.sk },
      UpdateExpression: `SET finishedAt = :finishedAt${add.length > 0 ? ` ADD ${add.join(', ')}` : ''}`,
      ConditionExpression:
        'sweepId = :id AND (attribute_not_exists(finishedAt) OR finishedAt <= :finishedAt)',
      ExpressionAttributeNames: add.length > 0 ? names : undefined,
      ExpressionAttributeValues: values,
    });
    if (sweepStartedAt === undefined) return;
    // The sweep's own history item: every slice's counts, whatever order they finish in.
    await this.conditionalUpdate({
      Key: sweepHistoryKey(sweepStartedAt, sweepId),
      UpdateExpression: `SET finishedAt = :finishedAt${add.length > 0 ? ` ADD ${add.join(', ')}` : ''}`,
      ConditionExpression: 'sweepId = :id',
      ExpressionAttributeNames: add.length > 0 ? names : undefined,
      ExpressionAttributeValues: values,
    });
  }

  async listSweeps(since: number): Promise<StoredSweep[]> {
    const sweeps: StoredSweep[] = [];
    let cursor: Record<string, unknown> | undefined;
    do {
      const page = await this.doc.send(
        new QueryCommand({
          TableName: this.tableName,
          KeyConditionExpression: '#pk = :pk AND #sk >= :from',
          ExpressionAttributeNames: { '#pk': TABLE.partitionKey, '#sk': TABLE.sortKey },
          ExpressionAttributeValues: {
            ':pk': SWEEP_HISTORY_PK,
            ':from': String(Math.max(0, since)).padStart(15, '0'),
          },
          ExclusiveStartKey: cursor,
        }),
      );
      for (const item of page.Items ?? []) sweeps.push(storedSweep(item));
      cursor = page.LastEvaluatedKey;
    } while (cursor);
    return sweeps;
  }

  async getLatestSweep(): Promise<StoredSweep | undefined> {
    const { Item } = await this.doc.send(
      new GetCommand({
        TableName: this.tableName,
        Key: { [TABLE.partitionKey]: SWEEP_KEY.pk, [TABLE.sortKey]: SWEEP_KEY.sk },
      }),
    );
    return Item ? storedSweep(Item) : undefined;
  }

  async clearProviderRejected(providerId: string): Promise<void> {
    await this.updateProvider(providerId, 'REMOVE clientRejectedAt');
  }

  async flagProviderRejected(providerId: string, at: number): Promise<void> {
    await this.updateProvider(providerId, 'SET clientRejectedAt = :at', { ':at': at });
  }

  /** Updates an existing provider item; a provider deleted meanwhile is left alone. */
  private async updateProvider(
    providerId: string,
    expression: string,
    values?: Record<string, unknown>,
  ): Promise<void> {
    await this.conditionalUpdate({
      Key: { [TABLE.partitionKey]: providerPk(providerId), [TABLE.sortKey]: PROVIDER_SK },
      UpdateExpression: expression,
      ConditionExpression: 'attribute_exists(#pk)',
      ExpressionAttributeNames: { '#pk': TABLE.partitionKey },
      ExpressionAttributeValues: values,
    });
  }

  async getCircuit(providerId: string): Promise<CircuitRecord | undefined> {
    const { Item } = await this.doc.send(
      new GetCommand({
        TableName: this.tableName,
        Key: { [TABLE.partitionKey]: providerPk(providerId), [TABLE.sortKey]: PROVIDER_SK },
        ConsistentRead: true,
        ProjectionExpression: ['#pk', ...CIRCUIT_ATTRIBUTES].join(', '),
        ExpressionAttributeNames: { '#pk': TABLE.partitionKey },
      }),
    );
    return Item ? circuitOf(Item) : undefined;
  }

  async recordCircuitFailure(
    providerId: string,
    error: LastError,
    newSession = true,
  ): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(providerId, {
      UpdateExpression:
        'SET circuitFailures = if_not_exists(circuitFailures, :zero) + :one, circuitLastError = :err,' +
        ' circuitRunFrom = if_not_exists(circuitRunFrom, :at),' +
        ' circuitSessions = if_not_exists(circuitSessions, :zero) + :new',
      ExpressionAttributeValues: {
        ':zero': 0,
        ':one': 1,
        ':err': error,
        ':at': error.at,
        ':new': newSession ? 1 : 0,
      },
      ReturnValues: 'ALL_NEW',
    });
  }

  async openCircuit(
    providerId: string,
    now: number,
    nextProbeAt: number,
    minFailures: number,
  ): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(providerId, {
      UpdateExpression:
        'SET circuitState = :open, circuitSince = :now, circuitNextProbeAt = :next, circuitOpenings = :one' +
        ' REMOVE circuitProbeOwner, circuitProbeUntil, circuitHeldBack, circuitHeldBackRun, circuitHeldBackSweep',
      ConditionExpression:
        '(attribute_not_exists(circuitState) OR circuitState = :closed) AND circuitFailures >= :min',
      ExpressionAttributeValues: {
        ':open': 'open',
        ':closed': 'closed',
        ':now': now,
        ':next': nextProbeAt,
        ':one': 1,
        ':min': minFailures,
      },
      ReturnValues: 'ALL_NEW',
    });
  }

  async reopenCircuit(
    providerId: string,
    owner: string,
    error: LastError,
    nextProbeAt: number,
    newSession = true,
  ): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(providerId, {
      UpdateExpression:
        'SET circuitState = :open, circuitNextProbeAt = :next, circuitLastError = :err,' +
        ' circuitOpenings = if_not_exists(circuitOpenings, :zero) + :one,' +
        ' circuitFailures = if_not_exists(circuitFailures, :zero) + :one,' +
        ' circuitSessions = if_not_exists(circuitSessions, :zero) + :new' +
        ' REMOVE circuitProbeOwner, circuitProbeUntil',
      ConditionExpression: 'circuitProbeOwner = :owner',
      ExpressionAttributeValues: {
        ':open': 'open',
        ':next': nextProbeAt,
        ':err': error,
        ':zero': 0,
        ':one': 1,
        ':owner': owner,
        ':new': newSession ? 1 : 0,
      },
      ReturnValues: 'ALL_NEW',
    });
  }

  async claimCircuitProbe(
    providerId: string,
    owner: string,
    now: number,
    until: number,
  ): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(providerId, {
      UpdateExpression: 'SET circuitState = :half, circuitProbeOwner = :owner, circuitProbeUntil = :until',
      ConditionExpression:
        'circuitState IN (:open, :half) AND circuitNextProbeAt <= :now' +
        ' AND (attribute_not_exists(circuitProbeUntil) OR circuitProbeUntil < :now)',
      ExpressionAttributeValues: {
        ':open': 'open',
        ':half': 'half_open',
        ':owner': owner,
        ':now': now,
        ':until': until,
      },
      ReturnValues: 'ALL_NEW',
    });
  }

  async releaseCircuitProbe(providerId: string, owner: string): Promise<void> {
    await this.circuitUpdate(providerId, {
      UpdateExpression: 'REMOVE circuitProbeOwner, circuitProbeUntil',
      ConditionExpression: 'circuitProbeOwner = :owner',
      ExpressionAttributeValues: { ':owner': owner },
    });
  }

  async closeCircuit(providerId: string, now: number, sentAt: number): Promise<CircuitRecord | undefined> {
    return this.circuitUpdate(providerId, {
      UpdateExpression:
        'SET circuitSince = :now, circuitFailures = :zero, circuitOutageTo = :now,' +
        ' circuitOutageFrom = if_not_exists(circuitRunFrom, circuitSince)' +
        ' REMOVE circuitState, circuitNextProbeAt, circuitProbeOwner, circuitProbeUntil, circuitRunFrom,' +
        ' circuitOpenings, circuitHeldBack, circuitHeldBackRun, circuitHeldBackSweep, circuitSessions',
      ConditionExpression: 'circuitState IN (:open, :half) AND circuitSince <= :sentAt',
      ExpressionAttributeValues: {
        ':open': 'open',
        ':half': 'half_open',
        ':now': now,
        ':zero': 0,
        ':sentAt': sentAt,
      },
      ReturnValues: 'ALL_OLD',
    });
  }

  async resetCircuitFailures(providerId: string): Promise<void> {
    await this.circuitUpdate(providerId, {
      UpdateExpression: 'SET circuitFailures = :zero REMOVE circuitRunFrom, circuitSessions',
      ConditionExpression: 'circuitFailures > :zero AND attribute_not_exists(circuitState)',
      ExpressionAttributeValues: { ':zero': 0 },
    });
  }

  async noteCircuitHeldBack(providerId: string, sessions: number, sweepId: string): Promise<void> {
    const open = { ':open': 'open', ':half': 'half_open' };
    const isOpen = 'circuitState IN (:open, :half)';
    // Three conditional writes, no read: add to this sweep's run; else fold the previous sweep's run
    // into the largest so far and start this sweep's. Two slices starting the same run race safely:
    // the loser's start fails its condition and it adds on the next turn.
    for (let attempt = 0; attempt < 3; attempt++) {
      const added = await this.circuitUpdate(providerId, {
        UpdateExpression: 'ADD circuitHeldBackRun :n',
        ConditionExpression: `${isOpen} AND circuitHeldBackSweep = :sweep`,
        ExpressionAttributeValues: { ...open, ':n': sessions, ':sweep': sweepId },
      });
      if (added) return;
      await this.circuitUpdate(providerId, {
        UpdateExpression: 'SET circuitHeldBack = circuitHeldBackRun',
        ConditionExpression:
          `${isOpen} AND attribute_exists(circuitHeldBackRun) AND ` +
          '(attribute_not_exists(circuitHeldBack) OR circuitHeldBack < circuitHeldBackRun)',
        ExpressionAttributeValues: open,
      });
      const started = await this.circuitUpdate(providerId, {
        UpdateExpression: 'SET circuitHeldBackSweep = :sweep, circuitHeldBackRun = :n',
        ConditionExpression: `${isOpen} AND (attribute_not_exists(circuitHeldBackSweep) OR circuitHeldBackSweep <> :sweep)`,
        ExpressionAttributeValues: { ...open, ':n': sessions, ':sweep': sweepId },
      });
      if (started) return;
      const now = await this.getCircuit(providerId);
      if (!now || now.state === 'closed') return;
    }
  }

  /** One conditional UpdateItem on an existing provider item; the circuit as returned, or undefined. */
  private async circuitUpdate(
    providerId: string,
    input: Omit<UpdateCommandInput, 'TableName' | 'Key'>,
  ): Promise<CircuitRecord | undefined> {
    const exists = 'attribute_exists(#pk)';
    const item = await this.conditionalUpdate({
      ...input,
      Key: { [TABLE.partitionKey]: providerPk(providerId), [TABLE.sortKey]: PROVIDER_SK },
      ConditionExpression: input.ConditionExpression ? `${exists} AND ${input.ConditionExpression}` : exists,
      ExpressionAttributeNames: { '#pk': TABLE.partitionKey },
    });
    return item ? circuitOf(item) : undefined;
  }
}
