import { describe, expect, it } from 'vitest';
import {
  AUTO_SCALING_DEFAULTS,
  activityProfile,
  autoScaledDay,
  breakEvenUtilisation,
  keepAliveDay,
  MINUTES_PER_DAY,
  sealedTokenBytes,
} from '../../bench/cost-model.js';

const HOUR = 3600;
const times = {
  lifetimeSeconds: HOUR,
  minValiditySeconds: 60,
  windowSeconds: 600,
  keepAliveSeconds: 24 * HOUR,
};
const sum = (a: Float64Array) => a.reduce((s, v) => s + v, 0);
const scaling = { ...AUTO_SCALING_DEFAULTS, target: 0.7, minCapacity: 5, maxCapacity: 40_000 };

describe('keepAliveDay: refreshes one keepAlive session needs in a day', () => {
  it('refreshes on demand fewer times than the requests and at most once per token lifetime in the window', () => {
    // Act
    const day = keepAliveDay({ requestsPerDay: 24, activeHours: 8, startSpreadHours: 0 }, times);

    // Assess: 3 requests an hour, a token good for 59 minutes: about 6 refreshes in 8 hours, none by the sweep
    expect(day.onDemandPerDay).toBeGreaterThan(5.5);
    expect(day.onDemandPerDay).toBeLessThan(day.boundPerDay);
    expect(day.boundPerDay).toBe(9);
    expect(day.keepAlivePerDay).toBeCloseTo(0, 6);
    expect(sum(day.perMinute)).toBeCloseTo(day.onDemandPerDay + day.keepAlivePerDay, 6);
    // Nothing outside the window; the first minutes (an expired token every morning) are the busiest.
    expect(sum(day.perMinute.subarray(8 * 60))).toBeCloseTo(0, 9);
    expect(day.perMinute[0]).toBe(Math.max(...day.perMinute));
  });

  it('refreshes more when the same requests are spread over 24 hours (keepAlive’s worst case)', () => {
    const working = keepAliveDay({ requestsPerDay: 24, activeHours: 8, startSpreadHours: 0 }, times);
    const allDay = keepAliveDay({ requestsPerDay: 24, activeHours: 24, startSpreadHours: 0 }, times);

    // One request an hour against a 59-minute token: a refresh every other hour or so, well below eager's 28.8
    expect(allDay.onDemandPerDay).toBeGreaterThan(working.onDemandPerDay);
    expect(allDay.onDemandPerDay).toBeGreaterThan(11);
    expect(allDay.onDemandPerDay).toBeLessThan(13);
  });

  it('keeps an unused grant alive once per keep-alive period, and more often for a short idle lifetime', () => {
    // Act
    const idle = keepAliveDay({ requestsPerDay: 1e-9, activeHours: 8, startSpreadHours: 0 }, times);
    const shortIdle = keepAliveDay(
      { requestsPerDay: 24, activeHours: 8, startSpreadHours: 0 },
      { ...times, keepAliveSeconds: 8 * HOUR },
    );

    // Assess
    expect(idle.keepAlivePerDay).toBeCloseTo(1, 3);
    expect(idle.onDemandPerDay).toBeCloseTo(0, 6);
    expect(shortIdle.keepAlivePerDay).toBeGreaterThan(1.5);
  });
});

describe('activityProfile', () => {
  it('spreads the fleet’s windows over the start spread, keeping the day’s total', () => {
    const profile = activityProfile({ requestsPerDay: 24, activeHours: 8, startSpreadHours: 2 });
    expect(sum(profile)).toBeCloseTo(8 * 60, 6);
    expect(profile[0]).toBeCloseTo(1 / 120, 9);
    expect(profile[4 * 60]).toBeCloseTo(1, 9);
    expect(profile[12 * 60]).toBe(0);
  });
});

describe('autoScaledDay: DynamoDB target tracking over a day', () => {
  it('settles a flat demand at the target utilisation, with no decreases once steady', () => {
    // Act
    const day = autoScaledDay(new Float64Array(MINUTES_PER_DAY).fill(700), scaling);

    // Assess
    expect(day.peakCapacity).toBe(1000);
    expect(day.utilisation).toBeCloseTo(0.7, 6);
    expect(day.decreases).toBe(0);
    expect(day.throttledShare).toBe(0);
  });

  it('follows a working day up and down with a few decreases, below the target on average', () => {
    // Prepare: 1,000 units a second for 8 hours, 10 at night
    const demand = new Float64Array(MINUTES_PER_DAY).fill(10);
    demand.fill(1000, 0, 8 * 60);

    // Act
    const day = autoScaledDay(demand, scaling);

    // Assess: the night is billed near the minimum, not at the day's peak
    expect(day.peakCapacity).toBe(Math.ceil(1000 / 0.7));
    expect(day.unitHours).toBeLessThan(0.5 * 24 * day.peakCapacity);
    expect(day.utilisation).toBeLessThan(0.7);
    expect(day.utilisation).toBeGreaterThan(0.4);
    expect(day.decreases).toBeGreaterThan(0);
    expect(day.decreases).toBeLessThanOrEqual(4 + 23);
    // The morning step outruns the scale-out delay: some demand is throttled until it catches up.
    expect(day.throttledShare).toBeGreaterThan(0);
    expect(day.throttledShare).toBeLessThan(0.02);
  });

  it('allows only the decreases DynamoDB allows: four, then one per quiet hour', () => {
    // Prepare: a demand that drops every 20 minutes would want ~70 decreases a day
    const demand = new Float64Array(MINUTES_PER_DAY).map((_, m) =>
      Math.floor(m / 20) % 2 === 0 ? 1000 : 10,
    );

    // Act
    const day = autoScaledDay(demand, { ...scaling, scaleInAfterMinutes: 5 });

    // Assess
    expect(day.decreases).toBeLessThanOrEqual(4 + 23);
  });

  it('never provisions beyond the maximum, and throttles what the maximum cannot carry', () => {
    const day = autoScaledDay(new Float64Array(MINUTES_PER_DAY).fill(2000), {
      ...scaling,
      maxCapacity: 1000,
    });
    expect(day.peakCapacity).toBe(1000);
    expect(day.throttledShare).toBeCloseTo(0.5, 2);
  });
});

describe('breakEvenUtilisation', () => {
  it('is where a provisioned unit-second costs one on-demand request unit', () => {
    expect(breakEvenUtilisation(0.00065, 0.625e-6)).toBeCloseTo(0.2889, 4);
    expect(breakEvenUtilisation(0.00013, 0.125e-6)).toBeCloseTo(0.2889, 4);
  });
});

describe('sealedTokenBytes', () => {
  it('counts the text envelope as its base64url characters and the binary one as its bytes', () => {
    // tk1.k1.<16 chars of nonce>.<base64url of 1,040 bytes = 1,387 chars>
    expect(sealedTokenBytes(1024, 'text')).toBe(4 + 2 + 1 + 16 + 1 + 1387);
    // version, key-id length, "k1", nonce, ciphertext, tag
    expect(sealedTokenBytes(1024, 'binary')).toBe(1 + 1 + 2 + 12 + 1024 + 16);
  });
});
