import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { KeyUnavailableError } from '../errors.js';

/**
 * Field-level encryption for tokens and client secrets: AES-256-GCM, a fresh 96-bit nonce per value,
 * additional authenticated data binding the value to its item and attribute, and a versioned
 * envelope naming the key. Values are sealed into the binary envelope, stored as a DynamoDB Binary
 * attribute:
 *
 *   0x01 | key-id length (1 byte) | key id (ASCII) | nonce (12 bytes) | ciphertext + tag (16 bytes)
 *
 * Items written before it hold the text envelope `tk1.<keyId>.<nonce>.<ciphertext+tag>` (base64url
 * parts), a third larger; both open alike, and an item moves to the binary form when it is next
 * written.
 *
 * A keyring is JSON `{"current": "<keyId>", "<keyId>": "<secret>", ...}`; each secret (≥ 32
 * characters of high-entropy text, as Secrets Manager generates) is stretched to a 256-bit key with
 * HKDF-SHA256. Rotation: add a key and point `current` at it; older keys stay for reading.
 */

const TEXT_VERSION = 'tk1';
const BINARY_VERSION = 0x01;
const KEY_ID = /^[A-Za-z0-9_-]{1,64}$/;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** A sealed value as stored: the binary envelope, or the `tk1.` text envelope of older items. */
export type Sealed = Uint8Array | string;

/** Whether a stored attribute holds a sealed value (in either form). */
export function isSealed(value: unknown): value is Sealed {
  return typeof value === 'string' || value instanceof Uint8Array;
}

/** Bytes of the binary envelope of `plaintextBytes` under a key id of `keyIdLength` characters. */
export function sealedBytes(plaintextBytes: number, keyIdLength: number): number {
  return 2 + keyIdLength + NONCE_BYTES + plaintextBytes + TAG_BYTES;
}

interface Envelope {
  keyId: string;
  nonce: Buffer;
  /** ciphertext + tag */
  body: Buffer;
}

const NOT_AN_ENVELOPE = 'stored value is not a recognised encryption envelope';

/** Reads either form; undefined when the value is not an envelope at all. */
function parseEnvelope(sealed: Sealed): Envelope | undefined {
  if (typeof sealed === 'string') {
    const parts = sealed.split('.');
    if (parts.length !== 4 || parts[0] !== TEXT_VERSION || !KEY_ID.test(parts[1] as string)) return undefined;
    const [, keyId, nonceText, bodyText] = parts as [string, string, string, string];
    return { keyId, nonce: Buffer.from(nonceText, 'base64url'), body: Buffer.from(bodyText, 'base64url') };
  }
  const bytes = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (bytes.length < 2 || bytes[0] !== BINARY_VERSION) return undefined;
  const keyIdEnd = 2 + (bytes[1] as number);
  const keyId = bytes.subarray(2, keyIdEnd).toString('latin1');
  if (keyIdEnd > bytes.length || !KEY_ID.test(keyId)) return undefined;
  return {
    keyId,
    nonce: bytes.subarray(keyIdEnd, keyIdEnd + NONCE_BYTES),
    body: bytes.subarray(keyIdEnd + NONCE_BYTES),
  };
}

/**
 * A sealed value's key id, nonce and ciphertext (the same in the binary and the text form), or
 * undefined when it is not an envelope: what a MAC over an item binds a sealed value by.
 */
export function envelopeParts(
  sealed: Sealed,
): { keyId: string; nonce: Uint8Array; body: Uint8Array } | undefined {
  return parseEnvelope(sealed);
}

/**
 * The text form of a binary envelope: the same key, nonce and ciphertext, as items written before
 * the binary form hold them (for tests and the item-size bench, which compare the two).
 */
export function textEnvelope(sealed: Uint8Array): string {
  const envelope = parseEnvelope(sealed);
  if (!envelope) throw new KeyUnavailableError(NOT_AN_ENVELOPE);
  return [
    TEXT_VERSION,
    envelope.keyId,
    envelope.nonce.toString('base64url'),
    envelope.body.toString('base64url'),
  ].join('.');
}

export interface Keyring {
  currentKeyId: string;
  /** The AES-256-GCM key of each key id. */
  keys: ReadonlyMap<string, Buffer>;
  /**
   * The HMAC-SHA256 key of each key id (functions/core/crypto/mac.ts): derived from the same secret
   * with its own HKDF label, so it is never the encryption key.
   */
  macKeys: ReadonlyMap<string, Buffer>;
}

