import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../functions/core/config.js';
import { ConfigError } from '../../functions/core/errors.js';

type Env = Record<string, string | undefined>;

/** Runs loadConfig(env), expects a ConfigError, and returns its message. */
function refused(env: Env): string {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

const LAMBDA: Env = {
  AWS_LAMBDA_FUNCTION_NAME: 'tokenkeeper-refresh',
  TOKENKEEPER_KEYRING_SECRET_ARN: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:keyring-AbCdEf',
};

describe('loadConfig defaults', () => {
  it('gives a complete local configuration from an empty environment', () => {
    // Prepare
    const env: Env = {};

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config).toEqual({
      inLambda: false,
      tableName: 'tokenkeeper-sessions',
      dynamodbEndpoint: undefined,
      region: 'us-east-1',
      dataDir: '.data',
      port: 8787,
      apiKey: undefined,
      refreshIntervalSeconds: 300,
      refreshWindowSeconds: 600,
      refreshConcurrency: 16,
      httpTimeoutMs: 10_000,
      grantTimeoutMs: 30_000,
      leaseSeconds: 32,
      shardCount: 4,
      sweepSliceSize: 1_000,
      sweepWorkers: 4,
      sweepBudgetSeconds: 120,
      keepAliveSeconds: 86_400,
      circuitFailureThreshold: 3,
      circuitProbeBaseMs: 2_000,
      circuitProbeMaxMs: 10_000,
      circuitCacheMs: 2_000,
      allowInsecureHttp: false,
      keyringSecretArn: undefined,
      clientSecretPrefix: 'tokenkeeper/',
      eventBusName: 'default',
      serviceName: 'tokenkeeper',
      publicUrl: undefined,
      allowedRedirects: [],
    });
  });

  it('treats empty strings as unset', () => {
    // Prepare
    const env: Env = {
      TOKENKEEPER_TABLE_NAME: '',
      TOKENKEEPER_API_KEY: '',
      PORT: '',
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '',
      TOKENKEEPER_ALLOW_INSECURE_HTTP: '',
      AWS_LAMBDA_FUNCTION_NAME: '',
    };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.tableName).toBe('tokenkeeper-sessions');
    expect(config.apiKey).toBeUndefined();
    expect(config.port).toBe(8787);
    expect(config.refreshIntervalSeconds).toBe(300);
    expect(config.allowInsecureHttp).toBe(false);
    expect(config.inLambda).toBe(false);
  });

  it('derives the default lease from the HTTP timeout (three timeouts, at least 30 s)', () => {
    // Prepare
    const env: Env = { TOKENKEEPER_HTTP_TIMEOUT_MS: '20000' };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.leaseSeconds).toBe(60);
  });

  it('rounds the derived lease up to whole seconds', () => {
    // Prepare
    const env: Env = { TOKENKEEPER_HTTP_TIMEOUT_MS: '10001', TOKENKEEPER_GRANT_TIMEOUT_MS: '5000' };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.leaseSeconds).toBe(31);
  });

  it("derives the default lease from the grant's life: the grant timeout plus the commit reserve", () => {
    // Act
    const config = loadConfig({ TOKENKEEPER_GRANT_TIMEOUT_MS: '45500' });

    // Assess
    expect(config).toMatchObject({ grantTimeoutMs: 45_500, leaseSeconds: 48 });
  });

  it('a lease set without a grant timeout bounds the default grant timeout', () => {
    // Act
    const config = loadConfig({ TOKENKEEPER_HTTP_TIMEOUT_MS: '1000', TOKENKEEPER_LEASE_SECONDS: '10' });

    // Assess
    expect(config).toMatchObject({ grantTimeoutMs: 8_000, leaseSeconds: 10 });
  });

  it('refuses a grant timeout that does not fit in the lease with the commit, and says what to set', () => {
    // Act
    const load = () => loadConfig({ TOKENKEEPER_GRANT_TIMEOUT_MS: '30000', TOKENKEEPER_LEASE_SECONDS: '31' });

    // Assess
    expect(load).toThrow(ConfigError);
    expect(load).toThrow(
      'TOKENKEEPER_GRANT_TIMEOUT_MS (30000 ms) must fit in the lease with the commit: at most ' +
        'TOKENKEEPER_LEASE_SECONDS (31) minus 2 s; set TOKENKEEPER_GRANT_TIMEOUT_MS=29000 (or less), or ' +
        'TOKENKEEPER_LEASE_SECONDS=32 (or more)',
    );
  });
});

