/**
 * One error class per failure kind. Each carries a stable `code`; the API maps codes to HTTP
 * statuses in one place (functions/api/app.ts). Messages never contain a token or a secret.
 */

export abstract class TokenKeeperError extends Error {
  abstract readonly code: string;
}

export class InvalidRequestError extends TokenKeeperError {
  readonly code = 'invalid_request';
}

export class ProviderNotFoundError extends TokenKeeperError {
  readonly code = 'provider_not_found';
  constructor(providerId: string) {
    super(`provider ${JSON.stringify(providerId)} is not registered`);
  }
}

export class SessionNotFoundError extends TokenKeeperError {
  readonly code = 'session_not_found';
  constructor() {
    super('no session for this user and provider');
  }
}

/**
 * No pending connection with this id for this user and provider: unknown, expired, already
 * completed, or started for someone else. One answer for all, so none can be told apart.
 */
export class ConnectionNotFoundError extends TokenKeeperError {
  readonly code = 'connection_not_found';
  constructor() {
    super('no pending connection with this id for this user and provider');
  }
}

export class ReauthorizationRequiredError extends TokenKeeperError {
  readonly code = 'reauthorization_required';
}

/** No token valid for the caller can be produced right now; try again after `retryAfterSeconds`. */
export class RefreshUnavailableError extends TokenKeeperError {
  readonly code = 'refresh_unavailable';
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(message);
  }
}

/** A stored value could not be decrypted (its key is missing from the keyring, or it was tampered with). */
export class KeyUnavailableError extends TokenKeeperError {
  readonly code = 'key_unavailable';
}

/**
 * A provider item's settings no longer match the MAC the keyring made when the API stored them (they
 * were changed in the table, or stored before settings were authenticated): nothing is sent to the
 * provider and none of its secrets is decrypted until a PUT of the provider restores it.
 */
export class ProviderIntegrityError extends TokenKeeperError {
  readonly code = 'provider_integrity';
  constructor(
    readonly providerId: string,
    readonly problem: string,
  ) {
    super(`provider ${JSON.stringify(providerId)} failed its integrity check: ${problem}`);
  }
}

/** A step of MCP server discovery (RFC 9728, RFC 8414) failed; the message names the step. */
export class DiscoveryFailedError extends TokenKeeperError {
  readonly code = 'discovery_failed';
}

/** No way to get a client at the authorization server: no clientId, no metadata document, no DCR. */
export class ClientRegistrationUnavailableError extends TokenKeeperError {
  readonly code = 'client_registration_unavailable';
}

export class ConfigError extends Error {
  readonly code = 'config_error';
}
