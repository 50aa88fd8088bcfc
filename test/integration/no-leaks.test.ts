import { ScanCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * Threat: a read of the table, a log line, an error message or an API answer hands out a user's
 * tokens or our client secret. The keeper runs its real flows (login hand-over, sweeps, on-demand and
 * forced refreshes, transient and permanent failures, delete) against oidc-provider with every log
 * line captured, on an outside dynalite (TOKENKEEPER_DYNAMODB_ENDPOINT) whose raw items we scan.
 */

let oauth: OAuthServer;
let db: DynaliteHandle;
let keeper: TestStack;
const answers: { route: string; text: string }[] = [];
const consoleLines: string[] = [];
const restoreConsole: (() => void)[] = [];

async function call(method: string, path: string, body?: unknown) {
  const res = await keeper.call(method, path, body);
  answers.push({ route: `${method} ${path.replace(/\?.*/, '')}`, text: res.text });
  return res;
}

beforeAll(async () => {
  for (const level of ['log', 'info', 'warn', 'error', 'debug'] as const) {
    const original = console[level];
    console[level] = (...args: unknown[]) => {
      consoleLines.push(args.map(String).join(' '));
    };
    restoreConsole.push(() => {
      console[level] = original;
    });
  }
  oauth = await startOAuthServer({ accessTokenTtl: 300 });
  db = await startDynalite();
  keeper = await startTestStack({
    env: { TOKENKEEPER_DYNAMODB_ENDPOINT: db.endpoint, TOKENKEEPER_TABLE_NAME: db.tableName },
  });
});

afterAll(async () => {
  await keeper?.stop();
  await db?.stop();
  await oauth?.stop();
  for (const restore of restoreConsole) restore();
});

describe('no token or secret leaves through logs, errors, answers or the table', () => {
  it('runs the flows and finds no issued token or client secret anywhere but the token answer', async () => {
    const basic = oauth.clients.basic;
    const post = oauth.clients.post;
    expect(
      (
        await call('PUT', '/v1/providers/mcp', {
          issuer: oauth.issuer,
          clientId: basic.clientId,
          clientSecret: basic.clientSecret,
          resource: MCP_RESOURCE,
        })
      ).status,
    ).toBe(201);
    expect(
      (
        await call('PUT', '/v1/providers/mcp-post', {
          issuer: oauth.issuer,
          clientId: post.clientId,
          clientSecret: post.clientSecret,
          clientAuthMethod: 'client_secret_post',
        })
      ).status,
    ).toBe(201);
    await call('GET', '/v1/providers/mcp');

    const logins: string[] = [];
    const users = ['alice', 'bob', 'carol', 'dave'];
    const provOf = (i: number) => (i % 2 === 0 ? 'mcp' : 'mcp-post');
    for (const [i, userId] of users.entries()) {
      const providerId = i % 2 === 0 ? 'mcp' : 'mcp-post';
      const tokens = await oauth.login({
        clientId: providerId === 'mcp' ? basic.clientId : post.clientId,
        accountId: userId,
        resource: providerId === 'mcp' ? MCP_RESOURCE : null,
      });
      logins.push(tokens.access_token, tokens.refresh_token);
      expect((await call('PUT', `/v1/sessions/${userId}/${providerId}`, tokens)).status).toBe(201);
    }

    // Scheduled and on-demand refreshes, forced ones, metadata and listings.
    await keeper.sweep();
    const served: string[] = [];
    for (const [i, userId] of users.entries()) {
      const providerId = i % 2 === 0 ? 'mcp' : 'mcp-post';
      const res = await keeper.call('GET', `/v1/sessions/${userId}/${providerId}/token?force=true`);
      expect(res.status).toBe(200);
      served.push((res.body as { access_token: string }).access_token);
      await call('GET', `/v1/sessions/${userId}/${providerId}`);
      await call('GET', `/v1/sessions/${userId}`);
    }

    // A provider error whose description quotes back the refresh token it was given and our secret.
    const erin = await oauth.login({ clientId: basic.clientId, accountId: 'erin', resource: MCP_RESOURCE });
    logins.push(erin.access_token, erin.refresh_token);
    expect((await call('PUT', '/v1/sessions/erin/mcp', erin)).status).toBe(201);
    oauth.proxy.setFault({
      kind: 'status',
      status: 400,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        error: 'invalid_request',
        error_description: `refresh token ${erin.refresh_token} is not valid for client secret ${basic.clientSecret}`,
      }),
      times: 1,
    });
    const failing = await call('GET', '/v1/sessions/erin/mcp/token?force=true');
    expect(failing.status).toBe(503);
    const erinMeta = await call('GET', '/v1/sessions/erin/mcp');
    expect((erinMeta.body as { lastError: { description: string } }).lastError.description).toContain(
      '[redacted]',
    );

    // A dead grant (revoked at the provider) and a transient outage.
    const bobToken = (await keeper.call('GET', '/v1/sessions/bob/mcp-post/token')).body as {
      access_token: string;
    };
    await fetch(oauth.revocationEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        token: bobToken.access_token,
        client_id: post.clientId,
        client_secret: post.clientSecret,
      }),
    });
    expect((await call('GET', '/v1/sessions/bob/mcp-post/token?force=true')).status).toBe(409);
    await call('GET', '/v1/sessions/bob/mcp-post');
    oauth.proxy.setFault({ kind: 'status', status: 503 });
    expect((await call('GET', '/v1/sessions/dave/mcp-post/token?force=true')).status).toBe(503);
    oauth.proxy.setFault(null);

    // Errors thrown inside the core carry no secret either.
    const peer = keeper.peer();
    const messages: string[] = [];
    for (const key of [
      { userId: 'bob', providerId: 'mcp-post' },
      { userId: 'dave', providerId: 'mcp-post' },
      { userId: 'nobody', providerId: 'mcp' },
    ]) {
      await peer.tokens
        .getToken(key, { minValidity: 60, force: true })
        .catch((err: Error) => messages.push(err.message));
    }
    expect(messages).toHaveLength(3);
    expect((await call('DELETE', '/v1/sessions/carol/mcp')).status).toBe(204);

    const secrets = new Set<string>([
      ...oauth.proxy.issuedTokens(),
      ...logins,
      ...served,
      basic.clientSecret,
      post.clientSecret,
      keeper.apiKey,
    ]);
    expect(secrets.size).toBeGreaterThan(12);

    const logText = JSON.stringify(keeper.logs);
    const consoleText = consoleLines.join('\n');
    const keys = [
      ...users.map((userId, i) => ({ userId, providerId: provOf(i) })),
      { userId: 'erin', providerId: 'mcp' },
    ];
    const records = await Promise.all(
      keys.map((k) => keeper.stack.runtime.store.getSession(k, { consistent: true })),
    );
    const lastErrors = JSON.stringify(records.map((r) => r?.lastError ?? null));
    const scan = await db.client.send(new ScanCommand({ TableName: db.tableName }));
    // Binary attributes as their bytes (latin1 keeps every byte), so a plaintext inside would show.
    const rawTable = JSON.stringify(scan.Items, (_key, value) =>
      value instanceof Uint8Array ? Buffer.from(value).toString('latin1') : value,
    );
    expect(scan.Items?.length).toBeGreaterThanOrEqual(5);
    expect(lastErrors).toContain('invalid_grant');

    for (const secret of secrets) {
      expect(logText.includes(secret), 'a log line contains a token or secret').toBe(false);
      expect(consoleText.includes(secret), 'console output contains a token or secret').toBe(false);
      expect(lastErrors.includes(secret), 'lastError contains a token or secret').toBe(false);
      expect(rawTable.includes(secret), 'the raw table holds a token or secret in plaintext').toBe(false);
      for (const m of messages)
        expect(m.includes(secret), 'an error message contains a token or secret').toBe(false);
      for (const a of answers) {
        expect(a.text.includes(secret), `${a.route} answered a token or secret`).toBe(false);
      }
    }
    // The sealed values are there, in their binary envelopes (version 0x01, key id k1).
    const sealed = (scan.Items ?? []).flatMap((item) =>
      ['accessToken', 'refreshToken', 'clientSecret']
        .map((name) => item[name])
        .filter((v) => v !== undefined),
    );
    expect(sealed.length).toBeGreaterThanOrEqual(5);
    for (const value of sealed) {
      expect(value?.B?.subarray(0, 4)).toEqual(new Uint8Array([0x01, 2, 0x6b, 0x31]));
    }
  });
});
