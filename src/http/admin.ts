import type { FastifyInstance } from 'fastify';
import { appendAudit, queryAudit } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import type { Reconciler } from '../reconcile/reconciler.ts';
import type { Store } from '../store/db.ts';
import { PRIORITY_LEAVER, type IdentityRepo } from '../store/identities.ts';
import type { Principal } from './admin-auth.ts';
import { createGuard } from './guard.ts';
import { sendProblem } from './problems.ts';
import { endDateFromRow } from '../store/lock-state.ts';

/**
 * The admin API under /api/v1. Every request authenticated; every refusal (401 and 403) and
 * every action audited.
 */

export interface AdminDeps {
  config: Config;
  store: Store;
  identities: IdentityRepo;
  reconciler: Reconciler;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

const MAX_PAGE = 1000;

export async function adminRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { store, identities } = deps;

  const guard = createGuard(deps);

  app.get<{ Params: { id: string } }>('/persons/:id', { preHandler: guard('persons:read') }, async (req, reply) => {
    const id = req.params.id;
    const identity = await identities.loadIdentity(id);
    const states = await store.db.selectFrom('lock_state').selectAll().where('person_id', '=', id).execute();
    const ops = await store.db.selectFrom('operations').selectAll().where('person_id', '=', id).orderBy('seq', 'desc').limit(100).execute();
    if (!identity && states.length === 0 && ops.length === 0) return sendProblem(reply, 'NOT_FOUND', `person ${id} not found`);
    const plan = await deps.reconciler.dryRun(id);
    const dirty = await store.db.selectFrom('dirty').select(['marked_at', 'reason']).where('person_id', '=', id).executeTakeFirst();
    return {
      id,
      identity,
      desired: plan.desired,
      matchedRules: plan.rules,
      pendingPlan: plan.operations.map((o) => ({ lockSystem: o.lockSystemId, kind: o.kind, access: o.access })),
      reconcilePending: dirty ? { since: iso(dirty.marked_at), reason: dirty.reason } : null,
      actual: Object.fromEntries(
        states.map((s) => [
          s.lock_system_id,
          // endDate: the termination date on the keys there (null none; absent when not known).
          // unsure: access a dead-lettered grant may have left on the keys (absent when none).
          {
            access: JSON.parse(s.access),
            left: s.departed === 1,
            ...endDateFromRow(s.end_date),
            ...(s.unsure ? { unsure: JSON.parse(s.unsure) } : {}),
            remotePersonId: s.remote_person_id,
            updatedAt: iso(s.updated_at),
          },
        ]),
      ),
      operations: ops.map((o) => ({
        id: o.id,
        lockSystem: o.lock_system_id,
        kind: o.kind,
        access: JSON.parse(o.access),
        state: o.state,
        attempts: o.attempts,
        correlationId: o.correlation_id,
        requestedAt: iso(o.requested_at),
        startedAt: iso(o.started_at),
        acceptedAt: iso(o.accepted_at),
        effectiveAt: iso(o.effective_at),
        lastError: o.last_error,
        result: o.result ? JSON.parse(o.result) : null,
      })),
    };
  });

  app.post<{ Params: { id: string } }>('/persons/:id/reconcile', { preHandler: guard('reconcile:request') }, async (req, reply) => {
    const id = req.params.id;
    await identities.requestReconcile([id], 'requested by admin', { actor: `admin:${req.principal!.name}`, correlationId: String(req.id) }, PRIORITY_LEAVER);
    return reply.code(202).send({ personId: id, status: 'queued' });
  });

