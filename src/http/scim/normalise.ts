import { ENTERPRISE_USER, PATCH_OP } from './schema.ts';

/**
 * What real IdP clients send that stock scimmy rejects, rewritten into the form scimmy (and
 * RFC 7643/7644) expects. Each rule names the client that needs it; see
 * shared/reference/scim-clients.md §4.1 and §5. Inputs are JSON values from the body parser;
 * outputs are new values (inputs are not mutated).
 */

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const MANAGER_PATH = `${ENTERPRISE_USER}:manager`;
/** Entra's documentation sample misses a colon; accept the typo as the real extension. */
const ENTERPRISE_TYPO = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0user';

/**
 * Null means "unassigned" (RFC 7643 §2.5): drop it instead of failing ("expected to be a
 * collection") as scimmy does on Entra's `phoneNumbers: null`, `manager: null`.
 */
export function stripNulls(v: Json): Json | undefined {
  if (v === null) return undefined;
  if (Array.isArray(v)) return v.map(stripNulls).filter((x): x is Json => x !== undefined);
  if (isObj(v)) {
    const out: Obj = {};
    for (const [k, x] of Object.entries(v)) {
      const y = stripNulls(x);
      if (y !== undefined) out[k] = y;
    }
    return out;
  }
  return v;
}

/** Entra (without aadOptscim062020) sends booleans as "True"/"False". */
function bool(v: Json): Json {
  if (typeof v === 'string' && /^(true|false)$/i.test(v.trim())) return v.trim().toLowerCase() === 'true';
  return v;
}

