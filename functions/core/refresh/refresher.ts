import { randomUUID } from 'node:crypto';
import { KeyUnavailableError, ProviderIntegrityError } from '../errors.js';
import { publishOrLog } from '../events.js';
import {
  type CircuitRecord,
  keyOnly,
  type ProviderConfig,
  refreshSettings,
  type SessionKey,
  sessionKeyString,
} from '../model.js';
import type { GrantFailure, GrantResult, OAuthClient } from '../oauth/client.js';
import {
  type Clock,
  type EventPublisher,
  type Logger,
  type Metrics,
  type Random,
  realSleep,
  type Sleep,
} from '../ports.js';
import type { LeaseCondition, SessionRecord, SessionStore } from '../store/store.js';
import type { Admission, ProviderCircuit } from './circuit.js';

/**
 * The refresh protocol every path uses: lease → grant → commit, and the classification of failures.
 * One call of `refresh` makes at most one grant request, and only while holding the lease.
 *
 * A grant is "in flight" from the moment it is handed to the HTTP client until it is settled: its
 * answer committed (or its failure recorded), or its life over with no answer. While a session has a
 * grant in flight in this process, this process never leases it again — whatever its clock says after
 * a pause — so it never presents that refresh token a second time; callers join the grant instead.
 * The request's life is the grant timeout, cut to the lease's end minus the commit reserve (and, where
 * the runtime stops when the caller is answered, to the caller's deadline minus the reserve).
 */

/** The longest pause between two commit attempts, and the time one attempt may take (SDK retries included). */
const COMMIT_RETRY_MAX_PAUSE_MS = 2_000;
const COMMIT_ATTEMPT_MS = 1_000;
/**
 * Commit attempts made whatever the clock says: after a pause the lease may look over while nobody
 * else took it, and the commit's condition (leaseOwner = this caller) still holds.
 */
const MIN_COMMIT_ATTEMPTS = 3;
export type RefreshOutcome =
  | { kind: 'refreshed'; record: SessionRecord; accessToken: string }
  /**
   * The provider answered 200 with a rotated refresh token but no usable access token: the refresh
   * token is committed (the grant lives on) and the session is left due, with no backoff penalty.
   */
  | { kind: 'partial'; record: SessionRecord }
  /** The lease condition did not hold: not due, leased by someone else, backing off, dead, or gone. */
  | { kind: 'refused' }
  | { kind: 'transient'; code: string; retryAfterSeconds: number }
  | { kind: 'client_rejected'; code: string; retryAfterSeconds: number }
  | { kind: 'reauthorization_required'; code: string }
  /**
   * The caller's deadline leaves no room for a whole grant and its commit: nothing was sent, and the
   * session carries no failure for it.
   */
  | { kind: 'no_time' }
  /** The grant succeeded but the lease had been taken over; the answer was not committed. */
  | { kind: 'lease_lost' }
  /**
   * The caller's wait ended before the provider answered; the grant stays open (this process keeps
   * the lease and commits the answer if it comes within the grant's life). Ask again after `retryAfterSeconds`.
   */
  | { kind: 'pending'; retryAfterSeconds: number }
  | { kind: 'key_unavailable'; retryAfterSeconds: number }
  /**
   * The provider's settings failed their MAC check: nothing was sent or decrypted, and the session
   * was not touched (no lease, no failure recorded).
   */
  | { kind: 'provider_integrity'; problem: string }
  /** The provider's circuit is open: no grant was sent. `probeInFlight`: its probe is being made now. */
  | { kind: 'circuit_open'; retryAfterSeconds: number; probeInFlight: boolean };

export interface BackoffPolicy {
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = { baseMs: 15_000, maxMs: 15 * 60_000 };

/** Exponential backoff with jitter: a delay in [½, 1] × min(max, base × 2^(failures)). */
export function backoffDelayMs(failureCount: number, policy: BackoffPolicy, random: Random): number {
  const ceiling = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(failureCount, 30));
  return Math.round(ceiling * (0.5 + random() * 0.5));
}

