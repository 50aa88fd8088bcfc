import { randomUUID } from 'node:crypto';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetCommand } from '@aws-sdk/lib-dynamodb';
import { type Config, loadConfig } from '../../functions/core/config.js';
import { generateKeyringJson, parseKeyring } from '../../functions/core/crypto/crypto.js';
import type { SessionKey } from '../../functions/core/model.js';
import type { Clock, DomainEvent, FetchLike, Logger, MetricUnit } from '../../functions/core/ports.js';
import { createRuntime, type Runtime } from '../../functions/core/runtime.js';
import { TABLE } from '../../functions/core/store/table.js';
import type { DynaliteHandle } from './dynalite.js';

/**
 * A core runtime for unit tests: the real store on dynalite and the real runtime, with a clock the
 * test drives, a sleep that advances that clock, fixed jitter, recorded events and metrics, and a
 * scripted token endpoint as the injected `fetch` (the provider's HTTP boundary).
 */

/** 2030-01-01T12:00:00Z, whole seconds. */
export const T0 = Date.UTC(2030, 0, 1, 12);

export class FakeClock implements Clock {
  constructor(public t = T0) {}
  now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
  /** Epoch seconds, as `expiresAt` is stored. */
  seconds(): number {
    return Math.floor(this.t / 1000);
  }
}

/** How the scripted endpoint answers one token request. */
export type Reply =
  /** 200 with a new access token and (unless `rotate: false`) a new refresh token. */
  | { kind: 'rotate'; expiresIn?: number | null; rotate?: boolean }
  /** An OAuth error body (`{"error": …}`) with the given status. */
  | { kind: 'error'; status: number; error: string; description?: string; headers?: Record<string, string> }
  /** HTTP 200 with exactly this JSON body (a real provider's answer, shape for shape). */
  | { kind: 'json'; body: Record<string, unknown> }
  /** Any status and raw body. */
  | { kind: 'status'; status: number; body?: string; headers?: Record<string, string> }
  /** Never answers; fails when the request's abort signal fires. */
  | { kind: 'hang' };

export interface TokenRequestRecord {
  grantType?: string;
  refreshToken?: string;
  resource?: string;
  authorization?: string;
  /** Fake-clock time the request arrived. */
  at: number;
}

export interface Issued {
  accessToken: string;
  refreshToken?: string;
}

export interface Gate {
  /** Resolves when the request that took this gate has arrived at the endpoint. */
  arrived: Promise<void>;
  /** Lets that request be answered. */
  release(): void;
}

function aborted(signal: AbortSignal | null | undefined): Promise<never> {
  return new Promise((_, reject) => {
    if (!signal) return;
    if (signal.aborted) reject(signal.reason);
    else signal.addEventListener('abort', () => reject(signal.reason), { once: true });
  });
}

export class ScriptedTokenEndpoint {
  readonly url = 'http://127.0.0.1:9/oauth/token';
  readonly requests: TokenRequestRecord[] = [];
  /** Tokens issued by `rotate` answers, in order. */
  readonly issued: Issued[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** Real milliseconds each answer is delayed (so concurrent requests overlap). */
  latencyMs = 0;
  /** Fake-clock milliseconds each answer takes. */
  clockAdvanceMs = 0;
  private readonly queue: Reply[] = [];
  private readonly byToken = new Map<string, Reply>();
  private readonly gates: { arrive: () => void; released: Promise<void>; gate: Gate }[] = [];
  private readonly prefix = randomUUID().slice(0, 6);
  private counter = 0;

  constructor(private readonly clock: FakeClock) {}

  /** Queues answers for the next requests (in arrival order); afterwards the default is `rotate`. */
  reply(...replies: Reply[]): this {
    this.queue.push(...replies);
    return this;
  }

  /** Answers every request presenting `refreshToken` this way (takes precedence over the queue). */
  replyTo(refreshToken: string, reply: Reply): this {
    this.byToken.set(refreshToken, reply);
    return this;
  }

  /** The next request to arrive waits until the gate is released. */
  gate(): Gate {
    let arrive!: () => void;
    let release!: () => void;
    const arrived = new Promise<void>((r) => {
      arrive = r;
    });
    const released = new Promise<void>((r) => {
      release = r;
    });
    const gate: Gate = { arrived, release };
    this.gates.push({ arrive, released, gate });
    return gate;
  }

  /** Refresh tokens presented, in arrival order. */
  presented(): string[] {
    return this.requests.map((r) => r.refreshToken ?? '');
  }

  readonly fetch: FetchLike = async (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    if (url !== this.url) return new Response('not found', { status: 404 });
    const raw = init?.body;
    const form =
      raw instanceof URLSearchParams ? raw : new URLSearchParams(typeof raw === 'string' ? raw : '');
    const headers = new Headers(init?.headers);
    const record: TokenRequestRecord = {
      grantType: form.get('grant_type') ?? undefined,
      refreshToken: form.get('refresh_token') ?? undefined,
      resource: form.get('resource') ?? undefined,
      authorization: headers.get('authorization') ?? undefined,
      at: this.clock.now(),
    };
    this.requests.push(record);
    const reply = (record.refreshToken && this.byToken.get(record.refreshToken)) ||
      this.queue.shift() || { kind: 'rotate' };
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      const gate = this.gates.shift();
      if (gate) {
        gate.arrive();
        await Promise.race([gate.released, aborted(init?.signal)]);
      }
      if (this.latencyMs > 0) {
        await Promise.race([new Promise((r) => setTimeout(r, this.latencyMs)), aborted(init?.signal)]);
      }
      if (reply.kind === 'hang') return await aborted(init?.signal);
      this.clock.advance(this.clockAdvanceMs);
      return this.answer(reply);
    } finally {
      this.inFlight--;
    }
  };

