import SCIMMY from 'scimmy';
import type { GroupInput, GroupRecord, IdentityRepo, Profile, UserInput, UserRecord, WriteContext } from '../../store/identities.ts';
import { scimmyError, toScimmyError } from './errors.ts';
import { CORE_GROUP, ENTERPRISE_USER, LOCKSTEP_USER, declareScimmy } from './schema.ts';
import { wantsAttribute } from './filters.ts';

/**
 * The scimmy handlers (ingress/egress/degress) for Users and Groups, and the mapping between
 * SCIM resources and the identity store.
 *
 * scimmy keeps one handler per resource type for the whole process, so the handlers hold no
 * state: everything about the request (tenant, store, base URL, actor) comes in `ctx`, which
 * the route creates per request.
 */

export interface ScimContext {
  /** The tenant: the source whose token authenticated the request. */
  sourceId: string;
  repo: IdentityRepo;
  /** Absolute base URL of the SCIM service, e.g. https://lockstep.example/scim/v2 */
  base: string;
  write: WriteContext;
  /**
   * Set while scimmy runs a PATCH: egress records the version it read so the write can detect
   * a concurrent change, and Group egress skips members (membership ops never reach scimmy).
   */
  patch?: { version?: number };
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A scimmy schema instance as plain JSON (its toJSON drops `returned: never` attributes such as password). */
export function plain<T = Obj>(v: unknown): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

function iso(d: Date): string {
  return d.toISOString();
}

// ---------- egress: store → SCIM ----------

export function toScimUser(u: UserRecord, base: string): Obj {
  const { schemas: _s, id: _i, meta: _m, groups: _g, password: _p, ...rest } = u.resource as Obj;
  return {
    ...rest,
    schemas: schemasOf(u.resource),
    id: u.id,
    userName: u.userName,
    ...(u.externalId !== null ? { externalId: u.externalId } : {}),
    active: u.active,
    groups: u.groups.map((g) => ({ value: g.id, display: g.displayName, $ref: `${base}/Groups/${g.id}`, type: 'direct' })),
    meta: {
      resourceType: 'User',
      created: iso(u.created),
      lastModified: iso(u.lastModified),
      version: `W/"${u.version}"`,
      location: `${base}/Users/${u.id}`,
    },
  };
}

export function toScimGroup(g: GroupRecord, base: string): Obj {
  const { schemas: _s, id: _i, meta: _m, members: _mm, ...rest } = g.resource as Obj;
  return {
    ...rest,
    schemas: schemasOf(g.resource),
    id: g.id,
    displayName: g.displayName,
    ...(g.externalId !== null ? { externalId: g.externalId } : {}),
    ...(g.members ? { members: g.members.map((m) => ({ value: m.id, ...(m.display ? { display: m.display } : {}), $ref: `${base}/Users/${m.id}`, type: 'User' })) } : {}),
    meta: {
      resourceType: 'Group',
      created: iso(g.created),
      lastModified: iso(g.lastModified),
      version: `W/"${g.version}"`,
      location: `${base}/Groups/${g.id}`,
    },
  };
}

function schemasOf(resource: Obj): string[] | undefined {
  return Array.isArray(resource.schemas) ? (resource.schemas as string[]) : undefined;
}

// ---------- ingress: SCIM → store ----------

/** Keeps the extension URNs in `schemas` only while the resource has data for them. */
function storedResource(instance: Obj, drop: string[]): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(instance)) if (!drop.includes(k)) out[k] = v;
  if (Array.isArray(out.schemas)) {
    out.schemas = (out.schemas as string[]).filter((s) => !s.startsWith('urn:ietf:params:scim:schemas:extension:') || isObj(out[s]));
  }
  return out;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

function primaryEmail(emails: unknown): string | undefined {
  if (!Array.isArray(emails)) return undefined;
  const list = emails.filter(isObj);
  const pick = list.find((e) => e.primary === true) ?? list.find((e) => String(e.type ?? '').toLowerCase() === 'work') ?? list[0];
  return str(pick?.value);
}

/** Roles as policy sees them: `value`, else `display`, of each role (plain strings were normalised to `{value}`). */
function roleNames(roles: unknown): string[] {
  if (!Array.isArray(roles)) return [];
  const out: string[] = [];
  for (const r of roles) {
    const name = typeof r === 'string' ? r : isObj(r) ? (str(r.value) ?? str(r.display)) : undefined;
    if (name && !out.includes(name)) out.push(name);
  }
  return out;
}

/** Maps a validated SCIM User (scimmy "in" instance as JSON) to the store's input. */
export function toUserInput(instance: Obj): UserInput {
  const ent = isObj(instance[ENTERPRISE_USER]) ? (instance[ENTERPRISE_USER] as Obj) : {};
  const ls = isObj(instance[LOCKSTEP_USER]) ? (instance[LOCKSTEP_USER] as Obj) : {};
  const name = isObj(instance.name) ? instance.name : {};
  const email = primaryEmail(instance.emails);
  const attributes: Record<string, string> = {};
  const put = (k: string, v: unknown) => {
    const s = str(v);
    if (s !== undefined) attributes[k] = s;
  };
  put('department', ent.department);
  put('division', ent.division);
  put('organization', ent.organization);
  put('costCenter', ent.costCenter);
  put('employeeNumber', ent.employeeNumber);
  put('title', instance.title);
  put('userType', instance.userType);
  put('employeeType', ls.employeeType ?? instance.userType);
  put('site', ls.site);
  put('terminationDate', ls.terminationDate);
  put('contractEndDate', ls.contractEndDate);
  const profile: Profile = {
    ...(str(name.givenName) ? { givenName: str(name.givenName) } : {}),
    ...(str(name.familyName) ? { familyName: str(name.familyName) } : {}),
    ...(email ? { email } : {}),
    roles: roleNames(instance.roles),
    attributes,
  };
  return {
    userName: String(instance.userName),
    externalId: str(instance.externalId) ?? null,
    displayName: str(instance.displayName) ?? null,
    // RFC 7643 leaves a missing `active` to the provider; an account the IdP created is active unless it says otherwise.
    active: instance.active !== false,
    email: email ?? null,
    profile,
    resource: storedResource(instance, ['id', 'meta', 'groups', 'password']),
  };
}

