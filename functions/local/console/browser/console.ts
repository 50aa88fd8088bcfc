/**
 * The console page's module (bundled by esbuild at start-up, see ../assets.ts). It reads the API key
 * from the URL fragment once, keeps it in sessionStorage and removes it from the address bar; then it
 * calls the v1 API with `Authorization: Bearer <key>` and shows metadata only: no route it calls
 * answers a token (force refresh uses POST …/refresh, never the token route).
 */

import { axisLabels, chartModel, DAY_SECONDS, SERIES, type SweepPoint } from './chart.js';
import {
  circuitTone,
  clientText,
  countSessions,
  errorText,
  formatAgo,
  formatExpiry,
  keyFromFragment,
  latestError,
  type ProviderRow,
  probeText,
  registrationText,
  type SessionRow,
  type SweepInfo,
  segment,
  sessionTone,
} from './format.js';

const KEY_STORAGE = 'tokenkeeper.console.key';
const REFRESH_MS = 5_000;
const PAGE_SIZE = 25;
/** How many sessions the overview counts at most (pages of 100). */
const OVERVIEW_PAGES = 10;
const VIEWS = ['overview', 'sessions', 'providers'] as const;
type View = (typeof VIEWS)[number];

interface ApiError {
  status: number;
  error: string;
  description: string;
}

class ApiFailure extends Error {
  constructor(readonly detail: ApiError) {
    super(`${detail.error}: ${detail.description}`);
  }
}

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

