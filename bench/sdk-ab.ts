import * as http from 'node:http';
import { parseArgs } from 'node:util';
import { DynamoDBClient, type DynamoDBClientConfig, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient, UpdateCommand } from '@aws-sdk/lib-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { Hash } from '@smithy/core/serde';
import { FetchHttpHandler } from '@smithy/fetch-http-handler';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { ensureTable } from '../functions/core/store/table.js';
import { runAb } from './ab.js';
import { startChild } from './children.js';
import { pool } from './env.js';

/**
 * `npm run bench:sdk`: an in-process A/B of DynamoDB client configurations on the keeper's hot
 * write (issue 15). dynalite runs in a child process; this process sends lease-shaped conditional
 * UpdateItems (ReturnValues ALL_NEW, an item of about 1.7 kB) through a document client, C at a time,
 * interleaved round by round (bench/ab.ts). `fetch` is the SDK's own FetchHttpHandler (a dependency
 * of @aws-sdk/client-dynamodb), over Node's fetch.
 *
 *   npm run bench:sdk -- --calls 2000 --rounds 7 --concurrency 32 [--variants default,fetch]
 */

const { values: flags } = parseArgs({
  options: {
    calls: { type: 'string', default: '2000' },
    rounds: { type: 'string', default: '7' },
    concurrency: { type: 'string', default: '32' },
    items: { type: 'string', default: '2000' },
    variants: { type: 'string' },
  },
});
const calls = Number(flags.calls);
const rounds = Number(flags.rounds);
const concurrency = Number(flags.concurrency);
const items = Number(flags.items);

const dynalite = await startChild('dynalite');
const base: DynamoDBClientConfig = {
  region: 'us-east-1',
  endpoint: dynalite.url,
  maxAttempts: 5,
  credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
};

/** Each variant: the client options it adds to createRuntime's (as of the base commit). */
const VARIANTS: Record<string, () => DynamoDBClientConfig> = {
  default: () => ({}),
  /** The default again: how far two identical clients differ here (the noise). */
  control: () => ({}),
  fetch: () => ({ requestHandler: new FetchHttpHandler({ keepAlive: true }) }),
  agent: () => ({
    requestHandler: { httpAgent: new http.Agent({ keepAlive: true, maxSockets: 2 * concurrency }) },
  }),
  'no-socket-timeout': () => ({ requestHandler: { socketTimeout: 0 } }),
  'timeouts-set': () => ({
    requestHandler: {
      connectionTimeout: 1000,
      requestTimeout: 5000,
      socketAcquisitionWarningTimeout: 60_000,
    },
  }),
  'account-id-off': () => ({ accountIdEndpointMode: 'disabled' }),
  'host-prefix-off': () => ({ disableHostPrefix: true }),
  /** Plain UpdateItems (see PLAIN), the middleware stack resolved on every call. */
  plain: () => ({}),
  /** Plain UpdateItems on a client that resolves its middleware stack once per command type. */
  'plain-cached': () => ({ cacheMiddleware: true }),
  /** No SDK client at all (see signedPost): the floor under the variants above. */
  'signed-post': () => ({}),
  combined: () => ({
    requestHandler: {
      httpAgent: new http.Agent({ keepAlive: true, maxSockets: 2 * concurrency }),
      socketTimeout: 0,
    },
    accountIdEndpointMode: 'disabled',
    disableHostPrefix: true,
  }),
};
const names = flags.variants ? flags.variants.split(',') : Object.keys(VARIANTS);
for (const name of names) if (!VARIANTS[name]) throw new Error(`unknown variant ${name}`);

const admin = new DynamoDBClient(base);
const table = `tk-sdk-ab-${process.pid}`;
await ensureTable(admin, table);
const adminDoc = DynamoDBDocumentClient.from(admin);
const blob = 'x'.repeat(1400);
await pool(items, 32, async (i) => {
  await adminDoc.send(
    new UpdateCommand({
      TableName: table,
      Key: { pk: `USER#u${i}`, sk: 'SESSION#p' },
      UpdateExpression: 'SET accessToken = :a, refreshToken = :r, #status = :active, version = :one',
      ExpressionAttributeNames: { '#status': 'status' },
      ExpressionAttributeValues: { ':a': blob, ':r': blob.slice(0, 200), ':active': 'active', ':one': 1 },
    }),
  );
});

