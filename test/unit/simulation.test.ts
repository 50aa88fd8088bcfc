import { describe, expect, it } from 'vitest';
import { simulate } from '../../bench/sim/simulation.js';

/**
 * The simulation (bench/sim, `npm run simulate`) at a small scale: the real sweep, refresher and
 * token service on virtual time keep every session fresh when the fleet is large enough, and the
 * simulation reports missed refreshes when it is not, so its million-session figures can be trusted
 * to show trouble.
 */

describe('simulation of the refresh fleet', () => {
  it('keeps 2,000 sessions fresh over two simulated hours at 1 s provider latency', async () => {
    const r = await simulate({ sessions: 2_000, providerLatencyMs: 1_000, maxWorkers: 4, seed: 7 });
    expect(r.missed).toBe(0);
    expect(r.provider.reuses).toBe(0);
    expect(r.provider.lostRotations).toBe(0);
    expect(r.provider.invalidGrants).toBe(0);
    // Every session refreshed about once an hour (each 55 minutes: window 600 s, interval 300 s).
    expect(r.refreshes.sweep).toBeGreaterThan(2 * 2_000);
    expect(r.refreshes.perSessionHour).toBeGreaterThan(1);
    expect(r.refreshes.perSessionHour).toBeLessThan(1.2);
    // A sweep gets through its ~170 due sessions (16 grants of ~1 s at a time) within a minute of
    // starting, long before they expire.
    expect(r.lateness.p99).toBeLessThan(60);
    expect(r.margin.min).toBeGreaterThan(200);
    // One slice per shard (about 170 due per sweep, slices of up to 1,000): four workers at most.
    expect(r.workers.peak).toBe(4);
    expect(r.queue.sent).toBe(4 * 24);
    expect(r.workers.overTimeout).toBe(0);
    // Lease 2 + commit 2 write units on a ~1.8 KB item, 2 index writes (old entry out, new one in).
    expect(r.dynamo.wcuPerRefresh).toBeGreaterThan(5.9);
    expect(r.dynamo.wcuPerRefresh).toBeLessThan(6.2);
    expect(r.tokens.requests).toBeGreaterThan(1_000);
    expect(r.tokens.errors).toEqual({});
    expect(r.provider.abortedSignals).toBe(0);
  }, 60_000);

  it('reports missed refreshes when the fleet is too small for the load', async () => {
    // One worker with one grant at a time: 500 sessions due per 300 s sweep at ~1.1 s each.
    const r = await simulate({
      sessions: 6_000,
      providerLatencyMs: 1_000,
      maxWorkers: 1,
      concurrency: 1,
      tokenSample: 0,
      seed: 7,
    });
    expect(r.workers.peak).toBe(1);
    expect(r.missed).toBeGreaterThan(100);
    expect(r.provider.reuses).toBe(0);
  }, 60_000);
});
