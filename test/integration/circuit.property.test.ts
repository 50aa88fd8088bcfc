import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FetchLike } from '../../functions/core/ports.js';
import type { Admission } from '../../functions/core/refresh/circuit.js';
import type { LeaseCondition } from '../../functions/core/store/store.js';
import { ensureTable } from '../../functions/core/store/table.js';
import {
  addProvider,
  addSession,
  type CoreFixture,
  createCoreFixture,
  createPeer,
  FakeClock,
  type Reply,
  ScriptedTokenEndpoint,
  type TestSession,
  uniqueId,
} from '../support/core-fixture.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';

/**
 * A model-based property test of the provider circuit with the session lease: random interleavings
 * of sweeps, refreshes and token calls in three runtimes (think: Lambda containers) sharing one
 * table, while the token endpoint fails (503, 500, 429 with Retry-After, invalid_client), recovers,
 * answers slowly, and the clock moves. The runtimes read the circuit afresh for every decision
 * (TOKENKEEPER_CIRCUIT_CACHE_MS=0; a cache only widens by its TTL when another process learns of an
 * opening). Every token request is checked as it arrives, against the circuit's state as its writes
 * returned:
 *
 * - never more than one probe in flight per provider;
 * - never a grant while the circuit is open, except its probe, or a grant admitted before the circuit
 *   opened (in flight when it failed);
 * - and after every command: no lease and no probe claim left behind.
 */

interface Mirror {
  state: 'closed' | 'open' | 'half_open';
  /** Sequence number at which the circuit last went from closed to open. */
  openedAt: number;
  probeOwner?: string;
}

class World {
  seq = 0;
  mirror: Mirror = { state: 'closed', openedAt: 0 };
  /** Sequence number at which each refresh (by lease owner) asked the circuit for admission. */
  admittedAt = new Map<string, number>();
  /** Which lease owner holds each refresh token (set when the lease is taken). */
  ownerOf = new Map<string, string>();
  probesInFlight = 0;
  grants = 0;
  probes = 0;
  violations: string[] = [];
  mode: Reply | null = null;
}

class ObservedEndpoint extends ScriptedTokenEndpoint {
  constructor(
    clock: FakeClock,
    private readonly world: World,
  ) {
    super(clock);
  }
  readonly observed: FetchLike = async (input, init) => {
    const w = this.world;
    const form = new URLSearchParams(typeof init?.body === 'string' ? init.body : String(init?.body ?? ''));
    const owner = this.ownerOf(form.get('refresh_token'));
    const isProbe = owner !== undefined && owner === w.mirror.probeOwner;
    w.grants++;
    if (w.mirror.state !== 'closed' && !isProbe) {
      const admitted = owner === undefined ? undefined : w.admittedAt.get(owner);
      if (admitted === undefined || admitted > w.mirror.openedAt) {
        w.violations.push(
          `a grant while the circuit is ${w.mirror.state} (admitted at ${admitted}, opened at ${w.mirror.openedAt})`,
        );
      }
    }
    if (isProbe) {
      w.probes++;
      w.probesInFlight++;
      if (w.probesInFlight > 1) w.violations.push(`${w.probesInFlight} probes in flight`);
    }
    if (w.mode) this.reply(w.mode);
    try {
      return await this.fetch(input, init);
    } finally {
      if (isProbe) w.probesInFlight--;
    }
  };
  private ownerOf(refreshToken: string | null): string | undefined {
    return refreshToken === null ? undefined : this.world.ownerOf.get(refreshToken);
  }
}

const SESSIONS = 5;
let handle: DynaliteHandle;

beforeAll(async () => {
  handle = await startDynalite();
});
afterAll(() => handle?.stop());

interface Real {
  world: World;
  runtimes: CoreFixture[];
  sessions: TestSession[];
  providerId: string;
  clock: FakeClock;
  endpoint: ObservedEndpoint;
}

