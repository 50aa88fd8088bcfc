import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import {
  DecryptionFailure,
  GetSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
  SecretsManagerServiceException,
} from '@aws-sdk/client-secrets-manager';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../functions/core/config.js';
import { generateKeyringJson } from '../../functions/core/crypto/crypto.js';
import { EventBridgePublisher } from '../../functions/core/events.js';
import { createRuntime } from '../../functions/core/runtime.js';
import { type DynaliteHandle, startDynalite } from '../support/dynalite.js';
import { type OAuthServer, startOAuthServer } from '../support/oauth-server.js';

/**
 * The Lambda entry points as Lambda loads them: configuration from the environment, the keyring from
 * Secrets Manager, events to EventBridge, metrics as EMF on stdout. Secrets Manager and EventBridge
 * have no local implementation, so they are mocked at the SDK client boundary.
 */

const KEYRING_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:tokenkeeper/keyring-AbCdEf';
const CLIENT_SECRET_ARN =
  'arn:aws:secretsmanager:us-east-1:123456789012:secret:tokenkeeper/mcp-client-XyZ123';
const secrets = mockClient(SecretsManagerClient);
const eventBridge = mockClient(EventBridgeClient);
const keyring = generateKeyringJson('k1');

let db: DynaliteHandle;
let oauth: OAuthServer;

function event(method: string, path: string, body?: unknown): APIGatewayProxyEventV2 {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: '',
    headers: text ? { 'content-type': 'application/json' } : {},
    requestContext: {
      accountId: '123456789012',
      apiId: 'api',
      domainName: 'api.example',
      domainPrefix: 'api',
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '10.0.0.1', userAgent: 'test' },
      requestId: 'req',
      routeKey: '$default',
      stage: '$default',
      time: '',
      timeEpoch: 0,
    },
    body: text === undefined ? undefined : Buffer.from(text).toString('base64'),
    isBase64Encoded: text !== undefined,
  };
}

function lambdaEnv(): Record<string, string> {
  return {
    AWS_LAMBDA_FUNCTION_NAME: 'tokenkeeper-test',
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'AKIDTEST',
    AWS_SECRET_ACCESS_KEY: 'test-secret',
    TOKENKEEPER_TABLE_NAME: db.tableName,
    TOKENKEEPER_DYNAMODB_ENDPOINT: db.endpoint,
    TOKENKEEPER_KEYRING_SECRET_ARN: KEYRING_ARN,
    TOKENKEEPER_EVENT_BUS_NAME: 'tokenkeeper-bus',
    POWERTOOLS_SERVICE_NAME: 'tokenkeeper',
    POWERTOOLS_METRICS_NAMESPACE: 'TokenKeeper',
  };
}

beforeAll(async () => {
  db = await startDynalite();
  oauth = await startOAuthServer({ accessTokenTtl: 300 });
});

afterAll(async () => {
  await db?.stop();
  await oauth?.stop();
  vi.unstubAllEnvs();
});

beforeEach(() => {
  secrets.reset();
  eventBridge.reset();
  secrets.on(GetSecretValueCommand, { SecretId: KEYRING_ARN }).resolves({ SecretString: keyring });
  secrets
    .on(GetSecretValueCommand, { SecretId: CLIENT_SECRET_ARN })
    .resolves({ SecretString: oauth.clients.basic.clientSecret });
  eventBridge.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: '1' }] });
});

describe('Lambda configuration', () => {
  it('refuses TOKENKEEPER_ALLOW_INSECURE_HTTP inside Lambda at module load', async () => {
    vi.resetModules();
    for (const [k, v] of Object.entries({ ...lambdaEnv(), TOKENKEEPER_ALLOW_INSECURE_HTTP: '1' }))
      vi.stubEnv(k, v);
    await expect(import('../../functions/api/handler.js')).rejects.toThrow(/refused in Lambda/);
    vi.unstubAllEnvs();
  });
});

