import { readFileSync } from 'node:fs';
import { App } from 'aws-cdk-lib';
import { describe, expect, it } from 'vitest';
import {
  defaultLeaseSeconds,
  loadConfig as loadCoreConfig,
  validateConfig,
} from '../../functions/core/config.js';
import {
  DEFAULT_CONFIG,
  functionEnvironment,
  loadConfig,
  parseConfig,
  refreshFunctionTimeoutSeconds,
  TokenKeeperConfigError,
} from '../../lib/config.js';

/** Parses raw context, expects a TokenKeeperConfigError, and returns its message. */
function refused(raw: Record<string, unknown>): string {
  try {
    parseConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(TokenKeeperConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a TokenKeeperConfigError');
}

const RESOURCES = {
  tableName: 'tokenkeeper-sessions',
  keyringSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:keyring-AbCdEf',
  eventBusName: 'default',
  accountId: '123456789012',
};

describe('parseConfig', () => {
  it('defaults to a 5-minute schedule, a 10-minute window, 4 shards and retained data', () => {
    // Act
    const config = parseConfig({});

    // Assess
    expect(config).toEqual(DEFAULT_CONFIG);
    expect(config).toMatchObject({
      refreshIntervalSeconds: 300,
      refreshWindowSeconds: 600,
      shardCount: 4,
      refreshConcurrency: 16,
      httpTimeoutMs: 10_000,
      sweepBudgetSeconds: 120,
      removalPolicy: 'retain',
    });
    expect(config.alarmEmail).toBeUndefined();
  });

  it('accepts strings from `-c key=value` and numbers from cdk.json', () => {
    // Act
    const config = parseConfig({
      refreshIntervalSeconds: '600',
      refreshWindowSeconds: 1200,
      shardCount: '8',
      refreshConcurrency: 32,
      alarmEmail: 'ops@example.com',
      removalPolicy: 'DESTROY',
      logLevel: 'debug',
      logRetentionDays: '90',
    });

    // Assess
    expect(config).toMatchObject({
      refreshIntervalSeconds: 600,
      refreshWindowSeconds: 1200,
      shardCount: 8,
      refreshConcurrency: 32,
      alarmEmail: 'ops@example.com',
      removalPolicy: 'destroy',
      logLevel: 'DEBUG',
      logRetentionDays: 90,
    });
  });

  it('refuses a window that does not exceed the schedule period, naming both keys', () => {
    // Act
    const message = refused({ refreshIntervalSeconds: 600, refreshWindowSeconds: 600 });

    // Assess
    expect(message).toContain('refreshWindowSeconds (600) must exceed the schedule period');
    expect(message).toContain('refreshIntervalSeconds (600)');
  });

  it('refuses a window that does not cover the period plus the longest sweep', () => {
    // Act
    const message = refused({
      refreshIntervalSeconds: 300,
      refreshWindowSeconds: 420,
      sweepBudgetSeconds: 120,
    });

    // Assess
    expect(message).toContain('plus the longest sweep sweepBudgetSeconds (120)');
  });

  it('keepAliveSeconds and circuitFailureThreshold reach the functions as the core reads them', () => {
    const config = parseConfig({ keepAliveSeconds: '7200', circuitFailureThreshold: 5 });
    const env = functionEnvironment(config, {
      tableName: 't',
      keyringSecretArn: 'k',
      eventBusName: 'b',
      accountId: '123456789012',
    });
    expect(env).toMatchObject({
      TOKENKEEPER_KEEPALIVE_SECONDS: '7200',
      TOKENKEEPER_CIRCUIT_FAILURE_THRESHOLD: '5',
    });
    expect(loadCoreConfig({ ...env, AWS_LAMBDA_FUNCTION_NAME: 'f' })).toMatchObject({
      keepAliveSeconds: 7200,
      circuitFailureThreshold: 5,
    });
    expect(parseConfig({}).keepAliveSeconds).toBe(86_400);
  });

  it('derives the sweep budget from the interval when none is given, as the core does', () => {
    expect(parseConfig({ refreshIntervalSeconds: 600, refreshWindowSeconds: 1200 }).sweepBudgetSeconds).toBe(
      240,
    );
    expect(parseConfig({ refreshIntervalSeconds: 60, refreshWindowSeconds: 600 }).sweepBudgetSeconds).toBe(
      24,
    );
    expect(parseConfig({}).sweepBudgetSeconds).toBe(120);
    expect(parseConfig({ sweepBudgetSeconds: 90 }).sweepBudgetSeconds).toBe(90);
  });

  it('refuses a sweep budget that cannot fit one grant', () => {
    // Act
    const message = refused({ sweepBudgetSeconds: 10, httpTimeoutMs: 10_000 });

    // Assess
    expect(message).toContain('sweepBudgetSeconds (10) must leave room for one grant');
  });

  it('refuses a refresh timeout that would reach the next scheduled sweep', () => {
    // Act
    const message = refused({
      refreshIntervalSeconds: 120,
      refreshWindowSeconds: 600,
      sweepBudgetSeconds: 100,
    });

    // Assess
    expect(message).toContain("the refresh function's timeout");
    expect(message).toContain('must stay below the schedule period');
  });

  it('refuses a period EventBridge cannot express and values out of range', () => {
    // Act
    const message = refused({
      refreshIntervalSeconds: 90,
      shardCount: 0,
      refreshConcurrency: 'many',
      refreshReservedConcurrency: 0,
      httpTimeoutMs: 60_000,
    });

    // Assess: every problem is listed at once
    expect(message).toContain('refreshIntervalSeconds must be a whole number of minutes');
    expect(message).toContain('shardCount must be between 1 and 1000, got 0');
    expect(message).toContain('refreshConcurrency must be a whole number, got "many"');
    expect(message).toContain('refreshReservedConcurrency must be between 2 and 1000, got 0');
    expect(message).toContain('httpTimeoutMs must be between 100 and 20000');
    expect(message).toContain('README, section Deploy');
  });

  it('refuses an unknown removal policy, log level, log retention and a malformed e-mail', () => {
    // Act
    const message = refused({
      removalPolicy: 'snapshot',
      logLevel: 'LOUD',
      logRetentionDays: 10,
      alarmEmail: 'not-an-address',
    });

    // Assess
    expect(message).toContain('removalPolicy must be one of retain, destroy');
    expect(message).toContain('logLevel must be one of DEBUG, INFO, WARN, ERROR');
    expect(message).toContain('logRetentionDays must be one of 1, 3, 5, 7, 14, 30');
    expect(message).toContain('alarmEmail must be an e-mail address');
  });

  it('refuses a client-secret prefix that would match every secret', () => {
    // Act / Assess
    expect(refused({ clientSecretPrefix: '' })).toContain('clientSecretPrefix must be a non-empty');
    expect(refused({ clientSecretPrefix: '/' })).toContain('clientSecretPrefix must be a non-empty');
    expect(refused({ clientSecretPrefix: 'tokenkeeper' })).toContain('ending in "/"');
    expect(parseConfig({ clientSecretPrefix: 'acme/oauth/' }).clientSecretPrefix).toBe('acme/oauth/');
  });

  it('sets the refresh timeout to the sweep budget plus one grant plus a margin', () => {
    // Act / Assess
    expect(refreshFunctionTimeoutSeconds(DEFAULT_CONFIG)).toBe(150);
    expect(refreshFunctionTimeoutSeconds(DEFAULT_CONFIG)).toBeLessThan(DEFAULT_CONFIG.refreshIntervalSeconds);
  });
});

describe('loadConfig (CDK context)', () => {
  it('reads the keys from the app context', () => {
    // Prepare
    const app = new App({
      context: { refreshIntervalSeconds: '600', refreshWindowSeconds: '900', shardCount: 2 },
    });

    // Act
    const config = loadConfig(app);

    // Assess
    expect(config).toMatchObject({ refreshIntervalSeconds: 600, refreshWindowSeconds: 900, shardCount: 2 });
  });

  it('fails synth-time configuration with a clear error', () => {
    // Prepare
    const app = new App({ context: { refreshWindowSeconds: '300' } });

    // Act / Assess
    expect(() => loadConfig(app)).toThrow(/refreshWindowSeconds \(300\) must exceed the schedule period/);
  });
});

describe('agreement with functions/core/config.ts', () => {
  it('sets only environment variables the core reads', () => {
    // Prepare
    const coreSource = readFileSync(new URL('../../functions/core/config.ts', import.meta.url), 'utf8');

    // Act
    const names = Object.keys(functionEnvironment(DEFAULT_CONFIG, RESOURCES));

    // Assess
    for (const name of names) {
      if (name.startsWith('TOKENKEEPER_')) expect(coreSource, name).toMatch(new RegExp(`\\b${name}\\b`));
    }
  });

  it('hands the functions a configuration the core accepts in Lambda, value for value', () => {
    // Prepare
    const config = parseConfig({ refreshIntervalSeconds: 600, refreshWindowSeconds: 1200, shardCount: 7 });
    const env = {
      ...functionEnvironment(config, RESOURCES),
      AWS_LAMBDA_FUNCTION_NAME: 'tokenkeeper-refresh',
    };

    // Act
    const core = loadCoreConfig(env);

    // Assess
    expect(core).toMatchObject({
      inLambda: true,
      tableName: RESOURCES.tableName,
      keyringSecretArn: RESOURCES.keyringSecretArn,
      eventBusName: 'default',
      accountId: '123456789012',
      refreshIntervalSeconds: 600,
      refreshWindowSeconds: 1200,
      refreshConcurrency: config.refreshConcurrency,
      httpTimeoutMs: config.httpTimeoutMs,
      shardCount: 7,
      sweepBudgetSeconds: config.sweepBudgetSeconds,
    });
  });

  it('never accepts at synth time a schedule the core would refuse at start-up', () => {
    // Prepare: a grid over the values the two validations compare
    const base = loadCoreConfig({});
    const refusedByCore = (i: number, w: number, b: number, t: number) => {
      try {
        validateConfig({
          ...base,
          refreshIntervalSeconds: i,
          refreshWindowSeconds: w,
          sweepBudgetSeconds: b,
          httpTimeoutMs: t,
          leaseSeconds: defaultLeaseSeconds(t, base.grantTimeoutMs),
        });
        return false;
      } catch {
        return true;
      }
    };

    // Act / Assess
    for (const interval of [60, 120, 300, 600, 900]) {
      for (const window of [60, 120, 180, 300, 400, 420, 421, 600, 900, 1200, 3600]) {
        for (const budget of [5, 10, 30, 60, 120, 300]) {
          for (const timeout of [1_000, 10_000, 20_000]) {
            const raw = {
              refreshIntervalSeconds: interval,
              refreshWindowSeconds: window,
              sweepBudgetSeconds: budget,
              httpTimeoutMs: timeout,
            };
            let accepted = true;
            try {
              parseConfig(raw);
            } catch {
              accepted = false;
            }
            const core = refusedByCore(interval, window, budget, timeout);
            if (accepted) expect(core, JSON.stringify(raw)).toBe(false);
            if (core) expect(accepted, JSON.stringify(raw)).toBe(false);
          }
        }
      }
    }
  });
});

describe('table billing (billingMode and capacity keys)', () => {
  it('is on-demand unless told otherwise', () => {
    expect(parseConfig({}).billingMode).toBe('onDemand');
  });

  it('accepts provisioned capacity with its bounds and target, from -c strings', () => {
    // Act
    const config = parseConfig({
      billingMode: 'provisioned',
      minReadCapacity: '10',
      maxReadCapacity: '500',
      minWriteCapacity: 20,
      maxWriteCapacity: 3000,
      targetUtilizationPercent: '60',
    });

    // Assess
    expect(config).toMatchObject({
      billingMode: 'provisioned',
      minReadCapacity: 10,
      maxReadCapacity: 500,
      minWriteCapacity: 20,
      maxWriteCapacity: 3000,
      targetUtilizationPercent: 60,
    });
    expect(parseConfig({ billingMode: 'ONDEMAND' }).billingMode).toBe('onDemand');
  });

  it('refuses an unknown billing mode', () => {
    expect(refused({ billingMode: 'reserved' })).toContain(
      'billingMode must be one of onDemand, provisioned, got "reserved"',
    );
  });

  it('refuses capacity keys on an on-demand table instead of ignoring them', () => {
    // Act
    const message = refused({ maxWriteCapacity: 100, targetUtilizationPercent: 50 });

    // Assess
    expect(message).toContain(
      'maxWriteCapacity, targetUtilizationPercent apply only with billingMode=provisioned',
    );
  });

  it('refuses a minimum above the maximum, a target outside 20–90 % and capacity beyond the table quota', () => {
    // Act
    const message = refused({
      billingMode: 'provisioned',
      minWriteCapacity: 500,
      maxWriteCapacity: 100,
      targetUtilizationPercent: 95,
      maxReadCapacity: 50_000,
    });

    // Assess
    expect(message).toContain('minWriteCapacity (500) must not exceed maxWriteCapacity (100)');
    expect(message).toContain('targetUtilizationPercent must be between 20 and 90, got 95');
    expect(message).toContain('maxReadCapacity must be between 1 and 40000, got 50000');
  });
});
