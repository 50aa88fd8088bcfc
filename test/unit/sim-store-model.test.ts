import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { itemSize } from '../../bench/item-size.js';
import { sessionItemSizes } from '../../bench/sim/sizes.js';
import { ModelStore } from '../../bench/sim/store-model.js';
import { SessionTable } from '../../bench/sim/table-model.js';
import type { ProviderConfig, SessionKey } from '../../functions/core/model.js';
import {
  type CommittedTokens,
  type SessionRecord,
  type SessionStore,
  shardOf,
} from '../../functions/core/store/store.js';
import { createCoreFixture, rawItem, T0 } from '../support/core-fixture.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

/**
 * The simulation's table model (bench/sim) must behave as DynamoSessionStore does on DynamoDB: the
 * same scenario of leases, commits, failures and circuit writes runs through both, and every answer
 * is compared. A model that drifted from the store would make the simulation's figures worthless.
 */

const SHARDS = 4;
const PROVIDER: ProviderConfig = {
  providerId: 'p0',
  tokenEndpoint: 'https://p0.provider.example/oauth/token',
  clientId: 'tokenkeeper',
  clientAuthMethod: 'none',
  createdAt: T0,
  updatedAt: T0,
};

/** What the scenario compares of a record: everything but the sealed values, and the tokens opened. */
async function view(store: SessionStore, record: SessionRecord | undefined) {
  if (!record) return undefined;
  const { accessTokenSealed: _a, refreshTokenSealed: _r, createdAt: _c, ...rest } = record;
  return { ...rest, tokens: await store.reveal(record) };
}

