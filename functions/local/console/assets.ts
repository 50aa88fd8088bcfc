import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { type ConsoleAssets, type ConsoleFiles, serveConsole } from '../../../client/console-assets.js';

/**
 * The console built from its sources here: the page, its stylesheet, its icon, and its module
 * (./browser) bundled by esbuild in memory. The local stack serves this build, made once per process;
 * `npm run build:console` writes it to client/console-assets.json, which `tokenkeeper console` serves
 * (client/console-assets.ts holds the answers and their headers).
 */

const here = (name: string) => fileURLToPath(new URL(name, import.meta.url));

async function bundle(): Promise<string> {
  const { build } = await import('esbuild');
  const result = await build({
    entryPoints: [here('./browser/console.ts')],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    legalComments: 'none',
    logLevel: 'silent',
  });
  const [file] = result.outputFiles;
  if (!file) throw new Error('esbuild produced no console bundle');
  return file.text;
}

/** Reads the page, the stylesheet and the icon, and bundles the module. */
export async function buildConsoleFiles(): Promise<ConsoleFiles> {
  const [html, css, js, icon] = await Promise.all([
    readFile(here('./index.html'), 'utf8'),
    readFile(here('./console.css'), 'utf8'),
    bundle(),
    readFile(here('./favicon.svg'), 'utf8'),
  ]);
  return { html, css, js, icon };
}

let loaded: Promise<ConsoleAssets> | undefined;

/** Builds the console once per process; later calls share the result. */
export function loadConsoleAssets(): Promise<ConsoleAssets> {
  loaded ??= buildConsoleFiles().then(serveConsole);
  loaded.catch(() => {
    loaded = undefined;
  });
  return loaded;
}
