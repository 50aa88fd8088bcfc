import { describe, expect, it } from 'vitest';
import { apiGatewayTarget } from '../../functions/local/apigw-path.js';

/**
 * The local stack's emulation of what an HTTP API (payload 2.0) puts in `rawPath`, against a table
 * of request targets and the rawPath / rawQueryString that API Gateway delivers for them.
 */

const delivered: [target: string, rawPath: string, rawQueryString: string][] = [
  ['/v1/health', '/v1/health', ''],
  ['/v1/sessions/alice/github/token?minValidity=60', '/v1/sessions/alice/github/token', 'minValidity=60'],
  // Decoded before Lambda sees them.
  ['/v1/sessions/alice%40example.com', '/v1/sessions/alice@example.com', ''],
  ['/v1/sessions/team%20a/github', '/v1/sessions/team a/github', ''],
  ['/v1/sessions/a%3Ab%2Bc/github', '/v1/sessions/a:b+c/github', ''],
  ['/v1/sessions/zo%C3%AB/caf%c3%a9', '/v1/sessions/zoë/café', ''],
  ['/v1/sessions/%F0%9F%98%80/github', '/v1/sessions/😀/github', ''],
  // A raw (unencoded) UTF-8 path arrives as the same characters.
  ['/v1/sessions/é', '/v1/sessions/é', ''],
  // %2F becomes a path separator: a metadata read for id "p/token" is a token route by then.
  ['/v1/sessions/alice/p%2Ftoken', '/v1/sessions/alice/p/token', ''],
  ['/v1/sessions/a%2Fb', '/v1/sessions/a/b', ''],
  // A decoded ? ends the path; the real query string is kept, still encoded.
  ['/v1/sessions/who%3Fx/p/token', '/v1/sessions/who', ''],
  ['/v1/sessions/who%3Fx/p/token?force=true', '/v1/sessions/who', 'force=true'],
  ['/v1/sessions/a/b/token?scope=openid%20profile', '/v1/sessions/a/b/token', 'scope=openid%20profile'],
  // Double-encoded escapes are decoded twice.
  ['/v1/sessions/a%252Fb', '/v1/sessions/a/b', ''],
  ['/v1/sessions/a%2541', '/v1/sessions/aA', ''],
  ['/v1/sessions/who%253Fx/p', '/v1/sessions/who', ''],
  // %25 that does not start a second escape stays a literal %.
  ['/v1/sessions/100%25', '/v1/sessions/100%', ''],
  ['/v1/sessions/%25zz', '/v1/sessions/%zz', ''],
  // Other reserved characters.
  ['/v1/sessions/a%23b', '/v1/sessions/a#b', ''],
  ['/v1/sessions/a%5Cb', '/v1/sessions/a\\b', ''],
  ['/v1/sessions/a%00b', '/v1/sessions/a\u0000b', ''],
];

const refused: string[] = [
  '/v1/sessions/%',
  '/v1/sessions/100%',
  '/v1/sessions/%ZZ/p',
  '/v1/sessions/%4',
  '/v1/sessions/%E0%A4%A',
  '/v1/sessions/%C0%AF',
  '/v1/sessions/%ED%A0%80',
  '/v1/sessions/%FF',
];

describe('apiGatewayTarget (HTTP API rawPath emulation)', () => {
  it.each(delivered)('%s → rawPath %j, rawQueryString %j', (target, rawPath, rawQueryString) => {
    expect(apiGatewayTarget(target)).toEqual({ ok: true, rawPath, rawQueryString });
  });

  it.each(refused)('%s is refused with 400 before Lambda', (target) => {
    const result = apiGatewayTarget(target);
    expect(result).toEqual({ ok: false, status: 400, body: '{"message":"Bad Request"}' });
  });

  it('a bare % in the query string is left for the handler (only the path is decoded)', () => {
    expect(apiGatewayTarget('/v1/health?x=%')).toEqual({
      ok: true,
      rawPath: '/v1/health',
      rawQueryString: 'x=%',
    });
  });
});
