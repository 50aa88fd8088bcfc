import { parseArgs } from 'node:util';
import { runFreeze, startFreezeWorld } from '../test/support/freeze.js';

/**
 * `npm run bench:freeze`: one of two keeper processes (bin/local.ts on one dynalite table) stopped with
 * SIGSTOP while its sweep's grants are at the provider (oidc-provider, rotation and reuse detection on,
 * behind a proxy that holds each answer, after rotating, until just after the SIGSTOP), then resumed with SIGCONT. The other keeper
 * is asked for a fresh token of every session all along. Reports refresh tokens presented twice,
 * sessions lost, and the other keeper's answers during the freeze; then each session is
 * force-refreshed once to show whether it still works.
 *
 * The keepers run with the default settings (HTTP timeout, lease, grant timeout) unless flags or
 * TOKENKEEPER_* variables given with --env say otherwise.
 *
 *   npm run bench:freeze -- [--freeze 60] [--sessions 16] [--processes 2]
 *                           [--env TOKENKEEPER_LEASE_SECONDS=90,...]
 */

const { values: flags } = parseArgs({
  options: {
    freeze: { type: 'string', default: '60' },
    sessions: { type: 'string', default: '16' },
    processes: { type: 'string', default: '2' },
    env: { type: 'string', default: '' },
  },
});
const sessions = Number(flags.sessions);
const freezeMs = Number(flags.freeze) * 1000;
const processes = Number(flags.processes) === 1 ? 1 : 2;
const env: Record<string, string> = {};
for (const pair of flags.env.split(',').filter((p) => p !== '')) {
  const eq = pair.indexOf('=');
  env[pair.slice(0, eq)] = pair.slice(eq + 1);
}

const world = await startFreezeWorld({ sessions, env });
try {
  const f = await runFreeze(world, {
    processes,
    sessions,
    freezeMs,
    sweep: 'request',
    env,
    // Long enough for an open circuit's probes (up to 10 s apart by default) and a lease to run out.
    settleMs: 45_000,
    log: (line) => process.stdout.write(`  ${line}\n`),
  });
  const { sweepLines, ...figures } = f;
  for (const [keeper, lines] of Object.entries(sweepLines)) {
    for (const line of lines) process.stdout.write(`  ${keeper}: ${line}\n`);
  }
  process.stdout.write(
    `\nfreeze ${(f.frozenMs / 1000).toFixed(1)} s of one of ${processes} keepers, ${f.inFlightAtFreeze} of ${f.sessions} grants in flight\n` +
      `  reuses (refresh tokens presented twice): ${f.reuses}; grants refused: ${f.refusedGrants}\n` +
      `  sessions lost (reauthorization_required): ${f.lost}; active: ${f.active}\n` +
      `  other keeper's answers during the freeze: ${JSON.stringify(f.otherDuringFreeze)}; after: ${JSON.stringify(f.otherAfterThaw)}` +
      `${f.firstOtherRefusalMs === undefined ? '' : `; first refusal ${(f.firstOtherRefusalMs / 1000).toFixed(1)} s into the freeze`}\n` +
      `  forced refresh of each afterwards: ${JSON.stringify(f.forced)}; refreshable: ${f.refreshableAfter}\n` +
      `${JSON.stringify(figures)}\n`,
  );
} finally {
  await world.stop();
}
