import { describe, expect, it } from 'vitest';
import {
  cachedKeyring,
  createFieldCipher,
  type FieldCipher,
  generateKeyringJson,
  type Keyring,
  parseKeyring,
} from '../../functions/core/crypto/crypto.js';
import { KeyUnavailableError } from '../../functions/core/errors.js';

const SECRET_1 = `${'a'.repeat(16)}first-secret-0123456789`;
const SECRET_2 = `${'b'.repeat(16)}second-secret-987654321`;
const AAD = 'session#alice#github:accessToken';
const PLAINTEXT = 'gho_accessTokenValue0123456789';

function ringJson(current: string, keys: Record<string, string>): string {
  return JSON.stringify({ current, ...keys });
}

/** A cipher over a keyring the test can swap. */
function cipherOver(json: string): { cipher: FieldCipher; use(next: string): void } {
  let ring: Keyring = parseKeyring(json);
  return {
    cipher: createFieldCipher(async () => ring),
    use(next) {
      ring = parseKeyring(next);
    },
  };
}

/** Runs `fn`, expects a KeyUnavailableError, and returns its message. */
async function unavailable(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(KeyUnavailableError);
    return (err as Error).message;
  }
  throw new Error('expected a KeyUnavailableError');
}

/** Flips one bit of the byte at `index` of a base64url part. */
function flipBit(part: string, index: number): string {
  const bytes = Buffer.from(part, 'base64url');
  bytes[index] = (bytes[index] as number) ^ 0x01;
  return bytes.toString('base64url');
}

describe('parseKeyring', () => {
  it('parses a ring with its current key and every other key', () => {
    // Prepare
    const json = ringJson('k2', { k1: SECRET_1, k2: SECRET_2 });

    // Act
    const ring = parseKeyring(json);

    // Assess
    expect(ring.currentKeyId).toBe('k2');
    expect([...ring.keys.keys()].sort()).toEqual(['k1', 'k2']);
    expect(ring.keys.get('k1')?.length).toBe(32);
    expect(ring.keys.get('k1')?.equals(ring.keys.get('k2') as Buffer)).toBe(false);
  });

  it('refuses text that is not JSON', () => {
    // Prepare
    const json = '{current: k1';

    // Act
    const act = () => parseKeyring(json);

    // Assess
    expect(act).toThrow('keyring is not valid JSON');
  });

  it.each([['[]'], ['"k1"'], ['null']])('refuses %s, which is not a JSON object', (json) => {
    // Act
    const act = () => parseKeyring(json);

    // Assess
    expect(act).toThrow('keyring must be a JSON object');
  });

  it('refuses a ring without "current"', () => {
    // Prepare
    const json = JSON.stringify({ k1: SECRET_1 });

    // Act
    const act = () => parseKeyring(json);

    // Assess
    expect(act).toThrow('keyring needs "current" naming one of its keys');
  });

  it('refuses a "current" naming a key the ring does not hold', () => {
    // Prepare
    const json = ringJson('k2', { k1: SECRET_1 });

    // Act
    const act = () => parseKeyring(json);

    // Assess
    expect(act).toThrow('keyring "current" names k2, which it does not hold');
  });

  it('refuses a secret shorter than 32 characters, naming the key but not the secret', () => {
    // Prepare
    const short = 'x'.repeat(31);
    const json = ringJson('k1', { k1: short });

    // Act
    const act = () => parseKeyring(json);

    // Assess
    expect(act).toThrow('keyring key k1 must be a string of at least 32 characters');
    expect(act).not.toThrow(short);
  });

  it('refuses a secret that is not a string', () => {
    // Prepare
    const json = JSON.stringify({ current: 'k1', k1: ['x'.repeat(40)] });

    // Act
    const act = () => parseKeyring(json);

    // Assess
    expect(act).toThrow('keyring key k1 must be a string of at least 32 characters');
  });

  it('refuses a key id that would break the envelope (a dot)', () => {
    // Prepare
    const json = JSON.stringify({ current: 'k1', k1: SECRET_1, 'k.2': SECRET_2 });

    // Act
    const act = () => parseKeyring(json);

    // Assess
    expect(act).toThrow('keyring key id "k.2" is not [A-Za-z0-9_-]{1,64}');
  });

  it('refuses a key id longer than 64 characters', () => {
    // Prepare
    const long = 'k'.repeat(65);
    const json = JSON.stringify({ current: 'k1', k1: SECRET_1, [long]: SECRET_2 });

    // Act
    const act = () => parseKeyring(json);

    // Assess
    expect(act).toThrow(`keyring key id "${long}" is not`);
  });
});

