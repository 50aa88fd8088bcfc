import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiHandler } from '../../functions/api/adapter.js';
import { loadConfig } from '../../functions/core/config.js';
import { type Keyring, parseKeyring } from '../../functions/core/crypto/crypto.js';
import { createRuntime, type Runtime } from '../../functions/core/runtime.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';

/**
 * Threat: a leaked or retired key keeps protecting live tokens forever, or a rotation loses sessions.
 * Rotation adds a key and makes it current: new writes use it, old values stay readable, and each
 * session moves to the new key when it is next rewritten. A value whose key is gone fails clearly,
 * keeps the session, and counts an alarmable metric.
 */

const K1 = 'first-key-material-0123456789abcdefghijklmnop';
const K2 = 'second-key-material-0123456789abcdefghijklmno';
const ringV1 = parseKeyring(JSON.stringify({ current: 'k1', k1: K1 }));
const ringV2 = parseKeyring(JSON.stringify({ current: 'k2', k1: K1, k2: K2 }));
const ringOnlyK2 = parseKeyring(JSON.stringify({ current: 'k2', k2: K2 }));

let db: DynaliteHandle;
let oauth: OAuthServer;
const metrics: { name: string; value: number }[] = [];

function runtimeWith(ring: Keyring): Runtime {
  return createRuntime({
    config: loadConfig({ TOKENKEEPER_TABLE_NAME: db.tableName, TOKENKEEPER_ALLOW_INSECURE_HTTP: '1' }),
    dynamodb: db.client,
    keyring: async () => ring,
    metrics: { add: (name, _unit, value) => metrics.push({ name, value }) },
  });
}

async function rawItem(userId: string, providerId: string): Promise<Record<string, unknown>> {
  const { Item } = await db.doc.send(
    new GetCommand({ TableName: db.tableName, Key: { pk: `USER#${userId}`, sk: `SESSION#${providerId}` } }),
  );
  return Item as Record<string, unknown>;
}

async function rawProvider(providerId: string): Promise<Record<string, unknown>> {
  const { Item } = await db.doc.send(
    new GetCommand({ TableName: db.tableName, Key: { pk: `PROVIDER#${providerId}`, sk: 'PROVIDER' } }),
  );
  return Item as Record<string, unknown>;
}

/** The key id of a binary envelope (0x01 | key-id length | key id | …); undefined for anything else. */
const keyIdOf = (sealed: unknown) =>
  sealed instanceof Uint8Array && sealed[0] === 0x01
    ? Buffer.from(sealed.subarray(2, 2 + (sealed[1] as number))).toString('latin1')
    : undefined;

beforeAll(async () => {
  db = await startDynalite();
  oauth = await startOAuthServer({ accessTokenTtl: 300 });
  await runtimeWith(ringV1).providers.put('mcp', {
    issuer: oauth.issuer,
    clientId: oauth.clients.basic.clientId,
    clientSecret: oauth.clients.basic.clientSecret,
    resource: MCP_RESOURCE,
  });
});

afterAll(async () => {
  await db?.stop();
  await oauth?.stop();
});

