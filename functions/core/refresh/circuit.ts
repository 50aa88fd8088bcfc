import { semaphore } from '../concurrency.js';
import { publishOrLog } from '../events.js';
import type { CircuitRecord, CircuitState, LastError, ProviderHealth } from '../model.js';
import type { GrantFailure } from '../oauth/client.js';
import type { Clock, EventPublisher, Logger, Metrics, Random } from '../ports.js';
import type { SessionStore } from '../store/store.js';

/**
 * A circuit per provider: an outage belongs to the provider, not to each session.
 *
 * - closed: grants go through. A run of `failureThreshold` transient failures across the provider's
 *   sessions with no success between, a failure that carries Retry-After, or a rejected client
 *   (`invalid_client` / `unauthorized_client`) opens it.
 * - open: no grant to the provider until `nextProbeAt` (Retry-After when the provider gave one, else
 *   exponential backoff with jitter from `probeBaseMs` to `probeMaxMs`).
 * - half_open: the probe is due; exactly one grant (any due session's) takes the probe with a
 *   conditional write on the provider item. Its success closes the circuit, its failure opens it again.
 *
 * The state lives on the provider's item, shared by every sweep and API instance; each process caches
 * its view for at most `cacheTtlMs` and replaces it with whatever its own writes return. When the
 * circuit closes, sessions whose last failure fell in the outage may be leased at once (their own
 * backoff is lifted); a failure outside an outage keeps the session's own backoff.
 */

export interface CircuitPolicy {
  /** Transient failures in a row (no success between) that open the circuit. */
  failureThreshold: number;
  probeBaseMs: number;
  probeMaxMs: number;
  /** How long a process trusts its cached view of a provider's circuit. */
  cacheTtlMs: number;
  /** How long a probe holds its claim; a probe that never reports back is replaced after this. */
  probeLeaseMs: number;
  /** Grants in flight at once to one provider from this process (sweep and token calls together). */
  grantConcurrency: number;
}

export const DEFAULT_CIRCUIT_POLICY: CircuitPolicy = {
  failureThreshold: 3,
  probeBaseMs: 2_000,
  probeMaxMs: 10_000,
  cacheTtlMs: 2_000,
  probeLeaseMs: 30_000,
  grantConcurrency: 16,
};

/** What the circuit lets a refresh do. `probe`: this grant is the provider's single probe. */
export type Admission =
  | { kind: 'closed'; providerId: string }
  | { kind: 'probe'; providerId: string; owner: string; done: boolean }
  | { kind: 'open'; providerId: string; retryAfterSeconds: number; probeInFlight: boolean };

const CLOSED: CircuitRecord = { state: 'closed', consecutiveFailures: 0, openings: 0 };

/** The state as callers see it: an open circuit whose probe is due, or being made, is half_open. */
export function circuitState(c: CircuitRecord, now: number): CircuitState {
  if (c.state === 'closed') return 'closed';
  if (c.state === 'half_open' || (c.nextProbeAt !== undefined && c.nextProbeAt <= now)) return 'half_open';
  return 'open';
}

/** The circuit as the API shows it (GET /v1/providers/{id} → health); instants in epoch seconds. */
export function providerHealth(
  c: CircuitRecord | undefined,
  now: number,
  integrityProblem?: string,
): ProviderHealth {
  const circuit = c ?? CLOSED;
  const seconds = (ms: number | undefined) => (ms === undefined ? null : Math.floor(ms / 1000));
  const state = circuitState(circuit, now);
  return {
    state,
    since: seconds(circuit.since),
    nextProbeAt: state === 'closed' ? null : seconds(circuit.nextProbeAt),
    consecutiveFailures: circuit.consecutiveFailures,
    lastError: circuit.lastError
      ? {
          code: circuit.lastError.code,
          description: circuit.lastError.description,
          at: Math.floor(circuit.lastError.at / 1000),
        }
      : null,
    integrity:
      integrityProblem === undefined ? null : { error: 'provider_integrity', description: integrityProblem },
  };
}

/** The delay before the next probe: the provider's Retry-After, else backoff with jitter in [½, 1]. */
export function probeDelayMs(
  openings: number,
  policy: Pick<CircuitPolicy, 'probeBaseMs' | 'probeMaxMs'>,
  random: Random,
  retryAfterSeconds?: number,
): number {
  if (retryAfterSeconds !== undefined) return Math.max(1_000, retryAfterSeconds * 1_000);
  const ceiling = Math.min(policy.probeMaxMs, policy.probeBaseMs * 2 ** Math.min(openings, 30));
  return Math.round(ceiling * (0.5 + random() * 0.5));
}

