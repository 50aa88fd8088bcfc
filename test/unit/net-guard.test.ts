import { execFileSync } from 'node:child_process';
import dc from 'node:diagnostics_channel';
import type { LookupAddress } from 'node:dns';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo, type LookupFunction } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ProviderConfig } from '../../functions/core/model.js';
import { OAuthClient } from '../../functions/core/oauth/client.js';
import {
  checkProviderUrl,
  createGuardedFetch,
  ForbiddenDestinationError,
  forbiddenAddressReason,
  isForbiddenAddress,
} from '../../functions/core/oauth/net-guard.js';
import { silentLogger } from '../../functions/core/ports.js';

// --- helpers -------------------------------------------------------------------------------------

interface FakeLookup {
  lookup: LookupFunction;
  calls: { hostname: string; all: boolean | undefined }[];
}

/** A DNS stand-in: `answer(hostname, callIndex)` gives the addresses, or an Error to fail with. */
function fakeLookup(answer: (hostname: string, call: number) => string[] | Error | 'never'): FakeLookup {
  const calls: FakeLookup['calls'] = [];
  const lookup: LookupFunction = (hostname, options, callback) => {
    calls.push({ hostname, all: options.all });
    const result = answer(hostname, calls.length - 1);
    if (result === 'never') return;
    setImmediate(() => {
      if (result instanceof Error) {
        callback(Object.assign(result, { code: 'ENOTFOUND' }), '', undefined);
        return;
      }
      const list: LookupAddress[] = result.map((address) => ({
        address,
        family: address.includes(':') ? 6 : 4,
      }));
      if (options.all) callback(null, list);
      else callback(null, list[0]?.address ?? '', list[0]?.family);
    });
  };
  return { lookup, calls };
}

const always = (...addresses: string[]) => fakeLookup(() => addresses);

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

interface TestServer {
  port: number;
  requests: Seen[];
  connections: number;
  close(): Promise<void>;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** A plain HTTP server on 127.0.0.1 that records each request (with its body) before `handle` answers. */
async function httpServer(
  handle: (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => void,
): Promise<TestServer> {
  const requests: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const seen: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(seen);
      handle(req, res, seen);
    });
  });
  const state: TestServer = {
    port: 0,
    requests,
    connections: 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  server.on('connection', () => state.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  cleanups.push(state.close);
  return state;
}

/**
 * A throwaway self-signed certificate for DNS:provider.test (P-256, valid one day), made by openssl when
 * the tests load, so no private key lives in the repository; it is its own CA.
 */
function makeTestCertificate(): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'tokenkeeper-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=provider.test',
        '-addext',
        'subjectAltName=DNS:provider.test',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
      ],
      { stdio: 'ignore' },
    );
    return {
      key: readFileSync(join(dir, 'key.pem'), 'utf8'),
      cert: readFileSync(join(dir, 'cert.pem'), 'utf8'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const { key: TEST_TLS_KEY, cert: TEST_TLS_CERT } = makeTestCertificate();

/** An HTTPS server on 127.0.0.1 with the provider.test certificate; records SNI and Host. */
async function tlsServer(): Promise<{ port: number; seen: { servername: unknown; host?: string }[] }> {
  const seen: { servername: unknown; host?: string }[] = [];
  const server = https.createServer({ key: TEST_TLS_KEY, cert: TEST_TLS_CERT }, (req, res) => {
    seen.push({
      servername: (req.socket as unknown as { servername: unknown }).servername,
      host: req.headers.host,
    });
    res.end('secure');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as AddressInfo).port, seen };
}

/** A TCP server on 127.0.0.1 that only counts connections (it must receive none). */
async function tcpServer(): Promise<{ port: number; connections: () => number }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as AddressInfo).port, connections: () => connections };
}

