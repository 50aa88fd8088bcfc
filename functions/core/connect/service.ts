import * as oauth from 'oauth4webapi';
import {
  ConnectionNotFoundError,
  InvalidRequestError,
  ProviderIntegrityError,
  ProviderNotFoundError,
} from '../errors.js';
import type { ProviderConfig, SessionKey } from '../model.js';
import type { OAuthClient } from '../oauth/client.js';
import type { Clock, EventPublisher, FetchLike, Logger, Metrics } from '../ports.js';
import { providerView } from '../registry.js';
import type {
  AuthorizeInput,
  AuthorizeResult,
  CallbackOutcome,
  CallOptions,
  ConnectService,
  McpProviderInput,
  ProviderView,
  SessionMetadata,
  SessionService,
  TokenResponseInput,
} from '../services.js';
import type { SessionStore } from '../store/store.js';
import { authorizationServerFor, authorizationUrl, redirectAllowed } from './authorize.js';
import {
  CONNECTION_ID,
  CONNECTION_LIFETIME_SECONDS,
  type ConnectionStore,
  newConnectionId,
  type PendingConnection,
} from './connections.js';
import { discoverAuthorizationServer, discoverProtectedResource } from './discovery.js';
import { callbackUrl, clientMetadataDocument, type KeeperUrls, registerClient } from './registration.js';
import { newState, STATE_LIFETIME_SECONDS, type StateStore } from './state.js';

/**
 * The connect flow: register a provider by MCP server URL, start an authorization for a user, and
 * finish it. Without a `redirectUri` (the operator's flow) the callback stores the session exactly
 * as `PUT /v1/sessions/...` does. With one (an application's flow) the callback keeps the tokens as
 * a pending connection and sends the browser back to the application, which completes it for the
 * user it is serving: whoever's browser finished the authorization cannot choose whose session the
 * account lands in.
 */

export interface ConnectDeps {
  store: Pick<SessionStore, 'getProvider' | 'putProvider' | 'getSession'>;
  /** Forgets a cached provider after it is replaced. */
  invalidateProvider(providerId: string): void;
  states: StateStore;
  connections: ConnectionStore;
  oauth: Pick<OAuthClient, 'authorizationServer' | 'exchangeCode'>;
  sessions: Pick<SessionService, 'put'>;
  events: EventPublisher;
  clock: Clock;
  logger: Logger;
  metrics: Metrics;
  fetch: FetchLike;
  timeoutMs: number;
  allowInsecureHttp: boolean;
  publicUrl?: string;
  allowedRedirects: readonly string[];
}

/** Error codes passed on to the browser as they are; anything else becomes a generic one. */
const OAUTH_CODE = /^[a-z][a-z0-9_]{0,63}$/u;

export class DefaultConnectService implements ConnectService {
  private readonly urls: KeeperUrls;

  constructor(private readonly d: ConnectDeps) {
    this.urls = { publicUrl: d.publicUrl, allowInsecureHttp: d.allowInsecureHttp };
  }

  async clientMetadata(providerId: string): Promise<Record<string, unknown> | undefined> {
    const document = clientMetadataDocument(this.urls, providerId);
    if (document === undefined) return undefined;
    // The keeper vouches only for clients it has: an unknown provider has no document.
    if (!(await this.d.store.getProvider(providerId))) throw new ProviderNotFoundError(providerId);
    return document;
  }

  async registerMcpServer(
    providerId: string,
    input: McpProviderInput,
    options: CallOptions = {},
  ): Promise<{ created: boolean; provider: ProviderView }> {
    const deps = {
      fetch: this.d.fetch,
      clock: this.d.clock,
      timeoutMs: this.d.timeoutMs,
      allowInsecureHttp: this.d.allowInsecureHttp,
    };
    const by = options.deadline;
    const resource = await discoverProtectedResource(input.mcpServerUrl, deps, by);
    const as = await discoverAuthorizationServer(resource.authorizationServers[0] as string, deps, by);
    const client = await registerClient(providerId, as, input, this.urls, deps, by);
    const now = this.d.clock.now();
    const provider: ProviderConfig = {
      providerId,
      issuer: as.issuer,
      tokenEndpoint: as.tokenEndpoint,
      revocationEndpoint: as.revocationEndpoint,
      authorizationEndpoint: as.authorizationEndpoint,
      clientId: client.clientId,
      clientSecret: client.clientSecret,
      clientAuthMethod: client.clientAuthMethod,
      resource: resource.resource,
      scope: input.scope,
      mcpServerUrl: input.mcpServerUrl,
      scopesSupported: resource.scopesSupported,
      registration: client.registration,
      issParameterSupported: as.issParameterSupported || undefined,
      refreshPolicy: input.refreshPolicy,
      refreshTokenIdleSeconds: input.refreshTokenIdleSeconds,
      maxConcurrentRefreshes: input.maxConcurrentRefreshes,
      createdAt: now,
      updatedAt: now,
    };
    const { created, createdAt } = await this.d.store.putProvider(provider);
    this.d.invalidateProvider(providerId);
    this.d.logger.info('provider registered by MCP server URL', {
      providerId,
      issuer: as.issuer,
      registration: client.registration,
    });
    return { created, provider: providerView({ ...provider, createdAt }, now, this.d.publicUrl) };
  }

