import { CompiledQuery, PostgresAdapter, sql, type Kysely, type Transaction } from 'kysely';
import type { Dialect } from './db.ts';
import type { Database } from './schema.ts';

/**
 * Fixed SQL text for the hot paths (every SCIM request, every reconcile, every apply), run
 * through Kysely's executor (same connection, same transactions, same plugins for results); on
 * SQLite, straight on the connection inside the writer's transactions (withDirectSql) and,
 * for plain reads outside transactions, straight on a connection that need not wait (readsBeside).
 * Building and compiling a query with the builder costs about as much as running it on
 * SQLite, so statements that run thousands of times a second are written once, as text, in
 * the SQL both backends share; `?` placeholders become `$n` for PostgreSQL. Dynamic queries
 * (SCIM filters, admin listings) use the query builder.
 */
export async function exec<R>(db: Kysely<Database> | Transaction<Database>, text: string, params: readonly unknown[]): Promise<R[]> {
  const direct = directIn.get(db);
  if (direct) return direct(text, params) as R[];
  const read = readersOf.get(db);
  if (read && PLAIN_READ.test(text)) return read(text, params) as R[];
  const dialect = db.getExecutor().adapter instanceof PostgresAdapter ? 'postgres' : 'sqlite';
  return (await db.executeQuery<R>(CompiledQuery.raw(forDialect(text, dialect), params as unknown[]))).rows;
}

/** Runs one statement on the SQLite connection at once: its rows, or none for a write. */
export type DirectSql = (text: string, params: readonly unknown[]) => unknown[];

const directIn = new WeakMap<object, DirectSql>();

/**
 * Lets `exec` run the statements of `trx` straight on SQLite while `fn` runs (the group-commit
 * writer's transactions). Kysely puts every statement through a connection lock and several
 * promises: for the hot paths' small statements on SQLite, which answers synchronously, that
 * was a third of everything lockstep allocates and more CPU than the statement itself. Only a
 * transaction that holds the writing connection may do this: nothing else can run statements
 * on that connection until the transaction ends, so going around Kysely changes no ordering.
 * Statements built with the query builder still go through Kysely, on the same connection.
 */
export async function withDirectSql<T>(trx: Transaction<Database>, direct: DirectSql, fn: () => Promise<T>): Promise<T> {
  directIn.set(trx, direct);
  try {
    return await fn();
  } finally {
    directIn.delete(trx);
  }
}

const readersOf = new WeakMap<object, DirectSql>();
const PLAIN_READ = /^\s*select\s/i;

/**
 * Sends the plain reads `exec` runs on `db` itself (outside any transaction) to `read`: on
 * SQLite, the writer's connection while it is between transactions, else a second connection;
 * either reads the last committed state (sqlite-driver.ts). Through Kysely they waited
 * for the writer's open transaction to end (the writing connection has one lock) and paid its
 * per-query machinery (~2 of ~4 us per read). Reads inside a transaction stay on it.
 */
export function readsBeside(db: Kysely<Database>, read: DirectSql): void {
  readersOf.set(db, read);
}

const dollarised = new Map<string, string>();

function forDialect(text: string, dialect: 'sqlite' | 'postgres'): string {
  if (dialect === 'sqlite') return text;
  let out = dollarised.get(text);
  if (out === undefined) {
    let n = 0;
    out = text.replace(/\?/g, () => `$${++n}`);
    if (dollarised.size < 5000) dollarised.set(text, out);
  }
  return out;
}

const placeholderCache: string[] = [];
/** `?, ?, …` for n parameters. */
export function placeholders(n: number): string {
  return (placeholderCache[n] ??= Array.from({ length: n }, () => '?').join(', '));
}

/** Rows beyond this many per statement are not cached (callers chunk larger inserts). */
const CACHED_ROWS = 200;
const tupleCache = new Map<number, string>();
/** `(?, ?), (?, ?), …`: `rows` tuples of `cols` parameters. */
export function tuples(rows: number, cols: number): string {
  const key = rows * 64 + cols;
  let out = tupleCache.get(key);
  if (out === undefined) {
    const one = `(${placeholders(cols)})`;
    out = Array.from({ length: rows }, () => one).join(', ');
    if (rows <= CACHED_ROWS) tupleCache.set(key, out);
  }
  return out;
}

/** A multi-row insert of `rows` rows into `columns`; the values go as parameters, row after row. */
export function insertRows(table: string, columns: readonly string[], rows: number): string {
  return `insert into ${table} (${columns.join(', ')}) values ${tuples(rows, columns.length)}`;
}

/**
 * Serialises the writers of one person (reconcile, apply claims and acceptances, drift repair)
 * across processes on PostgreSQL, until the transaction ends. SQLite has one writer already.
 */
export async function lockPerson(trx: Transaction<Database>, dialect: Dialect, personId: string): Promise<void> {
  if (dialect === 'postgres') await sql`select pg_advisory_xact_lock(hashtext(${personId}))`.execute(trx);
}
