import type { AccessMap, ActualState, PlannedOperation } from './types.ts';

/**
 * The planner: turns desired access and the actual (accepted or in-flight) state into the
 * operations that close the gap. Pure; the same inputs always give the same plan, and applying
 * a plan then planning again gives an empty plan (idempotence is tested table-driven).
 *
 * Rules:
 * - a person with no identity or an inactive one gets one `leave` per lock system they were
 *   ever provisioned on and have not yet left: every managed access removed, keys end-dated,
 *   programming ordered;
 * - an active person who had left gets `reinstate` before any grant;
 * - an active person with access whose termination date differs from the one last put on their
 *   keys gets `reinstate` (no access) too: it sets the keys' end date to the current one, so a
 *   date moved earlier reaches even a key that is never online again, and one moved later does
 *   not stop a key early;
 * - revocations come before grants, and carry leaver priority, so that taking access away is
 *   never queued behind giving it;
 * - access that may be on the keys without an accepted grant (`unsure`: a grant dead-lettered
 *   after it started) is revoked when unwanted and granted again when wanted.
 */

export const PRIORITY = { revoke: 1, leave: 1, reinstate: 5, grant: 10 } as const;

export interface PlanInput {
  /** False when the identity is inactive or gone. */
  active: boolean;
  desired: AccessMap;
  /** Per lock system the person has state on. Absent = never provisioned there. */
  actual: ReadonlyMap<string, ActualState>;
  /** Access names lockstep manages per lock system (all names any rule can grant). */
  managed: ReadonlyMap<string, ReadonlySet<string>>;
  /** The person's termination date (ISO), if any: what the keys' end date should be. */
  endDate?: string | null;
}

export function plan(input: PlanInput): PlannedOperation[] {
  const ops: PlannedOperation[] = [];
  const systems = [...new Set([...input.desired.keys(), ...input.actual.keys()])].sort();
  for (const ls of systems) {
    const actual = input.actual.get(ls);
    const have = actual?.access ?? new Set<string>();
    const unsure = actual?.unsure ?? new Set<string>();
    if (!input.active) {
      if (actual && (!actual.left || have.size > 0 || unsure.size > 0)) {
        const strip = new Set([...have, ...unsure, ...(input.managed.get(ls) ?? [])]);
        ops.push({ lockSystemId: ls, kind: 'leave', access: [...strip].sort(), priority: PRIORITY.leave });
      }
      continue;
    }
    const want = input.desired.get(ls) ?? new Set<string>();
    const revoke = [...new Set([...have, ...unsure])].filter((a) => !want.has(a)).sort();
    const grant = [...want].filter((a) => !have.has(a)).sort();
    if (revoke.length) ops.push({ lockSystemId: ls, kind: 'revoke', access: revoke, priority: PRIORITY.revoke });
    const keepsAccess = [...have].some((a) => want.has(a)) || grant.length > 0;
    const endDateStale = actual !== undefined && !actual.left && keepsAccess && !sameEndDate(actual.endDate, input.endDate ?? null);
    if ((actual?.left && want.size > 0) || endDateStale) ops.push({ lockSystemId: ls, kind: 'reinstate', access: [], priority: PRIORITY.reinstate });
    if (grant.length) ops.push({ lockSystemId: ls, kind: 'grant', access: grant, priority: PRIORITY.grant });
  }
  return ops;
}

/** A terminationDate attribute as the planner compares it: ISO, or null when absent or unreadable. */
export function endDateOf(terminationDate: string | undefined): string | null {
  if (!terminationDate) return null;
  const t = Date.parse(terminationDate);
  return Number.isNaN(t) ? null : new Date(t).toISOString();
}

/**
 * Whether the keys carry the wanted end date. Not known (`undefined`, state from before lockstep
 * kept it) counts as right unless a date is wanted, so that an upgrade does not touch every key.
 */
function sameEndDate(actual: string | null | undefined, wanted: string | null): boolean {
  if (actual === undefined) return wanted === null;
  return actual === wanted;
}

/**
 * The state after an operation is accepted: what the planner should assume next time.
 * `endDate` is the termination date the operation was applied with: a reinstate sets the keys'
 * end date to it exactly, and so does the first grant on a lock system; a later grant only
 * shortens an end date, so what is known stays as it was.
 */
export function applyToState(state: ActualState | undefined, op: Pick<PlannedOperation, 'kind' | 'access'>, endDate?: string | null): ActualState {
  const access = new Set(state?.access ?? []);
  // A grant, revoke or leave that was accepted settles whether its access is there.
  const unsure = new Set(state?.unsure ?? []);
  if (op.kind !== 'reinstate') for (const a of op.access) unsure.delete(a);
  if (op.kind === 'leave') unsure.clear();
  const known = state?.endDate;
  const withEnd = (s: ActualState, end: string | null | undefined): ActualState => {
    const out = end === undefined ? s : { ...s, endDate: end };
    return unsure.size ? { ...out, unsure } : out;
  };
  switch (op.kind) {
    case 'grant':
      for (const a of op.access) access.add(a);
      return withEnd({ access, left: state?.left ?? false }, state === undefined ? endDate : known);
    case 'revoke':
      for (const a of op.access) access.delete(a);
      return withEnd({ access, left: state?.left ?? false }, known);
    case 'leave':
      return withEnd({ access: new Set(), left: true }, known);
    case 'reinstate':
      return withEnd({ access, left: false }, endDate === undefined ? known : endDate);
  }
}

/**
 * The state after a grant that started was dead-lettered: its access may be on the keys (added
 * before the failure), so it becomes `unsure` unless already accepted. Other kinds add nothing
 * that could be missed: a revoke or leave that stopped half-way leaves access that is still
 * recorded, and so is revoked again.
 */
export function deadToState(state: ActualState | undefined, op: Pick<PlannedOperation, 'kind' | 'access'>): ActualState | undefined {
  if (op.kind !== 'grant') return state;
  const added = op.access.filter((a) => !state?.access.has(a));
  if (added.length === 0) return state;
  return { ...(state ?? { access: new Set<string>(), left: false }), unsure: new Set([...(state?.unsure ?? []), ...added]) };
}

/**
 * An operation that is running, or was tried and waits for its retry: the lock system may hold
 * part of it already (an access added before the programming order failed, say). Such an
 * operation runs to its end and planning assumes it lands; only one that never started may be
 * superseded without a trace.
 */
export function hasStarted(op: { state: string; attempts: number | string }): boolean {
  return op.state === 'running' || Number(op.attempts) > 0;
}
