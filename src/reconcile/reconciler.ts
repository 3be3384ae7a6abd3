import type { AuditEntry } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import { applyToState, endDateOf, hasStarted, plan } from '../domain/planner.ts';
import { desiredAccess, isActive, managedAccess, matchingRules, nextChange, type PolicyContext } from '../domain/policy.ts';
import { applyLockdowns, type LockdownView } from '../domain/lockdown.ts';
import { PRIORITY_LOCKDOWN } from '../lockdown/service.ts';
import { actualFromRow } from '../store/lock-state.ts';
import { exec, insertRows, lockPerson } from '../store/sql.ts';
import { newId } from '../store/ids.ts';
import type { ActualState, PlannedOperation } from '../domain/types.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import type { Kysely } from 'kysely';
import type { Store } from '../store/db.ts';
import type { Database } from '../store/schema.ts';
import type { IdentityRepo } from '../store/identities.ts';

/**
 * Reconciles one person: identity + policy → desired access; desired vs. actual → plan; the plan
 * replaces whatever had not started yet for the person. Level-triggered: it does not care which
 * event woke it, so duplicates, reordering and replays only cost a no-op plan.
 *
 * "Actual" is what lock systems accepted plus what has started: an operation running right now,
 * or one that ran and failed part-way and waits for its retry (the lock system may already hold
 * some of its changes, e.g. an access added before the programming order failed). Started
 * operations run to the end and planning assumes they land, so their access is revoked after
 * them if it is no longer wanted, never left behind. Operations that never started are
 * superseded, not stacked. The dirty mark is cleared only if its generation is unchanged, so a
 * change that arrives mid-reconcile leaves the mark and the caller runs the person again.
 */

// The statements of every reconcile, as fixed SQL (src/store/sql.ts).
const DIRTY_OF = 'select generation, correlation_id from dirty where person_id = ?';
const DIRTY_GENERATION = 'select generation from dirty where person_id = ?';
const DIRTY_CLEAR = 'delete from dirty where person_id = ? and generation = ?';
const STATES_OF = 'select lock_system_id, access, departed, end_date, unsure from lock_state where person_id = ?';
const INFLIGHT_OF = "select seq, id, lock_system_id, kind, access, state, attempts, priority from operations where person_id = ? and state in ('pending', 'running') order by seq";
const SCHEDULE_UPSERT = 'insert into schedule (person_id, due_at, reason) values (?, ?, ?) on conflict (person_id) do update set due_at = excluded.due_at';
const SCHEDULE_DELETE = 'delete from schedule where person_id = ?';
const OPERATION_COLUMNS = ['id', 'person_id', 'lock_system_id', 'kind', 'access', 'priority', 'state', 'attempts', 'correlation_id', 'requested_at'];

export interface ReconcileResult {
  personId: string;
  correlationId: string;
  desired: Record<string, string[]>;
  rules: string[];
  operations: PlannedOperation[];
  /** True when the person changed again while we planned: run once more. */
  requeue: boolean;
}

export type ApplyNotifier = (items: Array<{ lockSystemId: string; personId: string; priority: number }>) => Promise<void> | void;

export class Reconciler {
  private readonly store: Store;
  private readonly identities: IdentityRepo;
  private readonly cfg: Config;
  private readonly managed: Map<string, Set<string>>;
  private readonly systems: Set<string>;
  private readonly log: Logger;
  private readonly metrics: Metrics | undefined;
  private notifyApply: ApplyNotifier;

  private readonly lockdowns: (db: Kysely<Database>) => Promise<LockdownView[]>;

  constructor(deps: {
    store: Store;
    identities: IdentityRepo;
    config: Config;
    log: Logger;
    metrics?: Metrics;
    onApply?: ApplyNotifier;
    /** Lockdowns in force; part of every person's desired state. */
    lockdowns?: (db: Kysely<Database>) => Promise<LockdownView[]>;
  }) {
    this.lockdowns = deps.lockdowns ?? (async () => []);
    this.store = deps.store;
    this.identities = deps.identities;
    this.cfg = deps.config;
    this.log = deps.log;
    this.metrics = deps.metrics;
    this.managed = managedAccess(this.cfg.policy.rules);
    this.systems = new Set(this.cfg.lockSystems.map((l) => l.id));
    this.notifyApply = deps.onApply ?? (() => {});
  }

  onApply(fn: ApplyNotifier): void {
    this.notifyApply = fn;
  }

  /** Computes the plan without writing anything. */
  async dryRun(personId: string): Promise<ReconcileResult> {
    return this.run(personId, true);
  }

  async reconcile(personId: string): Promise<ReconcileResult> {
    return this.run(personId, false);
  }

