import * as oauth from 'oauth4webapi';
import { DiscoveryFailedError, InvalidRequestError } from '../errors.js';
import type { ProviderConfig } from '../model.js';
import type { OAuthClient } from '../oauth/client.js';

/**
 * The authorization request: which authorization server a provider uses, whether a redirect target
 * is allowed, and the URL the user is sent to (PKCE S256, state, RFC 8707 resource).
 */

/**
 * True when `candidate` matches an allow-list entry: an entry without a path (or with `/`) allows
 * its whole origin; any other entry is a prefix that must end at a path boundary (`/`, `?`, or the
 * end), so `https://a.example/cb` does not allow `https://a.example/cbevil`.
 */
export function redirectAllowed(candidate: string, allowList: readonly string[]): boolean {
  let url: URL;
  try {
    url = new URL(candidate);
  } catch {
    return false;
  }
  if (url.username !== '' || url.password !== '' || url.hash !== '' || candidate.includes('#')) return false;
  for (const entry of allowList) {
    let allowed: URL;
    try {
      allowed = new URL(entry);
    } catch {
      continue;
    }
    if (allowed.origin !== url.origin) continue;
    if (allowed.pathname === '/' && allowed.search === '') return true;
    const prefix = allowed.href;
    const href = url.href;
    if (href === prefix) return true;
    if (!href.startsWith(prefix)) continue;
    const next = href.charAt(prefix.length);
    if (prefix.endsWith('/') || next === '/' || next === '?') return true;
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