describe('loadConfig parses each variable', () => {
  it('reads the string settings', () => {
    // Prepare
    const env: Env = {
      TOKENKEEPER_TABLE_NAME: 'sessions-prod',
      TOKENKEEPER_DYNAMODB_ENDPOINT: 'http://127.0.0.1:4567',
      AWS_REGION: 'eu-west-1',
      TOKENKEEPER_DATA_DIR: '/var/lib/tk',
      TOKENKEEPER_API_KEY: 'local-key',
      TOKENKEEPER_KEYRING_SECRET_ARN: 'arn:aws:secretsmanager:eu-west-1:1:secret:k',
      TOKENKEEPER_EVENT_BUS_NAME: 'tokenkeeper-bus',
      POWERTOOLS_SERVICE_NAME: 'tk-api',
    };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config).toMatchObject({
      tableName: 'sessions-prod',
      dynamodbEndpoint: 'http://127.0.0.1:4567',
      region: 'eu-west-1',
      dataDir: '/var/lib/tk',
      apiKey: 'local-key',
      keyringSecretArn: 'arn:aws:secretsmanager:eu-west-1:1:secret:k',
      eventBusName: 'tokenkeeper-bus',
      serviceName: 'tk-api',
    });
  });

  it('falls back to AWS_DEFAULT_REGION when AWS_REGION is unset', () => {
    // Prepare
    const env: Env = { AWS_DEFAULT_REGION: 'ap-southeast-2' };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.region).toBe('ap-southeast-2');
  });

  it('prefers AWS_REGION over AWS_DEFAULT_REGION', () => {
    // Prepare
    const env: Env = { AWS_REGION: 'eu-central-1', AWS_DEFAULT_REGION: 'ap-southeast-2' };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.region).toBe('eu-central-1');
  });

  it('reads the numeric settings, tolerating surrounding whitespace', () => {
    // Prepare
    const env: Env = {
      PORT: '9000',
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '60',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: ' 900 ',
      TOKENKEEPER_REFRESH_CONCURRENCY: '8',
      TOKENKEEPER_HTTP_TIMEOUT_MS: '5000',
      TOKENKEEPER_LEASE_SECONDS: '45',
      TOKENKEEPER_SHARD_COUNT: '16',
      TOKENKEEPER_SWEEP_BUDGET_SECONDS: '240',
    };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config).toMatchObject({
      port: 9000,
      refreshIntervalSeconds: 60,
      refreshWindowSeconds: 900,
      refreshConcurrency: 8,
      httpTimeoutMs: 5000,
      leaseSeconds: 45,
      shardCount: 16,
      sweepBudgetSeconds: 240,
    });
  });

  it.each([
    ['1', true],
    ['true', true],
    ['TRUE', true],
    ['0', false],
    ['false', false],
    ['False', false],
  ])('reads TOKENKEEPER_ALLOW_INSECURE_HTTP=%s as %s locally', (raw, expected) => {
    // Prepare
    const env: Env = { TOKENKEEPER_ALLOW_INSECURE_HTTP: raw };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.allowInsecureHttp).toBe(expected);
  });

  it('refuses a flag that is neither 1/true nor 0/false, naming it', () => {
    // Prepare
    const env: Env = { TOKENKEEPER_ALLOW_INSECURE_HTTP: 'yes' };

    // Act
    const message = refused(env);

    // Assess
    expect(message).toBe('TOKENKEEPER_ALLOW_INSECURE_HTTP must be 1 or 0, got "yes"');
  });
});

describe('TOKENKEEPER_ACCOUNT_ID', () => {
  it('is unknown locally and read when the stack sets it', () => {
    expect(loadConfig({}).accountId).toBeUndefined();
    expect(loadConfig({ TOKENKEEPER_ACCOUNT_ID: '123456789012' }).accountId).toBe('123456789012');
  });

  it('must be a 12-digit account id', () => {
    expect(refused({ TOKENKEEPER_ACCOUNT_ID: '1234' })).toBe(
      'TOKENKEEPER_ACCOUNT_ID must be a 12-digit AWS account id, got "1234"',
    );
  });
});

