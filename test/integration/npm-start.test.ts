import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startLocalProcess } from '../support/local-process.js';
import { waitFor } from '../support/wait.js';

/**
 * `npm start` as a newcomer runs it: the real entry point in its own process, on a fresh data
 * directory. It must answer health within 10 s, keep its key and keyring private, print a line per
 * sweep, refuse a bad configuration with a clear message, and stop cleanly on SIGTERM.
 */

const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

function start(env: Record<string, string>) {
  const run = startLocalProcess(env);
  children.push(run.child);
  return run;
}

describe('npm start (bin/local.ts)', () => {
  it('is healthy within 10 s, keeps its secrets private, sweeps on demand and stops cleanly on SIGTERM', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-start-'));
    dirs.push(dataDir);
    const startedAt = Date.now();
    const run = start({ TOKENKEEPER_DATA_DIR: dataDir });
    const url = await waitFor(() => /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(run.out())?.[1], 10_000);
    const health = await fetch(`${url}/v1/health`);
    expect(health.status).toBe(200);
    expect(Date.now() - startedAt).toBeLessThan(10_000);

    // Bound to loopback only; the generated key and keyring are owner-only files.
    expect(url.startsWith('http://127.0.0.1:')).toBe(true);
    expect(run.out()).toContain(join(dataDir, 'api-key'));
    expect((await stat(join(dataDir, 'api-key'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dataDir, 'keyring.json'))).mode & 0o777).toBe(0o600);
    const key = (await readFile(join(dataDir, 'api-key'), 'utf8')).trim();
    expect(key.length).toBeGreaterThanOrEqual(32);
    // One line to the console: the key rides in the fragment, which the browser never sends; no other line has it.
    const consoleLine = `Open the console:  ${url}/console#key=${encodeURIComponent(key)}`;
    await waitFor(() => (run.out().includes(consoleLine) ? true : undefined), 5_000);
    expect(
      run
        .out()
        .split('\n')
        .filter((l) => l.includes(key)),
    ).toEqual([consoleLine]);
    const page = await fetch(`${url}/console`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('npm start');

    expect((await fetch(`${url}/v1/sessions/alice`)).status).toBe(401);
    const sweep = await fetch(`${url}/local/sweep`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}` },
    });
    expect(sweep.status).toBe(200);
    expect(await sweep.json()).toMatchObject({ due: 0, refreshed: 0, backlog: 0 });
    await waitFor(() => (/^sweep: due 0 \/ refreshed 0/m.test(run.out()) ? true : undefined), 5_000);

    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
    expect(run.out()).toContain('SIGTERM received, stopping');
  });

  it('says "generated" only when it generated the key, "read from" when it reuses it; refusals of http:// name the variable', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-start-'));
    dirs.push(dataDir);
    const keyPath = join(dataDir, 'api-key');
    const first = start({ TOKENKEEPER_DATA_DIR: dataDir });
    const url = await waitFor(
      () => /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(first.out())?.[1],
      10_000,
    );
    expect(first.out()).toContain(`API key generated and kept in ${keyPath}`);
    expect(first.out()).not.toContain('TOKENKEEPER_ALLOW_INSECURE_HTTP');
    // Without the variable, an http:// or loopback provider URL is refused, naming what would allow it.
    const key = (await readFile(keyPath, 'utf8')).trim();
    for (const tokenEndpoint of ['http://auth.example.com/token', 'https://127.0.0.1:9/token']) {
      const res = await fetch(`${url}/v1/providers/local`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ tokenEndpoint, clientId: 'c' }),
      });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error_description: string };
      expect(body.error_description).toMatch(/^tokenEndpoint: must /u);
      expect(body.error_description).toContain('TOKENKEEPER_ALLOW_INSECURE_HTTP=1 allows it');
    }
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);

    const second = start({ TOKENKEEPER_DATA_DIR: dataDir, TOKENKEEPER_ALLOW_INSECURE_HTTP: '1' });
    await waitFor(() => (/listening on/.test(second.out()) ? true : undefined), 10_000);
    await waitFor(() => (/POST .*\/local\/sweep/.test(second.out()) ? true : undefined), 5_000);
    expect(second.out()).toContain(`API key read from ${keyPath}`);
    expect(second.out()).not.toContain('generated');
    // One banner line while the network rules are lifted.
    const banner = second
      .out()
      .split('\n')
      .filter((l) => l.includes('TOKENKEEPER_ALLOW_INSECURE_HTTP=1'));
    expect(banner).toEqual([
      'WARNING: TOKENKEEPER_ALLOW_INSECURE_HTTP=1: http:// and loopback/private provider URLs are allowed (local development only)',
    ]);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });

  it('sweeps on its own timer every TOKENKEEPER_REFRESH_INTERVAL_SECONDS, with the key from TOKENKEEPER_API_KEY', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-start-'));
    dirs.push(dataDir);
    const apiKey = 'operator-chosen-local-key-0123456789abcdef';
    const run = start({
      TOKENKEEPER_DATA_DIR: dataDir,
      TOKENKEEPER_API_KEY: apiKey,
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '1',
      TOKENKEEPER_SWEEP_BUDGET_SECONDS: '3',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '10',
      TOKENKEEPER_HTTP_TIMEOUT_MS: '100',
    });
    const url = await waitFor(() => /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(run.out())?.[1], 10_000);
    expect(run.out()).toContain('API key taken from TOKENKEEPER_API_KEY');
    expect(run.out()).not.toContain(apiKey);
    // No key file is written when the operator gives one.
    await expect(stat(join(dataDir, 'api-key'))).rejects.toMatchObject({ code: 'ENOENT' });
    const authed = await fetch(`${url}/v1/sessions/alice`, {
      headers: { authorization: `Bearer ${apiKey}` },
    });
    expect(authed.status).toBe(200);
    // Nobody asks for a sweep: the timer runs two within a few seconds.
    await waitFor(() => ((run.out().match(/^sweep: due /gm) ?? []).length >= 2 ? true : undefined), 8_000);
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
  });

  it('refuses a TOKENKEEPER_API_KEY shorter than 32 characters with a clear message and exit code 1', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-start-'));
    dirs.push(dataDir);
    const run = start({ TOKENKEEPER_DATA_DIR: dataDir, TOKENKEEPER_API_KEY: 'changeme' });
    expect(await run.exited).toBe(1);
    expect(run.err()).toMatch(/configuration error: TOKENKEEPER_API_KEY must be at least 32 characters/u);
    expect(run.err()).not.toContain('changeme');
  });

  it('refuses a refresh window not larger than the interval with a clear message and exit code 1', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-start-'));
    dirs.push(dataDir);
    const run = start({
      TOKENKEEPER_DATA_DIR: dataDir,
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '600',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '300',
    });
    expect(await run.exited).toBe(1);
    expect(run.err()).toMatch(
      /configuration error: TOKENKEEPER_REFRESH_WINDOW_SECONDS \(300\) must be larger than TOKENKEEPER_REFRESH_INTERVAL_SECONDS \(600\)/,
    );
  });
});
