import { parseArgs } from 'node:util';
import { createGuardedFetch } from '../functions/core/oauth/net-guard.js';
import type { FetchLike } from '../functions/core/ports.js';
import { runAb } from './ab.js';
import { startChild } from './children.js';
import { pool } from './env.js';

/**
 * `npx tsx bench/fetch-ab.ts`: an in-process A/B of the grant's HTTP exchange (issue 15). The bench's
 * token endpoint runs in a child process; this process POSTs a form to it, C at a time, and reads
 * the JSON answer, through the keeper's guarded fetch (to a literal address; to a name, which the
 * guard resolves, reusing the answer or resolving for every request) and through Node's own fetch, charging `process.cpuUsage()` to the variant that
 * ran. Variants take turns round by round in a rotating order; figures are medians over rounds.
 */

const { values: flags } = parseArgs({
  options: {
    calls: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '7' },
    concurrency: { type: 'string', default: '32' },
  },
});
const calls = Number(flags.calls);
const rounds = Number(flags.rounds);
const concurrency = Number(flags.concurrency);

const token = await startChild('token', {
  accessTokenBytes: 1024,
  refreshTokenBytes: 64,
  expiresIn: 3600,
  clientId: 'c',
  clientSecret: 's',
});

const variants: { name: string; url: string; fetch: FetchLike }[] = [
  {
    name: 'guarded, literal',
    url: `http://127.0.0.1:${token.port}/token`,
    fetch: createGuardedFetch({ allowInsecureHttp: true }),
  },
  {
    name: 'guarded, name',
    url: `http://localhost:${token.port}/token`,
    fetch: createGuardedFetch({ allowInsecureHttp: true }),
  },
  {
    name: 'guarded, name, resolving every request',
    url: `http://localhost:${token.port}/token`,
    fetch: createGuardedFetch({ allowInsecureHttp: true, resolvedTtlMs: 0 }),
  },
  { name: 'node fetch, literal', url: `http://127.0.0.1:${token.port}/token`, fetch: globalThis.fetch },
];

const grant = async (v: (typeof variants)[number], i: number) => {
  const res = await v.fetch(v.url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: `rt-none-${i}` }),
  });
  JSON.parse(await res.text());
};

for (const v of variants) await pool(500, concurrency, (i) => grant(v, i));

process.stdout.write(
  `\n${calls} POSTs per variant and round, C = ${concurrency}; ` +
    (await runAb(
      variants.map((v) => ({
        name: v.name,
        run: (n) => pool(n, concurrency, (i) => grant(v, i)).then(() => {}),
      })),
      rounds,
      calls,
    )),
);
token.stop();
