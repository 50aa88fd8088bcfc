import {
  InvalidRequestError,
  KeyUnavailableError,
  ReauthorizationRequiredError,
  RefreshUnavailableError,
  SessionNotFoundError,
} from './errors.js';
import { type SessionKey, secondsLeft, sessionKeyString } from './model.js';
import type { Clock, Logger, Metrics, Sleep } from './ports.js';
import type { Refresher, RefreshOutcome } from './refresher.js';
import type { TokenRequest, TokenResult, TokenService } from './services.js';
import type { LeaseCondition, SessionRecord, SessionStore } from './store.js';

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

export class DefaultTokenService implements TokenService {
  private readonly o: TokenServiceOptions;
  private readonly inflight = new Map<string, Promise<RefreshOutcome>>();
  private readonly reads = new Map<string, Promise<SessionRecord | undefined>>();

  constructor(options: TokenServiceOptions) {
    this.o = options;
  }

  async getToken(key: SessionKey, request: TokenRequest): Promise<TokenResult> {
    const { store, clock } = this.o;
    const deadline = clock.now() + this.o.maxWaitMs;
    let seenVersion: number | undefined;
    let pollMs = 25;
    let refreshedByUs = false;

    for (let round = 0; round < MAX_ROUNDS; round++) {
      // The first read may be eventually consistent (the hot path); re-reads after a refusal may not.
      // A forced call's first read is its own: the version it sees must postdate the token it rejects.
      const consistent = round > 0 || request.force;
      const record =
        request.force && round === 0
          ? await store.getSession(key, { consistent })
          : await this.sharedRead(key, consistent);
      if (!record) throw new SessionNotFoundError();
      if (record.status === 'reauthorization_required') {
        throw new ReauthorizationRequiredError(
          `the grant is no longer valid (${record.lastError?.code ?? 'invalid_grant'}); the user must authorize again`,
        );
      }
      seenVersion ??= record.version;
      const now = clock.now();
      if (this.satisfies(record, request, seenVersion, now)) return this.serve(record);
      if (refreshedByUs) {
        throw new InvalidRequestError(
          `minValidity=${request.minValidity} exceeds the lifetime of the tokens this provider issues`,
        );
      }

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
      const condition: LeaseCondition =
        request.force && record.version <= seenVersion
          ? { kind: 'forced', version: seenVersion }
          : { kind: 'onDemand', minValidUntil: Math.floor(now / 1000) + request.minValidity };
      const outcome = await (joined ?? this.startRefresh(id, key, condition));
      switch (outcome.kind) {
        case 'refreshed':
          if (this.satisfies(outcome.record, request, seenVersion, clock.now())) {
            return this.serve(outcome.record, outcome.accessToken);
          }
          if (!joined) refreshedByUs = true;
          continue;
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

  private startRefresh(id: string, key: SessionKey, condition: LeaseCondition): Promise<RefreshOutcome> {
    const promise = this.o.refresher.refresh(key, condition).finally(() => this.inflight.delete(id));
    this.inflight.set(id, promise);
    promise.then(
      (o) => {
        if (o.kind === 'refreshed') this.o.metrics.add('OnDemandRefreshes', 'Count', 1);
      },
      () => {},
    );
    return promise;
  }

  private satisfies(record: SessionRecord, request: TokenRequest, seenVersion: number, now: number): boolean {
    if (record.status !== 'active') return false;
    if (request.force && record.version <= seenVersion) return false;
    return secondsLeft(record, now) >= request.minValidity;
  }

  private async serve(record: SessionRecord, accessToken?: string): Promise<TokenResult> {
    let token = accessToken;
    if (token === undefined) {
      try {
        token = (await this.o.store.reveal(record, 'access')).accessToken;
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
