import type { Server } from 'node:http';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js';
import { mcpAuthMetadataRouter } from '@modelcontextprotocol/sdk/server/auth/router.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { OAuthMetadata } from '@modelcontextprotocol/sdk/shared/auth.js';
import * as z from 'zod';
import { MCP_SCOPES, type OAuthServer } from './oauth-server.js';

/**
 * An MCP server built with the official SDK, protected the way the SDK's server-side authorization
 * does it: `requireBearerAuth` with a verifier that introspects each token at the OAuth server and
 * accepts only tokens whose audience is this server's resource, and the SDK's metadata router, so a
 * 401 carries `resource_metadata`. One tool, `add`.
 */

export interface McpSdkServer {
  /** The MCP endpoint (Streamable HTTP, stateless). */
  readonly url: string;
  readonly resourceMetadataUrl: string;
  /** Tokens presented with a tool call or list that the server accepted, in order. */
  readonly accepted: string[];
  /** Refuses the next token presented once (as if the server stopped trusting it), with a 401. */
  refuseNext(): void;
  stop(): Promise<void>;
}

export async function startMcpSdkServer(options: {
  oauth: OAuthServer;
  resource: string;
}): Promise<McpSdkServer> {
  return (await listenMcpSdkServer()).protect(options);
}

/** A listening SDK server, not protected yet: its URL is known before the OAuth server starts. */
export interface UnprotectedMcpSdkServer {
  readonly url: string;
  /** Mounts the SDK's metadata router and bearer auth for `oauth`; `resource` defaults to the server's URL. */
  protect(options: { oauth: OAuthServer; resource?: string }): Promise<McpSdkServer>;
}

export async function listenMcpSdkServer(): Promise<UnprotectedMcpSdkServer> {
  const app = createMcpExpressApp();
  let server: Server | undefined;
  const origin = await new Promise<string>((resolve, reject) => {
    server = app.listen(0, '127.0.0.1', () => {
      const address = server?.address();
      if (address && typeof address === 'object') resolve(`http://127.0.0.1:${address.port}`);
    });
    server.on('error', reject);
  });
  const url = `${origin}/mcp`;
  const stop = () =>
    new Promise<void>((resolve) => {
      server?.closeAllConnections();
      server?.close(() => resolve());
    });

  const protect = async (options: { oauth: OAuthServer; resource?: string }): Promise<McpSdkServer> => {
    const { oauth } = options;
    const metadataResponse = await fetch(`${oauth.upstreamUrl}/.well-known/openid-configuration`);
    const metadata = (await metadataResponse.json()) as OAuthMetadata;
    const accepted: string[] = [];
    let refuse = false;

    const verifier: OAuthTokenVerifier = {
      async verifyAccessToken(token: string): Promise<AuthInfo> {
        if (refuse) {
          refuse = false;
          throw new InvalidTokenError('this server no longer trusts the token');
        }
        const claims = await oauth.introspect(token);
        if (!claims.active) throw new InvalidTokenError('token is not active');
        const aud = Array.isArray(claims.aud) ? claims.aud[0] : claims.aud;
        return {
          token,
          clientId: String(claims.client_id ?? ''),
          scopes: typeof claims.scope === 'string' ? claims.scope.split(' ') : [],
          expiresAt: typeof claims.exp === 'number' ? claims.exp : undefined,
          resource: typeof aud === 'string' ? new URL(aud) : undefined,
        };
      },
    };

    const resourceMetadataUrl = `${origin}/.well-known/oauth-protected-resource/mcp`;
    // The scopes the test OAuth server grants for its resources (MCP_SCOPES), advertised as RFC 9728 asks.
    app.use(
      mcpAuthMetadataRouter({
        oauthMetadata: metadata,
        resourceServerUrl: new URL(url),
        scopesSupported: MCP_SCOPES.split(' '),
      }),
    );
    const auth = requireBearerAuth({
      verifier,
      resourceMetadataUrl,
      expectedResource: new URL(options.resource ?? url),
    });
    app.post('/mcp', auth, async (req, res) => {
      accepted.push(req.auth?.token ?? '');
      const mcp = new McpServer({ name: 'tokenkeeper-test-mcp', version: '1.0.0' });
      mcp.registerTool(
        'add',
        { description: 'Adds two numbers', inputSchema: { a: z.number(), b: z.number() } },
        async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }),
      );
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
      res.on('close', () => {
        void transport.close();
        void mcp.close();
      });
      await mcp.connect(transport);
      await transport.handleRequest(req, res, req.body);
    });

    return {
      url,
      resourceMetadataUrl,
      accepted,
      refuseNext() {
        refuse = true;
      },
      stop,
    };
  };

  return { url, protect };
}
