import { afterEach, describe, expect, it } from 'vitest';
import { LockSystemError } from '../../src/ports/lock-system.ts';
import { CliqLockSystem } from '../../adapters/locks/cliq/adapter.ts';
import { keyHorizon, knownOnKey } from '../../adapters/locks/cliq/horizon.ts';
import type { CliqKey } from '../../adapters/locks/cliq/client.ts';
import { TOKEN, clientTls, configFor, mtlsServer, op, rig, type Rig } from './helpers.ts';
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

const H = 3_600_000;
const profileId = (name: string) => r!.sim.state.findProfile(name)!.id;

describe('CLIQ adapter: start, catalogue, persons', () => {
  it('start checks the domain is administered; catalogue lists the domain profiles', async () => {
    r = await rig();
    await r.lock.start();
    expect(await r.lock.catalogue()).toEqual(['Control room', 'Main entrance', 'Server room', 'Substation A']);
    const wrong = new CliqLockSystem(configFor(r.sim, { bearerToken: TOKEN, domainId: 'dom-elsewhere' }));
    try {
      const err = await failure(wrong.start());
      expect(err.kind).toBe('permanent');
      expect(err.message).toContain('dom-elsewhere');
      expect(err.message).toContain('dom-main "Main site"');
    } finally {
      await wrong.close();
    }
  });

  it('grant creates the person with names and e-mail; later changes are PUT, identical ones are not', async () => {
    r = await rig();
    const res = await r.lock.apply(op('grant', 'emp-1', ['Main entrance']));
    const person = r.sim.state.persons.get('emp-1')!;
    expect(person).toMatchObject({ firstName: 'Ada', lastName: 'Lovelace', email: 'emp-1@example.test', domainId: 'dom-main', active: true });
    expect(res.remotePersonId).toBe(person.id);
    r.sim.clearRequestLog();
    await r.lock.apply(op('grant', 'emp-1', ['Main entrance']));
    expect(r.sim.countWrites()).toBe(0);
    await r.lock.apply(op('grant', 'emp-1', ['Main entrance'], { familyName: 'Byron' }));
    expect(r.sim.countWrites('/persons/emp-1')).toBe(1);
    expect(person.lastName).toBe('Byron');
  });
});

