import * as oauth from 'oauth4webapi';
import { MAX_EPOCH_SECONDS, MAX_TOKEN_BYTES, type ProviderConfig } from '../model.js';
import type { Clock, FetchLike, Logger } from '../ports.js';
import { readBodyCapped } from './body.js';
import { AnswerDeadline } from './deadline.js';
import { ForbiddenDestinationError } from './net-guard.js';

/**
 * The OAuth client: refresh-token grants and revocation on oauth4webapi, with the provider's
 * metadata either given (tokenEndpoint) or discovered from its issuer (RFC 8414, then OpenID
 * discovery) and cached. Every failure is classified; nothing here throws for a provider's answer.
 */

/**
 * A 2xx answer as the keeper reads it. Only `refreshToken` matters for the grant's survival: the
 * provider rotated before it answered, so an answer carrying one is committed whatever else it holds.
 */
export interface GrantTokens {
  /** Absent when the answer had none, or none the keeper can store (empty, not a string, too large). */
  accessToken?: string;
  refreshToken?: string;
  tokenType: string;
  /** Absent when the answer had none: the previous scope stands. */
  scope?: string;
  expiresIn?: number;
  /** The refresh token's own lifetime (Keycloak `refresh_expires_in`, GitHub `refresh_token_expires_in`). */
  refreshExpiresIn?: number;
}

/**
 * `no_time`: the deadline came before the grant could start; nothing was sent to the token endpoint.
 * A grant that was sent and never answered (its time ran out, or the connection broke after the
 * request went out) is `transient` with code `grant_outcome_unknown`: the provider may have rotated.
 */
export type FailureClass = 'invalid_grant' | 'client_rejected' | 'transient' | 'no_time';

export interface GrantFailure {
  class: FailureClass;
  /** OAuth error code or one of ours: timeout, network_error, http_<status>, invalid_response, … */
  code: string;
  /** Trimmed and scrubbed of anything token-like. */
  description: string;
  retryAfterSeconds?: number;
}

export type GrantResult = { ok: true; tokens: GrantTokens } | { ok: false; failure: GrantFailure };

export interface OAuthClientOptions {
  fetch: FetchLike;
  clock: Clock;
  logger: Logger;
  /** Time of one discovery, revocation or code-exchange request. */
  timeoutMs: number;
  /** Time of one refresh grant (its answer's head); default `timeoutMs`. */
  grantTimeoutMs?: number;
  allowInsecureHttp: boolean;
  /** Resolves the client secret (stored, or from Secrets Manager by ARN). */
  clientSecret(provider: ProviderConfig): Promise<string | undefined>;
  /** Largest response body read from a provider. */
  maxResponseBytes?: number;
  discoveryTtlMs?: number;
}

const DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024;

/**
 * Error codes that mean the refresh token is dead, whatever the status: `invalid_grant` (RFC 6749),
 * GitHub's `bad_refresh_token` (sent with HTTP 200) and Slack's `invalid_refresh_token` (HTTP 200,
 * `"ok": false`). Any other code in a 200 answer is transient.
 */
const DEAD_GRANT_ERRORS: ReadonlySet<string> = new Set([
  'invalid_grant',
  'bad_refresh_token',
  'invalid_refresh_token',
]);
const MAX_DESCRIPTION = 200;
const MAX_RETRY_AFTER_SECONDS = 3600;

/** Bounded, scrubbed text for storage and display: no long opaque strings (tokens, secrets, JWTs). */
export function scrubDescription(text: unknown, secrets: readonly (string | undefined)[] = []): string {
  let out = typeof text === 'string' ? text : '';
  for (const secret of secrets) {
    if (secret && secret.length >= 4) out = out.split(secret).join('[redacted]');
  }
  out = out
    .replace(/\p{Cc}/gu, ' ')
    .replace(/[A-Za-z0-9\-._~+/]{20,}=*/g, '[redacted]')
    .trim();
  return out.length > MAX_DESCRIPTION ? `${out.slice(0, MAX_DESCRIPTION - 1)}…` : out;
}

