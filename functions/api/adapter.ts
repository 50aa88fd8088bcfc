import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import type { Runtime } from '../core/runtime.js';
import { createApp } from './app.js';
import { toApiRequest, toLambdaResult } from './http.js';

export interface ApiContext {
  getRemainingTimeInMillis?: () => number;
}

export type ApiHandler = (
  event: APIGatewayProxyEventV2,
  context?: ApiContext,
) => Promise<APIGatewayProxyStructuredResultV2>;

/** Kept free before the Lambda's own end: the answer, the metrics flush and the log lines. */
export const DEADLINE_MARGIN_MS = 1_500;
/**
 * Without a Lambda context (the local stack), the same budget a deployed call has: API Gateway cuts
 * a request at 30 s and the function's timeout is 29 s.
 */
export const LOCAL_CALL_BUDGET_MS = 29_000;

/** The API handler over a runtime: HTTP API payload 2.0 event in, structured result out. */
export function createApiHandler(
  runtime: Runtime,
  options: { apiKey?: string; afterEach?: () => void } = {},
): ApiHandler {
  const app = createApp({
    providers: runtime.providers,
    sessions: runtime.sessions,
    tokens: runtime.tokens,
    sweeps: runtime.sweeper,
    connect: runtime.connect,
    logger: runtime.logger,
    metrics: runtime.metrics,
    clock: runtime.clock,
    apiKey: options.apiKey,
    allowInsecureHttp: runtime.config.allowInsecureHttp,
    insecureHttpHint: !runtime.config.inLambda,
  });
  return async (event, context) => {
    try {
      const remaining = context?.getRemainingTimeInMillis?.() ?? LOCAL_CALL_BUDGET_MS;
      const deadline = runtime.clock.now() + remaining - DEADLINE_MARGIN_MS;
      return toLambdaResult(await app({ ...toApiRequest(event), deadline }));
    } finally {
      options.afterEach?.();
    }
  };
}
