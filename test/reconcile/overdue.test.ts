import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { configSchema, type Config } from '../../src/config/schema.ts';
import { createLogger } from '../../src/log.ts';
import { LockSystemError, type KeyResult, type LockSystem, type ReportLostRequest } from '../../src/ports/lock-system.ts';
import { OverdueBlocklister } from '../../src/reconcile/overdue.ts';
import { taskDeadlineMs } from '../../src/reconcile/tasks.ts';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';

const HOUR = 3_600_000;

function config(): Config {
  const iloq = { serverUrl: 'http://127.0.0.1:1/iloqws', customerCode: 'C', userName: 'u', password: 'p' };
  return configSchema.parse({
    store: { driver: 'sqlite' },
    sources: [{ id: 'okta', idp: 'okta', scim: { tokenSha256: 'a'.repeat(64) } }],
    lockSystems: [
      { id: 'on', kind: 'iloq', iloq, tasks: { collectDeadlineHours: 1.5, blocklistOverdue: true }, apply: { retry: { attempts: 5, baseMs: 60_000, maxMs: 60_000 } } },
      { id: 'off', kind: 'iloq', iloq, tasks: { collectDeadlineDays: 3 } },
    ],
    policy: { rules: [] },
  });
}

/** A LockSystem whose reportLost answers what the test says. */
function fakeLock(id: string, answer: (req: ReportLostRequest) => KeyResult | Promise<KeyResult>): LockSystem & { calls: ReportLostRequest[] } {
  const calls: ReportLostRequest[] = [];
  const no = () => Promise.reject(new Error('not used'));
  return {
    id,
    kind: 'fake',
    calls,
    start: () => Promise.resolve(),
    close: () => Promise.resolve(),
    ping: () => Promise.resolve(),
    catalogue: no,
    readPerson: no,
    apply: no,
    programmingState: no,
    readEvents: no,
    reportLost: async (req) => {
      calls.push(req);
      return answer(req);
    },
  };
}

describe('config: task deadlines', () => {
  it('hours (decimals) replace days; defaults stay 14 days, blocklistOverdue off', () => {
    const c = config();
    expect(taskDeadlineMs(c.lockSystems[0]!.tasks)).toBe(1.5 * HOUR);
    expect(taskDeadlineMs(c.lockSystems[1]!.tasks)).toBe(3 * 24 * HOUR);
    expect(c.lockSystems[1]!.tasks.blocklistOverdue).toBe(false);
    const d = configSchema.parse({ ...c, lockSystems: [{ ...c.lockSystems[1]!, tasks: undefined }] });
    expect(d.lockSystems[0]!.tasks).toEqual({ collectDeadlineDays: 14, blocklistOverdue: false });
    expect(taskDeadlineMs(d.lockSystems[0]!.tasks)).toBe(14 * 24 * HOUR);
  });
});

