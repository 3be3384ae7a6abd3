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
 * - revocations come before grants, and carry leaver priority, so that taking access away is
 *   never queued behind giving it.
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
}

export function plan(input: PlanInput): PlannedOperation[] {
  const ops: PlannedOperation[] = [];
  const systems = [...new Set([...input.desired.keys(), ...input.actual.keys()])].sort();
  for (const ls of systems) {
    const actual = input.actual.get(ls);
    const have = actual?.access ?? new Set<string>();
    if (!input.active) {
      if (actual && (!actual.left || have.size > 0)) {
        const strip = new Set([...have, ...(input.managed.get(ls) ?? [])]);
        ops.push({ lockSystemId: ls, kind: 'leave', access: [...strip].sort(), priority: PRIORITY.leave });
      }
      continue;
    }
    const want = input.desired.get(ls) ?? new Set<string>();
    const revoke = [...have].filter((a) => !want.has(a)).sort();
    const grant = [...want].filter((a) => !have.has(a)).sort();
    if (revoke.length) ops.push({ lockSystemId: ls, kind: 'revoke', access: revoke, priority: PRIORITY.revoke });
    if (actual?.left && want.size > 0) ops.push({ lockSystemId: ls, kind: 'reinstate', access: [], priority: PRIORITY.reinstate });
    if (grant.length) ops.push({ lockSystemId: ls, kind: 'grant', access: grant, priority: PRIORITY.grant });
  }
  return ops;
}

/** The state after an operation is accepted: what the planner should assume next time. */
export function applyToState(state: ActualState | undefined, op: Pick<PlannedOperation, 'kind' | 'access'>): ActualState {
  const access = new Set(state?.access ?? []);
  switch (op.kind) {
    case 'grant':
      for (const a of op.access) access.add(a);
      return { access, left: state?.left ?? false };
    case 'revoke':
      for (const a of op.access) access.delete(a);
      return { access, left: state?.left ?? false };
    case 'leave':
      return { access: new Set(), left: true };
    case 'reinstate':
      return { access, left: false };
  }
}
