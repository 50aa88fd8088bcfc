import { readFileSync } from 'node:fs';
import { App, type CfnElement, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import type { IConstruct } from 'constructs';
import { describe, expect, it } from 'vitest';
import { createTableInput } from '../../functions/core/store/table.js';
import { loadConfig } from '../../lib/config.js';
import { API_ROUTES } from '../../lib/token-api.js';
import {
  API_TABLE_ACTIONS,
  DISPATCH_TABLE_ACTIONS,
  REFRESH_TABLE_ACTIONS,
  TokenKeeperStack,
} from '../../lib/tokenkeeper-stack.js';

type Json = Record<string, unknown>;
type Resource = { Type: string; Properties: Json; DeletionPolicy?: string; UpdateReplacePolicy?: string };

/** Synthesizes the stack from CDK context without bundling the functions (bundles: test/lib/synth.test.ts). */
function synth(context: Record<string, unknown> = {}) {
  const app = new App({
    context: { 'aws:cdk:bundling-stacks': [], ...context },
    builtinCloudFormationValidation: false,
  });
  const stack = new TokenKeeperStack(app, 'TokenKeeper', { config: loadConfig(app) });
  const template = Template.fromStack(stack);
  const id = (c: IConstruct) => stack.getLogicalId(c.node.defaultChild as CfnElement);
  return { stack, template, id };
}

function resources(template: Template, type: string): [string, Resource][] {
  return Object.entries(template.findResources(type)) as [string, Resource][];
}

function only(template: Template, type: string): [string, Resource] {
  const found = resources(template, type);
  expect(found, type).toHaveLength(1);
  return found[0] as [string, Resource];
}

interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Principal?: unknown;
  Condition?: unknown;
}

function statements(template: Template, roleLogicalId: string): Statement[] {
  return resources(template, 'AWS::IAM::Policy')
    .filter(([, r]) => JSON.stringify(r.Properties.Roles).includes(`"${roleLogicalId}"`))
    .flatMap(([, r]) => (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement);
}

const actionsOf = (s: Statement) => (Array.isArray(s.Action) ? s.Action : [s.Action]);

/** Renders a Fn::Join'd dashboard body to JSON, tokens replaced by a marker. */
function dashboardBody(template: Template): { widgets: Json[] } {
  const [, dashboard] = only(template, 'AWS::CloudWatch::Dashboard');
  const body = dashboard.Properties.DashboardBody as string | { 'Fn::Join': [string, unknown[]] };
  const text =
    typeof body === 'string'
      ? body
      : body['Fn::Join'][1].map((part) => (typeof part === 'string' ? part : 'TOKEN')).join('');
  return JSON.parse(text) as { widgets: Json[] };
}

const { template, stack, id } = synth();
const refreshRole = id(stack.refreshFunction.role);
const apiRole = id(stack.apiFunction.role);
const refreshFn = id(stack.refreshFunction.function);
const apiFn = id(stack.apiFunction.function);
const dispatchRole = id(stack.dispatchFunction.role);
const dispatchFn = id(stack.dispatchFunction.function);
const scheduleDlq = id(stack.node.findChild('Schedule').node.findChild('DeadLetterQueue'));
const sliceQueue = id(stack.fanOut.queue);
const sliceDlq = id(stack.fanOut.deadLetterQueue);

/** A dependency cycle among the template's resources (Ref, Fn::GetAtt, DependsOn), if any. */
function findCycle(all: Record<string, { DependsOn?: string | string[] } & Json>): string[] | undefined {
  const edges = new Map<string, Set<string>>();
  const collect = (node: unknown, into: Set<string>): void => {
    if (Array.isArray(node)) for (const n of node) collect(n, into);
    else if (node && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) {
        if (k === 'Ref' && typeof v === 'string' && v in all) into.add(v);
        else if (k === 'Fn::GetAtt' && Array.isArray(v) && typeof v[0] === 'string' && v[0] in all)
          into.add(v[0]);
        else collect(v, into);
      }
    }
  };
  for (const [name, resource] of Object.entries(all)) {
    const into = new Set<string>();
    collect(resource.Properties, into);
    for (const d of [resource.DependsOn ?? []].flat()) into.add(d);
    edges.set(name, into);
  }
  const state = new Map<string, 'open' | 'done'>();
  const visit = (name: string, path: string[]): string[] | undefined => {
    if (state.get(name) === 'done') return undefined;
    if (state.get(name) === 'open') return [...path, name];
    state.set(name, 'open');
    for (const next of edges.get(name) ?? []) {
      const cycle = visit(next, [...path, name]);
      if (cycle) return cycle;
    }
    state.set(name, 'done');
    return undefined;
  };
  for (const name of edges.keys()) {
    const cycle = visit(name, []);
    if (cycle) return cycle;
  }
  return undefined;
}

