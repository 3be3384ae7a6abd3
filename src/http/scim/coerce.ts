import SCIMMY from 'scimmy';
import { ScimHttpError } from './errors.ts';

/**
 * Validation and coercion of incoming resources ("in" direction), compiled once from the same
 * scimmy schema definitions that /Schemas publishes.
 *
 * It follows scimmy's SchemaDefinition.coerce rules (attribute names matched
 * case-insensitively and returned in canonical case, unknown attributes ignored, attributes
 * the server owns — id, meta, groups — dropped, required attributes enforced, types checked,
 * dateTimes normalised to ISO 8601, extensions taken from their URN key or from
 * `urn:…:attr` keys) without building a scimmy Schema instance per request, which costs
 * ~0.4 ms each. test/scim/coerce.test.ts checks that both agree on real request bodies.
 *
 * One deliberate difference: canonicalValues are suggestions (RFC 7643 §7), not a closed
 * list. scimmy rejects Entra's `roles[].type: "WindowsAzureActiveDirectoryRole"` (the roles
 * schema lists no canonical types at all) and any `emails[].type` other than
 * work/home/other; lockstep stores them.
 */

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

interface Node {
  name: string;
  type: string;
  multi: boolean;
  required: boolean;
  /** False for attributes the server sets (direction "out"): dropped from requests. */
  inbound: boolean;
  /** Validated but never kept (returned "never", e.g. password): lockstep does not store secrets. */
  hidden: boolean;
  subs?: Map<string, Node>;
}

interface ScimmyAttribute {
  name: string;
  type: string;
  config: { multiValued: boolean; required: boolean; direction: string; returned: boolean | string };
  subAttributes?: ScimmyAttribute[];
}
interface ScimmyDefinition {
  id: string;
  name: string;
  required?: boolean;
  attributes: Array<ScimmyAttribute | ScimmyDefinition>;
}

export interface Coercer {
  readonly id: string;
  /** Validates a request body; returns the canonical resource. Throws 400 (invalidSyntax / invalidValue). */
  coerce(body: unknown): Obj;
}

class CoerceError extends Error {}

function compileAttribute(a: ScimmyAttribute): Node {
  const node: Node = {
    name: a.name,
    type: a.type,
    multi: a.config.multiValued === true,
    required: a.config.required === true,
    inbound: a.config.direction !== 'out',
    hidden: a.config.returned === false || a.config.returned === 'never',
  };
  if (a.type === 'complex' && a.subAttributes) node.subs = new Map([...a.subAttributes].map((s) => [s.name.toLowerCase(), compileAttribute(s)]));
  return node;
}

function typeName(v: unknown): string {
  if (v instanceof Date) return 'dateTime';
  if (v === null) return 'null';
  return typeof v === 'object' ? 'complex' : typeof v;
}

const NUMBER_RE = /^-?\d+?(\.\d+)?$/;
const ISO_RE = /^(-?(?:[1-9][0-9]*)?[0-9]{4})-(1[0-2]|0[1-9])-(3[01]|0[1-9]|[12][0-9])(T(2[0-3]|[01][0-9]):([0-5][0-9]):([0-5][0-9])(\.[0-9]+)?(Z|[+-](?:2[0-3]|[01][0-9]):[0-5][0-9])?)?$/;

function single(node: Node, v: unknown): unknown {
  switch (node.type) {
    case 'string':
    case 'reference':
    case 'binary':
      if (typeof v !== 'string') throw new CoerceError(`Attribute '${node.name}' expected value type '${node.type}' but found type '${typeName(v)}'`);
      return v;
    case 'boolean':
      if (typeof v !== 'boolean') throw new CoerceError(`Attribute '${node.name}' expected value type 'boolean' but found type '${typeName(v)}'`);
      return v;
    case 'integer':
    case 'decimal': {
      if (typeof v === 'object' || !NUMBER_RE.test(String(v))) throw new CoerceError(`Attribute '${node.name}' expected value type '${node.type}' but found type '${typeName(v)}'`);
      const isInt = !String(v).includes('.');
      if (node.type === 'integer' && !isInt) throw new CoerceError(`Attribute '${node.name}' expected value type 'integer' but found type 'decimal'`);
      if (node.type === 'decimal' && isInt) throw new CoerceError(`Attribute '${node.name}' expected value type 'decimal' but found type 'integer'`);
      return Number(v);
    }
    case 'dateTime': {
      const d = typeof v === 'string' ? new Date(v) : undefined;
      if (!d || Number.isNaN(d.getTime()) || !ISO_RE.test(d.toISOString()))
        throw new CoerceError(`Attribute '${node.name}' expected value to be a valid date`);
      return d.toISOString();
    }
    case 'complex': {
      if (!isObj(v)) throw new CoerceError(`Complex attribute '${node.name}' expected complex value but found type '${typeName(v)}'`);
      const out: Obj = {};
      for (const [k, x] of Object.entries(v)) {
        const sub = node.subs?.get(k.toLowerCase());
        if (!sub) continue;
        try {
          const c = attribute(sub, x);
          if (c !== undefined && !sub.hidden) out[sub.name] = c;
        } catch (e) {
          if (e instanceof CoerceError) throw new CoerceError(`${e.message} from complex attribute '${node.name}'`);
          throw e;
        }
      }
      return out;
    }
  }
  return v;
}