/** Counts client sockets opened by this process while `fn` runs. */
async function countSockets(fn: () => Promise<unknown>): Promise<number> {
  let sockets = 0;
  const onSocket = () => sockets++;
  dc.subscribe('net.client.socket', onSocket);
  try {
    await fn().catch(() => {});
  } finally {
    dc.unsubscribe('net.client.socket', onSocket);
  }
  return sockets;
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// --- isForbiddenAddress --------------------------------------------------------------------------

describe('isForbiddenAddress', () => {
  it.each([
    ['0.0.0.0', '"this network" 0/8'],
    ['0.255.255.255', '"this network" 0/8, last'],
    ['10.0.0.1', 'private 10/8'],
    ['10.255.255.255', 'private 10/8, last'],
    ['100.64.0.1', 'CGNAT 100.64/10'],
    ['100.100.100.200', 'Alibaba Cloud metadata in 100.64/10'],
    ['100.127.255.255', 'CGNAT 100.64/10, last'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback 127/8'],
    ['169.254.169.254', 'cloud metadata'],
    ['169.254.170.2', 'ECS task metadata'],
    ['169.254.0.1', 'link-local'],
    ['172.16.0.1', 'private 172.16/12'],
    ['172.31.255.255', 'private 172.16/12, last'],
    ['192.0.0.1', 'IETF protocol assignments'],
    ['192.0.0.192', 'Oracle Cloud Classic metadata'],
    ['192.0.2.1', 'TEST-NET-1'],
    ['192.88.99.1', '6to4 relay anycast'],
    ['192.168.1.1', 'private 192.168/16'],
    ['198.18.0.1', 'benchmarking 198.18/15'],
    ['198.19.255.255', 'benchmarking 198.18/15, last'],
    ['198.51.100.7', 'TEST-NET-2'],
    ['203.0.113.9', 'TEST-NET-3'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast, last block'],
    ['240.0.0.1', 'reserved 240/4'],
    ['255.255.255.255', 'broadcast'],
  ])('refuses IPv4 %s (%s)', (ip) => {
    expect(isForbiddenAddress(ip)).toBe(true);
  });

  it.each([
    '93.184.216.34',
    '8.8.8.8',
    '1.1.1.1',
    '9.255.255.255',
    '11.0.0.0',
    '100.63.255.255',
    '100.128.0.0',
    '126.255.255.255',
    '128.0.0.0',
    '169.253.255.255',
    '169.255.0.0',
    '172.15.255.255',
    '172.32.0.0',
    '192.0.1.0',
    '192.0.3.0',
    '192.167.255.255',
    '192.169.0.0',
    '198.17.255.255',
    '198.20.0.0',
    '198.51.99.255',
    '203.0.112.255',
    '223.255.255.255',
  ])('allows public IPv4 %s', (ip) => {
    expect(isForbiddenAddress(ip)).toBe(false);
  });

  it.each([
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback, uncompressed'],
    ['::ffff:127.0.0.1', 'IPv4-mapped loopback, dotted'],
    ['::ffff:7f00:1', 'IPv4-mapped loopback, hex'],
    ['::ffff:169.254.169.254', 'IPv4-mapped metadata'],
    ['::FFFF:A9FE:A9FE', 'IPv4-mapped metadata, upper case'],
    ['::ffff:10.0.0.1', 'IPv4-mapped private'],
    ['::ffff:0:a9fe:a9fe', 'IPv4-translated metadata'],
    ['64:ff9b::169.254.169.254', 'NAT64 metadata, dotted'],
    ['64:ff9b::a9fe:a9fe', 'NAT64 metadata, hex'],
    ['64:ff9b::7f00:1', 'NAT64 loopback'],
    ['64:ff9b:1::808:808', 'local-use NAT64'],
    ['::127.0.0.1', 'IPv4-compatible loopback'],
    ['::8.8.8.8', 'IPv4-compatible (deprecated)'],
    ['2002:a9fe:a9fe::1', '6to4 of metadata'],
    ['2002:7f00:1::', '6to4 of loopback'],
    ['100::1', 'discard-only'],
    ['2001::1', 'Teredo'],
    ['2001:2::1', 'benchmarking'],
    ['2001:db8::1', 'documentation'],
    ['2001:db8:ffff:ffff::1', 'documentation, high'],
    ['3fff::1', 'documentation (RFC 9637)'],
    ['5f00::1', 'SRv6 SIDs'],
    ['fc00::1', 'unique local'],
    ['fd00:ec2::254', 'AWS metadata over IPv6'],
    ['fdff:ffff::1', 'unique local, last'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local with a zone'],
    ['febf::1', 'link-local, last'],
    ['fec0::1', 'site-local'],
    ['ff02::1', 'multicast'],
    ['4000::1', 'outside global unicast'],
    ['1::1', 'outside global unicast, reserved'],
  ])('refuses IPv6 %s (%s)', (ip) => {
    expect(isForbiddenAddress(ip)).toBe(true);
  });

  it.each([
    '2606:4700::1111',
    '2001:4860:4860::8888',
    '2a00:1450:4001::1',
    '2000::1',
    '2001:200::1',
    '2001:db7::1',
    '2001:db9::1',
    '3fff:1000::1',
    '::ffff:8.8.8.8',
    '::ffff:5db8:d822',
    '::ffff:0:808:808',
    '64:ff9b::8.8.8.8',
    '64:ff9b::5db8:d822',
    '2002:808:808::1',
  ])('allows public IPv6 %s', (ip) => {
    expect(isForbiddenAddress(ip)).toBe(false);
  });

  it.each(['', 'example.com', '1.2.3', '256.1.1.1', '01.2.3.4', '::ffff::1', 'fe80::1::2'])(
    'fails closed on %j, which is not an IP address',
    (value) => {
      expect(isForbiddenAddress(value)).toBe(true);
    },
  );

  it.each([
    ['0.0.0.0', '"this network" (0.0.0.0/8)'],
    ['10.1.2.3', 'private (10.0.0.0/8)'],
    ['100.64.0.1', 'carrier-grade NAT (100.64.0.0/10)'],
    ['127.0.0.1', 'loopback (127.0.0.0/8)'],
    ['169.254.170.2', 'link-local, incl. cloud metadata (169.254.0.0/16)'],
    ['172.20.0.1', 'private (172.16.0.0/12)'],
    ['192.0.0.8', 'IETF protocol assignments (192.0.0.0/24)'],
    ['192.0.2.1', 'documentation (192.0.2.0/24)'],
    ['192.88.99.1', '6to4 relay anycast (192.88.99.0/24)'],
    ['192.168.0.1', 'private (192.168.0.0/16)'],
    ['198.18.0.1', 'benchmarking (198.18.0.0/15)'],
    ['198.51.100.1', 'documentation (198.51.100.0/24)'],
    ['203.0.113.1', 'documentation (203.0.113.0/24)'],
    ['224.0.0.251', 'multicast (224.0.0.0/4)'],
    ['255.255.255.255', 'broadcast (255.255.255.255/32)'],
    ['250.1.1.1', 'reserved (240.0.0.0/4)'],
    ['::', 'unspecified (::/128)'],
    ['::1', 'loopback (::1/128)'],
    ['::1.2.3.4', 'IPv4-compatible (::/96)'],
    ['64:ff9b:1::1', 'local-use NAT64 (64:ff9b:1::/48)'],
    ['100::1', 'discard-only (100::/64)'],
    ['2001::1', 'IETF protocol assignments (2001::/23)'],
    ['2001:db8::1', 'documentation (2001:db8::/32)'],
    ['3fff::1', 'documentation (3fff::/20)'],
    ['5f00::1', 'SRv6 SIDs (5f00::/16)'],
    ['fd00:ec2::254', 'unique local, incl. cloud metadata (fc00::/7)'],
    ['fe80::1', 'link-local (fe80::/10)'],
    ['fec0::1', 'site-local (deprecated) (fec0::/10)'],
    ['ff02::1', 'multicast (ff00::/8)'],
    ['4000::1', 'not global unicast (outside 2000::/3)'],
    ['::ffff:10.0.0.1', 'IPv4-mapped (::ffff:0:0/96) form of 10.0.0.1, private (10.0.0.0/8)'],
    ['::ffff:0:10.0.0.1', 'IPv4-translated (::ffff:0:0:0/96) form of 10.0.0.1, private (10.0.0.0/8)'],
    ['64:ff9b::10.0.0.1', 'NAT64 (64:ff9b::/96) form of 10.0.0.1, private (10.0.0.0/8)'],
    ['2002:a00:1::', '6to4 (2002::/16) form of 10.0.0.1, private (10.0.0.0/8)'],
  ])('gives the reason for %s: %s', (ip, reason) => {
    expect(forbiddenAddressReason(ip)).toBe(reason);
  });

  it('explains the reason, naming the range and any embedded IPv4 address', () => {
    expect(forbiddenAddressReason('169.254.169.254')).toBe(
      'link-local, incl. cloud metadata (169.254.0.0/16)',
    );
    expect(forbiddenAddressReason('::ffff:a9fe:a9fe')).toBe(
      'IPv4-mapped (::ffff:0:0/96) form of 169.254.169.254, link-local, incl. cloud metadata (169.254.0.0/16)',
    );
    expect(forbiddenAddressReason('fd00:ec2::254')).toBe('unique local, incl. cloud metadata (fc00::/7)');
    expect(forbiddenAddressReason('93.184.216.34')).toBeUndefined();
  });
});

// --- checkProviderUrl ----------------------------------------------------------------------------

describe('checkProviderUrl', () => {
  const strict = { allowInsecureHttp: false };
  const insecure = { allowInsecureHttp: true };

  it.each([
    'https://as.example.com',
    'https://as.example.com/.well-known/openid-configuration?x=1',
    'https://as.example.com:8443/token',
    'https://93.184.216.34/token',
    'https://[2606:4700::1111]/token',
    'https://localhost.example.com/',
    'https://metadata.example.com/',
  ])('accepts %s', (url) => {
    expect(checkProviderUrl(url, strict)).toBeUndefined();
  });

  it.each([
    'http://as.example.com/token',
    'ftp://as.example.com/',
    'file:///etc/passwd',
    'javascript:alert(1)',
  ])('requires https: %s', (url) => {
    expect(checkProviderUrl(url, strict)).toBe('must be an https URL');
  });

  it.each(['as.example.com/token', '', '/token'])('requires an absolute URL: %j', (url) => {
    expect(checkProviderUrl(url, strict)).toBe('must be an absolute URL');
  });

  it.each(['https://user:s3cr3t-pw@as.example.com/', 'https://user@as.example.com/'])(
    'refuses credentials without echoing them: %s',
    (url) => {
      const problem = checkProviderUrl(url, strict);
      expect(problem).toBe('must not contain credentials');
      expect(problem).not.toContain('s3cr3t');
    },
  );

  it.each([
    ['https://127.0.0.1/token', 'loopback'],
    ['https://169.254.169.254/latest/meta-data/', 'link-local'],
    ['https://10.1.2.3/', 'private'],
    ['https://[::1]/', 'loopback'],
    ['https://[fd00:ec2::254]/', 'unique local'],
    ['https://[::ffff:169.254.169.254]/', '169.254.169.254'],
    ['https://[64:ff9b::a9fe:a9fe]/', '169.254.169.254'],
    ['https://2852039166/', 'link-local'], // 169.254.169.254 as one decimal number
    ['https://0x7f.1/', 'loopback'], // 127.0.0.1, hex and short form
    ['https://0/', '"this network"'],
    ['https://localhost/', 'loopback name'],
    ['https://LOCALHOST./', 'loopback name'],
    ['https://api.localhost/', 'loopback name'],
    ['https://metadata.google.internal/computeMetadata/v1/', 'cloud metadata name'],
    ['https://metadata/', 'cloud metadata name'],
    ['https://instance-data.ec2.internal/', 'cloud metadata name'],
    ['https://instance-data/', 'cloud metadata name'],
    ['https://metadata.goog/', 'cloud metadata name'],
    ['https://localhost.localdomain/', 'loopback name'],
    ['https://ip6-localhost/', 'loopback name'],
    ['https://ip6-loopback/', 'loopback name'],
  ])('refuses the non-public destination %s', (url, reason) => {
    const problem = checkProviderUrl(url, strict);
    expect(problem).toMatch(/^must not point to a non-public destination: /);
    expect(problem).toContain(reason);
  });

  it.each([
    'http://127.0.0.1:8080/token',
    'http://localhost:3000/',
    'https://169.254.169.254/',
    'http://[::1]:9000/',
  ])('TOKENKEEPER_ALLOW_INSECURE_HTTP lifts both rules: %s', (url) => {
    expect(checkProviderUrl(url, insecure)).toBeUndefined();
  });

  it('keeps refusing other schemes and credentials when insecure http is allowed', () => {
    expect(checkProviderUrl('ftp://127.0.0.1/', insecure)).toBe('must be an https URL');
    expect(checkProviderUrl('http://u:p@127.0.0.1/', insecure)).toBe('must not contain credentials');
  });
});

// --- createGuardedFetch: refusals ----------------------------------------------------------------

describe('createGuardedFetch refuses', () => {
  it('a hostname resolving to 169.254.169.254, without opening any socket', async () => {
    // Prepare
    const dns = always('169.254.169.254');
    const guarded = createGuardedFetch({ allowInsecureHttp: false, lookup: dns.lookup });
    let error: Error | undefined;

    // Act
    const sockets = await countSockets(async () => {
      error = await rejection(guarded('https://metadata.attacker.example/latest/meta-data/', {}));
    });

    // Assess
    expect(error).toBeInstanceOf(ForbiddenDestinationError);
    expect(error?.message).toBe(
      'refusing to connect to metadata.attacker.example: it resolves to 169.254.169.254, ' +
        'link-local, incl. cloud metadata (169.254.0.0/16)',
    );
    expect(sockets).toBe(0);
    expect(dns.calls).toEqual([{ hostname: 'metadata.attacker.example', all: true }]);
  });

  it('a hostname resolving to a listening loopback server, which receives nothing', async () => {
    // Prepare
    const server = await tcpServer();
    const guarded = createGuardedFetch({ allowInsecureHttp: false, lookup: always('127.0.0.1').lookup });

    // Act
    const error = await rejection(
      guarded(`https://provider.example:${server.port}/token`, { method: 'POST' }),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));

    // Assess
    expect(error).toBeInstanceOf(ForbiddenDestinationError);
    expect((error as ForbiddenDestinationError).host).toBe(`provider.example:${server.port}`);
    expect(server.connections()).toBe(0);
  });

  it.each([
    [['93.184.216.34', '10.0.0.7'], '10.0.0.7'],
    [['10.0.0.7', '93.184.216.34'], '10.0.0.7'],
    [['2606:4700::1111', '93.184.216.34', 'fd00::1'], 'fd00::1'],
    [['93.184.216.34', '::ffff:127.0.0.1'], '::ffff:127.0.0.1'],
  ])('a hostname when any of its addresses %j is private', async (addresses, bad) => {
    // Prepare
    const guarded = createGuardedFetch({ allowInsecureHttp: false, lookup: always(...addresses).lookup });

    // Act
    const sockets = await countSockets(async () => {
      const error = await rejection(guarded('https://as.example.com/token', {}));
      expect(error).toBeInstanceOf(ForbiddenDestinationError);
      expect(error.message).toContain(`it resolves to ${bad}`);
    });

    // Assess
    expect(sockets).toBe(0);
  });

  it('names the host and reason, never the path or query', async () => {
    // Prepare
    const guarded = createGuardedFetch({ allowInsecureHttp: false, lookup: always('192.168.0.10').lookup });

    // Act
    const error = await rejection(guarded('https://as.example.com/secret-path?code=SECRETCODE', {}));

    // Assess
    expect(error).toBeInstanceOf(ForbiddenDestinationError);
    expect(error.name).toBe('ForbiddenDestinationError');
    expect((error as ForbiddenDestinationError).code).toBe('forbidden_destination');
    expect(error.message).toContain('as.example.com');
    expect(error.message).toContain('private (192.168.0.0/16)');
    expect(error.message).not.toContain('secret-path');
    expect(error.message).not.toContain('SECRETCODE');
  });

  it('plain http unless insecure http is allowed, before resolving anything', async () => {
    // Prepare
    const dns = always('93.184.216.34');
    const guarded = createGuardedFetch({ allowInsecureHttp: false, lookup: dns.lookup });

    // Act
    const error = await rejection(guarded('http://as.example.com/token', { method: 'POST' }));

    // Assess
    expect(error).toBeInstanceOf(ForbiddenDestinationError);
    expect(error.message).toBe('refusing to connect to as.example.com: plain http is not allowed, use https');
    expect(dns.calls).toHaveLength(0);
  });

  it.each(['ftp://as.example.com/', 'file:///etc/passwd', 'data:text/plain,hi'])(
    'the non-http scheme of %s, even when insecure http is allowed',
    async (url) => {
      const dns = always('93.184.216.34');
      const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup });
      expect(await rejection(guarded(url, {}))).toBeInstanceOf(ForbiddenDestinationError);
      expect(dns.calls).toHaveLength(0);
    },
  );

  it('credentials in the URL', async () => {
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const error = await rejection(guarded('http://user:pw@as.example.com/', {}));
    expect(error).toBeInstanceOf(ForbiddenDestinationError);
    expect(error.message).not.toContain('pw');
  });

  it.each([
    'https://127.0.0.1/token',
    'https://169.254.169.254/latest/meta-data/',
    'https://[::1]/',
    'https://[::ffff:127.0.0.1]/',
    'https://[fd00:ec2::254]/',
    'https://2852039166/',
    'https://localhost/',
    'https://sub.localhost/',
    'https://metadata.google.internal/',
  ])('%s without resolving or connecting', async (url) => {
    // Prepare: DNS would claim a public address; the name or literal alone must decide.
    const dns = always('93.184.216.34');
    const guarded = createGuardedFetch({ allowInsecureHttp: false, lookup: dns.lookup });

    // Act
    const sockets = await countSockets(async () => {
      expect(await rejection(guarded(url, {}))).toBeInstanceOf(ForbiddenDestinationError);
    });

    // Assess
    expect(sockets).toBe(0);
    expect(dns.calls).toHaveLength(0);
  });

  it('a DNS answer that is not an IP address (fail closed)', async () => {
    const guarded = createGuardedFetch({ allowInsecureHttp: false, lookup: always('not-an-ip').lookup });
    const error = await rejection(guarded('https://as.example.com/', {}));
    expect(error).toBeInstanceOf(ForbiddenDestinationError);
    expect(error.message).toContain('not an IP address');
  });
});

describe('createGuardedFetch failures that are not refusals', () => {
  it('reports a failed lookup as a TypeError naming the host', async () => {
    const guarded = createGuardedFetch({
      allowInsecureHttp: false,
      lookup: fakeLookup(() => new Error('getaddrinfo ENOTFOUND')).lookup,
    });
    const error = await rejection(guarded('https://nowhere.example.com/token?x=secret', {}));
    expect(error).toBeInstanceOf(TypeError);
    expect(error).not.toBeInstanceOf(ForbiddenDestinationError);
    expect(error.message).toBe('could not resolve nowhere.example.com: ENOTFOUND');
  });

  it('reports an empty DNS answer as a TypeError', async () => {
    const guarded = createGuardedFetch({ allowInsecureHttp: false, lookup: always().lookup });
    const error = await rejection(guarded('https://as.example.com/', {}));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toBe('could not resolve as.example.com: no addresses');
  });

  it('reports a refused connection as a TypeError with the cause', async () => {
    const port = await closedPort();
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const error = await rejection(guarded(`http://as.example.com:${port}/`, {}));
    expect(error).toBeInstanceOf(TypeError);
    expect((error.cause as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
  });
});

// --- createGuardedFetch: requests ----------------------------------------------------------------

describe('createGuardedFetch with TOKENKEEPER_ALLOW_INSECURE_HTTP talks to a local server', () => {
  it('sends method, headers and a form body, and returns status, headers and a streamed body', async () => {
    // Prepare
    let releaseSecondChunk = () => {};
    const secondChunk = new Promise<void>((resolve) => {
      releaseSecondChunk = resolve;
    });
    const server = await httpServer((_req, res) => {
      res.writeHead(201, 'Made It', [
        ['content-type', 'application/json'],
        ['x-multi', 'a'],
        ['x-multi', 'b'],
        ['set-cookie', 'a=1'],
        ['set-cookie', 'b=2'],
      ]);
      res.write('{"part":');
      void secondChunk.then(() => res.end('2}'));
    });
    const dns = always('127.0.0.1');
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup });
    const url = `http://provider.test:${server.port}/oauth/token?x=1#frag`;

    // Act
    const response = await guarded(url, {
      method: 'post',
      headers: { accept: 'application/json', 'x-custom': 'yes', host: 'evil.example', connection: 'upgrade' },
      body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'rt 1' }),
      redirect: 'manual',
    });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    releaseSecondChunk();
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += Buffer.from(value).toString('utf8');
    }

    // Assess: the request
    expect(dns.calls).toEqual([{ hostname: 'provider.test', all: true }]);
    const [seen] = server.requests as [Seen];
    expect(seen.method).toBe('POST');
    expect(seen.url).toBe('/oauth/token?x=1');
    expect(seen.headers.host).toBe(`provider.test:${server.port}`);
    expect(seen.headers['content-type']).toBe('application/x-www-form-urlencoded;charset=UTF-8');
    expect(seen.headers['content-length']).toBe(String(Buffer.byteLength(seen.body)));
    expect(seen.headers.accept).toBe('application/json');
    expect(seen.headers['x-custom']).toBe('yes');
    expect(seen.headers.connection).toBe('keep-alive');
    expect(new URLSearchParams(seen.body).get('refresh_token')).toBe('rt 1');
    // Assess: the response
    expect(response).toBeInstanceOf(Response);
    expect(response.status).toBe(201);
    expect(response.statusText).toBe('Made It');
    expect(response.url).toBe(`http://provider.test:${server.port}/oauth/token?x=1`);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(response.headers.get('x-multi')).toBe('a, b');
    expect(response.headers.getSetCookie()).toEqual(['a=1', 'b=2']);
    expect(Buffer.from(first.value as Uint8Array).toString('utf8')).toBe('{"part":');
    expect(rest).toBe('2}');
  });

  it.each([
    ['a Headers object', new Headers({ 'x-one': '1' })],
    ['an array of pairs', [['x-one', '1']] as [string, string][]],
    ['a record', { 'X-One': '1' }],
  ])('accepts headers as %s', async (_kind, headers) => {
    const server = await httpServer((_req, res) => res.end());
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    await guarded(`http://provider.test:${server.port}/`, { headers });
    expect(server.requests[0]?.headers['x-one']).toBe('1');
    expect(server.requests[0]?.method).toBe('GET');
  });

  it.each([
    ['a string', 'hello', 'text/plain;charset=UTF-8', 'hello'],
    ['a Uint8Array', new TextEncoder().encode('bytes'), undefined, 'bytes'],
    ['an ArrayBuffer', new TextEncoder().encode('buffer').buffer, undefined, 'buffer'],
  ])('sends %s body', async (_kind, body, contentType, text) => {
    const server = await httpServer((_req, res) => res.end('ok'));
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const response = await guarded(`http://provider.test:${server.port}/`, { method: 'PUT', body });
    expect(await response.text()).toBe('ok');
    expect(server.requests[0]?.body).toBe(text);
    expect(server.requests[0]?.headers['content-type']).toBe(contentType);
    expect(server.requests[0]?.headers['content-length']).toBe(String(text.length));
  });

  it('sends fetch defaults: accept */*, accept-encoding identity, content-length 0 on an empty POST', async () => {
    const server = await httpServer((_req, res) => res.end());
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    await guarded(`http://provider.test:${server.port}/`, { method: 'POST' });
    expect(server.requests[0]?.headers).toMatchObject({
      accept: '*/*',
      'accept-encoding': 'identity',
      'content-length': '0',
    });
  });

  it('refuses a body on GET like fetch does', async () => {
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const error = await rejection(guarded('http://provider.test/', { body: 'x' }));
    expect(error).toBeInstanceOf(TypeError);
  });

  it('accepts a Request as input', async () => {
    const server = await httpServer((_req, res) => res.end('ok'));
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const request = new Request(`http://provider.test:${server.port}/r`, {
      method: 'POST',
      body: 'from-request',
      headers: { 'x-from': 'request' },
    });
    const response = await guarded(request);
    expect(response.status).toBe(200);
    expect(server.requests[0]).toMatchObject({ method: 'POST', url: '/r', body: 'from-request' });
    expect(server.requests[0]?.headers['x-from']).toBe('request');
  });

  it('connects to a literal 127.0.0.1 without resolving', async () => {
    const server = await httpServer((_req, res) => res.end('direct'));
    const dns = always('192.0.2.1');
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup });
    const response = await guarded(`http://127.0.0.1:${server.port}/`);
    expect(await response.text()).toBe('direct');
    expect(dns.calls).toHaveLength(0);
  });

  it('gives 204 and HEAD responses a null body', async () => {
    const server = await httpServer((req, res) => {
      res.writeHead(req.method === 'HEAD' ? 200 : 204, { 'x-seen': req.method ?? '' });
      res.end();
    });
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const noContent = await guarded(`http://provider.test:${server.port}/`, { method: 'DELETE' });
    const head = await guarded(`http://provider.test:${server.port}/`, { method: 'HEAD' });
    expect(noContent.status).toBe(204);
    expect(noContent.body).toBeNull();
    expect(head.status).toBe(200);
    expect(head.body).toBeNull();
    expect(head.headers.get('x-seen')).toBe('HEAD');
  });

  it('does not follow a redirect: the 302 comes back as it is', async () => {
    // Prepare
    const server = await httpServer((req, res) => {
      if (req.url === '/start') res.writeHead(302, { location: '/elsewhere' }).end('moved');
      else res.end('followed');
    });
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });

    // Act
    const manual = await guarded(`http://provider.test:${server.port}/start`, { redirect: 'manual' });
    const byDefault = await guarded(`http://provider.test:${server.port}/start`);

    // Assess
    expect(manual.status).toBe(302);
    expect(manual.headers.get('location')).toBe('/elsewhere');
    expect(await manual.text()).toBe('moved');
    expect(byDefault.status).toBe(302);
    expect(server.requests.map((r) => r.url)).toEqual(['/start', '/start']);
  });

  it('rejects a redirect when redirect is "error"', async () => {
    const server = await httpServer((_req, res) => res.writeHead(307, { location: '/x' }).end());
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const error = await rejection(guarded(`http://provider.test:${server.port}/`, { redirect: 'error' }));
    expect(error).toBeInstanceOf(TypeError);
  });

  it('connects to the address it resolved: one lookup per request, later answers unused', async () => {
    // Prepare: the first answer is the test server; any later answer is an unroutable address.
    const server = await httpServer((_req, res) => res.end('pinned'));
    const dns = fakeLookup((_host, call) => (call === 0 ? ['127.0.0.1'] : ['192.0.2.1']));
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup });

    // Act
    const response = await guarded(`http://rebinding.test:${server.port}/`, {
      signal: AbortSignal.timeout(5_000),
    });

    // Assess
    expect(await response.text()).toBe('pinned');
    expect(dns.calls).toHaveLength(1);
    expect(server.connections).toBe(1);
  });

  it('resolves with the system resolver by default (localhost, possibly ::1 and 127.0.0.1)', async () => {
    const server = await httpServer((_req, res) => res.end('system dns'));
    const guarded = createGuardedFetch({ allowInsecureHttp: true });
    const response = await guarded(`http://localhost:${server.port}/`, {
      signal: AbortSignal.timeout(5_000),
    });
    expect(await response.text()).toBe('system dns');
  });

  it('connects over IPv6 to a vetted address and to a literal', async (ctx) => {
    const server = http.createServer((req, res) => res.end(`host=${req.headers.host}`));
    const listening = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(0, '::1', () => resolve(true));
    });
    if (!listening) ctx.skip('no IPv6 loopback here');
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const { port } = server.address() as AddressInfo;
    const dns = always('::1');
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup });
    expect(await (await guarded(`http://v6.test:${port}/`)).text()).toBe(`host=v6.test:${port}`);
    expect(await (await guarded(`http://[::1]:${port}/`)).text()).toBe(`host=[::1]:${port}`);
    expect(dns.calls).toHaveLength(1);
  });

  it('uses only vetted addresses when a name has several', async () => {
    const server = await httpServer((_req, res) => res.end('ok'));
    const dns = always('127.0.0.1', '127.0.0.2');
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup });
    const response = await guarded(`http://multi.test:${server.port}/`);
    expect(await response.text()).toBe('ok');
    expect(dns.calls).toHaveLength(1);
  });
});

