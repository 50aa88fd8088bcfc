import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReauthorizationRequiredError, RefreshUnavailableError } from '../../functions/core/errors.js';
import type { CircuitRecord } from '../../functions/core/model.js';
import type { Runtime } from '../../functions/core/runtime.js';
import type { SessionRecord } from '../../functions/core/store/store.js';
import {
  type Connected,
  connect,
  eventsFor,
  getToken,
  record,
  registerProviders,
  SteppedClock,
} from '../support/keeper-flows.js';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';
import type { TokenFault, TokenRequestRecord } from '../support/token-proxy.js';

/**
 * A model-based property test: random interleavings of sweeps, on-demand and forced token calls
 * (alone or in concurrent bursts, over the HTTP API and two peer runtimes), clock steps, injected
 * faults and heals, against oidc-provider (rotation + reuse detection) and dynalite. Three sessions,
 * one per provider and therefore one per OAuth client, so the proxy's records say which session
 * each token request was for. After every command:
 *
 * - no refresh token is ever redeemed twice (injected faults are answered without forwarding, so a
 *   failed attempt never consumes a token), and the provider never refuses a forwarded grant;
 * - no session disappears, and a session is reauthorization_required exactly when an invalid_grant
 *   was served for it (announced once);
 * - every served token is valid for the caller's minValidity (and active at the provider), newer
 *   than the one before a forced call, or the caller gets an explicit error that the state explains;
 * - a session backing off is not presented to the provider, and no lease is left behind.
 *
 * The keeper's clock is frozen between steps; the provider's access tokens live 900 s of real time,
 * so every token served during the run stays active there. Latency commands stay far below the
 * 1 s grant timeout: a grant whose answer never came within its life is the one unavoidable way to
 * present a refresh token twice (see crash.test.ts), and is not what this test is about. A pause
 * command freezes the process once the next grant's answer is in its socket — longer than the
 * grant's life, with the keeper's clock jumping up to 25 s (inside the lease) — so on waking its
 * timers run before the answer is read: the answer must still be committed.
 * `MODEL_RUNS=100 npx vitest run test/integration/model.property.test.ts` for a longer search.
 */

const ACCESS_TTL = 900;
/** How long a pause blocks the process: longer than the 1 s grant timeout, so its timer runs late. */
const PAUSE_MS = 1_500;
/** Pauses that have happened (a command's 503 may be explained by one during it). */
let pauses = 0;
const PROVIDERS = ['mcp', 'mcp-post', 'mcp-public'] as const;

let oauth: OAuthServer;
let stack: TestStack;
let peers: Runtime[];
const clock = new SteppedClock();

beforeAll(async () => {
  oauth = await startOAuthServer({ accessTokenTtl: ACCESS_TTL });
  stack = await startTestStack({
    clock,
    env: { TOKENKEEPER_HTTP_TIMEOUT_MS: '1000', TOKENKEEPER_GRANT_TIMEOUT_MS: '1000' },
  });
  await registerProviders(stack, oauth);
  peers = [stack.peer(), stack.peer()];
});

afterAll(async () => {
  await stack?.stop();
  await oauth?.stop();
});

interface Real {
  sessions: Connected[];
  clientIds: string[];
  /** Index into proxy.requests where this run began. */
  requestsFrom: number;
}

type Model = Record<string, never>;

type TokenOp = { type: 'token'; session: number; minValidity: number; force: boolean; via: number };
type SweepOp = { type: 'sweep'; via: number };
type Op = TokenOp | SweepOp;

type FaultSpec = { label: string; fault: TokenFault };