describe('CLIQ adapter: grant and revoke', () => {
  it('puts current ∪ wanted on dynamic and connect keys, keeps hand-given profiles, skips normal keys with the reason', async () => {
    r = await rig();
    r.sim.seedPerson({ externalId: 'emp-2' });
    const dyn = r.sim.seedKey({ holder: 'emp-2', type: 'dynamic', access: ['Control room'] });
    const con = r.sim.seedKey({ holder: 'emp-2', type: 'connect' });
    const normal = r.sim.seedKey({ holder: 'emp-2', type: 'normal' });
    const res = await r.lock.apply(op('grant', 'emp-2', ['Main entrance']));
    const byId = new Map(res.keys.map((k) => [k.keyId, k]));
    const jobOf = (serial: string) => r!.sim.state.jobs.find((j) => j.serial === serial)!.id;
    expect(byId.get(dyn.serial)).toEqual({ keyId: dyn.serial, change: 'changed', programmingOrdered: true, effective: false, jobId: jobOf(dyn.serial) });
    expect(byId.get(con.serial)).toMatchObject({ change: 'changed', jobId: jobOf(con.serial) });
    expect(byId.get(normal.serial)).toMatchObject({ change: 'skipped', reason: expect.stringMatching(/normal CLIQ key.*programming key/) });
    expect(r.sim.getKeyAccessNames(dyn.serial)).toEqual(['Control room', 'Main entrance']);
    expect(r.sim.getKeyAccessNames(con.serial)).toEqual(['Main entrance']);
    expect(r.sim.state.requireKey(normal.serial).pendingJobs).toBe(0);

    const revoked = await r.lock.apply(op('revoke', 'emp-2', ['Main entrance', 'Server room']));
    expect(r.sim.getKeyAccessNames(dyn.serial)).toEqual(['Control room']);
    expect(r.sim.getKeyAccessNames(con.serial)).toEqual([]);
    expect(revoked.keys.find((k) => k.keyId === normal.serial)).toMatchObject({ change: 'skipped' });
  });

  it('revokes with one read and one write per key: no person lookup first, and the stored person id is kept', async () => {
    r = await rig();
    await r.lock.catalogue();
    r.sim.seedPerson({ externalId: 'emp-20' });
    const key = r.sim.seedKey({ holder: 'emp-20', type: 'dynamic', access: ['Main entrance', 'Control room'], revalidation: { enabled: true, periodHours: 24 } });
    r.sim.clearRequestLog();
    const res = await r.lock.apply(op('revoke', 'emp-20', ['Main entrance']));
    expect(res).toMatchObject({ outcome: 'applied', keys: [{ keyId: key.serial, change: 'changed' }] });
    // Not reported: the applier then keeps the lock-system person id it stored at the grant.
    expect(res.remotePersonId).toBeUndefined();
    expect(r.sim.countRequests('GET', /^\/persons(\?|$)/)).toBe(0);
    expect(r.sim.countRequests('GET', '/persons/emp-20/keys')).toBe(1);
    expect(r.sim.countWrites()).toBe(1);
    expect(r.sim.getKeyAccessNames(key.serial)).toEqual(['Control room']);
  });

  it('resolves names case-insensitively, re-reads the catalogue once for an unknown name, refuses unknown and ambiguous names', async () => {
    r = await rig();
    await r.lock.catalogue();
    const res = await r.lock.apply(op('grant', 'emp-3', ['main ENTRANCE']));
    expect(r.sim.getKeyAccessNames(res.keys[0]!.keyId)).toEqual(['Main entrance']);

    r.sim.addProfile('Roof hatch');
    await new Promise((ok) => setTimeout(ok, 1_100)); // minimum refresh interval
    const roof = await r.lock.apply(op('grant', 'emp-3', ['Roof hatch']));
    expect(r.sim.getKeyAccessNames(roof.keys[0]!.keyId)).toEqual(['Main entrance', 'Roof hatch']);

    const unknown = await failure(r.lock.apply(op('grant', 'emp-4', ['Moon base'])));
    expect(unknown.kind).toBe('permanent');
    expect(unknown.message).toContain('"Moon base"');
    expect(r.sim.state.persons.has('emp-4')).toBe(false);

    r.sim.addProfile('Control room');
    await new Promise((ok) => setTimeout(ok, 1_100));
    r.sim.addProfile('Trigger refresh');
    const ambiguous = await failure(r.lock.apply(op('grant', 'emp-4', ['Trigger refresh', 'Control room'])));
    expect(ambiguous).toMatchObject({ kind: 'permanent' });
    expect(ambiguous.message).toMatch(/"Control room" is ambiguous: 2 access profiles/);
  });

  it('enforces maxRevalidationHours: min(current, max) on every key it handles', async () => {
    r = await rig({}, { maxRevalidationHours: 24 });
    r.sim.seedPerson({ externalId: 'emp-5' });
    const off = r.sim.seedKey({ holder: 'emp-5', revalidation: { enabled: false, periodHours: 24 } });
    const longer = r.sim.seedKey({ holder: 'emp-5', revalidation: { enabled: true, periodHours: 168 } });
    const shorter = r.sim.seedKey({ holder: 'emp-5', revalidation: { enabled: true, periodHours: 12 } });
    await r.lock.apply(op('grant', 'emp-5', ['Main entrance']));
    expect(r.sim.state.requireKey(off.serial).revalidation).toEqual({ enabled: true, periodHours: 24 });
    expect(r.sim.state.requireKey(longer.serial).revalidation).toEqual({ enabled: true, periodHours: 24 });
    expect(r.sim.state.requireKey(shorter.serial).revalidation).toEqual({ enabled: true, periodHours: 12 });
    expect(r.sim.countWrites('/revalidation')).toBe(2);
  });

  it('a termination date bounds the validity of granted keys', async () => {
    r = await rig();
    const term = new Date(Date.now() + 30 * 24 * H).toISOString();
    const res = await r.lock.apply(op('grant', 'emp-6', ['Main entrance'], { terminationDate: term }));
    const key = r.sim.state.requireKey(res.keys[0]!.keyId);
    expect(key.validity).toMatchObject({ mode: 'between', to: term });
    r.sim.clearRequestLog();
    await r.lock.apply(op('grant', 'emp-6', ['Main entrance'], { terminationDate: term }));
    expect(r.sim.countWrites()).toBe(0);
    const sooner = new Date(Date.now() + 10 * 24 * H).toISOString();
    await r.lock.apply(op('grant', 'emp-6', ['Main entrance'], { terminationDate: sooner }));
    expect(key.validity).toMatchObject({ mode: 'between', to: sooner });
  });

  it('a key that turned blocked is skipped with the reason; the others are still handled', async () => {
    r = await rig();
    r.sim.seedPerson({ externalId: 'emp-7' });
    const blocked = r.sim.seedKey({ holder: 'emp-7', blocked: true });
    const ok = r.sim.seedKey({ holder: 'emp-7' });
    const res = await r.lock.apply(op('grant', 'emp-7', ['Main entrance']));
    expect(res.keys.find((k) => k.keyId === blocked.serial)).toMatchObject({ change: 'skipped', reason: expect.stringContaining('blocked') });
    expect(res.keys.find((k) => k.keyId === ok.serial)).toMatchObject({ change: 'changed' });
  });
});