/** While the provider's circuit is open, the caller may come back at its next probe (if that is sooner). */
function atNextProbe<T extends { kind: string; retryAfterSeconds?: number }>(
  outcome: T,
  circuit: CircuitRecord | undefined,
  clock: Clock,
): T {
  if (outcome.retryAfterSeconds === undefined || !circuit || circuit.state === 'closed') return outcome;
  if (circuit.nextProbeAt === undefined) return outcome;
  const untilProbe = Math.max(1, Math.ceil((circuit.nextProbeAt - clock.now()) / 1000));
  return { ...outcome, retryAfterSeconds: Math.min(outcome.retryAfterSeconds, untilProbe) };
}

export interface ProviderLookup {
  get(providerId: string): Promise<ProviderConfig | undefined>;
  invalidate?(providerId: string): void;
}

export interface RefresherOptions {
  store: SessionStore;
  oauth: Pick<OAuthClient, 'refresh'>;
  providers: ProviderLookup;
  clock: Clock;
  logger: Logger;
  metrics: Metrics;
  events: EventPublisher;
  random: Random;
  leaseMs: number;
  /**
   * What one grant needs before a caller's deadline to be started: the shortest life a grant is sent
   * with (the HTTP timeout) plus the commit reserve.
   */
  grantReserveMs: number;
  /** The longest life of a grant request (TOKENKEEPER_GRANT_TIMEOUT_MS); default grantReserveMs − commitReserveMs. */
  grantTimeoutMs?: number;
  /** Time kept after a grant's life for its commit. Default 2 s. */
  commitReserveMs?: number;
  /**
   * The runtime keeps running after a caller is answered (the local stack's server): a caller may
   * stop waiting (`pending`) while its grant stays open. Without it (a Lambda, frozen once its handler
   * returns) a grant's life ends before the caller's deadline, so no request is left open.
   */
  keepsRunning?: boolean;
  backoff?: BackoffPolicy;
  /** The providers' circuits; without one every grant is admitted. */
  circuit?: ProviderCircuit;
  /** Identifies this process in lease owners (for diagnosis only). */
  instanceId?: string;
  /** Waits between commit retries; injected so a simulated or fake clock drives it. */
  sleep?: Sleep;
}

/** One grant this process has sent and not yet settled. */
interface InFlightGrant {
  settled: Promise<RefreshOutcome>;
  /** When the request's life ends (epoch ms). */
  endsAt: number;
}

export class Refresher {
  private readonly o: RefresherOptions;
  private readonly instanceId: string;
  private counter = 0;
  /** Grants sent and not yet settled, by session. */
  private readonly inFlight = new Map<string, InFlightGrant>();

  constructor(options: RefresherOptions) {
    this.o = options;
    this.instanceId = options.instanceId ?? randomUUID();
  }

  private get commitReserveMs(): number {
    return this.o.commitReserveMs ?? 2_000;
  }

  private get grantTimeoutMs(): number {
    return this.o.grantTimeoutMs ?? this.o.grantReserveMs - this.commitReserveMs;
  }

  /** Whether this process has a grant in flight for the session (sent, not yet settled). */
  grantInFlight(key: SessionKey): boolean {
    return this.inFlight.has(sessionKeyString(key));
  }

  /** Resolves when every grant now in flight is settled (the local stack's shutdown, tests). */
  async settleAll(): Promise<void> {
    await Promise.allSettled([...this.inFlight.values()].map((g) => g.settled));
  }

