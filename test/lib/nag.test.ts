import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App, Validations } from 'aws-cdk-lib';
import { Bucket } from 'aws-cdk-lib/aws-s3';
import { AwsSolutionsChecks } from 'cdk-nag';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../lib/config.js';
import { TokenKeeperStack } from '../../lib/tokenkeeper-stack.js';

/** Builds the app as bin/app.ts does (AWS Solutions checks registered), without bundling. */
function build(context: Record<string, unknown> = {}) {
  const app = new App({
    context: { 'aws:cdk:bundling-stacks': [], ...context },
    builtinCloudFormationValidation: false,
  });
  const stack = new TokenKeeperStack(app, 'TokenKeeper', { config: loadConfig(app) });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}

interface Report {
  pluginReports: { pluginName: string; violations: unknown[] }[];
}

describe('cdk-nag AwsSolutions', () => {
  it.each([
    ['the default configuration', {}],
    [
      'alarm e-mail, destroy policy, slower schedule',
      {
        alarmEmail: 'ops@example.com',
        removalPolicy: 'destroy',
        refreshIntervalSeconds: 900,
        refreshWindowSeconds: 1800,
      },
    ],
    ['a provisioned table with auto scaling', { billingMode: 'provisioned', maxWriteCapacity: 2000 }],
  ])('passes with %s', (_name, context) => {
    // Prepare
    const { app } = build(context);

    // Act: synth throws when a check fails
    const assembly = app.synth();

    // Assess
    const report = JSON.parse(
      readFileSync(join(assembly.directory, 'validation-report.json'), 'utf8'),
    ) as Report;
    const findings = report.pluginReports.flatMap((r) => r.violations);
    expect(findings).toEqual([]);
  });

  it('is really running: an unacknowledged finding fails synth', () => {
    // Prepare
    const { app, stack } = build();
    new Bucket(stack, 'Unchecked');

    // Act / Assess
    expect(() => app.synth()).toThrow(/AwsSolutions-S1/);
  });

  it('acknowledges only these findings, each with a one-line reason', () => {
    // Prepare
    const { app } = build();

    // Act
    const acknowledged = app.node.findAll().flatMap((c) =>
      c.node.metadata
        .filter((m) => m.type === 'aws:cdk:acknowledged-rules')
        .flatMap((m) => Object.entries(m.data as Record<string, string>))
        .map(([id, reason]) => ({ at: c.node.path, id, reason })),
    );

    // Assess
    for (const { reason } of acknowledged) {
      expect(reason.length).toBeGreaterThan(20);
      expect(reason).not.toContain('\n');
    }
    expect(
      acknowledged
        .map(
          ({ at, id }) =>
            `${at} ${id.replace(/^Annotation::/, '').replace(/<SessionsTable\w+\.Arn>/, '<table>')}`,
        )
        .sort(),
    ).toEqual(
      [
        'TokenKeeper/Keyring/Secret AwsSolutions-SMG4',
        'TokenKeeper/Schedule/DeadLetterQueue AwsSolutions-SQS3',
        'TokenKeeper/FanOut/DeadLetterQueue AwsSolutions-SQS3',
        'TokenKeeper/Dispatch AwsSolutions-IAM5[Resource::<table>/index/*]',
        'TokenKeeper/TokenApi/Api/GET--v1--health AwsSolutions-APIG4',
        'TokenKeeper/TokenApi/Api/GET--oauth--callback--{providerId} AwsSolutions-APIG4',
        'TokenKeeper/TokenApi/Api/GET--oauth--client-metadata--{providerId} AwsSolutions-APIG4',
        ...['ApiHandler', 'Refresh'].flatMap((fn) => [
          `TokenKeeper/${fn} AwsSolutions-IAM5[Resource::<table>/index/*]`,
          `TokenKeeper/${fn} AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:tokenkeeper/*]`,
        ]),
      ].sort(),
    );
  });
});