  private answer(reply: Exclude<Reply, { kind: 'hang' }>): Response {
    const json = { 'content-type': 'application/json', 'cache-control': 'no-store' };
    switch (reply.kind) {
      case 'rotate': {
        const n = ++this.counter;
        const issued: Issued = { accessToken: `at-${this.prefix}-${n}` };
        if (reply.rotate !== false) issued.refreshToken = `rt-${this.prefix}-${n}`;
        this.issued.push(issued);
        const expiresIn = reply.expiresIn === undefined ? 3600 : reply.expiresIn;
        const body: Record<string, unknown> = { access_token: issued.accessToken, token_type: 'Bearer' };
        if (expiresIn !== null) body.expires_in = expiresIn;
        if (issued.refreshToken) body.refresh_token = issued.refreshToken;
        return new Response(JSON.stringify(body), { status: 200, headers: json });
      }
      case 'error':
        return new Response(
          JSON.stringify({ error: reply.error, error_description: reply.description ?? reply.error }),
          { status: reply.status, headers: { ...json, ...reply.headers } },
        );
      case 'json':
        return new Response(JSON.stringify(reply.body), { status: 200, headers: json });
      case 'status':
        return new Response(reply.body ?? null, { status: reply.status, headers: reply.headers });
    }
  }
}

export interface RecordedMetric {
  name: string;
  unit: MetricUnit;
  value: number;
  dimensions?: Record<string, string>;
}

export interface CoreFixture {
  runtime: Runtime;
  config: Config;
  clock: FakeClock;
  endpoint: ScriptedTokenEndpoint;
  events: DomainEvent[];
  metrics: RecordedMetric[];
  /** Every sleep the core asked for, in ms (each advanced the fake clock). */
  sleeps: number[];
  /** Called on every sleep after the clock advanced (e.g. to let another process finish). */
  onSleep?: (ms: number) => Promise<void> | void;
  keyringJson: string;
  handle: DynaliteHandle;
}

export interface CoreFixtureOptions {
  env?: Record<string, string>;
  tableName?: string;
  /** Share with another fixture to model a second process on the same table. */
  clock?: FakeClock;
  endpoint?: ScriptedTokenEndpoint;
  keyringJson?: string;
  /** A DynamoDB client of the test's own (for example with failure-injecting middleware). */
  dynamodb?: DynamoDBClient;
  /** Let the runtime build its own DynamoDB clients from the configuration, as the handlers do. */
  ownClients?: boolean;
  /** Where the core's log lines go (silent by default). */
  logger?: Logger;
}