  async authorize(
    key: SessionKey,
    input: AuthorizeInput,
    options: CallOptions = {},
  ): Promise<AuthorizeResult> {
    const provider = await this.d.store.getProvider(key.providerId).catch((err: unknown) => {
      if (err instanceof ProviderIntegrityError) this.d.metrics.add('ProviderIntegrityFailed', 'Count', 1);
      throw err;
    });
    if (!provider) throw new ProviderNotFoundError(key.providerId);
    if (input.redirectUri !== undefined && !redirectAllowed(input.redirectUri, this.d.allowedRedirects)) {
      throw new InvalidRequestError(
        'redirectUri: must match an entry of TOKENKEEPER_ALLOWED_REDIRECTS (the same URL, or a path under an entry ending in /; no %2f, %5c, %2e or ; in the path)',
      );
    }
    if (this.d.publicUrl === undefined) {
      throw new InvalidRequestError(
        'the keeper has no public URL (TOKENKEEPER_PUBLIC_URL), so no callback can reach it',
      );
    }
    const as = await authorizationServerFor(provider, this.d.oauth, options.deadline);
    const state = newState();
    const codeVerifier = oauth.generateRandomCodeVerifier();
    const callback = callbackUrl(this.d.publicUrl, key.providerId);
    const scope = input.scope ?? provider.scope ?? provider.scopesSupported?.join(' ');
    const url = await authorizationUrl({
      as,
      clientId: provider.clientId,
      callbackUrl: callback,
      state,
      codeVerifier,
      scope,
      resource: provider.resource,
    });
    const expiresAt = Math.floor(this.d.clock.now() / 1000) + STATE_LIFETIME_SECONDS;
    await this.d.states.put(state, {
      ...key,
      codeVerifier,
      callbackUrl: callback,
      redirectUri: input.redirectUri,
      expiresAt,
    });
    this.d.metrics.add('AuthorizationsStarted', 'Count', 1);
    this.d.logger.info('authorization started', { ...key, expiresAt });
    return { authorizationUrl: url, expiresAt };
  }