describe.each(BACKENDS)('OverdueBlocklister (%s)', (backend) => {
  let t: TestStore;
  const now = Date.now();
  beforeEach(async () => {
    t = await freshStore(backend);
  });
  afterEach(async () => t.cleanup());

  const state = (ls: string, person: string, departed: boolean) =>
    t.store.db.insertInto('lock_state').values({ lock_system_id: ls, person_id: person, access: '[]', departed: departed ? 1 : 0, remote_person_id: null, updated_at: now }).execute();
  const task = (id: string, o: { ls?: string; person?: string; key?: string; kind?: string; deadline?: number; done?: boolean } = {}) =>
    t.store.db
      .insertInto('tasks')
      .values({
        id,
        lock_system_id: o.ls ?? 'on',
        person_id: o.person ?? 'p1',
        key_id: o.key ?? `k-${id}`,
        kind: o.kind ?? 'collect_key',
        description: 'collect it',
        reason: 'leave',
        correlation_id: `c-${id}`,
        created_at: now - 10 * HOUR,
        deadline: o.deadline ?? now - HOUR,
        done_at: o.done ? now : null,
        done_by: o.done ? 'ops' : null,
        note: null,
      })
      .execute();
  const make = (lock: LockSystem) => new OverdueBlocklister({ store: t.store, lockSystems: new Map([[lock.id, lock]]), log: createLogger('silent'), config: config() });
  const audit = async () => (await t.store.db.selectFrom('audit').select(['action', 'subject']).orderBy('seq').execute()).map((a) => `${a.action} ${a.subject}`);

  it('selects open collect_key tasks past their deadline, on enabled lock systems, for persons still gone', async () => {
    await state('on', 'p1', true);
    await state('on', 'p2', false); // reinstated: keeps the key
    await state('off', 'p1', true);
    await task('late-2', { deadline: now - HOUR });
    await task('late-1', { deadline: now - 2 * HOUR });
    await task('not-yet', { deadline: now + HOUR });
    await task('closed', { done: true });
    await task('other-kind', { kind: 'blocklist_key' });
    await task('reinstated', { person: 'p2' });
    await task('disabled-ls', { ls: 'off' });
    await task('no-state', { person: 'p3' });
    const o = make(fakeLock('on', () => ({ keyId: 'x', change: 'changed' })));
    expect((await o.findOverdue(now)).map((r) => r.id)).toEqual(['late-1', 'late-2']);
    expect((await o.findOverdue(now + 2 * HOUR)).map((r) => r.id)).toEqual(['late-1', 'late-2', 'not-yet']);
  });

  it('reports the key lost, closes the task, raises the returned task once, records exposure and audits', async () => {
    await state('on', 'p1', true);
    await task('t1', { key: 'K1' });
    await t.store.db
      .insertInto('tasks')
      .values({ id: 'prev', lock_system_id: 'on', person_id: 'p1', key_id: 'K1', kind: 'blocklist_key', description: 'x', reason: 'x', correlation_id: 'x', created_at: now, deadline: now, done_at: null, done_by: null, note: null })
      .execute();
    const lock = fakeLock('on', (req) => ({ keyId: req.keyId, change: 'changed', jobId: 'job-7', effective: false, task: { kind: 'blocklist_key', description: 'visit the cylinders' } }));
    const o = make(lock);
    expect(await o.runOnce(now)).toEqual({ blocklisted: 1, retry: 0, failed: 0, raced: 0 });
    expect(lock.calls).toEqual([expect.objectContaining({ keyId: 'K1', person: { personId: 'p1', externalId: 'p1' }, operationId: 'overdue:t1', reason: expect.stringContaining('deadline') })]);
    const closed = await t.store.db.selectFrom('tasks').selectAll().where('id', '=', 't1').executeTakeFirstOrThrow();
    expect(closed).toMatchObject({ done_by: 'system:overdue', note: expect.stringContaining('job-7') });
    // Same dedupe rule as the applier: one open task per key and kind.
    expect(await t.store.db.selectFrom('tasks').select('id').where('kind', '=', 'blocklist_key').where('done_at', 'is', null).execute()).toEqual([{ id: 'prev' }]);
    const kc = await t.store.db.selectFrom('key_changes').selectAll().execute();
    expect(kc).toEqual([expect.objectContaining({ key_id: 'K1', kind: 'blocklist', revocation: 1, job_id: 'job-7', horizon: null, effective_at: null, operation_id: 'task:t1' })]);
    expect(await audit()).toEqual(['task.overdue task:t1', 'key.blocklisted key:on:K1']);
    // Nothing left to do.
    expect(await o.runOnce(now)).toEqual({ blocklisted: 0, retry: 0, failed: 0, raced: 0 });
    expect(lock.calls).toHaveLength(1);
  });

  it('raises the returned task when none is open, with the lock system deadline', async () => {
    await state('on', 'p1', true);
    await task('t1', { key: 'K1' });
    const o = make(fakeLock('on', (req) => ({ keyId: req.keyId, change: 'changed', effective: true, task: { kind: 'blocklist_key', description: 'order it in Manager' } })));
    await o.runOnce(now);
    const raised = await t.store.db.selectFrom('tasks').selectAll().where('kind', '=', 'blocklist_key').executeTakeFirstOrThrow();
    expect(raised).toMatchObject({ key_id: 'K1', correlation_id: 'c-t1', done_at: null });
    expect(Number(raised.deadline) - Number(raised.created_at)).toBe(1.5 * HOUR);
    expect((await t.store.db.selectFrom('key_changes').select('effective_at').executeTakeFirstOrThrow()).effective_at).not.toBeNull();
    expect(await audit()).toEqual(['task.overdue task:t1', 'key.blocklisted key:on:K1', `task.raised task:${raised.id}`]);
  });

  it('retryable: the task stays open, one audit per attempt, the next attempt waits for the backoff', async () => {
    await state('on', 'p1', true);
    await task('t1');
    let fail = true;
    const lock = fakeLock('on', (req) => {
      if (fail) throw new LockSystemError('rate_limited', 'slow down', { retryAfterMs: 120_000, status: 429 });
      return { keyId: req.keyId, change: 'changed' };
    });
    const o = make(lock);
    expect(await o.runOnce(now)).toMatchObject({ retry: 1 });
    expect(await o.runOnce(now)).toMatchObject({ retry: 0, blocklisted: 0 }); // Retry-After not over yet
    expect(lock.calls).toHaveLength(1);
    expect(await audit()).toEqual(['task.overdue_failed task:t1']);
    expect((await t.store.db.selectFrom('tasks').select('done_at').executeTakeFirstOrThrow()).done_at).toBeNull();
    // Once the wait is over (a fresh instance has no backoff), it goes through.
    fail = false;
    expect(await make(lock).runOnce(now)).toMatchObject({ blocklisted: 1 });
  });

  it('permanent: audited once, the task stays open and overdue', async () => {
    await state('on', 'p1', true);
    await task('t1');
    const lock = fakeLock('on', () => {
      throw new LockSystemError('permanent', 'key is held by someone else');
    });
    const o = make(lock);
    expect(await o.runOnce(now)).toMatchObject({ failed: 1 });
    expect(await o.runOnce(now)).toMatchObject({ failed: 0 });
    expect(lock.calls).toHaveLength(1);
    expect(await audit()).toEqual(['task.overdue_failed task:t1']);
    const detail = JSON.parse((await t.store.db.selectFrom('audit').select('detail').executeTakeFirstOrThrow()).detail);
    expect(detail).toMatchObject({ kind: 'permanent', error: 'key is held by someone else', nextAttemptAt: null });
    expect((await o.findOverdue(now)).map((r) => r.id)).toEqual(['t1']);
  });

  it('a task closed by a person while the lock system answers is not closed again and records nothing', async () => {
    await state('on', 'p1', true);
    await task('t1');
    const o = make(
      fakeLock('on', async (req) => {
        await t.store.db.updateTable('tasks').set({ done_at: now, done_by: 'ops' }).where('id', '=', 't1').execute();
        return { keyId: req.keyId, change: 'changed' };
      }),
    );
    expect(await o.runOnce(now)).toMatchObject({ raced: 1, blocklisted: 0 });
    expect((await t.store.db.selectFrom('tasks').select('done_by').executeTakeFirstOrThrow()).done_by).toBe('ops');
    expect(await t.store.db.selectFrom('key_changes').selectAll().execute()).toEqual([]);
    expect(await audit()).toEqual([]);
  });
});
