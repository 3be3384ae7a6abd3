import type { GroupFilterAttr, UserFilterAttr } from '../../store/identities.ts';
import { ScimHttpError } from './errors.ts';

/**
 * Translates a parsed scimmy filter (`resource.filter`) into the store's filter list, so that
 * filtering and paging run in SQL. The store answers conjunctions of equality tests on indexed
 * columns; anything else is refused with 400 invalidFilter rather than served by scanning.
 *
 * scimmy's parsed form: an array of OR branches; each branch maps attribute names to either
 * `[op, value]`, a list of those (same attribute twice), or, for complex attributes, an
 * object of sub-attributes (`emails[type eq "work"].value eq "x"` →
 * `{emails: {type: ["eq","work"], value: ["eq","x"]}}`). Attribute names may arrive in any
 * case (scimmy only lower-cases the first letter, scimmy#97), so they are compared lower-cased.
 */

export type UserFilter = { attr: UserFilterAttr; value: string | boolean };
export type GroupFilter = { attr: GroupFilterAttr; value: string };

type Expr = unknown[];
type Branch = Record<string, unknown>;

const USER_SIMPLE: Record<string, UserFilterAttr> = { id: 'id', username: 'userName', externalid: 'externalId', displayname: 'displayName', active: 'active' };
const GROUP_SIMPLE: Record<string, GroupFilterAttr> = { id: 'id', displayname: 'displayName', externalid: 'externalId' };

const USER_SUPPORTED = 'id, userName, externalId, displayName, active, emails.value, emails[type eq "work"].value';
const GROUP_SUPPORTED = 'id, displayName, externalId, members.value';

function invalid(detail: string): never {
  throw new ScimHttpError(400, 'invalidFilter', detail);
}

/** Removes the core schema URN prefix (`urn:…:core:2.0:User:userName` → `userName`) and lower-cases. */
function attrName(key: string, coreUrn: string): string {
  const k = key.toLowerCase();
  const prefix = `${coreUrn.toLowerCase()}:`;
  return k.startsWith(prefix) ? k.slice(prefix.length) : k;
}

function branchOf(filter: unknown): Branch | undefined {
  if (filter === undefined) return undefined;
  const branches = filter as Branch[];
  if (branches.length === 0) return undefined;
  if (branches.length > 1) invalid('"or" is not supported in filters; send one request per alternative (supported: eq joined by and)');
  return branches[0]!;
}

/** All `[op, value]` comparisons on one attribute (scimmy nests them when an attribute repeats). */
function comparisons(raw: unknown, label: string): Expr[] {
  if (!Array.isArray(raw)) invalid(`filter on "${label}" is not supported`);
  const list = Array.isArray(raw[0]) ? (raw as Expr[]) : [raw as Expr];
  for (const c of list) {
    if (c[0] === 'not') invalid(`"not" is not supported in filters (attribute "${label}")`);
    if (c[0] !== 'eq') invalid(`operator "${String(c[0])}" is not supported on "${label}"; only eq (joined by and) is supported`);
    if (c.length < 2 || c[1] === null || c[1] === undefined) invalid(`filter on "${label}" needs a value`);
  }
  return list;
}

function stringValue(v: unknown, label: string): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  return invalid(`filter on "${label}" expects a string value`);
}

export function userFilters(filter: unknown): UserFilter[] {
  const branch = branchOf(filter);
  if (!branch) return [];
  const out: UserFilter[] = [];
  for (const [key, raw] of Object.entries(branch)) {
    const name = attrName(key, 'urn:ietf:params:scim:schemas:core:2.0:User');
    const simple = USER_SIMPLE[name];
    if (simple) {
      for (const c of comparisons(raw, key)) {
        if (simple === 'active') {
          const v = c[1];
          const b = typeof v === 'boolean' ? v : typeof v === 'string' && /^(true|false)$/i.test(v) ? v.toLowerCase() === 'true' : invalid('filter on "active" expects true or false');
          out.push({ attr: 'active', value: b });
        } else out.push({ attr: simple, value: stringValue(c[1], key) });
      }
      continue;
    }
    if (name === 'emails' && raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
      // The store indexes one address per user (primary, else work, else first); "work" and untyped lookups map to it.
      let value: string | undefined;
      for (const [sub, subRaw] of Object.entries(raw as Branch)) {
        const s = sub.toLowerCase();
        const cs = comparisons(subRaw, `emails.${sub}`);
        if (s === 'value') for (const c of cs) value = stringValue(c[1], 'emails.value');
        else if (s === 'type') {
          for (const c of cs) if (String(c[1]).toLowerCase() !== 'work') invalid('emails can be filtered by type "work" only');
        } else invalid(`filter on "emails.${sub}" is not supported; supported: ${USER_SUPPORTED}`);
      }
      if (value === undefined) invalid('a filter on emails needs "value eq"');
      out.push({ attr: 'email', value });
      continue;
    }
    invalid(`filter on "${key}" is not supported; supported: ${USER_SUPPORTED}`);
  }
  return out;
}

export function groupFilters(filter: unknown): GroupFilter[] {
  const branch = branchOf(filter);
  if (!branch) return [];
  const out: GroupFilter[] = [];
  for (const [key, raw] of Object.entries(branch)) {
    const name = attrName(key, 'urn:ietf:params:scim:schemas:core:2.0:Group');
    const simple = GROUP_SIMPLE[name];
    if (simple) {
      for (const c of comparisons(raw, key)) out.push({ attr: simple, value: stringValue(c[1], key) });
      continue;
    }
    if (name === 'members' && raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
      for (const [sub, subRaw] of Object.entries(raw as Branch)) {
        if (sub.toLowerCase() !== 'value') invalid(`filter on "members.${sub}" is not supported; supported: ${GROUP_SUPPORTED}`);
        for (const c of comparisons(subRaw, 'members.value')) out.push({ attr: 'member', value: stringValue(c[1], 'members.value') });
      }
      continue;
    }
    invalid(`filter on "${key}" is not supported; supported: ${GROUP_SUPPORTED}`);
  }
  return out;
}

/**
 * Whether a response needs the attribute `name` (lower case) given scimmy's parsed
 * attributes/excludedAttributes filter: excluded (`np`) → no; an inclusion list without it → no.
 */
export function wantsAttribute(attributes: unknown, name: string, coreUrn: string): boolean {
  const branch = branchOf(attributes);
  if (!branch) return true;
  let inclusionList = false;
  let mentioned: unknown;
  for (const [key, raw] of Object.entries(branch)) {
    if (containsOp(raw, 'pr')) inclusionList = true;
    if (attrName(key, coreUrn) === name) mentioned = raw;
  }
  if (mentioned === undefined) return !inclusionList;
  // `members np` excludes; `members.value np` only trims sub-attributes, so members are still loaded.
  return !(Array.isArray(mentioned) && containsOp(mentioned, 'np'));
}

function containsOp(raw: unknown, op: string): boolean {
  if (Array.isArray(raw)) return raw.some((x) => x === op || (Array.isArray(x) && x[0] === op));
  if (raw !== null && typeof raw === 'object') return Object.values(raw).some((x) => containsOp(x, op));
  return false;
}
