import { randomUUID } from 'node:crypto';
import { appendAudit, type AuditEntry } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import { LockSystemError, type KeyResult, type LockSystem } from '../ports/lock-system.ts';
import { retryDelayMs } from '../queue/retry.ts';
import type { Store } from '../store/db.ts';
import { raiseTask, taskDeadlineMs } from './tasks.ts';

/**
 * Keys not returned by the deadline go to the blocklist, where configured
 * (`lockSystems[].tasks.blocklistOverdue`).
 *
 * Every `reconcile.sweepIntervalMs`, open `collect_key` tasks past their deadline on such lock
 * systems are taken oldest deadline first, for persons who are still leavers there (a person
 * reinstated meanwhile keeps the key). For each, `LockSystem.reportLost` is called, then in one
 * transaction: the collect task is closed (`done_by` = `system:overdue`, with a note), the task
 * the lock system asks for, if any, is raised (one open task per key and kind, as the applier
 * does), a `key_changes` row (revocation, kind `blocklist`, the job id, horizon unknown) makes
 * the key count as exposed until the effectiveness watcher sees the blocklist reach the locks,
 * and `task.overdue` + `key.blocklisted` are audited.
 *
 * Failures: retryable and rate-limited ones are tried again on a later pass, no sooner than the
 * lock system's retry policy (backoff, Retry-After) allows, with one `task.overdue_failed` audit
 * row per attempt. A permanent one (the key cannot be blocklisted, or is no longer the person's)
 * is audited once and the task is left open and overdue for a person to handle; it is tried
 * again only after a restart. reportLost is idempotent, so a pass that dies between the call
 * and the commit, or two processes taking the same task, do no harm: the task is closed once
 * (the update is conditional on it still being open) and the loser writes nothing.
 */

export interface OverdueTask {
  id: string;
  lock_system_id: string;
  person_id: string;
  key_id: string;
  kind: string;
  correlation_id: string;
  deadline: number;
}

export interface OverdueOutcome {
  blocklisted: number;
  retry: number;
  failed: number;
  /** Closed by someone else between selection and commit. */
  raced: number;
}

export const OVERDUE_ACTOR = 'system:overdue';

export class OverdueBlocklister {
  private readonly store: Store;
  private readonly systems: Map<string, LockSystem>;
  private readonly log: Logger;
  private readonly intervalMs: number;
  private readonly enabled: string[];
  private readonly retry: Map<string, Config['lockSystems'][number]['apply']['retry']>;
  private readonly deadlineMs: Map<string, number>;
  /** Task id → when it may be tried again and how many attempts failed (retryable errors). */
  private readonly backoff = new Map<string, { at: number; attempts: number }>();
  /** Tasks that failed permanently in this process: not tried again until restart. */
  private readonly parked = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(deps: { store: Store; lockSystems: Map<string, LockSystem>; log: Logger; config: Config; intervalMs?: number }) {
    this.store = deps.store;
    this.systems = deps.lockSystems;
    this.log = deps.log;
    this.intervalMs = deps.intervalMs ?? deps.config.reconcile.sweepIntervalMs;
    this.enabled = deps.config.lockSystems.filter((l) => l.tasks.blocklistOverdue).map((l) => l.id);
    this.retry = new Map(deps.config.lockSystems.map((l) => [l.id, l.apply.retry]));
    this.deadlineMs = new Map(deps.config.lockSystems.map((l) => [l.id, taskDeadlineMs(l.tasks)]));
  }

