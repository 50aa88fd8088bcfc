import type { FetchLike } from '../../functions/core/ports.js';
import type { Rng, VirtualClock } from './clock.js';

/**
 * The providers' token endpoints, as the `fetch` the real OAuthClient calls. Each answers the
 * refresh-token grant with real rotation and reuse detection: refresh token `rt.<row>.<n>` is valid
 * only while n is the session's current generation; a grant rotates it to n+1. Presenting an older
 * one is a reuse: counted, answered `invalid_grant`, and the grant is revoked (every later token of
 * the session is refused), as OAuth 2.1 §4.3.1 providers do. The grant is decided when the request
 * arrives and answered after a lognormal latency. Each provider has a rate limit (a token bucket):
 * beyond it the answer is 429 with Retry-After.
 */

export interface ProviderModelOptions {
  clock: VirtualClock;
  rng: Rng;
  rows: number;
  latency: { medianMs: number; sigma: number };
  /** Grants a second each provider accepts (sustained); the bucket holds one second's worth. */
  ratePerSecond: number;
  retryAfterSeconds: number;
  expiresIn: number;
}

export interface ProviderStats {
  grants: number;
  rotations: number;
  reuses: number;
  invalidGrants: number;
  rateLimited: number;
  inflight: number;
  peakInflight: number;
  /** Answers whose request signal had already aborted (the OAuth client's real-time timer fired). */
  abortedSignals: number;
}

export function tokenEndpoint(providerIndex: number): string {
  return `https://p${providerIndex}.provider.example/oauth/token`;
}

const JSON_HEADERS = { 'content-type': 'application/json;charset=UTF-8', 'cache-control': 'no-store' };

export class ProviderModel {
  readonly stats: ProviderStats = {
    grants: 0,
    rotations: 0,
    reuses: 0,
    invalidGrants: 0,
    rateLimited: 0,
    inflight: 0,
    peakInflight: 0,
    abortedSignals: 0,
  };
  private readonly generation: Int32Array;
  private readonly revokedRows: Uint8Array;
  private readonly buckets = new Map<string, { tokens: number; last: number }>();

  constructor(private readonly o: ProviderModelOptions) {
    this.generation = new Int32Array(o.rows);
    this.revokedRows = new Uint8Array(o.rows);
  }

  /** The session's current refresh token at the provider (the one a session starts with, at first). */
  currentRefreshToken(row: number): string {
    return `rt.${row}.${this.generation[row]}`;
  }

  revoked(row: number): boolean {
    return this.revokedRows[row] === 1;
  }

  private admit(host: string): boolean {
    const now = this.o.clock.now();
    let b = this.buckets.get(host);
    if (!b) {
      b = { tokens: this.o.ratePerSecond, last: now };
      this.buckets.set(host, b);
    }
    b.tokens = Math.min(this.o.ratePerSecond, b.tokens + ((now - b.last) / 1000) * this.o.ratePerSecond);
    b.last = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  fetch: FetchLike = async (input, init) => {
    const { clock, rng } = this.o;
    const stats = this.stats;
    stats.grants++;
    stats.inflight++;
    if (stats.inflight > stats.peakInflight) stats.peakInflight = stats.inflight;
    try {
      const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url);
      const form = new URLSearchParams((init?.body ?? '') as string | URLSearchParams);
      let status = 200;
      let body: Record<string, unknown>;
      let headers: Record<string, string> = JSON_HEADERS;
      let latency = rng.lognormal(this.o.latency.medianMs, this.o.latency.sigma);
      if (!this.admit(url.host)) {
        stats.rateLimited++;
        status = 429;
        body = { error: 'slow_down', error_description: 'rate limit exceeded' };
        headers = { ...JSON_HEADERS, 'retry-after': String(this.o.retryAfterSeconds) };
        latency *= 0.2;
      } else {
        ({ status, body } = this.grant(form));
      }
      await clock.sleep(latency);
      if (init?.signal?.aborted) stats.abortedSignals++;
      return new Response(JSON.stringify(body), { status, headers });
    } finally {
      stats.inflight--;
    }
  };

  private grant(form: URLSearchParams): { status: number; body: Record<string, unknown> } {
    const refused = (description: string) => {
      this.stats.invalidGrants++;
      return { status: 400, body: { error: 'invalid_grant', error_description: description } };
    };
    if (form.get('grant_type') !== 'refresh_token') {
      return { status: 400, body: { error: 'unsupported_grant_type' } };
    }
    const match = /^rt\.(\d+)\.(\d+)$/.exec(form.get('refresh_token') ?? '');
    if (!match) return refused('unknown refresh token');
    const row = Number(match[1]);
    const n = Number(match[2]);
    if (row >= this.o.rows) return refused('unknown refresh token');
    if (this.revokedRows[row]) return refused('grant revoked');
    const current = this.generation[row] as number;
    if (n < current) {
      // Reuse of a rotated refresh token: the whole grant is revoked.
      this.stats.reuses++;
      this.revokedRows[row] = 1;
      return refused('refresh token reused; grant revoked');
    }
    if (n !== current) return refused('unknown refresh token');
    const next = current + 1;
    this.generation[row] = next;
    this.stats.rotations++;
    return {
      status: 200,
      body: {
        access_token: `at.${row}.${next}`,
        token_type: 'Bearer',
        expires_in: this.o.expiresIn,
        refresh_token: `rt.${row}.${next}`,
      },
    };
  }
}
