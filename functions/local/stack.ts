import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join, resolve } from 'node:path';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import { type AssetResponse, CONSOLE_PATH } from '../../client/console-assets.js';
import { type BrowserGuardRules, guarded, loopbackRules } from '../../client/guard.js';
import { createApiHandler } from '../api/adapter.js';
import { createBearerCheck } from '../api/app.js';
import type { Config } from '../core/config.js';
import { readOrCreatePrivateFile } from '../core/crypto/private-file.js';
import type { Clock, FetchLike, Logger } from '../core/ports.js';
import type { Dispatcher } from '../core/refresh/dispatch.js';
import { addSummaries } from '../core/refresh/slices.js';
import { createRuntime, type Runtime } from '../core/runtime.js';
import type { SweepSummary } from '../core/services.js';
import { ensureTable } from '../core/store/table.js';
import { createRefreshHandler } from '../refresh/adapter.js';
import { apiGatewayTarget } from './apigw-path.js';
import { loadConsoleAssets } from './console/assets.js';
import { listenOnLoopback, localDynamoClient, startEmbeddedDynamoDB } from './embedded.js';
import { InProcessSliceQueue } from './fanout.js';

/**
 * The local stack: the same API and refresh handlers as in Lambda, on an embedded DynamoDB
 * (dynalite, persisted in the data directory, reached through a private Unix socket: ./embedded.ts)
 * or an outside endpoint, behind a small HTTP server on 127.0.0.1 that turns each request into an
 * HTTP API event (its path decoded as API Gateway does, ./apigw-path.ts), with a timer in place of
 * EventBridge. That server is the stack's only port, and it answers no other origin and no other
 * host name than its own (client/guard.ts).
 */

export interface LocalStackOptions {
  config: Config;
  logger: Logger;
  clock?: Clock;
  fetch?: FetchLike;
  /** Called with each sweep's summary (the entry point prints one line per sweep). */
  onSweep?: (summary: SweepSummary) => void;
  /** Keep dynalite in memory instead of the data directory (tests). */
  inMemory?: boolean;
  /** Disable the timer (tests drive sweeps through POST /local/sweep). */
  timer?: boolean;
  /** Serve the console at /console (default true). */
  console?: boolean;
  /**
   * More routes on the same origin (the demo's /demo/…), asked before the API; undefined passes the
   * request on. `authenticated`: the request carried the API key.
   */
  extraRoutes?: (request: LocalRequest) => Promise<AssetResponse | undefined>;
}

export interface LocalRequest {
  method: string;
  /** decoded, as the API sees it */
  path: string;
  query: URLSearchParams;
  body: Buffer;
  authenticated: boolean;
}

export interface LocalStack {
  url: string;
  apiKey: string;
  /** Where the key is kept, unless it came from TOKENKEEPER_API_KEY. */
  apiKeyPath?: string;
  /** `env`: TOKENKEEPER_API_KEY; `generated`: created now in apiKeyPath; `file`: read from apiKeyPath. */
  apiKeySource: 'env' | 'generated' | 'file';
  /** The console's address with the key in its fragment (which the browser never sends); undefined without the console. */
  consoleUrl?: string;
  /** The operator's own DynamoDB endpoint (TOKENKEEPER_DYNAMODB_ENDPOINT); undefined: the embedded store. */
  dynamodbEndpoint?: string;
  /** A new DynamoDB client on the stack's table store (the embedded one has no port to point a client at). */
  dynamodbClient(options?: { maxAttempts?: number }): DynamoDBClient;
  runtime: Runtime;
  sweep(): Promise<SweepSummary>;
  stop(): Promise<void>;
}

const MAX_REQUEST_BYTES = 1024 * 1024;

/** The local API key, generated on first start (a file too short to be a key is replaced). */
async function readOrCreateApiKey(dataDir: string): Promise<{ key: string; path: string; created: boolean }> {
  const { text, path, created } = await readOrCreatePrivateFile(
    resolve(dataDir),
    'api-key',
    () => `${randomBytes(32).toString('base64url')}\n`,
    (existing) => existing.trim().length >= 32,
  );
  return { key: text.trim(), path, created };
}

