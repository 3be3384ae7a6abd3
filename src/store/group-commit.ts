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
 * changes, which it would hold open. It may run twice (see GroupCommit), so whatever it sets
 * outside the database is set again, not added to.
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

/** Rolls back an optimistic batch in which a change failed, to run it again isolated. */
class IsolateAndRetry extends Error {}

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
 * next transaction. Every change still commits before its caller continues; what is shared is
 * the commit, the pages it writes (table tails, index tails, the audit head) and one append to
 * the audit chain for the batch (the entries of the changes that succeeded, in order). A
 * commit costs tens of microseconds of CPU in WAL appends, several times the statements of a
 * small change, so under load this is most of the store's cost saved.
 *
 * A failing change must not take the others down with it, and must leave nothing behind.
 * Savepoints around each change would give that, but SQLite copies every page a savepoint
 * touches that the transaction had already changed into its statement journal, and in a batch
 * that is most of them: savepoints measured a quarter to a third of all statement time in the
 * pipeline benchmark. So a batch first runs optimistically, without savepoints; if any change
 * throws, the whole transaction rolls back and the batch runs again with each change in a
 * savepoint, where a failing change is rolled back alone and the others commit. A change may
 * therefore run twice; the Change contract (database only, through `trx`) makes that safe,
 * since the first run left nothing behind. Failures come in runs (an IdP retrying a conflicting
 * request, a client sending garbage): after a batch in which a change failed, the next one runs
 * isolated at once, so that a stream of failing requests does not make every batch run twice.
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
  /** A change of the last batch failed: the next batch starts isolated. */
  private isolateNext = false;

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

  /**
   * The batch's changes, then their audit entries. `isolated`: each change in a savepoint of its
   * own (unless alone), so that one that fails is rolled back alone. Otherwise the first change
   * that fails aborts the transaction with IsolateAndRetry (a lone change: with its own error).
   */
  private async runBatch(trx: Transaction<Database>, batch: Pending[], outcomes: Outcome[], isolated: boolean): Promise<void> {
    const log: AuditEntry[] = [];
    for (const change of batch) {
      const own: AuditEntry[] = [];
      if (batch.length === 1 || !isolated) {
        try {
          outcomes.push({ ok: true, value: await change.fn(trx, own) });
        } catch (error) {
          throw batch.length === 1 ? error : new IsolateAndRetry();
        }
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

  /** Runs the batch in one transaction: the outcome of each change, or what rolled it all back. */
  private async commit(batch: Pending[], isolated: boolean): Promise<{ outcomes: Outcome[]; rolledBack?: { error: unknown } }> {
    const outcomes: Outcome[] = [];
    try {
      await this.db
        .transaction()
        .execute((trx) => (this.direct ? withDirectSql(trx, this.direct, () => this.runBatch(trx, batch, outcomes, isolated)) : this.runBatch(trx, batch, outcomes, isolated)));
      return { outcomes };
    } catch (error) {
      return { outcomes, rolledBack: { error } };
    }
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, GROUP_MAX);
        let { outcomes, rolledBack } = await this.commit(batch, this.isolateNext);
        if (rolledBack?.error instanceof IsolateAndRetry) ({ outcomes, rolledBack } = await this.commit(batch, true));
        this.isolateNext = rolledBack !== undefined || outcomes.some((o) => !o.ok);
        if (rolledBack) {
          // A lone change's own error, or a failed commit: nothing of the batch was written.
          batch.forEach((c, i) => {
            const o = outcomes[i];
            c.reject(o && !o.ok ? o.error : rolledBack.error);
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
