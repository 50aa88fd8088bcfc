import { type EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import type { DomainEvent, EventPublisher, Logger } from './ports.js';

export const EVENT_SOURCE = 'tokenkeeper';

/** Publishes domain events to an EventBridge bus (source `tokenkeeper`). */
export class EventBridgePublisher implements EventPublisher {
  constructor(
    private readonly client: EventBridgeClient,
    private readonly busName: string,
  ) {}

  async publish(event: DomainEvent): Promise<void> {
    const result = await this.client.send(
      new PutEventsCommand({
        Entries: [
          {
            Source: EVENT_SOURCE,
            DetailType: event.detailType,
            Detail: JSON.stringify(event.detail),
            EventBusName: this.busName,
          },
        ],
      }),
    );
    if ((result.FailedEntryCount ?? 0) > 0) {
      throw new Error(`EventBridge refused the event: ${result.Entries?.[0]?.ErrorCode ?? 'unknown'}`);
    }
  }
}

/** Publishes an event; a failure to publish is logged, never thrown (the state change already happened). */
export async function publishOrLog(
  events: EventPublisher,
  logger: Logger,
  event: DomainEvent,
): Promise<void> {
  try {
    await events.publish(event);
  } catch (err) {
    logger.error('event could not be published', {
      detailType: event.detailType,
      reason: (err as Error).name,
    });
  }
}

/** Locally, events are written to the log. */
export class LogEventPublisher implements EventPublisher {
  constructor(private readonly logger: Logger) {}

  async publish(event: DomainEvent): Promise<void> {
    this.logger.info(`event ${event.detailType}`, {
      source: EVENT_SOURCE,
      detailType: event.detailType,
      detail: event.detail,
    });
  }
}
