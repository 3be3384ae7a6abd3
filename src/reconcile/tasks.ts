import { newId } from '../store/ids.ts';
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
  const open = await trx
    .selectFrom('tasks')
    .select('id')
    .where('lock_system_id', '=', t.lockSystemId)
    .where('person_id', '=', t.personId)
    .where('key_id', '=', t.keyId)
    .where('kind', '=', t.task.kind)
    .where('done_at', 'is', null)
    .executeTakeFirst();
  if (open) return undefined;
  const id = newId();
  const deadline = t.now + t.deadlineMs;
  await trx
    .insertInto('tasks')
    .values({
      id,
      lock_system_id: t.lockSystemId,
      person_id: t.personId,
      key_id: t.keyId,
      kind: t.task.kind,
      description: t.task.description,
      reason: t.reason,
      correlation_id: t.correlationId,
      created_at: t.now,
      deadline,
      done_at: null,
      done_by: null,
      note: null,
    })
    .execute();
  return {
    actor: t.actor,
    action: 'task.raised',
    subject: `task:${id}`,
    personId: t.personId,
    correlationId: t.correlationId,
    detail: { kind: t.task.kind, keyId: t.keyId, description: t.task.description, deadline: new Date(deadline).toISOString() },
  };
}
