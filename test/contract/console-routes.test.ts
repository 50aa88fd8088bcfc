import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * The two routes the console needs besides the session search: GET /v1/providers (every provider,
 * paged, never a secret) and POST /v1/sessions/{userId}/{providerId}/refresh (a forced refresh that
 * answers metadata, never a token), over HTTP on the real local stack and a real OAuth server.
 */

let keeper: TestStack;
let oauth: OAuthServer;
const PROVIDERS = 7;
const SECRET = 'provider-secret-0123456789abcdef';

beforeAll(async () => {
  [keeper, oauth] = await Promise.all([startTestStack(), startOAuthServer({ accessTokenTtl: 3600 })]);
  for (let i = 0; i < PROVIDERS; i++) {
    const res = await keeper.call('PUT', `/v1/providers/prov-${i}`, {
      tokenEndpoint: 'http://127.0.0.1:9/token',
      clientId: `client-${i}`,
      ...(i % 2 === 0 ? { clientSecret: SECRET } : {}),
    });
    expect(res.status).toBe(201);
  }
  const res = await keeper.call('PUT', '/v1/providers/oidc', {
    issuer: oauth.issuer,
    clientId: oauth.clients.basic.clientId,
    clientSecret: oauth.clients.basic.clientSecret,
  });
  expect(res.status).toBe(201);
  // Sessions in the table too: the provider scan must skip them.
  for (let i = 0; i < 5; i++) {
    await keeper.call('PUT', `/v1/sessions/user-${i}/prov-0`, { access_token: `at-${i}`, expires_in: 3600 });
  }
});
afterAll(async () => {
  await keeper?.stop();
  await oauth?.stop();
});

interface ProviderPage {
  providers: { providerId: string; hasClientSecret: boolean }[];
  cursor: string | null;
}

describe('GET /v1/providers', () => {
  it('lists every provider, with hasClientSecret but never the secret', async () => {
    const res = await keeper.call('GET', '/v1/providers');
    expect(res.status).toBe(200);
    const body = res.body as ProviderPage;
    expect(body.providers.map((p) => p.providerId).sort()).toEqual(
      [...Array.from({ length: PROVIDERS }, (_, i) => `prov-${i}`), 'oidc'].sort(),
    );
    expect(body.cursor).toBeNull();
    expect(body.providers.find((p) => p.providerId === 'prov-0')?.hasClientSecret).toBe(true);
    expect(body.providers.find((p) => p.providerId === 'prov-1')?.hasClientSecret).toBe(false);
    expect(res.text).not.toContain(SECRET);
    expect(res.text).not.toContain(oauth.clients.basic.clientSecret);
  });

  it('pages with limit and cursor: every provider exactly once, no page over the limit', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await keeper.call('GET', `/v1/providers?limit=3${cursor ? `&cursor=${cursor}` : ''}`);
      expect(res.status, res.text).toBe(200);
      const body = res.body as ProviderPage;
      expect(body.providers.length).toBeLessThanOrEqual(3);
      seen.push(...body.providers.map((p) => p.providerId));
      cursor = body.cursor;
      pages++;
    } while (cursor !== null && pages < 20);
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(seen).toHaveLength(PROVIDERS + 1);
    expect(new Set(seen).size).toBe(seen.length);
  });

  it.each([
    ['?limit=0', 'limit'],
    ['?limit=101', 'limit'],
    ['?limit=1.5', 'limit'],
    ['?cursor=not%20base64!', 'cursor'],
    ['?cursor=bm90LWpzb24', 'cursor'],
    ['?providerId=prov-0', 'providerId'],
  ])('GET /v1/providers%s → 400 naming %s', async (query, field) => {
    const res = await keeper.call('GET', `/v1/providers${query}`);
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ error: 'invalid_request' });
    expect((res.body as { error_description: string }).error_description).toContain(field);
  });
});

describe('POST /v1/sessions/{userId}/{providerId}/refresh', () => {
  async function connect(userId: string): Promise<void> {
    const tokens = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: userId });
    const res = await keeper.call('PUT', `/v1/sessions/${userId}/oidc`, tokens);
    expect(res.status).toBe(201);
  }

  it('refreshes through the token path and answers metadata only', async () => {
    await connect('refresh-1');
    oauth.proxy.reset();
    const res = await keeper.call('POST', '/v1/sessions/refresh-1/oidc/refresh');
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ userId: 'refresh-1', providerId: 'oidc', status: 'active' });
    expect((res.body as { refreshedAt: number }).refreshedAt).toBeGreaterThan(0);
    // One grant went to the provider, and none of the tokens it issued is in the answer.
    expect(oauth.proxy.requests).toHaveLength(1);
    for (const token of oauth.proxy.issuedTokens()) expect(res.text).not.toContain(token);
    expect(res.text).not.toMatch(/access_token|refresh_token/u);
  });

  it('concurrent forced refreshes collapse into one grant; nothing is reused', async () => {
    await connect('refresh-2');
    oauth.proxy.reset();
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => keeper.call('POST', '/v1/sessions/refresh-2/oidc/refresh')),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(6).fill(200));
    expect(oauth.proxy.requests).toHaveLength(1);
    expect(oauth.proxy.reuseCount()).toBe(0);
  });

  it('a session without a refresh token answers 409 and is kept', async () => {
    const res = await keeper.call('POST', '/v1/sessions/user-0/prov-0/refresh');
    expect(res.status).toBe(409);
    expect(res.body).toMatchObject({ error: 'reauthorization_required' });
    expect((await keeper.call('GET', '/v1/sessions/user-0/prov-0')).status).toBe(200);
  });

  it('refuses options it does not take, before any grant', async () => {
    await connect('refresh-3');
    oauth.proxy.reset();
    for (const [path, body] of [
      ['/v1/sessions/refresh-3/oidc/refresh?force=true', undefined],
      ['/v1/sessions/refresh-3/oidc/refresh', { minValidity: 60 }],
      ['/v1/sessions/refresh-3/oidc/refresh', '[]'],
      ['/v1/sessions/refresh-3/oidc/refresh', '{'],
    ] as const) {
      const res = await keeper.call('POST', path, body);
      expect(res.status, `${path} ${JSON.stringify(body)}`).toBe(400);
    }
    expect(oauth.proxy.requests).toHaveLength(0);
  });
});