describe('loadConfig refuses bad numbers, naming the variable', () => {
  it.each([
    ['PORT', 'http'],
    ['TOKENKEEPER_REFRESH_INTERVAL_SECONDS', '-5'],
    ['TOKENKEEPER_REFRESH_WINDOW_SECONDS', '1.5'],
    ['TOKENKEEPER_REFRESH_CONCURRENCY', '1e3'],
    ['TOKENKEEPER_HTTP_TIMEOUT_MS', '10s'],
    ['TOKENKEEPER_LEASE_SECONDS', '0x20'],
    ['TOKENKEEPER_SHARD_COUNT', 'four'],
    ['TOKENKEEPER_SWEEP_BUDGET_SECONDS', ' '],
    ['TOKENKEEPER_KEEPALIVE_SECONDS', '1d'],
  ])('%s=%j is not a whole number', (name, raw) => {
    // Prepare
    const env: Env = { [name]: raw };

    // Act
    const message = refused(env);

    // Assess
    expect(message).toBe(`${name} must be a whole number, got ${JSON.stringify(raw)}`);
  });

  it.each([
    ['PORT', '65536', 0, 65_535],
    ['TOKENKEEPER_REFRESH_INTERVAL_SECONDS', '0', 1, 86_400],
    ['TOKENKEEPER_REFRESH_WINDOW_SECONDS', '86401', 1, 86_400],
    ['TOKENKEEPER_REFRESH_CONCURRENCY', '0', 1, 1_000],
    ['TOKENKEEPER_HTTP_TIMEOUT_MS', '99', 100, 120_000],
    ['TOKENKEEPER_LEASE_SECONDS', '3601', 1, 3_600],
    ['TOKENKEEPER_SHARD_COUNT', '1001', 1, 1_000],
    ['TOKENKEEPER_SWEEP_BUDGET_SECONDS', '901', 1, 900],
  ])('%s=%s is out of range', (name, raw, min, max) => {
    // Prepare
    const env: Env = { [name]: raw };

    // Act
    const message = refused(env);

    // Assess
    expect(message).toBe(`${name} must be between ${min} and ${max}, got ${Number(raw)}`);
  });
});