  /**
   * `grantDone`, when given, is called as soon as the grant's answer is in (before the commit), or
   * when no grant will be made. `grantSlot`, when given, is acquired after the lease, right before the
   * grant (with the provider's own slot), and released at `grantDone`: the sweep passes its pool's slot,
   * so neither the lease nor the commit of one session holds a slot another session's grant could use.
   */
  async refresh(
    caller: SessionKey,
    condition: LeaseCondition,
    options: {
      grantDone?: () => void;
      /** The caller's deadline: where the runtime stops after answering, the grant's life ends before it. */
      deadline?: number;
      /** Where the runtime keeps running: when the caller stops waiting (default: the deadline). */
      waitUntil?: number;
      /** Where the runtime stops: the latest end of the grant's life plus commit (default: the deadline). */
      lifeBy?: number;
      grantSlot?: () => Promise<() => void>;
    } = {},
  ): Promise<RefreshOutcome> {
    const key = keyOnly(caller);
    const joined = this.inFlight.get(sessionKeyString(key));
    if (joined) {
      // This process has the session's refresh token in flight: never lease it again; join the grant.
      // The sweep moves on (the grant's own caller commits it).
      options.grantDone?.();
      if (condition.kind === 'sweep') return { kind: 'refused' };
      return this.waitFor(joined, options.waitUntil ?? options.deadline);
    }
    // A grant is started only when its shortest life and the commit fit before the deadline: a grant
    // cut off after the provider rotated would lose the session. Where the runtime keeps running, the
    // deadline bounds only the caller's wait: a caller with a wait of its own (a token call) may start
    // a grant until its wait ends; one without (the sweep) only with the reserve left before its deadline.
    const lifeBy = options.lifeBy ?? options.deadline;
    const startBy = this.o.keepsRunning
      ? options.waitUntil === undefined
        ? options.deadline
        : undefined
      : lifeBy;
    const now = this.o.clock.now();
    if (
      (startBy !== undefined && startBy - now < this.o.grantReserveMs) ||
      (options.waitUntil !== undefined && options.waitUntil <= now)
    ) {
      options.grantDone?.();
      return { kind: 'no_time' };
    }
    // The provider is read, and its settings checked, before anything else: an altered provider gets
    // no lease, no decryption, no probe and no request, and leaves the session as it was.
    let provider: ProviderConfig | KeyUnavailableError | undefined;
    try {
      provider = await this.o.providers.get(key.providerId);
    } catch (err) {
      if (err instanceof ProviderIntegrityError) {
        options.grantDone?.();
        this.o.metrics.add('ProviderIntegrityFailed', 'Count', 1);
        this.o.logger.error('provider settings failed their integrity check; nothing sent', {
          ...key,
          problem: err.problem,
        });
        return { kind: 'provider_integrity', problem: err.problem };
      }
      if (!(err instanceof KeyUnavailableError)) throw err;
      // Its MAC names a key the keyring lacks: after the lease, like a token sealed under such a key.
      provider = err;
    }
    const owner = `${this.instanceId}:${++this.counter}`;
    let admission: Admission = { kind: 'closed', providerId: key.providerId };
    // The circuit's gate, then the lease (an open circuit costs no write), then the slots: the caller's
    // (the sweep's pool) and the provider's, held from just before the grant until its answer is in.
    const held: (() => void)[] = [];
    const grantDone = () => {
      for (const free of held.splice(0)) free();
      options.grantDone?.();
    };
    // Set when the caller stops waiting with its grant still open: the grant's settling frees the rest.
    let detached = false;
    const slots = async () => {
      if (options.grantSlot) held.push(await options.grantSlot());
      if (this.o.circuit) held.push(await this.o.circuit.slot(key.providerId));
    };
    try {
      if (this.o.circuit) admission = await this.o.circuit.admit(key.providerId, owner);
      if (admission.kind === 'open') {
        const { retryAfterSeconds, probeInFlight } = admission;
        return { kind: 'circuit_open', retryAfterSeconds, probeInFlight };
      }
      return await this.leaseGrantCommit(key, provider, condition, owner, admission, {
        slots,
        grantDone,
        lifeBy: this.o.keepsRunning ? undefined : lifeBy,
        startBy,
        waitUntil: this.o.keepsRunning ? (options.waitUntil ?? options.deadline) : undefined,
        detach: (settled) => {
          detached = true;
          const done = async () => {
            grantDone();
            await this.o.circuit?.release(admission);
          };
          settled.then(done, done).catch(() => {});
        },
      });
    } finally {
      if (detached) options.grantDone?.();
      else {
        grantDone();
        // A probe that made no grant (lease refused, key unavailable, …) is given back.
        await this.o.circuit?.release(admission);
      }
    }
  }

