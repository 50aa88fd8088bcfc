import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/wait.js';

/**
 * `npm run demo` as a newcomer runs it, then the CLI line it prints, copied as it is: no flag to
 * guess, no key to find. Both run in their own processes in a fresh working directory.
 */

const ROOT = join(import.meta.dirname, '..', '..');
const TSX = join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs');
const run = promisify(execFile);
let child: ChildProcess | undefined;
let cwd: string | undefined;

afterAll(async () => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  if (cwd) await rm(cwd, { recursive: true, force: true });
});

/** The environment of a fresh shell: nothing of the keeper's set. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0' };
  for (const name of Object.keys(env)) if (name.startsWith('TOKENKEEPER_')) delete env[name];
  return env;
}

describe('the CLI line npm run demo prints', () => {
  it('works as printed: status and providers list against the demo, with its key found unaided', async () => {
    cwd = await mkdtemp(join(tmpdir(), 'tokenkeeper-demo-cli-'));
    child = spawn(process.execPath, ['--import', TSX, join(ROOT, 'bin', 'demo.ts')], {
      cwd,
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout?.on('data', (c) => {
      out += String(c);
    });
    child.stderr?.resume();
    const line = await waitFor(
      () => /^Or the CLI: +npx tokenkeeper (.*) status <userId>$/mu.exec(out)?.[1],
      30_000,
    );
    const target = line.split(' ');
    expect(target).toEqual([
      '--url',
      expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/u),
      '--data-dir',
      '.data/demo',
    ]);

    const cli = (args: string[]) =>
      run(process.execPath, ['--import', TSX, join(ROOT, 'bin', 'cli.ts'), ...args], {
        cwd,
        env: cleanEnv(),
      });
    const status = await cli([...target, 'status', 'alice']);
    expect(status.stdout).toBe('no sessions for user alice\n');
    const providers = await cli([...target, 'providers', 'list']);
    expect(providers.stdout).toMatch(/^demo +closed /mu);
    // The same without --data-dir: a loopback URL finds the demo's key in .data/demo by itself.
    const unaided = await cli(['--url', target[1] as string, 'status', 'alice']);
    expect(unaided.stdout).toBe('no sessions for user alice\n');
  }, 90_000);
});
