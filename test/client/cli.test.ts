import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliIo, runCli } from '../../client/cli.js';
import { TokenKeeperClient } from '../../client/index.js';
import { followToCallback, visit } from '../support/connect-flow.js';
import { type McpServer, startMcpServer } from '../support/mcp-server.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/** The `tokenkeeper` CLI against the real local stack, its output captured. */

let oauth: OAuthServer;
let keeper: TestStack;
let mcp: McpServer;
let port: string;
let scratch: string;
let client: TokenKeeperClient;
let seq = 0;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  requests: { url: string; authorization: string | null }[];
}

async function cli(
  argv: string[],
  options: { env?: Record<string, string | undefined>; tty?: boolean; stdin?: string; cwd?: string } = {},
): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const requests: Run['requests'] = [];
  const io: CliIo = {
    stdout: { write: (s: string) => (stdout += s), isTTY: options.tty ?? false },
    stderr: { write: (s: string) => (stderr += s) },
    env: { PORT: port, TOKENKEEPER_DATA_DIR: keeper.dataDir, ...options.env },
    stdin: options.stdin === undefined ? undefined : chunks(options.stdin),
    fetch: (input, init) => {
      requests.push({ url: String(input), authorization: new Headers(init?.headers).get('authorization') });
      return fetch(input, init);
    },
    credentials: async () => ({ accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' }),
    ...(options.cwd ? { cwd: options.cwd } : {}),
  };
  const code = await runCli(argv, io);
  return { code, stdout, stderr, requests };
}

async function* chunks(text: string): AsyncIterable<string> {
  yield text;
}

/** A port nothing listens on (bound, then released). */
async function unusedPort(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: free } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return String(free);
}

async function login(userId: string) {
  return oauth.login({ clientId: oauth.clients.basic.clientId, accountId: userId });
}

/** A user with three sessions: healthy, failing transiently, and needing re-authorization. */
async function userWithThreeSessions(): Promise<string> {
  const userId = `cli-user-${++seq}`;
  for (const providerId of ['github', 'linear', 'notion']) {
    await client.putSession(userId, providerId, await login(userId));
  }
  await client.getToken(userId, 'github', { force: true });
  oauth.proxy.setFault({ kind: 'status', status: 503, body: 'maintenance', times: 1 });
  await expect(client.getToken(userId, 'linear', { force: true })).rejects.toMatchObject({ status: 503 });
  oauth.proxy.setFault({ kind: 'oauth-error', status: 400, error: 'invalid_grant', times: 1 });
  await expect(client.getToken(userId, 'notion', { force: true })).rejects.toMatchObject({ status: 409 });
  oauth.proxy.setFault(null);
  return userId;
}

beforeAll(async () => {
  mcp = await startMcpServer();
  oauth = await startOAuthServer({ accessTokenTtl: 3600, registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: oauth.issuer, introspect: (token) => oauth.introspect(token) });
  keeper = await startTestStack({ env: { TOKENKEEPER_ALLOWED_REDIRECTS: 'http://127.0.0.1:9/app/' } });
  port = new URL(keeper.url).port;
  scratch = await mkdtemp(join(tmpdir(), 'tokenkeeper-cli-'));
  client = new TokenKeeperClient({
    baseUrl: keeper.url,
    auth: { kind: 'bearer', apiKey: keeper.apiKey },
    maxRetries: 0,
  });
  for (const providerId of ['github', 'linear', 'notion']) {
    await client.putProvider(providerId, {
      issuer: oauth.issuer,
      clientId: oauth.clients.basic.clientId,
      clientSecret: oauth.clients.basic.clientSecret,
      resource: MCP_RESOURCE,
    });
  }
});

