import { createHash, randomBytes } from 'node:crypto';
import type { Config } from '../../core/config.js';
import type { Logger } from '../../core/ports.js';
import type { AssetResponse } from '../console/assets.js';
import { type LocalRequest, type LocalStack, startLocalStack } from '../stack.js';
import { type DemoMcpServer, startDemoMcpServer } from './mcp-server.js';
import { DEMO_CLIENT_ID, DEMO_SCOPES, type DemoOAuthServer, startDemoOAuthServer } from './oauth-server.js';

/**
 * `npm run demo`: the local stack plus, in the same process, a demo authorization server (60-second
 * tokens, rotation with reuse detection, real login and consent pages) and an MCP-like resource
 * server it protects. The MCP server is registered as the provider `demo`: by `mcpServerUrl`
 * (discovery and dynamic registration, the connect flow) when the keeper has it, otherwise by
 * issuer with the demo's pre-registered client, and then the demo's own /demo/connect stands in
 * for the keeper's authorize route. `POST /demo/outage?seconds=30` makes the token endpoint fail.
 */

export const DEMO_PROVIDER_ID = 'demo';
export const DEMO_SETTINGS = {
  TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '10',
  TOKENKEEPER_REFRESH_WINDOW_SECONDS: '45',
  TOKENKEEPER_SWEEP_BUDGET_SECONDS: '8',
  TOKENKEEPER_HTTP_TIMEOUT_MS: '5000',
  TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
} as const;
const MAX_OUTAGE_SECONDS = 600;
const CONNECT_TTL_MS = 10 * 60_000;

export interface Demo {
  stack: LocalStack;
  oauth: DemoOAuthServer;
  mcp: DemoMcpServer;
  /** The console, with the key in the fragment (never sent to a server). */
  consoleUrl: string;
  /** How the demo provider was registered: `mcpServerUrl` (the connect flow) or `issuer`. */
  registration: 'mcpServerUrl' | 'issuer';
  stop(): Promise<void>;
}

interface PendingConnect {
  userId: string;
  providerId: string;
  verifier: string;
  expiresAt: number;
}

const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' };
const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'cache-control': 'no-store',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
};

const jsonAnswer = (status: number, body: unknown): AssetResponse => ({
  status,
  headers: JSON_HEADERS,
  body: JSON.stringify(body),
});

