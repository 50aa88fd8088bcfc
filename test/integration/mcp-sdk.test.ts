import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenKeeperClient } from '../../client/index.js';
import { McpReauthorizationRequiredError, TokenUnavailableError, withTokenKeeper } from '../../client/mcp.js';
import { followToCallback } from '../support/connect-flow.js';
import { type Connected, connect, forwardedGrants, registerProviders } from '../support/keeper-flows.js';
import { listenMcpSdkServer, type McpSdkServer, startMcpSdkServer } from '../support/mcp-sdk-server.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The official MCP TypeScript SDK on both sides: its `Client` over `StreamableHTTPClientTransport`
 * with tokenkeeper's fetch middleware, against an `McpServer` protected by the SDK's
 * `requireBearerAuth` (introspection at oidc-provider, audience = the server's resource). The keeper
 * is the real local stack; the OAuth server rotates refresh tokens with reuse detection on.
 */

let oauth: OAuthServer;
let keeper: TestStack;
let mcp: McpSdkServer;
let tk: TokenKeeperClient;
const APP = 'http://127.0.0.1:9/app/';

beforeAll(async () => {
  [oauth, keeper] = await Promise.all([startOAuthServer({ accessTokenTtl: 600 }), startTestStack()]);
  await registerProviders(keeper, oauth);
  mcp = await startMcpSdkServer({ oauth, resource: MCP_RESOURCE });
  tk = new TokenKeeperClient({ baseUrl: keeper.url, auth: { kind: 'bearer', apiKey: keeper.apiKey } });
});

afterAll(async () => {
  await mcp?.stop();
  await Promise.all([keeper?.stop(), oauth?.stop()]);
});

const grants = () => forwardedGrants(oauth).length;
/** Refresh-token requests that reached the token endpoint, answered by the provider or by an injected fault. */
const grantRequests = () => oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token').length;

async function mcpClient(s: Connected, extra: { authorizationUrl?: () => Promise<string | undefined> } = {}) {
  const client = new Client({ name: 'tokenkeeper-test', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcp.url), {
    fetch: withTokenKeeper({
      client: tk,
      userId: s.userId,
      providerId: s.providerId,
      maxWaitMs: 5_000,
      ...extra,
    })(fetch),
  });
  await client.connect(transport);
  return client;
}

async function add(client: Client, a: number, b: number): Promise<string> {
  const result = await client.callTool({ name: 'add', arguments: { a, b } });
  const [first] = result.content as { type: string; text: string }[];
  return first?.text ?? '';
}

describe('withTokenKeeper with the MCP SDK', () => {
  it('lists and calls tools with the keeper’s token; the token never needs the caller', async () => {
    const s = await connect(keeper, oauth, 'mcp');
    const from = mcp.accepted.length;
    const client = await mcpClient(s);
    expect((await client.listTools()).tools.map((t) => t.name)).toEqual(['add']);
    expect(await add(client, 2, 3)).toBe('5');
    // Every request carried the keeper's token (the SDK server accepts only audience-bound, active ones).
    const used = mcp.accepted.slice(from);
    expect(used.length).toBeGreaterThanOrEqual(3);
    for (const token of new Set(used)) expect((await oauth.introspect(token)).aud).toBe(MCP_RESOURCE);
    await client.close();
  });

  it('20 concurrent tool calls from one client use one token and make no extra grant', async () => {
    const s = await connect(keeper, oauth, 'mcp');
    const client = await mcpClient(s);
    await add(client, 0, 0);
    const before = grants();
    const from = mcp.accepted.length;
    const sums = await Promise.all(Array.from({ length: 20 }, (_, i) => add(client, i, 1)));
    expect(sums).toEqual(Array.from({ length: 20 }, (_, i) => String(i + 1)));
    expect(new Set(mcp.accepted.slice(from))).toEqual(new Set([s.tokens.access_token]));
    expect(grants()).toBe(before);
    await client.close();
  });

  it('a 401 from the MCP server forces one refresh (rejected fingerprint) and the retried call succeeds', async () => {
    const s = await connect(keeper, oauth, 'mcp');
    const client = await mcpClient(s);
    await add(client, 1, 1);
    const before = grants();
    mcp.refuseNext();
    expect(await add(client, 20, 22)).toBe('42');
    expect(grants()).toBe(before + 1);
    const renewed = mcp.accepted.at(-1);
    expect(renewed).not.toBe(s.tokens.access_token);
    expect((await oauth.introspect(renewed ?? '')).active).toBe(true);
    expect(oauth.proxy.reuseCount()).toBe(0);
    await client.close();
  });

  it('after the token expires, calls go on with no caller involvement: the keeper refreshed it', async () => {
    oauth.setAccessTokenTtl(2);
    try {
      const s = await connect(keeper, oauth, 'mcp');
      const client = await mcpClient(s);
      expect(await add(client, 1, 2)).toBe('3');
      await new Promise((r) => setTimeout(r, 2_500));
      const before = grants();
      expect(await add(client, 3, 4)).toBe('7');
      expect(grants()).toBeGreaterThan(before);
      expect(mcp.accepted.at(-1)).not.toBe(s.tokens.access_token);
      expect(oauth.proxy.reuseCount()).toBe(0);
      await client.close();
    } finally {
      oauth.setAccessTokenTtl(600);
    }
  });

  it('a dead grant surfaces as ReauthorizationRequiredError with an authorization URL, and nothing loops', async () => {
    const s = await connect(keeper, oauth, 'mcp');
    const authorizationUrl = 'https://as.example.test/authorize?client_id=tk';
    const client = await mcpClient(s, { authorizationUrl: async () => authorizationUrl });
    await add(client, 1, 1);
    const before = grantRequests();
    oauth.proxy.setFault({ kind: 'oauth-error', status: 400, error: 'invalid_grant', times: 1 });
    mcp.refuseNext();
    const failure = await add(client, 1, 2).catch((err: unknown) => err);
    const reauth = findCause(failure, McpReauthorizationRequiredError);
    expect(reauth?.authorizationUrl).toBe(authorizationUrl);
    // An authorization URL of the app's own making: the middleware cannot tell how it completes.
    expect(reauth?.completeConnection).toBe(false);
    expect(reauth?.providerId).toBe('mcp');
    expect(grantRequests()).toBe(before + 1);
    // Later calls fail the same way at once, without another grant.
    expect(
      findCause(await add(client, 1, 2).catch((err: unknown) => err), McpReauthorizationRequiredError),
    ).toBeDefined();
    expect(grantRequests()).toBe(before + 1);
    await client.close();
  });

  it('a failing provider surfaces as TokenUnavailableError with retryAfterSeconds, within the caller’s bound', async () => {
    const s = await connect(keeper, oauth, 'mcp');
    const client = await mcpClient(s);
    await add(client, 1, 1);
    oauth.proxy.setFault({ kind: 'status', status: 503, headers: { 'retry-after': '120' }, times: 1 });
    mcp.refuseNext();
    const started = Date.now();
    const failure = await add(client, 1, 2).catch((err: unknown) => err);
    const unavailable = findCause(failure, TokenUnavailableError);
    expect(unavailable?.retryAfterSeconds).toBe(120);
    expect(Date.now() - started).toBeLessThan(5_000);
    await client.close();
  });
});

describe('the connect flow against the SDK’s own metadata router', () => {
  let sdkOauth: OAuthServer;
  let sdk: McpSdkServer;
  let stack: TestStack;

  beforeAll(async () => {
    // The SDK server's URL is its resource: known before the OAuth server that issues tokens for it.
    const unprotected = await listenMcpSdkServer();
    sdkOauth = await startOAuthServer({
      accessTokenTtl: 600,
      registration: true,
      resources: [unprotected.url],
    });
    sdk = await unprotected.protect({ oauth: sdkOauth });
    stack = await startTestStack({ env: { TOKENKEEPER_ALLOWED_REDIRECTS: APP } });
  });
  afterAll(async () => {
    await sdk?.stop();
    await Promise.all([stack?.stop(), sdkOauth?.stop()]);
  });

  /** The user's browser follows the URL, signs in, and comes back to the app: the app completes the connection. */
  async function connectInApp(keeper: TokenKeeperClient, userId: string, authorizationUrl: string) {
    const callback = await followToCallback(authorizationUrl, `${stack.url}/oauth/callback/sdk`, {
      loginHint: userId,
    });
    const landed = await fetch(callback, { redirect: 'manual' });
    expect(landed.status, await landed.text()).toBe(303);
    const back = new URL(landed.headers.get('location') as string);
    expect(back.href.startsWith(APP)).toBe(true);
    expect(back.searchParams.get('status')).toBe('pending');
    return keeper.completeConnection(userId, 'sdk', back.searchParams.get('connection') as string);
  }

  it('registers by mcpServerUrl (401 → resource metadata → AS → DCR), connects, and the SDK client calls tools', async () => {
    const registered = await stack.call('PUT', '/v1/providers/sdk', { mcpServerUrl: sdk.url });
    expect(registered.status, registered.text).toBe(201);
    expect(registered.body).toMatchObject({
      registration: 'dynamic',
      resource: sdk.url,
      issuer: sdkOauth.issuer,
    });

    expect(registered.body).toMatchObject({ redirectUri: `${stack.url}/oauth/callback/sdk` });

    const userId = 'sdk-user';
    const keeper = new TokenKeeperClient({
      baseUrl: stack.url,
      auth: { kind: 'bearer', apiKey: stack.apiKey },
    });
    // authorize → the callback back to the app → complete
    const { authorizationUrl } = await keeper.authorize(userId, 'sdk', { redirectUri: APP });
    expect(new URL(authorizationUrl).searchParams.get('resource')).toBe(sdk.url);
    expect(new URL(authorizationUrl).searchParams.get('redirect_uri')).toBe(
      `${stack.url}/oauth/callback/sdk`,
    );
    const connected = await connectInApp(keeper, userId, authorizationUrl);
    expect(connected).toMatchObject({ userId, providerId: 'sdk', status: 'active' });

    const client = new Client({ name: 'tokenkeeper-test', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(sdk.url), {
        fetch: withTokenKeeper({ client: keeper, userId, providerId: 'sdk', redirectUri: APP })(fetch),
      }),
    );
    expect(await add(client, 40, 2)).toBe('42');
    // The token the SDK server accepted is bound to its resource.
    expect((await sdkOauth.introspect(sdk.accepted.at(-1) ?? '')).aud).toBe(sdk.url);

    // A dead grant: the error carries a fresh authorization URL from the keeper's connect flow, and
    // says the application completes the reconnect when the browser comes back.
    sdkOauth.proxy.setFault({ kind: 'oauth-error', status: 400, error: 'invalid_grant', times: 1 });
    sdk.refuseNext();
    const failure = await add(client, 1, 2).catch((err: unknown) => err);
    const reauth = findCause(failure, McpReauthorizationRequiredError);
    expect(reauth?.authorizationUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/.*[?&]code_challenge=/u);
    expect(reauth?.completeConnection).toBe(true);
    expect(reauth?.message).toMatch(/complete the connection/u);
    expect((await keeper.getSession(userId, 'sdk')).status).toBe('reauthorization_required');
    await connectInApp(keeper, userId, reauth?.authorizationUrl as string);
    expect(await add(client, 2, 2)).toBe('4');
    await client.close();
  });
});

/** The error itself or the first error in its `cause` chain of the given class. */
function findCause<T extends Error>(err: unknown, type: new (...args: never[]) => T): T | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (e instanceof type) return e;
  }
  return undefined;
}
