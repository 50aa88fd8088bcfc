/**
 * `npm start`: the local stack. Same handlers as in Lambda, on an embedded DynamoDB (dynalite),
 * served on 127.0.0.1, with a timer in place of the EventBridge schedule.
 */
import { loadConfig } from '../functions/core/config.js';
import { ConfigError } from '../functions/core/errors.js';
import { type LocalStack, startLocalStack } from '../functions/local/stack.js';
import { createLogger } from '../functions/shared/powertools.js';

function apiKeyLine(stack: LocalStack): string {
  const use = 'send it as "Authorization: Bearer <key>"';
  switch (stack.apiKeySource) {
    case 'env':
      return 'API key taken from TOKENKEEPER_API_KEY';
    case 'generated':
      return `API key generated and kept in ${stack.apiKeyPath}; ${use}`;
    case 'file':
      return `API key read from ${stack.apiKeyPath}; ${use}`;
  }
}

async function main(): Promise<void> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`tokenkeeper: configuration error: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const logger = createLogger(config.serviceName);
  const stack = await startLocalStack({
    config,
    logger,
    onSweep: (s) =>
      process.stdout.write(
        `sweep: due ${s.due} / refreshed ${s.refreshed} / failed ${s.failedTransient} transient, ` +
          `${s.reauthorizationRequired} reauthorization / skipped ${s.skipped} / missed ${s.missed} / ` +
          `backlog ${s.backlog} (${s.durationMs} ms)\n`,
      ),
  });
  const storage = config.dynamodbEndpoint
    ? `DynamoDB at ${config.dynamodbEndpoint}`
    : `dynalite in ${config.dataDir}`;
  process.stdout.write(
    `tokenkeeper local stack listening on ${stack.url} (${storage}, table ${config.tableName})\n`,
  );
  process.stdout.write(`${apiKeyLine(stack)}\n`);
  if (stack.consoleUrl) {
    // A key of the operator's own (the environment) is not echoed; a kept one rides in the fragment.
    const open =
      stack.apiKeySource === 'env'
        ? `${stack.url}/console (it asks for the key: paste TOKENKEEPER_API_KEY)`
        : stack.consoleUrl;
    process.stdout.write(`Open the console:  ${open}\n`);
  }
  if (config.allowInsecureHttp) {
    process.stdout.write(
      'WARNING: TOKENKEEPER_ALLOW_INSECURE_HTTP=1: http:// and loopback/private provider URLs are allowed (local development only)\n',
    );
  }
  process.stdout.write(
    `refreshing every ${config.refreshIntervalSeconds} s, window ${config.refreshWindowSeconds} s; ` +
      `POST ${stack.url}/local/sweep to sweep now\n`,
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`${signal} received, stopping\n`);
    stack.stop().then(
      () => process.exit(0),
      (err) => {
        process.stderr.write(`tokenkeeper: error while stopping: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  process.stderr.write(`tokenkeeper: failed to start: ${(err as Error).message}\n`);
  process.exit(1);
});