/** Runs the scenario on one store and returns every answer, in order. */
async function scenario(store: SessionStore): Promise<unknown[]> {
  const out: unknown[] = [];
  const s = Math.floor(T0 / 1000);
  const key: SessionKey = { userId: 'u7', providerId: 'p0' };
  const other: SessionKey = { userId: 'u8', providerId: 'p0' };
  const shard = shardOf(key, SHARDS);
  const due = async (dueBy: number) =>
    (await store.queryDue(shard, dueBy)).keys.filter((k) => k.userId === key.userId);
  const tokens = (n: number, expiresIn = 3600): CommittedTokens => ({
    accessToken: `at.7.${n}`,
    refreshToken: `rt.7.${n}`,
    tokenType: 'Bearer',
    expiresAt: s + expiresIn,
  });

  await store.putProvider(PROVIDER);
  const put = await store.putSession(
    { ...key, accessToken: 'at.7.0', refreshToken: 'rt.7.0', tokenType: 'Bearer', expiresAt: s + 100 },
    T0,
  );
  out.push(put.created, await view(store, put.record));
  await store.putSession({ ...other, accessToken: 'at.8.0', tokenType: 'Bearer', expiresAt: s + 50 }, T0);
  out.push(await due(s + 600), await due(s + 99));

  // Sweep lease, a second owner refused, a commit by the wrong owner refused, the right one taken.
  const sweep = { kind: 'sweep' as const, dueBy: s + 600, seenDueAt: s + 100 };
  out.push(await view(store, await store.acquireLease(key, 'A', sweep, T0, T0 + 30_000)));
  out.push(await view(store, await store.acquireLease(key, 'B', sweep, T0 + 1, T0 + 30_001)));
  out.push(await view(store, await store.acquireLease(other, 'B', sweep, T0, T0 + 30_000)));
  out.push(await view(store, await store.commitRefresh(key, 'B', tokens(1), T0 + 200)));
  out.push(await view(store, await store.commitRefresh(key, 'A', tokens(1), T0 + 200)));
  // A forced call that saw an older version is refused.
  out.push(
    await view(
      store,
      await store.acquireLease(key, 'B', { kind: 'forced', version: 1 }, T0 + 250, T0 + 30_250),
    ),
  );
  out.push(await due(s + 600), await due(s + 3600));
  // The index entry the sweep saw is gone: the same lease is refused now.
  out.push(await view(store, await store.acquireLease(key, 'C', sweep, T0 + 300, T0 + 30_300)));

  // On demand, then a transient failure with backoff.
  const onDemand = { kind: 'onDemand' as const, minValidUntil: s + 4000 };
  out.push(await view(store, await store.acquireLease(key, 'D', onDemand, T0 + 400, T0 + 30_400)));
  out.push(
    await store.recordFailure(key, 'X', { kind: 'transient', error: { code: 'x', description: 'x', at: 1 } }),
  );
  const error = { code: 'temporarily_unavailable', description: 'try later', at: T0 + 500 };
  out.push(await store.recordFailure(key, 'D', { kind: 'transient', error, nextAttemptAt: T0 + 60_000 }));
  out.push(await view(store, await store.getSession(key, { consistent: true })));
  // Backing off: refused, unless the failure falls in a lifted window; then a forced lease by version.
  const forced = { kind: 'forced' as const, version: 2 };
  out.push(await view(store, await store.acquireLease(key, 'E', forced, T0 + 600, T0 + 30_600)));
  out.push(
    await view(
      store,
      await store.acquireLease(key, 'E', forced, T0 + 600, T0 + 30_600, { from: T0, to: T0 + 1000 }),
    ),
  );
  // An expired lease is taken over; the first owner's release and commit then do nothing.
  out.push(
    await view(
      store,
      await store.acquireLease(key, 'F', { kind: 'forced', version: 2 }, T0 + 40_000, T0 + 70_000),
    ),
  );
  await store.releaseLease(key, 'E');
  out.push(await view(store, await store.commitRefresh(key, 'E', tokens(2), T0 + 41_000)));
  // A grant with no access token and no expiry: the refresh token is kept, the session marked due.
  out.push(
    await view(
      store,
      await store.commitRefresh(
        key,
        'F',
        { refreshToken: 'rt.7.2', tokenType: 'Bearer', expiresAt: s + 41, dueAt: s + 41 },
        T0 + 41_000,
      ),
    ),
  );
  out.push(await due(s + 41));
  // A dead grant: out of the index, kept as reauthorization_required; no lease is possible.
  out.push(
    await view(
      store,
      await store.acquireLease(key, 'G', { kind: 'sweep', dueBy: s + 600 }, T0 + 42_000, T0 + 72_000),
    ),
  );
  out.push(
    await store.recordFailure(key, 'G', {
      kind: 'reauthorization_required',
      error: { code: 'invalid_grant', description: 'dead', at: T0 + 43_000 },
    }),
  );
  out.push(await due(s + 100_000), await view(store, await store.getSession(key)));
  out.push(
    await view(
      store,
      await store.acquireLease(key, 'H', { kind: 'forced', version: 4 }, T0 + 44_000, T0 + 74_000),
    ),
  );
  // A new login replaces it (version goes on, status active, back in the index).
  const again = await store.putSession(
    { ...key, accessToken: 'at.7.9', refreshToken: 'rt.7.9', tokenType: 'Bearer', expiresAt: s + 900 },
    T0 + 45_000,
  );
  out.push(again.created, await view(store, again.record), await due(s + 1000));

  // The provider's circuit.
  const err = (at: number) => ({ code: 'http_503', description: 'down', at });
  out.push(await store.getCircuit('p0'), await store.getCircuit('nope'));
  out.push(await store.openCircuit('p0', T0, T0 + 2000, 3));
  for (let i = 0; i < 3; i++) out.push(await store.recordCircuitFailure('p0', err(T0 + i)));
  out.push(await store.resetCircuitFailures('p0'), await store.getCircuit('p0'));
  for (let i = 0; i < 3; i++) out.push(await store.recordCircuitFailure('p0', err(T0 + 10 + i)));
  out.push(await store.openCircuit('p0', T0 + 20, T0 + 2000, 3));
  out.push(await store.openCircuit('p0', T0 + 21, T0 + 2000, 3));
  out.push(await store.claimCircuitProbe('p0', 'P1', T0 + 1000, T0 + 31_000));
  out.push(await store.claimCircuitProbe('p0', 'P1', T0 + 2000, T0 + 32_000));
  out.push(await store.claimCircuitProbe('p0', 'P2', T0 + 2001, T0 + 32_001));
  // Held-back counts: the slices of one sweep add up, the circuit keeps the largest sweep's total.
  await store.noteCircuitHeldBack('p0', 5, 'S1');
  await store.noteCircuitHeldBack('p0', 3, 'S1');
  out.push((await store.getCircuit('p0'))?.heldBack);
  await store.noteCircuitHeldBack('p0', 2, 'S2');
  out.push((await store.getCircuit('p0'))?.heldBack);
  await store.noteCircuitHeldBack('p0', 9, 'S2');
  out.push((await store.getCircuit('p0'))?.heldBack);
  out.push(await store.reopenCircuit('p0', 'P2', err(T0 + 2100), T0 + 6000));
  out.push(await store.reopenCircuit('p0', 'P1', err(T0 + 2100), T0 + 6000));
  out.push(await store.claimCircuitProbe('p0', 'P3', T0 + 6000, T0 + 36_000));
  await store.releaseCircuitProbe('p0', 'P3');
  out.push(await store.getCircuit('p0'));
  out.push(await store.claimCircuitProbe('p0', 'P4', T0 + 6001, T0 + 36_001));
  out.push(await store.closeCircuit('p0', T0 + 7000, T0 + 10));
  out.push(await store.closeCircuit('p0', T0 + 7000, T0 + 20));
  out.push(await store.closeCircuit('p0', T0 + 7001, T0 + 6001));
  out.push(await store.getCircuit('p0'));
  await store.flagProviderRejected('p0', T0 + 8000);
  out.push((await store.getProvider('p0'))?.clientRejectedAt);
  await store.clearProviderRejected('p0');
  out.push((await store.getProvider('p0'))?.clientRejectedAt);

  // The sweep record: slices add their counts; a late slice or an older dispatch changes nothing.
  await store.startSweep({ sweepId: 'W1', startedAt: T0 + 100, summary: { due: 10, refreshed: 0 } });
  await store.addToSweep('W1', { refreshed: 4, missed: 1 }, T0 + 200);
  await store.addToSweep('W1', { refreshed: 5 }, T0 + 300);
  await store.addToSweep('W1', { refreshed: 100 }, T0 + 250);
  await store.addToSweep('W0', { refreshed: 100 }, T0 + 400);
  out.push(await store.getLatestSweep());
  await store.startSweep({ sweepId: 'W0', startedAt: T0 + 50, summary: { due: 99 } });
  out.push(await store.getLatestSweep());
  await store.startSweep({ sweepId: 'W2', startedAt: T0 + 500, summary: { due: 3 } });
  out.push(await store.getLatestSweep());

  // Slices of the due range (`from`, inclusive) and its pages.
  for (let i = 20; i < 26; i++) {
    await store.putSession(
      {
        userId: `u${i}`,
        providerId: 'p0',
        accessToken: 'a',
        refreshToken: 'r',
        tokenType: 'Bearer',
        expiresAt: s + i,
      },
      T0,
    );
  }
  for (let sh = 0; sh < SHARDS; sh++) {
    out.push((await store.queryDue(sh, s + 23, undefined, s + 21)).keys);
    out.push((await store.queryDue(sh, s + 22)).keys.filter((k) => k.userId !== key.userId));
  }

  out.push(
    await view(store, await store.deleteSession(key)),
    await store.getSession(key),
    await due(s + 100_000),
  );
  return out;
}

