/**
 * `npm run build:console`: builds the console from functions/local/console/ (its module bundled by
 * esbuild) into client/console-assets.json, which `tokenkeeper console` serves without a bundler.
 * Run it after changing the console; test/client/console-assets.test.ts fails while the file is stale.
 */
import { writeFile } from 'node:fs/promises';
import { BUILT_CONSOLE_URL, serializeConsoleFiles } from '../client/console-assets.js';
import { buildConsoleFiles } from '../functions/local/console/assets.js';

const text = serializeConsoleFiles(await buildConsoleFiles());
await writeFile(BUILT_CONSOLE_URL, text);
process.stdout.write(`wrote client/console-assets.json (${Buffer.byteLength(text)} bytes)\n`);