const FAULTS: FaultSpec[] = [
  { label: '500', fault: { kind: 'status', status: 500 } },
  { label: '503', fault: { kind: 'status', status: 503 } },
  { label: '429 Retry-After 30', fault: { kind: 'status', status: 429, headers: { 'retry-after': '30' } } },
  { label: 'reset', fault: { kind: 'reset' } },
  { label: 'malformed-json', fault: { kind: 'malformed-json' } },
  { label: '200 with error', fault: { kind: 'oauth-error-200', error: 'server_error' } },
  { label: 'missing access_token', fault: { kind: 'missing-access-token' } },
  { label: 'oversized', fault: { kind: 'oversized' } },
  { label: 'invalid_client', fault: { kind: 'oauth-error', status: 401, error: 'invalid_client' } },
];
const HANG: FaultSpec = { label: 'hang', fault: { kind: 'hang' } };
const INVALID_GRANT: FaultSpec = {
  label: 'invalid_grant',
  fault: { kind: 'oauth-error', status: 400, error: 'invalid_grant' },
};

const isInvalidGrant = (r: TokenRequestRecord) => r.fault === 'oauth-error' && r.status === 400;
const viaName = (via: number) => (via === 0 ? 'api' : `peer${via}`);

function opString(op: Op): string {
  return op.type === 'sweep'
    ? `sweep(${viaName(op.via)})`
    : `token(s${op.session}, ${op.force ? 'force' : `min=${op.minValidity}`}, ${viaName(op.via)})`;
}

interface Before {
  now: number;
  records: SessionRecord[];
  /** Each session's provider circuit (one session per provider). */
  circuits: (CircuitRecord | undefined)[];
  accessTokens: string[];
  requestIndex: number;
  pauses: number;
}

async function snapshot(real: Real): Promise<Before> {
  const records: SessionRecord[] = [];
  const accessTokens: string[] = [];
  for (const s of real.sessions) {
    const r = (await record(stack, s)) as SessionRecord;
    records.push(r);
    accessTokens.push((await stack.stack.runtime.store.reveal(r, 'access')).accessToken);
  }
  const circuits = await Promise.all(
    real.sessions.map((s) => stack.stack.runtime.store.getCircuit(s.providerId)),
  );
  return {
    now: clock.now(),
    records,
    accessTokens,
    circuits,
    requestIndex: oauth.proxy.requests.length,
    pauses,
  };
}

/**
 * The provider circuit may try a session before its own nextAttemptAt (issue 11): as the probe of an
 * open circuit, or once the circuit closed, when the session's failure fell in the outage.
 */
function circuitMayTry(circuit: CircuitRecord | undefined, r: SessionRecord): boolean {
  if (!circuit) return false;
  if (circuit.state !== 'closed') return true;
  const failedAt = r.lastError?.at;
  const o = circuit.lastOutage;
  return failedAt !== undefined && o !== undefined && failedAt >= o.from - 60_000 && failedAt <= o.to;
}

type Outcome = { ok: true; accessToken: string; expiresAt: number | null } | { ok: false; code: string };

const API_ERRORS: Record<string, number> = {
  refresh_unavailable: 503,
  reauthorization_required: 409,
  invalid_request: 400,
};

async function runToken(real: Real, op: TokenOp): Promise<Outcome> {
  const key = real.sessions[op.session] as Connected;
  if (op.via === 0) {
    const res = await getToken(stack, key, `?minValidity=${op.minValidity}${op.force ? '&force=true' : ''}`);
    if (res.status === 200) {
      const body = res.body as { access_token: string; expires_at: number | null };
      return { ok: true, accessToken: body.access_token, expiresAt: body.expires_at };
    }
    const code = (res.body as { error?: string } | undefined)?.error ?? `http_${res.status}`;
    expect(API_ERRORS[code], `unexpected answer ${res.status} ${res.text}`).toBe(res.status);
    if (code === 'refresh_unavailable') expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    return { ok: false, code };
  }
  try {
    const t = await (peers[op.via - 1] as Runtime).tokens.getToken(key, {
      minValidity: op.minValidity,
      force: op.force,
    });
    return { ok: true, accessToken: t.access_token, expiresAt: t.expires_at };
  } catch (err) {
    if (err instanceof RefreshUnavailableError) {
      expect(err.retryAfterSeconds).toBeGreaterThan(0);
      return { ok: false, code: 'refresh_unavailable' };
    }
    if (err instanceof ReauthorizationRequiredError) return { ok: false, code: 'reauthorization_required' };
    throw err;
  }
}

