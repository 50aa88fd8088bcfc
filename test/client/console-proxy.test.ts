import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../client/cli.js';
import { BUILT_CONSOLE_URL, parseConsoleFiles } from '../../client/console-assets.js';
import { startConsoleProxy } from '../../client/console-proxy.js';
import { createSigV4Signer } from '../../client/sigv4.js';
import { listenOnLoopback } from '../../functions/local/embedded.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * `tokenkeeper console`: the console page on 127.0.0.1 and /v1 forwarded to the API. The local
 * stack stands in for the API: directly with its bearer key, and behind a front that checks the
 * SigV4 signature of every forwarded call (recomputed with the same credentials) before passing it on.
 */

const credentials = {
  accessKeyId: 'AKIDEXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
};
let keeper: TestStack;

beforeAll(async () => {
  keeper = await startTestStack();
  const res = await keeper.call('PUT', '/v1/providers/prov', {
    tokenEndpoint: 'http://127.0.0.1:9/t',
    clientId: 'c',
  });
  expect(res.status).toBe(201);
  await keeper.call('PUT', '/v1/sessions/alice/prov', {
    access_token: 'secret-access-token',
    expires_in: 600,
  });
});
afterAll(() => keeper?.stop());

function keyOf(consoleUrl: string): string {
  return new URL(consoleUrl).hash.replace('#key=', '');
}

