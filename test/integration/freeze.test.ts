import { afterEach, describe, expect, it } from 'vitest';
import { type FreezeFigures, type FreezeWorld, runFreeze, startFreezeWorld } from '../support/freeze.js';

/**
 * A keeper paused while its grants are at the provider, as a long GC pause, a throttled container or
 * a closed laptop lid pause it: real keeper processes (bin/local.ts) stopped with SIGSTOP and resumed
 * with SIGCONT, oidc-provider with refresh-token rotation and reuse detection behind a proxy that holds
 * each answer after the provider has rotated, dynalite as the shared table.
 *
 * Short settings keep each case within tens of seconds: a 3.5 s HTTP timeout, a 5 s grant life and an
 * 11 s lease. The proxy forwards each grant at once and holds the provider's answer until just after
 * the SIGSTOP (within a second or two of the grant), so every grant would succeed without the pause.
 */

const SESSIONS = 10;
const LEASE_SECONDS = 11;
const FREEZE_PAST_LEASE_MS = (LEASE_SECONDS + 3) * 1000;
const ENV = {
  TOKENKEEPER_HTTP_TIMEOUT_MS: '3500',
  // The grant's own life (5 s): overdue when the keeper wakes, as the HTTP timeout is.
  TOKENKEEPER_GRANT_TIMEOUT_MS: '5000',
  TOKENKEEPER_LEASE_SECONDS: String(LEASE_SECONDS),
  TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '600',
  TOKENKEEPER_REFRESH_WINDOW_SECONDS: '700',
  TOKENKEEPER_SWEEP_BUDGET_SECONDS: '30',
  TOKENKEEPER_CIRCUIT_PROBE_BASE_MS: '500',
  TOKENKEEPER_CIRCUIT_PROBE_MAX_MS: '2000',
};

let world: FreezeWorld | undefined;

afterEach(async () => {
  await world?.stop();
  world = undefined;
});

function report(name: string, f: FreezeFigures): void {
  const { sweepLines, ...figures } = f;
  process.stdout.write(`freeze figures (${name}): ${JSON.stringify(figures)}\n`);
  for (const [keeper, lines] of Object.entries(sweepLines)) {
    for (const line of lines) process.stdout.write(`  ${keeper}: ${line}\n`);
  }
}

const log = (line: string) => process.stdout.write(`  ${line}\n`);

/** The statuses the other keeper answered, during the freeze and after. */
function otherAnswers(f: FreezeFigures): Record<string, number> {
  const all = { ...f.otherDuringFreeze };
  for (const [status, n] of Object.entries(f.otherAfterThaw)) all[status] = (all[status] ?? 0) + n;
  return all;
}

/** No refresh token presented twice, every session active, and each refreshable again. */
function expectNothingLost(f: FreezeFigures): void {
  expect(f.reuses).toBe(0);
  expect(f.refusedGrants).toBe(0);
  expect(f.lost).toBe(0);
  expect(f.active).toBe(SESSIONS);
  expect(f.forced).toEqual({ 200: SESSIONS });
  expect(f.refreshableAfter).toBe(SESSIONS);
}

describe('a keeper frozen while its grants are in flight', () => {
  it('alone, stopped longer than its leases, its own sweep timer firing on waking: no reuse, every session active and refreshable', async () => {
    world = await startFreezeWorld({ sessions: SESSIONS, env: ENV });
    const figures = await runFreeze(world, {
      processes: 1,
      sessions: SESSIONS,
      freezeMs: FREEZE_PAST_LEASE_MS,
      // Each answer's head and half its body reach the keeper's socket while it sleeps; the rest comes
      // 1.5 s after it wakes, so its answers are still being read when the calls below reach it.
      tailAfterThawMs: 1_500,
      sweep: 'timer',
      env: ENV,
      // Its timer sweeps every 4 s: the first takes every session; on waking the timer is overdue.
      frozenEnv: { TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '4' },
      // An on-demand and a forced call of each session wait in its sockets and reach it on waking too.
      callFrozen: true,
      log,
    });
    report('one process, frozen past its leases', figures);
    expect(figures.inFlightAtFreeze).toBe(SESSIONS);
    expect(figures.frozenMs).toBeGreaterThan(LEASE_SECONDS * 1000);
    expect(Object.keys(figures.frozenAnswers).filter((s) => s !== '200' && s !== '503')).toEqual([]);
    expect(Object.values(figures.frozenAnswers).reduce((a, b) => a + b, 0)).toBe(2 * SESSIONS);
    expectNothingLost(figures);
  }, 150_000);

  it('one of two, stopped for less than its leases: no reuse, no session lost, the other answers 200 or 503 only', async () => {
    world = await startFreezeWorld({ sessions: SESSIONS, env: ENV });
    const figures = await runFreeze(world, {
      processes: 2,
      sessions: SESSIONS,
      // Longer than the HTTP timeout (so the timeout is overdue on waking), well inside the lease.
      freezeMs: 7_000,
      sweep: 'request',
      env: ENV,
      log,
    });
    report('two processes, one frozen inside its leases', figures);
    expect(figures.inFlightAtFreeze).toBe(SESSIONS);
    expect(figures.frozenMs).toBeLessThan(LEASE_SECONDS * 1000);
    // The other keeper waits for the frozen one's leases: 503 while it sleeps, never 409.
    expect(figures.otherDuringFreeze['503'] ?? 0).toBeGreaterThan(0);
    const answers = otherAnswers(figures);
    expect(Object.keys(answers).filter((s) => s !== '200' && s !== '503')).toEqual([]);
    expectNothingLost(figures);
  }, 150_000);

  // docs/design.md, "A grant in flight": across processes the lease is the reservation, and loss
  // beyond the lease is accepted, announced, never silent.
  it('one of two, stopped longer than its leases: nothing presents a refresh token in flight before the lease ends; a session lost after is announced', async () => {
    world = await startFreezeWorld({ sessions: SESSIONS, env: ENV });
    const figures = await runFreeze(world, {
      processes: 2,
      sessions: SESSIONS,
      freezeMs: FREEZE_PAST_LEASE_MS,
      sweep: 'request',
      env: ENV,
      log,
    });
    report('two processes, one frozen past its leases', figures);
    expect(figures.inFlightAtFreeze).toBe(SESSIONS);
    expect(figures.frozenMs).toBeGreaterThan(LEASE_SECONDS * 1000);
    // The other keeper waits while the frozen keeper's leases run (503), and presents a refresh token
    // in flight only once they have ended; it answers nothing but 200, 503 and 409.
    expect(Object.keys(otherAnswers(figures)).filter((s) => !['200', '503', '409'].includes(s))).toEqual([]);
    expect(figures.otherDuringFreeze['503'] ?? 0).toBeGreaterThan(0);
    for (const at of figures.reusesAtMs) expect(at).toBeGreaterThanOrEqual(LEASE_SECONDS * 1000);
    expect(figures.reuses).toBeLessThanOrEqual(figures.inFlightAtFreeze);
    // No session is left in between: each is active and refreshable, or lost and announced.
    expect(figures.active + figures.lost).toBe(SESSIONS);
    expect(figures.refreshableAfter).toBe(figures.active);
    expect(figures.announcedLost).toBe(figures.lost);
  }, 150_000);
});
