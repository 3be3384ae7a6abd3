/** Mapping helpers: read vendor objects into the flat shapes of `SourceUser`. */

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A non-empty string for scalars (numbers and booleans stringified), else undefined. */
export function str(v: unknown): string | undefined {
  if (typeof v === 'string') return v.length > 0 ? v : undefined;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'boolean') return String(v);
  if (v instanceof Date && !Number.isNaN(v.getTime())) return v.toISOString();
  return undefined;
}

/**
 * Value at a dotted path. Keys may themselves contain dots (SCIM schema URNs such as
 * `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`), so at each level the longest
 * key that prefixes the remaining path wins. Key matching is case-insensitive as a fallback.
 */
export function getPath(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  let rest = path;
  while (rest.length > 0) {
    if (!isObj(cur)) return undefined;
    const keys = Object.keys(cur).sort((a, b) => b.length - a.length);
    const hit =
      keys.find((k) => rest === k || rest.startsWith(`${k}.`)) ??
      keys.find((k) => rest.toLowerCase() === k.toLowerCase() || rest.toLowerCase().startsWith(`${k.toLowerCase()}.`));
    if (hit === undefined) return undefined;
    cur = cur[hit];
    rest = rest.slice(hit.length + 1);
  }
  return cur;
}

/** `{ target: sourcePath }` → flat attributes, skipping empty values. */
export function mapAttributes(obj: unknown, map: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [target, path] of Object.entries(map)) {
    const v = str(getPath(obj, path));
    if (v !== undefined) out[target] = v;
  }
  return out;
}

/** Role names from a value that may be a string, a list of strings, or a list of `{value|display|name}`. */
export function roleList(v: unknown): string[] {
  const list = Array.isArray(v) ? v : v === undefined || v === null ? [] : [v];
  const out: string[] = [];
  for (const r of list) {
    const name = isObj(r) ? (str(r.value) ?? str(r.display) ?? str(r.name)) : str(r);
    if (name !== undefined && !out.includes(name)) out.push(name);
  }
  return out;
}

/** Drops undefined properties (keeps objects comparable and JSON-clean). */
export function compact<T extends Record<string, unknown>>(o: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out as T;
}

/** Collects an async iterable's pages into chunks of at most `size` items (for streaming members). */
export async function* chunked<T>(items: AsyncIterable<T>, size: number): AsyncIterable<T[]> {
  let buf: T[] = [];
  for await (const item of items) {
    buf.push(item);
    if (buf.length >= size) {
      yield buf;
      buf = [];
    }
  }
  if (buf.length > 0) yield buf;
}