/** Failures that say the provider (not one session) is in trouble, and open the circuit at once. */
function opensAtOnce(failure: GrantFailure): boolean {
  return failure.class === 'client_rejected' || failure.retryAfterSeconds !== undefined;
}

export interface ProviderCircuitOptions {
  store: SessionStore;
  clock: Clock;
  random: Random;
  logger: Logger;
  metrics: Metrics;
  events: EventPublisher;
  policy?: Partial<CircuitPolicy>;
}

export class ProviderCircuit {
  readonly policy: CircuitPolicy;
  private readonly o: ProviderCircuitOptions;
  private readonly cache = new Map<string, { circuit: Promise<CircuitRecord>; at: number }>();
  /** The last circuit this process read or wrote, per provider (what `failed` counts on at once). */
  private readonly latest = new Map<string, CircuitRecord>();
  /** How many times this process wrote its view of each provider's circuit (reads started earlier are older). */
  private readonly writes = new Map<string, number>();
  private readonly slots = new Map<string, () => Promise<() => void>>();
  /** Probes in flight in this process, so its sweep workers wait for the answer instead of skipping. */
  private readonly localProbes = new Map<string, { settled: Promise<void>; settle: () => void }>();

  constructor(options: ProviderCircuitOptions) {
    this.o = options;
    this.policy = { ...DEFAULT_CIRCUIT_POLICY, ...options.policy };
  }

  /**
   * The provider's circuit, from this process's cache when it is fresh enough; `fresh` (a sweep or a
   * slice starting) reads the store regardless. For the cache's lifetime, a read that says closed does
   * not replace an opening this process counted after the store's last closing: slices sweeping side
   * by side in one process must not trade the opening they counted for a store that has not heard of
   * it yet.
   */
  view(providerId: string, options: { fresh?: boolean } = {}): Promise<CircuitRecord> {
    const now = this.o.clock.now();
    const hit = this.cache.get(providerId);
    if (!options.fresh && hit && now - hit.at < this.policy.cacheTtlMs) return hit.circuit;
    const writesBefore = this.writes.get(providerId) ?? 0;
    const entry = {
      circuit: this.o.store.getCircuit(providerId).then((c) => {
        const read = c ?? CLOSED;
        const known = this.latest.get(providerId);
        // A view this process wrote while the read was under way is newer than what the read saw.
        if ((this.writes.get(providerId) ?? 0) !== writesBefore && known) return known;
        // A young opening of ours that the store does not show yet: ours, for the cache's lifetime.
        if (
          known &&
          known.state !== 'closed' &&
          read.state === 'closed' &&
          (read.since ?? 0) < (known.since ?? 0) &&
          this.o.clock.now() - (known.since ?? 0) < this.policy.cacheTtlMs
        ) {
          return known;
        }
        this.latest.set(providerId, read);
        return read;
      }),
      at: now,
    };
    this.cache.set(providerId, entry);
    entry.circuit.catch(() => {
      if (this.cache.get(providerId) === entry) this.cache.delete(providerId);
    });
    return entry.circuit;
  }

  /**
   * The view this process would act on now without reading the store, or undefined when its next
   * decision reads the store. Reads nothing (for diagnosis and tests).
   */
  async peek(providerId: string): Promise<CircuitRecord | undefined> {
    const hit = this.cache.get(providerId);
    if (!hit || this.o.clock.now() - hit.at >= this.policy.cacheTtlMs) return undefined;
    return hit.circuit.catch(() => undefined);
  }

  /**
   * A grant slot for the provider: when the circuit closes, every caller held back comes at once; the
   * provider gets at most `grantConcurrency` grants at a time from this process, the rest queue here
   * (before their lease, so no lease runs out while waiting).
   */
  slot(providerId: string): Promise<() => void> {
    let acquire = this.slots.get(providerId);
    if (!acquire) {
      acquire = semaphore(this.policy.grantConcurrency);
      this.slots.set(providerId, acquire);
    }
    return acquire();
  }