describe('API and refresh handlers as Lambda runs them', () => {
  it('serve and sweep with the Secrets Manager keyring read once per container, metrics as EMF on stdout', async () => {
    vi.resetModules();
    for (const [k, v] of Object.entries(lambdaEnv())) vi.stubEnv(k, v);
    const api = (await import('../../functions/api/handler.js')).handler;
    const refresh = (await import('../../functions/refresh/handler.js')).handler;
    const stdout: string[] = [];
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      stdout.push(String(chunk));
      return true;
    });
    let summary: Awaited<ReturnType<typeof refresh>>;
    try {
      // An https provider that cannot be reached from here (.invalid never resolves).
      const provider = (await api(
        event('PUT', '/v1/providers/remote', {
          tokenEndpoint: 'https://auth.invalid/token',
          clientId: 'c',
          clientSecret: 's',
        }),
      )) as APIGatewayProxyStructuredResultV2;
      expect(provider.statusCode).toBe(201);
      const put = (await api(
        event('PUT', '/v1/sessions/lambda-user/remote', {
          access_token: 'at-lambda',
          refresh_token: 'rt-lambda',
          // Longer than the 300 s interval plus the longest sweep (scheduled), due in the 600 s window.
          expires_in: 500,
        }),
      )) as APIGatewayProxyStructuredResultV2;
      expect(put.statusCode).toBe(201);
      const served = (await api(
        event('GET', '/v1/sessions/lambda-user/remote/token'),
      )) as APIGatewayProxyStructuredResultV2;
      expect(served.statusCode).toBe(200);
      expect(JSON.parse(String(served.body)).access_token).toBe('at-lambda');
      // Three operations, one keyring read for this container.
      expect(secrets.commandCalls(GetSecretValueCommand, { SecretId: KEYRING_ARN })).toHaveLength(1);
      summary = await refresh({}, { getRemainingTimeInMillis: () => 60_000 });
    } finally {
      write.mockRestore();
    }
    expect(summary).toMatchObject({ due: 1, refreshed: 0, failedTransient: 1, backlog: 0 });
    // Embedded Metric Format documents on stdout, namespace TokenKeeper, dimension service.
    const documents = stdout
      .flatMap((chunk) => chunk.split('\n'))
      .filter((line) => line.includes('"_aws"'))
      .map(
        (line) =>
          JSON.parse(line) as Record<string, unknown> & {
            _aws: {
              CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string }[] }[];
            };
          },
      );
    const names = documents.flatMap((d) =>
      d._aws.CloudWatchMetrics.flatMap((m) => m.Metrics.map((x) => x.Name)),
    );
    expect(new Set(documents.flatMap((d) => d._aws.CloudWatchMetrics.map((m) => m.Namespace)))).toEqual(
      new Set(['TokenKeeper']),
    );
    expect(documents.every((d) => d.service === 'tokenkeeper')).toBe(true);
    for (const metric of [
      'TokensServed',
      'TokenLatency',
      'Due',
      'Refreshed',
      'FailedTransient',
      'Missed',
      'Backlog',
      'SweepDuration',
    ]) {
      expect(names).toContain(metric);
    }
    const sweepDoc = documents.find((d) => 'Due' in d) as Record<string, unknown>;
    expect(sweepDoc.Due).toBe(1);
    expect(sweepDoc.FailedTransient).toBe(1);
    // Structured JSON logs; none carries the tokens.
    const logText = stdout.join('');
    expect(logText).toContain('"message":"sweep finished"');
    expect(logText).not.toContain('rt-lambda');
    expect(logText).not.toContain('at-lambda');
  });

  it('log nothing at WARN for plain calls: no "No application metrics to publish" after a request without metrics', async () => {
    vi.resetModules();
    for (const [k, v] of Object.entries(lambdaEnv())) vi.stubEnv(k, v);
    const api = (await import('../../functions/api/handler.js')).handler;
    const out: string[] = [];
    const capture = (chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    };
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation(capture);
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(capture);
    const warn = vi.spyOn(console, 'warn').mockImplementation((...args: unknown[]) => {
      out.push(args.map(String).join(' '));
    });
    const statuses: (number | undefined)[] = [];
    try {
      const call = async (method: string, path: string, body?: unknown) => {
        const result = (await api(event(method, path, body))) as APIGatewayProxyStructuredResultV2;
        statuses.push(result.statusCode);
      };
      await call('PUT', '/v1/providers/quiet', {
        tokenEndpoint: 'https://auth.invalid/token',
        clientId: 'c',
      });
      await call('PUT', '/v1/sessions/quiet-user/quiet', { access_token: 'at-quiet', expires_in: 3600 });
      await call('GET', '/v1/sessions/quiet-user/quiet');
      await call('GET', '/v1/sessions/quiet-user/quiet/token');
      await call('GET', '/v1/sessions/quiet-user');
    } finally {
      stdout.mockRestore();
      stderr.mockRestore();
      warn.mockRestore();
    }
    expect(statuses).toEqual([201, 201, 200, 200, 200]);
    const text = out.join('');
    expect(text).not.toContain('No application metrics to publish');
    expect(text).not.toMatch(/"level":"WARN"/u);
    // The token call's metrics are still published, once.
    expect(text.match(/"TokensServed"/gu)?.length).toBeGreaterThanOrEqual(1);
  });

  it('reads a provider client secret by ARN, with caching, and publishes events to EventBridge', async () => {
    let now = Date.now();
    const config = loadConfig({
      TOKENKEEPER_TABLE_NAME: db.tableName,
      TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
      TOKENKEEPER_KEYRING_SECRET_ARN: KEYRING_ARN,
    });
    const published: unknown[] = [];
    const runtime = createRuntime({
      config,
      dynamodb: db.client,
      secrets: new SecretsManagerClient({ region: 'us-east-1' }),
      clock: { now: () => now },
      events: {
        publish: async (e) => {
          published.push(e);
        },
      },
    });
    await runtime.providers.put('arn-mcp', {
      issuer: oauth.issuer,
      clientId: oauth.clients.basic.clientId,
      clientSecretArn: CLIENT_SECRET_ARN,
      clientAuthMethod: 'client_secret_basic',
    });
    const tokens = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: 'arn-user' });
    const key = { userId: 'arn-user', providerId: 'arn-mcp' };
    await runtime.sessions.put(key, tokens);
    for (let i = 0; i < 3; i++) {
      const t = await runtime.tokens.getToken(key, { minValidity: 60, force: true });
      expect((await oauth.introspect(t.access_token)).active).toBe(true);
    }
    // Three grants, one secret read; after the cache lifetime the secret is read again.
    expect(secrets.commandCalls(GetSecretValueCommand, { SecretId: CLIENT_SECRET_ARN })).toHaveLength(1);
    now += 6 * 60_000;
    await runtime.tokens.getToken(key, { minValidity: 60, force: true });
    expect(secrets.commandCalls(GetSecretValueCommand, { SecretId: CLIENT_SECRET_ARN })).toHaveLength(2);
    // The keyring came from Secrets Manager too (and the stored secret is not in the item at all).
    expect(
      secrets.commandCalls(GetSecretValueCommand, { SecretId: KEYRING_ARN }).length,
    ).toBeGreaterThanOrEqual(1);
    expect(published).toEqual([]);
  });

  it('refuses a provider whose clientSecretArn names the keyring (400 at PUT, and never read at refresh)', async () => {
    const config = loadConfig({
      TOKENKEEPER_TABLE_NAME: db.tableName,
      TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
      TOKENKEEPER_KEYRING_SECRET_ARN: KEYRING_ARN,
    });
    const runtime = createRuntime({
      config,
      dynamodb: db.client,
      secrets: new SecretsManagerClient({ region: 'us-east-1' }),
    });
    await expect(
      runtime.providers.put('evil', {
        tokenEndpoint: oauth.tokenEndpoint,
        clientId: 'x',
        clientSecretArn: KEYRING_ARN,
      }),
    ).rejects.toMatchObject({ code: 'invalid_request' });
    // Written around the API (by hand, or before the rule): the refresh refuses to resolve it.
    await runtime.store.putProvider({
      providerId: 'evil',
      tokenEndpoint: oauth.tokenEndpoint,
      clientId: oauth.clients.basic.clientId,
      clientSecretArn: KEYRING_ARN,
      clientAuthMethod: 'client_secret_basic',
      createdAt: 0,
      updatedAt: 0,
    });
    const tokens = await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: 'evil-user' });
    await runtime.sessions.put({ userId: 'evil-user', providerId: 'evil' }, tokens);
    const keyringReadsBefore = secrets.commandCalls(GetSecretValueCommand, { SecretId: KEYRING_ARN }).length;
    const grantsBefore = oauth.proxy.requests.length;
    await expect(
      runtime.tokens.getToken({ userId: 'evil-user', providerId: 'evil' }, { minValidity: 60, force: true }),
    ).rejects.toMatchObject({ code: 'refresh_unavailable' });
    expect(oauth.proxy.requests.length).toBe(grantsBefore);
    // The keyring is read to seal and open tokens, never as a client secret: no extra read happened for it.
    expect(secrets.commandCalls(GetSecretValueCommand, { SecretId: KEYRING_ARN }).length).toBe(
      keyringReadsBefore,
    );
  });

  const accessDenied = (message: string) =>
    new SecretsManagerServiceException({
      name: 'AccessDeniedException',
      $fault: 'client',
      $metadata: { httpStatusCode: 400 },
      message,
    });
  it.each([
    [
      'access denied',
      accessDenied(
        'User: arn:aws:sts::123456789012:assumed-role/r is not authorized to perform GetSecretValue',
      ),
    ],
    ['access denied', accessDenied('Access to KMS is not allowed')],
    ['no such secret', new ResourceNotFoundException({ message: 'not found', $metadata: {} })],
    [
      'the secret cannot be decrypted',
      new DecryptionFailure({ message: 'kms:Decrypt failed', $metadata: {} }),
    ],
  ])(
    'a client secret Secrets Manager refuses (%s) is client_misconfigured: provider flagged and alarmed, session kept',
    async (name, error) => {
      const deniedArn = `arn:aws:secretsmanager:us-east-1:123456789012:secret:tokenkeeper/denied-${error.name}`;
      secrets.on(GetSecretValueCommand, { SecretId: deniedArn }).rejects(error);
      const metrics: string[] = [];
      const runtime = createRuntime({
        config: loadConfig({
          TOKENKEEPER_TABLE_NAME: db.tableName,
          TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
          TOKENKEEPER_KEYRING_SECRET_ARN: KEYRING_ARN,
          AWS_REGION: 'us-east-1',
          TOKENKEEPER_ACCOUNT_ID: '123456789012',
        }),
        dynamodb: db.client,
        secrets: new SecretsManagerClient({ region: 'us-east-1' }),
        metrics: { add: (metric) => metrics.push(metric) },
      });
      const providerId = `denied-${error.name}-${Math.random().toString(36).slice(2, 8)}`;
      await runtime.providers.put(providerId, {
        tokenEndpoint: oauth.tokenEndpoint,
        clientId: oauth.clients.basic.clientId,
        clientSecretArn: deniedArn,
      });
      const key = { userId: 'denied-user', providerId };
      await runtime.sessions.put(
        key,
        await oauth.login({ clientId: oauth.clients.basic.clientId, accountId: 'denied' }),
      );
      const grantsBefore = oauth.proxy.requests.length;
      await expect(runtime.tokens.getToken(key, { minValidity: 60, force: true })).rejects.toMatchObject({
        code: 'refresh_unavailable',
      });
      expect(oauth.proxy.requests.length).toBe(grantsBefore);
      expect(metrics).toContain('ProviderClientRejected');
      expect((await runtime.providers.get(providerId)).clientRejectedAt).toEqual(expect.any(Number));
      const session = await runtime.sessions.get(key);
      expect(session).toMatchObject({ status: 'active', lastError: { code: 'client_misconfigured' } });
      // The description says what to fix, and repeats nothing of the SDK's message (roles, keys).
      expect(session.lastError?.description).toContain(`Secrets Manager refused GetSecretValue (${name})`);
      expect(session.lastError?.description).not.toContain('arn:aws:sts');
    },
  );

  it('EventBridgePublisher sends source tokenkeeper with the detail-type and JSON detail, and surfaces refusals', async () => {
    const publisher = new EventBridgePublisher(
      new EventBridgeClient({ region: 'us-east-1' }),
      'tokenkeeper-bus',
    );
    await publisher.publish({
      detailType: 'SessionReauthorizationRequired',
      detail: { userId: 'u', providerId: 'p', error: 'invalid_grant', at: '2026-01-01T00:00:00.000Z' },
    });
    const [call] = eventBridge.commandCalls(PutEventsCommand);
    const entry = call?.args[0].input.Entries?.[0];
    expect(entry).toMatchObject({
      Source: 'tokenkeeper',
      DetailType: 'SessionReauthorizationRequired',
      EventBusName: 'tokenkeeper-bus',
    });
    expect(JSON.parse(entry?.Detail ?? '{}')).toEqual({
      userId: 'u',
      providerId: 'p',
      error: 'invalid_grant',
      at: '2026-01-01T00:00:00.000Z',
    });
    eventBridge
      .on(PutEventsCommand)
      .resolves({ FailedEntryCount: 1, Entries: [{ ErrorCode: 'ThrottlingException' }] });
    await expect(publisher.publish({ detailType: 'SessionRecovered', detail: {} })).rejects.toThrow(
      /Throttling/,
    );
  });
});
