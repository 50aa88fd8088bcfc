import { randomUUID } from 'node:crypto';
import type { SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';
import type { Logger } from '../core/ports.js';
import type { SliceQueue, SweepSlice } from '../core/refresh/slices.js';

/**
 * The local stack's stand-in for SQS and the event source mapping: the dispatcher's slices become
 * SQS-shaped events handed to the same refresh handler as in Lambda, one message per event (batch
 * size 1), at most `maxConcurrency` at once. A message the handler reports as failed (or that throws)
 * is delivered again, up to `maxReceiveCount` times, then parked as a dead letter.
 */
export interface InProcessQueueOptions {
  consume: (event: SQSEvent) => Promise<SQSBatchResponse>;
  maxConcurrency: number;
  maxReceiveCount: number;
  logger: Logger;
}

interface Message {
  messageId: string;
  body: string;
  receiveCount: number;
}

export class InProcessSliceQueue implements SliceQueue {
  private readonly waiting: Message[] = [];
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];
  /** Messages given up on after `maxReceiveCount` deliveries. */
  readonly deadLetters: SweepSlice[] = [];

  constructor(private readonly o: InProcessQueueOptions) {}

  async send(slices: readonly SweepSlice[]): Promise<void> {
    for (const slice of slices) {
      this.waiting.push({ messageId: randomUUID(), body: JSON.stringify(slice), receiveCount: 0 });
    }
    this.pump();
  }

  /** Resolves once every message sent so far was consumed or dead-lettered. */
  idle(): Promise<void> {
    if (this.waiting.length === 0 && this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    while (this.inFlight < this.o.maxConcurrency && this.waiting.length > 0) {
      const message = this.waiting.shift() as Message;
      this.inFlight++;
      void this.deliver(message).finally(() => {
        this.inFlight--;
        this.pump();
        if (this.waiting.length === 0 && this.inFlight === 0) {
          const waiters = this.idleWaiters;
          this.idleWaiters = [];
          for (const wake of waiters) wake();
        }
      });
    }
  }

  private async deliver(message: Message): Promise<void> {
    message.receiveCount++;
    let failed: boolean;
    try {
      const { batchItemFailures } = await this.o.consume({ Records: [toRecord(message)] });
      failed = batchItemFailures.some((f) => f.itemIdentifier === message.messageId);
    } catch (err) {
      this.o.logger.error('sweep slice invocation failed', { error: (err as Error).name });
      failed = true;
    }
    if (!failed) return;
    if (message.receiveCount < this.o.maxReceiveCount) {
      this.waiting.push(message);
      return;
    }
    this.o.logger.error('sweep slice dead-lettered', {
      messageId: message.messageId,
      receiveCount: message.receiveCount,
    });
    try {
      this.deadLetters.push(JSON.parse(message.body) as SweepSlice);
    } catch {
      // Only slices are sent here; a body that does not parse cannot happen.
    }
  }
}

function toRecord(message: Message): SQSRecord {
  const now = String(Date.now());
  return {
    messageId: message.messageId,
    receiptHandle: message.messageId,
    body: message.body,
    attributes: {
      ApproximateReceiveCount: String(message.receiveCount),
      SentTimestamp: now,
      SenderId: 'local',
      ApproximateFirstReceiveTimestamp: now,
    },
    messageAttributes: {},
    md5OfBody: '',
    eventSource: 'aws:sqs',
    eventSourceARN: 'arn:aws:sqs:local:000000000000:tokenkeeper-sweep',
    awsRegion: 'local',
  };
}