  async callback(
    providerId: string,
    query: Record<string, string>,
    options: CallOptions = {},
  ): Promise<CallbackOutcome> {
    const { logger, clock } = this.d;
    const state = query.state;
    if (state === undefined || state === '' || state.length > 512) {
      logger.warn('callback without a usable state');
      return { ok: false, error: 'invalid_state' };
    }
    // The state is consumed before anything else: whatever happens next, it cannot be used again.
    const pending = await this.d.states.consume(state, clock.now());
    if (!pending) {
      logger.warn('callback with an unknown, expired or used state');
      return { ok: false, error: 'invalid_state' };
    }
    const key: SessionKey = { userId: pending.userId, providerId: pending.providerId };
    if (pending.providerId !== providerId) {
      // A code for one provider under another provider's state: the mix-up attack (RFC 9700 §4.4).
      // The state is spent; nothing goes to any token endpoint, and nobody is sent anywhere.
      this.d.metrics.add('ConnectionsFailed', 'Count', 1);
      logger.warn('callback refused: the state belongs to another provider than the callback path', {
        ...key,
        callbackProviderId: providerId,
      });
      return { ok: false, error: 'provider_mismatch' };
    }
    const fail = (error: string, extra: Record<string, unknown> = {}): CallbackOutcome => {
      this.d.metrics.add('ConnectionsFailed', 'Count', 1);
      logger.warn('connection failed', { ...key, error, ...extra });
      return { ok: false, error, redirectUri: pending.redirectUri };
    };
    let provider: ProviderConfig | undefined;
    try {
      provider = await this.d.store.getProvider(key.providerId);
    } catch (err) {
      if (!(err instanceof ProviderIntegrityError)) throw err;
      // Its settings were altered in the table: the code goes to no token endpoint.
      this.d.metrics.add('ProviderIntegrityFailed', 'Count', 1);
      return fail('provider_integrity', { problem: err.problem });
    }
    if (!provider) return fail('provider_not_found');
    let as: oauth.AuthorizationServer;
    try {
      as = await authorizationServerFor(provider, this.d.oauth, options.deadline);
    } catch {
      return fail('temporarily_unavailable');
    }
    let parameters: URLSearchParams;
    try {
      parameters = oauth.validateAuthResponse(
        as,
        { client_id: provider.clientId },
        new URLSearchParams(query),
        state,
      );
    } catch (err) {
      if (err instanceof oauth.AuthorizationResponseError) {
        return fail(OAUTH_CODE.test(err.error) ? err.error : 'authorization_error');
      }
      const message = err instanceof Error ? err.message : '';
      return fail(/"iss"/u.test(message) ? 'invalid_issuer' : 'invalid_response');
    }
    const result = await this.d.oauth.exchangeCode(
      provider,
      as,
      parameters,
      pending.callbackUrl,
      pending.codeVerifier,
      { by: options.deadline },
    );
    if (!result.ok) {
      const code = OAUTH_CODE.test(result.failure.code) ? result.failure.code : 'exchange_failed';
      return fail(code, { description: result.failure.description });
    }
    const t = result.tokens;
    const token: TokenResponseInput = {
      access_token: t.accessToken as string,
      refresh_token: t.refreshToken,
      expires_in: t.expiresIn,
      refresh_expires_in: t.refreshExpiresIn,
      token_type: t.tokenType,
      scope: t.scope,
    };
    if (pending.redirectUri === undefined) {
      // The operator's flow: whoever opened the URL connects their account, here and now.
      await this.connect(key, token);
      return { ok: true, ...key };
    }
    // An application's flow: nothing is stored for the user until the application completes it.
    const now = clock.now();
    const connectionId = newConnectionId();
    await this.d.connections.put(connectionId, {
      ...key,
      token: {
        ...token,
        expires_in: undefined,
        expires_at: t.expiresIn === undefined ? undefined : Math.floor(now / 1000) + Math.floor(t.expiresIn),
      },
      obtainedAt: now,
      expiresAt: Math.floor(now / 1000) + CONNECTION_LIFETIME_SECONDS,
    });
    this.d.metrics.add('ConnectionsPending', 'Count', 1);
    logger.info('connection pending until the application completes it', { ...key });
    return { ok: true, ...key, redirectUri: pending.redirectUri, connectionId };
  }

  async completeConnection(key: SessionKey, connectionId: string): Promise<SessionMetadata> {
    if (!CONNECTION_ID.test(connectionId)) throw new ConnectionNotFoundError();
    const now = this.d.clock.now();
    const pending = await this.d.connections.take(connectionId, key, now);
    if (!pending) {
      this.d.logger.warn('connection completion refused: no such pending connection for this user', {
        ...key,
      });
      throw new ConnectionNotFoundError();
    }
    try {
      return await this.connect(key, tokenAt(pending, now));
    } catch (err) {
      // Nothing lost on a fault: the connection is pending again, for the same user, until it expires.
      await this.d.connections.put(connectionId, pending).catch((reason: unknown) => {
        this.d.logger.error('a pending connection could not be put back', {
          ...key,
          reason: (reason as Error).name,
        });
      });
      throw err;
    }
  }

  /** Stores (or replaces) the user's session and announces it. */
  private async connect(key: SessionKey, token: TokenResponseInput): Promise<SessionMetadata> {
    const previous = await this.d.store.getSession(key, { consistent: true });
    const { session } = await this.d.sessions.put(key, token);
    this.d.metrics.add('SessionsConnected', 'Count', 1);
    const at = new Date(this.d.clock.now()).toISOString();
    await this.publish('SessionConnected', { ...key, refreshable: session.refreshable, at });
    if (previous?.status === 'reauthorization_required') {
      await this.publish('SessionRecovered', {
        ...key,
        previousError: previous.lastError?.code ?? null,
        failureCount: previous.failureCount,
        via: 'reconnect',
        at,
      });
    }
    return session;
  }

  private async publish(
    detailType: 'SessionConnected' | 'SessionRecovered',
    detail: Record<string, unknown>,
  ) {
    try {
      await this.d.events.publish({ detailType, detail });
    } catch (err) {
      this.d.logger.error('event could not be published', { detailType, reason: (err as Error).name });
    }
  }
}

/** The pending token response as of `nowMs`: the refresh token's lifetime counts from the exchange. */
function tokenAt(pending: PendingConnection, nowMs: number): TokenResponseInput {
  const { refresh_expires_in: refreshLifetime, ...token } = pending.token;
  if (refreshLifetime === undefined) return token;
  const elapsed = Math.max(0, Math.floor((nowMs - pending.obtainedAt) / 1000));
  return { ...token, refresh_expires_in: Math.max(1, refreshLifetime - elapsed) };
}