afterAll(async () => {
  await keeper?.stop();
  await oauth?.stop();
  await mcp?.stop();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

describe('providers', () => {
  it('list: one row per provider with its circuit, client and endpoint; --json gives them all', async () => {
    const run = await cli(['providers', 'list']);
    expect(run.code).toBe(0);
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^PROVIDER +CIRCUIT +CLIENT +ENDPOINT$/u);
    for (const providerId of ['github', 'linear', 'notion']) {
      expect(lines.find((l) => l.startsWith(`${providerId} `))).toMatch(
        new RegExp(`^${providerId} +closed +\\S+ \\(client_secret_basic\\) +${oauth.issuer}$`, 'u'),
      );
    }
    const json = JSON.parse((await cli(['providers', 'list', '--json'])).stdout) as {
      providers: { providerId: string; clientSecret?: unknown }[];
    };
    expect(json.providers.map((p) => p.providerId)).toEqual(
      expect.arrayContaining(['github', 'linear', 'notion']),
    );
    expect(JSON.stringify(json)).not.toContain(oauth.clients.basic.clientSecret);
  });

  it('put with the refresh settings as options: numbers sent as numbers, shown in a line', async () => {
    const base = ['providers', 'put', 'keep-alive', '--token-endpoint', oauth.tokenEndpoint];
    const idle = ['--client-id', 'tk-public', '--refresh-token-idle-seconds', '86400'];
    const put = await cli([
      ...base,
      ...idle,
      '--refresh-policy',
      'keepAlive',
      '--max-concurrent-refreshes',
      '20',
    ]);
    expect(put).toMatchObject({ code: 0, stderr: '' });
    expect(put.stdout).toMatch(
      /\nrefresh +keepAlive \(on demand; the sweep keeps grants alive\), refresh tokens idle 86400 s, at most 20 at once\n/u,
    );
    const shown = await cli(['providers', 'get', 'keep-alive', '--json']);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      refreshPolicy: 'keepAlive',
      refreshTokenIdleSeconds: 86_400,
      maxConcurrentRefreshes: 20,
    });
    const refused = await cli([...base, ...idle]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('refreshTokenIdleSeconds: applies only with refreshPolicy keepAlive');
  });

  it('put from options, then replaced from a file; get, as text and --json', async () => {
    const secretFile = join(scratch, 'client-secret');
    await writeFile(secretFile, `${oauth.clients.basic.clientSecret}\n`, { mode: 0o600 });
    const created = await cli([
      'providers',
      'put',
      'mcp',
      '--issuer',
      oauth.issuer,
      '--client-id',
      oauth.clients.basic.clientId,
      '--client-secret-file',
      secretFile,
      '--resource',
      MCP_RESOURCE,
    ]);
    expect(created).toMatchObject({ code: 0, stderr: '' });
    expect(created.stdout).toMatch(
      /^provider mcp created\nprovider +mcp\nissuer +http:\/\/127\.0\.0\.1:\d+\n/u,
    );
    expect(created.stdout).toMatch(/\nclient secret +stored \(encrypted\)\n/u);
    expect(created.stdout).toMatch(/\nrefresh +eager \(before every expiry\)\n/u);
    expect(created.stdout).not.toContain(oauth.clients.basic.clientSecret);

    const file = join(scratch, 'provider.json');
    await writeFile(file, JSON.stringify({ tokenEndpoint: oauth.tokenEndpoint, clientId: 'tk-public' }));
    const replaced = await cli(['providers', 'put', 'mcp', '--file', file]);
    expect(replaced.stdout).toMatch(/^provider mcp replaced\n/u);
    expect(replaced.stdout).toMatch(/\nclient +tk-public \(none\)\n/u);

    const shown = await cli(['providers', 'get', 'mcp', '--json']);
    expect(shown.code).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      providerId: 'mcp',
      clientId: 'tk-public',
      hasClientSecret: false,
    });
  });

  it('put by --mcp-server-url, then authorize prints the URL to open; after the callback, token get works', async () => {
    const put = await cli(['providers', 'put', 'by-mcp', '--mcp-server-url', mcp.url]);
    expect(put).toMatchObject({ code: 0, stderr: '' });
    expect(put.stdout).toMatch(
      /^provider by-mcp created\nprovider +by-mcp\nMCP server +http:\/\/127\.0\.0\.1:\d+\/mcp\n/u,
    );
    expect(put.stdout).toMatch(/\nclient +\S+ \(none, dynamic\)\n/u);

    const userId = `cli-user-${++seq}`;
    const run = await cli(['authorize', userId, 'by-mcp']);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    const [intro, url, then, rest] = run.stdout.split('\n');
    expect(intro).toMatch(
      new RegExp(`^Open this URL in ${userId}'s browser \\(valid until \\d{4}-\\d\\d-\\d\\dT`, 'u'),
    );
    expect(then).toBe(`Whoever opens it connects their account as ${userId}.`);
    expect(rest).toBe('');
    const callback = await followToCallback(url as string, `${keeper.url}/oauth/callback`, {
      loginHint: userId,
    });
    expect((await visit(callback)).status).toBe(200);
    const token = await cli(['token', 'get', userId, 'by-mcp']);
    expect(token.code).toBe(0);
    expect((await mcp.call(token.stdout.trim())).status).toBe(200);

    const json = await cli(['authorize', userId, 'by-mcp', '--json', '--scope', 'mcp:read']);
    expect(JSON.parse(json.stdout)).toMatchObject({
      authorizationUrl: expect.stringContaining('scope=mcp%3Aread'),
    });
    const refused = await cli([
      'authorize',
      userId,
      'by-mcp',
      '--redirect-uri',
      'https://elsewhere.example/',
    ]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/TOKENKEEPER_ALLOWED_REDIRECTS/u);
  });

  it('authorize --redirect-uri says the connection waits for completion; complete stores it for that user only', async () => {
    const userId = `cli-user-${++seq}`;
    const app = 'http://127.0.0.1:9/app/';
    const run = await cli(['authorize', userId, 'by-mcp', '--redirect-uri', app]);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    const [, url, then] = run.stdout.split('\n');
    expect(then).toBe(
      `The browser returns to ${app} with status=pending&connection=<id>; ` +
        `nothing is stored until: tokenkeeper complete ${userId} by-mcp <id>`,
    );
    const callback = await followToCallback(url as string, `${keeper.url}/oauth/callback/by-mcp`, {
      loginHint: userId,
    });
    const connection = new URL((await visit(callback)).location as string).searchParams.get(
      'connection',
    ) as string;
    const other = await cli(['complete', `${userId}-other`, 'by-mcp', connection]);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('connection_not_found');
    expect((await cli(['token', 'get', userId, 'by-mcp'])).code).toBe(1);
    const done = await cli(['complete', userId, 'by-mcp', connection]);
    expect(done).toMatchObject({ code: 0, stderr: '' });
    expect(done.stdout).toMatch(new RegExp(`^connection completed: session ${userId} / by-mcp\n`, 'u'));
    const token = await cli(['token', 'get', userId, 'by-mcp']);
    expect((await mcp.call(token.stdout.trim())).status).toBe(200);
  });

  it('never takes the client secret from argv: --client-secret is refused before anything is sent', async () => {
    const secret = 'argv-secret-0123456789';
    const run = await cli(['providers', 'put', 'argv', '--client-id', 'c', '--client-secret', secret]);
    expect(run.code).toBe(2);
    expect(run.requests).toEqual([]);
    expect(run.stderr).toContain('--client-secret is refused');
    expect(run.stderr).toContain(
      '--client-secret-file <path>, --client-secret-stdin or TOKENKEEPER_CLIENT_SECRET',
    );
    expect(run.stderr).not.toContain(secret);
    const both = await cli(
      ['providers', 'put', 'argv', '--client-id', 'c', '--client-secret-stdin', '--client-secret-file', 'x'],
      {
        stdin: secret,
      },
    );
    expect(both).toMatchObject({ code: 2, requests: [] });
  });

  it('the client secret from stdin or TOKENKEEPER_CLIENT_SECRET reaches the keeper', async () => {
    const base = ['--token-endpoint', oauth.tokenEndpoint, '--client-id', oauth.clients.basic.clientId];
    const fromStdin = await cli(
      ['providers', 'put', 'secret-stdin', ...base, '--client-secret-stdin', '--json'],
      {
        stdin: `${oauth.clients.basic.clientSecret}\n`,
      },
    );
    expect(fromStdin.code, fromStdin.stderr).toBe(0);
    expect(JSON.parse(fromStdin.stdout)).toMatchObject({
      hasClientSecret: true,
      clientAuthMethod: 'client_secret_basic',
    });
    const fromEnv = await cli(['providers', 'put', 'secret-env', ...base, '--json'], {
      env: { TOKENKEEPER_CLIENT_SECRET: oauth.clients.basic.clientSecret },
    });
    expect(fromEnv.code, fromEnv.stderr).toBe(0);
    expect(JSON.parse(fromEnv.stdout)).toMatchObject({ hasClientSecret: true });
    // The secret is the one the provider knows: a grant with it succeeds.
    const userId = `cli-user-${++seq}`;
    for (const providerId of ['secret-stdin', 'secret-env']) {
      await client.putSession(userId, providerId, await login(userId));
      const token = await client.getToken(userId, providerId, { force: true });
      expect(token.access_token).toBeTruthy();
    }
    // Not with --client-secret-arn (the ARN names the secret), nor with --file.
    const arn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:tokenkeeper/x-AbCdEf';
    const withArn = await cli(
      ['providers', 'put', 'secret-arn', ...base, '--client-secret-arn', arn, '--json'],
      {
        env: { TOKENKEEPER_CLIENT_SECRET: 'ignored' },
      },
    );
    expect(withArn.code, withArn.stderr).toBe(0);
  });

  it('never takes a token from argv: --access-token and --refresh-token are refused before anything is sent', async () => {
    const token = 'argv-token-0123456789';
    for (const name of ['access-token', 'refresh-token']) {
      for (const argv of [
        ['sessions', 'put', 'u', 'github', `--${name}`, token, '--expires-in', '3600'],
        ['sessions', 'put', 'u', 'github', `--${name}=${token}`],
      ]) {
        const run = await cli(argv);
        expect(run.code, argv.join(' ')).toBe(2);
        expect(run.requests).toEqual([]);
        expect(run.stderr).toContain(`--${name} is refused`);
        expect(run.stderr).toContain(`use --${name}-file <path> or --${name}-stdin`);
        expect(run.stderr).not.toContain(token);
      }
    }
    // One standard input for one token; a file and stdin for the same one is ambiguous.
    const bothStdin = await cli(
      ['sessions', 'put', 'u', 'github', '--access-token-stdin', '--refresh-token-stdin'],
      {
        stdin: token,
      },
    );
    expect(bothStdin).toMatchObject({ code: 2, requests: [] });
    expect(bothStdin.stderr).toContain('--access-token-stdin cannot be combined with --refresh-token-stdin');
    const fileAndStdin = await cli(
      ['sessions', 'put', 'u', 'github', '--access-token-stdin', '--access-token-file', 'x'],
      {
        stdin: token,
      },
    );
    expect(fileAndStdin).toMatchObject({ code: 2, requests: [] });
    // An empty file is refused, not sent as an empty token.
    const empty = join(scratch, 'empty-token');
    await writeFile(empty, '\n');
    const emptyRun = await cli(['sessions', 'put', 'u', 'github', '--access-token-file', empty]);
    expect(emptyRun).toMatchObject({
      code: 1,
      requests: [],
      stderr: 'tokenkeeper: the access token is empty\n',
    });
  });

  it('refuses ids the keeper would refuse, before sending', async () => {
    for (const id of ['a/b', 'who?x', '100%', 'a#b', 'a\\b', 'a\u0000b', '..']) {
      const run = await cli(['sessions', 'show', id, 'github']);
      expect(run.code, id).toBe(2);
      expect(run.requests).toEqual([]);
      expect(run.stderr).toContain('userId must not contain / ? # % \\ or control characters');
    }
    const provider = await cli(['token', 'get', 'alice', 'p/token']);
    expect(provider).toMatchObject({ code: 2, requests: [] });
    expect(provider.stderr).toContain('providerId must not contain');
  });

  it('an unknown provider: one line on stderr, exit 1', async () => {
    const run = await cli(['providers', 'get', 'nope']);
    expect(run).toMatchObject({
      code: 1,
      stdout: '',
      stderr: 'tokenkeeper: provider_not_found: provider "nope" is not registered\n',
    });
  });
});

