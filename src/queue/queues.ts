import { Queue, type ConnectionOptions } from 'bullmq';
import { Redis } from 'ioredis';
import type { Config } from '../config/schema.ts';
import type { DirtyMark } from '../store/identities.ts';
import type { ApplyBacklog } from './backpressure.ts';
import { coalesceWrites } from './coalesce-writes.ts';
import { TurnBatch } from './turn-batch.ts';

/**
 * The queue topology. Redis holds only queues; everything a job needs is in the database, and
 * job ids are derived from what the job is about, so that adding the same work twice is a no-op:
 * - `reconcile`: one job per person (`p_<personId>`), leavers first (BullMQ: lower priority
 *   number runs first);
 * - `apply_<lockSystemId>`: one job per person and lock system (`a_<personId>`), which runs that
 *   person's pending operations in order; one queue per lock system because open-source BullMQ
 *   rate-limits per queue.
 * Jobs are removed on completion so the same id can be added again for the next change.
 */

export const RECONCILE_QUEUE = 'reconcile';
export const applyQueueName = (lockSystemId: string) => `apply_${lockSystemId}`;
export const reconcileJobId = (personId: string) => `p_${personId}`;
export const applyJobId = (personId: string) => `a_${personId}`;

export interface ReconcileJob {
  personId: string;
}
export interface ApplyJob {
  personId: string;
  lockSystemId: string;
}

export function redisConnection(cfg: Config['redis']): Redis {
  // BullMQ workers block on Redis; they need unlimited per-request retries.
  return coalesceWrites(new Redis(cfg.url, { maxRetriesPerRequest: null, enableReadyCheck: true, lazyConnect: false }));
}

type ApplyItem = { lockSystemId: string; personId: string; priority: number };

/**
 * One job: a plain add (one script call); several: a bulk add (one MULTI). BullMQ's addBulk
 * wraps even a single job in a transaction, which costs more than the add itself.
 */
async function addJobs<T>(queue: Queue<T>, name: string, jobs: Array<{ data: T; jobId: string; priority: number }>): Promise<void> {
  if (jobs.length === 1) {
    const j = jobs[0]!;
    await (queue as Queue).add(name, j.data, { jobId: j.jobId, priority: j.priority });
    return;
  }
  await (queue as Queue).addBulk(jobs.map((j) => ({ name, data: j.data, opts: { jobId: j.jobId, priority: j.priority } })));
}

export class Queues {
  readonly reconcile: Queue<ReconcileJob>;
  readonly apply: Map<string, Queue<ApplyJob>>;
  private readonly applyBatch = new TurnBatch<ApplyItem>((items) => this.addApply(items));
  private readonly attempts: Map<string, number>;

  constructor(connection: ConnectionOptions, cfg: Config) {
    const prefix = cfg.redis.prefix;
    this.reconcile = new Queue<ReconcileJob>(RECONCILE_QUEUE, {
      connection,
      prefix,
      defaultJobOptions: { removeOnComplete: true, removeOnFail: true, attempts: 5, backoff: { type: 'exponential', delay: 500 } },
    });
    this.apply = new Map();
    this.attempts = new Map();
    for (const ls of cfg.lockSystems) {
      this.apply.set(
        ls.id,
        new Queue<ApplyJob>(applyQueueName(ls.id), {
          connection,
          prefix,
          defaultJobOptions: { removeOnComplete: true, removeOnFail: true, attempts: ls.apply.retry.attempts, backoff: { type: 'lockstep' } },
        }),
      );
      this.attempts.set(ls.id, ls.apply.retry.attempts);
    }
  }

  async enqueueReconcile(marks: DirtyMark[]): Promise<void> {
    if (marks.length === 0) return;
    await addJobs(
      this.reconcile,
      'reconcile',
      marks.map((m) => ({ data: { personId: m.personId }, jobId: reconcileJobId(m.personId), priority: m.priority })),
    );
  }

  /** Per lock system: apply jobs ready to run (waiting or prioritized; not delayed) and running. */
  async applyBacklog(): Promise<Map<string, ApplyBacklog>> {
    const entries = await Promise.all(
      [...this.apply].map(async ([ls, q]) => {
        const c = await q.getJobCounts('wait', 'prioritized', 'active');
        return [ls, { ready: (c.wait ?? 0) + (c.prioritized ?? 0), active: c.active ?? 0 }] as const;
      }),
    );
    return new Map(entries);
  }

  /**
   * Queues apply jobs. Calls made in the same turn (the reconciles of one group-committed batch
   * each hand over their person) are sent to Redis together, one bulk add per lock system; every
   * caller's promise settles with that add.
   */
  enqueueApply(items: ApplyItem[]): Promise<void> {
    return this.applyBatch.add(items);
  }

  private async addApply(items: ApplyItem[]): Promise<void> {
    const byQueue = new Map<string, ApplyItem[]>();
    for (const it of items) {
      const list = byQueue.get(it.lockSystemId) ?? [];
      list.push(it);
      byQueue.set(it.lockSystemId, list);
    }
    await Promise.all(
      [...byQueue].map(([ls, list]) => {
        const q = this.apply.get(ls);
        if (!q) return Promise.resolve();
        return addJobs(
          q,
          'apply',
          list.map((it) => ({ data: { personId: it.personId, lockSystemId: ls }, jobId: applyJobId(it.personId), priority: it.priority })),
        );
      }),
    );
  }

  /**
   * A job id left in BullMQ's failed set (a job failed outside our processor, e.g. by stalling)
   * would swallow every later add of the same id; remove such leftovers so the work can run.
   */
  async clearFailed(items: Array<{ lockSystemId?: string; personId: string }>): Promise<number> {
    let cleared = 0;
    for (const it of items) {
      const q = it.lockSystemId ? this.apply.get(it.lockSystemId) : this.reconcile;
      if (!q) continue;
      const job = await q.getJob(it.lockSystemId ? applyJobId(it.personId) : reconcileJobId(it.personId));
      if (job && (await job.isFailed())) {
        await job.remove().catch(() => {});
        cleared += 1;
      }
    }
    return cleared;
  }

  async counts(): Promise<Array<{ queue: string; counts: Record<string, number> }>> {
    const all = [this.reconcile as Queue, ...this.apply.values()];
    return Promise.all(all.map(async (q) => ({ queue: q.name, counts: await q.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'failed') })));
  }

  async close(): Promise<void> {
    await Promise.all([this.reconcile.close(), ...[...this.apply.values()].map((q) => q.close())]);
  }
}
