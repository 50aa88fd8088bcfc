import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll } from 'vitest';
import type { SessionKey } from '../../functions/core/model.js';
import type { Clock } from '../../functions/core/ports.js';
import type { SessionRecord } from '../../functions/core/store/store.js';
import {
  MCP_RESOURCE,
  MCP_SCOPES,
  type OAuthServer,
  type OAuthServerOptions,
  startOAuthServer,
  type TokenSet,
} from './oauth-server.js';
import { type CallResult, type LogLine, startTestStack, type TestStack } from './stack.js';

/**
 * Shared helpers for the keeper, fault, storm, crash and model tests: clocks the test drives, provider
 * registration, real logins handed to the keeper, and readers for the keeper's state and events.
 */

/** A frozen clock the test steps explicitly. Starts on a whole second, so HTTP dates are exact. */
export class SteppedClock implements Clock {
  t: number;
  constructor(start = Math.floor(Date.now() / 1000) * 1000) {
    this.t = start;
  }
  now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
  set(ms: number): void {
    this.t = ms;
  }
  seconds(): number {
    return Math.floor(this.t / 1000);
  }
}

/** Real time plus a skew the test can step: waits still progress, and the test can jump ahead. */
export class SkewedClock implements Clock {
  skewMs = 0;
  now = (): number => Date.now() + this.skewMs;
  advance(ms: number): void {
    this.skewMs += ms;
  }
}

export interface SessionMetadataView {
  status: string;
  failureCount: number;
  lastError: { code: string; description: string; at: number } | null;
  nextAttemptAt: number | null;
  expiresAt: number | null;
  refreshable: boolean;
  refreshedAt: number | null;
}

export interface ServedToken {
  access_token: string;
  token_type: string;
  expires_at: number;
  expires_in: number;
}

/** Which test client each provider registration uses. */
export const PROVIDER_CLIENT: Record<string, 'basic' | 'post' | 'public'> = {
  mcp: 'basic',
  'mcp-post': 'post',
  'mcp-public': 'public',
};

/**
 * Registers three providers: `mcp` (tk-basic, discovered from the issuer, RFC 8707 resource),
 * `mcp-post` (tk-post, explicit endpoints) and `mcp-public` (tk-public, no secret). One client per
 * provider, so the proxy's records tell the providers' requests apart by client id.
 */
export async function registerProviders(
  stack: TestStack,
  oauth: OAuthServer,
): Promise<Record<string, number>> {
  const bodies: Record<string, unknown> = {
    mcp: {
      issuer: oauth.issuer,
      clientId: oauth.clients.basic.clientId,
      clientSecret: oauth.clients.basic.clientSecret,
      clientAuthMethod: 'client_secret_basic',
      resource: MCP_RESOURCE,
    },
    'mcp-post': {
      issuer: oauth.issuer,
      tokenEndpoint: oauth.tokenEndpoint,
      revocationEndpoint: oauth.revocationEndpoint,
      clientId: oauth.clients.post.clientId,
      clientSecret: oauth.clients.post.clientSecret,
      clientAuthMethod: 'client_secret_post',
    },
    'mcp-public': {
      issuer: oauth.issuer,
      clientId: oauth.clients.public.clientId,
      clientAuthMethod: 'none',
    },
  };
  const statuses: Record<string, number> = {};
  for (const [providerId, body] of Object.entries(bodies)) {
    const res = await stack.call('PUT', `/v1/providers/${providerId}`, body);
    if (res.status !== 201 && res.status !== 200) {
      throw new Error(`PUT provider ${providerId} answered ${res.status}: ${res.text}`);
    }
    statuses[providerId] = res.status;
  }
  return statuses;
}

export interface Connected extends SessionKey {
  tokens: TokenSet;
}

const runId = randomBytes(3).toString('hex');
let userSeq = 0;

/** The OpenID Connect login scope: oidc-provider then answers every refresh with an id_token too. */
export const OIDC_SCOPES = `openid offline_access ${MCP_SCOPES}`;

