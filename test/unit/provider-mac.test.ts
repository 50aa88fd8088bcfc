import { GetCommand, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createFieldCipher, parseKeyring, textEnvelope } from '../../functions/core/crypto/crypto.js';
import { createAuthenticator } from '../../functions/core/crypto/mac.js';
import type { ProviderConfig } from '../../functions/core/model.js';
import { PROVIDER_MAC_FIELDS, providerMacMessage } from '../../functions/core/store/provider-mac.js';
import { TABLE } from '../../functions/core/store/table.js';
import { addProvider, createCoreFixture, uniqueId } from '../support/core-fixture.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

/**
 * The MAC over a provider's settings (functions/core/store/provider-mac.ts, functions/core/crypto/
 * mac.ts): its canonical encoding, its key, its binding to the provider id, and rotation.
 */

const SECRET_1 = `${'a'.repeat(16)}first-secret-0123456789`;
const SECRET_2 = `${'b'.repeat(16)}second-secret-987654321`;
const ringV1 = parseKeyring(JSON.stringify({ current: 'k1', k1: SECRET_1 }));
const ringV2 = parseKeyring(JSON.stringify({ current: 'k2', k1: SECRET_1, k2: SECRET_2 }));
const ringOnlyK2 = parseKeyring(JSON.stringify({ current: 'k2', k2: SECRET_2 }));

type Settings = Parameters<typeof providerMacMessage>[1];
const settings = (over: Partial<Settings> = {}): Settings => ({
  tokenEndpoint: 'https://as.example/token',
  clientId: 'client',
  clientAuthMethod: 'client_secret_basic',
  resource: 'https://mcp.example/',
  updatedAt: 1_700_000_000_000,
  ...over,
});
const message = (over: Partial<Settings> = {}, providerId = 'p', secret?: unknown) =>
  providerMacMessage(providerId, settings(over), secret).toString('hex');

/** A value of each covered field other than what settings() holds. */
const OTHER: { [K in (typeof PROVIDER_MAC_FIELDS)[number]]-?: ProviderConfig[K] } = {
  issuer: 'https://evil.example',
  tokenEndpoint: 'https://evil.example/token',
  revocationEndpoint: 'https://evil.example/revoke',
  authorizationEndpoint: 'https://evil.example/authorize',
  mcpServerUrl: 'https://evil.example/mcp',
  clientId: 'other-client',
  clientAuthMethod: 'client_secret_post',
  clientSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tokenkeeper/x',
  resource: 'https://evil.example/',
  scope: 'admin',
  registration: 'dynamic',
  scopesSupported: ['admin'],
  issParameterSupported: true,
  refreshPolicy: 'keepAlive',
  refreshTokenIdleSeconds: 600,
  maxConcurrentRefreshes: 1,
  updatedAt: 1,
};

describe('the canonical encoding of provider settings', () => {
  it.each(PROVIDER_MAC_FIELDS)('a changed %s changes the message', (field) => {
    expect(message({ [field]: OTHER[field] })).not.toBe(message());
  });

  it('binds the provider id: the same settings under another id encode differently', () => {
    expect(message({}, 'a')).not.toBe(message({}, 'b'));
  });

  it('is injective where a naive join is not: absent, empty, moved boundaries, types', () => {
    const seen = new Set([
      message({ scope: undefined }),
      message({ scope: '' }),
      message({ scope: 'a', resource: 'bc' }),
      message({ scope: 'ab', resource: 'c' }),
      message({ scopesSupported: ['a b'] }),
      message({ scopesSupported: ['a', 'b'] }),
      message({ scopesSupported: [] }),
      message({ maxConcurrentRefreshes: 10 }),
      message({ maxConcurrentRefreshes: 1, refreshTokenIdleSeconds: 0 }),
      message({ issParameterSupported: true }),
      message({}, 'p\u0000', undefined),
      message({}, 'p', 'not an envelope'),
    ]);
    expect(seen.size).toBe(12);
  });

  it('binds the sealed client secret, the same in its binary and its text envelope', async () => {
    const cipher = createFieldCipher(async () => ringV1);
    const sealed = await cipher.encrypt('secret', 'aad');
    const other = await cipher.encrypt('secret', 'aad');
    expect(message({}, 'p', sealed)).not.toBe(message({}, 'p'));
    expect(message({}, 'p', sealed)).not.toBe(message({}, 'p', other));
    expect(message({}, 'p', textEnvelope(sealed))).toBe(message({}, 'p', sealed));
  });
});