/** Three runtimes on a fresh table, each observed at its store and circuit; one provider, five sessions. */
async function setUp(): Promise<Real> {
  const world = new World();
  const clock = new FakeClock();
  const endpoint = new ObservedEndpoint(clock, world);
  const tableName = uniqueId('tk-model');
  await ensureTable(handle.client, tableName);
  const env = { TOKENKEEPER_CIRCUIT_CACHE_MS: '0', TOKENKEEPER_HTTP_TIMEOUT_MS: '1000' };
  const base = createCoreFixture(handle, { tableName, clock, env, endpoint: observedAsEndpoint(endpoint) });
  const runtimes = [base, createPeer(base, env), createPeer(base, env)];
  const providerId = await addProvider(base);
  const sessions: TestSession[] = [];
  for (let i = 0; i < SESSIONS; i++) sessions.push(await addSession(base, { providerId, expiresIn: 120 }));
  for (const fx of runtimes) observe(fx, world);
  return { world, runtimes, sessions, providerId, clock, endpoint };
}

/** The fixture takes `endpoint.fetch`: hand it the observing fetch instead. */
function observedAsEndpoint(endpoint: ObservedEndpoint): ScriptedTokenEndpoint {
  return Object.assign(Object.create(endpoint) as ScriptedTokenEndpoint, { fetch: endpoint.observed });
}

/** Wraps the runtime's store (the port) and circuit to keep the mirror and the admission log. */
function observe(fx: CoreFixture, world: World): void {
  const store = fx.runtime.store;
  const tick = () => ++world.seq;
  const wrap = <K extends keyof typeof store>(name: K, after: (result: never, args: never[]) => void) => {
    const original = (store[name] as (...args: unknown[]) => Promise<unknown>).bind(store);
    (store as unknown as Record<string, unknown>)[name] = async (...args: unknown[]) => {
      const result = await original(...args);
      after(result as never, args as never[]);
      return result;
    };
  };
  wrap('openCircuit', (r: unknown) => {
    if (r) world.mirror = { state: 'open', openedAt: tick() };
  });
  wrap('reopenCircuit', (r: unknown) => {
    if (r) world.mirror = { ...world.mirror, state: 'open', probeOwner: undefined };
  });
  wrap('claimCircuitProbe', (r: unknown, args: never[]) => {
    if (r) world.mirror = { ...world.mirror, state: 'half_open', probeOwner: args[1] as string };
  });
  wrap('releaseCircuitProbe', (_r: unknown, args: never[]) => {
    if (world.mirror.probeOwner === (args[1] as string))
      world.mirror = { ...world.mirror, probeOwner: undefined };
  });
  wrap('closeCircuit', (r: unknown) => {
    if (r) world.mirror = { state: 'closed', openedAt: world.mirror.openedAt };
  });
  const acquire = store.acquireLease.bind(store);
  store.acquireLease = async (...args) => {
    const leased = await acquire(...args);
    if (leased) world.ownerOf.set((await store.reveal(leased)).refreshToken as string, args[1]);
    return leased;
  };
  const circuit = fx.runtime.circuit;
  const admit = circuit.admit.bind(circuit);
  circuit.admit = (providerId: string, owner: string): Promise<Admission> => {
    world.admittedAt.set(owner, tick());
    return admit(providerId, owner);
  };
}

type Op =
  | { type: 'sweep'; via: number }
  | { type: 'refresh'; via: number; session: number }
  | { type: 'token'; via: number; session: number; force: boolean };

const MODES: Record<string, Reply | null> = {
  ok: { kind: 'rotate', expiresIn: 300 },
  '503': { kind: 'status', status: 503 },
  '500': { kind: 'status', status: 500 },
  '429 Retry-After 3': { kind: 'status', status: 429, headers: { 'retry-after': '3' } },
  invalid_client: { kind: 'error', status: 401, error: 'invalid_client' },
};

