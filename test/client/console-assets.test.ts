import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import {
  BUILT_CONSOLE_URL,
  type ConsoleFiles,
  parseConsoleFiles,
  serializeConsoleFiles,
  serveConsole,
} from '../../client/console-assets.js';
import { buildConsoleFiles } from '../../functions/local/console/assets.js';

/**
 * `tokenkeeper console` serves the console built ahead of time (client/console-assets.json), with no
 * bundler at run time; the local stack builds it from functions/local/console/ at start. The two must
 * be the same console.
 */

describe('client/console-assets.json', () => {
  it('is the build of the console sources as they are now (else: npm run build:console)', async () => {
    const committed = parseConsoleFiles(await readFile(BUILT_CONSOLE_URL, 'utf8'));
    const built = await buildConsoleFiles();
    for (const name of ['html', 'css', 'js', 'icon'] as const) {
      expect(committed[name] === built[name], `${name} is stale: run npm run build:console`).toBe(true);
    }
    expect(await readFile(BUILT_CONSOLE_URL, 'utf8')).toBe(serializeConsoleFiles(built));
  });

  it('a build without every file, or not JSON, is refused with the command that makes it', () => {
    const whole: ConsoleFiles = { html: '<html>', css: 'a{}', js: 'x()', icon: '<svg/>' };
    expect(parseConsoleFiles(serializeConsoleFiles(whole))).toEqual(whole);
    expect(() => parseConsoleFiles(JSON.stringify({ ...whole, js: '' }))).toThrow(
      'the built console (client/console-assets.json) lacks js: run npm run build:console',
    );
    expect(() => parseConsoleFiles('{"html": 1}')).toThrow('lacks html, css, js, icon');
    expect(() => parseConsoleFiles('not json')).toThrow(/run npm run build:console/u);
  });

  it('answers only under /console: GET and HEAD, 404 for another file, 405 for another method', () => {
    const assets = serveConsole({ html: '<html>', css: 'a{}', js: 'x()', icon: '<svg/>' });
    expect(assets.respond('GET', '/v1/sessions')).toBeUndefined();
    expect(assets.respond('GET', '/consoles')).toBeUndefined();
    expect(assets.respond('GET', '/console/console.js')).toMatchObject({
      status: 200,
      headers: { 'content-type': 'text/javascript; charset=utf-8' },
      body: 'x()',
    });
    expect(assets.respond('HEAD', '/console')).toMatchObject({ status: 200, body: '' });
    expect(assets.respond('GET', '/console/other.js')?.status).toBe(404);
    expect(assets.respond('POST', '/console')).toMatchObject({
      status: 405,
      headers: { allow: 'GET, HEAD' },
    });
  });
});
