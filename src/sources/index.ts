import type { Config } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import type { HookResult, IdentitySource, IdpKind } from '../ports/identity-source.ts';
import type { LockSystem } from '../ports/lock-system.ts';
import type { Store } from '../store/db.ts';
import type { DirtyMark, IdentityRepo } from '../store/identities.ts';
import { LockDriftChecker } from './drift.ts';
import { HintStore, type Persisted } from './hints.ts';
import { redisOptions, SourceRunner } from './runner.ts';
import type { SnapshotSummary } from './snapshot.ts';
import { SourceSync } from './sync.ts';
import type { Paced } from '../queue/pacing.ts';

/**
 * Composition of the identity-source side of the daemon (see README.md): one adapter per
 * configured `sources[].<idp>` section, the hint store the hook routes persist into, the sync
 * that writes confirmed state into the identity store, the BullMQ runner (workers and schedule,
 * only in processes that run workers) and the lock-system drift checker.
 */

export interface SourceStatus {
  id: string;
  idp: IdpKind;
  capabilities: IdentitySource['capabilities'];
  reconcileEveryMs: number;
  cursorAt: string | null;
  lastDeltaAt: string | null;
  lastSnapshotAt: string | null;
  lastCompleteSnapshotAt: string | null;
  /** What the last full reconciliation had to change: the IdP drift it found and repaired. */
  lastSnapshot: SnapshotSummary | { error: string } | null;
  resyncRequested: string | null;
  hints: { pending: number; failed: number; lastReceivedAt: string | null };
  lastError: string | null;
  lastErrorAt: string | null;
}

export interface SourceRuntime {
  /** API-connected sources by id. */
  sources: Map<string, IdentitySource>;
  hints: HintStore;
  sync: SourceSync;
  runner: SourceRunner | undefined;
  drift: LockDriftChecker;
  /** Persists what a hook accepted (hints, tasks, resync) in one transaction; enqueues after commit. */
  persistHook(sourceId: string, res: HookResult): Promise<Persisted>;
  status(): Promise<SourceStatus[]>;
  /** Workers, schedule and periodic drift checks (worker processes only). */
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface SourceRuntimeDeps {
  config: Config;
  store: Store;
  identities: IdentityRepo;
  lockSystems: Map<string, LockSystem>;
  log: Logger;
  enqueueReconcile?: (marks: DirtyMark[]) => Promise<void>;
  /** Registers the confirmation worker with the engine's pacer. */
  pace?: (worker: Paced) => void;
  /** Adapters to use instead of building them from config (tests). */
  adapters?: Map<string, IdentitySource>;
}

/**
 * One adapter per configured API section. Each IdP's module is imported only when a source
 * uses it: the Okta SDK alone costs ~90 MB of RSS, which a SCIM-only or Entra-only daemon
 * should not pay.
 */
export async function buildIdentitySources(config: Config, log: Logger): Promise<Map<string, IdentitySource>> {
  const out = new Map<string, IdentitySource>();
  for (const s of config.sources) {
    const deps = { sourceId: s.id, log: log.child({ source: s.id }) };
    if (s.idp === 'okta' && s.okta) out.set(s.id, (await import('../../adapters/idp/okta/index.ts')).createOktaSource(s.okta, deps));
    if (s.idp === 'entra' && s.entra) out.set(s.id, (await import('../../adapters/idp/entra/index.ts')).createEntraSource(s.entra, deps));
    if (s.idp === 'sailpoint' && s.sailpoint) out.set(s.id, (await import('../../adapters/idp/sailpoint/index.ts')).createSailpointSource(s.sailpoint, deps));
    if (s.idp === 'oneidentity' && s.oneidentity) out.set(s.id, (await import('../../adapters/idp/oneidentity/index.ts')).createOneIdentitySource(s.oneidentity, deps));
  }
  return out;
}

export async function createSourceRuntime(deps: SourceRuntimeDeps): Promise<SourceRuntime> {
  const { config, store, identities, log } = deps;
  const sources = deps.adapters ?? (await buildIdentitySources(config, log));
  const hints = new HintStore(store);
  let runner: SourceRunner | undefined;
  const sync = new SourceSync({
    store,
    identities,
    config,
    log,
    reconfirm: async (sourceId, remoteId) => runner?.enqueue([{ type: 'confirm', sourceId, target: 'user', id: remoteId, priority: 1 }]),
  });
  if (sources.size > 0) runner = new SourceRunner({ config, store, identities, sync, hints, sources, connection: redisOptions(config.redis.url), log, ...(deps.pace ? { pace: deps.pace } : {}) });
  const drift = new LockDriftChecker({ config, store, lockSystems: deps.lockSystems, log, ...(deps.enqueueReconcile ? { enqueueReconcile: deps.enqueueReconcile } : {}) });
  let started = false;

  return {
    sources,
    hints,
    sync,
    runner,
    drift,
    async persistHook(sourceId, res) {
      const p = await hints.persist(sourceId, res.changes, res.tasks, res.resync);
      // After commit and off the response path: the sweeper re-offers what this loses.
      if (runner && (p.hints.length || p.tasks.length || p.resync))
        void runner.afterPersist(p).catch((err: Error) => log.warn({ source: sourceId, err: err.message }, 'enqueue after hook failed; the sweeper will retry'));
      return p;
    },
    async status() {
      const states = new Map((await store.db.selectFrom('source_state').selectAll().execute()).map((s) => [s.source_id, s]));
      const iso = (v: number | null | undefined) => (v === null || v === undefined ? null : new Date(Number(v)).toISOString());
      const out: SourceStatus[] = [];
      for (const src of sources.values()) {
        const st = states.get(src.id);
        const c = await hints.counts(src.id);
        out.push({
          id: src.id,
          idp: src.kind,
          capabilities: src.capabilities,
          reconcileEveryMs: runner?.reconcileEvery(src) ?? 0,
          cursorAt: iso(st?.cursor_at),
          lastDeltaAt: iso(st?.last_delta_at),
          lastSnapshotAt: iso(st?.last_snapshot_at),
          lastCompleteSnapshotAt: iso(st?.last_snapshot_done_at),
          lastSnapshot: st?.last_snapshot ? JSON.parse(st.last_snapshot) : null,
          resyncRequested: st?.resync ?? null,
          hints: { pending: c.pending, failed: c.failed, lastReceivedAt: iso(c.lastReceivedAt) },
          lastError: st?.last_error ?? null,
          lastErrorAt: iso(st?.last_error_at),
        });
      }
      return out;
    },
    async start() {
      if (started) return;
      started = true;
      await runner?.start();
      drift.start();
    },
    async close() {
      await drift.stop();
      await runner?.stop(config.server.shutdownGraceMs);
      await Promise.all([...sources.values()].map((s) => s.close().catch(() => {})));
    },
  };
}
