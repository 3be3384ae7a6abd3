/**
 * iLOQ: programming state, residual exposure, leaver key disposal (return / delete / task) and
 * audit events through LockLogs/GetLockLogDataByTimestamp.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KeyState } from '../../adapters/locks/iloq/wire.ts';
import { IloqLockSystem } from '../../adapters/locks/iloq/adapter.ts';
import { configFor, op, rig, type Rig } from './helpers.ts';

let r: Rig | undefined;
let extra: IloqLockSystem | undefined;
afterEach(async () => {
  await extra?.close();
  await r?.close();
  r = undefined;
  extra = undefined;
});

/** Gives a key an end date (slot 1) and offline expiry, and programs it (as if done in the field). */
function programmedWith(keyId: string, opts: { end?: string; offlineSeconds?: number }): void {
  const s = r!.sim.state;
  const rec = s.record(keyId);
  s.replaceAccesses(keyId, {
    SecurityAccessIds: [...rec.current],
    TimeLimitSlots: opts.end ? [{ SlotNo: 1, LimitDateLg: opts.end }] : [],
    KeyScheduler: null,
    OfflineExpirationSeconds: opts.offlineSeconds ?? 0,
    OutsideUserZoneTimeLimitTitleSlots: null,
  });
  s.order(keyId);
  s.program(keyId);
}

describe('iLOQ programmingState', () => {
  it('compares current and last programmed (accesses and end date) and the ordered state', async () => {
    r = await rig();
    const granted = await r.lock.apply(op('grant', 'emp-1', ['Main entrance']));
    const keyId = granted.keys[0]!.keyId;
    expect(await r.lock.programmingState('emp-1')).toEqual([{ keyId, effective: false, pendingJobs: 1 }]);
    r.sim.programOrderedKeys();
    expect(await r.lock.programmingState('emp-1')).toEqual([{ keyId, effective: true, pendingJobs: 0 }]);

    // Leave changes only the end date and accesses in the current view: not effective until programmed.
    await r.lock.apply(op('leave', 'emp-1', []));
    const [left] = await r.lock.programmingState('emp-1');
    expect(left).toMatchObject({ keyId, effective: false });
    expect(left!.horizon).toBeUndefined(); // the physical key still has no end date
    r.sim.programOrderedKeys();
    const [done] = await r.lock.programmingState('emp-1');
    expect(done).toMatchObject({ effective: true });
    expect(Date.parse(done!.horizon!)).toBeLessThanOrEqual(Date.now()); // the programmed end date is now
    expect(await r.lock.programmingState('nobody')).toEqual([]);
  });

  it('a change made but never ordered (planning) is not effective either', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-2' });
    const key = r.sim.addKey({ person: 'emp-2' });
    r.sim.state.addAccess(key.FNKey_ID, r.sim.state.findAccess('Control room')!.SecurityAccess_ID);
    expect(r.sim.state.record(key.FNKey_ID).key.ProgrammingState).toBe(0);
    expect((await r.lock.programmingState('emp-2'))[0]).toMatchObject({ effective: false, pendingJobs: 0 });
  });
});

describe('iLOQ residual exposure on revocations', () => {
  it('bounds by the last-programmed end date and, for phone keys, the offline expiry', async () => {
    r = await rig({ timeZone: 'FLE Standard Time' });
    r.sim.addPerson({ ExternalPersonId: 'emp-3' });
    const physical = r.sim.addKey({ person: 'emp-3', access: ['Main entrance'] });
    const phone = r.sim.addKey({ person: 'emp-3', keyTypeMask: 6, access: ['Main entrance'] });
    const bare = r.sim.addKey({ person: 'emp-3', access: ['Main entrance'] });
    programmedWith(physical.FNKey_ID, { end: '2031-07-01T00:00:00' });
    programmedWith(phone.FNKey_ID, { offlineSeconds: 3_600 });

    const before = Date.now();
    const res = await r.lock.apply(op('revoke', 'emp-3', ['Main entrance']));
    const byId = new Map(res.keys.map((k) => [k.keyId, k]));
    expect(byId.get(physical.FNKey_ID)).toMatchObject({ change: 'changed', effective: false, exposureUntil: '2031-06-30T21:00:00.000Z' });
    const phoneBound = Date.parse(byId.get(phone.FNKey_ID)!.exposureUntil!);
    expect(phoneBound).toBeGreaterThanOrEqual(before + 3_600_000);
    expect(phoneBound).toBeLessThanOrEqual(Date.now() + 3_600_000);
    expect(byId.get(bare.FNKey_ID)!.exposureUntil).toBeUndefined();

    r.sim.programOrderedKeys();
    const again = await r.lock.apply(op('revoke', 'emp-3', ['Main entrance']));
    for (const k of again.keys) {
      expect(k).toMatchObject({ change: 'unchanged', effective: true });
      expect(k.exposureUntil).toBeUndefined();
    }
  });
});

