import type { ClientAuthMethod, SessionKey, SessionStatus } from './model.js';

/**
 * The contracts the API layer calls. Inputs arrive already validated by functions/api/validation.ts;
 * the services still refuse what only they can judge (unknown provider, missing session).
 * All instants in views are epoch seconds.
 */

export interface ProviderInput {
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
}

export interface SessionSearch extends PageRequest {
  providerId?: string;
  status?: SessionStatus;
}

/** The latest sweep, as `GET /v1/sweeps/latest` shows it (epoch seconds). */
export interface LatestSweep extends SweepSummary {
  startedAt: number;
  finishedAt: number;
}