/**
 * A real authorization-code + PKCE login, handed to the keeper as the provider returned it. Every
 * other call (the 1st, 3rd, …) logs in with OIDC_SCOPES, so at least half the sessions of any test
 * get an id_token with each refresh, as real OIDC providers send; the others use MCP_SCOPES.
 */
export async function connect(
  stack: TestStack,
  oauth: OAuthServer,
  providerId = 'mcp',
  overrides: { expires_in?: number } = {},
): Promise<Connected> {
  const seq = ++userSeq;
  const userId = `u${runId}-${seq}`;
  const client = oauth.clients[PROVIDER_CLIENT[providerId] ?? 'basic'];
  const tokens = await oauth.login({
    clientId: client.clientId,
    accountId: userId,
    scope: seq % 2 === 1 ? OIDC_SCOPES : MCP_SCOPES,
    resource: providerId === 'mcp' ? MCP_RESOURCE : null,
  });
  const put = await stack.call('PUT', `/v1/sessions/${userId}/${providerId}`, { ...tokens, ...overrides });
  if (put.status !== 201) throw new Error(`PUT session answered ${put.status}: ${put.text}`);
  return { userId, providerId, tokens };
}

export function tokenPath(key: SessionKey, query = ''): string {
  return `/v1/sessions/${key.userId}/${key.providerId}/token${query}`;
}

export function getToken(stack: TestStack, key: SessionKey, query = ''): Promise<CallResult> {
  return stack.call('GET', tokenPath(key, query));
}

export async function metadata(stack: TestStack, key: SessionKey): Promise<SessionMetadataView> {
  const res = await stack.call('GET', `/v1/sessions/${key.userId}/${key.providerId}`);
  if (res.status !== 200) throw new Error(`GET session answered ${res.status}: ${res.text}`);
  return res.body as SessionMetadataView;
}

/** The stored record (consistent read), or undefined when the session is gone. */
export function record(stack: TestStack, key: SessionKey): Promise<SessionRecord | undefined> {
  return stack.stack.runtime.store.getSession(key, { consistent: true });
}

/** The refresh token the keeper currently holds for a session. */
export async function storedRefreshToken(stack: TestStack, key: SessionKey): Promise<string | undefined> {
  const r = await record(stack, key);
  return r ? (await stack.stack.runtime.store.reveal(r)).refreshToken : undefined;
}

/** Domain events the local publisher logged for one session. */
export function eventsFor(
  logs: readonly LogLine[],
  detailType: 'SessionReauthorizationRequired' | 'SessionRecovered',
  key: SessionKey,
): Record<string, unknown>[] {
  return logs
    .filter((l) => l.message === `event ${detailType}`)
    .map((l) => l.extra?.detail as Record<string, unknown>)
    .filter((d) => d?.userId === key.userId && d?.providerId === key.providerId);
}

export function retryAfterOf(res: CallResult): number {
  return Number(res.headers.get('retry-after'));
}

/** Refresh-token grant requests that reached the OAuth server. */
export function forwardedGrants(oauth: OAuthServer) {
  return oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token' && r.forwarded);
}

/**
 * One OAuth server for a test file (handed to `started` once it runs) and a fresh keeper per test,
 * with the three providers registered; the keeper is stopped and the proxy reset after each test.
 */
export function keeperPerTest(
  options: OAuthServerOptions,
  started: (oauth: OAuthServer) => void,
): { freshKeeper(clock: Clock, env?: Record<string, string>): Promise<TestStack> } {
  let oauth: OAuthServer | undefined;
  let keeper: TestStack | undefined;
  beforeAll(async () => {
    oauth = await startOAuthServer(options);
    started(oauth);
  });
  afterAll(async () => {
    await oauth?.stop();
  });
  afterEach(async () => {
    oauth?.proxy.reset();
    await keeper?.stop();
    keeper = undefined;
  });
  return {
    async freshKeeper(clock, env = {}) {
      keeper = await startTestStack({ clock, env });
      await registerProviders(keeper, oauth as OAuthServer);
      return keeper;
    },
  };
}
