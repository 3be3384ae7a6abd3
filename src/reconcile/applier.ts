import { randomUUID } from 'node:crypto';
import type { Job } from 'bullmq';
import type { Transaction } from 'kysely';
import type { AuditEntry } from '../audit/audit.ts';
import { append } from '../store/group-commit.ts';
import { exec, insertRows, lockPerson } from '../store/sql.ts';
import { newId } from '../store/ids.ts';
import { applyToState, deadToState, endDateOf } from '../domain/planner.ts';
import type { ActualState, OperationKind, PlannedOperation } from '../domain/types.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { actualFromRow, endDateToRow, type LockStateRowView, unsureToRow } from '../store/lock-state.ts';
import { LockSystemError, type ApplyResult, type LockSystem, type PersonRef } from '../ports/lock-system.ts';
import type { Config } from '../config/schema.ts';
import type { ApplyJob } from '../queue/queues.ts';
import type { Store } from '../store/db.ts';
import type { Database } from '../store/schema.ts';
import type { IdentityRepo } from '../store/identities.ts';
import { raiseTask, taskDeadlineMs } from './tasks.ts';
import { Slots } from '../queue/slots.ts';

/**
 * Runs one person's pending operations on one lock system, strictly in plan order. There is
 * at most one such job per (person, lock system) at a time (its BullMQ job id is derived from
 * the pair), which is what gives per-person ordering with a concurrent worker.
 *
 * Outcomes per operation:
 * - accepted: the lock system took it; lock_state advances, audited;
 * - permanent error: the operation is dead-lettered at once (retrying cannot help) and the
 *   next operation runs, so a broken grant never blocks a revocation;
 * - rate limited: the operation goes back to pending and the job is postponed by Retry-After
 *   without spending an attempt (being told to wait is not a failure);
 * - other errors: back to pending and the job fails this attempt, BullMQ retries with backoff;
 *   on the last attempt the remaining operations are dead-lettered instead.
 * A crash leaves the operation `running`; the next run of the job claims it again, which is
 * safe because adapters apply idempotently.
 */

// The statements of every apply, as fixed SQL (src/store/sql.ts).
const OP_COLUMNS = 'id, seq, kind, access, attempts, correlation_id, requested_at, priority';
const NEXT_OPERATION = `select ${OP_COLUMNS} from operations where lock_system_id = ? and person_id = ? and state in ('pending', 'running') order by seq limit 1`;
const MARK_RUNNING = "update operations set state = 'running', attempts = ?, started_at = ? where id = ?";
const MARK_ACCEPTED = "update operations set state = 'accepted', accepted_at = ?, effective_at = ?, last_error = null, result = ? where id = ?";
const STATE_OF = 'select access, departed, end_date, unsure from lock_state where lock_system_id = ? and person_id = ?';
const UPSERT_STATE =
  'insert into lock_state (lock_system_id, person_id, remote_person_id, access, departed, end_date, unsure, updated_at) values (?, ?, ?, ?, ?, ?, ?, ?) ' +
  'on conflict (lock_system_id, person_id) do update set access = excluded.access, departed = excluded.departed, end_date = excluded.end_date, unsure = excluded.unsure, updated_at = excluded.updated_at';
const UPSERT_STATE_WITH_REMOTE = `${UPSERT_STATE}, remote_person_id = excluded.remote_person_id`;
/** The values of UPSERT_STATE for a person's state on a lock system. */
function stateValues(lockSystemId: string, personId: string, remote: string | null, state: ActualState, now: number): unknown[] {
  return [lockSystemId, personId, remote, JSON.stringify([...state.access].sort()), state.left ? 1 : 0, endDateToRow(state.endDate), unsureToRow(state.unsure), now];
}

const KEY_CHANGE_COLUMNS = ['id', 'operation_id', 'lock_system_id', 'person_id', 'key_id', 'kind', 'revocation', 'job_id', 'accepted_at', 'horizon'];

/**
 * Apply jobs a worker runs per slot of `apply.concurrency`. Between two calls to the lock
 * system a job spends several milliseconds of its own (claiming the operation, recording the
 * acceptance, BullMQ finishing it and handing over the next); with a spare job per slot,
 * another job's call takes the slot meanwhile and the lock system sees `apply.concurrency`
 * operations in flight, not fewer.
 */
export const APPLY_JOBS_PER_SLOT = 2;

export class RetryableApplyError extends Error {
  readonly retryAfterMs: number | undefined;
  constructor(message: string, retryAfterMs?: number) {
    super(message);
    this.name = 'RetryableApplyError';
    this.retryAfterMs = retryAfterMs;
  }
}

