import { DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import type { SessionKey } from '../../functions/core/model.js';
import { TABLE } from '../../functions/core/store/table.js';
import {
  getToken,
  metadata,
  type ServedToken,
  type SessionMetadataView,
  SteppedClock,
  storedRefreshToken,
} from '../support/keeper-flows.js';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import {
  type ScriptedProvider,
  type ScriptedProviderOptions,
  startScriptedProvider,
} from '../support/scripted-provider.js';
import { type CallResult, startTestStack, type TestStack } from '../support/stack.js';

/**
 * Issue 10: the keeper against real token-endpoint behaviours. First the issue's own scenario on
 * oidc-provider (rotation and reuse detection on, `openid offline_access`, so every refresh answer
 * carries an id_token), then a scripted token endpoint speaking each named provider's dialect, one
 * test per behaviour. Every case shows the token route's answer, the stored metadata, and a second
 * refresh that succeeds, with the provider's reuse counter at 0.
 *
 * Each test runs on a fresh keeper (dynalite in memory) with a frozen clock it steps; the scripted
 * providers run on the same clock, so lifetimes, grace periods and Retry-After compare exactly.
 */

interface TokenView extends ServedToken {
  scope?: string;
  expires_at: number;
  expires_in: number;
}

interface MetadataView extends SessionMetadataView {
  refreshExpiresAt: number | null;
}

let clock: SteppedClock;
let keeper: TestStack | undefined;
const scripted: ScriptedProvider[] = [];
let seq = 0;

afterEach(async () => {
  await keeper?.stop();
  keeper = undefined;
  await Promise.all(scripted.splice(0).map((p) => p.stop()));
});

async function freshKeeper(): Promise<TestStack> {
  clock = new SteppedClock();
  keeper = await startTestStack({ clock });
  return keeper;
}

function stack(): TestStack {
  if (!keeper) throw new Error('no keeper');
  return keeper;
}

async function putProvider(providerId: string, body: Record<string, unknown>): Promise<void> {
  const res = await stack().call('PUT', `/v1/providers/${providerId}`, body);
  expect(res.status, res.text).toBe(201);
}

async function putSession(key: SessionKey, body: Record<string, unknown>, status = 201): Promise<void> {
  const res = await stack().call('PUT', `/v1/sessions/${key.userId}/${key.providerId}`, body);
  expect(res.status, res.text).toBe(status);
}

function meta(key: SessionKey): Promise<MetadataView> {
  return metadata(stack(), key) as Promise<MetadataView>;
}

function served(res: CallResult): TokenView {
  expect(res.status, res.text).toBe(200);
  return res.body as TokenView;
}

/** The payload of a JWT (no verification: the test only reads what the provider put in it). */
function jwtClaims(jwt: string): Record<string, unknown> {
  const [, payload = ''] = jwt.split('.');
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
}

// --- the issue's scenario, on oidc-provider -------------------------------------------------------

describe('issue 10 scenario: oidc-provider with openid offline_access (id_token on every refresh)', () => {
  let oauth: OAuthServer;

  beforeAll(async () => {
    oauth = await startOAuthServer();
  });

  afterAll(async () => {
    await oauth?.stop();
  });

  const registrations = {
    'token endpoint alone (issuer unknown)': (o: OAuthServer) => ({ tokenEndpoint: o.tokenEndpoint }),
    'issuer known (discovery)': (o: OAuthServer) => ({ issuer: o.issuer }),
    'issuer mismatched (the id_token names another)': (o: OAuthServer) => ({
      issuer: 'https://issuer.mismatch.test',
      tokenEndpoint: o.tokenEndpoint,
    }),
  };

  it.each(Object.entries(registrations))(
    'registered by %s: force, sweep, force → 200, 0 reuse',
    async (_, reg) => {
      const k = await freshKeeper();
      oauth.proxy.reset();
      await putProvider('idp', {
        ...reg(oauth),
        clientId: oauth.clients.basic.clientId,
        clientSecret: oauth.clients.basic.clientSecret,
        clientAuthMethod: 'client_secret_basic',
      });
      // What oidc-provider answered each refresh grant (the test reads it; the keeper never sees this).
      const answers: Record<string, unknown>[] = [];
      const onGrant = (ctx: { oidc: { params?: { grant_type?: unknown } }; body?: unknown }) => {
        if (ctx.oidc.params?.grant_type === 'refresh_token')
          answers.push(ctx.body as Record<string, unknown>);
      };
      oauth.provider.on('grant.success', onGrant);
      onTestFinished(() => {
        oauth.provider.off('grant.success', onGrant);
      });
      const key = { userId: `oidc-${++seq}`, providerId: 'idp' };
      const tokens = await oauth.login({
        clientId: oauth.clients.basic.clientId,
        accountId: key.userId,
        scope: 'openid offline_access mcp:read',
        resource: null,
      });
      expect(tokens.id_token).toEqual(expect.any(String));
      await putSession(key, { ...tokens });

      // 1. forced
      const first = served(await getToken(k, key, '?force=true'));
      expect(first.access_token).not.toBe(tokens.access_token);
      expect(first.token_type).toBe('Bearer');
      expect((await oauth.introspect(first.access_token)).active).toBe(true);
      const afterFirst = await meta(key);
      expect(afterFirst).toMatchObject({
        status: 'active',
        failureCount: 0,
        lastError: null,
        refreshable: true,
      });

      // 2. a sweep, once the clock makes the session due (1 h tokens, 600 s window)
      expect((await k.sweep()).refreshed).toBe(0);
      clock.advance((3600 - 300) * 1000);
      const summary = await k.sweep();
      expect(summary).toMatchObject({ due: 1, refreshed: 1, failedTransient: 0, reauthorizationRequired: 0 });
      const afterSweep = await meta(key);
      expect(afterSweep).toMatchObject({ status: 'active', failureCount: 0, refreshedAt: clock.seconds() });

      // 3. forced again: the refresh token the sweep stored is the live one
      const third = served(await getToken(k, key, '?force=true'));
      expect(third.access_token).not.toBe(first.access_token);
      expect((await oauth.introspect(third.access_token)).active).toBe(true);
      const end = await meta(key);
      expect(end).toMatchObject({ status: 'active', failureCount: 0, lastError: null });
      expect(end.expiresAt).toBe(clock.seconds() + 3600);

      const grants = oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token' && r.forwarded);
      expect(grants).toHaveLength(3);
      expect(grants.every((g) => g.status === 200)).toBe(true);
      expect(oauth.proxy.reuseCount()).toBe(0);
      // Every refresh answer carried a rotated refresh token and an id_token naming the provider's
      // own issuer, whatever the keeper was told; the keeper holds the last refresh token.
      expect(answers).toHaveLength(3);
      for (const a of answers) {
        expect(a.refresh_token).toEqual(expect.any(String));
        expect(jwtClaims(a.id_token as string).iss).toBe(oauth.issuer);
      }
      expect(new Set(answers.map((a) => a.refresh_token)).size).toBe(3);
      expect(await storedRefreshToken(k, key)).toBe(answers[2]?.refresh_token);
    },
  );
});

// --- scripted providers ---------------------------------------------------------------------------

interface Scripted {
  p: ScriptedProvider;
  key: SessionKey;
  /** The login answer handed to the keeper. */
  login: Record<string, unknown>;
}

/** A scripted provider on the keeper's clock, registered by its token endpoint, and one session. */
async function connectScripted(
  options: Omit<ScriptedProviderOptions, 'clock'>,
  login: { scope?: string; overrides?: Record<string, unknown> } = {},
): Promise<Scripted> {
  const p = await startScriptedProvider({ ...options, clock });
  scripted.push(p);
  const providerId = `${options.dialect}-${++seq}`;
  await putProvider(providerId, p.registration());
  const key = { userId: `user-${seq}`, providerId };
  const answer = { ...p.login(login.scope === undefined ? {} : { scope: login.scope }), ...login.overrides };
  await putSession(key, answer);
  return { p, key, login: answer };
}

interface Refreshed {
  answer: TokenView;
  meta: MetadataView;
}

/**
 * One forced refresh that must succeed: the provider issued for the session's live refresh token
 * (no reuse), the token route served what it issued, and the session is active with no failure.
 */
async function refreshOnce(s: Scripted, query = '?force=true'): Promise<Refreshed> {
  const before = s.p.refreshes.length;
  const answer = served(await getToken(stack(), s.key, query));
  const grants = s.p.refreshes.slice(before);
  expect(grants.map((g) => g.outcome)).toEqual(['issued']);
  expect(answer.access_token).toBe(grants[0]?.accessToken);
  expect(s.p.isActive(answer.access_token)).toBe(true);
  const m = await meta(s.key);
  expect(m).toMatchObject({ status: 'active', failureCount: 0, lastError: null, refreshable: true });
  expect(m.refreshedAt).toBe(clock.seconds());
  return { answer, meta: m };
}

/**
 * The proof that the right refresh token was kept: a second refresh succeeds (the provider saw the
 * live token, not a rotated-out one), and the provider counted no reuse and revoked nothing.
 */
async function secondRefresh(s: Scripted): Promise<Refreshed> {
  const second = await refreshOnce(s);
  expect(s.p.reuseCount()).toBe(0);
  expect(s.p.revokedByReuse()).toBe(0);
  return second;
}

describe('scripted providers: the issue 10 matrix', () => {
  beforeEach(async () => {
    await freshKeeper();
  });

  // 1 ------------------------------------------------------------------------------------------------
  it.each([['google'], ['keycloak'], ['okta'], ['auth0'], ['entra']] as const)(
    '1. id_token on refresh (%s, openid in scope, its issuer unknown to the keeper)',
    async (dialect) => {
      const s = await connectScripted({ dialect });
      expect(s.login.id_token).toEqual(expect.any(String));
      const first = await refreshOnce(s);
      const idToken = s.p.refreshes.at(-1);
      expect(idToken?.outcome).toBe('issued');
      expect(first.answer.token_type).toBe('Bearer');
      expect(first.meta.status).toBe('active');
      await secondRefresh(s);
    },
  );

  // 2 ------------------------------------------------------------------------------------------------
  it('2. no rotation (Google): the answer has no refresh_token, the old one is kept and works again', async () => {
    const s = await connectScripted({ dialect: 'google' });
    const original = s.login.refresh_token;
    const first = await refreshOnce(s);
    expect(first.answer).toMatchObject({ token_type: 'Bearer', expires_in: 3599 });
    expect(first.meta.expiresAt).toBe(clock.seconds() + 3599);
    expect(s.p.refreshes.at(-1)?.newRefreshToken).toBeUndefined();
    expect(await storedRefreshToken(stack(), s.key)).toBe(original);
    clock.advance(60_000);
    await secondRefresh(s);
    expect(s.p.refreshes.map((r) => r.refreshToken)).toEqual([original, original]);
  });

  // 3 ------------------------------------------------------------------------------------------------
  it('3a. expires_in as a numeric string (Entra v1 "3599", ext_expires_in) is read as a number', async () => {
    const s = await connectScripted({ dialect: 'entra', expiresIn: (n) => String(n) });
    expect(s.login.expires_in).toBe('3599');
    const first = await refreshOnce(s);
    expect(first.answer.expires_in).toBe(3599);
    expect(first.answer.expires_at).toBe(clock.seconds() + 3599);
    expect(first.meta.expiresAt).toBe(clock.seconds() + 3599);
    clock.advance(3000_000);
    const second = await secondRefresh(s);
    expect(second.meta.expiresAt).toBe(clock.seconds() + 3599);
  });

  it('3b. a non-numeric expires_in ("1h") counts as no expiry, with a warning; the refresh token is kept', async () => {
    // The login answer handed over was well-formed; the provider's refresh answers are not.
    const s = await connectScripted(
      { dialect: 'notion', expiresIn: () => '1h' },
      { overrides: { expires_in: 600 } },
    );
    expect((await meta(s.key)).expiresAt).toBe(clock.seconds() + 600);
    const first = await refreshOnce(s);
    expect(first.answer.expires_at).toBeNull();
    expect(first.answer.expires_in).toBeNull();
    expect(first.meta.expiresAt).toBeNull();
    expect(stack().logs.some((l) => l.level === 'warn' && /expires_in is not a number/.test(l.message))).toBe(
      true,
    );
    await secondRefresh(s);
  });

  // 4 ------------------------------------------------------------------------------------------------
  it.each([
    { dialect: 'keycloak', refreshTokenTtl: 1800, field: 'refresh_expires_in' },
    { dialect: 'github', refreshTokenTtl: 15_897_600, field: 'refresh_token_expires_in' },
  ] as const)(
    '4a. $field ($dialect) is stored as refreshExpiresAt',
    async ({ dialect, refreshTokenTtl, field }) => {
      const s = await connectScripted({ dialect, refreshTokenTtl });
      expect(s.login[field]).toBe(refreshTokenTtl);
      expect((await meta(s.key)).refreshExpiresAt).toBe(clock.seconds() + refreshTokenTtl);
      clock.advance(120_000);
      const first = await refreshOnce(s);
      expect(first.meta.refreshExpiresAt).toBe(clock.seconds() + refreshTokenTtl);
      clock.advance(120_000);
      const second = await secondRefresh(s);
      expect(second.meta.refreshExpiresAt).toBe(clock.seconds() + refreshTokenTtl);
    },
  );

  it('4b. Keycloak offline token (refresh_expires_in 0): no refreshExpiresAt, refreshes after a long idle', async () => {
    const s = await connectScripted({ dialect: 'keycloak-offline' });
    expect(s.login.refresh_expires_in).toBe(0);
    expect((await meta(s.key)).refreshExpiresAt).toBeNull();
    clock.advance(30 * 24 * 3600_000);
    const first = await refreshOnce(s);
    expect(first.meta.refreshExpiresAt).toBeNull();
    await secondRefresh(s);
  });

  it('4c. Keycloak SSO idle shorter than the access token: the sweep refreshes before the refresh token lapses', async () => {
    // Access tokens for 1 h (outside the 600 s window), refresh tokens idle out after 15 min.
    const s = await connectScripted({ dialect: 'keycloak', accessTokenTtl: 3600, refreshTokenTtl: 900 });
    const m0 = await meta(s.key);
    expect(m0.expiresAt).toBe(clock.seconds() + 3600);
    expect(m0.refreshExpiresAt).toBe(clock.seconds() + 900);
    // 400 s later the access token has 53 min left, but the refresh token only 500 s: due now.
    clock.advance(400_000);
    const summary = await stack().sweep();
    expect(summary).toMatchObject({ due: 1, refreshed: 1, failedTransient: 0 });
    expect(s.p.refreshes.map((r) => r.outcome)).toEqual(['issued']);
    const afterSweep = await meta(s.key);
    expect(afterSweep).toMatchObject({ status: 'active', refreshedAt: clock.seconds() });
    expect(afterSweep.refreshExpiresAt).toBe(clock.seconds() + 900);
    // Past the first refresh token's idle expiry: the grant lives on through the rotated one.
    clock.advance(600_000);
    const first = await refreshOnce(s);
    expect(first.answer.expires_in).toBe(3600);
    await secondRefresh(s);
  });

  it('4d. past refreshExpiresAt: 409 reauthorization_required, no grant request, session kept', async () => {
    const s = await connectScripted({ dialect: 'keycloak', accessTokenTtl: 300, refreshTokenTtl: 600 });
    clock.advance(601_000);
    const res = await getToken(stack(), s.key);
    expect(res.status).toBe(409);
    expect(res.body).toMatchObject({ error: 'reauthorization_required' });
    expect(s.p.refreshes).toHaveLength(0);
    const m = await meta(s.key);
    expect(m).toMatchObject({ status: 'reauthorization_required', refreshable: false });
    expect(m.lastError?.code).toBe('refresh_token_expired');
    // Out of the index: a sweep asks nothing either.
    await stack().sweep();
    expect(s.p.refreshes).toHaveLength(0);
    // A new login replaces it and refreshes normally.
    await putSession(s.key, s.p.login(), 200);
    await secondRefresh(s);
  });

  // 5 ------------------------------------------------------------------------------------------------
  it.each([
    { dialect: 'github', code: 'bad_refresh_token' },
    { dialect: 'slack', code: 'invalid_refresh_token' },
  ] as const)(
    '5a. HTTP 200 with a dead-grant body ($dialect $code): 409, session kept',
    async ({ dialect, code }) => {
      const s = await connectScripted({ dialect });
      await refreshOnce(s);
      await secondRefresh(s);
      // The user uninstalls the app: the provider answers the live refresh token with HTTP 200 + error.
      s.p.revokeAll();
      const res = await getToken(stack(), s.key, '?force=true');
      expect(res.status).toBe(409);
      expect(res.body).toMatchObject({ error: 'reauthorization_required' });
      expect(s.p.refreshes.at(-1)?.outcome).toBe('dead');
      const m = await meta(s.key);
      expect(m).toMatchObject({ status: 'reauthorization_required', refreshable: false });
      expect(m.lastError?.code).toBe(code);
      expect(s.p.reuseCount()).toBe(0);
    },
  );

  it('5b. HTTP 200 {"error":"invalid_grant"}: 409, session kept', async () => {
    const s = await connectScripted({ dialect: 'notion' });
    await refreshOnce(s);
    s.p.script({ status: 200, body: { error: 'invalid_grant', error_description: 'grant revoked' } });
    const res = await getToken(stack(), s.key, '?force=true');
    expect(res.status).toBe(409);
    const m = await meta(s.key);
    expect(m).toMatchObject({ status: 'reauthorization_required' });
    expect(m.lastError?.code).toBe('invalid_grant');
  });

  it.each([
    { dialect: 'slack', body: { ok: false, error: 'ratelimited' }, code: 'ratelimited' },
    {
      dialect: 'github',
      body: { error: 'unverified_user_email', error_description: 'verify your email' },
      code: 'unverified_user_email',
    },
  ] as const)(
    '5c. HTTP 200 with another error code ($dialect $code): 503 transient, then recovers',
    async ({ dialect, body, code }) => {
      const s = await connectScripted({ dialect });
      s.p.script({ status: 200, body: { ...body } });
      const res = await getToken(stack(), s.key, '?force=true');
      expect(res.status).toBe(503);
      expect(res.body).toMatchObject({ error: 'refresh_unavailable' });
      const m = await meta(s.key);
      expect(m).toMatchObject({ status: 'active', failureCount: 1, refreshable: true });
      expect(m.lastError?.code).toBe(code);
      clock.set(((m.nextAttemptAt as number) + 1) * 1000);
      const first = await refreshOnce(s);
      expect(first.meta.lastError).toBeNull();
      await secondRefresh(s);
    },
  );

  // 6 ------------------------------------------------------------------------------------------------
  it.each([
    {
      dialect: 'notion',
      tokenType: undefined,
      served: 'Bearer',
      label: 'lowercase bearer (Notion-style MCP)',
    },
    { dialect: 'github', tokenType: undefined, served: 'Bearer', label: 'lowercase bearer (GitHub)' },
    { dialect: 'okta', tokenType: 'BeArEr', served: 'Bearer', label: 'mixed case' },
    { dialect: 'keycloak', tokenType: null, served: 'Bearer', label: 'missing' },
    { dialect: 'slack', tokenType: undefined, served: 'bot', label: 'Slack "bot", served as given' },
  ] as const)('6. token_type $label → $served', async ({ dialect, tokenType, served: expected }) => {
    const s = await connectScripted({ dialect, ...(tokenType === undefined ? {} : { tokenType }) });
    const first = await refreshOnce(s);
    expect(first.answer.token_type).toBe(expected);
    const second = await secondRefresh(s);
    expect(second.answer.token_type).toBe(expected);
    expect(served(await getToken(stack(), s.key)).token_type).toBe(expected);
  });

  // 7 ------------------------------------------------------------------------------------------------
  it("7. scope narrowed, widened, then absent (Entra): the answer's scope is stored, absent keeps it", async () => {
    const s = await connectScripted(
      { dialect: 'entra' },
      { scope: 'openid offline_access User.Read Mail.Read' },
    );
    expect(served(await getToken(stack(), s.key)).scope).toBe('openid offline_access User.Read Mail.Read');
    s.p.setScope('openid offline_access User.Read');
    expect((await refreshOnce(s)).answer.scope).toBe('openid offline_access User.Read');
    s.p.setScope('openid offline_access User.Read Mail.Read Calendars.Read');
    expect((await refreshOnce(s)).answer.scope).toBe(
      'openid offline_access User.Read Mail.Read Calendars.Read',
    );
    s.p.setScope(null);
    const absent = await secondRefresh(s);
    expect(s.p.refreshes.at(-1)).toMatchObject({ outcome: 'issued' });
    expect(absent.answer.scope).toBe('openid offline_access User.Read Mail.Read Calendars.Read');
    expect(served(await getToken(stack(), s.key)).scope).toBe(
      'openid offline_access User.Read Mail.Read Calendars.Read',
    );
  });

  // 8 ------------------------------------------------------------------------------------------------
  it.each([
    { label: '4 KB Entra JWT', bytes: 4096 },
    { label: '16 KB JWT', bytes: 16_384 },
  ])('8. large tokens ($label): stored, served, refreshed; the item far below 400 KB', async ({ bytes }) => {
    const s = await connectScripted({ dialect: 'entra', accessTokenBytes: bytes });
    const login = s.login.access_token as string;
    expect(login.length).toBeGreaterThanOrEqual(bytes - 64);
    expect(login.length).toBeLessThanOrEqual(bytes + 64);
    expect(served(await getToken(stack(), s.key)).access_token).toBe(login);
    const first = await refreshOnce(s);
    expect(first.answer.access_token.length).toBeGreaterThanOrEqual(bytes - 64);
    const second = await secondRefresh(s);
    expect(second.answer.access_token).not.toBe(first.answer.access_token);
    const size = await rawItemBytes(s.key);
    // Sealed access + refresh tokens and metadata: a few times the token, far below 400 KB.
    expect(size).toBeGreaterThan(bytes);
    expect(size).toBeLessThan(4 * bytes + 8 * 1024);
    expect(size).toBeLessThan(100 * 1024);
  });

  // 9 ------------------------------------------------------------------------------------------------
  it.each([
    { status: 429, form: 'seconds', seconds: 120 },
    { status: 429, form: 'HTTP-date', seconds: 90 },
    { status: 503, form: 'seconds', seconds: 45 },
    { status: 503, form: 'HTTP-date', seconds: 300 },
  ] as const)('9. $status with Retry-After as $form → 503 with the matching Retry-After', async (c) => {
    const s = await connectScripted({ dialect: 'okta' });
    const retryAfter =
      c.form === 'seconds' ? String(c.seconds) : new Date(clock.now() + c.seconds * 1000).toUTCString();
    s.p.script({
      status: c.status,
      body: { error: 'temporarily_unavailable' },
      headers: { 'retry-after': retryAfter },
    });
    const res = await getToken(stack(), s.key, '?force=true');
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ error: 'refresh_unavailable' });
    expect(res.headers.get('retry-after')).toBe(String(c.seconds));
    const m = await meta(s.key);
    expect(m).toMatchObject({
      status: 'active',
      failureCount: 1,
      nextAttemptAt: clock.seconds() + c.seconds,
    });
    // Nothing was redeemed: after the wait the original refresh token works.
    clock.advance(c.seconds * 1000 + 1000);
    const first = await refreshOnce(s);
    expect(s.p.refreshes.at(-1)?.refreshToken).toBe(s.login.refresh_token);
    expect(first.meta.nextAttemptAt).toBeNull();
    await secondRefresh(s);
  });

  // 10 -----------------------------------------------------------------------------------------------
  it.each([['okta'], ['auth0']] as const)(
    '10. %s rotation grace: concurrent forced calls, on-demand calls and sweeps cause no reuse',
    async (dialect) => {
      const k = stack();
      // 500 s tokens: inside the 600 s window, and longer than the 300 s interval plus the longest
      // sweep (scheduled), so the sweeps race the forced calls for every session.
      const sessions = await Promise.all(
        Array.from({ length: 4 }, () => connectScripted({ dialect, accessTokenTtl: 500, latencyMs: 20 })),
      );
      const peers = [k.peer(), k.peer()];
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 48; i++) {
        const s = sessions[i % sessions.length] as Scripted;
        const force = i % 2 === 0;
        calls.push(
          getToken(k, s.key, force ? '?force=true' : '?minValidity=60').then((r) =>
            expect(r.status).toBe(200),
          ),
        );
        const peer = peers[i % peers.length] as (typeof peers)[number];
        calls.push(peer.tokens.getToken(s.key, { minValidity: 60, force }));
      }
      const sweeps = Promise.all([k.sweep(), ...peers.map((p) => p.sweeper.sweep())]);
      await Promise.all([...calls, sweeps]);
      const grants = sessions.reduce((n, s) => n + s.p.refreshes.length, 0);
      const reuses = sessions.reduce((n, s) => n + s.p.reuseCount(), 0);
      const swept = (await sweeps).reduce((n, x) => n + (x.refreshed ?? 0), 0);
      console.log(
        `${dialect}: 96 calls (48 forced) and 3 sweeps over 4 sessions: ${grants} grants (${swept} by sweeps), ${reuses} reuses`,
      );
      // Forced calls holding the same version collapse: far fewer grants than forced calls.
      expect(grants).toBeLessThan(48);
      for (const s of sessions) {
        expect(s.p.reuseCount()).toBe(0);
        expect(s.p.refreshes.every((r) => r.outcome === 'issued')).toBe(true);
        expect(s.p.refreshes.length).toBeGreaterThan(0);
        expect((await meta(s.key)).status).toBe('active');
        await secondRefresh(s);
      }
    },
  );
});

