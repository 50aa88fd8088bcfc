import { Duration, Validations } from 'aws-cdk-lib';
import { Rule, Schedule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

export interface RefreshScheduleProps {
  /** The refresh function. */
  readonly target: IFunction;
  /** Schedule period; whole minutes. */
  readonly period: Duration;
  /** EventBridge delivery retries before the event goes to the dead-letter queue. */
  readonly retryAttempts?: number;
}

/**
 * A dead-letter queue: encrypted, TLS only, 14 days to look at what landed there. It has no
 * dead-letter queue of its own (cdk-nag SQS3), being one.
 */
export function deadLetterQueue(scope: Construct, of: string): Queue {
  const queue = new Queue(scope, 'DeadLetterQueue', {
    encryption: QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    retentionPeriod: Duration.days(14),
  });
  Validations.of(queue).acknowledge({
    id: 'AwsSolutions-SQS3',
    reason: `This queue is itself the dead-letter queue of ${of}.`,
  });
  return queue;
}

/**
 * The EventBridge rule that starts a sweep every period. Deliveries EventBridge cannot make (the
 * function throttled or unavailable) are retried, then parked in an SQS dead-letter queue.
 */
export class RefreshSchedule extends Construct {
  readonly rule: Rule;
  readonly deadLetterQueue: Queue;

  constructor(scope: Construct, id: string, props: RefreshScheduleProps) {
    super(scope, id);

    this.deadLetterQueue = deadLetterQueue(this, 'the refresh schedule');

    this.rule = new Rule(this, 'Rule', {
      description: 'Starts a tokenkeeper refresh sweep',
      schedule: Schedule.rate(props.period),
    });
    this.rule.addTarget(
      new LambdaFunction(props.target, {
        deadLetterQueue: this.deadLetterQueue,
        retryAttempts: props.retryAttempts ?? 2,
        // A sweep delivered after the next one is due has nothing left to do.
        maxEventAge: props.period,
      }),
    );
  }
}
