import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { listenOnLoopback } from '../../functions/local/embedded.js';
import { readBody } from './token-proxy.js';

/**
 * A token endpoint on 127.0.0.1 with a real refresh-token state machine, answering in the "dialect"
 * of a named provider: the shape of its documented token responses (field names, types, casing,
 * lifetimes) and of its errors (GitHub and Slack answer a dead refresh token with HTTP 200).
 *
 * State machine: a login creates a grant with a refresh token. A refresh grant presenting the
 * grant's current refresh token is answered with a new access token and, when rotation is on, a new
 * refresh token (the presented one is then rotated out). Presenting a rotated-out token is a
 * **reuse**: it is counted, and with reuse detection on it revokes the whole grant, unless it comes
 * within the grace period (Okta, Auth0). Refresh tokens with a lifetime expire on the clock given.
 * Only `script()`ed answers are sent without touching the state (the provider did not redeem).
 */

export type Dialect =
  | 'google'
  | 'keycloak'
  | 'keycloak-offline'
  | 'github'
  | 'entra'
  | 'okta'
  | 'auth0'
  | 'slack'
  | 'notion';

export type AuthMethod = 'client_secret_basic' | 'client_secret_post' | 'none';

export interface ScriptedProviderOptions {
  dialect: Dialect;
  /** The clock token lifetimes and grace periods run on (epoch ms). Default: real time. */
  clock?: { now(): number };
  /** Access-token lifetime in seconds. Default: the dialect's documented one. */
  accessTokenTtl?: number;
  /**
   * The refresh token's own lifetime in seconds, stated in the answer (Keycloak `refresh_expires_in`,
   * GitHub `refresh_token_expires_in`) and enforced. `0` for Keycloak offline tokens (no idle expiry).
   */
  refreshTokenTtl?: number;
  /** Whether a refresh answer carries a new refresh token. Default: the dialect's. */
  rotate?: boolean;
  /** Whether presenting a rotated-out refresh token revokes the grant. Default: `rotate`. */
  reuseDetection?: boolean;
  /** Seconds after its rotation in which a rotated-out token is still accepted (counted all the same). */
  graceSeconds?: number;
  /** Approximate size in bytes of the JWT access tokens (Entra: 2–4 KB). */
  accessTokenBytes?: number;
  /** Overrides the dialect's `token_type`; `null` leaves it out. */
  tokenType?: string | null;
  /** Overrides how `expires_in` is written (e.g. `(s) => String(s)` for a numeric string). */
  expiresIn?: (seconds: number) => unknown;
  /** The scope a login grants. Default: the dialect's. */
  scope?: string;
  /** Real milliseconds before each token-endpoint answer (so concurrent requests overlap). */
  latencyMs?: number;
}

/** An answer sent instead of redeeming (the provider did not consume the refresh token). */
export interface ScriptedAnswer {
  status: number;
  body?: Record<string, unknown> | string;
  headers?: Record<string, string>;
}

export type RefreshOutcome =
  /** A new access token was issued for the grant's current refresh token. */
  | 'issued'
  /** A rotated-out token was presented inside the grace period and accepted. */
  | 'reuse-accepted'
  /** A rotated-out token was presented outside the grace period: the grant was revoked. */
  | 'reuse-revoked'
  /** A rotated-out token was presented to a provider without reuse detection and accepted. */
  | 'reuse-tolerated'
  /** Unknown, expired or revoked refresh token: the dialect's dead-grant error. */
  | 'dead'
  /** A `script()`ed answer. */
  | 'scripted'
  | 'client-error';

export interface RefreshRecord {
  /** Clock time (ms) of the request. */
  at: number;
  refreshToken?: string;
  outcome: RefreshOutcome;
  /** The access token issued, when one was. */
  accessToken?: string;
  /** The refresh token issued, when one was. */
  newRefreshToken?: string;
}

