import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type McpServer, startMcpServer } from '../support/mcp-server.js';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The connect flow in a real browser: Playwright (playwright-core) driving Debian's Chromium through
 * oidc-provider's login and consent (auto-approved by the test server) to the keeper's callback,
 * ending on the "connected" page, which is saved as a screenshot under test/artifacts/.
 */

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = new URL('../artifacts/', import.meta.url);

/** The few Playwright calls this test makes. */
interface Page {
  goto(url: string): Promise<unknown>;
  waitForURL(url: (url: URL) => boolean, options?: { timeout?: number }): Promise<void>;
  textContent(selector: string): Promise<string | null>;
  screenshot(options: { path: string; fullPage?: boolean }): Promise<unknown>;
  url(): string;
}
interface BrowserContext {
  newPage(): Promise<Page>;
  close(): Promise<void>;
}
interface Playwright {
  chromium: {
    launchPersistentContext(
      userDataDir: string,
      options: { executablePath: string; headless: boolean; args: string[] },
    ): Promise<BrowserContext>;
  };
}

/** playwright-core is CommonJS; require() also honours NODE_PATH for a copy outside the repository. */
function loadPlaywright(): Playwright {
  return createRequire(import.meta.url)('playwright-core') as Playwright;
}

let mcp: McpServer;
let oauth: OAuthServer;
let keeper: TestStack;
let context: BrowserContext | undefined;
let userDataDir: string;

beforeAll(async () => {
  await stat(CHROMIUM).catch(() => {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)`);
  });
  mcp = await startMcpServer();
  oauth = await startOAuthServer({ registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: oauth.issuer, introspect: (token) => oauth.introspect(token) });
  keeper = await startTestStack();
  userDataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-chromium-'));
}, 60_000);

afterAll(async () => {
  await context?.close();
  await keeper?.stop();
  await oauth?.stop();
  await mcp?.stop();
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
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

    const { chromium } = loadPlaywright();
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    const page = await context.newPage();
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
