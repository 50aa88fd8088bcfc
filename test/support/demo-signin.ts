import { loadConfig } from '../../functions/core/config.js';
import { silentLogger } from '../../functions/core/ports.js';
import { DEMO_SETTINGS, type Demo, startDemo } from '../../functions/local/demo/demo.js';

/**
 * A browser stand-in for the demo provider's own sign-in and consent pages: follows the authorization
 * URL with cookies kept, posts the login form and the consent form as a person would (from the
 * pages' own origin), and stops at the keeper's callback, which it visits.
 */

export interface SignedIn {
  /** The pages it went through, as served. */
  pages: { url: URL; res: Response; html: string }[];
  /** The keeper's callback answer. */
  callback: Response;
}

export async function signInOnDemo(
  authorizationUrl: string,
  keeperUrl: string,
  login: string,
): Promise<SignedIn> {
  const jar = new Map<string, string>();
  const go = async (url: URL, init: RequestInit = {}) => {
    const res = await fetch(url, {
      ...init,
      redirect: 'manual',
      headers: {
        ...(init.headers as Record<string, string>),
        cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '),
      },
    });
    for (const line of res.headers.getSetCookie()) {
      const [pair = ''] = line.split(';');
      const eq = pair.indexOf('=');
      jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
    }
    return res;
  };
  /** Follows redirects to the next page (200), or up to the keeper's callback, whichever comes first. */
  const follow = async (start: URL, init?: RequestInit): Promise<{ url: URL; res: Response }> => {
    let url = start;
    let res = await go(url, init);
    for (let hop = 0; hop < 10 && res.status >= 300 && res.status < 400; hop++) {
      url = new URL(res.headers.get('location') as string, url);
      if (url.origin === new URL(keeperUrl).origin) return { url, res };
      res = await go(url);
    }
    return { url, res };
  };
  const pages: SignedIn['pages'] = [];
  let at = await follow(new URL(authorizationUrl));
  for (let step = 0; step < 3 && at.url.origin !== new URL(keeperUrl).origin; step++) {
    const html = await at.res.text();
    pages.push({ ...at, html });
    if (at.res.status !== 200) throw new Error(`sign-in: ${at.res.status} at ${at.url.pathname}: ${html}`);
    const action = /action="([^"]+)"/u.exec(html)?.[1];
    if (!action) throw new Error(`sign-in: no form at ${at.url.pathname}`);
    const form: Record<string, string> = html.includes('name="login"')
      ? { login, password: 'any password' }
      : {};
    at = await follow(new URL(action, at.url), {
      method: 'POST',
      headers: { origin: at.url.origin, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(form).toString(),
    });
  }
  return { pages, callback: await fetch(at.url, { redirect: 'manual' }) };
}

/** The demo without its sweep timer, quiet, on a data directory of the test's. */
export async function startQuietDemo(dataDir: string): Promise<Demo> {
  return startDemo({
    config: loadConfig({ PORT: '0', TOKENKEEPER_DATA_DIR: dataDir, ...DEMO_SETTINGS }),
    logger: silentLogger,
    timer: false,
  });
}