describe('createGuardedFetch reuses a vetted DNS answer', () => {
  it('resolves a name once for the requests within 30 s by default, concurrent ones included', async () => {
    // Prepare
    const server = await httpServer((_req, res) => res.end('ok'));
    const dns = always('127.0.0.1');
    let now = 1_000_000;
    const guarded = createGuardedFetch({
      allowInsecureHttp: true,
      lookup: dns.lookup,
      now: () => now,
    });
    const get = async () => (await guarded(`http://provider.test:${server.port}/token`)).text();

    // Act
    const concurrent = await Promise.all([get(), get(), get()]);
    now += 29_999;
    const withinTtl = await get();
    const callsWithinTtl = dns.calls.length;
    now += 1;
    const afterTtl = await get();

    // Assess
    expect([...concurrent, withinTtl, afterTtl]).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
    expect(callsWithinTtl).toBe(1);
    expect(dns.calls).toHaveLength(2);
  });

  it('resolves for every request with resolvedTtlMs 0', async () => {
    const server = await httpServer((_req, res) => res.end('ok'));
    const dns = always('127.0.0.1');
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup, resolvedTtlMs: 0 });
    await (await guarded(`http://provider.test:${server.port}/`)).text();
    await (await guarded(`http://provider.test:${server.port}/`)).text();
    expect(dns.calls).toHaveLength(2);
  });

  it('asks DNS again after a failed connection', async () => {
    // Prepare: the first request goes to a port nothing listens on, the second to the server.
    const port = await closedPort();
    const server = await httpServer((_req, res) => res.end('ok'));
    const dns = always('127.0.0.1');
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup });

    // Act
    const error = await rejection(guarded(`http://provider.test:${port}/`));
    const response = await guarded(`http://provider.test:${server.port}/`);

    // Assess
    expect(error).toBeInstanceOf(TypeError);
    expect(await response.text()).toBe('ok');
    expect(dns.calls).toHaveLength(2);
  });

  it('keeps no answer it refused: the next request asks DNS again, and is refused again', async () => {
    // Prepare
    const dns = always('93.184.216.34', '10.0.0.7');
    const guarded = createGuardedFetch({ allowInsecureHttp: false, lookup: dns.lookup });

    // Act
    const sockets = await countSockets(async () => {
      const first = await rejection(guarded('https://as.example.com/token'));
      const second = await rejection(guarded('https://as.example.com:8443/token'));
      expect(first).toBeInstanceOf(ForbiddenDestinationError);
      expect((second as ForbiddenDestinationError).host).toBe('as.example.com:8443');
      expect(second.message).toContain('it resolves to 10.0.0.7');
    });

    // Assess
    expect(sockets).toBe(0);
    expect(dns.calls).toHaveLength(2);
  });

  it('keeps no failed lookup', async () => {
    const dns = fakeLookup((_host, call) =>
      call === 0 ? new Error('getaddrinfo EAI_AGAIN') : ['127.0.0.1'],
    );
    const server = await httpServer((_req, res) => res.end('ok'));
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup });
    expect(await rejection(guarded(`http://provider.test:${server.port}/`))).toBeInstanceOf(TypeError);
    expect(await (await guarded(`http://provider.test:${server.port}/`)).text()).toBe('ok');
    expect(dns.calls).toHaveLength(2);
  });
});