describe('the scripted provider detects what the matrix claims does not happen', () => {
  /** A refresh grant sent by the test itself, as a second, uncoordinated client would. */
  async function redeem(
    p: ScriptedProvider,
    refreshToken: unknown,
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(p.tokenEndpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${p.clientId}:${p.clientSecret}`).toString('base64')}`,
      },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: String(refreshToken) }),
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  it('counts a reuse, accepts it inside the grace period, revokes the grant after it (Okta)', async () => {
    clock = new SteppedClock();
    const p = await startScriptedProvider({ dialect: 'okta', clock, graceSeconds: 30 });
    scripted.push(p);
    const login = p.login();
    const first = await redeem(p, login.refresh_token);
    expect(first.status).toBe(200);
    expect(first.body.refresh_token).not.toBe(login.refresh_token);
    clock.advance(10_000);
    const inGrace = await redeem(p, login.refresh_token);
    expect(inGrace.status).toBe(200);
    expect(p.reuseCount()).toBe(1);
    expect(p.revokedByReuse()).toBe(0);
    clock.advance(30_000);
    const late = await redeem(p, login.refresh_token);
    expect(late).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(p.reuseCount()).toBe(2);
    expect(p.revokedByReuse()).toBe(1);
    // The whole grant is gone: the live refresh token and the access tokens with it.
    expect((await redeem(p, first.body.refresh_token)).status).toBe(400);
    expect(p.isActive(first.body.access_token as string)).toBe(false);
  });

  it('without a grace period, the first reuse revokes the grant (Keycloak "Revoke Refresh Token")', async () => {
    clock = new SteppedClock();
    const p = await startScriptedProvider({ dialect: 'keycloak', clock });
    scripted.push(p);
    const login = p.login();
    const first = await redeem(p, login.refresh_token);
    expect(first.body).toMatchObject({ refresh_expires_in: 1800, 'not-before-policy': 0 });
    expect((await redeem(p, login.refresh_token)).status).toBe(400);
    expect(p.reuseCount()).toBe(1);
    expect(p.revokedByReuse()).toBe(1);
  });
});

/** The session item as DynamoDB stores it, measured as UTF-8 names plus values. */
async function rawItemBytes(key: SessionKey): Promise<number> {
  const k = stack();
  const client = k.stack.dynamodbClient();
  try {
    const doc = DynamoDBDocumentClient.from(client);
    const out = await doc.send(
      new GetCommand({
        TableName: k.stack.runtime.config.tableName,
        Key: { [TABLE.partitionKey]: `USER#${key.userId}`, [TABLE.sortKey]: `SESSION#${key.providerId}` },
        ConsistentRead: true,
      }),
    );
    expect(out.Item).toBeDefined();
    let bytes = 0;
    for (const [name, value] of Object.entries(out.Item ?? {})) {
      bytes += Buffer.byteLength(name);
      if (typeof value === 'string') bytes += Buffer.byteLength(value);
      else if (value instanceof Uint8Array) bytes += value.byteLength;
      else bytes += Buffer.byteLength(JSON.stringify(value));
    }
    return bytes;
  } finally {
    client.destroy();
  }
}
