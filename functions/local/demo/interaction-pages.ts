import type { IncomingMessage, ServerResponse } from 'node:http';
import type { default as ProviderClass } from 'oidc-provider';

/**
 * The demo provider's own sign-in and consent pages (in place of oidc-provider's development pages,
 * which load a web font from another host): plain HTML with system fonts, nothing from another
 * origin (their CSP allows nothing but their own inline style). Any login and password sign in.
 */

export const INTERACTION_PREFIX = '/interaction/';

const PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";
const STYLE =
  'body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;background:#f6f7f9;color:#1b1f24;margin:2rem}' +
  'main{max-width:22rem;margin:0 auto;background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:1rem 1.4rem}' +
  'h1{font-size:1.4rem}label{display:block;margin:.6rem 0 .2rem}input{width:100%;box-sizing:border-box;padding:.4rem;font:inherit}' +
  'button{margin-top:1rem;padding:.45rem 1rem;font:inherit;background:#0b5cad;color:#fff;border:0;border-radius:4px;cursor:pointer}' +
  '.subtle{color:#57606a;font-size:.9rem}';

export const escapeHtml = (s: string) => s.replace(/[&<>"']/gu, (c) => `&#${c.charCodeAt(0)};`);

export const PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': PAGE_CSP,
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
} as const;

export function pageHtml(title: string, body: string): string {
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${escapeHtml(title)}</title><style>${STYLE}</style></head><body><main>${body}</main></body></html>`
  );
}

function htmlPage(res: ServerResponse, status: number, title: string, body: string): void {
  res.writeHead(status, PAGE_HEADERS);
  res.end(pageHtml(title, body));
}

async function formBody(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 16_384) throw new Error('form too large');
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** Answers /interaction/{uid} (GET: the page) and /interaction/{uid}/{login|confirm} (POST); false for other paths. */
export async function interactionPages(
  provider: ProviderClass,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<boolean> {
  const path = (req.url ?? '/').split('?')[0] as string;
  if (!path.startsWith(INTERACTION_PREFIX)) return false;
  const [uid, action] = path.slice(INTERACTION_PREFIX.length).split('/');
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new Error('interaction mismatch');
    const base = `${INTERACTION_PREFIX}${encodeURIComponent(details.uid)}`;
    if (req.method === 'GET' && action === undefined) {
      const client = escapeHtml(String(details.params.client_id ?? 'an application'));
      if (details.prompt.name === 'login') {
        htmlPage(
          res,
          200,
          'Sign-in',
          `<h1>Sign-in</h1><p class="subtle">Demo provider: any login and password.</p>` +
            `<form method="post" action="${base}/login" autocomplete="off">` +
            `<label for="login">Login</label><input id="login" name="login" required autofocus>` +
            `<label for="password">Password</label><input id="password" name="password" type="password" required>` +
            `<button type="submit">Sign-in</button></form>`,
        );
      } else {
        htmlPage(
          res,
          200,
          'Authorize',
          `<h1>Authorize</h1><p><code>${client}</code> asks to act for you at the demo MCP server ` +
            `(<code>${escapeHtml(String(details.params.scope ?? ''))}</code>).</p>` +
            `<form method="post" action="${base}/confirm"><button type="submit" autofocus>Continue</button></form>`,
        );
      }
      return true;
    }
    if (req.method === 'POST' && action === 'login' && details.prompt.name === 'login') {
      const login = (await formBody(req)).get('login')?.trim();
      if (!login) {
        htmlPage(res, 400, 'Sign-in', '<h1>Sign-in</h1><p>A login is needed.</p>');
        return true;
      }
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: login } },
        { mergeWithLastSubmission: false },
      );
      return true;
    }
    if (req.method === 'POST' && action === 'confirm' && details.prompt.name === 'consent') {
      await formBody(req);
      const grantId = await grantConsent(provider, details);
      await provider.interactionFinished(
        req,
        res,
        { consent: { grantId } },
        { mergeWithLastSubmission: true },
      );
      return true;
    }
    htmlPage(res, 405, 'Not here', '<h1>Not here</h1><p>Start the sign-in again from the console.</p>');
  } catch {
    if (!res.headersSent) {
      htmlPage(
        res,
        400,
        'Sign-in expired',
        '<h1>Sign-in expired</h1><p>Start the sign-in again from the console.</p>',
      );
    }
  }
  return true;
}

type InteractionDetails = Awaited<ReturnType<ProviderClass['interactionDetails']>>;

/** Grants what the consent prompt asks for (scopes, claims, resource scopes); returns the grant's id. */
export async function grantConsent(provider: ProviderClass, details: InteractionDetails): Promise<string> {
  const accountId = details.session?.accountId;
  if (!accountId) throw new Error('consent prompt without a signed-in account');
  const clientId = String(details.params.client_id);
  const grant =
    (details.grantId ? await provider.Grant.find(details.grantId) : undefined) ??
    new provider.Grant({ accountId, clientId });
  const missing = details.prompt.details as {
    missingOIDCScope?: string[];
    missingOIDCClaims?: string[];
    missingResourceScopes?: Record<string, string[]>;
  };
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}