async function runSweep(op: SweepOp): Promise<void> {
  if (op.via === 0) await stack.sweep();
  else await (peers[op.via - 1] as Runtime).sweeper.sweep();
}

/** Runs ops concurrently and checks each token outcome against the state before and after. */
async function execute(real: Real, ops: Op[]): Promise<void> {
  const before = await snapshot(real);
  const outcomes = await Promise.all(
    ops.map(async (op) => (op.type === 'token' ? { op, outcome: await runToken(real, op) } : runSweep(op))),
  );
  const during = oauth.proxy.requests.slice(before.requestIndex);
  const after = await Promise.all(real.sessions.map((s) => record(stack, s)));
  const nowSeconds = Math.floor(clock.now() / 1000);

  // A session backing off is never presented to the provider (unless its provider's circuit says so).
  const circuitsAfter = await Promise.all(
    real.sessions.map((s) => stack.stack.runtime.store.getCircuit(s.providerId)),
  );
  for (const [i, r] of before.records.entries()) {
    const lifted = circuitMayTry(before.circuits[i], r) || circuitMayTry(circuitsAfter[i], r);
    if (r.status === 'active' && r.nextAttemptAt !== undefined && r.nextAttemptAt > before.now && !lifted) {
      expect(
        during.filter((q) => q.clientId === real.clientIds[i]),
        `s${i} was presented during its backoff`,
      ).toHaveLength(0);
    }
  }

  for (const entry of outcomes) {
    if (!entry) continue;
    const { op, outcome } = entry;
    const label = opString(op);
    const faultsForIt = during.filter(
      (q) => q.clientId === real.clientIds[op.session] && q.fault !== undefined,
    );
    if (outcome.ok) {
      // Valid for the caller's minValidity, on the keeper's clock. minValidity is a wish: beyond half
      // the lifetime the provider issues, the freshest token is served instead of a 400.
      expect(outcome.expiresAt, label).not.toBeNull();
      expect((outcome.expiresAt as number) - nowSeconds, label).toBeGreaterThanOrEqual(
        Math.min(op.minValidity, Math.floor(ACCESS_TTL / 2)),
      );
      if (op.force)
        expect(outcome.accessToken, `${label} served the token it had`).not.toBe(
          before.accessTokens[op.session],
        );
      expect((await oauth.introspect(outcome.accessToken)).active, `${label} served an inactive token`).toBe(
        true,
      );
      continue;
    }
    switch (outcome.code) {
      case 'reauthorization_required':
        expect(after[op.session]?.status, label).toBe('reauthorization_required');
        break;
      case 'refresh_unavailable': {
        // Explained by a failure served for this session now, a backoff already in place, its
        // provider's circuit not closed before, or a pause during the call (its wait ran out).
        const prior = before.records[op.session] as SessionRecord;
        const backingOff = prior.nextAttemptAt !== undefined && prior.nextAttemptAt > before.now;
        const circuitOpen = (before.circuits[op.session]?.state ?? 'closed') !== 'closed';
        expect(
          faultsForIt.length > 0 || backingOff || circuitOpen || pauses > before.pauses,
          `${label}: unexplained refresh_unavailable`,
        ).toBe(true);
        break;
      }
      default:
        throw new Error(`${label}: unexpected error ${outcome.code}`);
    }
  }
  await checkInvariants(real);
}

