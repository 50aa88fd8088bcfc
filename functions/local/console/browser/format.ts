/**
 * Pure helpers of the console page (no DOM): durations, relative times and the shapes the v1 API
 * answers. Unit-tested in Node (test/unit/console-format.test.ts).
 */

/** Session metadata as GET /v1/sessions answers it: no token of any kind. */
export interface SessionRow {
  userId: string;
  providerId: string;
  status: 'active' | 'reauthorization_required';
  expiresAt: number | null;
  refreshExpiresAt?: number | null;
  refreshMode?: 'scheduled' | 'on_demand';
  refreshable: boolean;
  refreshedAt: number | null;
  failureCount: number;
  lastError: { code: string; description: string; at: number } | null;
  nextAttemptAt: number | null;
}

/** The circuit of issue 11 (`health` on a provider), when the keeper reports it. */
export interface ProviderHealth {
  state: 'closed' | 'open' | 'half_open';
  since?: number | null;
  nextProbeAt?: number | null;
  consecutiveFailures?: number;
  lastError?: { code: string; description?: string; at: number } | null;
}

export interface ProviderRow {
  providerId: string;
  clientId: string;
  clientAuthMethod: string;
  issuer?: string;
  tokenEndpoint?: string;
  authorizationEndpoint?: string;
  revocationEndpoint?: string;
  mcpServerUrl?: string;
  resource?: string;
  registration?: 'preregistered' | 'metadata_document' | 'dynamic';
  clientRejectedAt?: number;
  health?: ProviderHealth;
}

export interface SweepInfo {
  due: number;
  refreshed: number;
  failedTransient: number;
  reauthorizationRequired: number;
  missed: number;
  durationMs: number;
  startedAt: number;
  finishedAt: number;
  /** When the schedule starts the next sweep (keepers that report it). */
  nextSweepAt?: number;
  /** The sweep refreshes a session once it has less than this left. */
  refreshWindowSeconds?: number;
}

