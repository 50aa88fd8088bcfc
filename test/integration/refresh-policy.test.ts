import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionKey } from '../../functions/core/model.js';
import { getToken, metadata, SteppedClock } from '../support/keeper-flows.js';
import { type ScriptedProvider, startScriptedProvider } from '../support/scripted-provider.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * Issue 14's refresh policies on the real local stack (dynalite, the API and refresh handlers) against
 * scripted token endpoints that enforce their refresh tokens' lifetimes on the keeper's clock. Three
 * providers with 1-hour access tokens side by side, swept every 5 minutes (600 s window) for 13 idle hours:
 * - Keycloak-like, `keepAlive`: states `refresh_expires_in` (6 h here), rotates, detects reuse;
 * - Google-like, `keepAlive` with `refreshTokenIdleSeconds`: states no refresh expiry, but its refresh
 *   token dies after 12 hours unused (the scripted provider slides that idle window on each use);
 * - Google-like, `eager` (the default): today's behaviour, a sweep grant before every expiry.
 */

const HOUR = 3600;
const INTERVAL = 300;
const WINDOW = 600;
const KEYCLOAK_REFRESH_TTL = 6 * HOUR;
const GOOGLE_IDLE = 12 * HOUR;

interface Side {
  p: ScriptedProvider;
  key: SessionKey;
}

