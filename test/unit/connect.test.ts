import { describe, expect, it } from 'vitest';
import { parseAuthorizeBody, parseMcpProviderBody } from '../../functions/api/validation.js';
import { redirectAllowed } from '../../functions/core/connect/authorize.js';
import {
  type AuthorizationServerMetadata,
  canonicalResource,
  type DiscoveryDeps,
  discoverAuthorizationServer,
  discoverProtectedResource,
  resourceMetadataFromChallenge,
} from '../../functions/core/connect/discovery.js';
import { MAX_DOCUMENT_BYTES } from '../../functions/core/connect/http.js';
import { clientMetadataDocument, registerClient } from '../../functions/core/connect/registration.js';
import { ClientRegistrationUnavailableError, DiscoveryFailedError } from '../../functions/core/errors.js';
import type { FetchLike } from '../../functions/core/ports.js';

/**
 * The connect flow's pure parts and its discovery rules, with `fetch` injected: which URLs are
 * tried in which order, what is refused and how it is described. The whole flow against real
 * servers is test/integration/connect.test.ts.
 */

type Route = (init: RequestInit) => Response;

/** A fetch that answers from a table of URLs and records what was asked; anything else is a 404. */
function scripted(routes: Record<string, Route>): { fetch: FetchLike; asked: string[] } {
  const asked: string[] = [];
  const fetch: FetchLike = async (input, init = {}) => {
    const url = String(input);
    asked.push(`${init.method ?? 'GET'} ${url}`);
    const route = routes[url];
    return route ? route(init) : new Response('{}', { status: 404 });
  };
  return { fetch, asked };
}

const json =
  (body: unknown, init: ResponseInit = {}) =>
  () =>
    new Response(JSON.stringify(body), {
      status: 200,
      headers: { 'content-type': 'application/json' },
      ...init,
    });

function deps(fetch: FetchLike): DiscoveryDeps {
  return { fetch, clock: { now: () => Date.now() }, timeoutMs: 1000, allowInsecureHttp: false };
}

const SERVER = 'https://mcp.example.com/tools/mcp';
const PRM = {
  resource: SERVER,
  authorization_servers: ['https://auth.example.com'],
  scopes_supported: ['read'],
};

describe('the protected resource metadata (RFC 9728)', () => {
  it('uses the URL the 401 challenge names, and only that one', async () => {
    const challenged = 'https://mcp.example.com/meta/prm.json';
    const { fetch, asked } = scripted({
      [SERVER]: () =>
        new Response('', {
          status: 401,
          headers: { 'www-authenticate': `Bearer error="invalid_token", resource_metadata="${challenged}"` },
        }),
      [challenged]: json(PRM),
    });
    const found = await discoverProtectedResource(SERVER, deps(fetch));
    expect(found).toMatchObject({ resource: SERVER, authorizationServers: ['https://auth.example.com'] });
    expect(asked).toEqual([`POST ${SERVER}`, `GET ${challenged}`]);
  });

  it('without resource_metadata: the path-inserted well-known URL, then the root one', async () => {
    const { fetch, asked } = scripted({
      [SERVER]: () => new Response('', { status: 401, headers: { 'www-authenticate': 'Bearer' } }),
      'https://mcp.example.com/.well-known/oauth-protected-resource': json(PRM),
    });
    await discoverProtectedResource(SERVER, deps(fetch));
    expect(asked).toEqual([
      `POST ${SERVER}`,
      'GET https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp',
      'GET https://mcp.example.com/.well-known/oauth-protected-resource',
    ]);
  });

  it('refuses a document for another resource, naming both', async () => {
    const { fetch } = scripted({
      'https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp': json({
        ...PRM,
        resource: 'https://evil.example.com/mcp',
      }),
    });
    await expect(discoverProtectedResource(SERVER, deps(fetch))).rejects.toThrow(
      /names resource "https:\/\/evil\.example\.com\/mcp", not the MCP server URL "https:\/\/mcp\.example\.com\/tools\/mcp"/u,
    );
  });

  it('compares resources in canonical form (scheme and host case, default port)', async () => {
    const { fetch } = scripted({
      'https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp': json({
        ...PRM,
        resource: 'HTTPS://MCP.Example.com:443/tools/mcp',
      }),
    });
    await expect(discoverProtectedResource(SERVER, deps(fetch))).resolves.toMatchObject({
      resource: 'HTTPS://MCP.Example.com:443/tools/mcp',
    });
    expect(canonicalResource('https://mcp.example.com')).toBe(canonicalResource('https://mcp.example.com/'));
    expect(canonicalResource('https://mcp.example.com/a')).not.toBe(
      canonicalResource('https://mcp.example.com/b'),
    );
  });

  it.each([
    ['declared by Content-Length', { 'content-length': String(MAX_DOCUMENT_BYTES + 1) }],
    ['streamed without a length', {}],
  ])('refuses a document over 64 KiB (%s)', async (_, headers) => {
    const big = JSON.stringify({ ...PRM, padding: 'x'.repeat(MAX_DOCUMENT_BYTES) });
    const { fetch } = scripted({
      'https://mcp.example.com/.well-known/oauth-protected-resource/tools/mcp': () =>
        new Response(
          new ReadableStream({
            start(controller) {
              controller.enqueue(new TextEncoder().encode(big));
              controller.close();
            },
          }),
          { status: 200, headers },
        ),
    });
    const failure = discoverProtectedResource(SERVER, deps(fetch));
    await expect(failure).rejects.toBeInstanceOf(DiscoveryFailedError);
    await expect(failure).rejects.toThrow(/larger than 64 KiB/u);
  });

  it('says which URLs answered what when none has the document', async () => {
    const { fetch } = scripted({});
    await expect(discoverProtectedResource(SERVER, deps(fetch))).rejects.toThrow(
      /no protected resource metadata: .*oauth-protected-resource\/tools\/mcp answered HTTP 404; .*oauth-protected-resource answered HTTP 404/u,
    );
  });

  it.each([
    ['Bearer resource_metadata="https://a.example/m"', 'https://a.example/m'],
    ['Bearer realm="x", resource_metadata=https://a.example/m', 'https://a.example/m'],
    ['Basic realm="x", Bearer resource_metadata="https://a.example/m"', 'https://a.example/m'],
    ['Bearer realm="x"', undefined],
    ['DPoP resource_metadata="https://a.example/m"', undefined],
    [null, undefined],
  ])('reads resource_metadata from %j', (header, expected) => {
    expect(resourceMetadataFromChallenge(header)).toBe(expected);
  });
});