export interface ApplyHooks {
  /** Put this job back for `ms` without spending an attempt; returns the error to throw. */
  postpone(ms: number): Promise<Error>;
}

export interface ApplyOutcome {
  accepted: number;
  dead: number;
}

interface OpRow {
  id: string;
  seq: number;
  kind: string;
  access: string;
  attempts: number;
  correlation_id: string;
  requested_at: number;
  priority: number;
}

/** The claim itself, inside the caller's change (see Applier.claim). */
async function claimIn(trx: Transaction<Database>, log: AuditEntry[], lockSystemId: string, personId: string, jobId: string): Promise<OpRow | undefined> {
  const [op] = await exec<OpRow>(trx, NEXT_OPERATION, [lockSystemId, personId]);
  if (!op) return undefined;
  await exec(trx, MARK_RUNNING, [op.attempts + 1, Date.now(), op.id]);
  log.push({
    actor: `system:apply:${lockSystemId}`,
    action: 'operation.attempt',
    subject: `operation:${op.id}`,
    personId,
    correlationId: op.correlation_id,
    detail: { lockSystem: lockSystemId, kind: op.kind, access: JSON.parse(op.access), attempt: op.attempts + 1, job: jobId },
  });
  return { ...op, attempts: op.attempts + 1 };
}

export class Applier {
  private readonly store: Store;
  private readonly identities: IdentityRepo;
  private readonly systems: Map<string, LockSystem>;
  private readonly log: Logger;
  private readonly metrics: Metrics | undefined;

  private readonly collectDeadlineMs: Map<string, number>;
  /** `apply.concurrency` per lock system: operations in flight there (see APPLY_JOBS_PER_SLOT). */
  private readonly slots: Map<string, Slots>;

  constructor(deps: { store: Store; identities: IdentityRepo; lockSystems: Map<string, LockSystem>; log: Logger; metrics?: Metrics; config: Config }) {
    this.collectDeadlineMs = new Map(deps.config.lockSystems.map((l) => [l.id, taskDeadlineMs(l.tasks)]));
    this.slots = new Map(deps.config.lockSystems.map((l) => [l.id, new Slots(l.apply.concurrency)]));
    this.store = deps.store;
    this.identities = deps.identities;
    this.systems = deps.lockSystems;
    this.log = deps.log;
    this.metrics = deps.metrics;
  }

  async process(job: Job<ApplyJob>, hooks: ApplyHooks): Promise<ApplyOutcome> {
    const { personId, lockSystemId } = job.data;
    const system = this.systems.get(lockSystemId);
    const slots = this.slots.get(lockSystemId);
    if (!system || !slots) throw new Error(`lock system ${lockSystemId} is not configured`);
    const outcome: ApplyOutcome = { accepted: 0, dead: 0 };
    const jobId = job.id ?? '';
    // The person is read in the first claim's change; each acceptance claims the next operation
    // in the same change: one commit per operation.
    const first = await this.claim(lockSystemId, personId, jobId, true);
    if (!first.op || !first.person) return outcome;
    const person = first.person;
    let next: OpRow | undefined = first.op;
    for (;;) {
      const op = next;
      if (!op) return outcome;
      next = undefined;
      const kind = op.kind as OperationKind;
      const access = JSON.parse(op.access) as string[];
      let started = performance.now();
      try {
        const ref = person;
        const result = await slots.hold(() => {
          started = performance.now();
          return system.apply({ operationId: op.id, kind, access, person: ref });
        });
        this.metrics?.operationSeconds.observe({ lock_system: lockSystemId, kind }, (performance.now() - started) / 1000);
        next = await this.accept(lockSystemId, personId, op, result, endDateOf(person.terminationDate), jobId);
        outcome.accepted += 1;
        this.metrics?.operations.inc({ lock_system: lockSystemId, kind, outcome: 'accepted' });
        this.metrics?.endToEndSeconds.observe({ lock_system: lockSystemId, kind }, (Date.now() - Number(op.requested_at)) / 1000);
      } catch (err) {
        const e = err instanceof LockSystemError ? err : new LockSystemError('retryable', (err as Error)?.message ?? String(err), { cause: err });
        this.metrics?.operationSeconds.observe({ lock_system: lockSystemId, kind }, (performance.now() - started) / 1000);
        if (e.kind === 'permanent') {
          await this.deadLetter(job, lockSystemId, personId, [op], op.id, e, false);
          outcome.dead += 1;
          next = (await this.claim(lockSystemId, personId, jobId, false)).op;
          continue;
        }
        if (e.kind === 'rate_limited') {
          await this.release(personId, op, e, 'operation.rate_limited');
          this.metrics?.operations.inc({ lock_system: lockSystemId, kind, outcome: 'rate_limited' });
          throw await hooks.postpone(e.retryAfterMs ?? 1000);
        }
        const maxAttempts = job.opts.attempts ?? 1;
        if (job.attemptsMade + 1 >= maxAttempts) {
          const rest = await this.store.db
            .selectFrom('operations')
            .select(['id', 'seq', 'kind', 'access', 'attempts', 'correlation_id', 'requested_at', 'priority'])
            .where('lock_system_id', '=', lockSystemId)
            .where('person_id', '=', personId)
            .where('state', 'in', ['pending', 'running'])
            .orderBy('seq')
            .execute();
          await this.deadLetter(job, lockSystemId, personId, rest, op.id, e, true);
          outcome.dead += rest.length;
          return outcome;
        }
        await this.release(personId, op, e, 'operation.retry');
        this.metrics?.operations.inc({ lock_system: lockSystemId, kind, outcome: 'retry' });
        throw new RetryableApplyError(`${e.kind}: ${e.message}`, e.retryAfterMs);
      }
    }
  }

