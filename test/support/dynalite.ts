import { randomUUID } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { ensureTable } from '../../functions/core/store/table.js';
import { localDynamoClient, startEmbeddedDynamoDB } from '../../functions/local/embedded.js';

export interface DynaliteHandle {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  client: DynamoDBClient;
  doc: DynamoDBDocumentClient;
  /** The sessions table, already created (with the `byExpiry` index) and ACTIVE. Unique per call. */
  tableName: string;
  stop(): Promise<void>;
}

/** A DynamoDB client for a local endpoint that fails at once (no retries), so tests see faults. */
export function makeDynamoClient(endpoint: string): DynamoDBClient {
  return localDynamoClient(endpoint, { maxAttempts: 1 });
}

/** Starts an in-memory dynalite on 127.0.0.1 (ephemeral port) and creates a fresh sessions table. */
export async function startDynalite(): Promise<DynaliteHandle> {
  const dynamo = await startEmbeddedDynamoDB();
  const endpoint = dynamo.endpoint;
  const client = makeDynamoClient(endpoint);
  const doc = DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
  const tableName = `tk-test-${randomUUID().slice(0, 8)}`;

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    client.destroy();
    await dynamo.stop();
  };

  try {
    await ensureTable(client, tableName);
  } catch (err) {
    await stop();
    throw err;
  }
  return { endpoint, client, doc, tableName, stop };
}
