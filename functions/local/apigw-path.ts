/**
 * What API Gateway (HTTP API, payload format 2.0) makes of a request target before Lambda sees it,
 * emulated for the local stack so that its events carry the same `rawPath` as deployed ones.
 * This is the one place that knows it; the API adapter takes `rawPath` as already decoded.
 *
 * Observed behaviour of HTTP APIs (captured events; REST APIs and function URLs differ):
 * - the path is percent-decoded before the integration is invoked: `%40`, `%20` and UTF-8
 *   sequences such as `%C3%A9` arrive as `@`, ` ` and `é`; `%2F` arrives as `/`;
 * - an escape of `%` itself (`%25XX`) is decoded twice, so `%252F` also arrives as `/`;
 * - a decoded `?` (`%3F`) ends the path there: the rest of the path is dropped, and the query
 *   string is the one after the literal `?`, still encoded;
 * - a `%` not followed by two hex digits is refused with 400 before Lambda is invoked; so is an
 *   escape sequence that is not UTF-8.
 */

export type ApiGatewayTarget =
  | { ok: true; rawPath: string; rawQueryString: string }
  | { ok: false; status: 400; body: string };

/** API Gateway's own answer to a request it refuses before routing. */
const BAD_REQUEST = { ok: false, status: 400, body: JSON.stringify({ message: 'Bad Request' }) } as const;

const BARE_PERCENT = /%(?![0-9A-Fa-f]{2})/u;
const ESCAPES = /(?:%[0-9A-Fa-f]{2})+/gu;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes each run of `%XX` escapes as UTF-8. A run that is not UTF-8 makes the result undefined,
 * or with `keepInvalid` stays as it is.
 */
function decodeRuns(text: string, keepInvalid = false): string | undefined {
  let invalid = false;
  const decoded = text.replace(ESCAPES, (run) => {
    const bytes = Uint8Array.from(run.slice(1).split('%'), (hex) => Number.parseInt(hex, 16));
    try {
      return strictUtf8.decode(bytes);
    } catch {
      invalid = true;
      return run;
    }
  });
  return invalid && !keepInvalid ? undefined : decoded;
}

/** Splits a request target (`/path?query`, as sent on the wire) the way an HTTP API does. */
export function apiGatewayTarget(target: string): ApiGatewayTarget {
  const q = target.indexOf('?');
  const encodedPath = q === -1 ? target : target.slice(0, q);
  const rawQueryString = q === -1 ? '' : target.slice(q + 1);
  if (BARE_PERCENT.test(encodedPath)) return BAD_REQUEST;
  const once = decodeRuns(encodedPath);
  if (once === undefined) return BAD_REQUEST;
  // Only a `%` that came from `%25` can start an escape now: decode those a second time, leaving
  // anything that does not decode (a bare `%`, a sequence that is not UTF-8) as it is.
  const twice = decodeRuns(once, true) as string;
  const cut = twice.indexOf('?');
  return { ok: true, rawPath: cut === -1 ? twice : twice.slice(0, cut), rawQueryString };
}
