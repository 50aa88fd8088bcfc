import { ConditionalCheckFailedException } from '@aws-sdk/client-dynamodb';
import { DeleteCommand, type DynamoDBDocumentClient, PutCommand } from '@aws-sdk/lib-dynamodb';
import { type FieldCipher, isSealed } from '../crypto/crypto.js';
import { TABLE } from '../store/table.js';

/**
 * Short-lived, single-use items of the connect flow (pending authorizations, pending connections):
 * a sealed value bound by AAD to its key, an expiry, DynamoDB's TTL attribute, never the index
 * attributes (so the sweep never sees them). Taken by one conditional delete that also checks the
 * expiry (DynamoDB's TTL deletes late, dynalite never) and any attributes the caller names: two
 * takers cannot both get one, and a refused take changes nothing.
 */

function isConditionFailure(err: unknown): boolean {
  return (
    err instanceof ConditionalCheckFailedException ||
    (err as { name?: string } | undefined)?.name === 'ConditionalCheckFailedException'
  );
}

export class SingleUseItems {
  constructor(
    private readonly doc: DynamoDBDocumentClient,
    private readonly tableName: string,
    private readonly cipher: FieldCipher,
    private readonly sortKey: string,
    private readonly type: string,
  ) {}

  /** Stores `plaintext` sealed under `aad`; `attributes` are stored in the clear, for take's condition. */
  async put(
    pk: string,
    plaintext: string,
    aad: string,
    expiresAt: number,
    attributes: Record<string, string> = {},
  ): Promise<void> {
    await this.doc.send(
      new PutCommand({
        TableName: this.tableName,
        Item: {
          ...attributes,
          [TABLE.partitionKey]: pk,
          [TABLE.sortKey]: this.sortKey,
          type: this.type,
          pending: await this.cipher.encrypt(plaintext, aad),
          expiresAt,
          [TABLE.ttlAttribute]: expiresAt,
        },
        ConditionExpression: 'attribute_not_exists(#pk)',
        ExpressionAttributeNames: { '#pk': TABLE.partitionKey },
      }),
    );
  }

  /**
   * Deletes the item and returns its plaintext when it exists, has not expired and carries exactly
   * `match`; otherwise changes nothing and returns undefined.
   */
  async take(
    pk: string,
    aad: string,
    nowMs: number,
    match: Record<string, string> = {},
  ): Promise<string | undefined> {
    const names: Record<string, string> = { '#pk': TABLE.partitionKey };
    const values: Record<string, unknown> = { ':now': Math.floor(nowMs / 1000) };
    const conditions = ['attribute_exists(#pk)', 'expiresAt > :now'];
    Object.entries(match).forEach(([name, value], i) => {
      names[`#m${i}`] = name;
      values[`:m${i}`] = value;
      conditions.push(`#m${i} = :m${i}`);
    });
    let item: Record<string, unknown> | undefined;
    try {
      const { Attributes } = await this.doc.send(
        new DeleteCommand({
          TableName: this.tableName,
          Key: { [TABLE.partitionKey]: pk, [TABLE.sortKey]: this.sortKey },
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
          ReturnValues: 'ALL_OLD',
        }),
      );
      item = Attributes;
    } catch (err) {
      if (isConditionFailure(err)) return undefined;
      throw err;
    }
    if (!item || !isSealed(item.pending)) return undefined;
    return this.cipher.decrypt(item.pending, aad);
  }
}