async function run(real: Real, op: Op): Promise<void> {
  const fx = real.runtimes[op.via] as CoreFixture;
  const key = (real.sessions[op.type === 'sweep' ? 0 : op.session] as TestSession).key;
  const sweepCondition: LeaseCondition = { kind: 'sweep', dueBy: real.clock.seconds() + 600 };
  try {
    if (op.type === 'sweep') await fx.runtime.sweeper.sweep();
    else if (op.type === 'refresh') await fx.runtime.refresher.refresh(key, sweepCondition);
    else await fx.runtime.tokens.getToken(key, { minValidity: 200, force: op.force });
  } catch (err) {
    const name = (err as Error).constructor.name;
    if (!['RefreshUnavailableError', 'InvalidRequestError', 'ReauthorizationRequiredError'].includes(name)) {
      throw err;
    }
  }
}

async function checkAfter(real: Real): Promise<void> {
  expect(real.world.violations).toEqual([]);
  for (const s of real.sessions) {
    const r = await real.runtimes[0]?.runtime.store.getSession(s.key, { consistent: true });
    expect(r?.leaseOwner, 'a lease was left behind').toBeUndefined();
  }
  const c = await real.runtimes[0]?.runtime.store.getCircuit(real.providerId);
  expect(c?.probeOwner, 'a probe claim was left behind').toBeUndefined();
}

class OpsCommand implements fc.AsyncCommand<object, Real> {
  constructor(readonly ops: Op[]) {}
  check = () => true;
  run = async (_m: object, real: Real) => {
    await Promise.all(this.ops.map((op) => run(real, op)));
    await checkAfter(real);
  };
  toString = () => `ops${JSON.stringify(this.ops)}`;
}

class ModeCommand implements fc.AsyncCommand<object, Real> {
  constructor(readonly label: string) {}
  check = () => true;
  run = async (_m: object, real: Real) => {
    real.world.mode = MODES[this.label] ?? null;
  };
  toString = () => `mode(${this.label})`;
}

class StepCommand implements fc.AsyncCommand<object, Real> {
  constructor(readonly ms: number) {}
  check = () => true;
  run = async (_m: object, real: Real) => {
    real.clock.advance(this.ms);
  };
  toString = () => `step(${this.ms}ms)`;
}

class LatencyCommand implements fc.AsyncCommand<object, Real> {
  constructor(readonly ms: number) {}
  check = () => true;
  run = async (_m: object, real: Real) => {
    real.endpoint.latencyMs = this.ms;
  };
  toString = () => `latency(${this.ms}ms)`;
}

const via = fc.integer({ min: 0, max: 2 });
const session = fc.integer({ min: 0, max: SESSIONS - 1 });
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ type: fc.constant('sweep' as const), via }),
  fc.record({ type: fc.constant('refresh' as const), via, session }),
  fc.record({ type: fc.constant('token' as const), via, session, force: fc.boolean() }),
);
const commands: fc.Arbitrary<fc.AsyncCommand<object, Real>>[] = [
  fc.array(op, { minLength: 1, maxLength: 8 }).map((ops) => new OpsCommand(ops)),
  fc.array(op, { minLength: 1, maxLength: 8 }).map((ops) => new OpsCommand(ops)),
  fc.constantFrom(...Object.keys(MODES)).map((label) => new ModeCommand(label)),
  fc.integer({ min: 200, max: 12_000 }).map((ms) => new StepCommand(ms)),
  fc.constantFrom(0, 5, 20).map((ms) => new LatencyCommand(ms)),
];

describe('model-based: the provider circuit with leases, across runtimes', () => {
  it('never more than one probe in flight, never a grant while open (but its probe), nothing left behind', async () => {
    let grants = 0;
    let probes = 0;
    let openings = 0;
    await fc.assert(
      fc.asyncProperty(fc.commands(commands, { size: 'large', maxCommands: 30 }), async (cmds) => {
        const real = await setUp();
        await fc.asyncModelRun(() => ({ model: {}, real }), cmds);
        grants += real.world.grants;
        probes += real.world.probes;
        openings += real.runtimes
          .flatMap((fx) => fx.events)
          .filter((e) => e.detailType === 'ProviderUnavailable').length;
      }),
      { numRuns: Number(process.env.MODEL_RUNS ?? 25), endOnFailure: true },
    );
    console.log(`circuit model: ${grants} grants, ${probes} probes, ${openings} openings, no violation`);
    expect(probes).toBeGreaterThan(0);
  }, 180_000);
});
