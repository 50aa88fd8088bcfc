import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { listenOnLoopback } from '../../functions/local/embedded.js';

/**
 * A scripted authorization server on 127.0.0.1 for what oidc-provider cannot be made to do: metadata
 * without S256 or without any registration path, and Client ID Metadata Documents. For a URL
 * `client_id` it fetches the document at authorization time and checks it the way the MCP
 * specification asks (the document's `client_id` is its own URL, the `redirect_uri` is listed, a
 * public client); codes need the PKCE verifier, the redirect URI and the resource they were issued
 * with; refresh grants must repeat the resource.
 */

export interface ScriptedAsOptions {
  codeChallengeMethods?: string[];
  clientIdMetadataDocumentSupported?: boolean;
  registrationEndpoint?: boolean;
}

export interface ScriptedAs {
  readonly issuer: string;
  /** Client metadata documents fetched, with the verdict. */
  readonly documents: { url: string; status: number; document?: Record<string, unknown>; problem?: string }[];
  /** Token requests as received. */
  readonly tokenRequests: Record<string, string>[];
  /** Whether an access token it issued is live and for `resource`. */
  accepts(token: string, resource: string): boolean;
  stop(): Promise<void>;
}

interface Code {
  clientId: string;
  redirectUri: string;
  challenge: string;
  resource?: string;
}

export async function startScriptedAs(options: ScriptedAsOptions = {}): Promise<ScriptedAs> {
  let issuer = '';
  const codes = new Map<string, Code>();
  const refreshTokens = new Map<string, { clientId: string; resource?: string }>();
  const accessTokens = new Map<string, string | undefined>();
  const documents: ScriptedAs['documents'] = [];
  const tokenRequests: Record<string, string>[] = [];

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(body));
  };

  const issue = (clientId: string, resource: string | undefined) => {
    const access = randomBytes(24).toString('base64url');
    const refresh = randomBytes(24).toString('base64url');
    accessTokens.set(access, resource);
    refreshTokens.set(refresh, { clientId, resource });
    return { access_token: access, refresh_token: refresh, token_type: 'Bearer', expires_in: 3600 };
  };

  async function checkClient(clientId: string, redirectUri: string): Promise<string | undefined> {
    if (!/^https?:\/\//u.test(clientId)) return 'unknown client';
    if (!options.clientIdMetadataDocumentSupported) return 'client metadata documents are not accepted';
    const res = await fetch(clientId, { redirect: 'error' });
    const record: ScriptedAs['documents'][number] = { url: clientId, status: res.status };
    documents.push(record);
    const doc = res.status === 200 ? ((await res.json()) as Record<string, unknown>) : undefined;
    record.document = doc;
    record.problem = documentProblem(doc, clientId, redirectUri);
    return record.problem;
  }

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', issuer);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (req.method === 'GET' && url.pathname === '/.well-known/oauth-authorization-server') {
      const metadata: Record<string, unknown> = {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        response_types_supported: ['code'],
        grant_types_supported: ['authorization_code', 'refresh_token'],
        token_endpoint_auth_methods_supported: ['none'],
        code_challenge_methods_supported: options.codeChallengeMethods ?? ['S256'],
        authorization_response_iss_parameter_supported: true,
      };
      if (options.clientIdMetadataDocumentSupported) metadata.client_id_metadata_document_supported = true;
      if (options.registrationEndpoint) metadata.registration_endpoint = `${issuer}/register`;
      return json(res, 200, metadata);
    }
    if (req.method === 'GET' && url.pathname === '/authorize') {
      const p = url.searchParams;
      const clientId = p.get('client_id') ?? '';
      const redirectUri = p.get('redirect_uri') ?? '';
      const problem = await checkClient(clientId, redirectUri);
      if (problem) return json(res, 400, { error: 'invalid_client', error_description: problem });
      if (p.get('code_challenge_method') !== 'S256' || !p.get('code_challenge')) {
        return json(res, 400, { error: 'invalid_request', error_description: 'PKCE S256 required' });
      }
      const code = randomBytes(16).toString('base64url');
      codes.set(code, {
        clientId,
        redirectUri,
        challenge: p.get('code_challenge') as string,
        resource: p.get('resource') ?? undefined,
      });
      const back = new URL(redirectUri);
      back.searchParams.set('code', code);
      back.searchParams.set('state', p.get('state') ?? '');
      back.searchParams.set('iss', issuer);
      res.writeHead(302, { location: back.href });
      return res.end();
    }
    if (req.method === 'POST' && url.pathname === '/token') {
      const body = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
      tokenRequests.push(body);
      if (body.grant_type === 'authorization_code') {
        const code = codes.get(body.code ?? '');
        codes.delete(body.code ?? '');
        const verifierOk =
          code !== undefined &&
          createHash('sha256')
            .update(body.code_verifier ?? '')
            .digest('base64url') === code.challenge;
        if (
          !code ||
          !verifierOk ||
          code.clientId !== body.client_id ||
          code.redirectUri !== body.redirect_uri ||
          code.resource !== body.resource
        ) {
          return json(res, 400, { error: 'invalid_grant' });
        }
        return json(res, 200, issue(code.clientId, code.resource));
      }
      if (body.grant_type === 'refresh_token') {
        const grant = refreshTokens.get(body.refresh_token ?? '');
        refreshTokens.delete(body.refresh_token ?? '');
        if (!grant || grant.clientId !== body.client_id || grant.resource !== body.resource) {
          return json(res, 400, { error: 'invalid_grant' });
        }
        return json(res, 200, issue(grant.clientId, grant.resource));
      }
      return json(res, 400, { error: 'unsupported_grant_type' });
    }
    return json(res, 404, { error: 'not_found' });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) json(res, 500, { error: 'server_error', error_description: String(err) });
      else res.destroy();
    });
  });
  issuer = `http://127.0.0.1:${await listenOnLoopback(server)}`;
  return {
    issuer,
    documents,
    tokenRequests,
    accepts: (token, resource) => accessTokens.has(token) && accessTokens.get(token) === resource,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** What is wrong with a client metadata document for this authorization request, if anything. */
function documentProblem(
  doc: Record<string, unknown> | undefined,
  clientId: string,
  redirectUri: string,
): string | undefined {
  if (!doc) return 'document not served';
  if (doc.client_id !== clientId) return 'client_id is not the document URL';
  if (!Array.isArray(doc.redirect_uris) || !doc.redirect_uris.includes(redirectUri)) {
    return 'redirect_uri not listed';
  }
  if (doc.token_endpoint_auth_method !== 'none') return 'not a public client';
  if (!Array.isArray(doc.grant_types) || !doc.grant_types.includes('authorization_code')) {
    return 'authorization_code not among grant_types';
  }
  return undefined;
}
