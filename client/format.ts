import { styleText } from 'node:util';
import type { Provider, Session, SweepSummary } from './types.js';

/** Human output of the CLI: durations, relative times, tables. Pure functions of their inputs. */

export type Style = 'red' | 'green' | 'yellow' | 'dim' | 'bold';
export type Paint = (style: Style, text: string) => string;

export const plain: Paint = (_style, text) => text;
/** The caller decides when to colour (TTY, NO_COLOR, --no-color): styleText must not second-guess it from process.stdout. */
export const ansi: Paint = (style, text) => styleText(style, text, { validateStream: false });

/** `42s`, `4m 12s`, `3h 5m`, `2d 4h`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`;
}

export function formatExpiresIn(expiresAt: number | null, nowSec: number): string {
  if (expiresAt === null) return 'no expiry';
  const left = expiresAt - nowSec;
  return left <= 0 ? 'expired' : formatDuration(left);
}

export function formatAgo(at: number | null, nowSec: number): string {
  if (at === null) return 'never';
  const ago = nowSec - at;
  if (ago < 1) return 'just now';
  return `${formatDuration(ago)} ago`;
}

function formatIn(at: number, nowSec: number): string {
  const left = at - nowSec;
  return left <= 0 ? 'now' : `in ${formatDuration(left)}`;
}

export function isoSeconds(at: number | null | undefined): string {
  return at === null || at === undefined ? '—' : new Date(at * 1000).toISOString().replace('.000Z', 'Z');
}

interface Cell {
  text: string;
  style?: Style;
}

/** Left-aligned columns, two spaces apart; padding is computed on the plain text, then painted. */
export function renderTable(header: string[], rows: Cell[][], paint: Paint): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]?.text.length ?? 0)));
  const line = (cells: Cell[]) =>
    cells
      .map((c, i) => {
        const padded = i === cells.length - 1 ? c.text : c.text.padEnd(widths[i] ?? 0);
        return c.style ? paint(c.style, padded) : padded;
      })
      .join('  ')
      .trimEnd();
  return [line(header.map((text) => ({ text, style: 'bold' as const }))), ...rows.map(line)].join('\n');
}

function sessionHealth(s: Session): Style {
  if (s.status !== 'active') return 'red';
  return s.failureCount > 0 ? 'yellow' : 'green';
}

/** `tokenkeeper status <userId>`: one row per session, then a summary line. */
export function renderStatus(userId: string, sessions: Session[], nowSec: number, paint: Paint): string {
  if (sessions.length === 0) return `no sessions for user ${userId}`;
  const sorted = [...sessions].sort((a, b) => a.providerId.localeCompare(b.providerId));
  const rows = sorted.map((s): Cell[] => {
    const health = sessionHealth(s);
    const status = s.status === 'active' && !s.refreshable ? 'active (no refresh token)' : s.status;
    // An on-demand session's short-lived token is expected to lapse between calls: not a fault.
    const lapsed = s.expiresAt !== null && s.expiresAt <= nowSec;
    const expires =
      s.refreshMode === 'on_demand' && s.refreshable && lapsed
        ? 'on demand'
        : formatExpiresIn(s.expiresAt, nowSec);
    let lastError = s.lastError?.code ?? '—';
    if (s.status === 'active' && s.nextAttemptAt !== null && s.nextAttemptAt > nowSec) {
      lastError += ` (retry ${formatIn(s.nextAttemptAt, nowSec)})`;
    }
    return [
      { text: s.providerId },
      { text: status, style: health },
      { text: expires, style: expires === 'expired' ? 'red' : undefined },
      { text: formatAgo(s.refreshedAt, nowSec) },
      { text: String(s.failureCount), style: s.failureCount > 0 ? health : undefined },
      { text: lastError, style: s.lastError ? health : 'dim' },
    ];
  });
  const table = renderTable(
    ['PROVIDER', 'STATUS', 'EXPIRES IN', 'LAST REFRESH', 'FAILURES', 'LAST ERROR'],
    rows,
    paint,
  );
  const healthy = sorted.filter((s) => sessionHealth(s) === 'green').length;
  const failing = sorted.filter((s) => sessionHealth(s) === 'yellow').length;
  const dead = sorted.filter((s) => sessionHealth(s) === 'red').length;
  const parts = [
    paint('green', `${healthy} healthy`),
    paint(failing > 0 ? 'yellow' : 'dim', `${failing} failing transiently`),
    paint(dead > 0 ? 'red' : 'dim', `${dead} need${dead === 1 ? 's' : ''} re-authorization`),
  ];
  const noun = sorted.length === 1 ? 'session' : 'sessions';
  return `${table}\n\n${userId}: ${sorted.length} ${noun} — ${parts.join(', ')}`;
}

