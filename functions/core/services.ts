import type { ProviderHealth } from './circuit.js';
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
  /** The provider's circuit (functions/core/circuit.ts). */
  health: ProviderHealth;
}

/** The provider's token response as it came. */
export interface TokenResponseInput {
  access_token: string;
  refresh_token?: string;
  expires_in?: number;
  expires_at?: number;
  token_type?: string;
  scope?: string;
}

/** Session metadata: no token of any kind. */
export interface SessionMetadata {
  userId: string;
  providerId: string;
  status: SessionStatus;
  expiresAt: number | null;
  refreshable: boolean;
  refreshedAt: number | null;
  failureCount: number;
  lastError: { code: string; description: string; at: number } | null;
  nextAttemptAt: number | null;
}

export interface TokenRequest {
  /** seconds the token must stay valid; default 60 */
  minValidity: number;
  force: boolean;
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
}

export interface SessionService {
  /** throws ProviderNotFoundError */
  put(key: SessionKey, token: TokenResponseInput): Promise<{ created: boolean; session: SessionMetadata }>;
  /** throws SessionNotFoundError */
  get(key: SessionKey): Promise<SessionMetadata>;
  list(userId: string): Promise<SessionMetadata[]>;
  /** throws SessionNotFoundError; revokes at the provider best-effort */
  delete(key: SessionKey): Promise<void>;
}

export interface TokenService {
  /** throws SessionNotFoundError, ReauthorizationRequiredError, RefreshUnavailableError, InvalidRequestError */
  getToken(key: SessionKey, request: TokenRequest): Promise<TokenResult>;
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
}