const nowSeconds = () => Math.floor(Date.now() / 1000);

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { text?: string; className?: string; attrs?: Record<string, string> } = {},
  children: (Node | string)[] = [],
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.text !== undefined) node.textContent = props.text;
  if (props.className) node.className = props.className;
  for (const [k, v] of Object.entries(props.attrs ?? {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function pill(text: string, tone: string): HTMLSpanElement {
  return el('span', { text, className: `pill ${tone}` });
}

// --- the key ---------------------------------------------------------------------------------------

function takeKey(): string | undefined {
  const fromFragment = keyFromFragment(location.hash);
  if (fromFragment) {
    sessionStorage.setItem(KEY_STORAGE, fromFragment);
    // Out of the address bar, the history and any screenshot; the fragment never reached a server.
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(KEY_STORAGE) ?? undefined;
}

let apiKey = takeKey();

async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!res.ok) {
    const e = (parsed ?? {}) as { error?: string; error_description?: string };
    throw new ApiFailure({
      status: res.status,
      error: e.error ?? `http_${res.status}`,
      description: e.error_description ?? res.statusText,
    });
  }
  return parsed as T;
}

// --- status line -----------------------------------------------------------------------------------

function say(message: string, isError = false): void {
  const status = $('status');
  status.textContent = message;
  status.classList.toggle('error', isError);
}

function describe(err: unknown): string {
  if (err instanceof ApiFailure) return `${err.detail.error}: ${err.detail.description}`;
  return err instanceof Error ? err.message : String(err);
}

// --- views -----------------------------------------------------------------------------------------

let view: View = 'overview';

function show(next: View): void {
  view = next;
  for (const v of VIEWS) {
    $(v).hidden = v !== next || !apiKey;
    const tab = document.querySelector<HTMLButtonElement>(`.tab[data-view="${v}"]`);
    if (tab) {
      if (v === next) tab.setAttribute('aria-current', 'page');
      else tab.removeAttribute('aria-current');
    }
  }
  document.title = `${next[0]?.toUpperCase()}${next.slice(1)} · tokenkeeper console`;
}

// --- state -----------------------------------------------------------------------------------------

let providers: ProviderRow[] = [];
/** Sessions the overview counted (across users, at most OVERVIEW_PAGES pages). */
let overviewSessions: SessionRow[] = [];
let overviewComplete = true;
let demo: { outageUntil: number | null } | undefined;
let lastSweep: SweepInfo | null = null;
/** The last 24 hours of sweeps (GET /v1/sweeps), by start; refetched from the newest one on. */
const sweepHistory = new Map<number, SweepPoint>();
const pageCursors: (string | null)[] = [null];
let pageIndex = 0;
let nextCursor: string | null = null;
let filter: { providerId: string; status: string } = { providerId: '', status: '' };

async function loadProviders(): Promise<void> {
  const all: ProviderRow[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 10; i++) {
    const q: string = cursor ? `?limit=100&cursor=${encodeURIComponent(cursor)}` : '?limit=100';
    const page: { providers: ProviderRow[]; cursor: string | null } = await api('GET', `/v1/providers${q}`);
    all.push(...page.providers);
    cursor = page.cursor;
    if (!cursor) break;
  }
  // A keeper whose list does not carry the circuit: read it per provider (a few at most).
  if (all.length <= 20 && all.some((p) => p.health === undefined)) {
    await Promise.all(
      all.map(async (p, i) => {
        if (p.health !== undefined) return;
        try {
          all[i] = await api<ProviderRow>('GET', `/v1/providers/${segment(p.providerId)}`);
        } catch {
          // keep the listing
        }
      }),
    );
  }
  providers = all.sort((a, b) => a.providerId.localeCompare(b.providerId));
}

async function loadOverviewSessions(): Promise<void> {
  const all: SessionRow[] = [];
  let cursor: string | null = null;
  let complete = false;
  for (let i = 0; i < OVERVIEW_PAGES; i++) {
    const q: string = cursor ? `?limit=100&cursor=${encodeURIComponent(cursor)}` : '?limit=100';
    const page: { sessions: SessionRow[]; cursor: string | null } = await api('GET', `/v1/sessions${q}`);
    all.push(...page.sessions);
    cursor = page.cursor;
    if (!cursor) {
      complete = true;
      break;
    }
  }
  overviewSessions = all;
  overviewComplete = complete;
}

/**
 * The latest sweep, with the schedule's next sweep and the refresh window. Asked for only once the
 * history (loaded first) holds a sweep: before the first sweep there is nothing to ask for, and the
 * console makes no request that it knows would fail.
 */
async function loadSweep(): Promise<SweepInfo | null> {
  if (sweepHistory.size === 0) return null;
  return api<SweepInfo>('GET', '/v1/sweeps/latest');
}

async function loadSweepHistory(): Promise<void> {
  const now = nowSeconds();
  const newest = Math.max(0, ...sweepHistory.keys());
  // From the newest known sweep on (its slices may still be adding), else the whole day.
  const since = newest > 0 ? newest : now - DAY_SECONDS;
  try {
    const { sweeps } = await api<{ sweeps: SweepPoint[] }>('GET', `/v1/sweeps?since=${since}`);
    for (const s of sweeps) sweepHistory.set(s.startedAt, s);
  } catch (err) {
    // A keeper without the history (404) shows no chart; anything else is reported.
    if (!(err instanceof ApiFailure && err.detail.status === 404)) throw err;
  }
  for (const at of sweepHistory.keys()) if (at <= now - DAY_SECONDS) sweepHistory.delete(at);
}

/** False once the keeper said it has no demo routes (404): not asked again on every poll. */
let demoRoutes = true;

async function loadDemo(): Promise<void> {
  if (!demoRoutes) return;
  try {
    demo = await api<{ outageUntil: number | null }>('GET', '/demo/outage');
  } catch (err) {
    demo = undefined;
    if (err instanceof ApiFailure && err.detail.status === 404) demoRoutes = false;
  }
}

// --- overview --------------------------------------------------------------------------------------

function figures(target: HTMLElement, rows: [string, string][]): void {
  target.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
}

/** A provider's last error, and when its circuit closed again after it. */
function lastErrorText(p: ProviderRow, now: number): string {
  const err = p.health?.lastError ?? latestError(overviewSessions, p.providerId);
  if (err === null || err === undefined) return '—';
  let text = `${errorText(err)} (${formatAgo(err.at, now)})`;
  const h = p.health;
  if (h?.state === 'closed' && typeof h.since === 'number' && h.since >= err.at) {
    text += `; recovered ${formatAgo(h.since, now)}`;
  }
  return text;
}

/** The outage banner follows the demo's switch: shown while the outage lasts, gone when it ends. */
function followOutage(now: number): void {
  const banner = $('outage-banner');
  const until = demo?.outageUntil ?? null;
  const on = until !== null && until > now;
  banner.hidden = !on;
  setText(
    banner,
    on ? `The demo provider's token endpoint answers 503 for ${formatExpiry(until, now)} more.` : '',
  );
}

function renderOverview(sweep: SweepInfo | null): void {
  const now = nowSeconds();
  lastSweep = sweep;
  const c = countSessions(overviewSessions);
  const more = overviewComplete ? '' : '+';
  figures($('by-status'), [
    ['Active', `${c.active}${more}`],
    ['… of which failing', `${c.failing}`],
    ['Reauthorization required', `${c.reauthorizationRequired}`],
    ['All sessions', `${c.total}${more}`],
  ]);
  figures(
    $('sweep'),
    sweep
      ? [
          ['Finished', formatAgo(sweep.finishedAt, now)],
          ['Due', String(sweep.due)],
          ['Refreshed', String(sweep.refreshed)],
          ['Failed', String(sweep.failedTransient + sweep.reauthorizationRequired)],
          ['Missed', String(sweep.missed)],
          ['Duration', `${sweep.durationMs} ms`],
        ]
      : [['Finished', 'none in the last 24 hours']],
  );
  const rows = providers.map((p) => {
    const circuit = circuitTone(p.health);
    const count = overviewSessions.filter((s) => s.providerId === p.providerId).length;
    const errorCell = lastErrorText(p, now);
    const circuitCell = el('td', { attrs: { 'data-cell': 'circuit' } }, [pill(circuit.text, circuit.tone)]);
    const probe = probeText(p.health, sweep, now);
    if (probe) circuitCell.append(` ${probe}`);
    if (p.clientRejectedAt !== undefined) circuitCell.append(' ', pill('client rejected', 'bad'));
    return el('tr', { attrs: { 'data-provider': p.providerId } }, [
      el('th', { text: p.providerId, attrs: { scope: 'row' } }),
      circuitCell,
      el('td', { text: String(count), className: 'num' }),
      el('td', { text: errorCell, className: 'error-text' }),
    ]);
  });
  $('health').replaceChildren(
    ...(rows.length > 0
      ? rows
      : [el('tr', {}, [el('td', { text: 'No provider yet.', attrs: { colspan: '4' } })])]),
  );
  const demoBox = $('demo');
  demoBox.hidden = demo === undefined;
  if (demo) {
    const until = demo.outageUntil;
    const on = until !== null && until > now;
    $('demo-state').textContent = on
      ? `The demo provider's token endpoint answers 503 for ${formatExpiry(until, now)} more.`
      : "The demo provider's token endpoint is up.";
    $<HTMLButtonElement>('outage').disabled = on;
  }
  followOutage(now);
}

// --- the sweep chart (plain SVG: attributes and classes, no inline style) ------------------------

const SVG = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number>,
  children: (Node | string)[] = [],
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

const CHART = { width: 960, height: 180, left: 44, right: 10, top: 14, bottom: 24 };

function renderChart(): void {
  const m = chartModel([...sweepHistory.values()], nowSeconds());
  const plotW = CHART.width - CHART.left - CHART.right;
  const plotH = CHART.height - CHART.top - CHART.bottom;
  const n = m.buckets.length;
  const step = plotW / n;
  const x = (i: number) => CHART.left + i * step;
  const y = (v: number) => CHART.top + plotH - (v / m.max) * plotH;
  const parts: SVGElement[] = [
    svg('title', { id: 'sweep-chart-title' }, ['Sweeps in the last 24 hours']),
    svg('desc', { id: 'sweep-chart-desc' }, [m.summary]),
  ];
  m.buckets.forEach((b, i) => {
    if (b.open) {
      parts.push(svg('rect', { class: 'open-period', x: x(i), y: CHART.top, width: step, height: plotH }));
    }
  });
  parts.push(
    svg('line', { class: 'axis', x1: CHART.left, y1: y(0), x2: CHART.width - CHART.right, y2: y(0) }),
    svg('line', { class: 'axis', x1: CHART.left, y1: CHART.top, x2: CHART.left, y2: y(0) }),
    svg('text', { class: 'tick', x: CHART.left - 6, y: CHART.top + 10, 'text-anchor': 'end' }, [
      String(m.max),
    ]),
    svg('text', { class: 'tick', x: CHART.left - 6, y: y(0), 'text-anchor': 'end' }, ['0']),
  );
  const [start, end] = axisLabels(m);
  parts.push(
    svg('text', { class: 'tick', x: CHART.left, y: CHART.height - 6 }, [start]),
    svg('text', { class: 'tick', x: CHART.width - CHART.right, y: CHART.height - 6, 'text-anchor': 'end' }, [
      end,
    ]),
  );
  // Four bars per bucket (due, refreshed, failed, missed); a failed bar is also marked on top.
  const barW = Math.max(1, (step * 0.8) / SERIES.length);
  m.buckets.forEach((b, i) => {
    SERIES.forEach((series, k) => {
      const value = b[series];
      if (value === 0) return;
      const bx = x(i) + step * 0.1 + k * barW;
      parts.push(
        svg('rect', { class: `bar ${series}`, x: bx, y: y(value), width: barW, height: y(0) - y(value) }),
      );
      if (series === 'failed') {
        parts.push(svg('circle', { class: 'failed-mark', cx: bx + barW / 2, cy: y(value) - 5, r: 3 }));
      }
    });
  });
  const chart = svg(
    'svg',
    {
      viewBox: `0 0 ${CHART.width} ${CHART.height}`,
      role: 'img',
      'aria-labelledby': 'sweep-chart-title sweep-chart-desc',
      class: 'sweep-chart',
    },
    parts,
  );
  $('sweep-chart').replaceChildren(chart);
  $('sweep-chart-summary').textContent = m.summary;
}

// --- sessions table --------------------------------------------------------------------------------

const rowsByKey = new Map<string, HTMLTableRowElement>();
const keyOf = (s: { userId: string; providerId: string }) => `${s.userId}\u0000${s.providerId}`;

function actionButton(label: string, action: string, s: SessionRow, danger = false): HTMLButtonElement {
  const b = el('button', {
    text: label,
    className: danger ? 'danger' : '',
    attrs: { type: 'button', 'data-action': action, 'aria-label': `${label} ${s.userId} / ${s.providerId}` },
  });
  return b;
}

const LIFE = { width: 100, height: 8 };

/** A session's remaining lifetime against the refresh window: the track, the window, what is left. */
function lifeBar(): SVGSVGElement {
  return svg(
    'svg',
    {
      class: 'life',
      viewBox: `0 0 ${LIFE.width} ${LIFE.height}`,
      width: LIFE.width,
      height: LIFE.height,
      'aria-hidden': 'true',
    },
    [
      svg('rect', { class: 'life-track', x: 0, y: 0, width: LIFE.width, height: LIFE.height }),
      svg('rect', { class: 'life-left', x: 0, y: 1, width: 0, height: LIFE.height - 2 }),
      svg('rect', { class: 'life-window', x: 0, y: 0, width: 0, height: LIFE.height }),
    ],
  );
}

/** Draws what is left of a lifetime on a scale of twice the refresh window (or more, for longer tokens). */
function paintLife(cellNode: HTMLElement, s: SessionRow, now: number): void {
  const bar = cellNode.querySelector('svg.life');
  const refreshWindow = lastSweep?.refreshWindowSeconds;
  if (!bar) return;
  const left = s.expiresAt === null ? null : s.expiresAt - now;
  const hidden = left === null || refreshWindow === undefined || s.status !== 'active';
  bar.classList.toggle('hidden', hidden);
  if (hidden || left === null || refreshWindow === undefined) return;
  const scale = Math.max(2 * refreshWindow, left);
  const w = (v: number) => String(Math.max(0, Math.min(LIFE.width, (v / scale) * LIFE.width)));
  bar.querySelector('.life-left')?.setAttribute('width', w(left));
  bar.querySelector('.life-window')?.setAttribute('width', w(refreshWindow));
  bar.classList.toggle('due', left <= refreshWindow);
  cellNode.title = `${left <= refreshWindow ? 'inside' : 'outside'} the refresh window (${refreshWindow}s): the sweep refreshes it once under ${refreshWindow}s are left`;
}

function buildRow(s: SessionRow): HTMLTableRowElement {
  const row = el('tr', { attrs: { 'data-user': s.userId, 'data-provider': s.providerId } }, [
    el('th', { text: s.userId, attrs: { scope: 'row' } }),
    el('td', { text: s.providerId }),
    el('td', { attrs: { 'data-cell': 'status' } }),
    el('td', { className: 'num', attrs: { 'data-cell': 'expires' } }, [
      el('span', { attrs: { 'data-part': 'text' } }),
      lifeBar(),
    ]),
    el('td', { className: 'num', attrs: { 'data-cell': 'refresh-expires' } }),
    el('td', { className: 'num', attrs: { 'data-cell': 'refreshed' } }),
    el('td', { className: 'num', attrs: { 'data-cell': 'failures' } }),
    el('td', { className: 'error-text', attrs: { 'data-cell': 'error' } }),
    el('td', {}, [
      el('div', { className: 'row-actions' }, [
        actionButton('Refresh', 'refresh', s),
        actionButton('Reconnect', 'reconnect', s),
        actionButton('Delete', 'delete', s, true),
      ]),
    ]),
  ]);
  return row;
}

const sessionData = new Map<string, SessionRow>();

function cell(row: HTMLTableRowElement, name: string): HTMLElement {
  return row.querySelector(`[data-cell="${name}"]`) as HTMLElement;
}

function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) node.textContent = text;
}