describe('the provider MAC', () => {
  const bytes = Buffer.from('settings');

  it('uses a key of its own, derived from the keyring secret, never the encryption key', () => {
    const mac = ringV1.macKeys.get('k1') as Buffer;
    expect(mac).toHaveLength(32);
    expect(mac.equals(ringV1.keys.get('k1') as Buffer)).toBe(false);
    expect(mac.equals(ringV2.macKeys.get('k2') as Buffer)).toBe(false);
    // Derived, not random: the same secret gives the same key in another process.
    expect(parseKeyring(JSON.stringify({ current: 'k1', k1: SECRET_1 })).macKeys.get('k1')).toEqual(mac);
  });

  it('verifies its own tag and names the key; refuses a changed message, a changed tag, none, junk', async () => {
    const mac = createAuthenticator(async () => ringV1);
    const tag = await mac.sign(bytes);
    expect(await mac.verify(bytes, tag)).toEqual({ ok: true, keyId: 'k1' });
    expect(await mac.verify(Buffer.from('settingz'), tag)).toMatchObject({ ok: false, reason: 'mismatch' });
    const flipped = Uint8Array.from(tag);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
    expect(await mac.verify(bytes, flipped)).toMatchObject({ ok: false, reason: 'mismatch' });
    expect(await mac.verify(bytes, undefined)).toMatchObject({ ok: false, reason: 'missing' });
    expect(await mac.verify(bytes, 'tag')).toMatchObject({ ok: false, reason: 'malformed' });
    expect(await mac.verify(bytes, tag.subarray(0, tag.length - 1))).toMatchObject({
      ok: false,
      reason: 'malformed',
    });
  });

  it('rotation: a tag under k1 verifies while k1 is kept, new tags are under k2, without k1 it cannot be checked', async () => {
    const old = await createAuthenticator(async () => ringV1).sign(bytes);
    const rotated = createAuthenticator(async () => ringV2);
    expect(await rotated.verify(bytes, old)).toEqual({ ok: true, keyId: 'k1' });
    const fresh = await rotated.sign(bytes);
    expect(await rotated.verify(bytes, fresh)).toEqual({ ok: true, keyId: 'k2' });
    const k1Gone = createAuthenticator(async () => ringOnlyK2);
    expect(await k1Gone.verify(bytes, old)).toEqual({ ok: false, reason: 'unknown_key', keyId: 'k1' });
    expect(await k1Gone.verify(bytes, fresh)).toEqual({ ok: true, keyId: 'k2' });
  });
});