  /**
   * Waits for a grant in flight, until `until` at most (then `pending`). The wait is on real time, not
   * the injected sleep: it only bounds how long a caller is kept, and a late timer here costs nothing.
   */
  private async waitFor(grant: InFlightGrant, until: number | undefined): Promise<RefreshOutcome> {
    if (until === undefined || !this.o.keepsRunning) return grant.settled;
    const left = until - this.o.clock.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<'timedOut'>((resolve) => {
      timer = setTimeout(() => resolve('timedOut'), Math.max(0, left));
    });
    try {
      const raced = await Promise.race([grant.settled, timedOut]);
      if (raced !== 'timedOut') return raced;
    } finally {
      clearTimeout(timer);
    }
    const untilEnd = Math.ceil((grant.endsAt + this.commitReserveMs - this.o.clock.now()) / 1000);
    return { kind: 'pending', retryAfterSeconds: Math.max(1, Math.min(5, untilEnd)) };
  }

  /** When a session backing off may be tried again (epoch ms); undefined when it is not backing off. */
  async backoffUntil(record: SessionRecord): Promise<number | undefined> {
    return this.o.circuit ? this.o.circuit.backoffUntil(record) : record.nextAttemptAt;
  }

  private async leaseGrantCommit(
    key: SessionKey,
    provider: ProviderConfig | KeyUnavailableError | undefined,
    condition: LeaseCondition,
    owner: string,
    admission: Exclude<Admission, { kind: 'open' }>,
    grant: {
      slots: () => Promise<void>;
      grantDone: () => void;
      /** The end of the grant's life plus commit, where the runtime stops after answering. */
      lifeBy: number | undefined;
      /** The grant is sent only with the grant reserve left before this. */
      startBy: number | undefined;
      /** When the caller stops waiting, where the runtime keeps running. */
      waitUntil: number | undefined;
      /** Called when the caller stops waiting with the grant still open. */
      detach: (settled: Promise<RefreshOutcome>) => void;
    },
  ): Promise<RefreshOutcome> {
    const { grantDone, lifeBy } = grant;
    const { store, clock, logger, circuit } = this.o;
    const leasedAt = clock.now();
    const lift = circuit?.liftWindow(await circuit.view(key.providerId), admission.kind);
    const leased = await store.acquireLease(key, owner, condition, leasedAt, leasedAt + this.o.leaseMs, lift);
    if (!leased) return { kind: 'refused' };

    let refreshToken: string;
    try {
      // Nothing is decrypted for a provider whose settings cannot be checked.
      if (provider instanceof KeyUnavailableError) throw provider;
      const revealed = await store.reveal(leased);
      refreshToken = revealed.refreshToken as string;
    } catch (err) {
      if (!(err instanceof KeyUnavailableError)) {
        await store.releaseLease(key, owner);
        throw err;
      }
      this.o.metrics.add('KeyUnavailable', 'Count', 1);
      logger.error('stored token cannot be decrypted; session kept', { ...key, reason: err.message });
      return this.failTransient(key, owner, leased, {
        class: 'transient',
        code: 'key_unavailable',
        description: err.message,
      }).then(
        (o): RefreshOutcome =>
          o.kind === 'transient' ? { kind: 'key_unavailable', retryAfterSeconds: o.retryAfterSeconds } : o,
      );
    }

    if (leased.refreshExpiresAt !== undefined && leased.refreshExpiresAt <= Math.floor(leasedAt / 1000)) {
      // The provider said when this refresh token dies; presenting it now would only earn invalid_grant.
      return this.grantIsDead(key, owner, {
        class: 'invalid_grant',
        code: 'refresh_token_expired',
        description: 'the refresh token passed the expiry the provider gave (refresh_expires_in)',
      });
    }

    if (!provider) {
      return this.failTransient(key, owner, leased, {
        class: 'transient',
        code: 'provider_not_found',
        description: 'the session refers to a provider that is not registered',
      });
    }

    // The request's life ends by the lease's end (and, where the runtime stops after answering, the
    // caller's deadline) minus the commit reserve. The grant starts only with at least its shortest
    // life left, however long the slots took (discovery, when due, is cut to fit before it).
    const endBy =
      Math.min(lifeBy ?? Number.POSITIVE_INFINITY, leasedAt + this.o.leaseMs) - this.commitReserveMs;
    const grantBy = Math.min(
      endBy - Math.min(this.grantTimeoutMs, this.o.grantReserveMs - this.commitReserveMs),
      (grant.startBy ?? Number.POSITIVE_INFINITY) - this.o.grantReserveMs,
    );
    let sentAt = 0;
    const id = sessionKeyString(key);
    let settle: Promise<RefreshOutcome>;
    try {
      await grant.slots();
      // A closed circuit may have opened while this caller waited for its slot: no grant then.
      const opened = admission.kind === 'closed' ? await circuit?.openedMeanwhile(key.providerId) : undefined;
      if (opened) {
        await store.releaseLease(key, owner);
        return {
          kind: 'circuit_open',
          retryAfterSeconds: opened.retryAfterSeconds,
          probeInFlight: opened.probeInFlight,
        };
      }
      sentAt = clock.now();
      const endsAt = Math.min(endBy, sentAt + this.grantTimeoutMs);
      const request = this.o.oauth.refresh(provider, refreshToken, { grantBy, endBy: endsAt });
      // The slots are freed as soon as the answer is in, and the answer handled in the same turn.
      const answered = async (): Promise<RefreshOutcome> => {
        let result: GrantResult;
        try {
          result = await request;
        } finally {
          grantDone();
        }
        return this.settle(key, owner, admission, leased, provider, refreshToken, leasedAt, sentAt, result);
      };
      settle = answered().finally(() => this.inFlight.delete(id));
      this.inFlight.set(id, { settled: settle, endsAt });
    } catch (err) {
      grantDone();
      throw err;
    }
    if (grant.waitUntil === undefined) return settle;
    const waited = await this.waitFor({ settled: settle, endsAt: endBy }, grant.waitUntil);
    if (waited.kind === 'pending') {
      grant.detach(settle);
      settle.catch((err: unknown) => {
        logger.error('late grant could not be settled', { ...key, error: (err as Error).name });
      });
    }
    return waited;
  }

