// A namespace import keeps the bundle tree-shaken; the package's `z` export drags in all of zod (~430 KB).
import * as z from 'zod/mini';
import { InvalidRequestError } from '../core/errors.js';
import {
  type ClientAuthMethod,
  MAX_CONCURRENT_REFRESHES,
  MAX_EPOCH_SECONDS,
  MAX_TOKEN_BYTES,
  REFRESH_POLICIES,
  REFRESH_TOKEN_IDLE_SECONDS,
} from '../core/model.js';
import { checkProviderUrl } from '../core/oauth/net-guard.js';
import type {
  AuthorizeInput,
  McpProviderInput,
  PageRequest,
  ProviderInput,
  SessionSearch,
  TokenRequest,
  TokenResponseInput,
} from '../core/services.js';

/**
 * Request validation for the API. Every parse function either returns a typed value or throws an
 * InvalidRequestError whose description names the offending field. Descriptions never echo a value
 * from the request (it may be a secret), only field names.
 */

export const MAX_ID_LENGTH = 256;
export { MAX_TOKEN_BYTES };
export const MAX_URL_LENGTH = 2048;
export const DEFAULT_MIN_VALIDITY = 60;
export const MAX_MIN_VALIDITY = 86_400;
/** expires_at above this is almost certainly epoch milliseconds, not seconds. */
export const MAX_EXPIRES_AT = MAX_EPOCH_SECONDS;

export const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'none'] as const;

export type ValidProviderInput = ProviderInput & { clientAuthMethod: ClientAuthMethod };
export type ValidTokenResponse = TokenResponseInput & { token_type: string };

// --- helpers ---------------------------------------------------------------------------------

function isControl(code: number): boolean {
  return code <= 0x1f || (code >= 0x7f && code <= 0x9f);
}

function hasControlCharacter(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (isControl(s.charCodeAt(i))) return true;
  return false;
}

/** True when the string holds a lone (unpaired) UTF-16 surrogate, which is not valid Unicode. */
function hasLoneSurrogate(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
      return true;
    }
    if (c >= 0xdc00 && c <= 0xdfff) return true;
  }
  return false;
}

