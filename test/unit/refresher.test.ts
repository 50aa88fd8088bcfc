import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateKeyringJson } from '../../functions/core/crypto/crypto.js';
import type { SessionKey } from '../../functions/core/model.js';
import type { LeaseCondition } from '../../functions/core/store/store.js';
import { TABLE } from '../../functions/core/store/table.js';
import {
  addProvider,
  addSession,
  CLIENT_SECRET,
  type CoreFixture,
  createCoreFixture,
  createPeer,
  RESOURCE,
  rawItem,
  readSession,
} from '../support/core-fixture.js';
import { type DynaliteHandle, makeDynamoClient, startDynalite } from '../support/dynalite.js';

/** With random() = 0.5 the jittered delay is ¾ of the ceiling; the ceiling starts at 15 s. */
const FIRST_BACKOFF_MS = 11_250;
const SECOND_BACKOFF_MS = 22_500;

describe('Refresher: lease → grant → commit', () => {
  let handle: DynaliteHandle;
  let fx: CoreFixture;
  let providerId: string;

  beforeAll(async () => {
    handle = await startDynalite();
  });
  afterAll(() => handle?.stop());
  beforeEach(async () => {
    fx = createCoreFixture(handle);
    providerId = await addProvider(fx);
  });

  const forced = async (key: SessionKey): Promise<LeaseCondition> => ({
    kind: 'forced',
    version: (await fx.runtime.store.getSession(key, { consistent: true }))?.version ?? -1,
  });
  const sweep = (): LeaseCondition => ({ kind: 'sweep', dueBy: fx.clock.seconds() + 600 });
  const metricNames = () => fx.metrics.map((m) => m.name);

  /** A second process on the same table whose first commit fails with a store fault (a dropped connection). */
  const firstCommitFails = () => {
    const client = makeDynamoClient(handle.endpoint);
    let failures = 1;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { UpdateExpression?: string };
        if (
          context.commandName === 'UpdateItemCommand' &&
          input.UpdateExpression?.includes('version = version + :one') &&
          failures > 0
        ) {
          failures--;
          throw Object.assign(new Error('connection reset by peer'), { name: 'NetworkingError' });
        }
        return next(args);
      },
      { step: 'initialize', name: 'failFirstCommit' },
    );
    const flaky = createCoreFixture(handle, {
      dynamodb: client,
      endpoint: fx.endpoint,
      clock: fx.clock,
      keyringJson: fx.keyringJson,
    });
    return { flaky, client, failuresLeft: () => failures };
  };

  it('commits the rotated refresh token, and the next grant presents it', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    const out1 = await fx.runtime.refresher.refresh(s.key, sweep());
    const [first] = fx.endpoint.issued;
    expect(out1).toMatchObject({ kind: 'refreshed', accessToken: first?.accessToken });

    expect(fx.endpoint.requests).toEqual([
      {
        grantType: 'refresh_token',
        refreshToken: s.refreshToken,
        resource: RESOURCE,
        authorization: expect.stringMatching(/^Basic /),
        at: fx.clock.now(),
      },
    ]);
    // client_secret_basic: form-urlencoded id and secret (RFC 6749 §2.3.1)
    const basic = Buffer.from(fx.endpoint.requests[0]?.authorization?.slice(6) ?? '', 'base64').toString();
    expect(basic.split(':').map(decodeURIComponent)).toEqual(['tk-client', CLIENT_SECRET]);

    const after1 = await readSession(fx, s.key);
    expect(after1.accessToken).toBe(first?.accessToken);
    expect(after1.refreshToken).toBe(first?.refreshToken);
    expect(after1.record).toMatchObject({
      version: 2,
      expiresAt: fx.clock.seconds() + 3600,
      refreshedAt: fx.clock.now(),
      failureCount: 0,
      status: 'active',
    });
    expect(after1.record.leaseOwner).toBeUndefined();

    fx.clock.advance(3000_000);
    expect(await fx.runtime.refresher.refresh(s.key, sweep())).toMatchObject({ kind: 'refreshed' });
    expect(fx.endpoint.presented()).toEqual([s.refreshToken, first?.refreshToken]);
    expect((await readSession(fx, s.key)).record.version).toBe(3);
  });

  it("logs and publishes only the key's two fields, whatever else the caller's key object carries", async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    // A caller that keeps the login's tokens beside the key (as a backend's session object might).
    const keyWithTokens = {
      ...s.key,
      tokens: { refresh_token: s.refreshToken, access_token: s.accessToken },
    };
    const logged: unknown[] = [];
    const logging = createCoreFixture(handle, {
      tableName: fx.config.tableName,
      clock: fx.clock,
      endpoint: fx.endpoint,
      keyringJson: fx.keyringJson,
      logger: {
        debug: (...args) => logged.push(args),
        info: (...args) => logged.push(args),
        warn: (...args) => logged.push(args),
        error: (...args) => logged.push(args),
      },
    });
    fx.endpoint.reply({ kind: 'status', status: 503 });
    expect(await logging.runtime.refresher.refresh(keyWithTokens, sweep())).toMatchObject({
      kind: 'transient',
    });
    fx.clock.advance(600_000);
    expect(
      await logging.runtime.tokens.getToken(keyWithTokens, { minValidity: 120, force: true }),
    ).toMatchObject({
      token_type: 'Bearer',
    });
    const recovered = logging.events.find((e) => e.detailType === 'SessionRecovered');
    expect(recovered?.detail).toMatchObject({ userId: s.key.userId, providerId });
    expect(logged.length).toBeGreaterThan(0);
    const seen = JSON.stringify([logged, logging.events]);
    expect(seen).not.toContain(s.refreshToken);
    expect(seen).not.toContain(s.accessToken);
    expect(seen).not.toContain('"tokens"');
  });

  it('keeps the old refresh token when the provider returns none', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    fx.endpoint.reply({ kind: 'rotate', rotate: false });
    expect(await fx.runtime.refresher.refresh(s.key, sweep())).toMatchObject({ kind: 'refreshed' });
    const after = await readSession(fx, s.key);
    expect(after.refreshToken).toBe(s.refreshToken);
    expect(after.accessToken).toBe(fx.endpoint.issued[0]?.accessToken);
    expect(after.record.version).toBe(2);

    expect(await fx.runtime.refresher.refresh(s.key, await forced(s.key))).toMatchObject({
      kind: 'refreshed',
    });
    expect(fx.endpoint.presented()).toEqual([s.refreshToken, s.refreshToken]);
  });

  it('stores no expiry when the provider gives no expires_in', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    fx.endpoint.reply({ kind: 'rotate', expiresIn: null });
    expect(await fx.runtime.refresher.refresh(s.key, sweep())).toMatchObject({ kind: 'refreshed' });
    const item = await rawItem(fx, s.key);
    expect(item).not.toHaveProperty('expiresAt');
    expect(item).not.toHaveProperty(TABLE.shardAttribute);
  });

  describe('a 200 that carries a refresh token is committed', () => {
    const answer = (body: Record<string, unknown>) => ({ kind: 'json', body }) as const;
    const idToken = (iss: string) =>
      `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from(JSON.stringify({ iss, aud: 'x', exp: 1 })).toString('base64url')}.sig`;

    it.each<[string, Record<string, unknown>]>([
      [
        'an id_token from an issuer the keeper does not know',
        { id_token: idToken('https://idp.example/realms/x') },
      ],
      ['a malformed id_token', { id_token: 'garbage' }],
      ['token_type in lower case', { token_type: 'bearer' }],
      ['no token_type', { token_type: undefined }],
      ['an odd token_type', { token_type: 'pop' }],
      ['expires_in as a numeric string', { expires_in: '3599' }],
      ['a non-numeric expires_in', { expires_in: 'later' }],
      ['no expires_in', { expires_in: undefined }],
      ['unknown fields', { ext_expires_in: 1, ok: true, 'not-before-policy': 0 }],
      ['no access token at all', { access_token: undefined }],
      ['an empty access token', { access_token: '' }],
    ])(
      'with %s: the new refresh token is in the committed item, and the next grant presents it',
      async (_s, extra) => {
        const s = await addSession(fx, { providerId, expiresIn: 60 });
        fx.endpoint.reply(
          answer({
            access_token: 'at-new',
            refresh_token: 'rt-rotated',
            token_type: 'Bearer',
            expires_in: 600,
            ...extra,
          }),
        );
        const outcome = await fx.runtime.refresher.refresh(s.key, sweep());
        expect(['refreshed', 'partial']).toContain(outcome.kind);
        const after = await readSession(fx, s.key);
        expect(after.refreshToken).toBe('rt-rotated');
        expect(after.record).toMatchObject({ status: 'active', failureCount: 0, version: 2 });
        expect(after.record.nextAttemptAt).toBeUndefined();

        fx.clock.advance(1000);
        await fx.runtime.refresher.refresh(s.key, await forced(s.key));
        expect(fx.endpoint.presented()).toEqual([s.refreshToken, 'rt-rotated']);
      },
    );

    it('without a usable access token: the old access token stays, due now, with no backoff', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 3600 });
      fx.endpoint.reply(answer({ refresh_token: 'rt-rotated' }));
      const outcome = await fx.runtime.refresher.refresh(s.key, await forced(s.key));
      expect(outcome.kind).toBe('partial');
      const after = await readSession(fx, s.key);
      expect(after.accessToken).toBe(s.accessToken);
      expect(after.record).toMatchObject({ expiresAt: fx.clock.seconds(), refreshDueAt: fx.clock.seconds() });
      expect((await rawItem(fx, s.key))?.[TABLE.shardAttribute]).toEqual(expect.any(Number));
    });
  });

  describe('refresh-token lifetime (refresh_expires_in / refresh_token_expires_in)', () => {
    it('is stored as refreshExpiresAt, and the index schedules the session before the refresh token lapses', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      // Keycloak: 1-hour access tokens, a 30-minute SSO idle timeout on the refresh token.
      fx.endpoint.reply({
        kind: 'json',
        body: {
          access_token: 'at',
          refresh_token: 'rt-kc',
          expires_in: 3600,
          refresh_expires_in: 1800,
          token_type: 'Bearer',
        },
      });
      await fx.runtime.refresher.refresh(s.key, sweep());
      const { record } = await readSession(fx, s.key);
      expect(record).toMatchObject({
        expiresAt: fx.clock.seconds() + 3600,
        refreshExpiresAt: fx.clock.seconds() + 1800,
        refreshDueAt: fx.clock.seconds() + 1800,
      });
      expect(await fx.runtime.sessions.get(s.key)).toMatchObject({
        refreshExpiresAt: fx.clock.seconds() + 1800,
      });

      // 25 minutes on, the access token has 35 minutes left but the sweep (10-minute window) takes it.
      fx.clock.advance(25 * 60_000);
      const summary = await fx.runtime.sweeper.sweep();
      expect(summary.refreshed).toBeGreaterThanOrEqual(1);
      expect(fx.endpoint.presented()).toContain('rt-kc');
      expect((await readSession(fx, s.key)).record.version).toBe(3);
    });

    it('a kept (not rotated) refresh token keeps its expiry; a rotated one without a lifetime has none', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      fx.endpoint.reply(
        {
          kind: 'json',
          body: { access_token: 'a1', refresh_token: 'r1', expires_in: 600, refresh_expires_in: 7200 },
        },
        { kind: 'json', body: { access_token: 'a2', expires_in: 600 } },
        { kind: 'json', body: { access_token: 'a3', refresh_token: 'r3', expires_in: 600 } },
      );
      const t0 = fx.clock.seconds();
      await fx.runtime.refresher.refresh(s.key, sweep());
      fx.clock.advance(1000);
      await fx.runtime.refresher.refresh(s.key, await forced(s.key));
      expect((await readSession(fx, s.key)).record.refreshExpiresAt).toBe(t0 + 7200);
      fx.clock.advance(1000);
      await fx.runtime.refresher.refresh(s.key, await forced(s.key));
      expect((await readSession(fx, s.key)).record.refreshExpiresAt).toBeUndefined();
    });

    it('past refreshExpiresAt the session is reauthorization_required without a grant request', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      fx.endpoint.reply({
        kind: 'json',
        body: {
          access_token: 'a1',
          refresh_token: 'r1',
          expires_in: 3600,
          refresh_expires_in: 600,
        },
      });
      await fx.runtime.refresher.refresh(s.key, sweep());
      fx.clock.advance(601_000);
      const outcome = await fx.runtime.refresher.refresh(s.key, sweep());
      expect(outcome).toEqual({ kind: 'reauthorization_required', code: 'refresh_token_expired' });
      expect(fx.endpoint.requests).toHaveLength(1);
      expect((await readSession(fx, s.key)).record.status).toBe('reauthorization_required');
      expect(fx.events.map((e) => e.detailType)).toEqual(['SessionReauthorizationRequired']);
    });
  });

  it('refuses without a grant when the lease condition does not hold', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 3600 });
    expect(await fx.runtime.refresher.refresh(s.key, sweep())).toEqual({ kind: 'refused' });
    expect(fx.endpoint.requests).toHaveLength(0);
    expect(await rawItem(fx, s.key)).not.toHaveProperty('leaseOwner');
  });

  describe('invalid_grant', () => {
    it('marks the session reauthorization_required, keeps it, drops it from the index, emits once', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      fx.endpoint.reply({ kind: 'error', status: 400, error: 'invalid_grant', description: 'grant revoked' });
      const out = await fx.runtime.refresher.refresh(s.key, sweep());
      expect(out).toEqual({ kind: 'reauthorization_required', code: 'invalid_grant' });

      const item = await rawItem(fx, s.key);
      expect(item).toMatchObject({
        status: 'reauthorization_required',
        version: 1,
        failureCount: 1,
        lastError: { code: 'invalid_grant', description: 'grant revoked', at: fx.clock.now() },
      });
      expect(item).not.toHaveProperty(TABLE.shardAttribute);
      expect(item).not.toHaveProperty('leaseOwner');
      expect(item).not.toHaveProperty('nextAttemptAt');
      // the tokens are still there (only an explicit DELETE removes a session)
      expect((await readSession(fx, s.key)).refreshToken).toBe(s.refreshToken);
      const { keys } = await fx.runtime.store.queryDue(0, 4e9);
      const all = [keys];
      for (let shard = 1; shard < fx.config.shardCount; shard++) {
        all.push((await fx.runtime.store.queryDue(shard, 4e9)).keys);
      }
      expect(all.flat().filter((k) => k.userId === s.key.userId)).toEqual([]);

      expect(fx.events).toEqual([
        {
          detailType: 'SessionReauthorizationRequired',
          detail: {
            userId: s.key.userId,
            providerId,
            error: 'invalid_grant',
            errorDescription: 'grant revoked',
            at: new Date(fx.clock.now()).toISOString(),
          },
        },
      ]);

      // a second attempt of any kind is refused: no grant, no second event
      fx.clock.advance(60_000);
      expect(await fx.runtime.refresher.refresh(s.key, sweep())).toEqual({ kind: 'refused' });
      expect(await fx.runtime.refresher.refresh(s.key, { kind: 'forced', version: 1 })).toEqual({
        kind: 'refused',
      });
      expect(fx.endpoint.requests).toHaveLength(1);
      expect(fx.events).toHaveLength(1);
    });
  });

  it('invalid_client: keeps the session active with backoff, flags the provider, counts a metric', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    fx.endpoint.reply({ kind: 'error', status: 401, error: 'invalid_client' });
    const out = await fx.runtime.refresher.refresh(s.key, sweep());
    // The rejection opens the provider's circuit at once: the caller may come back at its first probe
    // (2 s × jitter ¾ = 1.5 s), sooner than the session's own backoff.
    expect(out).toEqual({ kind: 'client_rejected', code: 'invalid_client', retryAfterSeconds: 2 });

    expect(await rawItem(fx, s.key)).toMatchObject({
      status: 'active',
      version: 1,
      failureCount: 1,
      nextAttemptAt: fx.clock.now() + FIRST_BACKOFF_MS,
      lastError: { code: 'invalid_client' },
      [TABLE.shardAttribute]: expect.any(Number),
    });
    expect((await fx.runtime.store.getProvider(providerId))?.clientRejectedAt).toBe(fx.clock.now());
    expect((await fx.runtime.providers.get(providerId)).clientRejectedAt).toBe(fx.clock.seconds());
    expect(metricNames()).toContain('ProviderClientRejected');
    expect(fx.events.filter((e) => e.detailType === 'SessionReauthorizationRequired')).toEqual([]);
  });

  it('unauthorized_client is classified like invalid_client', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    fx.endpoint.reply({ kind: 'error', status: 400, error: 'unauthorized_client' });
    expect(await fx.runtime.refresher.refresh(s.key, sweep())).toMatchObject({
      kind: 'client_rejected',
      code: 'unauthorized_client',
    });
    expect((await rawItem(fx, s.key))?.status).toBe('active');
  });

  describe('transient failures', () => {
    it('503: failureCount 1, lastError, nextAttemptAt = now + jittered backoff; the second doubles it', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      fx.endpoint.reply({ kind: 'status', status: 503, body: 'upstream down' });
      const t1 = fx.clock.now();
      expect(await fx.runtime.refresher.refresh(s.key, sweep())).toEqual({
        kind: 'transient',
        code: 'http_503',
        retryAfterSeconds: Math.ceil(FIRST_BACKOFF_MS / 1000),
      });
      expect(await rawItem(fx, s.key)).toMatchObject({
        status: 'active',
        version: 1,
        failureCount: 1,
        nextAttemptAt: t1 + FIRST_BACKOFF_MS,
        lastError: { code: 'http_503', at: t1 },
        [TABLE.shardAttribute]: expect.any(Number),
      });
      expect(await rawItem(fx, s.key)).not.toHaveProperty('leaseOwner');
      expect((await readSession(fx, s.key)).refreshToken).toBe(s.refreshToken);

      // still backing off: no grant
      fx.clock.advance(FIRST_BACKOFF_MS - 1);
      expect(await fx.runtime.refresher.refresh(s.key, sweep())).toEqual({ kind: 'refused' });
      expect(fx.endpoint.requests).toHaveLength(1);

      fx.clock.advance(1);
      fx.endpoint.reply({ kind: 'status', status: 502 });
      const t2 = fx.clock.now();
      expect(await fx.runtime.refresher.refresh(s.key, sweep())).toMatchObject({ kind: 'transient' });
      expect(await rawItem(fx, s.key)).toMatchObject({
        failureCount: 2,
        nextAttemptAt: t2 + SECOND_BACKOFF_MS,
        lastError: { code: 'http_502', at: t2 },
      });
      expect(fx.events).toEqual([]);
    });

    it('429 with Retry-After: 120 waits exactly 120 s', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      fx.endpoint.reply({ kind: 'status', status: 429, headers: { 'retry-after': '120' } });
      expect(await fx.runtime.refresher.refresh(s.key, sweep())).toEqual({
        kind: 'transient',
        code: 'http_429',
        retryAfterSeconds: 120,
      });
      expect(await rawItem(fx, s.key)).toMatchObject({
        failureCount: 1,
        nextAttemptAt: fx.clock.now() + 120_000,
        lastError: { code: 'http_429' },
      });
    });

    it.each([
      [
        'a non-JSON 200',
        { kind: 'status', status: 200, body: '<html>', headers: { 'content-type': 'text/html' } },
      ],
      ['a 200 with an error', { kind: 'error', status: 200, error: 'server_error' }],
      ['a 500 OAuth error', { kind: 'error', status: 500, error: 'server_error' }],
    ] as const)('%s is transient and keeps the session', async (_, reply) => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      fx.endpoint.reply(reply);
      expect(await fx.runtime.refresher.refresh(s.key, sweep())).toMatchObject({ kind: 'transient' });
      expect(await rawItem(fx, s.key)).toMatchObject({ status: 'active', version: 1, failureCount: 1 });
    });

    it('recovery publishes SessionRecovered once and clears the failure attributes', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      fx.endpoint.reply({ kind: 'status', status: 503 });
      await fx.runtime.refresher.refresh(s.key, sweep());
      fx.clock.advance(FIRST_BACKOFF_MS);

      expect(await fx.runtime.refresher.refresh(s.key, sweep())).toMatchObject({ kind: 'refreshed' });
      const item = await rawItem(fx, s.key);
      expect(item).toMatchObject({ failureCount: 0, version: 2, status: 'active' });
      expect(item).not.toHaveProperty('lastError');
      expect(item).not.toHaveProperty('nextAttemptAt');
      expect(fx.events).toEqual([
        {
          detailType: 'SessionRecovered',
          detail: {
            userId: s.key.userId,
            providerId,
            previousError: 'http_503',
            failureCount: 1,
            at: new Date(fx.clock.now()).toISOString(),
          },
        },
      ]);

      // a later, ordinary refresh is no recovery
      expect(await fx.runtime.refresher.refresh(s.key, await forced(s.key))).toMatchObject({
        kind: 'refreshed',
      });
      expect(fx.events).toHaveLength(1);
    });

    it('ends a grant that outlives its life: no commit, outcome unknown, counted', async () => {
      const slow = createCoreFixture(handle, {
        env: { TOKENKEEPER_HTTP_TIMEOUT_MS: '150', TOKENKEEPER_GRANT_TIMEOUT_MS: '150' },
      });
      const prov = await addProvider(slow);
      const s = await addSession(slow, { providerId: prov, expiresIn: 60 });
      slow.endpoint.reply({ kind: 'hang' });

      const started = Date.now();
      const out = await slow.runtime.refresher.refresh(s.key, sweep());
      // abandoned at the timeout, not left hanging
      expect(Date.now() - started).toBeLessThan(5000);
      expect(out).toMatchObject({ kind: 'transient', code: 'grant_outcome_unknown' });
      expect(slow.metrics).toContainEqual({ name: 'GrantOutcomeUnknown', unit: 'Count', value: 1 });

      const after = await readSession(slow, s.key);
      expect(after.record).toMatchObject({
        version: 1,
        failureCount: 1,
        lastError: { code: 'grant_outcome_unknown' },
      });
      expect(after.record.leaseOwner).toBeUndefined();
      expect(after.accessToken).toBe(s.accessToken);
      expect(after.refreshToken).toBe(s.refreshToken);
      expect(slow.endpoint.inFlight).toBe(0);
    });
  });

  it('lease_lost: after a takeover the first commit is refused and nothing is overwritten', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    const peer = createPeer(fx);
    const gateA = fx.endpoint.gate();
    const gateB = fx.endpoint.gate();

    const a = fx.runtime.refresher.refresh(s.key, sweep());
    await gateA.arrived;
    // A's lease runs out while its grant is in flight; B takes over.
    fx.clock.advance(fx.config.leaseSeconds * 1000 + 1);
    const b = peer.runtime.refresher.refresh(s.key, sweep());
    await gateB.arrived;
    const leasedByB = (await rawItem(fx, s.key))?.leaseOwner;
    expect(leasedByB).toEqual(expect.any(String));

    gateA.release();
    expect(await a).toEqual({ kind: 'lease_lost' });
    expect(metricNames()).toContain('LeaseLost');
    const afterA = await readSession(fx, s.key);
    expect(afterA.record).toMatchObject({ version: 1, leaseOwner: leasedByB });
    expect(afterA.accessToken).toBe(s.accessToken);
    expect(afterA.refreshToken).toBe(s.refreshToken);

    gateB.release();
    expect(await b).toMatchObject({ kind: 'refreshed' });
    const afterB = await readSession(fx, s.key);
    expect(afterB.record.version).toBe(2);
    // B's answer is the one kept (the endpoint answered A first, so B got the second tokens)
    expect(afterB.refreshToken).toBe(fx.endpoint.issued[1]?.refreshToken);
  });

  it('invalid_grant for a session replaced mid-grant (new login) is not reported as a dead grant', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    fx.endpoint.reply({ kind: 'error', status: 400, error: 'invalid_grant' });
    const gate = fx.endpoint.gate();
    const pending = fx.runtime.refresher.refresh(s.key, sweep());
    await gate.arrived;
    // the user logs in again while the old refresh token is being redeemed
    await fx.runtime.store.putSession(
      {
        ...s.key,
        accessToken: 'at-relogin',
        refreshToken: 'rt-relogin',
        tokenType: 'Bearer',
        expiresAt: 2e9,
      },
      fx.clock.now(),
    );
    gate.release();

    expect(await pending).toEqual({ kind: 'lease_lost' });
    const after = await readSession(fx, s.key);
    expect(after.record).toMatchObject({ status: 'active', version: 2, failureCount: 0 });
    expect(after.refreshToken).toBe('rt-relogin');
    expect(fx.events).toEqual([]);
  });

  it('a transient failure for a session replaced mid-grant is lease_lost, not a failure on the new session', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    fx.endpoint.reply({ kind: 'status', status: 503 });
    const gate = fx.endpoint.gate();
    const pending = fx.runtime.refresher.refresh(s.key, sweep());
    await gate.arrived;
    await fx.runtime.store.putSession(
      {
        ...s.key,
        accessToken: 'at-relogin',
        refreshToken: 'rt-relogin',
        tokenType: 'Bearer',
        expiresAt: 2e9,
      },
      fx.clock.now(),
    );
    gate.release();
    expect(await pending).toEqual({ kind: 'lease_lost' });
    expect((await readSession(fx, s.key)).record).toMatchObject({ failureCount: 0, version: 2 });
  });

  it('a store fault on the commit is retried while the lease lasts, so the rotated refresh token is kept', async () => {
    // Guards the worst failure after a successful grant: losing the rotated token makes the next grant a reuse.
    const { flaky, client, failuresLeft } = firstCommitFails();
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    const out = await flaky.runtime.refresher.refresh(s.key, sweep());
    expect(out.kind).toBe('refreshed');
    expect(failuresLeft()).toBe(0);
    const [issued] = fx.endpoint.issued.slice(-1);
    expect((await readSession(fx, s.key)).refreshToken).toBe(issued?.refreshToken);
    client.destroy();
  });

  it('sustained throttling of the commit: retried past five attempts for as long as the lease lasts, never past it', async () => {
    // The 1M-session simulation found rotated refresh tokens lost to a commit that gave up after five
    // attempts with most of its lease left (index writes throttled on a hot shard).
    const client = makeDynamoClient(handle.endpoint);
    let failures = 9;
    let attempts = 0;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { UpdateExpression?: string };
        if (
          context.commandName === 'UpdateItemCommand' &&
          input.UpdateExpression?.includes('version = version + :one')
        ) {
          attempts++;
          if (failures > 0) {
            failures--;
            throw Object.assign(new Error('throughput exceeded'), {
              name: 'ProvisionedThroughputExceededException',
            });
          }
        }
        return next(args);
      },
      { step: 'initialize', name: 'throttleCommits' },
    );
    const flaky = createCoreFixture(handle, {
      dynamodb: client,
      endpoint: fx.endpoint,
      clock: fx.clock,
      keyringJson: fx.keyringJson,
    });
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    const leasedAt = fx.clock.now();
    expect((await flaky.runtime.refresher.refresh(s.key, sweep())).kind).toBe('refreshed');
    expect(attempts).toBe(10);
    expect(fx.clock.now() - leasedAt).toBeLessThan(flaky.config.leaseSeconds * 1000);
    const [issued] = fx.endpoint.issued.slice(-1);
    expect((await readSession(fx, s.key)).refreshToken).toBe(issued?.refreshToken);

    // Throttled for good: it stops before its lease ends, so no other refresher can have taken over.
    failures = Number.POSITIVE_INFINITY;
    fx.clock.advance(3_600_000);
    const startedAt = fx.clock.now();
    await expect(flaky.runtime.refresher.refresh(s.key, sweep())).rejects.toMatchObject({
      name: 'ProvisionedThroughputExceededException',
    });
    expect(fx.clock.now() - startedAt).toBeLessThan(flaky.config.leaseSeconds * 1000);
    expect(fx.clock.now() - startedAt).toBeGreaterThan(flaky.config.leaseSeconds * 1000 - 5_000);
    client.destroy();
  });

  it('a key missing from the keyring: key_unavailable, session kept active, metric, failure recorded', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 60 });
    const other = createCoreFixture(handle, {
      keyringJson: generateKeyringJson('k2'),
      endpoint: fx.endpoint,
    });
    other.clock.t = fx.clock.now();

    const out = await other.runtime.refresher.refresh(s.key, sweep());
    expect(out).toEqual({ kind: 'key_unavailable', retryAfterSeconds: Math.ceil(FIRST_BACKOFF_MS / 1000) });
    expect(other.metrics.map((m) => m.name)).toContain('KeyUnavailable');
    expect(fx.endpoint.requests).toHaveLength(0);
    const item = await rawItem(fx, s.key);
    expect(item).toMatchObject({
      status: 'active',
      version: 1,
      failureCount: 1,
      nextAttemptAt: fx.clock.now() + FIRST_BACKOFF_MS,
      lastError: { code: 'key_unavailable' },
      [TABLE.shardAttribute]: expect.any(Number),
    });
    expect(item).not.toHaveProperty('leaseOwner');
    // the original keyring still opens it
    expect((await readSession(fx, s.key)).refreshToken).toBe(s.refreshToken);
  });

  it('an unregistered provider is a transient failure, not a dead grant', async () => {
    const s = await addSession(fx, { providerId: 'never-registered', expiresIn: 60 });
    expect(await fx.runtime.refresher.refresh(s.key, sweep())).toMatchObject({
      kind: 'transient',
      code: 'provider_not_found',
    });
    expect(await rawItem(fx, s.key)).toMatchObject({ status: 'active', failureCount: 1 });
    expect(fx.endpoint.requests).toHaveLength(0);
  });

  describe('a grant in flight in this process', () => {
    it('is never presented again by this process, whatever the clock says: the sweep skips it, a forced call joins it', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      const gate = fx.endpoint.gate();
      const first = fx.runtime.refresher.refresh(s.key, sweep());
      await gate.arrived;
      expect(fx.runtime.refresher.grantInFlight(s.key)).toBe(true);
      // The process was paused longer than its lease while the provider answered: on waking its own
      // timer sweep and a forced call find the lease over on the clock.
      fx.clock.advance(fx.config.leaseSeconds * 1000 + 5_000);
      const version = (await forced(s.key)) as { version: number };
      expect(await fx.runtime.refresher.refresh(s.key, sweep())).toEqual({ kind: 'refused' });
      const joined = fx.runtime.refresher.refresh(s.key, { kind: 'forced', version: version.version });
      gate.release();

      const [a, b] = await Promise.all([first, joined]);
      expect(a).toMatchObject({ kind: 'refreshed' });
      expect(b).toEqual(a);
      // One presentation of the refresh token, and the rotated one committed (leaseOwner still ours).
      expect(fx.endpoint.presented()).toEqual([s.refreshToken]);
      expect((await readSession(fx, s.key)).refreshToken).toBe(fx.endpoint.issued[0]?.refreshToken);
      expect(fx.runtime.refresher.grantInFlight(s.key)).toBe(false);
    });

    it('a caller whose wait ends first gets pending; the grant goes on, keeps its lease, and its late answer is committed', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      const gate = fx.endpoint.gate();
      const out = fx.runtime.refresher.refresh(s.key, sweep(), { waitUntil: fx.clock.now() + 100 });
      await gate.arrived;
      expect(await out).toMatchObject({ kind: 'pending', retryAfterSeconds: expect.any(Number) });
      // The lease is kept while the request can still answer; nothing else is sent meanwhile.
      expect((await rawItem(fx, s.key))?.leaseOwner).toEqual(expect.any(String));
      const peer = createPeer(fx);
      expect(await peer.runtime.refresher.refresh(s.key, sweep())).toEqual({ kind: 'refused' });
      expect(fx.endpoint.presented()).toEqual([s.refreshToken]);

      gate.release();
      await fx.runtime.refresher.settleAll();
      const after = await readSession(fx, s.key);
      expect(after.record).toMatchObject({ version: 2, failureCount: 0 });
      expect(after.record.leaseOwner).toBeUndefined();
      expect(after.refreshToken).toBe(fx.endpoint.issued[0]?.refreshToken);
    });

    it('a commit that fails once after a pause past the lease is retried: its condition (leaseOwner) still holds', async () => {
      const { flaky: paused, client, failuresLeft } = firstCommitFails();
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      const gate = fx.endpoint.gate();
      const out = paused.runtime.refresher.refresh(s.key, sweep());
      await gate.arrived;
      fx.clock.advance(paused.config.leaseSeconds * 1000 + 1_000);
      gate.release();
      expect(await out).toMatchObject({ kind: 'refreshed' });
      expect(failuresLeft()).toBe(0);
      expect((await readSession(fx, s.key)).refreshToken).toBe(fx.endpoint.issued[0]?.refreshToken);
      client.destroy();
    });
  });
});
