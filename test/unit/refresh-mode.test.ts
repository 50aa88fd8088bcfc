import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_SCHEDULE, refreshSchedule } from '../../functions/core/store/store.js';
import { ensureTable } from '../../functions/core/store/table.js';
import {
  addProvider,
  addSession,
  createCoreFixture,
  readSession,
  uniqueId,
} from '../support/core-fixture.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

/**
 * Short-lived tokens (shorter than one sweep period plus the longest sweep) are served on demand:
 * the sweep no longer spends a grant on every one of them at every run, nor counts them as missed;
 * it only keeps their grant alive.
 */
describe('refresh modes: scheduled and on demand', () => {
  let handle: DynaliteHandle;

  beforeAll(async () => {
    handle = await startDynalite();
  });
  afterAll(() => handle?.stop());

  /** A 60-second sweep interval, a 100-second window and a 20-second sweep budget. */
  const setup = async (env: Record<string, string> = {}) => {
    const tableName = uniqueId('modes');
    await ensureTable(handle.client, tableName);
    const fx = createCoreFixture(handle, {
      tableName,
      env: {
        TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '60',
        TOKENKEEPER_REFRESH_WINDOW_SECONDS: '100',
        TOKENKEEPER_SWEEP_BUDGET_SECONDS: '20',
        TOKENKEEPER_HTTP_TIMEOUT_MS: '5000',
        TOKENKEEPER_LEASE_SECONDS: '30',
        ...env,
      },
    });
    return { fx, providerId: await addProvider(fx) };
  };

  it('20-second tokens, 60-second interval: on demand from the hand-over, no missed refresh, a grant on demand, a keep-alive grant on schedule', async () => {
    const { fx, providerId } = await setup({ TOKENKEEPER_KEEPALIVE_SECONDS: '3600' });
    const s = await addSession(fx, { providerId, expiresIn: 20, storedLifetime: 20 });
    // Stored with 20-second tokens: on demand from the start, due only for its keep-alive.
    expect(await fx.runtime.sessions.get(s.key)).toMatchObject({
      refreshMode: 'on_demand',
      refreshable: true,
    });
    expect((await readSession(fx, s.key)).record.refreshDueAt).toBe(fx.clock.seconds() + 3600);

    // Sweeps while its token is long expired: nothing due, nothing missed, no grant.
    for (let i = 0; i < 5; i++) {
      fx.clock.advance(60_000);
      expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 0, refreshed: 0, missed: 0 });
    }
    expect(fx.endpoint.requests).toHaveLength(0);

    // A caller asks: one grant on demand, the token served; the grant's 20-second tokens keep it on demand.
    fx.endpoint.reply({ kind: 'rotate', expiresIn: 20 });
    const served = await fx.runtime.tokens.getToken(s.key, { minValidity: 10, force: false });
    expect(served).toMatchObject({ access_token: fx.endpoint.issued[0]?.accessToken, expires_in: 20 });
    expect(fx.endpoint.requests).toHaveLength(1);
    expect(await fx.runtime.sessions.get(s.key)).toMatchObject({ refreshMode: 'on_demand' });

    // The keep-alive comes due one period after that grant, within the sweep's window.
    const keepAliveDue = fx.clock.seconds() + 3600;
    expect((await readSession(fx, s.key)).record.refreshDueAt).toBe(keepAliveDue);
    fx.clock.advance((3600 - 90) * 1000);
    fx.endpoint.reply({ kind: 'rotate', expiresIn: 20 });
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 1, refreshed: 1, missed: 0 });
    expect(fx.endpoint.presented()).toHaveLength(2);
    expect((await readSession(fx, s.key)).refreshToken).toBe(fx.endpoint.issued[1]?.refreshToken);
  });

  it('4-second tokens under a 6-second interval: on demand from the PUT, and each grant decides again', async () => {
    const { fx, providerId } = await setup({
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '6',
      TOKENKEEPER_SWEEP_BUDGET_SECONDS: '8',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '20',
    });
    const short = { userId: uniqueId('user'), providerId };
    const long = { userId: uniqueId('user'), providerId };
    const put = await fx.runtime.sessions.put(short, {
      access_token: 'a4',
      refresh_token: 'r4',
      expires_in: 4,
    });
    expect(put.session.refreshMode).toBe('on_demand');
    expect((await fx.runtime.sessions.get(short)).refreshMode).toBe('on_demand');
    // 60-second tokens outlive the interval plus the longest sweep (14 s): scheduled, due at expiry.
    await fx.runtime.sessions.put(long, { access_token: 'a60', refresh_token: 'r60', expires_in: 60 });
    expect((await readSession(fx, long)).record).toMatchObject({
      refreshMode: 'scheduled',
      refreshDueAt: fx.clock.seconds() + 60,
    });

    // The provider now issues 60-second tokens: the grant makes the short session scheduled.
    fx.endpoint.reply({ kind: 'rotate', expiresIn: 60 });
    await fx.runtime.tokens.getToken(short, { minValidity: 0, force: true });
    expect((await fx.runtime.sessions.get(short)).refreshMode).toBe('scheduled');
    // And back: a grant of 4-second tokens makes it on demand again.
    fx.endpoint.reply({ kind: 'rotate', expiresIn: 4 });
    await fx.runtime.tokens.getToken(short, { minValidity: 0, force: true });
    expect((await fx.runtime.sessions.get(short)).refreshMode).toBe('on_demand');
  });

  it('an on-demand session whose refresh token expiry is known is kept alive before it', async () => {
    const { fx, providerId } = await setup();
    const s = await addSession(fx, { providerId, expiresIn: 20 });
    fx.endpoint.reply({
      kind: 'json',
      body: { access_token: 'a1', refresh_token: 'r1', expires_in: 30, refresh_expires_in: 1800 },
    });
    await fx.runtime.sweeper.sweep();
    const { record } = await readSession(fx, s.key);
    expect(record).toMatchObject({ refreshMode: 'on_demand', refreshDueAt: fx.clock.seconds() + 1800 });

    fx.clock.advance((1800 - 100) * 1000);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 1, refreshed: 1, missed: 0 });
    expect(fx.endpoint.presented()).toEqual([s.refreshToken, 'r1']);
  });

  it('tokens that outlive a sweep period stay scheduled, refreshed before they expire', async () => {
    const { fx, providerId } = await setup();
    const s = await addSession(fx, { providerId, expiresIn: 20 });
    fx.endpoint.reply({ kind: 'rotate', expiresIn: 600 });
    await fx.runtime.sweeper.sweep();
    expect(await fx.runtime.sessions.get(s.key)).toMatchObject({ refreshMode: 'scheduled' });
    expect((await readSession(fx, s.key)).record.refreshDueAt).toBe(fx.clock.seconds() + 600);
  });

  it('a keepAlive provider: hour-long tokens served on demand, the sweep keeps only the grant alive', async () => {
    const { fx, providerId } = await setup({ TOKENKEEPER_KEEPALIVE_SECONDS: '7200' });
    await fx.runtime.providers.put(providerId, {
      tokenEndpoint: fx.endpoint.url,
      clientId: 'tk-client',
      refreshPolicy: 'keepAlive',
      refreshTokenIdleSeconds: 86_400,
    });
    const key = { userId: uniqueId('user'), providerId };
    const put = await fx.runtime.sessions.put(key, {
      access_token: 'at-login',
      refresh_token: 'rt-login',
      expires_in: 3600,
    });
    // On demand from the login on, due when the grant would die: the declared idle lifetime.
    expect(put.session.refreshMode).toBe('on_demand');
    expect((await readSession(fx, key)).record.refreshDueAt).toBe(fx.clock.seconds() + 86_400);

    // The access token expires; the sweeps around it send nothing and count nothing missed.
    for (const step of [3500, 200, 3600]) {
      fx.clock.advance(step * 1000);
      expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 0, refreshed: 0, missed: 0 });
    }
    expect(fx.endpoint.requests).toHaveLength(0);

    // A caller gets a fresh token on demand; the grant restarts the idle clock.
    const served = await fx.runtime.tokens.getToken(key, { minValidity: 60, force: false });
    expect(served).toMatchObject({ access_token: fx.endpoint.issued[0]?.accessToken, expires_in: 3600 });
    const after = await readSession(fx, key);
    expect(after.record).toMatchObject({
      refreshMode: 'on_demand',
      refreshDueAt: fx.clock.seconds() + 86_400,
    });

    // The operator drops the idle lifetime: the next grant falls back to the keep-alive period.
    await fx.runtime.providers.put(providerId, {
      tokenEndpoint: fx.endpoint.url,
      clientId: 'tk-client',
      refreshPolicy: 'keepAlive',
    });
    fx.clock.advance((86_400 - 100) * 1000);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 1, refreshed: 1, missed: 0 });
    expect(fx.endpoint.presented()).toEqual(['rt-login', fx.endpoint.issued[0]?.refreshToken]);
    expect((await readSession(fx, key)).record.refreshDueAt).toBe(fx.clock.seconds() + 7200);
  });

  it('a policy change reaches each session at its next grant, both ways', async () => {
    const { fx, providerId } = await setup();
    const registration = { tokenEndpoint: fx.endpoint.url, clientId: 'tk-client' };
    const key = { userId: uniqueId('user'), providerId };
    await fx.runtime.sessions.put(key, { access_token: 'a0', refresh_token: 'r0', expires_in: 3600 });
    expect((await readSession(fx, key)).record).toMatchObject({
      refreshMode: 'scheduled',
      refreshDueAt: fx.clock.seconds() + 3600,
    });

    // eager → keepAlive: the session keeps its schedule until the sweep's grant, which applies the policy.
    await fx.runtime.providers.put(providerId, { ...registration, refreshPolicy: 'keepAlive' });
    expect((await readSession(fx, key)).record.refreshMode).toBe('scheduled');
    fx.clock.advance((3600 - 90) * 1000);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 1, refreshed: 1 });
    expect((await readSession(fx, key)).record).toMatchObject({
      refreshMode: 'on_demand',
      refreshDueAt: fx.clock.seconds() + 86_400,
    });

    // keepAlive → eager: the next grant (here on demand) puts the session back on the sweep's schedule.
    await fx.runtime.providers.put(providerId, registration);
    fx.clock.advance(3600 * 1000);
    expect(await fx.runtime.sweeper.sweep()).toMatchObject({ due: 0 });
    await fx.runtime.tokens.getToken(key, { minValidity: 60, force: false });
    expect((await readSession(fx, key)).record).toMatchObject({
      refreshMode: 'scheduled',
      refreshDueAt: fx.clock.seconds() + 3600,
    });
    expect(fx.endpoint.requests).toHaveLength(2);
  });

  it('refreshSchedule with the keepAlive policy: due when the grant would die, whatever the access token', () => {
    const policy = { onDemandBelowSeconds: 80, keepAliveSeconds: 500 };
    const keepAlive = { refreshPolicy: 'keepAlive' } as const;
    // Hour-long tokens (scheduled under eager) are on demand; due one keep-alive period on.
    expect(refreshSchedule({ expiresAt: 4600 }, 1000, policy, keepAlive)).toEqual({
      mode: 'on_demand',
      dueAt: 1500,
    });
    // The declared idle lifetime replaces the keep-alive period.
    const idle = { ...keepAlive, refreshTokenIdleSeconds: 7200 };
    expect(refreshSchedule({ expiresAt: 4600 }, 1000, policy, idle)).toEqual({
      mode: 'on_demand',
      dueAt: 8200,
    });
    // The provider's stated expiry wins over the keep-alive period; with both, the earlier.
    expect(refreshSchedule({ expiresAt: 4600, refreshExpiresAt: 9000 }, 1000, policy, keepAlive)).toEqual({
      mode: 'on_demand',
      dueAt: 9000,
    });
    expect(refreshSchedule({ expiresAt: 4600, refreshExpiresAt: 9000 }, 1000, policy, idle).dueAt).toBe(8200);
    expect(refreshSchedule({ expiresAt: 4600, refreshExpiresAt: 2800 }, 1000, policy, idle).dueAt).toBe(2800);
    // No access-token expiry: still kept alive (eager leaves such a session out of the index).
    expect(refreshSchedule({}, 1000, policy, keepAlive)).toEqual({ mode: 'on_demand', dueAt: 1500 });
    // eager, given or not, is today's schedule.
    for (const eager of [{ refreshPolicy: 'eager' as const }, {}]) {
      expect(refreshSchedule({ expiresAt: 4600 }, 1000, policy, eager)).toEqual({
        mode: 'scheduled',
        dueAt: 4600,
      });
      expect(refreshSchedule({}, 1000, policy, eager)).toEqual({ mode: 'on_demand', dueAt: undefined });
    }
  });

  it('refreshSchedule: the threshold, the keep-alive and the refresh-token expiry', () => {
    const policy = { onDemandBelowSeconds: 80, keepAliveSeconds: 500 };
    expect(refreshSchedule({ expiresAt: 1079 }, 1000, policy)).toEqual({ mode: 'on_demand', dueAt: 1500 });
    expect(refreshSchedule({ expiresAt: 1080 }, 1000, policy)).toEqual({ mode: 'scheduled', dueAt: 1080 });
    expect(refreshSchedule({ expiresAt: 1050, refreshExpiresAt: 1300 }, 1000, policy)).toEqual({
      mode: 'on_demand',
      dueAt: 1300,
    });
    expect(refreshSchedule({ expiresAt: 5000, refreshExpiresAt: 1300 }, 1000, policy)).toEqual({
      mode: 'scheduled',
      dueAt: 1300,
    });
    expect(refreshSchedule({}, 1000, policy)).toEqual({ mode: 'on_demand', dueAt: undefined });
    expect(refreshSchedule({ expiresAt: 1010 }, 1000, DEFAULT_SCHEDULE).mode).toBe('scheduled');
    expect(refreshSchedule({ expiresAt: 990 }, 1000, DEFAULT_SCHEDULE)).toEqual({
      mode: 'scheduled',
      dueAt: 990,
    });
  });
});