/** Updates the cells that move with time (the countdowns) and with data, without rebuilding rows. */
function paintRow(row: HTMLTableRowElement, s: SessionRow, now: number): void {
  const tone = sessionTone(s, now);
  const status = cell(row, 'status');
  const current = status.firstElementChild;
  if (!current || current.textContent !== tone.text) status.replaceChildren(pill(tone.text, tone.tone));
  let expires = formatExpiry(s.expiresAt, now);
  if (s.refreshMode === 'on_demand') expires += ' (on demand)';
  const expiresCell = cell(row, 'expires');
  setText(expiresCell.querySelector('[data-part="text"]') as HTMLElement, expires);
  paintLife(expiresCell, s, now);
  setText(cell(row, 'refresh-expires'), s.refreshExpiresAt ? formatExpiry(s.refreshExpiresAt, now) : '—');
  setText(cell(row, 'refreshed'), formatAgo(s.refreshedAt, now));
  setText(cell(row, 'failures'), String(s.failureCount));
  let error = errorText(s.lastError);
  if (s.lastError) error += ` (${formatAgo(s.lastError.at, now)})`;
  if (s.nextAttemptAt && s.nextAttemptAt > now) error += `; next attempt ${formatAgo(s.nextAttemptAt, now)}`;
  setText(cell(row, 'error'), error);
}

