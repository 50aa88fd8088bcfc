/**
 * The shapes of the v1 HTTP contract (docs/openapi.yaml), as the client sees them. Declared here
 * rather than imported from the server so the client stands alone. Times are epoch seconds.
 */

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'none';

/**
 * `eager` (the default): every session is refreshed before its access token expires. `keepAlive`:
 * sessions are refreshed when a token is asked for, and the sweep only renews a grant before it would
 * die. A changed policy reaches each session at its next grant.
 */
export type RefreshPolicy = 'eager' | 'keepAlive';

/** How the keeper refreshes a provider's sessions; both provider forms take these. */
export interface ProviderRefreshSettings {
  refreshPolicy?: RefreshPolicy;
  /** Seconds a refresh token survives unused (600 to 34,560,000); only with `keepAlive`. */
  refreshTokenIdleSeconds?: number;
  /** The most grants one sweep worker sends to the provider at once (1 to 1000). */
  maxConcurrentRefreshes?: number;
}

/** PUT /v1/providers/{providerId} body. At least one of `issuer` / `tokenEndpoint`. */
export interface ProviderInput extends ProviderRefreshSettings {
  issuer?: string;
  tokenEndpoint?: string;
  revocationEndpoint?: string;
  clientId: string;
  clientSecret?: string;
  clientSecretArn?: string;
  clientAuthMethod?: ClientAuthMethod;
  resource?: string;
  scope?: string;
}

/**
 * PUT /v1/providers/{providerId} by MCP server URL: the keeper discovers the authorization server
 * and registers itself (client metadata document or dynamic registration) unless `clientId` is given.
 */
export interface McpProviderInput extends ProviderRefreshSettings {
  mcpServerUrl: string;
  clientId?: string;
  clientSecret?: string;
  clientAuthMethod?: ClientAuthMethod;
  scope?: string;
}

/** POST /v1/sessions/{userId}/{providerId}/authorize body. */
export interface AuthorizeOptions {
  scope?: string;
  /**
   * Where the user's browser goes after the callback; must be in TOKENKEEPER_ALLOWED_REDIRECTS.
   * With it, the browser comes back with `status=pending&connection=<id>&providerId=<p>`, and
   * nothing is stored until you call `completeConnection` for the user your application serves.
   */
  redirectUri?: string;
}

export interface Authorization {
  /** Open this in the user's browser. */
  authorizationUrl: string;
  /** epoch seconds: after this the URL no longer completes. */
  expiresAt: number;
}

/** A provider as the API shows it: never its client secret. */
export interface Provider {
  providerId: string;
  issuer?: string;
  tokenEndpoint?: string;
  revocationEndpoint?: string;
  clientId: string;
  clientAuthMethod: ClientAuthMethod;
  hasClientSecret: boolean;
  clientSecretArn?: string;
  resource?: string;
  scope?: string;
  createdAt: number;
  updatedAt: number;
  /** Set when the provider rejected the client (`invalid_client` / `unauthorized_client`). */
  clientRejectedAt?: number;
  /** Providers registered by MCP server URL: what the keeper discovered, and how it got its client. */
  mcpServerUrl?: string;
  authorizationEndpoint?: string;
  scopesSupported?: string[];
  registration?: 'preregistered' | 'metadata_document' | 'dynamic';
  /** The provider's own redirect URI, to register at its authorization server (when the keeper has a public URL). */
  redirectUri?: string;
  refreshPolicy: RefreshPolicy;
  refreshTokenIdleSeconds?: number;
  maxConcurrentRefreshes?: number;
  /** The provider's circuit: `open` while an outage (or a rejected client) holds its grants back. */
  health: ProviderHealth;
}

export interface ProviderHealth {
  state: 'closed' | 'open' | 'half_open';
  since: number | null;
  /** When the next probe may be sent; null while closed. */
  nextProbeAt: number | null;
  consecutiveFailures: number;
  lastError: { code: string; description: string; at: number } | null;
  /**
   * Null while the provider's settings match the MAC the keeper made when the API stored them;
   * otherwise nothing is sent to the provider until a PUT restores it.
   */
  integrity: { error: 'provider_integrity'; description: string } | null;
}

/** PUT /v1/sessions/{userId}/{providerId} body: the provider's token response as it came. */
export interface TokenResponse {
  access_token: string;
  refresh_token?: string | null;
  expires_in?: number | string | null;
  expires_at?: number | string | null;
  token_type?: string | null;
  scope?: string | null;
  /** Accepted and dropped by the keeper, like any other field of the provider's answer. */
  id_token?: string;
}

export type SessionStatus = 'active' | 'reauthorization_required';

/** Session metadata: no token of any kind. */
export interface Session {
  userId: string;
  providerId: string;
  status: SessionStatus;
  expiresAt: number | null;
  /** The refresh token's expiry, when the provider gave its lifetime. */
  refreshExpiresAt: number | null;
  /** `on_demand`: tokens shorter-lived than a sweep period, refreshed when asked for. */
  refreshMode: 'scheduled' | 'on_demand';
  refreshable: boolean;
  refreshedAt: number | null;
  failureCount: number;
  lastError: { code: string; description: string; at: number } | null;
  nextAttemptAt: number | null;
}

/** GET /v1/sessions/{userId}/{providerId}/token answer: never a refresh token. */
export interface Token {
  access_token: string;
  token_type: string;
  expires_at: number | null;
  expires_in: number | null;
  scope?: string;
}

/** Whether a PUT created the resource (201) or replaced it (200). */
export interface PutResult<T> {
  created: boolean;
  value: T;
}

/** One sweep as GET /v1/sweeps lists it (instants in epoch seconds). */
export interface SweepRecord extends SweepSummary {
  /** Due sessions of providers whose circuit was open, not tried (counted in `skipped` too). */
  heldBack: number;
  /** Providers whose circuit was open at some point of the sweep (each slice of a fanned-out sweep adds its own). */
  openCircuits: number;
  startedAt: number;
  finishedAt: number;
}

/** POST /local/sweep answer (local stack only). */
export interface SweepSummary {
  due: number;
  refreshed: number;
  skipped: number;
  failedTransient: number;
  reauthorizationRequired: number;
  missed: number;
  backlog: number;
  durationMs: number;
}
