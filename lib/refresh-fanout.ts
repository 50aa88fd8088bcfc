import { Duration } from 'aws-cdk-lib';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { deadLetterQueue } from './refresh-schedule.js';

export interface RefreshFanOutProps {
  /** The dispatcher: sends each sweep's slices to the queue. */
  readonly dispatcher: IFunction;
  /** The refresh function: consumes the queue, one slice per invocation. */
  readonly worker: IFunction;
  /** The worker's timeout (the queue's visibility timeout follows from it). */
  readonly workerTimeout: Duration;
  /** Slices swept at once: the event source mapping's maximum concurrency. */
  readonly maxConcurrency: number;
  /** Deliveries of one slice before it is parked in the dead-letter queue. */
  readonly maxReceiveCount?: number;
}

/**
 * The sweep's fan-out: an SQS queue of slices between the dispatcher and the refresh function, an
 * event source mapping (batch size 1, bounded concurrency, partial batch responses) and a dead-letter
 * queue for slices that failed every delivery.
 */
export class RefreshFanOut extends Construct {
  readonly queue: Queue;
  readonly deadLetterQueue: Queue;

  constructor(scope: Construct, id: string, props: RefreshFanOutProps) {
    super(scope, id);
    this.deadLetterQueue = deadLetterQueue(this, "the sweep's slice queue");
    this.queue = new Queue(this, 'Slices', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // Lambda's guidance for SQS event sources: at least six times the function's timeout, so a slice
      // is not handed to a second worker while the first (or its throttled retries) still holds it.
      visibilityTimeout: Duration.seconds(6 * props.workerTimeout.toSeconds()),
      // A slice nobody could sweep within an hour is covered by the twelve sweeps since.
      retentionPeriod: Duration.hours(1),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: props.maxReceiveCount ?? 3 },
    });
    this.queue.grantSendMessages(props.dispatcher);
    props.worker.addEventSource(
      new SqsEventSource(this.queue, {
        batchSize: 1,
        maxConcurrency: props.maxConcurrency,
        reportBatchItemFailures: true,
      }),
    );
  }
}
