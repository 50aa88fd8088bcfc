import type { DispatchSummary } from '../core/refresh/dispatch.js';
import type { Runtime } from '../core/runtime.js';

export type DispatchHandler = (event: unknown) => Promise<DispatchSummary>;

/** The dispatcher's handler: each scheduled event cuts one sweep into slices and queues them. */
export function createDispatchHandler(
  runtime: Pick<Runtime, 'dispatcher' | 'metrics' | 'logger'>,
  options: { afterEach?: () => void } = {},
): DispatchHandler {
  const { dispatcher } = runtime;
  if (!dispatcher) throw new Error('the dispatcher needs TOKENKEEPER_SWEEP_QUEUE_URL');
  return async () => {
    try {
      const summary = await dispatcher.dispatch();
      runtime.metrics.add('SweepSlices', 'Count', summary.slices);
      runtime.metrics.add('DispatchDuration', 'Milliseconds', summary.durationMs);
      runtime.logger.info('sweep dispatched', { ...summary });
      return summary;
    } finally {
      options.afterEach?.();
    }
  };
}
