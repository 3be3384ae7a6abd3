import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../helpers/stack.ts';
import { request } from 'undici';
import { startIloqSimulator, type IloqSimulator } from '../../adapters/locks/iloq/simulator.ts';

let sim: IloqSimulator | undefined;
afterEach(async () => {
  await sim?.close();
  sim = undefined;
});

const origin = (s: IloqSimulator) => s.url.replace(/\/iloqws$/, '');

async function call(method: string, url: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await request(url, {
    method: method as 'GET',
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text ? (JSON.parse(text) as unknown) : undefined };
}

/** Logs in by hand and returns a SessionId header with the lock group selected. */
async function session(s: IloqSimulator): Promise<Record<string, string>> {
  const created = await call('POST', `${s.poolUrl}api/v2/CreateSession`, {
    CustomerCode: s.credentials.customerCode,
    UserName: s.credentials.userName,
    Password: s.credentials.password,
    ApiKey: '',
    ApiSecret: '',
  });
  const sid = (created.body as { SessionID: string }).SessionID;
  const groups = await call('GET', `${s.poolUrl}api/v2/LockGroups`, undefined, { SessionId: sid });
  const lg = (groups.body as Array<{ LockGroup_ID: string }>)[0]!.LockGroup_ID;
  expect((await call('POST', `${s.poolUrl}api/v2/SetLockGroup`, { LockGroup_ID: lg }, { SessionId: sid })).status).toBe(200);
  return { SessionId: sid };
}

describe('iLOQ simulator: protocol', () => {
  it('answers GetUrl with the pool URL and serves the API only there', async () => {
    sim = await startIloqSimulator();
    const url = await call('POST', `${sim.url}/api/v2/Url/GetUrl`, { CustomerCode: 'DEMO' });
    expect(url).toMatchObject({ status: 200, body: `${origin(sim)}/iloqwspool/` });
    expect((await call('GET', `${sim.url}/api/v2/Test`)).status).toBe(404);
  });

  it('requires a session with a selected lock group (401 otherwise)', async () => {
    sim = await startIloqSimulator();
    expect(await call('GET', `${sim.poolUrl}api/v2/Persons/GetByExternalPersonIds?externalPersonIds=x`)).toMatchObject({
      status: 401,
      body: { Message: 'Authorization has been denied for this request.' },
    });
    const created = await call('POST', `${sim.poolUrl}api/v2/CreateSession`, {
      CustomerCode: 'DEMO',
      UserName: 'lockstep',
      Password: 'lockstep-sim',
      ApiKey: '',
      ApiSecret: '',
    });
    const sid = (created.body as { SessionID: string }).SessionID;
    expect((await call('GET', `${sim.poolUrl}api/v2/Test`, undefined, { SessionId: sid })).body).toBe('Test OK');
    expect((await call('GET', `${sim.poolUrl}api/v2/SecurityAccesses`, undefined, { SessionId: sid })).status).toBe(401);
    const bad = await call('POST', `${sim.poolUrl}api/v2/CreateSession`, { CustomerCode: 'DEMO', UserName: 'lockstep', Password: 'x' });
    expect(bad.body).toEqual({ SessionID: null, Result: 5 });
  });

  it('persons: ExternalPersonId is unique, GetByExternalPersonIds takes repeated ids, a new person gets a key', async () => {
    sim = await startIloqSimulator({ seed: 'demo' });
    const h = await session(sim);
    const base = `${sim.poolUrl}api/v2`;
    const person = { Person_ID: 'AAAAAAAA-0000-4000-8000-000000000001', PersonCode: 'e1', ExternalPersonId: 'e1', FirstName: 'A', LastName: 'B', eMail: '' };
    expect(await call('POST', `${base}/Persons`, { Person: person, ZoneIds: [] }, h)).toMatchObject({
      status: 200,
      body: { PersonIds: ['aaaaaaaa-0000-4000-8000-000000000001'] },
    });
    const dup = await call('POST', `${base}/Persons`, { Person: { ...person, Person_ID: undefined }, ZoneIds: [] }, h);
    expect(dup.status).toBe(400);
    expect((dup.body as { Message: string }).Message).toMatch(/ExternalPersonId must be unique/);
    await call('POST', `${base}/Persons`, { Person: { PersonCode: 'e2', ExternalPersonId: 'e2' } }, h);

    const found = await call('GET', `${base}/Persons/GetByExternalPersonIds?externalPersonIds=e1&externalPersonIds=e2&externalPersonIds=nobody`, undefined, h);
    expect((found.body as Array<{ ExternalPersonId: string }>).map((p) => p.ExternalPersonId)).toEqual(['e1', 'e2']);

    const keys = await call('GET', `${base}/Persons/${person.Person_ID}/Keys`, undefined, h);
    const list = (keys.body as { Keys: Array<{ KeyTypeMask: number; State: number; IsProgrammed: boolean }> }).Keys;
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ KeyTypeMask: 256, State: 1, IsProgrammed: true });
  });

  it('keys: mode is required, CanAdd/CanDelete/CanOrder codes, non-API access is refused', async () => {
    sim = await startIloqSimulator({ seed: 'demo' });
    const h = await session(sim);
    const base = `${sim.poolUrl}api/v2`;
    sim.addPerson({ ExternalPersonId: 'k1' });
    const key = sim.addKey({ person: 'k1', access: ['Manual master'] });
    const api = sim.state.findAccess('Main entrance')!.SecurityAccess_ID;
    const std = sim.state.findAccess('Manual master')!.SecurityAccess_ID;
    const k = `${base}/Keys/${key.FNKey_ID}`;

    expect((await call('GET', `${k}/SecurityAccesses`, undefined, h)).status).toBe(400);
    expect((await call('GET', `${k}/SecurityAccesses/CanAdd`, undefined, h)).body).toBe(1);
    expect((await call('GET', `${k}/SecurityAccesses/${api}/CanDelete`, undefined, h)).body).toBe(3);
    expect((await call('GET', `${k}/SecurityAccesses/${std}/CanDelete`, undefined, h)).body).toBe(2);
    expect((await call('POST', `${k}/SecurityAccesses`, { SecurityAccess_ID: std }, h)).status).toBe(400);
    expect((await call('GET', `${k}/CanOrder`, undefined, h)).body).toBe(4);

    expect((await call('POST', `${k}/SecurityAccesses`, { SecurityAccess_ID: api }, h)).status).toBe(204);
    expect((await call('GET', `${k}/CanOrder`, undefined, h)).body).toBe(0);
    const cur = await call('GET', `${k}/SecurityAccesses?mode=1`, undefined, h);
    expect((cur.body as { SecurityAccesses: Array<{ Name: string }> }).SecurityAccesses.map((s) => s.Name).sort()).toEqual(['Main entrance', 'Manual master']);
    const prog = await call('GET', `${k}/SecurityAccesses?mode=2`, undefined, h);
    expect((prog.body as { SecurityAccesses: Array<{ Name: string }> }).SecurityAccesses.map((s) => s.Name)).toEqual(['Manual master']);

    const dropStd = await call('PUT', `${k}/SecurityAccesses`, { SecurityAccessIds: [api], TimeLimitSlots: [] }, h);
    expect(dropStd.status).toBe(400);
    const badDate = await call('PUT', `${k}/SecurityAccesses`, { SecurityAccessIds: [api, std], TimeLimitSlots: [{ SlotNo: 1, LimitDateLg: '2025-01-01T00:00:00Z' }] }, h);
    expect(badDate.status).toBe(400);

    expect((await call('POST', `${k}/Order`, undefined, h)).status).toBe(204);
    expect((await call('GET', `${k}/CanOrder`, undefined, h)).body).toBe(4);
  });
});