describe('the simulation’s table model against DynamoSessionStore on dynalite', () => {
  let handle: DynaliteHandle;

  beforeAll(async () => {
    handle = await startDynalite();
  });
  afterAll(() => handle?.stop());

  it('answers the same scenario of leases, commits, failures and circuit writes the same way', async () => {
    // A 1-second schedule: the scenario's minute-long tokens are kept by the sweep, in both stores.
    const fx = createCoreFixture(handle, {
      env: { TOKENKEEPER_SHARD_COUNT: String(SHARDS), TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '1' },
    });
    const schedule = {
      onDemandBelowSeconds: fx.config.refreshIntervalSeconds + fx.config.sweepBudgetSeconds,
      keepAliveSeconds: fx.config.keepAliveSeconds,
    };
    const sizes = await sessionItemSizes(64, 64);
    const model = new ModelStore({
      table: new SessionTable({ rows: 100, shardCount: SHARDS, sizes, schedule }),
    });
    const real = await scenario(fx.runtime.store);
    const modelled = await scenario(model);
    expect(modelled).toEqual(real);
    expect(JSON.stringify(real).length).toBeGreaterThan(5000);
    // The scenario reached every branch it means to: leases given and refused, a dead grant.
    expect(real.filter((x) => x === undefined).length).toBeGreaterThan(8);
  });

  it('bills an item of the size DynamoDB stores', async () => {
    const fx = createCoreFixture(handle, { env: { TOKENKEEPER_SHARD_COUNT: String(SHARDS) } });
    const store = fx.runtime.store;
    await store.putProvider(PROVIDER);
    const key = { userId: 'u1234567', providerId: 'p0' };
    const s = Math.floor(T0 / 1000);
    await store.putSession(
      { ...key, accessToken: 'a', refreshToken: 'r', tokenType: 'Bearer', expiresAt: s + 500 },
      T0,
    );
    await store.acquireLease(key, 'A', { kind: 'sweep', dueBy: s + 600 }, T0, T0 + 30_000);
    await store.commitRefresh(
      key,
      'A',
      {
        accessToken: 'x'.repeat(1024),
        refreshToken: 'y'.repeat(64),
        tokenType: 'Bearer',
        expiresAt: s + 3600,
      },
      T0,
    );
    const real = itemSize((await rawItem(fx, key)) ?? {});
    const modelled = (await sessionItemSizes(1024, 64)).idle;
    expect(Math.abs(modelled - real) / real).toBeLessThan(0.02);
  });
});
