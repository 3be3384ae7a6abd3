import { sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';

/**
 * Only dead-lettered operations carry a failed job (migration 0013): the index on it holds those
 * and nothing else, and lookups shaped like the admin API's two (src/http/admin.ts: the dead
 * letters of one failed job, and of a page of them) still find them through it.
 */
describe.each(BACKENDS)('dead-letter index on %s', (backend) => {
  let t: TestStore | undefined;
  afterEach(async () => {
    await t?.cleanup();
    t = undefined;
  });

  const operation = (id: string, seq: number, failedJobId: string | null) => ({
    id,
    person_id: 'p1',
    lock_system_id: 'iloq',
    kind: 'grant',
    access: '["Main entrance"]',
    priority: 10,
    state: failedJobId ? 'dead' : 'accepted',
    attempts: 1,
    correlation_id: `c-${seq}`,
    requested_at: seq,
    failed_job_id: failedJobId,
  });

  it('indexes dead-lettered operations only, and finds them by job', async () => {
    t = await freshStore(backend);
    const db = t.store.db;
    await db
      .insertInto('operations')
      .values([operation('o1', 1, 'f1'), operation('o2', 2, null), operation('o3', 3, 'f2'), operation('o4', 4, 'f1')] as never)
      .execute();

    const definition =
      backend === 'sqlite'
        ? (await sql<{ d: string }>`select sql as d from sqlite_master where name = 'operations_failed_job'`.execute(db)).rows[0]?.d
        : (await sql<{ d: string }>`select indexdef as d from pg_indexes where indexname = 'operations_failed_job' and schemaname = current_schema()`.execute(db)).rows[0]?.d;
    expect(definition).toMatch(/where \(?"?failed_job_id"? is not null\)?/i);

    const byJob = db.selectFrom('operations').select(['id']).where('state', '=', 'dead').where('failed_job_id', '=', 'f1').orderBy('seq');
    const byJobs = db.selectFrom('operations').select(['id', 'failed_job_id']).where('failed_job_id', 'in', ['f1', 'f2']).orderBy('seq');
    expect((await byJob.execute()).map((r) => r.id)).toEqual(['o1', 'o4']);
    expect((await byJobs.execute()).map((r) => r.id)).toEqual(['o1', 'o3', 'o4']);

    if (backend === 'sqlite') {
      // The planner must see that naming a job implies NOT NULL; otherwise these read every operation.
      for (const q of [byJob.compile(), byJobs.compile()]) {
        const plan = await db.executeQuery<{ detail: string }>({ ...q, sql: `explain query plan ${q.sql}` });
        expect(plan.rows.map((r) => r.detail).join(' | '), q.sql).toMatch(/SEARCH operations USING INDEX operations_failed_job/);
      }
    }
  });
});
