import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The client stands alone: no file under client/ imports anything from outside client/ (type imports
 * and dynamic imports included), so the folder can become its own package.
 */

const CLIENT = fileURLToPath(new URL('../../client/', import.meta.url));

const WORD = /[\w$]+/uy;

/** Identifiers and string literals of a TypeScript source, with comments, templates and regexes skipped. */
function tokens(source: string): { kind: 'word' | 'string' | 'punct'; text: string }[] {
  const out: { kind: 'word' | 'string' | 'punct'; text: string }[] = [];
  let i = 0;
  // A `/` starts a regular expression unless it follows something that ends an operand.
  const regexMayStart = () => {
    const last = out.at(-1);
    if (!last) return true;
    if (last.kind === 'string') return false;
    if (last.kind === 'word')
      return /^(return|typeof|case|do|else|in|of|new|delete|void|throw|await|yield)$/u.test(last.text);
    return !/^[)\]}]$/u.test(last.text);
  };
  const skipQuoted = (quote: string) => {
    let text = '';
    i++;
    while (i < source.length && source[i] !== quote) {
      if (source[i] === '\\') i++;
      text += source[i];
      i++;
    }
    i++;
    return text;
  };
  // A template's text, with `<computed>` where it substitutes.
  const skipTemplate = () => {
    let text = '';
    i++;
    while (i < source.length && source[i] !== '`') {
      if (source[i] === '\\') {
        text += source[i + 1];
        i += 2;
      } else if (source[i] === '$' && source[i + 1] === '{') {
        text += '<computed>';
        let depth = 1;
        i += 2;
        while (i < source.length && depth > 0) {
          const c = source[i] as string;
          if (c === "'" || c === '"') skipQuoted(c);
          else if (c === '`') skipTemplate();
          else {
            if (c === '{') depth++;
            if (c === '}') depth--;
            i++;
          }
        }
      } else {
        text += source[i];
        i++;
      }
    }
    i++;
    return text;
  };
  while (i < source.length) {
    const c = source[i] as string;
    const next = source[i + 1];
    if (/\s/u.test(c)) i++;
    else if (c === '/' && next === '/') {
      const end = source.indexOf('\n', i);
      i = end === -1 ? source.length : end;
    } else if (c === '/' && next === '*') {
      const end = source.indexOf('*/', i + 2);
      i = end === -1 ? source.length : end + 2;
    } else if (c === "'" || c === '"') out.push({ kind: 'string', text: skipQuoted(c) });
    else if (c === '`') out.push({ kind: 'string', text: skipTemplate() });
    else if (c === '/' && regexMayStart()) {
      let inClass = false;
      i++;
      while (i < source.length && (source[i] !== '/' || inClass)) {
        if (source[i] === '\\') i++;
        else if (source[i] === '[') inClass = true;
        else if (source[i] === ']') inClass = false;
        i++;
      }
      i++;
      while (i < source.length && /[a-z]/u.test(source[i] as string)) i++;
      out.push({ kind: 'punct', text: 'regex' });
    } else if (/[\w$]/u.test(c)) {
      WORD.lastIndex = i;
      const word = WORD.exec(source)?.[0] as string;
      out.push({ kind: 'word', text: word });
      i += word.length;
    } else {
      out.push({ kind: 'punct', text: c });
      i++;
    }
  }
  return out;
}

/**
 * Every module specifier of a source: `import … from 'x'`, `import 'x'`, `export … from 'x'`,
 * `import type …`, `import('x')`, `require('x')`.
 */
function importSpecifiers(source: string): string[] {
  const t = tokens(source);
  const found: string[] = [];
  t.forEach((token, n) => {
    if (token.kind !== 'string') return;
    const before = t[n - 1];
    const twoBefore = t[n - 2];
    if (before?.kind === 'word' && (before.text === 'from' || before.text === 'import'))
      found.push(token.text);
    else if (
      before?.text === '(' &&
      twoBefore?.kind === 'word' &&
      (twoBefore.text === 'import' || twoBefore.text === 'require')
    ) {
      found.push(token.text);
    }
  });
  return found;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : sourceFiles(path);
    return /\.(ts|mts|cts|js|mjs|cjs)$/u.test(entry.name) ? [path] : [];
  });
}

/** The imports of client/'s files that reach outside client/ (`file: specifier`), and the packages. */
function clientImports(): { files: number; specifiers: number; leaving: string[]; packages: Set<string> } {
  const files = sourceFiles(CLIENT);
  let specifiers = 0;
  const leaving: string[] = [];
  const packages = new Set<string>();
  for (const file of files) {
    for (const specifier of importSpecifiers(readFileSync(file, 'utf8'))) {
      specifiers++;
      // A computed specifier cannot be checked: it counts as leaving.
      if (specifier.includes('<computed>')) {
        leaving.push(`${relative(CLIENT, file)}: ${specifier}`);
        continue;
      }
      // Packages (and node: modules) are the client's dependencies; paths must stay inside client/.
      const isPath = specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('file:');
      if (!isPath) {
        packages.add(/^(@[^/]+\/)?[^/]+/u.exec(specifier)?.[0] ?? specifier);
        continue;
      }
      const target = specifier.startsWith('file:')
        ? fileURLToPath(specifier)
        : resolve(dirname(file), specifier);
      if (!`${target}${sep}`.startsWith(CLIENT)) {
        leaving.push(`${relative(CLIENT, file)}: ${specifier}`);
      }
    }
  }
  return { files: files.length, specifiers, leaving, packages };
}

describe('import specifiers', () => {
  it('finds every form of import, type-only and dynamic included, and nothing in comments or strings', () => {
    const source = [
      "import { a } from './a.js';",
      "import type { B } from '../outside/b.js';",
      'import {',
      '  type C,',
      '  d,',
      '} from "../c.js";',
      "import './side-effect.js';",
      "export { e } from './e.js';",
      "export * from './f.js';",
      "export type { G } from './g.js';",
      "const h = await import('../h.js');",
      "const i = require('node:i');",
      "// import { no } from '../commented.js';",
      "/* import { no } from '../block-commented.js'; */",
      'const text = "import { no } from \'../in-a-string.js\'";',
      // (`$` + `{`: a substitution in the source under scan, not in this test's own strings.)
      "const tpl = `from '../in-a-template.js' $" + "{'x'}`;",
      'const re = /[\'"]from/u;',
      'const half = 4 / 2; const other = 6 / 3;',
      'const j = await import(`./j.js`);',
      'const k = await import(`../$' + "{'k'}.js`);",
    ].join('\n');
    expect(importSpecifiers(source)).toEqual([
      './a.js',
      '../outside/b.js',
      '../c.js',
      './side-effect.js',
      './e.js',
      './f.js',
      './g.js',
      '../h.js',
      'node:i',
      './j.js',
      '../<computed>.js',
    ]);
  });
});

describe('client/', () => {
  it('imports nothing from outside client/: only its own files and packages', () => {
    const { files, specifiers, leaving } = clientImports();
    // The scan saw the folder: every client file has imports.
    expect(files).toBeGreaterThan(5);
    expect(specifiers).toBeGreaterThan(files);
    expect(leaving).toEqual([]);
  });

  it("imports only Node's modules and the package's runtime dependencies, no devDependency", () => {
    const { dependencies } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
    const { packages } = clientImports();
    const outside = [...packages].filter((name) => !name.startsWith('node:') && !(name in dependencies));
    expect(outside).toEqual([]);
    expect(packages).toContain('@smithy/signature-v4');
  });
});
