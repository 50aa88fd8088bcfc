import { readFile } from 'node:fs/promises';
import { Validator } from '@seriousme/openapi-schema-validator';
import type { ValidateFunction } from 'ajv';
import { Ajv2020 } from 'ajv/dist/2020.js';
import formats from 'ajv-formats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { followToCallback } from '../support/connect-flow.js';
import { type McpServer, startMcpServer } from '../support/mcp-server.js';
import { MCP_RESOURCE, type OAuthServer, startOAuthServer } from '../support/oauth-server.js';
import { type ScriptedAs, startScriptedAs } from '../support/scripted-as.js';
import { startTestStack, type TestStack } from '../support/stack.js';

/**
 * docs/openapi.yaml against the running API. The document is validated as OpenAPI 3.1, then real
 * requests go through the local stack (the Lambda API handler behind HTTP) and every answer is
 * checked against the document: the status must be listed for the operation, the required headers
 * present and valid, the body valid against the response schema. Finally every documented
 * (operation, status) must have been seen, except the few the local stack cannot produce.
 */

type Json = Record<string, unknown>;

interface HeaderObject {
  required?: boolean;
  schema: Json;
}

interface ResponseObject {
  description: string;
  headers?: Record<string, HeaderObject>;
  content?: Record<string, { schema: Json }>;
}

interface Operation {
  operationId: string;
  responses: Record<string, ResponseObject>;
}

interface Spec {
  openapi: string;
  paths: Record<string, Record<string, Operation | unknown>>;
  components: { responses: Record<string, ResponseObject> };
}

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'];
/** Documented but not producible on the local stack: API Gateway's own 403, and an unexpected 500. */
const NOT_PRODUCIBLE_LOCALLY = new Set(['403', '500']);

const documentPath = new URL('../../docs/openapi.yaml', import.meta.url);

let spec: Spec;
let ajv: Ajv2020;
const compiled = new WeakMap<object, ValidateFunction>();
const seen = new Set<string>();

let oauth: OAuthServer;
let keeper: TestStack;
let mcp: McpServer;
let scripted: ScriptedAs;
let bareMcp: McpServer;

function validatorFor(schema: Json): ValidateFunction {
  const known = compiled.get(schema);
  if (known) return known;
  const fn = ajv.compile(schema);
  compiled.set(schema, fn);
  return fn;
}

function operations(): { path: string; method: string; op: Operation }[] {
  return Object.entries(spec.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => HTTP_METHODS.includes(method))
      .map(([method, op]) => ({ path, method: method.toUpperCase(), op: op as Operation })),
  );
}

function documentedMethods(path: string): string[] {
  return Object.keys(spec.paths[path] ?? {})
    .filter((m) => HTTP_METHODS.includes(m))
    .map((m) => m.toUpperCase());
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  body: unknown;
}

