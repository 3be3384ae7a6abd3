import type { EmailField, GroupField, GroupFilter, StoreFilter, UserField, UserFilter } from '../../store/identities.ts';
import { ScimHttpError } from './errors.ts';
import { type AttrPath, type FilterNode, formatPath, parseFilter } from './filter.ts';
import { CORE_GROUP, CORE_USER } from './schema.ts';

/**
 * SCIM filters → store filters. Each filterable attribute is an indexed column (or the
 * person_emails / memberships tables); the store compiles the result to SQL. Anything else
 * is refused with 400 invalidFilter naming what is supported; nothing is filtered in memory.
 */

export const USER_FILTER_ATTRIBUTES =
  'id, userName, externalId, displayName, name.givenName, name.familyName, active, emails (value, type, primary), groups.value, meta.created, meta.lastModified';
export const GROUP_FILTER_ATTRIBUTES = 'id, displayName, externalId, members.value, meta.created, meta.lastModified';

function invalid(detail: string): never {
  throw new ScimHttpError(400, 'invalidFilter', detail);
}

function coreName(p: AttrPath, core: string, supported: string): { attr: string; sub: string | undefined } {
  if (p.urn !== undefined && p.urn.toLowerCase() !== core.toLowerCase())
    invalid(`filter on "${formatPath(p)}" is not supported; supported: ${supported}`);
  return { attr: p.attr.toLowerCase(), sub: p.sub?.toLowerCase() };
}

type Mapper<F extends string, S extends string> = (n: Extract<FilterNode, { kind: 'cmp' | 'valuePath' }>) => StoreFilter<F, S>;

function walk<F extends string, S extends string>(n: FilterNode, leaf: Mapper<F, S>): StoreFilter<F, S> {
  switch (n.kind) {
    case 'and':
      return { and: n.items.map((i) => walk(i, leaf)) };
    case 'or':
      return { or: n.items.map((i) => walk(i, leaf)) };
    case 'not':
      return { not: walk(n.item, leaf) };
    default:
      return leaf(n);
  }
}

const USER_SIMPLE: Record<string, UserField> = { id: 'id', username: 'userName', externalid: 'externalId', displayname: 'displayName', active: 'active' };
const EMAIL_SUB: Record<string, EmailField> = { value: 'value', type: 'type', primary: 'primary' };

function emailFilter(n: FilterNode): StoreFilter<EmailField> {
  return walk<EmailField, never>(n, (leaf) => {
    if (leaf.kind === 'valuePath') invalid('filters inside emails[...] cannot nest');
    const f = EMAIL_SUB[leaf.path.attr.toLowerCase()];
    if (!f || leaf.path.sub !== undefined || leaf.path.urn !== undefined) invalid(`emails.${formatPath(leaf.path)} cannot be filtered; supported: value, type, primary`);
    return { field: f, op: leaf.op, value: leaf.value ?? null };
  });
}

/** A membership test: only `value eq "<id>"` (the index is on ids). */
function linkFilter<F extends string>(n: FilterNode, field: F, label: string): StoreFilter<F> {
  return walk<F, never>(n, (leaf) => {
    if (leaf.kind === 'valuePath' || leaf.path.attr.toLowerCase() !== 'value' || leaf.path.sub !== undefined || leaf.op !== 'eq')
      invalid(`${label} can only be filtered with value eq "<id>"`);
    return { field, op: 'eq', value: leaf.value ?? null };
  });
}

export function userFilter(text: string): UserFilter {
  return toUserFilter(parseFilter(text));
}

export function toUserFilter(node: FilterNode): UserFilter {
  return walk<UserField, EmailField>(node, (leaf) => {
    const { attr, sub } = coreName(leaf.path, CORE_USER, USER_FILTER_ATTRIBUTES);
    if (leaf.kind === 'valuePath') {
      if (sub !== undefined) invalid(`"${formatPath(leaf.path)}[...]" is not a valid filter`);
      if (attr === 'emails') return { sub: 'emails', where: emailFilter(leaf.filter) };
      if (attr === 'groups') return linkFilter(leaf.filter, 'group' as UserField, 'groups') as UserFilter;
      return invalid(`filter on "${formatPath(leaf.path)}[...]" is not supported; supported: ${USER_FILTER_ATTRIBUTES}`);
    }
    const cmp = { op: leaf.op, value: leaf.value ?? null };
    if (sub === undefined && USER_SIMPLE[attr]) return { field: USER_SIMPLE[attr], ...cmp };
    if (attr === 'name' && sub === 'givenname') return { field: 'givenName', ...cmp };
    if (attr === 'name' && sub === 'familyname') return { field: 'familyName', ...cmp };
    if (attr === 'meta' && sub === 'created') return { field: 'created', ...cmp };
    if (attr === 'meta' && sub === 'lastmodified') return { field: 'lastModified', ...cmp };
    if (attr === 'emails') {
      const f = EMAIL_SUB[sub ?? 'value'];
      if (!f) invalid(`emails.${sub} cannot be filtered; supported: value, type, primary`);
      return { sub: 'emails', where: { field: f, ...cmp } };
    }
    if (attr === 'groups' && (sub === undefined || sub === 'value')) {
      if (leaf.op !== 'eq') invalid('groups can only be filtered with value eq "<id>"');
      return { field: 'group', ...cmp };
    }
    return invalid(`filter on "${formatPath(leaf.path)}" is not supported; supported: ${USER_FILTER_ATTRIBUTES}`);
  });
}

export function groupFilter(text: string): GroupFilter {
  return walk<GroupField, never>(parseFilter(text), (leaf): GroupFilter => {
    const { attr, sub } = coreName(leaf.path, CORE_GROUP, GROUP_FILTER_ATTRIBUTES);
    if (leaf.kind === 'valuePath') {
      if (attr === 'members' && sub === undefined) return linkFilter<GroupField>(leaf.filter, 'member', 'members');
      return invalid(`filter on "${formatPath(leaf.path)}[...]" is not supported; supported: ${GROUP_FILTER_ATTRIBUTES}`);
    }
    const cmp = { op: leaf.op, value: leaf.value ?? null };
    if (sub === undefined && attr === 'id') return { field: 'id', ...cmp };
    if (sub === undefined && attr === 'displayname') return { field: 'displayName', ...cmp };
    if (sub === undefined && attr === 'externalid') return { field: 'externalId', ...cmp };
    if (attr === 'meta' && sub === 'created') return { field: 'created', ...cmp };
    if (attr === 'meta' && sub === 'lastmodified') return { field: 'lastModified', ...cmp };
    if (attr === 'members' && (sub === undefined || sub === 'value')) {
      if (leaf.op !== 'eq') invalid('members can only be filtered with value eq "<id>"');
      return { field: 'member', ...cmp };
    }
    return invalid(`filter on "${formatPath(leaf.path)}" is not supported; supported: ${GROUP_FILTER_ATTRIBUTES}`);
  });
}
