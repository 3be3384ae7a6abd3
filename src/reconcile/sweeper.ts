import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import type { Queues } from '../queue/queues.ts';
import type { Store } from '../store/db.ts';
import { newId } from '../store/ids.ts';
import { markDirty, PRIORITY_LEAVER } from '../store/identities.ts';
import { inChunks } from '../queue/chunks.ts';

/** Jobs offered per chunk; the event loop gets a turn between chunks (see inChunks). */
const CHUNK = 250;

/**
 * The database is the source of truth and Redis may lose anything (flush, failover, a crash
 * between commit and enqueue). The sweeper re-adds a job for every dirty person and every
 * unfinished operation older than `sweepAfterMs`. Job ids are derived from the work, so adding
 * a job that still exists is a no-op: sweeping is always safe, only its cost varies.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly deps: { store: Store; queues: Queues; log: Logger; metrics?: Metrics; intervalMs: number; afterMs: number; batch?: number };

  constructor(deps: { store: Store; queues: Queues; log: Logger; metrics?: Metrics; intervalMs: number; afterMs: number; batch?: number }) {
    this.deps = deps;
  }

  start(): void {
    this.timer = setInterval(() => {
      if (!this.running)
        this.running = this.sweep()
          .then(() => undefined, (err: Error) => this.deps.log.warn({ err: err.message }, 'sweep failed'))
          .finally(() => (this.running = undefined));
    }, this.deps.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** One pass; returns how many jobs were (re-)offered to the queues. */
  async sweep(): Promise<{ reconcile: number; apply: number }> {
    const { store, queues, afterMs } = this.deps;
    const batch = this.deps.batch ?? 5000;
    const cutoff = Date.now() - afterMs;
    // Dates that have passed (termination, end of an access window) wake their persons.
    const due = await store.db.selectFrom('schedule').select(['person_id']).where('due_at', '<=', Date.now()).limit(batch).execute();
    if (due.length)
      await store.db.transaction().execute(async (trx) => {
        const now = Date.now();
        for (const d of due) await markDirty(trx, d.person_id, PRIORITY_LEAVER, 'a date in the record passed', now - afterMs, newId());
        await trx.deleteFrom('schedule').where('person_id', 'in', due.map((d) => d.person_id)).where('due_at', '<=', now).execute();
      });
    const dirty = await store.db.selectFrom('dirty').select(['person_id', 'priority']).where('marked_at', '<=', cutoff).orderBy('priority').orderBy('marked_at').limit(batch).execute();
    await inChunks(dirty, CHUNK, async (part) => {
      await queues.clearFailed(part.map((d) => ({ personId: d.person_id })));
      await queues.enqueueReconcile(part.map((d) => ({ personId: d.person_id, priority: d.priority })));
    });
    const ops = await store.db
      .selectFrom('operations')
      .select(['lock_system_id', 'person_id', (eb) => eb.fn.min('priority').as('priority')])
      .where('state', 'in', ['pending', 'running'])
      .where('requested_at', '<=', cutoff)
      .groupBy(['lock_system_id', 'person_id'])
      .limit(batch)
      .execute();
    await inChunks(ops, CHUNK, async (part) => {
      await queues.clearFailed(part.map((o) => ({ lockSystemId: o.lock_system_id, personId: o.person_id })));
      await queues.enqueueApply(part.map((o) => ({ lockSystemId: o.lock_system_id, personId: o.person_id, priority: Number(o.priority) })));
    });
    if (dirty.length) this.deps.metrics?.sweptJobs.inc({ queue: 'reconcile' }, dirty.length);
    if (ops.length) this.deps.metrics?.sweptJobs.inc({ queue: 'apply' }, ops.length);
    return { reconcile: dirty.length, apply: ops.length };
  }
}