/** Checks an answer against one response object of the document; returns a list of problems. */
function problems(where: string, response: ResponseObject, res: Answer): string[] {
  const out: string[] = [];
  for (const [name, header] of Object.entries(response.headers ?? {})) {
    const value = res.headers.get(name);
    if (value === null) {
      if (header.required) out.push(`${where}: required header ${name} missing`);
      continue;
    }
    const typed = header.schema.type === 'integer' && /^\d+$/u.test(value) ? Number(value) : value;
    const check = validatorFor(header.schema);
    if (!check(typed)) out.push(`${where}: header ${name}=${value}: ${ajv.errorsText(check.errors)}`);
  }
  if (response.content === undefined) {
    if (res.text !== '') out.push(`${where}: documented without content, got a body`);
    return out;
  }
  const type = (res.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
  const media = response.content[type];
  if (!media) return [...out, `${where}: content-type ${type} not documented`];
  const check = validatorFor(media.schema);
  const value = type === 'application/json' ? res.body : res.text;
  if (!check(value)) out.push(`${where}: body ${res.text}: ${ajv.errorsText(check.errors)}`);
  return out;
}

interface CallOptions {
  params?: Record<string, string>;
  query?: Record<string, string>;
  body?: unknown;
  /** `null`: no Authorization header. Default: the stack's bearer key. */
  auth?: string | null;
}

/**
 * Sends `method template` (path parameters filled in and percent-encoded) to the local stack and
 * validates the answer against the operation's response for its status.
 */
async function call(method: string, template: string, options: CallOptions = {}): Promise<Answer> {
  const path = template.replace(/\{(\w+)\}/gu, (_, name: string) => {
    const value = options.params?.[name];
    if (value === undefined) throw new Error(`no value for {${name}}`);
    return encodeURIComponent(value);
  });
  const url = new URL(path, keeper.url);
  for (const [k, v] of Object.entries(options.query ?? {})) url.searchParams.set(k, v);
  const headers: Record<string, string> = {};
  const auth = options.auth === undefined ? `Bearer ${keeper.apiKey}` : options.auth;
  if (auth !== null) headers.authorization = auth;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  }
  // Redirects are answers to check (the callback's 303), not hops to follow.
  const res = await fetch(url, { method, headers, body, redirect: 'manual' });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const answer: Answer = { status: res.status, headers: res.headers, text, body: parsed };

  const where = `${method} ${template} → ${res.status}`;
  const op = spec.paths[template]?.[method.toLowerCase()] as Operation | undefined;
  let response: ResponseObject | undefined;
  if (op) {
    response = op.responses[String(res.status)];
    if (!response) throw new Error(`${where}: status not documented for the operation (${text})`);
  } else if (spec.paths[template]) {
    // A method the path does not have: the documented 405, whose Allow names the documented methods.
    expect(res.status, `${where}: ${text}`).toBe(405);
    response = spec.components.responses.MethodNotAllowed as ResponseObject;
    expect(res.headers.get('allow')?.split(', ').sort()).toEqual(documentedMethods(template).sort());
  } else {
    expect(res.status, `${where}: ${text}`).toBe(404);
    response = spec.components.responses.NotFound as ResponseObject;
  }
  expect(problems(where, response, answer)).toEqual([]);
  seen.add(`${method} ${template} ${res.status}`);
  return answer;
}

async function expectStatus(
  status: number,
  method: string,
  template: string,
  options?: CallOptions,
): Promise<Answer> {
  const res = await call(method, template, options);
  expect(res.status, `${method} ${template}: ${res.text}`).toBe(status);
  return res;
}

const PROVIDER = '/v1/providers/{providerId}';
const SESSIONS = '/v1/sessions/{userId}';
const SESSION = '/v1/sessions/{userId}/{providerId}';
const TOKEN = '/v1/sessions/{userId}/{providerId}/token';
const SWEEP = '/local/sweep';
const SEARCH = '/v1/sessions';
const LATEST_SWEEP = '/v1/sweeps/latest';
const SWEEPS = '/v1/sweeps';
const AUTHORIZE = '/v1/sessions/{userId}/{providerId}/authorize';
const CALLBACK = '/oauth/callback/{providerId}';
const CLIENT_METADATA = '/oauth/client-metadata/{providerId}';
const APP = 'http://127.0.0.1:9/app/';
const PROVIDERS = '/v1/providers';
const REFRESH = '/v1/sessions/{userId}/{providerId}/refresh';
const COMPLETE = '/v1/sessions/{userId}/{providerId}/connections/{connectionId}';

let userSeq = 0;

async function connectedSession(providerId = 'mcp'): Promise<{ userId: string; providerId: string }> {
  const userId = `contract-user-${++userSeq}`;
  const tokens = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: userId });
  await expectStatus(201, 'PUT', SESSION, { params: { userId, providerId }, body: tokens });
  return { userId, providerId };
}

beforeAll(async () => {
  const text = await readFile(documentPath, 'utf8');
  spec = parse(text) as Spec;
  mcp = await startMcpServer();
  oauth = await startOAuthServer({ accessTokenTtl: 3600, registration: true, resources: [mcp.url] });
  mcp.protect({ issuer: oauth.issuer, introspect: (token) => oauth.introspect(token) });
  // An MCP server whose authorization server offers no way to register a client.
  scripted = await startScriptedAs({});
  bareMcp = await startMcpServer();
  bareMcp.protect({ issuer: scripted.issuer, introspect: async () => ({ active: false }) });
  keeper = await startTestStack({ env: { TOKENKEEPER_ALLOWED_REDIRECTS: APP } });
});

