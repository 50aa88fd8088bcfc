import { loadConfig } from '../core/config.js';
import { createRuntime } from '../core/runtime.js';
import { createTelemetry } from '../shared/powertools.js';
import { createApiHandler } from './adapter.js';

/** Lambda entry for the API function. API Gateway authorizes callers with IAM (SigV4). */
const config = loadConfig();
// Token requests add two metrics each: held back for up to a minute and published up to 100 values
// a document, they cost about a tenth of the log bytes of one document per request.
const telemetry = createTelemetry(config, {
  batching: { names: ['TokensServed', 'TokenLatency'], maxAgeMs: 60_000 },
});
const runtime = createRuntime({ config, logger: telemetry.logger, metrics: telemetry.metrics });

export const handler = createApiHandler(runtime, { afterEach: telemetry.flush });
