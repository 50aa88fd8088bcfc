/**
 * `npm run demo`: the local stack on the embedded DynamoDB (data in .data/demo), a demo OAuth server
 * and an MCP-like server it protects, all on 127.0.0.1 in this process. Prints the console's URL.
 */
import { loadConfig } from '../functions/core/config.js';
import { ConfigError } from '../functions/core/errors.js';
import { DEMO_SETTINGS, demoCliArgs, startDemo } from '../functions/local/demo/demo.js';
import { createLogger } from '../functions/shared/powertools.js';

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    // The demo's own data directory and timings; PORT and the rest as for npm start.
    config = loadConfig({ ...process.env, TOKENKEEPER_DATA_DIR: '.data/demo', ...DEMO_SETTINGS });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`tokenkeeper demo: configuration error: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const logger = createLogger(config.serviceName);
  const demo = await startDemo({ config, logger });
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(
    `tokenkeeper demo: keeper ${demo.stack.url} (data in ${config.dataDir}), OAuth server ${demo.oauth.issuer}, MCP server ${demo.mcp.url}`,
  );
  out(`provider "demo" registered from the MCP server's URL (discovery + dynamic client registration)`);
  out(
    `sweeping every ${config.refreshIntervalSeconds} s (window ${config.refreshWindowSeconds} s); access tokens live 60 s`,
  );
  out('');
  out(`Open the console:  ${demo.consoleUrl}`);
  out(
    `Or the CLI:        npx tokenkeeper ${demoCliArgs(demo.stack.url, config.dataDir).join(' ')} status <userId>`,
  );
  out('');
  out('Then try:');
  out(
    '  1. Providers → "Connect a user": sign in on the demo provider with any login and password, then Continue.',
  );
  out(
    '  2. Sessions: watch the countdown; within a minute the sweep refreshes the token ("Last refresh" changes).',
  );
  out(
    `  3. Overview → "Make the demo provider fail for 30 s" (or: curl -X POST -H "Authorization: Bearer $(cat ${config.dataDir}/api-key)" ${demo.stack.url}/demo/outage?seconds=30) and watch it fail and recover.`,
  );
  out('Ctrl-C stops everything.');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    out(`${signal} received, stopping`);
    demo.stop().then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`tokenkeeper demo: error while stopping: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

main().catch((err) => {
  process.stderr.write(`tokenkeeper demo: failed to start: ${(err as Error).message}\n`);
  process.exit(1);
});
