import { callbackUrl } from './connect/registration.js';
import { clientSecretArnProblem, type SecretRules } from './crypto/secret-arn.js';
import {
  InvalidRequestError,
  ProviderIntegrityError,
  ProviderNotFoundError,
  SessionNotFoundError,
} from './errors.js';
import {
  keyOnly,
  PROVIDER_OPTIONAL_FIELDS,
  type ProviderConfig,
  refreshSettings,
  type SessionKey,
} from './model.js';
import type { OAuthClient } from './oauth/client.js';
import type { Clock, Logger } from './ports.js';
import { type ProviderCircuit, providerHealth } from './refresh/circuit.js';
import type { ProviderLookup } from './refresh/refresher.js';
import type {
  CallOptions,
  PageRequest,
  ProviderInput,
  ProviderService,
  ProviderView,
  SessionMetadata,
  SessionSearch,
  SessionService,
  TokenResponseInput,
} from './services.js';
import type { ProviderListing, SessionRecord, SessionStore } from './store/store.js';

/**
 * Provider configurations and session records: the CRUD side of the API. Tokens go in sealed and
 * never come back out of here; metadata views carry no token of any kind.
 */

const toSeconds = (ms: number | undefined) => (ms === undefined ? null : Math.floor(ms / 1000));

/** A page cursor: the last item's key, as opaque base64url JSON. */
function encodeCursor(key: Record<string, string>): string {
  return Buffer.from(JSON.stringify([key.pk, key.sk]), 'utf8').toString('base64url');
}

function decodeCursor(cursor: string): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  if (
    !Array.isArray(parsed) ||
    parsed.length !== 2 ||
    !parsed.every((p) => typeof p === 'string' && p.length > 0 && p.length <= 1100)
  ) {
    throw new InvalidRequestError('cursor: not a cursor this API returned');
  }
  return { pk: parsed[0] as string, sk: parsed[1] as string };
}

/** A provider as the API shows it, from its configuration or a listing (never the secret itself). */
export function providerView(
  p: ProviderConfig | ProviderListing,
  now: number,
  publicUrl?: string,
): ProviderView {
  const view: Omit<ProviderView, 'health'> = {
    providerId: p.providerId,
    clientId: p.clientId,
    clientAuthMethod: p.clientAuthMethod,
    hasClientSecret:
      'hasClientSecret' in p
        ? p.hasClientSecret
        : p.clientSecret !== undefined || p.clientSecretArn !== undefined,
    createdAt: Math.floor(p.createdAt / 1000),
    updatedAt: Math.floor(p.updatedAt / 1000),
    refreshPolicy: 'eager',
  };
  for (const field of PROVIDER_OPTIONAL_FIELDS) {
    if (p[field] !== undefined) (view as unknown as Record<string, unknown>)[field] = p[field];
  }
  if (p.clientRejectedAt !== undefined) view.clientRejectedAt = Math.floor(p.clientRejectedAt / 1000);
  if (p.scopesSupported !== undefined) view.scopesSupported = [...p.scopesSupported];
  // Computed, not stored: the redirect URI to register at the provider's authorization server.
  if (publicUrl !== undefined) view.redirectUri = callbackUrl(publicUrl, p.providerId);
  const problem = 'integrityProblem' in p ? p.integrityProblem : undefined;
  return { ...view, health: providerHealth(p.circuit, now, problem) };
}

export function sessionMetadata(r: SessionRecord): SessionMetadata {
  return {
    userId: r.userId,
    providerId: r.providerId,
    status: r.status,
    expiresAt: r.expiresAt ?? null,
    refreshExpiresAt: r.refreshExpiresAt ?? null,
    refreshMode: r.refreshMode,
    refreshable: r.status === 'active' && r.refreshTokenSealed !== undefined,
    refreshedAt: toSeconds(r.refreshedAt),
    failureCount: r.failureCount,
    lastError: r.lastError
      ? {
          code: r.lastError.code,
          description: r.lastError.description,
          at: Math.floor(r.lastError.at / 1000),
        }
      : null,
    nextAttemptAt: toSeconds(r.nextAttemptAt),
  };
}

