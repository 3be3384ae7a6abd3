import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { CliqClient, cliqError, cliqTransportError, parseRetryAfter } from '../../adapters/locks/cliq/client.ts';
import { startCliqSimulator, type CliqSimulator } from '../../adapters/locks/cliq/simulator.ts';
import { LockSystemError } from '../../src/ports/lock-system.ts';
import { TOKEN, clientTls, mtlsServer } from './helpers.ts';

let sim: CliqSimulator | undefined;
let client: CliqClient | undefined;
let stub: http.Server | undefined;
afterEach(async () => {
  await client?.close();
  await sim?.close();
  if (stub) {
    stub.closeAllConnections();
    await new Promise((r) => stub!.close(r));
  }
  client = undefined;
  sim = undefined;
  stub = undefined;
});

async function failure(p: Promise<unknown>): Promise<LockSystemError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LockSystemError);
  return err as LockSystemError;
}

const raw = (status: number, body: unknown, headers: Record<string, string> = {}) => ({ status, headers, text: body === undefined ? '' : JSON.stringify(body) });

describe('CLIQ wire: error mapping', () => {
  it('maps statuses to the port kinds with the contract code in the message', () => {
    expect(cliqError('GET', '/x', raw(429, { code: 'RATE_LIMITED', message: 'slow down' }, { 'retry-after': '4' }))).toMatchObject({
      kind: 'rate_limited',
      retryAfterMs: 4_000,
      status: 429,
    });
    expect(cliqError('GET', '/x', raw(503, { code: 'MAINTENANCE', message: 'm' }, { 'retry-after': '9' }))).toMatchObject({ kind: 'retryable', retryAfterMs: 9_000 });
    expect(cliqError('GET', '/x', raw(500, undefined)).kind).toBe('retryable');
    expect(cliqError('GET', '/x', raw(502, 'Bad gateway')).kind).toBe('retryable');
    expect(cliqError('GET', '/x', raw(408, undefined)).kind).toBe('retryable');
    expect(cliqError('GET', '/x', raw(401, { code: 'TOKEN_EXPIRED', message: 'expired' }))).toMatchObject({ kind: 'auth', status: 401 });
    for (const status of [400, 403, 404, 409, 422]) expect(cliqError('PUT', '/x', raw(status, { code: 'C', message: 'm' })).kind).toBe('permanent');
    expect(cliqError('PUT', '/keys/1/access-profiles', raw(422, { code: 'UNKNOWN_ACCESS_PROFILE', message: 'unknown access profile(s): ap-1' })).message).toBe(
      'CLIQ PUT /keys/1/access-profiles answered 422 UNKNOWN_ACCESS_PROFILE: unknown access profile(s): ap-1',
    );
    expect(parseRetryAfter('2')).toBe(2_000);
    expect(parseRetryAfter(new Date(Date.now() + 5_000).toUTCString())).toBeGreaterThan(3_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
  });
});

describe('CLIQ client over the simulator', () => {
  it('sends the bearer token and reads every page of a list', async () => {
    sim = await startCliqSimulator({ seed: 'demo', token: TOKEN, pageSize: 1 });
    for (let i = 0; i < 7; i++) sim.addProfile(`Door ${i}`);
    client = new CliqClient({ baseUrl: sim.url, bearerToken: TOKEN, requestTimeoutMs: 2_000 });
    const profiles = await client.accessProfiles(sim.domainId);
    expect(profiles).toHaveLength(11);
    // limit=500 on every page, the cursor followed until next is null.
    const pages = sim.requests.filter((q) => q.path === '/access-profiles');
    expect(pages).toHaveLength(1);
    expect(pages[0]!.query).toContain('limit=500');
  });

  it('returns null for unknown persons and keys, and refusals for 409 on access lists', async () => {
    sim = await startCliqSimulator({ seed: 'demo', token: TOKEN });
    client = new CliqClient({ baseUrl: sim.url, bearerToken: TOKEN, requestTimeoutMs: 2_000 });
    expect(await client.findPerson('nobody')).toBeNull();
    expect(await client.keysOf('nobody')).toBeNull();
    expect(await client.key('999999999')).toBeNull();
    expect(await client.deactivatePerson('nobody')).toBeNull();
    const normal = sim.seedKey({ type: 'normal' });
    expect(await client.setAccessProfiles(normal.serial, [])).toMatchObject({ refused: 'not_dynamic' });
    const blocked = sim.seedKey({ blocked: true });
    expect(await client.setAccessProfiles(blocked.serial, [])).toMatchObject({ refused: 'blocked' });
    const err = await failure(client.setAccessProfiles(sim.seedKey({}).serial, ['ap-nope']));
    expect(err).toMatchObject({ kind: 'permanent', status: 422 });
  });

  it('a wrong base URL (route 404) is permanent, not "unknown person"', async () => {
    sim = await startCliqSimulator({ seed: 'demo', token: TOKEN });
    client = new CliqClient({ baseUrl: `${sim.origin}/wrong/v1`, bearerToken: TOKEN, requestTimeoutMs: 2_000 });
    expect(await failure(client.keysOf('emp-1'))).toMatchObject({ kind: 'permanent', status: 404 });
  });

  it('timeouts and refused connections are retryable', async () => {
    sim = await startCliqSimulator({ seed: 'demo', token: TOKEN });
    sim.setFaults({ latencyMs: 400 });
    client = new CliqClient({ baseUrl: sim.url, bearerToken: TOKEN, requestTimeoutMs: 150 });
    const slow = await failure(client.domains());
    expect(slow.kind).toBe('retryable');
    expect(slow.message).toMatch(/timed out after 150 ms/);
    const url = sim.url;
    await client.close();
    await sim.close();
    sim = undefined;
    client = new CliqClient({ baseUrl: url, bearerToken: TOKEN, requestTimeoutMs: 1_000 });
    expect((await failure(client.domains())).kind).toBe('retryable');
  });

  it('a 2xx that is not JSON is retryable (a proxy page, a truncated answer)', async () => {
    stub = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>gateway</html>');
    });
    stub.listen(0, '127.0.0.1');
    await once(stub, 'listening');
    client = new CliqClient({ baseUrl: `http://127.0.0.1:${(stub.address() as AddressInfo).port}/cliq-api/v1`, bearerToken: TOKEN, requestTimeoutMs: 1_000 });
    expect(await failure(client.domains())).toMatchObject({ kind: 'retryable' });
  });
});

