import { loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import type { SessionKey } from '../functions/core/model.js';
import type { SweepSummary } from '../functions/core/services.js';
import { TABLE } from '../functions/core/store/table.js';
import { processCpuMs, selfCpuMs } from './children.js';
import type { BenchEnv } from './env.js';
import { ITEM_OVERHEAD_BYTES, itemSize } from './item-size.js';
import type { WorkClass, WorkCounter } from './meter.js';
import type { TokenEndpointStats } from './token-endpoint.js';

/**
 * One sweep through the refresh handler (the Lambda adapter over the real core) of sessions that are
 * all due, with its wall time, CPU, DynamoDB work and log output, checked: every session refreshed,
 * every grant answered, no refresh token presented twice.
 */

export interface SweepRun {
  label: string;
  sessions: number;
  latencyMs: number;
  concurrency: number;
  /** wall time of the refresh handler call (queries + refreshes + metrics flush), ms */
  measuredMs: number;
  /** ceil(N / C) · L */
  idealMs: number;
  efficiency: number;
  /** measured time per round of C refreshes beyond L, ms */
  overheadPerRoundMs: number;
  summary: SweepSummary;
  endpoint: TokenEndpointStats;
  cpuMsPerRefresh: { keeper: number; dynalite?: number; tokenEndpoint?: number };
  work: Record<WorkClass, WorkCounter>;
  logs: { bytes: number; lines: number; emfBytes: number; emfDocuments: number };
  /** mean size of a refreshed session item (DynamoDB rules), bytes, without the 100-byte overhead */
  sessionItemBytes: number;
  /** how the sampled items hold their sealed tokens (bench/cost.ts sizes the other form from it) */
  sealedForm: 'text' | 'binary';
  indexEntryBytes: number;
  loadAverage: number;
}

export interface SweepOptions {
  label: string;
  table: string;
  keys: SessionKey[];
  latencyMs: number;
  concurrency?: number;
  clockOffsetMs?: number;
}

export async function runSweep(env: BenchEnv, options: SweepOptions): Promise<SweepRun> {
  const sessions = options.keys.length;
  const concurrency = options.concurrency ?? env.params.concurrency;
  await env.setLatency(options.latencyMs);
  const keeper = env.keeper({ table: options.table, concurrency, clockOffsetMs: options.clockOffsetMs });
  const loadAverage = loadavg()[0] as number;

  env.meter.reset();
  env.meter.enabled = true;
  const cpu = () => ({
    keeper: selfCpuMs(),
    dynalite: processCpuMs(env.dynalite.pid),
    token: processCpuMs(env.token.pid),
  });
  const cpu0 = cpu();
  env.capture.start();
  let summary: SweepSummary;
  const t0 = performance.now();
  try {
    summary = await keeper.refresh({ source: 'bench' }, undefined);
  } finally {
    env.capture.stop();
    env.meter.enabled = false;
  }
  const measuredMs = performance.now() - t0;
  const cpu1 = cpu();
  const endpoint = await env.tokenStats();
  const work = env.meter.snapshot();

  if (summary.refreshed !== sessions || summary.due !== sessions || endpoint.grants !== sessions) {
    throw new Error(
      `${options.label}: expected ${sessions} refreshes, got ${JSON.stringify(summary)}, ` +
        `endpoint ${JSON.stringify(endpoint)}`,
    );
  }
  if (endpoint.reuse !== 0 || endpoint.unknown !== 0 || endpoint.rejected !== 0) {
    throw new Error(
      `${options.label}: the token endpoint saw reuse or bad requests: ${JSON.stringify(endpoint)}`,
    );
  }

  // Size of the items as they stand after a refresh (a sample; uncounted reads).
  let bytes = 0;
  let binary = 0;
  const sample = options.keys.slice(0, 20);
  for (const key of sample) {
    const { Item } = await env.doc.send(
      new GetCommand({
        TableName: options.table,
        Key: { [TABLE.partitionKey]: `USER#${key.userId}`, [TABLE.sortKey]: `SESSION#${key.providerId}` },
      }),
    );
    bytes += itemSize(Item ?? {});
    if (Item?.accessToken instanceof Uint8Array) binary++;
  }

  const rounds = Math.ceil(sessions / concurrency);
  const idealMs = rounds * options.latencyMs;
  const perRefresh = (a?: number, b?: number) =>
    a === undefined || b === undefined ? undefined : (b - a) / sessions;
  return {
    label: options.label,
    sessions,
    latencyMs: options.latencyMs,
    concurrency,
    measuredMs,
    idealMs,
    efficiency: idealMs === 0 ? Number.NaN : idealMs / measuredMs,
    overheadPerRoundMs: measuredMs / rounds - options.latencyMs,
    summary,
    endpoint,
    cpuMsPerRefresh: {
      keeper: (cpu1.keeper - cpu0.keeper) / sessions,
      dynalite: perRefresh(cpu0.dynalite, cpu1.dynalite),
      tokenEndpoint: perRefresh(cpu0.token, cpu1.token),
    },
    work,
    logs: {
      bytes: env.capture.bytes,
      lines: env.capture.lines,
      emfBytes: env.capture.emfBytes,
      emfDocuments: env.capture.emfDocuments,
    },
    sessionItemBytes: bytes / sample.length,
    sealedForm: binary === sample.length ? 'binary' : 'text',
    indexEntryBytes: env.meter.meanIndexEntryBytes() || ITEM_OVERHEAD_BYTES,
    loadAverage,
  };
}