describe('CLIQ adapter: leave and reinstate', () => {
  it('empties dynamic keys, sets validity never everywhere, asks to collect normal keys, deactivates the person', async () => {
    r = await rig({}, { maxRevalidationHours: 24 });
    const updated = new Date(Date.now() - 2 * H).toISOString();
    r.sim.seedPerson({ externalId: 'emp-8', firstName: 'Kim', lastName: 'Leaver' });
    const dyn = r.sim.seedKey({ holder: 'emp-8', access: ['Main entrance', 'Server room'], revalidation: { enabled: true, periodHours: 24 }, lastUpdatedAt: updated });
    const normal = r.sim.seedKey({ holder: 'emp-8', type: 'normal', lastUpdatedAt: updated });
    const res = await r.lock.apply(op('leave', 'emp-8', ['Main entrance']));
    const byId = new Map(res.keys.map((k) => [k.keyId, k]));

    expect(r.sim.state.requireKey(dyn.serial)).toMatchObject({ accessProfileIds: [], validity: { mode: 'never' }, pendingJobs: 2 });
    // Revalidation (24 h) was already on the key: it bounds the exposure; the new validity does not (not yet on the key).
    expect(byId.get(dyn.serial)).toEqual({
      keyId: dyn.serial,
      change: 'changed',
      programmingOrdered: true,
      effective: false,
      jobId: r.sim.state.jobs.find((j) => j.serial === dyn.serial && j.kind === 'access')!.id,
      exposureUntil: new Date(Date.parse(updated) + 24 * H).toISOString(),
    });
    // The normal key had no revalidation on it: no bound, and a person must collect it.
    expect(r.sim.state.requireKey(normal.serial)).toMatchObject({ validity: { mode: 'never' }, revalidation: { enabled: true, periodHours: 24 } });
    const n = byId.get(normal.serial)!;
    expect(n).toMatchObject({ change: 'changed', effective: false, task: { kind: 'collect_key' } });
    expect(n.exposureUntil).toBeUndefined();
    expect(n.task!.description).toContain(normal.serial);
    expect(n.task!.description).toContain('Kim Leaver');
    expect(r.sim.state.persons.get('emp-8')!.active).toBe(false);

    // Once the jobs are done, the key itself is bounded: never valid since its update.
    r.sim.completeJobs();
    const states = await r.lock.programmingState('emp-8');
    const dynState = states.find((s) => s.keyId === dyn.serial)!;
    expect(dynState).toMatchObject({ effective: true, pendingJobs: 0 });
    expect(dynState.horizon).toBe(dynState.lastUpdatedAt);
    const again = await r.lock.apply(op('leave', 'emp-8', ['Main entrance']));
    expect(again.keys.find((k) => k.keyId === dyn.serial)).toMatchObject({ change: 'unchanged', effective: true });
    expect(again.keys.find((k) => k.keyId === dyn.serial)!.exposureUntil).toBeUndefined();
  });

  it('reads the person and the key list in one round trip', async () => {
    r = await rig();
    r.sim.seedPerson({ externalId: 'emp-12' });
    r.sim.seedKey({ holder: 'emp-12', access: ['Main entrance'] });
    await r.lock.catalogue();
    r.sim.setFaults({ latencyMs: 120 });
    r.sim.clearRequestLog();
    await r.lock.apply(op('leave', 'emp-12', ['Main entrance']));
    r.sim.setFaults({ latencyMs: 0 });
    const [first] = roundTrips(r.sim.requests, 120);
    expect(first).toHaveLength(2);
    expect(first!.some((c) => c.includes('/persons/'))).toBe(true);
    expect(first!.some((c) => c.includes('/keys'))).toBe(true);
  });

  it('exposure is unknown while a revalidation change is itself still pending', async () => {
    r = await rig({}, { maxRevalidationHours: 24 });
    r.sim.seedPerson({ externalId: 'emp-9' });
    const key = r.sim.seedKey({ holder: 'emp-9', access: ['Main entrance'], revalidation: { enabled: false, periodHours: 24 } });
    await r.lock.apply(op('grant', 'emp-9', ['Server room'])); // sets revalidation: a pending job
    const res = await r.lock.apply(op('revoke', 'emp-9', ['Main entrance']));
    expect(res.keys[0]).toMatchObject({ keyId: key.serial, change: 'changed', effective: false });
    expect(res.keys[0]!.exposureUntil).toBeUndefined();
    const [state] = await r.lock.programmingState('emp-9');
    expect(state).toMatchObject({ effective: false, pendingJobs: 3 });
    expect(state!.horizon).toBeUndefined();
    r.sim.completeJobs();
    const [done] = await r.lock.programmingState('emp-9');
    expect(Date.parse(done!.horizon!)).toBe(Date.parse(done!.lastUpdatedAt!) + 24 * H);
  });

  it('reinstate restores validity (always, or until the termination date), re-activates and re-grants', async () => {
    r = await rig();
    const granted = await r.lock.apply(op('grant', 'emp-10', ['Main entrance']));
    const serial = granted.keys[0]!.keyId;
    await r.lock.apply(op('leave', 'emp-10', []));
    expect(r.sim.state.persons.get('emp-10')!.active).toBe(false);

    const res = await r.lock.apply(op('reinstate', 'emp-10', ['Control room']));
    expect(res.keys[0]).toMatchObject({ keyId: serial, change: 'changed' });
    const key = r.sim.state.requireKey(serial);
    expect(key.validity).toEqual({ mode: 'always' });
    expect(r.sim.getKeyAccessNames(serial)).toEqual(['Control room']);
    expect(r.sim.state.persons.get('emp-10')!.active).toBe(true);

    const term = new Date(Date.now() + 7 * 24 * H).toISOString();
    await r.lock.apply(op('reinstate', 'emp-10', [], { terminationDate: term }));
    expect(key.validity).toMatchObject({ mode: 'between', to: term });
    r.sim.clearRequestLog();
    await r.lock.apply(op('reinstate', 'emp-10', [], { terminationDate: term }));
    expect(r.sim.countWrites()).toBe(0);
  });
});

