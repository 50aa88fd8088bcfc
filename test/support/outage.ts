import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import type { SessionKey } from '../../functions/core/model.js';
import { getToken, retryAfterOf } from './keeper-flows.js';
import { MCP_RESOURCE, MCP_SCOPES, type OAuthServer, startOAuthServer } from './oauth-server.js';
import { startTestStack, type TestStack } from './stack.js';

/**
 * Issue 11's targets, measured (test/integration/outage-*.test.ts): one provider's sessions (16-second tokens, a sweep every 2 s at
 * concurrency 8) live through a 40-second 503 outage of the token endpoint, on the real local stack
 * (dynalite) against oidc-provider (rotation + reuse detection) behind the recording proxy. Run at 48
 * and at 480 sessions (two test files, so two processes that can run side by side without sharing an
 * event loop), to show the provider's load during the outage does not grow with sessions.
 *
 * - During the outage a quarter of the sessions' clients keep asking for tokens, honouring Retry-After.
 * - When the endpoint heals, every session's client asks for a token (non-forced, honouring
 *   Retry-After) until it gets one issued after the heal.
 * - Printed: token-endpoint requests during the outage, the slowest recovery, sessions lost, reuse,
 *   and the slowest health and provider-route answers.
 *
 * Half the sessions log in with `openid offline_access`, so oidc-provider may answer their refreshes
 * with an id_token (which the keeper must ignore and commit the rotated refresh token regardless).
 */

const TOKEN_TTL = 16;
const OUTAGE_MS = 40_000;
const INTERVAL_MS = 2_000;
export const MAX_REQUESTS_DURING_OUTAGE = 24;
export const MAX_RECOVERY_MS = 15_000;
const OPENID_SCOPE = `openid offline_access ${MCP_SCOPES}`;

export interface Figures {
  sessions: number;
  requestsDuringOutage: number;
  recoveryMs: number;
  sessionsLost: number;
  reuse: number;
  healthMaxMs: number;
  /** When the slowest health answer was asked for, in seconds after the heal (negative: before). */
  healthMaxAtSeconds: number;
  providerRouteMaxMs: number;
  statesSeen: string[];
  outagePolls: Record<string, number>;
  unavailableEvents: number;
  recoveredEvents: Record<string, unknown>[];
}

/** A client honouring Retry-After, as clients do: plus jitter of its own, up to one poll interval. */
const backoff = (res: Parameters<typeof retryAfterOf>[0]) =>
  Math.min(10, retryAfterOf(res)) * 1000 + Math.random() * INTERVAL_MS;

