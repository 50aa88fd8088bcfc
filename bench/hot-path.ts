import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import type { SessionKey } from '../functions/core/model.js';
import { TABLE } from '../functions/core/store/table.js';
import type { BenchEnv } from './env.js';
import type { WorkClass, WorkCounter } from './meter.js';
import { type Summary, summarize } from './stats.js';

/**
 * The hot path: token requests for fresh sessions through the API handler (an HTTP API payload 2.0
 * event, no network in front), against a bare eventually consistent GetItem of the same items through
 * a document client on the same DynamoDBClient, alternated in batches so both see the same noise.
 */

export interface HotPathRun {
  requests: number;
  warmup: number;
  batch: number;
  handler: Summary;
  bareGetItem: Summary;
  /** handler p50 / bare p50 */
  ratioP50: number;
  ratioP99: number;
  /** per token request */
  work: Record<WorkClass, WorkCounter>;
  logs: { bytesPerRequest: number; emfBytesPerRequest: number; linesPerRequest: number };
}

function tokenEvent(key: SessionKey): APIGatewayProxyEventV2 {
  const path = `/v1/sessions/${encodeURIComponent(key.userId)}/${encodeURIComponent(key.providerId)}/token`;
  const now = Date.now();
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: 'minValidity=60',
    queryStringParameters: { minValidity: '60' },
    headers: { host: 'bench.execute-api.us-east-1.amazonaws.com', 'user-agent': 'tokenkeeper-bench' },
    requestContext: {
      accountId: '123456789012',
      apiId: 'bench',
      domainName: 'bench.execute-api.us-east-1.amazonaws.com',
      domainPrefix: 'bench',
      http: {
        method: 'GET',
        path,
        protocol: 'HTTP/1.1',
        sourceIp: '127.0.0.1',
        userAgent: 'tokenkeeper-bench',
      },
      requestId: randomUUID(),
      routeKey: '$default',
      stage: '$default',
      time: new Date(now).toUTCString(),
      timeEpoch: now,
    },
    isBase64Encoded: false,
  };
}

export async function runHotPath(
  env: BenchEnv,
  options: { requests: number; sessions: number; warmup?: number; batch?: number },
): Promise<HotPathRun> {
  const warmup = options.warmup ?? 200;
  const batch = options.batch ?? 50;
  const table = await env.createTable('hot');
  const keys = await env.seed(table, 'hot', options.sessions, 3600);
  const keeper = env.keeper({ table });
  const events = keys.map(tokenEvent);
  const gets = keys.map(
    (key) =>
      new GetCommand({
        TableName: table,
        Key: { [TABLE.partitionKey]: `USER#${key.userId}`, [TABLE.sortKey]: `SESSION#${key.providerId}` },
      }),
  );

  const handlerMs: number[] = [];
  const bareMs: number[] = [];
  let i = 0;
  const viaHandler = async (record: boolean) => {
    const event = events[i % events.length] as APIGatewayProxyEventV2;
    const t0 = performance.now();
    const result = await keeper.api(event);
    const dt = performance.now() - t0;
    if (result.statusCode !== 200)
      throw new Error(`token request answered ${result.statusCode}: ${result.body}`);
    if (record) handlerMs.push(dt);
  };
  const bare = async (record: boolean) => {
    const command = gets[i % gets.length] as GetCommand;
    const t0 = performance.now();
    const { Item } = await env.doc.send(command);
    const dt = performance.now() - t0;
    if (!Item) throw new Error('bare GetItem found no item');
    if (record) bareMs.push(dt);
  };

  env.capture.start();
  try {
    for (let w = 0; w < warmup; w++, i++) {
      await viaHandler(false);
      await bare(false);
    }
    env.meter.reset();
    env.meter.enabled = true;
    // Only the handler writes to stdout (Powertools logs and EMF); the bare reads write nothing.
    const before = { bytes: env.capture.bytes, emf: env.capture.emfBytes, lines: env.capture.lines };
    for (let b = 0; handlerMs.length < options.requests; b++) {
      const n = Math.min(batch, options.requests - handlerMs.length);
      // Alternate which side goes first, so neither always follows the other.
      const order = b % 2 === 0 ? [viaHandler, bare] : [bare, viaHandler];
      for (const run of order) {
        env.meter.enabled = run === viaHandler;
        for (let k = 0; k < n; k++, i++) await run(true);
      }
    }
    const after = { bytes: env.capture.bytes, emf: env.capture.emfBytes, lines: env.capture.lines };
    const handlerWork = env.meter.snapshot();
    env.meter.enabled = false;
    const handler = summarize(handlerMs);
    const bareGetItem = summarize(bareMs);
    const n = handlerMs.length;
    const perRequest = Object.fromEntries(
      Object.entries(handlerWork).map(([k, v]) => [
        k,
        {
          requests: v.requests / n,
          errors: v.errors / n,
          rcu: v.rcu / n,
          wcu: v.wcu / n,
          gsiWcu: v.gsiWcu / n,
          gsiUnknown: v.gsiUnknown / n,
        },
      ]),
    ) as Record<WorkClass, WorkCounter>;
    return {
      requests: n,
      warmup,
      batch,
      handler,
      bareGetItem,
      ratioP50: handler.p50 / bareGetItem.p50,
      ratioP99: handler.p99 / bareGetItem.p99,
      work: perRequest,
      logs: {
        bytesPerRequest: (after.bytes - before.bytes) / n,
        emfBytesPerRequest: (after.emf - before.emf) / n,
        linesPerRequest: (after.lines - before.lines) / n,
      },
    };
  } finally {
    env.capture.stop();
    env.meter.enabled = false;
  }
}
