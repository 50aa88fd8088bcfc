import { DiscoveryFailedError } from '../errors.js';
import { checkProviderUrl } from '../oauth/net-guard.js';
import { jsonObject, type OutboundDeps, request } from './http.js';

/**
 * MCP server discovery, as the MCP authorization specification asks: the protected resource
 * metadata (RFC 9728) named by the server's 401 challenge or found at its well-known URLs, then the
 * first authorization server's metadata (RFC 8414, then OpenID discovery). Each failed step is a
 * DiscoveryFailedError whose message says which step and why.
 */

export interface DiscoveryDeps extends OutboundDeps {
  allowInsecureHttp: boolean;
}

export interface ProtectedResource {
  /** The document's `resource`, verbatim: sent as the RFC 8707 resource indicator. */
  resource: string;
  authorizationServers: string[];
  scopesSupported?: string[];
  /** Where the document was found. */
  metadataUrl: string;
}

export interface AuthorizationServerMetadata {
  issuer: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  revocationEndpoint?: string;
  registrationEndpoint?: string;
  scopesSupported?: string[];
  clientIdMetadataDocumentSupported: boolean;
  issParameterSupported: boolean;
  tokenEndpointAuthMethods?: string[];
}

/**
 * A URL in the canonical form the MCP specification compares resources in: scheme and host in lower
 * case (the URL parser does that), default port dropped, no fragment; the path as given, except that
 * an empty path and `/` are the same.
 */
export function canonicalResource(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  url.hash = '';
  return url.href;
}

/** The `resource_metadata` URL from a `WWW-Authenticate: Bearer …` challenge, if any. */
export function resourceMetadataFromChallenge(header: string | null): string | undefined {
  if (!header || !/(?:^|,)\s*bearer(?:\s|$)/iu.test(header)) return undefined;
  const match = /(?:^|[\s,])resource_metadata\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/iu.exec(header);
  if (!match) return undefined;
  return (match[1] ?? match[2] ?? '').replace(/\\(.)/gu, '$1') || undefined;
}

/** `/.well-known/<name>` with the URL's path inserted after it (RFC 8414 §3.1, RFC 9728 §3.1). */
function pathInserted(url: URL, name: string): string {
  const path = url.pathname === '/' ? '' : url.pathname.replace(/\/$/u, '');
  return `${url.origin}/.well-known/${name}${path}`;
}

function stringArray(value: unknown): string[] | undefined {
  return Array.isArray(value) && value.every((v) => typeof v === 'string') ? (value as string[]) : undefined;
}

function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return 'the URL';
  }
}

/**
 * Step 1: the protected resource metadata. An unauthenticated MCP request first; a 401 naming
 * `resource_metadata` decides where the document is. Otherwise the path-inserted well-known URL,
 * then the root one. The document's `resource` must be the server URL (a mix-up defence).
 */
export async function discoverProtectedResource(
  mcpServerUrl: string,
  deps: DiscoveryDeps,
  by?: number,
): Promise<ProtectedResource> {
  const expected = canonicalResource(mcpServerUrl);
  if (expected === undefined) throw new DiscoveryFailedError('mcpServerUrl: must be an absolute URL');
  const probe = await request(
    deps,
    mcpServerUrl,
    {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: {
          protocolVersion: '2025-06-18',
          capabilities: {},
          clientInfo: { name: 'tokenkeeper', version: '1' },
        },
      }),
    },
    'MCP server',
    by,
    // Only the status and the challenge matter; a stream the server may open is not read.
    { body: false },
  );
  const fromChallenge =
    probe.status === 401 ? resourceMetadataFromChallenge(probe.headers.get('www-authenticate')) : undefined;

  const server = new URL(mcpServerUrl);
  const candidates = fromChallenge
    ? [new URL(fromChallenge, mcpServerUrl).href]
    : [
        ...new Set([
          pathInserted(server, 'oauth-protected-resource'),
          `${server.origin}/.well-known/oauth-protected-resource`,
        ]),
      ];
  const misses: string[] = [];
  for (const url of candidates) {
    const problem = checkProviderUrl(url, deps);
    if (problem) throw new DiscoveryFailedError(`protected resource metadata URL ${problem}`);
    const answer = await request(
      deps,
      url,
      { method: 'GET', headers: { accept: 'application/json' } },
      'protected resource metadata',
      by,
    );
    if (answer.status !== 200) {
      misses.push(`${describeUrl(url)} answered HTTP ${answer.status}`);
      continue;
    }
    const doc = jsonObject(answer, `protected resource metadata at ${describeUrl(url)}`);
    if (typeof doc.resource !== 'string' || canonicalResource(doc.resource) !== expected) {
      throw new DiscoveryFailedError(
        `protected resource metadata at ${describeUrl(url)} names resource ` +
          `${typeof doc.resource === 'string' ? JSON.stringify(doc.resource.slice(0, 200)) : '(none)'}, ` +
          `not the MCP server URL ${JSON.stringify(expected)}`,
      );
    }
    const servers = stringArray(doc.authorization_servers);
    if (!servers || servers.length === 0) {
      throw new DiscoveryFailedError(
        `protected resource metadata at ${describeUrl(url)} lists no authorization_servers`,
      );
    }
    return {
      resource: doc.resource,
      authorizationServers: servers,
      scopesSupported: stringArray(doc.scopes_supported),
      metadataUrl: url,
    };
  }
  throw new DiscoveryFailedError(
    `no protected resource metadata: ${
      probe.status === 401 ? 'the MCP server answered 401 without resource_metadata, and ' : ''
    }${misses.join('; ')}`,
  );
}

