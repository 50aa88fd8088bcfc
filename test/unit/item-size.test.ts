import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measureSessionItems } from '../../bench/item-size-phase.js';
import { DynamoMeter } from '../../bench/meter.js';
import { createCoreFixture } from '../support/core-fixture.js';
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
});