describe('the console proxy', () => {
  it('serves the console, and forwards /v1 with the proxy key only, under its own Host', async () => {
    const proxy = await startConsoleProxy({
      apiUrl: keeper.url,
      auth: { kind: 'bearer', apiKey: keeper.apiKey },
    });
    try {
      const page = await fetch(`${proxy.url}/console`);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
      // The console as built ahead of time (client/console-assets.json): no bundler runs here.
      const built = parseConsoleFiles(await readFile(BUILT_CONSOLE_URL, 'utf8'));
      expect(await page.text()).toBe(built.html);
      expect(await (await fetch(`${proxy.url}/console/console.js`)).text()).toBe(built.js);
      const key = keyOf(proxy.consoleUrl);
      expect(key).toMatch(/^[A-Za-z0-9_-]{43}$/u);
      expect(key).not.toBe(keeper.apiKey);

      expect((await fetch(`${proxy.url}/v1/sessions`)).status).toBe(401);
      expect(
        (await fetch(`${proxy.url}/v1/sessions`, { headers: { authorization: `Bearer ${keeper.apiKey}` } }))
          .status,
      ).toBe(401);
      const list = await fetch(`${proxy.url}/v1/sessions?limit=5`, {
        headers: { authorization: `Bearer ${key}` },
      });
      expect(list.status).toBe(200);
      const text = await list.text();
      expect(JSON.parse(text).sessions[0]).toMatchObject({ userId: 'alice', providerId: 'prov' });
      expect(text).not.toContain('secret-access-token');
      // Errors come back as the API gave them.
      const missing = await fetch(`${proxy.url}/v1/sessions/nobody/prov`, {
        headers: { authorization: `Bearer ${key}` },
      });
      expect(missing.status).toBe(404);
      // The demo's routes and anything else are not forwarded.
      expect(
        (await fetch(`${proxy.url}/demo/outage`, { headers: { authorization: `Bearer ${key}` } })).status,
      ).toBe(404);
      expect(
        (
          await fetch(`${proxy.url}/local/sweep`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key}` },
          })
        ).status,
      ).toBe(404);
      // Another Host (a DNS-rebinding name) is refused, and so is another origin's page.
      const { request } = await import('node:http');
      const statusOf = (headers: Record<string, string>) =>
        new Promise<number>((resolve, reject) => {
          const r = request(`${proxy.url}/console`, { headers }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          r.on('error', reject);
          r.end();
        });
      expect(await statusOf({ host: `evil.example:${new URL(proxy.url).port}` })).toBe(421);
      expect(await statusOf({ origin: 'https://evil.example' })).toBe(403);
      expect(await statusOf({ origin: proxy.url })).toBe(200);
    } finally {
      await proxy.stop();
    }
  });

  it('signs every forwarded call with SigV4; the signature checks out at the other end', async () => {
    const verify = createSigV4Signer({ region: 'eu-west-1', credentials });
    const seen: { method: string; path: string; ok: boolean }[] = [];
    const front = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = chunks.length > 0 ? Buffer.concat(chunks).toString('utf8') : undefined;
      const amzDate = String(req.headers['x-amz-date']);
      const date = new Date(
        amzDate.replace(/^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/u, '$1-$2-$3T$4:$5:$6Z'),
      );
      const headers: Record<string, string> = { accept: String(req.headers.accept) };
      if (req.headers['content-type']) headers['content-type'] = String(req.headers['content-type']);
      const url = new URL(req.url ?? '/', `http://${req.headers.host}`);
      const expected = await verify({ method: req.method ?? 'GET', url, headers, body }, date);
      const ok = expected.authorization === req.headers.authorization;
      seen.push({ method: req.method ?? '', path: url.pathname, ok });
      if (!ok) {
        res.writeHead(403, { 'content-type': 'application/json' });
        res.end('{"message":"Forbidden"}');
        return;
      }
      const upstream = await fetch(`${keeper.url}${req.url}`, {
        method: req.method,
        headers: {
          authorization: `Bearer ${keeper.apiKey}`,
          ...(body ? { 'content-type': 'application/json' } : {}),
        },
        body,
      });
      res.writeHead(upstream.status, {
        'content-type': upstream.headers.get('content-type') ?? 'text/plain',
      });
      res.end(Buffer.from(await upstream.arrayBuffer()));
    });
    const frontUrl = `http://127.0.0.1:${await listenOnLoopback(front)}`;
    const sign = createSigV4Signer({ region: 'eu-west-1', credentials });
    const proxy = await startConsoleProxy({ apiUrl: frontUrl, auth: { kind: 'sigv4', sign } });
    const wrong = await startConsoleProxy({
      apiUrl: frontUrl,
      auth: {
        kind: 'sigv4',
        sign: createSigV4Signer({
          region: 'eu-west-1',
          credentials: { ...credentials, secretAccessKey: 'wrong' },
        }),
      },
    });
    try {
      const auth = { authorization: `Bearer ${keyOf(proxy.consoleUrl)}` };
      expect((await fetch(`${proxy.url}/v1/providers?limit=10`, { headers: auth })).status).toBe(200);
      const put = await fetch(`${proxy.url}/v1/providers/signed%20prov`, {
        method: 'PUT',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ tokenEndpoint: 'http://127.0.0.1:9/t', clientId: 'c2' }),
      });
      expect(put.status).toBe(201);
      expect((await keeper.call('GET', '/v1/providers/signed%20prov')).status).toBe(200);
      const refused = await fetch(`${wrong.url}/v1/providers`, {
        headers: { authorization: `Bearer ${keyOf(wrong.consoleUrl)}` },
      });
      expect(refused.status).toBe(403);
      expect(seen.map((s) => `${s.method} ${s.path} ${s.ok}`)).toEqual([
        'GET /v1/providers true',
        'PUT /v1/providers/signed%20prov true',
        'GET /v1/providers false',
      ]);
    } finally {
      await proxy.stop();
      await wrong.stop();
      front.closeAllConnections();
      await new Promise<void>((r) => front.close(() => r()));
    }
  });

  it('tokenkeeper console prints the URL with the key in the fragment and stops on the signal', async () => {
    const out: string[] = [];
    const stop = new AbortController();
    const done = runCli(['console', '--url', keeper.url, '--auth', 'bearer'], {
      stdout: { write: (t: string) => out.push(t) },
      stderr: { write: (t: string) => out.push(t) },
      env: { TOKENKEEPER_API_KEY: keeper.apiKey },
      signal: stop.signal,
    });
    await expect.poll(() => out.join('')).toContain('#key=');
    const consoleUrl = /open (\S+)/u.exec(out.join(''))?.[1] as string;
    expect(out.join('')).not.toContain(keeper.apiKey);
    const base = new URL(consoleUrl).origin;
    expect((await fetch(`${base}/console`)).status).toBe(200);
    const res = await fetch(`${base}/v1/sessions/alice`, {
      headers: { authorization: `Bearer ${keyOf(consoleUrl)}` },
    });
    expect(res.status).toBe(200);
    stop.abort();
    expect(await done).toBe(0);
    await expect(fetch(`${base}/console`)).rejects.toThrow();
  });
});