describe('key rotation', () => {
  it('new writes use the new current key, old values stay readable, refreshed sessions move to it', async () => {
    const v1 = runtimeWith(ringV1);
    const login = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: 'rot-1' });
    await v1.sessions.put({ userId: 'rot-1', providerId: 'mcp' }, login);
    const before = await rawItem('rot-1', 'mcp');
    expect(keyIdOf(before.accessToken)).toBe('k1');
    expect(keyIdOf(before.refreshToken)).toBe('k1');

    const v2 = runtimeWith(ringV2);
    // Old values stay readable under the rotated ring.
    const served = await v2.tokens.getToken(
      { userId: 'rot-1', providerId: 'mcp' },
      { minValidity: 60, force: false },
    );
    expect(served.access_token).toBe(login.access_token);
    // A refresh rewrites both tokens under k2 — including the refresh token kept as it was.
    const refreshed = await v2.tokens.getToken(
      { userId: 'rot-1', providerId: 'mcp' },
      { minValidity: 60, force: true },
    );
    expect(refreshed.access_token).not.toBe(login.access_token);
    const after = await rawItem('rot-1', 'mcp');
    expect(keyIdOf(after.accessToken)).toBe('k2');
    expect(keyIdOf(after.refreshToken)).toBe('k2');
    // The provider's client secret written after rotation is under k2 as well.
    await v2.providers.put('mcp-2', {
      issuer: oauth.issuer,
      clientId: oauth.clients.basic.clientId,
      clientSecret: oauth.clients.basic.clientSecret,
    });
    const { Item } = await db.doc.send(
      new GetCommand({ TableName: db.tableName, Key: { pk: 'PROVIDER#mcp-2', sk: 'PROVIDER' } }),
    );
    expect(keyIdOf(Item?.clientSecret)).toBe('k2');
    // The provider stored under k1 was used under the rotated ring above (its MAC names k1). The
    // PUT that re-seals its client secret under k2 MACs its settings under k2 as well.
    const body = {
      issuer: oauth.issuer,
      clientId: oauth.clients.basic.clientId,
      clientSecret: oauth.clients.basic.clientSecret,
    };
    await v1.providers.put('mcp-3', body);
    expect(keyIdOf((await rawProvider('mcp-3')).settingsMac)).toBe('k1');
    await v2.providers.put('mcp-3', body);
    const resealed = await rawProvider('mcp-3');
    expect(keyIdOf(resealed.clientSecret)).toBe('k2');
    expect(keyIdOf(resealed.settingsMac)).toBe('k2');
    // k1 is no longer needed for it: a ring without k1 verifies and opens it.
    const withoutK1 = runtimeWith(ringOnlyK2);
    expect((await withoutK1.store.getProvider('mcp-3'))?.clientSecret).toBe(body.clientSecret);
  });

  it('a value whose key is gone: a clear 503 key_unavailable, the session kept, KeyUnavailable counted', async () => {
    const v1 = runtimeWith(ringV1);
    const login = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: 'rot-2' });
    await v1.sessions.put({ userId: 'rot-2', providerId: 'mcp' }, { ...login, expires_in: 30 });

    // k1 removed from the ring too early: the session can neither be served nor refreshed.
    const broken = runtimeWith(ringOnlyK2);
    const api = createApiHandler(broken);
    const event = (rawPath: string) =>
      ({
        version: '2.0',
        routeKey: '$default',
        rawPath,
        rawQueryString: '',
        headers: {},
        isBase64Encoded: false,
        requestContext: { http: { method: 'GET', path: rawPath } },
      }) as never;
    metrics.length = 0;
    const res = await api(event('/v1/sessions/rot-2/mcp/token'));
    expect(res.statusCode).toBe(503);
    expect(JSON.parse(String(res.body))).toMatchObject({ error: 'key_unavailable' });
    expect(String(res.body)).not.toContain(login.refresh_token);
    expect(metrics.filter((m) => m.name === 'KeyUnavailable').length).toBeGreaterThanOrEqual(1);
    // The session is kept, still active, with the failure on record; metadata is still readable.
    const meta = await broken.sessions.get({ userId: 'rot-2', providerId: 'mcp' });
    expect(meta.status).toBe('active');
    expect(meta.lastError?.code).toBe('key_unavailable');
    // Putting the key back heals it.
    const healed = runtimeWith(ringV2);
    const record = await healed.store.getSession(
      { userId: 'rot-2', providerId: 'mcp' },
      { consistent: true },
    );
    expect(record).toBeDefined();
    expect((await healed.store.reveal(record as NonNullable<typeof record>)).refreshToken).toBe(
      login.refresh_token,
    );
  });
});

describe('key missing on the hot path', () => {
  it('serving a fresh token whose key is gone answers key_unavailable and counts KeyUnavailable', async () => {
    const v1 = runtimeWith(ringV1);
    const login = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: 'rot-3' });
    await v1.sessions.put({ userId: 'rot-3', providerId: 'mcp' }, login);
    const broken = runtimeWith(ringOnlyK2);
    metrics.length = 0;
    await expect(
      broken.tokens.getToken({ userId: 'rot-3', providerId: 'mcp' }, { minValidity: 60, force: false }),
    ).rejects.toMatchObject({ code: 'key_unavailable' });
    expect(metrics.filter((m) => m.name === 'KeyUnavailable')).toHaveLength(1);
    expect((await broken.sessions.get({ userId: 'rot-3', providerId: 'mcp' })).status).toBe('active');
  });
});
