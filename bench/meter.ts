import type { AttributeValue, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { TABLE } from '../functions/core/store/table.js';
import { ITEM_OVERHEAD_BYTES, itemSize, writeUnits } from './item-size.js';

/**
 * Counts the DynamoDB work of the keeper: a middleware on the DynamoDBClient (the document client
 * the runtime builds shares its stack) classifies each request, asks for `ReturnConsumedCapacity:
 * INDEXES`, and adds up what DynamoDB (here dynalite) reports.
 *
 * dynalite reports table capacity for reads and writes (by DynamoDB's sizing rules, the larger of
 * the before and after image for an update) and index capacity for queries, but not the writes a
 * table write causes in a global secondary index. Those are computed here from the index keys
 * before and after each write (a shadow of each item's `refreshShard`/`expiresAt`, kept from the
 * `ALL_NEW` images the store asks for): a changed index key is a delete plus a put (2 writes), an
 * entry appearing or disappearing is 1, unchanged keys of a KEYS_ONLY index are 0; each write is
 * ceil((index entry + 100 bytes) / 1 KB) units.
 */

export type WorkClass =
  | 'query'
  | 'lease'
  | 'commit'
  | 'failure'
  | 'provider'
  | 'sessionRead'
  | 'sessionWrite'
  | 'other';

export const WORK_CLASSES: readonly WorkClass[] = [
  'query',
  'lease',
  'commit',
  'failure',
  'provider',
  'sessionRead',
  'sessionWrite',
  'other',
];

export interface WorkCounter {
  requests: number;
  /** requests that failed (e.g. ConditionalCheckFailedException) */
  errors: number;
  /** read capacity units, as reported (table + index) */
  rcu: number;
  /** write capacity units on the table, as reported */
  wcu: number;
  /** write units in the byExpiry index, computed (see above) */
  gsiWcu: number;
  /** writes whose index effect could not be computed (no ALL_NEW image) */
  gsiUnknown: number;
}

type Input = Record<string, unknown>;
type IndexKeys = { shard?: unknown; exp?: unknown };

const emptyCounter = (): WorkCounter => ({
  requests: 0,
  errors: 0,
  rcu: 0,
  wcu: 0,
  gsiWcu: 0,
  gsiUnknown: 0,
});

export function classify(command: string, input: Input): WorkClass {
  const update = String(input.UpdateExpression ?? '');
  const condition = String(input.ConditionExpression ?? '');
  const key = (input.Key ?? {}) as Record<string, unknown>;
  switch (command) {
    case 'QueryCommand':
      return input.IndexName === TABLE.expiryIndex ? 'query' : 'other';
    case 'UpdateItemCommand':
      if (update.startsWith('SET leaseOwner = :owner')) return 'lease';
      if (condition === 'leaseOwner = :owner' && update.includes('version = version + :one')) return 'commit';
      if (condition === 'leaseOwner = :owner') return 'failure';
      return key[TABLE.sortKey] === 'PROVIDER' ? 'other' : 'sessionWrite';
    case 'GetItemCommand':
      return key[TABLE.sortKey] === 'PROVIDER' ? 'provider' : 'sessionRead';
    default:
      return 'other';
  }
}

export class DynamoMeter {
  enabled = false;
  /** Ask for consumed capacity (changes the request slightly; on by default). */
  capacity = true;
  private counters = new Map<WorkClass, WorkCounter>();
  private readonly shadow = new Map<string, IndexKeys>();
  private indexEntryBytes = 0;
  private indexEntries = 0;

  constructor() {
    this.reset();
  }

  reset(): void {
    this.counters = new Map(WORK_CLASSES.map((c) => [c, emptyCounter()]));
  }

  snapshot(): Record<WorkClass, WorkCounter> {
    return Object.fromEntries([...this.counters].map(([k, v]) => [k, { ...v }])) as Record<
      WorkClass,
      WorkCounter
    >;
  }

  /** Mean size of a byExpiry entry seen so far, with DynamoDB's 100-byte index overhead. */
  meanIndexEntryBytes(): number {
    return this.indexEntries === 0 ? 0 : this.indexEntryBytes / this.indexEntries;
  }

  attach(client: DynamoDBClient): void {
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const command = String((context as { commandName?: string }).commandName ?? 'unknown');
        const input = args.input as Input;
        if (typeof input.TableName !== 'string') return next(args);
        const kind = classify(command, input);
        const counting = this.enabled;
        if (counting && this.capacity) input.ReturnConsumedCapacity = 'INDEXES';
        const counter = this.counters.get(kind) as WorkCounter;
        if (counting) counter.requests++;
        let result: Awaited<ReturnType<typeof next>>;
        try {
          result = await next(args);
        } catch (err) {
          if (counting) counter.errors++;
          throw err;
        }
        const output = result.output as unknown as Input;
        if (counting) this.addCapacity(counter, command, output.ConsumedCapacity);
        if (
          command === 'UpdateItemCommand' ||
          command === 'PutItemCommand' ||
          command === 'DeleteItemCommand'
        ) {
          this.trackIndex(counter, counting, command, input, output);
        }
        return result;
      },
      { step: 'initialize', name: 'benchDynamoMeter', priority: 'high' },
    );
  }

  private addCapacity(counter: WorkCounter, command: string, consumed: unknown): void {
    if (!consumed || typeof consumed !== 'object') return;
    const c = consumed as {
      CapacityUnits?: number;
      Table?: { CapacityUnits?: number };
      GlobalSecondaryIndexes?: Record<string, { CapacityUnits?: number }>;
    };
    const total = c.CapacityUnits ?? 0;
    const isRead = command === 'GetItemCommand' || command === 'QueryCommand' || command === 'ScanCommand';
    if (isRead) counter.rcu += total;
    else counter.wcu += c.Table?.CapacityUnits ?? total;
  }

  private trackIndex(counter: WorkCounter, counting: boolean, command: string, input: Input, output: Input) {
    const key = plainItem((input.Key ?? input.Item ?? {}) as Input);
    const id = `${String(input.TableName)}\u0000${String(key[TABLE.partitionKey])}\u0000${String(key[TABLE.sortKey])}`;
    const before = this.shadow.get(id);
    let after: IndexKeys | undefined;
    let known = true;
    if (command === 'DeleteItemCommand') after = {};
    else if (command === 'PutItemCommand') after = indexKeys(plainItem(input.Item as Input));
    else if (output.Attributes && input.ReturnValues === 'ALL_NEW')
      after = indexKeys(plainItem(output.Attributes as Input));
    else known = false;
    if (!known || after === undefined) {
      if (counting) counter.gsiUnknown++;
      this.shadow.delete(id);
      return;
    }
    this.shadow.set(id, after);
    if (!counting) return;
    const wasIn = before !== undefined && inIndex(before);
    const isIn = inIndex(after);
    let writes = 0;
    if (wasIn && isIn) writes = before.shard !== after.shard || before.exp !== after.exp ? 2 : 0;
    else if (wasIn !== isIn) writes = 1;
    if (writes === 0) return;
    const entry =
      itemSize({
        [TABLE.partitionKey]: key[TABLE.partitionKey],
        [TABLE.sortKey]: key[TABLE.sortKey],
        [TABLE.shardAttribute]: (isIn ? after : before)?.shard,
        [TABLE.dueAttribute]: (isIn ? after : before)?.exp,
      }) + ITEM_OVERHEAD_BYTES;
    this.indexEntryBytes += entry;
    this.indexEntries++;
    counter.gsiWcu += writes * writeUnits(entry);
  }
}

const ATTRIBUTE_TYPES = new Set(['S', 'N', 'B', 'BOOL', 'NULL', 'M', 'L', 'SS', 'NS', 'BS']);

/** An item in plain values: the store's conditional writes are plain UpdateItems (AttributeValues). */
function plainItem(item: Input | undefined): Input {
  if (!item) return {};
  const values = Object.values(item);
  const typed = (v: unknown) =>
    v !== null &&
    typeof v === 'object' &&
    !(v instanceof Uint8Array) &&
    Object.keys(v).length === 1 &&
    ATTRIBUTE_TYPES.has(Object.keys(v)[0] as string);
  return values.length > 0 && values.every(typed) ? unmarshall(item as Record<string, AttributeValue>) : item;
}

function indexKeys(item: Input | undefined): IndexKeys {
  return { shard: item?.[TABLE.shardAttribute], exp: item?.[TABLE.dueAttribute] };
}

function inIndex(keys: IndexKeys): boolean {
  return keys.shard !== undefined && keys.exp !== undefined;
}