afterAll(async () => {
  await keeper?.stop();
  await oauth?.stop();
  await mcp?.stop();
  await bareMcp?.stop();
  await scripted?.stop();
});

describe('the document', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(spec) as unknown as Json);
    expect(result.errors).toBeUndefined();
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
    // Every $ref resolved; response schemas are then compiled from the dereferenced document.
    spec = validator.resolveRefs() as unknown as Spec;
    ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false });
    // ajv-formats is CommonJS: under NodeNext its default import is the module, the plugin its `default`.
    formats.default(ajv);
    for (const { path, method, op } of operations()) {
      for (const [status, response] of Object.entries(op.responses)) {
        for (const media of Object.values(response.content ?? {})) {
          expect(() => validatorFor(media.schema), `${method} ${path} ${status}`).not.toThrow();
        }
      }
    }
  });

  it('is checked by a validator that does reject a broken document', async () => {
    const broken = parse(await readFile(documentPath, 'utf8')) as { components: { parameters: Json } };
    (broken.components.parameters.userId as Json).in = 'body'; // OpenAPI 2 style, invalid in 3.x
    const result = await new Validator().validate(broken as unknown as Json);
    expect(result.valid).toBe(false);
  });

  it('answers that drift from the document are caught', () => {
    const token = (spec.paths[TOKEN] as Record<string, Operation>).get?.responses['200'] as ResponseObject;
    const headers = new Headers({
      'content-type': 'application/json',
      'cache-control': 'no-store',
      pragma: 'no-cache',
    });
    const good = { access_token: 'a', token_type: 'Bearer', expires_at: 2, expires_in: 1 };
    const answer = (body: unknown, h = headers): Answer => ({
      status: 200,
      headers: h,
      text: JSON.stringify(body),
      body,
    });
    expect(problems('ok', token, answer(good))).toEqual([]);
    expect(problems('leak', token, answer({ ...good, refresh_token: 'r' }))).toHaveLength(1);
    expect(problems('type', token, answer({ ...good, expires_in: '1' }))).toHaveLength(1);
    const noCache = new Headers({ 'content-type': 'application/json', pragma: 'no-cache' });
    expect(problems('header', token, answer(good, noCache))).toHaveLength(1);
  });
});

