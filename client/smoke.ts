import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { TokenKeeperApiError } from './errors.js';
import { type ClientAuth, TokenKeeperClient } from './index.js';
import { type CredentialProvider, signingRegion } from './sigv4.js';

/**
 * `npm run smoke -- --url <ApiUrl>`: after `cdk deploy`, checks the deployed API end to end with
 * ids that need percent-encoding (`@ : +`, spaces, non-ASCII, emoji), signed with SigV4 from the
 * default AWS credential chain. It registers a throwaway provider (a token endpoint that is never
 * called), puts sessions holding a made-up access token without a refresh token, reads the token
 * back, lists and deletes the sessions, and prints one line per check. With a bearer key
 * ($TOKENKEEPER_API_KEY or --api-key-file) it checks the local stack instead.
 */

export interface SmokeIo {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
  env: Record<string, string | undefined>;
  fetch?: typeof fetch;
  credentials?: CredentialProvider;
}

export const SMOKE_USAGE = `Usage: npm run smoke -- --url <ApiUrl> [--region <region>] [--api-key-file <path>]

Checks a tokenkeeper API end to end with ids that need percent-encoding: registers the provider
"tokenkeeper-smoke: é😀" (replaced on every run; its token endpoint is never called), puts, reads,
lists and deletes sessions holding a made-up token. One line per check; exit 0 when all pass.

  --url <url>            the ApiUrl output (or $TOKENKEEPER_URL)
  --region <region>      SigV4 region (default: from the execute-api host name, or $AWS_REGION)
  --api-key-file <path>  bearer key for the local stack instead of SigV4 (or $TOKENKEEPER_API_KEY)
`;

/** The provider every run registers (PUT replaces it, so runs do not pile up providers). */
export const SMOKE_PROVIDER_ID = 'tokenkeeper-smoke: é😀';

async function target(
  values: Record<string, string | boolean | undefined>,
  io: SmokeIo,
): Promise<{ baseUrl: string; auth: ClientAuth }> {
  const baseUrl = (values.url as string | undefined) || io.env.TOKENKEEPER_URL;
  if (!baseUrl) throw new Error('--url is required (the ApiUrl output of the stack)');
  const keyFile = values['api-key-file'] as string | undefined;
  const apiKey = keyFile ? (await readFile(keyFile, 'utf8')).trim() : io.env.TOKENKEEPER_API_KEY;
  if (apiKey) return { baseUrl, auth: { kind: 'bearer', apiKey } };
  const region = signingRegion(values.region as string | undefined, baseUrl, io.env);
  if (!region) throw new Error('no AWS region for SigV4: pass --region or set AWS_REGION');
  return {
    baseUrl,
    auth: { kind: 'sigv4', region, ...(io.credentials ? { credentials: io.credentials } : {}) },
  };
}

function explain(err: unknown): string {
  if (err instanceof TokenKeeperApiError) return `${err.status} ${err.code}: ${err.description}`;
  return err instanceof Error ? err.message : String(err);
}

export async function runSmoke(argv: string[], io: SmokeIo): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        url: { type: 'string' },
        region: { type: 'string' },
        'api-key-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    io.stderr.write(`smoke: ${(err as Error).message}\n${SMOKE_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(SMOKE_USAGE);
    return 0;
  }
  let client: TokenKeeperClient;
  try {
    const { baseUrl, auth } = await target(values, io);
    client = new TokenKeeperClient({
      baseUrl,
      auth,
      maxRetries: 0,
      ...(io.fetch ? { fetch: io.fetch } : {}),
    });
  } catch (err) {
    io.stderr.write(`smoke: ${explain(err)}\n`);
    return 2;
  }

  let failed = 0;
  const check = async (label: string, run: () => Promise<string | undefined>): Promise<boolean> => {
    try {
      const problem = await run();
      io.stdout.write(problem === undefined ? `ok    ${label}\n` : `FAIL  ${label}: ${problem}\n`);
      if (problem !== undefined) failed++;
      return problem === undefined;
    } catch (err) {
      io.stdout.write(`FAIL  ${label}: ${explain(err)}\n`);
      failed++;
      return false;
    }
  };
  const expectEqual = (what: string, got: unknown, want: unknown) =>
    got === want ? undefined : `${what} is ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`;

  const run = randomBytes(4).toString('hex');
  const providerId = SMOKE_PROVIDER_ID;
  const users = [`smoke+${run}@example.com`, `smoke: ${run} é 😀`];

  await check('health', async () => expectEqual('status', (await client.health()).status, 'ok'));
  const registered = await check(`put provider ${JSON.stringify(providerId)}`, async () => {
    const { value } = await client.putProvider(providerId, {
      tokenEndpoint: 'https://tokenkeeper-smoke.invalid/token',
      clientId: 'tokenkeeper-smoke',
      clientAuthMethod: 'none',
    });
    return expectEqual('providerId', value.providerId, providerId);
  });
  if (registered) {
    await check(`get provider ${JSON.stringify(providerId)}`, async () =>
      expectEqual('providerId', (await client.getProvider(providerId)).providerId, providerId),
    );
    for (const userId of users) {
      const who = `${JSON.stringify(userId)} / ${JSON.stringify(providerId)}`;
      // A made-up token that no provider issued; it never leaves this process except to the keeper.
      const accessToken = `smoke-${randomBytes(16).toString('hex')}`;
      try {
        const put = await check(`put session ${who}`, async () => {
          const { value } = await client.putSession(userId, providerId, {
            access_token: accessToken,
            expires_in: 3600,
            token_type: 'Bearer',
          });
          return (
            expectEqual('userId', value.userId, userId) ??
            expectEqual('refreshable', value.refreshable, false)
          );
        });
        if (!put) continue;
        await check(`token ${who}`, async () => {
          const token = await client.getToken(userId, providerId, { minValidity: 60 });
          return token.access_token === accessToken ? undefined : 'a different access token came back';
        });
        await check(`list sessions ${JSON.stringify(userId)}`, async () => {
          const sessions = await client.listSessions(userId);
          return expectEqual('providers', sessions.map((s) => s.providerId).join(','), providerId);
        });
        await check(`delete session ${who}`, async () => {
          await client.deleteSession(userId, providerId);
          const after = await client.listSessions(userId);
          return expectEqual('sessions left', after.length, 0);
        });
      } finally {
        // Clean up even after a failed check; a 404 means it is already gone.
        await client.deleteSession(userId, providerId).catch(() => undefined);
      }
    }
  }
  const passed = failed === 0;
  io.stdout.write(passed ? 'smoke: all checks passed\n' : `smoke: ${failed} check(s) failed\n`);
  return passed ? 0 : 1;
}
