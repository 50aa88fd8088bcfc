import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../functions/core/config.js';
import { silentLogger } from '../../functions/core/ports.js';
import { DEMO_PROVIDER_ID, DEMO_SETTINGS, type Demo, startDemo } from '../../functions/local/demo/demo.js';

/** The demo's own routes and servers, without a browser (console.e2e.test.ts drives the rest). */

let demo: Demo;
let dataDir: string;
beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-demo-routes-'));
  demo = await startDemo({
    config: loadConfig({ PORT: '0', TOKENKEEPER_DATA_DIR: dataDir, ...DEMO_SETTINGS }),
    logger: silentLogger,
    timer: false,
  });
});
afterAll(async () => {
  await demo?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

const call = (method: string, path: string, key: string | null = demo.stack.apiKey, body?: unknown) =>
  fetch(`${demo.stack.url}${path}`, {
    method,
    headers: key ? { authorization: `Bearer ${key}` } : {},
    body: body === undefined ? undefined : JSON.stringify(body),
  });

describe('npm run demo', () => {
  it('runs with the demo timings and registers the MCP server as the provider "demo"', async () => {
    const { config } = demo.stack.runtime;
    expect([config.refreshIntervalSeconds, config.refreshWindowSeconds]).toEqual([10, 45]);
    const provider = await (await call('GET', `/v1/providers/${DEMO_PROVIDER_ID}`)).json();
    expect(provider).toMatchObject({ providerId: DEMO_PROVIDER_ID });
    expect(demo.consoleUrl).toBe(`${demo.stack.url}/console#key=${demo.stack.apiKey}`);
  });

  it('the outage switch: key required, bounded, and the token endpoint answers 503 while on', async () => {
    expect((await call('GET', '/demo/outage', null)).status).toBe(401);
    expect((await call('POST', '/demo/outage?seconds=30', 'wrong')).status).toBe(401);
    expect((await call('POST', '/demo/outage?seconds=601')).status).toBe(400);
    expect((await call('POST', '/demo/outage?seconds=soon')).status).toBe(400);
    expect(await (await call('GET', '/demo/outage')).json()).toEqual({ outageUntil: null });
    const on = (await (await call('POST', '/demo/outage?seconds=30')).json()) as { outageUntil: number };
    expect(on.outageUntil).toBeGreaterThan(Date.now() / 1000 + 25);
    const token = await fetch(demo.oauth.tokenEndpoint, { method: 'POST', body: new URLSearchParams() });
    expect(token.status).toBe(503);
    expect(token.headers.get('retry-after')).toBe('5');
    expect(await (await call('POST', '/demo/outage?seconds=0')).json()).toEqual({ outageUntil: null });
    const after = await fetch(demo.oauth.tokenEndpoint, { method: 'POST', body: new URLSearchParams() });
    expect(after.status).toBe(400);
  });

  it('the MCP-like server challenges without a token and serves its resource metadata', async () => {
    const res = await fetch(demo.mcp.url, { method: 'POST' });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe(`Bearer resource_metadata="${demo.mcp.metadataUrl}"`);
    const meta = await (await fetch(demo.mcp.metadataUrl)).json();
    expect(meta).toMatchObject({ resource: demo.mcp.url, authorization_servers: [demo.oauth.issuer] });
    const bad = await fetch(demo.mcp.url, { method: 'POST', headers: { authorization: 'Bearer made-up' } });
    expect(bad.status).toBe(401);
  });

  it('registers the demo provider by MCP server URL (dynamic registration); other /demo routes are 404', async () => {
    const provider = await call('GET', `/v1/providers/${DEMO_PROVIDER_ID}`);
    expect(await provider.json()).toMatchObject({ mcpServerUrl: demo.mcp.url, registration: 'dynamic' });
    expect((await call('GET', '/demo/nothing')).status).toBe(404);
    expect((await call('POST', '/demo/connect', demo.stack.apiKey, {})).status).toBe(404);
  });

  it('its sign-in and consent pages are its own: nothing from another host, a strict CSP, and they connect the user', async () => {
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
    /** Follows redirects to the next page (200) or to the keeper, whichever comes first. */
    const follow = async (start: URL, init?: RequestInit): Promise<{ url: URL; res: Response }> => {
      let url = start;
      let res = await go(url, init);
      for (let hop = 0; hop < 10 && res.status >= 300 && res.status < 400; hop++) {
        url = new URL(res.headers.get('location') as string, url);
        if (url.origin === demo.stack.url) return { url, res };
        res = await go(url);
      }
      return { url, res };
    };
    const ownPage = async (res: Response): Promise<string> => {
      expect(res.status).toBe(200);
      expect(res.headers.get('content-security-policy')).toMatch(
        /^default-src 'none'; style-src 'unsafe-inline'/u,
      );
      const html = await res.text();
      expect(html).not.toMatch(/@import|<link|<script|<img/iu);
      for (const [ref] of html.matchAll(/(?:https?:)?\/\/[^\s"'<>)]+/gu))
        expect(ref).toMatch(/^http:\/\/127\.0\.0\.1:/u);
      return html;
    };
    const started = (await (
      await call('POST', `/v1/sessions/signin/${DEMO_PROVIDER_ID}/authorize`, undefined, {})
    ).json()) as {
      authorizationUrl: string;
    };
    const login = await follow(new URL(started.authorizationUrl));
    const loginPage = await ownPage(login.res);
    expect(loginPage).toContain('name="login"');
    const post = (url: URL, action: string, form: Record<string, string>) =>
      follow(new URL(action, url), {
        method: 'POST',
        headers: { origin: demo.oauth.issuer, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(form).toString(),
      });
    const loginAction = /action="([^"]+)"/u.exec(loginPage)?.[1] as string;
    const consent = await post(login.url, loginAction, { login: 'signin@example.com', password: 'any' });
    const consentPage = await ownPage(consent.res);
    expect(consentPage).toContain('>Continue</button>');
    const back = await post(consent.url, /action="([^"]+)"/u.exec(consentPage)?.[1] as string, {});
    expect(back.url.origin).toBe(demo.stack.url);
    expect((await fetch(back.url, { redirect: 'manual' })).status).toBe(200);
    expect((await call('GET', `/v1/sessions/signin/${DEMO_PROVIDER_ID}`)).status).toBe(200);
  });
});
