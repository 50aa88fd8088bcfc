/**
 * What the core needs from the outside world. Everything here is injected, so tests can drive the
 * clock and observe logs, metrics and events without touching globals.
 */

export interface Clock {
  /** epoch milliseconds */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

export type Sleep = (ms: number) => Promise<void>;

export const realSleep: Sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The `fetch` the core makes its outbound HTTP calls with (the guarded fetch in AWS and locally). */
export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/** Structured logger; Powertools Logger satisfies it. Never pass a token or secret in `extra`. */
export interface Logger {
  debug(message: string, extra?: Record<string, unknown>): void;
  info(message: string, extra?: Record<string, unknown>): void;
  warn(message: string, extra?: Record<string, unknown>): void;
  error(message: string, extra?: Record<string, unknown>): void;
}

export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
};

export type MetricUnit = 'Count' | 'Milliseconds';

/**
 * Metrics sink; the Lambda adapters back it with Powertools Metrics (EMF). `dimensions` (e.g. the
 * providerId) add a per-dimension series next to the service-wide one.
 */
export interface Metrics {
  add(name: string, unit: MetricUnit, value: number, dimensions?: Record<string, string>): void;
}

export const noMetrics: Metrics = { add: () => {} };

export interface DomainEvent {
  detailType:
    | 'SessionReauthorizationRequired'
    | 'SessionRecovered'
    | 'SessionConnected'
    | 'ProviderUnavailable'
    | 'ProviderRecovered';
  detail: Record<string, unknown>;
}

/** Publishes domain events (EventBridge in AWS, the log locally). */
export interface EventPublisher {
  publish(event: DomainEvent): Promise<void>;
}

/** A source of randomness in [0, 1), injected for backoff jitter. */
export type Random = () => number;
