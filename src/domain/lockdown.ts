import type { AccessMap, Identity } from './types.ts';

/**
 * Emergency lockdown as part of desired state. A lockdown does not send "revoke" commands of
 * its own: it removes access from what each person should have, and the reconciler does the
 * rest with all its machinery (ordering, retries, audit, two truths). Lifting it simply stops
 * removing, so everyone's normal access comes back through the same path.
 *
 * Pure: given the desired access from policy, the identity and the lockdowns in force, it
 * returns the access that remains. Break-glass exemptions (people or groups who must keep
 * their access to respond) are honoured per lockdown.
 */

export interface LockdownScope {
  /** Every lock system, all access. */
  all?: boolean;
  /** All access on these lock systems. */
  lockSystems?: string[];
  /** These access names, on any lock system. */
  access?: string[];
  /** Access mapped to these sites in config (`lockdown.sites`), resolved by the caller into `access` pairs. */
  siteAccess?: Array<{ lockSystem: string; access: string }>;
}

export interface LockdownView {
  id: string;
  scope: LockdownScope;
  /** Person ids, user names, group ids or group display names exempt from this lockdown. */
  exemptions: { persons: string[]; groups: string[] };
}

export function isExempt(identity: Identity, lockdown: LockdownView): boolean {
  const persons = new Set(lockdown.exemptions.persons.map((p) => p.toLowerCase()));
  if (persons.has(identity.personId.toLowerCase()) || persons.has(identity.userName.toLowerCase())) return true;
  const groups = new Set(lockdown.exemptions.groups.map((g) => g.toLowerCase()));
  return identity.groups.some((g) => groups.has(g.id.toLowerCase()) || groups.has(g.displayName.toLowerCase()));
}

/** Desired access minus what lockdowns in force remove. Returns which lockdowns applied. */
export function applyLockdowns(desired: AccessMap, identity: Identity | null, lockdowns: readonly LockdownView[]): { access: AccessMap; applied: string[] } {
  if (!identity || lockdowns.length === 0) return { access: desired, applied: [] };
  const out: AccessMap = new Map([...desired].map(([ls, set]) => [ls, new Set(set)]));
  const applied: string[] = [];
  for (const l of lockdowns) {
    if (isExempt(identity, l)) continue;
    let touched = false;
    for (const [ls, set] of out) {
      for (const access of [...set]) {
        if (inScope(l.scope, ls, access)) {
          set.delete(access);
          touched = true;
        }
      }
    }
    if (touched) applied.push(l.id);
  }
  for (const [ls, set] of out) if (set.size === 0) out.delete(ls);
  return { access: out, applied };
}

export function inScope(scope: LockdownScope, lockSystem: string, access: string): boolean {
  if (scope.all) return true;
  if (scope.lockSystems?.includes(lockSystem)) return true;
  if (scope.access?.some((a) => a.toLowerCase() === access.toLowerCase())) return true;
  return scope.siteAccess?.some((s) => s.lockSystem === lockSystem && s.access.toLowerCase() === access.toLowerCase()) ?? false;
}

/** A canonical form of a scope, so that starting "the same" lockdown twice is recognised. */
export function scopeKey(scope: LockdownScope): string {
  if (scope.all) return 'all';
  const norm = (xs: string[] | undefined) => [...new Set((xs ?? []).map((x) => x.toLowerCase()))].sort();
  return JSON.stringify({
    lockSystems: norm(scope.lockSystems),
    access: norm(scope.access),
    siteAccess: [...new Set((scope.siteAccess ?? []).map((s) => `${s.lockSystem}/${s.access.toLowerCase()}`))].sort(),
  });
}
