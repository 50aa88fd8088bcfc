import { afterEach, describe, expect, it, vi } from 'vitest';
import { createTelemetry } from '../../functions/shared/powertools.js';

/** EMF documents written to stdout while `run` runs. */
function emfDocuments(run: () => void): Record<string, unknown>[] {
  const out: string[] = [];
  const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  try {
    run();
  } finally {
    write.mockRestore();
  }
  return out
    .flatMap((chunk) => chunk.split('\n'))
    .filter((line) => line.includes('"_aws"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('telemetry: batched token metrics', () => {
  afterEach(() => vi.restoreAllMocks());

  it('publishes the first, then holds token-request metrics back until maxAgeMs after the last publish', () => {
    let t = 1_000_000;
    const telemetry = createTelemetry(
      { serviceName: 'tokenkeeper' },
      { batching: { names: ['TokensServed', 'TokenLatency'], maxAgeMs: 60_000, now: () => t } },
    );
    const request = (latency: number) => {
      telemetry.metrics.add('TokensServed', 'Count', 1);
      telemetry.metrics.add('TokenLatency', 'Milliseconds', latency);
      telemetry.flush();
    };
    const first = emfDocuments(() => request(1));
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({ TokensServed: 1, TokenLatency: 1 });
    const early = emfDocuments(() => {
      for (let i = 2; i <= 6; i++) {
        t += 10_000;
        request(i);
      }
    });
    expect(early).toEqual([]);
    const later = emfDocuments(() => {
      t += 10_000;
      request(7);
    });
    expect(later).toHaveLength(1);
    expect(later[0]).toMatchObject({ TokensServed: [1, 1, 1, 1, 1, 1], TokenLatency: [2, 3, 4, 5, 6, 7] });
  });

  it('publishes at once, held-back values included, when any other metric is added', () => {
    const telemetry = createTelemetry(
      { serviceName: 'tokenkeeper' },
      { batching: { names: ['TokensServed', 'TokenLatency'], maxAgeMs: 60_000, now: () => 5 } },
    );
    const docs = emfDocuments(() => {
      for (let i = 0; i < 3; i++) {
        telemetry.metrics.add('TokensServed', 'Count', 1);
        telemetry.flush();
      }
      telemetry.metrics.add('TokensServed', 'Count', 1);
      telemetry.metrics.add('OnDemandRefreshes', 'Count', 1);
      telemetry.flush();
    });
    // The first request's document, then the urgent one with the two held back and its own.
    expect(docs).toHaveLength(2);
    expect(docs[1]).toMatchObject({ TokensServed: [1, 1, 1], OnDemandRefreshes: 1 });
  });

  it('never holds more than 100 values of a metric: Powertools publishes the full document itself', () => {
    const telemetry = createTelemetry(
      { serviceName: 'tokenkeeper' },
      { batching: { names: ['TokensServed'], maxAgeMs: 60_000, now: () => 5 } },
    );
    const docs = emfDocuments(() => {
      for (let i = 0; i < 151; i++) {
        telemetry.metrics.add('TokensServed', 'Count', 1);
        telemetry.flush();
      }
    });
    // The first request's own document, then one of 100 values; the last 50 are still held back.
    expect(docs).toHaveLength(2);
    expect(docs[1]?.TokensServed).toHaveLength(100);
  });

  it('without batching, every flush publishes what was added', () => {
    const telemetry = createTelemetry({ serviceName: 'tokenkeeper' });
    const docs = emfDocuments(() => {
      telemetry.metrics.add('TokensServed', 'Count', 1);
      telemetry.flush();
      telemetry.metrics.add('TokensServed', 'Count', 1);
      telemetry.flush();
    });
    expect(docs).toHaveLength(2);
  });
});