function toEvent(
  req: IncomingMessage,
  body: Buffer,
  now: number,
  target: { rawPath: string; rawQueryString: string },
): APIGatewayProxyEventV2 {
  const { rawPath, rawQueryString } = target;
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(',') : value;
  }
  const method = (req.method ?? 'GET').toUpperCase();
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath,
    rawQueryString,
    headers,
    requestContext: {
      accountId: 'local',
      apiId: 'local',
      domainName: '127.0.0.1',
      domainPrefix: 'local',
      http: {
        method,
        path: rawPath,
        protocol: `HTTP/${req.httpVersion}`,
        sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
        userAgent: headers['user-agent'] ?? '',
      },
      requestId: randomUUID(),
      routeKey: '$default',
      stage: '$default',
      time: new Date(now).toUTCString(),
      timeEpoch: now,
    },
    body: body.length > 0 ? body.toString('base64') : undefined,
    isBase64Encoded: body.length > 0,
  };
}

function send(res: ServerResponse, status: number, headers: Record<string, string>, body?: string): void {
  res.writeHead(status, headers);
  res.end(body);
}

export async function startLocalStack(options: LocalStackOptions): Promise<LocalStack> {
  const { config, logger } = options;
  const external = config.dynamodbEndpoint;
  const embedded = external
    ? undefined
    : await startEmbeddedDynamoDB(options.inMemory ? {} : { path: join(config.dataDir, 'dynamodb') });
  const dynamodbClient = (clientOptions: { maxAttempts?: number } = {}): DynamoDBClient => {
    const settings = { region: config.region, ...clientOptions };
    return embedded ? embedded.client(settings) : localDynamoClient(external as string, settings);
  };
  const dynamodb = dynamodbClient();
  try {
    await ensureTable(dynamodb, config.tableName);
  } catch (err) {
    dynamodb.destroy();
    await embedded?.stop();
    throw err;
  }

  const generated = config.apiKey ? undefined : await readOrCreateApiKey(config.dataDir);
  const apiKey = config.apiKey ?? (generated?.key as string);
  const bearerOk = createBearerCheck(apiKey);
  // Set once the server listens: the runtime needs the server's URL (the OAuth callback's base).
  let runtime: Runtime | undefined;
  let api: ReturnType<typeof createApiHandler> | undefined;
  let refresh: ReturnType<typeof createRefreshHandler> | undefined;
  const consoleAssets = options.console === false ? undefined : await loadConsoleAssets();

  // The fan-out as in AWS: the dispatcher queues the sweep's slices, and the refresh handler consumes
  // them as SQS events, through an in-process queue in place of SQS and the event source mapping.
  const slices = new InProcessSliceQueue({
    consume: (event) => (refresh as NonNullable<typeof refresh>)(event),
    maxConcurrency: config.sweepWorkers,
    maxReceiveCount: 3,
    logger,
  });
  const sliceSummaries = new Map<string, SweepSummary[]>();
  const dispatchAndWait = async (): Promise<SweepSummary> => {
    const startedAt = Date.now();
    const dispatcher = runtime?.dispatcher as Dispatcher;
    const dispatched = await dispatcher.dispatch();
    await slices.idle();
    const done = sliceSummaries.get(dispatched.sweepId) ?? [];
    sliceSummaries.delete(dispatched.sweepId);
    return addSummaries(done, Date.now() - startedAt);
  };
  let sweeping: Promise<SweepSummary> | undefined;
  const sweep = () => {
    // One sweep at a time in this process; overlapping sweeps elsewhere are made safe by the lease.
    sweeping ??= dispatchAndWait().finally(() => {
      sweeping = undefined;
    });
    return sweeping.then((summary) => {
      options.onSweep?.(summary);
      return summary;
    });
  };

  // Set once the server listens: the rules name its port.
  let guardRules: BrowserGuardRules = { hosts: [], origins: [] };
  const answer = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_REQUEST_BYTES) {
        tooLarge = true;
        break;
      }
      chunks.push(chunk as Buffer);
    }
    const json = { 'content-type': 'application/json', 'cache-control': 'no-store' };
    try {
      if (tooLarge) {
        send(
          res,
          413,
          { ...json, connection: 'close' },
          JSON.stringify({ error: 'payload_too_large', error_description: 'request body exceeds 64 KiB' }),
        );
        return;
      }
      // The request target as API Gateway hands it on: path decoded, or refused before any handler.
      const target = apiGatewayTarget(req.url ?? '/');
      if (!target.ok) {
        send(res, target.status, { 'content-type': 'application/json' }, target.body);
        return;
      }
      const event = toEvent(req, Buffer.concat(chunks), Date.now(), target);
      const method = event.requestContext.http.method;
      const page = consoleAssets?.respond(method, event.rawPath);
      const extra =
        page ??
        (await options.extraRoutes?.({
          method,
          path: event.rawPath,
          query: new URLSearchParams(event.rawQueryString),
          body: Buffer.concat(chunks),
          authenticated: bearerOk(event.headers.authorization),
        }));
      if (extra) {
        send(res, extra.status, extra.headers, extra.body);
        return;
      }
      if (event.rawPath === '/local/sweep') {
        if (!bearerOk(event.headers.authorization)) {
          send(
            res,
            401,
            { ...json, 'www-authenticate': 'Bearer' },
            JSON.stringify({ error: 'unauthorized', error_description: 'missing or invalid credentials' }),
          );
          return;
        }
        if (event.requestContext.http.method !== 'POST') {
          send(
            res,
            405,
            { ...json, allow: 'POST' },
            JSON.stringify({ error: 'method_not_allowed', error_description: 'use POST' }),
          );
          return;
        }
        send(res, 200, json, JSON.stringify(await sweep()));
        return;
      }
      if (!api) {
        send(
          res,
          503,
          json,
          JSON.stringify({ error: 'starting', error_description: 'the stack is starting' }),
        );
        return;
      }
      const result = await api(event);
      send(res, result.statusCode ?? 200, (result.headers ?? {}) as Record<string, string>, result.body);
    } catch (err) {
      logger.error('local server failed to answer', { error: (err as Error).name });
      if (!res.headersSent)
        send(
          res,
          500,
          json,
          JSON.stringify({ error: 'internal_error', error_description: 'internal error' }),
        );
    }
  };
  const server = createServer(guarded(answer, () => guardRules));
  let port: number;
  try {
    port = await listenOnLoopback(server, config.port);
  } catch (err) {
    dynamodb.destroy();
    await embedded?.stop();
    throw err;
  }
  const url = `http://127.0.0.1:${port}`;
  // The console is served here and calls back here; the public URL (a tunnel's name) is ours too.
  guardRules = loopbackRules(port, { ownPages: true, publicUrl: config.publicUrl });
  // Locally the keeper's public URL defaults to its own address (the browser comes back to it).
  runtime = createRuntime({
    config: {
      ...config,
      publicUrl: config.publicUrl ?? url,
      // The console's connect form comes back to the console, which completes the connection.
      allowedRedirects: consoleAssets
        ? [...config.allowedRedirects, `${url}${CONSOLE_PATH}`]
        : config.allowedRedirects,
    },
    dynamodb,
    logger,
    clock: options.clock,
    fetch: options.fetch,
    sliceQueue: slices,
  });
  try {
    await runtime.ready();
  } catch (err) {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    dynamodb.destroy();
    await embedded?.stop();
    throw err;
  }
  api = createApiHandler(runtime, { apiKey });
  refresh = createRefreshHandler(runtime, {
    onSlice: (slice, summary) => {
      const list = sliceSummaries.get(slice.sweepId) ?? [];
      list.push(summary);
      sliceSummaries.set(slice.sweepId, list);
    },
  });

  const timer =
    options.timer === false
      ? undefined
      : setInterval(() => {
          sweep().catch((err) => logger.error('scheduled sweep failed', { error: (err as Error).name }));
        }, config.refreshIntervalSeconds * 1000);

  let stopped = false;
  return {
    url,
    apiKey,
    apiKeyPath: generated?.path,
    apiKeySource: generated === undefined ? 'env' : generated.created ? 'generated' : 'file',
    consoleUrl: consoleAssets ? `${url}${CONSOLE_PATH}#key=${encodeURIComponent(apiKey)}` : undefined,
    dynamodbEndpoint: external,
    dynamodbClient,
    runtime: runtime as Runtime,
    sweep,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (timer) clearInterval(timer);
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await sweeping?.catch(() => {});
      // Grants still open (their callers answered 503) are committed before the store goes away.
      await runtime?.refresher.settleAll();
      dynamodb.destroy();
      await embedded?.stop();
    },
  };
}
