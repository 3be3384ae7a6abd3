import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.ts';
import { startLockstep } from '../../src/runtime.ts';
import { startStack, type Stack } from '../helpers/stack.ts';
import { freshStore } from '../helpers/stores.ts';

describe('health, metrics and the admin API surface', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack();
  });
  afterAll(async () => s?.stop());

  const raw = (path: string, init: RequestInit = {}) => fetch(s.url + path, init);
  const problem = async (res: Response, status: number, type: RegExp) => {
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const body = (await res.json()) as { type: string; title: string; status: number; detail: string };
    expect(body).toMatchObject({ status, type: expect.stringMatching(type), title: expect.any(String), detail: expect.any(String) });
    return body;
  };

  it('/healthz needs no token; /readyz checks the store and Redis', async () => {
    expect(await (await raw('/healthz')).json()).toEqual({ status: 'ok' });
    const ready = await raw('/readyz');
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', checks: { store: 'ok', redis: 'ok' } });
  });

  it('request ids are time-ordered UUIDs (they become correlation ids); a caller-chosen one is kept if safe', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await raw('/healthz')).headers.get('x-request-id')!);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids);
    expect((await raw('/healthz', { headers: { 'x-request-id': 'entra-abc.123' } })).headers.get('x-request-id')).toBe('entra-abc.123');
    expect((await raw('/healthz', { headers: { 'x-request-id': 'bad id\u00e9' } })).headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('/metrics needs a token and exports queue, operation and dead-letter figures', async () => {
    await problem(await raw('/metrics'), 401, /unauthenticated/);
    const res = await raw('/metrics', { headers: { authorization: `Bearer ${s.auditorToken}` } });
    expect(res.status).toBe(200);
    const text = await res.text();
    for (const name of ['lockstep_queue_jobs', 'lockstep_dead_letters_open', 'lockstep_operations_pending', 'lockstep_operations_total', 'lockstep_operation_duration_seconds'])
      expect(text).toContain(name);
    // The SQLite WAL's rewinds (checkpointer.ts): none yet, and no writes held.
    expect(text).toMatch(/^# TYPE lockstep_sqlite_wal_rewinds_total counter$/m);
    expect(text).toMatch(/^lockstep_sqlite_wal_rewind_hold_seconds_count 0$/m);
    // Nothing is being planned here, so nothing is held back.
    expect(text).toMatch(/^lockstep_planning_held 0$/m);
  });

  it('unknown or missing admin tokens get 401 problems; wrong roles 403 and an audit row', async () => {
    await problem(await raw('/api/v1/jobs/failed'), 401, /unauthenticated/);
    await problem(await raw('/api/v1/jobs/failed', { headers: { authorization: 'Bearer not-a-token' } }), 401, /unauthenticated/);
    await problem(await raw('/api/v1/jobs/failed', { headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } }), 401, /unauthenticated/);
    await problem(await raw('/api/v1/persons/x/reconcile', { method: 'POST', headers: { authorization: `Bearer ${s.auditorToken}` } }), 403, /forbidden/);
    const refused = (await s.admin('GET', '/audit?action=admin.refused')).body.items;
    expect(refused.at(-1)).toMatchObject({ actor: 'admin:audit', detail: { permission: 'reconcile:request' } });
    const anonymous = (await s.admin('GET', '/audit?action=admin.unauth*')).body.items;
    expect(anonymous.map((a: { actor: string; detail: { tokenPresented: boolean } }) => [a.actor, a.detail.tokenPresented])).toEqual([
      ['anonymous', false],
      ['anonymous', true],
      ['anonymous', true],
    ]);
  });

  it('malformed JSON, foreign content types, oversized bodies and unknown routes get problems', async () => {
    const auth = { authorization: `Bearer ${s.adminToken}` };
    await problem(await raw('/api/v1/persons/x/reconcile', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: '{"a":' }), 400, /malformed-json/);
    await problem(await raw('/api/v1/persons/x/reconcile', { method: 'POST', headers: { ...auth, 'content-type': 'application/xml' }, body: '<a/>' }), 415, /unsupported-media-type/);
    const big = JSON.stringify({ pad: 'x'.repeat(s.config.server.bodyLimitBytes + 10) });
    await problem(await raw('/api/v1/persons/x/reconcile', { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: big }), 413, /payload-too-large/);
    await problem(await raw('/api/v1/nope', { headers: auth }), 404, /route-not-found/);
    await problem(await raw('/api/v1/persons/00000000-0000-0000-0000-000000000000', { headers: auth }), 404, /not-found/);
    await problem(await raw('/api/v1/audit?limit=0', { headers: auth }), 400, /invalid-request/);
    await problem(await raw('/api/v1/audit?from=yesterday', { headers: auth }), 400, /invalid-request/);
    await problem(await raw('/api/v1/jobs/failed/nope/retry', { method: 'POST', headers: auth }), 404, /not-found/);
    await problem(await raw('/api/v1/jobs/failed?after=garbage', { headers: auth }), 400, /invalid-request/);
  });

  it('a refused or malformed request changes nothing', async () => {
    const before = (await s.t.store.db.selectFrom('audit').select('seq').execute()).length;
    await raw('/api/v1/persons/x/reconcile', { method: 'POST', headers: { authorization: `Bearer ${s.adminToken}`, 'content-type': 'application/json' }, body: '{"a":' });
    expect(await s.t.store.db.selectFrom('dirty').selectAll().execute()).toEqual([]);
    expect((await s.t.store.db.selectFrom('audit').select('seq').execute()).length).toBe(before);
  });

  it('the audit API pages with a cursor', async () => {
    for (let i = 0; i < 3; i++) await s.admin('POST', `/persons/p${i}/reconcile`);
    const first = (await s.admin('GET', '/audit?action=reconcile.request&limit=2')).body;
    expect(first.items).toHaveLength(2);
    const second = (await s.admin('GET', `/audit?action=reconcile.request&limit=2&after=${first.next}`)).body;
    expect(second.items.length).toBeGreaterThanOrEqual(1);
    expect(second.items[0].seq).toBeGreaterThan(first.items[1].seq);
  });
});

describe('readiness without Redis', () => {
  it('/readyz answers 503 naming Redis, within a bound', async () => {
    const t = await freshStore('sqlite');
    const { stackConfig } = await import('../helpers/stack.ts');
    const { startIloqSimulator } = await import('../../adapters/locks/iloq/simulator.ts');
    const sim = await startIloqSimulator({ port: 0, seed: 'demo' });
    const cfg = stackConfig(sim, t, { scim: 'a', admin: 'b', auditor: 'c' }, 'tnoredis', 'redis://127.0.0.1:1');
    const rt = await startLockstep(cfg, createLogger('silent'), { http: true, workers: false });
    try {
      const started = Date.now();
      const res = await fetch(`${rt.url}/readyz`);
      expect(res.status).toBe(503);
      const body = (await res.json()) as { checks: Record<string, string> };
      expect(body.checks.store).toBe('ok');
      expect(body.checks.redis).toMatch(/^unavailable/);
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      await rt.close();
      await sim.close();
      await t.cleanup();
    }
  });
});
