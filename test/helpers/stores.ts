import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openStore, type Store } from '../../src/store/db.ts';

/** PostgreSQL the test suite uses; CI starts it (see .ci/run). */
export const TEST_PG_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export type Backend = 'sqlite' | 'postgres';
const SCHEMA_LOCK = 7_345_001;
export const BACKENDS: Backend[] = ['sqlite', 'postgres'];

export interface TestStore {
  store: Store;
  /** Config section that opens the same database again (e.g. for a child process). */
  storeConfig: { driver: Backend; sqlite: { path: string }; postgres: { url?: string; poolSize: number } };
  cleanup(): Promise<void>;
}

/**
 * A fresh, migrated store: a temp SQLite file, or a private PostgreSQL schema (selected via
 * search_path) so tests never see each other's rows and can run in parallel.
 */
/**
 * Runs `fn` while holding the lock under which test schemas are migrated and dropped, for tests
 * that migrate or drop a schema of their own (see freshStore).
 */
export async function withSchemaLock<T>(backend: Backend, fn: () => Promise<T>): Promise<T> {
  if (backend !== 'postgres') return fn();
  const c = new pg.Client({ connectionString: TEST_PG_URL });
  await c.connect();
  await c.query('select pg_advisory_lock($1)', [SCHEMA_LOCK]);
  try {
    return await fn();
  } finally {
    await c.query('select pg_advisory_unlock($1)', [SCHEMA_LOCK]).catch(() => {});
    await c.end();
  }
}

export async function freshStore(backend: Backend): Promise<TestStore> {
  if (backend === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'lockstep-test-'));
    const storeConfig = { driver: 'sqlite' as const, sqlite: { path: join(dir, 'lockstep.db') }, postgres: { poolSize: 1 } };
    const store = openStore(storeConfig);
    await store.migrate();
    return {
      store,
      storeConfig,
      async cleanup() {
        await store.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: TEST_PG_URL });
  await admin.connect();
  await admin.query(`create schema ${schema}`);
  // No parallel query: a parallel worker resolving catalog names can trip over another test's
  // schema being dropped at that moment ("schema ... does not exist" in 'parallel worker').
  const url = `${TEST_PG_URL}${TEST_PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema} -c max_parallel_workers_per_gather=0`)}`;
  const storeConfig = { driver: 'postgres' as const, sqlite: { path: './data/unused.db' }, postgres: { url, poolSize: 5 } };
  const store = openStore(storeConfig);
  // Kysely's migrator introspects every schema in the database; a schema dropped by another
  // test file at that moment makes it fail ("schema ... does not exist"). Migrations and drops
  // of test schemas therefore take turns under one advisory lock.
  await admin.query('select pg_advisory_lock($1)', [SCHEMA_LOCK]);
  try {
    await store.migrate();
  } finally {
    await admin.query('select pg_advisory_unlock($1)', [SCHEMA_LOCK]);
    await admin.end();
  }
  return {
    store,
    storeConfig,
    async cleanup() {
      await store.close();
      const c = new pg.Client({ connectionString: TEST_PG_URL });
      await c.connect();
      await c.query('select pg_advisory_lock($1)', [SCHEMA_LOCK]);
      try {
        await c.query(`drop schema ${schema} cascade`);
      } finally {
        await c.query('select pg_advisory_unlock($1)', [SCHEMA_LOCK]);
        await c.end();
      }
    },
  };
}