  app.get<{ Querystring: { limit?: string; after?: string } }>('/jobs/failed', { preHandler: guard('jobs:read') }, async (req, reply) => {
    const limit = parseLimit(req.query.limit);
    if (limit === undefined) return sendProblem(reply, 'INVALID_REQUEST', `limit must be an integer between 1 and ${MAX_PAGE}`);
    // Cursor = "<failedAt ms>:<id>" of the last item seen, matching the sort order.
    const cursor = req.query.after === undefined ? undefined : /^(\d+):([0-9a-f-]{36})$/.exec(req.query.after);
    if (cursor === null) return sendProblem(reply, 'INVALID_REQUEST', 'after must be the `next` value of a previous page');
    let q = store.db.selectFrom('failed_jobs').selectAll().where('retried_at', 'is', null);
    if (cursor) {
      const [, at, id] = cursor;
      q = q.where((eb) => eb.or([eb('failed_at', '>', Number(at)), eb.and([eb('failed_at', '=', Number(at)), eb('id', '>', id!)])]));
    }
    const rows = await q.orderBy('failed_at').orderBy('id').limit(limit + 1).execute();
    const more = rows.length > limit;
    if (more) rows.pop();
    const total = await store.db.selectFrom('failed_jobs').select((eb) => eb.fn.countAll<number>().as('n')).where('retried_at', 'is', null).executeTakeFirstOrThrow();
    const dead = rows.length
      ? await store.db
          .selectFrom('operations')
          .select(['id', 'failed_job_id', 'kind', 'access', 'last_error'])
          .where('failed_job_id', 'in', rows.map((r) => r.id))
          .orderBy('seq')
          .execute()
      : [];
    const last = rows.at(-1);
    return {
      total: Number(total.n),
      next: more && last ? `${Number(last.failed_at)}:${last.id}` : null,
      items: rows.map((r) => ({
        id: r.id,
        queue: r.queue,
        lockSystem: r.lock_system_id,
        personId: r.person_id,
        error: r.error,
        attempts: r.attempts,
        failedAt: iso(r.failed_at),
        operations: dead.filter((d) => d.failed_job_id === r.id).map((d) => ({ id: d.id, kind: d.kind, access: JSON.parse(d.access), error: d.last_error })),
      })),
    };
  });

  app.post<{ Params: { id: string } }>('/jobs/failed/:id/retry', { preHandler: guard('jobs:retry') }, async (req, reply) => {
    const row = await store.db.selectFrom('failed_jobs').selectAll().where('id', '=', req.params.id).executeTakeFirst();
    if (!row) return sendProblem(reply, 'NOT_FOUND', `failed job ${req.params.id} not found`);
    if (row.retried_at !== null) return sendProblem(reply, 'CONFLICT', `failed job ${row.id} was already retried at ${iso(row.retried_at)}`);
    const now = Date.now();
    // Retrying re-plans from the current identity rather than replaying stale operations.
    await store.db.transaction().execute(async (trx) => {
      await trx.updateTable('failed_jobs').set({ retried_at: now }).where('id', '=', row.id).execute();
      await trx
        .updateTable('operations')
        .set({ state: 'superseded' })
        .where('state', '=', 'dead')
        .where('failed_job_id', '=', row.id)
        .execute();
      await appendAudit(trx, store.dialect, [
        { actor: `admin:${req.principal!.name}`, action: 'admin.job.retry', subject: `job:${row.id}`, personId: row.person_id, detail: { lockSystem: row.lock_system_id }, correlationId: String(req.id) },
      ]);
    });
    await identities.requestReconcile([row.person_id], 'dead-lettered job retried', { actor: `admin:${req.principal!.name}`, correlationId: String(req.id) }, PRIORITY_LEAVER);
    return reply.code(202).send({ id: row.id, personId: row.person_id, status: 'requeued' });
  });

  app.get<{ Querystring: { lockSystem?: string } }>('/exposure', { preHandler: guard('exposure:read') }, async (req) => {
    let q = store.db
      .selectFrom('key_changes')
      .select(['lock_system_id', 'person_id', 'key_id', 'operation_id', 'kind', 'job_id', 'accepted_at', 'horizon', 'checked_at'])
      .where('revocation', '=', 1)
      .where('effective_at', 'is', null);
    if (req.query.lockSystem) q = q.where('lock_system_id', '=', req.query.lockSystem);
    const rows = await q.orderBy('accepted_at').limit(10_000).execute();
    const unbounded = rows.filter((r) => r.horizon === null).length;
    const latest = rows.reduce<number | null>((m, r) => (r.horizon === null ? m : Math.max(m ?? 0, Number(r.horizon))), null);
    return {
      keys: rows.length,
      unbounded,
      // Unbounded keys have no horizon: until they are reprogrammed or blocklisted, nothing stops them.
      latestHorizon: unbounded ? null : iso(latest),
      items: rows.map((r) => ({
        lockSystem: r.lock_system_id,
        personId: r.person_id,
        keyId: r.key_id,
        operationId: r.operation_id,
        kind: r.kind,
        jobId: r.job_id,
        acceptedAt: iso(r.accepted_at),
        horizon: iso(r.horizon),
        lastCheckedAt: iso(r.checked_at),
      })),
    };
  });

