import { ScimHttpError } from './errors.ts';
import { type FilterNode, matches, parsePatchPath } from './filter.ts';

/**
 * `attributes` / `excludedAttributes` (RFC 7644 §3.9, §3.4.2.5) applied to a rendered
 * resource. `id` and `schemas` are always returned. Paths may be qualified by a schema URN,
 * name a sub-attribute (`name.givenName`, `emails.value`), a whole extension
 * (`urn:…:enterprise:2.0:User`), or carry a value filter (`emails[type eq "work"]`), as
 * Microsoft's collection asks. `attributes` wins when both are given.
 */

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

interface Sel {
  /** Extension URN (lower case) when the path is inside an extension; the core URN is dropped. */
  ext?: string;
  /** Top-level attribute (lower case); undefined selects the whole extension. */
  attr?: string;
  sub?: string;
  filter?: FilterNode;
}

export interface Projection {
  mode: 'include' | 'exclude';
  sels: Sel[];
}

const ALWAYS = new Set(['id', 'schemas']);

function one(v: unknown): string | undefined {
  const x = Array.isArray(v) ? v[0] : v;
  return typeof x === 'string' && x.trim() !== '' ? x : undefined;
}

/** Splits on commas outside brackets and quotes. */
function split(list: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quote = false;
  let cur = '';
  for (const c of list) {
    if (c === '"') quote = !quote;
    else if (!quote && c === '[') depth++;
    else if (!quote && c === ']') depth--;
    if (c === ',' && depth === 0 && !quote) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out.map((s) => s.trim()).filter((s) => s !== '');
}

function selection(text: string, coreUrn: string, extensions: string[]): Sel {
  const lower = text.toLowerCase();
  const whole = extensions.find((e) => e.toLowerCase() === lower);
  if (whole) return { ext: lower };
  let p;
  try {
    p = parsePatchPath(text);
  } catch (e) {
    throw new ScimHttpError(400, 'invalidFilter', `attribute list: ${(e as Error).message}`);
  }
  const urn = p.path.urn?.toLowerCase();
  const sel: Sel = { attr: p.path.attr.toLowerCase() };
  if (urn && urn !== coreUrn.toLowerCase()) sel.ext = urn;
  const sub = p.sub ?? p.path.sub;
  if (sub) sel.sub = sub.toLowerCase();
  if (p.filter) sel.filter = p.filter;
  return sel;
}

/** Parses the query's attribute lists; undefined when the client asked for the default representation. */
export function projectionOf(query: Record<string, unknown>, coreUrn: string, extensions: string[]): Projection | undefined {
  const attributes = one(query.attributes);
  const excluded = one(query.excludedAttributes);
  const text = attributes ?? excluded;
  if (text === undefined) return undefined;
  return { mode: attributes !== undefined ? 'include' : 'exclude', sels: split(text).map((s) => selection(s, coreUrn, extensions)) };
}

/** Whether the projection keeps any part of a (core) top-level attribute, e.g. to skip loading members. */
export function wants(p: Projection | undefined, attr: string): boolean {
  if (!p) return true;
  const a = attr.toLowerCase();
  if (p.mode === 'include') return p.sels.some((s) => !s.ext && s.attr === a);
  return !p.sels.some((s) => !s.ext && s.attr === a && !s.sub && !s.filter);
}

function key(o: Obj, lower: string): string | undefined {
  for (const k of Object.keys(o)) if (k.toLowerCase() === lower) return k;
  return undefined;
}

function pickSub(v: unknown, sub: string | undefined, filter: FilterNode | undefined): unknown {
  if (Array.isArray(v)) {
    const list = v.filter((x) => !filter || (isObj(x) && matches(filter, x)));
    if (!sub) return list;
    const picked = list.flatMap((x) => {
      if (!isObj(x)) return [];
      const k = key(x, sub);
      return k === undefined ? [] : [{ [k]: x[k] }];
    });
    return picked;
  }
  if (!sub) return v;
  if (!isObj(v)) return undefined;
  const k = key(v, sub);
  return k === undefined ? undefined : { [k]: v[k] };
}

function mergeInto(target: Obj, k: string, v: unknown): void {
  if (v === undefined) return;
  const cur = target[k];
  if (Array.isArray(cur) && Array.isArray(v)) {
    // Same list selected twice (emails.value, emails.type): merge element-wise.
    target[k] = cur.length === v.length ? cur.map((c, i) => (isObj(c) && isObj(v[i]) ? { ...c, ...(v[i] as Obj) } : c)) : v;
  } else if (isObj(cur) && isObj(v)) target[k] = { ...cur, ...v };
  else target[k] = v;
}

function removeFrom(o: Obj, sel: Sel): void {
  const k = key(o, sel.attr!);
  if (k === undefined) return;
  if (!sel.sub && !sel.filter) {
    delete o[k];
    return;
  }
  const v = o[k];
  if (Array.isArray(v)) {
    const kept = sel.filter && !sel.sub ? v.filter((x) => !(isObj(x) && matches(sel.filter!, x))) : v;
    o[k] = kept.map((x) => {
      if (!sel.sub || !isObj(x) || (sel.filter && !matches(sel.filter, x))) return x;
      const { [key(x, sel.sub) ?? '']: _gone, ...rest } = x;
      return rest;
    });
  } else if (isObj(v) && sel.sub) {
    const { [key(v, sel.sub) ?? '']: _gone, ...rest } = v;
    o[k] = rest;
  }
}

export function project(resource: Obj, p: Projection | undefined): Obj {
  if (!p) return resource;
  if (p.mode === 'include') {
    const out: Obj = {};
    for (const k of Object.keys(resource)) if (ALWAYS.has(k)) out[k] = resource[k];
    for (const s of p.sels) {
      if (s.ext) {
        const ek = key(resource, s.ext);
        if (ek === undefined || !isObj(resource[ek])) continue;
        const ext = resource[ek] as Obj;
        if (!s.attr) {
          out[ek] = ext;
          continue;
        }
        const ak = key(ext, s.attr);
        if (ak === undefined) continue;
        const part: Obj = isObj(out[ek]) ? (out[ek] as Obj) : {};
        mergeInto(part, ak, pickSub(ext[ak], s.sub, s.filter));
        if (Object.keys(part).length > 0) out[ek] = part;
        continue;
      }
      const k = key(resource, s.attr!);
      if (k === undefined || ALWAYS.has(k)) continue;
      mergeInto(out, k, pickSub(resource[k], s.sub, s.filter));
    }
    return out;
  }
  const out: Obj = structuredClone(resource);
  for (const s of p.sels) {
    if (s.ext) {
      const ek = key(out, s.ext);
      if (ek === undefined || !isObj(out[ek])) continue;
      if (!s.attr) {
        delete out[ek];
        if (Array.isArray(out.schemas)) out.schemas = (out.schemas as string[]).filter((x) => x !== ek);
      } else removeFrom(out[ek] as Obj, s);
      continue;
    }
    if (ALWAYS.has(s.attr!)) continue;
    removeFrom(out, s);
  }
  return out;
}
