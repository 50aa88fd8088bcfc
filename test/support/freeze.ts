import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type DynaliteHandle, startDynalite } from './dynalite.js';
import {
  type Connected,
  connect,
  metadata,
  registerProviders,
  type ServedToken,
  tokenPath,
} from './keeper-flows.js';
import { startLocalProcess } from './local-process.js';
import { type OAuthServer, startOAuthServer } from './oauth-server.js';
import type { CallResult } from './stack.js';
import { startTestStack, type TestStack } from './stack.js';

/**
 * Keepers frozen with real signals: `npm start`'s entry point (bin/local.ts) run as separate OS
 * processes on one shared dynalite table and one data directory (so they share the keyring, as two
 * Lambdas share the keyring secret), against oidc-provider (rotation and reuse detection on) behind
 * the token proxy, which holds each grant's answer after the provider has rotated. One keeper is
 * stopped (SIGSTOP) while its grants are in flight and resumed (SIGCONT) later.
 *
 * Used by test/integration/freeze.test.ts and by `npm run bench:freeze`.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface KeeperProcess {
  readonly name: string;
  readonly pid: number;
  readonly url: string;
  /** Everything the process printed on stdout so far (its sweep lines and JSON log lines). */
  out(): string;
  err(): string;
  /** The `sweep: due …` lines printed so far. */
  sweepLines(): string[];
  call(method: string, path: string): Promise<CallResult>;
  /** SIGSTOP: the process stops at once, its sockets and timers untouched. */
  freeze(): void;
  /** SIGCONT. */
  thaw(): void;
  stop(): Promise<void>;
}

/** Starts bin/local.ts in its own process with the given environment; resolves once it listens. */
export async function spawnKeeper(name: string, env: Record<string, string>): Promise<KeeperProcess> {
  const { child, exited, out, err } = startLocalProcess(env);
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGCONT');
    child.kill('SIGKILL');
    await exited;
  };
  const deadline = Date.now() + 60_000;
  let url: string | undefined;
  while (!url) {
    url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(out())?.[1];
    if (url) break;
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`keeper ${name} did not start: ${err().slice(-2000)}`);
    }
    await sleep(50);
  }
  const apiKey = env.TOKENKEEPER_API_KEY;
  const listening = url;
  return {
    name,
    pid: child.pid as number,
    url: listening,
    out,
    err,
    sweepLines: () =>
      out()
        .split('\n')
        .filter((l) => l.startsWith('sweep: ')),
    async call(method, path) {
      const res = await fetch(`${listening}${path}`, {
        method,
        headers: { authorization: `Bearer ${apiKey}` },
        signal: AbortSignal.timeout(180_000),
      });
      const text = await res.text();
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = undefined;
      }
      return { status: res.status, headers: res.headers, body, text };
    },
    freeze: () => process.kill(child.pid as number, 'SIGSTOP'),
    thaw: () => process.kill(child.pid as number, 'SIGCONT'),
    stop,
  };
}

/** The shared pieces: dynalite, the OAuth server, a data directory, and the sessions logged in. */
export interface FreezeWorld {
  dynalite: DynaliteHandle;
  oauth: OAuthServer;
  /**
   * An in-process keeper on the same table and data directory (no timer), used only to set up the
   * providers and sessions and to read the sessions' state; it never refreshes.
   */
  observer: TestStack;
  sessions: Connected[];
  /** The environment every keeper process gets (table, endpoint, data directory, key, timings). */
  keeperEnv: Record<string, string>;
  keepers: KeeperProcess[];
  spawn(name: string, env?: Record<string, string>): Promise<KeeperProcess>;
  stop(): Promise<void>;
}