/** `1h 02m`, `4m 05s`, `12s`; negative spans are shown as their absolute value. */
export function formatSpan(seconds: number): string {
  const s = Math.abs(Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h >= 48) return `${Math.floor(h / 24)}d ${h % 24}h`;
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m ${String(r).padStart(2, '0')}s`;
  return `${r}s`;
}

/** Time left until `at` (epoch seconds): `in 4m 05s`, `expired 12s ago`, `no expiry`. */
export function formatExpiry(at: number | null | undefined, nowSeconds: number): string {
  if (at === null || at === undefined) return 'no expiry';
  const left = at - nowSeconds;
  return left >= 0 ? formatSpan(left) : `expired ${formatSpan(left)} ago`;
}

/** `12s ago`, `in 5s`, `never`. */
export function formatAgo(at: number | null | undefined, nowSeconds: number): string {
  if (at === null || at === undefined) return 'never';
  const d = nowSeconds - at;
  return d >= 0 ? `${formatSpan(d)} ago` : `in ${formatSpan(d)}`;
}

/** What a session's status pill says, and its tone. */
export function sessionTone(
  s: SessionRow,
  nowSeconds: number,
): { text: string; tone: 'ok' | 'warn' | 'bad' } {
  if (s.status === 'reauthorization_required') return { text: 'reauthorization required', tone: 'bad' };
  if (s.failureCount > 0) return { text: 'active, failing', tone: 'warn' };
  if (s.expiresAt !== null && s.expiresAt < nowSeconds && s.refreshMode !== 'on_demand') {
    return { text: 'active, expired', tone: 'warn' };
  }
  return { text: 'active', tone: 'ok' };
}

/** The circuit's label and tone; `unknown` when the keeper does not report health. */
export function circuitTone(h: ProviderHealth | undefined): {
  text: string;
  tone: 'ok' | 'warn' | 'bad' | 'none';
} {
  if (!h) return { text: 'not reported', tone: 'none' };
  if (h.state === 'open') return { text: 'open', tone: 'bad' };
  if (h.state === 'half_open') return { text: 'half-open (probing)', tone: 'warn' };
  return { text: 'closed', tone: 'ok' };
}

/**
 * When an open circuit's next probe really happens: the sweep makes it, at the first sweep at or
 * after `nextProbeAt`. Never a time in the past: a due probe is `probing at the next sweep (in 7s)`,
 * or `probing now` once that sweep is due; undefined for a closed circuit.
 */
export function probeText(
  h: ProviderHealth | undefined,
  sweep: Pick<SweepInfo, 'startedAt' | 'nextSweepAt'> | null | undefined,
  nowSeconds: number,
): string | undefined {
  if (!h || h.state === 'closed') return undefined;
  if (h.state === 'half_open') return 'probing now';
  const probeAt = h.nextProbeAt ?? nowSeconds;
  const next = sweep?.nextSweepAt;
  if (next === undefined || sweep === null || sweep === undefined) {
    return probeAt > nowSeconds
      ? `next probe in ${formatSpan(probeAt - nowSeconds)}`
      : 'probing at the next sweep';
  }
  const interval = Math.max(1, next - sweep.startedAt);
  // The first scheduled sweep at or after the probe's time.
  const steps = Math.max(0, Math.ceil((probeAt - next) / interval));
  const sweepAt = next + steps * interval;
  if (sweepAt <= nowSeconds) return 'probing now';
  const wait = `in ${formatSpan(sweepAt - nowSeconds)}`;
  return probeAt > nowSeconds && steps > 0
    ? `next probe at the sweep ${wait}`
    : `probing at the next sweep (${wait})`;
}

/** The client and how it authenticates, in words: `none` is a public client, not a missing one. */
export function clientText(p: Pick<ProviderRow, 'clientId' | 'clientAuthMethod'>): string {
  const how: Record<string, string> = {
    none: 'public client: PKCE, no secret',
    client_secret_basic: 'secret, HTTP Basic',
    client_secret_post: 'secret in the request body',
    private_key_jwt: 'private key JWT',
  };
  return `${p.clientId} (${how[p.clientAuthMethod] ?? p.clientAuthMethod})`;
}

/** How the provider was registered, in words. */
export function registrationText(p: ProviderRow): string {
  switch (p.registration) {
    case 'dynamic':
      return 'dynamic client registration';
    case 'metadata_document':
      return 'client ID metadata document';
    case 'preregistered':
      return 'pre-registered client';
    default:
      return p.issuer ? 'issuer (pre-registered client)' : 'token endpoint (pre-registered client)';
  }
}

/** A session's last error as one line, or an em dash. */
export function errorText(e: { code: string; description?: string } | null | undefined): string {
  if (!e) return '—';
  return e.description ? `${e.code}: ${e.description}` : e.code;
}

/** Counts by status, and how many of the active ones are failing. */
export function countSessions(sessions: SessionRow[]): {
  total: number;
  active: number;
  failing: number;
  reauthorizationRequired: number;
} {
  let active = 0;
  let failing = 0;
  let reauth = 0;
  for (const s of sessions) {
    if (s.status === 'reauthorization_required') reauth++;
    else {
      active++;
      if (s.failureCount > 0) failing++;
    }
  }
  return { total: sessions.length, active, failing, reauthorizationRequired: reauth };
}

/** The latest error among a provider's sessions (for keepers that do not report the circuit). */
export function latestError(
  sessions: SessionRow[],
  providerId: string,
): { code: string; description: string; at: number } | null {
  let latest: SessionRow['lastError'] = null;
  for (const s of sessions) {
    if (s.providerId !== providerId || !s.lastError) continue;
    if (!latest || s.lastError.at > latest.at) latest = s.lastError;
  }
  return latest;
}

/** Reads `key=` from a URL fragment (`#key=abc`); undefined when there is none. */
export function keyFromFragment(hash: string): string | undefined {
  const params = new URLSearchParams(hash.startsWith('#') ? hash.slice(1) : hash);
  const key = params.get('key');
  return key ? key : undefined;
}

/** A path segment for an id, percent-encoded once (as the typed client does). */
export function segment(id: string): string {
  return encodeURIComponent(id).replace(/[!'()*]/gu, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}
