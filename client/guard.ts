import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';

/**
 * What every listener on the operator's machine (the local stack, the demo, `tokenkeeper console`)
 * checks before anything else, so that a web page in the operator's browser cannot use it:
 *
 * - `Host` must name the listener itself (`127.0.0.1:<port>`, `localhost:<port>`, or the keeper's
 *   configured public URL): a DNS-rebinding host name (`rebind.evil.example:<port>`, resolved to
 *   127.0.0.1) is answered 421 before any route runs.
 * - `Origin`, when present, must be one of the listener's own origins: browsers add it to every
 *   cross-origin request and to every preflight, so another site's page is answered 403, with no
 *   CORS header. A listener that serves no page of its own accepts no `Origin` at all. (Browsers add
 *   `Origin` to a page's own POST and DELETE requests too, which is why the console's origin is
 *   accepted where the console is served.)
 *
 * The credential each route needs comes after this: the API key, the OAuth state, a token.
 */

export interface BrowserGuardRules {
  /** Accepted `Host` values, lower case (`127.0.0.1:8787`). */
  hosts: readonly string[];
  /** Accepted `Origin` values (`http://127.0.0.1:8787`); empty: any `Origin` is refused. */
  origins: readonly string[];
}

export interface Refusal {
  status: 403 | 421;
  error: 'forbidden_origin' | 'misdirected_request';
  description: string;
}

/** The rules of a listener on 127.0.0.1:<port>; `ownPages`: it serves pages that call it back. */
export function loopbackRules(
  port: number,
  options: { ownPages: boolean; publicUrl?: string },
): BrowserGuardRules {
  const hosts = [`127.0.0.1:${port}`, `localhost:${port}`];
  const origins = options.ownPages ? hosts.map((h) => `http://${h}`) : [];
  if (options.publicUrl !== undefined) {
    const publicUrl = new URL(options.publicUrl);
    hosts.push(publicUrl.host.toLowerCase());
    if (options.ownPages) origins.push(publicUrl.origin);
  }
  return { hosts, origins };
}

/** The refusal for a request the rules do not accept, or undefined. */
export function refusal(headers: IncomingMessage['headers'], rules: BrowserGuardRules): Refusal | undefined {
  const host = headers.host?.toLowerCase();
  if (host === undefined || !rules.hosts.includes(host)) {
    return {
      status: 421,
      error: 'misdirected_request',
      description: `this server answers only as http://${rules.hosts[0]}`,
    };
  }
  const origin = headers.origin;
  if (origin !== undefined && !rules.origins.includes(origin)) {
    return {
      status: 403,
      error: 'forbidden_origin',
      description: 'requests from another origin are refused',
    };
  }
  return undefined;
}

export function sendRefusal(res: ServerResponse, refused: Refusal): void {
  res.writeHead(refused.status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify({ error: refused.error, error_description: refused.description }));
}

/**
 * Wraps a request listener: requests the rules refuse are answered here (their body left unread)
 * and never reach it. `rules` is read per request, since a port is known only once listening.
 */
export function guarded(listener: RequestListener, rules: () => BrowserGuardRules): RequestListener {
  return (req, res) => {
    const refused = refusal(req.headers, rules());
    if (refused === undefined) {
      listener(req, res);
      return;
    }
    req.resume();
    sendRefusal(res, refused);
  };
}