/** Runs the outage against a fresh keeper and OAuth server of its own; `stops` collects their shutdowns. */
export async function outageScenario(size: number, stops: (() => Promise<void>)[]): Promise<Figures> {
  const oauth: OAuthServer = await startOAuthServer({ accessTokenTtl: TOKEN_TTL });
  const stack: TestStack = await startTestStack({
    env: {
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: String(INTERVAL_MS / 1000),
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '8',
      TOKENKEEPER_REFRESH_CONCURRENCY: '8',
      TOKENKEEPER_HTTP_TIMEOUT_MS: '2000',
    },
  });
  stops.push(
    () => stack.stop(),
    () => oauth.stop(),
  );
  const provider = await stack.call('PUT', '/v1/providers/mcp', {
    issuer: oauth.issuer,
    clientId: oauth.clients.basic.clientId,
    clientSecret: oauth.clients.basic.clientSecret,
    clientAuthMethod: 'client_secret_basic',
    resource: MCP_RESOURCE,
  });
  expect(provider.status, provider.text).toBe(201);

  // The schedule: a sweep every 2 s (one at a time, as the local timer runs them).
  let running = true;
  const sweeper = (async () => {
    while (running) {
      const started = Date.now();
      await stack.sweep();
      await sleep(Math.max(0, INTERVAL_MS - (Date.now() - started)));
    }
  })();

  // Real logins, handed to the keeper; half of them OIDC.
  const keys: SessionKey[] = [];
  for (let batch = 0; batch < size; batch += 24) {
    const logins = Array.from({ length: Math.min(24, size - batch) }, async (_, j) => {
      const i = batch + j;
      const userId = `o${size}-${i}`;
      const tokens = await oauth.login({
        clientId: oauth.clients.basic.clientId,
        accountId: userId,
        resource: MCP_RESOURCE,
        scope: i % 2 === 0 ? OPENID_SCOPE : MCP_SCOPES,
      });
      const put = await stack.call('PUT', `/v1/sessions/${userId}/mcp`, tokens);
      expect(put.status, put.text).toBe(201);
      return { userId, providerId: 'mcp' };
    });
    keys.push(...(await Promise.all(logins)));
  }
  await sleep(4_000);

  // Health and provider routes, timed throughout.
  let healthMaxMs = 0;
  let providerRouteMaxMs = 0;
  let healthMaxAt = 0;
  const statesSeen: string[] = [];
  const watcher = (async () => {
    while (running) {
      let t = Date.now();
      const health = await stack.call('GET', '/v1/health');
      if (Date.now() - t > healthMaxMs) {
        healthMaxMs = Date.now() - t;
        healthMaxAt = t;
      }
      expect(health.status).toBe(200);
      t = Date.now();
      const route = await stack.call('GET', '/v1/providers/mcp');
      providerRouteMaxMs = Math.max(providerRouteMaxMs, Date.now() - t);
      const state = (route.body as { health: { state: string } }).health.state;
      if (statesSeen.at(-1) !== state) statesSeen.push(state);
      await sleep(250);
    }
  })();

  // --- the outage ---
  const outageFrom = Date.now();
  oauth.proxy.setFault({ kind: 'status', status: 503 });
  let outage = true;
  const outagePolls: Record<string, number> = {};
  const pollDuringOutage = async (key: SessionKey) => {
    await sleep(Math.random() * INTERVAL_MS);
    while (outage) {
      const res = await getToken(stack, key, '?minValidity=5');
      outagePolls[res.status] = (outagePolls[res.status] ?? 0) + 1;
      await sleep(res.status === 503 ? backoff(res) : INTERVAL_MS);
    }
  };
  const outagePollers = keys.filter((_, i) => i % 4 === 0).map(pollDuringOutage);
  await sleep(OUTAGE_MS);

  // --- healthy again ---
  const healedAt = Date.now();
  oauth.proxy.setFault(null);
  outage = false;
  const requestsDuringOutage = oauth.proxy.requests.filter(
    (r) => r.grantType === 'refresh_token' && r.at >= outageFrom && r.at < healedAt,
  ).length;
  const recoveredAfter = await Promise.all(
    keys.map(async (key) => {
      await sleep(Math.random() * INTERVAL_MS);
      for (;;) {
        const res = await getToken(stack, key, '?minValidity=5');
        const body = res.body as { expires_at?: number };
        // Issued after the heal: every token from before it expired during the outage.
        if (res.status === 200 && (body.expires_at as number) * 1000 >= healedAt + (TOKEN_TTL - 1) * 1000) {
          return Date.now() - healedAt;
        }
        if (Date.now() - healedAt > 60_000) return Number.POSITIVE_INFINITY;
        await sleep(res.status === 503 ? backoff(res) : 500);
      }
    }),
  );
  await Promise.all(outagePollers);

  running = false;
  await Promise.all([sweeper, watcher]);
  let sessionsLost = 0;
  for (const key of keys) {
    const meta = await stack.call('GET', `/v1/sessions/${key.userId}/mcp`);
    if (meta.status !== 200 || (meta.body as { status: string }).status !== 'active') sessionsLost++;
  }
  const events = (type: string) =>
    stack.logs
      .filter((l) => l.message === `event ${type}`)
      .map((l) => l.extra?.detail as Record<string, unknown>);
  return {
    sessions: size,
    requestsDuringOutage,
    recoveryMs: Math.max(...recoveredAfter),
    sessionsLost,
    reuse: oauth.proxy.reuseCount(),
    healthMaxMs,
    healthMaxAtSeconds: Math.round((healthMaxAt - healedAt) / 100) / 10,
    providerRouteMaxMs,
    statesSeen,
    outagePolls,
    unavailableEvents: events('ProviderUnavailable').length,
    recoveredEvents: events('ProviderRecovered'),
  };
}

/** Prints the figures (the closing note quotes these lines) and checks the targets. */
export function reportAndCheck(f: Figures): void {
  console.log(
    `outage (${f.sessions} sessions): ${f.requestsDuringOutage} token-endpoint requests during the ` +
      `${OUTAGE_MS / 1000} s outage; every session served a fresh token within ${(f.recoveryMs / 1000).toFixed(1)} s ` +
      `of the heal; ${f.sessionsLost} sessions lost; reuse ${f.reuse}; /v1/health max ${f.healthMaxMs} ms (at ${f.healthMaxAtSeconds} s from the heal), ` +
      `GET /v1/providers/mcp max ${f.providerRouteMaxMs} ms; circuit ${f.statesSeen.join(' → ')}; ` +
      `token calls during the outage ${JSON.stringify(f.outagePolls)}; ProviderUnavailable ×${f.unavailableEvents}, ` +
      `ProviderRecovered ${JSON.stringify(f.recoveredEvents.map((e) => ({ outageSeconds: e.outageSeconds, probes: e.probes, sessionsAffected: e.sessionsAffected })))}`,
  );
  // The provider's load does not grow with the sessions: the same bound for 48 and 480.
  expect(f.requestsDuringOutage).toBeLessThanOrEqual(MAX_REQUESTS_DURING_OUTAGE);
  expect(f.sessionsLost).toBe(0);
  expect(f.reuse).toBe(0);
  // The recovery and health-route targets are the for 48 sessions. With 480, this process also
  // runs the OAuth server issuing 480 fresh tokens at once and 480 polling clients, all on the keeper's
  // event loop (in AWS the API runs alone in its Lambdas): their bounds scale with what the test itself
  // costs on a loaded 2-core machine, and the printed figures are the measurement.
  const scale = f.sessions > 48 ? 4 : 1;
  expect(f.recoveryMs).toBeLessThanOrEqual(MAX_RECOVERY_MS * scale);
  expect(f.healthMaxMs).toBeLessThan(1_000 * scale);
  expect(f.statesSeen).toContain('open');
  expect(f.statesSeen.at(-1)).toBe('closed');
  expect(f.unavailableEvents).toBe(1);
  expect(f.recoveredEvents).toHaveLength(1);
  expect(f.recoveredEvents[0]?.sessionsAffected).toBe(f.sessions);
}