describe('the authorization server metadata', () => {
  const AS = {
    issuer: 'https://auth.example.com/tenant',
    authorization_endpoint: 'https://auth.example.com/tenant/authorize',
    token_endpoint: 'https://auth.example.com/tenant/token',
    code_challenge_methods_supported: ['S256'],
  };

  it('tries RFC 8414 path-inserted, then OpenID path-inserted, then OpenID appended', async () => {
    const { fetch, asked } = scripted({
      'https://auth.example.com/tenant/.well-known/openid-configuration': json(AS),
    });
    const found = await discoverAuthorizationServer(AS.issuer, deps(fetch));
    expect(found.tokenEndpoint).toBe(AS.token_endpoint);
    expect(asked).toEqual([
      'GET https://auth.example.com/.well-known/oauth-authorization-server/tenant',
      'GET https://auth.example.com/.well-known/openid-configuration/tenant',
      'GET https://auth.example.com/tenant/.well-known/openid-configuration',
    ]);
  });

  it('refuses an issuer that does not match', async () => {
    const { fetch } = scripted({
      'https://auth.example.com/.well-known/oauth-authorization-server/tenant': json({
        ...AS,
        issuer: 'https://auth.example.com/other',
      }),
    });
    await expect(discoverAuthorizationServer(AS.issuer, deps(fetch))).rejects.toThrow(
      /names issuer "https:\/\/auth\.example\.com\/other", not "https:\/\/auth\.example\.com\/tenant"/u,
    );
  });

  it('refuses metadata without S256, and endpoints the keeper would never call', async () => {
    const at = 'https://auth.example.com/.well-known/oauth-authorization-server/tenant';
    const plain = scripted({ [at]: json({ ...AS, code_challenge_methods_supported: ['plain'] }) });
    await expect(discoverAuthorizationServer(AS.issuer, deps(plain.fetch))).rejects.toThrow(/S256/u);
    const none = scripted({ [at]: json({ ...AS, code_challenge_methods_supported: undefined }) });
    await expect(discoverAuthorizationServer(AS.issuer, deps(none.fetch))).rejects.toThrow(/S256/u);
    const internal = scripted({ [at]: json({ ...AS, token_endpoint: 'https://169.254.169.254/token' }) });
    await expect(discoverAuthorizationServer(AS.issuer, deps(internal.fetch))).rejects.toThrow(
      /token_endpoint must not point to a non-public destination/u,
    );
    const http = scripted({
      [at]: json({ ...AS, authorization_endpoint: 'http://auth.example.com/authorize' }),
    });
    await expect(discoverAuthorizationServer(AS.issuer, deps(http.fetch))).rejects.toThrow(
      /authorization_endpoint must be an https URL/u,
    );
  });
});

