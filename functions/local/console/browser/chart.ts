/**
 * The Overview's sweep chart as plain data (no DOM): the last 24 hours of sweeps bucketed along
 * time, four series per bucket, and the buckets in which a provider's circuit was open (a sweep
 * that found a circuit open, held sessions back, or opened one). console.ts turns it into SVG elements; nothing here needs a browser.
 */

export interface SweepPoint {
  startedAt: number;
  due: number;
  refreshed: number;
  failedTransient: number;
  reauthorizationRequired: number;
  missed: number;
  heldBack?: number;
  /** Providers whose circuit was open at some point of the sweep. */
  openCircuits?: number;
}

export const SERIES = ['due', 'refreshed', 'failed', 'missed'] as const;
export type Series = (typeof SERIES)[number];

export interface Bucket {
  from: number;
  to: number;
  sweeps: number;
  due: number;
  refreshed: number;
  failed: number;
  missed: number;
  /** A provider's circuit was open during a sweep in it. */
  open: boolean;
}

export interface ChartModel {
  from: number;
  to: number;
  buckets: Bucket[];
  /** The largest value of any series in any bucket (at least 1). */
  max: number;
  /** One sentence for screen readers (the SVG's description). */
  summary: string;
}

export const DAY_SECONDS = 24 * 3600;
const MAX_BUCKETS = 96;

/** A circuit was open during the sweep (a keeper that does not report `openCircuits`: it held sessions back). */
const circuitOpen = (s: SweepPoint) => (s.openCircuits ?? 0) > 0 || (s.heldBack ?? 0) > 0;

const clock = (s: number) => new Date(s * 1000).toTimeString().slice(0, 5);

/**
 * Buckets the sweeps of the last 24 hours before `now`. The time axis starts at the first sweep
 * (a young stack's chart is not a sliver at the right edge) and has at most 96 buckets.
 */
export function chartModel(sweeps: SweepPoint[], now: number): ChartModel {
  const inDay = sweeps.filter((s) => s.startedAt > now - DAY_SECONDS && s.startedAt <= now);
  const from = inDay.length > 0 ? Math.min(...inDay.map((s) => s.startedAt)) : now - DAY_SECONDS;
  const span = Math.max(1, now - from);
  const count = Math.max(1, Math.min(MAX_BUCKETS, inDay.length));
  const width = span / count;
  const buckets: Bucket[] = Array.from({ length: count }, (_, i) => ({
    from: from + i * width,
    to: from + (i + 1) * width,
    sweeps: 0,
    due: 0,
    refreshed: 0,
    failed: 0,
    missed: 0,
    open: false,
  }));
  for (const s of inDay) {
    const b = buckets[Math.min(count - 1, Math.floor((s.startedAt - from) / width))] as Bucket;
    b.sweeps++;
    b.due += s.due;
    b.refreshed += s.refreshed;
    b.failed += s.failedTransient + s.reauthorizationRequired;
    b.missed += s.missed;
    if (circuitOpen(s)) b.open = true;
  }
  const max = Math.max(1, ...buckets.flatMap((b) => SERIES.map((k) => b[k])));
  const total = (k: Series) => buckets.reduce((a, b) => a + b[k], 0);
  const openSweeps = inDay.filter(circuitOpen).length;
  const summary =
    inDay.length === 0
      ? 'No sweep in the last 24 hours.'
      : `${inDay.length} sweep${inDay.length === 1 ? '' : 's'} since ${clock(from)}: ` +
        `${total('due')} due, ${total('refreshed')} refreshed, ${total('failed')} failed, ${total('missed')} missed` +
        (openSweeps > 0 ? `; a circuit was open during ${openSweeps} of them.` : '.');
  return { from, to: now, buckets, max, summary };
}

/** Axis labels: the start and end times, `HH:MM`, or `HH:MM:SS` when they are less than an hour apart. */
export function axisLabels(m: Pick<ChartModel, 'from' | 'to'>): [string, string] {
  const label = (t: number) => new Date(t * 1000).toTimeString().slice(0, m.to - m.from < 3600 ? 8 : 5);
  return [label(m.from), label(m.to)];
}
