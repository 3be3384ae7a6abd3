import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/stack.ts';
import { Agent, request } from 'undici';
import { startCliqSimulator, type CliqSimulator, type CliqSimulatorOptions } from '../../adapters/locks/cliq/simulator.ts';
import { TOKEN, mtlsServer, testPki } from './helpers.ts';

let sim: CliqSimulator | undefined;
const agents: Agent[] = [];
afterEach(async () => {
  await sim?.close();
  sim = undefined;
  await Promise.all(agents.splice(0).map((a) => a.close()));
});

async function start(opts: CliqSimulatorOptions = {}): Promise<CliqSimulator> {
  sim = await startCliqSimulator({ seed: 'demo', token: TOKEN, ...opts });
  return sim;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  // Parsed JSON, asserted on by shape.
  body: any;
}

async function call(method: string, url: string, body?: unknown, o: { token?: string | null; agent?: Agent } = {}): Promise<Answer> {
  const token = o.token === undefined ? TOKEN : o.token;
  const res = await request(url, {
    method: method as 'GET',
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
    ...(o.agent ? { dispatcher: o.agent } : {}),
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

function tlsAgent(which: 'good' | 'rogue' | 'none'): Agent {
  const p = testPki();
  const connect: Record<string, unknown> = { ca: readFileSync(p.good.caCert) };
  if (which !== 'none') {
    connect.cert = readFileSync(p[which].clientCert);
    connect.key = readFileSync(p[which].clientKey);
  }
  const a = new Agent({ connect });
  agents.push(a);
  return a;
}

describe('CLIQ simulator: authentication', () => {
  it('counts a request on arrival (requestsReceived) and once answered (requestTotal), control calls neither', async () => {
    const s = await start();
    s.setFaults({ latencyMs: 1000 });
    const pending = call('GET', `${s.url}/persons/nobody`);
    await waitFor(() => s.requestsReceived === 1, { what: 'arrival counted', timeoutMs: 800, intervalMs: 5 });
    expect(s.requestTotal).toBe(0);
    await pending;
    expect([s.requestsReceived, s.requestTotal]).toEqual([1, 1]);
    // The injected latency, and a timer's lateness, as served.
    expect(s.servedMsTotal).toBeGreaterThanOrEqual(999);
    expect(s.servedMsTotal).toBeLessThan(1500);
    await call('GET', `${s.origin}/__sim/state`, undefined, { token: null });
    expect([s.requestsReceived, s.requestTotal]).toEqual([1, 1]);
    expect(s.servedMsTotal).toBeLessThan(1500);
  });

  it('bearer: missing → UNAUTHENTICATED, wrong → INVALID_TOKEN, expired → TOKEN_EXPIRED', async () => {
    const s = await start();
    expect(await call('GET', `${s.url}/domains`, undefined, { token: null })).toMatchObject({ status: 401, body: { code: 'UNAUTHENTICATED' } });
    expect(await call('GET', `${s.url}/domains`, undefined, { token: 'nope' })).toMatchObject({ status: 401, body: { code: 'INVALID_TOKEN' } });
    expect(await call('GET', `${s.url}/domains`)).toMatchObject({ status: 200, body: { items: [{ id: 'dom-main', name: 'Main site' }], next: null } });
    s.expireToken();
    expect(await call('GET', `${s.url}/domains`)).toMatchObject({ status: 401, body: { code: 'TOKEN_EXPIRED' } });
    s.setToken('fresh');
    expect((await call('GET', `${s.url}/domains`, undefined, { token: 'fresh' })).status).toBe(200);
  });

  it('mutual TLS: no or untrusted client certificate → 401 CLIENT_CERTIFICATE_REQUIRED; a certificate from the CA passes', async () => {
    const s = await start({ token: undefined, tls: mtlsServer() });
    expect(s.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/cliq-api\/v1$/);
    const none = await call('GET', `${s.url}/domains`, undefined, { agent: tlsAgent('none') });
    expect(none).toMatchObject({ status: 401, body: { code: 'CLIENT_CERTIFICATE_REQUIRED' } });
    const rogue = await call('GET', `${s.url}/domains`, undefined, { agent: tlsAgent('rogue') });
    expect(rogue).toMatchObject({ status: 401, body: { code: 'CLIENT_CERTIFICATE_REQUIRED' } });
    expect(rogue.body.message).toMatch(/not trusted/);
    expect((await call('GET', `${s.url}/domains`, undefined, { agent: tlsAgent('good') })).status).toBe(200);
  });

  it('mutual TLS in handshake mode refuses the connection without a certificate', async () => {
    const s = await start({ token: undefined, tls: mtlsServer({ handshake: true }) });
    const err = await call('GET', `${s.url}/domains`, undefined, { agent: tlsAgent('none') }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect((await call('GET', `${s.url}/domains`, undefined, { agent: tlsAgent('good') })).status).toBe(200);
  });
});

describe('CLIQ simulator: resources', () => {
  it('upserts persons (201 then 200), refuses a foreign domain (403) and a missing domain (422)', async () => {
    const s = await start();
    const body = { firstName: 'Ada', lastName: 'Lovelace', email: 'ada@example.test', domainId: 'dom-main' };
    const created = await call('PUT', `${s.url}/persons/emp-1`, body);
    expect(created).toMatchObject({ status: 201, body: { externalId: 'emp-1', firstName: 'Ada', domainId: 'dom-main', active: true } });
    expect((await call('PUT', `${s.url}/persons/emp-1`, body)).status).toBe(200);
    expect(await call('PUT', `${s.url}/persons/emp-2`, { ...body, domainId: 'dom-other' })).toMatchObject({ status: 403, body: { code: 'DOMAIN_NOT_ADMINISTERED' } });
    expect(await call('PUT', `${s.url}/persons/emp-2`, { firstName: 'x', lastName: 'y' })).toMatchObject({ status: 422, body: { code: 'INVALID_BODY' } });
    expect(await call('GET', `${s.url}/persons?externalId=emp-1`)).toMatchObject({ status: 200, body: { items: [{ externalId: 'emp-1' }], next: null } });
    expect(await call('GET', `${s.url}/persons?externalId=nobody`)).toMatchObject({ status: 200, body: { items: [], next: null } });
    // The upserted person held no key: one dynamic key was issued.
    const keys = await call('GET', `${s.url}/persons/emp-1/keys`);
    expect(keys.body.items).toEqual([
      expect.objectContaining({ type: 'dynamic', holderExternalId: 'emp-1', validity: { mode: 'always' }, accessProfileIds: [], blocked: false, pendingJobs: 0 }),
    ]);
    expect(keys.body.items[0].serial).toMatch(/^\d{9}$/);
    expect(await call('GET', `${s.url}/persons/nobody/keys`)).toMatchObject({ status: 404, body: { code: 'PERSON_NOT_FOUND' } });
    const off = await call('POST', `${s.url}/persons/emp-1/deactivate`);
    expect(off).toMatchObject({ status: 200, body: { active: false } });
    expect((await call('POST', `${s.url}/persons/emp-1/deactivate`)).body.active).toBe(false);
    expect((await call('PUT', `${s.url}/persons/emp-1`, body)).body.active).toBe(true);
  });

  it('access-profile PUT: one job per change, none when nothing changed; 409 and 422 as the contract says', async () => {
    const s = await start();
    s.seedPerson({ externalId: 'emp-1' });
    const key = s.seedKey({ holder: 'emp-1' });
    const normal = s.seedKey({ holder: 'emp-1', type: 'normal' });
    const profiles = (await call('GET', `${s.url}/access-profiles?domainId=dom-main`)).body.items as Array<{ id: string; name: string }>;
    expect(profiles.map((p) => p.name).sort()).toEqual(['Control room', 'Main entrance', 'Server room', 'Substation A']);
    const main = profiles.find((p) => p.name === 'Main entrance')!.id;

    const first = await call('PUT', `${s.url}/keys/${key.serial}/access-profiles`, { accessProfileIds: [main] });
    expect(first).toMatchObject({ status: 200, body: { key: { accessProfileIds: [main], pendingJobs: 1 }, job: { kind: 'access', state: 'pending', serial: key.serial, doneAt: null } } });
    const again = await call('PUT', `${s.url}/keys/${key.serial}/access-profiles`, { accessProfileIds: [main, main] });
    expect(again).toMatchObject({ status: 200, body: { key: { pendingJobs: 1 }, job: null } });
    expect(s.state.jobs).toHaveLength(1);

    expect(await call('PUT', `${s.url}/keys/${normal.serial}/access-profiles`, { accessProfileIds: [main] })).toMatchObject({ status: 409, body: { code: 'KEY_NOT_DYNAMIC' } });
    expect(await call('PUT', `${s.url}/keys/${key.serial}/access-profiles`, { accessProfileIds: ['ap-nope'] })).toMatchObject({ status: 422, body: { code: 'UNKNOWN_ACCESS_PROFILE' } });
    expect(await call('PUT', `${s.url}/keys/${key.serial}/access-profiles`, { accessProfileIds: 'x' })).toMatchObject({ status: 422, body: { code: 'INVALID_BODY' } });
    expect(await call('PUT', `${s.url}/keys/999999999/access-profiles`, { accessProfileIds: [] })).toMatchObject({ status: 404, body: { code: 'KEY_NOT_FOUND' } });

    const lost = await call('POST', `${s.url}/keys/${key.serial}/report-lost`, { reason: 'lost on the train' });
    expect(lost).toMatchObject({ status: 200, body: { key: { blocked: true, pendingJobs: 2 }, job: { kind: 'blocklist' } } });
    const lostAgain = await call('POST', `${s.url}/keys/${key.serial}/report-lost`, { reason: 'again' });
    expect(lostAgain.body.job.id).toBe(lost.body.job.id);
    expect(await call('PUT', `${s.url}/keys/${key.serial}/access-profiles`, { accessProfileIds: [] })).toMatchObject({ status: 409, body: { code: 'KEY_BLOCKED' } });
  });

  it('validity and revalidation: validated, idempotent, each change a job', async () => {
    const s = await start();
    const key = s.seedKey({});
    expect(await call('PUT', `${s.url}/keys/${key.serial}/validity`, { mode: 'between', from: '2030-01-02T00:00:00Z', to: '2030-01-01T00:00:00Z' })).toMatchObject({
      status: 422,
      body: { code: 'INVALID_BODY' },
    });
    expect(await call('PUT', `${s.url}/keys/${key.serial}/validity`, { mode: 'sometimes' })).toMatchObject({ status: 422 });
    const between = { mode: 'between', from: '2030-01-01T00:00:00.000Z', to: '2030-06-30T00:00:00.000Z' };
    expect((await call('PUT', `${s.url}/keys/${key.serial}/validity`, between)).body).toMatchObject({ key: { validity: between }, job: { kind: 'validity' } });
    expect((await call('PUT', `${s.url}/keys/${key.serial}/validity`, between)).body.job).toBeNull();
    expect(await call('PUT', `${s.url}/keys/${key.serial}/revalidation`, { enabled: true, periodHours: 0 })).toMatchObject({ status: 422 });
    expect((await call('PUT', `${s.url}/keys/${key.serial}/revalidation`, { enabled: true, periodHours: 24 })).body).toMatchObject({
      key: { revalidation: { enabled: true, periodHours: 24 }, pendingJobs: 2 },
      job: { kind: 'revalidation' },
    });
  });

  it('jobs complete when the key is updated (or the cylinders visited, for blocklist jobs)', async () => {
    const s = await start();
    const key = s.seedKey({ lastUpdatedAt: null });
    const a = (await call('PUT', `${s.url}/keys/${key.serial}/validity`, { mode: 'never' })).body.job;
    const b = (await call('POST', `${s.url}/keys/${key.serial}/report-lost`, {})).body.job;
    expect((await call('GET', `${s.url}/jobs?state=pending`)).body.items.map((j: { id: string }) => j.id)).toEqual([a.id, b.id]);

    const done = await call('POST', `${s.origin}/__sim/complete-jobs`, {});
    expect(done.body.completed.map((j: { id: string }) => j.id)).toEqual([a.id]);
    expect(await call('GET', `${s.url}/jobs/${a.id}`)).toMatchObject({ status: 200, body: { state: 'done', doneAt: expect.any(String) } });
    const k = (await call('GET', `${s.url}/keys/${key.serial}`)).body;
    expect(k).toMatchObject({ pendingJobs: 1, lastUpdatedAt: expect.any(String) });
    const lastUpdated = k.lastUpdatedAt;

    expect((await call('POST', `${s.origin}/__sim/visit-cylinders`, { serials: [key.serial] })).body.completed).toHaveLength(1);
    const after = (await call('GET', `${s.url}/keys/${key.serial}`)).body;
    expect(after).toMatchObject({ pendingJobs: 0, lastUpdatedAt: lastUpdated, blocked: true });
    expect(await call('GET', `${s.url}/jobs/job-nope`)).toMatchObject({ status: 404, body: { code: 'JOB_NOT_FOUND' } });
    expect(await call('GET', `${s.url}/jobs?state=weird`)).toMatchObject({ status: 422, body: { code: 'INVALID_QUERY' } });
  });

  it('completes jobs by itself after jobDelayMs', async () => {
    const s = await start({ jobDelayMs: 30 });
    const key = s.seedKey({});
    await call('PUT', `${s.url}/keys/${key.serial}/validity`, { mode: 'never' });
    expect(s.state.requireKey(key.serial).pendingJobs).toBe(1);
    await new Promise((ok) => setTimeout(ok, 120));
    expect(s.state.requireKey(key.serial).pendingJobs).toBe(0);
    expect(s.state.jobs[0]!.state).toBe('done');
  });

  it('pages lists with {items, next}, limit at most 500, and rejects bad cursors', async () => {
    const s = await start({ pageSize: 2 });
    for (let i = 0; i < 5; i++) s.addEvent({ serial: '100000001', cylinderId: `c${i}` });
    const seen: string[] = [];
    let url = `${s.url}/events`;
    for (let i = 0; i < 5; i++) {
      const page = (await call('GET', url)).body as { items: Array<{ cylinderId: string }>; next: string | null };
      seen.push(...page.items.map((e) => e.cylinderId));
      if (!page.next) break;
      url = `${s.url}/events?cursor=${page.next}`;
    }
    expect(seen).toEqual(['c0', 'c1', 'c2', 'c3', 'c4']);
    const all = (await call('GET', `${s.url}/events?limit=500`)).body;
    expect(all.items).toHaveLength(5);
    expect(all.next).toBeNull();
    const after = (await call('GET', `${s.url}/events?after=${all.items[2].id}&limit=1`)).body;
    expect(after.items.map((e: { cylinderId: string }) => e.cylinderId)).toEqual(['c3']);
    expect(after.next).toEqual(expect.any(String));
    expect(await call('GET', `${s.url}/events?limit=501`)).toMatchObject({ status: 422, body: { code: 'INVALID_QUERY' } });
    expect(await call('GET', `${s.url}/events?cursor=garbage`)).toMatchObject({ status: 422, body: { code: 'INVALID_QUERY' } });
    expect(await call('GET', `${s.url}/nothing-here`)).toMatchObject({ status: 404, body: { code: 'NOT_FOUND' } });
  });
});

describe('CLIQ simulator: faults and control', () => {
  it('429 and 503 with Retry-After, latency, failMatching, rejectAuth; control calls are not faulted or logged', async () => {
    const s = await start();
    await call('POST', `${s.origin}/__sim/faults`, { rateLimitNext: 1, retryAfterSeconds: 3 });
    const limited = await call('GET', `${s.url}/domains`);
    expect(limited).toMatchObject({ status: 429, body: { code: 'RATE_LIMITED' } });
    expect(limited.headers['retry-after']).toBe('3');
    s.setFaults({ unavailableNext: 1, retryAfterAsDate: true });
    const down = await call('GET', `${s.url}/domains`);
    expect(down).toMatchObject({ status: 503, body: { code: 'MAINTENANCE' } });
    expect(Date.parse(String(down.headers['retry-after']))).toBeGreaterThan(Date.now() - 1000);
    s.clearFaults();

    s.setFaults({ failMatching: { method: 'PUT', path: '/validity', skip: 1 } });
    const key = s.seedKey({});
    expect((await call('PUT', `${s.url}/keys/${key.serial}/validity`, { mode: 'never' })).status).toBe(200);
    expect((await call('PUT', `${s.url}/keys/${key.serial}/validity`, { mode: 'always' })).status).toBe(503);
    expect((await call('PUT', `${s.url}/keys/${key.serial}/validity`, { mode: 'always' })).status).toBe(200);

    s.setFaults({ latencyMs: 60 });
    const t0 = Date.now();
    await call('GET', `${s.url}/domains`);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(55);
    s.setFaults({ latencyMs: 0, rejectAuth: true });
    expect(await call('GET', `${s.url}/domains`)).toMatchObject({ status: 401, body: { code: 'UNAUTHENTICATED' } });

    const log = (await call('GET', `${s.origin}/__sim/requests`)).body as Array<{ method: string; path: string; status: number; jobId?: string }>;
    expect(log.map((q) => q.status)).toEqual([429, 503, 200, 503, 200, 200, 401]);
    expect(log[2]).toMatchObject({ method: 'PUT', path: `/keys/${key.serial}/validity`, jobId: expect.stringMatching(/^job-/) });
    expect(s.countWrites('/validity')).toBe(2);
  });

  it('seeds through control endpoints and resets to the demo state', async () => {
    const s = await start();
    expect((await call('POST', `${s.origin}/__sim/persons`, { externalId: 'emp-9', firstName: 'Seeded' })).status).toBe(200);
    const key = (await call('POST', `${s.origin}/__sim/keys`, { holder: 'emp-9', type: 'connect', access: ['Control room'] })).body;
    expect(key).toMatchObject({ type: 'connect', holderExternalId: 'emp-9' });
    expect(s.getKeyAccessNames(key.serial)).toEqual(['Control room']);
    expect((await call('POST', `${s.origin}/__sim/access-profiles`, { name: 'Roof' })).body).toMatchObject({ name: 'Roof', domainId: 'dom-main' });
    const ev = await call('POST', `${s.origin}/__sim/events`, { events: [{ serial: key.serial, result: 'denied' }] });
    expect(ev.body.events[0]).toMatchObject({ serial: key.serial, result: 'denied', id: expect.stringMatching(/^evt-\d{12}$/) });
    const state = (await call('GET', `${s.origin}/__sim/state`)).body;
    expect(state.persons).toHaveLength(1);
    expect(state.accessProfiles).toHaveLength(5);
    expect((await call('POST', `${s.origin}/__sim/reset`)).status).toBe(204);
    expect(s.state.persons.size).toBe(0);
    expect(s.state.profiles.size).toBe(4);
  });
});
