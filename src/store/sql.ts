import { CompiledQuery, PostgresAdapter, type Kysely, type Transaction } from 'kysely';
import type { Database } from './schema.ts';

/**
 * Fixed SQL text for the hot paths (every SCIM request, every reconcile, every apply), run
 * through Kysely's executor: same connection, same transactions, same plugins for results.
 * Building and compiling a query with the builder costs about as much as running it on
 * SQLite, so statements that run thousands of times a second are written once, as text, in
 * the SQL both backends share; `?` placeholders become `$n` for PostgreSQL. Dynamic queries
 * (SCIM filters, admin listings) use the query builder.
 */
export async function exec<R>(db: Kysely<Database> | Transaction<Database>, text: string, params: readonly unknown[]): Promise<R[]> {
  const dialect = db.getExecutor().adapter instanceof PostgresAdapter ? 'postgres' : 'sqlite';
  return (await db.executeQuery<R>(CompiledQuery.raw(forDialect(text, dialect), params as unknown[]))).rows;
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
