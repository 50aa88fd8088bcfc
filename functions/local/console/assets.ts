import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

/**
 * The console's assets, as the local stack and `tokenkeeper console` serve them under /console: the
 * page, its stylesheet and its module, bundled by esbuild in memory once per process (no build step,
 * no committed bundle). Every answer carries a strict Content-Security-Policy: no inline script or
 * style, nothing from another origin, no framing, and no referrer.
 */

export const CONSOLE_PATH = '/console';

export const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cache-control': 'no-store',
};

export interface AssetResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface ConsoleAssets {
  /** The answer for a path under /console, or undefined for any other path. */
  respond(method: string, path: string): AssetResponse | undefined;
}

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

let loaded: Promise<ConsoleAssets> | undefined;

/** Builds the console once per process; later calls share the result. */
export function loadConsoleAssets(): Promise<ConsoleAssets> {
  loaded ??= (async () => {
    const [html, css, js, icon] = await Promise.all([
      readFile(here('./index.html'), 'utf8'),
      readFile(here('./console.css'), 'utf8'),
      bundle(),
      readFile(here('./favicon.svg'), 'utf8'),
    ]);
    const files = new Map<string, { type: string; body: string }>([
      [CONSOLE_PATH, { type: 'text/html; charset=utf-8', body: html }],
      [`${CONSOLE_PATH}/`, { type: 'text/html; charset=utf-8', body: html }],
      [`${CONSOLE_PATH}/console.css`, { type: 'text/css; charset=utf-8', body: css }],
      [`${CONSOLE_PATH}/console.js`, { type: 'text/javascript; charset=utf-8', body: js }],
      [`${CONSOLE_PATH}/favicon.svg`, { type: 'image/svg+xml', body: icon }],
    ]);
    return {
      respond(method, path) {
        if (path !== CONSOLE_PATH && !path.startsWith(`${CONSOLE_PATH}/`)) return undefined;
        const file = files.get(path);
        if (!file) {
          return {
            status: 404,
            headers: { ...SECURITY_HEADERS, 'content-type': 'text/plain' },
            body: 'not found',
          };
        }
        if (method !== 'GET' && method !== 'HEAD') {
          return {
            status: 405,
            headers: { ...SECURITY_HEADERS, 'content-type': 'text/plain', allow: 'GET, HEAD' },
            body: 'method not allowed',
          };
        }
        return {
          status: 200,
          headers: { ...SECURITY_HEADERS, 'content-type': file.type },
          body: method === 'HEAD' ? '' : file.body,
        };
      },
    };
  })();
  loaded.catch(() => {
    loaded = undefined;
  });
  return loaded;
}
