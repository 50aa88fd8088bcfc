import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { RefreshUnavailableError } from '../../functions/core/errors.js';
import type { CircuitRecord } from '../../functions/core/model.js';
import { circuitState, probeDelayMs, providerHealth } from '../../functions/core/refresh/circuit.js';
import type { LeaseCondition } from '../../functions/core/store/store.js';
import { ensureTable } from '../../functions/core/store/table.js';
import {
  addProvider,
  addSession,
  type CoreFixture,
  createCoreFixture,
  createPeer,
  rawItem,
  type TestSession,
  uniqueId,
} from '../support/core-fixture.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

/**
 * The per-provider circuit (functions/core/refresh/circuit.ts) through the real refresher, sweep and token
 * service on dynalite, with a scripted token endpoint and a clock the test drives. random() = 0.5, so
 * every jittered delay is ¾ of its ceiling: the probe delays are 1.5 s, 3 s, 6 s, then 7.5 s (cap 10 s).
 */

const PROBE_DELAYS_MS = [1_500, 3_000, 6_000, 7_500, 7_500];

describe('probe delays and the health view', () => {
  it('doubles from the base with jitter up to the cap, and follows Retry-After when given', () => {
    const policy = { probeBaseMs: 2_000, probeMaxMs: 10_000 };
    expect([0, 1, 2, 3, 4].map((n) => probeDelayMs(n, policy, () => 0.5))).toEqual(PROBE_DELAYS_MS);
    expect(probeDelayMs(0, policy, () => 0)).toBe(1_000);
    expect(probeDelayMs(9, policy, () => 0.999_999)).toBe(10_000);
    expect(probeDelayMs(5, policy, () => 0.5, 45)).toBe(45_000);
    expect(probeDelayMs(0, policy, () => 0.5, 0)).toBe(1_000);
  });

  it('shows an open circuit whose probe is due, or held, as half_open; instants in seconds', () => {
    const open: CircuitRecord = {
      state: 'open',
      since: 10_000,
      nextProbeAt: 20_500,
      consecutiveFailures: 3,
      openings: 1,
      lastError: { code: 'http_503', description: 'x', at: 9_999 },
    };
    expect(circuitState(open, 20_000)).toBe('open');
    expect(circuitState(open, 20_500)).toBe('half_open');
    expect(circuitState({ ...open, state: 'half_open' }, 0)).toBe('half_open');
    expect(providerHealth(open, 20_000)).toEqual({
      state: 'open',
      since: 10,
      nextProbeAt: 20,
      consecutiveFailures: 3,
      lastError: { code: 'http_503', description: 'x', at: 9 },
      integrity: null,
    });
    expect(providerHealth(undefined, 0)).toEqual({
      state: 'closed',
      since: null,
      nextProbeAt: null,
      consecutiveFailures: 0,
      lastError: null,
      integrity: null,
    });
  });
});

