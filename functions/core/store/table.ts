import {
  CreateTableCommand,
  type CreateTableCommandInput,
  DescribeTableCommand,
  type DynamoDBClient,
  ResourceNotFoundException,
} from '@aws-sdk/client-dynamodb';

/**
 * The sessions table's shape, shared by the local stack, the tests and (by assertion) the CDK stack.
 * One table holds sessions (pk `USER#<userId>`, sk `SESSION#<providerId>`) and provider
 * configurations (pk `PROVIDER#<providerId>`, sk `PROVIDER`), and the connect flow's pending
 * authorizations (pk `CONNECT#<sha256 of the state>`, sk `CONNECT`) and pending connections
 * (pk `CONNECTION#<sha256 of the id>`, sk `CONNECTION`), which are never in the index.
 */
export const TABLE = {
  partitionKey: 'pk',
  sortKey: 'sk',
  expiryIndex: 'byExpiry',
  shardAttribute: 'refreshShard',
  /**
   * The index's sort key: when the sweep must act, in epoch seconds. The earlier of the access
   * token's expiry and the refresh token's (`refreshExpiresAt`), so a short-lived refresh token is
   * renewed before it lapses even while the access token is far from expiry. An on-demand session
   * (short-lived tokens, or a `keepAlive` provider's) is due only when its grant needs keeping alive.
   */
  dueAttribute: 'refreshDueAt',
  /**
   * DynamoDB's time-to-live attribute (epoch seconds): pending authorizations and pending
   * connections carry it, so states and connections nobody came back for vanish. Sessions and
   * providers never do.
   */
  ttlAttribute: 'ttl',
} as const;

export function createTableInput(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [
      { AttributeName: TABLE.partitionKey, AttributeType: 'S' },
      { AttributeName: TABLE.sortKey, AttributeType: 'S' },
      { AttributeName: TABLE.shardAttribute, AttributeType: 'N' },
      { AttributeName: TABLE.dueAttribute, AttributeType: 'N' },
    ],
    KeySchema: [
      { AttributeName: TABLE.partitionKey, KeyType: 'HASH' },
      { AttributeName: TABLE.sortKey, KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: [
      {
        IndexName: TABLE.expiryIndex,
        KeySchema: [
          { AttributeName: TABLE.shardAttribute, KeyType: 'HASH' },
          { AttributeName: TABLE.dueAttribute, KeyType: 'RANGE' },
        ],
        Projection: { ProjectionType: 'KEYS_ONLY' },
      },
    ],
  };
}

/** Creates the table when it does not exist and waits until it is ACTIVE. */
export async function ensureTable(
  client: DynamoDBClient,
  tableName: string,
  timeoutMs = 30_000,
): Promise<void> {
  try {
    await client.send(new CreateTableCommand(createTableInput(tableName)));
  } catch (err) {
    if ((err as { name?: string }).name !== 'ResourceInUseException') throw err;
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
      const indexesActive = (Table?.GlobalSecondaryIndexes ?? []).every((i) => i.IndexStatus === 'ACTIVE');
      if (Table?.TableStatus === 'ACTIVE' && indexesActive) return;
    } catch (err) {
      if (!(err instanceof ResourceNotFoundException)) throw err;
    }
    if (Date.now() > deadline)
      throw new Error(`table ${tableName} did not become ACTIVE within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