function renderSessions(sessions: SessionRow[]): void {
  const body = $('session-rows');
  const now = nowSeconds();
  const keep = new Set(sessions.map(keyOf));
  for (const [k, row] of rowsByKey) {
    if (!keep.has(k)) {
      row.remove();
      rowsByKey.delete(k);
      sessionData.delete(k);
    }
  }
  const empty = body.querySelector('tr[data-empty]');
  if (sessions.length === 0) {
    if (!empty) {
      body.append(
        el('tr', { attrs: { 'data-empty': '' } }, [
          el('td', { text: 'No session matches.', attrs: { colspan: '9' } }),
        ]),
      );
    }
  } else empty?.remove();
  // Rows stay the same elements across refreshes, so a focused button keeps its focus.
  let previous: HTMLTableRowElement | undefined;
  for (const s of sessions) {
    const k = keyOf(s);
    let row = rowsByKey.get(k);
    if (!row) {
      row = buildRow(s);
      rowsByKey.set(k, row);
    }
    sessionData.set(k, s);
    const expectedPlace = previous ? previous.nextElementSibling : body.firstElementChild;
    if (expectedPlace !== row) {
      if (previous) previous.after(row);
      else body.prepend(row);
    }
    paintRow(row, s, now);
    previous = row;
  }
  $('session-caption').textContent =
    `${sessions.length} session${sessions.length === 1 ? '' : 's'} on this page` +
    (filter.providerId ? `, provider ${filter.providerId}` : '') +
    (filter.status ? `, status ${filter.status.replace('_', ' ')}` : '');
  $('page-label').textContent = `page ${pageIndex + 1}`;
  $<HTMLButtonElement>('prev-page').disabled = pageIndex === 0;
  $<HTMLButtonElement>('next-page').disabled = nextCursor === null;
}

