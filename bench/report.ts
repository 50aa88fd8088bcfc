/** Plain-text tables for the bench's stdout and the generated block of docs/performance.md. */

export type Row = (string | number)[];

export function table(header: Row, rows: Row[], align?: ('l' | 'r')[]): string {
  const cells = [header, ...rows].map((r) => r.map(String));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) =>
        (align?.[i] ?? (i === 0 ? 'l' : 'r')) === 'l' ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0),
      )
      .join('  ')
      .trimEnd();
  return [
    fmt(cells[0] as string[]),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...cells.slice(1).map(fmt),
  ].join('\n');
}

/** A GitHub-flavoured Markdown table. */
export function markdownTable(header: Row, rows: Row[], align?: ('l' | 'r')[]): string {
  const line = (r: Row) => `| ${r.map((c) => String(c).replace(/\|/g, '\\|')).join(' | ')} |`;
  const rule = `| ${header.map((_, i) => ((align?.[i] ?? (i === 0 ? 'l' : 'r')) === 'l' ? ':--' : '--:')).join(' | ')} |`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

export const ms = (v: number, digits = 1) => `${v.toFixed(digits)} ms`;
export const kb = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`;
export const num = (v: number, digits = 3) => (Number.isInteger(v) ? String(v) : v.toFixed(digits));
export const verdict = (met: boolean) => (met ? 'met' : 'MISSED');
