import type { Runtime } from '../core/runtime.js';
import type { SweepSummary } from '../core/services.js';

export interface SweepContext {
  getRemainingTimeInMillis?: () => number;
}

export type RefreshHandler = (event: unknown, context?: SweepContext) => Promise<SweepSummary>;

const SUMMARY_METRICS: [keyof SweepSummary, string][] = [
  ['due', 'Due'],
  ['refreshed', 'Refreshed'],
  ['skipped', 'Skipped'],
  ['failedTransient', 'FailedTransient'],
  ['reauthorizationRequired', 'ReauthorizationRequired'],
  ['missed', 'Missed'],
  ['backlog', 'Backlog'],
];

/** The refresh handler: one sweep per scheduled event; the summary is returned, logged and measured. */
export function createRefreshHandler(
  runtime: Runtime,
  options: { afterEach?: () => void } = {},
): RefreshHandler {
  return async (_event, context) => {
    try {
      const remaining = context?.getRemainingTimeInMillis;
      const summary = await runtime.sweeper.sweep({
        remainingTimeMs: remaining ? () => remaining() : undefined,
      });
      for (const [field, metric] of SUMMARY_METRICS) runtime.metrics.add(metric, 'Count', summary[field]);
      runtime.metrics.add('SweepDuration', 'Milliseconds', summary.durationMs);
      runtime.logger.info('sweep finished', { summary });
      return summary;
    } finally {
      options.afterEach?.();
    }
  };
}