describe('sessions and tokens', () => {
  it('put from stdin and from options, show, list, token get, delete', async () => {
    const userId = `cli-user-${++seq}`;
    const tokens = await login(userId);
    const put = await cli(['sessions', 'put', userId, 'github', '--file', '-'], {
      stdin: JSON.stringify(tokens),
    });
    expect(put.code).toBe(0);
    expect(put.stdout).toMatch(new RegExp(`^session ${userId} / github created\\n`, 'u'));
    expect(put.stdout).toMatch(/status +active\n/u);
    expect(put.stdout).toMatch(/expires +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \((59m \d+s|1h 0m)\)\n/u);

    // The tokens from a file and from stdin, the rest as options.
    const other = await login(userId);
    const accessTokenFile = join(scratch, `access-token-${seq}`);
    await writeFile(accessTokenFile, `${other.access_token}\n`, { mode: 0o600 });
    const byOptions = await cli(
      [
        'sessions',
        'put',
        userId,
        'linear',
        '--access-token-file',
        accessTokenFile,
        '--refresh-token-stdin',
        '--expires-in',
        '3600',
        '--json',
      ],
      { stdin: `${other.refresh_token}\n` },
    );
    expect(byOptions.stderr).toBe('');
    expect(byOptions.code).toBe(0);
    expect(JSON.parse(byOptions.stdout)).toMatchObject({ refreshable: true, status: 'active' });
    expect(await client.getToken(userId, 'linear')).toMatchObject({ access_token: other.access_token });

    const show = await cli(['sessions', 'show', userId, 'github']);
    expect(show.stdout).toMatch(/^session +cli-user-\d+ \/ github\nstatus +active\n/u);
    expect(show.stdout).toMatch(/last refresh +never\nfailures +0\nlast error +—\n$/u);

    const list = await cli(['sessions', 'list', userId]);
    expect(list.stdout.split('\n')[0]).toMatch(/^PROVIDER +STATUS +EXPIRES AT +REFRESHABLE$/u);
    expect(list.stdout).toMatch(/\ngithub +active +\d{4}-\d\d-\d\dT[\d:]+Z +yes\nlinear +active/u);
    const listJson = JSON.parse((await cli(['sessions', 'list', userId, '--json'])).stdout);
    expect(listJson.sessions).toHaveLength(2);

    const token = await cli(['token', 'get', userId, 'github']);
    expect(token.code).toBe(0);
    expect(token.stdout).toBe(`${tokens.access_token}\n`);
    const forced = await cli([
      'token',
      'get',
      userId,
      'github',
      '--force',
      '--min-validity',
      '120',
      '--json',
    ]);
    const forcedToken = JSON.parse(forced.stdout);
    expect(forcedToken.access_token).not.toBe(tokens.access_token);
    expect(forcedToken).not.toHaveProperty('refresh_token');
    expect((await oauth.introspect(forcedToken.access_token)).active).toBe(true);

    const deleted = await cli(['sessions', 'delete', userId, 'linear']);
    expect(deleted.stdout).toBe(`session ${userId} / linear deleted\n`);
    const gone = await cli(['sessions', 'show', userId, 'linear']);
    expect(gone).toMatchObject({
      code: 1,
      stdout: '',
      stderr: 'tokenkeeper: session_not_found: no session for this user and provider\n',
    });
  });

  it('a dead grant and a failing provider, as one-line errors', async () => {
    const userId = await userWithThreeSessions();
    const dead = await cli(['token', 'get', userId, 'notion']);
    expect(dead.code).toBe(1);
    expect(dead.stderr).toMatch(/^tokenkeeper: reauthorization_required: [^\n]+\n$/u);
    const failing = await cli(['token', 'get', userId, 'linear', '--force']);
    expect(failing.code).toBe(1);
    expect(failing.stderr).toMatch(/^tokenkeeper: refresh_unavailable: [^\n]+ \(retry after \d+s\)\n$/u);
  });
});

