import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { startBenchEnv } from './env.js';
import { oidcCommand, oidcRows, runOidcPhase } from './oidc-phase.js';
import { markdownTable, table } from './report.js';
import { round } from './stats.js';

/**
 * `npm run bench:oidc`: only the real-OAuth-server phase of `npm run bench` (bench/oidc-phase.ts),
 * for quick measurements and profiles. `--profile out.cpuprofile` adds one profiled sweep of the
 * largest N; `--warm` sweeps every run with one keeper (a warm container) instead of a fresh one
 * per run (a new container's first sweep); `--warmup N` sweeps N refreshes at L = 0 first (2,000);
 * `npx tsx bench/profile-summary.ts out.cpuprofile` turns it into the table in
 * docs/performance.md.
 */

const { values: flags } = parseArgs({
  options: {
    sessions: { type: 'string', default: '320,2000' },
    latency: { type: 'string', default: '100' },
    concurrency: { type: 'string', default: '32' },
    repeats: { type: 'string', default: '3' },
    profile: { type: 'string' },
    /** One keeper for every run (a warm container) instead of a fresh one per run. */
    warm: { type: 'boolean', default: false },
    /** Refreshes swept at L = 0 before the measured runs. */
    warmup: { type: 'string', default: '2000' },
    markdown: { type: 'boolean', default: false },
  },
});

const sessions = String(flags.sessions)
  .split(',')
  .map((s) => Number(s));
const latencyMs = Number(flags.latency);
const concurrency = Number(flags.concurrency);
const repeats = Number(flags.repeats);
const t0 = performance.now();
const progress = (message: string) =>
  process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(0)}s] ${message}\n`);
const load = () => os.loadavg().map((v) => round(v, 2));
const loadAtStart = load();

const env = await startBenchEnv({
  sessions: Math.max(...sessions),
  latencyMs,
  concurrency,
  repeats,
  hotRequests: 0,
  hotSessions: 0,
  coldRuns: 0,
  accessTokenBytes: 1024,
  refreshTokenBytes: 64,
  shardCount: 4,
});
let figures: Awaited<ReturnType<typeof runOidcPhase>>;
try {
  figures = await runOidcPhase(env, {
    sessions,
    repeats,
    latencyMs,
    concurrency,
    profile: flags.profile,
    container: flags.warm ? 'warm' : 'cold',
    warmupRefreshes: Number(flags.warmup),
    progress,
  });
} finally {
  await env.stop();
}
const { header, rows, align } = oidcRows(figures);
process.stdout.write(
  [
    '',
    `load average ${loadAtStart.join(' / ')} at start, ${load().join(' / ')} at end; ${os.cpus().length} CPUs, Node ${process.version}`,
    flags.markdown ? markdownTable(header, rows, align) : table(header, rows, align),
    `reproduce: ${oidcCommand({ sessions, latencyMs, concurrency, repeats, warm: flags.warm, warmup: Number(flags.warmup) })}`,
    '',
  ].join('\n'),
);
