import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { parseSlice, type SweepSlice } from '../core/refresh/slices.js';
import type { Runtime } from '../core/runtime.js';
import type { SweepSummary } from '../core/services.js';

export interface SweepContext {
  getRemainingTimeInMillis?: () => number;
}

/**
 * The refresh function's handler: an SQS batch of sweep slices (the fan-out's event source mapping)
 * answers with the slices that failed, so only those are delivered again; any other event (a direct
 * invocation) runs one whole sweep and answers its summary.
 */
export interface RefreshHandler {
  (event: SQSEvent, context?: SweepContext): Promise<SQSBatchResponse>;
  (event: unknown, context?: SweepContext): Promise<SweepSummary>;
}

const SUMMARY_METRICS: [keyof SweepSummary, string][] = [
  ['due', 'Due'],
  ['refreshed', 'Refreshed'],
  ['skipped', 'Skipped'],
  ['failedTransient', 'FailedTransient'],
  ['reauthorizationRequired', 'ReauthorizationRequired'],
  ['missed', 'Missed'],
  ['backlog', 'Backlog'],
];

function isSqsEvent(event: unknown): event is SQSEvent {
  const records = (event as { Records?: unknown } | null)?.Records;
  return (
    Array.isArray(records) &&
    records.every((r) => (r as { eventSource?: unknown } | null)?.eventSource === 'aws:sqs')
  );
}

export function createRefreshHandler(
  runtime: Runtime,
  options: {
    afterEach?: () => void;
    /** Told each slice's summary (the local stack adds them up into its sweep's answer). */
    onSlice?: (slice: SweepSlice, summary: SweepSummary) => void;
  } = {},
): RefreshHandler {
  const measured = (summary: SweepSummary, extra: Record<string, unknown>) => {
    for (const [field, metric] of SUMMARY_METRICS) runtime.metrics.add(metric, 'Count', summary[field]);
    runtime.metrics.add('SweepDuration', 'Milliseconds', summary.durationMs);
    runtime.logger.info('sweep finished', { ...extra, summary });
    return summary;
  };
  const handler = async (
    event: unknown,
    context?: SweepContext,
  ): Promise<SweepSummary | SQSBatchResponse> => {
    const remaining = context?.getRemainingTimeInMillis;
    const remainingTimeMs = remaining ? () => remaining() : undefined;
    try {
      if (!isSqsEvent(event)) return measured(await runtime.sweeper.sweep({ remainingTimeMs }), {});
      const batchItemFailures: SQSBatchResponse['batchItemFailures'] = [];
      // One slice after the other: each has the worker's whole grant concurrency, and the time left.
      for (const record of event.Records) {
        const slice = parseSlice(record.body);
        if (!slice) {
          // Not a slice: no retry will make it one; after maxReceiveCount it rests in the dead-letter queue.
          runtime.logger.error('sweep slice message malformed', { messageId: record.messageId });
          batchItemFailures.push({ itemIdentifier: record.messageId });
          continue;
        }
        try {
          const summary = measured(await runtime.sweeper.sweepSlice(slice, { remainingTimeMs }), { slice });
          options.onSlice?.(slice, summary);
        } catch (err) {
          // The due range could not be read (a store fault): the message comes back after its visibility timeout.
          runtime.logger.error('sweep slice failed', { slice, error: (err as Error).name });
          batchItemFailures.push({ itemIdentifier: record.messageId });
        }
      }
      return { batchItemFailures };
    } finally {
      options.afterEach?.();
    }
  };
  return handler as RefreshHandler;
}