  start(): void {
    if (this.enabled.length === 0) return;
    this.timer = setInterval(() => {
      if (!this.running)
        this.running = this.runOnce()
          .catch((err: Error) => this.log.warn({ err: err.message }, 'overdue key check failed'))
          .finally(() => (this.running = undefined));
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /**
   * Open collect_key tasks past their deadline on lock systems with blocklistOverdue, whose
   * person is still a leaver there, oldest deadline first.
   */
  async findOverdue(now: number = Date.now(), limit = 100): Promise<OverdueTask[]> {
    if (this.enabled.length === 0) return [];
    const rows = await this.store.db
      .selectFrom('tasks')
      .innerJoin('lock_state', (j) => j.onRef('lock_state.lock_system_id', '=', 'tasks.lock_system_id').onRef('lock_state.person_id', '=', 'tasks.person_id'))
      .select(['tasks.id', 'tasks.lock_system_id', 'tasks.person_id', 'tasks.key_id', 'tasks.kind', 'tasks.correlation_id', 'tasks.deadline'])
      .where('tasks.kind', '=', 'collect_key')
      .where('tasks.done_at', 'is', null)
      .where('tasks.deadline', '<=', now)
      .where('tasks.lock_system_id', 'in', this.enabled)
      .where('lock_state.departed', '=', 1)
      .orderBy('tasks.deadline')
      .orderBy('tasks.id')
      .limit(limit)
      .execute();
    return rows.map((r) => ({ ...r, deadline: Number(r.deadline) }));
  }

  /** One pass: every overdue task that is due for an attempt, one at a time. */
  async runOnce(now: number = Date.now()): Promise<OverdueOutcome> {
    const out: OverdueOutcome = { blocklisted: 0, retry: 0, failed: 0, raced: 0 };
    const tasks = await this.findOverdue(now);
    for (const t of tasks) {
      if (this.parked.has(t.id)) continue;
      const wait = this.backoff.get(t.id);
      if (wait && wait.at > Date.now()) continue;
      const r = await this.handle(t);
      out[r] += 1;
    }
    // Forget backoff state of tasks that are no longer overdue and open.
    const live = new Set(tasks.map((t) => t.id));
    for (const id of this.backoff.keys()) if (!live.has(id)) this.backoff.delete(id);
    return out;
  }

  private async handle(t: OverdueTask): Promise<keyof OverdueOutcome> {
    const system = this.systems.get(t.lock_system_id);
    if (!system) return 'failed';
    // A person may have closed the task since the selection (key collected): check again right before.
    const still = await this.store.db.selectFrom('tasks').select('id').where('id', '=', t.id).where('done_at', 'is', null).executeTakeFirst();
    if (!still) return 'raced';
    const deadline = new Date(t.deadline).toISOString();
    const reason = `key not returned by the deadline (${deadline}; collect task ${t.id})`;
    let result: KeyResult;
    try {
      result = await system.reportLost({ operationId: `overdue:${t.id}`, keyId: t.key_id, person: { personId: t.person_id, externalId: t.person_id }, reason });
    } catch (err) {
      const e = err instanceof LockSystemError ? err : new LockSystemError('retryable', (err as Error)?.message ?? String(err), { cause: err });
      return this.failed(t, e);
    }
    this.backoff.delete(t.id);
    return this.record(t, result, deadline);
  }

  private async failed(t: OverdueTask, e: LockSystemError): Promise<'retry' | 'failed'> {
    const permanent = e.kind === 'permanent';
    const prev = this.backoff.get(t.id)?.attempts ?? 0;
    const attempt = prev + 1;
    let nextAt: number | undefined;
    if (permanent) {
      this.parked.add(t.id);
      this.backoff.delete(t.id);
    } else {
      const policy = this.retry.get(t.lock_system_id) ?? { attempts: 20, baseMs: 500, maxMs: 300_000 };
      nextAt = Date.now() + retryDelayMs(policy, attempt, e.retryAfterMs);
      this.backoff.set(t.id, { at: nextAt, attempts: attempt });
    }
    this.log[permanent ? 'error' : 'warn'](
      { lockSystem: t.lock_system_id, personId: t.person_id, keyId: t.key_id, task: t.id, kind: e.kind, err: e.message },
      permanent ? 'overdue key could not be blocklisted; the collect task stays open' : 'overdue key not blocklisted yet; will try again',
    );
    await this.store.db.transaction().execute((trx) =>
      appendAudit(trx, this.store.dialect, [
        {
          actor: OVERDUE_ACTOR,
          action: 'task.overdue_failed',
          subject: `task:${t.id}`,
          personId: t.person_id,
          correlationId: t.correlation_id,
          detail: {
            lockSystem: t.lock_system_id,
            keyId: t.key_id,
            kind: e.kind,
            error: e.message,
            status: e.status ?? null,
            attempt,
            nextAttemptAt: nextAt === undefined ? null : new Date(nextAt).toISOString(),
          },
        },
      ]),
    );
    return permanent ? 'failed' : 'retry';
  }

  private async record(t: OverdueTask, result: KeyResult, deadline: string): Promise<'blocklisted' | 'raced'> {
    const now = Date.now();
    const ls = t.lock_system_id;
    const note = `Not returned by the deadline (${deadline}): reported lost on ${ls}${result.jobId ? ` (${result.jobId})` : ''}.`;
    const closed = await this.store.db.transaction().execute(async (trx) => {
      const upd = await trx.updateTable('tasks').set({ done_at: now, done_by: OVERDUE_ACTOR, note }).where('id', '=', t.id).where('done_at', 'is', null).executeTakeFirst();
      if (Number(upd.numUpdatedRows) === 0) return false;
      const entries: AuditEntry[] = [
        {
          actor: OVERDUE_ACTOR,
          action: 'task.overdue',
          subject: `task:${t.id}`,
          personId: t.person_id,
          correlationId: t.correlation_id,
          detail: { lockSystem: ls, kind: t.kind, keyId: t.key_id, deadline, outcome: 'blocklisted' },
        },
        {
          actor: OVERDUE_ACTOR,
          action: 'key.blocklisted',
          subject: `key:${ls}:${t.key_id}`,
          personId: t.person_id,
          correlationId: t.correlation_id,
          detail: { lockSystem: ls, keyId: t.key_id, task: t.id, result },
        },
      ];
      if (result.task) {
        const raised = await raiseTask(trx, {
          lockSystemId: ls,
          personId: t.person_id,
          keyId: t.key_id,
          task: result.task,
          reason: `blocklist of ${t.key_id} of ${t.person_id} on ${ls} (not returned by the deadline)`,
          correlationId: t.correlation_id,
          actor: OVERDUE_ACTOR,
          now,
          deadlineMs: this.deadlineMs.get(ls) ?? taskDeadlineMs(undefined),
        });
        if (raised) entries.push(raised);
      }
      // Until the blocklist reaches the locks, the key is exposed, with no bound.
      await trx
        .insertInto('key_changes')
        .values({
          id: randomUUID(),
          operation_id: `task:${t.id}`,
          lock_system_id: ls,
          person_id: t.person_id,
          key_id: t.key_id,
          kind: 'blocklist',
          revocation: 1,
          job_id: result.jobId ?? null,
          accepted_at: now,
          effective_at: result.effective === true ? now : null,
          horizon: null,
          checked_at: null,
        })
        .execute();
      await appendAudit(trx, this.store.dialect, entries);
      return true;
    });
    if (closed) this.log.info({ lockSystem: ls, personId: t.person_id, keyId: t.key_id, task: t.id, jobId: result.jobId }, 'overdue key reported lost');
    return closed ? 'blocklisted' : 'raced';
  }
}
