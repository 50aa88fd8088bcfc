import { mkdir, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenKeeperClient } from '../../client/index.js';
import { listenOnLoopback } from '../../functions/local/embedded.js';
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
let app: Server | undefined;
let appUrl = '';
/** The user the little application below has signed in (it would come from its own login). */
const APP_USER = 'app-signed-in-user';

beforeAll(async () => {
  await stat(CHROMIUM).catch(() => {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (npm test's first step does it)`);
  });
  mcp = await startMcpServer();
  oauth = await startOAuthServer({ registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: oauth.issuer, introspect: (token) => oauth.introspect(token) });
  // A little application on loopback: where the browser comes back, it completes the connection for
  // its signed-in user, as the README's third call does.
  const tk = () =>
    new TokenKeeperClient({ baseUrl: keeper.url, auth: { kind: 'bearer', apiKey: keeper.apiKey } });
  app = createServer((req, res) => {
    const q = new URL(req.url ?? '/', appUrl).searchParams;
    const done = (status: number, text: string) => {
      res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
      res.end(`<!doctype html><title>app</title><h1>${text}</h1>`);
    };
    if (q.get('status') !== 'pending') return done(400, `Not connected: ${q.get('error') ?? 'unknown'}`);
    tk()
      .completeConnection(APP_USER, q.get('providerId') ?? '', q.get('connection') ?? '')
      .then(() => done(200, 'Connected in the app'))
      .catch((err: Error) => done(400, `Not connected: ${err.name}`));
  });
  appUrl = `http://127.0.0.1:${await listenOnLoopback(app)}`;
  keeper = await startTestStack({ env: { TOKENKEEPER_ALLOWED_REDIRECTS: `${appUrl}/connected` } });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await new Promise((resolve) => app?.close(resolve));
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

  it('with a redirectUri: consent, back to the app with status=pending, the app completes it for its signed-in user', async () => {
    const put = await keeper.call('PUT', '/v1/providers/browser-app', { mcpServerUrl: mcp.url });
    expect(put.status, put.text).toBe(201);
    const started = await keeper.call('POST', `/v1/sessions/${APP_USER}/browser-app/authorize`, {
      redirectUri: `${appUrl}/connected`,
    });
    expect(started.status, started.text).toBe(201);
    const authorizationUrl = new URL((started.body as { authorizationUrl: string }).authorizationUrl);
    authorizationUrl.searchParams.set('login_hint', APP_USER);

    browser ??= await launchChromium();
    const page = await browser.newPage();
    await page.goto(authorizationUrl.href);
    await page.waitForURL((url) => url.href.startsWith(`${appUrl}/connected`), { timeout: 20_000 });
    expect(await page.textContent('h1')).toBe('Connected in the app');
    const landed = new URL(page.url());
    expect(landed.searchParams.get('status')).toBe('pending');
    expect(landed.searchParams.has('code')).toBe(false);
    expect(landed.searchParams.has('state')).toBe(false);

    const token = await keeper.call('GET', `/v1/sessions/${APP_USER}/browser-app/token`);
    expect(token.status).toBe(200);
    expect((await mcp.call((token.body as { access_token: string }).access_token)).status).toBe(200);
  }, 60_000);
});
