import { afterEach, describe, expect, it } from 'vitest';
import { LockSystemError } from '../../src/ports/lock-system.ts';
import { SimProgrammingState } from '../../adapters/locks/iloq/sim-state.ts';
import { IloqLockSystem } from '../../adapters/locks/iloq/adapter.ts';
import { configFor, op, rig, type Rig } from './helpers.ts';
import { roundTrips } from '../helpers/round-trips.ts';

let r: Rig | undefined;
afterEach(async () => {
  await r?.close();
  r = undefined;
});

async function failure(p: Promise<unknown>): Promise<LockSystemError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LockSystemError);
  return err as LockSystemError;
}

/** Key id of the only key of the person with this ExternalPersonId. */
function onlyKey(ext: string): string {
  const person = r!.sim.state.findPersonByExternalId(ext);
  expect(person).toBeDefined();
  const keys = r!.sim.state.keysOfPerson(person!.Person_ID);
  expect(keys).toHaveLength(1);
  return keys[0]!.FNKey_ID;
}

describe('iLOQ adapter: catalogue and lifecycle', () => {
  it('lists only API accesses (Type 3) as its catalogue', async () => {
    r = await rig();
    await r.lock.start();
    expect(await r.lock.catalogue()).toEqual(['Control room', 'Main entrance', 'Server room', 'Substation A']);
    await r.lock.ping();
  });

  it('kills its session on close', async () => {
    r = await rig();
    await r.lock.start();
    expect(r.sim.state.sessions.size).toBe(1);
    await r.lock.close();
    expect(r.sim.state.sessions.size).toBe(0);
    expect(r.sim.countRequests('GET', '/KillSession')).toBe(1);
  });
});

