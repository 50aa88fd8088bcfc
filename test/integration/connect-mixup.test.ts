import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { listenOnLoopback } from '../../functions/local/embedded.js';
import { followRedirects, visit } from '../support/connect-flow.js';
import { type McpServer, startMcpServer } from '../support/mcp-server.js';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The OAuth mix-up attack (RFC 9700 §4.4) with an honest authorization server H (oidc-provider,
 * the keeper registered by DCR behind an MCP server) and a malicious one, M, registered side by side.
 * The user starts a connection at M; M forwards the authorization request to H, passing the keeper's
 * state and PKCE challenge along; H authenticates the user and sends its code back to the keeper.
 * If the keeper redeemed that code at M's token endpoint, M would hold H's code and the keeper's
 * PKCE verifier, and could redeem them at H for the user's account there. The keeper must refuse
 * every delivery of H's code under M's state, and no token endpoint may see a request.
 */

interface Rogue {
  readonly issuer: string;
  /** Token requests M received, as sent (a code and a PKCE verifier would be in them). */
  readonly tokenRequests: Record<string, string>[];
  /** Where M's /authorize sends the browser, given the keeper's authorization request. */
  forward(to: (request: URLSearchParams) => URL): void;
  stop(): Promise<void>;
}

/** M: metadata without RFC 9207 (so a missing `iss` passes for its flows), a forwarding /authorize, a counting /token. */
async function startRogue(): Promise<Rogue> {
  let issuer = '';
  const tokenRequests: Record<string, string>[] = [];
  let forwardTo: (request: URLSearchParams) => URL = () => {
    throw new Error('rogue: no forward set');
  };
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', issuer);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (url.pathname === '/.well-known/oauth-authorization-server') {
      return json(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        response_types_supported: ['code'],
        code_challenge_methods_supported: ['S256'],
      });
    }
    if (url.pathname === '/authorize') {
      res.writeHead(302, { location: forwardTo(url.searchParams).href });
      return res.end();
    }
    if (url.pathname === '/token' && req.method === 'POST') {
      tokenRequests.push(Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
      return json(res, 200, {
        access_token: randomBytes(16).toString('base64url'),
        refresh_token: randomBytes(16).toString('base64url'),
        token_type: 'Bearer',
        expires_in: 3600,
      });
    }
    return json(res, 404, { error: 'not_found' });
  };
  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  issuer = `http://127.0.0.1:${await listenOnLoopback(server)}`;
  return {
    issuer,
    tokenRequests,
    forward(to) {
      forwardTo = to;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let mcp: McpServer;
let honest: OAuthServer;
let rogue: Rogue;
let keeper: TestStack;
/** The keeper's client at H, as its own authorization requests name it. */
let atHonest: { clientId: string; redirectUri: string; resource: string; scope: string };
let seq = 0;

beforeAll(async () => {
  mcp = await startMcpServer();
  honest = await startOAuthServer({ registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: honest.issuer, introspect: (token) => honest.introspect(token) });
  rogue = await startRogue();
  keeper = await startTestStack();
  const h = await keeper.call('PUT', '/v1/providers/honest', { mcpServerUrl: mcp.url });
  if (h.status !== 201) throw new Error(`PUT honest answered ${h.status}: ${h.text}`);
  const m = await keeper.call('PUT', '/v1/providers/rogue', { issuer: rogue.issuer, clientId: 'keeper' });
  if (m.status !== 201) throw new Error(`PUT rogue answered ${m.status}: ${m.text}`);
  const q = new URL(await authorizationUrl('learner', 'honest')).searchParams;
  atHonest = {
    clientId: q.get('client_id') as string,
    redirectUri: q.get('redirect_uri') as string,
    resource: q.get('resource') as string,
    scope: q.get('scope') as string,
  };
}, 60_000);

afterAll(async () => {
  await keeper?.stop();
  await honest?.stop();
  await mcp?.stop();
  await rogue?.stop();
});

beforeEach(() => {
  // By default M forwards to H the way the attack needs: H's client and H's registered redirect URI.
  rogue.forward((request) => honestRequest(request, atHonest.redirectUri));
});

async function authorizationUrl(userId: string, providerId: string): Promise<string> {
  const res = await keeper.call('POST', `/v1/sessions/${userId}/${providerId}/authorize`, {});
  if (res.status !== 201) throw new Error(`authorize answered ${res.status}: ${res.text}`);
  return (res.body as { authorizationUrl: string }).authorizationUrl;
}

/** M's forward: an authorization request at H carrying the keeper's state and PKCE challenge. */
function honestRequest(request: URLSearchParams, redirectUri: string): URL {
  const url = new URL(`${honest.issuer}/auth`);
  for (const name of ['state', 'code_challenge', 'code_challenge_method', 'login_hint']) {
    const value = request.get(name);
    if (value !== null) url.searchParams.set(name, value);
  }
  url.searchParams.set('response_type', 'code');
  url.searchParams.set('client_id', atHonest.clientId);
  url.searchParams.set('redirect_uri', redirectUri);
  url.searchParams.set('resource', atHonest.resource);
  url.searchParams.set('scope', atHonest.scope);
  return url;
}

interface RogueFlow {
  userId: string;
  /** M's state, as the keeper sent it to M. */
  state: string;
  /** The callback URL the keeper named in its request to M. */
  rogueCallback: string;
  /** Where H sent the browser: H's code under M's state. */
  delivered: URL;
}

/** The user starts connecting M; M forwards to H; H's answer comes back to the keeper. */
async function startAtRogue(): Promise<RogueFlow> {
  const userId = `victim-${++seq}`;
  const start = new URL(await authorizationUrl(userId, 'rogue'));
  start.searchParams.set('login_hint', userId);
  const delivered = await followRedirects(start, (next) => next.href.startsWith(keeper.url));
  expect(delivered.searchParams.get('code')).toBeTruthy();
  return {
    userId,
    state: start.searchParams.get('state') as string,
    rogueCallback: start.searchParams.get('redirect_uri') as string,
    delivered,
  };
}

const honestCodeExchanges = () =>
  honest.proxy.requests.filter((r) => r.grantType === 'authorization_code').length;

/** Delivers a callback and checks the refusal: 400, no token request anywhere, nothing stored, state spent. */
async function expectRefused(flow: RogueFlow, callback: URL): Promise<string> {
  const honestBefore = honestCodeExchanges();
  const answer = await visit(callback);
  expect(answer.status).toBe(400);
  expect(rogue.tokenRequests).toEqual([]);
  expect(honestCodeExchanges()).toBe(honestBefore);
  for (const providerId of ['rogue', 'honest']) {
    expect((await keeper.call('GET', `/v1/sessions/${flow.userId}/${providerId}`)).status).toBe(404);
  }
  // The state is spent: even a delivery that M's own flow would accept is refused now.
  const retry = new URL(flow.rogueCallback);
  retry.search = new URLSearchParams({ code: 'rogue-own-code', state: flow.state }).toString();
  const replay = await visit(retry);
  expect(replay.status).toBe(400);
  expect(replay.text).toContain('invalid_state');
  expect(rogue.tokenRequests).toEqual([]);
  return answer.text;
}

describe('the mix-up attack: H’s code under M’s state reaches no token endpoint', () => {
  it('H’s code arriving without iss (as many servers send it) under M’s state: 400, nothing redeemed', async () => {
    const flow = await startAtRogue();
    const callback = new URL(flow.delivered);
    callback.searchParams.delete('iss');
    const page = await expectRefused(flow, callback);
    expect(page).toContain('provider_mismatch');
  }, 30_000);

  it('H’s code as H sent it (its callback path, its iss) under M’s state: 400, nothing redeemed', async () => {
    const flow = await startAtRogue();
    expect(flow.delivered.searchParams.get('iss')).toBe(honest.issuer);
    await expectRefused(flow, flow.delivered);
  }, 30_000);

  it('H’s code moved to M’s callback path with M’s state but H’s iss: 400 (iss is checked though M never advertised it)', async () => {
    const flow = await startAtRogue();
    const callback = new URL(flow.rogueCallback);
    callback.search = flow.delivered.search;
    expect(callback.searchParams.get('iss')).toBe(honest.issuer);
    const page = await expectRefused(flow, callback);
    expect(page).toContain('invalid_issuer');
  }, 30_000);

  it('H refuses to send its code to M’s callback path: each provider has its own redirect URI', async () => {
    const userId = `victim-${++seq}`;
    const start = new URL(await authorizationUrl(userId, 'rogue'));
    const rogueCallback = start.searchParams.get('redirect_uri') as string;
    expect(rogueCallback).not.toBe(atHonest.redirectUri);
    rogue.forward((request) => honestRequest(request, rogueCallback));
    start.searchParams.set('login_hint', userId);
    await expect(followRedirects(start, (next) => next.href.startsWith(keeper.url))).rejects.toThrow(
      /unexpected 400/u,
    );
    expect(rogue.tokenRequests).toEqual([]);
  }, 30_000);
});

describe('the controls: each server’s own flow still connects', () => {
  it('H’s own flow is redeemed at H; M’s own code at M’s path is redeemed at M', async () => {
    const userId = `user-${++seq}`;
    const start = new URL(await authorizationUrl(userId, 'honest'));
    start.searchParams.set('login_hint', userId);
    const callback = await followRedirects(start, (next) => next.href.startsWith(keeper.url));
    const before = honestCodeExchanges();
    expect((await visit(callback)).status).toBe(200);
    expect(honestCodeExchanges()).toBe(before + 1);
    expect((await keeper.call('GET', `/v1/sessions/${userId}/honest/token`)).status).toBe(200);

    rogue.forward((request) => {
      const back = new URL(request.get('redirect_uri') as string);
      back.searchParams.set('code', 'rogue-own-code');
      back.searchParams.set('state', request.get('state') as string);
      return back;
    });
    const rogueStart = new URL(await authorizationUrl(userId, 'rogue'));
    const own = await followRedirects(rogueStart, (next) => next.href.startsWith(keeper.url));
    expect((await visit(own)).status).toBe(200);
    expect(rogue.tokenRequests.map((r) => [r.grant_type, r.code])).toEqual([
      ['authorization_code', 'rogue-own-code'],
    ]);
    rogue.tokenRequests.length = 0;
  }, 30_000);
});