  /** Drops this process's view (the provider was replaced: a new configuration starts closed). */
  forget(providerId: string): void {
    this.writes.set(providerId, (this.writes.get(providerId) ?? 0) + 1);
    this.cache.delete(providerId);
    this.latest.delete(providerId);
  }

  private remember(providerId: string, circuit: CircuitRecord | undefined): void {
    this.writes.set(providerId, (this.writes.get(providerId) ?? 0) + 1);
    if (circuit) {
      this.cache.set(providerId, { circuit: Promise.resolve(circuit), at: this.o.clock.now() });
      this.latest.set(providerId, circuit);
    } else this.cache.delete(providerId);
  }

  /**
   * Counts a failure in this process's view at once, before the store hears of it: a sweep's grant
   * slots free up as fast as a failing provider answers, and without this, grants keep starting until
   * the opening write comes back. The store's answers then replace the provisional view.
   */
  private countLocally(providerId: string, failure: GrantFailure, now: number): void {
    const known = this.latest.get(providerId);
    if (known?.state !== 'closed') return;
    const consecutiveFailures = known.consecutiveFailures + 1;
    if (!opensAtOnce(failure) && consecutiveFailures < this.policy.failureThreshold) {
      this.remember(providerId, { ...known, consecutiveFailures });
      return;
    }
    const delay = probeDelayMs(0, this.policy, this.o.random, failure.retryAfterSeconds);
    this.remember(providerId, {
      ...known,
      state: 'open',
      since: now,
      nextProbeAt: now + delay,
      consecutiveFailures,
      openings: 1,
    });
  }

