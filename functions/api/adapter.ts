import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import type { Runtime } from '../core/runtime.js';
import { createApp } from './app.js';
import { toApiRequest, toLambdaResult } from './http.js';

export type ApiHandler = (event: APIGatewayProxyEventV2) => Promise<APIGatewayProxyStructuredResultV2>;

/** The API handler over a runtime: HTTP API payload 2.0 event in, structured result out. */
export function createApiHandler(
  runtime: Runtime,
  options: { apiKey?: string; afterEach?: () => void } = {},
): ApiHandler {
  const app = createApp({
    providers: runtime.providers,
    sessions: runtime.sessions,
    tokens: runtime.tokens,
    logger: runtime.logger,
    metrics: runtime.metrics,
    clock: runtime.clock,
    apiKey: options.apiKey,
    allowInsecureHttp: runtime.config.allowInsecureHttp,
    insecureHttpHint: !runtime.config.inLambda,
  });
  return async (event) => {
    try {
      return toLambdaResult(await app(toApiRequest(event)));
    } finally {
      options.afterEach?.();
    }
  };
}
