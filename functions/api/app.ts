import { createHash, timingSafeEqual } from 'node:crypto';
import {
  ClientRegistrationUnavailableError,
  ConfigError,
  ConnectionNotFoundError,
  DiscoveryFailedError,
  InvalidRequestError,
  KeyUnavailableError,
  ProviderIntegrityError,
  ProviderNotFoundError,
  ReauthorizationRequiredError,
  RefreshUnavailableError,
  SessionNotFoundError,
} from '../core/errors.js';
import type { SessionKey } from '../core/model.js';
import { scrubDescription } from '../core/oauth/client.js';
import type { Clock, Logger, Metrics } from '../core/ports.js';
import type {
  CallbackOutcome,
  ConnectService,
  ProviderService,
  SessionService,
  SweepService,
  TokenService,
} from '../core/services.js';
import { connectedPage, errorPage, PAGE_HEADERS } from './pages.js';
import {
  isMcpProviderBody,
  parseAuthorizeBody,
  parseId,
  parseJsonBody,
  parseMcpProviderBody,
  parseProviderBody,
  parseProviderListQuery,
  parseRefreshRequest,
  parseSessionBody,
  parseSessionSearchQuery,
  parseSweepsQuery,
  parseTokenQuery,
} from './validation.js';

/**
 * The API as a plain function from request to response: routing, authentication, validation and
 * the one mapping from domain errors to HTTP. It knows no Lambda types (see ./http.ts).
 */

export interface ApiRequest {
  method: string;
  /**
   * The path as API Gateway (HTTP API, payload 2.0) delivers it in `rawPath`: already percent-decoded.
   * It is split on `/` and used as is; decoding it again would turn `%41` into `A` (see
   * functions/local/apigw-path.ts for what the gateway does to a request target).
   */
  path: string;
  query: Record<string, string>;
  /** lower-case names */
  headers: Record<string, string>;
  /** utf-8 text */
  body?: string;
  /**
   * When the answer must be out (epoch ms): the Lambda's remaining time less a margin, or the local
   * stack's equivalent budget. Waits, discovery and grants are cut to fit before it.
   */
  deadline?: number;
}

export interface ApiResponse {
  status: number;
  /** lower-case names */
  headers: Record<string, string>;
  body?: string;
}

export interface AppDeps {
  providers: ProviderService;
  sessions: SessionService;
  tokens: TokenService;
  /** The latest sweep's summary (GET /v1/sweeps/latest) and the recent ones (GET /v1/sweeps). */
  sweeps?: Pick<SweepService, 'latest' | 'history'>;
  /** The connect flow (MCP registration, authorize, callback); without it those routes answer 404. */
  connect?: ConnectService;
  logger: Logger;
  metrics: Metrics;
  clock: Clock;
  /** When set, every route but /v1/health requires `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Accept http:// and non-public provider URLs (local development and tests only). */
  allowInsecureHttp?: boolean;
  /** When refusing such a URL, name the variable that would allow it (not in Lambda, where it is refused). */
  insecureHttpHint?: boolean;
}

export type App = (req: ApiRequest) => Promise<ApiResponse>;

export const MAX_BODY_BYTES = 64 * 1024;
export const KEY_UNAVAILABLE_RETRY_AFTER_SECONDS = 60;

type RouteName =
  | 'health'
  | 'provider'
  | 'providerList'
  | 'refresh'
  | 'sessionSearch'
  | 'sessionList'
  | 'session'
  | 'token'
  | 'latestSweep'
  | 'sweepHistory'
  | 'authorize'
  | 'callback'
  | 'clientMetadata'
  | 'completeConnection';

interface RouteMatch {
  name: RouteName;
  allow: readonly string[];
  /** id segments, as delivered (already decoded) */
  params: string[];
}

