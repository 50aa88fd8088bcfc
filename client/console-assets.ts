import { readFile } from 'node:fs/promises';

/**
 * The console's assets as the local stack and `tokenkeeper console` serve them under /console: the
 * page, its stylesheet, its bundled module and its icon. Every answer carries a strict
 * Content-Security-Policy: no inline script or style, nothing from another origin, no framing, and no
 * referrer.
 *
 * `tokenkeeper console` serves the console as built ahead of time into ./console-assets.json
 * (`npm run build:console` writes it from functions/local/console/, and a test fails when it is
 * stale), so the client needs no bundler; the local stack builds it from its sources at start.
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

/** The console's files, as built. */
export interface ConsoleFiles {
  html: string;
  css: string;
  /** The page's module, bundled. */
  js: string;
  icon: string;
}

const FILE_NAMES = ['html', 'css', 'js', 'icon'] as const;

/** Where the console built ahead of time lives: next to this module. */
export const BUILT_CONSOLE_URL = new URL('./console-assets.json', import.meta.url);

/** The answers for the console's files under /console. */
export function serveConsole(built: ConsoleFiles): ConsoleAssets {
  const files = new Map<string, { type: string; body: string }>([
    [CONSOLE_PATH, { type: 'text/html; charset=utf-8', body: built.html }],
    [`${CONSOLE_PATH}/`, { type: 'text/html; charset=utf-8', body: built.html }],
    [`${CONSOLE_PATH}/console.css`, { type: 'text/css; charset=utf-8', body: built.css }],
    [`${CONSOLE_PATH}/console.js`, { type: 'text/javascript; charset=utf-8', body: built.js }],
    [`${CONSOLE_PATH}/favicon.svg`, { type: 'image/svg+xml', body: built.icon }],
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
}

/** The console's files as ./console-assets.json holds them. */
export function serializeConsoleFiles(files: ConsoleFiles): string {
  return `${JSON.stringify(Object.fromEntries(FILE_NAMES.map((name) => [name, files[name]])), null, 2)}\n`;
}

/** Reads ./console-assets.json; throws when it is not a whole console build. */
export function parseConsoleFiles(text: string): ConsoleFiles {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    raw = undefined;
  }
  const r = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const missing = FILE_NAMES.filter((name) => typeof r[name] !== 'string' || r[name] === '');
  if (missing.length > 0) {
    throw new Error(
      `the built console (client/console-assets.json) lacks ${missing.join(', ')}: run npm run build:console`,
    );
  }
  return { html: r.html as string, css: r.css as string, js: r.js as string, icon: r.icon as string };
}

let loaded: Promise<ConsoleAssets> | undefined;

/** Reads the console built ahead of time, once per process; later calls share it. */
export function loadBuiltConsole(): Promise<ConsoleAssets> {
  loaded ??= readFile(BUILT_CONSOLE_URL, 'utf8').then(
    (text) => serveConsole(parseConsoleFiles(text)),
    (err: NodeJS.ErrnoException) => {
      throw new Error(
        `the built console (client/console-assets.json) cannot be read (${err.code ?? err.name}): run npm run build:console`,
      );
    },
  );
  loaded.catch(() => {
    loaded = undefined;
  });
  return loaded;
}