/** Converts string booleans on the boolean attributes clients actually send that way: `active` and `primary`. */
function fixBooleans(v: Json): Json {
  if (Array.isArray(v)) return v.map(fixBooleans);
  if (!isObj(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) {
    const lk = k.toLowerCase();
    out[k] = lk === 'active' || lk === 'primary' ? bool(x) : fixBooleans(x);
  }
  return out;
}

/** The enterprise manager is `{value}`; Entra sends a bare id, an array of `{value,$ref}`, or `{Value}`. */
export function managerValue(v: Json): Json {
  const first = Array.isArray(v) ? v[0] : v;
  if (typeof first === 'string' || typeof first === 'number') return { value: String(first) };
  if (isObj(first)) {
    const key = Object.keys(first).find((k) => k.toLowerCase() === 'value');
    if (key !== undefined && first[key] !== null && first[key] !== undefined) return { value: String(first[key]) };
  }
  return v;
}

function findKey(o: Obj, name: string): string | undefined {
  const lower = name.toLowerCase();
  return Object.keys(o).find((k) => k.toLowerCase() === lower);
}

/** Moves a misspelt or bare `manager` into the enterprise extension as `{value}`. */
function fixEnterprise(body: Obj): Obj {
  const out: Obj = { ...body };
  const typo = findKey(out, ENTERPRISE_TYPO);
  if (typo !== undefined) {
    const ext = findKey(out, ENTERPRISE_USER);
    out[ext ?? ENTERPRISE_USER] = { ...(ext !== undefined && isObj(out[ext]) ? (out[ext] as Obj) : {}), ...(isObj(out[typo]) ? (out[typo] as Obj) : {}) };
    delete out[typo];
  }
  const bare = findKey(out, 'manager');
  if (bare !== undefined) {
    const extKey = findKey(out, ENTERPRISE_USER) ?? ENTERPRISE_USER;
    const ext = isObj(out[extKey]) ? { ...(out[extKey] as Obj) } : {};
    if (findKey(ext, 'manager') === undefined) ext.manager = out[bare]!;
    out[extKey] = ext;
    delete out[bare];
  }
  const extKey = findKey(out, ENTERPRISE_USER);
  if (extKey !== undefined && isObj(out[extKey])) {
    const ext = { ...(out[extKey] as Obj) };
    const m = findKey(ext, 'manager');
    if (m !== undefined) ext[m] = managerValue(ext[m]!);
    out[extKey] = ext;
  }
  const nsManager = findKey(out, MANAGER_PATH);
  if (nsManager !== undefined) out[nsManager] = managerValue(out[nsManager]!);
  return out;
}

/**
 * Entra's AppRoleAssignmentsComplex PATCH sends each role as a JSON document inside `value`:
 * `{"value": "{\"id\":\"…\",\"value\":\"25\",\"displayName\":\"Role1234\"}"}`.
 */
function decodeRole(s: string): Obj | undefined {
  const t = s.trim();
  if (!t.startsWith('{')) return undefined;
  try {
    const o = JSON.parse(t) as Json;
    if (!isObj(o)) return undefined;
    const value = o.value ?? o.id;
    const display = o.displayName ?? o.display;
    const out: Obj = {};
    if (value !== undefined && value !== null) out.value = String(value);
    if (display !== undefined && display !== null) out.display = String(display);
    return Object.keys(out).length > 0 ? out : undefined;
  } catch {
    return undefined;
  }
}

function role(r: Json): Json {
  if (typeof r === 'string') return decodeRole(r) ?? { value: r };
  if (isObj(r)) {
    const k = findKey(r, 'value');
    const v = k === undefined ? undefined : r[k];
    const decoded = typeof v === 'string' ? decodeRole(v) : undefined;
    if (k !== undefined && decoded) {
      const { [k]: _v, ...rest } = r;
      return { ...rest, ...decoded };
    }
  }
  return r;
}

/** `roles` is multi-valued complex; some clients send plain strings or JSON-encoded roles. */
function fixRoles(body: Obj): Obj {
  const k = findKey(body, 'roles');
  if (k === undefined) return body;
  const v = body[k];
  const list = Array.isArray(v) ? v : v === undefined ? [] : [v];
  return { ...body, [k]: list.map(role) };
}

/** Group members given as bare id strings become `{value}`. */
function fixMembers(body: Obj): Obj {
  const k = findKey(body, 'members');
  if (k === undefined || !Array.isArray(body[k])) return body;
  return { ...body, [k]: (body[k] as Json[]).map((m) => (typeof m === 'string' ? { value: m } : m)) };
}

/**
 * A User or Group body for POST/PUT. Read-only attributes a client echoes back (Okta's PUT
 * carries `id`, `meta`, `groups: []`) are dropped: the URL names the resource and the server
 * owns them.
 */
export function normaliseResource(body: unknown): unknown {
  if (!isObj(body)) return body;
  let out = stripNulls(body) as Obj;
  out = fixBooleans(out) as Obj;
  out = fixMembers(fixRoles(fixEnterprise(out)));
  for (const k of Object.keys(out)) if (['id', 'meta', 'groups'].includes(k.toLowerCase())) delete out[k];
  return out;
}

export interface PatchOperation {
  op: string;
  path?: string;
  value?: Json;
}

/**
 * A PatchOp message: `Operations` (also accepted as `operations`), missing `schemas` added,
 * op names lower-cased, string booleans on `active`, manager forms rewritten to the enterprise
 * extension path with a `{value}` value.
 */
export function normalisePatch(body: unknown): unknown {
  if (!isObj(body)) return body;
  const opsKey = findKey(body, 'Operations');
  const ops = opsKey === undefined ? undefined : body[opsKey];
  const schemas = body.schemas ?? [PATCH_OP];
  if (!Array.isArray(ops)) return { ...body, schemas, ...(opsKey ? { Operations: ops ?? [] } : {}) };
  return { schemas, Operations: ops.map((o) => (isObj(o) ? normaliseOperation(o) : o)) };
}

function normaliseOperation(o: Obj): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(o)) {
    const lk = k.toLowerCase();
    // Other keys (Microsoft's collection sends "name": "addMember") carry no meaning in RFC 7644.
    if (lk === 'op' && typeof v === 'string') out.op = v.toLowerCase();
    else if (lk === 'path' || lk === 'value') out[lk] = v;
  }
  const path = typeof out.path === 'string' ? out.path.trim() : undefined;
  if (path !== undefined) {
    const lp = path.toLowerCase();
    if (lp === 'active' || lp === 'urn:ietf:params:scim:schemas:core:2.0:user:active') out.value = bool(out.value ?? null);
    if (lp === 'manager' || lp === MANAGER_PATH.toLowerCase()) {
      out.path = MANAGER_PATH;
      if (out.value !== undefined) out.value = managerValue(out.value);
    }
    if (lp === 'roles' && out.value !== undefined) out.value = (fixRoles({ roles: out.value }).roles ?? null) as Json;
    if (lp.endsWith('.primary') || lp.endsWith('].primary')) out.value = bool(out.value ?? null);
    else if (out.value !== undefined && typeof out.value === 'object') out.value = fixBooleans(out.value);
  } else if (isObj(out.value)) {
    // No path: the value's keys are attribute paths (Okta deactivation, Entra multi-attribute replace).
    let v = fixBooleans(out.value) as Obj;
    v = fixRoles(fixEnterprise(v));
    out.value = v;
  }
  if (out.value === null) delete out.value;
  return out;
}
