/**
 * Domain types shared by the core. Times: `expiresAt` is epoch seconds (it is the GSI sort key and
 * what the API shows); every other stored instant (`leaseUntil`, `nextAttemptAt`, `refreshedAt`,
 * `lastError.at`) is epoch milliseconds and is converted to seconds only at the API edge.
 */

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post' | 'none';

/** How the keeper got its client at an MCP server's authorization server. */
export type ClientRegistration = 'preregistered' | 'metadata_document' | 'dynamic';

export interface SessionKey {
  userId: string;
  providerId: string;
}

/**
 * Exactly the key's two fields. The core logs and publishes keys; a caller's object may carry more
 * (a login's tokens beside its key, say), which must never reach a log line or an event.
 */
export function keyOnly(key: SessionKey): SessionKey {
  return { userId: key.userId, providerId: key.providerId };
}

export interface ProviderConfig {
  providerId: string;
  issuer?: string;
  tokenEndpoint?: string;
  revocationEndpoint?: string;
  clientId: string;
  /** Plaintext, only ever in memory. Stored encrypted. */
  clientSecret?: string;
  /** Secrets Manager ARN holding the client secret, as an alternative to storing it. */
  clientSecretArn?: string;
  clientAuthMethod: ClientAuthMethod;
  resource?: string;
  scope?: string;
  createdAt: number;
  updatedAt: number;
  /** Set when the provider rejected our client (`invalid_client` / `unauthorized_client`). */
  clientRejectedAt?: number;
  /** Registered by MCP server URL: everything below was discovered from it. */
  mcpServerUrl?: string;
  authorizationEndpoint?: string;
  registration?: ClientRegistration;
  /** The protected resource's `scopes_supported` (RFC 9728). */
  scopesSupported?: string[];
  /** The authorization server sends `iss` in its authorization responses (RFC 9207). */
  issParameterSupported?: boolean;
  /** The provider's circuit as stored on its item (functions/core/refresh/circuit.ts); absent: closed, no failures. */
  circuit?: CircuitRecord;
  /** How the sweep keeps this provider's sessions; absent: `eager`. Applied to a session at its next grant. */
  refreshPolicy?: RefreshPolicy;
  /**
   * How long (seconds) the provider's refresh tokens survive unused, as the operator declares it:
   * a `keepAlive` session is renewed before that when the provider states no `refresh_expires_in`.
   */
  refreshTokenIdleSeconds?: number;
  /** The most grants one sweep worker sends to this provider at once (functions/core/refresh/sweep.ts). */
  maxConcurrentRefreshes?: number;
}

/**
 * `eager`: the sweep refreshes every session before its access token expires (lowest latency for
 * callers). `keepAlive`: sessions are refreshed on demand, and the sweep only renews a grant before
 * its refresh token would die (its stated expiry, the declared idle lifetime, or the keep-alive period).
 */
export const REFRESH_POLICIES = ['eager', 'keepAlive'] as const;
export type RefreshPolicy = (typeof REFRESH_POLICIES)[number];

/** The provider settings a session's refresh schedule follows. */
export type ProviderRefreshSettings = Pick<ProviderConfig, 'refreshPolicy' | 'refreshTokenIdleSeconds'>;

/** The refresh settings of a provider, alone (what a session's schedule is computed from). */
export function refreshSettings(p: ProviderConfig): ProviderRefreshSettings {
  return { refreshPolicy: p.refreshPolicy, refreshTokenIdleSeconds: p.refreshTokenIdleSeconds };
}

/** Bounds of `refreshTokenIdleSeconds`: ten minutes (below that, keep-alive saves little) to 400 days. */
export const REFRESH_TOKEN_IDLE_SECONDS = { min: 600, max: 400 * 86_400 } as const;
/** Bounds of `maxConcurrentRefreshes`. */
export const MAX_CONCURRENT_REFRESHES = { min: 1, max: 1000 } as const;

export type CircuitState = 'closed' | 'open' | 'half_open';

/** A provider's circuit and integrity as the API shows them (refresh/circuit.ts); instants in epoch seconds. */
export interface ProviderHealth {
  state: CircuitState;
  /** epoch seconds */
  since: number | null;
  nextProbeAt: number | null;
  consecutiveFailures: number;
  lastError: { code: string; description: string; at: number } | null;
  /**
   * Null while the provider's settings match the MAC of the API write that stored them; otherwise
   * why not: no grant or discovery is made for the provider until a PUT restores it.
   */
  integrity: { error: 'provider_integrity'; description: string } | null;
}

/**
 * A provider's circuit, kept on the provider's item so every sweep and API instance shares it.
 * Instants are epoch ms. `half_open` is stored while a probe holds the claim (`probeOwner` until
 * `probeUntil`); an `open` circuit whose `nextProbeAt` has passed is shown as half_open too.
 */
export interface CircuitRecord {
  state: 'closed' | 'open' | 'half_open';
  /** When the circuit entered its current state (opened, or closed). */
  since?: number;
  nextProbeAt?: number;
  /** Transient failures in a row across the provider's sessions, with no success between. */
  consecutiveFailures: number;
  /** Times the circuit was opened in this outage (the exponent of the probe delay). */
  openings: number;
  /** When the current run of failures began. */
  runFrom?: number;
  probeOwner?: string;
  probeUntil?: number;
  lastError?: LastError;
  /** The last outage, from the first failure of its run to the success that closed it. */
  lastOutage?: { from: number; to: number };
  /** The most due sessions one sweep held back while the circuit was open. */
  heldBack?: number;
  /** Distinct sessions whose grants failed in the current run (a session counts once however often it fails). */
  sessionsFailed?: number;
}

/**
 * The largest lifetime or epoch-seconds value taken from a caller or a provider (year 5138): anything
 * larger is epoch milliseconds by mistake or absurd, and `now + lifetime` stays a safe integer.
 */
export const MAX_EPOCH_SECONDS = 100_000_000_000;

/**
 * The largest access or refresh token the keeper stores, in UTF-8 bytes (Entra access tokens run to
 * 2–4 KB, some JWTs to 16 KB). Two sealed tokens of this size keep a session item far below
 * DynamoDB's 400 KB item limit. A refresh answer's larger access token is treated as absent (the
 * rotated refresh token is still committed).
 */
export const MAX_TOKEN_BYTES = 32 * 1024;

/** Provider settings that are stored and shown only when given. */
export const PROVIDER_OPTIONAL_FIELDS = [
  'issuer',
  'tokenEndpoint',
  'revocationEndpoint',
  'clientSecretArn',
  'resource',
  'scope',
  'mcpServerUrl',
  'authorizationEndpoint',
  'registration',
  'refreshPolicy',
  'refreshTokenIdleSeconds',
  'maxConcurrentRefreshes',
] as const;

export type SessionStatus = 'active' | 'reauthorization_required';

export interface LastError {
  code: string;
  description: string;
  /** epoch ms */
  at: number;
}

export function sessionKeyString(key: SessionKey): string {
  return `${key.userId}\u0000${key.providerId}`;
}

/** Seconds the access token stays valid after `nowMs`; Infinity when it has no known expiry. */
export function secondsLeft(s: { expiresAt?: number }, nowMs: number): number {
  if (s.expiresAt === undefined) return Number.POSITIVE_INFINITY;
  return s.expiresAt - Math.floor(nowMs / 1000);
}