describe('sessions table', () => {
  it('has the keys and the sparse byExpiry index (KEYS_ONLY) the core queries', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      KeySchema: [
        { AttributeName: 'pk', KeyType: 'HASH' },
        { AttributeName: 'sk', KeyType: 'RANGE' },
      ],
      GlobalSecondaryIndexes: [
        {
          IndexName: 'byExpiry',
          KeySchema: [
            { AttributeName: 'refreshShard', KeyType: 'HASH' },
            { AttributeName: 'refreshDueAt', KeyType: 'RANGE' },
          ],
          Projection: { ProjectionType: 'KEYS_ONLY' },
        },
      ],
    });
  });

  it('expires pending authorizations of the connect flow through DynamoDB TTL', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      TimeToLiveSpecification: { AttributeName: 'ttl', Enabled: true },
    });
  });

  it('matches functions/core/store/table.ts exactly, so the local stack and AWS cannot drift', () => {
    // Prepare
    const expected = createTableInput('ignored');
    const [, table] = only(template, 'AWS::DynamoDB::Table');
    const sortByName = (a: { AttributeName?: string }, b: { AttributeName?: string }) =>
      String(a.AttributeName).localeCompare(String(b.AttributeName));

    // Assess
    expect([...(table.Properties.AttributeDefinitions as [])].sort(sortByName)).toEqual(
      [...(expected.AttributeDefinitions ?? [])].sort(sortByName),
    );
    expect(table.Properties.KeySchema).toEqual(expected.KeySchema);
    expect(table.Properties.GlobalSecondaryIndexes).toEqual(expected.GlobalSecondaryIndexes);
    expect(table.Properties.BillingMode).toBe(expected.BillingMode);
  });

  it('is on-demand, encrypted at rest, point-in-time recoverable and kept on stack deletion', () => {
    template.hasResource('AWS::DynamoDB::Table', {
      Properties: Match.objectLike({
        BillingMode: 'PAY_PER_REQUEST',
        SSESpecification: { SSEEnabled: true },
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        DeletionProtectionEnabled: true,
      }),
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
    });
  });

  it('is deleted with a stack configured removalPolicy=destroy, together with its keyring', () => {
    // Act
    const { template: throwaway } = synth({ removalPolicy: 'destroy' });

    // Assess
    const [, table] = only(throwaway, 'AWS::DynamoDB::Table');
    const [, secret] = only(throwaway, 'AWS::SecretsManager::Secret');
    expect(table.DeletionPolicy).toBe('Delete');
    expect(table.Properties.DeletionProtectionEnabled).toBe(false);
    expect(secret.DeletionPolicy).toBe('Delete');
  });
});

describe('sessions table with billingMode=provisioned', () => {
  const { template: provisioned, stack: pStack } = synth({
    billingMode: 'provisioned',
    minReadCapacity: 5,
    maxReadCapacity: 800,
    minWriteCapacity: 10,
    maxWriteCapacity: 3000,
    targetUtilizationPercent: 70,
  });
  const tableId = pStack.getLogicalId(
    pStack.node.findAll().find((c) => c.node.path.endsWith('Sessions/Table/Resource')) as CfnElement,
  );
  const targets = resources(provisioned, 'AWS::ApplicationAutoScaling::ScalableTarget');
  const policies = resources(provisioned, 'AWS::ApplicationAutoScaling::ScalingPolicy');
  const resourceIdOf = (t: Resource) => JSON.stringify(t.Properties.ResourceId);

  it('starts the table and the byExpiry index at the minimum capacity', () => {
    const [, table] = only(provisioned, 'AWS::DynamoDB::Table');
    // CloudFormation's default BillingMode is PROVISIONED; CDK leaves it out.
    expect(table.Properties.BillingMode ?? 'PROVISIONED').toBe('PROVISIONED');
    const units = { ReadCapacityUnits: 5, WriteCapacityUnits: 10 };
    expect(table.Properties.ProvisionedThroughput).toEqual(units);
    const [index] = table.Properties.GlobalSecondaryIndexes as Json[];
    expect(index).toMatchObject({ IndexName: 'byExpiry', ProvisionedThroughput: units });
  });

  it('scales reads and writes of the table and of the byExpiry index between the bounds', () => {
    // Assess: four targets, two on the table and two on the index, each with its own bounds
    const seen = targets.map(([, t]) => ({
      dimension: t.Properties.ScalableDimension,
      onIndex: resourceIdOf(t).includes('/index/byExpiry'),
      onThisTable: resourceIdOf(t).includes(`"Ref":"${tableId}"`),
      min: t.Properties.MinCapacity,
      max: t.Properties.MaxCapacity,
    }));
    expect(seen).toHaveLength(4);
    expect(seen.every((t) => t.onThisTable)).toBe(true);
    expect(seen).toEqual(
      expect.arrayContaining([
        {
          dimension: 'dynamodb:table:ReadCapacityUnits',
          onIndex: false,
          onThisTable: true,
          min: 5,
          max: 800,
        },
        {
          dimension: 'dynamodb:table:WriteCapacityUnits',
          onIndex: false,
          onThisTable: true,
          min: 10,
          max: 3000,
        },
        { dimension: 'dynamodb:index:ReadCapacityUnits', onIndex: true, onThisTable: true, min: 5, max: 800 },
        {
          dimension: 'dynamodb:index:WriteCapacityUnits',
          onIndex: true,
          onThisTable: true,
          min: 10,
          max: 3000,
        },
      ]),
    );
  });

  it('tracks the target utilisation on every scalable target, reads on reads and writes on writes', () => {
    expect(policies).toHaveLength(4);
    const byTarget = new Map(targets.map(([logicalId, t]) => [logicalId, t.Properties.ScalableDimension]));
    for (const [, policy] of policies) {
      const config = policy.Properties.TargetTrackingScalingPolicyConfiguration as {
        TargetValue: number;
        PredefinedMetricSpecification: { PredefinedMetricType: string };
      };
      const target = (policy.Properties.ScalingTargetId as { Ref: string }).Ref;
      const dimension = byTarget.get(target) as string;
      expect(policy.Properties.PolicyType).toBe('TargetTrackingScaling');
      expect(config.TargetValue).toBe(70);
      expect(config.PredefinedMetricSpecification.PredefinedMetricType).toBe(
        dimension.endsWith('WriteCapacityUnits')
          ? 'DynamoDBWriteCapacityUtilization'
          : 'DynamoDBReadCapacityUtilization',
      );
    }
    expect(new Set(policies.map(([, p]) => (p.Properties.ScalingTargetId as { Ref: string }).Ref))).toEqual(
      new Set(byTarget.keys()),
    );
  });

  it('has no scaling at all on the default on-demand table', () => {
    expect(resources(template, 'AWS::ApplicationAutoScaling::ScalableTarget')).toEqual([]);
    expect(resources(template, 'AWS::ApplicationAutoScaling::ScalingPolicy')).toEqual([]);
  });

  it('stops synth with the key names when the capacity bounds are wrong', () => {
    expect(() => synth({ billingMode: 'provisioned', minWriteCapacity: 50, maxWriteCapacity: 10 })).toThrow(
      /minWriteCapacity \(50\) must not exceed maxWriteCapacity \(10\)/,
    );
  });
});

