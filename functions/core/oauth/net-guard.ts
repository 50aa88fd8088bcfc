import * as dns from 'node:dns';
import * as http from 'node:http';
import * as https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import type { FetchLike } from '../ports.js';

/**
 * Outbound-request guard for provider URLs (issuer, token, revocation and discovered endpoints).
 *
 * Two rules, both lifted by `allowInsecureHttp` (TOKENKEEPER_ALLOW_INSECURE_HTTP=1, refused in Lambda):
 * 1. only `https://`;
 * 2. never to loopback, private, link-local, cloud-metadata or otherwise non-public addresses.
 *
 * `checkProviderUrl` is the static check for PUT time (literal IPs and well-known internal names).
 * `createGuardedFetch` is the check that counts: it resolves the host once, vets every address, and
 * connects only to the addresses it vetted, so a DNS answer cannot change between check and connect.
 */

// --- addresses -----------------------------------------------------------------------------------

interface V4Range {
  base: number;
  bits: number;
  label: string;
}

interface V6Range {
  base: bigint;
  bits: number;
  label: string;
}

function parseV4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = value * 256 + n;
  }
  return value;
}

/** Parses an IPv6 address (optionally with a zone, `%eth0`, and a trailing dotted quad) to 128 bits. */
function parseV6(text: string): bigint | undefined {
  const zone = text.indexOf('%');
  let rest = zone === -1 ? text : text.slice(0, zone);
  const lastColon = rest.lastIndexOf(':');
  if (lastColon !== -1 && rest.slice(lastColon + 1).includes('.')) {
    // A trailing dotted quad (::ffff:1.2.3.4) stands for the last two groups.
    const v4 = parseV4(rest.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    rest = `${rest.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const halves = rest.split('::');
  if (halves.length > 2) return undefined;
  const parse = (s: string): number[] | undefined => {
    if (s === '') return [];
    const out: number[] = [];
    for (const g of s.split(':')) {
      if (!/^[0-9a-f]{1,4}$/i.test(g)) return undefined;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const head = parse(halves[0] ?? '');
  const back = halves.length === 2 ? parse(halves[1] ?? '') : [];
  if (head === undefined || back === undefined) return undefined;
  const missing = 8 - head.length - back.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...new Array<number>(missing).fill(0), ...back];
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  return value;
}

function v4Range(cidr: string, label: string): V4Range {
  const [ip, bits] = cidr.split('/') as [string, string];
  return { base: parseV4(ip) as number, bits: Number(bits), label: `${label} (${cidr})` };
}

function v6Range(cidr: string, label: string): V6Range {
  const [ip, bits] = cidr.split('/') as [string, string];
  return { base: parseV6(ip) as bigint, bits: Number(bits), label: `${label} (${cidr})` };
}

function inV4(value: number, range: V4Range): boolean {
  if (range.bits === 0) return true;
  const shift = 32 - range.bits;
  return Math.floor(value / 2 ** shift) === Math.floor(range.base / 2 ** shift);
}

function inV6(value: bigint, range: V6Range): boolean {
  const shift = BigInt(128 - range.bits);
  return value >> shift === range.base >> shift;
}

/** IPv4 ranges that are never a provider (IANA special-purpose registry, RFC 6890, plus cloud specifics). */
const FORBIDDEN_V4: readonly V4Range[] = [
  // 0.0.0.0 reaches the local host on Linux; the rest of 0/8 is "this network".
  v4Range('0.0.0.0/8', '"this network"'),
  v4Range('10.0.0.0/8', 'private'),
  // Shared address space (RFC 6598); also Alibaba Cloud's metadata service, 100.100.100.200.
  v4Range('100.64.0.0/10', 'carrier-grade NAT'),
  v4Range('127.0.0.0/8', 'loopback'),
  // RFC 3927: AWS/GCP/Azure/OCI metadata 169.254.169.254, ECS task metadata 169.254.170.2,
  // Amazon Time Sync 169.254.169.123, the VPC DNS resolver 169.254.169.253.
  v4Range('169.254.0.0/16', 'link-local, incl. cloud metadata'),
  v4Range('172.16.0.0/12', 'private'),
  // IETF protocol assignments (DS-Lite, NAT64 discovery, 192.0.0.192 Oracle Cloud Classic metadata).
  v4Range('192.0.0.0/24', 'IETF protocol assignments'),
  v4Range('192.0.2.0/24', 'documentation'),
  // 6to4 relay anycast, deprecated by RFC 7526.
  v4Range('192.88.99.0/24', '6to4 relay anycast'),
  v4Range('192.168.0.0/16', 'private'),
  v4Range('198.18.0.0/15', 'benchmarking'),
  v4Range('198.51.100.0/24', 'documentation'),
  v4Range('203.0.113.0/24', 'documentation'),
  v4Range('224.0.0.0/4', 'multicast'),
  v4Range('255.255.255.255/32', 'broadcast'),
  v4Range('240.0.0.0/4', 'reserved'),
];

/** IPv6 ranges that are never a provider. Ranges embedding an IPv4 address are handled before these. */
const FORBIDDEN_V6: readonly V6Range[] = [
  v6Range('::/128', 'unspecified'),
  v6Range('::1/128', 'loopback'),
  // Deprecated IPv4-compatible addresses (RFC 4291 §2.5.5.1); some stacks still route them as IPv4.
  v6Range('::/96', 'IPv4-compatible'),
  // Local-use NAT64 (RFC 8215): the translation is site-defined, so the embedded IPv4 says nothing.
  v6Range('64:ff9b:1::/48', 'local-use NAT64'),
  v6Range('100::/64', 'discard-only'),
  // Teredo 2001::/32, benchmarking 2001:2::/48, ORCHID 2001:10::/28, ORCHIDv2 2001:20::/28, …
  v6Range('2001::/23', 'IETF protocol assignments'),
  v6Range('2001:db8::/32', 'documentation'),
  v6Range('3fff::/20', 'documentation'),
  v6Range('5f00::/16', 'SRv6 SIDs'),
  // Unique local addresses (RFC 4193), incl. the AWS instance metadata service fd00:ec2::254.
  v6Range('fc00::/7', 'unique local, incl. cloud metadata'),
  v6Range('fe80::/10', 'link-local'),
  v6Range('fec0::/10', 'site-local (deprecated)'),
  v6Range('ff00::/8', 'multicast'),
];

/** Only 2000::/3 is allocated as global unicast; everything outside it (not listed above) is refused. */
const GLOBAL_UNICAST = v6Range('2000::/3', 'global unicast');

/** IPv6 ranges whose low bits carry an IPv4 address: the IPv4 address decides. */
const EMBEDDING_V6: readonly { range: V6Range; extract: (v: bigint) => number }[] = [
  { range: v6Range('::ffff:0:0/96', 'IPv4-mapped'), extract: (v) => Number(v & 0xffffffffn) },
  // SIIT IPv4-translated addresses (RFC 2765).
  { range: v6Range('::ffff:0:0:0/96', 'IPv4-translated'), extract: (v) => Number(v & 0xffffffffn) },
  // Well-known NAT64 prefix (RFC 6052): 64:ff9b::a9fe:a9fe reaches 169.254.169.254 through a NAT64 gateway.
  { range: v6Range('64:ff9b::/96', 'NAT64'), extract: (v) => Number(v & 0xffffffffn) },
  // 6to4 (RFC 3056): 2002:AABB:CCDD::/48 tunnels to AA.BB.CC.DD.
  { range: v6Range('2002::/16', '6to4'), extract: (v) => Number((v >> 80n) & 0xffffffffn) },
];

function formatV4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

function v4Reason(value: number): string | undefined {
  return FORBIDDEN_V4.find((range) => inV4(value, range))?.label;
}

/**
 * Why `ip` must not be connected to, or undefined when it is a public unicast address. Anything that is
 * not an IP address is refused (fail closed).
 */
export function forbiddenAddressReason(ip: string): string | undefined {
  const text = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  const family = isIP(text);
  if (family === 4) {
    const value = parseV4(text);
    return value === undefined ? 'not an IP address' : v4Reason(value);
  }
  if (family !== 6) return 'not an IP address';
  const value = parseV6(text);
  if (value === undefined) return 'not an IP address';
  for (const { range, extract } of EMBEDDING_V6) {
    if (inV6(value, range)) {
      const v4 = extract(value);
      const reason = v4Reason(v4);
      return reason === undefined ? undefined : `${range.label} form of ${formatV4(v4)}, ${reason}`;
    }
  }
  const listed = FORBIDDEN_V6.find((range) => inV6(value, range));
  if (listed) return listed.label;
  if (!inV6(value, GLOBAL_UNICAST)) return 'not global unicast (outside 2000::/3)';
  return undefined;
}

/**
 * True when `ip` is loopback, private, link-local, cloud metadata, multicast, documentation, reserved or
 * otherwise not a public unicast address; IPv4 embedded in IPv6 (mapped, NAT64, 6to4) is judged by the
 * IPv4 address. Also true for anything that is not an IP address.
 */
export function isForbiddenAddress(ip: string): boolean {
  return forbiddenAddressReason(ip) !== undefined;
}

// --- names and URLs ------------------------------------------------------------------------------

/** Names that always mean this machine or a metadata service, whatever DNS says. */
const FORBIDDEN_NAMES = new Map<string, string>([
  ['localhost', 'a loopback name'],
  ['localhost.localdomain', 'a loopback name'],
  ['ip6-localhost', 'a loopback name'],
  ['ip6-loopback', 'a loopback name'],
  ['metadata', 'a cloud metadata name'],
  ['metadata.google.internal', 'a cloud metadata name'],
  ['metadata.goog', 'a cloud metadata name'],
  ['instance-data', 'a cloud metadata name'],
  ['instance-data.ec2.internal', 'a cloud metadata name'],
]);

/** `hostname` as in URL.hostname (IPv6 in brackets). Undefined when the name is acceptable. */
function hostnameReason(hostname: string): string | undefined {
  const name = hostname.toLowerCase().replace(/\.$/, '');
  if (name.startsWith('[') || isIP(name) !== 0) return forbiddenAddressReason(name);
  // RFC 6761 §6.3: *.localhost is loopback.
  if (name.endsWith('.localhost')) return 'a loopback name';
  return FORBIDDEN_NAMES.get(name);
}

function stripBrackets(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}

export interface NetGuardOptions {
  /** TOKENKEEPER_ALLOW_INSECURE_HTTP: allows http:// and non-public addresses (local development, tests). */
  allowInsecureHttp: boolean;
}

/**
 * Static check of a provider URL for PUT time. Returns a description of the problem (naming neither the
 * URL nor anything in it, so it can follow a field name) or undefined when the URL is acceptable. A
 * hostname's addresses are checked later, when a request is made (createGuardedFetch).
 */
export function checkProviderUrl(raw: string, options: NetGuardOptions): string | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return 'must be an absolute URL';
  }
  if (url.protocol !== 'https:' && !(options.allowInsecureHttp && url.protocol === 'http:')) {
    return 'must be an https URL';
  }
  if (url.username !== '' || url.password !== '') return 'must not contain credentials';
  if (url.hostname === '') return 'must have a host';
  if (options.allowInsecureHttp) return undefined;
  const reason = hostnameReason(url.hostname);
  return reason === undefined ? undefined : `must not point to a non-public destination: ${reason}`;
}

// --- guarded fetch -------------------------------------------------------------------------------

/** A request refused because of where it would go. The message names the host, never the path or query. */
export class ForbiddenDestinationError extends Error {
  override readonly name = 'ForbiddenDestinationError';
  readonly code = 'forbidden_destination';

  constructor(
    /** host[:port] of the refused URL */
    readonly host: string,
    readonly reason: string,
  ) {
    super(`refusing to connect to ${host}: ${reason}`);
  }
}

export interface GuardedFetchOptions extends NetGuardOptions {
  /**
   * DNS resolution; dns.lookup unless injected (tests). Called with `all: true`, once per host and
   * `resolvedTtlMs`, by one request for all the requests that want the host meanwhile.
   */
  lookup?: LookupFunction;
  /**
   * How long a host's vetted addresses are reused (default 30 s; 0 resolves for every request). A
   * failed connection forgets them at once.
   */
  resolvedTtlMs?: number;
  /** The clock for `resolvedTtlMs` (tests); Date.now unless injected. */
  now?: () => number;
  /** Trusted CA certificates (PEM) in place of Node's bundled roots; for tests with a local TLS server. */
  ca?: string | Buffer | (string | Buffer)[];
}

interface VettedAddress {
  address: string;
  family: 4 | 6;
}

/** A host's DNS answer; `refused` says why one of its addresses may not be connected to. */
interface Resolved {
  addresses: VettedAddress[];
  refused?: string;
}

/** Request headers the transport owns; a caller's values are dropped. */
const TRANSPORT_HEADERS = new Set([
  'connection',
  'content-length',
  'expect',
  'host',
  'keep-alive',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Methods the Fetch standard upper-cases; any other method is sent as given. */
const NORMALIZED_METHODS = new Set(['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT']);
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

function normalizeMethod(raw: string | undefined): string {
  const method = raw ?? 'GET';
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(method)) throw new TypeError('invalid request method');
  const upper = method.toUpperCase();
  if (upper === 'CONNECT' || upper === 'TRACE' || upper === 'TRACK') {
    throw new TypeError(`request method ${upper} is not allowed`);
  }
  return NORMALIZED_METHODS.has(upper) ? upper : method;
}

function encodeBody(body: unknown, headers: Headers): Buffer | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'string') {
    if (!headers.has('content-type')) headers.set('content-type', 'text/plain;charset=UTF-8');
    return Buffer.from(body, 'utf8');
  }
  if (body instanceof URLSearchParams) {
    if (!headers.has('content-type')) {
      headers.set('content-type', 'application/x-www-form-urlencoded;charset=UTF-8');
    }
    return Buffer.from(body.toString(), 'utf8');
  }
  if (body instanceof ArrayBuffer) return Buffer.from(new Uint8Array(body));
  if (ArrayBuffer.isView(body)) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError('guarded fetch supports string, URLSearchParams, ArrayBuffer and typed-array bodies');
}

function lookupAll(lookup: LookupFunction, hostname: string): Promise<VettedAddress[]> {
  return new Promise((resolve, reject) => {
    lookup(hostname, { all: true }, (err, address, family) => {
      if (err) {
        reject(new TypeError(`could not resolve ${hostname}: ${err.code ?? err.message}`, { cause: err }));
        return;
      }
      const list = Array.isArray(address) ? address : [{ address, family: family ?? 0 }];
      resolve(list.map((entry) => ({ address: entry.address, family: isIP(entry.address) === 6 ? 6 : 4 })));
    });
  });
}

/** A lookup for http(s).request that answers only with the addresses already vetted. */
function pinnedLookup(addresses: readonly VettedAddress[]): LookupFunction {
  return (_hostname, options, callback) => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family;
    const usable = family === 4 || family === 6 ? addresses.filter((a) => a.family === family) : addresses;
    process.nextTick(() => {
      const first = usable[0];
      if (!first) {
        const err: NodeJS.ErrnoException = new Error(`no vetted IPv${family} address`);
        err.code = 'ENOTFOUND';
        callback(err, '', undefined);
      } else if (options.all) {
        callback(
          null,
          usable.map((a) => ({ address: a.address, family: a.family })),
        );
      } else {
        callback(null, first.address, first.family);
      }
    });
  };
}

/** Rejects with the signal's reason as soon as it aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

interface PreparedRequest {
  url: URL;
  method: string;
  headers: Headers;
  body: Buffer | undefined;
  signal: AbortSignal | undefined;
  redirect: NonNullable<RequestInit['redirect']>;
}

async function prepare(input: string | URL | Request, init: RequestInit): Promise<PreparedRequest> {
  const request = input instanceof Request ? input : undefined;
  const url = new URL(request ? request.url : String(input));
  const method = normalizeMethod(init.method ?? request?.method);
  const headers = new Headers(init.headers ?? request?.headers);
  let body: Buffer | undefined;
  if (init.body !== undefined) body = encodeBody(init.body, headers);
  else if (request?.body) body = Buffer.from(await request.arrayBuffer());
  if (body !== undefined && (method === 'GET' || method === 'HEAD')) {
    throw new TypeError(`a ${method} request cannot have a body`);
  }
  return {
    url,
    method,
    headers,
    body,
    signal: init.signal ?? request?.signal ?? undefined,
    redirect: init.redirect ?? request?.redirect ?? 'follow',
  };
}

function send(
  req: PreparedRequest,
  addresses: readonly VettedAddress[],
  agents: { http: http.Agent; https: https.Agent },
  onRequestError: () => void = () => {},
): Promise<Response> {
  const { url, method, signal } = req;
  const secure = url.protocol === 'https:';
  const headers: Record<string, string> = {};
  for (const [name, value] of req.headers) if (!TRANSPORT_HEADERS.has(name)) headers[name] = value;
  headers.accept ??= '*/*';
  // We do not decode content codings; ask for none.
  headers['accept-encoding'] ??= 'identity';
  if (req.body !== undefined) headers['content-length'] = String(req.body.byteLength);
  else if (method === 'POST' || method === 'PUT') headers['content-length'] = '0';

  return new Promise<Response>((resolve, reject) => {
    const options: https.RequestOptions = {
      protocol: url.protocol,
      // The original name: it goes into Host and SNI, and TLS verifies the certificate against it.
      hostname: stripBrackets(url.hostname),
      port: url.port === '' ? undefined : Number(url.port),
      path: `${url.pathname}${url.search}`,
      method,
      headers,
      agent: secure ? agents.https : agents.http,
      lookup: pinnedLookup(addresses),
    };
    const request = (secure ? https : http).request(options);
    let response: http.IncomingMessage | undefined;

    const onAbort = () => {
      const reason: unknown = signal?.reason;
      const error =
        reason instanceof Error ? reason : new DOMException('This operation was aborted', 'AbortError');
      request.destroy(error);
      response?.destroy(error);
      reject(reason);
    };
    const cleanup = () => signal?.removeEventListener('abort', onAbort);
    if (signal) {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
    }

    request.on('error', (err) => {
      cleanup();
      onRequestError();
      reject(new TypeError(`request to ${url.host} failed: ${err.message}`, { cause: err }));
    });
    request.on('response', (res) => {
      response = res;
      res.on('error', () => {}); // surfaced through the body stream
      res.on('close', cleanup);
      const status = res.statusCode ?? 0;
      if (req.redirect === 'error' && REDIRECT_STATUSES.has(status)) {
        res.destroy();
        cleanup();
        reject(new TypeError(`request to ${url.host} was redirected and redirect mode is "error"`));
        return;
      }
      const responseHeaders = new Headers();
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
        try {
          responseHeaders.append(res.rawHeaders[i] as string, res.rawHeaders[i + 1] as string);
        } catch {
          // a header the Fetch API cannot represent; dropped
        }
      }
      const nullBody = method === 'HEAD' || NULL_BODY_STATUSES.has(status);
      if (nullBody) res.resume();
      let result: Response;
      try {
        result = new Response(nullBody ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), {
          status,
          statusText: res.statusMessage ?? '',
          headers: responseHeaders,
        });
      } catch (err) {
        res.destroy();
        cleanup();
        reject(new TypeError(`invalid response from ${url.host}: ${(err as Error).message}`, { cause: err }));
        return;
      }
      url.hash = '';
      Object.defineProperty(result, 'url', { value: url.href });
      resolve(result);
    });
    request.end(req.body);
  });
}

/**
 * How long a host's vetted addresses are reused. A sweep's grants all go to one token endpoint, and
 * resolving its name for every grant (where nothing caches DNS, as in Lambda: a query each) cost
 * 0.05–0.12 ms of CPU per grant here (bench/fetch-ab.ts), besides the round trip.
 */
const RESOLVED_TTL_MS = 30_000;

/**
 * A fetch for provider requests. Refuses (ForbiddenDestinationError) non-https URLs and hosts that
 * resolve to any non-public address, unless `allowInsecureHttp`; resolves a host (reusing the answer
 * for `resolvedTtlMs`) and connects only to the addresses it vetted, keeping the hostname for Host,
 * SNI and certificate verification.
 * Redirects are never followed (the 3xx response is returned, as with `redirect: 'manual'`; 'error'
 * rejects), since following one would skip the check. Bodies: string, URLSearchParams, ArrayBuffer,
 * typed arrays. The response body is streamed and not decoded (`accept-encoding: identity` is sent).
 */
export function createGuardedFetch(options: GuardedFetchOptions): FetchLike {
  const allow = options.allowInsecureHttp;
  const lookup = options.lookup ?? (dns.lookup as LookupFunction);
  const ttlMs = options.resolvedTtlMs ?? RESOLVED_TTL_MS;
  const now = options.now ?? Date.now;
  // Answers with a refused address are not kept: the next request asks DNS again.
  const resolved = new Map<string, { answer: Promise<Resolved>; at: number }>();
  const resolve = (host: string): Promise<Resolved> => {
    const hit = resolved.get(host);
    if (hit && now() - hit.at < ttlMs) return hit.answer;
    const answer = lookupAll(lookup, host).then((addresses): Resolved => {
      if (allow) return { addresses };
      for (const { address } of addresses) {
        const reason = forbiddenAddressReason(address);
        if (reason !== undefined) return { addresses, refused: `it resolves to ${address}, ${reason}` };
      }
      return { addresses };
    });
    if (ttlMs > 0) {
      const entry = { answer, at: now() };
      resolved.set(host, entry);
      const drop = () => {
        if (resolved.get(host) === entry) resolved.delete(host);
      };
      answer.then((a) => (a.refused === undefined && a.addresses.length > 0 ? undefined : drop()), drop);
    }
    return answer;
  };
  const forget = (host: string) => resolved.delete(host);
  // Keep-alive: a sweep sends many grants to the same token endpoint, and a new connection (a TLS
  // handshake) per grant costs the provider's round trips and the keeper's CPU (bench: 1.5x the sweep
  // time). A pooled socket is only reused for the same host and port, and it was opened to an address
  // vetted when it was created, so every connection still goes to a vetted address.
  const agents = {
    http: new http.Agent({ keepAlive: true }),
    https: new https.Agent({ keepAlive: true, ...(options.ca === undefined ? {} : { ca: options.ca }) }),
  };

  return async (input, init = {}) => {
    const req = await prepare(input, init);
    req.signal?.throwIfAborted();
    const { url } = req;
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new ForbiddenDestinationError(url.host, `scheme ${url.protocol} is not allowed`);
    }
    if (url.protocol === 'http:' && !allow) {
      throw new ForbiddenDestinationError(url.host, 'plain http is not allowed, use https');
    }
    if (url.username !== '' || url.password !== '') {
      throw new ForbiddenDestinationError(url.host, 'URL must not contain credentials');
    }
    if (!allow) {
      const reason = hostnameReason(url.hostname);
      if (reason !== undefined) throw new ForbiddenDestinationError(url.host, reason);
    }

    const host = stripBrackets(url.hostname);
    const family = isIP(host);
    if (family !== 0) {
      if (!allow) {
        const reason = forbiddenAddressReason(host);
        if (reason !== undefined) throw new ForbiddenDestinationError(url.host, reason);
      }
      return send(req, [{ address: host, family: family === 6 ? 6 : 4 }], agents);
    }
    const { addresses, refused } = await untilAborted(resolve(host), req.signal);
    if (addresses.length === 0) throw new TypeError(`could not resolve ${host}: no addresses`);
    if (refused !== undefined) throw new ForbiddenDestinationError(url.host, refused);
    return send(req, addresses, agents, () => forget(host));
  };
}