describe('CLIQ adapter: observation', () => {
  it('readPerson shows profile names, validity end and whether jobs are pending', async () => {
    r = await rig();
    r.sim.seedPerson({ externalId: 'emp-11' });
    const key = r.sim.seedKey({ holder: 'emp-11', access: ['Server room'], validity: { mode: 'between', from: '2020-01-01T00:00:00.000Z', to: '2040-01-01T00:00:00.000Z' } });
    expect(await r.lock.readPerson('emp-11')).toEqual({
      remotePersonId: r.sim.state.persons.get('emp-11')!.id,
      externalId: 'emp-11',
      keys: [{ keyId: key.serial, access: ['Server room'], validUntil: '2040-01-01T00:00:00.000Z', programmed: true }],
    });
  });

  it('readEvents maps serial, cylinder and holder, follows the cursor and caps limit at 500', async () => {
    r = await rig();
    r.sim.seedPerson({ externalId: 'emp-12' });
    const key = r.sim.seedKey({ holder: 'emp-12' });
    const loose = r.sim.seedKey({});
    r.sim.addEvent({ serial: key.serial, cylinderId: 'cyl-7', result: 'granted', at: '2030-01-01T08:00:00.000Z' });
    r.sim.addEvent({ serial: loose.serial, cylinderId: 'cyl-8', result: 'denied' });
    const page = await r.lock.readEvents(undefined, 5_000);
    expect(page.events).toEqual([
      { id: expect.any(String), at: '2030-01-01T08:00:00.000Z', keyId: key.serial, lockId: 'cyl-7', result: 'granted', externalId: 'emp-12' },
      { id: expect.any(String), at: expect.any(String), keyId: loose.serial, lockId: 'cyl-8', result: 'denied' },
    ]);
    expect(page.cursor).toBe(page.events[1]!.id);
    expect(r.sim.requests.find((q) => q.path === '/events')!.query).toContain('limit=500');
    expect(await r.lock.readEvents(page.cursor, 10)).toEqual({ events: [], cursor: page.cursor });
  });

  it('keyHorizon: only settings without a pending job count', () => {
    const now = new Date('2030-01-10T00:00:00.000Z');
    const key: CliqKey = {
      serial: '100000001',
      type: 'dynamic',
      holderExternalId: 'x',
      validity: { mode: 'between', from: '2030-01-01T00:00:00.000Z', to: '2030-01-12T00:00:00.000Z' },
      revalidation: { enabled: true, periodHours: 24 },
      accessProfileIds: [],
      blocked: false,
      pendingJobs: 0,
      lastUpdatedAt: '2030-01-09T12:00:00.000Z',
    };
    expect(keyHorizon(key, knownOnKey(key, new Set()), now)?.toISOString()).toBe('2030-01-10T12:00:00.000Z');
    const pending = { ...key, pendingJobs: 1 };
    expect(keyHorizon(pending, knownOnKey(pending, new Set(['revalidation'])), now)?.toISOString()).toBe('2030-01-12T00:00:00.000Z');
    expect(keyHorizon(pending, knownOnKey(pending, new Set(['revalidation', 'validity'])), now)).toBeUndefined();
    expect(keyHorizon(pending, knownOnKey(pending, undefined), now)).toBeUndefined();
    const never = { ...key, validity: { mode: 'never' as const }, lastUpdatedAt: null };
    expect(keyHorizon(never, knownOnKey(never, undefined), now)?.toISOString()).toBe(now.toISOString());
  });
});

