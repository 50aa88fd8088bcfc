import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  ReauthorizationRequiredError,
  RefreshUnavailableError,
  SessionNotFoundError,
} from '../../functions/core/errors.js';
import type { SessionKey } from '../../functions/core/model.js';
import { tokenFingerprint } from '../../functions/core/refresh/token-service.js';
import type { TokenRequest } from '../../functions/core/services.js';
import {
  addProvider,
  addSession,
  type CoreFixture,
  createCoreFixture,
  createPeer,
  readSession,
  uniqueId,
} from '../support/core-fixture.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

const ON_DEMAND: TokenRequest = { minValidity: 60, force: false };
const FORCED: TokenRequest = { minValidity: 60, force: true };

describe('DefaultTokenService', () => {
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

  const getToken = (key: SessionKey, request: TokenRequest = ON_DEMAND) =>
    fx.runtime.tokens.getToken(key, request);

  /** Counts reads of the store that have completed. */
  const countReads = () => {
    const store = fx.runtime.store;
    const read = store.getSession.bind(store);
    const counter = { done: 0 };
    store.getSession = async (...args) => {
      const record = await read(...args);
      counter.done++;
      return record;
    };
    return counter;
  };

  it('serves a fresh token from the item without any grant', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 3600 });
    const lease = vi.spyOn(fx.runtime.store, 'acquireLease');
    expect(await getToken(s.key)).toEqual({
      access_token: s.accessToken,
      token_type: 'Bearer',
      expires_at: s.expiresAt,
      expires_in: 3600,
    });
    expect(fx.endpoint.requests).toHaveLength(0);
    expect(lease).not.toHaveBeenCalled();
  });

  it('20 concurrent calls for one fresh session in one process share one read (single-flight)', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 3600 });
    const reads = vi.spyOn(fx.runtime.store, 'getSession');
    const served = await Promise.all(Array.from({ length: 20 }, () => getToken(s.key)));
    expect(new Set(served.map((t) => t.access_token))).toEqual(new Set([s.accessToken]));
    expect(reads).toHaveBeenCalledTimes(1);
  });

  it('a forced call does its own first read: its version is never older than the token it rejects', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 3600 });
    const reads = vi.spyOn(fx.runtime.store, 'getSession');
    await Promise.all([getToken(s.key), getToken(s.key, FORCED)]);
    expect(
      reads.mock.calls.filter(([, options]) => options?.consistent === true).length,
    ).toBeGreaterThanOrEqual(1);
    expect(reads.mock.calls.length).toBeGreaterThanOrEqual(2);
  });

  it('refreshes with exactly one grant when the token is below minValidity', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 59 });
    const result = await getToken(s.key);
    expect(fx.endpoint.presented()).toEqual([s.refreshToken]);
    expect(result).toEqual({
      access_token: fx.endpoint.issued[0]?.accessToken,
      // oauth4webapi lower-cases token_type (it is case-insensitive, RFC 6749 §5.1)
      token_type: expect.stringMatching(/^bearer$/i),
      expires_at: fx.clock.seconds() + 3600,
      expires_in: 3600,
    });
    expect((await readSession(fx, s.key)).record.version).toBe(2);
    expect(fx.metrics.map((m) => m.name)).toContain('OnDemandRefreshes');

    // served from the item afterwards
    expect((await getToken(s.key)).access_token).toBe(result.access_token);
    expect(fx.endpoint.requests).toHaveLength(1);
  });

  it('coalesces 20 concurrent calls for one due session in one process: one lease, one grant', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 10 });
    const reads = countReads();
    const lease = vi.spyOn(fx.runtime.store, 'acquireLease');
    const gate = fx.endpoint.gate();

    const calls = Array.from({ length: 20 }, () => getToken(s.key));
    await gate.arrived;
    // One shared read (single-flight) served all 20; give them a moment to reach the refresh in flight.
    await vi.waitFor(() => expect(reads.done).toBe(1), { timeout: 10_000, interval: 5 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    gate.release();
    const results = await Promise.all(calls);
    expect(reads.done).toBe(1);

    expect(fx.endpoint.requests).toHaveLength(1);
    expect(new Set(results.map((r) => r.access_token))).toEqual(
      new Set([fx.endpoint.issued[0]?.accessToken]),
    );
    // the other 19 joined the refresh in flight instead of racing for the lease or polling
    expect(lease).toHaveBeenCalledTimes(1);
    expect(fx.sleeps).toEqual([]);
  });

  it('collapses 20 concurrent forced calls into one grant; all get the new token', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 3600 });
    const reads = countReads();
    const gate = fx.endpoint.gate();

    const calls = Array.from({ length: 20 }, () => getToken(s.key, FORCED));
    await gate.arrived;
    // Forced calls read for themselves (their version must postdate the token they reject).
    await vi.waitFor(() => expect(reads.done).toBe(20), { timeout: 10_000, interval: 5 });
    gate.release();
    const results = await Promise.all(calls);

    expect(fx.endpoint.requests).toHaveLength(1);
    const fresh = fx.endpoint.issued[0]?.accessToken;
    expect(results.map((r) => r.access_token)).toEqual(Array(20).fill(fresh));
    expect((await readSession(fx, s.key)).record.version).toBe(2);
  });

  it('a forced call that finds the version changed by someone else serves without a second grant', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 3600 });
    const peer = createPeer(fx);
    const store = fx.runtime.store;
    const lease = store.acquireLease.bind(store);
    // Between this call's read (version 1) and its lease, another process forces a refresh.
    vi.spyOn(store, 'acquireLease').mockImplementationOnce(async (...args) => {
      expect(await peer.runtime.refresher.refresh(s.key, { kind: 'forced', version: 1 })).toMatchObject({
        kind: 'refreshed',
      });
      return lease(...args);
    });

    const result = await getToken(s.key, FORCED);
    expect(fx.endpoint.requests).toHaveLength(1);
    expect(result.access_token).toBe(fx.endpoint.issued[0]?.accessToken);
    expect((await readSession(fx, s.key)).record.version).toBe(2);
  });

  it('waits for a refresh leased by another process, then serves its token', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 30 });
    const peer = createPeer(fx);
    const gate = fx.endpoint.gate();
    const other = peer.runtime.tokens.getToken(s.key, ON_DEMAND);
    await gate.arrived;

    // The first time this process waits, the other one's grant completes.
    let released = false;
    fx.onSleep = async () => {
      if (released) return;
      released = true;
      gate.release();
      await other;
    };
    const result = await getToken(s.key);

    expect(fx.endpoint.requests).toHaveLength(1);
    expect(result.access_token).toBe(fx.endpoint.issued[0]?.accessToken);
    expect((await other).access_token).toBe(result.access_token);
    expect(fx.sleeps.length).toBeGreaterThanOrEqual(1);
    expect(fx.sleeps.every((ms) => ms > 0 && ms <= 400)).toBe(true);
  });

  it('gives up waiting on another process after its wait budget with RefreshUnavailableError', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 30 });
    const peer = createPeer(fx);
    const gate = fx.endpoint.gate();
    const other = peer.runtime.tokens.getToken(s.key, ON_DEMAND);
    await gate.arrived;
    const start = fx.clock.now();

    const err = await getToken(s.key).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RefreshUnavailableError);
    expect((err as RefreshUnavailableError).retryAfterSeconds).toBeGreaterThanOrEqual(1);
    const waited = fx.clock.now() - start;
    expect(waited).toBeGreaterThanOrEqual(fx.config.httpTimeoutMs);
    expect(waited).toBeLessThan(fx.config.leaseSeconds * 1000);
    expect(fx.endpoint.requests).toHaveLength(1);

    gate.release();
    await other;
  });

  it('reauthorization_required → ReauthorizationRequiredError, without another grant', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 30 });
    fx.endpoint.reply({ kind: 'error', status: 400, error: 'invalid_grant' });
    await expect(getToken(s.key)).rejects.toBeInstanceOf(ReauthorizationRequiredError);
    expect(fx.events.map((e) => e.detailType)).toEqual(['SessionReauthorizationRequired']);

    // now from the item's status, even for a caller the old token would still satisfy
    await expect(getToken(s.key, { minValidity: 0, force: false })).rejects.toBeInstanceOf(
      ReauthorizationRequiredError,
    );
    await expect(getToken(s.key, FORCED)).rejects.toBeInstanceOf(ReauthorizationRequiredError);
    expect(fx.endpoint.requests).toHaveLength(1);
  });

  it('a session replaced by a new login while its old grant fails serves the new token', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 30 });
    fx.endpoint.reply({ kind: 'error', status: 400, error: 'invalid_grant' });
    const gate = fx.endpoint.gate();
    const pending = getToken(s.key);
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
    expect((await pending).access_token).toBe('at-relogin');
    expect(fx.events).toEqual([]);
  });

  it('a missing session → SessionNotFoundError', async () => {
    await expect(getToken({ userId: uniqueId('nobody'), providerId })).rejects.toBeInstanceOf(
      SessionNotFoundError,
    );
    await expect(getToken({ userId: uniqueId('nobody'), providerId }, FORCED)).rejects.toBeInstanceOf(
      SessionNotFoundError,
    );
  });

  it('provider failing transiently → RefreshUnavailableError with retryAfterSeconds; no grant while backing off', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 30 });
    fx.endpoint.reply({ kind: 'status', status: 503 });
    const first = await getToken(s.key).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(RefreshUnavailableError);
    expect((first as RefreshUnavailableError).retryAfterSeconds).toBe(12);

    fx.clock.advance(2000);
    const second = await getToken(s.key).catch((e: unknown) => e);
    expect(second).toBeInstanceOf(RefreshUnavailableError);
    expect((second as RefreshUnavailableError).retryAfterSeconds).toBe(10);
    await expect(getToken(s.key, FORCED)).rejects.toBeInstanceOf(RefreshUnavailableError);
    expect(fx.endpoint.requests).toHaveLength(1);

    // the session is intact: after the backoff the next call refreshes
    fx.clock.advance(10_000);
    expect((await getToken(s.key)).access_token).toBe(fx.endpoint.issued[0]?.accessToken);
    expect(fx.endpoint.presented()).toEqual([s.refreshToken, s.refreshToken]);
  });

  it('while backing off, serves a caller whose minValidity the current token satisfies', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 30 });
    fx.endpoint.reply({ kind: 'status', status: 503 });
    await expect(getToken(s.key)).rejects.toBeInstanceOf(RefreshUnavailableError);

    const served = await getToken(s.key, { minValidity: 20, force: false });
    expect(served).toMatchObject({ access_token: s.accessToken, expires_in: 30 });
    expect(fx.endpoint.requests).toHaveLength(1);
  });

  it('no refresh token and an expired token → ReauthorizationRequiredError', async () => {
    const s = await addSession(fx, { providerId, refreshToken: null, expiresIn: -5 });
    await expect(getToken(s.key)).rejects.toBeInstanceOf(ReauthorizationRequiredError);
    await expect(getToken(s.key, FORCED)).rejects.toBeInstanceOf(ReauthorizationRequiredError);
    expect(fx.endpoint.requests).toHaveLength(0);

    // while it is still valid enough, it is served
    const live = await addSession(fx, { providerId, refreshToken: null, expiresIn: 600 });
    expect((await getToken(live.key)).access_token).toBe(live.accessToken);
  });

  it('a session with no expiry is served and refreshed only when forced', async () => {
    const s = await addSession(fx, { providerId, expiresIn: null });
    const served = await getToken(s.key, { minValidity: 86_400, force: false });
    expect(served).toEqual({
      access_token: s.accessToken,
      token_type: 'Bearer',
      expires_at: null,
      expires_in: null,
    });
    fx.clock.advance(365 * 86_400_000);
    expect((await getToken(s.key)).access_token).toBe(s.accessToken);
    expect(fx.endpoint.requests).toHaveLength(0);

    fx.endpoint.reply({ kind: 'rotate', expiresIn: null });
    const forced = await getToken(s.key, FORCED);
    expect(fx.endpoint.presented()).toEqual([s.refreshToken]);
    expect(forced).toMatchObject({ access_token: fx.endpoint.issued[0]?.accessToken, expires_at: null });
  });

  describe('minValidity is a wish', () => {
    it('beyond the provider’s token lifetime: 200 with the freshest token and its true expires_in, one grant', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      fx.endpoint.reply({ kind: 'rotate', expiresIn: 600 });
      const served = await getToken(s.key, { minValidity: 3600, force: false });
      expect(served).toMatchObject({ access_token: fx.endpoint.issued[0]?.accessToken, expires_in: 600 });
      expect(fx.endpoint.requests).toHaveLength(1);

      // 30 s and then 4 minutes later the same wish costs no grant: half the issued lifetime is left.
      fx.clock.advance(30_000);
      expect(await getToken(s.key, { minValidity: 3600, force: false })).toMatchObject({ expires_in: 570 });
      fx.clock.advance(240_000);
      expect(await getToken(s.key, { minValidity: 3600, force: false })).toMatchObject({ expires_in: 330 });
      expect(fx.endpoint.requests).toHaveLength(1);

      // Below half the issued lifetime, the wish is worth one more grant.
      fx.clock.advance(60_000);
      const renewed = await getToken(s.key, { minValidity: 3600, force: false });
      expect(renewed).toMatchObject({ access_token: fx.endpoint.issued[1]?.accessToken, expires_in: 3600 });
      expect(fx.endpoint.requests).toHaveLength(2);
    });

    it('60-second tokens and the default minValidity: a burst of forced calls gets 200, never 400', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      fx.endpoint.reply({ kind: 'rotate', expiresIn: 60 });
      fx.endpoint.clockAdvanceMs = 400; // the token is 59.6 s from expiry when it is checked
      const gate = fx.endpoint.gate();
      const calls = Array.from({ length: 10 }, () => getToken(s.key, FORCED));
      await gate.arrived;
      gate.release();
      const results = await Promise.all(calls);
      expect(new Set(results.map((r) => r.access_token))).toEqual(
        new Set([fx.endpoint.issued[0]?.accessToken]),
      );
      expect(results.every((r) => (r.expires_in ?? 0) <= 60)).toBe(true);
      expect(fx.endpoint.requests).toHaveLength(1);
    });

    it('a token a grant issued seconds ago is served to a wish it cannot meet, without another grant', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 5 });
      fx.endpoint.reply({ kind: 'rotate', expiresIn: 3 });
      expect(await getToken(s.key)).toMatchObject({ access_token: fx.endpoint.issued[0]?.accessToken });
      fx.clock.advance(1_000);
      expect(await getToken(s.key)).toMatchObject({ access_token: fx.endpoint.issued[0]?.accessToken });
      expect(fx.endpoint.requests).toHaveLength(1);
    });
  });

  describe('rejected: forced only while the stored token is the refused one', () => {
    it('callers holding the same refused token need one grant; a later one gets the newer token at once', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 3600 });
      const rejected = tokenFingerprint(s.accessToken);
      const gate = fx.endpoint.gate();
      const calls = Array.from({ length: 20 }, () =>
        getToken(s.key, { ...ON_DEMAND, force: true, rejected }),
      );
      await gate.arrived;
      gate.release();
      const results = await Promise.all(calls);
      const fresh = fx.endpoint.issued[0]?.accessToken;
      expect(new Set(results.map((r) => r.access_token))).toEqual(new Set([fresh]));
      expect(fx.endpoint.requests).toHaveLength(1);

      // A straggler with the same refused token, after the commit: served the newer token, no grant.
      expect((await getToken(s.key, { ...ON_DEMAND, force: true, rejected })).access_token).toBe(fresh);
      expect(fx.endpoint.requests).toHaveLength(1);
      // A caller refusing the new token forces again.
      const again = await getToken(s.key, { ...FORCED, rejected: tokenFingerprint(fresh ?? '') });
      expect(again.access_token).toBe(fx.endpoint.issued[1]?.accessToken);
      expect(fx.endpoint.requests).toHaveLength(2);
    });

    it('a peer process holding the same refused token waits for the first grant instead of forcing a second', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 3600 });
      const peer = createPeer(fx);
      const rejected = tokenFingerprint(s.accessToken);
      const gate = fx.endpoint.gate();
      const first = getToken(s.key, { ...FORCED, rejected });
      await gate.arrived;
      let released = false;
      peer.onSleep = async () => {
        if (released) return;
        released = true;
        gate.release();
        await first;
      };
      const second = await peer.runtime.tokens.getToken(s.key, { ...FORCED, rejected });
      expect(peer.sleeps.length).toBeGreaterThanOrEqual(1);
      expect(second.access_token).toBe((await first).access_token);
      expect(fx.endpoint.requests).toHaveLength(1);
    });

    it('without rejected, forced calls keep today’s semantics: a call after the commit forces again', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 3600 });
      await getToken(s.key, FORCED);
      await getToken(s.key, FORCED);
      expect(fx.endpoint.requests).toHaveLength(2);
    });
  });

  it('a 200 with a rotated refresh token but no access token: 503 Retry-After 1, refresh token kept, next call refreshes', async () => {
    const s = await addSession(fx, { providerId, expiresIn: 3600 });
    fx.endpoint.reply({ kind: 'json', body: { refresh_token: 'rt-partial', token_type: 'Bearer' } });
    const err = await getToken(s.key, FORCED).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RefreshUnavailableError);
    expect((err as RefreshUnavailableError).retryAfterSeconds).toBe(1);
    const stored = await readSession(fx, s.key);
    expect(stored.refreshToken).toBe('rt-partial');
    expect(stored.record).toMatchObject({ status: 'active', failureCount: 0, expiresAt: fx.clock.seconds() });
    expect(stored.record.nextAttemptAt).toBeUndefined();

    const next = await getToken(s.key);
    expect(next.access_token).toBe(fx.endpoint.issued[0]?.accessToken);
    expect(fx.endpoint.presented()).toEqual([s.refreshToken, 'rt-partial']);
  });

  it("a grant slower than the caller's wait: 503 with Retry-After, the grant goes on, the next call gets its token without a second grant", async () => {
    const slow = createCoreFixture(handle, { env: { TOKENKEEPER_HTTP_TIMEOUT_MS: '300' } });
    const prov = await addProvider(slow);
    const s = await addSession(slow, { providerId: prov, expiresIn: 3600 });
    const gate = slow.endpoint.gate();

    const first = slow.runtime.tokens.getToken(s.key, FORCED);
    await gate.arrived;
    const err = await first.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RefreshUnavailableError);
    expect((err as RefreshUnavailableError).retryAfterSeconds).toBeGreaterThanOrEqual(1);

    gate.release();
    await slow.runtime.refresher.settleAll();
    const [issued] = slow.endpoint.issued;
    expect(await slow.runtime.tokens.getToken(s.key, ON_DEMAND)).toMatchObject({
      access_token: issued?.accessToken,
    });
    expect(slow.endpoint.requests).toHaveLength(1);
    expect((await readSession(slow, s.key)).refreshToken).toBe(issued?.refreshToken);
  });
});