describe('iLOQ adapter: grant', () => {
  it('creates the person, adds the access to the key and orders programming', async () => {
    r = await rig();
    const res = await r.lock.apply(op('grant', 'emp-1', ['Main entrance', 'Server room']));
    expect(res.outcome).toBe('applied');
    const person = r.sim.state.findPersonByExternalId('emp-1')!;
    expect(person).toMatchObject({ PersonCode: 'emp-1', FirstName: 'Ada', LastName: 'Lovelace', eMail: 'emp-1@example.test' });
    expect(res.remotePersonId).toBe(person.Person_ID);

    const keyId = onlyKey('emp-1');
    expect(res.keys).toEqual([{ keyId, change: 'changed', programmingOrdered: true, effective: false }]);
    expect(r.sim.getKeyAccessNames(keyId)).toEqual(['Main entrance', 'Server room']);
    expect(r.sim.getKeyAccessNames(keyId, 'programmed')).toEqual([]);
    expect(r.sim.state.record(keyId).key.ProgrammingState).toBe(SimProgrammingState.ordered);
    expect(r.sim.countRequests('POST', `/Keys/${keyId}/SecurityAccesses`)).toBe(2);
    expect(r.sim.countRequests('GET', `/Keys/${keyId}/SecurityAccesses/CanAdd`)).toBe(2);
    expect(r.sim.countRequests('POST', `/Keys/${keyId}/Order`)).toBe(1);

    const before = await r.lock.readPerson('emp-1');
    expect(before).toEqual({
      remotePersonId: person.Person_ID,
      externalId: 'emp-1',
      keys: [{ keyId, access: ['Main entrance', 'Server room'], programmed: false }],
    });
    expect(r.sim.programOrderedKeys()).toEqual([keyId]);
    expect((await r.lock.readPerson('emp-1'))!.keys[0]!.programmed).toBe(true);
  });

  it('is idempotent: a re-grant finds the access and changes nothing', async () => {
    r = await rig();
    await r.lock.apply(op('grant', 'emp-2', ['Control room']));
    const keyId = onlyKey('emp-2');
    r.sim.programOrderedKeys();
    r.sim.clearRequestLog();

    const again = await r.lock.apply(op('grant', 'emp-2', ['Control room']));
    expect(again.keys).toEqual([{ keyId, change: 'unchanged', programmingOrdered: false, effective: true }]);
    expect(r.sim.countRequests('POST', '/SecurityAccesses')).toBe(0);
    expect(r.sim.countRequests('POST', '/Persons')).toBe(0);
    expect(r.sim.countRequests('POST', '/Order')).toBe(0);
    expect(r.sim.requests.every((q) => q.method === 'GET')).toBe(true);
    expect(r.sim.getKeyAccessNames(keyId)).toEqual(['Control room']);
  });

  it('re-grant while the order is still pending does not order twice', async () => {
    r = await rig();
    await r.lock.apply(op('grant', 'emp-3', ['Control room']));
    r.sim.clearRequestLog();
    const again = await r.lock.apply(op('grant', 'emp-3', ['Control room']));
    expect(again.keys[0]).toMatchObject({ change: 'unchanged', programmingOrdered: true });
    expect(r.sim.countRequests('GET', '/CanOrder')).toBe(1);
    expect(r.sim.countRequests('POST', '/Order')).toBe(0);
  });

  it('orders programming on re-apply when an earlier attempt added the access but never ordered', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-4' });
    const key = r.sim.addKey({ person: 'emp-4' });
    const sa = r.sim.state.findAccess('Substation A')!;
    r.sim.state.addAccess(key.FNKey_ID, sa.SecurityAccess_ID); // the crash happened right after this POST
    const res = await r.lock.apply(op('grant', 'emp-4', ['Substation A']));
    expect(res.keys).toEqual([{ keyId: key.FNKey_ID, change: 'unchanged', programmingOrdered: true, effective: false }]);
    expect(r.sim.countRequests('POST', `/Keys/${key.FNKey_ID}/Order`)).toBe(1);
  });

  it('refuses an unknown access name with a permanent error naming it', async () => {
    r = await rig();
    const err = await failure(r.lock.apply(op('grant', 'emp-5', ['Main entrance', 'Moon base'])));
    expect(err.kind).toBe('permanent');
    expect(err.message).toContain('"Moon base"');
    expect(r.sim.state.findPersonByExternalId('emp-5')).toBeUndefined();
  });

  it('refuses to grant a Standard access by name: it is not in the managed catalogue', async () => {
    r = await rig();
    const err = await failure(r.lock.apply(op('grant', 'emp-6', ['Manual master'])));
    expect(err.kind).toBe('permanent');
    expect(err.message).toContain('"Manual master"');
  });

  it('re-reads the catalogue once when a name is unknown (access created meanwhile)', async () => {
    r = await rig();
    await r.lock.catalogue();
    r.sim.addSecurityAccess('Roof hatch');
    await new Promise((res) => setTimeout(res, 1_100)); // minimum refresh interval
    const res = await r.lock.apply(op('grant', 'emp-7', ['Roof hatch']));
    expect(res.keys[0]).toMatchObject({ change: 'changed' });
    expect(r.sim.getKeyAccessNames(onlyKey('emp-7'))).toEqual(['Roof hatch']);
  });

  it('finds an existing person by ExternalPersonId and updates changed names', async () => {
    r = await rig();
    const existing = r.sim.addPerson({ ExternalPersonId: 'emp-8', FirstName: 'Old', LastName: 'Name' });
    const key = r.sim.addKey({ person: existing.Person_ID });
    const res = await r.lock.apply(op('grant', 'emp-8', ['Main entrance'], { givenName: 'New' }));
    expect(res.remotePersonId).toBe(existing.Person_ID);
    expect(res.keys.map((k) => k.keyId)).toEqual([key.FNKey_ID]);
    expect(r.sim.state.getPerson(existing.Person_ID).FirstName).toBe('New');
    expect(r.sim.countRequests('POST', '/api/v2/Persons')).toBe(0);
  });

  it('skips a blocklisted key with the reason and still handles the others', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-9' });
    const bad = r.sim.addKey({ person: 'emp-9' });
    const good = r.sim.addKey({ person: 'emp-9' });
    r.sim.state.record(bad.FNKey_ID).blocklisted = true;
    const res = await r.lock.apply(op('grant', 'emp-9', ['Main entrance']));
    const byId = new Map(res.keys.map((k) => [k.keyId, k]));
    expect(byId.get(bad.FNKey_ID)).toMatchObject({ change: 'skipped', programmingOrdered: false });
    expect(byId.get(bad.FNKey_ID)!.reason).toMatch(/unmodifiable.*CanAdd 2/);
    expect(byId.get(good.FNKey_ID)).toEqual({ keyId: good.FNKey_ID, change: 'changed', programmingOrdered: true, effective: false });
    expect(r.sim.getKeyAccessNames(bad.FNKey_ID)).toEqual([]);
  });

  it('reports CanOrder refusals in words and does not order', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-10' });
    const key = r.sim.addKey({ person: 'emp-10' });
    r.sim.state.record(key.FNKey_ID).canOrderOverride = 3;
    const res = await r.lock.apply(op('grant', 'emp-10', ['Main entrance']));
    expect(res.keys[0]).toMatchObject({ change: 'changed', programmingOrdered: false });
    expect(res.keys[0]!.reason).toMatch(/licence limit exceeded \(CanOrder 3\)/);
    expect(r.sim.countRequests('POST', '/Order')).toBe(0);
  });

  it('puts the termination date into the key end-date slot in the lock group time zone', async () => {
    r = await rig({ timeZone: 'FLE Standard Time' });
    const res = await r.lock.apply(op('grant', 'emp-11', ['Main entrance'], { terminationDate: '2031-06-30T21:00:00Z' }));
    expect(res.keys[0]).toMatchObject({ change: 'changed', programmingOrdered: true });
    const keyId = onlyKey('emp-11');
    expect(r.sim.state.record(keyId).slots).toEqual([{ SlotNo: 1, LimitDateLg: '2031-07-01T00:00:00', TimeLimitData: [] }]);
    expect((await r.lock.readPerson('emp-11'))!.keys[0]!.validUntil).toBe('2031-06-30T21:00:00.000Z');
    r.sim.clearRequestLog();
    const again = await r.lock.apply(op('grant', 'emp-11', ['Main entrance'], { terminationDate: '2031-06-30T21:00:00Z' }));
    expect(again.keys[0]!.change).toBe('unchanged');
    expect(r.sim.countRequests('PUT', '/SecurityAccesses')).toBe(0);
  });
});

