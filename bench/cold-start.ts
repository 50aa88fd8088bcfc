import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { KEEPER_NODE_MAJOR } from '../lib/keeper-function.js';
import { median, round } from './stats.js';

/**
 * Cold start of each Lambda bundle: the esbuild output built the way lib/keeper-function.ts has the
 * CDK build it (ESM for the runtime's Node.js major, createRequire banner, module/main fields,
 * minified, source map, every dependency bundled, AWS SDK included), its size, and the time
 * `import()` of it takes in a fresh `node` (the bench's own, that same major) with the Lambda's
 * environment (NODE_OPTIONS=--enable-source-maps as deployed). The probe also counts socket
 * connections and DNS lookups during initialisation, which must be none.
 */

export const BANNER =
  "import { createRequire as __tkCreateRequire } from 'node:module'; const require = __tkCreateRequire(import.meta.url);";

export const BUNDLES = {
  api: 'functions/api/handler.ts',
  refresh: 'functions/refresh/handler.ts',
} as const;

export interface BundleRun {
  entry: string;
  bytes: number;
  gzipBytes: number;
  sourceMapBytes: number;
  /** module initialisation (`await import(bundle)`), ms, as deployed (source maps on) */
  initMs: number[];
  initMedianMs: number;
  /** the same without --enable-source-maps */
  initNoSourceMapsMedianMs: number;
  rssMb: number;
  networkCalls: number;
}

const PROBE = `
import net from 'node:net';
import dns from 'node:dns';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
let network = 0;
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) { network++; return connect.apply(this, args); };
const lookup = dns.lookup;
dns.lookup = function (...args) { network++; return lookup.apply(this, args); };
const t0 = performance.now();
const mod = await import(pathToFileURL(process.argv[2]).href);
const initMs = performance.now() - t0;
await new Promise((resolve) => setTimeout(resolve, 100));
const line = JSON.stringify({ initMs, network, rss: process.memoryUsage().rss, handler: typeof mod.handler });
process.stderr.write(line + '\\n');
process.exit(0);
`;

/** Checks that lib/keeper-function.ts still bundles the way this file mirrors; returns the differences. */
export function bundlingDrift(root: string): string[] {
  let text: string;
  try {
    text = readFileSync(join(root, 'lib/keeper-function.ts'), 'utf8');
  } catch {
    return ['lib/keeper-function.ts not found'];
  }
  const expect: [string, string][] = [
    ['format: OutputFormat.ESM', 'ESM output'],
    ['minify: true', 'minify'],
    ['externalModules: []', 'every dependency bundled'],
    ["mainFields: ['module', 'main']", 'main fields'],
    [BANNER, 'createRequire banner'],
    ["NODE_OPTIONS: '--enable-source-maps'", 'source maps enabled at run time'],
  ];
  return expect.filter(([needle]) => !text.includes(needle)).map(([, what]) => what);
}

async function buildBundle(root: string, entry: string, outDir: string): Promise<string> {
  await mkdir(outDir, { recursive: true });
  const outfile = join(outDir, 'index.mjs');
  await build({
    entryPoints: [join(root, entry)],
    outfile,
    bundle: true,
    platform: 'node',
    target: `node${KEEPER_NODE_MAJOR}`,
    format: 'esm',
    mainFields: ['module', 'main'],
    minify: true,
    sourcemap: true,
    sourcesContent: false,
    banner: { js: BANNER },
    external: [],
    logLevel: 'silent',
  });
  return outfile;
}

function lambdaEnv(sourceMaps: boolean): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    AWS_LAMBDA_FUNCTION_NAME: 'tokenkeeper-bench',
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '512',
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'AKIDBENCHONLY',
    AWS_SECRET_ACCESS_KEY: 'bench-only',
    AWS_SESSION_TOKEN: 'bench-only',
    TOKENKEEPER_TABLE_NAME: 'tokenkeeper-bench',
    TOKENKEEPER_KEYRING_SECRET_ARN: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:x',
    TOKENKEEPER_EVENT_BUS_NAME: 'default',
    POWERTOOLS_SERVICE_NAME: 'tokenkeeper',
    POWERTOOLS_METRICS_NAMESPACE: 'TokenKeeper',
    POWERTOOLS_LOG_LEVEL: 'INFO',
    ...(sourceMaps ? { NODE_OPTIONS: '--enable-source-maps' } : {}),
  };
}

async function probe(
  probePath: string,
  bundle: string,
  sourceMaps: boolean,
): Promise<{ initMs: number; network: number; rss: number; handler: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [probePath, bundle], {
      env: lambdaEnv(sourceMaps),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString('utf8');
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      const line = err
        .trim()
        .split('\n')
        .reverse()
        .find((l) => l.startsWith('{"initMs"'));
      if (code !== 0 || !line) reject(new Error(`init probe failed (${code}): ${err.slice(0, 2000)}`));
      else resolve(JSON.parse(line));
    });
  });
}

export async function runColdStart(
  root: string,
  workDir: string,
  runs: number,
): Promise<Record<string, BundleRun>> {
  const probePath = join(workDir, 'probe.mjs');
  await mkdir(workDir, { recursive: true });
  await writeFile(probePath, PROBE);
  const outfiles: Record<string, string> = {};
  for (const [name, entry] of Object.entries(BUNDLES)) {
    outfiles[name] = await buildBundle(root, entry, join(workDir, name));
  }
  const samples: Record<string, { on: number[]; off: number[]; network: number; rss: number[] }> = {};
  for (const name of Object.keys(BUNDLES)) samples[name] = { on: [], off: [], network: 0, rss: [] };
  // Interleave the bundles and the two modes so drift on a noisy machine hits all of them alike.
  for (let r = 0; r < runs; r++) {
    for (const name of Object.keys(BUNDLES)) {
      for (const sourceMaps of [true, false]) {
        const s = samples[name] as (typeof samples)[string];
        const result = await probe(probePath, outfiles[name] as string, sourceMaps);
        if (result.handler !== 'function') throw new Error(`${name} bundle exports no handler function`);
        (sourceMaps ? s.on : s.off).push(result.initMs);
        s.network = Math.max(s.network, result.network);
        if (sourceMaps) s.rss.push(result.rss);
      }
    }
  }
  const out: Record<string, BundleRun> = {};
  for (const [name, entry] of Object.entries(BUNDLES)) {
    const file = outfiles[name] as string;
    const s = samples[name] as (typeof samples)[string];
    out[name] = {
      entry,
      bytes: (await stat(file)).size,
      gzipBytes: gzipSync(readFileSync(file)).length,
      sourceMapBytes: (await stat(`${file}.map`)).size,
      initMs: s.on.map((v) => round(v, 1)),
      initMedianMs: median(s.on),
      initNoSourceMapsMedianMs: median(s.off),
      rssMb: median(s.rss) / (1024 * 1024),
      networkCalls: s.network,
    };
  }
  return out;
}
