import { createHash, randomUUID } from 'node:crypto';
import { DelayedError, Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { RedisOptions } from 'ioredis';
import { appendAudit, auditAlone } from '../audit/audit.ts';
import type { Config, SourceConfig } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import { IdentitySourceError, type IdentitySource } from '../ports/identity-source.ts';
import type { Store } from '../store/db.ts';
import type { IdentityRepo } from '../store/identities.ts';
import { newId } from '../store/ids.ts';
import { upsertState, type HintStore, type Persisted } from './hints.ts';
import { runSnapshot, type SnapshotSummary } from './snapshot.ts';
import type { SourceSync } from './sync.ts';
import type { Paced } from '../queue/pacing.ts';

/**
 * Drives the API-connected identity sources on one BullMQ queue, `sources` (prefix from config):
 *
 * | job | id | what it does |
 * |---|---|---|
 * | confirm | `c_<hash(source, user/group, id)>` | `readUser`/`readGroup` → store; marks that record's pending hints done. One per record: hints for a record coalesce; one that arrives while it runs re-queues it. Leaver priority when a pending hint is a revocation. |
 * | recheck | `k_<…>` | the same, once more after `recheckAfterMs` (SailPoint's search index lags). |
 * | delta | `d_<hash(source)>` | `readDelta(cursor)`; hints + new cursor in one transaction; again at once while `more`; `resync` → snapshot. |
 * | snapshot | `s_<hash(source)>` | full reconciliation (snapshot.ts). |
 * | maintain | `m_<hash(source)>` | `maintain()` (Entra subscriptions), next run after `nextInMs`. |
 * | task | `t_<hash(source)>_<seq>` | `runTask` for a task a hook persisted. |
 *
 * Errors decide the move: `rate_limited` → the job is delayed by `retryAfterMs` without spending
 * an attempt; `permanent`/`unsupported` → no retry (hints marked failed; the next snapshot is the
 * backstop); anything else → exponential backoff (1 s … 5 min), Retry-After when longer.
 *
 * The schedule lives in the database (`source_state`), so every worker process may tick: job ids
 * make a second offer of the same work a no-op, and due times move when a job starts. Each tick
 * also re-offers pending hints and tasks older than `sweepAfterMs` (Redis lost them, or the
 * process died between commit and enqueue) and prunes processed hints past `hintRetention`.
 */

export const SOURCES_QUEUE = 'sources';

export type SourceJob =
  | { type: 'confirm'; sourceId: string; target: 'user' | 'group'; id: string; recheck?: boolean }
  | { type: 'delta'; sourceId: string }
  | { type: 'snapshot'; sourceId: string; reason: string }
  | { type: 'maintain'; sourceId: string }
  | { type: 'task'; sourceId: string; seq: number };

interface JobResult {
  requeue?: boolean;
  recheckMs?: number;
}

const PRIORITY = { leaver: 1, task: 3, delta: 5, maintain: 5, confirm: 10, snapshot: 20 };

const h = (...parts: string[]) => createHash('sha256').update(parts.join('\u0000')).digest('base64url').slice(0, 22);

export function sourceJobId(d: SourceJob): string {
  switch (d.type) {
    case 'confirm':
      return `${d.recheck ? 'k' : 'c'}_${h(d.sourceId, d.target, d.id)}`;
    case 'delta':
      return `d_${h(d.sourceId)}`;
    case 'snapshot':
      return `s_${h(d.sourceId)}`;
    case 'maintain':
      return `m_${h(d.sourceId)}`;
    case 'task':
      return `t_${h(d.sourceId)}_${d.seq}`;
  }
}

/** Backoff of a failed source job: exponential with equal jitter, Retry-After when longer. */
export function sourceRetryDelayMs(attempt: number, err: unknown, random: () => number = Math.random): number {
  const exp = Math.min(300_000, 1000 * 2 ** Math.max(0, attempt - 1));
  const d = Math.round(exp / 2 + (random() * exp) / 2);
  const ra = err instanceof IdentitySourceError ? err.retryAfterMs : undefined;
  return ra !== undefined && ra > d ? ra : d;
}

export interface RunnerDeps {
  config: Config;
  store: Store;
  identities: IdentityRepo;
  sync: SourceSync;
  hints: HintStore;
  sources: Map<string, IdentitySource>;
  /** Connection options: BullMQ owns (and closes) the queue's and the worker's connections. */
  connection: RedisOptions;
  log: Logger;
  /** Registers the confirmation worker with the engine's pacer (src/queue/pacing.ts). */
  pace?: (worker: Paced) => void;
}

/** ioredis options from a redis:// or rediss:// URL (user, password, database index). */
export function redisOptions(url: string): RedisOptions {
  const u = new URL(url);
  const db = u.pathname.replace(/^\//, '');
  return {
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(db ? { db: Number(db) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    maxRetriesPerRequest: null,
  };
}

export class SourceRunner {
  readonly queue: Queue<SourceJob>;
  private readonly deps: RunnerDeps;
  private worker: Worker<SourceJob> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private lastPrune = 0;
  private readonly startedAt = Date.now();

  constructor(deps: RunnerDeps) {
    this.deps = deps;
    this.queue = new Queue<SourceJob>(SOURCES_QUEUE, {
      connection: deps.connection,
      prefix: deps.config.redis.prefix,
      defaultJobOptions: { removeOnComplete: true, removeOnFail: true, attempts: 8, backoff: { type: 'lockstep-source' } },
    });
    this.queue.on('error', (err) => deps.log.warn({ err: err.message }, 'source queue: redis error'));
  }

  private cfg(sourceId: string): SourceConfig | undefined {
    return this.deps.config.sources.find((s) => s.id === sourceId);
  }

  /** Full reconciliation interval of a source (default by capability). */
  reconcileEvery(src: IdentitySource): number {
    return this.cfg(src.id)?.reconcileEvery ?? (src.capabilities.delta ? 86_400_000 : 3_600_000);
  }

  async enqueue(jobs: Array<SourceJob & { priority?: number; delayMs?: number }>): Promise<void> {
    if (jobs.length === 0) return;
    await this.queue.addBulk(
      jobs.map(({ priority, delayMs, ...data }) => ({
        name: data.type,
        data: data as SourceJob,
        opts: {
          jobId: sourceJobId(data as SourceJob),
          priority: priority ?? PRIORITY[data.type === 'confirm' ? 'confirm' : data.type],
          ...(delayMs ? { delay: delayMs } : {}),
          ...(data.type === 'snapshot' ? { attempts: 3 } : {}),
        },
      })),
    );
  }

  /** After a hook's or a delta's hints committed: one confirmation per record, tasks, and the resync asked for. */
  async afterPersist(p: Persisted): Promise<void> {
    const confirms = new Map<string, SourceJob & { priority: number }>();
    for (const hint of p.hints) {
      const k = `${hint.sourceId}\u0000${hint.target}\u0000${hint.targetId}`;
      const prev = confirms.get(k);
      const priority = hint.revocation ? PRIORITY.leaver : PRIORITY.confirm;
      if (!prev || priority < prev.priority) confirms.set(k, { type: 'confirm', sourceId: hint.sourceId, target: hint.target, id: hint.targetId, priority });
    }
    const jobs: Array<SourceJob & { priority?: number }> = [...confirms.values()];
    for (const t of p.tasks) jobs.push({ type: 'task', sourceId: t.sourceId, seq: t.seq });
    await this.enqueue(jobs);
    if (p.resync) await this.kickResync(p.sourceId, p.resync);
  }

  /** Asks for a reconciliation of a source: `delta` (coalesced delta round) or `full` (snapshot). */
  async requestResync(sourceId: string, kind: 'delta' | 'full', reason: string): Promise<void> {
    await upsertState(this.deps.store.db, sourceId, Date.now(), { resync: kind });
    this.deps.log.info({ source: sourceId, kind, reason }, 'source reconciliation requested');
    await this.kickResync(sourceId, kind).catch((err: Error) => this.deps.log.warn({ err: err.message }, 'enqueue failed; the scheduler will retry'));
  }

  private async kickResync(sourceId: string, kind: 'delta' | 'full'): Promise<void> {
    const src = this.deps.sources.get(sourceId);
    if (!src) return;
    if (kind === 'full') await this.enqueue([{ type: 'snapshot', sourceId, reason: 'resync requested' }]);
    else if (src.capabilities.delta) await this.enqueue([{ type: 'delta', sourceId }]);
  }

  /** Starts the worker and the schedule; at start: snapshots (reconcileAtStart) and maintenance. */
  async start(): Promise<void> {
    const { config, log } = this.deps;
    const lockDuration = config.reconcile.jobLockMs;
    const worker = new Worker<SourceJob>(SOURCES_QUEUE, (job, token) => this.process(job, token), {
      connection: this.deps.connection,
      prefix: config.redis.prefix,
      concurrency: config.identity.concurrency,
      lockDuration,
      stalledInterval: lockDuration,
      autorun: false,
      settings: { backoffStrategy: (attemptsMade: number, _type?: string, err?: Error) => sourceRetryDelayMs(attemptsMade, err) },
    });
    worker.on('completed', (job, result: JobResult | undefined) => {
      const d = job.data;
      const again: Array<SourceJob & { priority?: number; delayMs?: number }> = [];
      if (result?.requeue) again.push({ ...d, priority: job.opts.priority ?? PRIORITY.confirm });
      if (result?.recheckMs && d.type === 'confirm') again.push({ ...d, recheck: true, priority: job.opts.priority ?? PRIORITY.confirm, delayMs: result.recheckMs });
      if (again.length) void this.enqueue(again).catch(() => {});
    });
    worker.on('failed', (job, err) => void this.onFailed(job, err));
    worker.on('error', (err) => log.warn({ err: err.message }, 'source worker error'));
    this.worker = worker;
    this.deps.pace?.(worker);
    void worker.run().catch((err: Error) => log.error({ err: err.message }, 'source worker stopped'));

    const now = Date.now();
    const initial: SourceJob[] = [];
    for (const src of this.deps.sources.values()) {
      await upsertState(this.deps.store.db, src.id, now, {});
      await src.start().catch((err: Error) => log.warn({ source: src.id, err: err.message }, 'identity source failed to start'));
      if (this.cfg(src.id)?.reconcileAtStart !== false) initial.push({ type: 'snapshot', sourceId: src.id, reason: 'start' });
      if (src.capabilities.maintenance) initial.push({ type: 'maintain', sourceId: src.id });
    }
    await this.enqueue(initial).catch((err: Error) => log.warn({ err: err.message }, 'could not enqueue the start-up reconciliation; the scheduler will retry'));
    this.timer = setInterval(() => {
      if (!this.ticking)
        this.ticking = this.tick()
          .catch((err: Error) => log.warn({ err: err.message }, 'source schedule tick failed'))
          .finally(() => (this.ticking = undefined));
    }, config.reconcile.sweepIntervalMs);
    this.timer.unref();
  }

  async stop(graceMs = 5000): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.ticking;
    if (this.worker) {
      let t: NodeJS.Timeout | undefined;
      const closed = await Promise.race([this.worker.close().then(() => true), new Promise<boolean>((r) => (t = setTimeout(() => r(false), graceMs)))]);
      clearTimeout(t);
      if (!closed) await this.worker.close(true).catch(() => {});
    }
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.queue.close().catch(() => {}), new Promise((r) => (t = setTimeout(r, 2000)))]);
    clearTimeout(t);
  }

  /** One pass of the schedule (exposed for tests). */
  async tick(now = Date.now()): Promise<void> {
    const { store, config, hints } = this.deps;
    const states = new Map((await store.db.selectFrom('source_state').selectAll().execute()).map((s) => [s.source_id, s]));
    const jobs: SourceJob[] = [];
    for (const src of this.deps.sources.values()) {
      const st = states.get(src.id);
      const cfg = this.cfg(src.id);
      if (!st || !cfg) {
        await upsertState(store.db, src.id, now, {});
        continue;
      }
      const lastSnap = st.last_snapshot_at ?? (cfg.reconcileAtStart ? 0 : this.startedAt);
      if (st.resync === 'full' || now - Number(lastSnap) >= this.reconcileEvery(src)) jobs.push({ type: 'snapshot', sourceId: src.id, reason: st.resync === 'full' ? 'resync requested' : 'schedule' });
      if (src.capabilities.delta && st.cursor && (st.resync === 'delta' || now - Number(st.last_delta_at ?? 0) >= cfg.deltaEvery)) jobs.push({ type: 'delta', sourceId: src.id });
      if (!src.capabilities.delta && st.resync === 'delta')
        await store.db.updateTable('source_state').set({ resync: null }).where('source_id', '=', src.id).where('resync', '=', 'delta').execute();
      if (src.capabilities.maintenance && now >= Number(st.next_maintain_at ?? 0)) jobs.push({ type: 'maintain', sourceId: src.id });
    }
    const before = now - config.reconcile.sweepAfterMs;
    for (const s of await hints.stale(before, 1000))
      if (this.deps.sources.has(s.sourceId))
        (jobs as Array<SourceJob & { priority?: number }>).push({ type: 'confirm', sourceId: s.sourceId, target: s.target, id: s.targetId, priority: s.revocation ? PRIORITY.leaver : PRIORITY.confirm });
    for (const t of await hints.staleTasks(before, 200)) if (this.deps.sources.has(t.sourceId)) jobs.push({ type: 'task', sourceId: t.sourceId, seq: t.seq });
    await this.enqueue(jobs);
    if (now - this.lastPrune > 3_600_000) {
      this.lastPrune = now;
      await hints.prune(now - config.identity.hintRetention);
    }
  }

  private async process(job: Job<SourceJob>, token?: string): Promise<JobResult> {
    const d = job.data;
    const src = this.deps.sources.get(d.sourceId);
    try {
      if (!src) {
        if (d.type === 'confirm') await this.deps.hints.finish(d.sourceId, d.target, d.id, Number.MAX_SAFE_INTEGER, 'failed', 'source no longer configured');
        return {};
      }
      switch (d.type) {
        case 'confirm':
          return await this.confirm(src, d);
        case 'delta':
          return await this.delta(src);
        case 'snapshot':
          await this.snapshot(src, d.reason);
          return {};
        case 'maintain':
          await this.maintain(src);
          return {};
        case 'task':
          await this.task(src, d.seq);
          return {};
      }
    } catch (err) {
      if (err instanceof IdentitySourceError) {
        if (err.kind === 'rate_limited') {
          // The source said how long to wait: postpone this job only, without spending an attempt.
          const wait = err.retryAfterMs ?? 60_000;
          this.deps.log.warn({ source: d.sourceId, job: d.type, waitMs: wait }, 'identity source rate limit: job postponed');
          await job.moveToDelayed(Date.now() + wait, token);
          throw new DelayedError();
        }
        if (err.kind === 'permanent' || err.kind === 'unsupported') throw new UnrecoverableError(err.message);
        if (err.kind === 'auth') this.deps.log.error({ source: d.sourceId, err: err.message }, 'identity source refused the credentials; retrying with backoff');
      }
      throw err;
    }
  }

  private async onFailed(job: Job<SourceJob> | undefined, err: Error): Promise<void> {
    if (!job) return;
    const d = job.data;
    const final = err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
    this.deps.log.warn({ source: d.sourceId, job: d.type, attempt: job.attemptsMade, final, err: err.message }, 'source job failed');
    try {
      await this.deps.store.db.updateTable('source_state').set({ last_error: `${d.type}: ${err.message}`.slice(0, 2000), last_error_at: Date.now() }).where('source_id', '=', d.sourceId).execute();
      if (!final) return;
      if (d.type === 'confirm') await this.deps.hints.finish(d.sourceId, d.target, d.id, Number.MAX_SAFE_INTEGER, 'failed', err.message.slice(0, 2000));
      if (d.type === 'task')
        await this.deps.store.db.updateTable('source_tasks').set({ state: 'failed', done_at: Date.now(), error: err.message.slice(0, 2000) }).where('seq', '=', d.seq).execute();
    } catch (e) {
      this.deps.log.warn({ err: (e as Error).message }, 'could not record a source job failure');
    }
  }

  private ctx(sourceId: string, correlationId?: string) {
    return { actor: `source:${sourceId}`, correlationId: correlationId ?? newId() };
  }

  private async confirm(src: IdentitySource, d: Extract<SourceJob, { type: 'confirm' }>): Promise<JobResult> {
    const { hints, sync } = this.deps;
    const pending = await hints.pendingFor(src.id, d.target, d.id);
    const ctx = this.ctx(src.id, pending.eventId);
    if (d.target === 'user') {
      const u = await src.readUser(d.id);
      const change = await sync.applyUser(src.id, d.id, u, ctx);
      this.deps.log.debug({ source: src.id, remoteId: d.id, change, hints: pending.count }, 'user confirmed');
    } else {
      const g = await src.readGroup(d.id);
      await sync.applyGroup(src.id, d.id, g, ctx);
      if (g && !src.capabilities.delta) {
        // No delta to say which member changed: read the members and set them.
        const ids: string[] = [];
        for await (const page of src.readGroupMembers(d.id)) ids.push(...page);
        const { persons, unknown } = await sync.personsOfRemote(src.id, ids);
        await sync.setGroupMembers(src.id, d.id, persons, ctx);
        await this.enqueue(unknown.map((id) => ({ type: 'confirm' as const, sourceId: src.id, target: 'user' as const, id })));
      }
    }
    if (pending.maxSeq !== undefined) await hints.finish(src.id, d.target, d.id, pending.maxSeq, 'done');
    const requeue = await hints.hasPendingAfter(src.id, d.target, d.id, pending.maxSeq ?? 0);
    const recheckMs = !d.recheck && src.capabilities.recheckAfterMs > 0 ? src.capabilities.recheckAfterMs : 0;
    return { requeue, recheckMs };
  }

  private async delta(src: IdentitySource): Promise<JobResult> {
    const db = this.deps.store.db;
    if (!src.capabilities.delta) return {};
    const st = await db.selectFrom('source_state').selectAll().where('source_id', '=', src.id).executeTakeFirst();
    if (!st?.cursor) {
      await this.enqueue([{ type: 'snapshot', sourceId: src.id, reason: 'no delta cursor yet' }]);
      return {};
    }
    const started = Date.now();
    await db.updateTable('source_state').set({ last_delta_at: started }).where('source_id', '=', src.id).execute();
    await db.updateTable('source_state').set({ resync: null }).where('source_id', '=', src.id).where('resync', '=', 'delta').where('resync_at', '<=', started).execute();
    const res = await src.readDelta(st.cursor);
    if (res.status === 'resync') {
      this.deps.log.warn({ source: src.id, reason: res.reason }, 'delta cursor no longer valid: full reconciliation');
      await this.requestResync(src.id, 'full', res.reason);
      return {};
    }
    const p = await this.deps.hints.persist(src.id, res.changes, [], undefined, res.cursor);
    await this.afterPersist(p);
    return { requeue: res.more };
  }

  private async snapshot(src: IdentitySource, reason: string): Promise<SnapshotSummary> {
    const { store, log } = this.deps;
    const db = store.db;
    const started = Date.now();
    await upsertState(db, src.id, started, {});
    await db.updateTable('source_state').set({ last_snapshot_at: started }).where('source_id', '=', src.id).execute();
    await db.updateTable('source_state').set({ resync: null }).where('source_id', '=', src.id).where('resync_at', '<=', started).execute();
    const correlationId = `snapshot-${randomUUID()}`;
    log.info({ source: src.id, reason, correlationId }, 'full reconciliation started');
    let summary: SnapshotSummary;
    try {
      summary = await runSnapshot({
        source: src,
        sync: this.deps.sync,
        identities: this.deps.identities,
        store,
        log,
        ctx: this.ctx(src.id, correlationId),
        onComplete: async (cursor) => {
          if (cursor !== undefined) await db.updateTable('source_state').set({ cursor, cursor_at: started }).where('source_id', '=', src.id).execute();
        },
      });
    } catch (err) {
      const partial = (err as { summary?: SnapshotSummary }).summary;
      await db.updateTable('source_state').set({ last_snapshot: JSON.stringify(partial ?? { error: (err as Error).message }) }).where('source_id', '=', src.id).execute();
      throw err;
    }
    const done = Date.now();
    await db.transaction().execute(async (trx) => {
      await trx
        .updateTable('source_state')
        .set({ last_snapshot: JSON.stringify(summary), ...(summary.complete ? { last_snapshot_done_at: done } : {}), updated_at: done })
        .where('source_id', '=', src.id)
        .execute();
      await appendAudit(trx, store.dialect, [
        {
          actor: 'system:sources',
          action: summary.complete ? 'source.reconciled' : 'source.reconcile_incomplete',
          subject: `source:${src.id}`,
          correlationId,
          detail: { reason, users: summary.users, groups: summary.groups, samples: summary.samples, ...(summary.error ? { error: summary.error } : {}), ms: done - started },
        },
      ]);
    });
    log.info({ source: src.id, ms: done - started, users: summary.users, groups: summary.groups, complete: summary.complete }, 'full reconciliation finished');
    return summary;
  }

  private async maintain(src: IdentitySource): Promise<void> {
    const { store, log } = this.deps;
    const db = store.db;
    // Provisional next run, so a failing maintain is not re-offered on every tick.
    await db.updateTable('source_state').set({ next_maintain_at: Date.now() + 300_000 }).where('source_id', '=', src.id).execute();
    const r = await src.maintain();
    await db.updateTable('source_state').set({ next_maintain_at: Date.now() + r.nextInMs }).where('source_id', '=', src.id).execute();
    await this.recordActions(src.id, 'source.maintain', { actions: r.actions });
    if (r.actions.length) log.info({ source: src.id, actions: r.actions }, 'identity source maintenance');
    if (r.resync) await this.requestResync(src.id, r.resync, 'maintenance');
  }

  private async task(src: IdentitySource, seq: number): Promise<void> {
    const db = this.deps.store.db;
    const t = await db.selectFrom('source_tasks').selectAll().where('seq', '=', seq).executeTakeFirst();
    if (!t || t.state !== 'pending') return;
    const r = await src.runTask({ type: t.type, data: JSON.parse(t.data) as Record<string, string>, dedupeKey: t.dedupe_key });
    await db.updateTable('source_tasks').set({ state: 'done', done_at: Date.now(), attempts: t.attempts + 1 }).where('seq', '=', seq).execute();
    await this.recordActions(src.id, 'source.task', { type: t.type, actions: r.actions });
    if (r.resync) await this.requestResync(src.id, r.resync, `task ${t.type}`);
  }

  private async recordActions(sourceId: string, action: string, detail: { actions: string[]; type?: string }): Promise<void> {
    if (detail.actions.length === 0) return;
    const { store } = this.deps;
    await auditAlone(store, [{ actor: 'system:sources', action, subject: `source:${sourceId}`, correlationId: randomUUID(), detail }]);
  }
}
