import { newId } from '../store/ids.ts';
import { exec } from '../store/sql.ts';
import type { Transaction } from 'kysely';
import type { AuditEntry } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import type { ManualTaskRequest } from '../ports/lock-system.ts';
import type { Database } from '../store/schema.ts';

/**
 * Manual tasks (work only a person can do: collect a key, program cylinders for a blocklist),
 * shared by the applier (tasks a lock system asks for on apply) and the overdue blocklister
 * (tasks reportLost asks for).
 */

const DAY_MS = 86_400_000;

// Every leaver with a physical key raises one: fixed SQL (src/store/sql.ts).
const OPEN_TASK = 'select id from tasks where lock_system_id = ? and person_id = ? and key_id = ? and kind = ? and done_at is null limit 1';
const INSERT_TASK =
  'insert into tasks (id, lock_system_id, person_id, key_id, kind, description, reason, correlation_id, created_at, deadline, done_at, done_by, note) ' +
  'values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, null, null, null)';

/** How long a task has before it is overdue: `collectDeadlineHours` when set, else `collectDeadlineDays`. */
export function taskDeadlineMs(tasks: Config['lockSystems'][number]['tasks'] | undefined): number {
  if (!tasks) return 14 * DAY_MS;
  if (tasks.collectDeadlineHours !== undefined) return Math.round(tasks.collectDeadlineHours * 3_600_000);
  return tasks.collectDeadlineDays * DAY_MS;
}

export interface RaiseTask {
  lockSystemId: string;
  personId: string;
  keyId: string;
  task: ManualTaskRequest;
  /** Why, in words (e.g. "leave of p on iloq"). */
  reason: string;
  correlationId: string;
  /** Audit actor, e.g. `system:apply:iloq`. */
  actor: string;
  now: number;
  deadlineMs: number;
}

/**
 * Inserts the task unless one of the same kind is already open for that key of that person on
 * that lock system (operations are applied again on retries, and the lock system reports the
 * same work again). Returns the `task.raised` audit entry to append in the same transaction,
 * or undefined when an open task already covers it.
 */
export async function raiseTask(trx: Transaction<Database>, t: RaiseTask): Promise<AuditEntry | undefined> {
  const [open] = await exec<{ id: string }>(trx, OPEN_TASK, [t.lockSystemId, t.personId, t.keyId, t.task.kind]);
  if (open) return undefined;
  const id = newId();
  const deadline = t.now + t.deadlineMs;
  await exec(trx, INSERT_TASK, [id, t.lockSystemId, t.personId, t.keyId, t.task.kind, t.task.description, t.reason, t.correlationId, t.now, deadline]);
  return {
    actor: t.actor,
    action: 'task.raised',
    subject: `task:${id}`,
    personId: t.personId,
    correlationId: t.correlationId,
    detail: { kind: t.task.kind, keyId: t.keyId, description: t.task.description, deadline: new Date(deadline).toISOString() },
  };
}
