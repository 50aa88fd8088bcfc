import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * GET /v1/sessions (across users: filters, paging, limits) and GET /v1/sweeps/latest over HTTP on
 * the real local stack. No OAuth server is needed: sessions are handed over with PUT.
 */

let keeper: TestStack;
const ACTIVE_A = 7;
const ACTIVE_B = 5;

beforeAll(async () => {
  keeper = await startTestStack();
  for (const providerId of ['prov-a', 'prov-b']) {
    const res = await keeper.call('PUT', `/v1/providers/${providerId}`, {
      tokenEndpoint: 'http://127.0.0.1:9/token',
      clientId: 'c',
    });
    expect(res.status).toBe(201);
  }
  const puts: Promise<unknown>[] = [];
  for (let i = 0; i < ACTIVE_A; i++) puts.push(put(`user-a${i}`, 'prov-a'));
  for (let i = 0; i < ACTIVE_B; i++) puts.push(put(`user-b${i}`, 'prov-b'));
  await Promise.all(puts);
});
afterAll(() => keeper?.stop());

async function put(userId: string, providerId: string) {
  const res = await keeper.call('PUT', `/v1/sessions/${userId}/${providerId}`, {
    access_token: `at-${userId}-${providerId}`,
    refresh_token: `rt-${userId}-${providerId}`,
    expires_in: 3600,
  });
  expect(res.status).toBe(201);
}

interface Page {
  sessions: { userId: string; providerId: string; status: string }[];
  cursor: string | null;
}

async function page(query: string): Promise<Page> {
  const res = await keeper.call('GET', `/v1/sessions${query}`);
  expect(res.status, res.text).toBe(200);
  return res.body as Page;
}

/** Every page of a query, following cursors. */
async function all(query: string): Promise<{ pages: Page[]; keys: string[] }> {
  const pages: Page[] = [];
  let cursor: string | null = null;
  do {
    const sep = query.includes('?') ? '&' : '?';
    const p: Page = await page(cursor === null ? query : `${query}${sep}cursor=${cursor}`);
    pages.push(p);
    cursor = p.cursor;
  } while (cursor !== null && pages.length < 50);
  return { pages, keys: pages.flatMap((p) => p.sessions.map((s) => `${s.userId}/${s.providerId}`)) };
}

describe('GET /v1/sessions', () => {
  it('lists sessions across users as metadata only, never a token', async () => {
    const res = await keeper.call('GET', '/v1/sessions');
    expect(res.status).toBe(200);
    const body = res.body as Page;
    expect(body.sessions).toHaveLength(ACTIVE_A + ACTIVE_B);
    expect(body.cursor).toBeNull();
    expect(res.text).not.toMatch(/at-user|rt-user/u);
  });

  it('pages with limit and cursor: every session exactly once, no page over the limit', async () => {
    const { pages, keys } = await all('?limit=3');
    expect(pages.every((p) => p.sessions.length <= 3)).toBe(true);
    expect(pages.length).toBeGreaterThanOrEqual(4);
    expect(keys).toHaveLength(ACTIVE_A + ACTIVE_B);
    expect(new Set(keys).size).toBe(keys.length);
  });

  it('filters by provider and by status, also across pages', async () => {
    const a = await all('?providerId=prov-a&limit=2');
    expect(a.keys.sort()).toEqual(Array.from({ length: ACTIVE_A }, (_, i) => `user-a${i}/prov-a`).sort());
    expect((await all('?status=active')).keys).toHaveLength(ACTIVE_A + ACTIVE_B);
    expect((await all('?status=reauthorization_required')).keys).toEqual([]);
    expect((await all('?providerId=prov-b&status=active')).keys).toHaveLength(ACTIVE_B);
  });

  it.each([
    ['?limit=0', 'limit'],
    ['?limit=101', 'limit'],
    ['?limit=ten', 'limit'],
    ['?status=dead', 'status'],
    ['?cursor=not%20base64!', 'cursor'],
    ['?cursor=bm90LWpzb24', 'cursor'],
    ['?providerId=a%2Fb', 'providerId'],
    ['?owner=alice', 'owner'],
  ])('GET /v1/sessions%s → 400 naming %s', async (query, field) => {
    const res = await keeper.call('GET', `/v1/sessions${query}`);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'invalid_request' });
    expect((res.body as { error_description: string }).error_description).toContain(field);
  });
});

describe('GET /v1/sweeps/latest', () => {
  it('404 before the first sweep, then the latest summary with when it ran and when the next one starts', async () => {
    const fresh = await startTestStack({ env: { TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '10' } });
    try {
      expect((await fresh.call('GET', '/v1/sweeps/latest')).status).toBe(404);
      const summary = await fresh.sweep();
      const res = await fresh.call('GET', '/v1/sweeps/latest');
      expect(res.status).toBe(200);
      const body = res.body as Record<string, number>;
      // The counts the slices added up; the duration is the record's (dispatch to the last slice).
      const { durationMs, ...counts } = summary;
      expect(body).toMatchObject({ ...counts, slices: 0 });
      expect(body.durationMs).toBeGreaterThanOrEqual(0);
      expect(body.finishedAt).toBeGreaterThanOrEqual(body.startedAt as number);
      expect(Math.abs((body.finishedAt as number) - Date.now() / 1000)).toBeLessThan(60);
      // The schedule's next sweep: the one that makes an open circuit's probe.
      expect(body.nextSweepAt).toBe((body.startedAt as number) + 10);
      expect(body.refreshWindowSeconds).toBe(fresh.stack.runtime.config.refreshWindowSeconds);
    } finally {
      await fresh.stop();
    }
  });
});
