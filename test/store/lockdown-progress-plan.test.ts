import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kysely, SqliteDialect } from 'kysely';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { LockdownService } from '../../src/lockdown/service.ts';
import { createLogger } from '../../src/log.ts';
import { openStore } from '../../src/store/db.ts';
import type { Database, LockdownsTable } from '../../src/store/schema.ts';
import { openSqlite } from '../../src/store/sqlite-driver.ts';

/**
 * A lockdown's progress is polled by dashboards for as long as it runs, over tens of thousands of
 * operations. Its counts must read an index and nothing else (SQLite's plan says "COVERING
 * INDEX"), not the table row of every operation. The queries checked are the ones
 * LockdownService.figures really sends, captured from its Kysely instance.
 */
describe('lockdown progress reads covering indexes only', () => {
  it('counts operations and open revocations without reading their rows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lockstep-plan-'));
    const path = join(dir, 'db.sqlite');
    const store = openStore({ driver: 'sqlite', sqlite: { path }, postgres: { poolSize: 1 } });
    await store.migrate();
    await store.close();
    const captured: Array<{ sql: string; parameters: readonly unknown[] }> = [];
    const db = new Kysely<Database>({
      dialect: new SqliteDialect({ database: openSqlite(path).kysely }),
      log: (e) => {
        if (e.level === 'query') captured.push({ sql: e.query.sql, parameters: e.query.parameters });
      },
    });
    try {
      const config = configSchema.parse({ server: {}, store: {}, redis: {}, lockSystems: [], policy: { rules: [] } });
      const service = new LockdownService({ store: { db } as never, config, log: createLogger('silent') });
      const lockdown = { correlation_id: 'c-1', lift_correlation_id: 'c-2', targets: '{"iloq":1}' } as LockdownsTable;
      await service.figures(db, lockdown);
      const progress = captured.filter((q) => /from "operations"|from "key_changes"/.test(q.sql));
      expect(progress.length).toBeGreaterThanOrEqual(3);
      for (const q of progress) {
        const rows = (await db.executeQuery({ sql: `explain query plan ${q.sql}`, parameters: q.parameters, query: { kind: 'RawNode' } as never, queryId: { queryId: 'plan' } })).rows as Array<{ detail: string }>;
        const scans = rows.map((r) => r.detail).filter((d) => /\b(SCAN|SEARCH)\b/.test(d) && /operations|key_changes/.test(d));
        expect(scans.length, q.sql).toBeGreaterThan(0);
        for (const d of scans) expect(d, q.sql).toMatch(/USING COVERING INDEX/);
      }
    } finally {
      await db.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