describe('every route against the document', () => {
  it('health, unknown routes and wrong methods', async () => {
    const health = await expectStatus(200, 'GET', '/v1/health', { auth: null });
    expect(health.body).toEqual({ status: 'ok' });
    await expectStatus(404, 'GET', '/v1/nothing-here');
    await expectStatus(404, 'GET', '/v1/sessions/a/b/c/d');
    await expectStatus(405, 'POST', '/v1/health');
    await expectStatus(405, 'DELETE', PROVIDER, { params: { providerId: 'x' } });
    await expectStatus(405, 'POST', SESSIONS, { params: { userId: 'x' } });
    await expectStatus(405, 'PATCH', SESSION, { params: { userId: 'x', providerId: 'y' } });
    await expectStatus(405, 'PUT', TOKEN, { params: { userId: 'x', providerId: 'y' }, body: {} });
    await expectStatus(405, 'GET', SWEEP);
    await expectStatus(405, 'POST', PROVIDERS);
    await expectStatus(405, 'GET', REFRESH, { params: { userId: 'x', providerId: 'y' } });
  });

  it('providers: put (201, 200), get, and each error', async () => {
    const body = {
      issuer: oauth.issuer,
      clientId: oauth.clients.basic.clientId,
      clientSecret: oauth.clients.basic.clientSecret,
      resource: MCP_RESOURCE,
    };
    const created = await expectStatus(201, 'PUT', PROVIDER, { params: { providerId: 'mcp' }, body });
    expect(JSON.stringify(created.body)).not.toContain(oauth.clients.basic.clientSecret);
    await expectStatus(200, 'PUT', PROVIDER, { params: { providerId: 'mcp' }, body });
    await expectStatus(201, 'PUT', PROVIDER, {
      params: { providerId: 'mcp-explicit' },
      body: {
        tokenEndpoint: oauth.tokenEndpoint,
        revocationEndpoint: oauth.revocationEndpoint,
        clientId: oauth.clients.public.clientId,
        clientAuthMethod: 'none',
        scope: 'mcp:read',
        refreshPolicy: 'keepAlive',
        refreshTokenIdleSeconds: 86_400,
        maxConcurrentRefreshes: 50,
      },
    });
    await expectStatus(400, 'PUT', PROVIDER, { params: { providerId: 'bad' }, body: { clientId: 'c' } });
    await expectStatus(400, 'PUT', PROVIDER, {
      params: { providerId: 'bad' },
      body: { clientId: 'c', issuer: oauth.issuer, refreshTokenIdleSeconds: 86_400 },
    });
    await expectStatus(400, 'PUT', PROVIDER, { params: { providerId: 'bad' }, body: '{not json' });
    await expectStatus(413, 'PUT', PROVIDER, {
      params: { providerId: 'big' },
      body: { clientId: 'c', issuer: oauth.issuer, scope: 'x'.repeat(70 * 1024) },
    });
    await expectStatus(401, 'PUT', PROVIDER, { params: { providerId: 'mcp' }, body, auth: null });

    const read = await expectStatus(200, 'GET', PROVIDER, { params: { providerId: 'mcp' } });
    expect(read.body).toMatchObject({ providerId: 'mcp', hasClientSecret: true });
    await expectStatus(404, 'GET', PROVIDER, { params: { providerId: 'nobody' } });
    await expectStatus(400, 'GET', PROVIDER, { params: { providerId: 'x'.repeat(300) } });
    await expectStatus(401, 'GET', PROVIDER, { params: { providerId: 'mcp' }, auth: 'Bearer wrong' });
  });

  it('sessions: put, get, list, delete, and each error', async () => {
    const { userId } = await connectedSession();
    const params = { userId, providerId: 'mcp' };
    const tokens = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: userId });
    await expectStatus(200, 'PUT', SESSION, { params, body: { ...tokens, id_token: 'ignored' } });
    await expectStatus(404, 'PUT', SESSION, {
      params: { userId, providerId: 'unregistered' },
      body: tokens,
    });
    await expectStatus(400, 'PUT', SESSION, { params, body: { refresh_token: 'r' } });
    await expectStatus(413, 'PUT', SESSION, { params, body: { access_token: 'a'.repeat(70 * 1024) } });
    await expectStatus(401, 'PUT', SESSION, { params, body: tokens, auth: null });
    // No expiry, no refresh token: still a valid session.
    await expectStatus(201, 'PUT', SESSION, {
      params: { userId, providerId: 'mcp-explicit' },
      body: { access_token: 'opaque-without-expiry' },
    });

    const meta = await expectStatus(200, 'GET', SESSION, { params });
    expect(meta.body).toMatchObject({ status: 'active', refreshable: true });
    await expectStatus(404, 'GET', SESSION, { params: { userId: 'nobody', providerId: 'mcp' } });
    await expectStatus(400, 'GET', SESSION, { params: { userId: 'bad\u0001', providerId: 'mcp' } });
    await expectStatus(401, 'GET', SESSION, { params, auth: null });

    const list = await expectStatus(200, 'GET', SESSIONS, { params: { userId } });
    expect((list.body as { sessions: unknown[] }).sessions).toHaveLength(2);
    await expectStatus(200, 'GET', SESSIONS, { params: { userId: 'nobody' } });
    await expectStatus(400, 'GET', SESSIONS, { params: { userId: 'x'.repeat(257) } });
    await expectStatus(401, 'GET', SESSIONS, { params: { userId }, auth: null });

    await expectStatus(204, 'DELETE', SESSION, { params: { userId, providerId: 'mcp-explicit' } });
    await expectStatus(404, 'DELETE', SESSION, { params: { userId, providerId: 'mcp-explicit' } });
    await expectStatus(400, 'DELETE', SESSION, { params: { userId: 'bad\u007f', providerId: 'mcp' } });
    await expectStatus(401, 'DELETE', SESSION, { params, auth: null });
  });

  it('token: 200 (stored, refreshed, forced), 400, 401, 404, 409, 503 with Retry-After', async () => {
    const { userId } = await connectedSession();
    const params = { userId, providerId: 'mcp' };
    const first = await expectStatus(200, 'GET', TOKEN, { params });
    expect(first.headers.get('pragma')).toBe('no-cache');
    const forced = await expectStatus(200, 'GET', TOKEN, { params, query: { force: 'true' } });
    expect((forced.body as { access_token: string }).access_token).not.toBe(
      (first.body as { access_token: string }).access_token,
    );
    await expectStatus(200, 'GET', TOKEN, { params, query: { minValidity: '0', force: 'false' } });
    await expectStatus(400, 'GET', TOKEN, { params, query: { minValidity: 'soon' } });
    await expectStatus(400, 'GET', TOKEN, { params, query: { unknown: '1' } });
    await expectStatus(401, 'GET', TOKEN, { params, auth: null });
    await expectStatus(404, 'GET', TOKEN, { params: { userId: 'nobody', providerId: 'mcp' } });

    // The provider fails transiently: 503 with Retry-After; the session stays active.
    oauth.proxy.setFault({ kind: 'status', status: 503, body: 'maintenance', times: 1 });
    const unavailable = await expectStatus(503, 'GET', TOKEN, { params, query: { force: 'true' } });
    expect(unavailable.body).toMatchObject({ error: 'refresh_unavailable' });
    expect(Number(unavailable.headers.get('retry-after'))).toBeGreaterThan(0);

    // The grant is dead: 409, and the session is kept for the user to re-authorize.
    const dead = await connectedSession();
    oauth.proxy.setFault({ kind: 'oauth-error', status: 400, error: 'invalid_grant', times: 1 });
    const reauth = await expectStatus(409, 'GET', TOKEN, { params: dead, query: { force: 'true' } });
    expect(reauth.body).toMatchObject({ error: 'reauthorization_required' });
    const kept = await expectStatus(200, 'GET', SESSION, { params: dead });
    expect(kept.body).toMatchObject({ status: 'reauthorization_required', refreshable: false });
    oauth.proxy.setFault(null);
  });

  it('connect: providers by MCP server URL, authorize, the callback and the client metadata document', async () => {
    const created = await expectStatus(201, 'PUT', PROVIDER, {
      params: { providerId: 'by-mcp' },
      body: { mcpServerUrl: mcp.url },
    });
    expect(created.body).toMatchObject({ registration: 'dynamic', resource: mcp.url });
    await expectStatus(200, 'PUT', PROVIDER, {
      params: { providerId: 'by-mcp' },
      body: { mcpServerUrl: mcp.url },
    });
    const unreachable = await expectStatus(400, 'PUT', PROVIDER, {
      params: { providerId: 'gone' },
      body: { mcpServerUrl: 'http://127.0.0.1:9/mcp' },
    });
    expect(unreachable.body).toMatchObject({ error: 'discovery_failed' });
    const noRegistration = await expectStatus(400, 'PUT', PROVIDER, {
      params: { providerId: 'no-reg' },
      body: { mcpServerUrl: bareMcp.url },
    });
    expect(noRegistration.body).toMatchObject({ error: 'client_registration_unavailable' });

    const userId = `contract-user-${++userSeq}`;
    const params = { userId, providerId: 'by-mcp' };
    const started = await expectStatus(201, 'POST', AUTHORIZE, {
      params,
      body: { redirectUri: `${APP}done` },
    });
    await expectStatus(201, 'POST', AUTHORIZE, { params });
    await expectStatus(400, 'POST', AUTHORIZE, {
      params,
      body: { redirectUri: 'http://127.0.0.1:9/elsewhere' },
    });
    await expectStatus(401, 'POST', AUTHORIZE, { params, auth: null });
    await expectStatus(404, 'POST', AUTHORIZE, { params: { userId, providerId: 'nobody' } });
    await expectStatus(413, 'POST', AUTHORIZE, { params, body: { scope: 'x'.repeat(70 * 1024) } });
    await expectStatus(405, 'GET', AUTHORIZE, { params });

    const url = (started.body as { authorizationUrl: string }).authorizationUrl;
    const callbackPrefix = `${keeper.url}/oauth/callback/`;
    const callback = await followToCallback(url, callbackPrefix, { loginHint: userId });
    const query = Object.fromEntries(callback.searchParams);
    const back = await expectStatus(303, 'GET', CALLBACK, { params, query, auth: null });
    expect(back.headers.get('location')).toMatch(/status=pending/u);
    await expectStatus(400, 'GET', CALLBACK, { params, query, auth: null });
    const connectionId = new URL(back.headers.get('location') as string).searchParams.get(
      'connection',
    ) as string;
    const pending = { ...params, connectionId };
    await expectStatus(401, 'POST', COMPLETE, { params: pending, auth: null });
    await expectStatus(400, 'POST', COMPLETE, { params: pending, body: { userId } });
    await expectStatus(405, 'GET', COMPLETE, { params: pending });
    await expectStatus(404, 'POST', COMPLETE, { params: { ...pending, userId: `${userId}-other` } });
    await expectStatus(404, 'GET', TOKEN, { params });
    await expectStatus(200, 'POST', COMPLETE, { params: pending });
    await expectStatus(404, 'POST', COMPLETE, { params: pending });

    const direct = (await expectStatus(201, 'POST', AUTHORIZE, { params })).body as {
      authorizationUrl: string;
    };
    const page = await followToCallback(direct.authorizationUrl, callbackPrefix, {
      loginHint: userId,
    });
    const connected = await expectStatus(200, 'GET', CALLBACK, {
      params,
      query: Object.fromEntries(page.searchParams),
      auth: null,
    });
    expect(connected.text).toContain('Account connected');
    await expectStatus(200, 'GET', TOKEN, { params });

    const document = await expectStatus(200, 'GET', CLIENT_METADATA, { params, auth: null });
    expect(document.body).toMatchObject({
      client_id: `${keeper.url}/oauth/client-metadata/by-mcp`,
      redirect_uris: [`${keeper.url}/oauth/callback/by-mcp`],
    });
    await expectStatus(404, 'GET', CLIENT_METADATA, { params: { providerId: 'nobody' }, auth: null });
    await expectStatus(405, 'POST', CLIENT_METADATA, { params });
  });

  it('the local sweep, and the latest sweep’s summary', async () => {
    const summary = await expectStatus(200, 'POST', SWEEP);
    expect(summary.body).toHaveProperty('due');
    await expectStatus(401, 'POST', SWEEP, { auth: null });
    const latest = await expectStatus(200, 'GET', LATEST_SWEEP);
    // The counts its slices added up; the duration is the record's (dispatch to the last slice).
    const { durationMs, ...counts } = summary.body as Record<string, number>;
    expect(latest.body).toMatchObject(counts);
    expect(durationMs).toBeGreaterThanOrEqual(0);
    await expectStatus(401, 'GET', LATEST_SWEEP, { auth: null });
    // The history: the sweep just run is in the last 24 hours, with its counts and its held-back sessions.
    const history = await expectStatus(200, 'GET', SWEEPS);
    const sweeps = (history.body as { sweeps: Record<string, number>[] }).sweeps;
    expect(sweeps.at(-1)).toMatchObject({ ...counts, heldBack: 0 });
    const after = String((sweeps.at(-1)?.startedAt ?? 0) + 1);
    expect((await expectStatus(200, 'GET', SWEEPS, { query: { since: after } })).body).toEqual({
      sweeps: [],
    });
    await expectStatus(400, 'GET', SWEEPS, { query: { since: 'yesterday' } });
    await expectStatus(400, 'GET', SWEEPS, { query: { limit: '5' } });
    await expectStatus(401, 'GET', SWEEPS, { auth: null });
  });

  it('sessions across users: a page, bad input, authentication', async () => {
    await connectedSession();
    const first = await expectStatus(200, 'GET', SEARCH, { query: { limit: '1', status: 'active' } });
    expect((first.body as { sessions: unknown[] }).sessions).toHaveLength(1);
    await expectStatus(400, 'GET', SEARCH, { query: { limit: '500' } });
    await expectStatus(401, 'GET', SEARCH, { auth: null });
  });

  it('providers: a page (never a secret), bad input, authentication', async () => {
    const page = await expectStatus(200, 'GET', PROVIDERS);
    const body = page.body as { providers: { providerId: string }[]; cursor: string | null };
    expect(body.providers.map((p) => p.providerId)).toContain('mcp');
    expect(page.text).not.toContain(oauth.clients.basic.clientSecret);
    const one = await expectStatus(200, 'GET', PROVIDERS, { query: { limit: '1' } });
    expect((one.body as { providers: unknown[] }).providers).toHaveLength(1);
    await expectStatus(400, 'GET', PROVIDERS, { query: { limit: '101' } });
    await expectStatus(400, 'GET', PROVIDERS, { query: { cursor: 'not a cursor' } });
    await expectStatus(401, 'GET', PROVIDERS, { auth: null });
  });

  it('refresh: 200 with metadata (no token), 400, 401, 404, 409, 503 with Retry-After', async () => {
    const params = await connectedSession();
    const before = await expectStatus(200, 'GET', SESSION, { params });
    const refreshed = await expectStatus(200, 'POST', REFRESH, { params });
    expect(refreshed.text).not.toMatch(/access_token|refresh_token/u);
    expect((refreshed.body as { refreshedAt: number | null }).refreshedAt).not.toBeNull();
    expect(before.body).toMatchObject({ refreshedAt: null });
    await expectStatus(200, 'POST', REFRESH, { params, body: {} });
    await expectStatus(400, 'POST', REFRESH, { params, body: { force: false } });
    await expectStatus(400, 'POST', REFRESH, { params, query: { force: 'true' } });
    await expectStatus(400, 'POST', REFRESH, { params: { userId: 'bad\u0001', providerId: 'mcp' } });
    await expectStatus(401, 'POST', REFRESH, { params, auth: null });
    await expectStatus(404, 'POST', REFRESH, { params: { userId: 'nobody', providerId: 'mcp' } });

    oauth.proxy.setFault({ kind: 'status', status: 503, body: 'maintenance', times: 1 });
    const unavailable = await expectStatus(503, 'POST', REFRESH, { params });
    expect(Number(unavailable.headers.get('retry-after'))).toBeGreaterThan(0);

    const dead = await connectedSession();
    oauth.proxy.setFault({ kind: 'oauth-error', status: 400, error: 'invalid_grant', times: 1 });
    await expectStatus(409, 'POST', REFRESH, { params: dead });
    oauth.proxy.setFault(null);
  });

  it('GET /v1/sweeps/latest is 404 on a keeper that has not swept yet', async () => {
    const fresh = await startTestStack();
    try {
      const res = await fetch(`${fresh.url}/v1/sweeps/latest`, {
        headers: { authorization: `Bearer ${fresh.apiKey}` },
      });
      expect(res.status).toBe(404);
      const response = (spec.paths[LATEST_SWEEP] as Record<string, Operation>).get?.responses['404'];
      expect(response).toBeDefined();
      seen.add(`GET ${LATEST_SWEEP} 404`);
    } finally {
      await fresh.stop();
    }
  });

  it('exercised every documented response the local stack can produce', () => {
    const missing = operations().flatMap(({ path, method, op }) =>
      Object.keys(op.responses)
        .filter((status) => !NOT_PRODUCIBLE_LOCALLY.has(status))
        .map((status) => `${method} ${path} ${status}`)
        .filter((key) => !seen.has(key)),
    );
    expect(missing).toEqual([]);
  });
});