describe('iLOQ adapter: revoke', () => {
  it('removes the access, orders programming, and is idempotent', async () => {
    r = await rig();
    await r.lock.apply(op('grant', 'emp-20', ['Main entrance', 'Control room']));
    const keyId = onlyKey('emp-20');
    r.sim.programOrderedKeys();

    const res = await r.lock.apply(op('revoke', 'emp-20', ['Control room']));
    // No end date and not a phone key: nothing bounds the exposure until the key is programmed.
    expect(res.keys).toEqual([{ keyId, change: 'changed', programmingOrdered: true, effective: false }]);
    expect(r.sim.getKeyAccessNames(keyId)).toEqual(['Main entrance']);
    expect(r.sim.countRequests('GET', '/CanDelete')).toBe(1);
    expect(r.sim.countRequests('DELETE', '/SecurityAccesses/')).toBe(1);
    r.sim.programOrderedKeys();

    r.sim.clearRequestLog();
    const again = await r.lock.apply(op('revoke', 'emp-20', ['Control room']));
    expect(again.keys).toEqual([{ keyId, change: 'unchanged', programmingOrdered: false, effective: true }]);
    expect(r.sim.requests.every((q) => q.method === 'GET')).toBe(true);
  });

  it('answers absent for a person iLOQ does not know, without creating one', async () => {
    r = await rig();
    expect(await r.lock.apply(op('revoke', 'ghost', ['Main entrance']))).toEqual({ outcome: 'absent', keys: [] });
    expect(await r.lock.apply(op('leave', 'ghost', ['Main entrance']))).toEqual({ outcome: 'absent', keys: [] });
    expect(await r.lock.readPerson('ghost')).toBeNull();
    expect(r.sim.state.persons.size).toBe(0);
  });

  it('never touches a Standard access on the key', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-21' });
    const key = r.sim.addKey({ person: 'emp-21', access: ['Manual master', 'Main entrance'] });
    const res = await r.lock.apply(op('revoke', 'emp-21', ['Main entrance']));
    expect(res.keys[0]!.change).toBe('changed');
    expect(r.sim.getKeyAccessNames(key.FNKey_ID)).toEqual(['Manual master']);
    const seen = await r.lock.readPerson('emp-21');
    expect(seen!.keys[0]!.access).toEqual([]);
  });
});

