import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { DynamoDBDocumentClient, GetCommand } from '@aws-sdk/lib-dynamodb';
import { loadConfig } from '../functions/core/config.js';
import { generateKeyringJson, parseKeyring, textEnvelope } from '../functions/core/crypto/crypto.js';
import { createRuntime } from '../functions/core/runtime.js';
import type { SessionStore } from '../functions/core/store/store.js';
import { ensureTable, TABLE } from '../functions/core/store/table.js';
import { startEmbeddedDynamoDB } from '../functions/local/embedded.js';
import { ITEM_OVERHEAD_BYTES, itemSize, writeUnits } from './item-size.js';
import { DynamoMeter } from './meter.js';
import { markdownTable } from './report.js';
import { opaqueToken } from './token-endpoint.js';

/**
 * The session item and the write units of one refresh, by access-token size, with the sealed tokens
 * as Binary attributes (what the keeper writes) and as the `tk1.` text of the release before
 * (the same envelopes, text-encoded). Each size is one session written through the real store on
 * dynalite and refreshed twice (lease + commit); the second refresh is measured: the item as the
 * lease leaves it (the larger image, which both UpdateItems are billed by), the item as committed,
 * and, with a meter, the write units dynalite reports for the Binary form beside the computed ones.
 *
 * Alone: `npx tsx bench/item-size-phase.ts [--refresh-token-bytes 64]` prints the table.
 */

export const ACCESS_TOKEN_SIZES = [40, 256, 512, 600, 1024, 2048, 4096] as const;

export interface RefreshWrites {
  /** the lease UpdateItem */
  lease: number;
  /** the commit UpdateItem */
  commit: number;
  /** the byExpiry index: the commit moves the entry (a delete and a put) */
  index: number;
  total: number;
}

export interface SealedFormSize {
  /** the item as committed (DynamoDB's sizing rules), bytes */
  itemBytes: number;
  /** the item while leased: what the lease and the commit are billed by */
  leasedItemBytes: number;
  wru: RefreshWrites;
}

export interface ItemSizeRow {
  accessTokenBytes: number;
  refreshTokenBytes: number;
  /** the `tk1.` text form the release before the Binary form wrote */
  text: SealedFormSize;
  binary: SealedFormSize;
  /** the Binary form's write units as dynalite reported them (index writes computed by the meter) */
  measured?: RefreshWrites;
}

export interface ItemSizeOptions {
  store: SessionStore;
  doc: DynamoDBDocumentClient;
  tableName: string;
  providerId: string;
  /** attached to the client under `store` */
  meter?: DynamoMeter;
  accessTokenBytes?: readonly number[];
  refreshTokenBytes: number;
}

const SEALED_ATTRIBUTES = ['accessToken', 'refreshToken'] as const;

/** The same item with its sealed tokens in the text form. */
function asText(item: Record<string, unknown>): Record<string, unknown> {
  const text = { ...item };
  for (const name of SEALED_ATTRIBUTES) {
    const value = item[name];
    if (value instanceof Uint8Array) text[name] = textEnvelope(value);
  }
  return text;
}

function formSize(committed: Record<string, unknown>, leased: Record<string, unknown>): SealedFormSize {
  const itemBytes = itemSize(committed);
  const leasedItemBytes = itemSize(leased);
  // An UpdateItem is billed by the larger of the item before and after it.
  const billed = writeUnits(Math.max(itemBytes, leasedItemBytes));
  const entry = itemSize({
    [TABLE.partitionKey]: committed[TABLE.partitionKey],
    [TABLE.sortKey]: committed[TABLE.sortKey],
    [TABLE.shardAttribute]: committed[TABLE.shardAttribute],
    [TABLE.dueAttribute]: committed[TABLE.dueAttribute],
  });
  const index = 2 * writeUnits(entry + ITEM_OVERHEAD_BYTES);
  return {
    itemBytes,
    leasedItemBytes,
    wru: { lease: billed, commit: billed, index, total: 2 * billed + index },
  };
}