describe('iLOQ leave: key disposal', () => {
  it('returns phone keys through the API, deletes never-programmed ones, asks to collect physical keys', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-4', FirstName: 'Lee', LastName: 'Leaver' });
    const phone = r.sim.addKey({ person: 'emp-4', keyTypeMask: 6, access: ['Main entrance'] });
    const fresh = r.sim.addKey({ person: 'emp-4', keyTypeMask: 6, programmed: false });
    const physical = r.sim.addKey({ person: 'emp-4', access: ['Main entrance'] });
    const res = await r.lock.apply(op('leave', 'emp-4', ['Main entrance']));
    const byId = new Map(res.keys.map((k) => [k.keyId, k]));

    expect(r.sim.state.record(phone.FNKey_ID).key.State).toBe(KeyState.returned);
    expect(r.sim.countRequests('POST', `/Keys/${phone.FNKey_ID}/Return`)).toBe(1);
    expect(byId.get(phone.FNKey_ID)).toMatchObject({ change: 'changed' });
    expect(byId.get(phone.FNKey_ID)!.task).toBeUndefined();
    expect(r.sim.state.record(fresh.FNKey_ID).key.State).toBe(KeyState.deleted);
    expect(r.sim.countRequests('DELETE', `/Keys/${fresh.FNKey_ID}`)).toBe(1);
    expect(byId.get(physical.FNKey_ID)!.task).toEqual({ kind: 'collect_key', description: expect.stringContaining('Lee Leaver') });
    expect(r.sim.getKeyAccessNames(physical.FNKey_ID)).toEqual([]);

    // Returned and deleted keys are gone from the person: the next leave sees only the physical key.
    r.sim.clearRequestLog();
    const again = await r.lock.apply(op('leave', 'emp-4', []));
    expect(again.keys.map((k) => k.keyId)).toEqual([physical.FNKey_ID]);
    expect(r.sim.requests.every((q) => q.method === 'GET')).toBe(true);
  });

  it('a phone key the API may not return gets a task with the reason', async () => {
    r = await rig();
    r.sim.addPerson({ ExternalPersonId: 'emp-5' });
    const phone = r.sim.addKey({ person: 'emp-5', keyTypeMask: 6, access: ['Main entrance'] });
    r.sim.state.record(phone.FNKey_ID).canReturnOverride = 1;
    const res = await r.lock.apply(op('leave', 'emp-5', []));
    expect(res.keys[0]!.task).toEqual({ kind: 'collect_key', description: expect.stringMatching(/iLOQ Manager.*CanReturn 1/) });
    expect(r.sim.state.record(phone.FNKey_ID).key.State).toBe(KeyState.handedOver);
  });
});

