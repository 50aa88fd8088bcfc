import { describe, expect, it } from 'vitest';
import { plain, renderStatus } from '../../client/format.js';
import type { Session } from '../../client/types.js';

const NOW = 1_900_000_000;

function session(overrides: Partial<Session>): Session {
  return {
    userId: 'alice',
    providerId: 'p',
    status: 'active',
    expiresAt: NOW + 600,
    refreshExpiresAt: null,
    refreshMode: 'scheduled',
    refreshable: true,
    refreshedAt: NOW - 60,
    failureCount: 0,
    lastError: null,
    nextAttemptAt: null,
    ...overrides,
  };
}

describe('renderStatus', () => {
  it('an on-demand session whose short-lived token lapsed is healthy, shown as "on demand", not "expired"', () => {
    const out = renderStatus(
      'alice',
      [
        session({ providerId: 'short', refreshMode: 'on_demand', expiresAt: NOW - 40 }),
        session({ providerId: 'late', refreshMode: 'scheduled', expiresAt: NOW - 40 }),
      ],
      NOW,
      plain,
    );
    expect(out).toMatch(/^short +active +on demand /mu);
    expect(out).toMatch(/^late +active +expired /mu);
    expect(out).toContain('2 healthy');
  });
});