describe('iLOQ simulator: control endpoints', () => {
  it('counts a request on arrival (requestsReceived) and once answered (requestTotal), control calls neither', async () => {
    sim = await startIloqSimulator({ port: 0, seed: 'demo' });
    sim.setFaults({ latencyMs: 1000 });
    const pending = call('POST', `${sim.url}/api/v2/Url/GetUrl`, { CustomerCode: 'DEMO' });
    await waitFor(() => sim!.requestsReceived === 1, { what: 'arrival counted', timeoutMs: 800, intervalMs: 5 });
    expect(sim.requestTotal).toBe(0);
    await pending;
    expect([sim.requestsReceived, sim.requestTotal]).toEqual([1, 1]);
    // The injected latency, and a timer's lateness, as served.
    expect(sim.servedMsTotal).toBeGreaterThanOrEqual(999);
    expect(sim.servedMsTotal).toBeLessThan(1500);
    await call('GET', `${origin(sim)}/__sim/state`);
    expect([sim.requestsReceived, sim.requestTotal]).toEqual([1, 1]);
    expect(sim.servedMsTotal).toBeLessThan(1500);
  });

  it('faults, program, state, requests, expire-sessions and reset work over HTTP', async () => {
    sim = await startIloqSimulator({ seed: 'demo' });
    const ctl = `${origin(sim)}/__sim`;
    const h = await session(sim);
    const base = `${sim.poolUrl}api/v2`;

    await call('POST', `${ctl}/persons`, { ExternalPersonId: 'c1', FirstName: 'C' });
    const key = (await call('POST', `${ctl}/keys`, { person: 'c1' })).body as { FNKey_ID: string };
    const api = sim.state.findAccess('Server room')!.SecurityAccess_ID;
    await call('POST', `${base}/Keys/${key.FNKey_ID}/SecurityAccesses`, { SecurityAccess_ID: api }, h);
    await call('POST', `${base}/Keys/${key.FNKey_ID}/Order`, undefined, h);
    expect((await call('POST', `${ctl}/program`, {})).body).toEqual({ programmed: [key.FNKey_ID] });
    expect(sim.getKeyAccessNames(key.FNKey_ID, 'programmed')).toEqual(['Server room']);

    const faults = await call('POST', `${ctl}/faults`, { rateLimitNext: 2, retryAfterSeconds: 3 });
    expect(faults.body).toMatchObject({ rateLimitRemaining: 2, retryAfterSeconds: 3 });
    const limited = await call('GET', `${base}/Test`, undefined, h);
    expect(limited.status).toBe(429);
    expect(limited.headers['retry-after']).toBe('3');
    expect((await call('GET', `${base}/Test`, undefined, h)).status).toBe(429);
    expect((await call('GET', `${base}/Test`, undefined, h)).status).toBe(200);

    await call('POST', `${ctl}/faults`, { unavailableNext: 1, retryAfterSeconds: null });
    const down = await call('GET', `${base}/Test`, undefined, h);
    expect(down.status).toBe(503);
    expect(down.headers['retry-after']).toBeUndefined();

    await call('POST', `${ctl}/expire-sessions`);
    expect((await call('GET', `${base}/Test`, undefined, h)).status).toBe(401);

    const state = (await call('GET', `${ctl}/state`)).body as { persons: Array<{ ExternalPersonId: string; keys: Array<{ access: string[] }> }> };
    expect(state.persons.map((p) => [p.ExternalPersonId, p.keys[0]!.access])).toEqual([['c1', ['Server room']]]);
    const log = (await call('GET', `${ctl}/requests?limit=2`)).body as Array<{ status: number }>;
    expect(log.map((e) => e.status)).toEqual([503, 401]); // control calls are not logged

    await call('POST', `${ctl}/faults`, { rejectCredentials: true });
    expect(sim.faults.rejectCredentials).toBe(true);
    await call('POST', `${ctl}/reset`);
    expect(sim.state.persons.size).toBe(0);
    expect(sim.state.accesses.size).toBe(5);
    expect(sim.faults.rejectCredentials).toBe(false);
  });

  it('adds latency and can program ordered keys on its own after a delay', async () => {
    sim = await startIloqSimulator({ seed: 'demo', programDelayMs: 50 });
    const h = await session(sim);
    const base = `${sim.poolUrl}api/v2`;
    sim.setFaults({ latencyMs: 120 });
    const t0 = Date.now();
    await call('GET', `${base}/Test`, undefined, h);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(110);
    sim.setFaults({ latencyMs: 0 });

    sim.addPerson({ ExternalPersonId: 'd1' });
    const key = sim.addKey({ person: 'd1' });
    await call('POST', `${base}/Keys/${key.FNKey_ID}/SecurityAccesses`, { SecurityAccess_ID: sim.state.findAccess('Control room')!.SecurityAccess_ID }, h);
    await call('POST', `${base}/Keys/${key.FNKey_ID}/Order`, undefined, h);
    expect(sim.getKeyAccessNames(key.FNKey_ID, 'programmed')).toEqual([]);
    await new Promise((r) => setTimeout(r, 120));
    expect(sim.getKeyAccessNames(key.FNKey_ID, 'programmed')).toEqual(['Control room']);
  });
});

