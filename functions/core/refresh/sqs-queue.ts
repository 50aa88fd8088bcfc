import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { SliceQueue, SweepSlice } from './slices.js';

/** SendMessageBatch takes at most ten entries. */
const BATCH = 10;

/**
 * The fan-out's queue in AWS: each slice is one SQS message, sent ten to a batch (the SDK retries
 * throttling and 5xx answers). Entries SQS refuses within a batch are sent once more; what is still
 * refused makes `send` throw, so the dispatcher's invocation fails and alarms — the slices left out are
 * due again at the next sweep.
 */
export class SqsSliceQueue implements SliceQueue {
  constructor(
    private readonly client: Pick<SQSClient, 'send'>,
    private readonly queueUrl: string,
  ) {}

  async send(slices: readonly SweepSlice[]): Promise<void> {
    let pending = [...slices];
    for (let attempt = 0; attempt < 2 && pending.length > 0; attempt++) {
      const batches: SweepSlice[][] = [];
      for (let i = 0; i < pending.length; i += BATCH) batches.push(pending.slice(i, i + BATCH));
      pending = (await Promise.all(batches.map((b) => this.sendBatch(b)))).flat();
    }
    if (pending.length > 0) throw new Error(`SQS refused ${pending.length} of ${slices.length} sweep slices`);
  }

  /** Sends one batch; returns the slices SQS refused. */
  private async sendBatch(batch: SweepSlice[]): Promise<SweepSlice[]> {
    const { Failed } = await this.client.send(
      new SendMessageBatchCommand({
        QueueUrl: this.queueUrl,
        Entries: batch.map((slice, i) => ({ Id: String(i), MessageBody: JSON.stringify(slice) })),
      }),
    );
    return (Failed ?? []).map((f) => batch[Number(f.Id)]).filter((s): s is SweepSlice => s !== undefined);
  }
}