describe('provider items in the table', () => {
  let handle: DynaliteHandle;
  beforeAll(async () => {
    handle = await startDynalite();
  });
  afterAll(() => handle?.stop());

  const providerKey = (providerId: string) => ({
    [TABLE.partitionKey]: `PROVIDER#${providerId}`,
    [TABLE.sortKey]: 'PROVIDER',
  });
  const set = (tableName: string, providerId: string, attribute: string, value: unknown) =>
    handle.doc.send(
      new UpdateCommand({
        TableName: tableName,
        Key: providerKey(providerId),
        UpdateExpression: value === undefined ? 'REMOVE #a' : 'SET #a = :v',
        ExpressionAttributeNames: { '#a': attribute },
        ExpressionAttributeValues: value === undefined ? undefined : { ':v': value },
      }),
    );
  const raw = async (tableName: string, providerId: string) =>
    (
      await handle.doc.send(
        new GetCommand({
          TableName: tableName,
          Key: providerKey(providerId),
        }),
      )
    ).Item as Record<string, unknown>;

  it("one provider's settings and MAC copied onto another's item do not verify, and its secret is not opened", async () => {
    const fx = createCoreFixture(handle);
    const a = await addProvider(fx);
    const b = await addProvider(fx);
    await fx.runtime.providers.put(a, { tokenEndpoint: 'https://evil.example/token', clientId: 'tk-client' });
    const itemA = await raw(fx.config.tableName, a);
    for (const attribute of ['tokenEndpoint', 'clientId', 'clientAuthMethod', 'settingsMac', 'updatedAt']) {
      await set(fx.config.tableName, b, attribute, itemA[attribute]);
    }
    for (const attribute of ['clientSecret', 'resource'])
      await set(fx.config.tableName, b, attribute, undefined);
    const { cipher } = fx.runtime.store as unknown as { cipher: { decrypt: () => Promise<string> } };
    const decrypt = vi.spyOn(cipher, 'decrypt');

    await expect(fx.runtime.store.getProvider(b)).rejects.toMatchObject({ code: 'provider_integrity' });
    expect(decrypt).not.toHaveBeenCalled();
    // The same settings under their own id still verify.
    expect((await fx.runtime.store.getProvider(a))?.tokenEndpoint).toBe('https://evil.example/token');
  });

  it('an item without a MAC (stored before settings were authenticated) is refused, shown, and restored by a PUT', async () => {
    const fx = createCoreFixture(handle);
    const id = await addProvider(fx);
    await set(fx.config.tableName, id, 'settingsMac', undefined);

    await expect(fx.runtime.store.getProvider(id)).rejects.toMatchObject({ code: 'provider_integrity' });
    const shown = await fx.runtime.providers.get(id);
    expect(shown.health.integrity).toEqual({
      error: 'provider_integrity',
      description: expect.stringContaining('no MAC'),
    });
    const listed = await fx.runtime.providers.list({ limit: 100 });
    expect(listed.providers.find((p) => p.providerId === id)?.health.integrity).toMatchObject({
      error: 'provider_integrity',
    });

    await fx.runtime.providers.put(id, {
      tokenEndpoint: fx.endpoint.url,
      clientId: 'tk-client',
      clientSecret: 'restored-secret',
    });
    expect((await fx.runtime.store.getProvider(id))?.clientSecret).toBe('restored-secret');
    expect((await fx.runtime.providers.get(id)).health.integrity).toBeNull();
  });

  it('rotation: a provider MACed under k1 is used under the rotated ring; its PUT re-seals and re-MACs under k2', async () => {
    const v1 = createCoreFixture(handle, { keyringJson: JSON.stringify({ current: 'k1', k1: SECRET_1 }) });
    const id = uniqueId('rot');
    const body = { tokenEndpoint: v1.endpoint.url, clientId: 'tk-client', clientSecret: 'rotated-secret' };
    await v1.runtime.providers.put(id, body);
    const keyIdOf = (b: unknown) =>
      b instanceof Uint8Array
        ? Buffer.from(b.subarray(2, 2 + (b[1] as number))).toString('latin1')
        : undefined;
    expect(keyIdOf((await raw(v1.config.tableName, id)).settingsMac)).toBe('k1');

    const v2 = createCoreFixture(handle, {
      tableName: v1.config.tableName,
      keyringJson: JSON.stringify({ current: 'k2', k1: SECRET_1, k2: SECRET_2 }),
    });
    expect((await v2.runtime.store.getProvider(id))?.clientSecret).toBe('rotated-secret');
    const onlyK2 = createCoreFixture(handle, {
      tableName: v1.config.tableName,
      keyringJson: JSON.stringify({ current: 'k2', k2: SECRET_2 }),
    });
    // Without k1 the MAC cannot be checked: key_unavailable, as for a value sealed under k1.
    await expect(onlyK2.runtime.store.getProvider(id)).rejects.toMatchObject({ code: 'key_unavailable' });

    await v2.runtime.providers.put(id, body);
    const item = await raw(v1.config.tableName, id);
    expect(keyIdOf(item.settingsMac)).toBe('k2');
    expect(keyIdOf(item.clientSecret)).toBe('k2');
    expect((await onlyK2.runtime.store.getProvider(id))?.clientSecret).toBe('rotated-secret');
  });
});