describe('status', () => {
  it('a table of the sessions with status, expiry, last refresh and last error, and a summary', async () => {
    const userId = await userWithThreeSessions();
    const run = await cli(['status', userId]);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^PROVIDER +STATUS +EXPIRES IN +LAST REFRESH +FAILURES +LAST ERROR$/u);
    expect(lines[1]).toMatch(/^github +active +(59m \d+s|1h 0m) +(just now|\d+s ago) +0 +—$/u);
    expect(lines[2]).toMatch(
      /^linear +active +(59m \d+s|1h 0m) +never +1 +http_503 \(retry in (\d+m )?\d+s\)$/u,
    );
    expect(lines[3]).toMatch(
      /^notion +reauthorization_required +(59m \d+s|1h 0m) +never +1 +invalid_grant$/u,
    );
    expect(lines[4]).toBe('');
    expect(lines[5]).toBe(
      `${userId}: 3 sessions — 1 healthy, 1 failing transiently, 1 needs re-authorization`,
    );
    expect(run.stdout).not.toContain('\u001b[');

    const json = await cli(['status', userId, '--json']);
    const sessions = JSON.parse(json.stdout).sessions as { providerId: string; status: string }[];
    expect(sessions.map((s) => [s.providerId, s.status]).sort()).toEqual([
      ['github', 'active'],
      ['linear', 'active'],
      ['notion', 'reauthorization_required'],
    ]);
  });

  it('coloured on a terminal, unless NO_COLOR or --no-color', async () => {
    const userId = await userWithThreeSessions();
    const tty = await cli(['status', userId], { tty: true });
    expect(tty.stdout).toContain('\u001b[31mreauthorization_required');
    expect(tty.stdout).toContain('\u001b[32mactive');
    expect((await cli(['status', userId], { tty: true, env: { NO_COLOR: '1' } })).stdout).not.toContain(
      '\u001b[',
    );
    expect((await cli(['status', userId, '--no-color'], { tty: true })).stdout).not.toContain('\u001b[');
    expect((await cli(['status', userId], { env: { FORCE_COLOR: '1' } })).stdout).toContain('\u001b[');
  });

  it('a session stored with short-lived tokens shows "on demand" once its token lapsed, before any refresh', async () => {
    const userId = `cli-user-${++seq}`;
    const put = await client.putSession(userId, 'github', {
      access_token: 'at-short-0123456789',
      refresh_token: 'rt-short-0123456789',
      expires_in: 1,
    });
    const lapsed = (put.value.expiresAt as number) * 1000;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, lapsed - Date.now()) + 100));
    const run = await cli(['status', userId]);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toMatch(/^github +active +on demand +never +0 +—$/mu);
    expect(run.stdout).toContain('1 healthy');
  });

  it('a user without sessions', async () => {
    expect(await cli(['status', 'nobody'])).toMatchObject({
      code: 0,
      stdout: 'no sessions for user nobody\n',
    });
  });
});

