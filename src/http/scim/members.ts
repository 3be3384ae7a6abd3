import SCIMMY from 'scimmy';
import type { IdentityRepo, WriteContext } from '../../store/identities.ts';
import { ScimHttpError } from './errors.ts';
import type { PatchOperation } from './normalise.ts';
import { CORE_GROUP } from './schema.ts';

/**
 * Group membership PATCH operations, taken out of the PatchOp before scimmy sees it.
 *
 * scimmy applies a PATCH as read whole resource → modify in memory → write whole resource;
 * for a group that means loading and rewriting every member on each Entra add/remove burst.
 * Membership ops instead become one delta for `IdentityRepo.patchMembers`, which touches only
 * the listed memberships. The other ops of the same PATCH still go through scimmy.
 *
 * Forms handled (ops already lower-cased by normalisePatch):
 *   add     path "members"                 value [{value}] | {value} | "id"
 *   remove  path "members"                 value [{value}]  → only those (Entra legacy form)
 *   remove  path "members"                 no value         → all members
 *   remove  path members[value eq "id"]    (also `or`-ed value eq tests)
 *   replace path "members"                 value [...]      → exactly these
 *   replace path members[value eq "id"]    value [...]      → that member swapped for these
 *   add/replace without path, value {members: [...], ...}   → members part handled here
 */

export interface MemberDelta {
  add: Set<string>;
  remove: Set<string>;
  /** Set when the final membership is given in full (replace, or remove-all followed by adds). */
  replaceWith: Set<string> | null;
}

const MEMBERS_PATHS = new Set(['members', `${CORE_GROUP.toLowerCase()}:members`]);

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function ids(value: unknown, index: number): string[] {
  const list = Array.isArray(value) ? value : value === undefined ? [] : [value];
  return list.map((m) => {
    if (typeof m === 'string' && m.length > 0) return m;
    if (isObj(m)) {
      const k = Object.keys(m).find((x) => x.toLowerCase() === 'value');
      const v = k === undefined ? undefined : m[k];
      if (typeof v === 'string' && v.length > 0) return v;
    }
    throw new ScimHttpError(400, 'invalidValue', `operation ${index}: members must be given as [{"value": "<user id>"}]`);
  });
}

/** Ids selected by a `members[...]` filter; only `value eq "<id>"` (optionally or-ed) can be served without loading the group. */
function filterIds(filter: string, index: number): string[] {
  let parsed: unknown;
  try {
    parsed = new SCIMMY.Types.Filter(filter);
  } catch (e) {
    throw new ScimHttpError(400, 'invalidFilter', `operation ${index}: ${(e as Error).message}`);
  }
  const out: string[] = [];
  for (const branch of parsed as Array<Record<string, unknown>>) {
    const keys = Object.keys(branch);
    const expr = branch[keys[0]!];
    if (keys.length !== 1 || keys[0]!.toLowerCase() !== 'value' || !Array.isArray(expr) || expr[0] !== 'eq' || typeof expr[1] !== 'string')
      throw new ScimHttpError(400, 'invalidPath', `operation ${index}: only members[value eq "<user id>"] is supported as a member filter`);
    out.push(expr[1]);
  }
  return out;
}

type Parsed = { kind: 'all' } | { kind: 'filter'; ids: string[] } | { kind: 'other' };

function parsePath(path: string | undefined, index: number): Parsed {
  if (path === undefined) return { kind: 'other' };
  const p = path.trim();
  if (MEMBERS_PATHS.has(p.toLowerCase())) return { kind: 'all' };
  const m = /^(?:urn:ietf:params:scim:schemas:core:2\.0:group:)?members\[(.*)\](.*)$/is.exec(p);
  if (m) {
    if (m[2]!.length > 0) throw new ScimHttpError(400, 'invalidPath', `operation ${index}: sub-attributes of members cannot be changed (path "${path}")`);
    return { kind: 'filter', ids: filterIds(m[1]!, index) };
  }
  if (/^(?:urn:ietf:params:scim:schemas:core:2\.0:group:)?members\./i.test(p))
    throw new ScimHttpError(400, 'invalidPath', `operation ${index}: sub-attributes of members cannot be changed (path "${path}")`);
  return { kind: 'other' };
}

/** Splits membership ops from the rest; returns null delta when the PATCH has no membership op. */
export function splitMemberOps(ops: PatchOperation[]): { delta: MemberDelta | null; rest: PatchOperation[] } {
  const delta: MemberDelta = { add: new Set(), remove: new Set(), replaceWith: null };
  let touched = false;
  const rest: PatchOperation[] = [];
  const add = (id: string) => {
    delta.remove.delete(id);
    if (delta.replaceWith) delta.replaceWith.add(id);
    else delta.add.add(id);
  };
  const remove = (id: string) => {
    delta.add.delete(id);
    if (delta.replaceWith) delta.replaceWith.delete(id);
    else delta.remove.add(id);
  };
  const replaceAll = (list: string[]) => {
    delta.add.clear();
    delta.remove.clear();
    delta.replaceWith = new Set(list);
  };

  ops.forEach((op, i) => {
    const index = i + 1;
    const kind = String(op.op).toLowerCase();
    const parsed = parsePath(op.path, index);
    if (parsed.kind === 'other' && op.path === undefined && isObj(op.value) && (kind === 'add' || kind === 'replace')) {
      const key = Object.keys(op.value).find((k) => MEMBERS_PATHS.has(k.toLowerCase()));
      if (key !== undefined) {
        touched = true;
        const list = ids(op.value[key], index);
        if (kind === 'add') list.forEach(add);
        else replaceAll(list);
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
      if (kind === 'add') ids(op.value, index).forEach(add);
      else if (kind === 'replace') replaceAll(ids(op.value, index));
      else if (kind === 'remove') {
        // Entra's legacy form names the members to remove in `value`; only a bare remove clears the group.
        if (op.value === undefined) replaceAll([]);
        else ids(op.value, index).forEach(remove);
      }
      return;
    }
    if (kind === 'remove') parsed.ids.forEach(remove);
    else if (kind === 'replace') {
      parsed.ids.forEach(remove);
      ids(op.value, index).forEach(add);
    } else throw new ScimHttpError(400, 'invalidPath', `operation ${index}: "add" cannot target a filtered members path; use path "members"`);
  });
  return { delta: touched ? delta : null, rest };
}

/** Writes the delta. A full replacement reads the current member ids (not the group) to compute it. */
export async function applyMemberDelta(repo: IdentityRepo, sourceId: string, groupId: string, delta: MemberDelta, ctx: WriteContext): Promise<void> {
  let add = [...delta.add];
  let remove = [...delta.remove];
  if (delta.replaceWith) {
    const group = await repo.getGroup(sourceId, groupId, true);
    if (!group) throw new ScimHttpError(404, undefined, `Group ${groupId} not found`);
    const current = new Set((group.members ?? []).map((m) => m.id));
    add = [...delta.replaceWith].filter((id) => !current.has(id));
    remove = [...current].filter((id) => !delta.replaceWith!.has(id));
  }
  if (add.length === 0 && remove.length === 0) {
    // Nothing to write (e.g. Okta re-sending the full member list); the group must still exist.
    if (!(await repo.getGroup(sourceId, groupId, false))) throw new ScimHttpError(404, undefined, `Group ${groupId} not found`);
    return;
  }
  await repo.patchMembers(sourceId, groupId, add, remove, ctx);
}