  private async run(personId: string, dryRun: boolean): Promise<ReconcileResult> {
    const db = this.store.db;
    let correlationId = '';
    let desiredOut: Record<string, string[]> = {};
    let rules: string[] = [];
    let operations: PlannedOperation[] = [];
    let requeue = false;

    // Reads and writes share the change: on SQLite they run on the writer's connection, whose
    // page cache the last commit left warm (the reading connection drops its cache at every
    // commit), and the plan is made from the same snapshot it is written against.
    const body = async (trx: typeof db, log: AuditEntry[]) => {
      const [dirty] = await exec<{ generation: number; correlation_id: string }>(trx, DIRTY_OF, [personId]);
      correlationId = dirty?.correlation_id ?? newId();
      const identity = await this.identities.loadIdentity(personId, trx);
      const now = Date.now();
      const ctx: PolicyContext = { now, ...(identity?.createdAt !== undefined ? { createdAt: identity.createdAt } : {}) };
      const { access: desired, applied: lockdownsApplied } = applyLockdowns(desiredAccess(identity, this.cfg.policy.rules, ctx), identity, await this.lockdowns(trx));
      desiredOut = Object.fromEntries([...desired].map(([k, v]) => [k, [...v].sort()]));
      rules = matchingRules(identity, this.cfg.policy.rules, ctx);
      const wakeAt = nextChange(identity, this.cfg.policy.rules, ctx);
      const states = await exec<{ lock_system_id: string; access: string; departed: number; end_date: string | null; unsure: string | null }>(trx, STATES_OF, [personId]);
      const inflight = await exec<{ seq: number; id: string; lock_system_id: string; kind: string; access: string; state: string; attempts: number; priority: number }>(trx, INFLIGHT_OF, [personId]);
      const actual = new Map<string, ActualState>();
      for (const s of states) {
        if (!this.systems.has(s.lock_system_id)) continue;
        actual.set(s.lock_system_id, actualFromRow(s));
      }
      // A running operation applies the termination date the identity has when it is sent: this one.
      const endDate = endDateOf(identity?.attributes.terminationDate);
      for (const op of inflight)
        if (hasStarted(op) && this.systems.has(op.lock_system_id))
          actual.set(op.lock_system_id, applyToState(actual.get(op.lock_system_id), { kind: op.kind as PlannedOperation['kind'], access: JSON.parse(op.access) }, endDate));
      operations = plan({ active: isActive(identity, now), desired, actual, managed: this.managed, endDate })
        .filter((o) => this.systems.has(o.lockSystemId))
        // Under lockdown, revocations jump every queue (BullMQ runs unprioritised jobs first).
        .map((o) => (lockdownsApplied.length && o.kind === 'revoke' ? { ...o, priority: PRIORITY_LOCKDOWN } : o));
      if (dryRun) return;

      const pending = inflight.filter((o) => !hasStarted(o));
      const unchanged =
        pending.length === operations.length &&
        pending.every((p, i) => {
          const o = operations[i]!;
          return p.lock_system_id === o.lockSystemId && p.kind === o.kind && p.access === JSON.stringify(o.access);
        });
      if (!unchanged) {
        if (pending.length)
          await trx
            .updateTable('operations')
            .set({ state: 'superseded' })
            .where('id', 'in', pending.map((p) => p.id))
            .execute();
        if (operations.length)
          await exec(
            trx,
            insertRows('operations', OPERATION_COLUMNS, operations.length),
            operations.flatMap((o) => [newId(), personId, o.lockSystemId, o.kind, JSON.stringify(o.access), o.priority, 'pending', 0, correlationId, now]),
          );
        log.push({
          actor: 'system:reconciler',
          action: 'plan',
          subject: `person:${personId}`,
          personId,
          correlationId,
          detail: {
            active: isActive(identity, now),
            wakeAt: wakeAt === undefined ? null : new Date(wakeAt).toISOString(),
            exists: identity !== null,
            rules,
            lockdowns: lockdownsApplied,
            desired: desiredOut,
            operations: operations.map((o) => ({ lockSystem: o.lockSystemId, kind: o.kind, access: o.access })),
            superseded: pending.length,
          },
        });
      }
      // The clock is an event source too: wake this person when a date in their record passes.
      if (wakeAt !== undefined) await exec(trx, SCHEDULE_UPSERT, [personId, wakeAt, 'termination date or access window']);
      else await exec(trx, SCHEDULE_DELETE, [personId]);
      if (dirty) await exec(trx, DIRTY_CLEAR, [personId, dirty.generation]);
      const [still] = await exec<{ generation: number }>(trx, DIRTY_GENERATION, [personId]);
      requeue = still !== undefined;
    };

    if (dryRun) await body(db, []);
    else
      await this.store.write(async (trx, log) => {
        // One reconciler at a time per person across processes (SQLite already has one writer).
        await lockPerson(trx as never, this.store.dialect, personId);
        await body(trx as never, log);
      });

    if (!dryRun) {
      this.metrics?.reconciles.inc({ result: operations.length ? 'planned' : 'noop' });
      const byLs = new Map<string, number>();
      for (const o of operations) byLs.set(o.lockSystemId, Math.min(byLs.get(o.lockSystemId) ?? Infinity, o.priority));
      if (byLs.size) await this.notifyApply([...byLs].map(([lockSystemId, priority]) => ({ lockSystemId, personId, priority })));
      this.log.debug({ personId, correlationId, operations: operations.length, requeue }, 'reconciled');
    }
    return { personId, correlationId, desired: desiredOut, rules, operations, requeue };
  }
}

