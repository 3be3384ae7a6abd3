import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import type { SqliteDatabase, SqliteStatement } from 'kysely';
import { FALLBACK_AUTOCHECKPOINT_PAGES, startCheckpointer, type Checkpointer, type CheckpointerOptions } from './checkpointer.ts';
import type { DirectSql } from './sql.ts';

/** Prepared statements kept per connection (lockstep's distinct SQL texts are far fewer). */
const STATEMENTS_KEPT = 2000;

/**
 * Kysely's SqliteDialect expects a better-sqlite3-shaped object. node:sqlite is built in and
 * needs no native addon, so we adapt it: `reader` is derived from the statement's result
 * columns, and parameters are spread because node:sqlite takes them as varargs.
 *
 * `checkpointer`: for a database file, checkpoints run on a thread of their own (checkpointer.ts),
 * returned as `checkpointer`.
 */
export function openSqlite(
  path: string,
  opts: { cacheMB?: number; checkpointer?: CheckpointerOptions } = {},
): { db: DatabaseSync; kysely: SqliteDatabase; direct: DirectSql; read: DirectSql | undefined; checkpointer: Checkpointer | undefined } {
  const file = path !== ':memory:';
  const background = file && opts.checkpointer !== undefined;
  const db = new DatabaseSync(path);
  // WAL lets readers (admin API) run beside the writer; NORMAL is durable across process crashes.
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA synchronous = NORMAL');
  db.exec('PRAGMA busy_timeout = 5000');
  // With the checkpointer thread, this is its fallback only. Without it, checkpoints run inside a
  // committing transaction: fewer, larger ones keep commits cheap.
  db.exec(`PRAGMA wal_autocheckpoint = ${background ? FALLBACK_AUTOCHECKPOINT_PAGES : 10000}`);
  // Negative: KiB. Filled pages stay resident, so this is RSS the daemon keeps under load.
  db.exec(`PRAGMA cache_size = -${(opts.cacheMB ?? 8) * 1024}`);
  db.exec('PRAGMA temp_store = MEMORY');
  db.exec('PRAGMA foreign_keys = ON');
  const cache = new Map<string, SqliteStatement>();
  // A second connection to an in-memory database would be another, empty database.
  const reader = file ? openReader(path) : undefined;
  const kysely: SqliteDatabase = {
    close: () => {
      reader?.close();
      db.close();
    },
    prepare(text: string): SqliteStatement {
      // Every lockstep transaction writes. BEGIN IMMEDIATE takes the write lock up front, so a
      // second process (`lockstep worker` beside `serve`) waits on busy_timeout instead of
      // failing with SQLITE_BUSY when a read transaction later tries to write.
      const sql = text === 'begin' ? 'begin immediate' : text;
      const hit = cache.get(sql);
      if (hit) return hit;
      const stmt = db.prepare(sql);
      const reader = stmt.columns().length > 0;
      const wrapped: SqliteStatement = {
        reader,
        all: (params: ReadonlyArray<unknown>) => stmt.all(...(params as SQLInputValue[])) as unknown[],
        run: (params: ReadonlyArray<unknown>) => {
          const r = stmt.run(...(params as SQLInputValue[]));
          return { changes: r.changes, lastInsertRowid: r.lastInsertRowid };
        },
        iterate: (params: ReadonlyArray<unknown>) => stmt.iterate(...(params as SQLInputValue[])) as IterableIterator<unknown>,
      };
      // Statement preparation dominates small queries; the set of distinct SQL strings is bounded.
      if (cache.size < STATEMENTS_KEPT) cache.set(sql, wrapped);
      return wrapped;
    },
  };
  // The same cached statements, without Kysely around them (see withDirectSql).
  const direct: DirectSql = (text, params) => {
    const stmt = kysely.prepare(text);
    if (stmt.reader) return stmt.all(params);
    stmt.run(params);
    return [];
  };
  // A plain read runs on the writer's own connection whenever that is between transactions: the
  // last commit left its pages warm there, while the reading connection drops its cache at every
  // commit and reads the pages again. While a transaction is open on the writer, the reading
  // connection answers, from the last commit.
  const read: DirectSql | undefined = reader ? (text, params) => (db.isTransaction ? reader.read(text, params) : direct(text, params)) : undefined;
  const checkpointer = background ? startCheckpointer(path, opts.checkpointer!) : undefined;
  return { db, kysely, direct, read, checkpointer };
}

/** Page cache of the reading connection: reads of hot rows and index pages, not whole tables. */
const READER_CACHE_KIB = 2048;

/**
 * A second, query-only connection for plain reads outside the writer's transactions (see
 * readsBeside in sql.ts). In WAL mode it reads the last committed state without waiting for the
 * writer, and a read never sees what an open transaction has not committed yet.
 */
function openReader(path: string): { read: DirectSql; close: () => void } {
  let db: DatabaseSync | undefined;
  const statements = new Map<string, StatementSync>();
  const read: DirectSql = (text, params) => {
    // Opened on first use: the writer has created the file and set WAL mode by then.
    if (!db) {
      db = new DatabaseSync(path);
      db.exec('PRAGMA query_only = ON');
      db.exec('PRAGMA busy_timeout = 5000');
      db.exec(`PRAGMA cache_size = -${READER_CACHE_KIB}`);
      db.exec('PRAGMA temp_store = MEMORY');
    }
    let stmt = statements.get(text);
    if (!stmt) {
      stmt = db.prepare(text);
      if (statements.size < STATEMENTS_KEPT) statements.set(text, stmt);
    }
    return stmt.all(...(params as SQLInputValue[]));
  };
  return {
    read,
    close: () => {
      db?.close();
      db = undefined;
      statements.clear();
    },
  };
}
