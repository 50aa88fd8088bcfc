import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';

/**
 * AWS Signature Version 4 for API Gateway (IAM authorization), done by the AWS SDK's own signer
 * (@smithy/signature-v4 with @aws-crypto/sha256-js): no hand-written crypto here.
 */

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  expiration?: Date;
}

/** Structurally the SDK's AwsCredentialIdentityProvider (e.g. `defaultProvider()` / `fromNodeProviderChain()`). */
export type CredentialProvider = () => Promise<AwsCredentials>;

export interface SigV4Options {
  region: string;
  credentials: AwsCredentials | CredentialProvider;
  /** Signing name; `execute-api` for API Gateway. */
  service?: string;
}

export interface RequestToSign {
  method: string;
  url: URL;
  /** Headers to send and sign (lower-case names). `host` is added from the URL. */
  headers: Record<string, string>;
  body?: string;
}

/** Returns the headers to send: the given ones plus `x-amz-date`, `authorization` and, with temporary credentials, `x-amz-security-token`. */
export type RequestSigner = (request: RequestToSign, signingDate: Date) => Promise<Record<string, string>>;

export function createSigV4Signer(options: SigV4Options): RequestSigner {
  const signer = new SignatureV4({
    service: options.service ?? 'execute-api',
    region: options.region,
    credentials: options.credentials,
    sha256: Sha256,
    // API Gateway does not want x-amz-content-sha256; the payload hash is still in the canonical request.
    applyChecksum: false,
  });
  return async (request, signingDate) => {
    const { url } = request;
    const query: Record<string, string | string[]> = {};
    for (const [name, value] of url.searchParams) {
      const existing = query[name];
      if (existing === undefined) query[name] = value;
      else query[name] = Array.isArray(existing) ? [...existing, value] : [existing, value];
    }
    const unsigned = new HttpRequest({
      method: request.method,
      protocol: url.protocol,
      hostname: url.hostname,
      port: url.port === '' ? undefined : Number(url.port),
      // Already percent-encoded: the signer encodes it once more, as every service but S3 expects.
      path: url.pathname,
      query,
      // `host` as the HTTP client will send it (with the port when it is not the default one).
      headers: { ...request.headers, host: url.host },
      body: request.body,
    });
    const signed = await signer.sign(unsigned, { signingDate });
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(signed.headers)) headers[name.toLowerCase()] = value;
    return headers;
  };
}

/** The region of an API Gateway default endpoint (`https://{id}.execute-api.{region}.amazonaws.com`), if the URL is one. */
export function regionFromApiUrl(url: string): string | undefined {
  try {
    const host = new URL(url).hostname;
    return /^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$/u.exec(host)?.[1];
  } catch {
    return undefined;
  }
}

/** The SigV4 region: the one given, else the execute-api host name's, else AWS_REGION / AWS_DEFAULT_REGION. */
export function signingRegion(
  given: string | undefined,
  baseUrl: string,
  env: Record<string, string | undefined>,
): string | undefined {
  return given || regionFromApiUrl(baseUrl) || env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined;
}