let loadedOnce = false;

function tick(): void {
  const now = nowSeconds();
  // The countdowns of the overview (the next probe, the outage) move every second too.
  if (loadedOnce && apiKey) renderOverview(lastSweep);
  for (const [k, row] of rowsByKey) {
    const s = sessionData.get(k);
    if (s) paintRow(row, s, now);
  }
}

async function loadSessionsPage(): Promise<void> {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (filter.providerId) q.set('providerId', filter.providerId);
  if (filter.status) q.set('status', filter.status);
  const cursor = pageCursors[pageIndex];
  if (cursor) q.set('cursor', cursor);
  const page = await api<{ sessions: SessionRow[]; cursor: string | null }>('GET', `/v1/sessions?${q}`);
  nextCursor = page.cursor;
  renderSessions(page.sessions);
}

// --- providers -------------------------------------------------------------------------------------

function probeLine(p: ProviderRow): string {
  const probe = probeText(p.health, lastSweep, nowSeconds());
  return probe ? ` ${probe}` : '';
}

function renderProviders(): void {
  const rows = providers.map((p) => {
    const endpoints: [string, string | undefined][] = [
      ['MCP server', p.mcpServerUrl],
      ['issuer', p.issuer],
      ['authorization', p.authorizationEndpoint],
      ['token', p.tokenEndpoint],
      ['revocation', p.revocationEndpoint],
    ];
    const list = el(
      'ul',
      { className: 'endpoints' },
      endpoints.filter(([, v]) => v).map(([k, v]) => el('li', { text: `${k}: ${v}` })),
    );
    const circuit = circuitTone(p.health);
    return el('tr', { attrs: { 'data-provider': p.providerId } }, [
      el('th', { text: p.providerId, attrs: { scope: 'row' } }),
      el('td', { text: registrationText(p) }),
      el('td', { text: clientText(p) }),
      el('td', {}, [list]),
      el('td', {}, [pill(circuit.text, circuit.tone), probeLine(p)]),
    ]);
  });
  $('provider-rows').replaceChildren(
    ...(rows.length > 0
      ? rows
      : [el('tr', {}, [el('td', { text: 'No provider yet.', attrs: { colspan: '5' } })])]),
  );
  syncSelect($<HTMLSelectElement>('filter-provider'), 'all providers');
  syncSelect($<HTMLSelectElement>('connect-provider'));
}