describe('client registration, in the specification’s order', () => {
  const as: AuthorizationServerMetadata = {
    issuer: 'https://auth.example.com',
    authorizationEndpoint: 'https://auth.example.com/authorize',
    tokenEndpoint: 'https://auth.example.com/token',
    registrationEndpoint: 'https://auth.example.com/register',
    clientIdMetadataDocumentSupported: true,
    issParameterSupported: true,
  };
  const urls = { publicUrl: 'https://keeper.example.com', allowInsecureHttp: false };
  const nothing = scripted({});

  it('a given clientId first, whatever the server offers', async () => {
    const client = await registerClient(
      'linear',
      as,
      { clientId: 'mine', clientSecret: 's3cret' },
      urls,
      deps(nothing.fetch),
    );
    expect(client).toEqual({
      clientId: 'mine',
      clientSecret: 's3cret',
      clientAuthMethod: 'client_secret_basic',
      registration: 'preregistered',
    });
    expect(nothing.asked).toEqual([]);
  });

  it('then the metadata document, when the server accepts it and the keeper has a public https URL', async () => {
    const client = await registerClient('linear', as, {}, urls, deps(nothing.fetch));
    expect(client).toEqual({
      clientId: 'https://keeper.example.com/oauth/client-metadata/linear',
      clientAuthMethod: 'none',
      registration: 'metadata_document',
    });
    expect(clientMetadataDocument(urls, 'linear')).toMatchObject({
      client_id: client.clientId,
      redirect_uris: ['https://keeper.example.com/oauth/callback/linear'],
    });
    // One document per provider: another provider's client_id and redirect URI are its own.
    expect(clientMetadataDocument(urls, 'git hub')).toMatchObject({
      client_id: 'https://keeper.example.com/oauth/client-metadata/git%20hub',
      redirect_uris: ['https://keeper.example.com/oauth/callback/git%20hub'],
    });
    expect(
      clientMetadataDocument({ publicUrl: 'http://keeper.example.com', allowInsecureHttp: false }, 'linear'),
    ).toBe(undefined);
  });

  it('then dynamic registration (RFC 7591): a public client, or the secret the server issues', async () => {
    const register = scripted({
      'https://auth.example.com/register': (init) => {
        const body = JSON.parse(String(init.body)) as Record<string, unknown>;
        expect(body).toEqual({
          client_name: 'tokenkeeper',
          redirect_uris: ['http://keeper.example.com/oauth/callback/linear'],
          grant_types: ['authorization_code', 'refresh_token'],
          response_types: ['code'],
          token_endpoint_auth_method: 'none',
          scope: 'read',
        });
        return new Response(
          JSON.stringify({
            client_id: 'dyn-1',
            client_secret: 'issued',
            token_endpoint_auth_method: 'client_secret_post',
          }),
          { status: 201 },
        );
      },
    });
    const client = await registerClient(
      'linear',
      as,
      { scope: 'read' },
      // http: no metadata document (it must be https), so registration decides
      { publicUrl: 'http://keeper.example.com', allowInsecureHttp: false },
      deps(register.fetch),
    );
    expect(client).toEqual({
      clientId: 'dyn-1',
      clientSecret: 'issued',
      clientAuthMethod: 'client_secret_post',
      registration: 'dynamic',
    });
  });

  it('a refused registration is discovery_failed with the server’s error code, never its body', async () => {
    const refused = scripted({
      'https://auth.example.com/register': () =>
        new Response(JSON.stringify({ error: 'invalid_redirect_uri', error_description: 'nope' }), {
          status: 400,
        }),
    });
    await expect(
      registerClient(
        'linear',
        { ...as, clientIdMetadataDocumentSupported: false },
        {},
        urls,
        deps(refused.fetch),
      ),
    ).rejects.toThrow(/dynamic client registration answered HTTP 400: invalid_redirect_uri \(nope\)/u);
  });

  it('otherwise client_registration_unavailable, asking for a clientId', async () => {
    const bare = { ...as, clientIdMetadataDocumentSupported: false, registrationEndpoint: undefined };
    const failure = registerClient('linear', bare, {}, urls, deps(nothing.fetch));
    await expect(failure).rejects.toBeInstanceOf(ClientRegistrationUnavailableError);
    await expect(failure).rejects.toThrow(
      /redirect URI https:\/\/keeper\.example\.com\/oauth\/callback\/linear and give its clientId/u,
    );
  });
});

