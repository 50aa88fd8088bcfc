import { ClientRegistrationUnavailableError, DiscoveryFailedError } from '../errors.js';
import type { ClientAuthMethod, ClientRegistration } from '../model.js';
import { errorCode, scrubDescription } from '../oauth/client.js';
import type { AuthorizationServerMetadata } from './discovery.js';
import { jsonObject, type OutboundDeps, request } from './http.js';

/**
 * Getting a client at an MCP server's authorization server, in the MCP specification's order:
 * a pre-registered client id, the keeper's Client ID Metadata Document, Dynamic Client Registration
 * (RFC 7591); otherwise the caller must register a client and give its id.
 */

/** Each provider has its own callback and its own client metadata document under these paths. */
export const CALLBACK_PATH = '/oauth/callback';
export const CLIENT_METADATA_PATH = '/oauth/client-metadata';
export const CLIENT_NAME = 'tokenkeeper';

export interface KeeperUrls {
  /** The keeper's public base URL, without a trailing slash; undefined when it has none. */
  publicUrl?: string;
  /** A metadata document may be served over plain http (local development and tests only). */
  allowInsecureHttp: boolean;
}

/**
 * The provider's own redirect URI. One per provider (RFC 9700 §4.4.2): an authorization server
 * sends its codes only to the callback path of the provider it serves, and the callback redeems a
 * code only for the provider its path names.
 */
export function callbackUrl(publicUrl: string, providerId: string): string {
  return `${publicUrl}${CALLBACK_PATH}/${encodeURIComponent(providerId)}`;
}

/**
 * Where the provider's client metadata document is served, when it can be (an https base URL). One
 * document per provider, so the `client_id` differs at every authorization server.
 */
export function clientMetadataUrl(urls: KeeperUrls, providerId: string): string | undefined {
  if (urls.publicUrl === undefined) return undefined;
  const secure = urls.publicUrl.startsWith('https://');
  return secure || urls.allowInsecureHttp
    ? `${urls.publicUrl}${CLIENT_METADATA_PATH}/${encodeURIComponent(providerId)}`
    : undefined;
}

/**
 * The provider's Client ID Metadata Document: the client's metadata (RFC 7591 names) at the URL that
 * is its `client_id`, listing that provider's redirect URI only. A public client: the keeper's PKCE
 * verifier protects the code.
 */
export function clientMetadataDocument(
  urls: KeeperUrls,
  providerId: string,
): Record<string, unknown> | undefined {
  const clientId = clientMetadataUrl(urls, providerId);
  if (clientId === undefined || urls.publicUrl === undefined) return undefined;
  return {
    client_id: clientId,
    client_name: CLIENT_NAME,
    client_uri: urls.publicUrl,
    redirect_uris: [callbackUrl(urls.publicUrl, providerId)],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  };
}

export interface ClientInput {
  clientId?: string;
  clientSecret?: string;
  clientAuthMethod?: ClientAuthMethod;
  scope?: string;
}

export interface RegisteredClient {
  clientId: string;
  clientSecret?: string;
  clientAuthMethod: ClientAuthMethod;
  registration: ClientRegistration;
}

const AUTH_METHODS: readonly ClientAuthMethod[] = ['client_secret_basic', 'client_secret_post', 'none'];

export async function registerClient(
  providerId: string,
  as: AuthorizationServerMetadata,
  input: ClientInput,
  urls: KeeperUrls,
  deps: OutboundDeps,
  by?: number,
): Promise<RegisteredClient> {
  if (input.clientId !== undefined) {
    const method =
      input.clientAuthMethod ?? (input.clientSecret !== undefined ? 'client_secret_basic' : 'none');
    return {
      clientId: input.clientId,
      clientSecret: input.clientSecret,
      clientAuthMethod: method,
      registration: 'preregistered',
    };
  }
  const metadataUrl = clientMetadataUrl(urls, providerId);
  if (as.clientIdMetadataDocumentSupported && metadataUrl !== undefined) {
    return { clientId: metadataUrl, clientAuthMethod: 'none', registration: 'metadata_document' };
  }
  if (as.registrationEndpoint !== undefined && urls.publicUrl !== undefined) {
    return dynamicRegistration(
      as.registrationEndpoint,
      input,
      callbackUrl(urls.publicUrl, providerId),
      deps,
      by,
    );
  }
  const why = [
    as.clientIdMetadataDocumentSupported
      ? 'it accepts client metadata documents, but the keeper has no public https URL (TOKENKEEPER_PUBLIC_URL)'
      : 'it does not accept client metadata documents',
    as.registrationEndpoint === undefined
      ? 'it has no registration_endpoint'
      : 'dynamic registration needs the keeper’s public URL (TOKENKEEPER_PUBLIC_URL)',
  ];
  throw new ClientRegistrationUnavailableError(
    `the authorization server ${as.issuer} offers no way to register the keeper (${why.join('; ')}): ` +
      `register a client there with the redirect URI ${
        urls.publicUrl === undefined
          ? `<public URL>${CALLBACK_PATH}/<providerId>`
          : callbackUrl(urls.publicUrl, providerId)
      } and give its clientId`,
  );
}

/** RFC 7591: a public client with the provider's callback; a secret is kept when the server issues one. */
async function dynamicRegistration(
  endpoint: string,
  input: ClientInput,
  redirectUri: string,
  deps: OutboundDeps,
  by?: number,
): Promise<RegisteredClient> {
  const metadata: Record<string, unknown> = {
    client_name: CLIENT_NAME,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  };
  if (input.scope !== undefined) metadata.scope = input.scope;
  const answer = await request(
    deps,
    endpoint,
    {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(metadata),
    },
    'dynamic client registration',
    by,
  );
  if (answer.status !== 201 && answer.status !== 200) {
    let detail = '';
    try {
      const body = JSON.parse(answer.text) as { error?: unknown; error_description?: unknown };
      if (typeof body.error === 'string') {
        detail = `: ${errorCode(body.error)}${
          typeof body.error_description === 'string' ? ` (${scrubDescription(body.error_description)})` : ''
        }`;
      }
    } catch {
      // not JSON: the status says enough
    }
    throw new DiscoveryFailedError(`dynamic client registration answered HTTP ${answer.status}${detail}`);
  }
  const body = jsonObject(answer, 'dynamic client registration answer');
  if (typeof body.client_id !== 'string' || body.client_id === '') {
    throw new DiscoveryFailedError('dynamic client registration answered without a client_id');
  }
  const secret =
    typeof body.client_secret === 'string' && body.client_secret !== '' ? body.client_secret : undefined;
  const answered =
    typeof body.token_endpoint_auth_method === 'string' ? body.token_endpoint_auth_method : undefined;
  let method: ClientAuthMethod;
  if (secret === undefined) method = 'none';
  else if (answered === undefined || answered === 'none') method = 'client_secret_basic';
  else if ((AUTH_METHODS as readonly string[]).includes(answered)) method = answered as ClientAuthMethod;
  else {
    throw new DiscoveryFailedError(
      `dynamic client registration chose token_endpoint_auth_method ${JSON.stringify(answered.slice(0, 64))}, which the keeper does not support`,
    );
  }
  return {
    clientId: body.client_id,
    clientSecret: secret,
    clientAuthMethod: method,
    registration: 'dynamic',
  };
}
