import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import {
  ApplicationLogLevel,
  Architecture,
  LoggingFormat,
  Runtime,
  SystemLogLevel,
} from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/** The repository root: bundling resolves entries, the lockfile and node_modules from here. */
export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The functions' runtime. Tests, benches and the local stack run on the same Node.js major (bin/check-node.ts). */
export const KEEPER_RUNTIME = Runtime.NODEJS_24_X;
/** The Node.js major of KEEPER_RUNTIME (24 for nodejs24.x). */
export const KEEPER_NODE_MAJOR = nodeMajor(KEEPER_RUNTIME.name);
export const KEEPER_ARCHITECTURE = Architecture.ARM_64;

export interface KeeperFunctionProps {
  /** Handler module relative to the repository root; it must export `handler`. */
  readonly entry: string;
  readonly description: string;
  readonly memorySize: number;
  readonly timeout: Duration;
  /** Application environment; the shared Powertools and Node.js variables are added here. */
  readonly environment: Record<string, string>;
  readonly logRetention: RetentionDays;
  readonly removalPolicy: RemovalPolicy;
  /** Concurrency reserved for this function (none when absent). */
  readonly reservedConcurrentExecutions?: number;
}

/**
 * One tokenkeeper Lambda function with the defaults every function shares: an esbuild bundle (local,
 * no Docker) of a handler in functions/, arm64, a current Node.js runtime, a log group with retention,
 * and a role that starts with nothing but writing to that log group. Callers add grants.
 */
export class KeeperFunction extends Construct {
  readonly function: NodejsFunction;
  readonly role: Role;
  readonly logGroup: LogGroup;

  constructor(scope: Construct, id: string, props: KeeperFunctionProps) {
    super(scope, id);

    this.logGroup = new LogGroup(this, 'Logs', {
      retention: props.logRetention,
      removalPolicy: props.removalPolicy,
    });

    // No AWSLambdaBasicExecutionRole: it allows creating any log group and writing to all of them.
    this.role = new Role(this, 'Role', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: `tokenkeeper ${id} function`,
    });
    this.logGroup.grantWrite(this.role);

    this.function = new NodejsFunction(this, 'Function', {
      ...logging(props.environment.POWERTOOLS_LOG_LEVEL),
      entry: join(PROJECT_ROOT, props.entry),
      handler: 'handler',
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      description: props.description,
      runtime: KEEPER_RUNTIME,
      architecture: KEEPER_ARCHITECTURE,
      memorySize: props.memorySize,
      timeout: props.timeout,
      reservedConcurrentExecutions: props.reservedConcurrentExecutions,
      role: this.role,
      logGroup: this.logGroup,
      environment: {
        POWERTOOLS_SERVICE_NAME: 'tokenkeeper',
        POWERTOOLS_METRICS_NAMESPACE: 'TokenKeeper',
        NODE_OPTIONS: '--enable-source-maps',
        ...props.environment,
      },
      bundling: {
        format: OutputFormat.ESM,
        // ESM output: let CommonJS dependencies that call require() keep working.
        banner:
          "import { createRequire as __tkCreateRequire } from 'node:module'; const require = __tkCreateRequire(import.meta.url);",
        mainFields: ['module', 'main'],
        minify: true,
        sourceMap: true,
        sourcesContent: false,
        // Bundle the AWS SDK too: the functions run the versions package-lock.json pins, not the runtime's.
        externalModules: [],
        forceDockerBundling: false,
      },
    });
    // The role must exist with its log permissions before the function can start writing.
    this.function.node.addDependency(this.role);
  }
}

/**
 * JSON logs, so Lambda can filter its own lines: at WARN it drops the START, END and REPORT lines it
 * writes for every invocation (about 330 bytes each, more than the keeper's own output per token
 * request; Lambda's Duration, Errors and Throttles metrics do not come from them). Lambda filters the
 * application's lines too, and counts a line without a level (the EMF metric documents) as INFO, so
 * the application level never goes above INFO: WARN or ERROR there would drop every metric and blind
 * the alarms. Powertools follows the level Lambda sets (AWS_LAMBDA_LOG_LEVEL).
 */
export function logging(logLevel: string | undefined) {
  return {
    loggingFormat: LoggingFormat.JSON,
    systemLogLevelV2: SystemLogLevel.WARN,
    applicationLogLevelV2: logLevel === 'DEBUG' ? ApplicationLogLevel.DEBUG : ApplicationLogLevel.INFO,
  };
}

/** The Node.js major of a Lambda runtime name such as `nodejs24.x`. */
export function nodeMajor(runtimeName: string): number {
  const match = /^nodejs(\d+)\.x$/.exec(runtimeName);
  if (!match) throw new Error(`not a Node.js Lambda runtime: ${runtimeName}`);
  return Number(match[1]);
}
