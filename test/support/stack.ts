import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { loadConfig } from '../../functions/core/config.js';
import type { Clock, Logger } from '../../functions/core/ports.js';
import { createRuntime, type Runtime } from '../../functions/core/runtime.js';
import { type LocalStack, startLocalStack } from '../../functions/local/stack.js';

/**
 * The real local stack (dynalite + the API and refresh handlers behind the 127.0.0.1 server), started
 * in-process for integration tests, with every log line captured.
 */

export interface LogLine {
  level: 'debug' | 'info' | 'warn' | 'error';
  message: string;
  extra?: Record<string, unknown>;
}

export interface CallResult {
  status: number;
  headers: Headers;
  body: unknown;
  text: string;
}

export interface TestStack {
  stack: LocalStack;
  url: string;
  apiKey: string;
  dataDir: string;
  logs: LogLine[];
  /** An authenticated request to the local server. */
  call(method: string, path: string, body?: unknown): Promise<CallResult>;
  sweep(): Promise<Record<string, number>>;
  /** Another keeper (think: another Lambda container) on the same table, with its own process state. */
  peer(): Runtime;
  stop(options?: { keepData?: boolean }): Promise<void>;
}

export function capturingLogger(logs: LogLine[]): Logger {
  const at = (level: LogLine['level']) => (message: string, extra?: Record<string, unknown>) =>
    logs.push({ level, message, extra });
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export async function startTestStack(
  options: {
    env?: Record<string, string>;
    clock?: Clock;
    dataDir?: string;
    persist?: boolean;
    console?: boolean;
  } = {},
): Promise<TestStack> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'tokenkeeper-test-')));
  const config = loadConfig({
    PORT: '0',
    TOKENKEEPER_DATA_DIR: dataDir,
    TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
    TOKENKEEPER_HTTP_TIMEOUT_MS: '2000',
    ...options.env,
  });
  const logs: LogLine[] = [];
  const logger = capturingLogger(logs);
  const stack = await startLocalStack({
    config,
    logger,
    clock: options.clock,
    inMemory: !options.persist,
    timer: false,
    console: options.console,
  });
  const peers: DynamoDBClient[] = [];

  const call = async (method: string, path: string, body?: unknown): Promise<CallResult> => {
    const res = await fetch(`${stack.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${stack.apiKey}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    return { status: res.status, headers: res.headers, body: parsed, text };
  };

  return {
    stack,
    url: stack.url,
    apiKey: stack.apiKey,
    dataDir,
    logs,
    call,
    async sweep() {
      const res = await call('POST', '/local/sweep');
      if (res.status !== 200) throw new Error(`sweep answered ${res.status}: ${res.text}`);
      return res.body as Record<string, number>;
    },
    peer() {
      const dynamodb = stack.dynamodbClient();
      peers.push(dynamodb);
      return createRuntime({
        config,
        dynamodb,
        logger,
        clock: options.clock,
      });
    },
    async stop(stopOptions = {}) {
      for (const p of peers) p.destroy();
      await stack.stop();
      if (!stopOptions.keepData && !options.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
