import { createHash } from 'node:crypto';
import {
  KeyUnavailableError,
  ReauthorizationRequiredError,
  RefreshUnavailableError,
  SessionNotFoundError,
} from '../errors.js';
import { keyOnly, type SessionKey, secondsLeft, sessionKeyString } from '../model.js';
import type { Clock, Logger, Metrics, Sleep } from '../ports.js';
import type { CallOptions, TokenRequest, TokenResult, TokenService } from '../services.js';
import type { LeaseCondition, SessionRecord, SessionStore } from '../store/store.js';
import type { Refresher, RefreshOutcome } from './refresher.js';

/**
 * Serves a valid access token: from the item when it is valid for the caller's `minValidity`,
 * otherwise through the refresh protocol. Concurrent calls for one session in this process share
 * one refresh; callers that find the session leased elsewhere wait for that refresh and re-read.
 */

export interface TokenServiceOptions {
  store: SessionStore;
  refresher: Pick<Refresher, 'refresh'> & Partial<Pick<Refresher, 'backoffUntil'>>;
  clock: Clock;
  sleep: Sleep;
  logger: Logger;
  metrics: Metrics;
  /** How long a caller waits for a refresh held elsewhere before answering 503. */
  maxWaitMs: number;
}

/** A guard against a livelock; waiting itself is bounded by `maxWaitMs`. */
const MAX_ROUNDS = 1_000;

/**
 * A token issued this recently is served to a non-forced call whatever its `minValidity`: a burst of
 * callers asking for more than the provider issues must not turn into a burst of grants.
 */
export const FRESH_TOKEN_MS = 5_000;

/** The `rejected` fingerprint of an access token: the first 16 hex characters of its SHA-256. */
export function tokenFingerprint(accessToken: string): string {
  return createHash('sha256').update(accessToken, 'utf8').digest('hex').slice(0, 16);
}

/**
 * `minValidity` is a wish: it is capped at half the lifetime the provider issued with the current
 * token, so a caller asking for more than the provider gives gets the freshest token, not a grant per
 * call. (An unknown lifetime leaves the wish as it is.)
 */
export function effectiveMinValidity(
  record: { expiresAt?: number; issuedAt?: number },
  minValidity: number,
): number {
  if (record.expiresAt === undefined || record.issuedAt === undefined) return minValidity;
  const lifetime = record.expiresAt - Math.floor(record.issuedAt / 1000);
  return lifetime > 0 ? Math.min(minValidity, Math.floor(lifetime / 2)) : minValidity;
}

export class DefaultTokenService implements TokenService {
  private readonly o: TokenServiceOptions;
  private readonly inflight = new Map<string, Promise<RefreshOutcome>>();
  private readonly reads = new Map<string, Promise<SessionRecord | undefined>>();

  constructor(options: TokenServiceOptions) {
    this.o = options;
  }

