import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { exchange } from '../../adapters/locks/shared/exchange.ts';

describe('exchange (lock-system HTTP transport)', () => {
  let server: Server | undefined;
  let agent: Agent | undefined;
  afterEach(async () => {
    await agent?.destroy();
    server?.closeAllConnections();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    server = undefined;
    agent = undefined;
  });
  const serve = async (fn: (req: IncomingMessage, res: ServerResponse, body: string) => void) => {
    server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => fn(req, res, body));
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
  };

  it('sends method, path with query, headers and body, and reads the whole answer', async () => {
    const base = await serve((req, res, body) => {
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.setHeader('Retry-After', '3');
      res.writeHead(201, { 'content-type': 'application/json' });
      // Two chunks: the answer is whatever arrived, in order.
      res.write(JSON.stringify({ method: req.method, url: req.url, auth: req.headers.authorization, body }).slice(0, 10));
      setTimeout(() => res.end(JSON.stringify({ method: req.method, url: req.url, auth: req.headers.authorization, body }).slice(10)), 10);
    });
    agent = new Agent({ connections: 2 });
    const answer = await exchange(agent, { method: 'PUT', url: `${base}/api/v1/keys/1?x=y%20z`, headers: { authorization: 'Bearer t' }, body: '{"a":1}', timeoutMs: 2000 });
    expect(answer.status).toBe(201);
    expect(answer.headers['retry-after']).toBe('3');
    expect(answer.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(JSON.parse(answer.text)).toEqual({ method: 'PUT', url: '/api/v1/keys/1?x=y%20z', auth: 'Bearer t', body: '{"a":1}' });
  });

  it('answers an empty body as empty text, and a URL without a path as /', async () => {
    const base = await serve((req, res) => res.writeHead(204, { 'x-path': req.url ?? '' }).end());
    agent = new Agent();
    const answer = await exchange(agent, { method: 'GET', url: base, headers: {}, timeoutMs: 2000 });
    expect(answer).toMatchObject({ status: 204, text: '' });
    expect(answer.headers['x-path']).toBe('/');
  });

  it('bounds the whole exchange, also while it waits for a connection', async () => {
    const base = await serve(() => {
      // Never answers.
    });
    agent = new Agent({ connections: 1 });
    const started = Date.now();
    const first = exchange(agent, { method: 'GET', url: `${base}/slow`, headers: {}, timeoutMs: 150 });
    // Queued behind the first on the only connection.
    const second = exchange(agent, { method: 'GET', url: `${base}/queued`, headers: {}, timeoutMs: 100 });
    await expect(second).rejects.toMatchObject({ name: 'TimeoutError' });
    await expect(first).rejects.toMatchObject({ name: 'TimeoutError', message: 'no complete answer within 150 ms' });
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("rejects with undici's own error when the connection fails", async () => {
    const base = await serve(() => {});
    await new Promise((r) => server!.close(r));
    server = undefined;
    agent = new Agent();
    const err = await exchange(agent, { method: 'GET', url: `${base}/x`, headers: {}, timeoutMs: 2000 }).catch((e: Error & { code?: string }) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toBe('ECONNREFUSED');
  });
});
