import type { Kysely, Transaction } from 'kysely';
import { appendAudit, type AuditEntry } from '../audit/audit.ts';
import type { Database } from './schema.ts';
import { exec, withDirectSql, type DirectSql } from './sql.ts';

/**
 * One change: writes through `trx` and records its audit entries in `log`. The entries are
 * appended to the chain in the same transaction as the change, or not at all.
 *
 * A change must only touch the database through `trx` and must not wait on anything else
 * (HTTP, Redis, another `write`): on SQLite it runs inside a transaction shared with other
 * changes, which it would hold open.
 */
export type Change<T> = (trx: Transaction<Database>, log: AuditEntry[]) => Promise<T>;

/**
 * Runs `value` past the caller once its change has committed, synchronously and before the
 * change's promise resolves; its errors are swallowed (what it does must be recoverable, as
 * telling the queue is: the sweeper finds committed dirty marks).
 */
export type AfterCommit<T> = (value: T) => void;

/** Runs an after-commit step by its contract: errors are swallowed (see AfterCommit). */
export function runAfter<T>(after: AfterCommit<T> | undefined, value: T): void {
  if (!after) return;
  try {
    after(value);
  } catch {
    // Recoverable by contract.
  }
}

interface Pending {
  fn: Change<unknown>;
  after: AfterCommit<unknown> | undefined;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

const SAVEPOINT = 'savepoint change';
const RELEASE = 'release savepoint change';
const ROLLBACK_TO = 'rollback to savepoint change';

/** Most changes one SQLite transaction takes (keeps a batch's latency bounded). */
const GROUP_MAX = 64;

/**
 * Group commit for SQLite's single writer.
 *
 * Changes that arrive while a transaction is being written (SCIM requests, reconciles, apply
 * claims and acceptances: everything lockstep writes on its hot paths) wait and then share the
 * next transaction, each in its own savepoint: a failing change is rolled back alone and the
 * others commit. Every change still commits before its caller continues; what is shared is
 * the commit, the pages it writes (table tails, index tails, the audit head) and one append to
 * the audit chain for the batch (the entries of the changes that succeeded, in order). A
 * commit costs tens of microseconds of CPU in WAL appends, several times the statements of a
 * small change, so under load this is most of the store's cost saved.
 *
 * A lone change runs as soon as the event loop has taken this turn's other I/O, with no
 * savepoint, so latency at low load is one loop turn.
 */
export class GroupCommit {
  private readonly db: Kysely<Database>;
  private readonly direct: DirectSql | undefined;
  private queue: Pending[] = [];
  private scheduled = false;
  private running = false;
  private closed = false;
  private idleWaiters: Array<() => void> = [];

  /** `direct`: the statements of the shared transaction may skip Kysely (see withDirectSql). */
  constructor(db: Kysely<Database>, direct?: DirectSql) {
    this.db = db;
    this.direct = direct;
  }

  run<T>(fn: Change<T>, after?: AfterCommit<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error('the store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ fn: fn as Change<unknown>, after: after as AfterCommit<unknown> | undefined, resolve: resolve as (v: unknown) => void, reject });
      this.schedule();
    });
  }

  /** Takes no more changes and resolves once those already taken have committed (or failed). */
  close(): Promise<void> {
    this.closed = true;
    if (!this.running && !this.scheduled && this.queue.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled || this.running) return;
    this.scheduled = true;
    // After this turn's I/O callbacks: every request parsed in this turn joins the batch.
    setImmediate(() => {
      this.scheduled = false;
      void this.drain();
    });
  }

  /** The batch's changes, each in its own savepoint unless alone, then their audit entries. */
  private async runBatch(trx: Transaction<Database>, batch: Pending[], outcomes: Outcome[]): Promise<void> {
    const log: AuditEntry[] = [];
    for (const change of batch) {
      const own: AuditEntry[] = [];
      if (batch.length === 1) {
        outcomes.push({ ok: true, value: await change.fn(trx, own) });
        append(log, own);
        continue;
      }
      await exec(trx, SAVEPOINT, []);
      try {
        const value = await change.fn(trx, own);
        await exec(trx, RELEASE, []);
        outcomes.push({ ok: true, value });
        append(log, own);
      } catch (error) {
        await exec(trx, ROLLBACK_TO, []);
        await exec(trx, RELEASE, []);
        outcomes.push({ ok: false, error });
      }
    }
    await appendAudit(trx, 'sqlite', log);
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, GROUP_MAX);
        const outcomes: Outcome[] = [];
        try {
          await this.db.transaction().execute((trx) => (this.direct ? withDirectSql(trx, this.direct, () => this.runBatch(trx, batch, outcomes)) : this.runBatch(trx, batch, outcomes)));
        } catch (error) {
          // A lone change's own error, or a failed commit: nothing of the batch was written.
          batch.forEach((c, i) => {
            const o = outcomes[i];
            c.reject(o && !o.ok ? o.error : error);
          });
          continue;
        }
        batch.forEach((c, i) => {
          const o = outcomes[i]!;
          if (!o.ok) return c.reject(o.error);
          runAfter(c.after, o.value);
          c.resolve(o.value);
        });
      }
    } finally {
      this.running = false;
      if (this.queue.length > 0) this.schedule();
      else for (const w of this.idleWaiters.splice(0)) w();
    }
  }
}

/** Appends without spreading (a 50,000-member change has 50,000 entries). */
export function append<T>(to: T[], items: readonly T[]): void {
  for (const x of items) to.push(x);
}