describe('iLOQ adapter: leave and reinstate', () => {
  it('removes every API access, keeps Standard ones, sets the end date and orders programming', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-30' });
    const key = r.sim.addKey({ person: 'emp-30', access: ['Manual master', 'Main entrance', 'Server room'] });
    const before = Date.now();
    const res = await r.lock.apply(op('leave', 'emp-30', ['Main entrance']));
    expect(res.keys).toEqual([
      { keyId: key.FNKey_ID, change: 'changed', programmingOrdered: true, effective: false, task: { kind: 'collect_key', description: expect.stringContaining(key.Stamp!) } },
    ]);
    expect(r.sim.getKeyAccessNames(key.FNKey_ID)).toEqual(['Manual master']);

    const rec = r.sim.state.record(key.FNKey_ID);
    expect(rec.slots).toHaveLength(1);
    expect(rec.slots[0]!.SlotNo).toBe(1);
    expect(rec.slots[0]!.LimitDateLg).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$/);
    const end = Date.parse(`${rec.slots[0]!.LimitDateLg}Z`); // simulator zone is UTC
    expect(end).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000);
    expect(end).toBeLessThanOrEqual(Date.now());
    expect(Date.parse(rec.key.ExpireDate!)).toBeLessThanOrEqual(Date.now());
    expect(r.sim.state.findPersonByExternalId('emp-30')!.EmploymentEndDate).toBe(rec.slots[0]!.LimitDateLg);
    expect(rec.key.ProgrammingState).toBe(SimProgrammingState.ordered);

    const seen = await r.lock.readPerson('emp-30');
    expect(seen!.keys[0]).toMatchObject({ access: [], programmed: false });
    expect(Date.parse(seen!.keys[0]!.validUntil!)).toBeLessThanOrEqual(Date.now());

    r.sim.programOrderedKeys();
    r.sim.clearRequestLog();
    const endBefore = rec.slots[0]!.LimitDateLg;
    await new Promise((res) => setTimeout(res, 1_100)); // "now" moves on; the end date must not
    const again = await r.lock.apply(op('leave', 'emp-30', ['Main entrance']));
    expect(again.keys).toEqual([
      { keyId: key.FNKey_ID, change: 'unchanged', programmingOrdered: false, effective: true, task: expect.objectContaining({ kind: 'collect_key' }) },
    ]);
    expect(r.sim.requests.every((q) => q.method === 'GET')).toBe(true);
    expect(r.sim.state.record(key.FNKey_ID).slots[0]!.LimitDateLg).toBe(endBefore);
  });

  it('keeps other time-limit slots and an end date already in the past', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-31' });
    const key = r.sim.addKey({ person: 'emp-31', access: ['Control room'] });
    r.sim.state.replaceAccesses(key.FNKey_ID, {
      SecurityAccessIds: [r.sim.state.findAccess('Control room')!.SecurityAccess_ID],
      TimeLimitSlots: [
        { SlotNo: 0, LimitDateLg: '2020-01-01T08:00:00' },
        { SlotNo: 1, LimitDateLg: '2021-01-01T00:00:00' },
        { SlotNo: 2, TimeLimitTitle_ID: 'a4da99c5-102e-46f8-a64b-a51bcd5cb42b', TimeLimitData: [{ WeekDayMask: 31, StartTimeMS: 28_800_000, EndTimeMS: 57_600_000 }] },
      ],
      KeyScheduler: { RenewGapType: 1, RenewGapCount: 1, RenewMinute: 120 },
    });
    await r.lock.apply(op('leave', 'emp-31', []));
    const rec = r.sim.state.record(key.FNKey_ID);
    expect(r.sim.getKeyAccessNames(key.FNKey_ID)).toEqual([]);
    expect(rec.slots.map((s) => [s.SlotNo, s.LimitDateLg ?? s.TimeLimitTitle_ID])).toEqual([
      [0, '2020-01-01T08:00:00'],
      [1, '2021-01-01T00:00:00'],
      [2, 'a4da99c5-102e-46f8-a64b-a51bcd5cb42b'],
    ]);
    expect(rec.keyScheduler).toBeNull();
  });

  it('reinstate clears the end date and re-grants the given access', async () => {
    r = await rig();
    await r.lock.apply(op('grant', 'emp-32', ['Main entrance']));
    const keyId = onlyKey('emp-32');
    await r.lock.apply(op('leave', 'emp-32', ['Main entrance']));
    r.sim.programOrderedKeys();
    expect(r.sim.state.record(keyId).slots).toHaveLength(1);

    const res = await r.lock.apply(op('reinstate', 'emp-32', ['Main entrance']));
    expect(res.keys).toEqual([{ keyId, change: 'changed', programmingOrdered: true, effective: false }]);
    const rec = r.sim.state.record(keyId);
    expect(rec.slots).toEqual([]);
    expect(rec.key.ExpireDate).toBeNull();
    expect(r.sim.getKeyAccessNames(keyId)).toEqual(['Main entrance']);
    expect(r.sim.state.findPersonByExternalId('emp-32')!.EmploymentEndDate).toBeNull();
    expect((await r.lock.readPerson('emp-32'))!.keys[0]!.validUntil).toBeUndefined();
  });
});