/** Keeps a provider <select> in step with the list, keeping the choice. */
function syncSelect(select: HTMLSelectElement, allLabel?: string): void {
  const wanted = [...(allLabel ? [''] : []), ...providers.map((p) => p.providerId)];
  const have = [...select.options].map((o) => o.value);
  if (wanted.join('\u0000') === have.join('\u0000')) return;
  const chosen = select.value;
  select.replaceChildren(
    ...wanted.map((v) => el('option', { text: v || (allLabel ?? ''), attrs: { value: v } })),
  );
  if (wanted.includes(chosen)) select.value = chosen;
}

// --- actions ---------------------------------------------------------------------------------------

function openInNewTab(url: string): void {
  window.open(url, '_blank', 'noopener,noreferrer');
}

function showConnectLink(url: string, label: string): void {
  const box = $('connect-link');
  const link = el('a', { text: label, attrs: { href: url, target: '_blank', rel: 'noopener noreferrer' } });
  box.replaceChildren('If no tab opened: ', link);
  box.hidden = false;
}

// --- connecting: authorize, the consent tab back to the console, complete ---------------------------

/**
 * The consent tab comes back to the console's own address with `status=pending&connection=<id>`.
 * It hands the id to the console tab that started the connection (same origin, BroadcastChannel),
 * which completes it for the user it was started for: the id alone connects nobody.
 */
const CONNECT_CHANNEL = 'tokenkeeper.console.connect';
const CONNECTION_LIFETIME_MS = 10 * 60_000;

interface ConnectMessage {
  id: string;
  status: 'pending' | 'error';
  providerId: string;
  connection?: string;
  error?: string;
}

interface ConnectReply {
  replyTo: string;
  text: string;
}

/** Connections this tab started and may complete. */
const startedHere: { userId: string; providerId: string; until: number }[] = [];

/**
 * Starts the authorize flow (POST …/authorize, the connect flow) and opens the provider's page in a
 * new tab, coming back to the console, which then completes the connection. When the keeper does
 * not allow the console's address as a redirect, the keeper's own page ends the flow: whoever opens
 * the link connects their account. A keeper without the connect flow answers 404 not_found; the
 * demo stands in for it then.
 */
async function startAuthorize(userId: string, providerId: string): Promise<void> {
  const path = `/v1/sessions/${segment(userId)}/${segment(providerId)}/authorize`;
  const redirectUri = `${location.origin}${location.pathname}`;
  let url: string;
  let completesHere = true;
  try {
    url = (await api<{ authorizationUrl: string }>('POST', path, { redirectUri })).authorizationUrl;
  } catch (err) {
    const refused =
      err instanceof ApiFailure &&
      err.detail.status === 400 &&
      /TOKENKEEPER_ALLOWED_REDIRECTS/u.test(err.detail.description);
    if (!refused) throw err;
    completesHere = false;
    url = (await api<{ authorizationUrl: string }>('POST', path, {})).authorizationUrl;
  }
  if (completesHere) {
    startedHere.push({ userId, providerId, until: Date.now() + CONNECTION_LIFETIME_MS });
  }
  openInNewTab(url);
  showConnectLink(url, `open the consent page for ${userId}`);
  say(
    completesHere
      ? `Opened the consent page for ${userId} / ${providerId} in a new tab; the console completes the connection when it comes back.`
      : `Opened the consent page for ${userId} / ${providerId} in a new tab. The keeper does not allow this console's address as a redirect, so whoever opens the page connects their account as ${userId}.`,
  );
}

