import type { SweepSummary } from '../services.js';
import type { DueKey, SessionStore } from '../store/store.js';

/**
 * A sweep's slices, shared by the dispatcher that cuts them (dispatch.ts) and the sweeper that works
 * them (sweep.ts): what a slice is and where it goes, how one shard's due range is read and cut into
 * slices, and the counts each slice adds to its sweep's record.
 */

export interface SweepSlice {
  /** The dispatch this slice belongs to (its counts are added to that sweep's record). */
  sweepId: string;
  shard: number;
  /** Inclusive range of `refreshDueAt`, epoch seconds; no `from`: everything overdue. */
  from?: number;
  to: number;
  /** When the dispatch began (epoch ms): a session refreshed since is not refreshed again by this sweep. */
  startedAt?: number;
}

/** Where slices go: SQS in AWS, an in-process queue locally. */
export interface SliceQueue {
  send(slices: readonly SweepSlice[]): Promise<void>;
}

/**
 * Cuts one shard's ascending due times into contiguous inclusive ranges of at most `size` sessions,
 * never between two sessions due the same second. The first range is open below (everything overdue),
 * each next one starts the second after the last ended, the last ends at `dueBy`: together they cover
 * the whole due range, so a session that arrives meanwhile falls in one of them. An empty shard has none.
 */
export function sliceRanges(
  dueAts: readonly number[],
  size: number,
  dueBy: number,
): { from?: number; to: number }[] {
  const ranges: { from?: number; to: number }[] = [];
  let start = 0;
  while (start < dueAts.length) {
    let end = Math.min(start + size, dueAts.length);
    // Keep sessions of the same second together: extend over equal due times.
    while (end < dueAts.length && dueAts[end] === dueAts[end - 1]) end++;
    const last = end >= dueAts.length;
    const previous = ranges.at(-1);
    ranges.push({
      ...(previous ? { from: previous.to + 1 } : {}),
      to: last ? dueBy : (dueAts[end - 1] as number),
    });
    start = end;
  }
  return ranges;
}

/** Validates a slice read from a queue message; undefined when it is not one. */
export function parseSlice(body: string): SweepSlice | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  const int = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v);
  if (typeof r.sweepId !== 'string' || r.sweepId.length === 0 || r.sweepId.length > 100) return undefined;
  if (!int(r.shard) || (r.shard as number) < 0 || !int(r.to)) return undefined;
  if (r.from !== undefined && (!int(r.from) || (r.from as number) > (r.to as number))) return undefined;
  if (r.startedAt !== undefined && !int(r.startedAt)) return undefined;
  return {
    sweepId: r.sweepId,
    shard: r.shard as number,
    ...(r.from === undefined ? {} : { from: r.from as number }),
    to: r.to as number,
    ...(r.startedAt === undefined ? {} : { startedAt: r.startedAt as number }),
  };
}

/** The counts one sweep or slice adds to the latest sweep's record. */
const COUNTED = [
  'refreshed',
  'skipped',
  'failedTransient',
  'reauthorizationRequired',
  'missed',
  'backlog',
] as const;

/** Every page of one shard's due range of the index, ascending by due time (`from` bounds it below). */
export async function readDueKeys(
  store: Pick<SessionStore, 'queryDue'>,
  shard: number,
  dueBy: number,
  from?: number,
): Promise<DueKey[]> {
  const keys: DueKey[] = [];
  let cursor: Record<string, unknown> | undefined;
  do {
    const page = await store.queryDue(shard, dueBy, cursor, from);
    keys.push(...page.keys);
    cursor = page.cursor;
  } while (cursor);
  return keys;
}

/** The counts a sweep or slice adds to the latest sweep's record (`due` is the dispatch's). */
export function countsOf(summary: SweepSummary): Record<string, number> {
  return Object.fromEntries(COUNTED.map((field) => [field, summary[field]]));
}

/** The latest sweep's record as a dispatch (or a whole sweep) starts it: what is due, nothing done yet. */
export function startCounts(due: number): Record<string, number> {
  return { due, ...countsOf(emptySummary()), heldBack: 0, openCircuits: 0 };
}

/** A summary with every count at zero. */
export function emptySummary(): SweepSummary {
  return {
    due: 0,
    refreshed: 0,
    skipped: 0,
    failedTransient: 0,
    reauthorizationRequired: 0,
    missed: 0,
    backlog: 0,
    durationMs: 0,
  };
}

/** One sweep's summary from its slices' summaries, with the sweep's own duration. */
export function addSummaries(summaries: readonly SweepSummary[], durationMs: number): SweepSummary {
  const total = { ...emptySummary(), durationMs };
  for (const s of summaries) {
    for (const field of COUNTED) total[field] += s[field];
    total.due += s.due;
  }
  return total;
}