export function createCoreFixture(handle: DynaliteHandle, options: CoreFixtureOptions = {}): CoreFixture {
  const config = loadConfig({
    TOKENKEEPER_TABLE_NAME: options.tableName ?? handle.tableName,
    TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
    ...(options.ownClients ? { TOKENKEEPER_DYNAMODB_ENDPOINT: handle.endpoint } : {}),
    ...options.env,
  });
  const clock = options.clock ?? new FakeClock();
  const endpoint = options.endpoint ?? new ScriptedTokenEndpoint(clock);
  const keyringJson = options.keyringJson ?? generateKeyringJson();
  const keyring = parseKeyring(keyringJson);
  const events: DomainEvent[] = [];
  const metrics: RecordedMetric[] = [];
  const sleeps: number[] = [];
  const fixture = {} as CoreFixture;
  const runtime = createRuntime({
    config,
    dynamodb: options.ownClients ? undefined : (options.dynamodb ?? handle.client),
    logger: options.logger,
    clock,
    sleep: async (ms) => {
      sleeps.push(ms);
      clock.advance(ms);
      await fixture.onSleep?.(ms);
    },
    random: () => 0.5,
    fetch: endpoint.fetch,
    keyring: async () => keyring,
    events: {
      publish: async (event) => {
        events.push(event);
      },
    },
    metrics: {
      add: (name, unit, value, dimensions) =>
        metrics.push(dimensions ? { name, unit, value, dimensions } : { name, unit, value }),
    },
  });
  Object.assign(fixture, { runtime, config, clock, endpoint, events, metrics, sleeps, keyringJson, handle });
  return fixture;
}

/** A second process on the same table: same clock, token endpoint and keyring, its own runtime. */
export function createPeer(fx: CoreFixture, env?: Record<string, string>): CoreFixture {
  return createCoreFixture(fx.handle, {
    env,
    tableName: fx.config.tableName,
    clock: fx.clock,
    endpoint: fx.endpoint,
    keyringJson: fx.keyringJson,
  });
}

let seq = 0;
export function uniqueId(prefix: string): string {
  return `${prefix}-${++seq}-${randomUUID().slice(0, 8)}`;
}

export const CLIENT_SECRET = 'client-secret-for-unit-tests';
export const RESOURCE = 'https://mcp.example.test/';

/** Registers a provider whose token endpoint is the scripted one. */
export async function addProvider(fx: CoreFixture, providerId = uniqueId('prov')): Promise<string> {
  await fx.runtime.providers.put(providerId, {
    tokenEndpoint: fx.endpoint.url,
    clientId: 'tk-client',
    clientSecret: CLIENT_SECRET,
    clientAuthMethod: 'client_secret_basic',
    resource: RESOURCE,
  });
  return providerId;
}

export interface SessionSpec {
  providerId: string;
  userId?: string;
  /** Seconds from now; `null` stores no expiry. Default 3600. */
  expiresIn?: number | null;
  /** `null` stores no refresh token. */
  refreshToken?: string | null;
  /**
   * The lifetime its tokens had when the session was stored, which decides its refresh mode; the
   * store is told it was stored that long before `expiresIn` was left. Default: an hour-long token
   * (so the sweep keeps it), or `expiresIn` when that is longer.
   */
  storedLifetime?: number;
}

export interface TestSession {
  key: SessionKey;
  accessToken: string;
  refreshToken?: string;
  expiresAt?: number;
}

/** Stores a session through the real store, as a login would. */
export async function addSession(fx: CoreFixture, spec: SessionSpec): Promise<TestSession> {
  const key = { userId: spec.userId ?? uniqueId('user'), providerId: spec.providerId };
  const accessToken = `at-initial-${uniqueId('a')}`;
  const refreshToken = spec.refreshToken === null ? undefined : (spec.refreshToken ?? uniqueId('rt-initial'));
  const expiresIn = spec.expiresIn === undefined ? 3600 : spec.expiresIn;
  const expiresAt = expiresIn === null ? undefined : fx.clock.seconds() + expiresIn;
  const lifetime = expiresIn === null ? 0 : (spec.storedLifetime ?? Math.max(3600, expiresIn));
  await fx.runtime.store.putSession(
    { ...key, accessToken, refreshToken, tokenType: 'Bearer', expiresAt },
    fx.clock.now() - Math.max(0, lifetime - (expiresIn ?? 0)) * 1000,
  );
  return { key, accessToken, refreshToken, expiresAt };
}

/** The item exactly as DynamoDB holds it. */
export async function rawItem(
  fx: CoreFixture,
  key: SessionKey,
): Promise<Record<string, unknown> | undefined> {
  const { Item } = await fx.handle.doc.send(
    new GetCommand({
      TableName: fx.config.tableName,
      Key: { [TABLE.partitionKey]: `USER#${key.userId}`, [TABLE.sortKey]: `SESSION#${key.providerId}` },
      ConsistentRead: true,
    }),
  );
  return Item;
}

/** The stored session with its tokens opened. */
export async function readSession(fx: CoreFixture, key: SessionKey) {
  const record = await fx.runtime.store.getSession(key, { consistent: true });
  if (!record) throw new Error(`no session for ${key.userId}/${key.providerId}`);
  return { record, ...(await fx.runtime.store.reveal(record)) };
}