  /** The grant's answer (or its absence): commit it, or record the failure. */
  private async settle(
    key: SessionKey,
    owner: string,
    admission: Exclude<Admission, { kind: 'open' }>,
    leased: SessionRecord,
    provider: ProviderConfig,
    refreshToken: string,
    leasedAt: number,
    sentAt: number,
    result: GrantResult,
  ): Promise<RefreshOutcome> {
    const { store, clock, logger, circuit } = this.o;
    if (result.ok) {
      const t = result.tokens;
      const sentSeconds = Math.floor(sentAt / 1000);
      const rotated = t.refreshToken !== undefined;
      // A 200 that carries a refresh token is committed whatever else it lacks: the provider rotated
      // before it answered. Without a usable access token the old one stays, marked due (no backoff).
      const committed = await this.commitWithRetry(
        key,
        owner,
        {
          accessToken: t.accessToken,
          refreshToken: t.refreshToken ?? refreshToken,
          tokenType: t.accessToken !== undefined ? t.tokenType : leased.tokenType,
          scope: t.scope ?? leased.scope,
          expiresAt:
            t.accessToken === undefined
              ? Math.min(leased.expiresAt ?? sentSeconds, sentSeconds)
              : t.expiresIn === undefined
                ? undefined
                : sentSeconds + t.expiresIn,
          dueAt: t.accessToken === undefined ? sentSeconds : undefined,
          // A new refresh token without a stated lifetime has an unknown one; a kept one keeps its own.
          refreshExpiresAt:
            t.refreshExpiresIn !== undefined
              ? sentSeconds + t.refreshExpiresIn
              : rotated
                ? undefined
                : leased.refreshExpiresAt,
          // The provider's policy as this grant found it: a changed policy reaches each session here.
          provider: refreshSettings(provider),
        },
        leasedAt + this.o.leaseMs,
      );
      if (!committed) {
        this.o.metrics.add('LeaseLost', 'Count', 1);
        logger.error('lease lost before commit; refreshed tokens discarded', {
          ...key,
          leaseMs: this.o.leaseMs,
          elapsedMs: clock.now() - leasedAt,
        });
        await circuit?.succeeded(admission, sentAt);
        return { kind: 'lease_lost' };
      }
      await circuit?.succeeded(admission, sentAt);
      if (provider.clientRejectedAt !== undefined) {
        // The provider accepts our client again: clear the operator-visible flag.
        await store.clearProviderRejected(key.providerId);
        this.o.providers.invalidate?.(key.providerId);
        logger.info('provider accepts our client again', { providerId: key.providerId });
      }
      if (leased.failureCount > 0) {
        await this.publish('SessionRecovered', {
          ...key,
          previousError: leased.lastError?.code ?? null,
          failureCount: leased.failureCount,
          at: new Date(clock.now()).toISOString(),
        });
      }
      logger.debug('session refreshed', {
        ...key,
        version: committed.version,
        expiresAt: committed.expiresAt ?? null,
        rotated,
      });
      if (t.accessToken === undefined) return { kind: 'partial', record: committed };
      return { kind: 'refreshed', record: committed, accessToken: t.accessToken };
    }

    const failure = result.failure;
    if (failure.code === 'grant_outcome_unknown') {
      // Each of these may have cost a session: the provider may have rotated with no answer reaching us.
      this.o.metrics.add('GrantOutcomeUnknown', 'Count', 1);
      logger.error('grant sent and no answer received; its outcome is unknown', {
        ...key,
        lifeMs: clock.now() - sentAt,
      });
    }
    if (failure.class === 'no_time') {
      // Discovery or the secret took the time the grant needed: nothing was sent, nothing to record.
      await store.releaseLease(key, owner);
      return { kind: 'no_time' };
    }
    // invalid_grant is an answer from a working provider; the rest count against its circuit.
    let circuitAfter: CircuitRecord | undefined;
    if (failure.class === 'invalid_grant') await circuit?.succeeded(admission, sentAt);
    else {
      const failedAt = leased.failureCount > 0 ? leased.lastError?.at : undefined;
      circuitAfter = await circuit?.failed(admission, failure, failedAt);
    }
    if (failure.class === 'invalid_grant') return this.grantIsDead(key, owner, failure);
    if (failure.class === 'client_rejected') {
      this.o.metrics.add('ProviderClientRejected', 'Count', 1);
      logger.error('provider rejected our client credentials; sessions kept', {
        providerId: key.providerId,
        code: failure.code,
      });
      await store.flagProviderRejected(key.providerId, clock.now());
      this.o.providers.invalidate?.(key.providerId);
      const outcome = atNextProbe(await this.failTransient(key, owner, leased, failure), circuitAfter, clock);
      if (outcome.kind !== 'transient') return outcome;
      return { kind: 'client_rejected', code: failure.code, retryAfterSeconds: outcome.retryAfterSeconds };
    }
    return atNextProbe(await this.failTransient(key, owner, leased, failure), circuitAfter, clock);
  }