export async function startFreezeWorld(options: {
  sessions: number;
  /** Timing settings shared by every keeper (TOKENKEEPER_*). */
  env: Record<string, string>;
  /**
   * The access tokens' lifetime at login, as the keeper is told. By default just under the refresh
   * window: every session is due, and long enough that the keeper stores it as one the sweep keeps
   * (refreshMode scheduled: at least the refresh interval plus the longest sweep).
   */
  expiresIn?: number;
}): Promise<FreezeWorld> {
  const dataDir = await mkdtemp(join(tmpdir(), 'tokenkeeper-freeze-'));
  const dynalite = await startDynalite();
  const oauth = await startOAuthServer({ accessTokenTtl: 3600 });
  const baseEnv = {
    TOKENKEEPER_DYNAMODB_ENDPOINT: dynalite.endpoint,
    TOKENKEEPER_TABLE_NAME: dynalite.tableName,
    TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
    ...options.env,
  };
  const observer = await startTestStack({ dataDir, env: baseEnv });
  const keepers: KeeperProcess[] = [];
  const world: FreezeWorld = {
    dynalite,
    oauth,
    observer,
    sessions: [],
    keeperEnv: { ...baseEnv, TOKENKEEPER_DATA_DIR: dataDir, TOKENKEEPER_API_KEY: observer.apiKey },
    keepers,
    async spawn(name, env = {}) {
      const keeper = await spawnKeeper(name, { ...world.keeperEnv, ...env });
      keepers.push(keeper);
      return keeper;
    },
    async stop() {
      for (const k of keepers.splice(0)) await k.stop();
      await observer.stop({ keepData: true });
      await oauth.stop();
      await dynalite.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  try {
    await registerProviders(observer, oauth);
    const expiresIn = options.expiresIn ?? observer.stack.runtime.config.refreshWindowSeconds - 5;
    for (let i = 0; i < options.sessions; i++) {
      // Two providers (client_secret_basic with discovery and a resource; client_secret_post with
      // explicit endpoints), every session due for the sweep.
      const providerId = i % 2 === 0 ? 'mcp' : 'mcp-post';
      world.sessions.push(await connect(observer, oauth, providerId, { expires_in: expiresIn }));
    }
  } catch (err) {
    await world.stop();
    throw err;
  }
  return world;
}

export interface FreezeRun {
  /** 1: the frozen keeper alone; 2: another keeper on the same table serves token calls meanwhile. */
  processes: 1 | 2;
  sessions: number;
  /**
   * The proxy holds every grant's answer (the provider has rotated) until this long after the SIGSTOP
   * (default 200 ms), so each answer reaches the keeper's socket while it sleeps.
   */
  answerAfterFreezeMs?: number;
  /**
   * If set, only the head and half the body of each answer arrive then; the rest arrives this long
   * after the SIGCONT (a slow answer, still being read when the keeper resumes).
   */
  tailAfterThawMs?: number;
  freezeMs: number;
  /**
   * `timer`: the frozen keeper's sweep is its own timer's (TOKENKEEPER_REFRESH_INTERVAL_SECONDS in
   * frozenEnv); `request`: POST /local/sweep.
   */
  sweep: 'timer' | 'request';
  env: Record<string, string>;
  /** More settings for the keeper that is frozen. */
  frozenEnv?: Record<string, string>;
  /**
   * Also ask the frozen keeper itself, during the freeze, for a fresh and a forced token of each
   * session: both calls reach it on waking.
   */
  callFrozen?: boolean;
  /** How long the test waits for the sessions to settle after the thaw, at most. */
  settleMs?: number;
  log?: (line: string) => void;
}

export interface FreezeFigures {
  sessions: number;
  /** Refresh grants the provider had answered (and rotated) whose answers the keeper had not received at SIGSTOP. */
  inFlightAtFreeze: number;
  /** How long the keeper stayed stopped (measured). */
  frozenMs: number;
  /** Refresh tokens presented to the provider again after it had rotated them. */
  reuses: number;
  /** Refresh grants the provider refused with 400 (invalid_grant after a reuse). */
  refusedGrants: number;
  /** When each reuse reached the provider, in ms from the start of the frozen keeper's sweep. */
  reusesAtMs: number[];
  /** Sessions ending `reauthorization_required`. */
  lost: number;
  /** … of which a keeper published (locally: logged) a SessionReauthorizationRequired event. */
  announcedLost: number;
  active: number;
  /** Statuses of the other keeper's answers to token calls made during the freeze (2 processes). */
  otherDuringFreeze: Record<string, number>;
  /** … to calls made after the thaw, before the forced refreshes. */
  otherAfterThaw: Record<string, number>;
  /** Statuses the frozen keeper answered to the calls it received while frozen (`callFrozen`). */
  frozenAnswers: Record<string, number>;
  /** When the other keeper first answered something other than 200 or 503, in ms from the SIGSTOP. */
  firstOtherRefusalMs?: number;
  /** The forced refresh of each session after the run, through the keeper still serving: status counts. */
  forced: Record<string, number>;
  /** Sessions whose forced refresh answered 200 with a new access token the provider calls active. */
  refreshableAfter: number;
  /** Every sweep line each keeper printed. */
  sweepLines: Record<string, string[]>;
}

function tally(into: Record<string, number>, status: number | string): void {
  const k = String(status);
  into[k] = (into[k] ?? 0) + 1;
}

function refreshGrants(oauth: OAuthServer) {
  return oauth.proxy.requests.filter((r) => r.grantType === 'refresh_token' && r.forwarded);
}

async function waitUntil(probe: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/**
 * One freeze: the keeper `frozen` starts a sweep of every session; once the provider has received all
 * the grants (and rotated every refresh token, its answers held by the proxy), the keeper is stopped
 * for `freezeMs`; the other keeper, if any, is asked for a fresh token of each session all along.
 * After the thaw and a settling time, each session is force-refreshed through the keeper still serving
 * (the other one, or the frozen one alone), and the figures are read from the provider's records and
 * the table.
 */
export async function runFreeze(world: FreezeWorld, run: FreezeRun): Promise<FreezeFigures> {
  const log = run.log ?? (() => {});
  const { oauth, observer, sessions } = world;
  oauth.proxy.reset();
  oauth.proxy.holdAnswers();

  const frozen = await world.spawn('frozen', run.frozenEnv);
  const other = run.processes === 2 ? await world.spawn('other') : undefined;
  const serving = other ?? frozen;

  // Every lease of this run is taken after this moment, so none ends before it plus the lease.
  const sweepStartedAt = Date.now();
  let sweepAnswer: Promise<CallResult | Error> | undefined;
  if (run.sweep === 'request') sweepAnswer = frozen.call('POST', '/local/sweep').catch((e: Error) => e);
  await waitUntil(
    () => refreshGrants(oauth).length >= sessions.length,
    60_000,
    `${sessions.length} refresh grants to reach the provider`,
  );
  frozen.freeze();
  const frozenAt = Date.now();
  const answerAfterFreezeMs = run.answerAfterFreezeMs ?? 200;
  await sleep(answerAfterFreezeMs);
  const inFlightAtFreeze = oauth.proxy.releaseAnswers({
    tailMs: run.tailAfterThawMs === undefined ? 0 : run.freezeMs - answerAfterFreezeMs + run.tailAfterThawMs,
  });
  log(`froze pid ${frozen.pid}; ${inFlightAtFreeze} answers held for it sent into its sockets`);

  const otherDuringFreeze: Record<string, number> = {};
  const otherAfterThaw: Record<string, number> = {};
  let thawed = false;
  let stopAsking = false;
  const odd = new Set<string>();
  let firstOddAfterFreezeMs: number | undefined;
  const askers = other
    ? sessions.map(async (s) => {
        while (!stopAsking) {
          const startedFrozen = !thawed;
          const res = await other
            .call('GET', tokenPath(s, '?minValidity=3600'))
            .catch((e: Error) => ({ status: `error:${e.name}` }) as const);
          tally(startedFrozen ? otherDuringFreeze : otherAfterThaw, res.status);
          if (res.status !== 200 && res.status !== 503 && !odd.has(s.userId)) {
            odd.add(s.userId);
            firstOddAfterFreezeMs ??= Date.now() - frozenAt;
            log(
              `other answered ${res.status} for ${s.userId} (${thawed ? 'after the thaw' : 'during the freeze'})`,
            );
          }
          await sleep(res.status === 200 ? 250 : 100);
        }
      })
    : [];

  // Callers of the frozen keeper itself: their requests wait in its sockets and reach it on waking,
  // together with the provider's answers, past the end of its leases when the freeze outlasts them.
  const frozenAnswers: Record<string, number> = {};
  const frozenCalls = run.callFrozen
    ? sessions.flatMap((s) =>
        ['?minValidity=3600', '?force=true'].map(async (query) => {
          const res = await frozen
            .call('GET', tokenPath(s, query))
            .catch((e: Error) => ({ status: `error:${e.name}`, text: '' }) as const);
          tally(frozenAnswers, res.status);
          if (res.status !== 200 && res.status !== 503)
            log(`frozen keeper answered ${res.status} to ${query}: ${res.text}`);
        }),
      )
    : [];

  await sleep(Math.max(0, frozenAt + run.freezeMs - Date.now()));
  thawed = true;
  const frozenMs = Date.now() - frozenAt;
  frozen.thaw();
  log(`thawed after ${frozenMs} ms`);

  // Settle: the frozen keeper's sweep ends (its answer, or its next timer sweep's line), and the
  // sessions are neither leased nor waiting for a retry long enough for a forced call to find them.
  const settleMs = run.settleMs ?? 15_000;
  const linesAtThaw = frozen.sweepLines().length;
  if (sweepAnswer) {
    const answer = await Promise.race([sweepAnswer, sleep(settleMs).then(() => undefined)]);
    log(
      `frozen sweep answered ${answer instanceof Error ? answer.message : answer?.status} ${answer && !(answer instanceof Error) ? answer.text : ''}`,
    );
  } else {
    // Its own timer sweeps on waking, then again one interval later.
    await waitUntil(
      () => frozen.sweepLines().length >= linesAtThaw + 2,
      settleMs,
      'two sweeps after the thaw',
    ).catch((e: Error) => log(e.message));
  }
  stopAsking = true;
  await Promise.all([...askers, ...frozenCalls]);

  const forced: Record<string, number> = {};
  let refreshableAfter = 0;
  const issuedBefore = oauth.proxy.issuedTokens();
  await Promise.all(
    sessions.map(async (s) => {
      const deadline = Date.now() + settleMs;
      for (;;) {
        const res = await serving.call('GET', tokenPath(s, '?force=true'));
        if (res.status === 503 && Date.now() < deadline) {
          await sleep(Math.min(1000, Math.max(100, Number(res.headers.get('retry-after')) * 1000)));
          continue;
        }
        tally(forced, res.status);
        if (res.status === 200) {
          const token = (res.body as ServedToken).access_token;
          // A token the provider issued for this very call, and still honours.
          if (!issuedBefore.has(token) && (await oauth.introspect(token)).active === true)
            refreshableAfter += 1;
        } else {
          log(`forced refresh of ${s.userId} answered ${res.status} ${res.text}`);
        }
        break;
      }
    }),
  );

  let lost = 0;
  let active = 0;
  let announcedLost = 0;
  const announced = announcedReauthorizations(world.keepers);
  for (const s of sessions) {
    const m = await metadata(observer, s);
    if (m.status === 'reauthorization_required') {
      lost += 1;
      if (announced.has(`${s.userId}/${s.providerId}`)) announcedLost += 1;
    }
    if (m.status === 'active') active += 1;
  }
  // When each refresh token was presented again, from the sweep's start.
  const seen = new Set<string>();
  const reusesAtMs: number[] = [];
  for (const r of refreshGrants(oauth)) {
    if (r.refreshToken === undefined) continue;
    if (seen.has(r.refreshToken)) reusesAtMs.push(r.at - sweepStartedAt);
    seen.add(r.refreshToken);
  }
  const grants = refreshGrants(oauth);
  const figures: FreezeFigures = {
    sessions: sessions.length,
    inFlightAtFreeze,
    frozenMs,
    reuses: oauth.proxy.reuseCount(),
    refusedGrants: grants.filter((r) => r.status === 400).length,
    reusesAtMs,
    lost,
    announcedLost,
    active,
    otherDuringFreeze,
    otherAfterThaw,
    firstOtherRefusalMs: firstOddAfterFreezeMs,
    frozenAnswers,
    forced,
    refreshableAfter,
    sweepLines: Object.fromEntries(world.keepers.map((k) => [k.name, k.sweepLines()])),
  };
  return figures;
}

/** Sessions (`userId/providerId`) whose SessionReauthorizationRequired event a keeper logged. */
function announcedReauthorizations(keepers: readonly KeeperProcess[]): Set<string> {
  const keys = new Set<string>();
  for (const keeper of keepers) {
    for (const line of keeper.out().split('\n')) {
      if (!line.includes('event SessionReauthorizationRequired')) continue;
      try {
        const entry = JSON.parse(line) as {
          message?: string;
          detail?: { userId?: string; providerId?: string };
        };
        if (entry.message === 'event SessionReauthorizationRequired' && entry.detail) {
          keys.add(`${entry.detail.userId}/${entry.detail.providerId}`);
        }
      } catch {
        // not a JSON log line
      }
    }
  }
  return keys;
}
