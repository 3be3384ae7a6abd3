import type { CompareOp, FilterValue } from '../../store/identities.ts';
import { ScimHttpError } from './errors.ts';

/**
 * SCIM filter expressions (RFC 7644 §3.4.2.2) parsed into a tree, and PATCH paths
 * (§3.5.2) that contain them.
 *
 *   filter    = attrExp / logExp / valuePath / "not" "(" filter ")" / "(" filter ")"
 *   attrExp   = attrPath "pr" / attrPath compareOp compValue
 *   valuePath = attrPath "[" valFilter "]"
 *
 * Precedence: not, then and, then or. Operators and attribute names are case-insensitive.
 * Leniencies real clients need: values without quotes (`userName sw O`, used by Microsoft's
 * SCIM collection), single-quoted strings, and Entra's `emails[type eq "work"].value eq "x"`,
 * read as one element matching both conditions.
 */

export interface AttrPath {
  /** Schema URN prefix as written, if any (`urn:…:enterprise:2.0:User`). */
  urn?: string;
  attr: string;
  sub?: string;
}

export type FilterNode =
  | { kind: 'and' | 'or'; items: FilterNode[] }
  | { kind: 'not'; item: FilterNode }
  | { kind: 'cmp'; path: AttrPath; op: CompareOp; value?: FilterValue }
  | { kind: 'valuePath'; path: AttrPath; filter: FilterNode };

/** A PATCH path: `attr`, `attr.sub`, `urn:…:attr`, `attr[filter]`, `attr[filter].sub`. */
export interface PatchPath {
  path: AttrPath;
  filter?: FilterNode;
  /** Sub-attribute after a filter (`emails[type eq "work"].value`). */
  sub?: string;
}

const OPS = new Set<CompareOp>(['eq', 'ne', 'co', 'sw', 'ew', 'gt', 'ge', 'lt', 'le', 'pr']);
const MAX_LENGTH = 4096;
const MAX_DEPTH = 16;
const MAX_NODES = 200;
const NAME_RE = /^\$?[A-Za-z][\w-]*$/;

type Token = { t: '(' | ')' | '[' | ']' } | { t: 'str'; v: string } | { t: 'word'; v: string };

function invalid(detail: string): never {
  throw new ScimHttpError(400, 'invalidFilter', detail);
}

function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
    } else if (c === '(' || c === ')' || c === '[' || c === ']') {
      out.push({ t: c });
      i++;
    } else if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (j >= text.length) invalid('unterminated string in filter');
      try {
        out.push({ t: 'str', v: JSON.parse(text.slice(i, j + 1)) as string });
      } catch {
        invalid(`invalid escape in filter string ${text.slice(i, j + 1)}`);
      }
      i = j + 1;
    } else if (c === "'") {
      const j = text.indexOf("'", i + 1);
      if (j < 0) invalid('unterminated string in filter');
      out.push({ t: 'str', v: text.slice(i + 1, j) });
      i = j + 1;
    } else {
      let j = i;
      while (j < text.length && !' \t\n\r()[]"'.includes(text[j]!)) j++;
      out.push({ t: 'word', v: text.slice(i, j) });
      i = j;
    }
  }
  return out;
}

/** `urn:…:User:name.givenName` → {urn, attr: name, sub: givenName}. */
export function attrPath(word: string): AttrPath {
  let urn: string | undefined;
  let rest = word;
  if (/^urn:/i.test(word)) {
    const at = word.lastIndexOf(':');
    urn = word.slice(0, at);
    rest = word.slice(at + 1);
  }
  const dot = rest.indexOf('.');
  const attr = dot < 0 ? rest : rest.slice(0, dot);
  const sub = dot < 0 ? undefined : rest.slice(dot + 1);
  if (!NAME_RE.test(attr) || (sub !== undefined && !NAME_RE.test(sub))) invalid(`"${word}" is not an attribute path`);
  return { ...(urn ? { urn } : {}), attr, ...(sub !== undefined ? { sub } : {}) };
}

class Parser {
  private pos = 0;
  private nodes = 0;
  private readonly tokens: Token[];
  constructor(tokens: Token[]) {
    this.tokens = tokens;
  }

  done(): boolean {
    return this.pos >= this.tokens.length;
  }

  private peek(): Token | undefined {
    return this.tokens[this.pos];
  }

  private peekWord(): string | undefined {
    const t = this.peek();
    return t?.t === 'word' ? t.v.toLowerCase() : undefined;
  }

