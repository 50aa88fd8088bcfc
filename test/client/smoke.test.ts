import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSmoke, SMOKE_PROVIDER_ID } from '../../client/smoke.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * `npm run smoke` against the real local stack in bearer mode: the same checks an operator runs
 * against a deployed API with SigV4, through the same client and the same percent-encoded ids.
 */

const ROOT = join(import.meta.dirname, '..', '..');
let keeper: TestStack;

beforeAll(async () => {
  keeper = await startTestStack();
});

afterAll(async () => {
  await keeper?.stop();
});

async function smoke(argv: string[], env: Record<string, string | undefined> = {}) {
  let stdout = '';
  let stderr = '';
  const paths: string[] = [];
  const code = await runSmoke(argv, {
    stdout: { write: (s: string) => (stdout += s) },
    stderr: { write: (s: string) => (stderr += s) },
    env,
    fetch: (input, init) => {
      paths.push(`${init?.method ?? 'GET'} ${new URL(String(input)).pathname}`);
      return fetch(input, init);
    },
  });
  return { code, stdout, stderr, paths };
}

describe('npm run smoke', () => {
  it('passes every check against the local stack, one line each, and leaves no session behind', async () => {
    const run = await smoke(['--url', keeper.url], { TOKENKEEPER_API_KEY: keeper.apiKey });
    expect(run.stderr).toBe('');
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines.filter((l) => l.startsWith('FAIL'))).toEqual([]);
    expect(lines.at(-1)).toBe('smoke: all checks passed');
    expect(run.code).toBe(0);
    for (const label of [
      'health',
      'put provider',
      'get provider',
      'put session',
      'token',
      'list sessions',
      'delete session',
    ]) {
      expect(
        lines.some((l) => l.startsWith(`ok    ${label}`)),
        label,
      ).toBe(true);
    }
    // Two users, each with put, token, list, delete.
    expect(lines.filter((l) => l.startsWith('ok    token '))).toHaveLength(2);
    expect(run.stdout).toContain('"smoke: ');
    expect(run.stdout).toContain('é 😀');
    // The ids went over the wire encoded once.
    expect(run.paths).toContain(`PUT /v1/providers/${encodeURIComponent(SMOKE_PROVIDER_ID)}`);
    expect(run.paths.some((p) => p.includes('%40example.com') && p.endsWith('/token'))).toBe(true);
    // No token in the output, and nothing left in the table but the provider.
    expect(run.stdout).not.toMatch(/smoke-[0-9a-f]{32}/u);
    const users = run.stdout.match(/smoke\+[0-9a-f]{8}@example\.com/u);
    expect(users).not.toBeNull();
    expect(
      (await keeper.call('GET', `/v1/sessions/${encodeURIComponent((users as RegExpMatchArray)[0])}`)).body,
    ).toEqual({
      sessions: [],
    });
  });

  it('runs again (the provider is replaced) and reads the key from --api-key-file', async () => {
    const file = join(keeper.dataDir, 'smoke-key');
    await writeFile(file, `${keeper.apiKey}\n`, { mode: 0o600 });
    const run = await smoke(['--url', keeper.url, '--api-key-file', file]);
    expect(run.code, run.stdout).toBe(0);
  });

  it('a failing check is one FAIL line naming the answer, and exit 1', async () => {
    const run = await smoke(['--url', keeper.url], { TOKENKEEPER_API_KEY: 'not-the-key' });
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('FAIL  put provider "tokenkeeper-smoke: é😀": 401 unauthorized');
    expect(run.stdout.trimEnd().split('\n').at(-1)).toBe('smoke: 1 check(s) failed');
  });

  it('usage errors: no URL, no region for SigV4', async () => {
    expect((await smoke([])).stderr).toContain('--url is required');
    const noRegion = await smoke(['--url', 'https://tokens.example.com']);
    expect(noRegion).toMatchObject({ code: 2 });
    expect(noRegion.stderr).toContain('no AWS region');
  });

  it('npm run smoke runs the script with tsx', async () => {
    const run = promisify(execFile);
    const { stdout } = await run('npm', ['run', '--silent', 'smoke', '--', '--url', keeper.url], {
      cwd: ROOT,
      env: { ...process.env, TOKENKEEPER_API_KEY: keeper.apiKey },
    });
    expect(stdout.trimEnd().split('\n').at(-1)).toBe('smoke: all checks passed');
  });
});
