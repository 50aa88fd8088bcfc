import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import type { ApiRequest, ApiResponse } from './app.js';

/**
 * Adapter between API Gateway HTTP API (payload format 2.0) and the Lambda-free ApiRequest /
 * ApiResponse of ./app.ts.
 */

/**
 * Parses a raw query string. Repeated keys are joined with ',' (as API Gateway does in
 * queryStringParameters), so validation, whose values never contain a comma, rejects them.
 */
export function parseQueryString(raw: string | undefined): Record<string, string> {
  const query: Record<string, string> = Object.create(null);
  if (raw === undefined || raw === '') return query;
  for (const [key, value] of new URLSearchParams(raw)) {
    query[key] = Object.hasOwn(query, key) ? `${query[key]},${value}` : value;
  }
  return { ...query };
}

export function toApiRequest(event: APIGatewayProxyEventV2): ApiRequest {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(event.headers ?? {})) {
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    headers[lower] = Object.hasOwn(headers, lower) ? `${headers[lower]},${value}` : value;
  }
  const request: ApiRequest = {
    method: event.requestContext.http.method.toUpperCase(),
    path: event.rawPath,
    query: parseQueryString(event.rawQueryString),
    headers,
  };
  if (event.body !== undefined && event.body !== null) {
    request.body = event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
  }
  return request;
}

export function toLambdaResult(res: ApiResponse): APIGatewayProxyStructuredResultV2 {
  const result: APIGatewayProxyStructuredResultV2 = {
    statusCode: res.status,
    headers: { ...res.headers },
    isBase64Encoded: false,
  };
  if (res.body !== undefined) result.body = res.body;
  return result;
}