function codePointLength(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function utf8Length(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

function describeIssues(issues: readonly z.core.$ZodIssue[], unknownNoun: string): string {
  return issues
    .map((issue) => {
      if (issue.code === 'unrecognized_keys') {
        const shown = issue.keys.slice(0, 10).map((k) => JSON.stringify(k.slice(0, 64)));
        const more = issue.keys.length > 10 ? `, … (${issue.keys.length - 10} more)` : '';
        return `unknown ${unknownNoun}${issue.keys.length === 1 ? '' : 's'} ${shown.join(', ')}${more}`;
      }
      return `${issue.path.length > 0 ? issue.path.join('.') : 'body'}: ${issue.message}`;
    })
    .join('; ');
}

/** Parses with `schema`, reporting every problem at once (fields in shape order, then unknown fields). */
function parseWith<S extends z.ZodMiniType>(schema: S, input: unknown, unknownNoun = 'field'): z.output<S> {
  const result = schema.safeParse(input);
  if (!result.success) throw new InvalidRequestError(describeIssues(result.error.issues, unknownNoun));
  return result.data;
}

const OBJECT_ERROR = { error: 'must be a JSON object' };

/** A string schema with a single wording for "absent" and "not a string". */
function str(expected: string) {
  return z.string({ error: (issue) => (issue.input === undefined ? 'is required' : `must be ${expected}`) });
}

// Length rules are refinements: zod's minLength/maxLength also run on a value that already failed the
// type check (an array has a length), which would add a second message for the same field.
const nonEmpty = (expected: string) => z.refine<string>((s) => s !== '', { error: `must be ${expected}` });
const maxChars = (max: number) =>
  z.refine<string>((s) => s.length <= max, { error: `must be at most ${max} characters` });
const maxTokenBytes = z.refine<string>((s) => utf8Length(s) <= MAX_TOKEN_BYTES, {
  error: `must be at most ${MAX_TOKEN_BYTES} bytes`,
});

type UrlCheck = { httpOnly: boolean; noCredentials: boolean };

/** Absolute URL check; returns a problem description or undefined. Policy (https, addresses) is enforced at fetch time. */
function urlProblem(value: string, check: UrlCheck): string | undefined {
  if (value.length > MAX_URL_LENGTH) return `must be at most ${MAX_URL_LENGTH} characters`;
  if (/\s/u.test(value) || hasControlCharacter(value))
    return 'must not contain whitespace or control characters';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an absolute URL';
  }
  if (check.httpOnly && url.protocol !== 'https:' && url.protocol !== 'http:')
    return 'must be an http(s) URL';
  if (value.includes('#')) return 'must not contain a fragment';
  if (check.noCredentials) {
    const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/iu.exec(value)?.[1] ?? '';
    if (url.username !== '' || url.password !== '' || authority.includes('@')) {
      return 'must not contain credentials';
    }
  }
  return undefined;
}

function urlField(check: UrlCheck) {
  return z.optional(
    str('a string').check(
      z.superRefine((value, ctx) => {
        const problem = urlProblem(value, check);
        if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
      }),
    ),
  );
}

const httpUrl = urlField({ httpOnly: true, noCredentials: true });
const resourceUri = urlField({ httpOnly: false, noCredentials: false });

const SECRET_ARN = /^arn:aws(?:-[a-z]+)*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$/u;

// --- ids ---------------------------------------------------------------------------------------

/**
 * Characters an id may not contain besides control characters: `/` would split the path, `?` and
 * `#` end it, `%` would be read as an escape (API Gateway decodes some escapes twice), `\` is a path
 * separator to some proxies. The client and the CLI refuse the same set before sending.
 */
export const ID_FORBIDDEN_CHARACTERS = ['/', '?', '#', '%', '\\'] as const;
const FORBIDDEN_IN_ID = /[/?#%\\]/u;

/**
 * Validates an id taken from the path. The path arrives percent-decoded (API Gateway decodes it
 * before Lambda sees it; the local stack does the same), so the id is used exactly as it came.
 * `name` appears in the error.
 */
export function parseId(name: string, raw: string): string {
  if (typeof raw !== 'string' || raw.length === 0)
    throw new InvalidRequestError(`${name}: must not be empty`);
  if (codePointLength(raw) > MAX_ID_LENGTH) {
    throw new InvalidRequestError(`${name}: must be at most ${MAX_ID_LENGTH} characters`);
  }
  if (hasControlCharacter(raw)) throw new InvalidRequestError(`${name}: must not contain control characters`);
  if (FORBIDDEN_IN_ID.test(raw)) {
    throw new InvalidRequestError(`${name}: must not contain ${ID_FORBIDDEN_CHARACTERS.join(' ')}`);
  }
  if (raw === '.' || raw === '..') throw new InvalidRequestError(`${name}: must not be "." or ".."`);
  if (hasLoneSurrogate(raw)) throw new InvalidRequestError(`${name}: must be valid Unicode`);
  return raw;
}

// --- JSON body ---------------------------------------------------------------------------------

/** Parses a request body that must be a JSON object. */
export function parseJsonBody(text: string | undefined): Record<string, unknown> {
  if (text === undefined || text.trim() === '') throw new InvalidRequestError('request body is required');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InvalidRequestError('malformed JSON body');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidRequestError('body: must be a JSON object');
  }
  return value as Record<string, unknown>;
}

// --- provider ----------------------------------------------------------------------------------

/** A JSON integer within bounds (no numeric string: a provider body is written by hand or by code). */
function integerIn(bounds: { min: number; max: number }, unit = '') {
  const error = `must be an integer from ${bounds.min} to ${bounds.max}${unit}`;
  return z.optional(
    z
      .number({ error })
      .check(z.refine((n) => Number.isInteger(n) && n >= bounds.min && n <= bounds.max, { error })),
  );
}

/** How the keeper refreshes the provider's sessions: both provider forms take these. */
const refreshFields = {
  refreshPolicy: z.optional(z.enum(REFRESH_POLICIES, { error: `must be ${REFRESH_POLICIES.join(' or ')}` })),
  refreshTokenIdleSeconds: integerIn(REFRESH_TOKEN_IDLE_SECONDS, ' (seconds)'),
  maxConcurrentRefreshes: integerIn(MAX_CONCURRENT_REFRESHES),
};

/**
 * The idle lifetime is what a keepAlive schedule is computed from; an eager provider's sessions are
 * refreshed before every expiry and would silently ignore it, so it is refused there.
 */
function checkRefreshFields(body: { refreshPolicy?: string; refreshTokenIdleSeconds?: number }): void {
  if (body.refreshTokenIdleSeconds !== undefined && body.refreshPolicy !== 'keepAlive') {
    throw new InvalidRequestError(
      'refreshTokenIdleSeconds: applies only with refreshPolicy keepAlive (eager sessions are refreshed before every expiry)',
    );
  }
}

const providerSchema = z.strictObject(
  {
    issuer: httpUrl,
    tokenEndpoint: httpUrl,
    revocationEndpoint: httpUrl,
    clientId: str('a non-empty string').check(nonEmpty('a non-empty string'), maxChars(1024)),
    clientSecret: z.optional(str('a non-empty string').check(nonEmpty('a non-empty string'), maxChars(4096))),
    clientSecretArn: z.optional(
      str('a Secrets Manager secret ARN').check(
        maxChars(2048),
        z.regex(SECRET_ARN, {
          error: 'must be a Secrets Manager secret ARN (arn:aws:secretsmanager:…:secret:…)',
        }),
      ),
    ),
    clientAuthMethod: z.optional(
      z.enum(CLIENT_AUTH_METHODS, { error: `must be one of ${CLIENT_AUTH_METHODS.join(', ')}` }),
    ),
    resource: resourceUri,
    scope: z.optional(str('a string').check(maxChars(1024))),
    ...refreshFields,
  },
  OBJECT_ERROR,
);

/** Validates a PUT /v1/providers/{providerId} body and resolves the default clientAuthMethod. */
export const INSECURE_HTTP_HINT =
  'TOKENKEEPER_ALLOW_INSECURE_HTTP=1 allows it on the local stack, for development and tests';

export function parseProviderBody(
  json: unknown,
  options: {
    allowInsecureHttp: boolean;
    /** Name the variable that lifts the rule (the local stack; in Lambda the variable is refused). */
    insecureHttpHint?: boolean;
  } = { allowInsecureHttp: false },
): ValidProviderInput {
  const body = parseWith(providerSchema, json);
  // https only, and no loopback/private/metadata literal hosts; names are checked again at connect time.
  for (const field of ['issuer', 'tokenEndpoint', 'revocationEndpoint'] as const) {
    const value = body[field];
    const problem = value === undefined ? undefined : checkProviderUrl(value, options);
    if (problem === undefined) continue;
    const liftable =
      options.insecureHttpHint === true &&
      checkProviderUrl(value as string, { allowInsecureHttp: true }) === undefined;
    throw new InvalidRequestError(`${field}: ${problem}${liftable ? ` (${INSECURE_HTTP_HINT})` : ''}`);
  }
  if (body.issuer === undefined && body.tokenEndpoint === undefined) {
    throw new InvalidRequestError('issuer, tokenEndpoint: at least one is required');
  }
  checkRefreshFields(body);
  if (body.clientSecret !== undefined && body.clientSecretArn !== undefined) {
    throw new InvalidRequestError('clientSecretArn: must not be given together with clientSecret');
  }
  const hasSecret = body.clientSecret !== undefined || body.clientSecretArn !== undefined;
  const method: ClientAuthMethod = body.clientAuthMethod ?? (hasSecret ? 'client_secret_basic' : 'none');
  if (method === 'none' && hasSecret) {
    throw new InvalidRequestError(
      'clientAuthMethod: none must not be combined with clientSecret or clientSecretArn',
    );
  }
  if (method !== 'none' && !hasSecret) {
    throw new InvalidRequestError(`clientAuthMethod: ${method} requires clientSecret or clientSecretArn`);
  }
  return { ...body, clientAuthMethod: method };
}

// --- provider by MCP server URL ---------------------------------------------------------------

const mcpProviderSchema = z.strictObject(
  {
    mcpServerUrl: str('a string').check(
      z.superRefine((value, ctx) => {
        const problem = urlProblem(value, { httpOnly: true, noCredentials: true });
        if (problem !== undefined) ctx.addIssue({ code: 'custom', message: problem });
      }),
    ),
    clientId: z.optional(str('a non-empty string').check(nonEmpty('a non-empty string'), maxChars(1024))),
    clientSecret: z.optional(str('a non-empty string').check(nonEmpty('a non-empty string'), maxChars(4096))),
    clientAuthMethod: z.optional(
      z.enum(CLIENT_AUTH_METHODS, { error: `must be one of ${CLIENT_AUTH_METHODS.join(', ')}` }),
    ),
    scope: z.optional(str('a string').check(maxChars(1024))),
    ...refreshFields,
  },
  OBJECT_ERROR,
);

/** True when a provider body is the MCP form (`mcpServerUrl`), which is parsed by parseMcpProviderBody. */
export function isMcpProviderBody(json: Record<string, unknown>): boolean {
  return Object.hasOwn(json, 'mcpServerUrl');
}

/**
 * Validates `PUT /v1/providers/{providerId}` by MCP server URL: the keeper discovers the rest. A
 * client id is optional (without one the keeper registers itself); a secret needs a client id.
 */
export function parseMcpProviderBody(
  json: Record<string, unknown>,
  options: { allowInsecureHttp: boolean; insecureHttpHint?: boolean } = { allowInsecureHttp: false },
): McpProviderInput {
  const mixed = ['issuer', 'tokenEndpoint', 'revocationEndpoint', 'resource', 'clientSecretArn'].filter((f) =>
    Object.hasOwn(json, f),
  );
  if (mixed.length > 0) {
    throw new InvalidRequestError(
      `mcpServerUrl: must not be combined with ${mixed.join(', ')}; the keeper discovers them from the MCP server`,
    );
  }
  const body = parseWith(mcpProviderSchema, json);
  const problem = checkProviderUrl(body.mcpServerUrl, options);
  if (problem !== undefined) {
    const liftable =
      options.insecureHttpHint === true &&
      checkProviderUrl(body.mcpServerUrl, { allowInsecureHttp: true }) === undefined;
    throw new InvalidRequestError(`mcpServerUrl: ${problem}${liftable ? ` (${INSECURE_HTTP_HINT})` : ''}`);
  }
  checkRefreshFields(body);
  if (
    body.clientId === undefined &&
    (body.clientSecret !== undefined || body.clientAuthMethod !== undefined)
  ) {
    throw new InvalidRequestError('clientId: is required with clientSecret or clientAuthMethod');
  }
  if (body.clientId !== undefined) {
    const hasSecret = body.clientSecret !== undefined;
    const method = body.clientAuthMethod ?? (hasSecret ? 'client_secret_basic' : 'none');
    if (method === 'none' && hasSecret) {
      throw new InvalidRequestError('clientAuthMethod: none must not be combined with clientSecret');
    }
    if (method !== 'none' && !hasSecret) {
      throw new InvalidRequestError(`clientAuthMethod: ${method} requires clientSecret`);
    }
    return { ...body, clientAuthMethod: method };
  }
  return body;
}

// --- authorize ---------------------------------------------------------------------------------

const authorizeSchema = z.strictObject(
  {
    scope: z.optional(str('a string').check(maxChars(1024))),
    redirectUri: httpUrl,
  },
  OBJECT_ERROR,
);

/** Validates a `POST /v1/sessions/{userId}/{providerId}/authorize` body; an empty body is `{}`. */
export function parseAuthorizeBody(text: string | undefined): AuthorizeInput {
  if (text === undefined || text.trim() === '') return {};
  const body = parseWith(authorizeSchema, parseJsonBody(text));
  const out: AuthorizeInput = {};
  if (body.scope !== undefined) out.scope = body.scope;
  if (body.redirectUri !== undefined) out.redirectUri = body.redirectUri;
  return out;
}

// --- session (the provider's token response) ---------------------------------------------------

const DECIMAL = /^\d+(?:\.\d+)?$/u;

/** A number, or a plain decimal string ("3600"), for which `ok` holds; then `checks`. */
function numeric(expected: string, ok: (n: number) => boolean, ...checks: z.core.$ZodCheck<number>[]) {
  return z.pipe(
    z.transform((v: unknown) => (typeof v === 'string' && DECIMAL.test(v) ? Number(v) : v)),
    z
      .number({ error: `must be ${expected}` })
      .check(z.refine(ok, { error: `must be ${expected}` }), ...checks),
  );
}

/** A lifetime in seconds: now + lifetime must stay a safe integer (DynamoDB numbers are read back as JS numbers). */
const lifetimeSeconds = numeric(
  'a non-negative number',
  (n) => n >= 0,
  z.refine<number>((n) => n <= MAX_EXPIRES_AT, { error: 'is too large' }),
);

/** The token response; an optional field given as null counts as absent. */
const sessionSchema = z.object(
  {
    access_token: str('a non-empty string').check(nonEmpty('a non-empty string'), maxTokenBytes),
    refresh_token: z.nullish(str('a non-empty string').check(nonEmpty('a non-empty string'), maxTokenBytes)),
    expires_in: z.nullish(lifetimeSeconds),
    expires_at: z.nullish(
      numeric(
        'positive epoch seconds',
        (n) => n > 0,
        z.refine<number>((n) => n <= MAX_EXPIRES_AT, { error: 'must be epoch seconds, not milliseconds' }),
      ),
    ),
    refresh_expires_in: z.nullish(lifetimeSeconds),
    refresh_token_expires_in: z.nullish(lifetimeSeconds),
    token_type: z.nullish(str('a non-empty string').check(nonEmpty('a non-empty string'), maxChars(128))),
    scope: z.nullish(str('a string').check(maxTokenBytes)),
  },
  OBJECT_ERROR,
);

/**
 * Validates a PUT /v1/sessions/{userId}/{providerId} body: the provider's token response as it
 * came. The refresh token's lifetime is read from `refresh_expires_in` (Keycloak) or
 * `refresh_token_expires_in` (GitHub); other unknown fields (id_token, …) are accepted and dropped,
 * never stored.
 */
export function parseSessionBody(json: unknown): ValidTokenResponse {
  const body = parseWith(sessionSchema, json);
  const out: ValidTokenResponse = {
    access_token: body.access_token,
    token_type: body.token_type ?? 'Bearer',
  };
  if (body.refresh_token != null) out.refresh_token = body.refresh_token;
  if (body.expires_in != null) out.expires_in = body.expires_in;
  if (body.expires_at != null) out.expires_at = body.expires_at;
  const refreshLifetime = body.refresh_expires_in ?? body.refresh_token_expires_in;
  if (refreshLifetime != null) out.refresh_expires_in = refreshLifetime;
  if (body.scope != null) out.scope = body.scope;
  return out;
}

// --- token query -------------------------------------------------------------------------------

const MIN_VALIDITY_ERROR = { error: `must be an integer from 0 to ${MAX_MIN_VALIDITY}` };

const tokenQuerySchema = z.strictObject(
  {
    minValidity: z.optional(
      z.pipe(
        z
          .string(MIN_VALIDITY_ERROR)
          .check(z.refine((s) => /^\d{1,6}$/u.test(s) && Number(s) <= MAX_MIN_VALIDITY, MIN_VALIDITY_ERROR)),
        z.transform(Number),
      ),
    ),
    force: z.optional(
      z.pipe(
        z.enum(['true', 'false'], { error: 'must be true or false' }),
        z.transform((v) => v === 'true'),
      ),
    ),
    rejected: z.optional(
      z.string().check(
        z.refine((s) => /^[0-9a-f]{16}$/u.test(s), {
          error: "must be 16 lower-case hex characters (the start of the refused token's SHA-256)",
        }),
      ),
    ),
  },
  OBJECT_ERROR,
);

// --- session search query ----------------------------------------------------------------------

export const MAX_SEARCH_LIMIT = 100;
export const DEFAULT_SEARCH_LIMIT = 50;
const LIMIT_ERROR = { error: `must be an integer from 1 to ${MAX_SEARCH_LIMIT}` };

/** The paging parameters every list route takes. */
const pageFields = {
  limit: z.optional(
    z.pipe(
      z
        .string(LIMIT_ERROR)
        .check(
          z.refine(
            (s) => /^\d{1,3}$/u.test(s) && Number(s) >= 1 && Number(s) <= MAX_SEARCH_LIMIT,
            LIMIT_ERROR,
          ),
        ),
      z.transform(Number),
    ),
  ),
  cursor: z.optional(
    z
      .string()
      .check(
        z.refine((s) => /^[A-Za-z0-9_-]{1,4096}$/u.test(s), { error: 'not a cursor this API returned' }),
      ),
  ),
};

const searchQuerySchema = z.strictObject(
  {
    providerId: z.optional(z.string()),
    status: z.optional(
      z.enum(['active', 'reauthorization_required'], { error: 'must be active or reauthorization_required' }),
    ),
    ...pageFields,
  },
  OBJECT_ERROR,
);

const pageQuerySchema = z.strictObject(pageFields, OBJECT_ERROR);

function pageOf(q: { limit?: number; cursor?: string }): PageRequest {
  const page: PageRequest = { limit: q.limit ?? DEFAULT_SEARCH_LIMIT };
  if (q.cursor !== undefined) page.cursor = q.cursor;
  return page;
}

/** Validates GET /v1/sessions?providerId=&status=&limit=&cursor= (across users, paged, at most 100 a page). */
export function parseSessionSearchQuery(query: Record<string, string>): SessionSearch {
  const q = parseWith(searchQuerySchema, query, 'query parameter');
  const search: SessionSearch = pageOf(q);
  if (q.providerId !== undefined) search.providerId = parseId('providerId', q.providerId);
  if (q.status !== undefined) search.status = q.status;
  return search;
}

/** Validates GET /v1/providers?limit=&cursor= (at most 100 a page). */
export function parseProviderListQuery(query: Record<string, string>): PageRequest {
  return pageOf(parseWith(pageQuerySchema, query, 'query parameter'));
}

/**
 * Validates POST /v1/sessions/{userId}/{providerId}/refresh: no query parameter, and no body but
 * an empty JSON object (the action takes no options).
 */
export function parseRefreshRequest(query: Record<string, string>, body: string | undefined): void {
  parseWith(z.strictObject({}, OBJECT_ERROR), query, 'query parameter');
  if (body === undefined || body.trim() === '') return;
  parseWith(z.strictObject({}, OBJECT_ERROR), parseJsonBody(body));
}

/**
 * Validates the token route's query. Repeated parameters arrive comma-joined (as API Gateway does)
 * and are therefore rejected by the value rules.
 */
export function parseTokenQuery(query: Record<string, string>): TokenRequest {
  const q = parseWith(tokenQuerySchema, query, 'query parameter');
  const request: TokenRequest = {
    minValidity: q.minValidity ?? DEFAULT_MIN_VALIDITY,
    force: q.force ?? false,
  };
  if (q.rejected !== undefined) request.rejected = q.rejected;
  return request;
}

/** How far back GET /v1/sweeps reaches by default (and at most: the history's items live 48 hours). */
export const SWEEP_HISTORY_DEFAULT_SECONDS = 24 * 3600;
const SINCE_ERROR = 'must be epoch seconds (a whole number)';
const sweepsQuerySchema = z.strictObject(
  {
    since: z.optional(
      z.pipe(
        z
          .string(SINCE_ERROR)
          .check(z.refine((v) => /^\d{1,12}$/u.test(v) && Number(v) <= MAX_EPOCH_SECONDS, SINCE_ERROR)),
        z.transform(Number),
      ),
    ),
  },
  OBJECT_ERROR,
);

/** Validates GET /v1/sweeps?since=<epoch seconds>; the default is 24 hours before `nowSeconds`. */
export function parseSweepsQuery(query: Record<string, string>, nowSeconds: number): number {
  const q = parseWith(sweepsQuerySchema, query, 'query parameter');
  return q.since ?? nowSeconds - SWEEP_HISTORY_DEFAULT_SECONDS;
}