const escapeHtml = (s: string) => s.replace(/[&<>"']/gu, (c) => `&#${c.charCodeAt(0)};`);

function page(status: number, title: string, text: string): AssetResponse {
  return {
    status,
    headers: PAGE_HEADERS,
    body:
      `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>` +
      `<body><main><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p></main></body></html>`,
  };
}

export async function startDemo(options: { config: Config; logger: Logger; timer?: boolean }): Promise<Demo> {
  const pending = new Map<string, PendingConnect>();
  let parts: { oauth: DemoOAuthServer; mcp: DemoMcpServer; stackUrl: string; apiKey: string } | undefined;

  const callApi = async (method: string, path: string, body?: unknown) => {
    const p = parts as NonNullable<typeof parts>;
    const res = await fetch(`${p.stackUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${p.apiKey}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
  };

  /** The keeper's connect flow stands in here when it has none: the backend's side of the dance. */
  async function connect(req: LocalRequest): Promise<AssetResponse> {
    const p = parts as NonNullable<typeof parts>;
    let input: { userId?: unknown; providerId?: unknown };
    try {
      input = JSON.parse(req.body.toString('utf8') || '{}');
    } catch {
      return jsonAnswer(400, { error: 'invalid_request', error_description: 'malformed JSON body' });
    }
    const { userId, providerId } = input;
    if (typeof userId !== 'string' || userId === '' || typeof providerId !== 'string') {
      return jsonAnswer(400, {
        error: 'invalid_request',
        error_description: 'userId and providerId are required',
      });
    }
    const provider = await callApi('GET', `/v1/providers/${encodeURIComponent(providerId)}`);
    if (provider.status !== 200 || provider.body.issuer !== p.oauth.issuer) {
      return jsonAnswer(400, {
        error: 'invalid_request',
        error_description: 'providerId: the demo connects users of its own provider only',
      });
    }
    for (const [state, c] of pending) if (c.expiresAt < Date.now()) pending.delete(state);
    const state = randomBytes(16).toString('base64url');
    const verifier = randomBytes(32).toString('base64url');
    pending.set(state, { userId, providerId, verifier, expiresAt: Date.now() + CONNECT_TTL_MS });
    const url = new URL('/auth', p.oauth.issuer);
    url.search = new URLSearchParams({
      client_id: DEMO_CLIENT_ID,
      response_type: 'code',
      redirect_uri: `${p.stackUrl}/demo/callback`,
      scope: DEMO_SCOPES,
      state,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      resource: p.mcp.url,
    }).toString();
    return jsonAnswer(201, { authorizationUrl: url.href });
  }

  async function callback(req: LocalRequest): Promise<AssetResponse> {
    const p = parts as NonNullable<typeof parts>;
    const state = req.query.get('state') ?? '';
    const found = pending.get(state);
    pending.delete(state);
    if (!found || found.expiresAt < Date.now())
      return page(400, 'Not connected', 'Unknown or expired state.');
    const error = req.query.get('error');
    if (error) return page(400, 'Not connected', `The provider answered ${error}.`);
    const res = await fetch(p.oauth.tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: req.query.get('code') ?? '',
        redirect_uri: `${p.stackUrl}/demo/callback`,
        code_verifier: found.verifier,
        client_id: DEMO_CLIENT_ID,
        resource: p.mcp.url,
      }),
    });
    const tokens = (await res.json()) as Record<string, unknown>;
    if (!res.ok) return page(400, 'Not connected', `The code exchange failed (${String(tokens.error)}).`);
    const put = await callApi(
      'PUT',
      `/v1/sessions/${encodeURIComponent(found.userId)}/${encodeURIComponent(found.providerId)}`,
      tokens,
    );
    if (put.status !== 200 && put.status !== 201) {
      return page(400, 'Not connected', `The keeper refused the session (${String(put.body.error)}).`);
    }
    return page(
      200,
      'Connected',
      `${found.userId} is connected to ${found.providerId}. You can close this tab.`,
    );
  }

  async function extraRoutes(req: LocalRequest): Promise<AssetResponse | undefined> {
    if (!req.path.startsWith('/demo/') || !parts) return undefined;
    if (req.path === '/demo/callback' && req.method === 'GET') return callback(req);
    if (!req.authenticated) {
      return jsonAnswer(401, { error: 'unauthorized', error_description: 'missing or invalid credentials' });
    }
    if (req.path === '/demo/outage') {
      if (req.method === 'POST') {
        const raw = req.query.get('seconds') ?? '30';
        if (!/^\d{1,3}$/u.test(raw) || Number(raw) > MAX_OUTAGE_SECONDS) {
          return jsonAnswer(400, {
            error: 'invalid_request',
            error_description: `seconds: must be an integer from 0 to ${MAX_OUTAGE_SECONDS}`,
          });
        }
        parts.oauth.setOutage(Number(raw));
      } else if (req.method !== 'GET') {
        return jsonAnswer(405, { error: 'method_not_allowed', error_description: 'use GET or POST' });
      }
      return jsonAnswer(200, { outageUntil: parts.oauth.outageUntil() });
    }
    if (req.path === '/demo/connect' && req.method === 'POST') return connect(req);
    return jsonAnswer(404, { error: 'not_found', error_description: 'no such resource' });
  }

  const stack = await startLocalStack({
    config: options.config,
    logger: options.logger,
    timer: options.timer,
    extraRoutes,
  });
  let mcp: DemoMcpServer | undefined;
  let oauth: DemoOAuthServer | undefined;
  try {
    mcp = await startDemoMcpServer();
    oauth = await startDemoOAuthServer({
      resource: mcp.url,
      redirectUris: [`${stack.url}/demo/callback`, `${stack.url}/oauth/callback`],
    });
    const provider = oauth.provider;
    mcp.protect({
      issuer: oauth.issuer,
      verify: async (token) => {
        const found = await provider.AccessToken.find(token);
        if (!found || found.isExpired) return undefined;
        const aud = found.aud;
        return { audience: Array.isArray(aud) ? aud : aud ? [aud] : [] };
      },
    });
    parts = { oauth, mcp, stackUrl: stack.url, apiKey: stack.apiKey };
    const registration = await registerProvider(callApi, mcp.url, oauth.issuer);
    const running = { stack, oauth, mcp };
    return {
      ...running,
      consoleUrl: `${stack.url}/console#key=${encodeURIComponent(stack.apiKey)}`,
      registration,
      async stop() {
        await stack.stop();
        await Promise.all([oauth?.stop(), mcp?.stop()]);
      },
    };
  } catch (err) {
    await stack.stop();
    await Promise.all([oauth?.stop(), mcp?.stop()]);
    throw err;
  }
}

/**
 * Registers the MCP server as the provider `demo`: by its URL (discovery and dynamic registration)
 * when the keeper has the connect flow, else by issuer with the pre-registered public client.
 */
async function registerProvider(
  callApi: (
    method: string,
    path: string,
    body?: unknown,
  ) => Promise<{ status: number; body: Record<string, unknown> }>,
  mcpServerUrl: string,
  issuer: string,
): Promise<'mcpServerUrl' | 'issuer'> {
  const path = `/v1/providers/${DEMO_PROVIDER_ID}`;
  const byUrl = await callApi('PUT', path, { mcpServerUrl, scope: DEMO_SCOPES });
  if (byUrl.status === 200 || byUrl.status === 201) return 'mcpServerUrl';
  const byIssuer = await callApi('PUT', path, {
    issuer,
    clientId: DEMO_CLIENT_ID,
    clientAuthMethod: 'none',
    resource: mcpServerUrl,
    scope: DEMO_SCOPES,
  });
  if (byIssuer.status !== 200 && byIssuer.status !== 201) {
    throw new Error(`the demo provider could not be registered: ${JSON.stringify(byIssuer.body)}`);
  }
  return 'issuer';
}
