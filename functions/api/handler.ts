import { loadConfig } from '../core/config.js';
import { createRuntime } from '../core/runtime.js';
import { createTelemetry } from '../shared/powertools.js';
import { createApiHandler } from './adapter.js';

/** Lambda entry for the API function. API Gateway authorizes callers with IAM (SigV4). */
const config = loadConfig();
const telemetry = createTelemetry(config);
const runtime = createRuntime({ config, logger: telemetry.logger, metrics: telemetry.metrics });

export const handler = createApiHandler(runtime, { afterEach: telemetry.flush });
