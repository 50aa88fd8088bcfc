import { mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import dynalite from 'dynalite';

/** Listens on 127.0.0.1 only (port 0: any free port) and resolves with the port bound. */
export async function listenOnLoopback(server: Server, port = 0): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** A DynamoDB client for a local endpoint, with placeholder credentials (dynalite checks none). */
export function localDynamoClient(endpoint: string, options: { region?: string; maxAttempts?: number } = {}) {
  return new DynamoDBClient({
    endpoint,
    region: options.region ?? 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: options.maxAttempts ?? 5,
  });
}

export interface EmbeddedDynamoDB {
  /** `http://127.0.0.1:<port>` */
  endpoint: string;
  stop(): Promise<void>;
}

/**
 * dynalite on 127.0.0.1: persisted under `path` (created 0700) or in memory, with table changes
 * taking effect at once.
 */
export async function startEmbeddedDynamoDB(options: { path?: string } = {}): Promise<EmbeddedDynamoDB> {
  if (options.path) await mkdir(options.path, { recursive: true, mode: 0o700 });
  const server = dynalite({
    ...(options.path ? { path: options.path } : {}),
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
  }) as Server;
  const port = await listenOnLoopback(server);
  let stopped: Promise<void> | undefined;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      return stopped;
    },
  };
}
