/**
 * Typed errors thrown by the client. Every answer the keeper (or API Gateway in front of it) gives
 * outside 2xx becomes a TokenKeeperApiError carrying the HTTP status and the server's `error` code;
 * the codes a caller acts on have their own subclass.
 */

export interface ApiErrorInit {
  status: number;
  code: string;
  description: string;
  /** Seconds from the Retry-After header, when the answer had one. */
  retryAfterSeconds?: number;
}

export class TokenKeeperApiError extends Error {
  /** HTTP status of the answer. */
  readonly status: number;
  /** The server's `error` code, e.g. `session_not_found` (`forbidden` for API Gateway's own 403). */
  readonly code: string;
  /** The server's `error_description`. */
  readonly description: string;
  readonly retryAfterSeconds?: number;

  constructor(init: ApiErrorInit) {
    super(`${init.code}: ${init.description}`);
    this.name = new.target.name;
    this.status = init.status;
    this.code = init.code;
    this.description = init.description;
    if (init.retryAfterSeconds !== undefined) this.retryAfterSeconds = init.retryAfterSeconds;
  }
}

/** 400 `invalid_request`: the description names the offending field. */
export class InvalidRequestError extends TokenKeeperApiError {}

/** 401 `unauthorized` (local bearer key) or 403 from API Gateway (SigV4 signature or IAM policy). */
export class UnauthorizedError extends TokenKeeperApiError {}

/** 404 `provider_not_found`. */
export class ProviderNotFoundError extends TokenKeeperApiError {}

/** 404 `session_not_found`. */
export class SessionNotFoundError extends TokenKeeperApiError {}

/**
 * 404 `connection_not_found`: no pending connection with this id for this user and provider
 * (unknown, expired, already completed, or started for someone else). Nothing changed.
 */
export class ConnectionNotFoundError extends TokenKeeperApiError {}

/** 409 `reauthorization_required`: the grant is dead; send the user through the authorization again. */
export class ReauthorizationRequiredError extends TokenKeeperApiError {}

/** 503: no token can be produced right now; `retryAfterSeconds` says when to try again. */
export class ServiceUnavailableError extends TokenKeeperApiError {
  declare readonly retryAfterSeconds: number;
  constructor(init: ApiErrorInit) {
    super({ ...init, retryAfterSeconds: init.retryAfterSeconds ?? 1 });
  }
}

/** 503 `refresh_unavailable`: the provider is failing transiently; the session is kept. */
export class RefreshUnavailableError extends ServiceUnavailableError {}

/**
 * 503 `provider_integrity`: the provider's settings in the keeper's table no longer match the MAC
 * the keeper made when they were stored (changed outside the API). Nothing was sent to the provider
 * and the session is unchanged. Not retried: only a PUT of the provider restores it.
 */
export class ProviderIntegrityError extends TokenKeeperApiError {}

/** The keeper could not be reached at all (connection refused, DNS, timeout); no HTTP answer. */
export class TokenKeeperConnectionError extends Error {
  readonly url: string;
  constructor(url: string, cause: unknown) {
    super(`cannot reach ${url}: ${describeCause(cause)}`, { cause });
    this.name = 'TokenKeeperConnectionError';
    this.url = url;
  }
}

function describeCause(cause: unknown): string {
  if (cause instanceof Error) {
    if (cause.name === 'TimeoutError') return 'request timed out';
    const inner = (cause as { cause?: { code?: unknown; message?: unknown } }).cause;
    if (inner && typeof inner.code === 'string') return inner.code;
    if (inner && typeof inner.message === 'string') return inner.message;
    return cause.message;
  }
  return String(cause);
}

/** Builds the typed error for a non-2xx answer. */
export function apiError(init: ApiErrorInit): TokenKeeperApiError {
  switch (init.code) {
    case 'invalid_request':
      return new InvalidRequestError(init);
    case 'unauthorized':
    case 'forbidden':
      return new UnauthorizedError(init);
    case 'provider_not_found':
      return new ProviderNotFoundError(init);
    case 'session_not_found':
      return new SessionNotFoundError(init);
    case 'connection_not_found':
      return new ConnectionNotFoundError(init);
    case 'reauthorization_required':
      return new ReauthorizationRequiredError(init);
    case 'refresh_unavailable':
      return new RefreshUnavailableError(init);
    case 'provider_integrity':
      return new ProviderIntegrityError(init);
  }
  if (init.status === 401 || init.status === 403) return new UnauthorizedError(init);
  if (init.status === 503) return new ServiceUnavailableError(init);
  return new TokenKeeperApiError(init);
}