async function checkInvariants(real: Real): Promise<void> {
  const requests = oauth.proxy.requests.slice(real.requestsFrom);
  // No refresh token redeemed twice; the provider never refused a forwarded grant.
  expect(oauth.proxy.reuseCount(), 'a refresh token was redeemed twice').toBe(0);
  for (const r of requests.filter((q) => q.forwarded)) expect(r.status).toBe(200);
  for (const [i, s] of real.sessions.entries()) {
    const r = await record(stack, s);
    expect(r, `s${i} disappeared`).toBeDefined();
    if (!r) return;
    expect(r.leaseOwner, `s${i} still leased`).toBeUndefined();
    const invalidGrantServed = requests.some((q) => q.clientId === real.clientIds[i] && isInvalidGrant(q));
    const dead = r.status === 'reauthorization_required';
    expect(dead, `s${i}: dead=${dead} but invalid_grant served=${invalidGrantServed}`).toBe(
      invalidGrantServed,
    );
    if (dead) expect(r.lastError?.code).toBe('invalid_grant');
    else expect(r.refreshTokenSealed).toBeDefined();
    expect(eventsFor(stack.logs, 'SessionReauthorizationRequired', s)).toHaveLength(dead ? 1 : 0);
    // Recoveries are announced at most once per failure streak, so never more than the faults served.
    const faultsServed = requests.filter((q) => q.clientId === real.clientIds[i] && q.fault !== undefined);
    expect(eventsFor(stack.logs, 'SessionRecovered', s).length).toBeLessThanOrEqual(faultsServed.length);
  }
}

class OpsCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly ops: Op[]) {}
  check = () => true;
  run = (_m: Model, real: Real) => execute(real, this.ops);
  toString = () =>
    this.ops.length === 1 ? opString(this.ops[0] as Op) : `burst[${this.ops.map(opString).join(', ')}]`;
}

class StepCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly seconds: number) {}
  check = () => true;
  run = async (_m: Model, real: Real) => {
    clock.advance(this.seconds * 1000);
    await checkInvariants(real);
  };
  toString = () => `step(${this.seconds}s)`;
}

class FaultCommand implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly spec: FaultSpec,
    readonly times: number,
  ) {}
  check = () => true;
  run = async () => {
    oauth.proxy.setFault({ ...this.spec.fault, times: this.times });
  };
  toString = () => `fault(${this.spec.label} x${this.times})`;
}

class LatencyCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly ms: number) {}
  check = () => true;
  run = async () => {
    // Well below the 1 s timeout: slower grants widen the windows in which calls overlap.
    oauth.proxy.setLatency(this.ms);
  };
  toString = () => `latency(${this.ms}ms)`;
}

/**
 * Delays the processing of the next grant's answer by the process that receives it: once the answer
 * is in its socket, the process stops for PAUSE_MS and its clock jumps `seconds` (inside the lease).
 */
class PauseCommand implements fc.AsyncCommand<Model, Real> {
  constructor(readonly seconds: number) {}
  check = () => true;
  run = async () => {
    oauth.proxy.pauseAfterNextAnswer(PAUSE_MS, () => {
      pauses++;
      clock.advance(this.seconds * 1000);
    });
  };
  toString = () => `pause(${this.seconds}s)`;
}

class HealCommand implements fc.AsyncCommand<Model, Real> {
  check = () => true;
  run = async (_m: Model, real: Real) => {
    oauth.proxy.setFault(null);
    await checkInvariants(real);
  };
  toString = () => 'heal';
}

const tokenOp: fc.Arbitrary<TokenOp> = fc.record({
  type: fc.constant('token' as const),
  session: fc.integer({ min: 0, max: PROVIDERS.length - 1 }),
  minValidity: fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 0, max: 600 }) },
    { weight: 1, arbitrary: fc.integer({ min: 601, max: ACCESS_TTL + 100 }) },
  ),
  force: fc.boolean(),
  via: fc.integer({ min: 0, max: 2 }),
});
const sweepOp: fc.Arbitrary<SweepOp> = fc.record({
  type: fc.constant('sweep' as const),
  via: fc.integer({ min: 0, max: 2 }),
});
const op: fc.Arbitrary<Op> = fc.oneof({ weight: 3, arbitrary: tokenOp }, { weight: 1, arbitrary: sweepOp });
/** A burst on one session: the interleavings most likely to race for its refresh token. */
const sameSessionBurst: fc.Arbitrary<Op[]> = fc
  .tuple(fc.integer({ min: 0, max: PROVIDERS.length - 1 }), fc.array(op, { minLength: 2, maxLength: 6 }))
  .map(([session, ops]) => ops.map((o) => (o.type === 'token' ? { ...o, session } : o)));

