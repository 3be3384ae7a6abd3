import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appendAudit, queryAudit, verifyAudit } from '../../src/audit/audit.ts';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';

describe.each(BACKENDS)('audit log on %s', (backend) => {
  let t: TestStore;
  beforeEach(async () => {
    t = await freshStore(backend);
    const { store } = t;
    for (let i = 0; i < 5; i++)
      await store.db.transaction().execute((trx) =>
        appendAudit(trx, store.dialect, [{ actor: 'test', action: i % 2 ? 'odd' : 'even', subject: `s${i}`, personId: `p${i % 2}`, detail: { i }, correlationId: `c${i}` }], 1_000 + i),
      );
  });
  afterEach(() => t.cleanup());

  it('an untouched chain verifies', async () => {
    expect(await verifyAudit(t.store.db)).toEqual({ ok: true, rows: 5, problems: [] });
  });

  it('detects an edited row', async () => {
    await t.store.db.updateTable('audit').set({ detail: JSON.stringify({ i: 99 }) }).where('seq', '=', 3).execute();
    const r = await verifyAudit(t.store.db);
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([{ seq: 3, problem: expect.stringContaining('row edited') }]);
  });

  it('detects an edited row even when its hash is recomputed (the next link breaks)', async () => {
    const { rowHash } = await import('../../src/audit/audit.ts');
    const row = await t.store.db.selectFrom('audit').selectAll().where('seq', '=', 2).executeTakeFirstOrThrow();
    const forged = { ...row, seq: Number(row.seq), at: Number(row.at), actor: 'mallory' };
    const { hash: _h, ...rest } = forged;
    await t.store.db.updateTable('audit').set({ actor: 'mallory', hash: rowHash(rest) }).where('seq', '=', 2).execute();
    const r = await verifyAudit(t.store.db);
    expect(r.ok).toBe(false);
    expect(r.problems.map((p) => p.seq)).toEqual([3]);
  });

  it('detects a deleted row in the middle', async () => {
    await t.store.db.deleteFrom('audit').where('seq', '=', 2).execute();
    const r = await verifyAudit(t.store.db);
    expect(r.ok).toBe(false);
    expect(r.problems.some((p) => p.seq === 3 && /missing/.test(p.problem))).toBe(true);
  });

  it('detects deleted trailing rows through the head', async () => {
    await t.store.db.deleteFrom('audit').where('seq', '>=', 4).execute();
    const r = await verifyAudit(t.store.db);
    expect(r.ok).toBe(false);
    expect(r.problems[0]!.problem).toMatch(/head records seq 5 but the chain ends at 3/);
  });

  it('filters by person, action and time, and pages by seq', async () => {
    expect((await queryAudit(t.store.db, { personId: 'p1', limit: 10 })).map((r) => r.seq)).toEqual([2, 4]);
    expect((await queryAudit(t.store.db, { action: 'even', limit: 10 })).map((r) => r.seq)).toEqual([1, 3, 5]);
    expect((await queryAudit(t.store.db, { from: 1_001, to: 1_003, limit: 10 })).map((r) => r.seq)).toEqual([2, 3]);
    expect((await queryAudit(t.store.db, { after: 3, limit: 1 })).map((r) => r.seq)).toEqual([4]);
  });

  it('a rolled-back transaction leaves no audit row behind', async () => {
    const { store } = t;
    await expect(
      store.db.transaction().execute(async (trx) => {
        await appendAudit(trx, store.dialect, [{ actor: 'x', action: 'y', subject: 'z', correlationId: 'c' }]);
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await verifyAudit(store.db)).toMatchObject({ ok: true, rows: 5 });
  });
});