describe('createFieldCipher', () => {
  it.each([
    ['an access token', PLAINTEXT],
    ['the empty string', ''],
    ['non-ASCII text', 'ünïcødé 🔑 token'],
  ])('round-trips %s', async (_label, value) => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));

    // Act
    const envelope = await cipher.encrypt(value, AAD);
    const decrypted = await cipher.decrypt(envelope, AAD);

    // Assess
    expect(decrypted).toBe(value);
  });

  it('writes the envelope tk1.<keyId>.<nonce>.<ciphertext+tag> with a 12-byte nonce', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('key_A-1', { 'key_A-1': SECRET_1 }));

    // Act
    const envelope = await cipher.encrypt(PLAINTEXT, AAD);

    // Assess
    const parts = envelope.split('.');
    expect(parts).toHaveLength(4);
    const [version, keyId, nonce, body] = parts as [string, string, string, string];
    expect(version).toBe('tk1');
    expect(keyId).toBe('key_A-1');
    expect(nonce).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(body).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(Buffer.from(nonce, 'base64url')).toHaveLength(12);
    expect(Buffer.from(body, 'base64url')).toHaveLength(Buffer.byteLength(PLAINTEXT) + 16);
    expect(envelope).not.toContain(PLAINTEXT);
    expect(cipher.keyIdOf(envelope)).toBe('key_A-1');
  });

  it('uses a fresh nonce for every value', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));

    // Act
    const first = await cipher.encrypt(PLAINTEXT, AAD);
    const second = await cipher.encrypt(PLAINTEXT, AAD);

    // Assess
    expect(first).not.toBe(second);
    expect(first.split('.')[2]).not.toBe(second.split('.')[2]);
  });

  it('refuses a ciphertext moved to another item', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const envelope = await cipher.encrypt(PLAINTEXT, 'session#alice#github:accessToken');

    // Act
    const message = await unavailable(() => cipher.decrypt(envelope, 'session#mallory#github:accessToken'));

    // Assess
    expect(message).toBe('stored value failed authentication under key "k1"');
  });

  it('refuses a ciphertext moved to another attribute of the same item', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const envelope = await cipher.encrypt(PLAINTEXT, 'session#alice#github:refreshToken');

    // Act
    const message = await unavailable(() => cipher.decrypt(envelope, 'session#alice#github:accessToken'));

    // Assess
    expect(message).toBe('stored value failed authentication under key "k1"');
  });

  it('refuses a tampered ciphertext', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const [v, id, nonce, body] = (await cipher.encrypt(PLAINTEXT, AAD)).split('.') as [
      string,
      string,
      string,
      string,
    ];
    const tampered = [v, id, nonce, flipBit(body, 0)].join('.');

    // Act
    const message = await unavailable(() => cipher.decrypt(tampered, AAD));

    // Assess
    expect(message).toBe('stored value failed authentication under key "k1"');
  });

  it('refuses a tampered authentication tag', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const [v, id, nonce, body] = (await cipher.encrypt(PLAINTEXT, AAD)).split('.') as [
      string,
      string,
      string,
      string,
    ];
    const bodyBytes = Buffer.from(body, 'base64url');
    const tampered = [v, id, nonce, flipBit(body, bodyBytes.length - 1)].join('.');

    // Act
    const act = () => cipher.decrypt(tampered, AAD);

    // Assess
    await expect(act()).rejects.toBeInstanceOf(KeyUnavailableError);
  });

  it('refuses a tampered nonce', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const [v, id, nonce, body] = (await cipher.encrypt(PLAINTEXT, AAD)).split('.') as [
      string,
      string,
      string,
      string,
    ];
    const tampered = [v, id, flipBit(nonce, 5), body].join('.');

    // Act
    const act = () => cipher.decrypt(tampered, AAD);

    // Assess
    await expect(act()).rejects.toBeInstanceOf(KeyUnavailableError);
  });

  it('refuses a ciphertext relabelled to another key id holding the same secret', async () => {
    // Prepare: the key id is part of key derivation, so relabelling cannot pass authentication
    const { cipher } = cipherOver(ringJson('a', { a: SECRET_1, b: SECRET_1 }));
    const parts = (await cipher.encrypt(PLAINTEXT, AAD)).split('.');
    parts[1] = 'b';

    // Act
    const message = await unavailable(() => cipher.decrypt(parts.join('.'), AAD));

    // Assess
    expect(message).toBe('stored value failed authentication under key "b"');
  });

  it('refuses a truncated envelope', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const [v, id, nonce, body] = (await cipher.encrypt('', AAD)).split('.') as [
      string,
      string,
      string,
      string,
    ];
    const truncated = [v, id, nonce, Buffer.from(body, 'base64url').subarray(0, 15).toString('base64url')];

    // Act
    const message = await unavailable(() => cipher.decrypt(truncated.join('.'), AAD));

    // Assess
    expect(message).toBe('stored value envelope is truncated');
  });

  it('refuses a nonce that is not 12 bytes', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const parts = (await cipher.encrypt(PLAINTEXT, AAD)).split('.');
    parts[2] = Buffer.alloc(16).toString('base64url');

    // Act
    const message = await unavailable(() => cipher.decrypt(parts.join('.'), AAD));

    // Assess
    expect(message).toBe('stored value envelope is truncated');
  });

  it.each([
    ['plaintext', PLAINTEXT],
    ['another version', 'tk2.k1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA'],
    ['too few parts', 'tk1.k1.AAAAAAAAAAAAAAAA'],
  ])('refuses %s as not an envelope', async (_label, value) => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));

    // Act
    const message = await unavailable(() => cipher.decrypt(value, AAD));

    // Assess
    expect(message).toBe('stored value is not a recognised encryption envelope');
    expect(cipher.keyIdOf(value)).toBeUndefined();
  });

  it('rotates: new values use the new current key and old values still decrypt', async () => {
    // Prepare
    const ring = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const old = await ring.cipher.encrypt('old-token', AAD);
    ring.use(ringJson('k2', { k1: SECRET_1, k2: SECRET_2 }));

    // Act
    const fresh = await ring.cipher.encrypt('new-token', AAD);

    // Assess
    expect(ring.cipher.keyIdOf(old)).toBe('k1');
    expect(ring.cipher.keyIdOf(fresh)).toBe('k2');
    await expect(ring.cipher.decrypt(old, AAD)).resolves.toBe('old-token');
    await expect(ring.cipher.decrypt(fresh, AAD)).resolves.toBe('new-token');
  });

  it('names the missing key, and not the plaintext, when a value was written with a retired key', async () => {
    // Prepare
    const ring = cipherOver(ringJson('retired-1', { 'retired-1': SECRET_1 }));
    const envelope = await ring.cipher.encrypt(PLAINTEXT, AAD);
    ring.use(ringJson('k2', { k2: SECRET_2 }));

    // Act
    const message = await unavailable(() => ring.cipher.decrypt(envelope, AAD));

    // Assess
    expect(message).toBe('encryption key "retired-1" is not in the keyring');
    expect(message).not.toContain(PLAINTEXT);
    expect(message).not.toContain(envelope.split('.')[3]);
  });
});