/** Errors raised by the HTTP layer itself; mapped with the domain errors in toErrorResponse. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    description: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(description);
  }
}

function matchRoute(path: string): RouteMatch | undefined {
  const s = path.split('/');
  if (s[0] === '' && s[1] === 'oauth' && s.length === 4) {
    // One callback and one client metadata document per provider; the bare paths are no route.
    if (s[2] === 'callback') return { name: 'callback', allow: ['GET'], params: [s[3] as string] };
    if (s[2] === 'client-metadata')
      return { name: 'clientMetadata', allow: ['GET'], params: [s[3] as string] };
    return undefined;
  }
  if (s[0] !== '' || s[1] !== 'v1') return undefined;
  const rest = s.slice(2);
  switch (rest[0]) {
    case 'health':
      return rest.length === 1 ? { name: 'health', allow: ['GET'], params: [] } : undefined;
    case 'providers':
      if (rest.length === 1) return { name: 'providerList', allow: ['GET'], params: [] };
      return rest.length === 2 ? { name: 'provider', allow: ['GET', 'PUT'], params: [rest[1]] } : undefined;
    case 'sweeps':
      if (rest.length === 1) return { name: 'sweepHistory', allow: ['GET'], params: [] };
      return rest.length === 2 && rest[1] === 'latest'
        ? { name: 'latestSweep', allow: ['GET'], params: [] }
        : undefined;
    case 'sessions':
      if (rest.length === 1) return { name: 'sessionSearch', allow: ['GET'], params: [] };
      if (rest.length === 2) return { name: 'sessionList', allow: ['GET'], params: [rest[1]] };
      if (rest.length === 3) {
        return { name: 'session', allow: ['GET', 'PUT', 'DELETE'], params: [rest[1], rest[2]] };
      }
      if (rest.length === 4 && rest[3] === 'token') {
        return { name: 'token', allow: ['GET'], params: [rest[1], rest[2]] };
      }
      if (rest.length === 4 && rest[3] === 'authorize') {
        return { name: 'authorize', allow: ['POST'], params: [rest[1], rest[2]] };
      }
      if (rest.length === 4 && rest[3] === 'refresh') {
        return { name: 'refresh', allow: ['POST'], params: [rest[1], rest[2]] };
      }
      if (rest.length === 5 && rest[3] === 'connections') {
        return { name: 'completeConnection', allow: ['POST'], params: [rest[1], rest[2], rest[4]] };
      }
      return undefined;
    default:
      return undefined;
  }
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

const BEARER = /^bearer +(\S+) *$/iu;

/** A constant-time check of `Authorization: Bearer <key>` (digests compared, so lengths do not leak). */
export function createBearerCheck(apiKey: string): (authorization: string | undefined) => boolean {
  const expected = sha256(apiKey);
  return (authorization) => {
    const presented = BEARER.exec(authorization ?? '')?.[1];
    return presented !== undefined && timingSafeEqual(sha256(presented), expected);
  };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): ApiResponse {
  return {
    status,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers },
    body: JSON.stringify(body),
  };
}

function errorBody(code: string, description: string): { error: string; error_description: string } {
  return { error: code, error_description: description };
}

function retryAfter(seconds: number): string {
  return String(
    Number.isFinite(seconds) ? Math.max(0, Math.ceil(seconds)) : KEY_UNAVAILABLE_RETRY_AFTER_SECONDS,
  );
}