  /**
   * Takes the first unfinished operation of this pair, marks it running and audits the attempt;
   * with `withPerson`, reads what the lock system is told about the person in the same change
   * (on SQLite the writer's connection has the pages warm; see Reconciler.run).
   */
  private claim(lockSystemId: string, personId: string, jobId: string, withPerson: boolean): Promise<{ op?: OpRow | undefined; person?: PersonRef | undefined }> {
    return this.store.write(async (trx, log) => {
      await lockPerson(trx, this.store.dialect, personId);
      const op = await claimIn(trx, log, lockSystemId, personId, jobId);
      return { op, person: withPerson && op ? await this.personRef(personId, trx) : undefined };
    });
  }

  /** Records the lock system's acceptance, then claims the pair's next operation (if any) in the same change. */
  private async accept(lockSystemId: string, personId: string, op: OpRow, result: ApplyResult, endDate: string | null, jobId: string): Promise<OpRow | undefined> {
    const now = Date.now();
    const revocation = op.kind === 'revoke' || op.kind === 'leave';
    // The first truth is now; the second comes per key, when the change reaches it.
    const pending = result.keys.filter((k) => k.change === 'changed' && k.effective !== true);
    return this.store.write(async (trx, log) => {
      await lockPerson(trx, this.store.dialect, personId);
      await exec(trx, MARK_ACCEPTED, [now, pending.length ? null : now, JSON.stringify(result), op.id]);
      if (pending.length)
        await exec(
          trx,
          insertRows('key_changes', KEY_CHANGE_COLUMNS, pending.length),
          pending.flatMap((k) => [
            newId(),
            op.id,
            lockSystemId,
            personId,
            k.keyId,
            op.kind,
            revocation ? 1 : 0,
            k.jobId ?? null,
            now,
            k.exposureUntil ? Date.parse(k.exposureUntil) : null,
          ]),
        );
      const taskEntries = await this.raiseTasks(trx, lockSystemId, personId, op, result, now);
      const [cur] = await exec<LockStateRowView>(trx, STATE_OF, [lockSystemId, personId]);
      const next = applyToState(cur ? actualFromRow(cur) : undefined, { kind: op.kind as PlannedOperation['kind'], access: JSON.parse(op.access) as string[] }, endDate);
      const remote = (result as { remotePersonId?: string } | undefined)?.remotePersonId ?? null;
      await exec(trx, remote ? UPSERT_STATE_WITH_REMOTE : UPSERT_STATE, stateValues(lockSystemId, personId, remote, next, now));
      log.push(
        {
          actor: `system:apply:${lockSystemId}`,
          action: 'operation.accepted',
          subject: `operation:${op.id}`,
          personId,
          correlationId: op.correlation_id,
          detail: { lockSystem: lockSystemId, kind: op.kind, access: JSON.parse(op.access), result, awaitingKeys: pending.map((k) => k.keyId) },
        },
        ...taskEntries,
      );
      return claimIn(trx, log, lockSystemId, personId, jobId);
    });
  }

  /** Work only a person can do, one open task per (key, kind): leave is applied again on retries. */
  private async raiseTasks(trx: Transaction<Database>, lockSystemId: string, personId: string, op: OpRow, result: ApplyResult, now: number): Promise<AuditEntry[]> {
    const entries: AuditEntry[] = [];
    for (const k of result.keys) {
      if (!k.task) continue;
      const entry = await raiseTask(trx, {
        lockSystemId,
        personId,
        keyId: k.keyId,
        task: k.task,
        reason: `${op.kind} of ${personId} on ${lockSystemId}`,
        correlationId: op.correlation_id,
        actor: `system:apply:${lockSystemId}`,
        now,
        deadlineMs: this.collectDeadlineMs.get(lockSystemId) ?? taskDeadlineMs(undefined),
      });
      if (entry) entries.push(entry);
    }
    return entries;
  }