describe('iLOQ readEvents', () => {
  it('maps access logs (granted/denied, holder), skips other logs, and halves windows at the 2000 cap', async () => {
    // The documented cap (2000) scaled down on both sides.
    r = await rig({ maxLockLogsPerCall: 3 });
    extra = new IloqLockSystem(configFor(r.sim), undefined, { logSettleMs: 0, lockLogCap: 3 });
    const granted = await extra.apply(op('grant', 'emp-6', ['Main entrance']));
    const keyId = granted.keys[0]!.keyId;
    const t0 = Date.now() - 60_000;
    const at = (i: number) => new Date(t0 + i * 1_000).toISOString();
    // 9 logs: every third is "lock programmed" (not an access event).
    for (let i = 0; i < 9; i++)
      r.sim.addLockLog({ FNKey_ID: keyId, FLock_ID: `lock-${i}`, AccessTypeMask: i % 3 === 2 ? 2 : i % 2 ? 2049 : 2052, TimestampUtc: at(i), GoingDate: at(i) });

    const seen: Array<{ lockId: string; result: string; externalId?: string }> = [];
    let cursor: string | undefined;
    for (let n = 0; n < 20; n++) {
      const page = await extra.readEvents(cursor, 2);
      seen.push(...page.events.map((e) => ({ lockId: e.lockId, result: e.result, ...(e.externalId ? { externalId: e.externalId } : {}) })));
      if (page.cursor === cursor && page.events.length === 0) break;
      cursor = page.cursor;
      if (page.events.length === 0 && Date.parse(cursor!.split('|')[0]!) > Date.now() - 1_000) break;
    }
    expect(seen.map((e) => e.lockId)).toEqual(['lock-0', 'lock-1', 'lock-3', 'lock-4', 'lock-6', 'lock-7']);
    expect(seen.map((e) => e.result)).toEqual(['granted', 'denied', 'denied', 'granted', 'granted', 'denied']);
    expect(seen.every((e) => e.externalId === 'emp-6')).toBe(true);
    // The cap forced narrower windows: more than one query per page read.
    expect(r.sim.countRequests('POST', '/LockLogs/GetLockLogDataByTimestamp')).toBeGreaterThan(4);
  });

  it('logs sharing one timestamp are neither lost nor repeated across a limit boundary', async () => {
    r = await rig();
    extra = new IloqLockSystem(configFor(r.sim), undefined, { logSettleMs: 0 });
    const ts = new Date(Date.now() - 10_000).toISOString();
    for (let i = 0; i < 3; i++) r.sim.addLockLog({ DeviceLog_ID: `00000000-0000-0000-0000-00000000000${i}`, FLock_ID: `lock-${i}`, FNKey_ID: null, TimestampUtc: ts });
    for (let i = 3; i < 6; i++) r.sim.addLockLog({ DeviceLog_ID: `00000000-0000-0000-0000-00000000000${i}`, FNKey_ID: 'aaaaaaaa-0000-0000-0000-000000000000', FLock_ID: `lock-${i}`, TimestampUtc: ts });
    const a = await extra.readEvents(undefined, 2);
    const b = await extra.readEvents(a.cursor, 2);
    const c = await extra.readEvents(b.cursor, 2);
    // Logs without a key are not access events; the unknown key has no holder.
    expect([...a.events, ...b.events, ...c.events].map((e) => e.lockId)).toEqual(['lock-3', 'lock-4', 'lock-5']);
    expect(a.events[0]!.externalId).toBeUndefined();
    expect(a.cursor).toMatch(new RegExp(`^${ts.replace(/\./g, '\\.')}\\|`));
  });

  it('stays 2 s behind now by default, so that late inserts are not skipped', async () => {
    r = await rig();
    const granted = await r.lock.apply(op('grant', 'emp-7', ['Main entrance']));
    const keyId = granted.keys[0]!.keyId;
    r.sim.addLockLog({ FNKey_ID: keyId, FLock_ID: 'old', TimestampUtc: new Date(Date.now() - 5_000).toISOString() });
    r.sim.addLockLog({ FNKey_ID: keyId, FLock_ID: 'new' });
    const first = await r.lock.readEvents(undefined, 10);
    expect(first.events.map((e) => e.lockId)).toEqual(['old']);
    await new Promise((ok) => setTimeout(ok, 2_100));
    const second = await r.lock.readEvents(first.cursor, 10);
    expect(second.events.map((e) => e.lockId)).toEqual(['new']);
  });

  it('refuses a cursor it did not make', async () => {
    r = await rig();
    await expect(r.lock.readEvents('yesterday', 10)).rejects.toMatchObject({ kind: 'permanent' });
  });
});