describe('keyring secret', () => {
  it('is generated by Secrets Manager at deploy time: no key material in the template', () => {
    // Assess
    template.hasResourceProperties('AWS::SecretsManager::Secret', {
      GenerateSecretString: {
        SecretStringTemplate: '{"current":"k1"}',
        GenerateStringKey: 'k1',
        PasswordLength: 64,
        ExcludePunctuation: true,
      },
    });
    const [, secret] = only(template, 'AWS::SecretsManager::Secret');
    expect(secret.Properties.SecretString).toBeUndefined();
    expect(secret.DeletionPolicy).toBe('Retain');
  });

  it('is readable by the two functions and nothing else', () => {
    // Prepare
    const [secretId] = only(template, 'AWS::SecretsManager::Secret');
    const readers = resources(template, 'AWS::IAM::Policy')
      .filter(([, r]) => JSON.stringify(r.Properties.PolicyDocument).includes(`{"Ref":"${secretId}"}`))
      .flatMap(([, r]) => (r.Properties.Roles as { Ref: string }[]).map((role) => role.Ref));

    // Assess
    expect(readers.sort()).toEqual([apiRole, refreshRole].sort());
    expect(template.findResources('AWS::SecretsManager::ResourcePolicy')).toEqual({});
  });
});

describe('functions', () => {
  it('are exactly the three keeper functions: dispatcher, refresh worker, API (no helper Lambdas)', () => {
    template.resourceCountIs('AWS::Lambda::Function', 3);
  });

  it('run on arm64 on nodejs24.x, the Node.js major the tests run on, with explicit memory and timeouts', () => {
    const testedOn = `nodejs${process.versions.node.split('.')[0]}.x`;
    for (const [, fn] of resources(template, 'AWS::Lambda::Function')) {
      expect(fn.Properties.Architectures).toEqual(['arm64']);
      expect(fn.Properties.Runtime).toBe('nodejs24.x');
      expect(fn.Properties.Runtime).toBe(testedOn);
      expect(fn.Properties.MemorySize).toBeGreaterThanOrEqual(256);
      expect(fn.Properties.Timeout).toBeGreaterThan(0);
      expect(fn.Properties.Handler).toBe('index.handler');
    }
  });

  it("log JSON and leave out Lambda's per-invocation START/END/REPORT lines, keeping INFO for the EMF metrics", () => {
    const levels = (t: Template) =>
      resources(t, 'AWS::Lambda::Function').map(([, fn]) => fn.Properties.LoggingConfig);
    const expected = (ApplicationLogLevel: string) => ({
      LogFormat: 'JSON',
      SystemLogLevel: 'WARN',
      ApplicationLogLevel,
      LogGroup: expect.anything(),
    });

    const everyFunction = (level: string) => Array.from({ length: 3 }, () => expected(level));
    expect(levels(template)).toEqual(everyFunction('INFO'));
    expect(levels(synth({ logLevel: 'DEBUG' }).template)).toEqual(everyFunction('DEBUG'));
    // Lambda counts an EMF document (no level) as INFO: WARN there would drop every metric.
    expect(levels(synth({ logLevel: 'WARN' }).template)).toEqual(everyFunction('INFO'));
  });

  it('stops the refresh function before the next scheduled sweep, after the sweep budget', () => {
    // Prepare
    const timeout = template.toJSON().Resources[refreshFn].Properties.Timeout as number;

    // Assess: budget 120 s + one 10 s grant + 20 s margin, below the 300 s period
    expect(timeout).toBe(150);
    expect(timeout).toBeGreaterThan(120);
    expect(timeout).toBeLessThan(300);
    expect(template.toJSON().Resources[apiFn].Properties.Timeout).toBeLessThan(30);
  });

  it('reserve concurrency for the refresh workers only (context refreshReservedConcurrency, default 10)', () => {
    const fns = template.toJSON().Resources;
    expect(fns[refreshFn].Properties.ReservedConcurrentExecutions).toBe(10);
    expect(fns[apiFn].Properties.ReservedConcurrentExecutions).toBeUndefined();
    expect(fns[dispatchFn].Properties.ReservedConcurrentExecutions).toBeUndefined();
    const more = synth({ refreshReservedConcurrency: 25 });
    const moreFn = more.id(more.stack.refreshFunction.function);
    expect(more.template.toJSON().Resources[moreFn].Properties.ReservedConcurrentExecutions).toBe(25);
  });

  it('give the dispatcher no asynchronous retries: the next sweep is the retry', () => {
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
      FunctionName: { Ref: dispatchFn },
      MaximumRetryAttempts: 0,
    });
  });

  it('get the configuration the core reads, Powertools settings and source maps', () => {
    for (const fnId of [refreshFn, apiFn]) {
      template.hasResourceProperties('AWS::Lambda::Function', {
        FunctionName: Match.absent(),
        Role: { 'Fn::GetAtt': [fnId === refreshFn ? refreshRole : apiRole, 'Arn'] },
        Environment: {
          Variables: {
            TOKENKEEPER_TABLE_NAME: { Ref: Match.stringLikeRegexp('^SessionsTable') },
            TOKENKEEPER_KEYRING_SECRET_ARN: { Ref: Match.stringLikeRegexp('^KeyringSecret') },
            // Client secrets by ARN must be in this account: the grant covers no other.
            TOKENKEEPER_ACCOUNT_ID: { Ref: 'AWS::AccountId' },
            TOKENKEEPER_EVENT_BUS_NAME: 'default',
            TOKENKEEPER_REFRESH_INTERVAL_SECONDS: '300',
            TOKENKEEPER_REFRESH_WINDOW_SECONDS: '600',
            TOKENKEEPER_REFRESH_CONCURRENCY: '16',
            TOKENKEEPER_HTTP_TIMEOUT_MS: '10000',
            TOKENKEEPER_SHARD_COUNT: '4',
            TOKENKEEPER_SWEEP_BUDGET_SECONDS: '120',
            POWERTOOLS_SERVICE_NAME: 'tokenkeeper',
            POWERTOOLS_METRICS_NAMESPACE: 'TokenKeeper',
            POWERTOOLS_LOG_LEVEL: 'INFO',
            NODE_OPTIONS: '--enable-source-maps',
          },
        },
      });
    }
  });

  it('log to their own log groups, and every log group has a retention period', () => {
    // Prepare
    const logGroups = resources(template, 'AWS::Logs::LogGroup');

    // Assess
    expect(logGroups).toHaveLength(4); // three functions + API access logs
    for (const [, group] of logGroups) expect(group.Properties.RetentionInDays).toBe(30);
    for (const [, fn] of resources(template, 'AWS::Lambda::Function')) {
      const ref = (fn.Properties.LoggingConfig as { LogGroup: { Ref: string } }).LogGroup.Ref;
      expect(logGroups.map(([logicalId]) => logicalId)).toContain(ref);
    }
    const { template: longer } = synth({ logRetentionDays: 365 });
    for (const [, group] of resources(longer, 'AWS::Logs::LogGroup')) {
      expect(group.Properties.RetentionInDays).toBe(365);
    }
  });
});