describe('sweep', () => {
  it('sweeps the local stack now', async () => {
    const run = await cli(['sweep']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^due \d+, refreshed \d+, failed \d+ transiently, .* \(\d+ ms\)\n$/u);
    expect(JSON.parse((await cli(['sweep', '--json'])).stdout)).toHaveProperty('refreshed');
  });
});

describe('targets', () => {
  it('the local key from TOKENKEEPER_API_KEY wins over the data directory', async () => {
    const run = await cli(['status', 'x'], { env: { TOKENKEEPER_API_KEY: 'wrong-key' } });
    expect(run.code).toBe(1);
    // A local 401 says where the key is expected.
    expect(run.stderr).toBe(
      'tokenkeeper: unauthorized: missing or invalid credentials (the local stack refused the key from ' +
        'TOKENKEEPER_API_KEY; it expects the key in its data directory: .data/api-key for npm start, ' +
        '.data/demo/api-key for npm run demo; --data-dir or TOKENKEEPER_API_KEY to choose)\n',
    );
    expect(run.requests[0]?.authorization).toBe('Bearer wrong-key');
  });

  it('no key anywhere', async () => {
    const run = await cli(['status', 'x'], { env: { TOKENKEEPER_DATA_DIR: scratch } });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(
      /^tokenkeeper: no API key: set TOKENKEEPER_API_KEY, .*api-key not found.*\n$/u,
    );
    expect(run.requests).toEqual([]);
  });

  it('--data-dir points at the key', async () => {
    const run = await cli(['status', 'x', '--data-dir', keeper.dataDir], {
      env: { TOKENKEEPER_DATA_DIR: scratch },
    });
    expect(run.code).toBe(0);
  });

  it('a stack that is not running', async () => {
    const closed = await unusedPort();
    const run = await cli(['status', 'x'], { env: { PORT: closed } });
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(
      `tokenkeeper: cannot reach http://127.0.0.1:${closed}: ECONNREFUSED (is the local stack running? npm start)\n`,
    );
  });

  it('--url (or TOKENKEEPER_URL) targets a deployed API with SigV4', async () => {
    // The local stack wants a bearer key, so the signed request is refused: what matters is what was sent.
    for (const args of [
      ['--url', keeper.url, '--region', 'eu-west-1', '--auth', 'sigv4'],
      ['--region', 'eu-west-1', '--auth', 'sigv4'],
    ]) {
      const run = await cli(['status', 'x', ...args], {
        env: args.includes('--url') ? {} : { TOKENKEEPER_URL: keeper.url },
      });
      expect(run.code).toBe(1);
      expect(run.requests[0]?.authorization).toMatch(
        /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-west-1\/execute-api\/aws4_request, /u,
      );
    }
    const region = await cli(['status', 'x', '--url', 'https://tokens.example.com'], {
      env: { AWS_REGION: '' },
    });
    expect(region).toMatchObject({ code: 2 });
    expect(region.stderr).toMatch(/^tokenkeeper: no AWS region for SigV4: pass --region or set AWS_REGION/u);
  });

  it('a loopback --url (or TOKENKEEPER_URL) is the local stack: bearer, with the key from the data directory', async () => {
    const other = { PORT: await unusedPort() };
    for (const url of [keeper.url, keeper.url.replace('127.0.0.1', 'localhost')]) {
      const run = await cli(['status', 'x', '--url', url], { env: other });
      expect(run).toMatchObject({ code: 0, stdout: 'no sessions for user x\n' });
      expect(run.requests[0]?.authorization).toBe(`Bearer ${keeper.apiKey}`);
      const viaEnv = await cli(['sweep'], { env: { ...other, TOKENKEEPER_URL: url } });
      expect(viaEnv.code).toBe(0);
    }
  });

  it('without a data directory: npm start’s key or the demo’s, whichever the stack accepts; a refusal names both', async () => {
    const cwd = await mkdtemp(join(scratch, 'cwd-'));
    await mkdir(join(cwd, '.data', 'demo'), { recursive: true });
    await writeFile(join(cwd, '.data', 'api-key'), 'not-this-stacks-key-0123456789abcdef\n');
    await writeFile(join(cwd, '.data', 'demo', 'api-key'), `${keeper.apiKey}\n`);
    const env = { TOKENKEEPER_DATA_DIR: undefined };
    const run = await cli(['status', 'x'], { env, cwd });
    expect(run).toMatchObject({ code: 0, stdout: 'no sessions for user x\n' });
    expect(run.requests.at(-1)?.authorization).toBe(`Bearer ${keeper.apiKey}`);

    await writeFile(join(cwd, '.data', 'demo', 'api-key'), 'neither-is-this-one-0123456789abcdef\n');
    const refused = await cli(['status', 'x'], { env, cwd });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`refused the key from ${join('.data', 'api-key')}`);
    expect(refused.stderr).toContain('.data/demo/api-key for npm run demo');
  });

  it('--auth bearer with --url: a local stack on another address', async () => {
    const run = await cli(['status', 'x', '--url', keeper.url, '--auth', 'bearer'], {
      env: { PORT: await unusedPort() },
    });
    expect(run).toMatchObject({ code: 0, stdout: 'no sessions for user x\n' });
  });
});