describe('createGuardedFetch over TLS', () => {
  it('connects to the vetted address but sends the hostname as SNI and Host', async () => {
    // Prepare
    const server = await tlsServer();
    const dns = always('127.0.0.1');
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup, ca: TEST_TLS_CERT });

    // Act
    const response = await guarded(`https://provider.test:${server.port}/token`);

    // Assess
    expect(await response.text()).toBe('secure');
    expect(server.seen).toEqual([{ servername: 'provider.test', host: `provider.test:${server.port}` }]);
    expect(dns.calls).toHaveLength(1);
  });

  it('verifies the certificate against the hostname, not the address', async () => {
    const server = await tlsServer();
    const guarded = createGuardedFetch({
      allowInsecureHttp: true,
      lookup: always('127.0.0.1').lookup,
      ca: TEST_TLS_CERT,
    });
    const error = await rejection(guarded(`https://other.test:${server.port}/token`));
    expect(error).toBeInstanceOf(TypeError);
    expect((error.cause as NodeJS.ErrnoException).code).toBe('ERR_TLS_CERT_ALTNAME_INVALID');
    expect(server.seen).toHaveLength(0);
  });

  it('verifies the certificate chain with the default roots', async () => {
    const server = await tlsServer();
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const error = await rejection(guarded(`https://provider.test:${server.port}/token`));
    expect(error).toBeInstanceOf(TypeError);
    expect((error.cause as NodeJS.ErrnoException).code).toMatch(/SELF_SIGNED/);
    expect(server.seen).toHaveLength(0);
  });
});

