import {
  ArnFormat,
  CfnOutput,
  Duration,
  RemovalPolicy,
  Stack,
  type StackProps,
  Validations,
} from 'aws-cdk-lib';
import type { CfnTable } from 'aws-cdk-lib/aws-dynamodb';
import { EventBus } from 'aws-cdk-lib/aws-events';
import { type IGrantable, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { LogGroup } from 'aws-cdk-lib/aws-logs';
import type { Construct } from 'constructs';
import {
  API_FUNCTION_TIMEOUT_SECONDS,
  functionEnvironment,
  refreshFunctionTimeoutSeconds,
  type TokenKeeperConfig,
} from './config.js';
import { KeeperFunction } from './keeper-function.js';
import { KeyringSecret } from './keyring-secret.js';
import { Monitoring } from './monitoring.js';
import { RefreshFanOut } from './refresh-fanout.js';
import { RefreshSchedule } from './refresh-schedule.js';
import { SessionsTable } from './sessions-table.js';
import { TokenApi } from './token-api.js';

/** DynamoDB actions each function's code path uses (see functions/core/store/store.ts); nothing else. */
export const REFRESH_TABLE_ACTIONS = [
  'dynamodb:GetItem',
  'dynamodb:Query',
  // (the latest sweep's summary is an UpdateItem too)
  'dynamodb:UpdateItem',
] as const;
/** The dispatcher reads the due index and starts the sweep's record (an UpdateItem). */
export const DISPATCH_TABLE_ACTIONS = ['dynamodb:Query', 'dynamodb:UpdateItem'] as const;
export const API_TABLE_ACTIONS = [
  'dynamodb:GetItem',
  'dynamodb:Query',
  // GET /v1/sessions and GET /v1/providers: bounded, paginated Scans (functions/core/store/store.ts)
  'dynamodb:Scan',
  'dynamodb:PutItem',
  'dynamodb:UpdateItem',
  'dynamodb:DeleteItem',
] as const;

/** Domain events go to the account's default bus. */
export const EVENT_BUS_NAME = 'default';

export interface TokenKeeperStackProps extends StackProps {
  readonly config: TokenKeeperConfig;
}

/**
 * tokenkeeper on AWS: the sessions table and keyring, the refresh and API functions, the schedule,
 * the SigV4 HTTP API, and the alarms and dashboard.
 */
export class TokenKeeperStack extends Stack {
  readonly refreshFunction: KeeperFunction;
  readonly dispatchFunction: KeeperFunction;
  readonly apiFunction: KeeperFunction;
  readonly fanOut: RefreshFanOut;

  constructor(scope: Construct, id: string, props: TokenKeeperStackProps) {
    super(scope, id, props);
    const { config } = props;
    const removalPolicy = config.removalPolicy === 'destroy' ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN;

    const { table } = new SessionsTable(this, 'Sessions', {
      removalPolicy,
      provisioned: config.billingMode === 'provisioned' ? config : undefined,
    });
    const keyring = new KeyringSecret(this, 'Keyring', { removalPolicy });
    const bus = EventBus.fromEventBusName(this, 'Bus', EVENT_BUS_NAME);

    const environment = functionEnvironment(config, {
      tableName: table.tableName,
      keyringSecretArn: keyring.secret.secretArn,
      eventBusName: EVENT_BUS_NAME,
      // Client secrets by ARN must be in this account (and region), the only ones the grant covers.
      accountId: Stack.of(this).account,
    });
    const refreshTimeout = Duration.seconds(refreshFunctionTimeoutSeconds(config));

    this.refreshFunction = new KeeperFunction(this, 'Refresh', {
      entry: 'functions/refresh/handler.ts',
      description: 'tokenkeeper: refreshes the due sessions of one sweep slice (from the slice queue)',
      memorySize: 512,
      timeout: refreshTimeout,
      // API traffic must never take the concurrency the sweep's workers need.
      reservedConcurrentExecutions: config.refreshReservedConcurrency,
      environment,
      logRetention: config.logRetentionDays,
      removalPolicy,
    });
    this.dispatchFunction = new KeeperFunction(this, 'Dispatch', {
      entry: 'functions/dispatch/handler.ts',
      description: 'tokenkeeper: cuts each scheduled sweep into slices and queues them',
      memorySize: 256,
      timeout: Duration.seconds(60),
      environment,
      logRetention: config.logRetentionDays,
      removalPolicy,
    });
    this.fanOut = new RefreshFanOut(this, 'FanOut', {
      dispatcher: this.dispatchFunction.function,
      worker: this.refreshFunction.function,
      workerTimeout: refreshTimeout,
      maxConcurrency: config.sweepMaxConcurrency,
    });
    this.dispatchFunction.function.addEnvironment('TOKENKEEPER_SWEEP_QUEUE_URL', this.fanOut.queue.queueUrl);
    this.apiFunction = new KeeperFunction(this, 'ApiHandler', {
      entry: 'functions/api/handler.ts',
      description: 'tokenkeeper: providers, sessions and access tokens (HTTP API, IAM auth)',
      memorySize: 512,
      timeout: Duration.seconds(API_FUNCTION_TIMEOUT_SECONDS),
      environment,
      logRetention: config.logRetentionDays,
      removalPolicy,
    });
    // The schedule is the retry: a failed dispatch is followed by the next one, and leases make overlap harmless.
    this.dispatchFunction.function.configureAsyncInvoke({ retryAttempts: 0 });

    table.grant(this.refreshFunction.function, ...REFRESH_TABLE_ACTIONS);
    table.grant(this.dispatchFunction.function, ...DISPATCH_TABLE_ACTIONS);
    Validations.of(this.dispatchFunction).acknowledge({
      id: `AwsSolutions-IAM5[Resource::<${this.getLogicalId(table.node.defaultChild as CfnTable)}.Arn>/index/*]`,
      reason: "CDK's table grant always adds the table's indexes; the dispatcher queries byExpiry.",
    });
    table.grant(this.apiFunction.function, ...API_TABLE_ACTIONS);
    const clientSecrets = this.formatArn({
      service: 'secretsmanager',
      resource: 'secret',
      resourceName: `${config.clientSecretPrefix}*`,
      arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
    for (const f of [this.refreshFunction, this.apiFunction]) {
      keyring.grantRead(f.function);
      bus.grantPutEventsTo(f.function);
      grantClientSecrets(f.function, clientSecrets);
      Validations.of(f).acknowledge({
        id: `AwsSolutions-IAM5[Resource::<${this.getLogicalId(table.node.defaultChild as CfnTable)}.Arn>/index/*]`,
        reason:
          "CDK's table grant always adds the table's indexes; the only one is byExpiry, which the sweep queries.",
      });
      Validations.of(f).acknowledge({
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:<AWS::AccountId>:secret:${config.clientSecretPrefix}*]`,
        reason: `Provider client secrets are named ${config.clientSecretPrefix}...; secret ARNs end in a random suffix, so only a name prefix can scope them.`,
      });
    }

    const schedule = new RefreshSchedule(this, 'Schedule', {
      target: this.dispatchFunction.function,
      period: Duration.seconds(config.refreshIntervalSeconds),
    });

    const accessLogs = new LogGroup(this, 'ApiAccessLogs', {
      retention: config.logRetentionDays,
      removalPolicy,
    });
    const api = new TokenApi(this, 'TokenApi', {
      handler: this.apiFunction.function,
      throttle: { rateLimit: config.apiThrottleRateLimit, burstLimit: config.apiThrottleBurstLimit },
      accessLogs,
    });

    // The OAuth callback's base: a custom domain from context, else the API's own URL. Only the API
    // function reads it; the function depends on the API, the API (routes aside) not on the function.
    if (config.publicUrl === undefined) {
      this.apiFunction.function.addEnvironment('TOKENKEEPER_PUBLIC_URL', api.api.apiEndpoint);
    }

    const monitoring = new Monitoring(this, 'Monitoring', {
      refreshFunction: this.refreshFunction.function,
      dispatchFunction: this.dispatchFunction.function,
      apiFunction: this.apiFunction.function,
      schedule: schedule.rule,
      deadLetterQueue: schedule.deadLetterQueue,
      sliceQueue: this.fanOut.queue,
      sliceDeadLetterQueue: this.fanOut.deadLetterQueue,
      api: api.api,
      refreshPeriod: Duration.seconds(config.refreshIntervalSeconds),
      sweepBudget: Duration.seconds(config.sweepBudgetSeconds),
      refreshTimeout,
      reauthAlarmThreshold: config.reauthAlarmThreshold,
      api5xxAlarmThreshold: config.api5xxAlarmThreshold,
      alarmEmail: config.alarmEmail,
    });

    new CfnOutput(this, 'ApiUrl', {
      value: api.url,
      description: 'Base URL of the HTTP API (SigV4, service execute-api)',
    });
    new CfnOutput(this, 'ApiArn', {
      value: api.api.arnForExecuteApi(),
      description: 'execute-api ARN pattern for a backend role policy (narrow it per route as needed)',
    });
    new CfnOutput(this, 'TableName', { value: table.tableName, description: 'Sessions table' });
    new CfnOutput(this, 'KeyringSecretArn', {
      value: keyring.secret.secretArn,
      description: 'Token-encryption keyring',
    });
    new CfnOutput(this, 'AlarmTopicArn', {
      value: monitoring.topic.topicArn,
      description: 'Alarm notifications',
    });
    new CfnOutput(this, 'DashboardName', {
      value: monitoring.dashboard.dashboardName,
      description: 'CloudWatch dashboard',
    });
    new CfnOutput(this, 'DashboardUrl', {
      value: monitoring.dashboardUrl,
      description: 'CloudWatch dashboard',
    });
  }
}

/** secretsmanager:GetSecretValue on the provider client secrets the operator names under the prefix. */
function grantClientSecrets(grantee: IGrantable, secretArnPattern: string): void {
  grantee.grantPrincipal.addToPrincipalPolicy(
    new PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: [secretArnPattern] }),
  );
}
