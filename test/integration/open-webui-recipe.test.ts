import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listenOnLoopback } from '../../functions/local/embedded.js';
import { followToCallback, visit } from '../support/connect-flow.js';
import { type McpServer, startMcpServer } from '../support/mcp-server.js';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * docs/open-webui.md runs as written: its Python client (docs/open-webui/tokenkeeper_client.py),
 * in bearer mode against the real local stack, gets a token (200), returns None on 409, raises
 * TokenUnavailable with the Retry-After on 503, and keeps a tools listing alive through a 503.
 * Python: the venv npm test's first step makes (bin/test-prerequisites.ts: .venv-open-webui, Debian's
 * aiohttp, yarl and botocore), else /usr/bin/python3. Missing packages fail this test, naming the setup step: it never skips.
 */

const ROOT = join(import.meta.dirname, '..', '..');
const RECIPE = join(ROOT, 'docs', 'open-webui');
const VENV_PYTHON = join(ROOT, '.venv-open-webui', 'bin', 'python');
const PYTHON = existsSync(VENV_PYTHON) ? VENV_PYTHON : '/usr/bin/python3';
const SETUP =
  'install the recipe requirements: apt-get install -y python3-aiohttp python3-yarl python3-botocore ' +
  "(npm test's first step, bin/test-prerequisites.ts, does it, and makes the venv .venv-open-webui)";

let oauth: OAuthServer;
let keeper: TestStack;
let down: Server;
let mcp: McpServer;
const OPEN_WEBUI = 'http://127.0.0.1:9/';

beforeAll(async () => {
  mcp = await startMcpServer();
  oauth = await startOAuthServer({ accessTokenTtl: 3600, registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: oauth.issuer, introspect: (token) => oauth.introspect(token) });
  keeper = await startTestStack({ env: { TOKENKEEPER_ALLOWED_REDIRECTS: OPEN_WEBUI } });
  // A token endpoint in an outage: 503 to every grant.
  down = createServer((_req, res) => {
    res.writeHead(503, { 'content-type': 'text/plain', 'retry-after': '30' });
    res.end('maintenance');
  });
  const downPort = await listenOnLoopback(down);
  const put = async (providerId: string, body: unknown) =>
    expect((await keeper.call('PUT', `/v1/providers/${providerId}`, body)).status).toBe(201);
  await put('notion', {
    issuer: oauth.issuer,
    clientId: oauth.clients.basic.clientId,
    clientSecret: oauth.clients.basic.clientSecret,
  });
  await put('linear', { tokenEndpoint: `http://127.0.0.1:${downPort}/token`, clientId: 'linear' });
  await put('notes', { mcpServerUrl: mcp.url });
});

afterAll(async () => {
  await keeper?.stop();
  await oauth?.stop();
  await mcp?.stop();
  await new Promise((resolve) => down?.close(resolve));
});

function python(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      PYTHON,
      args,
      { cwd: RECIPE, env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? Number((err as { code?: number }).code ?? 1) : 0;
        resolve({ code, out: `${stdout}${stderr}` });
      },
    );
  });
}

describe('docs/open-webui.md recipe', () => {
  it('has its Python requirements (fails loudly, naming the setup step, when they are missing)', () => {
    let problem: string | undefined;
    try {
      execFileSync(PYTHON, ['-c', 'import aiohttp, yarl, botocore'], { stdio: 'pipe' });
    } catch (err) {
      problem = `${PYTHON} cannot import aiohttp, yarl, botocore: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
    }
    expect(problem, `${problem}\n→ ${SETUP}`).toBeUndefined();
  });

  it('token 200, 409 handled, 503 with Retry-After handled, tools listing survives a 503, a connection completed for its user only', async () => {
    const ok = 'owui-user@example.com';
    const dead = 'owui-dead: é';
    const outage = 'owui-outage 😀';
    // A live session; a session whose grant died (invalid_grant); a session whose provider is down.
    const login = (accountId: string) => oauth.login({ clientId: oauth.clients.basic.clientId, accountId });
    const putSession = async (userId: string, providerId: string, body: unknown) =>
      expect(
        (await keeper.call('PUT', `/v1/sessions/${encodeURIComponent(userId)}/${providerId}`, body)).status,
      ).toBe(201);
    await putSession(ok, 'notion', await login('ok'));
    await putSession(dead, 'notion', await login('dead'));
    oauth.proxy.setFault({ kind: 'oauth-error', status: 400, error: 'invalid_grant', times: 1 });
    const killed = await keeper.call(
      'GET',
      `/v1/sessions/${encodeURIComponent(dead)}/notion/token?force=true`,
    );
    expect(killed.status).toBe(409);
    await putSession(outage, 'linear', {
      access_token: 'at-outage',
      refresh_token: 'rt-outage',
      expires_in: 30,
    });

    // A connection started for Open WebUI, back at Open WebUI with status=pending: the recipe completes it.
    const pendingUser = 'owui-connecting@example.com';
    const started = await keeper.call(
      'POST',
      `/v1/sessions/${encodeURIComponent(pendingUser)}/notes/authorize`,
      {
        redirectUri: `${OPEN_WEBUI}?tool_server=notes`,
      },
    );
    expect(started.status, started.text).toBe(201);
    const callback = await followToCallback(
      (started.body as { authorizationUrl: string }).authorizationUrl,
      `${keeper.url}/oauth/callback/notes`,
      { loginHint: 'connecting' },
    );
    const back = new URL((await visit(callback)).location as string);
    expect(back.searchParams.get('status')).toBe('pending');
    const connection = back.searchParams.get('connection') as string;

    const run = await python(
      ['check_recipe.py', ok, dead, outage, 'notion', 'linear', pendingUser, 'notes', connection],
      {
        TOKENKEEPER_URL: keeper.url,
        TOKENKEEPER_API_KEY: keeper.apiKey,
      },
    );
    expect(run.out).not.toContain('FAIL');
    expect(run.out).toContain('ok    token 200');
    expect(run.out).toContain('ok    409 handled');
    expect(run.out).toMatch(/ok {4}503 with Retry-After handled: retry after [1-9]\d*s/u);
    expect(run.out).toContain('ok    tools listing survives a 503');
    expect(run.out).toContain('ok    authorize URL (PKCE S256)');
    expect(run.out).toContain('ok    completion for another user refused (None)');
    expect(run.out).toContain('ok    completion for its user: the session, no token');
    expect(run.out).toContain('ok    second completion refused (None)');
    expect((await keeper.call('GET', `/v1/sessions/${encodeURIComponent(pendingUser)}/notes`)).status).toBe(
      200,
    );
    expect(
      (await keeper.call('GET', `/v1/sessions/other-${encodeURIComponent(pendingUser)}/notes`)).status,
    ).toBe(404);
    expect(run.code, run.out).toBe(0);
    // No token in what the checker printed.
    expect(run.out).not.toContain('at-outage');
  });

  it('pins the versions Debian bookworm ships', async () => {
    const { readFile } = await import('node:fs/promises');
    const pins = (await readFile(join(RECIPE, 'requirements.txt'), 'utf8'))
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    expect(pins).toEqual(['aiohttp==3.8.4', 'yarl==1.8.2', 'botocore==1.29.27']);
    const installed = await python([
      '-c',
      'import aiohttp, yarl, botocore; print(aiohttp.__version__, yarl.__version__, botocore.__version__)',
    ]);
    expect(installed.out.trim(), SETUP).toBe('3.8.4 1.8.2 1.29.27');
  });
});
