import { createHash } from 'node:crypto';

/**
 * The callback's own pages, for connections started without a `redirectUri`: self-contained HTML,
 * no outside resource. The one inline style and the one inline script (which clears the spent code
 * and state from the address bar) are allowed by their hashes, nothing else is.
 */

const STYLE =
  'body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#1f2328}' +
  'h1{font-size:1.4rem}.ok{color:#1a7f37}.err{color:#cf222e}code{background:#f6f8fa;padding:0 .2rem}';

/** The one script: takes the spent code and state out of the address bar (and so out of history). */
const SCRIPT = "history.replaceState(null,'',location.pathname)";

const hash = (text: string) => createHash('sha256').update(text, 'utf8').digest('base64');

export const PAGE_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': `default-src 'none'; style-src 'sha256-${hash(STYLE)}'; script-src 'sha256-${hash(SCRIPT)}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/gu, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title: string, body: string): string {
  return (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">' +
    `<title>${escapeHtml(title)}</title><style>${STYLE}</style><script>${SCRIPT}</script></head><body>${body}</body></html>`
  );
}

export function connectedPage(userId: string, providerId: string): string {
  return page(
    'Connected',
    '<h1 class="ok">Account connected</h1>' +
      `<p>The account for <code>${escapeHtml(providerId)}</code> is connected for <code>${escapeHtml(userId)}</code>.</p>` +
      '<p>You can close this window.</p>',
  );
}

const ERROR_TEXT: Record<string, string> = {
  invalid_state:
    'This sign-in link is unknown, has expired or was already used. Start again from the application.',
  access_denied: 'Access was not granted.',
  invalid_issuer: 'The answer did not come from the expected authorization server.',
  provider_mismatch:
    'This answer arrived for another service than the one this sign-in was started for, so it was refused. Start again from the application.',
};

export function errorPage(error: string): string {
  return page(
    'Not connected',
    '<h1 class="err">The account was not connected</h1>' +
      `<p>${escapeHtml(ERROR_TEXT[error] ?? 'The authorization server did not complete the connection.')}</p>` +
      `<p>Error: <code>${escapeHtml(error)}</code></p>`,
  );
}
