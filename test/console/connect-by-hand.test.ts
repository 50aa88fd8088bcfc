import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliIo, runCli } from '../../client/cli.js';
import type { Demo } from '../../functions/local/demo/demo.js';
import { signInOnDemo, startQuietDemo } from '../support/demo-signin.js';

/**
 * docs/connect.md's "Trying it by hand", run as written: each curl line of the section (with $K and $KEY) is
 * sent to the demo, the authorization URL is opened by a browser stand-in on the demo's own pages,
 * and the CLI line runs from a directory holding `.data/demo`. The tokens are real and refresh.
 */

const CONNECT_GUIDE = join(import.meta.dirname, '..', '..', 'docs', 'connect.md');
let demo: Demo;
let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'tokenkeeper-by-hand-'));
  const dataDir = join(root, '.data', 'demo');
  await mkdir(dataDir, { recursive: true });
  demo = await startQuietDemo(dataDir);
});
afterAll(async () => {
  await demo?.stop();
  await rm(root, { recursive: true, force: true });
});

async function section(): Promise<string> {
  const text = await readFile(CONNECT_GUIDE, 'utf8');
  const start = text.indexOf('## Trying it by hand');
  expect(start, 'docs/connect.md has a "Trying it by hand" section').toBeGreaterThanOrEqual(0);
  const end = text.indexOf('\n## ', start + 1);
  return text.slice(start, end < 0 ? undefined : end);
}

/** The shell lines of the section's first code block, continuation lines joined, comments dropped. */
async function commands(): Promise<string[]> {
  const block = /```sh\n([\s\S]*?)```/u.exec(await section())?.[1] ?? '';
  return block
    .replace(/\\\n\s*/gu, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

/** A curl line as fetch arguments: -X, -H, -d and the URL (quoted or not). */
function curl(
  line: string,
  vars: Record<string, string>,
): { method: string; url: string; init: RequestInit } {
  const expanded = line.replace(/\$(\w+)/gu, (_, name: string) => vars[name] ?? `$${name}`);
  const words = [...expanded.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/gu)].map((m) => m[1] ?? m[2] ?? m[3] ?? '');
  let method = 'GET';
  let url = '';
  let body: string | undefined;
  const headers: Record<string, string> = {};
  for (let i = 1; i < words.length; i++) {
    const w = words[i] as string;
    if (w === '-X') method = words[++i] as string;
    else if (w === '-H') {
      const [k, ...v] = (words[++i] as string).split(':');
      headers[(k as string).trim().toLowerCase()] = v.join(':').trim();
    } else if (w === '-d') body = words[++i];
    else if (w.startsWith('http')) url = w;
  }
  return { method, url, init: { method, headers, body } };
}

describe('docs/connect.md: Trying it by hand', () => {
  it('runs as written against the demo: real tokens that refresh, and the CLI line', async () => {
    const text = await section();
    expect(text).not.toMatch(/example\.com|"access_token":"…"/u);
    const lines = await commands();
    expect(lines[0]).toBe('KEY=$(cat .data/demo/api-key)');
    expect(lines[1]).toBe('K=http://127.0.0.1:8787');
    const vars = {
      KEY: (await readFile(join(root, '.data', 'demo', 'api-key'), 'utf8')).trim(),
      K: demo.stack.url,
    };

    const tokens: string[] = [];
    let cliRan = false;
    for (const line of lines.slice(2)) {
      if (line.startsWith('npx tokenkeeper ')) {
        let stdout = '';
        let stderr = '';
        const io: CliIo = {
          stdout: { write: (s: string) => (stdout += s) },
          stderr: { write: (s: string) => (stderr += s) },
          env: {},
          cwd: root,
        };
        const argv = line
          .slice('npx tokenkeeper '.length)
          .replace(/\$(\w+)/gu, (_, n: string) => (vars as Record<string, string>)[n] ?? '')
          .split(/\s+/u);
        expect({ code: await runCli(argv, io), stderr }).toEqual({ code: 0, stderr: '' });
        expect(stdout).toMatch(/^demo +active /mu);
        cliRan = true;
        continue;
      }
      expect(line.startsWith('curl ')).toBe(true);
      const { method, url, init } = curl(line, vars);
      const res = await fetch(url, init);
      expect(res.status, `${method} ${url}`).toBeLessThan(300);
      const body = (await res.json()) as Record<string, unknown>;
      if (url.endsWith('/authorize')) {
        const signedIn = await signInOnDemo(body.authorizationUrl as string, demo.stack.url, 'alice');
        expect(signedIn.callback.status).toBe(200);
        expect(await signedIn.callback.text()).toContain('Account connected');
      }
      if (url.includes('/token?')) {
        expect(body).toMatchObject({ token_type: 'Bearer' });
        expect(body.expires_in as number).toBeGreaterThanOrEqual(30);
        expect(body.expires_in as number).toBeLessThanOrEqual(60);
        tokens.push(body.access_token as string);
      }
      if (url.endsWith('/local/sweep')) expect(body).toHaveProperty('refreshed');
    }
    // Two tokens, the second after the refresh: a new one from the provider.
    expect(tokens).toHaveLength(2);
    expect(tokens[0]).not.toBe(tokens[1]);
    expect(cliRan).toBe(true);
  });
});
