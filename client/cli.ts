import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { UpstreamAuth } from './console-proxy.js';
import { TokenKeeperApiError, TokenKeeperConnectionError } from './errors.js';
import {
  ansi,
  isoSeconds,
  type Paint,
  plain,
  renderProvider,
  renderProviderList,
  renderSession,
  renderSessionList,
  renderStatus,
  renderSweep,
} from './format.js';
import { ID_RULE, idProblem } from './ids.js';
import { type ClientAuth, defaultCredentialChain, TokenKeeperClient } from './index.js';
import { type CredentialProvider, createSigV4Signer, signingRegion } from './sigv4.js';
import type { AuthorizeOptions, ProviderInput, TokenResponse } from './types.js';

/**
 * The `tokenkeeper` operator CLI as a function: arguments and an environment in, text out, an
 * exit code back (0 ok, 1 failure, 2 usage). bin/cli.ts wires it to the process.
 */

export interface CliOutput {
  write(text: string): unknown;
  isTTY?: boolean;
}

export interface CliIo {
  stdout: CliOutput;
  stderr: CliOutput;
  env: Record<string, string | undefined>;
  /** Read by `--file -` and the `--…-stdin` options. */
  stdin?: AsyncIterable<string | Uint8Array>;
  fetch?: typeof fetch;
  /** Epoch milliseconds; default Date.now. */
  clock?: () => number;
  /** SigV4 credentials; default the AWS default credential chain. */
  credentials?: CredentialProvider;
  /** Ends a long-running command (`console`): bin/cli.ts aborts it on SIGINT/SIGTERM. */
  signal?: AbortSignal;
  /** Where relative data directories are found; default process.cwd(). */
  cwd?: string;
}

export const USAGE = `Usage: tokenkeeper <command> [options]

Commands:
  status <userId>                              the user's sessions: status, expiry, last refresh, last error
  providers list                               every provider: circuit, client, endpoint
  providers get <providerId>
  providers put <providerId> (--file <json|-> | --client-id … [--issuer …] [--token-endpoint …] …
               | --mcp-server-url <url> [--client-id …] [--scope …])
               by MCP server URL the keeper discovers the authorization server and registers itself;
               client secret: --client-secret-file <path>, --client-secret-stdin or
               $TOKENKEEPER_CLIENT_SECRET (never on the command line, where ps shows it);
               either form: [--refresh-policy eager|keepAlive] [--refresh-token-idle-seconds <s>]
               [--max-concurrent-refreshes <n>]
  sessions list <userId>
  sessions show <userId> <providerId>
  sessions put <userId> <providerId> (--file <json|-> | --access-token-file <path> [--refresh-token-file <path>]
               [--expires-in …]); either token from stdin instead: --access-token-stdin or
               --refresh-token-stdin (tokens never on the command line, where ps shows them)
  sessions delete <userId> <providerId>
  authorize <userId> <providerId> [--scope …] [--redirect-uri <url>]
               prints the URL to open in the user's browser. Without --redirect-uri the keeper's
               callback stores the session for <userId>: whoever opens the URL connects their
               account. With it, the browser returns with status=pending&connection=<id>, and
               nothing is stored until the connection is completed
  complete <userId> <providerId> <connectionId>
               completes a pending connection for <userId> (the user your application serves)
  token get <userId> <providerId> [--min-validity <s>] [--force]
  sweep                                        sweep now (local stack only)
  console [--port <n>]                         the console for this API on 127.0.0.1 (each /v1 call
                                               signed with SigV4, as kubectl proxy does); Ctrl-C stops

Target:
  default: the local stack at http://127.0.0.1:$PORT (8787)
  --url <url> / $TOKENKEEPER_URL: a loopback URL (127.0.0.1, localhost, [::1]) is a local stack, with
           the bearer key below; any other is a deployed API, signed with SigV4 (AWS default
           credential chain), region from --region, the execute-api host name, or $AWS_REGION
  local key: $TOKENKEEPER_API_KEY, else <data dir>/api-key (--data-dir or $TOKENKEEPER_DATA_DIR);
           with neither, the one of .data/api-key (npm start) and .data/demo/api-key (npm run demo)
           that the stack accepts
  --auth sigv4|bearer / $TOKENKEEPER_AUTH overrides the authentication

Ids: a userId or providerId ${ID_RULE}.

Options:
  --json       print the API's JSON answer
  --name=value the form to use when a value begins with '-'
  --no-color   plain output (also $NO_COLOR)
  -h, --help   this help
`;