export interface ScriptedProvider {
  readonly dialect: Dialect;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly tokenEndpoint: string;
  /** The issuer the provider's id_tokens name (the real provider's, not this server's URL). */
  readonly idTokenIssuer: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly authMethod: AuthMethod;
  /** The body for `PUT /v1/providers/{id}`: this token endpoint alone, the dialect's client auth. */
  registration(): Record<string, unknown>;
  /** The answer to an authorization-code exchange (a new grant), in the dialect's shape. */
  login(options?: { scope?: string }): Record<string, unknown>;
  /** Sends these answers to the next refresh requests, in order, without redeeming. */
  script(...answers: ScriptedAnswer[]): void;
  /** The scope refresh answers carry from now on; `null` leaves `scope` out of the answer. */
  setScope(scope: string | null): void;
  /** Revokes every grant (the user removed the app at the provider). */
  revokeAll(): void;
  /** Presentations of rotated-out refresh tokens, accepted or not. */
  reuseCount(): number;
  /** Grants revoked because a rotated-out token was reused. */
  revokedByReuse(): number;
  /** Every refresh_token grant request, in arrival order. */
  readonly refreshes: RefreshRecord[];
  /** Whether an access token this provider issued is still valid (not expired, grant not revoked). */
  isActive(accessToken: string): boolean;
  stop(): Promise<void>;
}

interface DialectSpec {
  accessTokenTtl: number;
  rotate: boolean;
  refreshTokenTtl?: number;
  graceSeconds?: number;
  authMethod: AuthMethod;
  scope: string;
  idTokenIssuer: string;
  /** Whether id_tokens come back when `openid` was granted. */
  oidc: boolean;
  accessTokenBytes?: number;
  prefix: { access: string; refresh: string };
  /** The dead-grant error: status and body. */
  dead: () => ScriptedAnswer;
  /** The success body, given the common fields. */
  success: (c: SuccessFields) => Record<string, unknown>;
}

interface SuccessFields {
  accessToken: string;
  refreshToken?: string;
  tokenType: string | null;
  expiresIn: unknown;
  refreshExpiresIn?: number;
  scope: string | null;
  idToken?: string;
}

/** Leaves out the fields whose value is null or undefined. */
function compact(body: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== undefined && v !== null));
}

/** Fields every OAuth answer shares; `token_type` is left out when null. */
function oauthFields(c: SuccessFields): Record<string, unknown> {
  return {
    access_token: c.accessToken,
    token_type: c.tokenType,
    expires_in: c.expiresIn,
    refresh_token: c.refreshToken,
    scope: c.scope,
    id_token: c.idToken,
  };
}

const invalidGrant =
  (status: number, description: string, extra: Record<string, unknown> = {}) =>
  () => ({
    status,
    body: { error: 'invalid_grant', error_description: description, ...extra },
  });

// Keycloak: SSO Session Idle → refresh_expires_in; "Revoke Refresh Token" on (reuse detection).
const KEYCLOAK: DialectSpec = {
  accessTokenTtl: 300,
  rotate: true,
  refreshTokenTtl: 1800,
  authMethod: 'client_secret_basic',
  scope: 'openid profile email',
  idTokenIssuer: 'https://keycloak.example.test/realms/mcp',
  oidc: true,
  prefix: { access: '', refresh: '' },
  dead: invalidGrant(400, 'Token is not active'),
  success: (c) =>
    compact({
      access_token: c.accessToken,
      expires_in: c.expiresIn,
      refresh_expires_in: c.refreshExpiresIn,
      refresh_token: c.refreshToken,
      token_type: c.tokenType,
      id_token: c.idToken,
      'not-before-policy': 0,
      session_state: randomUUID(),
      scope: c.scope,
    }),
};

