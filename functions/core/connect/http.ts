import { DiscoveryFailedError } from '../errors.js';
import { readBodyCapped } from '../oauth/body.js';
import { ForbiddenDestinationError } from '../oauth/net-guard.js';
import type { Clock, FetchLike } from '../ports.js';

/**
 * Outbound requests of the connect flow: through the injected (guarded) fetch, each with a timeout
 * that also respects the call's deadline, redirects never followed, bodies capped at 64 KiB.
 */

/** Discovery and registration documents larger than this are refused. */
export const MAX_DOCUMENT_BYTES = 64 * 1024;

export interface OutboundDeps {
  fetch: FetchLike;
  clock: Clock;
  timeoutMs: number;
}

export interface TextAnswer {
  status: number;
  headers: Headers;
  text: string;
}

function describeFailure(err: unknown, url: string, timeoutMs: number): string {
  const host = safeHost(url);
  if (err instanceof ForbiddenDestinationError) return `${host} is not allowed: ${err.reason}`;
  const name = (err as { name?: string } | undefined)?.name;
  if (name === 'TimeoutError' || name === 'AbortError')
    return `${host} did not answer within ${timeoutMs} ms`;
  return `${host} could not be reached`;
}

function safeHost(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'the server';
  }
}

/**
 * One request; the body is read up to MAX_DOCUMENT_BYTES. `what` names the document in error
 * messages ("protected resource metadata"). Network failures become DiscoveryFailedError.
 */
export async function request(
  deps: OutboundDeps,
  url: string,
  init: RequestInit,
  what: string,
  by?: number,
  options: { body?: boolean } = {},
): Promise<TextAnswer> {
  const left = by === undefined ? deps.timeoutMs : Math.min(deps.timeoutMs, by - deps.clock.now());
  if (left <= 0) throw new DiscoveryFailedError(`${what}: no time left before the call's deadline`);
  let response: Response;
  try {
    response = await deps.fetch(url, { ...init, redirect: 'manual', signal: AbortSignal.timeout(left) });
  } catch (err) {
    throw new DiscoveryFailedError(`${what}: ${describeFailure(err, url, left)}`);
  }
  if (options.body === false) {
    await response.body?.cancel().catch(() => {});
    return { status: response.status, headers: response.headers, text: '' };
  }
  let body: Buffer;
  try {
    body = await readBodyCapped(
      response,
      MAX_DOCUMENT_BYTES,
      () => new DiscoveryFailedError(`${what} is larger than ${MAX_DOCUMENT_BYTES / 1024} KiB`),
    );
  } catch (err) {
    if (err instanceof DiscoveryFailedError) throw err;
    throw new DiscoveryFailedError(`${what}: ${describeFailure(err, url, left)}`);
  }
  return { status: response.status, headers: response.headers, text: body.toString('utf8') };
}

/** The answer's body as a JSON object, or DiscoveryFailedError naming the document. */
export function jsonObject(answer: TextAnswer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(answer.text);
  } catch {
    throw new DiscoveryFailedError(`${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new DiscoveryFailedError(`${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}
