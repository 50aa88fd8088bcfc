import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, readlink, rm, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../support/wait.js';

/**
 * What a web page in the operator's browser can do to `npm start` and `npm run demo`: the real entry
 * points in their own processes, every TCP port each one listens on found from /proc (so a listener
 * nobody announced is probed too), and to each port the attacks a page can make:
 *
 * - a CORS preflight and cross-origin calls (with `Origin`, as a browser sends them);
 * - DNS rebinding: the same calls without `Origin` but under `Host: rebind.evil.example:<port>`;
 * - an uncredentialed DynamoDB ListTables and Scan, signed with made-up SigV4 credentials.
 *
 * None may be answered with data or with a CORS approval. (The store itself has no port: the keeper
 * reaches dynalite through an owner-only Unix socket.)
 */

const ROOT = join(import.meta.dirname, '..', '..');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const EVIL = 'https://evil.example';
const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

function start(script: string, cwd: string, env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', TSX, join(ROOT, script)], {
    cwd,
    env: { ...process.env, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stdout = '';
  child.stdout?.on('data', (c) => {
    stdout += String(c);
  });
  child.stderr?.resume();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, out: () => stdout };
}

/** The process's sockets, by inode, from its file descriptors. */
async function socketInodes(pid: number): Promise<Set<string>> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const inode = /^socket:\[(\d+)\]$/u.exec(link)?.[1];
    if (inode) inodes.add(inode);
  }
  return inodes;
}

/** Every TCP port the process listens on (IPv4 and IPv6), from /proc/<pid>/net/tcp{,6}. */
async function listeningPorts(pid: number): Promise<number[]> {
  const inodes = await socketInodes(pid);
  const ports = new Set<number>();
  for (const table of ['tcp', 'tcp6']) {
    const text = await readFile(`/proc/${pid}/net/${table}`, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/u);
      // local_address is ADDR:PORT in hex; state 0A is LISTEN; column 10 is the inode.
      if (cols.length > 9 && cols[3] === '0A' && inodes.has(cols[9] as string)) {
        ports.add(Number.parseInt((cols[1] as string).split(':')[1] as string, 16));
      }
    }
  }
  return [...ports].sort((a, b) => a - b);
}

