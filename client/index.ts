import {
  apiError,
  ReauthorizationRequiredError,
  ServiceUnavailableError,
  SessionNotFoundError,
  TokenKeeperConnectionError,
} from './errors.js';
import { idProblem } from './ids.js';
import {
  type AwsCredentials,
  type CredentialProvider,
  createSigV4Signer,
  type RequestSigner,
} from './sigv4.js';
import type {
  Authorization,
  AuthorizeOptions,
  McpProviderInput,
  Provider,
  ProviderInput,
  PutResult,
  Session,
  SweepRecord,
  SweepSummary,
  Token,
  TokenResponse,
} from './types.js';

export * from './errors.js';
export { ID_RULE, idProblem } from './ids.js';
export type { AwsCredentials, CredentialProvider } from './sigv4.js';
export * from './types.js';

/**
 * A small typed client for the tokenkeeper v1 HTTP API.
 *
 * `getToken` keeps each token in memory until `expires_at − minValidity`, lets concurrent calls for
 * one session share one request, waits out a 503 as its `Retry-After` asks (a bounded number of
 * times) and throws typed errors carrying the server's `error` code.
 */

export type ClientAuth =
  /** The local stack: `Authorization: Bearer <key>`. */
  | { kind: 'bearer'; apiKey: string }
  /** A deployed API (API Gateway, IAM auth): SigV4 for `execute-api`; credentials default to the AWS default chain. */
  | { kind: 'sigv4'; region: string; credentials?: AwsCredentials | CredentialProvider };

export interface TokenKeeperClientOptions {
  /** e.g. `http://127.0.0.1:8787` or `https://abc123.execute-api.eu-west-1.amazonaws.com` (a stage path is kept). */
  baseUrl: string;
  auth: ClientAuth;
  fetch?: typeof fetch;
  /** Epoch milliseconds; default Date.now. Also the SigV4 signing date. */
  clock?: () => number;
  /** Used to wait out a 503; default setTimeout. */
  sleep?: (ms: number) => Promise<void>;
  /** How many times getToken retries a 503. Default 2. */
  maxRetries?: number;
  /** A 503 asking to wait longer than this (seconds) is thrown at once instead of waited out. Default 30. */
  maxRetryDelaySeconds?: number;
  /** Timeout of each HTTP request in milliseconds. Default 30 000. */
  timeoutMs?: number;
}

export interface GetTokenOptions {
  /** Seconds the token must stay valid. Default 60 (the server's default). */
  minValidity?: number;
  /** Ask for a new token even if the current one looks valid (say, the resource server rejected it). */
  force?: boolean;
  /**
   * The access token a resource server refused (401). The keeper refreshes only while it still holds
   * that token; a newer one (already cached here, or refreshed by another caller) is served at once.
   * Only its fingerprint (16 hex characters of its SHA-256) is sent.
   */
  rejected?: string;
}

/** The `rejected` fingerprint of an access token: the first 16 hex characters of its SHA-256. */
export async function tokenFingerprint(accessToken: string): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken));
  return Buffer.from(digest).toString('hex').slice(0, 16);
}

export const DEFAULT_MIN_VALIDITY = 60;

interface CacheEntry {
  token: Token;
  /** epoch seconds; only tokens with a known expiry are cached */
  expiresAt: number;
}

interface Inflight {
  promise: Promise<Token>;
  force: boolean;
}

interface RawResponse {
  status: number;
  headers: Headers;
  body: unknown;
}

const CACHE_PRUNE_THRESHOLD = 1000;

function defaultSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The AWS default credential chain, loaded on first use (bearer users never pay for it). */
export function defaultCredentialChain(): CredentialProvider {
  let provider: Promise<CredentialProvider> | undefined;
  return async () => {
    provider ??= import('@aws-sdk/credential-provider-node').then(({ defaultProvider }) => {
      const chain = defaultProvider();
      return () => chain();
    });
    return (await provider)();
  };
}

/**
 * Percent-encodes one id as a path segment, once (API Gateway decodes it once), also `!'()*`, which
 * encodeURIComponent leaves. Ids the keeper would refuse are refused here, before anything is sent.
 */
