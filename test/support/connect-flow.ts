import { ScanCommand } from '@aws-sdk/client-dynamodb';
import type { TestStack } from './stack.js';

/**
 * A browser stand-in for the connect flow: follows the authorization URL through the authorization
 * server's redirects (interactions auto-approved by the test server, cookies kept) and stops at the
 * keeper's callback, returning its URL unvisited so a test can send it, replay it or tamper with it.
 */

export async function followToCallback(
  authorizationUrl: string,
  callbackPrefix: string,
  options: { loginHint?: string } = {},
): Promise<URL> {
  const url = new URL(authorizationUrl);
  if (options.loginHint) url.searchParams.set('login_hint', options.loginHint);
  return followRedirects(url, (next) => next.href.startsWith(callbackPrefix));
}

/**
 * Follows redirects like a browser (cookies kept, `redirect: manual`) until `arrived` says the next
 * location is the destination, which is returned unvisited. `rewrite` may retarget a hop.
 */
export async function followRedirects(
  start: URL,
  arrived: (next: URL) => boolean,
  rewrite: (next: URL) => URL = (next) => next,
): Promise<URL> {
  const jar = new Map<string, string>();
  let url = start;
  for (let hop = 0; hop < 12; hop++) {
    const res = await fetch(url, {
      redirect: 'manual',
      headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') },
    });
    for (const line of res.headers.getSetCookie()) {
      const [pair = ''] = line.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (!value || /expires=Thu, 01 Jan 1970/iu.test(line)) jar.delete(name);
      else jar.set(name, value);
    }
    const location = res.headers.get('location');
    if (res.status < 300 || res.status >= 400 || !location) {
      throw new Error(`authorization: unexpected ${res.status} from ${url.pathname}: ${await res.text()}`);
    }
    await res.body?.cancel();
    const next = rewrite(new URL(location, url));
    if (arrived(next)) return next;
    url = next;
  }
  throw new Error('authorization: too many redirects');
}

export interface CallbackAnswer {
  status: number;
  location: string | null;
  headers: Headers;
  text: string;
}

/** Sends the browser to the callback (no redirect followed). */
export async function visit(url: URL | string): Promise<CallbackAnswer> {
  const res = await fetch(url, { redirect: 'manual' });
  return {
    status: res.status,
    location: res.headers.get('location'),
    headers: res.headers,
    text: await res.text(),
  };
}

/** Items of one connect key space left in the keeper's table: `CONNECT#` states, `CONNECTION#` pending connections. */
export async function pendingItems(keeper: TestStack, prefix: 'CONNECT#' | 'CONNECTION#'): Promise<number> {
  const client = keeper.stack.dynamodbClient();
  try {
    const out = await client.send(
      new ScanCommand({
        TableName: keeper.stack.runtime.config.tableName,
        FilterExpression: 'begins_with(pk, :p)',
        ExpressionAttributeValues: { ':p': { S: prefix } },
      }),
    );
    return out.Items?.length ?? 0;
  } finally {
    client.destroy();
  }
}
