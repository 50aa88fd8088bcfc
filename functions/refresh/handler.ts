import { loadConfig } from '../core/config.js';
import { createRuntime } from '../core/runtime.js';
import { createTelemetry } from '../shared/powertools.js';
import { createRefreshHandler } from './adapter.js';

/** Lambda entry for the refresh function, fired by the EventBridge schedule. */
const config = loadConfig();
const telemetry = createTelemetry(config);
const runtime = createRuntime({ config, logger: telemetry.logger, metrics: telemetry.metrics });

export const handler = createRefreshHandler(runtime, { afterEach: telemetry.flush });