const GLOBAL = ['url', 'region', 'auth', 'data-dir', 'json', 'no-color', 'help'] as const;
const PROVIDER_FIELDS = {
  issuer: 'issuer',
  'token-endpoint': 'tokenEndpoint',
  'revocation-endpoint': 'revocationEndpoint',
  'client-id': 'clientId',
  'client-secret-arn': 'clientSecretArn',
  'client-auth-method': 'clientAuthMethod',
  resource: 'resource',
  scope: 'scope',
  'mcp-server-url': 'mcpServerUrl',
  'refresh-policy': 'refreshPolicy',
  'refresh-token-idle-seconds': 'refreshTokenIdleSeconds',
  'max-concurrent-refreshes': 'maxConcurrentRefreshes',
} as const;
/** Fields sent as JSON numbers when given as digits on the command line. */
const NUMERIC_FIELDS = new Set([
  'expires_in',
  'expires_at',
  'refreshTokenIdleSeconds',
  'maxConcurrentRefreshes',
]);
const SESSION_FIELDS = {
  'expires-in': 'expires_in',
  'expires-at': 'expires_at',
  'token-type': 'token_type',
  scope: 'scope',
} as const;

/** The parse options of a secret given as --<name>-file <path> or --<name>-stdin (and refused as --<name>). */
function secretOptions<N extends string>(name: N) {
  return {
    [name]: { type: 'string' },
    [`${name}-file`]: { type: 'string' },
    [`${name}-stdin`]: { type: 'boolean' },
  } as Record<N | `${N}-file`, { type: 'string' }> & Record<`${N}-stdin`, { type: 'boolean' }>;
}

const secretFlags = (name: string) => Object.keys(secretOptions(name));

const OPTIONS = {
  url: { type: 'string' },
  region: { type: 'string' },
  auth: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
  'no-color': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  file: { type: 'string', short: 'f' },
  'min-validity': { type: 'string' },
  'redirect-uri': { type: 'string' },
  port: { type: 'string' },
  force: { type: 'boolean' },
  // --client-secret, --access-token and --refresh-token are accepted only to be refused with a clear
  // message (argv is visible to every user through ps); --…-file and --…-stdin read them.
  ...secretOptions('client-secret'),
  ...secretOptions('access-token'),
  ...secretOptions('refresh-token'),
  ...Object.fromEntries(Object.keys(PROVIDER_FIELDS).map((k) => [k, { type: 'string' }])),
  ...Object.fromEntries(Object.keys(SESSION_FIELDS).map((k) => [k, { type: 'string' }])),
} as const satisfies Record<string, { type: 'string' | 'boolean'; short?: string }>;

type Values = Record<string, string | boolean | undefined>;

interface Command {
  /** positional argument names after the command words */
  args: string[];
  options: string[];
  run(ctx: Context, args: string[]): Promise<void>;
}

interface Context {
  client: TokenKeeperClient;
  target: Target;
  values: Values;
  io: CliIo;
  paint: Paint;
  nowSec: () => number;
  local: boolean;
  out(text: string): void;
  json(value: unknown): void;
}

class UsageError extends Error {}
class CliError extends Error {}