  async getToken(caller: SessionKey, request: TokenRequest, options: CallOptions = {}): Promise<TokenResult> {
    const key = keyOnly(caller);
    const { store, clock } = this.o;
    // Waiting for a refresh held elsewhere is bounded by maxWaitMs and by the call's own deadline.
    const deadline = Math.min(clock.now() + this.o.maxWaitMs, options.deadline ?? Number.POSITIVE_INFINITY);
    let seenVersion: number | undefined;
    let pollMs = 25;
    const conditional = request.rejected !== undefined;

    for (let round = 0; round < MAX_ROUNDS; round++) {
      // The first read may be eventually consistent (the hot path); re-reads after a refusal may not.
      // A forced call's first read is its own: the version it sees must postdate the token it rejects.
      const own = (request.force || conditional) && round === 0;
      const record = own
        ? await store.getSession(key, { consistent: true })
        : await this.sharedRead(key, round > 0);
      if (!record) throw new SessionNotFoundError();
      if (record.status === 'reauthorization_required') {
        throw new ReauthorizationRequiredError(
          `the grant is no longer valid (${record.lastError?.code ?? 'invalid_grant'}); the user must authorize again`,
        );
      }
      // With `rejected`, the call is forced only while the stored token is the one the caller's
      // resource server refused; a newer token is served at once.
      let force = request.force;
      let revealed: string | undefined;
      if (conditional) {
        revealed = await this.revealAccess(record);
        force = tokenFingerprint(revealed) === request.rejected;
        if (force) seenVersion = Math.min(seenVersion ?? record.version, record.version);
      }
      seenVersion ??= record.version;
      const now = clock.now();
      const minValidity = effectiveMinValidity(record, request.minValidity);
      if (this.satisfies(record, force, minValidity, seenVersion, now)) return this.serve(record, revealed);

      if (record.refreshTokenSealed === undefined) {
        throw new ReauthorizationRequiredError(
          request.force
            ? 'the session has no refresh token, so a new access token needs a new authorization'
            : 'the access token expires and the session has no refresh token; the user must authorize again',
        );
      }
      // The session's own backoff, unless its failure belonged to a provider outage (the circuit's).
      const backoffUntil = this.o.refresher.backoffUntil
        ? await this.o.refresher.backoffUntil(record)
        : record.nextAttemptAt;
      if (backoffUntil !== undefined && backoffUntil > now) {
        throw new RefreshUnavailableError(
          `the provider is failing (${record.lastError?.code ?? 'unknown'}); the next attempt is scheduled`,
          Math.max(1, Math.ceil((backoffUntil - now) / 1000)),
        );
      }
      const id = sessionKeyString(key);
      const joined = this.inflight.get(id);
      if (!joined && record.leaseUntil !== undefined && record.leaseUntil >= now) {
        // Someone else (another process) is refreshing: wait for it, then re-read.
        if (now >= deadline) {
          throw new RefreshUnavailableError(
            'a refresh of this session is in progress elsewhere',
            Math.max(1, Math.ceil((record.leaseUntil - now) / 1000)),
          );
        }
        await this.o.sleep(Math.min(pollMs, Math.max(1, record.leaseUntil - now + 1), deadline - now));
        pollMs = Math.min(pollMs * 2, 400);
        continue;
      }

      // Once the session has moved past the version the forced caller saw, only minValidity is left
      // to satisfy: a forced lease on the old version could never be granted again.
      // The onDemand bound uses the same effective minValidity as `satisfies`, so a session that
      // does not satisfy the call is always one its lease condition accepts.
      const condition: LeaseCondition =
        force && record.version <= seenVersion
          ? { kind: 'forced', version: seenVersion }
          : { kind: 'onDemand', minValidUntil: Math.floor(now / 1000) + minValidity };
      // The caller waits for its own grant as long as for one held elsewhere, from the grant's start.
      const waitUntil = Math.min(
        clock.now() + this.o.maxWaitMs,
        options.deadline ?? Number.POSITIVE_INFINITY,
      );
      const outcome = await (joined ?? this.startRefresh(id, key, condition, options.deadline, waitUntil));
      switch (outcome.kind) {
        case 'refreshed':
          // Minted for this call (or one it joined): the freshest token the provider gives, with its
          // true expires_in, whatever minValidity wished for. Never a second grant to chase it.
          if (outcome.record.status === 'active' && outcome.record.version > seenVersion) {
            return this.serve(outcome.record, outcome.accessToken);
          }
          continue;
        case 'pending':
          // The provider has not answered yet; the grant stays open and its answer is committed for
          // the next caller.
          throw new RefreshUnavailableError(
            'the provider has not answered yet; the refresh goes on and its token is kept for the next call',
            outcome.retryAfterSeconds,
          );
        case 'no_time':
          throw new RefreshUnavailableError(
            'not enough time is left in this call to refresh the token safely; ask again',
            1,
          );
        case 'partial':
          throw new RefreshUnavailableError(
            'the provider renewed the grant but issued no usable access token; ask again',
            1,
          );
        case 'refused':
        case 'lease_lost':
          continue;
        case 'transient':
        case 'client_rejected':
          throw new RefreshUnavailableError(
            `the provider could not refresh the token (${outcome.code})`,
            outcome.retryAfterSeconds,
          );
        case 'circuit_open': {
          // The provider's probe is being made elsewhere: its answer decides, so wait for it briefly.
          const waitNow = clock.now();
          if (outcome.probeInFlight && waitNow < deadline) {
            await this.o.sleep(Math.min(pollMs, deadline - waitNow));
            pollMs = Math.min(pollMs * 2, 400);
            continue;
          }
          throw new RefreshUnavailableError(
            'the provider is unavailable (its circuit is open); no refresh is attempted before its next probe',
            outcome.retryAfterSeconds,
          );
        }
        case 'key_unavailable':
          throw new KeyUnavailableError('the stored token cannot be decrypted with the current keyring');
        case 'reauthorization_required':
          throw new ReauthorizationRequiredError(
            `the provider refused the refresh token (${outcome.code}); the user must authorize again`,
          );
      }
    }
    throw new RefreshUnavailableError('the session kept changing while a token was requested', 1);
  }