function attribute(node: Node, v: unknown): unknown {
  if (!node.inbound) return undefined;
  if (v === undefined || v === null) {
    if (node.required) throw new CoerceError(`Required attribute '${node.name}' is missing`);
    return undefined;
  }
  if (node.multi) {
    if (!Array.isArray(v)) throw new CoerceError(`Attribute '${node.name}' expected to be a collection`);
    return v.filter((x) => x !== null && x !== undefined).map((x) => single(node, x));
  }
  if (Array.isArray(v)) throw new CoerceError(`Attribute '${node.name}' is not multi-valued and must not be a collection`);
  return single(node, v);
}

/** Merges `urn:…:Ext:attr.sub` keys into the extension object (as scimmy does). */
function namespaced(body: Obj, idLc: string): Obj {
  let out: Obj = {};
  for (const [k, v] of Object.entries(body)) {
    const lk = k.toLowerCase();
    if (lk === idLc && isObj(v)) out = merge(out, v);
    else if (lk.startsWith(`${idLc}:`) && v !== undefined) {
      const parts = k.slice(idLc.length + 1).split('.');
      const leaf: Obj = {};
      let cur = leaf;
      parts.forEach((p, i) => {
        if (i === parts.length - 1) cur[p] = v;
        else cur = cur[p] = {} as Obj;
      });
      out = merge(out, leaf);
    }
  }
  return out;
}

function merge(t: Obj, s: Obj): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(t)) out[k.toLowerCase()] = v;
  for (const [k, v] of Object.entries(s)) {
    const lk = k.toLowerCase();
    if (Array.isArray(v)) out[lk] = Array.isArray(out[lk]) ? [...(out[lk] as unknown[]), ...v] : [...v];
    else if (!isObj(v)) out[lk] = v;
    else out[lk] = merge(isObj(out[lk]) ? (out[lk] as Obj) : {}, v);
  }
  return out;
}

export function compileCoercer(definition: ScimmyDefinition): Coercer {
  const core: Node[] = [];
  const extensions: Array<{ id: string; idLc: string; required: boolean; node: Node }> = [];
  for (const a of definition.attributes) {
    if ('id' in a && Array.isArray((a as ScimmyDefinition).attributes)) {
      const ext = a as ScimmyDefinition;
      const node: Node = {
        name: ext.id,
        type: 'complex',
        multi: false,
        required: false,
        inbound: true,
        hidden: false,
        subs: new Map((ext.attributes as ScimmyAttribute[]).map((s) => [s.name.toLowerCase(), compileAttribute(s)])),
      };
      extensions.push({ id: ext.id, idLc: ext.id.toLowerCase(), required: ext.required === true, node });
    } else core.push(compileAttribute(a as ScimmyAttribute));
  }
  const id = definition.id;
  const resourceType = definition.name;

  return {
    id,
    coerce(body: unknown): Obj {
      if (!isObj(body)) throw new ScimHttpError(400, 'invalidSyntax', 'The request body must be a single JSON object (a SCIM resource)');
      const declared = body.schemas;
      if (Array.isArray(declared) && declared.length > 0 && !declared.includes(id))
        throw new ScimHttpError(400, 'invalidSyntax', `The request body supplied a schema type that is incompatible with this resource (expected "${id}" in schemas)`);
      const lower: Obj = {};
      for (const [k, v] of Object.entries(body)) lower[k.toLowerCase()] = v;
      const out: Obj = {};
      try {
        const present = extensions.filter((e) => Object.entries(body).some(([k, v]) => v !== undefined && (k.toLowerCase() === e.idLc || k.toLowerCase().startsWith(`${e.idLc}:`))));
        const schemas = [...new Set([id, ...present.map((e) => e.id), ...(Array.isArray(declared) ? declared : [])])];
        for (const node of core) {
          if (node.name === 'schemas') {
            for (const s of schemas) if (typeof s !== 'string') throw new CoerceError(`Attribute 'schemas' expected value type 'reference' but found type '${typeName(s)}'`);
            out.schemas = schemas;
          } else if (node.name === 'meta') {
            out.meta = { resourceType };
          } else {
            const v = attribute(node, lower[node.name.toLowerCase()]);
            if (v !== undefined && !node.hidden) out[node.name] = v;
          }
        }
        for (const e of extensions) {
          const mixed = namespaced(body, e.idLc);
          if (Object.keys(mixed).length === 0) {
            if (e.required) throw new CoerceError(`Missing values for required schema extension '${e.id}'`);
            continue;
          }
          let v: unknown;
          try {
            v = single(e.node, mixed);
          } catch (err) {
            if (err instanceof CoerceError) throw new CoerceError(`${err.message} in schema extension '${e.id}'`);
            throw err;
          }
          if (hasValues(v)) out[e.id] = v;
          else out.schemas = (out.schemas as string[]).filter((s) => s !== e.id);
        }
      } catch (err) {
        if (err instanceof CoerceError) throw new ScimHttpError(400, 'invalidValue', err.message);
        throw err;
      }
      return out;
    },
  };
}

function hasValues(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (Array.isArray(v)) return v.some(hasValues);
  if (isObj(v)) return Object.values(v).some(hasValues);
  return true;
}

let users: Coercer | undefined;
let groups: Coercer | undefined;

/** Coercers for the declared User (with extensions) and Group schemas; built on first use, after declareScimmy. */
export function userCoercer(): Coercer {
  return (users ??= compileCoercer(SCIMMY.Schemas.User.definition as unknown as ScimmyDefinition));
}
export function groupCoercer(): Coercer {
  return (groups ??= compileCoercer(SCIMMY.Schemas.Group.definition as unknown as ScimmyDefinition));
}