describe('ProviderCircuit with the refresher, sweep and token service', () => {
  let handle: DynaliteHandle;
  let fx: CoreFixture;
  let providerId: string;

  beforeAll(async () => {
    handle = await startDynalite();
  });
  afterAll(() => handle?.stop());
  beforeEach(async () => {
    // A table per test: the sweeps below count the due sessions of the whole table.
    const tableName = uniqueId('tk-circuit');
    await ensureTable(handle.client, tableName);
    fx = createCoreFixture(handle, { tableName, env: { TOKENKEEPER_CIRCUIT_CACHE_MS: '2000' } });
    providerId = await addProvider(fx);
  });

  const sweepCondition = (): LeaseCondition => ({ kind: 'sweep', dueBy: fx.clock.seconds() + 600 });
  const sessions = async (n: number, expiresIn = 60): Promise<TestSession[]> => {
    const out: TestSession[] = [];
    for (let i = 0; i < n; i++) out.push(await addSession(fx, { providerId, expiresIn }));
    return out;
  };
  const circuit = async () => (await fx.runtime.store.getCircuit(providerId)) as CircuitRecord;
  const health = async () => (await fx.runtime.providers.get(providerId)).health;
  const eventsOf = (type: string) => fx.events.filter((e) => e.detailType === type).map((e) => e.detail);
  const refresh = (s: TestSession) => fx.runtime.refresher.refresh(s.key, sweepCondition());
  const fail503 = { kind: 'status', status: 503 } as const;

  it('opens after three transient failures in a row across sessions, and not before', async () => {
    const ss = await sessions(4);
    fx.endpoint.reply(fail503, fail503);
    expect(await refresh(ss[0] as TestSession)).toMatchObject({ kind: 'transient' });
    expect(await refresh(ss[1] as TestSession)).toMatchObject({ kind: 'transient' });
    expect(await circuit()).toMatchObject({ state: 'closed', consecutiveFailures: 2 });
    expect(eventsOf('ProviderUnavailable')).toEqual([]);

    fx.endpoint.reply({ kind: 'status', status: 500 });
    expect(await refresh(ss[2] as TestSession)).toMatchObject({ kind: 'transient', code: 'http_500' });
    expect(await circuit()).toMatchObject({
      state: 'open',
      since: fx.clock.now(),
      nextProbeAt: fx.clock.now() + (PROBE_DELAYS_MS[0] as number),
      consecutiveFailures: 3,
    });
    expect(await health()).toEqual({
      state: 'open',
      since: fx.clock.seconds(),
      nextProbeAt: Math.floor((fx.clock.now() + 1_500) / 1000),
      consecutiveFailures: 3,
      lastError: { code: 'http_500', description: expect.any(String), at: fx.clock.seconds() },
      integrity: null,
    });
    expect(eventsOf('ProviderUnavailable')).toEqual([
      expect.objectContaining({ providerId, error: 'http_500', consecutiveFailures: 3, sessionsAffected: 3 }),
    ]);
    expect(fx.metrics.filter((m) => m.name === 'ProviderCircuitOpen')).toEqual([
      { name: 'ProviderCircuitOpen', unit: 'Count', value: 1, dimensions: { providerId } },
    ]);

    // Open: no grant, and no lease written on the session.
    const before = await rawItem(fx, (ss[3] as TestSession).key);
    expect(await refresh(ss[3] as TestSession)).toEqual({
      kind: 'circuit_open',
      retryAfterSeconds: 2,
      probeInFlight: false,
    });
    expect(await rawItem(fx, (ss[3] as TestSession).key)).toEqual(before);
    expect(fx.endpoint.requests).toHaveLength(3);
  });

  it('a success between failures ends the run: failures must be consecutive', async () => {
    const ss = await sessions(5);
    fx.endpoint.reply(fail503, fail503, { kind: 'rotate' }, fail503, fail503);
    for (const s of ss) await refresh(s);
    expect(await circuit()).toMatchObject({ state: 'closed', consecutiveFailures: 2 });
    // Per-session backoff stays for failures that are not an outage.
    const lone = await fx.runtime.store.getSession((ss[0] as TestSession).key, { consistent: true });
    expect(lone?.nextAttemptAt).toBeGreaterThan(fx.clock.now());
    expect(await refresh(ss[0] as TestSession)).toEqual({ kind: 'refused' });
  });

  it('opens at once on a 503 or 429 with Retry-After, and probes no earlier', async () => {
    const [a, b] = await sessions(2);
    fx.endpoint.reply({ kind: 'status', status: 429, headers: { 'retry-after': '45' } });
    await refresh(a as TestSession);
    expect(await circuit()).toMatchObject({ state: 'open', nextProbeAt: fx.clock.now() + 45_000 });
    fx.clock.advance(44_000);
    expect(await refresh(b as TestSession)).toMatchObject({ kind: 'circuit_open', retryAfterSeconds: 1 });
    expect(fx.endpoint.requests).toHaveLength(1);
  });

  it('half-open: exactly one probe among concurrent refreshes in several processes', async () => {
    const ss = await sessions(12);
    const peers = [createPeer(fx), createPeer(fx)];
    for (const peer of peers) await peer.runtime.providers.get(providerId);
    fx.endpoint.reply(fail503, fail503, fail503);
    for (const s of ss.slice(0, 3)) await refresh(s);
    expect((await circuit()).state).toBe('open');
    fx.clock.advance(PROBE_DELAYS_MS[0] as number);

    const gate = fx.endpoint.gate();
    const runtimes = [fx.runtime, ...peers.map((p) => p.runtime)];
    const outcomes = ss
      .slice(3)
      .map((s, i) => (runtimes[i % 3] as typeof fx.runtime).refresher.refresh(s.key, sweepCondition()));
    await gate.arrived;
    expect(await circuit()).toMatchObject({ state: 'half_open', probeOwner: expect.any(String) });
    expect(await health()).toMatchObject({ state: 'half_open' });
    // The peers' callers are refused at once (the probe is held elsewhere)...
    const peerOutcomes = await Promise.all(outcomes.filter((_, i) => i % 3 !== 0));
    expect(peerOutcomes).toEqual(
      peerOutcomes.map(() => ({ kind: 'circuit_open', retryAfterSeconds: 1, probeInFlight: true })),
    );
    // ...and while the probe is in flight, it is the only request.
    expect(fx.endpoint.requests).toHaveLength(4);
    expect(fx.endpoint.inFlight).toBe(1);
    gate.release();
    // The probe's own process waited for its answer: once closed, its other callers refresh.
    const local = await Promise.all(outcomes.filter((_, i) => i % 3 === 0));
    expect(local.map((o) => o.kind)).toEqual(['refreshed', 'refreshed', 'refreshed']);
    expect(fx.endpoint.requests).toHaveLength(6);
    expect(await circuit()).toMatchObject({ state: 'closed', consecutiveFailures: 0 });
    expect(eventsOf('ProviderRecovered')).toHaveLength(1);
  });

  it('a failed probe opens it again with the next, longer delay; a successful one closes it', async () => {
    const ss = await sessions(8);
    fx.endpoint.reply(fail503, fail503, fail503);
    for (const s of ss.slice(0, 3)) await refresh(s);
    for (const [i, delay] of PROBE_DELAYS_MS.slice(0, 3).entries()) {
      fx.clock.advance(delay);
      fx.endpoint.reply(fail503);
      expect(await refresh(ss[3 + i] as TestSession)).toMatchObject({ kind: 'transient' });
      expect(await circuit()).toMatchObject({
        state: 'open',
        openings: i + 2,
        nextProbeAt: fx.clock.now() + (PROBE_DELAYS_MS[i + 1] as number),
      });
      expect(fx.endpoint.requests).toHaveLength(4 + i);
    }
    expect(fx.metrics.filter((m) => m.name === 'ProviderCircuitOpen')).toHaveLength(4);
    fx.clock.advance(PROBE_DELAYS_MS[3] as number);
    expect(await refresh(ss[6] as TestSession)).toMatchObject({ kind: 'refreshed' });
    expect(await circuit()).toMatchObject({ state: 'closed', consecutiveFailures: 0, since: fx.clock.now() });
    expect(await health()).toMatchObject({ state: 'closed', nextProbeAt: null });
    expect(eventsOf('ProviderRecovered')).toEqual([
      expect.objectContaining({ providerId, previousError: 'http_503', probes: 4 }),
    ]);
  });

  it('on closing, every session backing off because of the outage is eligible at once', async () => {
    const ss = await sessions(10);
    fx.endpoint.reply(fail503, fail503, fail503);
    for (const s of ss.slice(0, 3)) await refresh(s);
    fx.clock.advance(PROBE_DELAYS_MS[0] as number);
    fx.endpoint.reply(fail503);
    await refresh(ss[3] as TestSession);
    // Four sessions are backing off (11 s and more); the probe 3 s later succeeds.
    fx.clock.advance(PROBE_DELAYS_MS[1] as number);
    expect(await refresh(ss[4] as TestSession)).toMatchObject({ kind: 'refreshed' });
    for (const s of ss.slice(0, 4)) {
      const r = await fx.runtime.store.getSession(s.key, { consistent: true });
      expect(r?.nextAttemptAt).toBeGreaterThan(fx.clock.now());
    }
    // An on-demand call refreshes straight away; the sweep takes the rest.
    const served = await fx.runtime.tokens.getToken((ss[0] as TestSession).key, {
      minValidity: 600,
      force: false,
    });
    expect(served.expires_in).toBe(3600);
    const summary = await fx.runtime.sweeper.sweep();
    expect(summary).toMatchObject({ due: 8, refreshed: 8, skipped: 0, failedTransient: 0 });
  });

  it('per-session backoff stays for a failure after the outage closed', async () => {
    const ss = await sessions(6);
    fx.endpoint.reply(fail503, fail503, fail503);
    for (const s of ss.slice(0, 3)) await refresh(s);
    fx.clock.advance(PROBE_DELAYS_MS[0] as number);
    await refresh(ss[3] as TestSession);
    expect((await circuit()).state).toBe('closed');
    fx.clock.advance(1_000);
    fx.endpoint.reply(fail503);
    await refresh(ss[4] as TestSession);
    expect(await refresh(ss[4] as TestSession)).toEqual({ kind: 'refused' });
    await expect(
      fx.runtime.tokens.getToken((ss[4] as TestSession).key, { minValidity: 600, force: false }),
    ).rejects.toThrow(/next attempt is scheduled/);
  });

  it('a sweep stops sending grants as soon as the third failure is answered, before the store hears of it', async () => {
    const fourSlots = createPeer(fx, { TOKENKEEPER_REFRESH_CONCURRENCY: '4' });
    await sessions(30);
    fx.endpoint.latencyMs = 5;
    for (let i = 0; i < 30; i++) fx.endpoint.reply(fail503);
    const summary = await fourSlots.runtime.sweeper.sweep();
    // Four grants in flight, three answered before the circuit opens here: at most 4 + 3 requests.
    expect(fx.endpoint.requests.length).toBeLessThanOrEqual(7);
    expect(summary).toMatchObject({ due: 30, refreshed: 0 });
    expect((await circuit()).state).toBe('open');
  });

  it('the sweep takes no lease on the sessions of an open provider', async () => {
    const ss = await sessions(6);
    fx.endpoint.reply(fail503, fail503, fail503);
    for (const s of ss.slice(0, 3)) await refresh(s);
    const before = await Promise.all(ss.map((s) => rawItem(fx, s.key)));
    fx.clock.advance(500);
    const summary = await fx.runtime.sweeper.sweep();
    expect(summary).toMatchObject({ due: 6, refreshed: 0, skipped: 6, failedTransient: 0 });
    expect(await Promise.all(ss.map((s) => rawItem(fx, s.key)))).toEqual(before);
    expect(fx.endpoint.requests).toHaveLength(3);
    expect(await circuit()).toMatchObject({ heldBack: 6 });
  });

  it('sessionsAffected counts distinct sessions: one of two sessions failing three times through an outage is 1', async () => {
    const [failing] = await sessions(1);
    await sessions(1, 3600); // healthy, and not due in any sweep below
    for (let i = 0; i < 3; i++) {
      fx.endpoint.reply(fail503);
      expect(await refresh(failing as TestSession)).toMatchObject({ kind: 'transient' });
      // Past the session's own backoff, so that the same session fails again.
      const after = await fx.runtime.store.getSession((failing as TestSession).key, { consistent: true });
      fx.clock.advance(Math.max(0, (after?.nextAttemptAt ?? 0) - fx.clock.now()) + 1);
    }
    expect(await circuit()).toMatchObject({ state: 'open', consecutiveFailures: 3, sessionsFailed: 1 });
    expect(eventsOf('ProviderUnavailable')).toEqual([
      expect.objectContaining({ consecutiveFailures: 3, sessionsAffected: 1 }),
    ]);
    // The probe fails once more (same session), then a sweep's probe succeeds.
    fx.clock.advance(20_000);
    fx.endpoint.reply(fail503);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ failedTransient: 1 });
    fx.clock.advance(20_000);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ refreshed: 1 });
    expect((await circuit()).state).toBe('closed');
    expect(eventsOf('ProviderRecovered')).toEqual([expect.objectContaining({ sessionsAffected: 1 })]);
  });

  it('sessionsAffected counts a sweep whose probe fails and holds the other due session back as two sessions', async () => {
    const [failing] = await sessions(1);
    await sessions(1, 300); // due too, less urgent: the probe is the failing session's
    for (let i = 0; i < 3; i++) {
      fx.endpoint.reply(fail503);
      expect(await refresh(failing as TestSession)).toMatchObject({ kind: 'transient' });
      const after = await fx.runtime.store.getSession((failing as TestSession).key, { consistent: true });
      fx.clock.advance(Math.max(0, (after?.nextAttemptAt ?? 0) - fx.clock.now()) + 1);
    }
    expect(await circuit()).toMatchObject({ state: 'open', sessionsFailed: 1 });
    // The probe (the failing session) fails again; the other due session is held back: two sessions
    // the sweep could not refresh, though only one ever failed.
    fx.clock.advance(20_000);
    fx.endpoint.reply(fail503);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 2, failedTransient: 1, skipped: 1 });
    expect(await circuit()).toMatchObject({ sessionsFailed: 1 });
    fx.clock.advance(20_000);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ refreshed: 2 });
    expect((await circuit()).state).toBe('closed');
    expect(eventsOf('ProviderRecovered')).toEqual([expect.objectContaining({ sessionsAffected: 2 })]);
  });

  it('held-back counts of one fanned-out sweep add up across its slices; the largest sweep is kept', async () => {
    fx.endpoint.reply(fail503, fail503, fail503);
    for (const s of await sessions(3)) await refresh(s);
    const store = fx.runtime.store;
    // Two slices of sweep A, then three of sweep B (two of them at once), then a small sweep C.
    await store.noteCircuitHeldBack(providerId, 4, 'sweep-a');
    await store.noteCircuitHeldBack(providerId, 5, 'sweep-a');
    expect((await circuit()).heldBack).toBe(9);
    await store.noteCircuitHeldBack(providerId, 3, 'sweep-b');
    await Promise.all([
      store.noteCircuitHeldBack(providerId, 4, 'sweep-b'),
      store.noteCircuitHeldBack(providerId, 6, 'sweep-b'),
    ]);
    expect((await circuit()).heldBack).toBe(13);
    await store.noteCircuitHeldBack(providerId, 2, 'sweep-c');
    expect((await circuit()).heldBack).toBe(13);
    // ProviderRecovered reports it once a probe succeeds.
    fx.clock.advance(20_000);
    await fx.runtime.sweeper.sweep();
    expect((await circuit()).state).toBe('closed');
    const recovered = fx.events.find((e) => e.detailType === 'ProviderRecovered');
    expect(recovered?.detail).toMatchObject({ sessionsAffected: 13 });
  });

  it('the sweep probes with one session, waits for the answer, then refreshes the rest', async () => {
    const ss = await sessions(6);
    fx.endpoint.reply(fail503, fail503, fail503);
    for (const s of ss.slice(0, 3)) await refresh(s);
    fx.clock.advance(20_000);
    const summary = await fx.runtime.sweeper.sweep();
    expect(summary).toMatchObject({ due: 6, refreshed: 6, skipped: 0 });
    expect(fx.endpoint.requests).toHaveLength(9);
    expect((await circuit()).state).toBe('closed');
  });

  it('a token call needing a refresh gets 503 with Retry-After = next probe; a valid token is served', async () => {
    const ss = await sessions(4, 30);
    fx.endpoint.reply(fail503, fail503, fail503);
    for (const s of ss.slice(0, 3)) await refresh(s);
    const s = ss[3] as TestSession;
    const valid = await fx.runtime.tokens.getToken(s.key, { minValidity: 10, force: false });
    expect(valid.access_token).toBe(s.accessToken);
    const err = await fx.runtime.tokens
      .getToken(s.key, { minValidity: 60, force: false })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RefreshUnavailableError);
    expect((err as RefreshUnavailableError).retryAfterSeconds).toBe(2);
    expect((err as Error).message).toMatch(/circuit is open/);
    // A session that failed in the outage answers with the next probe too, not its own 11 s backoff.
    const failed = await fx.runtime.tokens
      .getToken((ss[0] as TestSession).key, { minValidity: 60, force: false })
      .catch((e: unknown) => e as RefreshUnavailableError);
    expect((failed as RefreshUnavailableError).retryAfterSeconds).toBe(2);
    expect(fx.endpoint.requests).toHaveLength(3);
  });

  it('invalid_client flags the provider and opens the circuit; a successful grant clears both', async () => {
    const ss = await sessions(3);
    fx.endpoint.reply({ kind: 'error', status: 401, error: 'invalid_client' });
    expect(await refresh(ss[0] as TestSession)).toMatchObject({ kind: 'client_rejected' });
    const rejected = await fx.runtime.providers.get(providerId);
    expect(rejected.clientRejectedAt).toBe(fx.clock.seconds());
    expect(rejected.health).toMatchObject({ state: 'open', lastError: { code: 'invalid_client' } });
    expect(await refresh(ss[1] as TestSession)).toMatchObject({ kind: 'circuit_open' });
    fx.clock.advance(PROBE_DELAYS_MS[0] as number);
    expect(await refresh(ss[1] as TestSession)).toMatchObject({ kind: 'refreshed' });
    const healed = await fx.runtime.providers.get(providerId);
    expect(healed.clientRejectedAt).toBeUndefined();
    expect(healed.health.state).toBe('closed');
  });

  it('gives the probe back when its session cannot be leased', async () => {
    const ss = await sessions(4);
    fx.endpoint.reply(fail503, fail503, fail503);
    for (const s of ss.slice(0, 3)) await refresh(s);
    fx.clock.advance(PROBE_DELAYS_MS[0] as number);
    // ss[0] is backing off on its own and outside any closed outage's window: its lease is refused.
    const notDue: LeaseCondition = { kind: 'sweep', dueBy: fx.clock.seconds() - 3600 };
    expect(await fx.runtime.refresher.refresh((ss[3] as TestSession).key, notDue)).toEqual({
      kind: 'refused',
    });
    expect(await circuit()).toMatchObject({ state: 'half_open', probeOwner: undefined });
    expect(await refresh(ss[3] as TestSession)).toMatchObject({ kind: 'refreshed' });
    expect((await circuit()).state).toBe('closed');
  });

  it('a PUT of the provider starts it with a closed circuit', async () => {
    const ss = await sessions(3);
    fx.endpoint.reply({ kind: 'error', status: 401, error: 'invalid_client' });
    await refresh(ss[0] as TestSession);
    expect((await circuit()).state).toBe('open');
    await addProvider(fx, providerId);
    expect(await circuit()).toMatchObject({ state: 'closed', consecutiveFailures: 0 });
  });
});
