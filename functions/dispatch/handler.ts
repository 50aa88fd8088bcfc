import { loadConfig } from '../core/config.js';
import { createRuntime } from '../core/runtime.js';
import { createTelemetry } from '../shared/powertools.js';
import { createDispatchHandler } from './adapter.js';

/** Lambda entry for the dispatcher, fired by the EventBridge schedule: it queues one sweep's slices. */
const config = loadConfig();
const telemetry = createTelemetry(config);
const runtime = createRuntime({ config, logger: telemetry.logger, metrics: telemetry.metrics });

export const handler = createDispatchHandler(runtime, { afterEach: telemetry.flush });