  private expect(t: '(' | ')' | '[' | ']'): void {
    if (this.peek()?.t !== t) invalid(`expected "${t}" in filter`);
    this.pos++;
  }

  private count<T>(n: T): T {
    if (++this.nodes > MAX_NODES) invalid(`filter has more than ${MAX_NODES} terms`);
    return n;
  }

  or(depth: number): FilterNode {
    if (depth > MAX_DEPTH) invalid(`filter nests deeper than ${MAX_DEPTH} levels`);
    const items = [this.and(depth)];
    while (this.peekWord() === 'or') {
      this.pos++;
      items.push(this.and(depth));
    }
    return items.length === 1 ? items[0]! : this.count({ kind: 'or', items });
  }

  private and(depth: number): FilterNode {
    const items = [this.unary(depth)];
    while (this.peekWord() === 'and') {
      this.pos++;
      items.push(this.unary(depth));
    }
    return items.length === 1 ? items[0]! : this.count({ kind: 'and', items });
  }

  private unary(depth: number): FilterNode {
    if (this.peekWord() === 'not' && this.tokens[this.pos + 1]?.t === '(') {
      this.pos += 2;
      const item = this.or(depth + 1);
      this.expect(')');
      return this.count({ kind: 'not', item });
    }
    if (this.peek()?.t === '(') {
      this.pos++;
      const item = this.or(depth + 1);
      this.expect(')');
      return item;
    }
    return this.attrExp(depth);
  }

  private attrExp(depth: number): FilterNode {
    const t = this.peek();
    if (t?.t !== 'word') invalid(t ? 'expected an attribute name in filter' : 'filter ends early');
    this.pos++;
    const path = attrPath(t.v);
    if (this.peek()?.t === '[') {
      this.pos++;
      const inner = this.or(depth + 1);
      this.expect(']');
      const next = this.peek();
      if (next?.t === 'word' && next.v.startsWith('.')) {
        // Entra: emails[type eq "work"].value eq "x" — one element satisfying both.
        this.pos++;
        const sub = next.v.slice(1);
        if (!NAME_RE.test(sub)) invalid(`"${next.v}" is not a sub-attribute`);
        const cmp = this.comparison({ attr: sub });
        return this.count({ kind: 'valuePath', path, filter: this.count({ kind: 'and', items: [inner, cmp] }) });
      }
      return this.count({ kind: 'valuePath', path, filter: inner });
    }
    return this.comparison(path);
  }

  private comparison(path: AttrPath): FilterNode {
    const opWord = this.peekWord();
    if (!opWord || !OPS.has(opWord as CompareOp)) invalid(`expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr) after "${formatPath(path)}"`);
    this.pos++;
    const op = opWord as CompareOp;
    if (op === 'pr') return this.count({ kind: 'cmp', path, op });
    return this.count({ kind: 'cmp', path, op, value: this.value() });
  }

  private value(): FilterValue {
    const t = this.peek();
    if (!t || (t.t !== 'str' && t.t !== 'word')) invalid('expected a value in filter');
    this.pos++;
    if (t.t === 'str') return t.v;
    const w = t.v;
    const lw = w.toLowerCase();
    if (lw === 'true') return true;
    if (lw === 'false') return false;
    if (lw === 'null') return null;
    if (/^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(w)) return Number(w);
    if (lw === 'and' || lw === 'or' || lw === 'not') invalid(`expected a value before "${w}"`);
    // Unquoted text (not RFC 7644; Microsoft's collection sends it).
    return w;
  }
}

export function parseFilter(text: string): FilterNode {
  if (typeof text !== 'string' || text.trim() === '') invalid('filter is empty');
  if (text.length > MAX_LENGTH) invalid(`filter is longer than ${MAX_LENGTH} characters`);
  const p = new Parser(tokenize(text));
  const node = p.or(0);
  if (!p.done()) invalid('unexpected text after the end of the filter');
  return node;
}

export function parsePatchPath(text: string): PatchPath {
  if (typeof text !== 'string' || text.trim() === '') throw new ScimHttpError(400, 'invalidPath', 'path is empty');
  const s = text.trim();
  const open = s.indexOf('[');
  try {
    if (open < 0) return { path: attrPath(s) };
    const close = s.lastIndexOf(']');
    if (close < open) throw new ScimHttpError(400, 'invalidPath', `path "${text}" has an unclosed "["`);
    const after = s.slice(close + 1);
    if (after !== '' && !/^\.\$?[A-Za-z][\w-]*$/.test(after)) throw new ScimHttpError(400, 'invalidPath', `path "${text}" is not valid after "]"`);
    return { path: attrPath(s.slice(0, open)), filter: parseFilter(s.slice(open + 1, close)), ...(after ? { sub: after.slice(1) } : {}) };
  } catch (e) {
    if (e instanceof ScimHttpError && e.scimType === 'invalidFilter') throw new ScimHttpError(400, 'invalidPath', `path "${text}": ${e.message}`);
    throw e;
  }
}

