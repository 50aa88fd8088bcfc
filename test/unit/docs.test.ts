import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONTEXT_KEYS } from '../../lib/config.js';

/**
 * The documents a user reads: every link to a local file or heading resolves, none names an issue
 * number, and the README stays a front door.
 */

const ROOT = join(import.meta.dirname, '..', '..');
const mdIn = (dir: string) =>
  readdirSync(join(ROOT, dir))
    .filter((f) => f.endsWith('.md'))
    .map((f) => join(ROOT, dir, f));
const DOCUMENTS = [
  join(ROOT, 'README.md'),
  join(ROOT, 'client', 'README.md'),
  ...mdIn('docs'),
  ...mdIn('bench'),
];

/** The text outside fenced code blocks, where links and headings mean something. */
function prose(text: string): string {
  return text.replace(/^```[\s\S]*?^```/gmu, '');
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered. */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const [, heading] of prose(readFileSync(file, 'utf8')).matchAll(/^#{1,6} +(.+?) *#*$/gmu)) {
    const slug = (heading as string)
      .toLowerCase()
      .replace(/[^\p{L}\p{N} _-]/gu, '')
      .replace(/ /gu, '-');
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    out.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return out;
}

/** Every inline link target that is not a URL with a scheme. */
function localLinks(file: string): string[] {
  const text = prose(readFileSync(file, 'utf8')).replace(/`[^`\n]*`/gu, '');
  return [...text.matchAll(/\]\(([^)\s]+)(?: "[^"]*")?\)/gu)]
    .map((m) => m[1] as string)
    .filter((target) => !/^[a-z][a-z0-9+.-]*:/iu.test(target));
}

describe('documents', () => {
  it('have a link target for every local link and anchor', () => {
    const broken: string[] = [];
    for (const file of DOCUMENTS) {
      for (const target of localLinks(file)) {
        const [path, anchor] = target.split('#') as [string, string | undefined];
        const resolved = path === '' ? file : join(dirname(file), decodeURIComponent(path));
        if (!existsSync(resolved)) broken.push(`${relative(ROOT, file)}: ${target} (no such file)`);
        else if (anchor && resolved.endsWith('.md') && !anchors(resolved).has(anchor))
          broken.push(`${relative(ROOT, file)}: ${target} (no such heading)`);
      }
    }
    expect(broken).toEqual([]);
  });

  it('name no issue number', () => {
    const named = DOCUMENTS.flatMap((file) =>
      readFileSync(file, 'utf8')
        .split('\n')
        .map((line, i) => ({ line, at: `${relative(ROOT, file)}:${i + 1}` }))
        .filter(({ line }) => /\bissue\s*#?\d+/iu.test(line))
        .map(({ at, line }) => `${at}: ${line.trim()}`),
    );
    expect(named).toEqual([]);
  });

  it('list every setting the code reads in the configuration tables of docs/operations.md', () => {
    const operations = readFileSync(join(ROOT, 'docs', 'operations.md'), 'utf8');
    const table = (heading: string) => {
      const start = operations.indexOf(`## ${heading}\n`);
      expect(start, heading).toBeGreaterThanOrEqual(0);
      const end = operations.indexOf('\n## ', start + 1);
      return operations
        .slice(start, end < 0 ? undefined : end)
        .split('\n')
        .filter((line) => line.startsWith('| `'))
        .map((line) => line.split('|')[1] as string);
    };
    const contextRows = table('Configuration (CDK context)').join(' ');
    expect(CONTEXT_KEYS.filter((key) => !contextRows.includes(`\`${key}\``))).toEqual([]);
    const variables = new Set(
      readFileSync(join(ROOT, 'functions', 'core', 'config.ts'), 'utf8').match(/\bTOKENKEEPER_[A-Z_]+\b/gu),
    );
    const variableRows = table('Configuration (environment variables)').join(' ');
    expect([...variables].filter((name) => !variableRows.includes(`\`${name}\``))).toEqual([]);
  });

  it('keep the README a front door of under 250 lines that links to the guides', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    expect(readme.split('\n').length).toBeLessThan(250);
    for (const guide of ['connect.md', 'api.md', 'cli.md', 'operations.md', 'performance.md', 'security.md'])
      expect(readme).toContain(`](docs/${guide})`);
    // The CDK app's configuration errors send the reader to the README's Deploy section.
    expect(readme).toMatch(/^## Deploy$/mu);
  });
});