/** Parses Retry-After (delta-seconds or HTTP-date) into whole seconds from now, bounded. */
export function parseRetryAfter(header: string | null, nowMs: number): number | undefined {
  if (!header) return undefined;
  const trimmed = header.trim();
  let seconds: number | undefined;
  if (/^\d+$/.test(trimmed)) seconds = Number(trimmed);
  else if (/^[A-Za-z]{3,9},? /.test(trimmed)) {
    // Every HTTP-date form starts with a day name; anything else (e.g. "1.5", "-5") is malformed,
    // though V8's lenient Date.parse would read it as a date in 2001.
    const at = Date.parse(trimmed);
    if (!Number.isNaN(at)) seconds = Math.max(0, Math.ceil((at - nowMs) / 1000));
  }
  if (seconds === undefined || !Number.isFinite(seconds)) return undefined;
  return Math.min(seconds, MAX_RETRY_AFTER_SECONDS);
}

/**
 * A provider's `error` value as a code: kept when it has the shape of an OAuth error code
 * (RFC 6749 §5.2, e.g. `temporarily_unavailable`), which scrubDescription would otherwise redact
 * for its length; anything else is scrubbed like a description.
 */
export function errorCode(error: string, secrets: readonly (string | undefined)[] = []): string {
  const known = /^[a-z]+(?:_[a-z]+)*$/.test(error) && error.length <= 64;
  return known && !secrets.some((s) => s && error.includes(s)) ? error : scrubDescription(error, secrets);
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/**
 * A lifetime in seconds as providers send it: a number, or a numeric string (`"3599"`, seen from
 * Entra's v1 endpoint and others). Absent → undefined; anything else → 'invalid'.
 */
export function parseLifetime(value: unknown): number | undefined | 'invalid' {
  if (value === undefined || value === null) return undefined;
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && /^\s*\d+(?:\.\d+)?\s*$/.test(value)) n = Number(value);
  else return 'invalid';
  if (!Number.isFinite(n) || n < 0) return 'invalid';
  return Math.min(Math.floor(n), MAX_EPOCH_SECONDS);
}

class ResponseTooLargeError extends Error {}

/** The time before a deadline ran out before the grant could be sent. */
class NoTimeForGrantError extends Error {}

/** Our side of the client configuration is unusable (say, a secret-based method without a secret). */
export class ClientConfigurationError extends Error {}

interface LastResponse {
  status?: number;
  retryAfter?: string | null;
  /** The request's time limit (an answer that arrived beats it). */
  deadline?: AnswerDeadline;
  /** The request was handed to fetch: from here a lost answer leaves the outcome unknown. */
  sent?: boolean;
}

/** Connection errors that mean the request never left this host. */
const NOT_SENT_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
]);

function causeCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: unknown } } | undefined)?.cause;
  const code = cause?.code ?? (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * A grant that was sent and whose answer never came (its time ran out, or the connection broke after
 * the request left): the provider may have rotated the refresh token, so the outcome is unknown.
 * Undefined when the failure says something else (an answer, or a request that never left).
 */
function outcomeUnknown(err: unknown, failure: GrantFailure, last: LastResponse): GrantFailure | undefined {
  if (!last.sent || failure.class !== 'transient') return undefined;
  if (NOT_SENT_CODES.has(causeCode(err) ?? '')) return undefined;
  const answered = last.status !== undefined && !(last.status >= 200 && last.status < 300);
  if (answered) return undefined;
  if (failure.code === 'timeout') {
    return {
      class: 'transient',
      code: 'grant_outcome_unknown',
      description: `the grant was sent and no answer came within ${last.deadline?.ms ?? 0} ms; the provider may have rotated the refresh token`,
    };
  }
  if (
    failure.code === 'network_error' ||
    (last.status !== undefined && failure.code === 'invalid_response')
  ) {
    return {
      class: 'transient',
      code: 'grant_outcome_unknown',
      description: `the connection broke after the grant was sent (${failure.description || 'no answer'}); the provider may have rotated the refresh token`,
    };
  }
  return undefined;
}

export class OAuthClient {
  private readonly options: OAuthClientOptions;
  private readonly discovered = new Map<string, { as: oauth.AuthorizationServer; at: number }>();

  constructor(options: OAuthClientOptions) {
    this.options = options;
  }

  /** A fetch for oauth4webapi that caps the body size and remembers status and Retry-After. */
  private boundedFetch(last: LastResponse) {
    const max = this.options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    return async (url: string, init: RequestInit): Promise<Response> => {
      last.sent = true;
      const response = await this.options.fetch(url, init);
      last.deadline?.headArrived();
      last.status = response.status;
      last.retryAfter = response.headers.get('retry-after');
      let body: Buffer;
      try {
        body = await readBodyCapped(response, max, (declared) =>
          declared === undefined
            ? new ResponseTooLargeError(`response body exceeds ${max} bytes`)
            : new ResponseTooLargeError(`response body of ${declared} bytes exceeds ${max}`),
        );
      } finally {
        last.deadline?.finished();
      }
      return new Response(body.length === 0 ? null : body, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      });
    };
  }

  /**
   * `timeoutMs` bounds the wait for the answer's head; an answer that arrived by the time the timer is
   * acted on is read (see AnswerDeadline), whatever the event loop's lag.
   */
  private requestOptions(last: LastResponse, timeoutMs = this.options.timeoutMs) {
    last.deadline = new AnswerDeadline(Math.max(1, timeoutMs));
    return {
      signal: last.deadline.signal,
      [oauth.customFetch]: this.boundedFetch(last),
      [oauth.allowInsecureRequests]: this.options.allowInsecureHttp,
    };
  }

  /**
   * The provider's authorization server metadata: given, or discovered and cached. `by` (epoch ms)
   * bounds discovery: each request gets at most the time left before it.
   */
  async authorizationServer(provider: ProviderConfig, by?: number): Promise<oauth.AuthorizationServer> {
    if (provider.tokenEndpoint) {
      return {
        issuer: provider.issuer ?? new URL(provider.tokenEndpoint).origin,
        token_endpoint: provider.tokenEndpoint,
        revocation_endpoint: provider.revocationEndpoint,
      };
    }
    if (!provider.issuer) throw new Error('provider has neither issuer nor tokenEndpoint');
    const ttl = this.options.discoveryTtlMs ?? 3_600_000;
    const cached = this.discovered.get(provider.issuer);
    if (cached && this.options.clock.now() - cached.at < ttl) return this.withRevocation(cached.as, provider);
    const issuer = new URL(provider.issuer);
    let lastError: unknown;
    for (const algorithm of ['oauth2', 'oidc'] as const) {
      const last: LastResponse = {};
      try {
        const left = by === undefined ? this.options.timeoutMs : by - this.options.clock.now();
        if (left <= 0) throw new NoTimeForGrantError('no time left for discovery before the deadline');
        const response = await oauth.discoveryRequest(issuer, {
          algorithm,
          ...this.requestOptions(last, Math.min(this.options.timeoutMs, left)),
        });
        const as = await oauth.processDiscoveryResponse(issuer, response);
        if (!as.token_endpoint) throw new Error('discovered metadata has no token_endpoint');
        this.discovered.set(provider.issuer, { as, at: this.options.clock.now() });
        return this.withRevocation(as, provider);
      } catch (err) {
        lastError = err;
      } finally {
        last.deadline?.finished();
      }
    }
    throw lastError;
  }

  private withRevocation(as: oauth.AuthorizationServer, provider: ProviderConfig): oauth.AuthorizationServer {
    return provider.revocationEndpoint ? { ...as, revocation_endpoint: provider.revocationEndpoint } : as;
  }

  /** The client authentication and the secret it uses (resolved once per request). */
  private async clientAuth(provider: ProviderConfig): Promise<{ auth: oauth.ClientAuth; secret?: string }> {
    if (provider.clientAuthMethod === 'none') return { auth: oauth.None() };
    const secret = await this.options.clientSecret(provider);
    if (!secret)
      throw new ClientConfigurationError(
        `${provider.clientAuthMethod} needs a client secret and none is set`,
      );
    const auth =
      provider.clientAuthMethod === 'client_secret_post'
        ? oauth.ClientSecretPost(secret)
        : oauth.ClientSecretBasic(secret);
    return { auth, secret };
  }

  /**
   * One refresh-token grant. Never throws for the provider's answer; classifies it instead.
   * `grantBy` (epoch ms) is the latest moment the grant may be sent: discovery is cut to fit before
   * it, and past it nothing is sent (class `no_time`). The grant request's life is the grant timeout,
   * cut to end by `endBy` (epoch ms): an answer that arrived by its end is read; none → `grant_outcome_unknown`.
   */
  async refresh(
    provider: ProviderConfig,
    refreshToken: string,
    options: { grantBy?: number; endBy?: number } = {},
  ): Promise<GrantResult> {
    const last: LastResponse = {};
    let secret: string | undefined;
    try {
      const as = await this.authorizationServer(provider, options.grantBy);
      const { auth, secret: resolved } = await this.clientAuth(provider);
      secret = resolved;
      if (options.grantBy !== undefined && this.options.clock.now() > options.grantBy) {
        throw new NoTimeForGrantError('no time left for the grant before the deadline');
      }
      const client: oauth.Client = { client_id: provider.clientId };
      const additionalParameters: Record<string, string> = {};
      if (provider.resource) additionalParameters.resource = provider.resource;
      const response = await oauth.refreshTokenGrantRequest(as, client, auth, refreshToken, {
        ...this.requestOptions(
          last,
          Math.min(
            this.options.grantTimeoutMs ?? this.options.timeoutMs,
            (options.endBy ?? Number.POSITIVE_INFINITY) - this.options.clock.now(),
          ),
        ),
        additionalParameters,
      });
      if (response.status >= 200 && response.status < 300) {
        return await this.readGrantAnswer(provider, response, [refreshToken, secret]);
      }
      // Not a success: oauth4webapi parses the error body or challenge, and throws for classify().
      await oauth.processRefreshTokenResponse(as, client, response);
      throw new oauth.OperationProcessingError(`unexpected HTTP ${response.status} from the token endpoint`);
    } catch (err) {
      const failure = this.classify(err, last, [refreshToken, secret]);
      return { ok: false, failure: outcomeUnknown(err, failure, last) ?? failure };
    } finally {
      last.deadline?.finished();
    }
  }

  /**
   * The authorization-code grant (RFC 6749 §4.1.3) with the PKCE verifier and the RFC 8707 `resource`.
   * `callbackParameters` are what oauth4webapi's validateAuthResponse returned. Never throws for the
   * provider's answer; classifies it like a refresh. An answer without an access token is a failure.
   */
  async exchangeCode(
    provider: ProviderConfig,
    as: oauth.AuthorizationServer,
    callbackParameters: URLSearchParams,
    redirectUri: string,
    codeVerifier: string,
    options: { by?: number } = {},
  ): Promise<GrantResult> {
    const last: LastResponse = {};
    const code = callbackParameters.get('code') ?? undefined;
    let secret: string | undefined;
    try {
      const { auth, secret: resolved } = await this.clientAuth(provider);
      secret = resolved;
      const left = options.by === undefined ? this.options.timeoutMs : options.by - this.options.clock.now();
      if (left <= 0) throw new NoTimeForGrantError('no time left for the code exchange before the deadline');
      const client: oauth.Client = { client_id: provider.clientId };
      const additionalParameters: Record<string, string> = {};
      if (provider.resource) additionalParameters.resource = provider.resource;
      const response = await oauth.authorizationCodeGrantRequest(
        as,
        client,
        auth,
        callbackParameters,
        redirectUri,
        codeVerifier,
        { ...this.requestOptions(last, Math.min(this.options.timeoutMs, left)), additionalParameters },
      );
      if (response.status >= 200 && response.status < 300) {
        const result = await this.readGrantAnswer(provider, response, [code, codeVerifier, secret]);
        if (result.ok && result.tokens.accessToken === undefined) {
          return {
            ok: false,
            failure: {
              class: 'transient',
              code: 'invalid_response',
              description: 'token endpoint answered the code exchange without an access token',
            },
          };
        }
        return result;
      }
      await oauth.processAuthorizationCodeResponse(as, client, response);
      throw new oauth.OperationProcessingError(`unexpected HTTP ${response.status} from the token endpoint`);
    } catch (err) {
      return { ok: false, failure: this.classify(err, last, [code, codeVerifier, secret]) };
    } finally {
      last.deadline?.finished();
    }
  }

  /**
   * Reads a 2xx answer leniently. The keeper logs no one in, so an `id_token` is neither validated nor
   * stored, and nothing outside the refresh token (an odd `token_type` or `expires_in`, unknown
   * fields) can make the answer fail: the provider has already rotated, and dropping its new refresh
   * token would turn the next grant into a reuse that revokes the whole grant.
   */
  private async readGrantAnswer(
    provider: ProviderConfig,
    response: Response,
    secrets: readonly (string | undefined)[],
  ): Promise<GrantResult> {
    const transient = (code: string, description: string): GrantResult => ({
      ok: false,
      failure: { class: 'transient', code, description },
    });
    let body: unknown;
    try {
      body = JSON.parse(await response.text());
    } catch {
      return transient(
        'invalid_response',
        `token endpoint answered HTTP ${response.status} with a body that is not JSON`,
      );
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      return transient(
        'invalid_response',
        `token endpoint answered HTTP ${response.status} with a body that is not a JSON object`,
      );
    }
    const answer = body as Record<string, unknown>;
    const warn = (message: string, extra: Record<string, unknown> = {}) =>
      this.options.logger.warn(message, { providerId: provider.providerId, ...extra });
    const refreshToken = nonEmptyString(answer.refresh_token);
    let accessToken = nonEmptyString(answer.access_token);
    if (accessToken !== undefined && Buffer.byteLength(accessToken, 'utf8') > MAX_TOKEN_BYTES) {
      warn('access token larger than the keeper stores; treated as absent', {
        bytes: Buffer.byteLength(accessToken, 'utf8'),
        limit: MAX_TOKEN_BYTES,
      });
      accessToken = undefined;
    }
    if (refreshToken === undefined && accessToken === undefined) {
      if (typeof answer.error === 'string' && answer.error !== '') {
        // "200 with an error body" (GitHub, Slack): the grant's fate is in the code.
        const code = errorCode(answer.error, secrets);
        const description = scrubDescription(answer.error_description ?? answer.error, secrets);
        return {
          ok: false,
          failure: DEAD_GRANT_ERRORS.has(answer.error)
            ? { class: 'invalid_grant', code, description }
            : { class: 'transient', code, description },
        };
      }
      return transient(
        'invalid_response',
        `token endpoint answered HTTP ${response.status} without an access_token`,
      );
    }
    if (refreshToken !== undefined && accessToken === undefined) {
      warn('token endpoint rotated the refresh token but sent no usable access token; refresh token kept');
    }
    const lifetime = (field: string): number | undefined => {
      const parsed = parseLifetime(answer[field]);
      if (parsed === 'invalid') {
        warn(`${field} is not a number of seconds; treated as unknown`, {
          field,
          type: typeof answer[field],
        });
        return undefined;
      }
      return parsed;
    };
    const expiresIn = lifetime('expires_in');
    // Keycloak sends refresh_expires_in 0 for offline tokens, which have no idle expiry.
    const refreshLifetime = lifetime('refresh_expires_in') ?? lifetime('refresh_token_expires_in');
    const rawType = typeof answer.token_type === 'string' ? answer.token_type.trim() : '';
    return {
      ok: true,
      tokens: {
        accessToken,
        refreshToken,
        // RFC 6749 §7.1: the type is case-insensitive; serve the conventional spelling for Bearer.
        tokenType: rawType === '' || /^bearer$/i.test(rawType) ? 'Bearer' : rawType.slice(0, 128),
        scope: typeof answer.scope === 'string' ? answer.scope : undefined,
        expiresIn,
        refreshExpiresIn: refreshLifetime === 0 ? undefined : refreshLifetime,
      },
    };
  }

  /** Best-effort RFC 7009 revocation; returns whether the provider accepted it. */
  async revoke(
    provider: ProviderConfig,
    token: string,
    hint: 'refresh_token' | 'access_token',
    options: { by?: number } = {},
  ): Promise<boolean> {
    let request: LastResponse | undefined;
    try {
      const as = await this.authorizationServer(provider, options.by);
      if (!as.revocation_endpoint) return false;
      const left = options.by === undefined ? this.options.timeoutMs : options.by - this.options.clock.now();
      if (left <= 0) throw new NoTimeForGrantError('no time left for the revocation before the deadline');
      const last: LastResponse = {};
      request = last;
      const response = await oauth.revocationRequest(
        as,
        { client_id: provider.clientId },
        (await this.clientAuth(provider)).auth,
        token,
        {
          ...this.requestOptions(last, Math.min(this.options.timeoutMs, left)),
          additionalParameters: { token_type_hint: hint },
        },
      );
      await oauth.processRevocationResponse(response);
      return true;
    } catch (err) {
      this.options.logger.warn('token revocation failed', {
        providerId: provider.providerId,
        code: this.classify(err, {}, [token]).code,
      });
      return false;
    } finally {
      request?.deadline?.finished();
    }
  }

  private classify(err: unknown, last: LastResponse, secrets: (string | undefined)[]): GrantFailure {
    const now = this.options.clock.now();
    const retryAfterSeconds = parseRetryAfter(last.retryAfter ?? null, now);
    if (err instanceof NoTimeForGrantError) {
      return { class: 'no_time', code: 'no_time', description: err.message };
    }
    if (err instanceof ForbiddenDestinationError) {
      // A provider URL (given or discovered) points somewhere we never connect to: configuration.
      return {
        class: 'client_rejected',
        code: 'forbidden_destination',
        description: scrubDescription(`provider URL refused: ${err.reason}`),
      };
    }
    if (err instanceof oauth.ResponseBodyError) {
      const description = scrubDescription(err.error_description, secrets);
      if (err.status >= 400 && err.status < 500 && DEAD_GRANT_ERRORS.has(err.error)) {
        return { class: 'invalid_grant', code: err.error, description };
      }
      if (
        err.status >= 400 &&
        err.status < 500 &&
        (err.error === 'invalid_client' ||
          err.error === 'unauthorized_client' ||
          err.error === 'invalid_target')
      ) {
        // Our client or its configuration (RFC 8707 resource) is wrong: the grant may be fine, and a
        // retry would only present the same refresh token again (some servers consume it first).

        return { class: 'client_rejected', code: err.error, description };
      }
      return {
        class: 'transient',
        code: errorCode(err.error, secrets) || `http_${err.status}`,
        description,
        retryAfterSeconds,
      };
    }
    if (err instanceof oauth.WWWAuthenticateChallengeError) {
      if (err.status === 401) {
        return {
          class: 'client_rejected',
          code: 'invalid_client',
          description: 'token endpoint answered 401 with a challenge',
        };
      }
      return {
        class: 'transient',
        code: `http_${err.status}`,
        description: 'token endpoint answered with a challenge',
        retryAfterSeconds,
      };
    }
    const name = (err as { name?: string } | undefined)?.name;
    if (name === 'TimeoutError' || name === 'AbortError') {
      return {
        class: 'transient',
        code: 'timeout',
        description: `no answer within ${last.deadline?.ms ?? this.options.timeoutMs} ms`,
      };
    }
    if (err instanceof ClientConfigurationError) {
      return {
        class: 'client_rejected',
        code: 'client_misconfigured',
        description: scrubDescription(err.message, secrets),
      };
    }
    if (err instanceof ResponseTooLargeError) {
      return { class: 'transient', code: 'response_too_large', description: scrubDescription(err.message) };
    }
    if (last.status !== undefined && (last.status === 429 || last.status >= 500)) {
      return {
        class: 'transient',
        code: `http_${last.status}`,
        description: `token endpoint answered HTTP ${last.status}`,
        retryAfterSeconds,
      };
    }
    if (err instanceof oauth.OperationProcessingError || err instanceof oauth.UnsupportedOperationError) {
      return {
        class: 'transient',
        code: 'invalid_response',
        description: scrubDescription(err.message, secrets),
        retryAfterSeconds,
      };
    }
    if (last.status === undefined) {
      return {
        class: 'transient',
        code: 'network_error',
        description: scrubDescription((err as Error)?.message, secrets),
      };
    }
    return {
      class: 'transient',
      code: 'invalid_response',
      description: scrubDescription((err as Error)?.message, secrets),
      retryAfterSeconds,
    };
  }
}
