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

/** Powertools Logger (structured JSON) and Metrics (Embedded Metric Format) behind the core's ports. */
export function createTelemetry(config: Pick<Config, 'serviceName'>): Telemetry {
  const logger = createLogger(config.serviceName);
  const emf = new PowertoolsMetrics({ namespace: METRICS_NAMESPACE, serviceName: config.serviceName });
  // Powertools warns "No application metrics to publish" when asked to flush nothing, which most
  // API requests (all but the token route) would do: flush only what was added.
  let pending = false;
  return {
    logger,
    metrics: {
      add: (name, unit, value, dimensions) => {
        pending = true;
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
      pending = false;
      emf.publishStoredMetrics();
    },
  };
}