describe('loadConfig cross-checks', () => {
  it('refuses a refresh window no larger than the refresh interval', () => {
    // Prepare
    const env: Env = {
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '600',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '600',
    };

    // Act
    const message = refused(env);

    // Assess
    expect(message).toContain('TOKENKEEPER_REFRESH_WINDOW_SECONDS (600) must be larger than');
    expect(message).toContain('TOKENKEEPER_REFRESH_INTERVAL_SECONDS (600)');
  });

  it('refuses a refresh window no larger than the interval plus the sweep budget', () => {
    // Prepare
    const env: Env = {
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '300',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '420',
      TOKENKEEPER_SWEEP_BUDGET_SECONDS: '120',
    };

    // Act
    const message = refused(env);

    // Assess
    expect(message).toContain(
      'TOKENKEEPER_REFRESH_WINDOW_SECONDS (420) must exceed the refresh interval (300)',
    );
    expect(message).toContain('TOKENKEEPER_SWEEP_BUDGET_SECONDS=120');
  });

  it('accepts a refresh window one second above the interval plus the sweep budget', () => {
    // Prepare
    const env: Env = {
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '300',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '421',
      TOKENKEEPER_SWEEP_BUDGET_SECONDS: '120',
    };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.refreshWindowSeconds).toBe(421);
  });

  it('refuses a lease shorter than three times the HTTP timeout', () => {
    // Prepare
    const env: Env = { TOKENKEEPER_HTTP_TIMEOUT_MS: '10000', TOKENKEEPER_LEASE_SECONDS: '29' };

    // Act
    const message = refused(env);

    // Assess
    expect(message).toContain(
      'TOKENKEEPER_LEASE_SECONDS (29) must be at least three times TOKENKEEPER_HTTP_TIMEOUT_MS',
    );
    expect(message).toContain('10000 ms');
  });

  it('accepts a lease of exactly three times the HTTP timeout', () => {
    // Prepare
    const env: Env = { TOKENKEEPER_HTTP_TIMEOUT_MS: '10000', TOKENKEEPER_LEASE_SECONDS: '30' };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.leaseSeconds).toBe(30);
  });

  it('refuses a sweep budget that cannot fit one grant', () => {
    const message = refused({ TOKENKEEPER_HTTP_TIMEOUT_MS: '10000', TOKENKEEPER_SWEEP_BUDGET_SECONDS: '12' });
    expect(message).toContain('TOKENKEEPER_SWEEP_BUDGET_SECONDS (12) must leave room for one grant');
  });

  it('says which variable to change, and to what, when the window is too small for the budget', () => {
    const message = refused({
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '300',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '420',
      TOKENKEEPER_SWEEP_BUDGET_SECONDS: '200',
    });
    expect(message).toContain('set TOKENKEEPER_SWEEP_BUDGET_SECONDS=119 (or less, at least 13)');
    expect(message).toContain('TOKENKEEPER_REFRESH_WINDOW_SECONDS=501 (or more)');
    // The suggestion is a configuration that starts.
    expect(
      loadConfig({
        TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '300',
        TOKENKEEPER_REFRESH_WINDOW_SECONDS: '420',
        TOKENKEEPER_SWEEP_BUDGET_SECONDS: '119',
      }).sweepBudgetSeconds,
    ).toBe(119);
  });

  it('derives the default sweep budget from the interval: 40% of it, at least what one grant needs', () => {
    // 40% of the interval when that fits a grant.
    expect(loadConfig({ TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '300' }).sweepBudgetSeconds).toBe(120);
    expect(
      loadConfig({ TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '60', TOKENKEEPER_REFRESH_WINDOW_SECONDS: '120' })
        .sweepBudgetSeconds,
    ).toBe(24);
    // One grant (HTTP timeout + 2 s, and a second more) when 40% would not fit one.
    const short = loadConfig({
      TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '2',
      TOKENKEEPER_REFRESH_WINDOW_SECONDS: '12',
      TOKENKEEPER_HTTP_TIMEOUT_MS: '2000',
    });
    expect(short.sweepBudgetSeconds).toBe(5);
    // The issue-11 setup (a window far below 420 s) starts without naming a third variable.
    expect(
      loadConfig({
        TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '60',
        TOKENKEEPER_REFRESH_WINDOW_SECONDS: '90',
        TOKENKEEPER_HTTP_TIMEOUT_MS: '2000',
      }).sweepBudgetSeconds,
    ).toBe(24);
  });

  it('reads the circuit settings and refuses a probe cap below the base delay', () => {
    const config = loadConfig({
      TOKENKEEPER_CIRCUIT_FAILURE_THRESHOLD: '5',
      TOKENKEEPER_CIRCUIT_PROBE_BASE_MS: '500',
      TOKENKEEPER_CIRCUIT_PROBE_MAX_MS: '4000',
      TOKENKEEPER_CIRCUIT_CACHE_MS: '0',
    });
    expect(config).toMatchObject({
      circuitFailureThreshold: 5,
      circuitProbeBaseMs: 500,
      circuitProbeMaxMs: 4000,
      circuitCacheMs: 0,
    });
    expect(
      refused({ TOKENKEEPER_CIRCUIT_PROBE_BASE_MS: '5000', TOKENKEEPER_CIRCUIT_PROBE_MAX_MS: '1000' }),
    ).toContain('set TOKENKEEPER_CIRCUIT_PROBE_MAX_MS=5000');
  });

  it('accepts a sweep budget just above one grant', () => {
    expect(
      loadConfig({ TOKENKEEPER_HTTP_TIMEOUT_MS: '10000', TOKENKEEPER_SWEEP_BUDGET_SECONDS: '13' })
        .sweepBudgetSeconds,
    ).toBe(13);
  });
});

