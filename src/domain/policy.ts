import type { RuleConfig } from '../config/schema.ts';
import type { AccessMap, Identity } from './types.ts';

/**
 * Policy: which access a person should have, per lock system. Pure and total: an unknown
 * group, role or attribute simply matches nothing (fail safe: nothing is granted by accident),
 * and an inactive or absent identity is entitled to nothing.
 *
 * Matching is case-insensitive for group names, roles and attribute values, because IdPs do not
 * agree on case (Entra sends "Operations", an HR feed "OPERATIONS").
 */
export function desiredAccess(identity: Identity | null, rules: readonly RuleConfig[]): AccessMap {
  const out: AccessMap = new Map();
  if (!identity || !identity.active) return out;
  const groups = new Set<string>();
  for (const g of identity.groups) {
    groups.add(g.id.toLowerCase());
    groups.add(g.displayName.toLowerCase());
  }
  const roles = new Set(identity.roles.map((r) => r.toLowerCase()));
  for (const rule of rules) {
    if (!matches(rule, identity, groups, roles)) continue;
    for (const g of rule.grant) {
      let set = out.get(g.lockSystem);
      if (!set) out.set(g.lockSystem, (set = new Set()));
      for (const a of g.access) set.add(a);
    }
  }
  return out;
}

/** Which rules matched, for explaining a decision in the admin API and the audit log. */
export function matchingRules(identity: Identity | null, rules: readonly RuleConfig[]): string[] {
  if (!identity || !identity.active) return [];
  const groups = new Set(identity.groups.flatMap((g) => [g.id.toLowerCase(), g.displayName.toLowerCase()]));
  const roles = new Set(identity.roles.map((r) => r.toLowerCase()));
  return rules.filter((r) => matches(r, identity, groups, roles)).map((r) => r.name);
}

function matches(rule: RuleConfig, identity: Identity, groups: Set<string>, roles: Set<string>): boolean {
  const w = rule.when;
  if (w.sources && !w.sources.includes(identity.sourceId)) return false;
  if (w.groups && !w.groups.some((g) => groups.has(g.toLowerCase()))) return false;
  if (w.roles && !w.roles.some((r) => roles.has(r.toLowerCase()))) return false;
  if (w.attributes) {
    for (const [key, expected] of Object.entries(w.attributes)) {
      const actual = identity.attributes[key];
      if (actual === undefined) return false;
      const options = Array.isArray(expected) ? expected : [expected];
      if (!options.some((o) => o.toLowerCase() === actual.toLowerCase())) return false;
    }
  }
  return true;
}

/** Every access name policy can grant on a lock system: what lockstep manages there. */
export function managedAccess(rules: readonly RuleConfig[]): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const r of rules)
    for (const g of r.grant) {
      let set = out.get(g.lockSystem);
      if (!set) out.set(g.lockSystem, (set = new Set()));
      for (const a of g.access) set.add(a);
    }
  return out;
}