const COMMANDS: Record<string, Command> = {
  status: {
    args: ['userId'],
    options: [],
    async run(ctx, [userId]) {
      const sessions = await ctx.client.listSessions(userId as string);
      if (ctx.values.json) return ctx.json({ sessions });
      ctx.out(renderStatus(userId as string, sessions, ctx.nowSec(), ctx.paint));
    },
  },
  'providers put': {
    args: ['providerId'],
    options: ['file', ...secretFlags('client-secret'), ...Object.keys(PROVIDER_FIELDS)],
    async run(ctx, [providerId]) {
      const secret = await clientSecretFrom(ctx);
      const body = (await bodyFrom(ctx, PROVIDER_FIELDS)) as unknown as ProviderInput;
      if (secret !== undefined) body.clientSecret = secret;
      const { created, value } = await ctx.client.putProvider(providerId as string, body);
      if (ctx.values.json) return ctx.json(value);
      ctx.out(
        `provider ${value.providerId} ${created ? 'created' : 'replaced'}\n${renderProvider(value, ctx.nowSec())}`,
      );
    },
  },
  'providers list': {
    args: [],
    options: [],
    async run(ctx) {
      const providers = await ctx.client.listProviders();
      if (ctx.values.json) return ctx.json({ providers });
      ctx.out(renderProviderList(providers, ctx.paint));
    },
  },
  'providers get': {
    args: ['providerId'],
    options: [],
    async run(ctx, [providerId]) {
      const provider = await ctx.client.getProvider(providerId as string);
      if (ctx.values.json) return ctx.json(provider);
      ctx.out(renderProvider(provider, ctx.nowSec()));
    },
  },
  'sessions list': {
    args: ['userId'],
    options: [],
    async run(ctx, [userId]) {
      const sessions = await ctx.client.listSessions(userId as string);
      if (ctx.values.json) return ctx.json({ sessions });
      ctx.out(renderSessionList(userId as string, sessions, ctx.paint));
    },
  },
  'sessions show': {
    args: ['userId', 'providerId'],
    options: [],
    async run(ctx, [userId, providerId]) {
      const session = await ctx.client.getSession(userId as string, providerId as string);
      if (ctx.values.json) return ctx.json(session);
      ctx.out(renderSession(session, ctx.nowSec(), ctx.paint));
    },
  },
  'sessions put': {
    args: ['userId', 'providerId'],
    options: [
      'file',
      ...secretFlags('access-token'),
      ...secretFlags('refresh-token'),
      ...Object.keys(SESSION_FIELDS),
    ],
    async run(ctx, [userId, providerId]) {
      if ((['access-token', 'refresh-token'] as const).every((n) => ctx.values[`${n}-stdin`] === true)) {
        throw new UsageError('--access-token-stdin cannot be combined with --refresh-token-stdin');
      }
      const tokens: Record<string, string> = {};
      for (const [name, field] of [
        ['access-token', 'access_token'],
        ['refresh-token', 'refresh_token'],
      ] as const) {
        const value = await secretFrom(ctx, name, name.replace('-', ' '), TOKEN_IN_ARGV(name));
        if (value !== undefined) tokens[field] = value;
      }
      const body = (await bodyFrom(ctx, SESSION_FIELDS, tokens, [
        'access-token-file',
        'refresh-token-file',
      ])) as unknown as TokenResponse;
      const { created, value } = await ctx.client.putSession(userId as string, providerId as string, body);
      if (ctx.values.json) return ctx.json(value);
      ctx.out(
        `session ${value.userId} / ${value.providerId} ${created ? 'created' : 'replaced'}\n` +
          renderSession(value, ctx.nowSec(), ctx.paint),
      );
    },
  },
  'sessions delete': {
    args: ['userId', 'providerId'],
    options: [],
    async run(ctx, [userId, providerId]) {
      await ctx.client.deleteSession(userId as string, providerId as string);
      if (ctx.values.json) return ctx.json({ deleted: true, userId, providerId });
      ctx.out(`session ${userId} / ${providerId} deleted`);
    },
  },
  authorize: {
    args: ['userId', 'providerId'],
    options: ['scope', 'redirect-uri'],
    async run(ctx, [userId, providerId]) {
      const options: AuthorizeOptions = {};
      if (ctx.values.scope !== undefined) options.scope = ctx.values.scope as string;
      if (ctx.values['redirect-uri'] !== undefined)
        options.redirectUri = ctx.values['redirect-uri'] as string;
      const authorization = await ctx.client.authorize(userId as string, providerId as string, options);
      if (ctx.values.json) return ctx.json(authorization);
      const then =
        options.redirectUri === undefined
          ? `Whoever opens it connects their account as ${userId}.`
          : `The browser returns to ${options.redirectUri} with status=pending&connection=<id>; ` +
            `nothing is stored until: tokenkeeper complete ${userId} ${providerId} <id>`;
      ctx.out(
        `Open this URL in ${userId}'s browser (valid until ${isoSeconds(authorization.expiresAt)}):\n` +
          `${authorization.authorizationUrl}\n${then}`,
      );
    },
  },
  complete: {
    args: ['userId', 'providerId', 'connectionId'],
    options: [],
    async run(ctx, [userId, providerId, connectionId]) {
      const session = await ctx.client.completeConnection(
        userId as string,
        providerId as string,
        connectionId as string,
      );
      if (ctx.values.json) return ctx.json(session);
      ctx.out(`connection completed: session ${userId} / ${providerId}`);
      ctx.out(renderSession(session, ctx.nowSec(), ctx.paint));
    },
  },
  'token get': {
    args: ['userId', 'providerId'],
    options: ['min-validity', 'force'],
    async run(ctx, [userId, providerId]) {
      const raw = ctx.values['min-validity'] as string | undefined;
      if (raw !== undefined && !/^\d+$/u.test(raw)) {
        throw new UsageError('--min-validity must be a whole number of seconds');
      }
      const token = await ctx.client.getToken(userId as string, providerId as string, {
        ...(raw === undefined ? {} : { minValidity: Number(raw) }),
        force: ctx.values.force === true,
      });
      if (ctx.values.json) return ctx.json(token);
      ctx.out(token.access_token);
    },
  },
  console: {
    args: [],
    options: ['port'],
    async run(ctx) {
      const raw = (ctx.values.port as string | undefined) ?? '0';
      if (!/^\d{1,5}$/u.test(raw) || Number(raw) > 65_535) throw new UsageError('--port must be 0 to 65535');
      const { auth, baseUrl } = ctx.target;
      const upstream: UpstreamAuth =
        auth.kind === 'bearer'
          ? auth
          : {
              kind: 'sigv4',
              sign: createSigV4Signer({
                region: auth.region,
                credentials: auth.credentials ?? defaultCredentialChain(),
              }),
            };
      // The proxy and the built console load only for this command.
      const { startConsoleProxy } = await import('./console-proxy.js');
      const proxy = await startConsoleProxy({
        apiUrl: baseUrl,
        auth: upstream,
        port: Number(raw),
        ...(ctx.io.fetch ? { fetch: ctx.io.fetch } : {}),
      });
      ctx.out(
        `tokenkeeper console for ${baseUrl} (${auth.kind === 'sigv4' ? `SigV4, ${auth.region}` : 'bearer key'})`,
      );
      ctx.out(`open ${proxy.consoleUrl}`);
      ctx.out('the key after # stays in your browser; Ctrl-C stops the console');
      const signal = ctx.io.signal;
      await new Promise<void>((resolve) => {
        if (!signal) return;
        if (signal.aborted) resolve();
        signal.addEventListener('abort', () => resolve(), { once: true });
      });
      await proxy.stop();
    },
  },
  sweep: {
    args: [],
    options: [],
    async run(ctx) {
      if (!ctx.local) {
        throw new UsageError(
          'sweep works against the local stack only; a deployed keeper sweeps on its schedule',
        );
      }
      const summary = await ctx.client.sweepLocal();
      if (ctx.values.json) return ctx.json(summary);
      ctx.out(renderSweep(summary));
    },
  },
};

