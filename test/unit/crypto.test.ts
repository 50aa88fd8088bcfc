import { describe, expect, it } from 'vitest';
import {
  cachedKeyring,
  createFieldCipher,
  type FieldCipher,
  generateKeyringJson,
  type Keyring,
  parseKeyring,
  type Sealed,
  sealedBytes,
  textEnvelope,
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

/** The parts of an envelope, read by hand from the layout the binary form documents. */
interface Parts {
  keyId: string;
  nonce: Buffer;
  body: Buffer;
}

function partsOf(binary: Uint8Array): Parts {
  const bytes = Buffer.from(binary);
  const keyIdEnd = 2 + (bytes[1] as number);
  return {
    keyId: bytes.subarray(2, keyIdEnd).toString('latin1'),
    nonce: Buffer.from(bytes.subarray(keyIdEnd, keyIdEnd + 12)),
    body: Buffer.from(bytes.subarray(keyIdEnd + 12)),
  };
}

type Form = 'binary' | 'text';
const FORMS: Form[] = ['binary', 'text'];

/** Builds a sealed value of either form from (possibly altered) parts. */
function assemble(form: Form, p: Parts): Sealed {
  if (form === 'text')
    return ['tk1', p.keyId, p.nonce.toString('base64url'), p.body.toString('base64url')].join('.');
  return Buffer.concat([Buffer.from([1, p.keyId.length]), Buffer.from(p.keyId, 'latin1'), p.nonce, p.body]);
}

/** Flips one bit of the byte at `index` (a copy). */
function flipBit(bytes: Buffer, index: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[index] = (copy[index] as number) ^ 0x01;
  return copy;
}

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

  it('writes the binary envelope 0x01 | key-id length | key id | 12-byte nonce | ciphertext + tag', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('key_A-1', { 'key_A-1': SECRET_1 }));

    // Act
    const envelope = await cipher.encrypt(PLAINTEXT, AAD);

    // Assess
    expect(envelope).toBeInstanceOf(Uint8Array);
    const bytes = Buffer.from(envelope);
    expect(bytes[0]).toBe(0x01);
    expect(bytes[1]).toBe('key_A-1'.length);
    expect(bytes.subarray(2, 9).toString('latin1')).toBe('key_A-1');
    const { nonce, body } = partsOf(envelope);
    expect(nonce).toHaveLength(12);
    expect(body).toHaveLength(Buffer.byteLength(PLAINTEXT) + 16);
    expect(bytes).toHaveLength(sealedBytes(Buffer.byteLength(PLAINTEXT), 'key_A-1'.length));
    expect(bytes.includes(Buffer.from(PLAINTEXT))).toBe(false);
    expect(cipher.keyIdOf(envelope)).toBe('key_A-1');
  });

  it('is a quarter smaller than the text envelope of the same value', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const token = 'x'.repeat(1024);

    // Act
    const binary = await cipher.encrypt(token, AAD);
    const text = textEnvelope(binary);

    // Assess: 1,024 bytes seal to 1,056 as binary and 1,411 as text
    expect(binary.byteLength).toBe(1056);
    expect(text).toHaveLength(1411);
    expect(binary.byteLength / text.length).toBeLessThan(0.75);
  });

  it('reads the text envelope tk1.<keyId>.<nonce>.<ciphertext+tag> that older items hold', async () => {
    // Prepare: the text form of a sealed value, built by hand from its parts
    const { cipher } = cipherOver(ringJson('key_A-1', { 'key_A-1': SECRET_1 }));
    const parts = partsOf(await cipher.encrypt(PLAINTEXT, AAD));
    const text = `tk1.key_A-1.${parts.nonce.toString('base64url')}.${parts.body.toString('base64url')}`;

    // Act
    const decrypted = await cipher.decrypt(text, AAD);

    // Assess
    expect(decrypted).toBe(PLAINTEXT);
    expect(cipher.keyIdOf(text)).toBe('key_A-1');
    expect(textEnvelope(assemble('binary', parts) as Uint8Array)).toBe(text);
  });

  it('opens a binary envelope held in a plain Uint8Array view into a larger buffer', async () => {
    // Prepare: the SDK hands Binary attributes back as Uint8Array, possibly a view at an offset
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const envelope = await cipher.encrypt(PLAINTEXT, AAD);
    const backing = new Uint8Array(envelope.byteLength + 7);
    backing.set(envelope, 5);
    const view = new Uint8Array(backing.buffer, 5, envelope.byteLength);

    // Act
    const decrypted = await cipher.decrypt(view, AAD);

    // Assess
    expect(decrypted).toBe(PLAINTEXT);
  });

  it('uses a fresh nonce for every value', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));

    // Act
    const first = await cipher.encrypt(PLAINTEXT, AAD);
    const second = await cipher.encrypt(PLAINTEXT, AAD);

    // Assess
    expect(Buffer.from(first).equals(Buffer.from(second))).toBe(false);
    expect(partsOf(first).nonce.equals(partsOf(second).nonce)).toBe(false);
  });

  it.each(FORMS)('refuses a %s ciphertext moved to another item', async (form) => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const sealed = assemble(
      form,
      partsOf(await cipher.encrypt(PLAINTEXT, 'session#alice#github:accessToken')),
    );

    // Act
    const message = await unavailable(() => cipher.decrypt(sealed, 'session#mallory#github:accessToken'));

    // Assess
    expect(message).toBe('stored value failed authentication under key "k1"');
  });

  it.each(FORMS)('refuses a %s ciphertext moved to another attribute of the same item', async (form) => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const sealed = assemble(
      form,
      partsOf(await cipher.encrypt(PLAINTEXT, 'session#alice#github:refreshToken')),
    );

    // Act
    const message = await unavailable(() => cipher.decrypt(sealed, 'session#alice#github:accessToken'));

    // Assess
    expect(message).toBe('stored value failed authentication under key "k1"');
  });

  it.each(FORMS)('refuses a tampered %s ciphertext', async (form) => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const parts = partsOf(await cipher.encrypt(PLAINTEXT, AAD));
    const tampered = assemble(form, { ...parts, body: flipBit(parts.body, 0) });

    // Act
    const message = await unavailable(() => cipher.decrypt(tampered, AAD));

    // Assess
    expect(message).toBe('stored value failed authentication under key "k1"');
  });

  it.each(FORMS)('refuses a tampered %s authentication tag', async (form) => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const parts = partsOf(await cipher.encrypt(PLAINTEXT, AAD));
    const tampered = assemble(form, { ...parts, body: flipBit(parts.body, parts.body.length - 1) });

    // Act
    const message = await unavailable(() => cipher.decrypt(tampered, AAD));

    // Assess
    expect(message).toBe('stored value failed authentication under key "k1"');
  });

  it.each(FORMS)('refuses a tampered %s nonce', async (form) => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const parts = partsOf(await cipher.encrypt(PLAINTEXT, AAD));
    const tampered = assemble(form, { ...parts, nonce: flipBit(parts.nonce, 5) });

    // Act
    const message = await unavailable(() => cipher.decrypt(tampered, AAD));

    // Assess
    expect(message).toBe('stored value failed authentication under key "k1"');
  });

  it.each(FORMS)(
    'refuses a %s ciphertext relabelled to another key id holding the same secret',
    async (form) => {
      // Prepare: the key id is part of key derivation, so relabelling cannot pass authentication
      const { cipher } = cipherOver(ringJson('a', { a: SECRET_1, b: SECRET_1 }));
      const parts = partsOf(await cipher.encrypt(PLAINTEXT, AAD));
      const relabelled = assemble(form, { ...parts, keyId: 'b' });

      // Act
      const message = await unavailable(() => cipher.decrypt(relabelled, AAD));

      // Assess
      expect(message).toBe('stored value failed authentication under key "b"');
    },
  );

  it.each(FORMS)('refuses a truncated %s envelope', async (form) => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const parts = partsOf(await cipher.encrypt('', AAD));
    const truncated = assemble(form, { ...parts, body: parts.body.subarray(0, 15) });

    // Act
    const message = await unavailable(() => cipher.decrypt(truncated, AAD));

    // Assess
    expect(message).toBe('stored value envelope is truncated');
  });

  it('refuses a binary envelope cut inside its nonce', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const envelope = await cipher.encrypt(PLAINTEXT, AAD);

    // Act
    const message = await unavailable(() => cipher.decrypt(envelope.subarray(0, 2 + 2 + 8), AAD));

    // Assess
    expect(message).toBe('stored value envelope is truncated');
  });

  it('refuses a text nonce that is not 12 bytes', async () => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const parts = partsOf(await cipher.encrypt(PLAINTEXT, AAD));

    // Act
    const message = await unavailable(() =>
      cipher.decrypt(assemble('text', { ...parts, nonce: Buffer.alloc(16) }), AAD),
    );

    // Assess
    expect(message).toBe('stored value envelope is truncated');
  });

  it.each<[string, Sealed]>([
    ['plaintext', PLAINTEXT],
    ['another text version', 'tk2.k1.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA'],
    ['too few text parts', 'tk1.k1.AAAAAAAAAAAAAAAA'],
    ['plaintext bytes', Buffer.from(PLAINTEXT)],
    ['another binary version', Buffer.concat([Buffer.from([2, 2]), Buffer.from('k1'), Buffer.alloc(40)])],
    ['an empty binary', new Uint8Array(0)],
    ['a key-id length past the end', Buffer.from([1, 60, 0x6b, 0x31])],
    [
      'a key id outside [A-Za-z0-9_-]',
      Buffer.concat([Buffer.from([1, 2]), Buffer.from('k.'), Buffer.alloc(40)]),
    ],
  ])('refuses %s as not an envelope', async (_label, value) => {
    // Prepare
    const { cipher } = cipherOver(ringJson('k1', { k1: SECRET_1 }));

    // Act
    const message = await unavailable(() => cipher.decrypt(value, AAD));

    // Assess
    expect(message).toBe('stored value is not a recognised encryption envelope');
    expect(cipher.keyIdOf(value)).toBeUndefined();
  });

  it('rotates: new values use the new current key and old values of either form still decrypt', async () => {
    // Prepare
    const ring = cipherOver(ringJson('k1', { k1: SECRET_1 }));
    const old = await ring.cipher.encrypt('old-token', AAD);
    const oldText = textEnvelope(await ring.cipher.encrypt('old-text-token', AAD));
    ring.use(ringJson('k2', { k1: SECRET_1, k2: SECRET_2 }));

    // Act
    const fresh = await ring.cipher.encrypt('new-token', AAD);

    // Assess
    expect(ring.cipher.keyIdOf(old)).toBe('k1');
    expect(ring.cipher.keyIdOf(oldText)).toBe('k1');
    expect(ring.cipher.keyIdOf(fresh)).toBe('k2');
    await expect(ring.cipher.decrypt(old, AAD)).resolves.toBe('old-token');
    await expect(ring.cipher.decrypt(oldText, AAD)).resolves.toBe('old-text-token');
    await expect(ring.cipher.decrypt(fresh, AAD)).resolves.toBe('new-token');
  });

  it.each(FORMS)(
    'names the missing key, and not the plaintext, when a %s value was written with a retired key',
    async (form) => {
      // Prepare
      const ring = cipherOver(ringJson('retired-1', { 'retired-1': SECRET_1 }));
      const parts = partsOf(await ring.cipher.encrypt(PLAINTEXT, AAD));
      ring.use(ringJson('k2', { k2: SECRET_2 }));

      // Act
      const message = await unavailable(() => ring.cipher.decrypt(assemble(form, parts), AAD));

      // Assess
      expect(message).toBe('encryption key "retired-1" is not in the keyring');
      expect(message).not.toContain(PLAINTEXT);
      expect(message).not.toContain(parts.body.toString('base64url'));
    },
  );
});

describe('textEnvelope', () => {
  it('refuses what is not a binary envelope', () => {
    // Act
    const act = () => textEnvelope(Buffer.from(PLAINTEXT));

    // Assess
    expect(act).toThrow(KeyUnavailableError);
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
