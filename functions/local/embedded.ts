import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { Agent, type AgentOptions, type Server } from 'node:http';
import { type AddressInfo, createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

/**
 * A DynamoDB client for an outside endpoint (the operator's own emulator), with placeholder
 * credentials: such an emulator checks none.
 */
export function localDynamoClient(endpoint: string, options: { region?: string; maxAttempts?: number } = {}) {
  return new DynamoDBClient({
    endpoint,
    region: options.region ?? 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: options.maxAttempts ?? 5,
  });
}

/** An HTTP agent whose every connection goes to one Unix socket (or Windows named pipe). */
class SocketAgent extends Agent {
  constructor(
    private readonly socketPath: string,
    options: AgentOptions,
  ) {
    super(options);
  }

  // Node's agent takes the socket returned here (errors surface on the request).
  override createConnection(): Socket {
    return createConnection({ path: this.socketPath });
  }
}

export interface EmbeddedDynamoDB {
  /** The Unix socket (a named pipe on Windows) dynalite listens on; there is no TCP port. */
  socketPath: string;
  /** A DynamoDB client that reaches this store through its socket. */
  client(options?: { region?: string; maxAttempts?: number }): DynamoDBClient;
  stop(): Promise<void>;
}

/**
 * dynalite for the local stack: persisted under `path` (created 0700) or in memory, with table
 * changes taking effect at once, listening on a Unix socket in a fresh owner-only directory instead
 * of a TCP port.
 *
 * dynalite approves every CORS request and accepts any signature of the right shape, so a port of
 * its own would let any web page in the operator's browser (or a DNS-rebinding host name) read and
 * rewrite the table. A socket is out of a browser's reach altogether, and only the operator's own
 * account can open it (the directory is 0700), which can read the data directory anyway. The keeper
 * reaches it through `client()`.
 */
export async function startEmbeddedDynamoDB(options: { path?: string } = {}): Promise<EmbeddedDynamoDB> {
  if (options.path) await mkdir(options.path, { recursive: true, mode: 0o700 });
  const windows = process.platform === 'win32';
  // mkdtemp creates the directory 0700. A short base: Unix socket paths are limited to ~104 bytes.
  const dir = windows ? undefined : await mkdtemp(join(tmpdir(), 'tokenkeeper-'));
  const socketPath = dir
    ? join(dir, 'dynalite.sock')
    : `\\\\.\\pipe\\tokenkeeper-${randomBytes(16).toString('hex')}`;
  const server = dynalite({
    ...(options.path ? { path: options.path } : {}),
    createTableMs: 0,
    deleteTableMs: 0,
    updateTableMs: 0,
  }) as Server;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    if (dir) await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const agents: SocketAgent[] = [];
  let stopped: Promise<void> | undefined;
  return {
    socketPath,
    client(clientOptions = {}) {
      const agent = new SocketAgent(socketPath, { keepAlive: true, maxSockets: 50 });
      agents.push(agent);
      return new DynamoDBClient({
        // The host name only fills the Host header and the signature; the agent connects to the socket.
        endpoint: 'http://dynalite.localhost',
        region: clientOptions.region ?? 'us-east-1',
        credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
        maxAttempts: clientOptions.maxAttempts ?? 5,
        requestHandler: { httpAgent: agent },
      });
    },
    stop() {
      stopped ??= (async () => {
        for (const agent of agents) agent.destroy();
        await new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        });
        if (dir) await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}
