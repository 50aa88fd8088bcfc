import { createFieldCipher, generateKeyringJson, parseKeyring } from '../../functions/core/crypto/crypto.js';
import { aadFor } from '../../functions/core/store/store.js';
import { ITEM_OVERHEAD_BYTES, itemSize } from '../item-size.js';
import type { ItemSizes } from './table-model.js';

/**
 * The billed sizes of a session item as DynamoSessionStore writes it, with tokens of the given sizes
 * sealed by the real field cipher: the attributes of a refreshed, scheduled session; while leased,
 * plus leaseOwner and leaseUntil; after a transient failure, plus lastError and nextAttemptAt. The
 * conformance test checks `idle` against an item written to dynalite.
 */
export async function sessionItemSizes(
  accessTokenBytes: number,
  refreshTokenBytes: number,
): Promise<ItemSizes> {
  const keyring = parseKeyring(generateKeyringJson());
  const cipher = createFieldCipher(async () => keyring);
  const pk = 'USER#u123456';
  const sk = 'SESSION#p0';
  const now = Date.UTC(2030, 0, 1);
  const item = {
    pk,
    sk,
    type: 'session',
    userId: 'u123456',
    providerId: 'p0',
    accessToken: await cipher.encrypt('a'.repeat(accessTokenBytes), aadFor(pk, sk, 'accessToken')),
    refreshToken: await cipher.encrypt('r'.repeat(refreshTokenBytes), aadFor(pk, sk, 'refreshToken')),
    tokenType: 'Bearer',
    status: 'active',
    createdAt: now,
    version: 12,
    failureCount: 0,
    expiresAt: Math.floor(now / 1000) + 3600,
    refreshShard: 3,
    refreshDueAt: Math.floor(now / 1000) + 3600,
    refreshMode: 'scheduled',
    refreshedAt: now,
    issuedAt: now,
  };
  const idle = itemSize(item);
  const leased = itemSize({ ...item, leaseOwner: `${crypto.randomUUID()}:123456`, leaseUntil: now + 30_000 });
  const failure =
    itemSize({ lastError: { code: 'temporarily_unavailable', description: 'x'.repeat(60), at: now } }) +
    itemSize({ nextAttemptAt: now });
  const indexEntry =
    itemSize({ pk, sk, refreshShard: 3, refreshDueAt: Math.floor(now / 1000) }) + ITEM_OVERHEAD_BYTES;
  return { idle, leased, failure, indexEntry, provider: 600 };
}