async function readAll(stream: AsyncIterable<string | Uint8Array>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream)
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk));
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * The request body: a JSON file (`-` for stdin), or built from the command's field flags and the
 * secrets read from their own files or stdin (`secrets`, by field) — not both.
 */
async function bodyFrom(
  ctx: Context,
  fieldFlags: Record<string, string>,
  secrets: Record<string, string> = {},
  secretFlagNames: string[] = [],
): Promise<Record<string, unknown>> {
  const file = ctx.values.file as string | undefined;
  const given = Object.keys(fieldFlags).filter((flag) => ctx.values[flag] !== undefined);
  if (file !== undefined) {
    if (given.length > 0) throw new UsageError(`--file cannot be combined with --${given[0]}`);
    let text: string;
    try {
      if (file === '-' && ctx.io.stdin === undefined) throw new Error('no standard input');
      text =
        file === '-' ? await readAll(ctx.io.stdin as AsyncIterable<string>) : await readFile(file, 'utf8');
    } catch (err) {
      throw new CliError(`cannot read ${file === '-' ? 'stdin' : file}: ${(err as Error).message}`);
    }
    try {
      return JSON.parse(text) as Record<string, unknown>;
    } catch {
      throw new CliError(`${file === '-' ? 'stdin' : file} is not valid JSON`);
    }
  }
  if (given.length === 0 && Object.keys(secrets).length === 0) {
    throw new UsageError(
      `give --file or the fields as options (${[...secretFlagNames, ...Object.keys(fieldFlags)]
        .map((f) => `--${f}`)
        .join(', ')})`,
    );
  }
  const body: Record<string, unknown> = { ...secrets };
  for (const flag of given) {
    const value = ctx.values[flag] as string;
    const field = fieldFlags[flag] as string;
    // Numbers stay numbers; the keeper validates every field and names the one it refuses.
    body[field] = NUMERIC_FIELDS.has(field) && /^\d+$/u.test(value) ? Number(value) : value;
  }
  return body;
}

