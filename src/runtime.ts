import type { FastifyInstance } from 'fastify';
import { startIloqSimulator } from '../adapters/locks/iloq/simulator.ts';
import { startCliqSimulator } from '../adapters/locks/cliq/simulator.ts';
import type { Config } from './config/schema.ts';
import { Engine } from './engine.ts';
import { buildApp } from './http/app.ts';
import type { Logger } from './log.ts';
import { Metrics } from './metrics.ts';
import type { LockSystem } from './ports/lock-system.ts';
import { openStore, type Store } from './store/db.ts';
import { IdentityRepo } from './store/identities.ts';
import { createLockSystem } from './lock-systems.ts';
import { LockSystemThread } from './lock-thread/thread.ts';
import { managedAccess } from './domain/policy.ts';
import { reconcileAllIfPolicyChanged } from './reconcile/policy-change.ts';
import { createSourceRuntime, type SourceRuntime } from './sources/index.ts';

/** A configuration the daemon cannot run with, found at start; printed without a stack trace. */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StartupError';
  }
}

/**
 * Access names policy grants but the lock system does not offer fail every grant that names
 * them (permanently); say so loudly at start rather than at the first joiner.
 */
async function checkCatalogue(l: LockSystem, config: Config, log: Logger): Promise<void> {
  const wanted = managedAccess(config.policy.rules).get(l.id);
  if (!wanted?.size) return;
  try {
    const offered = new Set(await l.catalogue());
    const missing = [...wanted].filter((a) => !offered.has(a));
    if (missing.length) log.error({ lockSystem: l.id, missing }, 'policy grants access the lock system does not offer; grants naming it will be dead-lettered');
  } catch (err) {
    log.warn({ lockSystem: l.id, err: (err as Error).message }, 'could not read the access catalogue at start');
  }
}

export interface Runtime {
  config: Config;
  store: Store;
  identities: IdentityRepo;
  engine: Engine;
  lockSystems: Map<string, LockSystem>;
  /** Identity sources (hooks, confirmation, reconciliation, drift). */
  sources: SourceRuntime;
  app: FastifyInstance | undefined;
  /** Where the HTTP server listens, when it does. */
  url: string | undefined;
  close(): Promise<void>;
}

/**
 * Composes the daemon: store (migrated), identity repo, lock-system adapters (on their own thread
 * unless `lockSystemThread` is off), the queue engine and, for `serve`, the HTTP server. Closing
 * reverses the order: stop taking requests, let jobs finish or hand them back, release
 * lock-system sessions and their thread, close the store.
 */
export async function startLockstep(config: Config, log: Logger, opts: { http: boolean; workers: boolean; probes?: boolean }): Promise<Runtime> {
  const closers: Array<() => Promise<void>> = [];
  const close = async () => {
    for (const c of closers.reverse()) await c().catch((err: Error) => log.warn({ err: err.message }, 'error while shutting down'));
  };
  try {
    for (const sim of config.simulators) {
      const s =
        sim.kind === 'iloq'
          ? await startIloqSimulator({ port: sim.port, host: '127.0.0.1', seed: sim.seed, programDelayMs: sim.programDelayMs })
          : await startCliqSimulator({ port: sim.port, host: '127.0.0.1', seed: sim.seed, token: sim.token, jobDelayMs: sim.jobDelayMs });
      log.info({ kind: sim.kind, url: s.url }, 'bundled lock-system simulator listening (demo only)');
      closers.push(() => s.close());
    }

    const metrics = new Metrics();
    const store = openStore(config.store, {
      onBackgroundError: (err) => log.error({ err: err.message }, 'SQLite checkpointer thread failed; checkpoints fall back to the writer'),
      onWalRewound: ({ heldMs, frames, complete }) => {
        metrics.walRewinds.inc({ complete: String(complete) });
        metrics.walRewindHoldSeconds.observe(heldMs / 1000);
        log.debug({ heldMs: Math.round(heldMs), frames, complete }, 'SQLite WAL rewound');
      },
    });
    closers.push(() => store.close());
    const applied = await store.migrate();
    if (applied.length) log.info({ applied }, 'database migrated');

    const identities = new IdentityRepo(store);
    const thread = config.lockSystemThread && config.lockSystems.length ? new LockSystemThread(config.lockSystems, log) : undefined;
    const lockSystems = thread ? thread.lockSystems() : new Map(config.lockSystems.map((ls) => [ls.id, createLockSystem(ls, log)]));
    closers.push(async () => {
      await Promise.all([...lockSystems.values()].map((l) => l.close().catch(() => {})));
      await thread?.stop();
    });
    if (opts.workers) {
      for (const l of lockSystems.values()) {
        // A lock system that is down at start is not fatal: operations queue and retry.
        await l.start().then(
          () => checkCatalogue(l, config, log),
          (err: Error) => log.warn({ lockSystem: l.id, err: err.message }, 'lock system not reachable at start; operations will retry'),
        );
      }
      const policy = await reconcileAllIfPolicyChanged(store, config, config.reconcile.sweepAfterMs);
      if (policy.changed && policy.marked > 0) log.info({ persons: policy.marked }, 'policy changed since the last run: every known person will be reconciled');
    }

    const engine = new Engine({ config, store, identities, lockSystems, log, metrics });
    closers.push(() => engine.stop(config.server.shutdownGraceMs));
    if (opts.workers) engine.startWorkers();
    const sources = await createSourceRuntime({ config, store, identities, lockSystems, log, enqueueReconcile: (marks) => engine.queues.enqueueReconcile(marks), pace: (w) => engine.pacer.register(w) });
    closers.push(() => sources.close());
    if (opts.workers) await sources.start();

    let app: FastifyInstance | undefined;
    let url: string | undefined;
    if (opts.http || opts.probes) {
      // `worker` processes serve only health, readiness and metrics, so they can be monitored.
      app = await buildApp({ config, store, identities, engine, metrics, log, probesOnly: !opts.http, sources });
      url = await app.listen({ host: config.server.host, port: config.server.port });
      const a = app;
      closers.push(() => a.close());
      log.info({ url }, 'lockstep listening');
    }
    return { config, store, identities, engine, lockSystems, sources, app, url, close };
  } catch (err) {
    await close();
    throw err;
  }
}
