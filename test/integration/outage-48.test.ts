import { afterAll, it } from 'vitest';
import { outageScenario, reportAndCheck } from '../support/outage.js';

/**
 * Issue 11: a 40-second 503 outage with 48 sessions of one provider (see test/support/outage.ts).
 * outage-480.test.ts runs the same with 480 sessions: the load on the provider must not grow.
 */

const stops: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const stop of stops) await stop().catch(() => {});
});

it('48 sessions through a 40-second 503 outage: few requests to the provider, recovery in seconds', async () => {
  reportAndCheck(await outageScenario(48, stops));
}, 180_000);