export const CLIENT_SECRET_IN_ARGV =
  '--client-secret is refused: a value on the command line is visible to other users (ps) and kept in ' +
  'shell history; use --client-secret-file <path>, --client-secret-stdin or TOKENKEEPER_CLIENT_SECRET';

export const TOKEN_IN_ARGV = (name: 'access-token' | 'refresh-token') =>
  `--${name} is refused: a value on the command line is visible to other users (ps) and kept in ` +
  `shell history; use --${name}-file <path> or --${name}-stdin (or --file with the token response)`;

/**
 * A secret given as --<name>-file <path> or --<name>-stdin, never as --<name> <value> (refused with
 * `inArgv`); undefined when neither is given. Not combined with --file, which says everything.
 */
async function secretFrom(
  ctx: Context,
  name: string,
  label: string,
  inArgv: string,
): Promise<string | undefined> {
  const { values, io } = ctx;
  if (values[name] !== undefined) throw new UsageError(inArgv);
  const path = values[`${name}-file`] as string | undefined;
  const stdin = values[`${name}-stdin`] === true;
  if (path !== undefined && stdin) {
    throw new UsageError(`--${name}-file cannot be combined with --${name}-stdin`);
  }
  if ((path !== undefined || stdin) && values.file !== undefined) {
    throw new UsageError(
      `--file cannot be combined with --${name}-${stdin ? 'stdin' : 'file'}; put it in the file`,
    );
  }
  let text: string;
  if (path !== undefined) {
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new CliError(`cannot read the ${label} from ${path}: ${(err as NodeJS.ErrnoException).code}`);
    }
  } else if (stdin) {
    if (io.stdin === undefined) throw new CliError(`cannot read the ${label}: no standard input`);
    text = await readAll(io.stdin);
  } else {
    return undefined;
  }
  return nonEmpty(text, label);
}

/** A trailing newline is how files and pipes end, never part of a secret. */
function nonEmpty(text: string, label: string): string {
  const secret = text.replace(/\r?\n$/u, '');
  if (secret === '') throw new CliError(`the ${label} is empty`);
  return secret;
}

/**
 * The client secret for `providers put`, from a file, stdin or $TOKENKEEPER_CLIENT_SECRET — never
 * from argv. The environment variable applies only to a body built from options, without
 * --client-secret-arn; with --file the file says everything.
 */
async function clientSecretFrom(ctx: Context): Promise<string | undefined> {
  const { values, io } = ctx;
  const given = await secretFrom(ctx, 'client-secret', 'client secret', CLIENT_SECRET_IN_ARGV);
  if (given !== undefined) return given;
  const fromEnv =
    values.file === undefined && values['client-secret-arn'] === undefined
      ? io.env.TOKENKEEPER_CLIENT_SECRET || undefined
      : undefined;
  return fromEnv === undefined ? undefined : nonEmpty(fromEnv, 'client secret');
}

/** Where npm start and npm run demo keep their keys, when no data directory is named. */
const LOCAL_KEY_FILES = [join('.data', 'api-key'), join('.data', 'demo', 'api-key')];

