import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { followToCallback, pendingItems, visit } from '../support/connect-flow.js';
import { eventsFor, SkewedClock } from '../support/keeper-flows.js';
import { type McpServer, startMcpServer } from '../support/mcp-server.js';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * A connection belongs to the application's user, not to whoever's browser finished it. With a
 * `redirectUri`, the callback keeps the tokens as a pending connection and sends the browser back to
 * the application with its id only; the application completes it for the user it is serving, and
 * only the user named at /authorize can have it. Real parts: oidc-provider with DCR behind an MCP
 * server, the local stack on dynalite.
 */

const APP = 'http://127.0.0.1:9/app/';
const PROVIDER = 'mcp';

let mcp: McpServer;
let oauth: OAuthServer;
let keeper: TestStack;
const clock = new SkewedClock();
let seq = 0;

beforeAll(async () => {
  mcp = await startMcpServer();
  oauth = await startOAuthServer({ registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: oauth.issuer, introspect: (token) => oauth.introspect(token) });
  keeper = await startTestStack({ clock, env: { TOKENKEEPER_ALLOWED_REDIRECTS: APP } });
  const put = await keeper.call('PUT', `/v1/providers/${PROVIDER}`, { mcpServerUrl: mcp.url });
  if (put.status !== 201) throw new Error(`PUT provider answered ${put.status}: ${put.text}`);
}, 60_000);

afterAll(async () => {
  await keeper?.stop();
  await oauth?.stop();
  await mcp?.stop();
});

const user = (name: string) => `${name}-${++seq}`;

/** The application asks for an authorization URL for `userId`, coming back to itself. */
async function appAuthorize(userId: string): Promise<string> {
  const res = await keeper.call('POST', `/v1/sessions/${userId}/${PROVIDER}/authorize`, {
    redirectUri: `${APP}connected`,
  });
  expect(res.status, res.text).toBe(201);
  return (res.body as { authorizationUrl: string }).authorizationUrl;
}

/** Whoever's browser opens the URL signs in as `account` at the provider; the keeper sends it back to the app. */
async function finishInBrowser(authorizationUrl: string, account: string) {
  const callback = await followToCallback(authorizationUrl, `${keeper.url}/oauth/callback/`, {
    loginHint: account,
  });
  const answer = await visit(callback);
  expect(answer.status, answer.text).toBe(303);
  const location = new URL(answer.location as string);
  return { callback, location, connection: location.searchParams.get('connection') as string };
}

/** The application completes a connection for the user it is serving. */
const complete = (userId: string, connection: string, providerId = PROVIDER) =>
  keeper.call('POST', `/v1/sessions/${userId}/${providerId}/connections/${connection}`);

const sessionStatus = async (userId: string) =>
  (await keeper.call('GET', `/v1/sessions/${userId}/${PROVIDER}`)).status;
const tokenStatus = async (userId: string) =>
  (await keeper.call('GET', `/v1/sessions/${userId}/${PROVIDER}/token`)).status;

function expectNotFound(res: Awaited<ReturnType<typeof complete>>) {
  expect(res.status, res.text).toBe(404);
  expect(res.body).toMatchObject({ error: 'connection_not_found' });
}

const pendingConnections = () => pendingItems(keeper, 'CONNECTION#');

