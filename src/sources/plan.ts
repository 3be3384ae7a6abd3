import type { OperationKind } from '../domain/types.ts';
import type { Reconciler } from '../reconcile/reconciler.ts';
import type { Store } from '../store/db.ts';
import { PRIORITY_NORMAL, type IdentityRepo, type WriteContext } from '../store/identities.ts';
import { upsertState } from './hints.ts';

/**
 * Everyone's plan without applying anything (`lockstep reconcile --dry-run`,
 * `POST /api/v1/reconcile?dryRun=true`): `Reconciler.dryRun` for every known person — anyone in
 * the identity store, and anyone a lock system still has state for (a deleted identity plans a
 * leave). Nothing is written: no operations, no dirty marks, no audit rows.
 */

export interface PlannedPerson {
  personId: string;
  userName: string | null;
  sourceId: string | null;
  active: boolean;
  operations: Array<{ lockSystem: string; kind: OperationKind; access: string[] }>;
}

export interface PlanReport {
  dryRun: true;
  generatedAt: string;
  persons: number;
  personsWithChanges: number;
  operations: Record<OperationKind, number>;
  /** Work for people the plan implies or that is already waiting. */
  tasks: {
    /** Leavers in the plan: each may leave keys to collect or blocklist (lock systems decide when applying). */
    leaversInPlan: number;
    openManualTasks: number;
    pendingSourceTasks: number;
  };
  items: PlannedPerson[];
  /** More persons had changes than `limit` items listed. */
  truncated: boolean;
}

/** Every known person id, in pages (persons first, then lock-state-only persons). */
export async function* everyone(store: Store, page = 1000): AsyncIterable<string[]> {
  for (let after = ''; ; ) {
    const rows = await store.db.selectFrom('persons').select('id').where('id', '>', after).orderBy('id').limit(page).execute();
    if (rows.length === 0) break;
    yield rows.map((r) => r.id);
    after = rows[rows.length - 1]!.id;
  }
  for (let after = ''; ; ) {
    const rows = await store.db
      .selectFrom('lock_state')
      .select('person_id')
      .distinct()
      .where('person_id', '>', after)
      .where('person_id', 'not in', (eb) => eb.selectFrom('persons').select('id'))
      .orderBy('person_id')
      .limit(page)
      .execute();
    if (rows.length === 0) break;
    yield rows.map((r) => r.person_id);
    after = rows[rows.length - 1]!.person_id;
  }
}

export async function planEveryone(deps: { store: Store; reconciler: Reconciler }, opts: { limit?: number } = {}): Promise<PlanReport> {
  const { store, reconciler } = deps;
  const limit = opts.limit ?? 10_000;
  const report: PlanReport = {
    dryRun: true,
    generatedAt: new Date().toISOString(),
    persons: 0,
    personsWithChanges: 0,
    operations: { grant: 0, revoke: 0, leave: 0, reinstate: 0 },
    tasks: { leaversInPlan: 0, openManualTasks: 0, pendingSourceTasks: 0 },
    items: [],
    truncated: false,
  };
  for await (const ids of everyone(store, 500)) {
    const rows = await store.db.selectFrom('persons').select(['id', 'user_name', 'source_id', 'active']).where('id', 'in', ids).execute();
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const personId of ids) {
      report.persons++;
      const plan = await reconciler.dryRun(personId);
      if (plan.operations.length === 0) continue;
      report.personsWithChanges++;
      for (const o of plan.operations) report.operations[o.kind]++;
      if (plan.operations.some((o) => o.kind === 'leave')) report.tasks.leaversInPlan++;
      if (report.items.length >= limit) {
        report.truncated = true;
        continue;
      }
      const p = byId.get(personId);
      report.items.push({
        personId,
        userName: p?.user_name ?? null,
        sourceId: p?.source_id ?? null,
        active: p?.active === 1,
        operations: plan.operations.map((o) => ({ lockSystem: o.lockSystemId, kind: o.kind, access: o.access })),
      });
    }
  }
  const open = await store.db.selectFrom('tasks').select((eb) => eb.fn.countAll<number>().as('n')).where('done_at', 'is', null).executeTakeFirstOrThrow();
  const src = await store.db.selectFrom('source_tasks').select((eb) => eb.fn.countAll<number>().as('n')).where('state', '=', 'pending').executeTakeFirstOrThrow();
  report.tasks.openManualTasks = Number(open.n);
  report.tasks.pendingSourceTasks = Number(src.n);
  return report;
}

/**
 * Asks for a reconcile of everyone (audited dirty marks, in chunks), and a full reconciliation
 * of every API-connected source (run by the daemon's scheduler on its next tick).
 */
export async function reconcileEveryone(
  deps: { store: Store; identities: IdentityRepo },
  ctx: WriteContext,
  sourceIds: string[],
): Promise<{ persons: number; sources: string[] }> {
  let persons = 0;
  for await (const ids of everyone(deps.store, 500)) {
    await deps.identities.requestReconcile(ids, 'full reconciliation requested', ctx, PRIORITY_NORMAL);
    persons += ids.length;
  }
  const now = Date.now();
  for (const id of sourceIds) await upsertState(deps.store.db, id, now, { resync: 'full' });
  return { persons, sources: sourceIds };
}

/** The plan as lines for a terminal. */
export function formatPlan(r: PlanReport): string {
  const lines = [
    `dry run at ${r.generatedAt}: ${r.persons} person(s) known, ${r.personsWithChanges} with changes`,
    `operations: ${r.operations.grant} grant, ${r.operations.revoke} revoke, ${r.operations.leave} leave, ${r.operations.reinstate} reinstate`,
    `tasks: ${r.tasks.leaversInPlan} leaver(s) in the plan may leave keys to collect; ${r.tasks.openManualTasks} open manual task(s); ${r.tasks.pendingSourceTasks} pending source task(s)`,
  ];
  for (const p of r.items) {
    lines.push(`person ${p.personId}${p.userName ? ` (${p.userName}${p.sourceId ? ` @ ${p.sourceId}` : ''})` : ' (no identity)'}${p.active ? '' : ' inactive'}`);
    for (const o of p.operations) lines.push(`  ${o.kind.padEnd(9)} ${o.lockSystem}: ${o.access.join(', ') || '(all managed access)'}`);
  }
  if (r.truncated) lines.push(`… more persons with changes than listed`);
  lines.push('nothing was applied');
  return lines.join('\n');
}