export function parseKeyring(json: string): Keyring {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw new Error('keyring is not valid JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new Error('keyring must be a JSON object');
  const record = raw as Record<string, unknown>;
  const current = record.current;
  if (typeof current !== 'string' || !KEY_ID.test(current)) {
    throw new Error('keyring needs "current" naming one of its keys');
  }
  const keys = new Map<string, Buffer>();
  const macKeys = new Map<string, Buffer>();
  for (const [id, secret] of Object.entries(record)) {
    if (id === 'current') continue;
    if (!KEY_ID.test(id)) throw new Error(`keyring key id ${JSON.stringify(id)} is not [A-Za-z0-9_-]{1,64}`);
    if (typeof secret !== 'string' || secret.length < 32) {
      throw new Error(`keyring key ${id} must be a string of at least 32 characters`);
    }
    keys.set(id, deriveKey(id, secret));
    macKeys.set(id, deriveMacKey(id, secret));
  }
  if (!keys.has(current)) throw new Error(`keyring "current" names ${current}, which it does not hold`);
  return { currentKeyId: current, keys, macKeys };
}

function deriveKey(keyId: string, secret: string): Buffer {
  return Buffer.from(
    hkdfSync('sha256', Buffer.from(secret, 'utf8'), 'tokenkeeper', `aes-256-gcm:${keyId}`, 32),
  );
}

function deriveMacKey(keyId: string, secret: string): Buffer {
  return Buffer.from(
    hkdfSync('sha256', Buffer.from(secret, 'utf8'), 'tokenkeeper', `hmac-sha256:${keyId}`, 32),
  );
}

/** A fresh keyring with one random key, as the local stack creates on first start. */
export function generateKeyringJson(keyId = 'k1'): string {
  return JSON.stringify({ current: keyId, [keyId]: randomBytes(48).toString('base64url') });
}

export interface FieldCipher {
  /** Seals into the binary envelope, under the keyring's current key. */
  encrypt(plaintext: string, aad: string): Promise<Uint8Array>;
  /** Opens a sealed value of either form. */
  decrypt(sealed: Sealed, aad: string): Promise<string>;
  /** The key id a value was sealed with (for rotation checks); undefined when not an envelope. */
  keyIdOf(sealed: Sealed): string | undefined;
}

/** Builds a cipher over a keyring source (re-read when the source's cache expires). */
export function createFieldCipher(getKeyring: () => Promise<Keyring>): FieldCipher {
  return {
    async encrypt(plaintext, aad) {
      const ring = await getKeyring();
      const key = ring.keys.get(ring.currentKeyId) as Buffer;
      const nonce = randomBytes(NONCE_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, nonce);
      cipher.setAAD(Buffer.from(aad, 'utf8'));
      const keyId = Buffer.from(ring.currentKeyId, 'latin1');
      return Buffer.concat([
        Buffer.from([BINARY_VERSION, keyId.length]),
        keyId,
        nonce,
        cipher.update(plaintext, 'utf8'),
        cipher.final(),
        cipher.getAuthTag(),
      ]);
    },
    async decrypt(sealed, aad) {
      const envelope = parseEnvelope(sealed);
      if (!envelope) throw new KeyUnavailableError(NOT_AN_ENVELOPE);
      const { keyId, nonce, body } = envelope;
      const ring = await getKeyring();
      const key = ring.keys.get(keyId);
      if (!key)
        throw new KeyUnavailableError(`encryption key ${JSON.stringify(keyId)} is not in the keyring`);
      if (nonce.length !== NONCE_BYTES || body.length < TAG_BYTES)
        throw new KeyUnavailableError('stored value envelope is truncated');
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, nonce);
        decipher.setAAD(Buffer.from(aad, 'utf8'));
        decipher.setAuthTag(body.subarray(body.length - TAG_BYTES));
        return Buffer.concat([
          decipher.update(body.subarray(0, body.length - TAG_BYTES)),
          decipher.final(),
        ]).toString('utf8');
      } catch {
        throw new KeyUnavailableError(
          `stored value failed authentication under key ${JSON.stringify(keyId)}`,
        );
      }
    },
    keyIdOf(sealed) {
      return parseEnvelope(sealed)?.keyId;
    },
  };
}

/** Caches a keyring loader for `ttlMs` (Secrets Manager is read once per container per TTL). */
export function cachedKeyring(
  load: () => Promise<string>,
  ttlMs: number,
  now: () => number,
): () => Promise<Keyring> {
  let cached: { ring: Keyring; at: number } | undefined;
  let inflight: Promise<Keyring> | undefined;
  return async () => {
    if (cached && now() - cached.at < ttlMs) return cached.ring;
    if (!inflight) {
      inflight = load()
        .then((json) => {
          const ring = parseKeyring(json);
          cached = { ring, at: now() };
          return ring;
        })
        .finally(() => {
          inflight = undefined;
        });
    }
    return inflight;
  };
}