/** In the console tab: completes a connection the consent tab handed back, for the user it was started for. */
async function onConnectMessage(channel: BroadcastChannel, m: ConnectMessage): Promise<void> {
  const now = Date.now();
  const candidates = startedHere.filter((s) => s.providerId === m.providerId && s.until > now);
  if (candidates.length === 0) return; // another console tab's, or too old
  const reply = (text: string) => channel.postMessage({ replyTo: m.id, text } satisfies ConnectReply);
  if (m.status === 'error' || m.connection === undefined) {
    say(`Not connected (${m.providerId}): ${m.error ?? 'error'}.`, true);
    reply(`The account was not connected: ${m.error ?? 'error'}.`);
    return;
  }
  for (const c of candidates) {
    const base = `/v1/sessions/${segment(c.userId)}/${segment(c.providerId)}`;
    try {
      await api('POST', `${base}/connections/${segment(m.connection)}`);
    } catch (err) {
      // Pending for another of the users started here: try the next one. Nothing changed.
      if (err instanceof ApiFailure && err.detail.error === 'connection_not_found') continue;
      reply('The account was not connected: the console could not complete it.');
      throw err;
    }
    startedHere.splice(startedHere.indexOf(c), 1);
    say(`Connected ${c.userId} / ${c.providerId}.`);
    reply(`Account connected for ${c.userId} (${c.providerId}). You can close this tab.`);
    await refreshAll();
    return;
  }
}

/** In the consent tab: hands the outcome to the console tab that started it, and shows its answer. */
function landFromConsent(): boolean {
  const q = new URLSearchParams(location.search);
  const status = q.get('status');
  const providerId = q.get('providerId') ?? '';
  if (status !== 'pending' && status !== 'error') return false;
  history.replaceState(null, '', location.pathname);
  const text = el('p', { text: 'Handing the sign-in back to the console…' });
  document.body.replaceChildren(el('main', {}, [el('h1', { text: 'tokenkeeper' }), text]));
  const message: ConnectMessage = { id: crypto.randomUUID(), status, providerId };
  const connection = q.get('connection');
  const error = q.get('error');
  if (connection) message.connection = connection;
  if (error) message.error = error;
  const channel = new BroadcastChannel(CONNECT_CHANNEL);
  const timer = setTimeout(() => {
    text.textContent =
      'No console tab completed this sign-in: start the connection again from the console (it expires in 10 minutes).';
  }, 15_000);
  channel.addEventListener('message', (event: MessageEvent<ConnectReply>) => {
    if (event.data?.replyTo !== message.id) return;
    clearTimeout(timer);
    text.textContent = event.data.text;
    channel.close();
  });
  channel.postMessage(message);
  return true;
}

function listenForConsent(): void {
  const channel = new BroadcastChannel(CONNECT_CHANNEL);
  channel.addEventListener('message', (event: MessageEvent<ConnectMessage>) => {
    const m = event.data;
    if (typeof m?.id !== 'string' || typeof m.providerId !== 'string') return;
    onConnectMessage(channel, m).catch((err: unknown) => {
      say(describe(err), true);
      $('status').dataset.source = 'action';
    });
  });
}

async function onRowAction(button: HTMLButtonElement): Promise<void> {
  const row = button.closest('tr');
  const userId = row?.getAttribute('data-user');
  const providerId = row?.getAttribute('data-provider');
  if (!row || userId === null || userId === undefined || !providerId) return;
  const base = `/v1/sessions/${segment(userId)}/${segment(providerId)}`;
  const action = button.getAttribute('data-action');
  if (action === 'refresh') {
    say(`Refreshing ${userId} / ${providerId}…`);
    let s: SessionRow;
    try {
      s = await api<SessionRow>('POST', `${base}/refresh`);
    } catch (err) {
      // The failure is on the session now (failures, last error): show it at once.
      await refreshAll();
      throw err;
    }
    sessionData.set(keyOf(s), s);
    paintRow(row as HTMLTableRowElement, s, nowSeconds());
    say(`Refreshed ${userId} / ${providerId}: expires in ${formatExpiry(s.expiresAt, nowSeconds())}.`);
  } else if (action === 'reconnect') {
    await startAuthorize(userId, providerId);
  } else if (action === 'delete') {
    const dialog = $<HTMLDialogElement>('confirm-delete');
    $('confirm-text').textContent =
      `The session of ${userId} with ${providerId} is deleted and its grant revoked at the provider. ` +
      'The user must connect again.';
    dialog.returnValue = '';
    dialog.showModal();
    await new Promise<void>((resolve) => dialog.addEventListener('close', () => resolve(), { once: true }));
    if (dialog.returnValue !== 'delete') {
      say('Nothing deleted.');
      button.focus();
      return;
    }
    await api('DELETE', base);
    say(`Deleted the session of ${userId} with ${providerId}.`);
    await refreshAll();
    $('session-filter').querySelector('select')?.focus();
  }
}

