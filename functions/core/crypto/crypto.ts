import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { KeyUnavailableError } from '../errors.js';

/**
 * Field-level encryption for tokens and client secrets: AES-256-GCM, a fresh 96-bit nonce per value,
 * additional authenticated data binding the value to its item and attribute, and a versioned
 * envelope naming the key: `tk1.<keyId>.<nonce>.<ciphertext+tag>` (base64url parts).
 *
 * A keyring is JSON `{"current": "<keyId>", "<keyId>": "<secret>", ...}`; each secret (≥ 32
 * characters of high-entropy text, as Secrets Manager generates) is stretched to a 256-bit key with
 * HKDF-SHA256. Rotation: add a key and point `current` at it; older keys stay for reading.
 */

const ENVELOPE_VERSION = 'tk1';
const KEY_ID = /^[A-Za-z0-9_-]{1,64}$/;

export interface Keyring {
  currentKeyId: string;
  keys: ReadonlyMap<string, Buffer>;
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
  for (const [id, secret] of Object.entries(record)) {
    if (id === 'current') continue;
    if (!KEY_ID.test(id)) throw new Error(`keyring key id ${JSON.stringify(id)} is not [A-Za-z0-9_-]{1,64}`);
    if (typeof secret !== 'string' || secret.length < 32) {
      throw new Error(`keyring key ${id} must be a string of at least 32 characters`);
    }
    keys.set(id, deriveKey(id, secret));
  }
  if (!keys.has(current)) throw new Error(`keyring "current" names ${current}, which it does not hold`);
  return { currentKeyId: current, keys };
}

function deriveKey(keyId: string, secret: string): Buffer {
  return Buffer.from(
    hkdfSync('sha256', Buffer.from(secret, 'utf8'), 'tokenkeeper', `aes-256-gcm:${keyId}`, 32),
  );
}

/** A fresh keyring with one random key, as the local stack creates on first start. */
export function generateKeyringJson(keyId = 'k1'): string {
  return JSON.stringify({ current: keyId, [keyId]: randomBytes(48).toString('base64url') });
}

export interface FieldCipher {
  encrypt(plaintext: string, aad: string): Promise<string>;
  decrypt(envelope: string, aad: string): Promise<string>;
  /** The key id an envelope was written with (for rotation checks); undefined when not an envelope. */
  keyIdOf(envelope: string): string | undefined;
}

/** Builds a cipher over a keyring source (re-read when the source's cache expires). */
export function createFieldCipher(getKeyring: () => Promise<Keyring>): FieldCipher {
  return {
    async encrypt(plaintext, aad) {
      const ring = await getKeyring();
      const key = ring.keys.get(ring.currentKeyId) as Buffer;
      const nonce = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, nonce);
      cipher.setAAD(Buffer.from(aad, 'utf8'));
      const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final(), cipher.getAuthTag()]);
      return [
        ENVELOPE_VERSION,
        ring.currentKeyId,
        nonce.toString('base64url'),
        body.toString('base64url'),
      ].join('.');
    },
    async decrypt(envelope, aad) {
      const parts = envelope.split('.');
      if (parts.length !== 4 || parts[0] !== ENVELOPE_VERSION) {
        throw new KeyUnavailableError('stored value is not a recognised encryption envelope');
      }
      const [, keyId, nonceText, bodyText] = parts as [string, string, string, string];
      const ring = await getKeyring();
      const key = ring.keys.get(keyId);
      if (!key)
        throw new KeyUnavailableError(`encryption key ${JSON.stringify(keyId)} is not in the keyring`);
      const nonce = Buffer.from(nonceText, 'base64url');
      const body = Buffer.from(bodyText, 'base64url');
      if (nonce.length !== 12 || body.length < 16)
        throw new KeyUnavailableError('stored value envelope is truncated');
      try {
        const decipher = createDecipheriv('aes-256-gcm', key, nonce);
        decipher.setAAD(Buffer.from(aad, 'utf8'));
        decipher.setAuthTag(body.subarray(body.length - 16));
        return Buffer.concat([
          decipher.update(body.subarray(0, body.length - 16)),
          decipher.final(),
        ]).toString('utf8');
      } catch {
        throw new KeyUnavailableError(
          `stored value failed authentication under key ${JSON.stringify(keyId)}`,
        );
      }
    },
    keyIdOf(envelope) {
      const parts = envelope.split('.');
      return parts.length === 4 && parts[0] === ENVELOPE_VERSION ? parts[1] : undefined;
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