  private async release(personId: string, op: OpRow, e: LockSystemError, action: string): Promise<void> {
    await this.store.write(async (trx, log) => {
      await trx.updateTable('operations').set({ state: 'pending', last_error: `${e.kind}: ${e.message}` }).where('id', '=', op.id).where('state', '=', 'running').execute();
      log.push({
        actor: 'system:apply',
        action,
        subject: `operation:${op.id}`,
        personId,
        correlationId: op.correlation_id,
        detail: { error: e.message, kind: e.kind, status: e.status ?? null, retryAfterMs: e.retryAfterMs ?? null, attempt: op.attempts },
      });
    });
  }

  /** `failedOpId`: the operation whose attempt failed with `e` (the others in `ops` were waiting behind it). */
  private async deadLetter(job: Job<ApplyJob>, lockSystemId: string, personId: string, ops: OpRow[], failedOpId: string, e: LockSystemError, exhausted: boolean): Promise<void> {
    const now = Date.now();
    const failedId = randomUUID();
    const error = `${e.kind}: ${e.message}`;
    await this.store.write(async (trx, log) => {
      await lockPerson(trx, this.store.dialect, personId);
      if (ops.length)
        await trx
          .updateTable('operations')
          .set({ state: 'dead', last_error: error, failed_job_id: failedId })
          .where('id', 'in', ops.map((o) => o.id))
          .execute();
      await trx
        .insertInto('failed_jobs')
        .values({ id: failedId, queue: job.queueName, lock_system_id: lockSystemId, person_id: personId, error, attempts: job.attemptsMade + 1, failed_at: now, retried_at: null })
        .execute();
      // The operation that failed just now changed nothing if the adapter says so and no earlier
      // attempt of it ran.
      const pristine = (o: OpRow) => o.id === failedOpId && e.unchanged && Number(o.attempts) <= 1;
      const unsure = await this.recordUnsure(trx, lockSystemId, personId, ops.filter((o) => !pristine(o)), now);
      const entries: AuditEntry[] = [
        {
          actor: `system:apply:${lockSystemId}`,
          action: 'job.dead_lettered',
          subject: `job:${failedId}`,
          personId,
          correlationId: ops[0]?.correlation_id ?? failedId,
          detail: {
            lockSystem: lockSystemId,
            error,
            exhausted,
            attempts: job.attemptsMade + 1,
            operations: ops.map((o) => ({ id: o.id, kind: o.kind, access: JSON.parse(o.access) })),
            // Access a started grant may have left on the keys: revoked if it becomes unwanted.
            unsure,
          },
        },
      ];
      append(log, entries);
    });
    this.metrics?.deadLettered.inc({ lock_system: lockSystemId });
    for (const o of ops) this.metrics?.operations.inc({ lock_system: lockSystemId, kind: o.kind, outcome: 'dead' });
    this.log.error({ lockSystem: lockSystemId, personId, failedJob: failedId, error }, 'apply job dead-lettered');
  }

  /**
   * Grants among `ops` that started may have put some of their access on the keys before they
   * failed for good: that access is recorded as unsure in lock_state (see deadToState), so that
   * the planner revokes it if it is no longer wanted. Returns the access newly unsure.
   */
  private async recordUnsure(trx: Transaction<Database>, lockSystemId: string, personId: string, ops: OpRow[], now: number): Promise<string[]> {
    const started = ops.filter((o) => Number(o.attempts) > 0 && o.kind === 'grant');
    if (started.length === 0) return [];
    const [cur] = await exec<LockStateRowView>(trx, STATE_OF, [lockSystemId, personId]);
    const before = cur ? actualFromRow(cur) : undefined;
    let state = before;
    for (const o of started) state = deadToState(state, { kind: 'grant', access: JSON.parse(o.access) as string[] });
    if (!state || state === before) return [];
    await exec(trx, UPSERT_STATE, stateValues(lockSystemId, personId, null, state, now));
    return [...(state.unsure ?? [])].filter((a) => !before?.unsure?.has(a)).sort();
  }

  private async personRef(personId: string, db: Transaction<Database>): Promise<PersonRef> {
    const p = await this.identities.loadProfile(personId, db);
    const ref: PersonRef = { personId, externalId: personId };
    if (p?.givenName) ref.givenName = p.givenName;
    if (p?.familyName) ref.familyName = p.familyName;
    if (p?.email) ref.email = p.email;
    if (p?.attributes?.terminationDate) ref.terminationDate = p.attributes.terminationDate;
    return ref;
  }
}
