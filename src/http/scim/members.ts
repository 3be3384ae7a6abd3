import type { GroupChange } from '../../store/identities.ts';
import { ScimHttpError } from './errors.ts';
import { type FilterNode, parsePatchPath } from './filter.ts';
import type { PatchOperation } from './normalise.ts';
import { memberValues } from './resources.ts';
import { CORE_GROUP } from './schema.ts';

/**
 * Group membership PATCH operations, taken out of the PatchOp before scimmy sees it.
 *
 * scimmy applies a PATCH as read whole resource → modify in memory → write whole resource;
 * for a group that means loading and rewriting every member on each add/remove. Membership
 * ops instead become one delta that the store applies touching only the listed memberships
 * (IdentityRepo.changeGroup), in the same transaction as the group's other changes.
 *
 * Forms handled (ops already lower-cased by normalisePatch):
 *   add     path "members"                 value [{value}] | {value} | "id"
 *   remove  path "members"                 value [{value}]  → only those (Entra legacy form)
 *   remove  path "members"                 no value         → all members
 *   remove  path members[value eq "id"]    (also `or`-ed value eq tests)
 *   replace path "members"                 value [...]      → exactly these
 *   replace path members[value eq "id"]    value [...]      → that member swapped for these
 *   add/replace without path, value {members: [...], ...}   → members part handled here
 *
 * Member values that cannot be a person id (Microsoft's collection adds "string id 1") are
 * dropped and audited as a warning instead of failing the request; a well-formed id that is
 * not a user of this source still fails it (400 invalidValue), so a real member is never lost
 * without the client being told.
 */

export interface MemberDelta {
  add: Map<string, string | undefined>;
  remove: Set<string>;
  /** Set when the final membership is given in full (replace, or remove-all followed by adds). */
  replaceWith: Map<string, string | undefined> | null;
  ignored: string[];
}

const MEMBERS = 'members';

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function values(value: unknown, index: number): { members: Array<{ id: string; display?: string }>; ignored: string[] } {
  const list = Array.isArray(value) ? value : value === undefined ? [] : [value];
  for (const m of list) {
    const v = typeof m === 'string' ? m : isObj(m) ? Object.entries(m).find(([k]) => k.toLowerCase() === 'value')?.[1] : undefined;
    if (typeof v !== 'string' || v === '')
      throw new ScimHttpError(400, 'invalidValue', `operation ${index}: members must be given as [{"value": "<user id>"}]`);
  }
  const { members, ignored } = memberValues(list);
  return { members: members.map((m) => ({ id: m.id, ...(m.display ? { display: m.display } : {}) })), ignored };
}

/** Ids selected by a `members[...]` filter: only `value eq "<id>"`, optionally or-ed, can be served without loading the group. */
function filterIds(filter: FilterNode, index: number): string[] {
  const branches = filter.kind === 'or' ? filter.items : [filter];
  return branches.map((b) => {
    if (b.kind !== 'cmp' || b.op !== 'eq' || b.path.attr.toLowerCase() !== 'value' || b.path.sub !== undefined || typeof b.value !== 'string')
      throw new ScimHttpError(400, 'invalidPath', `operation ${index}: only members[value eq "<user id>"] is supported as a member filter`);
    return b.value;
  });
}

type Parsed = { kind: 'all' } | { kind: 'filter'; ids: string[] } | { kind: 'other' };

function parse(path: string | undefined, index: number): Parsed {
  if (path === undefined) return { kind: 'other' };
  if (!/members/i.test(path)) return { kind: 'other' };
  const pp = parsePatchPath(path);
  if (pp.path.urn !== undefined && pp.path.urn.toLowerCase() !== CORE_GROUP.toLowerCase()) return { kind: 'other' };
  if (pp.path.attr.toLowerCase() !== MEMBERS) return { kind: 'other' };
  if (pp.path.sub !== undefined || pp.sub !== undefined)
    throw new ScimHttpError(400, 'invalidPath', `operation ${index}: sub-attributes of members cannot be changed (path "${path}")`);
  if (pp.filter) return { kind: 'filter', ids: filterIds(pp.filter, index) };
  return { kind: 'all' };
}

/** Splits membership ops from the rest; returns null delta when the PATCH has no membership op. */
export function splitMemberOps(ops: PatchOperation[]): { delta: MemberDelta | null; rest: PatchOperation[] } {
  const delta: MemberDelta = { add: new Map(), remove: new Set(), replaceWith: null, ignored: [] };
  let touched = false;
  const rest: PatchOperation[] = [];
  const add = (m: { id: string; display?: string }) => {
    delta.remove.delete(m.id);
    (delta.replaceWith ?? delta.add).set(m.id, m.display);
  };
  const remove = (id: string) => {
    delta.add.delete(id);
    if (delta.replaceWith) delta.replaceWith.delete(id);
    else delta.remove.add(id);
  };
  const replaceAll = (list: Array<{ id: string; display?: string }>) => {
    delta.add.clear();
    delta.remove.clear();
    delta.replaceWith = new Map(list.map((m) => [m.id, m.display]));
  };

  ops.forEach((op, i) => {
    const index = i + 1;
    const kind = String(op.op).toLowerCase();
    const parsed = parse(op.path, index);
    if (parsed.kind === 'other' && op.path === undefined && isObj(op.value) && (kind === 'add' || kind === 'replace')) {
      const key = Object.keys(op.value).find((k) => k.toLowerCase() === MEMBERS || k.toLowerCase() === `${CORE_GROUP.toLowerCase()}:${MEMBERS}`);
      if (key !== undefined) {
        touched = true;
        const { members, ignored } = values(op.value[key], index);
        delta.ignored.push(...ignored);
        if (kind === 'add') members.forEach(add);
        else replaceAll(members);
        const { [key]: _members, ...others } = op.value;
        if (Object.keys(others).length > 0) rest.push({ ...op, value: others as PatchOperation['value'] });
        return;
      }
    }
    if (parsed.kind === 'other') {
      rest.push(op);
      return;
    }
    touched = true;
    if (parsed.kind === 'all') {
      if (kind === 'remove' && op.value === undefined) {
        // Only a bare remove clears the group; Entra's legacy form names the members in `value`.
        replaceAll([]);
        return;
      }
      const { members, ignored } = values(op.value, index);
      delta.ignored.push(...ignored);
      if (kind === 'add') members.forEach(add);
      else if (kind === 'replace') replaceAll(members);
      else if (kind === 'remove') members.forEach((m) => remove(m.id));
      return;
    }
    if (kind === 'remove') parsed.ids.forEach(remove);
    else if (kind === 'replace') {
      parsed.ids.forEach(remove);
      const { members, ignored } = values(op.value, index);
      delta.ignored.push(...ignored);
      members.forEach(add);
    } else throw new ScimHttpError(400, 'invalidPath', `operation ${index}: "add" cannot target a filtered members path; use path "members"`);
  });
  return { delta: touched ? delta : null, rest };
}

/** The delta as the store's GroupChange (membership part). */
export function memberChange(delta: MemberDelta): GroupChange {
  const toInputs = (m: Map<string, string | undefined>) => [...m].map(([id, display]) => (display ? { id, display } : id));
  return {
    ...(delta.replaceWith ? { replace: toInputs(delta.replaceWith) } : {}),
    ...(delta.add.size > 0 ? { add: toInputs(delta.add) } : {}),
    ...(delta.remove.size > 0 ? { remove: [...delta.remove] } : {}),
    ...(delta.ignored.length > 0 ? { ignored: delta.ignored } : {}),
  };
}
