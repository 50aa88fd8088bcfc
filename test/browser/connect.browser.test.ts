import { mkdir, stat } from 'node:fs/promises';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, launchChromium } from '../support/browser.js';
import { type McpServer, startMcpServer } from '../support/mcp-server.js';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The connect flow in a real browser: Playwright (playwright-core) driving Debian's Chromium through
 * oidc-provider's login and consent (auto-approved by the test server) to the keeper's callback,
 * ending on the "connected" page, which is saved as a screenshot under test/artifacts/.
 */

const ARTIFACTS = new URL('../artifacts/', import.meta.url);

let mcp: McpServer;
let oauth: OAuthServer;
let keeper: TestStack;
let browser: Browser | undefined;

beforeAll(async () => {
  await stat(CHROMIUM).catch(() => {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (npm test's first step does it)`);
  });
  mcp = await startMcpServer();
  oauth = await startOAuthServer({ registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: oauth.issuer, introspect: (token) => oauth.introspect(token) });
  keeper = await startTestStack();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await keeper?.stop();
  await oauth?.stop();
  await mcp?.stop();
});

describe('connecting in a real browser (Chromium)', () => {
  it('register by MCP server URL, authorize, consent, land on the connected page; the token works at the MCP server', async () => {
    const put = await keeper.call('PUT', '/v1/providers/browser-mcp', { mcpServerUrl: mcp.url });
    expect(put.status, put.text).toBe(201);
    const userId = 'browser-user';
    const started = await keeper.call('POST', `/v1/sessions/${userId}/browser-mcp/authorize`, {});
    expect(started.status, started.text).toBe(201);
    const authorizationUrl = new URL((started.body as { authorizationUrl: string }).authorizationUrl);
    authorizationUrl.searchParams.set('login_hint', userId);

    browser = await launchChromium();
    const page = await browser.newPage();
    await page.goto(authorizationUrl.href);
    await page.waitForURL((url) => url.href.startsWith(`${keeper.url}/oauth/callback`), { timeout: 20_000 });
    expect(await page.textContent('h1')).toBe('Account connected');
    expect(await page.textContent('body')).toContain('browser-mcp');
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL('connect-connected.png', ARTIFACTS).pathname, fullPage: true });

    const token = await keeper.call('GET', `/v1/sessions/${userId}/browser-mcp/token`);
    expect(token.status).toBe(200);
    expect((await mcp.call((token.body as { access_token: string }).access_token)).status).toBe(200);
  }, 60_000);
});