/** `sessions list <userId>`: compact, absolute times. */
export function renderSessionList(userId: string, sessions: Session[], paint: Paint): string {
  if (sessions.length === 0) return `no sessions for user ${userId}`;
  const sorted = [...sessions].sort((a, b) => a.providerId.localeCompare(b.providerId));
  return renderTable(
    ['PROVIDER', 'STATUS', 'EXPIRES AT', 'REFRESHABLE'],
    sorted.map((s) => [
      { text: s.providerId },
      { text: s.status, style: sessionHealth(s) },
      { text: isoSeconds(s.expiresAt) },
      { text: s.refreshable ? 'yes' : 'no' },
    ]),
    paint,
  );
}

function fields(pairs: [string, string | undefined][]): string {
  const shown = pairs.filter((p): p is [string, string] => p[1] !== undefined);
  const width = Math.max(...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

export function renderSession(s: Session, nowSec: number, paint: Paint): string {
  const expires =
    s.expiresAt === null
      ? 'no expiry'
      : `${isoSeconds(s.expiresAt)} (${formatExpiresIn(s.expiresAt, nowSec)})`;
  return fields([
    ['session', `${s.userId} / ${s.providerId}`],
    ['status', paint(sessionHealth(s), s.status)],
    ['expires', expires],
    ['refreshable', s.refreshable ? 'yes' : 'no'],
    [
      'last refresh',
      s.refreshedAt === null ? 'never' : `${isoSeconds(s.refreshedAt)} (${formatAgo(s.refreshedAt, nowSec)})`,
    ],
    ['failures', String(s.failureCount)],
    [
      'last error',
      s.lastError
        ? `${s.lastError.code}: ${s.lastError.description} (${formatAgo(s.lastError.at, nowSec)})`
        : '—',
    ],
    [
      'next attempt',
      s.nextAttemptAt === null
        ? undefined
        : `${isoSeconds(s.nextAttemptAt)} (${formatIn(s.nextAttemptAt, nowSec)})`,
    ],
  ]);
}

/** The provider's refresh policy in a line; absent fields are left out. */
function refreshLine(p: Provider): string {
  const policy = p.refreshPolicy ?? 'eager';
  const parts = [
    policy === 'keepAlive'
      ? 'keepAlive (on demand; the sweep keeps grants alive)'
      : 'eager (before every expiry)',
  ];
  if (p.refreshTokenIdleSeconds !== undefined)
    parts.push(`refresh tokens idle ${p.refreshTokenIdleSeconds} s`);
  if (p.maxConcurrentRefreshes !== undefined) parts.push(`at most ${p.maxConcurrentRefreshes} at once`);
  return parts.join(', ');
}

export function renderProvider(p: Provider, nowSec: number): string {
  const secret = p.clientSecretArn
    ? `from ${p.clientSecretArn}`
    : p.hasClientSecret
      ? 'stored (encrypted)'
      : 'none';
  return fields([
    ['provider', p.providerId],
    ['MCP server', p.mcpServerUrl],
    ['issuer', p.issuer],
    ['authorization endpoint', p.authorizationEndpoint],
    ['token endpoint', p.tokenEndpoint ?? (p.issuer ? 'discovered from the issuer' : undefined)],
    ['revocation endpoint', p.revocationEndpoint],
    [
      'client',
      `${p.clientId} (${p.clientAuthMethod}${p.registration ? `, ${p.registration.replace('_', ' ')}` : ''})`,
    ],
    ['client secret', secret],
    ['resource', p.resource],
    ['scope', p.scope],
    ['refresh', refreshLine(p)],
    ['updated', `${isoSeconds(p.updatedAt)} (${formatAgo(p.updatedAt, nowSec)})`],
    [
      'client rejected',
      p.clientRejectedAt === undefined
        ? undefined
        : `${isoSeconds(p.clientRejectedAt)}: the provider answered invalid_client / unauthorized_client`,
    ],
    ['integrity', p.health?.integrity ? `provider_integrity: ${p.health.integrity.description}` : undefined],
  ]);
}

/** `tokenkeeper providers list`: one row per provider. */
export function renderProviderList(providers: Provider[], paint: Paint): string {
  if (providers.length === 0) return 'no providers yet (tokenkeeper providers put <providerId> …)';
  const circuit = (p: Provider): Cell => {
    const state = p.health?.state ?? 'closed';
    return {
      text: state.replace('_', '-'),
      style: state === 'closed' ? 'green' : state === 'open' ? 'red' : 'yellow',
    };
  };
  return renderTable(
    ['PROVIDER', 'CIRCUIT', 'CLIENT', 'ENDPOINT'],
    providers.map((p) => [
      { text: p.providerId },
      circuit(p),
      { text: `${p.clientId} (${p.clientAuthMethod})` },
      { text: p.mcpServerUrl ?? p.issuer ?? p.tokenEndpoint ?? '' },
    ]),
    paint,
  );
}

export function renderSweep(s: SweepSummary): string {
  return (
    `due ${s.due}, refreshed ${s.refreshed}, failed ${s.failedTransient} transiently, ` +
    `${s.reauthorizationRequired} need re-authorization, skipped ${s.skipped}, missed ${s.missed}, ` +
    `backlog ${s.backlog} (${s.durationMs} ms)`
  );
}
