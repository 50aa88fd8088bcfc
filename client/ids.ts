/**
 * Which user and provider ids can be sent. API Gateway decodes the path before the keeper sees it,
 * so an id holding `/`, `?`, `#` or `%` would reach it as another path, and `\` is a separator to
 * some proxies; the keeper refuses these (and control characters) with 400, and the client refuses
 * them before sending. Anything else, `@ : +`, spaces and non-ASCII included, is percent-encoded.
 */

const FORBIDDEN = /[/?#%\\]/u;

/** C0, DEL and C1 control characters. */
function hasControl(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c <= 0x1f || (c >= 0x7f && c <= 0x9f)) return true;
  }
  return false;
}

export const ID_RULE = 'must not contain / ? # % \\ or control characters, nor be "." or ".."';

/** Why `value` cannot be used as the id `name`, or undefined when it can. */
export function idProblem(name: string, value: string): string | undefined {
  if (typeof value !== 'string' || value === '') return `${name} must be a non-empty string`;
  if (FORBIDDEN.test(value) || hasControl(value) || value === '.' || value === '..') {
    return `${name} ${ID_RULE}`;
  }
  return undefined;
}
