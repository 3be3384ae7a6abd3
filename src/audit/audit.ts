import { hash } from 'node:crypto';
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Dialect } from '../store/db.ts';
import { GENESIS_HASH } from '../store/migrations.ts';
import { exec, insertRows } from '../store/sql.ts';
import type { AuditTable, Database } from '../store/schema.ts';

/**
 * Append-only, hash-chained audit log. Each row's hash covers its own fields and the previous
 * row's hash, and a one-row head records the last (seq, hash): editing any row breaks its hash,
 * deleting a row breaks the chain or the head, and `verifyAudit` names where.
 *
 * Rows are appended inside the caller's transaction, so an audited change and its audit row
 * commit or roll back together. The head row is the serialisation point (FOR UPDATE on
 * PostgreSQL; SQLite has one writer anyway).
 */

export interface AuditEntry {
  /** Who: `scim:<source id>`, `admin:<token name>`, `anonymous`, `system:<component>`. */
  actor: string;
  /** What, dotted: `identity.user.create`, `plan`, `operation.attempt`, `admin.job.retry`, ... */
  action: string;
  /** The thing acted upon: `person:<id>`, `group:<id>`, `job:<id>`. */
  subject: string;
  personId?: string | null;
  detail?: unknown;
  correlationId: string;
}

export interface AuditRow {
  seq: number;
  at: string;
  actor: string;
  action: string;
  subject: string;
  personId: string | null;
  detail: unknown;
  correlationId: string;
  prevHash: string;
  hash: string;
}

// Every change appends here: fixed SQL (src/store/sql.ts).
const HEAD = 'select seq, hash from audit_head where id = 1';
const HEAD_FOR_UPDATE = `${HEAD} for update`;
const SET_HEAD = 'update audit_head set seq = ?, hash = ? where id = 1';
const AUDIT_CHUNK = 200;
const AUDIT_COLUMNS = ['seq', 'at', 'actor', 'action', 'subject', 'person_id', 'detail', 'correlation_id', 'prev_hash', 'hash'];

export function rowHash(r: Omit<AuditTable, 'hash'>): string {
  // A JSON array is an unambiguous encoding of the ordered fields (no delimiter games).
  const canonical = JSON.stringify([r.seq, r.at, r.actor, r.action, r.subject, r.person_id, r.detail, r.correlation_id, r.prev_hash]);
  // One-shot hash: half the CPU of createHash().update().digest() for a row's few hundred bytes.
  return hash('sha256', canonical, 'hex');
}

export async function appendAudit(
  trx: Transaction<Database>,
  dialect: Dialect,
  entries: AuditEntry[],
  now: number = Date.now(),
): Promise<void> {
  if (entries.length === 0) return;
  const [head] = await exec<{ seq: number | string; hash: string }>(trx, dialect === 'postgres' ? HEAD_FOR_UPDATE : HEAD, []);
  if (!head) throw new Error('audit head is missing');
  let seq = Number(head.seq);
  let prev = head.hash;
  const rows: AuditTable[] = [];
  for (const e of entries) {
    seq += 1;
    const base = {
      seq,
      at: now,
      actor: e.actor,
      action: e.action,
      subject: e.subject,
      person_id: e.personId ?? null,
      detail: JSON.stringify(e.detail ?? {}),
      correlation_id: e.correlationId,
      prev_hash: prev,
    };
    const hash = rowHash(base);
    rows.push({ ...base, hash });
    prev = hash;
  }
  // Chunked so a large batch stays under SQLite's bound-parameter limit.
  for (let i = 0; i < rows.length; i += AUDIT_CHUNK) {
    const part = rows.slice(i, i + AUDIT_CHUNK);
    const params: unknown[] = [];
    for (const r of part) params.push(r.seq, r.at, r.actor, r.action, r.subject, r.person_id, r.detail, r.correlation_id, r.prev_hash, r.hash);
    await exec(trx, insertRows('audit', AUDIT_COLUMNS, part.length), params);
  }
  await exec(trx, SET_HEAD, [seq, prev]);
}

/** Appends entries in a transaction of their own, for events that change nothing else. */
export function auditAlone(store: { db: Kysely<Database>; dialect: Dialect }, entries: AuditEntry[]): Promise<void> {
  return store.db.transaction().execute((trx) => appendAudit(trx, store.dialect, entries));
}

export interface AuditProblem {
  seq: number;
  problem: string;
}

export interface VerifyResult {
  ok: boolean;
  rows: number;
  problems: AuditProblem[];
}

/** Walks the whole chain in order. Reports every broken link, not just the first. */
export async function verifyAudit(db: Kysely<Database>, batch = 5000): Promise<VerifyResult> {
  const problems: AuditProblem[] = [];
  let prevSeq = 0;
  let prevHash = GENESIS_HASH;
  let rows = 0;
  for (;;) {
    const page = await db.selectFrom('audit').selectAll().where('seq', '>', prevSeq).orderBy('seq').limit(batch).execute();
    for (const r of page) {
      const seq = Number(r.seq);
      rows += 1;
      if (seq !== prevSeq + 1) problems.push({ seq, problem: `rows ${prevSeq + 1}..${seq - 1} are missing (deleted)` });
      if (r.prev_hash !== prevHash) problems.push({ seq, problem: 'prev_hash does not match the previous row (chain broken)' });
      const { hash, ...rest } = r;
      if (rowHash({ ...rest, seq, at: Number(r.at) }) !== hash) problems.push({ seq, problem: 'hash does not match the row (row edited)' });
      prevSeq = seq;
      prevHash = hash;
    }
    if (page.length < batch) break;
  }
  const head = await db.selectFrom('audit_head').select(['seq', 'hash']).where('id', '=', 1).executeTakeFirst();
  if (!head) problems.push({ seq: 0, problem: 'audit head is missing' });
  else if (Number(head.seq) !== prevSeq || head.hash !== prevHash)
    problems.push({ seq: Number(head.seq), problem: `head records seq ${head.seq} but the chain ends at ${prevSeq} (trailing rows deleted or head edited)` });
  return { ok: problems.length === 0, rows, problems };
}

export interface AuditQuery {
  personId?: string;
  action?: string;
  /** Epoch ms, inclusive. */
  from?: number;
  /** Epoch ms, exclusive. */
  to?: number;
  /** Return rows with seq greater than this (cursor paging). */
  after?: number;
  limit: number;
}

export async function queryAudit(db: Kysely<Database>, q: AuditQuery): Promise<AuditRow[]> {
  let query = db.selectFrom('audit').selectAll();
  if (q.personId) query = query.where('person_id', '=', q.personId);
  if (q.action) {
    if (q.action.endsWith('*')) {
      // A prefix match; LIKE's own wildcards in the prefix are taken literally.
      const prefix = q.action.slice(0, -1).replace(/[\\%_]/g, (c) => `\\${c}`);
      query = query.where(sql<boolean>`action like ${`${prefix}%`} escape '\\'`);
    } else query = query.where('action', '=', q.action);
  }
  if (q.from !== undefined) query = query.where('at', '>=', q.from);
  if (q.to !== undefined) query = query.where('at', '<', q.to);
  if (q.after !== undefined) query = query.where('seq', '>', q.after);
  const rows = await query.orderBy('seq').limit(q.limit).execute();
  return rows.map((r) => ({
    seq: Number(r.seq),
    at: new Date(Number(r.at)).toISOString(),
    actor: r.actor,
    action: r.action,
    subject: r.subject,
    personId: r.person_id,
    detail: JSON.parse(r.detail),
    correlationId: r.correlation_id,
    prevHash: r.prev_hash,
    hash: r.hash,
  }));
}