describe('least privilege', () => {
  it('grants no wildcard action anywhere', () => {
    const allows: Statement[] = [
      ...resources(template, 'AWS::IAM::Policy').flatMap(
        ([, r]) => (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement,
      ),
      ...resources(template, 'AWS::SQS::QueuePolicy').flatMap(
        ([, r]) => (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement,
      ),
      ...resources(template, 'AWS::SNS::TopicPolicy').flatMap(
        ([, r]) => (r.Properties.PolicyDocument as { Statement: Statement[] }).Statement,
      ),
    ].filter((s) => s.Effect === 'Allow');
    expect(allows.length).toBeGreaterThan(0);
    for (const s of allows) for (const action of actionsOf(s)) expect(action).not.toContain('*');
  });

  it('gives the function roles no managed policies, only what each function uses', () => {
    // Prepare
    const roles = resources(template, 'AWS::IAM::Role');

    // Assess
    expect(roles.map(([logicalId]) => logicalId).sort()).toEqual([apiRole, dispatchRole, refreshRole].sort());
    for (const [, role] of roles) {
      expect(role.Properties.ManagedPolicyArns).toBeUndefined();
      expect(JSON.stringify(role.Properties.AssumeRolePolicyDocument)).toContain('lambda.amazonaws.com');
    }
    const byRole = (roleId: string) => statements(template, roleId).flatMap(actionsOf).sort();
    expect(byRole(dispatchRole)).toEqual(
      [
        ...DISPATCH_TABLE_ACTIONS,
        'logs:CreateLogStream',
        'logs:PutLogEvents',
        'sqs:GetQueueAttributes',
        'sqs:GetQueueUrl',
        'sqs:SendMessage',
      ].sort(),
    );
    expect(byRole(refreshRole)).toEqual(
      [
        ...REFRESH_TABLE_ACTIONS,
        'sqs:ChangeMessageVisibility',
        'sqs:DeleteMessage',
        'sqs:GetQueueAttributes',
        'sqs:GetQueueUrl',
        'sqs:ReceiveMessage',
        'events:PutEvents',
        'logs:CreateLogStream',
        'logs:PutLogEvents',
        'secretsmanager:DescribeSecret',
        'secretsmanager:GetSecretValue',
        'secretsmanager:GetSecretValue',
      ].sort(),
    );
    expect(byRole(apiRole)).toEqual(
      [
        ...API_TABLE_ACTIONS,
        'events:PutEvents',
        'logs:CreateLogStream',
        'logs:PutLogEvents',
        'secretsmanager:DescribeSecret',
        'secretsmanager:GetSecretValue',
        'secretsmanager:GetSecretValue',
      ].sort(),
    );
  });

  it('scopes table, log, event and client-secret grants to their resources', () => {
    for (const roleId of [refreshRole, apiRole]) {
      const all = statements(template, roleId);
      const find = (action: string) => all.filter((s) => actionsOf(s).includes(action));
      const dynamo = JSON.stringify(find('dynamodb:GetItem').map((s) => s.Resource));
      expect(dynamo).toMatch(/SessionsTable\w+","Arn"/);
      expect(dynamo).toContain('/index/*');
      expect(JSON.stringify(find('logs:PutLogEvents').map((s) => s.Resource))).toMatch(/Logs\w+","Arn"/);
      expect(JSON.stringify(find('events:PutEvents').map((s) => s.Resource))).toContain(':event-bus/default');
      const prefixed = find('secretsmanager:GetSecretValue').filter((s) =>
        JSON.stringify(s.Resource).includes(':secret:tokenkeeper/*'),
      );
      expect(prefixed).toHaveLength(1);
      expect(actionsOf(prefixed[0] as Statement)).toEqual(['secretsmanager:GetSecretValue']);
    }
  });

  it('grants every DynamoDB call the store makes on each function path (functions/core/store/store.ts)', () => {
    // Prepare: which store methods issue which commands, and which methods the refresh path calls
    const read = (file: string) =>
      readFileSync(new URL(`../../functions/core/${file}`, import.meta.url), 'utf8');
    const store = read('store/store.ts');
    const starts = [...store.matchAll(/^ {2}(?:private |public )?(?:async )?(\w+)\(/gm)];
    const commandsOf = new Map<string, Set<string>>();
    starts.forEach((m, i) => {
      const body = store.slice(m.index, starts[i + 1]?.index ?? store.length);
      const actions = [...body.matchAll(/new (\w+?)(?:Item)?Command\(/g)].map(
        ([, name]) => `dynamodb:${name === 'Query' || name === 'Scan' ? name : `${name}Item`}`,
      );
      commandsOf.set(m[1] as string, new Set([...(commandsOf.get(m[1] as string) ?? []), ...actions]));
    });
    const everyCommand = new Set([...commandsOf.values()].flatMap((s) => [...s]));
    const registry = read('registry.ts');
    const cachedProviders = registry.slice(registry.indexOf('class CachedProviders'));
    const refreshSources = [
      read('refresh/sweep.ts'),
      read('refresh/slices.ts'),
      read('refresh/refresher.ts'),
      read('refresh/circuit.ts'),
      cachedProviders.slice(0, cachedProviders.indexOf('export class', 1)),
    ];
    const refreshMethods = new Set(
      refreshSources.flatMap((src) => [...src.matchAll(/store\.(\w+)\(/g)].map((m) => m[1])),
    );
    const refreshCommands = new Set(
      [...refreshMethods].flatMap((m) => [...(commandsOf.get(m as string) ?? [])]),
    );

    // Assess
    expect(everyCommand.size).toBeGreaterThan(0);
    expect(refreshMethods).toContain('queryDue');
    for (const action of everyCommand) expect(API_TABLE_ACTIONS, action).toContain(action);
    for (const action of refreshCommands) expect(REFRESH_TABLE_ACTIONS, action).toContain(action);
  });
});

describe('refresh schedule', () => {
  it('runs the dispatcher every 5 minutes, with retries and a dead-letter queue', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(5 minutes)',
      State: 'ENABLED',
      Targets: [
        {
          Arn: { 'Fn::GetAtt': [dispatchFn, 'Arn'] },
          Id: Match.anyValue(),
          RetryPolicy: { MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 300 },
          DeadLetterConfig: { Arn: { 'Fn::GetAtt': [scheduleDlq, 'Arn'] } },
        },
      ],
    });
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'events.amazonaws.com',
      FunctionName: { 'Fn::GetAtt': [dispatchFn, 'Arn'] },
    });
  });

  it('keeps dead letters encrypted for 14 days, accepts them only from the rule and over TLS', () => {
    // Prepare
    const [ruleId] = only(template, 'AWS::Events::Rule');

    // Assess
    template.hasResourceProperties('AWS::SQS::Queue', {
      SqsManagedSseEnabled: true,
      MessageRetentionPeriod: 14 * 24 * 3600,
    });
    template.hasResourceProperties('AWS::SQS::QueuePolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          Match.objectLike({
            Effect: 'Allow',
            Action: 'sqs:SendMessage',
            Principal: { Service: 'events.amazonaws.com' },
            Condition: { ArnEquals: { 'aws:SourceArn': { 'Fn::GetAtt': [ruleId, 'Arn'] } } },
          }),
        ]),
      },
    });
  });

  it('follows the configured period', () => {
    // Act
    const {
      template: slower,
      stack: s,
      id: idOf,
    } = synth({ refreshIntervalSeconds: 600, refreshWindowSeconds: 1200 });

    // Assess
    slower.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(10 minutes)',
      Targets: [
        Match.objectLike({ RetryPolicy: { MaximumRetryAttempts: 2, MaximumEventAgeInSeconds: 600 } }),
      ],
    });
    slower.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'Invocations',
      Period: 600,
      EvaluationPeriods: 3,
    });
    const env = slower.toJSON().Resources[idOf(s.refreshFunction.function)].Properties.Environment.Variables;
    expect(env.TOKENKEEPER_REFRESH_INTERVAL_SECONDS).toBe('600');
    expect(env.TOKENKEEPER_REFRESH_WINDOW_SECONDS).toBe('1200');
  });
});

