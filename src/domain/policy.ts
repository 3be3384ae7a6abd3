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
/** What time-dependent rules need: the clock and when the person first appeared in lockstep. */
export interface PolicyContext {
  now: number;
  createdAt?: number;
}

/**
 * A person whose termination date has passed is a leaver, whatever the IdP's `active` says:
 * HR's date is authoritative for physical access, and keys must not outlive the contract.
 */
export function isActive(identity: Identity | null, now: number): boolean {
  if (!identity || !identity.active) return false;
  const td = parseDate(identity.attributes.terminationDate);
  return td === undefined || td > now;
}

export function desiredAccess(identity: Identity | null, rules: readonly RuleConfig[], ctx: PolicyContext = { now: Date.now() }): AccessMap {
  const out: AccessMap = new Map();
  if (!identity || !isActive(identity, ctx.now)) return out;
  const groups = new Set<string>();
  for (const g of identity.groups) {
    groups.add(g.id.toLowerCase());
    groups.add(g.displayName.toLowerCase());
  }
  const roles = new Set(identity.roles.map((r) => r.toLowerCase()));
  for (const rule of rules) {
    if (!matches(rule, identity, groups, roles) || !withinWindow(rule, identity, ctx)) continue;
    for (const g of rule.grant) {
      let set = out.get(g.lockSystem);
      if (!set) out.set(g.lockSystem, (set = new Set()));
      for (const a of g.access) set.add(a);
    }
  }
  return out;
}

/** Which rules matched, for explaining a decision in the admin API and the audit log. */
export function matchingRules(identity: Identity | null, rules: readonly RuleConfig[], ctx: PolicyContext = { now: Date.now() }): string[] {
  if (!identity || !isActive(identity, ctx.now)) return [];
  const groups = new Set(identity.groups.flatMap((g) => [g.id.toLowerCase(), g.displayName.toLowerCase()]));
  const roles = new Set(identity.roles.map((r) => r.toLowerCase()));
  return rules.filter((r) => matches(r, identity, groups, roles) && withinWindow(r, identity, ctx)).map((r) => r.name);
}

/** End of a rule's window for this person, if it has one (epoch ms; may be past). */
function windowEnd(rule: RuleConfig, identity: Identity, ctx: PolicyContext): number | undefined {
  const w = rule.window;
  if (!w) return undefined;
  const ends: number[] = [];
  if (w.untilAttribute) ends.push(parseDate(identity.attributes[w.untilAttribute]) ?? -Infinity);
  if (w.maxDays) ends.push(ctx.createdAt === undefined ? -Infinity : ctx.createdAt + w.maxDays * 86_400_000);
  return Math.min(...ends);
}

function withinWindow(rule: RuleConfig, identity: Identity, ctx: PolicyContext): boolean {
  const end = windowEnd(rule, identity, ctx);
  return end === undefined || ctx.now < end;
}

/**
 * The next moment this person's desired access changes by the clock alone (a termination date,
 * a rule's window ending), so the reconciler can be woken then even if no event ever comes.
 */
export function nextChange(identity: Identity | null, rules: readonly RuleConfig[], ctx: PolicyContext): number | undefined {
  if (!identity || !identity.active) return undefined;
  const times: number[] = [];
  const td = parseDate(identity.attributes.terminationDate);
  if (td !== undefined && td > ctx.now) times.push(td);
  const groups = new Set(identity.groups.flatMap((g) => [g.id.toLowerCase(), g.displayName.toLowerCase()]));
  const roles = new Set(identity.roles.map((r) => r.toLowerCase()));
  for (const r of rules) {
    const end = windowEnd(r, identity, ctx);
    if (end !== undefined && end > ctx.now && matches(r, identity, groups, roles)) times.push(end);
  }
  return times.length ? Math.min(...times) : undefined;
}

function parseDate(v: string | undefined): number | undefined {
  if (!v) return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : t;
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