describe('CLIQ client: mutual TLS', () => {
  it('presents the client certificate from files and trusts the configured CA', async () => {
    sim = await startCliqSimulator({ seed: 'demo', tls: mtlsServer() });
    client = new CliqClient({ baseUrl: sim.url, tls: clientTls(), requestTimeoutMs: 2_000 });
    expect((await client.domains()).map((d) => d.id)).toEqual(['dom-main']);
  });

  it('a client certificate from another CA → auth; no tls section at all → permanent (server certificate not trusted)', async () => {
    sim = await startCliqSimulator({ seed: 'demo', tls: mtlsServer() });
    // Without a tls section there is no caFile either, so the test CA's server certificate fails first.
    // (The simulator's own 401 for a missing client certificate is covered in simulator.test.ts.)
    const noCert = new CliqClient({ baseUrl: sim.url, bearerToken: 'x', tls: undefined, requestTimeoutMs: 2_000 });
    const rogue = new CliqClient({ baseUrl: sim.url, tls: clientTls('rogue'), requestTimeoutMs: 2_000 });
    try {
      const untrusted = await failure(noCert.domains());
      expect(untrusted.kind).toBe('permanent');
      expect(untrusted.message).toMatch(/server certificate not trusted/);
      const err = await failure(rogue.domains());
      expect(err).toMatchObject({ kind: 'auth', status: 401 });
      expect(err.message).toContain('CLIENT_CERTIFICATE_REQUIRED');
    } finally {
      await noCert.close();
      await rogue.close();
    }
  });

  it('a server that drops the connection at the handshake → retryable with a hint; TLS alerts about our certificate → auth', async () => {
    sim = await startCliqSimulator({ seed: 'demo', tls: mtlsServer({ handshake: true }) });
    client = new CliqClient({ baseUrl: sim.url, tls: clientTls('rogue'), requestTimeoutMs: 2_000 });
    const err = await failure(client.domains());
    expect(err.kind).toBe('retryable');
    expect(err.message).toMatch(/refusing our client certificate/);
    // What a TLS stack reports when the alert does reach us (OpenSSL alert codes, possibly nested as causes).
    const alert = Object.assign(new Error('tlsv13 alert certificate required'), { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' });
    expect(cliqTransportError('GET', '/domains', 1000, alert, true).kind).toBe('auth');
    const nested = Object.assign(new Error('fetch failed'), { cause: Object.assign(new Error('x'), { code: 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE' }) });
    expect(cliqTransportError('GET', '/domains', 1000, nested, true).kind).toBe('auth');
    expect(cliqTransportError('GET', '/domains', 1000, Object.assign(new Error('x'), { code: 'ECONNREFUSED' }), true).kind).toBe('retryable');
    expect(cliqTransportError('GET', '/domains', 1000, Object.assign(new Error('x'), { code: 'CERT_HAS_EXPIRED' })).kind).toBe('permanent');
  });

  it('an unreadable certificate file → permanent, naming the setting', async () => {
    sim = await startCliqSimulator({ seed: 'demo', tls: mtlsServer() });
    client = new CliqClient({ baseUrl: sim.url, tls: { ...clientTls(), certFile: '/nonexistent/client.pem' }, requestTimeoutMs: 2_000 });
    const err = await failure(client.domains());
    expect(err.kind).toBe('permanent');
    expect(err.message).toMatch(/cannot read tls\.certFile \/nonexistent\/client\.pem: ENOENT/);
  });
});