describe('cachedKeyring', () => {
  function countingLoader(json: string) {
    const state = { loads: 0 };
    const load = async () => {
      state.loads += 1;
      return json;
    };
    return { state, load };
  }

  it('reads the source once within the TTL', async () => {
    // Prepare
    let t = 1_000_000;
    const { state, load } = countingLoader(ringJson('k1', { k1: SECRET_1 }));
    const get = cachedKeyring(load, 60_000, () => t);

    // Act
    const first = await get();
    t += 59_999;
    const second = await get();

    // Assess
    expect(state.loads).toBe(1);
    expect(second).toBe(first);
  });

  it('re-reads the source once the TTL has passed', async () => {
    // Prepare
    let t = 1_000_000;
    let json = ringJson('k1', { k1: SECRET_1 });
    let loads = 0;
    const get = cachedKeyring(
      async () => {
        loads += 1;
        return json;
      },
      60_000,
      () => t,
    );
    await get();
    json = ringJson('k2', { k1: SECRET_1, k2: SECRET_2 });

    // Act
    t += 60_000;
    const ring = await get();

    // Assess
    expect(loads).toBe(2);
    expect(ring.currentKeyId).toBe('k2');
  });

  it('coalesces concurrent loads into one read', async () => {
    // Prepare
    let release: (json: string) => void = () => {};
    let loads = 0;
    const get = cachedKeyring(
      () => {
        loads += 1;
        return new Promise<string>((resolve) => {
          release = resolve;
        });
      },
      60_000,
      () => 0,
    );

    // Act
    const pending = Promise.all([get(), get(), get()]);
    release(ringJson('k1', { k1: SECRET_1 }));
    const rings = await pending;

    // Assess
    expect(loads).toBe(1);
    expect(rings[1]).toBe(rings[0]);
    expect(rings[2]).toBe(rings[0]);
  });

  it('does not cache a failed read: the next call reads again', async () => {
    // Prepare
    let loads = 0;
    const get = cachedKeyring(
      async () => {
        loads += 1;
        if (loads === 1) throw new Error('secrets manager unavailable');
        return ringJson('k1', { k1: SECRET_1 });
      },
      60_000,
      () => 0,
    );
    await expect(get()).rejects.toThrow('secrets manager unavailable');

    // Act
    const ring = await get();

    // Assess
    expect(loads).toBe(2);
    expect(ring.currentKeyId).toBe('k1');
  });

  it('surfaces an invalid keyring from the source', async () => {
    // Prepare
    const get = cachedKeyring(
      async () => ringJson('k9', { k1: SECRET_1 }),
      60_000,
      () => 0,
    );

    // Act
    const act = get();

    // Assess
    await expect(act).rejects.toThrow('keyring "current" names k9, which it does not hold');
  });
});

describe('generateKeyringJson', () => {
  it('produces a parseable ring whose current key is k1', async () => {
    // Act
    const json = generateKeyringJson();

    // Assess
    const ring = parseKeyring(json);
    expect(ring.currentKeyId).toBe('k1');
    const { cipher } = cipherOver(json);
    await expect(cipher.decrypt(await cipher.encrypt(PLAINTEXT, AAD), AAD)).resolves.toBe(PLAINTEXT);
  });

  it('uses the given key id and a fresh random secret each time', () => {
    // Act
    const first = JSON.parse(generateKeyringJson('boot')) as Record<string, string>;
    const second = JSON.parse(generateKeyringJson('boot')) as Record<string, string>;

    // Assess
    expect(first.current).toBe('boot');
    expect(first.boot?.length).toBeGreaterThanOrEqual(32);
    expect(first.boot).not.toBe(second.boot);
  });
});
