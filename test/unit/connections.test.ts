import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectionPk,
  DynamoConnectionStore,
  newConnectionId,
  type PendingConnection,
} from '../../functions/core/connect/connections.js';
import { type ConnectDeps, DefaultConnectService } from '../../functions/core/connect/service.js';
import { createFieldCipher, generateKeyringJson, parseKeyring } from '../../functions/core/crypto/crypto.js';
import { TABLE } from '../../functions/core/store/table.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

/** Pending connections on dynalite: sealed, bound to one user and provider, taken at most once. */

const NOW_MS = Date.UTC(2030, 0, 1, 12);
const PENDING: PendingConnection = {
  userId: 'alice',
  providerId: 'mcp',
  token: {
    access_token: 'access-that-must-stay-sealed-0123456789',
    refresh_token: 'refresh-that-must-stay-sealed-0123456789',
    expires_at: NOW_MS / 1000 + 3600,
    refresh_expires_in: 86_400,
    token_type: 'Bearer',
  },
  obtainedAt: NOW_MS,
  expiresAt: NOW_MS / 1000 + 600,
};
const ALICE = { userId: 'alice', providerId: 'mcp' };

let handle: DynaliteHandle;
let connections: DynamoConnectionStore;

beforeAll(async () => {
  handle = await startDynalite();
  const ring = parseKeyring(generateKeyringJson());
  connections = new DynamoConnectionStore(
    handle.doc,
    handle.tableName,
    createFieldCipher(async () => ring),
  );
});
afterAll(() => handle?.stop());

const key = (id: string) => ({ [TABLE.partitionKey]: connectionPk(id), [TABLE.sortKey]: 'CONNECTION' });

describe('DynamoConnectionStore', () => {
  it('seals the tokens, keys the item by a hash of the id, and gives it back once, to its own user only', async () => {
    // Prepare
    const id = newConnectionId();
    expect(Buffer.from(id, 'base64url').length).toBe(32);

    // Act
    await connections.put(id, PENDING);

    // Assess
    const { Item } = await handle.client.send(
      new GetItemCommand({
        TableName: handle.tableName,
        Key: { pk: { S: connectionPk(id) }, sk: { S: 'CONNECTION' } },
      }),
    );
    expect(Object.keys(Item?.pending ?? {})).toEqual(['B']);
    expect(JSON.stringify(Item)).not.toContain(id);
    const sealed = Buffer.from(Item?.pending?.B as Uint8Array);
    expect(sealed.includes(Buffer.from(PENDING.token.refresh_token as string))).toBe(false);
    expect(sealed.includes(Buffer.from(PENDING.token.access_token))).toBe(false);
    expect(Item?.[TABLE.shardAttribute]).toBeUndefined();
    expect(Number(Item?.[TABLE.ttlAttribute]?.N)).toBe(PENDING.expiresAt);

    expect(await connections.take(id, { userId: 'mallory', providerId: 'mcp' }, NOW_MS)).toBeUndefined();
    expect(await connections.take(id, { userId: 'alice', providerId: 'other' }, NOW_MS)).toBeUndefined();
    expect(await connections.take(id, ALICE, NOW_MS + 600_000)).toBeUndefined();
    expect(await connections.take(id, ALICE, NOW_MS)).toEqual(PENDING);
    expect(await connections.take(id, ALICE, NOW_MS)).toBeUndefined();
  });

  it('a user id rewritten in the table does not decrypt: the AAD names the user', async () => {
    // Prepare
    const id = newConnectionId();
    await connections.put(id, PENDING);
    await handle.doc.send(
      new UpdateCommand({
        TableName: handle.tableName,
        Key: key(id),
        UpdateExpression: 'SET userId = :u',
        ExpressionAttributeValues: { ':u': 'mallory' },
      }),
    );

    // Act
    const act = connections.take(id, { userId: 'mallory', providerId: 'mcp' }, NOW_MS);

    // Assess
    await expect(act).rejects.toMatchObject({ code: 'key_unavailable' });
  });
});

describe('completing a connection', () => {
  it('puts the connection back when storing the session fails, so nothing is lost; the retry completes it', async () => {
    // Prepare
    const id = newConnectionId();
    await connections.put(id, PENDING);
    const stored: unknown[] = [];
    let failures = 1;
    const events: string[] = [];
    const quiet = () => {};
    const service = new DefaultConnectService({
      connections,
      store: { getSession: async () => undefined },
      sessions: {
        put: async (_key: unknown, token: unknown) => {
          if (failures-- > 0) throw new Error('throttled');
          stored.push(token);
          return { created: true, session: { ...ALICE, refreshable: true } };
        },
      },
      events: { publish: async (e: { detailType: string }) => void events.push(e.detailType) },
      clock: { now: () => NOW_MS + 60_000 },
      logger: { debug: quiet, info: quiet, warn: quiet, error: quiet },
      metrics: { add: quiet },
    } as unknown as ConnectDeps);

    // Act
    const failed = service.completeConnection(ALICE, id);

    // Assess
    await expect(failed).rejects.toThrow('throttled');
    expect(events).toEqual([]);
    await expect(service.completeConnection(ALICE, id)).resolves.toMatchObject(ALICE);
    expect(events).toEqual(['SessionConnected']);
    // The refresh token's lifetime counts from the exchange, a minute before the completion.
    expect(stored).toEqual([{ ...PENDING.token, refresh_expires_in: 86_400 - 60 }]);
    await expect(service.completeConnection(ALICE, id)).rejects.toMatchObject({
      code: 'connection_not_found',
    });
  });
});