// --- refresh loop ----------------------------------------------------------------------------------

let loading: Promise<void> | undefined;

async function refreshAll(): Promise<void> {
  if (!apiKey) return;
  loading ??= (async () => {
    try {
      const [sweep] = await Promise.all([
        loadSweepHistory().then(loadSweep),
        loadProviders(),
        loadOverviewSessions(),
        loadDemo(),
      ]);
      await loadSessionsPage();
      renderOverview(sweep);
      renderChart();
      renderProviders();
      loadedOnce = true;
      $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
      if ($('status').classList.contains('error') && $('status').dataset.source === 'refresh') say('');
    } catch (err) {
      if (err instanceof ApiFailure && err.detail.status === 401) {
        sessionStorage.removeItem(KEY_STORAGE);
        apiKey = undefined;
        needKey();
      }
      say(`Could not load: ${describe(err)}`, true);
      $('status').dataset.source = 'refresh';
    } finally {
      loading = undefined;
    }
  })();
  return loading;
}

function needKey(): void {
  $('key-needed').hidden = apiKey !== undefined;
  // Without a key there is nothing to show: no tabs onto empty views.
  const nav = document.querySelector<HTMLElement>('header nav');
  if (nav) nav.hidden = apiKey === undefined;
  show(view);
}

function guard(fn: (event: Event) => Promise<void>): (event: Event) => void {
  return (event) => {
    fn(event).catch((err: unknown) => {
      say(describe(err), true);
      $('status').dataset.source = 'action';
    });
  };
}

function wire(): void {
  for (const tab of document.querySelectorAll<HTMLButtonElement>('.tab')) {
    tab.addEventListener('click', () => show(tab.dataset.view as View));
  }
  $('key-form').addEventListener(
    'submit',
    guard(async (event) => {
      event.preventDefault();
      const input = $<HTMLInputElement>('key-input');
      apiKey = input.value.trim() || undefined;
      input.value = '';
      if (apiKey) sessionStorage.setItem(KEY_STORAGE, apiKey);
      needKey();
      await refreshAll();
    }),
  );
  $('session-filter').addEventListener(
    'submit',
    guard(async (event) => {
      event.preventDefault();
      filter = {
        providerId: $<HTMLSelectElement>('filter-provider').value,
        status: $<HTMLSelectElement>('filter-status').value,
      };
      pageCursors.length = 1;
      pageIndex = 0;
      await loadSessionsPage();
    }),
  );
  $('next-page').addEventListener(
    'click',
    guard(async () => {
      if (nextCursor === null) return;
      pageCursors[pageIndex + 1] = nextCursor;
      pageIndex++;
      await loadSessionsPage();
    }),
  );
  $('prev-page').addEventListener(
    'click',
    guard(async () => {
      if (pageIndex === 0) return;
      pageIndex--;
      await loadSessionsPage();
    }),
  );
  $('session-rows').addEventListener(
    'click',
    guard(async (event) => {
      const button = (event.target as HTMLElement).closest('button[data-action]');
      if (button) await onRowAction(button as HTMLButtonElement);
    }),
  );
  $('register-form').addEventListener(
    'submit',
    guard(async (event) => {
      event.preventDefault();
      const providerId = $<HTMLInputElement>('register-id').value.trim();
      const body: Record<string, string> = { mcpServerUrl: $<HTMLInputElement>('register-url').value.trim() };
      const scope = $<HTMLInputElement>('register-scope').value.trim();
      if (scope) body.scope = scope;
      say(`Discovering ${body.mcpServerUrl}…`);
      const p = await api<ProviderRow>('PUT', `/v1/providers/${segment(providerId)}`, body);
      say(`Registered ${p.providerId} (${registrationText(p)}).`);
      await refreshAll();
    }),
  );
  $('connect-form').addEventListener(
    'submit',
    guard(async (event) => {
      event.preventDefault();
      await startAuthorize(
        $<HTMLInputElement>('connect-user').value.trim(),
        $<HTMLSelectElement>('connect-provider').value,
      );
    }),
  );
  $('outage').addEventListener(
    'click',
    guard(async () => {
      demo = await api<{ outageUntil: number | null }>('POST', '/demo/outage?seconds=30');
      renderOverview(await loadSweep());
    }),
  );
}

if (!landFromConsent()) {
  wire();
  listenForConsent();
  needKey();
  show('overview');
  void refreshAll();
  setInterval(() => void refreshAll(), REFRESH_MS);
  setInterval(tick, 1_000);
}
