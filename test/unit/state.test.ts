import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoStateStore, newState, statePk } from '../../functions/core/connect/state.js';
import {
  createFieldCipher,
  generateKeyringJson,
  parseKeyring,
  textEnvelope,
} from '../../functions/core/crypto/crypto.js';
import { TABLE } from '../../functions/core/store/table.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

/** Pending authorizations on dynalite: sealed as Binary, and the text form of an earlier release still read. */

const NOW_MS = Date.UTC(2030, 0, 1, 12);
const PENDING = {
  userId: 'alice',
  providerId: 'mcp',
  codeVerifier: 'verifier-that-must-stay-sealed-0123456789',
  callbackUrl: 'https://keeper.example/v1/connect/callback',
  expiresAt: NOW_MS / 1000 + 600,
};

describe('DynamoStateStore', () => {
  let handle: DynaliteHandle;
  let states: DynamoStateStore;
  const key = (state: string) => ({ [TABLE.partitionKey]: statePk(state), [TABLE.sortKey]: 'CONNECT' });

  beforeAll(async () => {
    handle = await startDynalite();
    const ring = parseKeyring(generateKeyringJson());
    states = new DynamoStateStore(
      handle.doc,
      handle.tableName,
      createFieldCipher(async () => ring),
    );
  });
  afterAll(() => handle?.stop());

  const sealedOf = async (state: string) =>
    (await handle.doc.send(new GetCommand({ TableName: handle.tableName, Key: key(state) }))).Item?.pending;
  const setPending = (state: string, value: unknown) =>
    handle.doc.send(
      new UpdateCommand({
        TableName: handle.tableName,
        Key: key(state),
        UpdateExpression: 'SET pending = :p',
        ExpressionAttributeValues: { ':p': value },
      }),
    );

  it('seals the pending authorization as a Binary attribute and gives it back once', async () => {
    // Prepare
    const state = newState();

    // Act
    await states.put(state, PENDING);

    // Assess
    const { Item } = await handle.client.send(
      new GetItemCommand({
        TableName: handle.tableName,
        Key: { pk: { S: statePk(state) }, sk: { S: 'CONNECT' } },
      }),
    );
    expect(Object.keys(Item?.pending ?? {})).toEqual(['B']);
    expect(Buffer.from(Item?.pending?.B as Uint8Array).includes(Buffer.from(PENDING.codeVerifier))).toBe(
      false,
    );
    expect(await states.consume(state, NOW_MS)).toEqual(PENDING);
    expect(await states.consume(state, NOW_MS)).toBeUndefined();
  });

  it('consumes a pending authorization an earlier release sealed in the text form', async () => {
    // Prepare: started before a deploy, called back after it
    const state = newState();
    await states.put(state, PENDING);
    await setPending(state, textEnvelope((await sealedOf(state)) as Uint8Array));

    // Act
    const pending = await states.consume(state, NOW_MS);

    // Assess
    expect(pending).toEqual(PENDING);
  });

  it('refuses a sealed value moved to another state', async () => {
    // Prepare
    const [a, b] = [newState(), newState()];
    await states.put(a, PENDING);
    await states.put(b, { ...PENDING, userId: 'mallory' });
    await setPending(b, await sealedOf(a));

    // Act
    const act = states.consume(b, NOW_MS);

    // Assess
    await expect(act).rejects.toMatchObject({ code: 'key_unavailable' });
  });
});
