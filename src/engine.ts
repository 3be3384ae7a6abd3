import { DelayedError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from './config/schema.ts';
import type { Logger } from './log.ts';
import type { Metrics } from './metrics.ts';
import type { LockSystem } from './ports/lock-system.ts';
import { applyQueueName, Queues, RECONCILE_QUEUE, redisConnection, type ApplyJob, type ReconcileJob } from './queue/queues.ts';
import { PlanAhead } from './queue/backpressure.ts';
import { Pacer } from './queue/pacing.ts';
import { retryDelayMs } from './queue/retry.ts';
import { APPLY_JOBS_PER_SLOT, Applier, RetryableApplyError } from './reconcile/applier.ts';
import { Reconciler } from './reconcile/reconciler.ts';
import { Sweeper } from './reconcile/sweeper.ts';
import { EffectivenessWatcher } from './reconcile/effectiveness.ts';
import { OverdueBlocklister } from './reconcile/overdue.ts';
import { LockdownService } from './lockdown/service.ts';
import type { Store } from './store/db.ts';
import { exec } from './store/sql.ts';
import type { IdentityRepo } from './store/identities.ts';

// Checks after a job completes, as fixed SQL (src/store/sql.ts).
const DIRTY_PRIORITY = 'select priority from dirty where person_id = ?';
const PENDING_PRIORITY = "select min(priority) as priority from operations where lock_system_id = ? and person_id = ? and state in ('pending', 'running')";

/**
 * The spine: queues, their workers and the sweeper, wired to the store. `serve` runs it with
 * the HTTP server, `worker` without. Several processes may run it against the same Redis and
 * PostgreSQL; BullMQ spreads the jobs.
 */
export class Engine {
  readonly queues: Queues;
  readonly reconciler: Reconciler;
  readonly applier: Applier;
  readonly sweeper: Sweeper;
  readonly effectiveness: EffectivenessWatcher;
  /** Keys not returned by the deadline → blocklist (lockSystems[].tasks.blocklistOverdue). */
  readonly overdue: OverdueBlocklister;
  readonly lockdowns: LockdownService;
  /** Scales worker concurrency down while requests need the event loop (src/queue/pacing.ts). */
  readonly pacer: Pacer;
  private expiryTimer: NodeJS.Timeout | undefined;
  readonly redis: Redis;
  private readonly workers: Worker[] = [];
  private readonly workerConnections: Redis[] = [];
  private readonly planAhead: PlanAhead;
  private readonly cfg: Config;
  private readonly store: Store;
  private readonly log: Logger;

  constructor(deps: { config: Config; store: Store; identities: IdentityRepo; lockSystems: Map<string, LockSystem>; log: Logger; metrics?: Metrics }) {
    this.cfg = deps.config;
    this.store = deps.store;
    this.log = deps.log;
    this.redis = redisConnection(deps.config.redis);
    this.redis.on('error', (err) => deps.log.warn({ err: err.message }, 'redis connection error'));
    this.queues = new Queues(this.redis, deps.config);
    // Room: fewer ready apply jobs than it takes to refill the lock system's apply slots twice.
    const limits = new Map(deps.config.lockSystems.map((ls) => [ls.id, Math.max(16, 2 * ls.apply.concurrency)]));
    this.planAhead = new PlanAhead(() => this.queues.applyBacklog(), { limits, intervalMs: 50, maxHoldMs: 500 }, (held) => deps.metrics?.planningHeld.set(held ? 1 : 0));
    deps.metrics?.planningHeld.set(0);
    this.pacer = new Pacer(deps.config.pacing, (share) => deps.metrics?.backgroundShare.set(share));
    deps.metrics?.backgroundShare.set(1);
    this.lockdowns = new LockdownService({ store: deps.store, config: deps.config, log: deps.log, queues: this.queues });
    this.reconciler = new Reconciler({ ...deps, onApply: (items) => this.queues.enqueueApply(items), lockdowns: (db) => this.lockdowns.activeViews(db) });
    this.applier = new Applier(deps);
    this.sweeper = new Sweeper({
      store: deps.store,
      queues: this.queues,
      log: deps.log,
      metrics: deps.metrics,
      intervalMs: deps.config.reconcile.sweepIntervalMs,
      afterMs: deps.config.reconcile.sweepAfterMs,
    });
    this.effectiveness = new EffectivenessWatcher({ store: deps.store, lockSystems: deps.lockSystems, log: deps.log, intervalMs: deps.config.reconcile.effectiveCheckIntervalMs });
    this.overdue = new OverdueBlocklister({ store: deps.store, lockSystems: deps.lockSystems, log: deps.log, config: deps.config });
    // The commit already happened; if this enqueue is lost, the sweeper finds the dirty mark.
    deps.identities.onDirty((marks) => {
      this.queues.enqueueReconcile(marks).catch((err) => this.log.warn({ err: err.message }, 'enqueue reconcile failed; the sweeper will retry'));
    });
  }

  /**
   * Each worker gets a connection of its own: on the connection the queues add jobs on, a
   * worker's fetch waits behind every add queued before it (a lockdown's thousands of jobs held
   * back the first reconcile for as long as they took to add).
   */
  private workerConnection(): Redis {
    const c = redisConnection(this.cfg.redis);
    c.on('error', (err) => this.log.warn({ err: err.message }, 'redis connection error (worker)'));
    this.workerConnections.push(c);
    return c;
  }

  startWorkers(): void {
    const prefix = this.cfg.redis.prefix;
    const lockDuration = this.cfg.reconcile.jobLockMs;
    const plan = async (job: Job<ReconcileJob>) => {
      await this.planAhead.room();
      return this.reconciler.reconcile(job.data.personId);
    };
    const reconcileWorker = new Worker<ReconcileJob>(RECONCILE_QUEUE, plan, {
      connection: this.workerConnection(),
      prefix,
      concurrency: this.cfg.reconcile.concurrency,
      lockDuration,
      // Work is idempotent and owned by the database: a job that stalls (its worker died or was
      // starved) is simply run again, never failed for stalling.
      maxStalledCount: 1000,
      stalledInterval: lockDuration,
      autorun: false,
    });
    reconcileWorker.on('completed', (job, result: { requeue?: boolean } | undefined) => {
      // A change arrived while this person was being planned: plan again (the job id is free now).
      if (result?.requeue) void this.queues.enqueueReconcile([{ personId: job.data.personId, priority: job.opts.priority ?? 10 }]).catch(() => {});
      else void this.requeueIfDirty(job.data.personId);
    });
    reconcileWorker.on('failed', (job, err) => this.log.warn({ personId: job?.data.personId, err: err.message }, 'reconcile attempt failed'));
    reconcileWorker.on('error', (err) => this.log.warn({ err: err.message }, 'reconcile worker error'));
    this.workers.push(reconcileWorker);

    for (const ls of this.cfg.lockSystems) {
      const policy = ls.apply.retry;
      const worker: Worker<ApplyJob> = new Worker<ApplyJob>(
        applyQueueName(ls.id),
        (job: Job<ApplyJob>, token?: string) =>
          this.applier.process(job, {
            postpone: async (ms) => {
              // Documented BullMQ contract: move to delayed, then throw DelayedError; attempts are not spent.
              await job.moveToDelayed(Date.now() + ms, token);
              return new DelayedError();
            },
          }),
        {
          connection: this.workerConnection(),
          prefix,
          concurrency: ls.apply.concurrency * APPLY_JOBS_PER_SLOT,
          lockDuration,
          maxStalledCount: 1000,
          stalledInterval: lockDuration,
          autorun: false,
          ...(ls.apply.rateLimit ? { limiter: { max: ls.apply.rateLimit.max, duration: ls.apply.rateLimit.durationMs } } : {}),
          settings: {
            backoffStrategy: (attemptsMade: number, _type?: string, err?: Error) =>
              retryDelayMs(policy, attemptsMade, err instanceof RetryableApplyError ? err.retryAfterMs : undefined),
          },
        },
      );
      worker.on('completed', (job) => void this.requeueIfPending(ls.id, job.data.personId));
      worker.on('failed', (job, err) => this.log.warn({ lockSystem: ls.id, personId: job?.data.personId, attempt: job?.attemptsMade, err: err.message }, 'apply attempt failed'));
      worker.on('error', (err) => this.log.warn({ lockSystem: ls.id, err: err.message }, 'apply worker error'));
      this.workers.push(worker);
    }
    for (const w of this.workers) void w.run().catch((err) => this.log.error({ err: err.message }, 'worker stopped'));
    for (const w of this.workers) this.pacer.register(w);
    if (this.cfg.pacing.enabled) this.pacer.start();
    this.planAhead.start();
    this.sweeper.start();
    this.effectiveness.start();
    this.overdue.start();
    // With the expiry check: the targets of a lockdown whose start a crash cut short.
    const checkLockdowns = () => {
      void this.lockdowns.expireDue().catch((err: Error) => this.log.warn({ err: err.message }, 'lockdown expiry check failed'));
      void this.lockdowns.resumeMarking().catch((err: Error) => this.log.error({ err: err.message }, 'resuming the marking of a lockdown failed'));
    };
    checkLockdowns();
    this.expiryTimer = setInterval(checkLockdowns, this.cfg.reconcile.sweepIntervalMs);
    this.expiryTimer.unref();
  }

  /**
   * A change committed after the reconcile's own commit but before BullMQ finished its job had its
   * enqueue swallowed by the still-active job id; its dirty mark is still there. Under a burst of
   * changes to the same persons that is most of them, and they would wait for the sweeper.
   */
  private async requeueIfDirty(personId: string): Promise<void> {
    try {
      const [row] = await exec<{ priority: number }>(this.store.db, DIRTY_PRIORITY, [personId]);
      if (row) await this.queues.enqueueReconcile([{ personId, priority: Number(row.priority) }]);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'requeue check failed; the sweeper will retry');
    }
  }

  /** Operations planned while the job was finishing would otherwise wait for the sweeper. */
  private async requeueIfPending(lockSystemId: string, personId: string): Promise<void> {
    try {
      const [row] = await exec<{ priority: number | null }>(this.store.db, PENDING_PRIORITY, [lockSystemId, personId]);
      if (row?.priority !== null && row?.priority !== undefined) await this.queues.enqueueApply([{ lockSystemId, personId, priority: Number(row.priority) }]);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'requeue check failed; the sweeper will retry');
    }
  }

  /** Redis reachability for /readyz; bounded, because ioredis queues commands while reconnecting. */
  async ping(timeoutMs = 1000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)));
    try {
      const pong = await Promise.race([this.redis.ping(), timeout]);
      if (pong !== 'PONG') throw new Error(`redis answered ${pong}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Stops taking jobs, lets running ones finish within the grace period, then hands the rest
   * back (their locks lapse and another worker, or this one after restart, runs them again).
   */
  async stop(graceMs: number): Promise<void> {
    clearInterval(this.expiryTimer);
    this.pacer.stop();
    this.planAhead.stop();
    await this.sweeper.stop();
    await this.effectiveness.stop();
    await this.overdue.stop();
    if (this.redis.status !== 'ready') for (const c of [this.redis, ...this.workerConnections]) c.disconnect();
    const graceful = Promise.all(this.workers.map((w) => w.close()));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([graceful.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs)))]);
    clearTimeout(timer);
    if (timedOut) {
      this.log.warn({ graceMs }, 'jobs still running at the end of the grace period; handing them back');
      await Promise.all(this.workers.map((w) => w.close(true)));
    }
    // With Redis down, BullMQ's close waits for a connection that never comes: bound it.
    const closed = await withTimeout(this.queues.close(), 2000);
    for (const c of [this.redis, ...this.workerConnections]) {
      if (!closed || c.status !== 'ready') c.disconnect();
      else await c.quit().catch(() => {});
    }
  }
}

/** Resolves true if `p` settles within `ms`, false otherwise (p keeps running). */
async function withTimeout(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const done = await Promise.race([p.then(() => true, () => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)))]);
  clearTimeout(timer);
  return done;
}