/**
 * Variants sent as plain UpdateItems (marshalled with util-dynamodb, as the store's conditional
 * writes are since issue 15) instead of through a document client.
 */
const PLAIN = new Set(['plain', 'plain-cached', 'signed-post']);

const clients = names.map((name) => {
  const extra = VARIANTS[name]?.() ?? {};
  const client = new DynamoDBClient({ ...base, ...extra });
  // lib-dynamodb refuses a base client with cacheMiddleware: plain variants have no document client.
  const doc = PLAIN.has(name)
    ? undefined
    : DynamoDBDocumentClient.from(client, { marshallOptions: { removeUndefinedValues: true } });
  return { name, client, doc };
});

let seq = 0;
const leaseInput = (i: number) => ({
  TableName: table,
  Key: { pk: `USER#u${i % items}`, sk: 'SESSION#p' },
  UpdateExpression: 'SET leaseOwner = :owner, leaseUntil = :until',
  ConditionExpression:
    '#status = :active AND attribute_exists(refreshToken) AND (attribute_not_exists(leaseUntil) OR leaseUntil < :until)',
  ExpressionAttributeNames: { '#status': 'status' },
  ExpressionAttributeValues: {
    ':active': 'active',
    ':owner': `bench-${seq++}`,
    ':until': Date.now() + 60_000,
  },
  ReturnValues: 'ALL_NEW' as const,
});
/**
 * `signed-post`, a floor rather than a candidate: the same UpdateItem as a SigV4-signed POST of the
 * DynamoDB JSON protocol over a keep-alive agent, without the SDK's client (no retries, no error
 * mapping, no endpoint resolution). What the SDK's per-call machinery costs, measured.
 */
const endpoint = new URL(dynalite.url);
const postAgent = new http.Agent({ keepAlive: true, maxSockets: 2 * concurrency });
const signer = new SignatureV4({
  service: 'dynamodb',
  region: 'us-east-1',
  // The SDK's own Node hash (node:crypto), the one the DynamoDB client signs with.
  sha256: Hash.bind(null, 'sha256'),
  credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
});
const signedPost = async (input: ReturnType<typeof leaseInput>) => {
  const body = JSON.stringify({
    ...input,
    Key: marshall(input.Key),
    ExpressionAttributeValues: marshall(input.ExpressionAttributeValues),
  });
  const signed = await signer.sign(
    new HttpRequest({
      method: 'POST',
      protocol: 'http:',
      hostname: endpoint.hostname,
      port: Number(endpoint.port),
      path: '/',
      headers: {
        host: endpoint.host,
        'content-type': 'application/x-amz-json-1.0',
        'x-amz-target': 'DynamoDB_20120810.UpdateItem',
        'content-length': String(Buffer.byteLength(body)),
      },
      body,
    }),
  );
  const text = await new Promise<string>((resolve, reject) => {
    const req = http.request(
      {
        host: endpoint.hostname,
        port: endpoint.port,
        method: 'POST',
        path: '/',
        headers: signed.headers,
        agent: postAgent,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve(Buffer.concat(chunks).toString()));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
  const { Attributes } = JSON.parse(text) as { Attributes?: Record<string, never> };
  return Attributes ? unmarshall(Attributes) : {};
};

const lease = async (c: (typeof clients)[number], i: number) => {
  const input = leaseInput(i);
  if (c.name === 'signed-post') return signedPost(input);
  if (c.doc) return c.doc.send(new UpdateCommand(input));
  const { Attributes } = await c.client.send(
    new UpdateItemCommand({
      ...input,
      Key: marshall(input.Key),
      ExpressionAttributeValues: marshall(input.ExpressionAttributeValues),
    }),
  );
  return Attributes ? unmarshall(Attributes) : {};
};

// Warm every client's connections and code paths.
for (const c of clients) await pool(Math.min(calls, 500), concurrency, (i) => lease(c, i));

process.stdout.write(
  `\n${calls} lease-shaped UpdateItems per variant and round, C = ${concurrency}; ` +
    (await runAb(
      clients.map((c) => ({
        name: c.name,
        run: (n) => pool(n, concurrency, (i) => lease(c, i)).then(() => {}),
      })),
      rounds,
      calls,
    )),
);
for (const c of clients) c.client.destroy();
admin.destroy();
dynalite.stop();