interface LocalKey {
  key: string;
  /** Where it came from: `TOKENKEEPER_API_KEY` or a file's path. */
  from: string;
}

async function readKeyFile(path: string): Promise<string | undefined> {
  try {
    return (await readFile(path, 'utf8')).trim() || undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CliError(`cannot read the local API key from ${path}: ${(err as Error).message}`);
  }
}

/**
 * The local stack's key: $TOKENKEEPER_API_KEY, else <data dir>/api-key. Without a data directory,
 * npm start's and the demo's: the first the stack at `baseUrl` accepts (one cheap GET each).
 */
async function readApiKey(io: CliIo, values: Values, baseUrl: string): Promise<LocalKey> {
  const fromEnv = io.env.TOKENKEEPER_API_KEY;
  if (fromEnv) return { key: fromEnv, from: 'TOKENKEEPER_API_KEY' };
  const named = (values['data-dir'] as string | undefined) || io.env.TOKENKEEPER_DATA_DIR;
  const paths = named ? [join(named, 'api-key')] : LOCAL_KEY_FILES;
  const cwd = io.cwd ?? process.cwd();
  const found: LocalKey[] = [];
  for (const path of paths) {
    const key = await readKeyFile(resolve(cwd, path));
    if (key) found.push({ key, from: path });
  }
  if (found.length === 0) {
    throw new CliError(
      `no API key: set TOKENKEEPER_API_KEY, or run where the local stack keeps its data (${paths.join(' or ')} not found; --data-dir to change)`,
    );
  }
  if (found.length === 1) return found[0] as LocalKey;
  const doFetch = io.fetch ?? fetch;
  for (const candidate of found) {
    try {
      const res = await doFetch(`${baseUrl.replace(/\/$/u, '')}/v1/providers?limit=1`, {
        headers: { authorization: `Bearer ${candidate.key}` },
      });
      await res.body?.cancel();
      if (res.status !== 401) return candidate;
    } catch {
      break; // not reachable: the command itself says so
    }
  }
  return found[0] as LocalKey;
}

/** A loopback host: the local stack (npm start, npm run demo), reached with its bearer key. */
function isLoopback(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/gu, '');
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/u.test(host);
}

interface Target {
  baseUrl: string;
  auth: ClientAuth;
  local: boolean;
  /** Where the bearer key came from (local targets). */
  keyFrom?: string;
}

async function resolveTarget(io: CliIo, values: Values): Promise<Target> {
  const url = (values.url as string | undefined) || io.env.TOKENKEEPER_URL || undefined;
  const baseUrl = url ?? `http://127.0.0.1:${io.env.PORT || 8787}`;
  try {
    new URL(baseUrl);
  } catch {
    throw new UsageError(`not a URL: ${baseUrl}`);
  }
  const local = url === undefined || isLoopback(baseUrl);
  const kind = (values.auth as string | undefined) || io.env.TOKENKEEPER_AUTH || (local ? 'bearer' : 'sigv4');
  if (kind !== 'sigv4' && kind !== 'bearer')
    throw new UsageError(`--auth must be sigv4 or bearer, got ${kind}`);
  if (kind === 'bearer') {
    const { key, from } = await readApiKey(io, values, baseUrl);
    return { baseUrl, auth: { kind, apiKey: key }, local, keyFrom: from };
  }
  const region = signingRegion(values.region as string | undefined, baseUrl, io.env);
  if (!region) throw new UsageError('no AWS region for SigV4: pass --region or set AWS_REGION');
  return {
    baseUrl,
    auth: { kind, region, ...(io.credentials ? { credentials: io.credentials } : {}) },
    local: false,
  };
}

function findCommand(positionals: string[]): { name: string; command: Command; rest: string[] } {
  const [first, second] = positionals;
  if (first === undefined) throw new UsageError('missing command');
  for (const name of [`${first} ${second ?? ''}`, first]) {
    const command = COMMANDS[name];
    if (command) return { name, command, rest: positionals.slice(name.split(' ').length) };
  }
  if (COMMANDS[`${first} list`] || COMMANDS[`${first} get`]) {
    const subs = Object.keys(COMMANDS)
      .filter((n) => n.startsWith(`${first} `))
      .map((n) => n.split(' ')[1]);
    throw new UsageError(
      second === undefined
        ? `${first}: missing subcommand (${subs.join(', ')})`
        : `${first}: unknown subcommand ${second} (${subs.join(', ')})`,
    );
  }
  throw new UsageError(`unknown command ${first}`);
}

