import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApiHandler } from '../../functions/api/adapter.js';
import { loadConfig } from '../../functions/core/config.js';
import { generateKeyringJson, type Keyring, parseKeyring } from '../../functions/core/crypto/crypto.js';
import { createRuntime, type Runtime } from '../../functions/core/runtime.js';
import { type DynaliteHandle, makeDynamoClient, startDynalite } from '../support/dynalite.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';

/**
 * Threat: whoever can write the sessions table (a leaked IAM role, a reachable local emulator)
 * rewrites a provider's settings so that the keeper sends a refresh token and the client secret to
 * them. The attack as it works: a provider and a session stored through the API; one attribute
 * rewritten in the table with a raw DynamoDB client; the keeper restarted (a new runtime, nothing
 * cached); a forced refresh. The rewritten destination must receive nothing, the call answers 503
 * `provider_integrity`, the session is untouched, `ProviderIntegrityFailed` is counted, and a PUT of
 * the provider through the API restores it.
 */

let db: DynaliteHandle;
let oauth: OAuthServer;
let attacker: Attacker;
const keyring: Keyring = parseKeyring(generateKeyringJson());
const metrics: { name: string; value: number }[] = [];

/** A listener of the table writer's: answers discovery and token requests, and keeps every request. */
interface Attacker {
  url: string;
  requests: { path: string; authorization?: string; body: string }[];
  stop(): Promise<void>;
}