describe('iLOQ simulator: returns, lock logs, mid-operation faults', () => {
  it('CanReturn/Return for phone keys, CanDelete/DELETE for never-programmed keys', async () => {
    sim = await startIloqSimulator({ seed: 'demo' });
    const h = await session(sim);
    const base = `${sim.poolUrl}api/v2`;
    sim.addPerson({ ExternalPersonId: 'r1' });
    const phone = sim.addKey({ person: 'r1', keyTypeMask: 6 });
    const physical = sim.addKey({ person: 'r1' });
    const fresh = sim.addKey({ person: 'r1', keyTypeMask: 6, programmed: false });
    expect((await call('GET', `${base}/Keys/${physical.FNKey_ID}/CanReturn`, undefined, h)).body).toBe(2);
    expect((await call('POST', `${base}/Keys/${physical.FNKey_ID}/Return`, undefined, h)).status).toBe(400);
    expect((await call('GET', `${base}/Keys/${fresh.FNKey_ID}/CanReturn`, undefined, h)).body).toBe(3);
    expect((await call('GET', `${base}/Keys/${physical.FNKey_ID}/CanDelete`, undefined, h)).body).toBe(1);
    expect((await call('GET', `${base}/Keys/${fresh.FNKey_ID}/CanDelete`, undefined, h)).body).toBe(0);
    expect((await call('DELETE', `${base}/Keys/${fresh.FNKey_ID}`, undefined, h)).status).toBe(204);
    expect(sim.state.record(fresh.FNKey_ID).key.State).toBe(3);
    expect((await call('GET', `${base}/Keys/${phone.FNKey_ID}/CanReturn`, undefined, h)).body).toBe(0);
    expect((await call('POST', `${base}/Keys/${phone.FNKey_ID}/Return`, undefined, h)).status).toBe(204);
    expect(sim.state.record(phone.FNKey_ID).key.State).toBe(4);
  });

  it('GetLockLogDataByTimestamp filters on arrival time (start inclusive, end exclusive); logs are injected by control call', async () => {
    sim = await startIloqSimulator({ seed: 'demo' });
    const h = await session(sim);
    const ctl = `${origin(sim)}/__sim`;
    const added = await call('POST', `${ctl}/lock-logs`, {
      LockLogs: [
        { FNKey_ID: 'K1', FLock_ID: 'L1', TimestampUtc: '2030-01-01T00:00:00.000Z' },
        { FNKey_ID: 'K1', FLock_ID: 'L2', AccessTypeMask: 2049, TimestampUtc: '2030-01-01T00:00:01.000Z' },
        { FNKey_ID: 'K1', FLock_ID: 'L3', TimestampUtc: '2030-01-01T00:00:02.000Z' },
      ],
    });
    expect((added.body as { LockLogs: unknown[] }).LockLogs).toHaveLength(3);
    const res = await call('POST', `${sim.poolUrl}api/v2/LockLogs/GetLockLogDataByTimestamp`, { StartDateUtc: '2030-01-01T00:00:00.000Z', EndDateUtc: '2030-01-01T00:00:02.000Z' }, h);
    expect(res.status).toBe(200);
    const body = res.body as { StartDateUtc: string; EndDateUtc: string; LockLogs: Array<Record<string, unknown>> };
    expect(body.LockLogs.map((l) => l.FLock_ID)).toEqual(['l1', 'l2']);
    expect(body.LockLogs[1]).toMatchObject({ FNKey_ID: 'k1', AccessTypeMask: 2049, ErrorCode: 0, DeviceLog_ID: expect.any(String), GoingDate: expect.any(String) });
    expect((await call('POST', `${sim.poolUrl}api/v2/LockLogs/GetLockLogDataByTimestamp`, { StartDateUtc: 'soon' }, h)).status).toBe(400);
  });

  it('failMatching breaks the Nth matching request only', async () => {
    sim = await startIloqSimulator({ seed: 'demo' });
    const h = await session(sim);
    sim.setFaults({ failMatching: { method: 'GET', path: '/Test', skip: 1, count: 1 } });
    const base = `${sim.poolUrl}api/v2`;
    expect((await call('GET', `${base}/Version`, undefined, h)).status).toBe(200);
    expect((await call('GET', `${base}/Test`, undefined, h)).status).toBe(200);
    const failed = await call('GET', `${base}/Test`, undefined, h);
    expect(failed.status).toBe(503);
    expect(failed.headers['retry-after']).toBe('1');
    expect((await call('GET', `${base}/Test`, undefined, h)).status).toBe(200);
  });
});