describe('usage errors: one line, exit 2', () => {
  it.each([
    [[], 'missing command'],
    [['frobnicate'], 'unknown command frobnicate'],
    [['sessions'], 'sessions: missing subcommand (list, show, put, delete)'],
    [['sessions', 'purge'], 'sessions: unknown subcommand purge (list, show, put, delete)'],
    [['token', 'get', 'alice'], 'token get: missing <providerId>'],
    [['status', 'a', 'b'], 'status: unexpected argument b'],
    [['sessions', 'list', 'alice', '--force'], 'option --force does not apply to sessions list'],
    [['status', 'alice', '--bogus'], "Unknown option '--bogus'"],
    [
      ['token', 'get', 'a', 'b', '--min-validity', 'soon'],
      '--min-validity must be a whole number of seconds',
    ],
    [['providers', 'put', 'p'], 'give --file or the fields as options'],
    [
      ['sessions', 'put', 'u', 'p', '--file', 'x.json', '--access-token-file', 't'],
      '--file cannot be combined',
    ],
    [
      ['sessions', 'put', 'u', 'p'],
      'give --file or the fields as options (--access-token-file, --refresh-token-file,',
    ],
    [
      ['sweep', '--url', 'https://abc.execute-api.eu-west-1.amazonaws.com'],
      'sweep works against the local stack only',
    ],
    [['status', 'alice', '--auth', 'basic'], '--auth must be sigv4 or bearer'],
  ])('%j', async (argv, message) => {
    const run = await cli(argv as string[]);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr.startsWith(`tokenkeeper: ${message}`)).toBe(true);
    expect(run.stderr.endsWith(' (see tokenkeeper --help)\n')).toBe(true);
    expect(run.stderr.trimEnd().split('\n')).toHaveLength(1);
  });

  it('--help', async () => {
    const run = await cli(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Usage: tokenkeeper <command>/u);
    expect(run.stdout).toContain('--client-secret-file <path>, --client-secret-stdin');
    expect(run.stdout).toContain('$TOKENKEEPER_CLIENT_SECRET (never on the command line');
    expect(run.stdout).toContain('--access-token-file <path> [--refresh-token-file <path>]');
    expect(run.stdout).toContain('(tokens never on the command line, where ps shows them)');
    expect(run.stdout).toContain('must not contain / ? # % \\ or control characters');
    // One entry per command, each command there.
    const commands = run.stdout.slice(run.stdout.indexOf('Commands:'), run.stdout.indexOf('Target:'));
    const entries = commands
      .split('\n')
      .map((l) => /^ {2}([a-z]+(?: (?:list|get|put|show|delete))?)\b/u.exec(l)?.[1])
      .filter((c): c is string => c !== undefined);
    expect(entries).toEqual([
      'status',
      'providers list',
      'providers get',
      'providers put',
      'sessions list',
      'sessions show',
      'sessions put',
      'sessions delete',
      'authorize',
      'complete',
      'token get',
      'sweep',
      'console',
    ]);
  });

  it('a --file that is missing or not JSON: exit 1', async () => {
    const missing = await cli(['sessions', 'put', 'u', 'github', '--file', join(scratch, 'none.json')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^tokenkeeper: cannot read .*none\.json: ENOENT/u);
    const bad = join(scratch, 'bad.json');
    await writeFile(bad, '{nope');
    expect((await cli(['sessions', 'put', 'u', 'github', '--file', bad])).stderr).toBe(
      `tokenkeeper: ${bad} is not valid JSON\n`,
    );
  });
});

describe('the package bin', () => {
  it('node bin/tokenkeeper.js runs the CLI and sets the exit code', async () => {
    const bin = fileURLToPath(new URL('../../bin/tokenkeeper.js', import.meta.url));
    const env = { ...process.env, PORT: port, TOKENKEEPER_DATA_DIR: keeper.dataDir, NO_COLOR: '1' };
    const run = promisify(execFile);
    const ok = await run(process.execPath, [bin, 'status', 'nobody'], { env });
    expect(ok.stdout).toBe('no sessions for user nobody\n');
    const failed = await run(process.execPath, [bin, 'sessions', 'show', 'nobody', 'github'], { env }).catch(
      (e: { code: number; stderr: string }) => e,
    );
    expect(failed).toMatchObject({
      code: 1,
      stderr: 'tokenkeeper: session_not_found: no session for this user and provider\n',
    });
  });
});