export async function measureSessionItems(options: ItemSizeOptions): Promise<ItemSizeRow[]> {
  const { store, doc, tableName, meter } = options;
  const rows: ItemSizeRow[] = [];
  const raw = async (key: { userId: string; providerId: string }) => {
    const { Item } = await doc.send(
      new GetCommand({
        TableName: tableName,
        Key: { [TABLE.partitionKey]: `USER#${key.userId}`, [TABLE.sortKey]: `SESSION#${key.providerId}` },
        ConsistentRead: true,
      }),
    );
    if (!Item) throw new Error(`item-size: no item for ${key.userId}`);
    return Item;
  };
  for (const bytes of options.accessTokenBytes ?? ACCESS_TOKEN_SIZES) {
    const key = { userId: `item-size-${bytes}`, providerId: options.providerId };
    const tokens = () => ({
      accessToken: opaqueToken(bytes),
      refreshToken: opaqueToken(options.refreshTokenBytes),
      tokenType: 'Bearer',
    });
    const now = Date.now();
    const expiresAt = Math.floor(now / 1000) + 3600;
    await store.putSession({ ...key, ...tokens(), expiresAt }, now);
    let leased: Record<string, unknown> = {};
    const refresh = async (at: number) => {
      // A lease owner as the refresher names it: its instance's UUID and a counter.
      const owner = `${randomUUID()}:${at - now}`;
      const record = await store.getSession(key, { consistent: true });
      const lease = await store.acquireLease(
        key,
        owner,
        { kind: 'forced', version: record?.version ?? 0 },
        at,
        at + 30_000,
      );
      if (!lease) throw new Error(`item-size: the lease on ${key.userId} was refused`);
      leased = await raw(key);
      const expires = Math.floor(at / 1000) + 3600;
      if (!(await store.commitRefresh(key, owner, { ...tokens(), expiresAt: expires }, at)))
        throw new Error(`item-size: the commit on ${key.userId} was refused`);
    };
    // The first refresh brings the item to its steady shape (refreshedAt, issuedAt); the second is measured.
    await refresh(now + 1000);
    if (meter) {
      meter.reset();
      meter.enabled = true;
    }
    try {
      await refresh(now + 2000);
    } finally {
      if (meter) meter.enabled = false;
    }
    const committed = await raw(key);
    const row: ItemSizeRow = {
      accessTokenBytes: bytes,
      refreshTokenBytes: options.refreshTokenBytes,
      text: formSize(asText(committed), asText(leased)),
      binary: formSize(committed, leased),
    };
    if (meter) {
      const work = meter.snapshot();
      const measured = { lease: work.lease.wcu, commit: work.commit.wcu, index: work.commit.gsiWcu };
      row.measured = { ...measured, total: measured.lease + measured.commit + measured.index };
    }
    rows.push(row);
  }
  return rows;
}

/** The rows as a table: bytes and write units per refresh, text form → Binary form. */
export function itemSizeTable(rows: readonly ItemSizeRow[]): { header: string[]; rows: string[][] } {
  return {
    header: [
      'access token',
      'item, text (tk1.)',
      'item, Binary',
      'smaller by',
      'WRU per refresh, text',
      'WRU per refresh, Binary',
    ],
    rows: rows.map((r) => [
      `${r.accessTokenBytes} B`,
      `${r.text.itemBytes} B`,
      `${r.binary.itemBytes} B`,
      `${(100 * (1 - r.binary.itemBytes / r.text.itemBytes)).toFixed(0)}%`,
      `${r.text.wru.lease} + ${r.text.wru.commit} + ${r.text.wru.index} = ${r.text.wru.total}`,
      `${r.binary.wru.lease} + ${r.binary.wru.commit} + ${r.binary.wru.index} = ${r.binary.wru.total}` +
        (r.measured && r.measured.total !== r.binary.wru.total ? ` (dynalite: ${r.measured.total})` : ''),
    ]),
  };
}

async function main(): Promise<void> {
  const flag = process.argv.indexOf('--refresh-token-bytes');
  const refreshTokenBytes = flag > 0 ? Number(process.argv[flag + 1]) : 64;
  if (!Number.isInteger(refreshTokenBytes) || refreshTokenBytes < 1)
    throw new Error('--refresh-token-bytes must be a whole number >= 1');
  const dynamo = await startEmbeddedDynamoDB();
  const client = dynamo.client();
  const meter = new DynamoMeter();
  meter.attach(client);
  try {
    const tableName = 'tk-item-size';
    await ensureTable(client, tableName);
    const config = loadConfig({ TOKENKEEPER_TABLE_NAME: tableName, AWS_REGION: 'us-east-1' });
    const ring = parseKeyring(generateKeyringJson());
    const runtime = createRuntime({ config, dynamodb: client, keyring: async () => ring });
    const rows = await measureSessionItems({
      store: runtime.store,
      doc: DynamoDBDocumentClient.from(client),
      tableName,
      providerId: 'bench-provider',
      meter,
      refreshTokenBytes,
    });
    const view = itemSizeTable(rows);
    process.stdout.write(
      `Session item and write units per refresh (lease + commit + byExpiry index), refresh token ${refreshTokenBytes} B:\n\n` +
        `${markdownTable(view.header, view.rows, ['r', 'r', 'r', 'r', 'r', 'r'])}\n`,
    );
  } finally {
    client.destroy();
    await dynamo.stop();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