export function createApp(deps: AppDeps): App {
  const { providers, sessions, tokens, logger, metrics, clock } = deps;
  if (deps.apiKey === '') throw new ConfigError('apiKey must not be empty when set');
  const bearerOk = deps.apiKey === undefined ? undefined : createBearerCheck(deps.apiKey);

  function authenticate(headers: Record<string, string>): void {
    if (bearerOk === undefined) return;
    if (!bearerOk(headers.authorization)) {
      throw new HttpError(401, 'unauthorized', 'missing or invalid credentials', {
        'www-authenticate': 'Bearer',
      });
    }
  }

  /** The one place where errors become HTTP responses. */
  function toErrorResponse(err: unknown, req: ApiRequest, route: RouteName | 'unknown'): ApiResponse {
    if (err instanceof HttpError) return json(err.status, errorBody(err.code, err.message), err.headers);
    if (err instanceof InvalidRequestError) return json(400, errorBody(err.code, err.message));
    if (err instanceof DiscoveryFailedError || err instanceof ClientRegistrationUnavailableError) {
      return json(400, errorBody(err.code, err.message));
    }
    if (err instanceof ProviderNotFoundError) return json(404, errorBody(err.code, err.message));
    if (err instanceof SessionNotFoundError) return json(404, errorBody(err.code, err.message));
    if (err instanceof ConnectionNotFoundError) return json(404, errorBody(err.code, err.message));
    if (err instanceof ReauthorizationRequiredError) return json(409, errorBody(err.code, err.message));
    if (err instanceof RefreshUnavailableError) {
      return json(503, errorBody(err.code, err.message), {
        'retry-after': retryAfter(err.retryAfterSeconds),
      });
    }
    if (err instanceof KeyUnavailableError) {
      logger.error('stored credential cannot be decrypted', {
        route,
        method: req.method,
        errorName: err.name,
        errorMessage: err.message,
      });
      return json(503, errorBody(err.code, 'a stored credential cannot be decrypted right now'), {
        'retry-after': String(KEY_UNAVAILABLE_RETRY_AFTER_SECONDS),
      });
    }
    if (err instanceof ProviderIntegrityError) {
      // Not retried by clients: only a PUT of the provider (or its key back in the keyring) restores it.
      logger.error('provider settings failed their integrity check', {
        route,
        method: req.method,
        providerId: err.providerId,
        problem: err.problem,
      });
      return json(503, errorBody(err.code, err.message));
    }
    // An unexpected error's message is not ours to vouch for: scrub anything token-like from it.
    logger.error('unhandled error', {
      route,
      method: req.method,
      errorName: err instanceof Error ? err.name : typeof err,
      errorMessage: err instanceof Error ? scrubDescription(err.message) : undefined,
    });
    return json(500, errorBody('internal_error', 'an internal error occurred'));
  }

  function connectService(): ConnectService {
    if (!deps.connect) throw new HttpError(404, 'not_found', 'no such resource');
    return deps.connect;
  }

  /** The callback's answer: back to the application, or the keeper's own page. */
  function callbackAnswer(outcome: CallbackOutcome): ApiResponse {
    if (outcome.redirectUri !== undefined) {
      const target = new URL(outcome.redirectUri);
      if (outcome.ok) {
        // No code, state or user id: the application completes the connection for its own user.
        target.searchParams.set('status', 'pending');
        target.searchParams.set('connection', outcome.connectionId);
        target.searchParams.set('providerId', outcome.providerId);
      } else {
        target.searchParams.set('status', 'error');
        target.searchParams.set('error', outcome.error);
      }
      return {
        status: 303,
        headers: { location: target.href, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' },
      };
    }
    return outcome.ok
      ? { status: 200, headers: { ...PAGE_HEADERS }, body: connectedPage(outcome.userId, outcome.providerId) }
      : { status: 400, headers: { ...PAGE_HEADERS }, body: errorPage(outcome.error) };
  }

  async function dispatch(req: ApiRequest, route: RouteMatch, startedAt: number): Promise<ApiResponse> {
    // Public routes: the health check, the providers' callbacks (the state is the credential) and
    // client metadata documents the authorization servers fetch. Everything else needs credentials.
    if (route.name === 'health') return json(200, { status: 'ok' });
    if (route.name === 'callback') {
      // Public: the state is the credential. Nothing from the query is echoed but the error code.
      const connect = connectService();
      const providerId = parseId('providerId', route.params[0] as string);
      return callbackAnswer(await connect.callback(providerId, req.query, { deadline: req.deadline }));
    }
    if (route.name === 'clientMetadata') {
      const connect = connectService();
      const document = await connect.clientMetadata(parseId('providerId', route.params[0] as string));
      if (!document)
        throw new HttpError(
          404,
          'not_found',
          'the keeper has no public https URL to serve a client metadata document from',
        );
      return json(200, document, { 'cache-control': 'public, max-age=300' });
    }

    authenticate(req.headers);
    if (req.body !== undefined && Buffer.byteLength(req.body, 'utf8') > MAX_BODY_BYTES) {
      throw new HttpError(413, 'payload_too_large', `request body must be at most ${MAX_BODY_BYTES} bytes`);
    }

    switch (route.name) {
      case 'provider': {
        const providerId = parseId('providerId', route.params[0] as string);
        if (req.method === 'PUT') {
          const body = parseJsonBody(req.body);
          const urlRules = {
            allowInsecureHttp: deps.allowInsecureHttp ?? false,
            insecureHttpHint: deps.insecureHttpHint ?? false,
          };
          if (isMcpProviderBody(body)) {
            const input = parseMcpProviderBody(body, urlRules);
            const { created, provider } = await connectService().registerMcpServer(providerId, input, {
              deadline: req.deadline,
            });
            return json(created ? 201 : 200, provider);
          }
          const input = parseProviderBody(body, urlRules);
          const { created, provider } = await providers.put(providerId, input);
          return json(created ? 201 : 200, provider);
        }
        return json(200, await providers.get(providerId));
      }
      case 'providerList':
        return json(200, await providers.list(parseProviderListQuery(req.query)));
      case 'sessionSearch':
        return json(200, await sessions.search(parseSessionSearchQuery(req.query)));
      case 'sweepHistory': {
        const since = parseSweepsQuery(req.query, Math.floor(clock.now() / 1000));
        if (!deps.sweeps) throw new HttpError(404, 'not_found', 'no such resource');
        return json(200, { sweeps: await deps.sweeps.history(since) });
      }
      case 'latestSweep': {
        const latest = await deps.sweeps?.latest();
        if (!latest) throw new HttpError(404, 'not_found', 'no sweep has finished yet');
        return json(200, latest);
      }
      case 'sessionList': {
        const userId = parseId('userId', route.params[0] as string);
        return json(200, { sessions: await sessions.list(userId) });
      }
      case 'session': {
        const key = sessionKey(route.params);
        if (req.method === 'PUT') {
          const token = parseSessionBody(parseJsonBody(req.body));
          const { created, session } = await sessions.put(key, token);
          return json(created ? 201 : 200, session);
        }
        if (req.method === 'DELETE') {
          await sessions.delete(key, { deadline: req.deadline });
          return { status: 204, headers: { 'cache-control': 'no-store' } };
        }
        return json(200, await sessions.get(key));
      }
      case 'token': {
        const key = sessionKey(route.params);
        const request = parseTokenQuery(req.query);
        const result = await tokens.getToken(key, request, { deadline: req.deadline });
        metrics.add('TokensServed', 'Count', 1);
        metrics.add('TokenLatency', 'Milliseconds', Math.max(0, clock.now() - startedAt));
        return json(200, result, { pragma: 'no-cache' });
      }
      case 'authorize': {
        const key = sessionKey(route.params);
        const input = parseAuthorizeBody(req.body);
        return json(201, await connectService().authorize(key, input, { deadline: req.deadline }));
      }
      case 'completeConnection': {
        const key = sessionKey(route.params);
        parseRefreshRequest(req.query, req.body);
        const session = await connectService().completeConnection(key, route.params[2] as string);
        return json(200, session);
      }
      case 'refresh': {
        // A forced refresh through the token route's own path (lease, single flight, classification);
        // its token is dropped here: the answer is the session's metadata, never a token.
        const key = sessionKey(route.params);
        parseRefreshRequest(req.query, req.body);
        await tokens.getToken(key, { minValidity: 0, force: true }, { deadline: req.deadline });
        return json(200, await sessions.get(key));
      }
    }
  }

  return async (req) => {
    const startedAt = clock.now();
    const route = matchRoute(req.path);
    try {
      if (route === undefined) throw new HttpError(404, 'not_found', 'no such resource');
      if (!route.allow.includes(req.method)) {
        throw new HttpError(405, 'method_not_allowed', 'method not allowed for this resource', {
          allow: route.allow.join(', '),
        });
      }
      return await dispatch(req, route, startedAt);
    } catch (err) {
      return toErrorResponse(err, req, route?.name ?? 'unknown');
    }
  };
}

function sessionKey(params: string[]): SessionKey {
  return {
    userId: parseId('userId', params[0] as string),
    providerId: parseId('providerId', params[1] as string),
  };
}
