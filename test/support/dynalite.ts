import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import dynalite from 'dynalite';
import { ensureTable } from '../../functions/core/store/table.js';
import { listenOnLoopback, localDynamoClient } from '../../functions/local/embedded.js';

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

/**
 * Starts an in-memory dynalite on 127.0.0.1 (ephemeral port) and creates a fresh sessions table: the
 * tests' stand-in for a DynamoDB endpoint of the operator's own (TOKENKEEPER_DYNAMODB_ENDPOINT).
 */
export async function startDynalite(): Promise<DynaliteHandle> {
  const server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 }) as Server;
  const endpoint = `http://127.0.0.1:${await listenOnLoopback(server)}`;
  const client = makeDynamoClient(endpoint);
  const doc = DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
  const tableName = `tk-test-${randomUUID().slice(0, 8)}`;

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    client.destroy();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };

  try {
    await ensureTable(client, tableName);
  } catch (err) {
    await stop();
    throw err;
  }
  return { endpoint, client, doc, tableName, stop };
}