export function toGroupInput(instance: Obj): { input: GroupInput; memberIds: string[] } {
  const members = Array.isArray(instance.members) ? instance.members : [];
  const memberIds = members.map((m) => (isObj(m) ? str(m.value) : undefined)).filter((v): v is string => v !== undefined);
  return {
    input: {
      displayName: String(instance.displayName),
      externalId: str(instance.externalId) ?? null,
      resource: storedResource(instance, ['id', 'meta', 'members']),
    },
    memberIds,
  };
}

/** Stable JSON (sorted keys) to compare stored and incoming values. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (isObj(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x));
}

function sameUser(cur: UserRecord, next: UserInput): boolean {
  return (
    cur.userName === next.userName &&
    cur.externalId === (next.externalId ?? null) &&
    cur.displayName === (next.displayName ?? null) &&
    cur.active === next.active &&
    (cur.email ?? null) === (next.email ? next.email.toLowerCase() : null) &&
    canonical(cur.profile) === canonical(next.profile) &&
    canonical(cur.resource) === canonical(next.resource)
  );
}

function sameGroup(cur: GroupRecord, next: GroupInput): boolean {
  return cur.displayName === next.displayName && cur.externalId === (next.externalId ?? null) && canonical(cur.resource) === canonical(next.resource);
}

// ---------- scimmy handlers ----------

interface ScimmyResource {
  id?: string;
  attributes?: unknown;
}

function guard<A extends unknown[], R>(fn: (...a: A) => Promise<R>): (...a: A) => Promise<R> {
  return async (...a: A) => {
    try {
      return await fn(...a);
    } catch (err) {
      throw toScimmyError(err);
    }
  };
}

function notFound(kind: string, id: string | undefined): never {
  throw scimmyError(404, null, `${kind} ${id ?? ''} not found`);
}

function listViaEgress(): never {
  // Lists are served by routes.ts straight from the store with SQL paging; scimmy's ListResponse pages in memory.
  throw scimmyError(500, null, 'list reads do not go through egress');
}

const userHandlers = {
  egress: guard(async (resource: ScimmyResource, ctx: ScimContext) => {
    if (!resource.id) listViaEgress();
    const u = await ctx.repo.getUser(ctx.sourceId, resource.id);
    if (!u) notFound('User', resource.id);
    if (ctx.patch) ctx.patch.version = u.version;
    return toScimUser(u, ctx.base);
  }),
  ingress: guard(async (resource: ScimmyResource, instance: unknown, ctx: ScimContext) => {
    const input = toUserInput(plain(instance));
    if (!resource.id) return toScimUser(await ctx.repo.createUser(ctx.sourceId, input, ctx.write), ctx.base);
    const cur = await ctx.repo.getUser(ctx.sourceId, resource.id);
    if (!cur) notFound('User', resource.id);
    // Okta PUTs the whole user on every profile push and PATCHes password syncs; an unchanged user is not a change.
    if (sameUser(cur, input)) return toScimUser(cur, ctx.base);
    const rec = await ctx.repo.replaceUser(ctx.sourceId, resource.id, input, ctx.write, ctx.patch?.version ?? cur.version);
    return toScimUser(rec, ctx.base);
  }),
  degress: guard(async (resource: ScimmyResource, ctx: ScimContext) => {
    await ctx.repo.deleteUser(ctx.sourceId, resource.id!, ctx.write);
  }),
};

const groupHandlers = {
  egress: guard(async (resource: ScimmyResource, ctx: ScimContext) => {
    if (!resource.id) listViaEgress();
    const withMembers = !ctx.patch && wantsAttribute(resource.attributes, 'members', CORE_GROUP);
    const g = await ctx.repo.getGroup(ctx.sourceId, resource.id, withMembers);
    if (!g) notFound('Group', resource.id);
    return toScimGroup(g, ctx.base);
  }),
  ingress: guard(async (resource: ScimmyResource, instance: unknown, ctx: ScimContext) => {
    const { input, memberIds } = toGroupInput(plain(instance));
    if (!resource.id) return toScimGroup(await ctx.repo.createGroup(ctx.sourceId, input, memberIds, ctx.write), ctx.base);
    if (ctx.patch) {
      // Membership ops were applied by routes.ts through patchMembers; here only the group's own attributes change.
      const cur = await ctx.repo.getGroup(ctx.sourceId, resource.id, false);
      if (!cur) notFound('Group', resource.id);
      if (sameGroup(cur, input)) return toScimGroup(cur, ctx.base);
      const rec = await ctx.repo.replaceGroup(ctx.sourceId, resource.id, input, undefined, ctx.write);
      delete rec.members;
      return toScimGroup(rec, ctx.base);
    }
    // PUT replaces the whole group, membership included (RFC 7644 §3.5.1).
    return toScimGroup(await ctx.repo.replaceGroup(ctx.sourceId, resource.id, input, memberIds, ctx.write), ctx.base);
  }),
  degress: guard(async (resource: ScimmyResource, ctx: ScimContext) => {
    await ctx.repo.deleteGroup(ctx.sourceId, resource.id!, ctx.write);
  }),
};

declareScimmy({ user: userHandlers, group: groupHandlers });

export const Users = SCIMMY.Resources.User;
export const Groups = SCIMMY.Resources.Group;