/** The paths of the Unix sockets the process listens on, from /proc/<pid>/net/unix. */
async function listeningUnixSockets(pid: number): Promise<string[]> {
  const inodes = await socketInodes(pid);
  const text = await readFile(`/proc/${pid}/net/unix`, 'utf8');
  const paths: string[] = [];
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/u);
    // Flags 00010000: accepting connections; column 7 is the inode, column 8 the path.
    if (cols.length > 7 && cols[3] === '00010000' && inodes.has(cols[6] as string))
      paths.push(cols[7] as string);
  }
  return paths;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function send(
  port: number,
  options: { method: string; path: string; headers?: Record<string, string>; body?: string },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method,
        path: options.path,
        headers: { host: `127.0.0.1:${port}`, ...options.headers },
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A DynamoDB JSON call, signed as the SDK would sign it, with credentials the keeper never issued. */
function dynamoCall(target: 'ListTables' | 'Scan', headers: Record<string, string> = {}) {
  const body = target === 'Scan' ? JSON.stringify({ TableName: 'tokenkeeper-sessions' }) : '{}';
  return {
    method: 'POST',
    path: '/',
    body,
    headers: {
      'content-type': 'application/x-amz-json-1.0',
      'x-amz-target': `DynamoDB_20120810.${target}`,
      'x-amz-date': '20260101T000000Z',
      authorization:
        'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/dynamodb/aws4_request, ' +
        `SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=${'0'.repeat(64)}`,
      ...headers,
    },
  };
}

/** Paths that answer 200 to a plain GET on one listener or another. */
const PATHS = [
  '/',
  '/v1/health',
  '/console',
  '/oauth/client-metadata',
  '/.well-known/openid-configuration',
  '/.well-known/oauth-protected-resource/mcp',
  '/jwks',
];

const hasData = (a: Answer) => /TableNames|"Items"|"Count"/u.test(a.body);

/** Every attack against one port; returns a line per answer that was not a refusal. */
async function attack(port: number): Promise<string[]> {
  const failures: string[] = [];
  const expectRefused = (what: string, a: Answer, status: number) => {
    const cors = Object.keys(a.headers).filter((h) => h.startsWith('access-control-'));
    if (a.status !== status || cors.length > 0 || hasData(a)) {
      failures.push(`${port} ${what}: ${a.status} ${cors.join(',')} ${a.body.slice(0, 120)}`);
    }
  };
  // The preflight a page sends before a DynamoDB call, or before any call with an Authorization header.
  for (const path of ['/', '/v1/sessions/alice/notes/token']) {
    const preflight = await send(port, {
      method: 'OPTIONS',
      path,
      headers: {
        origin: EVIL,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type,x-amz-date,x-amz-target',
      },
    });
    expectRefused(`preflight ${path}`, preflight, 403);
  }
  // Cross-origin calls, from a page and from an opaque origin (a sandboxed frame, a data: URL).
  for (const origin of [EVIL, 'null']) {
    for (const path of PATHS) {
      expectRefused(
        `GET ${path} from ${origin}`,
        await send(port, { method: 'GET', path, headers: { origin } }),
        403,
      );
    }
    expectRefused(
      `POST form from ${origin}`,
      await send(port, {
        method: 'POST',
        path: '/token',
        headers: { origin, 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=refresh_token&refresh_token=x',
      }),
      403,
    );
    for (const target of ['ListTables', 'Scan'] as const) {
      expectRefused(`${target} from ${origin}`, await send(port, dynamoCall(target, { origin })), 403);
    }
  }
  // DNS rebinding: the page's own origin, so no Origin on a GET; only the Host header tells.
  const rebind = `rebind.evil.example:${port}`;
  for (const path of PATHS) {
    expectRefused(
      `GET ${path} via ${rebind}`,
      await send(port, { method: 'GET', path, headers: { host: rebind } }),
      421,
    );
  }
  for (const target of ['ListTables', 'Scan'] as const) {
    expectRefused(`${target} via ${rebind}`, await send(port, dynamoCall(target, { host: rebind })), 421);
  }
  // Without a credential the keeper generated: no answer with data, whatever the status.
  for (const target of ['ListTables', 'Scan'] as const) {
    const answer = await send(port, dynamoCall(target));
    if (answer.status === 200 || hasData(answer)) {
      failures.push(`${port} uncredentialed ${target}: ${answer.status} ${answer.body.slice(0, 120)}`);
    }
  }
  return failures;
}

/** The store's socket, if any, is in a directory only the operator's account can enter. */
async function expectPrivateSockets(pid: number): Promise<void> {
  for (const path of await listeningUnixSockets(pid)) {
    expect(((await stat(dirname(path))).mode & 0o077).toString(8), path).toBe('0');
  }
}

describe.runIf(process.platform === 'linux')('the local listeners refuse web pages', () => {
  it('npm start: its one port refuses preflights, cross-origin calls, rebinding and uncredentialed DynamoDB calls', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-listeners-'));
    dirs.push(dataDir);
    const run = start('bin/local.ts', ROOT, { TOKENKEEPER_DATA_DIR: dataDir });
    const url = await waitFor(() => /listening on (http:\/\/127\.0\.0\.1:\d+)/u.exec(run.out())?.[1], 20_000);
    const apiPort = Number(new URL(url).port);
    const pid = run.child.pid as number;

    const ports = await listeningPorts(pid);
    const failures = (await Promise.all(ports.map(attack))).flat();
    expect(failures).toEqual([]);
    // The API server is the only port: dynalite has none.
    expect(ports).toEqual([apiPort]);
    await expectPrivateSockets(pid);

    // The keeper's own callers still get through: no Origin, or the console's own origin.
    expect((await send(apiPort, { method: 'GET', path: '/v1/health' })).status).toBe(200);
    const key = (await readFile(join(dataDir, 'api-key'), 'utf8')).trim();
    const sameOrigin = await send(apiPort, {
      method: 'POST',
      path: '/local/sweep',
      headers: { origin: url, authorization: `Bearer ${key}` },
    });
    expect(sameOrigin.status).toBe(200);

    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
  });

  it('npm run demo: the keeper, the demo OAuth server and the MCP server refuse them all, and the keeper has no other port', async () => {
    const cwd = await mkdtemp(join(tmpdir(), 'tokenkeeper-listeners-demo-'));
    dirs.push(cwd);
    const run = start('bin/demo.ts', cwd, {});
    const banner = await waitFor(
      () =>
        /keeper (http:\/\/127\.0\.0\.1:\d+) .*OAuth server (http:\/\/127\.0\.0\.1:\d+), MCP server (http:\/\/127\.0\.0\.1:\d+)/u.exec(
          run.out(),
        ) ?? undefined,
      30_000,
    );
    const announced = banner.slice(1, 4).map((u) => Number(new URL(u as string).port));
    const pid = run.child.pid as number;

    const ports = await listeningPorts(pid);
    const failures = (await Promise.all(ports.map(attack))).flat();
    expect(failures).toEqual([]);
    expect(ports).toEqual([...announced].sort((a, b) => a - b));
    await expectPrivateSockets(pid);

    // What the demo needs still works: its OAuth server's own pages may post to it, the keeper calls it.
    const [, oauthPort] = announced as [number, number, number];
    const discovery = await send(oauthPort, { method: 'GET', path: '/.well-known/openid-configuration' });
    expect(discovery.status).toBe(200);
    const ownForm = await send(oauthPort, {
      method: 'POST',
      path: '/token',
      headers: {
        origin: `http://127.0.0.1:${oauthPort}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=refresh_token&refresh_token=x',
    });
    expect(ownForm.status).toBe(400);

    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);
  });
});