describe('sweep fan-out', () => {
  const props = (logicalId: string) => template.toJSON().Resources[logicalId].Properties as Json;

  it('queues slices in an encrypted, TLS-only queue whose dead-letter queue takes a slice after 3 deliveries', () => {
    expect(props(sliceQueue)).toMatchObject({
      SqsManagedSseEnabled: true,
      // six times the worker's 150 s timeout (Lambda's guidance for SQS event sources)
      VisibilityTimeout: 900,
      MessageRetentionPeriod: 3600,
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [sliceDlq, 'Arn'] }, maxReceiveCount: 3 },
    });
    expect(props(sliceDlq)).toMatchObject({
      SqsManagedSseEnabled: true,
      MessageRetentionPeriod: 14 * 24 * 3600,
    });
    for (const queueId of [sliceQueue, sliceDlq]) {
      template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: queueId }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    }
  });

  it('feeds the refresh function one slice per invocation, at most sweepMaxConcurrency at once, with partial batch responses', () => {
    const [, mapping] = only(template, 'AWS::Lambda::EventSourceMapping');
    expect(mapping.Properties).toMatchObject({
      FunctionName: { Ref: refreshFn },
      EventSourceArn: { 'Fn::GetAtt': [sliceQueue, 'Arn'] },
      BatchSize: 1,
      ScalingConfig: { MaximumConcurrency: 10 },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
    const wider = synth({
      sweepMaxConcurrency: 40,
      refreshReservedConcurrency: 40,
      shardCount: 8,
      sweepSliceSize: 500,
    });
    const [, wide] = only(wider.template, 'AWS::Lambda::EventSourceMapping');
    expect(wide.Properties).toMatchObject({ ScalingConfig: { MaximumConcurrency: 40 } });
    const env =
      wider.template.toJSON().Resources[wider.id(wider.stack.dispatchFunction.function)].Properties
        .Environment.Variables;
    expect(env.TOKENKEEPER_SWEEP_SLICE_SIZE).toBe('500');
  });

  it('tells the dispatcher where the queue is; only the dispatcher may send to it', () => {
    const env = (props(dispatchFn).Environment as { Variables: Json }).Variables;
    expect(env.TOKENKEEPER_SWEEP_QUEUE_URL).toEqual({ Ref: sliceQueue });
    expect(env.TOKENKEEPER_SWEEP_SLICE_SIZE).toBe('1000');
    expect(
      (props(refreshFn).Environment as { Variables: Json }).Variables.TOKENKEEPER_SWEEP_QUEUE_URL,
    ).toBeUndefined();
    const senders = [apiRole, dispatchRole, refreshRole].filter((role) =>
      statements(template, role).some((st) => actionsOf(st).includes('sqs:SendMessage')),
    );
    expect(senders).toEqual([dispatchRole]);
    const send = statements(template, dispatchRole).find((st) => actionsOf(st).includes('sqs:SendMessage'));
    expect(send?.Resource).toEqual({ 'Fn::GetAtt': [sliceQueue, 'Arn'] });
  });

  it('refuses fewer reserved workers than the event source may run, and a concurrency Lambda does not offer', () => {
    expect(() => synth({ sweepMaxConcurrency: 20 })).toThrow(
      /refreshReservedConcurrency \(10\) must be at least sweepMaxConcurrency \(20\)/,
    );
    expect(() => synth({ sweepMaxConcurrency: 1 })).toThrow(/sweepMaxConcurrency must be between 2 and 1000/);
    expect(() => synth({ sweepSliceSize: 0 })).toThrow(/sweepSliceSize must be between 1 and 100000/);
  });

  it('refuses too few shards for the workers: each shard is one index partition key of 1,000 writes a second', () => {
    // 50 workers at 100 refreshes a second move 10,000 index entries a second (npm run simulate).
    expect(() => synth({ sweepMaxConcurrency: 50, refreshReservedConcurrency: 50 })).toThrow(
      /shardCount \(4\) is too low for sweepMaxConcurrency \(50\).*set shardCount to at least 10/,
    );
    const fleet = synth({ sweepMaxConcurrency: 50, refreshReservedConcurrency: 50, shardCount: 16 });
    const [, mapping] = only(fleet.template, 'AWS::Lambda::EventSourceMapping');
    expect(mapping.Properties).toMatchObject({ ScalingConfig: { MaximumConcurrency: 50 } });
  });

  it('grants the dispatcher what its code path calls (functions/core/refresh/dispatch.ts)', () => {
    const source = readFileSync(new URL('../../functions/core/refresh/dispatch.ts', import.meta.url), 'utf8');
    const calls = new Set([...source.matchAll(/store\.(\w+)\(/g)].map((m) => m[1]));
    // readDueKeys (sweep.ts) pages through store.queryDue.
    if (source.includes('readDueKeys(store')) calls.add('queryDue');
    expect(calls).toEqual(new Set(['queryDue', 'startSweep']));
    // queryDue is a Query, startSweep an UpdateItem
    expect([...DISPATCH_TABLE_ACTIONS].sort()).toEqual(['dynamodb:Query', 'dynamodb:UpdateItem']);
  });
});

describe('HTTP API', () => {
  it('routes every documented route to the API function (Lambda proxy, payload 2.0)', () => {
    // Prepare
    const expectedKeys = API_ROUTES.flatMap((r) => r.methods.map((m) => `${m} ${r.path}`)).sort();

    // Assess
    expect(expectedKeys).toEqual(
      [
        'DELETE /v1/sessions/{userId}/{providerId}',
        'GET /v1/health',
        'GET /v1/providers',
        'GET /v1/providers/{providerId}',
        'GET /v1/sessions',
        'GET /v1/sweeps',
        'GET /v1/sweeps/latest',
        'GET /v1/sessions/{userId}',
        'GET /v1/sessions/{userId}/{providerId}',
        'GET /v1/sessions/{userId}/{providerId}/token',
        'POST /v1/sessions/{userId}/{providerId}/authorize',
        'GET /oauth/callback/{providerId}',
        'GET /oauth/client-metadata/{providerId}',
        'POST /v1/sessions/{userId}/{providerId}/refresh',
        'POST /v1/sessions/{userId}/{providerId}/connections/{connectionId}',
        'PUT /v1/providers/{providerId}',
        'PUT /v1/sessions/{userId}/{providerId}',
      ].sort(),
    );
    const routes = resources(template, 'AWS::ApiGatewayV2::Route');
    // plus the signed catch-all, so unknown paths and methods get the contract's 404/405 from the function
    expect(routes.map(([, r]) => r.Properties.RouteKey).sort()).toEqual(['$default', ...expectedKeys].sort());
    template.hasResourceProperties('AWS::ApiGatewayV2::Api', { ProtocolType: 'HTTP' });
    template.resourceCountIs('AWS::ApiGatewayV2::Integration', 1);
    template.hasResourceProperties('AWS::ApiGatewayV2::Integration', {
      IntegrationType: 'AWS_PROXY',
      PayloadFormatVersion: '2.0',
      IntegrationUri: { 'Fn::GetAtt': [apiFn, 'Arn'] },
    });
  });

  it('requires AWS_IAM (SigV4) on every route but the health check, the providers’ OAuth callbacks and their client metadata documents', () => {
    const routes = resources(template, 'AWS::ApiGatewayV2::Route');
    expect(routes.map(([, r]) => r.Properties.RouteKey)).toContain('$default');
    const open = routes
      .filter(([, r]) => r.Properties.AuthorizationType !== 'AWS_IAM')
      .map(([, r]) => [r.Properties.RouteKey, r.Properties.AuthorizationType]);
    expect(open.sort()).toEqual([
      ['GET /oauth/callback/{providerId}', 'NONE'],
      ['GET /oauth/client-metadata/{providerId}', 'NONE'],
      ['GET /v1/health', 'NONE'],
    ]);
    for (const [, route] of routes) {
      expect(['AWS_IAM', 'NONE'], String(route.Properties.RouteKey)).toContain(
        route.Properties.AuthorizationType,
      );
    }
  });

  it('gives the API function its own URL as TOKENKEEPER_PUBLIC_URL, without a dependency cycle', () => {
    const [apiId] = only(template, 'AWS::ApiGatewayV2::Api');
    const fn = template.toJSON().Resources[apiFn].Properties.Environment.Variables;
    expect(fn.TOKENKEEPER_PUBLIC_URL).toEqual({ 'Fn::GetAtt': [apiId, 'ApiEndpoint'] });
    const refresh = template.toJSON().Resources[refreshFn].Properties.Environment.Variables;
    expect(refresh.TOKENKEEPER_PUBLIC_URL).toBeUndefined();
    expect(findCycle(template.toJSON().Resources)).toBeUndefined();
  });

  it('uses a custom domain from context instead, and passes the redirect allow-list', () => {
    const custom = synth({
      publicUrl: 'https://keeper.example.com/',
      allowedRedirects: 'https://chat.example.com,https://app.example.com/oauth/',
    });
    const env =
      custom.template.toJSON().Resources[custom.id(custom.stack.apiFunction.function)].Properties.Environment
        .Variables;
    expect(env.TOKENKEEPER_PUBLIC_URL).toBe('https://keeper.example.com');
    expect(env.TOKENKEEPER_ALLOWED_REDIRECTS).toBe('https://chat.example.com,https://app.example.com/oauth/');
    expect(() => synth({ publicUrl: 'http://keeper.example.com' })).toThrow(
      /publicUrl must be an https URL/u,
    );
    expect(() => synth({ allowedRedirects: 'javascript:alert(1)' })).toThrow(/allowedRedirects/u);
  });

  it('lets API Gateway invoke the function only for this API', () => {
    const [apiId] = only(template, 'AWS::ApiGatewayV2::Api');
    const permissions = resources(template, 'AWS::Lambda::Permission').filter(
      ([, p]) => p.Properties.Principal === 'apigateway.amazonaws.com',
    );
    expect(permissions.length).toBeGreaterThan(0);
    for (const [, p] of permissions) {
      expect(p.Properties.FunctionName).toEqual({ 'Fn::GetAtt': [apiFn, 'Arn'] });
      expect(JSON.stringify(p.Properties.SourceArn)).toContain(`{"Ref":"${apiId}"}`);
    }
  });

  it('throttles the stage and writes access logs without user ids', () => {
    // Prepare
    const [accessLogsId] = resources(template, 'AWS::Logs::LogGroup').find(([logicalId]) =>
      logicalId.startsWith('ApiAccessLogs'),
    ) as [string, Resource];

    // Assess
    template.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      StageName: '$default',
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 },
      AccessLogSettings: {
        DestinationArn: { 'Fn::GetAtt': [accessLogsId, 'Arn'] },
        Format: Match.anyValue(),
      },
    });
    const [, stage] = only(template, 'AWS::ApiGatewayV2::Stage');
    const format = (stage.Properties.AccessLogSettings as { Format: string }).Format;
    expect(JSON.parse(format)).toMatchObject({
      requestId: '$context.requestId',
      routeKey: '$context.routeKey',
    });
    expect(format).not.toContain('$context.path');
  });

  it('takes its throttling from context', () => {
    const { template: t } = synth({ apiThrottleRateLimit: '5', apiThrottleBurstLimit: '10' });
    t.hasResourceProperties('AWS::ApiGatewayV2::Stage', {
      DefaultRouteSettings: { ThrottlingRateLimit: 5, ThrottlingBurstLimit: 10 },
    });
  });
});

