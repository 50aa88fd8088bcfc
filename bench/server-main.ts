import type { Server } from 'node:http';
import dynalite from 'dynalite';
import { listenOnLoopback } from '../functions/local/embedded.js';
import { startOidcBenchServer } from './oidc-server.js';
import { createTokenEndpoint } from './token-endpoint.js';

/**
 * Entry point of the bench's child processes: `dynalite` (an in-memory DynamoDB), `token` (the
 * token endpoint, options as JSON in argv[3]) or `oidc` (oidc-provider behind its token proxy, with a
 * control port: bench/oidc-server.ts). Each prints one JSON line `{"port": …}` when it listens.
 * They run outside the bench process, as DynamoDB and the provider do in production, so their CPU
 * time is not charged to the keeper's event loop.
 */

const mode = process.argv[2];
let server: Server;
if (mode === 'oidc') {
  const oidc = await startOidcBenchServer();
  process.stdout.write(`${JSON.stringify(oidc.info)}\n`);
  process.on('SIGTERM', () => process.exit(0));
  process.on('disconnect', () => process.exit(0));
  await new Promise(() => {});
}
if (mode === 'dynalite') {
  server = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
} else if (mode === 'token') {
  server = createTokenEndpoint(JSON.parse(process.argv[3] ?? '{}')).server;
} else {
  throw new Error(`unknown mode ${mode}`);
}
server.keepAliveTimeout = 60_000;
const port = await listenOnLoopback(server);
process.stdout.write(`${JSON.stringify({ port })}\n`);
process.on('SIGTERM', () => process.exit(0));
process.on('disconnect', () => process.exit(0));
