import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import type { Config } from '../config/schema.ts';
import { appendAudit, type AuditEntry } from '../audit/audit.ts';
import { GroupCommit, runAfter, type AfterCommit, type Change } from './group-commit.ts';
import { migrations } from './migrations.ts';
import type { Database } from './schema.ts';
import type { CheckpointerOptions, WalRewind } from './checkpointer.ts';
import { openSqlite } from './sqlite-driver.ts';
import { readsBeside, type DirectSql } from './sql.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface Store {
  db: Kysely<Database>;
  dialect: Dialect;
  /**
   * Runs one change in a transaction with its audit entries and resolves once it has
   * committed. On SQLite, changes that arrive together share a transaction (GroupCommit);
   * on PostgreSQL each has its own. The way every hot path writes.
   */
  write<T>(fn: Change<T>, after?: AfterCommit<T>): Promise<T>;
  /** Applies pending migrations; returns the names applied. */
  migrate(): Promise<string[]>;
  ping(): Promise<void>;
  close(): Promise<void>;
}

// BIGINT (int8) columns hold epoch milliseconds and sequence numbers, all far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

/** The store section; the SQLite cache size may be left out (tools and tests open stores too). */
export type StoreOptions = Omit<Config['store'], 'sqlite'> & { sqlite: { path: string; cacheMB?: number } };

/**
 * `onBackgroundError`: hears of a failure on the store's own background thread (SQLite's
 * checkpointer), which the store survives; by default a process warning. `onWalRewound`: hears
 * of each time SQLite's WAL was rewound and for how long writes were held (checkpointer.ts).
 * `checkpoints`: the checkpointer's interval and rewind threshold, which tests shorten.
 */
export function openStore(
  cfg: StoreOptions,
  opts: { onBackgroundError?: (err: Error) => void; onWalRewound?: (r: WalRewind) => void; checkpoints?: Pick<CheckpointerOptions, 'intervalMs' | 'rewindAtFrames'> } = {},
): Store {
  if (cfg.driver === 'postgres') {
    const url = cfg.postgres.url ?? process.env.DATABASE_URL;
    if (!url) throw new Error('store.postgres.url or DATABASE_URL is required for the postgres store');
    const pool = new pg.Pool({ connectionString: url, max: cfg.postgres.poolSize });
    // An idle client losing its connection must not crash the daemon; the pool replaces it.
    pool.on('error', () => {});
    return storeOn(new Kysely<Database>({ dialect: new PostgresDialect({ pool }) }), 'postgres');
  }
  if (cfg.sqlite.path !== ':memory:') mkdirSync(dirname(cfg.sqlite.path), { recursive: true });
  const onError = opts.onBackgroundError ?? ((err: Error) => process.emitWarning(`SQLite checkpointer stopped: ${err.message}`));
  const { kysely, direct, read, checkpointer } = openSqlite(cfg.sqlite.path, { cacheMB: cfg.sqlite.cacheMB, checkpointer: { ...opts.checkpoints, onError, onRewound: opts.onWalRewound } });
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: kysely }) });
  if (read) readsBeside(db, read);
  // Kysely hands its one SQLite connection to one caller at a time: holding it holds every write
  // (the group commit's transactions and all others) without blocking the event loop, while
  // plain reads, which run beside Kysely, go on.
  checkpointer?.holdWritesWith((during) => db.connection().execute(() => during()));
  // The checkpointer stops before the writer's connection closes, so that this one is the last
  // and, as SQLite does for the last connection, folds the WAL into the file and removes it.
  return storeOn(db, 'sqlite', direct, checkpointer?.stop);
}

/**
 * A Store over an existing Kysely instance (tests wrap one with plugins that watch queries).
 * `direct`: SQLite statements the writer's transactions may run without Kysely (withDirectSql);
 * without it every statement goes through Kysely and its plugins. `beforeDisconnect` runs on
 * close once the last change has committed, before the database connections close.
 */
export function storeOn(db: Kysely<Database>, dialect: Dialect, direct?: DirectSql, beforeDisconnect?: () => Promise<void>): Store {
  const commits = dialect === 'sqlite' ? new GroupCommit(db, direct) : undefined;
  // PostgreSQL: each change is its own transaction; close waits for those under way.
  const inflight = new Set<Promise<unknown>>();
  let closed = false;
  return {
    db,
    dialect,
    write<T>(fn: Change<T>, after?: AfterCommit<T>): Promise<T> {
      if (commits) return commits.run(fn, after);
      if (closed) return Promise.reject(new Error('the store is closed'));
      const p = (async () => {
        const value = await db.transaction().execute(async (trx) => {
          const log: AuditEntry[] = [];
          const v = await fn(trx, log);
          await appendAudit(trx, 'postgres', log);
          return v;
        });
        runAfter(after, value);
        return value;
      })();
      inflight.add(p);
      void p.then(
        () => inflight.delete(p),
        () => inflight.delete(p),
      );
      return p;
    },
    async migrate() {
      // Fast path: everything applied already. Kysely's migrator introspects every table of
      // every schema before it looks, which is slow on a big database and can trip over a
      // schema another tenant drops at that moment.
      const provider = migrations(dialect);
      const wanted = Object.keys(await provider.getMigrations());
      const applied = await sql<{ name: string }>`select name from kysely_migration`.execute(db).then(
        (r) => new Set(r.rows.map((x) => x.name)),
        () => undefined,
      );
      if (applied && wanted.every((n) => applied.has(n))) return [];
      // Kysely looks for its bookkeeping tables by name across schemas; pin it to ours so that
      // several lockstep schemas in one PostgreSQL database do not see each other's.
      const schema = dialect === 'postgres' ? ((await sql<{ s: string }>`select current_schema() as s`.execute(db)).rows[0]?.s ?? undefined) : undefined;
      // Migrations are independent of each other, so one that lands after a later-numbered one
      // (parallel branches) may still run.
      const migrator = new Migrator({ db, provider: migrations(dialect), allowUnorderedMigrations: true, ...(schema ? { migrationTableSchema: schema } : {}) });
      const { error, results } = await migrator.migrateToLatest();
      if (error) throw new Error(`migration failed: ${(error as Error).message}`, { cause: error });
      return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
    },
    async ping() {
      await sql`select 1`.execute(db);
    },
    async close() {
      // Changes already handed to the writer commit first; later ones are refused.
      closed = true;
      await commits?.close();
      await Promise.allSettled([...inflight]);
      await beforeDisconnect?.();
      await db.destroy();
    },
  };
}