describe('an application’s connection completes only in the application, for the user it was started for', () => {
  it('the callback stores nothing and sends back only status, connection and providerId; the user’s completion stores it and fires SessionConnected then', async () => {
    const alice = user('alice');
    const key = { userId: alice, providerId: PROVIDER };
    const { callback, location, connection } = await finishInBrowser(await appAuthorize(alice), alice);
    expect(`${location.origin}${location.pathname}`).toBe(`${APP}connected`);
    expect([...location.searchParams.keys()].sort()).toEqual(['connection', 'providerId', 'status']);
    expect(location.searchParams.get('status')).toBe('pending');
    expect(location.searchParams.get('providerId')).toBe(PROVIDER);
    expect(Buffer.from(connection, 'base64url').length).toBeGreaterThanOrEqual(16);
    for (const secret of [callback.searchParams.get('code'), callback.searchParams.get('state'), alice]) {
      expect(location.href).not.toContain(secret);
    }
    // Until the application completes it, nothing is stored for the user, and nothing is announced.
    expect(await sessionStatus(alice)).toBe(404);
    expect(await tokenStatus(alice)).toBe(404);
    expect(eventsFor(keeper.logs, 'SessionConnected', key)).toEqual([]);

    const done = await complete(alice, connection);
    expect(done.status, done.text).toBe(200);
    expect(done.body).toMatchObject({
      userId: alice,
      providerId: PROVIDER,
      status: 'active',
      refreshable: true,
    });
    expect(done.text).not.toMatch(/access_token|refresh_token/u);
    expect(eventsFor(keeper.logs, 'SessionConnected', key)).toHaveLength(1);
    const token = await keeper.call('GET', `/v1/sessions/${alice}/${PROVIDER}/token`);
    expect(token.status).toBe(200);
    expect((await mcp.call((token.body as { access_token: string }).access_token)).status).toBe(200);
  }, 30_000);

  it('completion by another user, or for another provider: 404 connection_not_found, nothing stored, and the right user can still complete', async () => {
    const alice = user('alice');
    const mallory = user('mallory');
    const { connection } = await finishInBrowser(await appAuthorize(alice), alice);
    const pending = await pendingConnections();
    expectNotFound(await complete(mallory, connection));
    expectNotFound(await complete(alice, connection, 'other-provider'));
    expect(await sessionStatus(mallory)).toBe(404);
    expect(await sessionStatus(alice)).toBe(404);
    expect(await pendingConnections()).toBe(pending);
    expect((await complete(alice, connection)).status).toBe(200);
    expect(await sessionStatus(mallory)).toBe(404);
  }, 30_000);

  it('victim into attacker’s session: the attacker’s URL finished in the victim’s browser stores nothing for anyone', async () => {
    const attacker = user('attacker');
    const victim = user('victim');
    // The attacker, a user of the app, gets a URL for themself and sends it to the victim, who signs in.
    const { connection } = await finishInBrowser(await appAuthorize(attacker), victim);
    expect(await sessionStatus(attacker)).toBe(404);
    expect(await sessionStatus(victim)).toBe(404);
    // Back in the app, the victim's browser is the victim's session: the app completes for the victim.
    expectNotFound(await complete(victim, connection));
    expect(await sessionStatus(attacker)).toBe(404);
    expect(await sessionStatus(victim)).toBe(404);
    expect(await tokenStatus(attacker)).toBe(404);
  }, 30_000);

  it('attacker into victim’s session: the victim’s unused URL finished by the attacker stores nothing for anyone', async () => {
    const attacker = user('attacker');
    const victim = user('victim');
    const { connection } = await finishInBrowser(await appAuthorize(victim), attacker);
    expect(await sessionStatus(victim)).toBe(404);
    // The attacker's browser lands in the app as the attacker: the app completes for the attacker.
    expectNotFound(await complete(attacker, connection));
    expect(await sessionStatus(victim)).toBe(404);
    expect(await sessionStatus(attacker)).toBe(404);
  }, 30_000);

  it('an id completes at most once: the second completion is 404, and two at once give one 200', async () => {
    const alice = user('alice');
    const first = await finishInBrowser(await appAuthorize(alice), alice);
    expect((await complete(alice, first.connection)).status).toBe(200);
    expectNotFound(await complete(alice, first.connection));

    const bob = user('bob');
    const second = await finishInBrowser(await appAuthorize(bob), bob);
    const both = await Promise.all([complete(bob, second.connection), complete(bob, second.connection)]);
    expect(both.map((r) => r.status).sort()).toEqual([200, 404]);
    expect(eventsFor(keeper.logs, 'SessionConnected', { userId: bob, providerId: PROVIDER })).toHaveLength(1);
  }, 30_000);

  it('an expired connection (over 10 minutes) is 404, and nothing is stored', async () => {
    const alice = user('alice');
    const { connection } = await finishInBrowser(await appAuthorize(alice), alice);
    clock.advance(601_000);
    expectNotFound(await complete(alice, connection));
    expect(await sessionStatus(alice)).toBe(404);
  }, 30_000);

  it('an id the keeper never issued, or not shaped like one: 404', async () => {
    const alice = user('alice');
    expectNotFound(await complete(alice, 'A'.repeat(43)));
    expectNotFound(await complete(alice, 'not-an-id'));
  });

  it('a reconnect leaves the old session as it was until the application completes it', async () => {
    const alice = user('alice');
    const key = { userId: alice, providerId: PROVIDER };
    const first = await finishInBrowser(await appAuthorize(alice), alice);
    expect((await complete(alice, first.connection)).status).toBe(200);
    const before = await keeper.call('GET', `/v1/sessions/${alice}/${PROVIDER}`);
    const oldToken = (await keeper.call('GET', `/v1/sessions/${alice}/${PROVIDER}/token`)).body as {
      access_token: string;
    };
    const version = (await keeper.stack.runtime.store.getSession(key, { consistent: true }))?.version;

    const again = await finishInBrowser(await appAuthorize(alice), alice);
    expect((await keeper.call('GET', `/v1/sessions/${alice}/${PROVIDER}`)).body).toEqual(before.body);
    expect((await keeper.stack.runtime.store.getSession(key, { consistent: true }))?.version).toBe(version);
    const still = (await keeper.call('GET', `/v1/sessions/${alice}/${PROVIDER}/token`)).body as {
      access_token: string;
    };
    expect(still.access_token).toBe(oldToken.access_token);
    expect(eventsFor(keeper.logs, 'SessionConnected', key)).toHaveLength(1);

    expect((await complete(alice, again.connection)).status).toBe(200);
    const replaced = (await keeper.call('GET', `/v1/sessions/${alice}/${PROVIDER}/token`)).body as {
      access_token: string;
    };
    expect(replaced.access_token).not.toBe(oldToken.access_token);
    expect(eventsFor(keeper.logs, 'SessionConnected', key)).toHaveLength(2);
  }, 30_000);
});
