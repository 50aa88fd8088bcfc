import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measureSessionItems } from '../../bench/item-size-phase.js';
import { DynamoMeter } from '../../bench/meter.js';
import { addProvider, addSession, createCoreFixture } from '../support/core-fixture.js';
import { type DynaliteHandle, makeDynamoClient, startDynalite } from '../support/dynalite.js';

/** bench/item-size-phase.ts: the sizes it computes are the ones dynalite bills. */
describe('measureSessionItems', () => {
  let handle: DynaliteHandle;

  beforeAll(async () => {
    handle = await startDynalite();
  });
  afterAll(() => handle?.stop());

  it('computes the write units dynalite reports, and a Binary item a fifth smaller than its text form', async () => {
    // Prepare
    const client = makeDynamoClient(handle.endpoint);
    const meter = new DynamoMeter();
    meter.attach(client);
    const fx = createCoreFixture(handle, { dynamodb: client });

    // Act
    const rows = await measureSessionItems({
      store: fx.runtime.store,
      doc: handle.doc,
      tableName: handle.tableName,
      providerId: 'item-size',
      meter,
      accessTokenBytes: [256, 1024, 2048],
      refreshTokenBytes: 64,
    });
    client.destroy();

    // Assess
    for (const row of rows) {
      expect(row.measured, `${row.accessTokenBytes} B`).toEqual(row.binary.wru);
      expect(row.binary.leasedItemBytes).toBeGreaterThan(row.binary.itemBytes);
      // the tokens' envelopes shrink by a quarter of their text
      const sealedText = row.text.itemBytes - row.binary.itemBytes;
      expect(sealedText).toBeGreaterThan(0.2 * (row.accessTokenBytes + row.refreshTokenBytes));
    }
    const [small, reference, large] = rows as [(typeof rows)[0], (typeof rows)[0], (typeof rows)[0]];
    expect(small.binary.wru.total).toBe(4);
    expect(reference.binary.itemBytes / reference.text.itemBytes).toBeLessThan(0.8);
    expect([reference.text.wru.total, reference.binary.wru.total]).toEqual([6, 6]);
    expect([large.text.wru.total, large.binary.wru.total]).toEqual([10, 8]);
  });

  it("the meter counts the index writes of the store's plain conditional writes: none for a lease, two for a commit", async () => {
    // Prepare
    const client = makeDynamoClient(handle.endpoint);
    const meter = new DynamoMeter();
    meter.attach(client);
    const fx = createCoreFixture(handle, { dynamodb: client });
    const providerId = await addProvider(fx);
    const session = await addSession(fx, { providerId, expiresIn: 60 });
    const condition = { kind: 'forced', version: 1 } as const;
    const lease = (owner: string, at: number) =>
      fx.runtime.store.acquireLease(session.key, owner, condition, at, at + 30_000);
    // the meter's shadow of the item's index keys starts from a first image (a lease left to expire)
    const at = fx.clock.now();
    expect(await lease('first', at)).toBeDefined();

    // Act
    meter.enabled = true;
    expect(await lease('second', at + 31_000)).toBeDefined();
    const afterLease = meter.snapshot();
    await fx.runtime.store.commitRefresh(
      session.key,
      'second',
      {
        accessToken: 'at-2',
        refreshToken: 'rt-2',
        tokenType: 'Bearer',
        expiresAt: fx.clock.seconds() + 3600,
      },
      at + 31_000,
    );
    const afterCommit = meter.snapshot();
    client.destroy();

    // Assess: the lease leaves the index keys as they were; the commit moves the due time (out, in)
    expect(afterLease.lease).toMatchObject({ requests: 1, gsiWcu: 0, gsiUnknown: 0 });
    expect(afterCommit.commit).toMatchObject({ requests: 1, gsiWcu: 2, gsiUnknown: 0 });
  });
});