function segment(name: string, value: string): string {
  const problem = idProblem(name, value);
  if (problem !== undefined) throw new TypeError(problem);
  return encodeURIComponent(value).replace(
    /[!'()*]/gu,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function cacheKey(userId: string, providerId: string): string {
  return `${userId}\u0000${providerId}`;
}

export class TokenKeeperClient {
  private readonly baseUrl: string;
  private readonly fetchImpl: typeof fetch;
  private readonly clock: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly maxRetries: number;
  private readonly maxRetryDelaySeconds: number;
  private readonly timeoutMs: number;
  private readonly bearer?: string;
  private readonly signer?: RequestSigner;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inflight = new Map<string, Inflight>();
  /** Bumped by forced calls and writes: answers to requests started before are not cached. */
  private readonly epochs = new Map<string, number>();

  constructor(options: TokenKeeperClientOptions) {
    const base = new URL(options.baseUrl);
    if (base.protocol !== 'https:' && base.protocol !== 'http:') {
      throw new TypeError('baseUrl must be an http(s) URL');
    }
    this.baseUrl = `${base.origin}${base.pathname.replace(/\/+$/u, '')}`;
    this.fetchImpl = options.fetch ?? globalThis.fetch;
    this.clock = options.clock ?? Date.now;
    this.sleep = options.sleep ?? defaultSleep;
    this.maxRetries = Math.max(0, options.maxRetries ?? 2);
    this.maxRetryDelaySeconds = options.maxRetryDelaySeconds ?? 30;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    if (options.auth.kind === 'bearer') {
      if (!options.auth.apiKey) throw new TypeError('auth.apiKey must not be empty');
      this.bearer = options.auth.apiKey;
    } else {
      this.signer = createSigV4Signer({
        region: options.auth.region,
        credentials: options.auth.credentials ?? defaultCredentialChain(),
      });
    }
  }

  // --- tokens --------------------------------------------------------------------------------

  /**
   * A valid access token for the session. Served from memory while it stays valid for
   * `minValidity` seconds; `force` bypasses and replaces the cached token.
   * @throws SessionNotFoundError, ReauthorizationRequiredError, RefreshUnavailableError (after the retries), …
   */
  async getToken(userId: string, providerId: string, options: GetTokenOptions = {}): Promise<Token> {
    const minValidity = options.minValidity ?? DEFAULT_MIN_VALIDITY;
    const rejected = options.rejected;
    const force = (options.force ?? false) || rejected !== undefined;
    if (!Number.isInteger(minValidity) || minValidity < 0) {
      throw new TypeError('minValidity must be a non-negative integer (seconds)');
    }
    const path = `/v1/sessions/${segment('userId', userId)}/${segment('providerId', providerId)}/token`;
    const key = cacheKey(userId, providerId);

    const cached = this.cache.get(key);
    if (cached && this.validFor(cached.expiresAt, minValidity)) {
      // A cached token other than the refused one is already the newer token.
      if (!force || (rejected !== undefined && cached.token.access_token !== rejected)) {
        return this.present(cached.token);
      }
    }
    const pending = this.inflight.get(key);
    if (pending && (pending.force || !force)) {
      // Share the call already in flight (a forced one satisfies anyone; a plain one, plain callers).
      const token = await pending.promise;
      if (force || token.expires_at === null || this.validFor(token.expires_at, minValidity)) {
        return this.present(token);
      }
    }
    const fingerprint = rejected === undefined ? undefined : await tokenFingerprint(rejected);
    return this.present(await this.startTokenRequest(key, path, minValidity, force, fingerprint));
  }

  /**
   * Calls a resource server with the session's access token, and on a 401 asks the keeper for a new
   * token once (`rejected` = the refused one, so concurrent callers share one grant) and calls again.
   * A second 401 is returned as it came.
   */
  async callWithToken(
    userId: string,
    providerId: string,
    call: (token: Token) => Promise<Response>,
    options: Omit<GetTokenOptions, 'force' | 'rejected'> = {},
  ): Promise<Response> {
    const token = await this.getToken(userId, providerId, options);
    const first = await call(token);
    if (first.status !== 401) return first;
    await first.body?.cancel().catch(() => {});
    const renewed = await this.getToken(userId, providerId, { ...options, rejected: token.access_token });
    return call(renewed);
  }

  /** Forgets cached tokens (all, or one session's). */
  clearCache(userId?: string, providerId?: string): void {
    if (userId === undefined || providerId === undefined) {
      this.cache.clear();
      return;
    }
    this.invalidate(cacheKey(userId, providerId));
  }

  private startTokenRequest(
    key: string,
    path: string,
    minValidity: number,
    force: boolean,
    rejected?: string,
  ): Promise<Token> {
    if (force) this.invalidate(key);
    const epoch = this.epochs.get(key) ?? 0;
    const query: Record<string, string> = { minValidity: String(minValidity) };
    if (force) query.force = 'true';
    if (rejected !== undefined) query.rejected = rejected;
    const promise = this.withRetries(() => this.request('GET', path, { query })).then(
      (res) => {
        const token = res.body as Token;
        if ((this.epochs.get(key) ?? 0) === epoch && typeof token.expires_at === 'number') {
          this.remember(key, { token, expiresAt: token.expires_at });
        }
        return token;
      },
      (err: unknown) => {
        if (err instanceof ReauthorizationRequiredError || err instanceof SessionNotFoundError) {
          this.invalidate(key);
        }
        throw err;
      },
    );
    const entry: Inflight = { promise, force };
    this.inflight.set(key, entry);
    const forget = () => {
      if (this.inflight.get(key) === entry) this.inflight.delete(key);
    };
    promise.then(forget, forget);
    return promise;
  }

  private async withRetries(call: () => Promise<RawResponse>): Promise<RawResponse> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await call();
      } catch (err) {
        if (
          !(err instanceof ServiceUnavailableError) ||
          attempt >= this.maxRetries ||
          err.retryAfterSeconds > this.maxRetryDelaySeconds
        ) {
          throw err;
        }
        await this.sleep(err.retryAfterSeconds * 1000);
      }
    }
  }

  private validFor(expiresAt: number, minValidity: number): boolean {
    return this.clock() < (expiresAt - minValidity) * 1000;
  }

  /** A copy of the token with `expires_in` as of now. */
  private present(token: Token): Token {
    if (token.expires_at === null) return { ...token };
    const left = Math.max(0, token.expires_at - Math.floor(this.clock() / 1000));
    return { ...token, expires_in: left };
  }

  private remember(key: string, entry: CacheEntry): void {
    if (this.cache.size >= CACHE_PRUNE_THRESHOLD) {
      for (const [k, e] of this.cache) if (!this.validFor(e.expiresAt, 0)) this.cache.delete(k);
    }
    this.cache.delete(key);
    this.cache.set(key, entry);
  }

  private invalidate(key: string): void {
    this.cache.delete(key);
    this.epochs.set(key, (this.epochs.get(key) ?? 0) + 1);
  }

  // --- sessions ------------------------------------------------------------------------------

  /** Hands the keeper a user's token response, as the provider returned it. */
  async putSession(userId: string, providerId: string, token: TokenResponse): Promise<PutResult<Session>> {
    const path = `/v1/sessions/${segment('userId', userId)}/${segment('providerId', providerId)}`;
    this.invalidate(cacheKey(userId, providerId));
    const res = await this.request('PUT', path, { body: token });
    return { created: res.status === 201, value: res.body as Session };
  }

  async getSession(userId: string, providerId: string): Promise<Session> {
    const path = `/v1/sessions/${segment('userId', userId)}/${segment('providerId', providerId)}`;
    return (await this.request('GET', path)).body as Session;
  }

  async listSessions(userId: string): Promise<Session[]> {
    const res = await this.request('GET', `/v1/sessions/${segment('userId', userId)}`);
    return (res.body as { sessions: Session[] }).sessions;
  }

  /** Removes the session (the keeper revokes it at the provider, best effort). */
  async deleteSession(userId: string, providerId: string): Promise<void> {
    const path = `/v1/sessions/${segment('userId', userId)}/${segment('providerId', providerId)}`;
    this.invalidate(cacheKey(userId, providerId));
    await this.request('DELETE', path);
  }

  /**
   * Starts connecting a user: the keeper answers the URL to send the user's browser to. With a
   * `redirectUri`, the browser comes back there with `status=pending&connection=<id>`, and
   * `completeConnection` stores the session for the user your application serves. Without one,
   * the keeper's callback stores the session for `userId` itself, whoever opened the URL.
   */
  async authorize(
    userId: string,
    providerId: string,
    options: AuthorizeOptions = {},
  ): Promise<Authorization> {
    const path = `/v1/sessions/${segment('userId', userId)}/${segment('providerId', providerId)}/authorize`;
    return (await this.request('POST', path, { body: options })).body as Authorization;
  }

  /**
   * Completes a pending connection for `userId`, the user your application has signed in (never a
   * user id taken from the browser's query): the `connection` the keeper added to your
   * `redirectUri`. Answers the session's metadata; throws ConnectionNotFoundError when the id is
   * unknown, expired, already completed, or was started for another user or provider.
   */
  async completeConnection(userId: string, providerId: string, connectionId: string): Promise<Session> {
    const path = `/v1/sessions/${segment('userId', userId)}/${segment('providerId', providerId)}/connections/${segment('connectionId', connectionId)}`;
    this.invalidate(cacheKey(userId, providerId));
    return (await this.request('POST', path)).body as Session;
  }

  // --- providers -----------------------------------------------------------------------------

  /** Registers or replaces a provider: by issuer or token endpoint, or by MCP server URL. */
  async putProvider(
    providerId: string,
    input: ProviderInput | McpProviderInput,
  ): Promise<PutResult<Provider>> {
    const res = await this.request('PUT', `/v1/providers/${segment('providerId', providerId)}`, {
      body: input,
    });
    return { created: res.status === 201, value: res.body as Provider };
  }

  /** Every provider (GET /v1/providers, all pages): no client secret, as the API lists them. */
  async listProviders(): Promise<Provider[]> {
    const all: Provider[] = [];
    let cursor: string | null = null;
    do {
      const query: string =
        cursor === null ? '?limit=100' : `?limit=100&cursor=${encodeURIComponent(cursor)}`;
      const page = (await this.request('GET', `/v1/providers${query}`)).body as {
        providers: Provider[];
        cursor: string | null;
      };
      all.push(...page.providers);
      cursor = page.cursor;
    } while (cursor !== null);
    return all;
  }

  async getProvider(providerId: string): Promise<Provider> {
    return (await this.request('GET', `/v1/providers/${segment('providerId', providerId)}`)).body as Provider;
  }

  // --- other ---------------------------------------------------------------------------------

  async health(): Promise<{ status: string }> {
    return (await this.request('GET', '/v1/health')).body as { status: string };
  }

  /** The sweeps that started at or after `since` (epoch seconds; default the keeper's, 24 hours), oldest first. */
  async listSweeps(options: { since?: number } = {}): Promise<SweepRecord[]> {
    const query = options.since === undefined ? '' : `?since=${Math.floor(options.since)}`;
    return ((await this.request('GET', `/v1/sweeps${query}`)).body as { sweeps: SweepRecord[] }).sweeps;
  }

  /** Runs a sweep now. Local stack only (a deployed keeper sweeps on its schedule). */
  async sweepLocal(): Promise<SweepSummary> {
    return (await this.request('POST', '/local/sweep')).body as SweepSummary;
  }

  // --- transport -----------------------------------------------------------------------------

  private async request(
    method: string,
    path: string,
    options: { query?: Record<string, string>; body?: unknown } = {},
  ): Promise<RawResponse> {
    const url = new URL(`${this.baseUrl}${path}`);
    for (const [name, value] of Object.entries(options.query ?? {})) url.searchParams.set(name, value);
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    let headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.bearer !== undefined) headers.authorization = `Bearer ${this.bearer}`;
    if (this.signer) {
      headers = await this.signer({ method, url, headers, body }, new Date(this.clock()));
      // fetch derives Host from the URL; the signed value is the same.
      delete headers.host;
    }

    let res: Response;
    let text: string;
    try {
      res = await this.fetchImpl(url, { method, headers, body, signal: AbortSignal.timeout(this.timeoutMs) });
      text = await res.text();
    } catch (err) {
      throw new TokenKeeperConnectionError(`${this.baseUrl}`, err);
    }
    let parsed: unknown;
    if (text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
    }
    if (res.status >= 200 && res.status < 300) {
      if (res.status !== 204 && parsed === undefined) {
        throw apiError({
          status: res.status,
          code: 'invalid_response',
          description: 'the answer is not JSON',
        });
      }
      return { status: res.status, headers: res.headers, body: parsed };
    }
    throw this.toError(res, parsed, text);
  }

  private toError(res: Response, parsed: unknown, text: string) {
    const body = (typeof parsed === 'object' && parsed !== null ? parsed : {}) as Record<string, unknown>;
    const code = typeof body.error === 'string' ? body.error : fallbackCode(res.status);
    const description =
      typeof body.error_description === 'string'
        ? body.error_description
        : typeof body.message === 'string'
          ? body.message // API Gateway's own answers: {"message": "Forbidden"}
          : text.slice(0, 200) || `HTTP ${res.status}`;
    const retryAfterSeconds = parseRetryAfter(res.headers.get('retry-after'), this.clock());
    return apiError({
      status: res.status,
      code,
      description,
      ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }),
    });
  }
}

function fallbackCode(status: number): string {
  switch (status) {
    case 401:
      return 'unauthorized';
    case 403:
      return 'forbidden';
    case 404:
      return 'not_found';
    case 429:
      return 'too_many_requests';
    default:
      return `http_${status}`;
  }
}

/** Retry-After as delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | null, nowMs: number): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/u.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - nowMs) / 1000));
}
