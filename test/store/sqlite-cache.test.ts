import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { describe, expect, it } from 'vitest';
import { openStore } from '../../src/store/db.ts';

describe('the SQLite page cache', () => {
  it.each([
    { cacheMB: undefined, kib: 8 * 1024 },
    { cacheMB: 32, kib: 32 * 1024 },
  ])('store.sqlite.cacheMB $cacheMB gives a cache of $kib KiB', async ({ cacheMB, kib }) => {
    const dir = mkdtempSync(join(tmpdir(), 'lockstep-cache-'));
    const store = openStore({ driver: 'sqlite', sqlite: { path: join(dir, 'db.sqlite'), ...(cacheMB ? { cacheMB } : {}) }, postgres: { poolSize: 1 } });
    try {
      const r = await sql<{ cache_size: number }>`pragma cache_size`.execute(store.db);
      // Negative: the size in KiB rather than in pages.
      expect(r.rows[0]?.cache_size).toBe(-kib);
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