describe('loadConfig in Lambda', () => {
  it('recognises Lambda by AWS_LAMBDA_FUNCTION_NAME', () => {
    // Prepare
    const env: Env = { ...LAMBDA };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.inLambda).toBe(true);
    expect(config.keyringSecretArn).toBe(LAMBDA.TOKENKEEPER_KEYRING_SECRET_ARN);
  });

  it('refuses TOKENKEEPER_ALLOW_INSECURE_HTTP=1 inside Lambda', () => {
    // Prepare
    const env: Env = { ...LAMBDA, TOKENKEEPER_ALLOW_INSECURE_HTTP: '1' };

    // Act
    const message = refused(env);

    // Assess
    expect(message).toBe(
      'TOKENKEEPER_ALLOW_INSECURE_HTTP is for local development only and is refused in Lambda',
    );
  });

  it('allows TOKENKEEPER_ALLOW_INSECURE_HTTP=1 locally', () => {
    // Prepare
    const env: Env = { TOKENKEEPER_ALLOW_INSECURE_HTTP: '1' };

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.allowInsecureHttp).toBe(true);
  });

  it('refuses a missing TOKENKEEPER_KEYRING_SECRET_ARN inside Lambda', () => {
    // Prepare
    const env: Env = { AWS_LAMBDA_FUNCTION_NAME: 'tokenkeeper-api' };

    // Act
    const message = refused(env);

    // Assess
    expect(message).toBe('TOKENKEEPER_KEYRING_SECRET_ARN must name the keyring secret in Lambda');
  });

  it('allows a missing TOKENKEEPER_KEYRING_SECRET_ARN locally', () => {
    // Prepare
    const env: Env = {};

    // Act
    const config = loadConfig(env);

    // Assess
    expect(config.keyringSecretArn).toBeUndefined();
    expect(config.inLambda).toBe(false);
  });
});

describe('TOKENKEEPER_CLIENT_SECRET_PREFIX', () => {
  it('is read, and refused when it is not a secret-name prefix', () => {
    expect(loadConfig({ TOKENKEEPER_CLIENT_SECRET_PREFIX: 'acme/tokenkeeper/' }).clientSecretPrefix).toBe(
      'acme/tokenkeeper/',
    );
    expect(() => loadConfig({ TOKENKEEPER_CLIENT_SECRET_PREFIX: 'has space' })).toThrow(
      /TOKENKEEPER_CLIENT_SECRET_PREFIX/,
    );
  });
});

describe('the connect flow settings', () => {
  it('reads TOKENKEEPER_PUBLIC_URL without its trailing slash and the comma-separated allow-list', () => {
    // Act
    const config = loadConfig({
      TOKENKEEPER_PUBLIC_URL: 'https://keeper.example.com/',
      TOKENKEEPER_ALLOWED_REDIRECTS: ' https://chat.example.com , https://app.example.com/oauth/,',
    });

    // Assess
    expect(config.publicUrl).toBe('https://keeper.example.com');
    expect(config.allowedRedirects).toEqual(['https://chat.example.com', 'https://app.example.com/oauth/']);
  });

  it.each([
    ['TOKENKEEPER_PUBLIC_URL', 'http://keeper.example.com', /must be an https URL/u],
    ['TOKENKEEPER_PUBLIC_URL', 'https://keeper.example.com/?x=1', /query or fragment/u],
    ['TOKENKEEPER_PUBLIC_URL', 'keeper.example.com', /absolute URL/u],
    ['TOKENKEEPER_ALLOWED_REDIRECTS', 'https://ok.example,javascript:alert(1)', /must be an https URL/u],
    ['TOKENKEEPER_ALLOWED_REDIRECTS', 'http://chat.example.com', /must be an https URL/u],
    ['TOKENKEEPER_ALLOWED_REDIRECTS', 'https://u:p@chat.example.com', /credentials/u],
  ])('refuses %s=%s', (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(message);
  });

  it('accepts http URLs only with TOKENKEEPER_ALLOW_INSECURE_HTTP=1 (local development)', () => {
    const config = loadConfig({
      TOKENKEEPER_ALLOW_INSECURE_HTTP: '1',
      TOKENKEEPER_PUBLIC_URL: 'http://127.0.0.1:8787',
      TOKENKEEPER_ALLOWED_REDIRECTS: 'http://127.0.0.1:3000',
    });
    expect(config.publicUrl).toBe('http://127.0.0.1:8787');
  });
});