describe('alarms', () => {
  const alarms = resources(template, 'AWS::CloudWatch::Alarm');
  const byMetric = (metricName: string) => {
    const found = alarms.filter(([, a]) => a.Properties.MetricName === metricName);
    expect(found, metricName).toHaveLength(1);
    return (found[0] as [string, Resource])[1].Properties;
  };
  const keeper = { Namespace: 'TokenKeeper', Dimensions: [{ Name: 'service', Value: 'tokenkeeper' }] };

  it('notify the SNS topic on alarm and on recovery', () => {
    // Prepare
    const [topicId] = only(template, 'AWS::SNS::Topic');

    // Assess
    expect(alarms).toHaveLength(13);
    for (const [, a] of alarms) {
      expect(a.Properties.AlarmActions).toEqual([{ Ref: topicId }]);
      expect(a.Properties.OKActions).toEqual([{ Ref: topicId }]);
      expect(a.Properties.AlarmDescription).toEqual(expect.any(String));
    }
  });

  it('fire on any missed refresh', () => {
    expect(byMetric('Missed')).toMatchObject({
      ...keeper,
      Statistic: 'Sum',
      Period: 300,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      EvaluationPeriods: 1,
      TreatMissingData: 'notBreaching',
    });
  });

  it('fire on refresh worker errors and on dispatcher errors', () => {
    const errors = alarms
      .filter(([, a]) => a.Properties.MetricName === 'Errors')
      .map(([, a]) => a.Properties);
    expect(errors).toHaveLength(2);
    for (const fn of [refreshFn, dispatchFn]) {
      expect(errors).toContainEqual(
        expect.objectContaining({
          Namespace: 'AWS/Lambda',
          Dimensions: [{ Name: 'FunctionName', Value: { Ref: fn } }],
          Threshold: 1,
          ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        }),
      );
    }
  });

  it('fire when the schedule stopped: no dispatch for three periods, missing data breaching', () => {
    expect(byMetric('Invocations')).toMatchObject({
      Namespace: 'AWS/Lambda',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: dispatchFn } }],
      Statistic: 'Sum',
      Period: 300,
      EvaluationPeriods: 3,
      DatapointsToAlarm: 3,
      Threshold: 1,
      ComparisonOperator: 'LessThanThreshold',
      TreatMissingData: 'breaching',
    });
  });

  it("fire on messages in either dead-letter queue (the schedule's and the slices')", () => {
    const visible = alarms
      .filter(([, a]) => a.Properties.MetricName === 'ApproximateNumberOfMessagesVisible')
      .map(([, a]) => a.Properties);
    expect(visible).toHaveLength(2);
    for (const queueId of [scheduleDlq, sliceDlq]) {
      expect(visible).toContainEqual(
        expect.objectContaining({
          Namespace: 'AWS/SQS',
          Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [queueId, 'QueueName'] } }],
          Threshold: 1,
          ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        }),
      );
    }
  });

  it('fire when slices wait in the queue longer than one period (too few workers)', () => {
    expect(byMetric('ApproximateAgeOfOldestMessage')).toMatchObject({
      Namespace: 'AWS/SQS',
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [sliceQueue, 'QueueName'] } }],
      Statistic: 'Maximum',
      Threshold: 300,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
  });

  it('fire on a spike of reauthorizations, with a configurable threshold', () => {
    expect(byMetric('ReauthorizationRequired')).toMatchObject({ ...keeper, Period: 900, Threshold: 5 });
    const { template: t } = synth({ reauthAlarmThreshold: '20' });
    t.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'ReauthorizationRequired',
      Threshold: 20,
    });
  });

  it('fire when a provider rejects our client (invalid_client) and when a key is missing', () => {
    expect(byMetric('ProviderClientRejected')).toMatchObject({ ...keeper, Threshold: 1 });
    expect(byMetric('KeyUnavailable')).toMatchObject({ ...keeper, Threshold: 1 });
  });

  it("fire when a provider's settings fail their MAC check (changed in the table)", () => {
    expect(byMetric('ProviderIntegrityFailed')).toMatchObject({
      ...keeper,
      Statistic: 'Sum',
      Period: 300,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
  });

  it("fire when a provider's circuit opens; the dashboard breaks it down per provider", () => {
    expect(byMetric('ProviderCircuitOpen')).toMatchObject({
      ...keeper,
      Statistic: 'Sum',
      Period: 300,
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
  });

  it('fire on API 5xx responses', () => {
    const [apiId] = only(template, 'AWS::ApiGatewayV2::Api');
    expect(byMetric('5xx')).toMatchObject({
      Namespace: 'AWS/ApiGateway',
      Dimensions: [{ Name: 'ApiId', Value: { Ref: apiId } }],
      Statistic: 'Sum',
      Threshold: 5,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
  });

  it('e-mail the address from context, and nobody by default', () => {
    template.resourceCountIs('AWS::SNS::Subscription', 0);
    const { template: t } = synth({ alarmEmail: 'ops@example.com' });
    t.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com' });
  });

  it('go to a topic that refuses unencrypted publishing', () => {
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      },
    });
  });
});

describe('dashboard', () => {
  const { widgets } = dashboardBody(template);
  type Widget = { type: string; properties: { title?: string; metrics?: unknown[][]; alarms?: unknown[] } };
  const graphs = (widgets as unknown as Widget[]).filter((w) => w.type === 'metric');
  const metricNames = (w: Widget) =>
    (w.properties.metrics ?? []).map((m) => m.find((part, i) => i === 1 && typeof part === 'string'));

  it("shows the sweep's due, refreshed and failed side by side in one graph", () => {
    const sweep = graphs.find((w) => w.properties.title === 'Sweep: due / refreshed / failed') as Widget;
    expect(sweep).toBeDefined();
    expect(metricNames(sweep)).toEqual(expect.arrayContaining(['Due', 'Refreshed', 'FailedTransient']));
  });

  it('graphs every alarmed metric and every keeper metric', () => {
    const shown = new Set(graphs.flatMap(metricNames));
    for (const name of [
      'Due',
      'Refreshed',
      'Skipped',
      'FailedTransient',
      'ReauthorizationRequired',
      'Missed',
      'Backlog',
      'SweepDuration',
      'ProviderClientRejected',
      'ProviderCircuitOpen',
      'KeyUnavailable',
      'ProviderIntegrityFailed',
      'TokensServed',
      'OnDemandRefreshes',
      'TokenLatency',
      'Errors',
      'Invocations',
      'ApproximateNumberOfMessagesVisible',
      '5xx',
    ]) {
      expect(shown, name).toContain(name);
    }
  });

  it('breaks the opened circuits down per provider (the metric carries a providerId dimension)', () => {
    const widget = graphs.find(
      (w) => w.properties.title === 'Provider circuits opened, per provider',
    ) as Widget;
    expect(widget).toBeDefined();
    expect(JSON.stringify(widget.properties.metrics)).toContain('{TokenKeeper,service,providerId}');
    expect(JSON.stringify(widget.properties.metrics)).toContain('ProviderCircuitOpen');
  });

  it('shows the state of every alarm', () => {
    const status = (widgets as unknown as Widget[]).find((w) => w.type === 'alarm') as Widget;
    expect(status.properties.alarms).toHaveLength(13);
  });
});

describe('outputs', () => {
  it('publish the API URL, the table name and the dashboard', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(Object.keys(outputs)).toEqual(
      expect.arrayContaining(['ApiUrl', 'TableName', 'DashboardName', 'DashboardUrl', 'AlarmTopicArn']),
    );
    expect(JSON.stringify(outputs.ApiUrl?.Value)).toContain('.execute-api.');
    expect(outputs.TableName?.Value).toEqual({ Ref: expect.stringMatching(/^SessionsTable/) });
  });
});

describe('stack', () => {
  it('is a plain Stack with nothing account-specific baked in', () => {
    expect(Stack.isStack(stack)).toBe(true);
    expect(JSON.stringify(template.toJSON())).not.toMatch(/\b\d{12}\b/);
  });
});
