import type {
  ClientAuthMethod,
  ClientRegistration,
  ProviderHealth,
  RefreshPolicy,
  SessionKey,
  SessionStatus,
} from './model.js';

/**
 * The contracts the API layer calls. Inputs arrive already validated by functions/api/validation.ts;
 * the services still refuse what only they can judge (unknown provider, missing session).
 * All instants in views are epoch seconds.
 */

/** How the keeper refreshes a provider's sessions; both forms of `PUT /v1/providers/{providerId}` take them. */
export interface ProviderRefreshInput {
  refreshPolicy?: RefreshPolicy;
  refreshTokenIdleSeconds?: number;
  maxConcurrentRefreshes?: number;
}

export interface ProviderInput extends ProviderRefreshInput {
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

/** A provider as the API shows it: never the client secret. */
export interface ProviderView {
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
  clientRejectedAt?: number;
  /** The provider's circuit (functions/core/refresh/circuit.ts). */
  health: ProviderHealth;
  /** Providers registered by MCP server URL: what discovery found and how the client was obtained. */
  mcpServerUrl?: string;
  authorizationEndpoint?: string;
  scopesSupported?: string[];
  registration?: ClientRegistration;
  /**
   * The provider's own redirect URI (`<public URL>/oauth/callback/<providerId>`), to register at its
   * authorization server; absent when the keeper has no public URL.
   */
  redirectUri?: string;
  /** `eager` unless the provider was registered with `keepAlive`. */
  refreshPolicy: RefreshPolicy;
  refreshTokenIdleSeconds?: number;
  maxConcurrentRefreshes?: number;
}

/** `PUT /v1/providers/{providerId}` by MCP server URL: the keeper discovers everything else. */
export interface McpProviderInput extends ProviderRefreshInput {
  mcpServerUrl: string;
  clientId?: string;
  clientSecret?: string;
  clientAuthMethod?: ClientAuthMethod;
  scope?: string;
}

/** `POST /v1/sessions/{userId}/{providerId}/authorize` */
export interface AuthorizeInput {
  scope?: string;
  redirectUri?: string;
}

export interface AuthorizeResult {
  authorizationUrl: string;
  /** epoch seconds: the state expires then */
  expiresAt: number;
}

/**
 * How a callback ended; the API turns it into a 303 to `redirectUri` or a small HTML page. With a
 * `redirectUri` a success is a pending connection (`connectionId`) the application completes.
 */
export type CallbackOutcome =
  | { ok: true; userId: string; providerId: string; redirectUri?: undefined }
  | { ok: true; userId: string; providerId: string; redirectUri: string; connectionId: string }
  | {
      ok: false;
      /** An OAuth error code or one of ours: invalid_state, invalid_issuer, exchange_failed, … */
      error: string;
      /** Absent when the state was unknown: nobody to send back, only a page. */
      redirectUri?: string;
    };

export interface ConnectService {
  /** throws DiscoveryFailedError, ClientRegistrationUnavailableError, InvalidRequestError */
  registerMcpServer(
    providerId: string,
    input: McpProviderInput,
    options?: CallOptions,
  ): Promise<{ created: boolean; provider: ProviderView }>;
  /** throws ProviderNotFoundError, InvalidRequestError */
  authorize(key: SessionKey, input: AuthorizeInput, options?: CallOptions): Promise<AuthorizeResult>;
  /**
   * Completes a pending connection for the user the application is serving: stores or replaces the
   * session when `connectionId` is pending for exactly this user and provider, at most once.
   * throws ConnectionNotFoundError (unknown, expired, used, or another user's or provider's)
   */
  completeConnection(key: SessionKey, connectionId: string): Promise<SessionMetadata>;
  /**
   * The authorization response at the callback of `providerId` (its path). Never throws for what the
   * browser or the server sent: the outcome says what to show.
   */
  callback(
    providerId: string,
    query: Record<string, string>,
    options?: CallOptions,
  ): Promise<CallbackOutcome>;
  /**
   * The provider's Client ID Metadata Document, or undefined when the keeper has no public URL to
   * serve it from. throws ProviderNotFoundError
   */
  clientMetadata(providerId: string): Promise<Record<string, unknown> | undefined>;
}

/** The provider's token response as it came. */
export interface TokenResponseInput {
  access_token: string;
  refresh_token?: string;
  expires_in?: number;
  expires_at?: number;
  /** The refresh token's lifetime in seconds (Keycloak `refresh_expires_in`, GitHub `refresh_token_expires_in`). */
  refresh_expires_in?: number;
  token_type?: string;
  scope?: string;
}

/** Session metadata: no token of any kind. */
export interface SessionMetadata {
  userId: string;
  providerId: string;
  status: SessionStatus;
  expiresAt: number | null;
  /** The refresh token's expiry (epoch seconds) when the provider gave its lifetime. */
  refreshExpiresAt: number | null;
  /**
   * `scheduled`: the sweep keeps the access token fresh. `on_demand`: the provider's tokens live
   * shorter than a sweep period (or have no expiry), so a token call refreshes them and the sweep
   * only keeps the grant alive.
   */
  refreshMode: 'scheduled' | 'on_demand';
  refreshable: boolean;
  refreshedAt: number | null;
  failureCount: number;
  lastError: { code: string; description: string; at: number } | null;
  nextAttemptAt: number | null;
}

/** How long a call may run: its answer must be out before `deadline` (epoch ms, the core's clock). */
export interface CallOptions {
  deadline?: number;
}

export interface TokenRequest {
  /**
   * Seconds the caller wishes the token to stay valid; default 60. A wish: capped at half the
   * lifetime the provider issues, and a token minted for this call is served whatever its lifetime.
   */
  minValidity: number;
  force: boolean;
  /**
   * The fingerprint (tokenFingerprint) of an access token a resource server refused: the call is
   * forced only while the stored token still has it; otherwise the newer token is served at once.
   */
  rejected?: string;
}

export interface TokenResult {
  access_token: string;
  token_type: string;
  expires_at: number | null;
  expires_in: number | null;
  scope?: string;
}

export interface ProviderService {
  put(providerId: string, input: ProviderInput): Promise<{ created: boolean; provider: ProviderView }>;
  /** throws ProviderNotFoundError */
  get(providerId: string): Promise<ProviderView>;
  /** Every provider, one bounded page at a time; `cursor` (opaque) continues a previous page. */
  list(page: PageRequest): Promise<{ providers: ProviderView[]; cursor: string | null }>;
}

/** A bounded page: 1 to 100 items, and the opaque cursor a previous page returned. */
export interface PageRequest {
  limit: number;
  cursor?: string;
}

export interface SessionService {
  /** throws ProviderNotFoundError */
  put(key: SessionKey, token: TokenResponseInput): Promise<{ created: boolean; session: SessionMetadata }>;
  /** throws SessionNotFoundError */
  get(key: SessionKey): Promise<SessionMetadata>;
  list(userId: string): Promise<SessionMetadata[]>;
  /** Sessions across users, filtered and paged; `cursor` (opaque) continues a previous page. */
  search(query: SessionSearch): Promise<{ sessions: SessionMetadata[]; cursor: string | null }>;
  /** throws SessionNotFoundError; revokes at the provider best-effort */
  delete(key: SessionKey, options?: CallOptions): Promise<void>;
}

export interface TokenService {
  /** throws SessionNotFoundError, ReauthorizationRequiredError, RefreshUnavailableError, InvalidRequestError */
  getToken(key: SessionKey, request: TokenRequest, options?: CallOptions): Promise<TokenResult>;
}

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

export interface SweepService {
  /** `remainingTimeMs` reports how long the caller may still run (the Lambda's remaining time). */
  sweep(options?: { remainingTimeMs?: () => number }): Promise<SweepSummary>;
  /** The latest sweep's summary, or undefined before the first. */
  latest(): Promise<LatestSweep | undefined>;
  /** The sweeps that started at or after `since` (epoch seconds), oldest first. */
  history(since: number): Promise<SweepRecord[]>;
}

/** One sweep as `GET /v1/sweeps` lists it (epoch seconds). */
export interface SweepRecord extends SweepSummary {
  startedAt: number;
  finishedAt: number;
  /** Due sessions of providers whose circuit was open: not tried (a share of `skipped`). */
  heldBack: number;
  /** Providers whose circuit was open at some point of the sweep (each slice of a fanned-out sweep adds its own). */
  openCircuits: number;
}

export interface SessionSearch extends PageRequest {
  providerId?: string;
  status?: SessionStatus;
}

/** The latest sweep, as `GET /v1/sweeps/latest` shows it (epoch seconds). */
export interface LatestSweep extends SweepSummary {
  startedAt: number;
  finishedAt: number;
  /** When the schedule starts the next sweep: `startedAt` plus the refresh interval. */
  nextSweepAt?: number;
  /** A session is refreshed once its access token has less than this left. */
  refreshWindowSeconds?: number;
}