/** Provider lookups for the refresher, cached briefly so a sweep reads each provider once. */
export class CachedProviders implements ProviderLookup {
  // The read in flight is cached too: a sweep's concurrent refreshes all miss a cold cache at once,
  // and would otherwise each read (and decrypt) the same provider item.
  private readonly cache = new Map<string, { provider: Promise<ProviderConfig | undefined>; at: number }>();

  constructor(
    private readonly store: SessionStore,
    private readonly clock: Clock,
    private readonly ttlMs: number,
  ) {}

  async get(providerId: string): Promise<ProviderConfig | undefined> {
    const hit = this.cache.get(providerId);
    if (hit && this.clock.now() - hit.at < this.ttlMs) return hit.provider;
    const entry = { provider: this.store.getProvider(providerId), at: this.clock.now() };
    this.cache.set(providerId, entry);
    try {
      return await entry.provider;
    } catch (err) {
      // A failed integrity check is an answer, kept for the TTL like one: a sweep meeting many
      // sessions of an altered provider reads its item once, not once per session.
      if (!(err instanceof ProviderIntegrityError) && this.cache.get(providerId) === entry) {
        this.cache.delete(providerId);
      }
      throw err;
    }
  }

  invalidate(providerId: string): void {
    this.cache.delete(providerId);
  }
}

export class DefaultProviderService implements ProviderService {
  constructor(
    private readonly store: SessionStore,
    private readonly clock: Clock,
    private readonly cache?: CachedProviders,
    private readonly secretRules: SecretRules = { prefix: 'tokenkeeper/' },
    private readonly circuit?: Pick<ProviderCircuit, 'forget'>,
    /** The keeper's public base URL: each provider's view shows its redirect URI under it. */
    private readonly publicUrl?: string,
  ) {}

  async put(providerId: string, input: ProviderInput): Promise<{ created: boolean; provider: ProviderView }> {
    if (input.clientSecretArn !== undefined) {
      const problem = clientSecretArnProblem(input.clientSecretArn, this.secretRules);
      if (problem) throw new InvalidRequestError(problem);
    }
    const now = this.clock.now();
    const hasSecret = input.clientSecret !== undefined || input.clientSecretArn !== undefined;
    const provider: ProviderConfig = {
      providerId,
      issuer: input.issuer,
      tokenEndpoint: input.tokenEndpoint,
      revocationEndpoint: input.revocationEndpoint,
      clientId: input.clientId,
      clientSecret: input.clientSecret,
      clientSecretArn: input.clientSecretArn,
      clientAuthMethod: input.clientAuthMethod ?? (hasSecret ? 'client_secret_basic' : 'none'),
      resource: input.resource,
      scope: input.scope,
      refreshPolicy: input.refreshPolicy,
      refreshTokenIdleSeconds: input.refreshTokenIdleSeconds,
      maxConcurrentRefreshes: input.maxConcurrentRefreshes,
      createdAt: now,
      updatedAt: now,
    };
    const { created, createdAt } = await this.store.putProvider(provider);
    this.cache?.invalidate(providerId);
    this.circuit?.forget(providerId);
    return { created, provider: providerView({ ...provider, createdAt }, now, this.publicUrl) };
  }

  async get(providerId: string): Promise<ProviderView> {
    // Inspected, not opened: an altered provider is shown, with its health naming the failed check.
    const provider = await this.store.inspectProvider(providerId);
    if (!provider) throw new ProviderNotFoundError(providerId);
    return providerView(provider, this.clock.now(), this.publicUrl);
  }

  async list(page: PageRequest): Promise<{ providers: ProviderView[]; cursor: string | null }> {
    const now = this.clock.now();
    const found = await this.store.listProviders({
      limit: page.limit,
      cursor: page.cursor === undefined ? undefined : decodeCursor(page.cursor),
    });
    return {
      providers: found.providers.map((p) => providerView(p, now, this.publicUrl)),
      cursor: found.cursor === undefined ? null : encodeCursor(found.cursor),
    };
  }
}

