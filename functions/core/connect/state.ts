import { createHash, randomBytes } from 'node:crypto';
import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, type DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
import { type FieldCipher, isSealed } from '../crypto/crypto.js';
import { TABLE } from '../store/table.js';

/**
 * Pending authorizations: what the callback needs to finish a connection, keyed by the SHA-256 of the
 * state (the state itself is never stored) and sealed with the keyring, bound by AAD to that key.
 * They live in the sessions table in their own key space, with a TTL attribute, and never carry the
 * index attributes, so the sweep never sees them. A state is consumed by one conditional delete:
 * two callbacks with the same state cannot both get it.
 */

/** How long a user has to come back from the authorization server. */
export const STATE_LIFETIME_SECONDS = 600;

export interface PendingAuthorization {
  userId: string;
  providerId: string;
  codeVerifier: string;
  /** The keeper's callback URL the authorization request named (the code exchange repeats it). */
  callbackUrl: string;
  /** Where the browser goes afterwards; absent: the keeper's own page. */
  redirectUri?: string;
  /** epoch seconds */
  expiresAt: number;
}

export interface StateStore {
  put(state: string, pending: PendingAuthorization): Promise<void>;
  /** Deletes the state and returns what it held; undefined when unknown, already used or expired. */
  consume(state: string, nowMs: number): Promise<PendingAuthorization | undefined>;
}

/** 256 random bits, base64url. */
export function newState(): string {
  return randomBytes(32).toString('base64url');
}

const STATE_SK = 'CONNECT';

export function statePk(state: string): string {
  return `CONNECT#${createHash('sha256').update(state, 'utf8').digest('base64url')}`;
}

const aad = (pk: string) => `${pk}\u0000${STATE_SK}\u0000pending`;

function isConditionFailure(err: unknown): boolean {
  return (
    err instanceof ConditionalCheckFailedException ||
    (err as { name?: string } | undefined)?.name === 'ConditionalCheckFailedException'
  );
}

export class DynamoStateStore implements StateStore {
  constructor(
    private readonly doc: DynamoDBDocumentClient,
    private readonly tableName: string,
    private readonly cipher: FieldCipher,
  ) {}

  async put(state: string, pending: PendingAuthorization): Promise<void> {
    const pk = statePk(state);
    await this.doc.send(
      new PutCommand({
        TableName: this.tableName,
        Item: {
          [TABLE.partitionKey]: pk,
          [TABLE.sortKey]: STATE_SK,
          type: 'connect_state',
          pending: await this.cipher.encrypt(JSON.stringify(pending), aad(pk)),
          expiresAt: pending.expiresAt,
          [TABLE.ttlAttribute]: pending.expiresAt,
        },
        ConditionExpression: 'attribute_not_exists(#pk)',
        ExpressionAttributeNames: { '#pk': TABLE.partitionKey },
      }),
    );
  }

  async consume(state: string, nowMs: number): Promise<PendingAuthorization | undefined> {
    const pk = statePk(state);
    let item: Record<string, unknown> | undefined;
    try {
      const { Attributes } = await this.doc.send(
        new DeleteCommand({
          TableName: this.tableName,
          Key: { [TABLE.partitionKey]: pk, [TABLE.sortKey]: STATE_SK },
          // DynamoDB's TTL deletes late (and dynalite not at all): expiry is the condition's job.
          ConditionExpression: 'attribute_exists(#pk) AND expiresAt > :now',
          ExpressionAttributeNames: { '#pk': TABLE.partitionKey },
          ExpressionAttributeValues: { ':now': Math.floor(nowMs / 1000) },
          ReturnValues: 'ALL_OLD',
        }),
      );
      item = Attributes;
    } catch (err) {
      if (isConditionFailure(err)) return undefined;
      throw err;
    }
    if (!item || !isSealed(item.pending)) return undefined;
    return JSON.parse(await this.cipher.decrypt(item.pending, aad(pk))) as PendingAuthorization;
  }
}
