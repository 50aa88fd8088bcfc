import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_PROVIDER_ID, type Demo } from '../../functions/local/demo/demo.js';
import { signInOnDemo, startQuietDemo } from '../support/demo-signin.js';

/** The demo's own routes and servers, without a browser (console.e2e.test.ts drives the rest). */

let demo: Demo;
let dataDir: string;
beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-demo-routes-'));
  demo = await startQuietDemo(dataDir);
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
    const started = (await (
      await call('POST', `/v1/sessions/signin/${DEMO_PROVIDER_ID}/authorize`, undefined, {})
    ).json()) as { authorizationUrl: string };
    const { pages, callback } = await signInOnDemo(
      started.authorizationUrl,
      demo.stack.url,
      'signin@example.com',
    );
    expect(pages.map((p) => p.html.includes('name="login"'))).toEqual([true, false]);
    expect(pages[1]?.html).toContain('>Continue</button>');
    for (const { res, html } of pages) {
      expect(res.headers.get('content-security-policy')).toMatch(
        /^default-src 'none'; style-src 'unsafe-inline'/u,
      );
      expect(html).not.toMatch(/@import|<link|<script|<img/iu);
      for (const [ref] of html.matchAll(/(?:https?:)?\/\/[^\s"'<>)]+/gu))
        expect(ref).toMatch(/^http:\/\/127\.0\.0\.1:/u);
    }
    expect(callback.status).toBe(200);
    expect((await call('GET', `/v1/sessions/signin/${DEMO_PROVIDER_ID}`)).status).toBe(200);
  });
});
