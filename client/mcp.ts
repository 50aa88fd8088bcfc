import { ReauthorizationRequiredError, ServiceUnavailableError } from './errors.js';
import type { TokenKeeperClient } from './index.js';
import type { Token } from './types.js';

/**
 * A fetch middleware for MCP clients: the shape of `Middleware` in `@modelcontextprotocol/sdk`
 * (`(next: FetchLike) => FetchLike`), so a Streamable HTTP transport is one option away from
 * tokenkeeper:
 *
 *     new StreamableHTTPClientTransport(url, { fetch: withTokenKeeper({ client, userId, providerId })(fetch) })
 *
 * The access token comes from the keeper through the typed client's cache; the refresh token never
 * leaves the keeper.
 */

export type FetchLike = (url: string | URL, init?: RequestInit) => Promise<Response>;
export type Middleware = (next: FetchLike) => FetchLike;

export interface WithTokenKeeperOptions {
  client: TokenKeeperClient;
  userId: string;
  providerId: string;
  /** Seconds the token should stay valid (a wish, as on the token route). Default: the client's. */
  minValidity?: number;
  /**
   * The longest the middleware waits for the keeper before it gives up with
   * `TokenUnavailableError` (milliseconds). Default 10 000.
   */
  maxWaitMs?: number;
  /**
   * Asked for a fresh authorization URL when the grant is dead, so the error can send the user there.
   * Default: the keeper's own connect flow (`POST …/authorize`, with `redirectUri` when given); a
   * provider that cannot start one leaves the error without a URL. Return undefined to skip.
   */
  authorizationUrl?: () => Promise<string | undefined>;
  /**
   * Where the user's browser returns after a reconnect started from the error (the default flow).
   * It comes back with `status=pending&connection=<id>&providerId=<p>`: the reconnect is stored
   * only when your application calls `client.completeConnection(userId, providerId, id)` for the
   * user it has signed in. Without it, the keeper's own page ends the flow and stores the session
   * for `userId`, whoever opened the URL.
   */
  redirectUri?: string;
}

/**
 * The keeper holds no usable grant: the user must authorize again (at `authorizationUrl`, when
 * given). When `completeConnection` is true the URL was started with a `redirectUri`: the browser
 * comes back there with `status=pending&connection=<id>`, and nothing is stored until the
 * application completes that connection for its signed-in user
 * (`client.completeConnection(userId, providerId, id)`).
 */
export class McpReauthorizationRequiredError extends Error {
  override readonly name = 'ReauthorizationRequiredError';
  readonly userId: string;
  readonly providerId: string;
  readonly authorizationUrl?: string;
  /** The application must complete the connection when the browser returns (see the class comment). */
  readonly completeConnection: boolean;
  constructor(init: {
    userId: string;
    providerId: string;
    authorizationUrl?: string;
    completeConnection?: boolean;
    cause: unknown;
  }) {
    const completion = init.completeConnection
      ? '; when the browser returns with status=pending, complete the connection for the signed-in user'
      : '';
    super(`${init.providerId}: the user must authorize again${completion}`, { cause: init.cause });
    this.userId = init.userId;
    this.providerId = init.providerId;
    this.completeConnection = init.completeConnection === true && init.authorizationUrl !== undefined;
    if (init.authorizationUrl !== undefined) this.authorizationUrl = init.authorizationUrl;
  }
}

/** No token right now (the provider is failing, or the keeper did not answer in time): try later. */
export class TokenUnavailableError extends Error {
  override readonly name = 'TokenUnavailableError';
  readonly retryAfterSeconds: number;
  constructor(message: string, retryAfterSeconds: number, cause?: unknown) {
    super(message, { cause });
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

const DEFAULT_MAX_WAIT_MS = 10_000;

/** A body that can be sent twice: anything but a one-shot stream. */
function replayable(init: RequestInit | undefined): boolean {
  return !(init?.body instanceof ReadableStream);
}

function withAuthorization(init: RequestInit | undefined, token: Token): RequestInit {
  const headers = new Headers(init?.headers);
  headers.set(
    'authorization',
    `${token.token_type === 'Bearer' ? 'Bearer' : token.token_type} ${token.access_token}`,
  );
  return { ...init, headers };
}

export function withTokenKeeper(options: WithTokenKeeperOptions): Middleware {
  const { client, userId, providerId } = options;
  const maxWaitMs = options.maxWaitMs ?? DEFAULT_MAX_WAIT_MS;
  const authorizationUrl =
    options.authorizationUrl ??
    (async () =>
      (
        await client.authorize(
          userId,
          providerId,
          options.redirectUri ? { redirectUri: options.redirectUri } : {},
        )
      ).authorizationUrl);

  const token = async (rejected?: string): Promise<Token> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new TokenUnavailableError(`the keeper did not answer within ${maxWaitMs} ms`, 1)),
        maxWaitMs,
      );
    });
    try {
      return await Promise.race([
        client.getToken(userId, providerId, { minValidity: options.minValidity, rejected }),
        timeout,
      ]);
    } catch (err) {
      if (err instanceof ReauthorizationRequiredError) {
        const url = await authorizationUrl().catch(() => undefined);
        throw new McpReauthorizationRequiredError({
          userId,
          providerId,
          authorizationUrl: url,
          // The default flow with a redirectUri ends in a pending connection the application completes.
          completeConnection: options.authorizationUrl === undefined && options.redirectUri !== undefined,
          cause: err,
        });
      }
      if (err instanceof ServiceUnavailableError) {
        throw new TokenUnavailableError(err.message, err.retryAfterSeconds, err);
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  };

  return (next) => async (url, init) => {
    const first = await token();
    const response = await next(url, withAuthorization(init, first));
    if (response.status !== 401 || !replayable(init)) return response;
    // The resource server refused this token: one new token (shared with every caller holding the
    // same refused one), one retry. A second 401 goes back to the caller as it came.
    await response.body?.cancel().catch(() => {});
    const renewed = await token(first.access_token);
    return next(url, withAuthorization(init, renewed));
  };
}
