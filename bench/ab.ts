import { loadavg } from 'node:os';
import { median, round } from './stats.js';

/**
 * Interleaved in-process A/B of CPU per call (bench/sdk-ab.ts, bench/fetch-ab.ts). Each round runs
 * every variant once, in an order that rotates from round to round, and charges `process.cpuUsage()`
 * to the variant that ran; each variant is then compared with the first one round by round, so slow
 * drifts of the load on a shared machine cancel.
 */

export interface AbVariant {
  name: string;
  /** Makes `calls` calls, however concurrently. */
  run(calls: number): Promise<void>;
}

export async function runAb(variants: AbVariant[], rounds: number, calls: number): Promise<string> {
  const perCall = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  const loads: number[] = [];
  for (let r = 0; r < rounds; r++) {
    loads.push(loadavg()[0] as number);
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(k + r) % variants.length] as AbVariant;
      const u0 = process.cpuUsage();
      await v.run(calls);
      const u = process.cpuUsage(u0);
      perCall.get(v.name)?.push((u.user + u.system) / 1000 / calls);
    }
  }
  const first = perCall.get(variants[0]?.name ?? '') ?? [];
  const width = Math.max(...variants.map((v) => v.name.length)) + 2;
  const lines = [`${rounds} rounds; load 1m ${round(Math.min(...loads))}–${round(Math.max(...loads))}`];
  for (const [name, values] of perCall) {
    const diffs = values.map((v, r) => v - (first[r] as number));
    const lower = diffs.filter((d) => d < 0).length;
    const paired = median(diffs);
    lines.push(
      `${name.padEnd(width)} ${median(values).toFixed(3)} ms CPU per call; against the first, paired: ` +
        `${paired >= 0 ? '+' : ''}${paired.toFixed(3)} ms, lower in ${lower}/${rounds} rounds` +
        `  (rounds ${values.map((v) => v.toFixed(3)).join(' ')})`,
    );
  }
  return `${lines.join('\n')}\n`;
}
