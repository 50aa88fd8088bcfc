import * as oauth from 'oauth4webapi';
import { DiscoveryFailedError, InvalidRequestError } from '../errors.js';
import type { ProviderConfig } from '../model.js';
import type { OAuthClient } from '../oauth/client.js';

/**
 * The authorization request: which authorization server a provider uses, whether a redirect target
 * is allowed, and the URL the user is sent to (PKCE S256, state, RFC 8707 resource).
 */

/** Path spellings a server may read as another path: an encoded `/`, `\` or `.`, a `;` parameter, a raw `\`. */
const CONFUSING_PATH = /%2f|%5c|%2e|;|\\/iu;

/**
 * True when `candidate` matches an allow-list entry. An entry that ends in `/` is a prefix: it allows
 * every path under it (`https://app.example.com/oauth/` allows `/oauth/done`); any other entry
 * allows its own path only (`https://app.example.com/cb`, not `/cb/more` nor `/cbevil`; a bare
 * origin allows `/` only). Either way the scheme, host and port must be the same, the candidate may
 * add a query but no fragment or credentials, and a path containing `%2f`, `%5c`, `%2e` (any case),
 * `;` or `\` is refused, since the page behind it may read it as another path.
 */
export function redirectAllowed(candidate: string, allowList: readonly string[]): boolean {
  let url: URL;
  try {
    url = new URL(candidate);
  } catch {
    return false;
  }
  if (url.username !== '' || url.password !== '' || url.hash !== '' || candidate.includes('#')) return false;
  // As written (the URL parser resolves `%2e%2e` segments and turns `\` into `/`) and as parsed.
  const writtenPath = candidate.split('?', 1)[0] as string;
  if (CONFUSING_PATH.test(writtenPath) || CONFUSING_PATH.test(url.pathname)) return false;
  for (const entry of allowList) {
    let allowed: URL;
    try {
      allowed = new URL(entry);
    } catch {
      continue;
    }
    if (allowed.origin !== url.origin) continue;
    if (entry.endsWith('/') ? url.pathname.startsWith(allowed.pathname) : url.pathname === allowed.pathname) {
      return true;
    }
  }
  return false;
}

/**
 * The provider's authorization server as oauth4webapi wants it: from what discovery stored (MCP
 * providers), or the issuer's metadata (discovered and cached by the OAuth client).
 */
export async function authorizationServerFor(
  provider: ProviderConfig,
  client: Pick<OAuthClient, 'authorizationServer'>,
  by?: number,
): Promise<oauth.AuthorizationServer> {
  if (provider.authorizationEndpoint !== undefined && provider.tokenEndpoint !== undefined) {
    return {
      issuer: provider.issuer ?? new URL(provider.tokenEndpoint).origin,
      authorization_endpoint: provider.authorizationEndpoint,
      token_endpoint: provider.tokenEndpoint,
      revocation_endpoint: provider.revocationEndpoint,
      authorization_response_iss_parameter_supported: provider.issParameterSupported === true,
    };
  }
  if (provider.issuer === undefined) {
    throw new InvalidRequestError(
      'the provider has no issuer to discover an authorization endpoint from; register it by issuer or mcpServerUrl',
    );
  }
  if (provider.tokenEndpoint !== undefined) {
    throw new InvalidRequestError(
      'the provider is registered with a tokenEndpoint, so its authorization endpoint is unknown; register it by issuer or mcpServerUrl',
    );
  }
  try {
    return await client.authorizationServer(provider, by);
  } catch {
    throw new DiscoveryFailedError(`authorization server metadata of ${provider.issuer} could not be read`);
  }
}

export interface AuthorizationRequest {
  as: oauth.AuthorizationServer;
  clientId: string;
  callbackUrl: string;
  state: string;
  codeVerifier: string;
  scope?: string;
  resource?: string;
}

export async function authorizationUrl(r: AuthorizationRequest): Promise<string> {
  if (typeof r.as.authorization_endpoint !== 'string') {
    throw new InvalidRequestError(
      'the provider’s authorization server metadata has no authorization_endpoint',
    );
  }
  const url = new URL(r.as.authorization_endpoint);
  const params = url.searchParams;
  params.set('response_type', 'code');
  params.set('client_id', r.clientId);
  params.set('redirect_uri', r.callbackUrl);
  if (r.scope !== undefined && r.scope !== '') params.set('scope', r.scope);
  params.set('state', r.state);
  params.set('code_challenge', await oauth.calculatePKCECodeChallenge(r.codeVerifier));
  params.set('code_challenge_method', 'S256');
  if (r.resource !== undefined) params.set('resource', r.resource);
  return url.href;
}