/**
 * Step 2: the authorization server's metadata. RFC 8414 (path-inserted) first, then OpenID
 * discovery (path-inserted, then appended). `issuer` must match exactly, the endpoints must be
 * usable URLs, and `code_challenge_methods_supported` must list S256.
 */
export async function discoverAuthorizationServer(
  issuer: string,
  deps: DiscoveryDeps,
  by?: number,
): Promise<AuthorizationServerMetadata> {
  const issuerProblem = checkProviderUrl(issuer, deps);
  if (issuerProblem) throw new DiscoveryFailedError(`authorization server ${issuerProblem}`);
  const url = new URL(issuer);
  const hasPath = url.pathname !== '/' && url.pathname !== '';
  const candidates = [
    pathInserted(url, 'oauth-authorization-server'),
    ...(hasPath ? [pathInserted(url, 'openid-configuration')] : []),
    `${issuer.replace(/\/$/u, '')}/.well-known/openid-configuration`,
  ];
  const misses: string[] = [];
  for (const candidate of candidates) {
    const answer = await request(
      deps,
      candidate,
      { method: 'GET', headers: { accept: 'application/json' } },
      'authorization server metadata',
      by,
    );
    if (answer.status !== 200) {
      misses.push(`${describeUrl(candidate)} answered HTTP ${answer.status}`);
      continue;
    }
    const what = `authorization server metadata at ${describeUrl(candidate)}`;
    const doc = jsonObject(answer, what);
    if (doc.issuer !== issuer) {
      throw new DiscoveryFailedError(
        `${what} names issuer ${typeof doc.issuer === 'string' ? JSON.stringify(doc.issuer.slice(0, 200)) : '(none)'}, not ${JSON.stringify(issuer)}`,
      );
    }
    const endpoint = (field: string, required: boolean): string | undefined => {
      const value = doc[field];
      if (value === undefined && !required) return undefined;
      if (typeof value !== 'string') throw new DiscoveryFailedError(`${what} has no ${field}`);
      const problem = checkProviderUrl(value, deps);
      if (problem) throw new DiscoveryFailedError(`${what}: ${field} ${problem}`);
      return value;
    };
    const authorizationEndpoint = endpoint('authorization_endpoint', true) as string;
    const tokenEndpoint = endpoint('token_endpoint', true) as string;
    const methods = stringArray(doc.code_challenge_methods_supported);
    if (!methods?.includes('S256')) {
      throw new DiscoveryFailedError(
        `${what} does not list S256 in code_challenge_methods_supported; PKCE with S256 is required`,
      );
    }
    return {
      issuer,
      authorizationEndpoint,
      tokenEndpoint,
      revocationEndpoint: endpoint('revocation_endpoint', false),
      registrationEndpoint: endpoint('registration_endpoint', false),
      scopesSupported: stringArray(doc.scopes_supported),
      clientIdMetadataDocumentSupported: doc.client_id_metadata_document_supported === true,
      issParameterSupported: doc.authorization_response_iss_parameter_supported === true,
      tokenEndpointAuthMethods: stringArray(doc.token_endpoint_auth_methods_supported),
    };
  }
  throw new DiscoveryFailedError(`no authorization server metadata for ${issuer}: ${misses.join('; ')}`);
}