export function formatPath(p: AttrPath): string {
  return `${p.urn ? `${p.urn}:` : ''}${p.attr}${p.sub ? `.${p.sub}` : ''}`;
}

/** A filter as RFC 7644 text (strings quoted), e.g. to hand a normalised path to scimmy. */
export function formatFilter(n: FilterNode): string {
  switch (n.kind) {
    case 'and':
    case 'or':
      return n.items.map((i) => (i.kind === 'or' && n.kind === 'and' ? `(${formatFilter(i)})` : formatFilter(i))).join(` ${n.kind} `);
    case 'not':
      return `not (${formatFilter(n.item)})`;
    case 'valuePath':
      return `${formatPath(n.path)}[${formatFilter(n.filter)}]`;
    case 'cmp':
      return n.op === 'pr' ? `${formatPath(n.path)} pr` : `${formatPath(n.path)} ${n.op} ${JSON.stringify(n.value)}`;
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function field(o: Obj, name: string): unknown {
  const lower = name.toLowerCase();
  for (const k of Object.keys(o)) if (k.toLowerCase() === lower) return o[k];
  return undefined;
}

/**
 * Evaluates a filter on one JSON value (an element of a multi-valued attribute in a PATCH
 * path or an `attributes` selection). Strings compare case-insensitively, booleans also
 * match "True"/"False" strings (Entra writes `roles[primary eq "True"]`).
 */
export function matches(n: FilterNode, o: Obj): boolean {
  switch (n.kind) {
    case 'and':
      return n.items.every((i) => matches(i, o));
    case 'or':
      return n.items.some((i) => matches(i, o));
    case 'not':
      return !matches(n.item, o);
    case 'valuePath': {
      const v = field(o, n.path.attr);
      const list = Array.isArray(v) ? v : v === undefined ? [] : [v];
      return list.some((x) => isObj(x) && matches(n.filter, x));
    }
    case 'cmp': {
      let v = field(o, n.path.attr);
      if (n.path.sub !== undefined) v = isObj(v) ? field(v, n.path.sub) : undefined;
      return compareValue(v, n.op, n.value);
    }
  }
}

function compareValue(actual: unknown, op: CompareOp, expected: FilterValue | undefined): boolean {
  if (op === 'pr') return actual !== undefined && actual !== null && actual !== '' && !(Array.isArray(actual) && actual.length === 0);
  if (Array.isArray(actual)) return actual.some((a) => compareValue(a, op, expected));
  if (actual === undefined || actual === null) return op === 'ne' ? expected !== null : op === 'eq' && expected === null;
  if (typeof actual === 'boolean') {
    const e = typeof expected === 'boolean' ? expected : typeof expected === 'string' && /^(true|false)$/i.test(expected) ? expected.toLowerCase() === 'true' : undefined;
    if (op === 'eq') return e === actual;
    if (op === 'ne') return e !== actual;
    return false;
  }
  const a = String(actual).toLowerCase();
  const e = String(expected).toLowerCase();
  switch (op) {
    case 'eq':
      return a === e;
    case 'ne':
      return a !== e;
    case 'co':
      return a.includes(e);
    case 'sw':
      return a.startsWith(e);
    case 'ew':
      return a.endsWith(e);
    case 'gt':
      return a > e;
    case 'ge':
      return a >= e;
    case 'lt':
      return a < e;
    case 'le':
      return a <= e;
  }
  return false;
}

/** For a filter made only of `eq` joined by `and`: the element it describes (to create one when none matches). */
export function equalities(n: FilterNode): Obj | undefined {
  if (n.kind === 'cmp' && n.op === 'eq' && n.path.sub === undefined && n.path.urn === undefined) return { [n.path.attr]: n.value };
  if (n.kind === 'and') {
    const out: Obj = {};
    for (const i of n.items) {
      const part = equalities(i);
      if (!part) return undefined;
      Object.assign(out, part);
    }
    return out;
  }
  return undefined;
}
