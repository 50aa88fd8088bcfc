import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { markdownTable, type Row, table } from './report.js';

/**
 * Turns a V8 CPU profile (`.cpuprofile`, from `npm run bench:oidc -- --profile out.cpuprofile` or
 * `node --cpu-prof`) into the tables of docs/performance.md: self time by category (our code, the AWS
 * SDK, oauth4webapi, undici, crypto, …) and the top frames by self time.
 *
 *   npx tsx bench/profile-summary.ts out.cpuprofile [--top 25] [--markdown] [--keeper-cpu-ms 2.5]
 *
 * Idle time is left out; percentages are of the busy (sampled, non-idle) time. Paths are shown from
 * `functions/`, `bench/` or the package name on, never the machine's directories.
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export type Category =
  | 'ours'
  | 'aws-sdk'
  | 'oauth4webapi'
  | 'undici'
  | 'crypto'
  | 'powertools'
  | 'node http/net/streams'
  | 'gc'
  | 'bench'
  | 'other';

const NATIVE_CRYPTO = new Set([
  'Hash',
  'Hmac',
  'update',
  'digest',
  'final',
  'init',
  'initiv',
  'setAAD',
  'setAuthTag',
  'getAuthTag',
  'randomBytes',
  'hkdf',
]);

export function categorize(frame: CallFrame): Category {
  const url = frame.url;
  const name = frame.functionName;
  if (name === '(garbage collector)') return 'gc';
  if (/node_modules\/(@aws-sdk|@smithy|@aws-crypto|fast-xml-parser|bowser)\//.test(url)) return 'aws-sdk';
  if (url.includes('node_modules/oauth4webapi/')) return 'oauth4webapi';
  if (url.includes('node_modules/@aws-lambda-powertools/')) return 'powertools';
  if (url.includes('undici')) return 'undici';
  if (/(^|\/)functions\//.test(url) && !url.includes('node_modules')) return 'ours';
  if (/(^|\/)bench\//.test(url) && !url.includes('node_modules')) return 'bench';
  if (/^node:(crypto|internal\/crypto)/.test(url) || url.includes('internal/crypto/')) return 'crypto';
  if (
    /^node:(_http|http|https|net|stream|internal\/(streams|http|net|webstreams|stream_base|dns))/.test(url)
  ) {
    return 'node http/net/streams';
  }
  // Native frames have no URL; these names are node's crypto bindings (hashes and HMACs of SigV4,
  // AES-GCM of the sealed tokens). Nothing else in the keeper has native functions of these names.
  if (url === '' && NATIVE_CRYPTO.has(name)) return 'crypto';
  if (url === '' && name === 'writev') return 'node http/net/streams';
  return 'other';
}

/** A frame's location without the machine's directories. */
export function shortUrl(url: string): string {
  const modules = url.lastIndexOf('node_modules/');
  if (modules >= 0) return url.slice(modules + 'node_modules/'.length);
  const m = /(?:^|\/)((?:functions|bench|test|lib)\/.*)$/.exec(url.replace(/^file:\/\//, ''));
  if (m) return m[1] as string;
  return url || '(native)';
}

export interface ProfileSummary {
  totalMs: number;
  busyMs: number;
  categories: { category: Category; ms: number; share: number }[];
  frames: { name: string; location: string; category: Category; ms: number; share: number }[];
}

export function summarizeProfile(profile: CpuProfile, top = 25): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  // A sample's time is the delta to the next one (the last sample gets none).
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i] as number;
    const dt = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  }
  const frames = new Map<string, { name: string; location: string; category: Category; us: number }>();
  const categories = new Map<Category, number>();
  let total = 0;
  let busy = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id) as ProfileNode;
    const f = node.callFrame;
    total += us;
    if (f.functionName === '(idle)' || f.functionName === '(program)') continue;
    busy += us;
    const category = categorize(f);
    categories.set(category, (categories.get(category) ?? 0) + us);
    const location = `${shortUrl(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    const key = `${f.functionName}\u0000${location}`;
    const entry = frames.get(key) ?? { name: f.functionName || '(anonymous)', location, category, us: 0 };
    entry.us += us;
    frames.set(key, entry);
  }
  return {
    totalMs: total / 1000,
    busyMs: busy / 1000,
    categories: [...categories]
      .map(([category, us]) => ({ category, ms: us / 1000, share: us / busy }))
      .sort((a, b) => b.ms - a.ms),
    frames: [...frames.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({ ...f, ms: f.us / 1000, share: f.us / busy })),
  };
}

/**
 * `keeperCpuMs`: the keeper's measured CPU per refresh; each category's share of the busy samples is
 * shown as its part of that figure. (The samples' own times are wall clock: on a loaded machine they
 * include time the process was waiting for a core.)
 */
export function renderSummary(s: ProfileSummary, markdown: boolean, keeperCpuMs?: number): string {
  const render = markdown ? markdownTable : table;
  const pct = (v: number) => `${(v * 100).toFixed(1)} %`;
  const catRows: Row[] = s.categories.map((c) => [
    c.category,
    `${c.ms.toFixed(0)} ms`,
    pct(c.share),
    ...(keeperCpuMs ? [`${(c.share * keeperCpuMs).toFixed(2)} ms`] : []),
  ]);
  const frameRows: Row[] = s.frames.map((f) => [
    f.name,
    f.location,
    f.category,
    `${f.ms.toFixed(0)} ms`,
    pct(f.share),
  ]);
  return [
    `busy ${s.busyMs.toFixed(0)} ms of ${s.totalMs.toFixed(0)} ms sampled`,
    '',
    render(
      ['category', 'self time', 'share of busy', ...(keeperCpuMs ? ['of the CPU per refresh'] : [])],
      catRows,
      ['l', 'r', 'r', 'r'],
    ),
    '',
    render(['function', 'location', 'category', 'self time', 'share'], frameRows, ['l', 'l', 'l', 'r', 'r']),
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      top: { type: 'string', default: '25' },
      markdown: { type: 'boolean', default: false },
      'keeper-cpu-ms': { type: 'string' },
    },
  });
  const file = positionals[0];
  if (!file) {
    process.stderr.write(
      'usage: npx tsx bench/profile-summary.ts <file.cpuprofile> [--top 25] [--markdown] [--keeper-cpu-ms 2.5]\n',
    );
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const summary = summarizeProfile(profile, Number(values.top));
  process.stdout.write(
    `${renderSummary(summary, values.markdown ?? false, values['keeper-cpu-ms'] ? Number(values['keeper-cpu-ms']) : undefined)}\n`,
  );
}
