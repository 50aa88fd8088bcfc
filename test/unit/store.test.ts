import { type AttributeValue, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { textEnvelope } from '../../functions/core/crypto/crypto.js';
import type { SessionKey } from '../../functions/core/model.js';
import { type CommittedTokens, type SessionRecord, shardOf } from '../../functions/core/store/store.js';
import { TABLE } from '../../functions/core/store/table.js';
import {
  addProvider,
  addSession,
  CLIENT_SECRET,
  type CoreFixture,
  createCoreFixture,
  rawItem,
  readSession,
  uniqueId,
} from '../support/core-fixture.js';
import { type DynaliteHandle, makeDynamoClient, startDynalite } from '../support/dynalite.js';

const LEASE_MS = 30_000;

const itemKey = (key: SessionKey) => ({
  [TABLE.partitionKey]: `USER#${key.userId}`,
  [TABLE.sortKey]: `SESSION#${key.providerId}`,
});

/** The item as the low-level client returns it: each attribute with its DynamoDB type. */
async function rawAttributes(
  handle: DynaliteHandle,
  fx: CoreFixture,
  key: SessionKey,
): Promise<Record<string, AttributeValue>> {
  const { Item } = await handle.client.send(
    new GetItemCommand({
      TableName: fx.config.tableName,
      Key: {
        [TABLE.partitionKey]: { S: itemKey(key).pk as string },
        [TABLE.sortKey]: { S: itemKey(key).sk as string },
      },
      ConsistentRead: true,
    }),
  );
  if (!Item) throw new Error('no item');
  return Item;
}

/** Whether any attribute's bytes contain one of the values in plaintext. */
function holdsPlaintext(item: Record<string, AttributeValue>, values: string[]): boolean {
  const bytes = Buffer.concat(
    Object.values(item).map((v) => (v.B ? Buffer.from(v.B) : Buffer.from(JSON.stringify(v)))),
  );
  return values.some((value) => bytes.includes(Buffer.from(value)));
}

/** Rewrites the item's sealed tokens in the text form, as the release before the binary form wrote them. */
async function toTextForm(handle: DynaliteHandle, fx: CoreFixture, key: SessionKey): Promise<void> {
  const item = await rawItem(fx, key);
  const set = ['accessToken = :at'];
  const values: Record<string, string> = { ':at': textEnvelope(item?.accessToken as Uint8Array) };
  if (item?.refreshToken !== undefined) {
    set.push('refreshToken = :rt');
    values[':rt'] = textEnvelope(item.refreshToken as Uint8Array);
  }
  await handle.doc.send(
    new UpdateCommand({
      TableName: fx.config.tableName,
      Key: itemKey(key),
      UpdateExpression: `SET ${set.join(', ')}`,
      ExpressionAttributeValues: values,
    }),
  );
}

describe('DynamoSessionStore on dynalite', () => {
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

  const store = () => fx.runtime.store;
  const now = () => fx.clock.now();
  const dueIn = async (key: SessionKey, dueBy = fx.clock.seconds() + 100_000) => {
    const { keys } = await store().queryDue(shardOf(key, fx.config.shardCount), dueBy);
    return keys.filter((k) => k.userId === key.userId && k.providerId === key.providerId);
  };
  const tokens = (over: Partial<CommittedTokens> = {}): CommittedTokens => ({
    accessToken: 'at-committed',
    refreshToken: 'rt-committed',
    tokenType: 'Bearer',
    expiresAt: fx.clock.seconds() + 3600,
    ...over,
  });
  const sweepLease = (key: SessionKey, owner: string, at = now()) =>
    store().acquireLease(
      key,
      owner,
      { kind: 'sweep', dueBy: Math.floor(at / 1000) + 100_000 },
      at,
      at + LEASE_MS,
    );

  describe('the sparse byExpiry index', () => {
    it('holds a refreshable session with an expiry under its shard and expiresAt', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 300 });
      expect(await dueIn(s.key)).toEqual([{ ...s.key, dueAt: s.expiresAt }]);
      // the due bound is inclusive and the range ends there
      expect(await dueIn(s.key, s.expiresAt)).toHaveLength(1);
      expect(await dueIn(s.key, (s.expiresAt as number) - 1)).toHaveLength(0);
      // and only under its own shard
      for (let shard = 0; shard < fx.config.shardCount; shard++) {
        if (shard === shardOf(s.key, fx.config.shardCount)) continue;
        const { keys } = await store().queryDue(shard, fx.clock.seconds() + 100_000);
        expect(keys.filter((k) => k.userId === s.key.userId)).toEqual([]);
      }
    });

    it('leaves out a session without a refresh token', async () => {
      const s = await addSession(fx, { providerId, refreshToken: null });
      expect(await dueIn(s.key)).toEqual([]);
      expect((await rawItem(fx, s.key))?.[TABLE.shardAttribute]).toBeUndefined();
    });

    it('leaves out a session without an expiry', async () => {
      const s = await addSession(fx, { providerId, expiresIn: null });
      expect(await dueIn(s.key)).toEqual([]);
      expect((await rawItem(fx, s.key))?.[TABLE.shardAttribute]).toBeUndefined();
    });

    it('drops a session that became reauthorization_required', async () => {
      const s = await addSession(fx, { providerId });
      expect(await dueIn(s.key)).toHaveLength(1);
      expect(await sweepLease(s.key, 'me')).toBeDefined();
      const error = { code: 'invalid_grant', description: 'grant revoked', at: now() };
      expect(await store().recordFailure(s.key, 'me', { kind: 'reauthorization_required', error })).toBe(
        true,
      );

      expect(await dueIn(s.key)).toEqual([]);
      const item = await rawItem(fx, s.key);
      expect(item).toMatchObject({ status: 'reauthorization_required', lastError: error, failureCount: 1 });
      expect(item?.[TABLE.shardAttribute]).toBeUndefined();
      expect(item?.leaseOwner).toBeUndefined();
    });
  });

  describe('acquireLease', () => {
    it('a sweep lease is pinned to the expiry the index showed: a session refreshed since is not leased again', async () => {
      // Guards a wasted second grant when two sweeps overlap and the token lifetime is within the window.
      const s = await addSession(fx, { providerId, expiresIn: 300 });
      const [seen] = await dueIn(s.key);
      const at = now();
      const dueBy = Math.floor(at / 1000) + 100_000;
      const stale = { kind: 'sweep', dueBy, seenDueAt: (seen?.dueAt as number) - 1 } as const;
      expect(await store().acquireLease(s.key, 'owner-a', stale, at, at + LEASE_MS)).toBeUndefined();
      const current = { kind: 'sweep', dueBy, seenDueAt: seen?.dueAt } as const;
      expect(await store().acquireLease(s.key, 'owner-a', current, at, at + LEASE_MS)).toMatchObject({
        leaseOwner: 'owner-a',
      });
    });

    it('refuses while another lease is live and grants once it has expired', async () => {
      const s = await addSession(fx, { providerId });
      const first = await sweepLease(s.key, 'owner-a');
      expect(first).toMatchObject({ leaseOwner: 'owner-a', leaseUntil: now() + LEASE_MS, version: 1 });

      expect(await sweepLease(s.key, 'owner-b', now() + 1)).toBeUndefined();
      expect(await sweepLease(s.key, 'owner-b', now() + LEASE_MS)).toBeUndefined();
      expect((await rawItem(fx, s.key))?.leaseOwner).toBe('owner-a');

      const taken = await sweepLease(s.key, 'owner-b', now() + LEASE_MS + 1);
      expect(taken).toMatchObject({ leaseOwner: 'owner-b', leaseUntil: now() + 2 * LEASE_MS + 1 });
    });

    it('refuses while nextAttemptAt is in the future', async () => {
      const s = await addSession(fx, { providerId });
      expect(await sweepLease(s.key, 'a')).toBeDefined();
      const nextAttemptAt = now() + 60_000;
      const error = { code: 'http_503', description: 'down', at: now() };
      expect(await store().recordFailure(s.key, 'a', { kind: 'transient', error, nextAttemptAt })).toBe(true);
      expect(await rawItem(fx, s.key)).toMatchObject({ nextAttemptAt, failureCount: 1, lastError: error });

      expect(await sweepLease(s.key, 'b', nextAttemptAt - 1)).toBeUndefined();
      expect(await sweepLease(s.key, 'b', nextAttemptAt)).toMatchObject({ leaseOwner: 'b' });
    });

    it('forced: only while the version the caller saw is unchanged', async () => {
      const s = await addSession(fx, { providerId });
      const lease = (owner: string, version: number) =>
        store().acquireLease(s.key, owner, { kind: 'forced', version }, now(), now() + LEASE_MS);

      expect(await lease('a', 0)).toBeUndefined();
      expect(await lease('a', 2)).toBeUndefined();
      expect(await lease('a', 1)).toMatchObject({ leaseOwner: 'a', version: 1 });
      expect(await store().commitRefresh(s.key, 'a', tokens(), now())).toMatchObject({ version: 2 });

      expect(await lease('b', 1)).toBeUndefined();
      expect(await lease('b', 2)).toMatchObject({ leaseOwner: 'b', version: 2 });
    });

    it('onDemand: only while expiresAt < minValidUntil', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 120 });
      const expiresAt = s.expiresAt as number;
      const lease = (minValidUntil: number) =>
        store().acquireLease(s.key, 'a', { kind: 'onDemand', minValidUntil }, now(), now() + LEASE_MS);

      expect(await lease(expiresAt - 60)).toBeUndefined();
      expect(await lease(expiresAt)).toBeUndefined();
      expect(await lease(expiresAt + 1)).toMatchObject({ leaseOwner: 'a' });
    });

    it('onDemand never leases a session without an expiry; sweep neither; forced does', async () => {
      const s = await addSession(fx, { providerId, expiresIn: null });
      const at = now();
      expect(
        await store().acquireLease(s.key, 'a', { kind: 'onDemand', minValidUntil: 4e9 }, at, at + LEASE_MS),
      ).toBeUndefined();
      expect(await sweepLease(s.key, 'a')).toBeUndefined();
      expect(
        await store().acquireLease(s.key, 'a', { kind: 'forced', version: 1 }, at, at + LEASE_MS),
      ).toMatchObject({ leaseOwner: 'a' });
    });

    it('sweep: only while expiresAt <= dueBy', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 600 });
      const expiresAt = s.expiresAt as number;
      const lease = (dueBy: number) =>
        store().acquireLease(s.key, 'a', { kind: 'sweep', dueBy }, now(), now() + LEASE_MS);
      expect(await lease(expiresAt - 1)).toBeUndefined();
      expect(await lease(expiresAt)).toMatchObject({ leaseOwner: 'a' });
    });

    it('refuses a session without a refresh token, and a missing one', async () => {
      const s = await addSession(fx, { providerId, refreshToken: null, expiresIn: -10 });
      expect(await sweepLease(s.key, 'a')).toBeUndefined();
      const nobody = { userId: uniqueId('nobody'), providerId };
      expect(await sweepLease(nobody, 'a')).toBeUndefined();
      // the conditional update did not create an item
      expect(await rawItem(fx, nobody)).toBeUndefined();
    });
  });

  describe('commitRefresh', () => {
    it('commits only for the lease owner; another owner writes nothing', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      expect(await sweepLease(s.key, 'owner-a')).toBeDefined();
      const before = await rawItem(fx, s.key);

      expect(await store().commitRefresh(s.key, 'owner-b', tokens(), now())).toBeUndefined();
      expect(await rawItem(fx, s.key)).toEqual(before);

      fx.clock.advance(1000);
      const committed = await store().commitRefresh(s.key, 'owner-a', tokens(), now());
      expect(committed).toMatchObject({
        version: 2,
        expiresAt: fx.clock.seconds() + 3600,
        refreshedAt: now(),
        failureCount: 0,
      });
      expect(committed?.leaseOwner).toBeUndefined();
      expect(committed?.leaseUntil).toBeUndefined();
      const opened = await readSession(fx, s.key);
      expect([opened.accessToken, opened.refreshToken]).toEqual(['at-committed', 'rt-committed']);
      expect(await dueIn(s.key)).toEqual([{ ...s.key, dueAt: fx.clock.seconds() + 3600 }]);

      // the lease is gone, so the same owner cannot commit twice
      expect(await store().commitRefresh(s.key, 'owner-a', tokens(), now())).toBeUndefined();
      expect((await rawItem(fx, s.key))?.version).toBe(2);
    });

    it('clears failure attributes on commit', async () => {
      const s = await addSession(fx, { providerId });
      await sweepLease(s.key, 'a');
      const error = { code: 'timeout', description: 'slow', at: now() };
      await store().recordFailure(s.key, 'a', { kind: 'transient', error, nextAttemptAt: now() + 1000 });
      fx.clock.advance(1000);
      expect(await sweepLease(s.key, 'b')).toMatchObject({ failureCount: 1, lastError: error });
      await store().commitRefresh(s.key, 'b', tokens(), now());
      const item = await rawItem(fx, s.key);
      expect(item).toMatchObject({ failureCount: 0, version: 2 });
      expect(item).not.toHaveProperty('nextAttemptAt');
      expect(item).not.toHaveProperty('lastError');
    });

    it('without expiresAt removes expiresAt and the shard attribute', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      expect(await dueIn(s.key)).toHaveLength(1);
      await sweepLease(s.key, 'a');
      const committed = await store().commitRefresh(s.key, 'a', tokens({ expiresAt: undefined }), now());
      expect(committed).toMatchObject({ version: 2 });
      expect(committed?.expiresAt).toBeUndefined();

      const item = await rawItem(fx, s.key);
      expect(item).not.toHaveProperty('expiresAt');
      expect(item).not.toHaveProperty(TABLE.shardAttribute);
      expect(await dueIn(s.key)).toEqual([]);
    });
  });

  describe('putSession', () => {
    it('creates at version 1 with the shard of its key', async () => {
      const key = { userId: uniqueId('user'), providerId };
      const { created, record } = await store().putSession(
        { ...key, accessToken: 'a', refreshToken: 'r', tokenType: 'Bearer', expiresAt: 2e9 },
        now(),
      );
      expect(created).toBe(true);
      expect(record).toMatchObject({ version: 1, status: 'active', failureCount: 0, createdAt: now() });
      expect((await rawItem(fx, key))?.[TABLE.shardAttribute]).toBe(shardOf(key, fx.config.shardCount));
    });

    it('replacing a session bumps the version and clears lease and failures', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 60 });
      const { createdAt } = (await store().getSession(s.key)) as SessionRecord;
      await sweepLease(s.key, 'a');
      const error = { code: 'http_503', description: 'down', at: now() };
      await store().recordFailure(s.key, 'a', { kind: 'transient', error, nextAttemptAt: now() + 5000 });
      fx.clock.advance(5000);
      await sweepLease(s.key, 'b');
      expect(await rawItem(fx, s.key)).toMatchObject({ leaseOwner: 'b', failureCount: 1, lastError: error });

      fx.clock.advance(1000);
      const { created, record } = await store().putSession(
        { ...s.key, accessToken: 'at-new', refreshToken: 'rt-new', tokenType: 'Bearer', expiresAt: 2e9 },
        now(),
      );
      expect(created).toBe(false);
      expect(record).toMatchObject({ version: 2, status: 'active', failureCount: 0, createdAt });
      const item = await rawItem(fx, s.key);
      for (const gone of ['leaseOwner', 'leaseUntil', 'nextAttemptAt', 'lastError']) {
        expect(item).not.toHaveProperty(gone);
      }
      // the lease holder's commit is now refused
      expect(await store().commitRefresh(s.key, 'b', tokens(), now())).toBeUndefined();
      expect((await readSession(fx, s.key)).refreshToken).toBe('rt-new');
    });

    it('replacing a reauthorization_required session makes it active and refreshable again', async () => {
      const s = await addSession(fx, { providerId });
      await sweepLease(s.key, 'a');
      await store().recordFailure(s.key, 'a', {
        kind: 'reauthorization_required',
        error: { code: 'invalid_grant', description: 'revoked', at: now() },
      });
      expect(await dueIn(s.key)).toEqual([]);

      const expiresAt = fx.clock.seconds() + 3600;
      const { record } = await store().putSession(
        { ...s.key, accessToken: 'at-new', refreshToken: 'rt-new', tokenType: 'Bearer', expiresAt },
        now(),
      );
      expect(record).toMatchObject({ status: 'active', version: 2, failureCount: 0 });
      expect(record.lastError).toBeUndefined();
      expect(await dueIn(s.key)).toEqual([{ ...s.key, dueAt: expiresAt }]);
    });

    it('replacing with a session without a refresh token removes the old one', async () => {
      const s = await addSession(fx, { providerId });
      await store().putSession(
        { ...s.key, accessToken: 'at-new', tokenType: 'Bearer', expiresAt: 2e9 },
        now(),
      );
      const item = await rawItem(fx, s.key);
      expect(item).not.toHaveProperty('refreshToken');
      expect(item).not.toHaveProperty(TABLE.shardAttribute);
    });
  });

  describe('sealed tokens', () => {
    it('stores them as Binary attributes holding no plaintext, at login and at every commit', async () => {
      const s = await addSession(fx, { providerId });
      const login = await rawAttributes(handle, fx, s.key);
      for (const name of ['accessToken', 'refreshToken']) {
        expect(Object.keys(login[name] ?? {}), name).toEqual(['B']);
        expect(Buffer.from(login[name]?.B as Uint8Array)[0], `${name} version byte`).toBe(0x01);
      }
      expect(holdsPlaintext(login, [s.accessToken, s.refreshToken as string])).toBe(false);

      await sweepLease(s.key, 'a');
      await store().commitRefresh(
        s.key,
        'a',
        tokens({ accessToken: 'at-plain-1', refreshToken: 'rt-plain-1' }),
        now(),
      );
      const committed = await rawAttributes(handle, fx, s.key);
      expect(Object.keys(committed.accessToken ?? {})).toEqual(['B']);
      expect(Object.keys(committed.refreshToken ?? {})).toEqual(['B']);
      expect(holdsPlaintext(committed, ['at-plain-1', 'rt-plain-1'])).toBe(false);

      const opened = await readSession(fx, s.key);
      expect([opened.accessToken, opened.refreshToken]).toEqual(['at-plain-1', 'rt-plain-1']);
      // 'access' leaves the refresh token sealed
      expect(await store().reveal(opened.record, 'access')).toEqual({ accessToken: 'at-plain-1' });
    });

    it('reads, leases and refreshes an item an earlier release wrote in the text form, binary after the commit', async () => {
      const s = await addSession(fx, { providerId, expiresIn: 30 });
      await toTextForm(handle, fx, s.key);
      const before = await rawAttributes(handle, fx, s.key);
      expect(before.accessToken?.S).toMatch(/^tk1\.k1\./);
      expect(before.refreshToken?.S).toMatch(/^tk1\.k1\./);

      // served as it is (no grant), then refreshed with the text-form refresh token
      const served = await fx.runtime.tokens.getToken(s.key, { minValidity: 10, force: false });
      expect(served.access_token).toBe(s.accessToken);
      const refreshed = await fx.runtime.tokens.getToken(s.key, { minValidity: 60, force: false });
      expect(fx.endpoint.presented()).toEqual([s.refreshToken]);
      expect(refreshed.access_token).toBe(fx.endpoint.issued[0]?.accessToken);

      const after = await rawAttributes(handle, fx, s.key);
      expect(Object.keys(after.accessToken ?? {})).toEqual(['B']);
      expect(Object.keys(after.refreshToken ?? {})).toEqual(['B']);
      const opened = await readSession(fx, s.key);
      expect([opened.accessToken, opened.refreshToken]).toEqual([
        fx.endpoint.issued[0]?.accessToken,
        fx.endpoint.issued[0]?.refreshToken,
      ]);
    });

    it('keeps an old text-form access token readable when a commit carries only a new refresh token', async () => {
      const s = await addSession(fx, { providerId });
      await toTextForm(handle, fx, s.key);
      await sweepLease(s.key, 'a');
      await store().commitRefresh(
        s.key,
        'a',
        { refreshToken: 'rt-only', tokenType: 'Bearer', expiresAt: s.expiresAt, dueAt: fx.clock.seconds() },
        now(),
      );
      const item = await rawAttributes(handle, fx, s.key);
      expect(item.accessToken?.S).toMatch(/^tk1\.k1\./);
      expect(Object.keys(item.refreshToken ?? {})).toEqual(['B']);
      const opened = await readSession(fx, s.key);
      expect([opened.accessToken, opened.refreshToken]).toEqual([s.accessToken, 'rt-only']);
    });

    it('binds a binary token to its item: copied onto another session it does not open', async () => {
      const a = await addSession(fx, { providerId });
      const b = await addSession(fx, { providerId });
      const recordA = (await readSession(fx, a.key)).record;
      const recordB = (await readSession(fx, b.key)).record;
      expect(recordA.accessTokenSealed).toBeInstanceOf(Uint8Array);
      await expect(
        store().reveal({ ...recordB, accessTokenSealed: recordA.accessTokenSealed }, 'access'),
      ).rejects.toMatchObject({ code: 'key_unavailable' });
      // and the same in the text form
      await toTextForm(handle, fx, a.key);
      const textA = (await store().getSession(a.key, { consistent: true }))?.accessTokenSealed;
      expect(typeof textA).toBe('string');
      await expect(
        store().reveal({ ...recordB, accessTokenSealed: textA as string }, 'access'),
      ).rejects.toMatchObject({ code: 'key_unavailable' });
    });

    it('binds a binary token to its attribute: a refresh token moved to accessToken does not open', async () => {
      const s = await addSession(fx, { providerId });
      const item = await rawAttributes(handle, fx, s.key);
      await fx.handle.client.send(
        new UpdateItemCommand({
          TableName: fx.config.tableName,
          Key: { pk: item.pk as AttributeValue, sk: item.sk as AttributeValue },
          UpdateExpression: 'SET accessToken = :rt',
          ExpressionAttributeValues: { ':rt': item.refreshToken as AttributeValue },
        }),
      );
      const record = await store().getSession(s.key, { consistent: true });
      await expect(store().reveal(record as SessionRecord, 'access')).rejects.toMatchObject({
        code: 'key_unavailable',
      });
    });

    it("seals a provider's client secret as Binary, and still opens one an earlier release sealed as text", async () => {
      const providerKey = { [TABLE.partitionKey]: `PROVIDER#${providerId}`, [TABLE.sortKey]: 'PROVIDER' };
      const { Item } = await handle.client.send(
        new GetItemCommand({
          TableName: fx.config.tableName,
          Key: { pk: { S: providerKey.pk as string }, sk: { S: 'PROVIDER' } },
        }),
      );
      expect(Object.keys(Item?.clientSecret ?? {})).toEqual(['B']);
      expect(holdsPlaintext(Item ?? {}, [CLIENT_SECRET])).toBe(false);
      const listed = async () =>
        (await store().listProviders({ limit: 1000 })).providers.find((p) => p.providerId === providerId);
      expect((await store().getProvider(providerId))?.clientSecret).toBe(CLIENT_SECRET);
      expect((await listed())?.hasClientSecret).toBe(true);

      await handle.doc.send(
        new UpdateCommand({
          TableName: fx.config.tableName,
          Key: providerKey,
          UpdateExpression: 'SET clientSecret = :s',
          ExpressionAttributeValues: { ':s': textEnvelope(Item?.clientSecret?.B as Uint8Array) },
        }),
      );
      expect((await store().getProvider(providerId))?.clientSecret).toBe(CLIENT_SECRET);
      expect((await listed())?.hasClientSecret).toBe(true);
    });

    it('a lease on an item with a 500-byte access token costs 1 write unit; the same item in the text form cost 2', async () => {
      const capacity: number[] = [];
      const client = makeDynamoClient(handle.endpoint);
      client.middlewareStack.add(
        (next) => async (args) => {
          const input = args.input as { ReturnConsumedCapacity?: string };
          input.ReturnConsumedCapacity = 'TOTAL';
          const result = await next(args);
          const consumed = (result.output as { ConsumedCapacity?: { CapacityUnits?: number } })
            .ConsumedCapacity;
          if (consumed?.CapacityUnits !== undefined) capacity.push(consumed.CapacityUnits);
          return result;
        },
        { step: 'initialize', name: 'countCapacity' },
      );
      const metered = createCoreFixture(handle, {
        dynamodb: client,
        clock: fx.clock,
        endpoint: fx.endpoint,
        keyringJson: fx.keyringJson,
      });
      const key = { userId: uniqueId('user'), providerId };
      await metered.runtime.store.putSession(
        {
          ...key,
          accessToken: 'a'.repeat(500),
          refreshToken: 'r'.repeat(64),
          tokenType: 'Bearer',
          expiresAt: 1,
        },
        now(),
      );
      const leaseCost = async (owner: string) => {
        capacity.length = 0;
        const leased = await metered.runtime.store.acquireLease(
          key,
          owner,
          { kind: 'forced', version: 1 },
          now(),
          now() + LEASE_MS,
        );
        expect(leased).toBeDefined();
        await metered.runtime.store.releaseLease(key, owner);
        return capacity[0];
      };
      expect(await leaseCost('binary')).toBe(1);
      await toTextForm(handle, fx, key);
      expect(await leaseCost('text')).toBe(2);
      client.destroy();
    });
  });

  it("a runtime's own clients: the conditional writes resolve the SDK's middleware once, not per call", async () => {
    // Guards the CPU of every refresh (issue 15): the lease and the commit go through a plain client
    // built with cacheMiddleware, on the document client's connection pool.
    const own = createCoreFixture(handle, { ownClients: true });
    const pid = await addProvider(own);
    const sessions = await Promise.all(
      Array.from({ length: 4 }, () => addSession(own, { providerId: pid, expiresIn: 60 })),
    );
    const resolved = vi.spyOn(UpdateItemCommand.prototype, 'resolveMiddleware');
    try {
      const at = own.clock.now();
      for (const [i, s] of sessions.entries()) {
        const condition = { kind: 'forced', version: 1 } as const;
        const leased = await own.runtime.store.acquireLease(
          s.key,
          `owner-${i}`,
          condition,
          at,
          at + LEASE_MS,
        );
        expect(leased).toMatchObject({ leaseOwner: `owner-${i}`, version: 1 });
        // A refused condition is still an answer, not an error.
        expect(
          await own.runtime.store.acquireLease(s.key, 'other', condition, at, at + LEASE_MS),
        ).toBeUndefined();
        expect(await own.runtime.store.commitRefresh(s.key, 'other', tokens(), at)).toBeUndefined();
        const committed = await own.runtime.store.commitRefresh(
          s.key,
          `owner-${i}`,
          tokens({ accessToken: `at-${i}`, refreshToken: `rt-${i}` }),
          at,
        );
        expect(committed).toMatchObject({ version: 2 });
        expect(committed?.leaseOwner).toBeUndefined();
        expect(await readSession(own, s.key)).toMatchObject({
          accessToken: `at-${i}`,
          refreshToken: `rt-${i}`,
        });
      }
      // 16 conditional writes; one resolution of the middleware stack (none if an earlier write did it).
      expect(resolved.mock.calls.length).toBeLessThanOrEqual(1);
    } finally {
      resolved.mockRestore();
    }
  });

  it('shardOf is stable and within range', () => {
    const seen = new Map<number, Set<number>>();
    for (const n of [1, 4, 7, 16]) seen.set(n, new Set());
    for (let i = 0; i < 400; i++) {
      const key = { userId: `user-${i}`, providerId: i % 2 ? 'github' : 'linear' };
      for (const n of [1, 4, 7, 16]) {
        const shard = shardOf(key, n);
        expect(Number.isInteger(shard)).toBe(true);
        expect(shard).toBeGreaterThanOrEqual(0);
        expect(shard).toBeLessThan(n);
        expect(shardOf({ ...key }, n)).toBe(shard);
        seen.get(n)?.add(shard);
      }
    }
    // spread: every shard is used
    for (const n of [1, 4, 7, 16]) expect(seen.get(n)?.size).toBe(n);
    // the key's parts are separated: ('ab','c') and ('a','bc') differ somewhere
    const collide = [4, 7, 16, 1000].every(
      (n) => shardOf({ userId: 'ab', providerId: 'c' }, n) === shardOf({ userId: 'a', providerId: 'bc' }, n),
    );
    expect(collide).toBe(false);
    // pinned values: a change of hash would move every stored session to another shard
    expect(shardOf({ userId: 'alice', providerId: 'github' }, 1000)).toBe(234);
    expect(shardOf({ userId: 'bob', providerId: 'linear' }, 4)).toBe(2);
  });
});