async function startAttacker(): Promise<Attacker> {
  const requests: Attacker['requests'] = [];
  const read = async (req: IncomingMessage) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    return body;
  };
  let url = '';
  const server: Server = createServer(async (req, res) => {
    requests.push({ path: req.url ?? '', authorization: req.headers.authorization, body: await read(req) });
    res.setHeader('content-type', 'application/json');
    if (req.url?.startsWith('/.well-known/')) {
      res.end(JSON.stringify({ issuer: url, token_endpoint: `${url}/token` }));
      return;
    }
    res.end(
      JSON.stringify({
        access_token: 'attacker-access-token',
        refresh_token: 'attacker-refresh-token',
        token_type: 'Bearer',
        expires_in: 3600,
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    requests,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A keeper process: its own runtime (caches, discovery, circuits) on the shared table and keyring. */
function keeper(dynamodb: DynamoDBClient = db.client): {
  runtime: Runtime;
  call: (method: string, path: string, body?: unknown) => Promise<Answer>;
} {
  const runtime = createRuntime({
    config: loadConfig({
      TOKENKEEPER_TABLE_NAME: db.tableName,
      TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
      // A 1-minute schedule: the 5-minute tokens are kept by the sweep, so every session is due.
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '60',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '600',
      TOKENKEEPER_SWEEP_BUDGET_SECONDS: '30',
      TOKENKEEPER_PUBLIC_URL: 'http://127.0.0.1:9',
    }),
    dynamodb,
    keyring: async () => keyring,
    metrics: { add: (name, _unit, value) => metrics.push({ name, value }) },
  });
  const api = createApiHandler(runtime);
  const call = async (method: string, path: string, body?: unknown): Promise<Answer> => {
    const [rawPath, rawQueryString = ''] = path.split('?') as [string, string?];
    const res = await api({
      version: '2.0',
      routeKey: '$default',
      rawPath,
      rawQueryString,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      isBase64Encoded: false,
      requestContext: { http: { method, path: rawPath } },
    } as never);
    const text = String(res.body ?? '');
    return { status: res.statusCode as number, body: text ? JSON.parse(text) : undefined, text };
  };
  return { runtime, call };
}

interface Answer {
  status: number;
  body: Record<string, unknown> | undefined;
  text: string;
}

async function rawItem(pk: string, sk: string): Promise<Record<string, unknown>> {
  const { Item } = await db.doc.send(
    new GetCommand({ TableName: db.tableName, Key: { pk, sk }, ConsistentRead: true }),
  );
  return Item as Record<string, unknown>;
}

/** The table writer's move: one attribute of the provider item, changed with a raw client. */
async function rewrite(providerId: string, attribute: string, value: unknown): Promise<void> {
  await db.doc.send(
    new UpdateCommand({
      TableName: db.tableName,
      Key: { pk: `PROVIDER#${providerId}`, sk: 'PROVIDER' },
      UpdateExpression: 'SET #a = :v',
      ExpressionAttributeNames: { '#a': attribute },
      ExpressionAttributeValues: { ':v': value },
    }),
  );
}

const basic = () => oauth.clients.basic;
let seq = 0;

/** A provider and a session stored through the API; returns their ids and the provider's body. */
async function setUp(provider: Record<string, unknown>) {
  const providerId = `victim-${++seq}`;
  const userId = `user-${seq}`;
  const first = keeper();
  expect((await first.call('PUT', `/v1/providers/${providerId}`, provider)).status).toBe(201);
  const login = await oauth.login({ clientId: basic().clientId, accountId: userId });
  expect((await first.call('PUT', `/v1/sessions/${userId}/${providerId}`, login)).status).toBe(201);
  return { providerId, userId, provider, login };
}

const byTokenEndpoint = (): Record<string, unknown> => ({
  tokenEndpoint: oauth.tokenEndpoint,
  clientId: basic().clientId,
  clientSecret: basic().clientSecret,
  clientAuthMethod: 'client_secret_basic',
  resource: MCP_RESOURCE,
});

const byIssuer = (): Record<string, unknown> => ({
  issuer: oauth.issuer,
  clientId: basic().clientId,
  clientSecret: basic().clientSecret,
  resource: MCP_RESOURCE,
});

beforeAll(async () => {
  db = await startDynalite();
  oauth = await startOAuthServer({ accessTokenTtl: 300 });
  attacker = await startAttacker();
});

afterAll(async () => {
  await attacker?.stop();
  await oauth?.stop();
  await db?.stop();
});

beforeEach(() => {
  metrics.length = 0;
  attacker.requests.length = 0;
});

describe('a writer of the table cannot redirect a refresh token', () => {
  const attacks: [string, () => Record<string, unknown>, () => string][] = [
    ['tokenEndpoint', byTokenEndpoint, () => `${attacker.url}/token`],
    ['issuer (discovered endpoints)', byIssuer, () => attacker.url],
    ['clientId', byTokenEndpoint, () => 'attacker-client'],
    ['resource', byTokenEndpoint, () => 'https://attacker.example/'],
    ['clientAuthMethod', byTokenEndpoint, () => 'client_secret_post'],
  ];
  it.each(attacks)(
    '%s rewritten in the table: nothing is sent anywhere, 503 provider_integrity, session untouched, PUT restores',
    async (label, body, value) => {
      const { providerId, userId, provider, login } = await setUp(body());
      const attribute = label.split(' ')[0] as string;
      await rewrite(providerId, attribute, value());
      const sessionBefore = await rawItem(`USER#${userId}`, `SESSION#${providerId}`);
      // Requests at the honest token endpoint that carry this session's refresh token.
      const honest = () => oauth.proxy.requests.filter((r) => r.refreshToken === login.refresh_token).length;

      // The keeper restarts: a new runtime, nothing cached from the write.
      const restarted = keeper();
      const forced = await restarted.call('GET', `/v1/sessions/${userId}/${providerId}/token?force=true`);

      expect(attacker.requests).toEqual([]);
      expect(honest()).toBe(0);
      expect(forced.status).toBe(503);
      expect(forced.body?.error).toBe('provider_integrity');
      expect(forced.text).not.toContain(login.refresh_token);
      expect(forced.text).not.toContain(basic().clientSecret);
      expect(metrics.filter((m) => m.name === 'ProviderIntegrityFailed').length).toBeGreaterThanOrEqual(1);
      // The session is exactly as it was: not ended, no failure counted, no lease left.
      expect(await rawItem(`USER#${userId}`, `SESSION#${providerId}`)).toEqual(sessionBefore);

      // The sweep sends nothing either, and moves on.
      const swept = await restarted.runtime.sweeper.sweep();
      expect(swept.skipped).toBeGreaterThanOrEqual(1);
      expect(attacker.requests).toEqual([]);
      expect(honest()).toBe(0);
      expect(await rawItem(`USER#${userId}`, `SESSION#${providerId}`)).toEqual(sessionBefore);

      // The provider's health names it.
      const shown = await restarted.call('GET', `/v1/providers/${providerId}`);
      expect(shown.status).toBe(200);
      expect((shown.body as { health: { integrity: unknown } }).health.integrity).toMatchObject({
        error: 'provider_integrity',
      });

      // A PUT through the API restores it: the next refresh succeeds at the honest endpoint.
      expect((await restarted.call('PUT', `/v1/providers/${providerId}`, provider)).status).toBe(200);
      const healed = await keeper().call('GET', `/v1/sessions/${userId}/${providerId}/token?force=true`);
      expect(healed.status).toBe(200);
      expect(healed.body?.access_token).not.toBe(login.access_token);
      expect(healed.body?.access_token).not.toBe('attacker-access-token');
      expect(honest()).toBe(1);
      expect(attacker.requests).toEqual([]);
      const restored = await restarted.call('GET', `/v1/providers/${providerId}`);
      expect((restored.body as { health: { integrity: unknown } }).health.integrity).toBeNull();
    },
  );

  it("one provider's item copied over another's does not verify: the copy sends nothing", async () => {
    const victim = await setUp(byTokenEndpoint());
    // The table writer registers a provider of its own through any means that ends in a valid
    // item (here: the API) pointing at its endpoint, then copies that item over the victim's key.
    const own = keeper();
    // A public client: no sealed secret whose binding to its item would give the copy away.
    await own.call('PUT', '/v1/providers/attacker-own', {
      tokenEndpoint: `${attacker.url}/token`,
      clientId: basic().clientId,
    });
    const item = await rawItem('PROVIDER#attacker-own', 'PROVIDER');
    for (const [attribute, value] of Object.entries(item)) {
      if (attribute === 'pk' || attribute === 'sk' || attribute === 'providerId') continue;
      await rewrite(victim.providerId, attribute, value);
    }

    const forced = await keeper().call(
      'GET',
      `/v1/sessions/${victim.userId}/${victim.providerId}/token?force=true`,
    );

    expect(forced.status).toBe(503);
    expect(forced.body?.error).toBe('provider_integrity');
    expect(attacker.requests).toEqual([]);
    // Restored, so that later sweeps in this file meet only their own altered provider.
    expect((await own.call('PUT', `/v1/providers/${victim.providerId}`, victim.provider)).status).toBe(200);
  });

  it('the sweep meets many sessions of an altered provider: reads its item once, sends nothing, counts each and moves on', async () => {
    const providerId = `victim-${++seq}`;
    const first = keeper();
    expect((await first.call('PUT', `/v1/providers/${providerId}`, byTokenEndpoint())).status).toBe(201);
    const users = Array.from({ length: 20 }, (_, i) => `swept-${seq}-${i}`);
    for (const [i, userId] of users.entries()) {
      const token = { access_token: `at-${i}`, refresh_token: `rt-${i}`, expires_in: 300 };
      expect((await first.call('PUT', `/v1/sessions/${userId}/${providerId}`, token)).status).toBe(201);
    }
    await rewrite(providerId, 'tokenEndpoint', `${attacker.url}/token`);
    // A keeper whose DynamoDB client counts the full reads of this provider's item (the circuit's
    // own projected read of its state is cached separately).
    const counted = makeDynamoClient(db.endpoint);
    let providerReads = 0;
    counted.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { Key?: unknown; ProjectionExpression?: string };
        const ofProvider = JSON.stringify(input.Key ?? {}).includes(`PROVIDER#${providerId}`);
        if (context.commandName === 'GetItemCommand' && ofProvider && !input.ProjectionExpression)
          providerReads++;
        return next(args);
      },
      { step: 'initialize', name: 'countProviderReads' },
    );

    const summary = await keeper(counted).runtime.sweeper.sweep();
    counted.destroy();

    expect(attacker.requests).toEqual([]);
    expect(summary.skipped).toBeGreaterThanOrEqual(users.length);
    expect(providerReads).toBe(1);
    expect(metrics.filter((m) => m.name === 'ProviderIntegrityFailed')).toHaveLength(users.length);
  });

  it('the connect flow: authorize is refused, and a callback started before the rewrite redeems nothing', async () => {
    const { providerId, userId } = await setUp(byIssuer());
    const { runtime } = keeper();
    const started = await runtime.connect.authorize({ userId, providerId }, {});
    const state = new URL(started.authorizationUrl).searchParams.get('state') as string;
    await rewrite(providerId, 'issuer', attacker.url);

    const restarted = keeper();
    const refused = await restarted.call('POST', `/v1/sessions/${userId}/${providerId}/authorize`, {});
    const outcome = await restarted.runtime.connect.callback(providerId, {
      state,
      code: 'a-code',
      iss: attacker.url,
    });

    expect(refused.status).toBe(503);
    expect(refused.body?.error).toBe('provider_integrity');
    expect(outcome).toMatchObject({ ok: false, error: 'provider_integrity' });
    expect(attacker.requests).toEqual([]);
    expect(metrics.filter((m) => m.name === 'ProviderIntegrityFailed')).toHaveLength(2);
  });
});