  /** Concurrent reads of one session in this process share one GetItem (single-flight). */
  private sharedRead(key: SessionKey, consistent: boolean): Promise<SessionRecord | undefined> {
    const id = `${sessionKeyString(key)}\u0000${consistent ? 'c' : 'e'}`;
    let read = this.reads.get(id);
    if (!read) {
      read = this.o.store.getSession(key, { consistent }).finally(() => this.reads.delete(id));
      this.reads.set(id, read);
    }
    return read;
  }

  private startRefresh(
    id: string,
    key: SessionKey,
    condition: LeaseCondition,
    deadline: number | undefined,
    waitUntil: number,
  ): Promise<RefreshOutcome> {
    // The call's deadline bounds the grant where the runtime stops after answering; where it keeps
    // running, the caller waits as long as for a refresh held elsewhere and the grant goes on.
    const promise = this.o.refresher
      .refresh(key, condition, { deadline, waitUntil })
      .finally(() => this.inflight.delete(id));
    this.inflight.set(id, promise);
    promise.then(
      (o) => {
        if (o.kind === 'refreshed') this.o.metrics.add('OnDemandRefreshes', 'Count', 1);
      },
      () => {},
    );
    return promise;
  }

  private satisfies(
    record: SessionRecord,
    force: boolean,
    minValidity: number,
    seenVersion: number,
    now: number,
  ): boolean {
    if (record.status !== 'active') return false;
    if (force && record.version <= seenVersion) return false;
    if (
      record.issuedAt !== undefined &&
      now - record.issuedAt < FRESH_TOKEN_MS &&
      secondsLeft(record, now) > 0
    ) {
      return true;
    }
    return secondsLeft(record, now) >= minValidity;
  }

  private async revealAccess(record: SessionRecord): Promise<string> {
    try {
      return (await this.o.store.reveal(record, 'access')).accessToken;
    } catch (err) {
      if (err instanceof KeyUnavailableError) {
        this.o.metrics.add('KeyUnavailable', 'Count', 1);
        this.o.logger.error('stored token cannot be decrypted; session kept', {
          userId: record.userId,
          providerId: record.providerId,
          reason: err.message,
        });
      }
      throw err;
    }
  }

  private async serve(record: SessionRecord, accessToken?: string): Promise<TokenResult> {
    const token = accessToken ?? (await this.revealAccess(record));
    const now = this.o.clock.now();
    const result: TokenResult = {
      access_token: token,
      token_type: record.tokenType,
      expires_at: record.expiresAt ?? null,
      expires_in:
        record.expiresAt === undefined ? null : Math.max(0, record.expiresAt - Math.floor(now / 1000)),
    };
    if (record.scope !== undefined) result.scope = record.scope;
    return result;
  }
}