describe('createGuardedFetch abort', () => {
  it('rejects with the signal reason and drops the connection when the server never answers', async () => {
    // Prepare
    let closed!: () => void;
    const serverSawClose = new Promise<void>((resolve) => {
      closed = resolve;
    });
    const server = await httpServer((req) => req.socket.on('close', () => closed()));
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const started = Date.now();

    // Act
    const error = await rejection(
      guarded(`http://provider.test:${server.port}/slow`, { signal: AbortSignal.timeout(100) }),
    );

    // Assess
    expect(error.name).toBe('TimeoutError');
    expect(Date.now() - started).toBeLessThan(5_000);
    await serverSawClose;
    expect(server.requests).toHaveLength(1);
  });

  it('rejects at once for an already aborted signal, without resolving', async () => {
    const dns = always('127.0.0.1');
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: dns.lookup });
    const controller = new AbortController();
    controller.abort(new Error('stop'));
    const error = await rejection(guarded('http://provider.test/', { signal: controller.signal }));
    expect(error.message).toBe('stop');
    expect(dns.calls).toHaveLength(0);
  });

  it('rejects while DNS has not answered', async () => {
    const guarded = createGuardedFetch({
      allowInsecureHttp: false,
      lookup: fakeLookup(() => 'never').lookup,
    });
    const error = await rejection(guarded('https://slow-dns.test/', { signal: AbortSignal.timeout(50) }));
    expect(error.name).toBe('TimeoutError');
  });

  it('errors the body stream when aborted while the body is read', async () => {
    const server = await httpServer((_req, res) => {
      res.writeHead(200);
      res.write('partial');
    });
    const guarded = createGuardedFetch({ allowInsecureHttp: true, lookup: always('127.0.0.1').lookup });
    const controller = new AbortController();
    const response = await guarded(`http://provider.test:${server.port}/`, { signal: controller.signal });
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    controller.abort();
    const error = await rejection(reader.read());
    expect(error.name).toBe('AbortError');
  });
});