describe('refresh policies: keepAlive next to eager, 1-hour tokens', () => {
  const clock = new SteppedClock();
  let keeper: TestStack;
  let keycloak: Side;
  let google: Side;
  let eager: Side;
  const summaries: Record<string, number>[] = [];

  const connect = async (
    p: ScriptedProvider,
    providerId: string,
    settings: Record<string, unknown>,
  ): Promise<Side> => {
    const put = await keeper.call('PUT', `/v1/providers/${providerId}`, { ...p.registration(), ...settings });
    expect(put.status, put.text).toBe(201);
    const key = { userId: `user-${providerId}`, providerId };
    const session = await keeper.call('PUT', `/v1/sessions/${key.userId}/${providerId}`, p.login());
    expect(session.status, session.text).toBe(201);
    return { p, key };
  };

  /** Sweeps every interval until `seconds` later, as the scheduled rule would. */
  const sweepFor = async (seconds: number) => {
    for (let t = 0; t < seconds; t += INTERVAL) {
      clock.advance(INTERVAL * 1000);
      summaries.push(await keeper.sweep());
    }
  };

  const grantTimes = (s: Side) => s.p.refreshes.map((r) => Math.floor(r.at / 1000));

  beforeAll(async () => {
    keeper = await startTestStack({
      clock,
      env: {
        TOKENKEEPER_REFRESH_INTERVAL_SECONDS: String(INTERVAL),
        TOKENKEEPER_REFRESH_WINDOW_SECONDS: String(WINDOW),
      },
    });
    const start = (options: Parameters<typeof startScriptedProvider>[0]) =>
      startScriptedProvider({ ...options, clock });
    keycloak = await connect(
      await start({ dialect: 'keycloak', accessTokenTtl: HOUR, refreshTokenTtl: KEYCLOAK_REFRESH_TTL }),
      'keycloak',
      { refreshPolicy: 'keepAlive' },
    );
    google = await connect(
      await start({ dialect: 'google', accessTokenTtl: HOUR, refreshTokenTtl: GOOGLE_IDLE }),
      'google',
      { refreshPolicy: 'keepAlive', refreshTokenIdleSeconds: GOOGLE_IDLE },
    );
    eager = await connect(await start({ dialect: 'google', accessTokenTtl: HOUR }), 'google-eager', {});
  });

  afterAll(async () => {
    await keeper?.stop();
    await Promise.all([keycloak, google, eager].map((s) => s?.p.stop()));
  });

  it('the sessions are on demand (keepAlive) and scheduled (eager) from the login on', async () => {
    const mode = async (s: Side) => ((await metadata(keeper, s.key)) as { refreshMode?: string }).refreshMode;
    expect(await mode(keycloak)).toBe('on_demand');
    expect(await mode(google)).toBe('on_demand');
    expect(await mode(eager)).toBe('scheduled');
  });

  it('the sweeps around the access tokens’ expiry send keepAlive providers no grant; eager is refreshed', async () => {
    await sweepFor(HOUR + 600);
    expect(keycloak.p.refreshes).toHaveLength(0);
    expect(google.p.refreshes).toHaveLength(0);
    expect(eager.p.refreshes.map((r) => r.outcome)).toEqual(['issued']);
    expect(summaries.reduce((n, s) => n + (s.missed ?? 0), 0)).toBe(0);
  });

  it('a token call after expiry refreshes on demand and serves the fresh token; eager serves from the table', async () => {
    for (const s of [keycloak, google]) {
      const res = await getToken(keeper, s.key);
      expect(res.status, res.text).toBe(200);
      const body = res.body as { access_token: string; expires_in: number };
      expect(s.p.refreshes.map((r) => r.outcome)).toEqual(['issued']);
      expect(body.access_token).toBe(s.p.refreshes[0]?.accessToken);
      expect(body.expires_in).toBe(HOUR);
      expect(s.p.isActive(body.access_token)).toBe(true);
    }
    const res = await getToken(keeper, eager.key);
    expect(res.status).toBe(200);
    expect((res.body as { access_token: string }).access_token).toBe(eager.p.refreshes[0]?.accessToken);
    expect(eager.p.refreshes).toHaveLength(1);
  });

  it('left idle, each keepAlive grant is renewed by the sweep before it would die', async () => {
    const idleFrom = clock.seconds();
    await sweepFor(13 * HOUR);

    // Keycloak: renewed within one window (plus a sweep period) of each stated refresh-token expiry.
    const kc = grantTimes(keycloak);
    expect(kc.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < kc.length; i++) {
      const gap = (kc[i] as number) - (kc[i - 1] as number);
      expect(gap).toBeLessThan(KEYCLOAK_REFRESH_TTL);
      expect(gap).toBeGreaterThanOrEqual(KEYCLOAK_REFRESH_TTL - WINDOW - INTERVAL);
    }
    // Google: one sweep grant in the last window before its idle lifetime ends, none before.
    const gg = grantTimes(google).slice(1);
    expect(gg).toHaveLength(1);
    expect(gg[0] as number).toBeLessThan(idleFrom + GOOGLE_IDLE);
    expect(gg[0] as number).toBeGreaterThanOrEqual(idleFrom + GOOGLE_IDLE - WINDOW - INTERVAL);
    // Eager: a grant before every hourly expiry, as today.
    const eg = grantTimes(eager);
    expect(eg.length).toBeGreaterThanOrEqual(14);
    for (let i = 1; i < eg.length; i++) {
      expect((eg[i] as number) - (eg[i - 1] as number)).toBeLessThanOrEqual(HOUR);
    }

    // No grant was ever refused or a reuse; nothing was missed; every session still refreshes.
    for (const s of [keycloak, google, eager]) {
      expect(s.p.refreshes.every((r) => r.outcome === 'issued')).toBe(true);
      expect(s.p.reuseCount()).toBe(0);
      expect(await metadata(keeper, s.key)).toMatchObject({ status: 'active', failureCount: 0 });
      const forced = await getToken(keeper, s.key, '?force=true');
      expect(forced.status, forced.text).toBe(200);
      expect(s.p.refreshes.at(-1)?.outcome).toBe('issued');
    }
    expect(summaries.reduce((n, s) => n + (s.missed ?? 0), 0)).toBe(0);
    // What the policy saves: 13 idle hours cost the keepAlive providers a handful of grants.
    expect(kc.length + gg.length).toBeLessThanOrEqual(eg.length / 3);
  });
});
