import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Keyring } from './crypto.js';

/**
 * Message authentication for items whose clear attributes must not be changed by anyone but the
 * keeper (a provider's endpoints and client, functions/core/store/provider-mac.ts): HMAC-SHA256
 * under the keyring's MAC key of the current key id, stored as a Binary attribute
 *
 *   0x01 | key-id length (1 byte) | key id (ASCII) | tag (32 bytes)
 *
 * The MAC key is derived from the keyring secret with its own HKDF label (never the encryption key),
 * and the envelope names its key id, so a tag made before a rotation still verifies while its key
 * is in the keyring, and the next write makes one under the new current key.
 */

const VERSION = 0x01;
const TAG_BYTES = 32;
const KEY_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Why a tag did not verify; `ok` when it did. */
export type MacCheck =
  | { ok: true; keyId: string }
  | { ok: false; reason: 'missing' | 'malformed' | 'unknown_key' | 'mismatch'; keyId?: string };

export interface Authenticator {
  /** A tag over `message` under the keyring's current key. */
  sign(message: Uint8Array): Promise<Uint8Array>;
  /** Checks a stored tag (anything the table held, absent included) against `message`. */
  verify(message: Uint8Array, stored: unknown): Promise<MacCheck>;
}

function hmac(key: Buffer, message: Uint8Array): Buffer {
  return createHmac('sha256', key).update(message).digest();
}

export function createAuthenticator(getKeyring: () => Promise<Keyring>): Authenticator {
  return {
    async sign(message) {
      const ring = await getKeyring();
      const keyId = Buffer.from(ring.currentKeyId, 'latin1');
      const key = ring.macKeys.get(ring.currentKeyId) as Buffer;
      return Buffer.concat([Buffer.from([VERSION, keyId.length]), keyId, hmac(key, message)]);
    },
    async verify(message, stored) {
      if (stored === undefined || stored === null) return { ok: false, reason: 'missing' };
      if (!(stored instanceof Uint8Array)) return { ok: false, reason: 'malformed' };
      const bytes = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
      if (bytes.length < 2 || bytes[0] !== VERSION) return { ok: false, reason: 'malformed' };
      const keyIdEnd = 2 + (bytes[1] as number);
      const keyId = bytes.subarray(2, keyIdEnd).toString('latin1');
      if (bytes.length !== keyIdEnd + TAG_BYTES || !KEY_ID.test(keyId))
        return { ok: false, reason: 'malformed' };
      const ring = await getKeyring();
      const key = ring.macKeys.get(keyId);
      if (!key) return { ok: false, reason: 'unknown_key', keyId };
      const matches = timingSafeEqual(hmac(key, message), bytes.subarray(keyIdEnd));
      return matches ? { ok: true, keyId } : { ok: false, reason: 'mismatch', keyId };
    },
  };
}