  app.get<{ Querystring: { state?: string; person?: string; limit?: string } }>('/tasks', { preHandler: guard('tasks:read') }, async (req, reply) => {
    const limit = parseLimit(req.query.limit);
    if (limit === undefined) return sendProblem(reply, 'INVALID_REQUEST', `limit must be an integer between 1 and ${MAX_PAGE}`);
    const state = req.query.state ?? 'open';
    if (!['open', 'done', 'all'].includes(state)) return sendProblem(reply, 'INVALID_REQUEST', 'state must be open, done or all');
    let q = store.db.selectFrom('tasks').selectAll();
    if (state === 'open') q = q.where('done_at', 'is', null);
    if (state === 'done') q = q.where('done_at', 'is not', null);
    if (req.query.person) q = q.where('person_id', '=', req.query.person);
    const rows = await q.orderBy('deadline').orderBy('id').limit(limit).execute();
    const now = Date.now();
    return {
      items: rows.map((t) => ({
        id: t.id,
        kind: t.kind,
        description: t.description,
        reason: t.reason,
        lockSystem: t.lock_system_id,
        personId: t.person_id,
        keyId: t.key_id,
        createdAt: iso(t.created_at),
        deadline: iso(t.deadline),
        overdue: t.done_at === null && Number(t.deadline) < now,
        doneAt: iso(t.done_at),
        doneBy: t.done_by,
        note: t.note,
      })),
    };
  });

  app.post<{ Params: { id: string }; Body: { note?: unknown } | undefined }>('/tasks/:id/done', { preHandler: guard('tasks:done') }, async (req, reply) => {
    const note = req.body?.note;
    if (note !== undefined && (typeof note !== 'string' || note.length > 2000)) return sendProblem(reply, 'INVALID_REQUEST', 'note must be a string of at most 2000 characters');
    const task = await store.db.selectFrom('tasks').selectAll().where('id', '=', req.params.id).executeTakeFirst();
    if (!task) return sendProblem(reply, 'NOT_FOUND', `task ${req.params.id} not found`);
    if (task.done_at !== null) return sendProblem(reply, 'CONFLICT', `task ${task.id} was closed at ${iso(task.done_at)} by ${task.done_by}`);
    const now = Date.now();
    await store.db.transaction().execute(async (trx) => {
      await trx.updateTable('tasks').set({ done_at: now, done_by: req.principal!.name, note: (note as string | undefined) ?? null }).where('id', '=', task.id).execute();
      await appendAudit(trx, store.dialect, [
        { actor: `admin:${req.principal!.name}`, action: 'task.done', subject: `task:${task.id}`, personId: task.person_id, detail: { kind: task.kind, keyId: task.key_id, note: note ?? null, overdue: Number(task.deadline) < now }, correlationId: String(req.id) },
      ]);
    });
    return { id: task.id, status: 'done', doneAt: iso(now) };
  });

  app.get<{ Querystring: Record<string, string | undefined> }>('/audit', { preHandler: guard('audit:read') }, async (req, reply) => {
    const q = req.query;
    const limit = parseLimit(q.limit);
    if (limit === undefined) return sendProblem(reply, 'INVALID_REQUEST', `limit must be an integer between 1 and ${MAX_PAGE}`);
    const from = parseTime(q.from);
    const to = parseTime(q.to);
    if (from === null || to === null) return sendProblem(reply, 'INVALID_REQUEST', 'from and to must be ISO 8601 date-times');
    const after = q.after === undefined ? undefined : Number(q.after);
    if (after !== undefined && !Number.isInteger(after)) return sendProblem(reply, 'INVALID_REQUEST', 'after must be an integer (the seq of the last row seen)');
    const rows = await queryAudit(store.db, {
      ...(q.person ? { personId: q.person } : {}),
      ...(q.action ? { action: q.action } : {}),
      ...(from !== undefined ? { from } : {}),
      ...(to !== undefined ? { to } : {}),
      ...(after !== undefined ? { after } : {}),
      limit: limit + 1,
    });
    const more = rows.length > limit;
    const items = more ? rows.slice(0, limit) : rows;
    return { items, next: more ? items[items.length - 1]!.seq : null };
  });
}

function parseLimit(v: string | undefined): number | undefined {
  if (v === undefined) return 100;
  const n = Number(v);
  return Number.isInteger(n) && n >= 1 && n <= MAX_PAGE ? n : undefined;
}

/** undefined = absent, null = unparseable. */
function parseTime(v: string | undefined): number | undefined | null {
  if (v === undefined) return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : t;
}

function iso(ms: number | null | undefined): string | null {
  return ms === null || ms === undefined ? null : new Date(Number(ms)).toISOString();
}