  /** The grant is dead: the session becomes reauthorization_required (kept, out of the index). */
  private async grantIsDead(key: SessionKey, owner: string, failure: GrantFailure): Promise<RefreshOutcome> {
    const { store, clock, logger } = this.o;
    const error = { code: failure.code, description: failure.description, at: clock.now() };
    const written = await store.recordFailure(key, owner, { kind: 'reauthorization_required', error });
    if (!written) {
      // The lease was lost (the session was replaced by a new login, or taken over): the refresh
      // token we presented is no longer the session's, so its rejection says nothing about it.
      this.o.metrics.add('LeaseLost', 'Count', 1);
      logger.warn('grant refused after the lease was lost; session left as it is', { ...key });
      return { kind: 'lease_lost' };
    }
    logger.warn('grant is dead; session needs reauthorization', { ...key, code: failure.code });
    await this.publish('SessionReauthorizationRequired', {
      ...key,
      error: failure.code,
      errorDescription: failure.description,
      at: new Date(error.at).toISOString(),
    });
    return { kind: 'reauthorization_required', code: failure.code };
  }

  /**
   * The provider has already rotated the refresh token: losing this write would make the next grant a
   * reuse. Store faults (throttling, a dropped connection) are retried for as long as our lease lasts,
   * however many attempts that takes (each is itself retried by the SDK): under sustained throttling a
   * fixed count gave up with half the lease left. A refused condition (lease lost) is final and returns
   * undefined.
   */
  private async commitWithRetry(
    key: SessionKey,
    owner: string,
    tokens: Parameters<SessionStore['commitRefresh']>[2],
    leaseUntil: number,
  ): Promise<SessionRecord | undefined> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.o.store.commitRefresh(key, owner, tokens, this.o.clock.now());
      } catch (err) {
        const pause = Math.min(COMMIT_RETRY_MAX_PAUSE_MS, 100 * 2 ** attempt);
        const leaseLeft = this.o.clock.now() + pause + COMMIT_ATTEMPT_MS < leaseUntil;
        if (!leaseLeft && attempt >= MIN_COMMIT_ATTEMPTS) throw err;
        this.o.logger.warn('commit failed; retrying while the lease lasts', {
          ...key,
          attempt,
          error: (err as Error).name,
        });
        await (this.o.sleep ?? realSleep)(pause);
      }
    }
  }

  private async failTransient(
    key: SessionKey,
    owner: string,
    leased: SessionRecord,
    failure: GrantFailure,
  ): Promise<{ kind: 'transient'; code: string; retryAfterSeconds: number } | { kind: 'lease_lost' }> {
    const now = this.o.clock.now();
    const delayMs =
      failure.retryAfterSeconds !== undefined
        ? Math.max(1000, failure.retryAfterSeconds * 1000)
        : backoffDelayMs(leased.failureCount, this.o.backoff ?? DEFAULT_BACKOFF, this.o.random);
    const nextAttemptAt = now + delayMs;
    const written = await this.o.store.recordFailure(key, owner, {
      kind: 'transient',
      error: { code: failure.code, description: failure.description, at: now },
      nextAttemptAt,
    });
    if (!written) {
      // Someone else holds the session now (a new login, or a takeover after our lease ran out).
      this.o.metrics.add('LeaseLost', 'Count', 1);
      return { kind: 'lease_lost' };
    }
    this.o.logger.warn('refresh failed transiently; will retry', {
      ...key,
      code: failure.code,
      failureCount: leased.failureCount + 1,
      retryInMs: delayMs,
    });
    return { kind: 'transient', code: failure.code, retryAfterSeconds: Math.ceil(delayMs / 1000) };
  }

  private async publish(
    detailType: 'SessionReauthorizationRequired' | 'SessionRecovered',
    detail: Record<string, unknown>,
  ): Promise<void> {
    await publishOrLog(this.o.events, this.o.logger, { detailType, detail });
  }
}