export class DefaultSessionService implements SessionService {
  constructor(
    private readonly store: SessionStore,
    private readonly providers: ProviderLookup,
    private readonly oauth: Pick<OAuthClient, 'revoke'>,
    private readonly clock: Clock,
    private readonly logger: Logger,
  ) {}

  async put(
    caller: SessionKey,
    token: TokenResponseInput,
  ): Promise<{ created: boolean; session: SessionMetadata }> {
    const key = keyOnly(caller);
    const provider = await this.providers.get(key.providerId);
    if (!provider) throw new ProviderNotFoundError(key.providerId);
    const now = this.clock.now();
    let expiresAt: number | undefined;
    if (token.expires_at !== undefined) expiresAt = Math.floor(token.expires_at);
    else if (token.expires_in !== undefined)
      expiresAt = Math.floor(now / 1000) + Math.floor(token.expires_in);
    // Keycloak sends 0 for offline tokens, which have no idle expiry.
    const refreshExpiresAt =
      token.refresh_expires_in !== undefined && token.refresh_expires_in > 0
        ? Math.floor(now / 1000) + Math.floor(token.refresh_expires_in)
        : undefined;
    const { created, record } = await this.store.putSession(
      {
        ...key,
        accessToken: token.access_token,
        refreshToken: token.refresh_token,
        tokenType: token.token_type ?? 'Bearer',
        scope: token.scope,
        expiresAt,
        refreshExpiresAt,
        provider: refreshSettings(provider),
      },
      now,
    );
    this.logger.info(created ? 'session created' : 'session replaced', {
      ...key,
      expiresAt: expiresAt ?? null,
      refreshable: token.refresh_token !== undefined,
    });
    return { created, session: sessionMetadata(record) };
  }

  async get(caller: SessionKey): Promise<SessionMetadata> {
    const key = keyOnly(caller);
    const record = await this.store.getSession(key, { consistent: true });
    if (!record) throw new SessionNotFoundError();
    return sessionMetadata(record);
  }

  async list(userId: string): Promise<SessionMetadata[]> {
    return (await this.store.listSessions(userId)).map(sessionMetadata);
  }

  async search(query: SessionSearch): Promise<{ sessions: SessionMetadata[]; cursor: string | null }> {
    const page = await this.store.searchSessions({
      providerId: query.providerId,
      status: query.status,
      limit: query.limit,
      cursor: query.cursor === undefined ? undefined : decodeCursor(query.cursor),
    });
    return {
      sessions: page.records.map(sessionMetadata),
      cursor: page.cursor === undefined ? null : encodeCursor(page.cursor),
    };
  }

  /**
   * Deletes the item, then revokes at the provider best-effort, inside the call's deadline. Once the
   * item is deleted nothing turns the call into an error: the revocation is only logged.
   */
  async delete(caller: SessionKey, options: CallOptions = {}): Promise<void> {
    const key = keyOnly(caller);
    const record = await this.store.getSession(key, { consistent: true });
    if (!record) throw new SessionNotFoundError();
    let tokens: { accessToken: string; refreshToken?: string } | undefined;
    try {
      tokens = await this.store.reveal(record);
    } catch {
      this.logger.warn('session tokens cannot be decrypted; deleting without revocation', { ...key });
    }
    const deleted = await this.store.deleteSession(key);
    if (!deleted) throw new SessionNotFoundError();
    this.logger.info('session deleted', { ...key });
    if (!tokens) return;
    try {
      const provider = await this.providers.get(key.providerId);
      if (!provider) return;
      // Revoking the refresh token ends the grant; without one, revoke the access token.
      const by = options.deadline;
      const revoked = tokens.refreshToken
        ? await this.oauth.revoke(provider, tokens.refreshToken, 'refresh_token', { by })
        : await this.oauth.revoke(provider, tokens.accessToken, 'access_token', { by });
      this.logger.info('revocation at provider', { ...key, revoked });
    } catch (err) {
      this.logger.warn('revocation at provider skipped; the session is deleted', {
        ...key,
        error: (err as Error).name,
      });
    }
  }
}
