import SCIMMY from 'scimmy';
import { ScimHttpError } from './errors.ts';
import { type FilterNode, equalities, formatFilter, formatPath, matches, parsePatchPath } from './filter.ts';
import type { PatchOperation } from './normalise.ts';
import { CORE_USER, PATCH_OP } from './schema.ts';

/**
 * PATCH (RFC 7644 §3.5.2) for the attributes of a user or group (membership is members.ts).
 *
 * Deactivation and re-activation — nearly all PATCH traffic from Okta and Entra — are
 * recognised up front and written as a single `active` update (activeOnly). Everything else
 * is applied by scimmy's PatchOp to the stored resource, after prepareOps has made Entra's
 * filtered paths workable:
 *   - `add`/`replace` on `phoneNumbers[type eq "work"].value` when the user has no such
 *     element creates it (Entra sends this for every newly mapped multi-valued attribute;
 *     scimmy, like a strict reading of the RFC, answers noTarget);
 *   - `roles[primary eq "True"].value`: string booleans in filters become booleans;
 *   - `remove` of an element that is not there is a no-op rather than an error.
 */

type Obj = Record<string, unknown>;
type Json = PatchOperation['value'];
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const ACTIVE_PATHS = new Set(['active', `${CORE_USER.toLowerCase()}:active`]);

/**
 * When every operation only sets `active` (or `password`, which lockstep never stores), the
 * resulting value of `active` (undefined: nothing to change). Otherwise undefined (general PATCH).
 */
export function activeOnly(ops: PatchOperation[]): { active?: boolean } | undefined {
  let active: boolean | undefined;
  for (const op of ops) {
    if (op.op !== 'replace' && op.op !== 'add') return undefined;
    if (op.path !== undefined) {
      if (!ACTIVE_PATHS.has(op.path.trim().toLowerCase()) || typeof op.value !== 'boolean') return undefined;
      active = op.value;
    } else if (isObj(op.value)) {
      for (const [k, v] of Object.entries(op.value)) {
        const lk = k.toLowerCase();
        if (ACTIVE_PATHS.has(lk) && typeof v === 'boolean') active = v;
        else if (lk !== 'password') return undefined;
      }
    } else return undefined;
  }
  return { active };
}

function key(o: Obj, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (const k of Object.keys(o)) if (k.toLowerCase() === lower) return k;
  return undefined;
}

/** Filter literals as the attribute types want them: "True"/"False" for booleans (Entra's `primary eq "True"`). */
function typedLiterals(n: FilterNode): FilterNode {
  switch (n.kind) {
    case 'and':
    case 'or':
      return { ...n, items: n.items.map(typedLiterals) };
    case 'not':
      return { ...n, item: typedLiterals(n.item) };
    case 'valuePath':
      return { ...n, filter: typedLiterals(n.filter) };
    case 'cmp':
      if (n.path.attr.toLowerCase() === 'primary' && typeof n.value === 'string' && /^(true|false)$/i.test(n.value))
        return { ...n, value: n.value.toLowerCase() === 'true' };
      return n;
  }
}

/** Rewrites each `eq` literal to the value stored in `el` (scimmy compares case-sensitively; SCIM strings mostly are not). */
function literalsOf(n: FilterNode, el: Obj): FilterNode {
  if (n.kind === 'and') return { ...n, items: n.items.map((i) => literalsOf(i, el)) };
  if (n.kind === 'cmp' && n.op === 'eq' && n.path.sub === undefined) {
    const k = key(el, n.path.attr);
    if (k !== undefined && typeof el[k] === typeof n.value) return { ...n, path: { attr: k }, value: el[k] as string };
  }
  return n;
}

/** See the module comment. Tracks multi-valued attributes through the operations, in order. */
export function prepareOps(current: Obj, ops: PatchOperation[]): PatchOperation[] {
  const lists = new Map<string, Obj[]>();
  const list = (attr: string): Obj[] => {
    const lk = attr.toLowerCase();
    let l = lists.get(lk);
    if (!l) {
      const k = key(current, attr);
      const v = k === undefined ? undefined : current[k];
      l = Array.isArray(v) ? v.filter(isObj).map((x) => ({ ...x })) : [];
      lists.set(lk, l);
    }
    return l;
  };
  const track = (op: string, attr: string, value: unknown) => {
    if (!Array.isArray(value) && op !== 'remove') return;
    const l = list(attr);
    if (op === 'remove') l.length = 0;
    else if (op === 'replace') l.splice(0, l.length, ...(value as unknown[]).filter(isObj));
    else l.push(...(value as unknown[]).filter(isObj));
  };

  const out: PatchOperation[] = [];
  for (const op of ops) {
    if (op.path === undefined) {
      if (isObj(op.value)) for (const [k, v] of Object.entries(op.value)) if (!k.includes(':') && !k.includes('.')) track(op.op, k, v);
      out.push(op);
      continue;
    }
    let pp;
    try {
      pp = parsePatchPath(op.path);
    } catch {
      out.push(op); // scimmy reports the invalid path
      continue;
    }
    if (!pp.filter) {
      if (pp.path.sub === undefined && pp.path.urn === undefined) track(op.op, pp.path.attr, op.value);
      out.push(op);
      continue;
    }
    const filter = typedLiterals(pp.filter);
    const elements = list(pp.path.attr);
    const hits = elements.filter((e) => matches(filter, e));
    const suffix = pp.sub ? `.${pp.sub}` : '';
    if (hits.length > 0) {
      const f = hits.length === 1 ? literalsOf(filter, hits[0]!) : filter;
      out.push({ ...op, path: `${formatPath(pp.path)}[${formatFilter(f)}]${suffix}` });
      if (op.op === 'remove' && !pp.sub) for (const h of hits) elements.splice(elements.indexOf(h), 1);
      continue;
    }
    // Nothing matches.
    if (op.op === 'remove') continue;
    const eq = equalities(filter);
    const value = pp.sub ? { [pp.sub]: op.value } : isObj(op.value) ? op.value : undefined;
    if (!eq || value === undefined || op.value === undefined) {
      out.push({ ...op, path: `${formatPath(pp.path)}[${formatFilter(filter)}]${suffix}` });
      continue;
    }
    const element = { ...eq, ...value } as Obj;
    elements.push(element);
    out.push({ op: 'add', path: formatPath(pp.path), value: [element] as Json });
  }
  return out;
}

interface SchemaClass {
  new (data: Obj, direction?: string): object;
}

/**
 * Applies operations to a rendered resource with scimmy; returns the patched resource (plain
 * JSON, to be validated by the caller's coercer) or undefined when nothing changed.
 */
export async function applyPatch(kind: 'User' | 'Group', current: Obj, ops: PatchOperation[]): Promise<Obj | undefined> {
  const prepared = prepareOps(current, ops);
  if (prepared.length === 0) return undefined;
  const Schema = (kind === 'User' ? SCIMMY.Schemas.User : SCIMMY.Schemas.Group) as unknown as SchemaClass;
  try {
    const message = new SCIMMY.Messages.PatchOp({ schemas: [PATCH_OP], Operations: prepared } as never);
    const result = await message.apply(new Schema(current, 'out') as never, async (target: unknown) => target as never);
    return result ? (JSON.parse(JSON.stringify(result)) as Obj) : undefined;
  } catch (e) {
    // scimmy raises its own SCIM errors for bad paths and values; a TypeError here is a value
    // of the wrong type caught by its schema (e.g. a string where a boolean belongs).
    if (e instanceof TypeError) throw new ScimHttpError(400, 'invalidValue', e.message);
    throw e;
  }
}
