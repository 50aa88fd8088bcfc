import { Logger as PowertoolsLogger } from '@aws-lambda-powertools/logger';
import { Metrics as PowertoolsMetrics } from '@aws-lambda-powertools/metrics';
import type { Config } from '../core/config.js';
import type { Logger, Metrics } from '../core/ports.js';

export const METRICS_NAMESPACE = 'TokenKeeper';

export interface Telemetry {
  logger: Logger;
  metrics: Metrics;
  /** Flushes the invocation's metrics as one EMF document (no PutMetricData calls); nothing when none were added. */
  flush(): void;
}

/** Powertools Logger (structured JSON lines) behind the core's Logger port. */
export function createLogger(serviceName: string): Logger {
  const pt = new PowertoolsLogger({ serviceName });
  return {
    debug: (message, extra) => (extra ? pt.debug(message, extra) : pt.debug(message)),
    info: (message, extra) => (extra ? pt.info(message, extra) : pt.info(message)),
    warn: (message, extra) => (extra ? pt.warn(message, extra) : pt.warn(message)),
    error: (message, extra) => (extra ? pt.error(message, extra) : pt.error(message)),
  };
}

/**
 * Metrics a busy function may hold back and publish together: one EMF document carries up to 100
 * values of a metric (Powertools publishes by itself when one reaches 100), so a token request costs a
 * few bytes of log instead of a whole document. Anything else added flushes everything at once.
 */
export interface MetricBatching {
  /** The metrics that may wait. */
  names: readonly string[];
  /** Held-back values are published by the first flush at least this long after the last publish. */
  maxAgeMs: number;
  now?: () => number;
}

/** Powertools Logger (structured JSON) and Metrics (Embedded Metric Format) behind the core's ports. */
export function createTelemetry(
  config: Pick<Config, 'serviceName'>,
  options: { batching?: MetricBatching } = {},
): Telemetry {
  const logger = createLogger(config.serviceName);
  const emf = new PowertoolsMetrics({ namespace: METRICS_NAMESPACE, serviceName: config.serviceName });
  const { batching } = options;
  const now = batching?.now ?? Date.now;
  const mayWait = new Set(batching?.names ?? []);
  // Powertools warns "No application metrics to publish" when asked to flush nothing, which most
  // API requests (all but the token route) would do: flush only what was added.
  let pending = false;
  let urgent = false;
  // The first flush of a container publishes; then at most one held-back document per maxAgeMs.
  let publishedAt = Number.NEGATIVE_INFINITY;
  return {
    logger,
    metrics: {
      add: (name, unit, value, dimensions) => {
        pending = true;
        if (!mayWait.has(name)) urgent = true;
        emf.addMetric(name, unit, value);
        if (!dimensions) return;
        // The same value again, per dimension (e.g. per provider), in a document of its own.
        const single = emf.singleMetric();
        for (const [dimension, dimensionValue] of Object.entries(dimensions)) {
          single.addDimension(dimension, dimensionValue);
        }
        single.addMetric(name, unit, value);
      },
    },
    flush: () => {
      if (!pending) return;
      if (batching && !urgent && now() - publishedAt < batching.maxAgeMs) return;
      pending = false;
      urgent = false;
      publishedAt = now();
      emf.publishStoredMetrics();
    },
  };
}