describe('redirectUri allow-list', () => {
  const allow = [
    'https://chat.example.com/',
    'https://app.example.com/oauth/',
    'https://x.example.com/cb',
    'https://root.example.com',
  ];
  it.each([
    ['https://chat.example.com/', true],
    ['https://chat.example.com/any/path?q=1', true],
    ['https://app.example.com/oauth/done', true],
    ['https://app.example.com/oauth/done?next=%2Fhome;x', true],
    ['https://x.example.com/cb', true],
    ['https://x.example.com/cb?x=1', true],
    ['https://root.example.com', true],
    ['https://root.example.com/?tool_server=notes', true],
    // An entry not ending in / allows its own path only.
    ['https://x.example.com/cb/more', false],
    ['https://x.example.com/cb/', false],
    ['https://root.example.com/other', false],
    ['https://x.example.com/cbevil', false],
    // Paths the page behind them may read as another path.
    ['https://app.example.com/oauth/%2e%2e/admin', false],
    ['https://app.example.com/oauth/..%2Fadmin', false],
    ['https://app.example.com/oauth/%2E%2E%2Fadmin', false],
    ['https://chat.example.com/a%2fb', false],
    ['https://chat.example.com/a%5Cb', false],
    ['https://app.example.com/oauth/..\\admin', false],
    ['https://app.example.com/oauth/done;jsessionid=1', false],
    ['https://x.example.com/cb;x', false],
    ['https://app.example.com/other', false],
    ['https://chat.example.com.evil.com/', false],
    ['http://chat.example.com/', false],
    ['https://chat.example.com:8443/', false],
    ['https://user@chat.example.com/', false],
    ['https://chat.example.com/#frag', false],
    ['javascript:alert(1)', false],
    ['not a url', false],
  ])('%s → %s', (candidate, expected) => {
    expect(redirectAllowed(candidate, allow)).toBe(expected);
  });

  it('allows nothing when the list is empty', () => {
    expect(redirectAllowed('https://chat.example.com/', [])).toBe(false);
  });
});

describe('request validation', () => {
  it('an MCP provider body: mcpServerUrl, with an optional client', () => {
    expect(parseMcpProviderBody({ mcpServerUrl: 'https://mcp.example.com/mcp' })).toEqual({
      mcpServerUrl: 'https://mcp.example.com/mcp',
    });
    expect(parseMcpProviderBody({ mcpServerUrl: 'https://mcp.example.com/mcp', clientId: 'c' })).toEqual({
      mcpServerUrl: 'https://mcp.example.com/mcp',
      clientId: 'c',
      clientAuthMethod: 'none',
    });
    const settings = {
      refreshPolicy: 'keepAlive',
      refreshTokenIdleSeconds: 600,
      maxConcurrentRefreshes: 1000,
    };
    expect(parseMcpProviderBody({ mcpServerUrl: 'https://mcp.example.com/mcp', ...settings })).toEqual({
      mcpServerUrl: 'https://mcp.example.com/mcp',
      ...settings,
    });
  });

  it.each([
    [
      { mcpServerUrl: 'https://m.example/mcp', issuer: 'https://a.example' },
      /must not be combined with issuer/u,
    ],
    [{ mcpServerUrl: 'https://m.example/mcp', clientSecret: 's' }, /clientId: is required/u],
    [{ mcpServerUrl: 'http://m.example/mcp' }, /mcpServerUrl: must be an https URL/u],
    [{ mcpServerUrl: 'https://127.0.0.1/mcp' }, /mcpServerUrl: must not point to a non-public destination/u],
    [{ mcpServerUrl: 'https://m.example/mcp#x' }, /must not contain a fragment/u],
    [{ mcpServerUrl: 'https://m.example/mcp', extra: 1 }, /unknown field "extra"/u],
    [
      { mcpServerUrl: 'https://m.example/mcp', refreshPolicy: 'idle' },
      /refreshPolicy: must be eager or keepAlive/u,
    ],
    [
      { mcpServerUrl: 'https://m.example/mcp', refreshTokenIdleSeconds: 3600 },
      /refreshTokenIdleSeconds: applies only with refreshPolicy keepAlive/u,
    ],
    [{ mcpServerUrl: 'https://m.example/mcp', maxConcurrentRefreshes: 0 }, /maxConcurrentRefreshes/u],
  ])('refuses %j', (body, message) => {
    expect(() => parseMcpProviderBody(body as Record<string, unknown>)).toThrow(message);
  });

  it('an authorize body is optional; redirectUri must be an http(s) URL', () => {
    expect(parseAuthorizeBody(undefined)).toEqual({});
    expect(parseAuthorizeBody('')).toEqual({});
    expect(parseAuthorizeBody('{"scope":"a b","redirectUri":"https://chat.example.com/x"}')).toEqual({
      scope: 'a b',
      redirectUri: 'https://chat.example.com/x',
    });
    expect(() => parseAuthorizeBody('{"redirectUri":"javascript:alert(1)"}')).toThrow(/redirectUri/u);
    expect(() => parseAuthorizeBody('{"state":"mine"}')).toThrow(/unknown field "state"/u);
  });
});
