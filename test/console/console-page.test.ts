import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONTENT_SECURITY_POLICY } from '../../client/console-assets.js';
import {
  axisLabels,
  chartModel,
  DAY_SECONDS,
  type SweepPoint,
} from '../../functions/local/console/browser/chart.js';
import {
  clientText,
  countSessions,
  formatAgo,
  formatExpiry,
  formatSpan,
  keyFromFragment,
  latestError,
  probeText,
  type SessionRow,
  segment,
  sessionTone,
} from '../../functions/local/console/browser/format.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The console as the local stack serves it: the page, its stylesheet and its bundled module under
 * /console, each with a strict CSP, and nothing inline that the CSP would have to allow. The page's
 * pure helpers are tested here too; the page itself runs in a real browser in console.e2e.test.ts.
 */

let keeper: TestStack;
beforeAll(async () => {
  keeper = await startTestStack();
});
afterAll(() => keeper?.stop());

const get = (path: string, init?: RequestInit) => fetch(`${keeper.url}${path}`, init);

describe('GET /console', () => {
  it('serves the page, the stylesheet and the bundled module, each under a strict CSP', async () => {
    for (const [path, type] of [
      ['/console', 'text/html'],
      ['/console/', 'text/html'],
      ['/console/console.css', 'text/css'],
      ['/console/console.js', 'text/javascript'],
      ['/console/favicon.svg', 'image/svg+xml'],
    ] as const) {
      const res = await get(path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-type')).toContain(type);
      expect(res.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect((await res.text()).length).toBeGreaterThan(100);
    }
    const csp = CONTENT_SECURITY_POLICY;
    expect(csp).toContain("default-src 'self'");
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|\*/u);
  });

  it('the page has no inline script, style or event handler, and loads only same-origin assets', async () => {
    const html = await (await get('/console')).text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/u);
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=/iu);
    for (const [, url] of html.matchAll(/(?:src|href)="([^"]+)"/gu)) expect(url).toMatch(/^\/console\//u);
  });

  it('the module is bundled (no import left to resolve) and never reads a token route', async () => {
    const js = await (await get('/console/console.js')).text();
    expect(js).not.toMatch(/\bimport\s*[{*'"]/u);
    expect(js).not.toContain('/token');
    expect(js).toContain('/refresh');
  });

  it('needs no key to load the page (the key stays in the fragment), and the API still does', async () => {
    expect((await get('/console')).status).toBe(200);
    expect((await get('/v1/sessions')).status).toBe(401);
  });

  it('unknown assets are 404 and other methods 405', async () => {
    expect((await get('/console/nothing.js')).status).toBe(404);
    const post = await get('/console', { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });

  it('the local stack can leave the console out', async () => {
    const bare = await startTestStack({ console: false });
    try {
      expect((await fetch(`${bare.url}/console`)).status).toBe(404);
    } finally {
      await bare.stop();
    }
  });
});

describe('the page’s helpers', () => {
  const base: SessionRow = {
    userId: 'u',
    providerId: 'p',
    status: 'active',
    expiresAt: 1_000,
    refreshExpiresAt: null,
    refreshMode: 'scheduled',
    refreshable: true,
    refreshedAt: null,
    failureCount: 0,
    lastError: null,
    nextAttemptAt: null,
  };

  it('formats spans, expiries and ages', () => {
    expect(formatSpan(5)).toBe('5s');
    expect(formatSpan(65)).toBe('1m 05s');
    expect(formatSpan(3_720)).toBe('1h 02m');
    expect(formatSpan(3 * 86_400)).toBe('3d 0h');
    expect(formatExpiry(1_045, 1_000)).toBe('45s');
    expect(formatExpiry(990, 1_000)).toBe('expired 10s ago');
    expect(formatExpiry(null, 1_000)).toBe('no expiry');
    expect(formatAgo(988, 1_000)).toBe('12s ago');
    expect(formatAgo(null, 1_000)).toBe('never');
  });

  it('reads the key from the fragment only', () => {
    expect(keyFromFragment('#key=abc_-123')).toBe('abc_-123');
    expect(keyFromFragment('#other=1')).toBeUndefined();
    expect(keyFromFragment('')).toBeUndefined();
  });

  it('tones sessions, counts them and finds a provider’s latest error', () => {
    expect(sessionTone(base, 900).tone).toBe('ok');
    expect(sessionTone({ ...base, failureCount: 2 }, 900).tone).toBe('warn');
    expect(sessionTone({ ...base, status: 'reauthorization_required' }, 900).tone).toBe('bad');
    expect(sessionTone({ ...base, refreshMode: 'on_demand' }, 2_000).tone).toBe('ok');
    const e1 = { code: 'http_503', description: 'down', at: 5 };
    const e2 = { code: 'timeout', description: 'slow', at: 9 };
    const rows = [
      { ...base, failureCount: 1, lastError: e1 },
      { ...base, userId: 'v', failureCount: 1, lastError: e2 },
      { ...base, userId: 'w', status: 'reauthorization_required' as const },
    ];
    expect(countSessions(rows)).toEqual({ total: 3, active: 2, failing: 2, reauthorizationRequired: 1 });
    expect(latestError(rows, 'p')).toEqual(e2);
    expect(latestError(rows, 'q')).toBeNull();
  });

  it('says when an open circuit really probes: at a sweep, never a time in the past', () => {
    const open = (nextProbeAt: number) => ({ state: 'open' as const, nextProbeAt });
    // Sweeps every 10 s: the last started at 1000, the next at 1010.
    const sweep = { startedAt: 1_000, nextSweepAt: 1_010 };
    expect(probeText({ state: 'closed' }, sweep, 1_003)).toBeUndefined();
    expect(probeText(open(1_002), sweep, 1_003)).toBe('probing at the next sweep (in 7s)');
    expect(probeText(open(1_008), sweep, 1_003)).toBe('probing at the next sweep (in 7s)');
    expect(probeText(open(1_015), sweep, 1_003)).toBe('next probe at the sweep in 17s');
    expect(probeText(open(1_002), sweep, 1_011)).toBe('probing now');
    expect(probeText({ state: 'half_open', nextProbeAt: 990 }, sweep, 1_003)).toBe('probing now');
    // A keeper that does not say when it sweeps.
    expect(probeText(open(1_008), null, 1_003)).toBe('next probe in 5s');
    expect(probeText(open(995), null, 1_003)).toBe('probing at the next sweep');
    for (let now = 990; now < 1_040; now++) {
      for (const at of [985, 1_002, 1_010, 1_025]) {
        expect(probeText(open(at), sweep, now)).not.toMatch(/ago/u);
        expect(probeText(open(at), null, now)).not.toMatch(/ago/u);
      }
    }
  });

  it('a public client reads as one, not as "none"', () => {
    expect(clientText({ clientId: 'Z7Utu5XCet', clientAuthMethod: 'none' })).toBe(
      'Z7Utu5XCet (public client: PKCE, no secret)',
    );
    expect(clientText({ clientId: 'c', clientAuthMethod: 'client_secret_basic' })).toBe(
      'c (secret, HTTP Basic)',
    );
  });

  it('buckets the last 24 hours of sweeps for the chart: four series, open circuits (held back or not), a summary', () => {
    const now = 100_000;
    const sweep = (startedAt: number, o: Partial<SweepPoint> = {}): SweepPoint => ({
      startedAt,
      due: 2,
      refreshed: 2,
      failedTransient: 0,
      reauthorizationRequired: 0,
      missed: 0,
      heldBack: 0,
      openCircuits: 0,
      ...o,
    });
    const m = chartModel(
      [
        sweep(now - DAY_SECONDS - 10), // older than a day: left out
        sweep(now - 40),
        // Its failure opened the circuit: nothing held back, yet the circuit was open.
        sweep(now - 30, { refreshed: 0, failedTransient: 1, due: 1, openCircuits: 1 }),
        sweep(now - 20, { refreshed: 0, heldBack: 1, due: 1, openCircuits: 1 }),
        sweep(now - 10, { missed: 1 }),
      ],
      now,
    );
    expect(m.buckets).toHaveLength(4);
    expect(m.buckets.map((b) => [b.due, b.refreshed, b.failed, b.missed, b.open])).toEqual([
      [2, 2, 0, 0, false],
      [1, 0, 1, 0, true],
      [1, 0, 0, 0, true],
      [2, 2, 0, 1, false],
    ]);
    expect(m.from).toBe(now - 40);
    expect(m.max).toBe(2);
    expect(m.summary).toMatch(
      /^4 sweeps since \d\d:\d\d: 6 due, 4 refreshed, 1 failed, 1 missed; a circuit was open during 2 of them\.$/u,
    );
    expect(chartModel([], now).summary).toBe('No sweep in the last 24 hours.');
    // A keeper that does not report openCircuits: a sweep that held sessions back had a circuit open.
    const { openCircuits: _, ...older } = sweep(now - 5, { heldBack: 2 });
    expect(chartModel([older], now).buckets.map((b) => b.open)).toEqual([true]);
    expect(axisLabels(m).map((l) => l.length)).toEqual([8, 8]); // 40 s apart: with seconds
    expect(axisLabels({ from: now - 7200, to: now }).map((l) => l.length)).toEqual([5, 5]);
    // Never more than 96 buckets, every sweep counted once.
    const many = chartModel(
      Array.from({ length: 1000 }, (_, i) => sweep(now - 1000 + i)),
      now,
    );
    expect(many.buckets).toHaveLength(96);
    expect(many.buckets.reduce((a, b) => a + b.sweeps, 0)).toBe(1000);
  });

  it('encodes ids as one path segment', () => {
    expect(segment("a b/c'd")).toBe('a%20b%2Fc%27d');
  });
});