describe('iLOQ adapter: round trips', () => {
  const LATENCY_MS = 120;
  /** The round trips of one apply, with every call answered after LATENCY_MS (session and catalogue already loaded). */
  async function tripsOf(req: ReturnType<typeof op>): Promise<string[][]> {
    await r!.lock.catalogue();
    await r!.lock.readPerson(req.person.externalId);
    r!.sim.setFaults({ latencyMs: LATENCY_MS });
    r!.sim.clearRequestLog();
    await r!.lock.apply(req);
    r!.sim.setFaults({ latencyMs: 0 });
    return roundTrips(r!.sim.requests, LATENCY_MS);
  }
  const has = (trip: string[], pattern: RegExp) => trip.some((c) => pattern.test(c));

  it('a leaver with one key: 10 calls in 7 round trips, the independent reads together', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-60' });
    r.sim.addKey({ person: 'emp-60', access: ['Main entrance'] });
    const trips = await tripsOf(op('leave', 'emp-60', ['Main entrance']));
    expect(trips.flat()).toHaveLength(10);
    expect(trips).toHaveLength(7);
    // The employment end is written while the key list is read.
    expect(trips[1]!.sort()).toEqual([expect.stringMatching(/^GET .*\/Persons\/[^/]+\/Keys$/), expect.stringMatching(/^PUT .*\/Persons$/)]);
    // Current accesses, current and last-programmed time limits: one round trip.
    expect(trips[2]).toHaveLength(3);
    expect(has(trips[2]!, /GET .*\/SecurityAccesses\?mode=1$/)).toBe(true);
    expect(has(trips[2]!, /GET .*\/TimeLimitTitles\?mode=1$/)).toBe(true);
    expect(has(trips[2]!, /GET .*\/TimeLimitTitles\?mode=2$/)).toBe(true);
  });

  it('revoke reads the exposure bound beside the key accesses', async () => {
    r = await rig();
    await r.lock.apply(op('grant', 'emp-61', ['Main entrance', 'Control room']));
    const revoke = await tripsOf(op('revoke', 'emp-61', ['Control room']));
    const first = revoke.find((t) => has(t, /SecurityAccesses\?mode=1$/))!;
    expect(first).toHaveLength(2);
    expect(has(first, /GET .*\/TimeLimitTitles\?mode=2$/)).toBe(true);
  });

  it('a grant with an end date reads the key time limits beside its accesses', async () => {
    r = await rig();
    await r.lock.apply(op('grant', 'emp-62', ['Main entrance']));
    const grant = await tripsOf(op('grant', 'emp-62', ['Control room'], { terminationDate: '2031-06-30T21:00:00Z' }));
    const reads = grant.find((t) => has(t, /SecurityAccesses\?mode=1$/))!;
    expect(reads).toHaveLength(2);
    expect(has(reads, /GET .*\/TimeLimitTitles\?mode=1$/)).toBe(true);
  });

  it('reinstate reads the key time limits beside its accesses', async () => {
    r = await rig();
    await r.lock.apply(op('grant', 'emp-63', ['Main entrance']));
    await r.lock.apply(op('leave', 'emp-63', ['Main entrance']));
    const trips = await tripsOf(op('reinstate', 'emp-63', ['Main entrance']));
    const reads = trips.find((t) => has(t, /SecurityAccesses\?mode=1$/))!;
    expect(reads).toHaveLength(2);
    expect(has(reads, /GET .*\/TimeLimitTitles\?mode=1$/)).toBe(true);
  });
});

describe('iLOQ adapter: faults surface as the port error kinds', () => {
  it('429 → rate_limited with retryAfterMs, 503 → retryable, expired session → transparent', async () => {
    r = await rig();
    await r.lock.start();
    r.sim.setFaults({ rateLimitNext: 1, retryAfterSeconds: 5 });
    const limited = await failure(r.lock.apply(op('grant', 'emp-40', ['Main entrance'])));
    expect(limited).toMatchObject({ kind: 'rate_limited', retryAfterMs: 5_000, status: 429 });

    r.sim.setFaults({ unavailableNext: 1 });
    expect((await failure(r.lock.apply(op('grant', 'emp-40', ['Main entrance'])))).kind).toBe('retryable');

    r.sim.expireSessions();
    const ok = await r.lock.apply(op('grant', 'emp-40', ['Main entrance']));
    expect(ok.keys[0]).toMatchObject({ change: 'changed', programmingOrdered: true });
    expect(r.sim.countRequests('POST', '/CreateSession')).toBe(2);
  });

  it('bad credentials → auth', async () => {
    r = await rig();
    const bad = new IloqLockSystem(configFor(r.sim, { password: 'nope' }));
    try {
      expect((await failure(bad.start())).kind).toBe('auth');
      expect((await failure(bad.apply(op('grant', 'emp-41', ['Main entrance'])))).kind).toBe('auth');
    } finally {
      await bad.close();
    }
  });
});