function colourEnabled(io: CliIo, values: Values): boolean {
  if (values['no-color'] || io.env.NO_COLOR) return false;
  if (io.env.FORCE_COLOR && io.env.FORCE_COLOR !== '0') return true;
  return io.stdout.isTTY === true && io.env.TERM !== 'dumb';
}

function describeError(err: unknown, local: boolean, keyFrom?: string): string {
  if (err instanceof TokenKeeperApiError) {
    let line = `${err.code}: ${err.description}`;
    if (err.status === 401 && keyFrom !== undefined) {
      line +=
        ` (the local stack refused the key from ${keyFrom}; it expects the key in its data directory:` +
        ` .data/api-key for npm start, .data/demo/api-key for npm run demo; --data-dir or TOKENKEEPER_API_KEY to choose)`;
    }
    if (err.status === 503 && err.retryAfterSeconds !== undefined)
      line += ` (retry after ${err.retryAfterSeconds}s)`;
    if (err.status === 403) line += ' (check the AWS credentials, region and the IAM policy)';
    return line;
  }
  if (err instanceof TokenKeeperConnectionError) {
    return local ? `${err.message} (is the local stack running? npm start)` : err.message;
  }
  if (err instanceof TypeError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const fail = (message: string, code: number) => {
    io.stderr.write(
      `tokenkeeper: ${message.replace(/\s*\n\s*/gu, ' ')}${code === 2 ? ' (see tokenkeeper --help)' : ''}\n`,
    );
    return code;
  };
  let values: Values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      options: OPTIONS,
      allowPositionals: true,
      strict: true,
    }));
  } catch (err) {
    // parseArgs explains itself at length; its first sentence is the one line we want.
    return fail((err as Error).message.split(/\.\s/u)[0] as string, 2);
  }
  if (values.help || positionals[0] === 'help') {
    io.stdout.write(USAGE);
    return 0;
  }
  let local = (values.url as string | undefined) === undefined && !io.env.TOKENKEEPER_URL;
  let keyFrom: string | undefined;
  try {
    const { name, command, rest } = findCommand(positionals);
    const allowed = new Set<string>([...GLOBAL, ...command.options]);
    const stray = Object.keys(values).find((k) => values[k] !== undefined && !allowed.has(k));
    if (stray) throw new UsageError(`option --${stray} does not apply to ${name}`);
    if (rest.length < command.args.length) {
      throw new UsageError(
        `${name}: missing ${command.args
          .slice(rest.length)
          .map((a) => `<${a}>`)
          .join(' ')}`,
      );
    }
    if (rest.length > command.args.length)
      throw new UsageError(`${name}: unexpected argument ${rest[command.args.length]}`);
    // Every positional argument is a userId or providerId: refuse what the keeper would, unsent.
    command.args.forEach((arg, i) => {
      const problem = idProblem(arg, rest[i] as string);
      if (problem !== undefined) throw new UsageError(problem);
    });

    const target = await resolveTarget(io, values);
    local = target.local;
    keyFrom = target.keyFrom;
    const clock = io.clock ?? Date.now;
    const client = new TokenKeeperClient({
      baseUrl: target.baseUrl,
      auth: target.auth,
      clock,
      // One clear answer for an operator: a 503 is reported with its Retry-After, not waited out.
      maxRetries: 0,
      ...(io.fetch ? { fetch: io.fetch } : {}),
    });
    const paint = colourEnabled(io, values) ? ansi : plain;
    const ctx: Context = {
      client,
      target,
      values,
      io,
      paint,
      local,
      nowSec: () => Math.floor(clock() / 1000),
      out: (text) => io.stdout.write(`${text}\n`),
      json: (value) => io.stdout.write(`${JSON.stringify(value, null, 2)}\n`),
    };
    await command.run(ctx, rest);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) return fail(err.message, 2);
    return fail(describeError(err, local, keyFrom), 1);
  }
}
