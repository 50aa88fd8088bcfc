import { describe, expect, it } from 'vitest';
import { loopbackRules, refusal } from '../../client/guard.js';

/** The check every local listener runs first (client/guard.ts), rule by rule. */

describe('the local listeners’ browser guard', () => {
  const keeper = loopbackRules(8787, { ownPages: true });
  const api = loopbackRules(8787, { ownPages: false });

  it('accepts its own address, with no Origin or its own origin where it serves pages', () => {
    expect(refusal({ host: '127.0.0.1:8787' }, keeper)).toBeUndefined();
    expect(refusal({ host: 'LOCALHOST:8787' }, keeper)).toBeUndefined();
    expect(refusal({ host: '127.0.0.1:8787', origin: 'http://127.0.0.1:8787' }, keeper)).toBeUndefined();
    expect(refusal({ host: 'localhost:8787', origin: 'http://localhost:8787' }, keeper)).toBeUndefined();
  });

  it('refuses any other Host (DNS rebinding), another port, and a request without Host: 421', () => {
    for (const host of [
      'rebind.evil.example:8787',
      '127.0.0.1:8788',
      '127.0.0.1',
      '0.0.0.0:8787',
      undefined,
    ]) {
      expect(refusal({ host }, keeper), String(host)).toMatchObject({
        status: 421,
        error: 'misdirected_request',
      });
    }
  });

  it('refuses another origin, an opaque origin, and any origin where it serves no page: 403', () => {
    for (const origin of [
      'https://evil.example',
      'null',
      'http://127.0.0.1:8788',
      'https://127.0.0.1:8787',
    ]) {
      expect(refusal({ host: '127.0.0.1:8787', origin }, keeper), origin).toMatchObject({
        status: 403,
        error: 'forbidden_origin',
      });
    }
    expect(refusal({ host: '127.0.0.1:8787', origin: 'http://127.0.0.1:8787' }, api)).toMatchObject({
      status: 403,
    });
  });

  it('accepts the configured public URL as a host and, where it serves pages, as an origin', () => {
    const tunnelled = loopbackRules(8787, { ownPages: true, publicUrl: 'https://Keeper.example.com' });
    expect(refusal({ host: 'keeper.example.com' }, tunnelled)).toBeUndefined();
    expect(
      refusal({ host: 'keeper.example.com', origin: 'https://keeper.example.com' }, tunnelled),
    ).toBeUndefined();
    expect(
      refusal({ host: 'keeper.example.com', origin: 'http://keeper.example.com' }, tunnelled),
    ).toMatchObject({
      status: 403,
    });
    expect(refusal({ host: 'keeper.example.com:8787' }, tunnelled)).toMatchObject({ status: 421 });
  });
});