const DIALECTS: Record<Dialect, DialectSpec> = {
  // https://developers.google.com/identity/protocols/oauth2/web-server#offline
  google: {
    accessTokenTtl: 3599,
    rotate: false,
    authMethod: 'client_secret_post',
    scope: 'openid https://www.googleapis.com/auth/drive.readonly',
    idTokenIssuer: 'https://accounts.google.com',
    oidc: true,
    prefix: { access: 'ya29.', refresh: '1//0g' },
    dead: invalidGrant(400, 'Token has been expired or revoked.'),
    success: (c) => compact(oauthFields(c)),
  },
  keycloak: KEYCLOAK,
  // Keycloak offline tokens: refresh_expires_in 0 (no idle expiry).
  'keycloak-offline': {
    ...KEYCLOAK,
    refreshTokenTtl: 0,
    scope: 'openid offline_access profile',
    dead: invalidGrant(400, 'Offline user session not found'),
  },
  // https://docs.github.com/en/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens
  github: {
    accessTokenTtl: 28800,
    rotate: true,
    refreshTokenTtl: 15897600,
    authMethod: 'client_secret_post',
    scope: '',
    idTokenIssuer: 'https://github.com',
    oidc: false,
    prefix: { access: 'ghu_', refresh: 'ghr_' },
    dead: () => ({
      status: 200,
      body: {
        error: 'bad_refresh_token',
        error_description: 'The refresh token passed is incorrect or expired.',
        error_uri:
          'https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-refresh-token',
      },
    }),
    success: (c) =>
      compact({
        access_token: c.accessToken,
        expires_in: c.expiresIn,
        refresh_token: c.refreshToken,
        refresh_token_expires_in: c.refreshExpiresIn,
        scope: c.scope,
        token_type: c.tokenType,
      }),
  },
  // Microsoft identity platform (v1 endpoint: lifetimes as strings, ext_expires_in, 2–4 KB JWTs).
  entra: {
    accessTokenTtl: 3599,
    rotate: true,
    authMethod: 'client_secret_post',
    scope: 'openid offline_access https://graph.microsoft.com/User.Read',
    idTokenIssuer: 'https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/v2.0',
    oidc: true,
    accessTokenBytes: 3000,
    prefix: { access: '', refresh: '0.AX' },
    dead: () => ({
      status: 400,
      body: {
        error: 'invalid_grant',
        error_description: 'AADSTS700082: The refresh token has expired due to inactivity.',
        error_codes: [700082],
        timestamp: new Date().toISOString(),
        trace_id: randomUUID(),
        correlation_id: randomUUID(),
      },
    }),
    success: (c) =>
      compact({
        token_type: c.tokenType,
        scope: c.scope,
        expires_in: c.expiresIn,
        ext_expires_in: c.expiresIn,
        access_token: c.accessToken,
        refresh_token: c.refreshToken,
        id_token: c.idToken,
      }),
  },
  // Okta: refresh-token rotation with a grace period (default 30 s).
  okta: {
    accessTokenTtl: 3600,
    rotate: true,
    graceSeconds: 30,
    authMethod: 'client_secret_basic',
    scope: 'openid offline_access mcp.read',
    idTokenIssuer: 'https://example.okta.com/oauth2/default',
    oidc: true,
    prefix: { access: '', refresh: '' },
    dead: invalidGrant(400, 'The refresh token is invalid or expired.'),
    success: (c) => compact(oauthFields(c)),
  },
  // Auth0: rotation with a reuse interval (leeway); reuse after it revokes the family, 403 invalid_grant.
  auth0: {
    accessTokenTtl: 86400,
    rotate: true,
    graceSeconds: 10,
    authMethod: 'client_secret_post',
    scope: 'openid offline_access read:tools',
    idTokenIssuer: 'https://example.auth0.test/',
    oidc: true,
    prefix: { access: '', refresh: 'v1.M' },
    dead: invalidGrant(403, 'Unknown or invalid refresh token.'),
    success: (c) => compact(oauthFields(c)),
  },
  // https://api.slack.com/authentication/rotation
  slack: {
    accessTokenTtl: 43200,
    rotate: true,
    authMethod: 'client_secret_post',
    scope: 'commands,chat:write',
    idTokenIssuer: 'https://slack.com',
    oidc: false,
    prefix: { access: 'xoxe.xoxb-1-', refresh: 'xoxe-1-' },
    dead: () => ({ status: 200, body: { ok: false, error: 'invalid_refresh_token' } }),
    success: (c) =>
      compact({
        ok: true,
        app_id: 'A0KRD7HC3',
        authed_user: { id: 'U1234' },
        scope: c.scope,
        token_type: c.tokenType,
        access_token: c.accessToken,
        bot_user_id: 'U0KRQLJ9H',
        refresh_token: c.refreshToken,
        expires_in: c.expiresIn,
        team: { id: 'T9TK3CUKW', name: 'Slack Softworks' },
        enterprise: null,
        is_enterprise_install: false,
      }),
  },
  // A Notion-style remote MCP server: plain OAuth 2.1, public client, rotation, lowercase bearer.
  notion: {
    accessTokenTtl: 3600,
    rotate: true,
    authMethod: 'none',
    scope: '',
    idTokenIssuer: 'https://mcp.notion.example.test',
    oidc: false,
    prefix: { access: '', refresh: '' },
    dead: invalidGrant(400, 'Invalid refresh token'),
    success: (c) =>
      compact({
        access_token: c.accessToken,
        token_type: c.tokenType,
        expires_in: c.expiresIn,
        refresh_token: c.refreshToken,
        scope: c.scope === '' ? undefined : c.scope,
      }),
  },
};