describe('createGuardedFetch as the OAuthClient fetch (oauth4webapi customFetch)', () => {
  it('discovers the metadata and refreshes a grant against a local provider', async () => {
    // Prepare
    const server = await httpServer((req, res, seen) => {
      const issuer = `http://127.0.0.1:${(req.socket.address() as AddressInfo).port}`;
      res.setHeader('content-type', 'application/json');
      if (req.url === '/.well-known/oauth-authorization-server') {
        res.end(JSON.stringify({ issuer, token_endpoint: `${issuer}/token` }));
      } else if (req.url === '/token' && new URLSearchParams(seen.body).get('refresh_token') === 'rt-1') {
        res.end(JSON.stringify({ access_token: 'at-2', token_type: 'Bearer', expires_in: 600 }));
      } else {
        res.writeHead(400).end(JSON.stringify({ error: 'invalid_request' }));
      }
    });
    const client = new OAuthClient({
      fetch: createGuardedFetch({ allowInsecureHttp: true }),
      clock: { now: () => Date.now() },
      logger: silentLogger,
      timeoutMs: 5_000,
      allowInsecureHttp: true,
      clientSecret: async () => undefined,
    });
    const provider: ProviderConfig = {
      providerId: 'local',
      issuer: `http://127.0.0.1:${server.port}`,
      clientId: 'tokenkeeper',
      clientAuthMethod: 'none',
      createdAt: 0,
      updatedAt: 0,
    };

    // Act
    const result = await client.refresh(provider, 'rt-1');

    // Assess
    expect(result.ok && result.tokens.accessToken).toBe('at-2');
    expect(result.ok && result.tokens.expiresIn).toBe(600);
    expect(server.requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      'GET /.well-known/oauth-authorization-server',
      'POST /token',
    ]);
  });

  it('keeps a provider whose token endpoint resolves to the metadata service from being called', async () => {
    const client = new OAuthClient({
      fetch: createGuardedFetch({ allowInsecureHttp: false, lookup: always('169.254.169.254').lookup }),
      clock: { now: () => Date.now() },
      logger: silentLogger,
      timeoutMs: 5_000,
      allowInsecureHttp: false,
      clientSecret: async () => undefined,
    });
    const provider: ProviderConfig = {
      providerId: 'evil',
      tokenEndpoint: 'https://token.attacker.example/token',
      clientId: 'tokenkeeper',
      clientAuthMethod: 'none',
      createdAt: 0,
      updatedAt: 0,
    };
    let result: Awaited<ReturnType<OAuthClient['refresh']>> | undefined;
    const sockets = await countSockets(async () => {
      result = await client.refresh(provider, 'rt-1');
    });
    expect(result?.ok).toBe(false);
    expect(sockets).toBe(0);
  });
});