const faultCommand = fc
  .tuple(
    fc.oneof(
      { weight: 12, arbitrary: fc.constantFrom(...FAULTS) },
      { weight: 1, arbitrary: fc.constant(HANG) },
      { weight: 2, arbitrary: fc.constant(INVALID_GRANT) },
    ),
    fc.integer({ min: 1, max: 3 }),
  )
  .map(([spec, times]) => new FaultCommand(spec, times));

const commandArbs: fc.Arbitrary<fc.AsyncCommand<Model, Real>>[] = [
  tokenOp.map((o) => new OpsCommand([o])),
  tokenOp.map((o) => new OpsCommand([o])),
  sweepOp.map((o) => new OpsCommand([o])),
  fc.array(op, { minLength: 2, maxLength: 6 }).map((ops) => new OpsCommand(ops)),
  sameSessionBurst.map((ops) => new OpsCommand(ops)),
  sameSessionBurst.map((ops) => new OpsCommand(ops)),
  fc.constantFrom(0, 50, 150).map((ms) => new LatencyCommand(ms)),
  fc.integer({ min: 1, max: 400 }).map((s) => new StepCommand(s)),
  fc.integer({ min: 1, max: 25 }).map((s) => new PauseCommand(s)),
  faultCommand,
  faultCommand,
  fc.constant(new HealCommand()),
];

describe('model-based: random interleavings against the real protocol', () => {
  it('never redeems a refresh token twice, never loses or kills a session without invalid_grant, and serves only valid tokens or explicit errors', async () => {
    let runs = 0;
    let commandsRun = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.commands(commandArbs, { size: 'large', maxCommands: 20 }),
        fc.array(fc.integer({ min: 30, max: ACCESS_TTL }), { minLength: 3, maxLength: 3 }),
        async (cmds, expiries) => {
          runs++;
          oauth.proxy.setLatency(0);
          oauth.proxy.pauseAfterNextAnswer(0);
          commandsRun += [...cmds].length;
          oauth.proxy.setFault(null);
          const sessions: Connected[] = [];
          for (const [i, providerId] of PROVIDERS.entries()) {
            sessions.push(await connect(stack, oauth, providerId, { expires_in: expiries[i] as number }));
          }
          const real: Real = {
            sessions,
            clientIds: PROVIDERS.map(
              (p) => oauth.clients[p === 'mcp' ? 'basic' : p === 'mcp-post' ? 'post' : 'public'].clientId,
            ),
            requestsFrom: oauth.proxy.requests.length,
          };
          try {
            await fc.asyncModelRun(() => ({ model: {} as Model, real }), cmds);
            oauth.proxy.setFault(null);
            await checkInvariants(real);
          } finally {
            oauth.proxy.setFault(null);
            // Out of the next run's way: its sweeps must see only its own sessions.
            for (const s of sessions) await stack.stack.runtime.store.deleteSession(s);
          }
        },
      ),
      { numRuns: Number(process.env.MODEL_RUNS ?? 15), endOnFailure: true },
    );
    const grants = oauth.proxy.requests.filter((r) => r.forwarded).length;
    const faulted = oauth.proxy.requests.filter((r) => r.fault !== undefined);
    const faults = `${faulted.length} faulted: ${[...new Set(faulted.map((r) => `${r.fault}${r.status ? ` ${r.status}` : ''}`))].join(', ')}`;
    console.log(
      `model: ${runs} runs, ${commandsRun} commands, ${oauth.proxy.requests.length} token requests (${grants} grants, ${faults}), reuse ${oauth.proxy.reuseCount()}, ${pauses} pauses`,
    );
    expect(oauth.proxy.reuseCount()).toBe(0);
  }, 120_000);
});