const DEFAULT_TOKEN_TYPE: Record<Dialect, string> = {
  google: 'Bearer',
  keycloak: 'Bearer',
  'keycloak-offline': 'Bearer',
  github: 'bearer',
  entra: 'Bearer',
  okta: 'Bearer',
  auth0: 'Bearer',
  slack: 'bot',
  notion: 'bearer',
};

interface GrantState {
  id: string;
  revoked: boolean;
  scope: string;
  current: string;
}

interface RefreshTokenState {
  grant: GrantState;
  /** Clock ms at which it expires; absent: no expiry. */
  expiresAt?: number;
  /** Clock ms at which it was rotated out. */
  rotatedAt?: number;
}

const signingKey = randomBytes(32);

function b64url(value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** An HS256-signed JWT of about `bytes` bytes (padded with a claim), as large providers issue. */
export function makeJwt(claims: Record<string, unknown>, bytes = 0): string {
  const header = b64url({ alg: 'HS256', typ: 'JWT', kid: 'scripted' });
  const sign = (payload: string) =>
    createHmac('sha256', signingKey).update(`${header}.${payload}`).digest('base64url');
  let payload = b64url(claims);
  const base = header.length + payload.length + 45;
  if (bytes > base) {
    // base64url grows by 4/3; ~20 bytes of JSON overhead for the padding claim.
    const pad = Math.max(0, Math.floor(((bytes - base) * 3) / 4) - 20);
    payload = b64url({ ...claims, wids: 'w'.repeat(pad) });
  }
  return `${header}.${payload}.${sign(payload)}`;
}

export async function startScriptedProvider(options: ScriptedProviderOptions): Promise<ScriptedProvider> {
  const spec = DIALECTS[options.dialect];
  const clock = options.clock ?? { now: () => Date.now() };
  const accessTokenTtl = options.accessTokenTtl ?? spec.accessTokenTtl;
  const refreshTokenTtl = options.refreshTokenTtl ?? spec.refreshTokenTtl;
  const rotate = options.rotate ?? spec.rotate;
  const reuseDetection = options.reuseDetection ?? rotate;
  const graceSeconds = options.graceSeconds ?? spec.graceSeconds ?? 0;
  const tokenType = options.tokenType === undefined ? DEFAULT_TOKEN_TYPE[options.dialect] : options.tokenType;
  const writeExpiresIn = options.expiresIn ?? ((s: number) => s);
  const accessTokenBytes = options.accessTokenBytes ?? spec.accessTokenBytes;
  const clientId = `client-${options.dialect}-${randomBytes(3).toString('hex')}`;
  const clientSecret = randomBytes(24).toString('base64url');

  const grants: GrantState[] = [];
  const refreshTokens = new Map<string, RefreshTokenState>();
  const accessTokens = new Map<string, { grant: GrantState; expiresAt: number }>();
  const refreshes: RefreshRecord[] = [];
  const scripted: ScriptedAnswer[] = [];
  let answerScope: string | null | undefined;
  let reuses = 0;
  let revokedByReuse = 0;

  const newAccessToken = (grant: GrantState, now: number): string => {
    const token = accessTokenBytes
      ? makeJwt(
          {
            aud: 'https://mcp.example.test/',
            iss: spec.idTokenIssuer,
            iat: Math.floor(now / 1000),
            exp: Math.floor(now / 1000) + accessTokenTtl,
            sub: grant.id,
            scp: grant.scope,
            jti: randomUUID(),
          },
          accessTokenBytes,
        )
      : `${spec.prefix.access}${randomBytes(24).toString('base64url')}`;
    accessTokens.set(token, { grant, expiresAt: now + accessTokenTtl * 1000 });
    return token;
  };

  const newRefreshToken = (grant: GrantState, now: number): string => {
    const token = `${spec.prefix.refresh}${randomBytes(32).toString('base64url')}`;
    refreshTokens.set(token, {
      grant,
      expiresAt: refreshTokenTtl ? now + refreshTokenTtl * 1000 : undefined,
    });
    grant.current = token;
    return token;
  };

  const answer = (grant: GrantState, now: number, refreshToken: string | undefined, scope: string | null) => {
    const accessToken = newAccessToken(grant, now);
    const idToken =
      spec.oidc && grant.scope.split(/[ ,]/).includes('openid')
        ? makeJwt({
            iss: spec.idTokenIssuer,
            aud: clientId,
            sub: grant.id,
            iat: Math.floor(now / 1000),
            exp: Math.floor(now / 1000) + 3600,
          })
        : undefined;
    const body = spec.success({
      accessToken,
      refreshToken,
      tokenType,
      expiresIn: writeExpiresIn(accessTokenTtl),
      refreshExpiresIn: refreshToken === undefined ? undefined : refreshTokenTtl,
      scope,
      idToken,
    });
    return { accessToken, body };
  };

  const clientAuthenticated = (req: IncomingMessage, form: URLSearchParams): boolean => {
    if (spec.authMethod === 'none') return form.get('client_id') === clientId;
    if (spec.authMethod === 'client_secret_post') {
      return form.get('client_id') === clientId && form.get('client_secret') === clientSecret;
    }
    const header = req.headers.authorization ?? '';
    if (!header.toLowerCase().startsWith('basic ')) return false;
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    const dec = (s: string) => decodeURIComponent(s.replace(/\+/g, ' '));
    return dec(decoded.slice(0, colon)) === clientId && dec(decoded.slice(colon + 1)) === clientSecret;
  };

  const refresh = (form: URLSearchParams): { record: RefreshRecord; reply: ScriptedAnswer } => {
    const now = clock.now();
    const presented = form.get('refresh_token') ?? undefined;
    const record: RefreshRecord = { at: now, refreshToken: presented, outcome: 'dead' };
    const next = scripted.shift();
    if (next) {
      record.outcome = 'scripted';
      return { record, reply: next };
    }
    const state = presented === undefined ? undefined : refreshTokens.get(presented);
    if (!state || state.grant.revoked || (state.expiresAt !== undefined && state.expiresAt <= now)) {
      return { record, reply: spec.dead() };
    }
    const grant = state.grant;
    if (state.rotatedAt !== undefined) {
      reuses++;
      if (graceSeconds > 0 && now - state.rotatedAt <= graceSeconds * 1000) {
        record.outcome = 'reuse-accepted';
      } else if (reuseDetection) {
        grant.revoked = true;
        revokedByReuse++;
        record.outcome = 'reuse-revoked';
        return { record, reply: spec.dead() };
      } else {
        record.outcome = 'reuse-tolerated';
      }
    } else {
      record.outcome = 'issued';
    }
    let issuedRefresh: string | undefined;
    if (rotate) {
      if (grant.current === presented) {
        state.rotatedAt = now;
        issuedRefresh = newRefreshToken(grant, now);
      } else {
        // Inside the grace period: the current refresh token is handed out again (Okta, Auth0).
        issuedRefresh = grant.current;
      }
    } else if (state.expiresAt !== undefined && refreshTokenTtl) {
      state.expiresAt = now + refreshTokenTtl * 1000;
    }
    if (answerScope !== undefined && answerScope !== null) grant.scope = answerScope;
    const { accessToken, body } = answer(
      grant,
      now,
      issuedRefresh,
      answerScope === null ? null : grant.scope,
    );
    record.accessToken = accessToken;
    record.newRefreshToken = issuedRefresh;
    return { record, reply: { status: 200, body } };
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'POST' || path !== '/token') {
      send(res, { status: 404, body: { error: 'not_found' } });
      return;
    }
    const form = new URLSearchParams((await readBody(req)).toString('utf8'));
    if (options.latencyMs) await new Promise((r) => setTimeout(r, options.latencyMs));
    if (form.get('grant_type') !== 'refresh_token') {
      send(res, { status: 400, body: { error: 'unsupported_grant_type' } });
      return;
    }
    if (!clientAuthenticated(req, form)) {
      refreshes.push({
        at: clock.now(),
        refreshToken: form.get('refresh_token') ?? undefined,
        outcome: 'client-error',
      });
      send(res, { status: 401, body: { error: 'invalid_client' } });
      return;
    }
    const { record, reply } = refresh(form);
    refreshes.push(record);
    send(res, reply);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, { status: 500, body: `scripted provider: ${String(err)}` });
      else res.destroy();
    });
  });
  const port = await listenOnLoopback(server);
  const url = `http://127.0.0.1:${port}`;

  let stopped: Promise<void> | undefined;
  return {
    dialect: options.dialect,
    url,
    tokenEndpoint: `${url}/token`,
    idTokenIssuer: spec.idTokenIssuer,
    clientId,
    clientSecret,
    authMethod: spec.authMethod,
    registration() {
      return compact({
        tokenEndpoint: `${url}/token`,
        clientId,
        clientSecret: spec.authMethod === 'none' ? undefined : clientSecret,
        clientAuthMethod: spec.authMethod,
      });
    },
    login(opts = {}) {
      const now = clock.now();
      const grant: GrantState = {
        id: randomUUID(),
        revoked: false,
        scope: opts.scope ?? options.scope ?? spec.scope,
        current: '',
      };
      grants.push(grant);
      const refreshToken = newRefreshToken(grant, now);
      return answer(grant, now, refreshToken, grant.scope).body;
    },
    script(...answers) {
      scripted.push(...answers);
    },
    setScope(scope) {
      answerScope = scope;
    },
    revokeAll() {
      for (const g of grants) g.revoked = true;
    },
    reuseCount: () => reuses,
    revokedByReuse: () => revokedByReuse,
    refreshes,
    isActive(accessToken) {
      const t = accessTokens.get(accessToken);
      return t !== undefined && !t.grant.revoked && t.expiresAt > clock.now();
    },
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      });
      return stopped;
    },
  };
}

function send(res: ServerResponse, reply: ScriptedAnswer): void {
  const text = typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body ?? {});
  res.writeHead(reply.status, {
    'content-type': typeof reply.body === 'string' ? 'text/plain' : 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    pragma: 'no-cache',
    ...reply.headers,
  });
  res.end(text);
}
