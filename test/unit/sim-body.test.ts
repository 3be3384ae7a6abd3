import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { readJsonBody } from '../../adapters/locks/shared/sim-body.ts';

class Refused extends Error {}

describe('simulator request bodies', () => {
  let server: http.Server;
  let url: string;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      readJsonBody(req, 64, (problem) => new Refused(problem)).then(
        (body) => res.end(JSON.stringify({ body: body === undefined ? '(none)' : body })),
        (err: Error) => {
          res.statusCode = err instanceof Refused ? 400 : 500;
          res.end(JSON.stringify({ refused: err.message }));
        },
      );
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const send = async (body?: string | Iterable<string>, headers: Record<string, string> = {}) => {
    const r = await request(url, { method: 'POST', body: typeof body === 'string' || body === undefined ? body : Readable.from(body), headers });
    return { status: r.statusCode, json: (await r.body.json()) as Record<string, unknown> };
  };

  it('reads JSON, whole or in chunks; none or only whitespace is no body', async () => {
    expect(await send('{"a":[1,2]}')).toEqual({ status: 200, json: { body: { a: [1, 2] } } });
    expect(await send(['{"a":', '"x', 'y"}'])).toEqual({ status: 200, json: { body: { a: 'xy' } } });
    expect(await send()).toEqual({ status: 200, json: { body: '(none)' } });
    expect(await send('  \n')).toEqual({ status: 200, json: { body: '(none)' } });
  });

  it('refuses what is not JSON and what is larger than the limit, and the connection still answers', async () => {
    expect(await send('{"a":')).toEqual({ status: 400, json: { refused: 'invalid_json' } });
    expect(await send(JSON.stringify({ a: 'x'.repeat(100) }))).toEqual({ status: 400, json: { refused: 'too_large' } });
    expect(await send(['{"a":"', 'x'.repeat(40), 'x'.repeat(40), '"}'])).toEqual({ status: 400, json: { refused: 'too_large' } });
    expect(await send('{"after":true}')).toEqual({ status: 200, json: { body: { after: true } } });
  });
});
