import type { AssetResponse } from '../../../client/console-assets.js';
import type { Config } from '../../core/config.js';
import type { Logger } from '../../core/ports.js';
import { type LocalRequest, type LocalStack, startLocalStack } from '../stack.js';
import { type DemoMcpServer, startDemoMcpServer } from './mcp-server.js';
import { DEMO_SCOPES, type DemoOAuthServer, startDemoOAuthServer } from './oauth-server.js';

/**
 * `npm run demo`: the local stack plus, in the same process, a demo authorization server (60-second
 * tokens, rotation with reuse detection, real login and consent pages) and an MCP-like resource
 * server it protects. The MCP server is registered as the provider `demo` by `mcpServerUrl`
 * (discovery and dynamic registration); users connect from the console, through the keeper's own
 * authorize route and the provider's callback, back to the console, which completes the connection.
 * `POST /demo/outage?seconds=30` makes the token endpoint fail.
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

export interface Demo {
  stack: LocalStack;
  oauth: DemoOAuthServer;
  mcp: DemoMcpServer;
  /** The console, with the key in the fragment (never sent to a server). */
  consoleUrl: string;
  stop(): Promise<void>;
}

const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' };

const jsonAnswer = (status: number, body: unknown): AssetResponse => ({
  status,
  headers: JSON_HEADERS,
  body: JSON.stringify(body),
});

export async function startDemo(options: { config: Config; logger: Logger; timer?: boolean }): Promise<Demo> {
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

  async function extraRoutes(req: LocalRequest): Promise<AssetResponse | undefined> {
    if (!req.path.startsWith('/demo/') || !parts) return undefined;
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
      redirectUris: [`${stack.url}/oauth/callback/${DEMO_PROVIDER_ID}`],
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
    await registerProvider(callApi, mcp.url);
    const running = { stack, oauth, mcp };
    return {
      ...running,
      consoleUrl: stack.consoleUrl ?? `${stack.url}/console`,
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
 * Registers the MCP server as the provider `demo` by its URL alone: the keeper discovers its
 * protected-resource metadata and authorization server, and registers itself dynamically (RFC 7591).
 */
async function registerProvider(
  callApi: (
    method: string,
    path: string,
    body?: unknown,
  ) => Promise<{ status: number; body: Record<string, unknown> }>,
  mcpServerUrl: string,
): Promise<void> {
  const res = await callApi('PUT', `/v1/providers/${DEMO_PROVIDER_ID}`, { mcpServerUrl, scope: DEMO_SCOPES });
  if (res.status !== 200 && res.status !== 201) {
    throw new Error(`the demo provider could not be registered: ${JSON.stringify(res.body)}`);
  }
}

/** The CLI's target options for the demo: its loopback URL (bearer auth) and the data directory holding its key. */
export function demoCliArgs(stackUrl: string, dataDir: string): string[] {
  return ['--url', stackUrl, '--data-dir', dataDir];
}