describe('CLIQ adapter: faults', () => {
  it('503 → retryable with Retry-After, 401 → auth, and the token never appears in messages', async () => {
    r = await rig();
    await r.lock.start();
    r.sim.setFaults({ unavailableNext: 1, retryAfterSeconds: 2 });
    expect(await failure(r.lock.apply(op('grant', 'emp-13', ['Main entrance'])))).toMatchObject({ kind: 'retryable', retryAfterMs: 2_000, status: 503 });
    r.sim.setToken('rotated');
    const err = await failure(r.lock.apply(op('grant', 'emp-13', ['Main entrance'])));
    expect(err).toMatchObject({ kind: 'auth', status: 401 });
    expect(err.message).toContain('INVALID_TOKEN');
    expect(err.message).not.toContain(TOKEN);
  });

  it('mutual TLS: a client certificate the server does not trust → auth; a missing certificate file → permanent', async () => {
    r = await rig({ token: undefined, tls: mtlsServer() });
    const good = new CliqLockSystem(configFor(r.sim, { tls: clientTls() }));
    const rogue = new CliqLockSystem(configFor(r.sim, { tls: clientTls('rogue') }));
    const missing = new CliqLockSystem(configFor(r.sim, { tls: { ...clientTls(), keyFile: '/nonexistent/key.pem' } }));
    try {
      expect((await good.apply(op('grant', 'emp-14', ['Main entrance']))).outcome).toBe('applied');
      expect(await failure(rogue.apply(op('grant', 'emp-14', ['Main entrance'])))).toMatchObject({ kind: 'auth', status: 401 });
      const err = await failure(missing.apply(op('grant', 'emp-14', ['Main entrance'])));
      expect(err.kind).toBe('permanent');
      expect(err.message).toContain('tls.keyFile');
    } finally {
      await Promise.all([good.close(), rogue.close(), missing.close()]);
    }
  });
});