  /**
   * Decides whether a grant may be sent. An open circuit whose probe is due is claimed here (one
   * conditional write); the caller owns the probe until it reports success, failure, or `release`.
   */
  async admit(providerId: string, owner: string): Promise<Admission> {
    // A probe this process is making (or claiming) decides for its callers too: wait for its answer.
    for (let local = this.localProbes.get(providerId); local; local = this.localProbes.get(providerId)) {
      await local.settled;
    }
    const now = this.o.clock.now();
    let circuit = await this.view(providerId);
    if (circuit.state === 'closed') return { kind: 'closed', providerId };
    let blocked = this.blocked(providerId, circuit, now);
    if (blocked?.kind === 'open' && blocked.probeInFlight) {
      // A probe's answer changes everything: while one is in flight, callers read the circuit afresh.
      circuit = await this.view(providerId, { fresh: true });
      if (circuit.state === 'closed') return { kind: 'closed', providerId };
      blocked = this.blocked(providerId, circuit, now);
    }
    if (blocked) return blocked;
    if (this.localProbes.has(providerId)) return this.admit(providerId, owner);
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => {
      settle = resolve;
    });
    this.localProbes.set(providerId, { settled, settle });
    let claimed: CircuitRecord | undefined;
    try {
      claimed = await this.o.store.claimCircuitProbe(providerId, owner, now, now + this.policy.probeLeaseMs);
    } finally {
      if (!claimed) this.settleLocal(providerId);
    }
    if (claimed) {
      this.remember(providerId, claimed);
      this.o.logger.info('provider circuit: probing', { providerId, openings: claimed.openings });
      return { kind: 'probe', providerId, owner, done: false };
    }
    // Someone else moved the circuit (closed it, or took the probe): decide on a fresh read.
    circuit = await this.view(providerId, { fresh: true });
    if (circuit.state === 'closed') return { kind: 'closed', providerId };
    return (
      this.blocked(providerId, circuit, now) ?? {
        kind: 'open',
        providerId,
        retryAfterSeconds: 1,
        probeInFlight: true,
      }
    );
  }

  /** The refusal for an open circuit, or undefined when its probe may be taken now. */
  private blocked(providerId: string, c: CircuitRecord, now: number): Admission | undefined {
    if (c.probeOwner !== undefined && (c.probeUntil ?? 0) >= now) {
      return { kind: 'open', providerId, retryAfterSeconds: 1, probeInFlight: true };
    }
    if (c.nextProbeAt !== undefined && c.nextProbeAt > now) {
      return {
        kind: 'open',
        providerId,
        retryAfterSeconds: Math.max(1, Math.ceil((c.nextProbeAt - now) / 1000)),
        probeInFlight: false,
      };
    }
    return undefined;
  }

  /**
   * For the sweep, before it takes a lease: waits for a probe this process has in flight, then says
   * whether the provider's sessions may be tried at all (false: the circuit is open, no probe due).
   */
  async mayTry(providerId: string): Promise<boolean> {
    await this.localProbes.get(providerId)?.settled;
    const circuit = await this.view(providerId);
    return circuit.state === 'closed' || this.blocked(providerId, circuit, this.o.clock.now()) === undefined;
  }

  /**
   * For a caller admitted while the circuit was closed, once its grant slot is free (it may have
   * waited a grant's time): the circuit opened meanwhile, so no grant is sent. Undefined: still closed.
   */
  async openedMeanwhile(providerId: string): Promise<Extract<Admission, { kind: 'open' }> | undefined> {
    const circuit = await this.view(providerId);
    if (circuit.state === 'closed') return undefined;
    const blocked = this.blocked(providerId, circuit, this.o.clock.now());
    if (blocked?.kind === 'open') return blocked;
    // Open with its probe due: the probe is someone's admission, not this caller's.
    return { kind: 'open', providerId, retryAfterSeconds: 1, probeInFlight: false };
  }

  /**
   * Failures in this window belong to a provider outage, not to their session: the session's own
   * backoff does not hold it back. After the circuit closed, the last outage; for the probe of an
   * open circuit, the current run.
   */
  liftWindow(circuit: CircuitRecord, admission: Admission['kind']): { from: number; to: number } | undefined {
    const slack = this.policy.probeLeaseMs;
    if (admission === 'probe' && circuit.runFrom !== undefined) {
      return { from: circuit.runFrom - slack, to: this.o.clock.now() };
    }
    if (circuit.state === 'closed' && circuit.lastOutage) {
      return { from: circuit.lastOutage.from - slack, to: circuit.lastOutage.to };
    }
    return undefined;
  }

  /**
   * When a session backing off may be tried again (epoch ms), seen from the circuit: at once when its
   * failure belonged to an outage that is over, at the next probe while that outage lasts, else at
   * its own `nextAttemptAt`.
   */
  async backoffUntil(session: {
    providerId: string;
    nextAttemptAt?: number;
    lastError?: LastError;
  }): Promise<number | undefined> {
    const now = this.o.clock.now();
    if (session.nextAttemptAt === undefined || session.nextAttemptAt <= now) return session.nextAttemptAt;
    const failedAt = session.lastError?.at;
    if (failedAt === undefined) return session.nextAttemptAt;
    const circuit = await this.view(session.providerId);
    const slack = this.policy.probeLeaseMs;
    if (circuit.state === 'closed') {
      const o = circuit.lastOutage;
      return o && failedAt >= o.from - slack && failedAt <= o.to ? undefined : session.nextAttemptAt;
    }
    if (circuit.runFrom !== undefined && failedAt >= circuit.runFrom - slack) {
      return Math.min(session.nextAttemptAt, circuit.nextProbeAt ?? session.nextAttemptAt);
    }
    return session.nextAttemptAt;
  }

  /** The lease for the probe's session was refused, or no grant was made: give the probe back. */
  async release(admission: Admission): Promise<void> {
    if (admission.kind !== 'probe' || admission.done) return;
    admission.done = true;
    try {
      await this.o.store.releaseCircuitProbe(admission.providerId, admission.owner);
      this.forget(admission.providerId);
    } finally {
      this.settleLocal(admission.providerId);
    }
  }

  /** The provider answered (a grant, or `invalid_grant`): closes the circuit, or ends a run of failures. */
  async succeeded(admission: Admission, sentAt: number): Promise<void> {
    const { providerId } = admission;
    if (admission.kind === 'probe') admission.done = true;
    try {
      const circuit = await this.view(providerId);
      if (admission.kind === 'probe' || circuit.state !== 'closed') {
        const now = this.o.clock.now();
        const before = await this.o.store.closeCircuit(providerId, now, sentAt);
        this.forget(providerId);
        if (before) await this.announceRecovery(providerId, before, now);
      } else if (circuit.consecutiveFailures > 0) {
        await this.o.store.resetCircuitFailures(providerId);
        this.forget(providerId);
      }
    } finally {
      if (admission.kind === 'probe') this.settleLocal(providerId);
    }
  }

  /**
   * A transient failure or a rejected client. Returns the circuit after it: the caller's Retry-After
   * is its next probe when it is open.
   */
  async failed(
    admission: Admission,
    failure: GrantFailure,
    sessionFailedAt?: number,
  ): Promise<CircuitRecord | undefined> {
    const { providerId } = admission;
    const now = this.o.clock.now();
    const error: LastError = { code: failure.code, description: failure.description, at: now };
    try {
      // A session counts once in a run's `sessionsFailed`: not again when its last failure is in the run.
      const runFrom = (this.latest.get(providerId) ?? (await this.view(providerId))).runFrom;
      const newSession = sessionFailedAt === undefined || runFrom === undefined || sessionFailedAt < runFrom;
      if (admission.kind === 'probe') {
        admission.done = true;
        const current = await this.view(providerId);
        const next =
          now + probeDelayMs(current.openings, this.policy, this.o.random, failure.retryAfterSeconds);
        const reopened = await this.o.store.reopenCircuit(
          providerId,
          admission.owner,
          error,
          next,
          newSession,
        );
        this.remember(providerId, reopened);
        if (reopened) {
          this.o.metrics.add('ProviderCircuitOpen', 'Count', 1, { providerId });
          this.o.logger.warn('provider circuit: probe failed; open again', {
            providerId,
            code: failure.code,
            nextProbeInMs: next - now,
          });
        }
        return reopened;
      }
      this.countLocally(providerId, failure, now);
      const counted = await this.o.store.recordCircuitFailure(providerId, error, newSession);
      // A count that lags this process's own (concurrent failures' writes land in any order) is not taken.
      const local = this.latest.get(providerId);
      const behind =
        counted?.state === 'closed' &&
        local !== undefined &&
        (local.state !== 'closed' || counted.consecutiveFailures < local.consecutiveFailures);
      if (!behind) this.remember(providerId, counted);
      if (counted?.state !== 'closed') return counted;
      const atOnce = opensAtOnce(failure);
      if (!atOnce && counted.consecutiveFailures < this.policy.failureThreshold) return counted;
      const next = now + probeDelayMs(0, this.policy, this.o.random, failure.retryAfterSeconds);
      const opened = await this.o.store.openCircuit(
        providerId,
        now,
        next,
        atOnce ? 1 : this.policy.failureThreshold,
      );
      if (!opened) return this.view(providerId, { fresh: true });
      this.remember(providerId, opened);
      this.o.metrics.add('ProviderCircuitOpen', 'Count', 1, { providerId });
      this.o.logger.error('provider circuit opened: no grants until the next probe', {
        providerId,
        code: failure.code,
        consecutiveFailures: opened.consecutiveFailures,
        nextProbeInMs: next - now,
      });
      await this.publish('ProviderUnavailable', {
        providerId,
        error: failure.code,
        consecutiveFailures: opened.consecutiveFailures,
        sessionsAffected: opened.sessionsFailed ?? opened.consecutiveFailures,
        since: new Date(now).toISOString(),
        nextProbeAt: new Date(next).toISOString(),
      });
      return opened;
    } finally {
      if (admission.kind === 'probe') this.settleLocal(providerId);
    }
  }

  /**
   * A sweep (or one slice of it) held back this many due sessions of an open provider; the slices of
   * one sweep add up (kept for ProviderRecovered's `sessionsAffected`).
   */
  async heldBack(providerId: string, sessions: number, sweepId: string): Promise<void> {
    if (sessions > 0) await this.o.store.noteCircuitHeldBack(providerId, sessions, sweepId);
  }

  private async announceRecovery(providerId: string, before: CircuitRecord, now: number): Promise<void> {
    const from = before.runFrom ?? before.since ?? now;
    this.o.logger.info('provider circuit closed: the provider answers again', {
      providerId,
      outageMs: now - from,
    });
    await this.publish('ProviderRecovered', {
      providerId,
      previousError: before.lastError?.code ?? null,
      outageSeconds: Math.round((now - from) / 1000),
      probes: before.openings,
      sessionsAffected: Math.max(before.heldBack ?? 0, before.sessionsFailed ?? 0),
      at: new Date(now).toISOString(),
    });
  }

  private settleLocal(providerId: string): void {
    const probe = this.localProbes.get(providerId);
    this.localProbes.delete(providerId);
    probe?.settle();
  }

  private async publish(
    detailType: 'ProviderUnavailable' | 'ProviderRecovered',
    detail: Record<string, unknown>,
  ): Promise<void> {
    await publishOrLog(this.o.events, this.o.logger, { detailType, detail });
  }
}
