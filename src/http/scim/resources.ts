import type { EmailInput, GroupInput, GroupRecord, MemberInput, Profile, UserInput, UserRecord } from '../../store/identities.ts';
import { isPersonId } from '../../store/identities.ts';
import { CORE_GROUP, CORE_USER, ENTERPRISE_USER, LOCKSTEP_USER } from './schema.ts';

/**
 * The mapping between SCIM resources and the identity store, both ways. Resources are stored
 * as validated (coerce.ts) minus what the server owns or keeps in columns, and rendered back
 * from the stored JSON and the columns without going through scimmy.
 */

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function iso(d: Date): string {
  return d.toISOString();
}

export function weakVersion(version: number): string {
  return `W/"${version}"`;
}

// ---------- store → SCIM ----------

export function toScimUser(u: UserRecord, base: string): Obj {
  const { schemas: _s, id: _i, meta: _m, groups: _g, password: _p, active: _a, userName: _u, externalId: _e, ...rest } = u.resource;
  return {
    schemas: schemasOf(u.resource, CORE_USER),
    id: u.id,
    ...(u.externalId !== null ? { externalId: u.externalId } : {}),
    userName: u.userName,
    ...rest,
    active: u.active,
    groups: u.groups.map((g) => ({ value: g.id, display: g.displayName, $ref: `${base}/Groups/${g.id}`, type: 'direct' })),
    meta: {
      resourceType: 'User',
      created: iso(u.created),
      lastModified: iso(u.lastModified),
      version: weakVersion(u.version),
      location: `${base}/Users/${u.id}`,
    },
  };
}

export function toScimGroup(g: GroupRecord, base: string): Obj {
  const { schemas: _s, id: _i, meta: _m, members: _mm, displayName: _d, externalId: _e, ...rest } = g.resource;
  return {
    schemas: schemasOf(g.resource, CORE_GROUP),
    id: g.id,
    ...(g.externalId !== null ? { externalId: g.externalId } : {}),
    displayName: g.displayName,
    ...rest,
    ...(g.members
      ? { members: g.members.map((m) => ({ value: m.id, ...(m.display ? { display: m.display } : {}), $ref: `${base}/Users/${m.id}`, type: 'User' })) }
      : {}),
    meta: {
      resourceType: 'Group',
      created: iso(g.created),
      lastModified: iso(g.lastModified),
      version: weakVersion(g.version),
      location: `${base}/Groups/${g.id}`,
    },
  };
}

function schemasOf(resource: Obj, core: string): string[] {
  return Array.isArray(resource.schemas) ? (resource.schemas as string[]) : [core];
}

// ---------- SCIM → store ----------

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

function primaryEmail(emails: EmailInput[]): string | undefined {
  const pick = emails.find((e) => e.primary === true) ?? emails.find((e) => String(e.type ?? '').toLowerCase() === 'work') ?? emails[0];
  return pick?.value;
}

function emailsOf(v: unknown): EmailInput[] {
  if (!Array.isArray(v)) return [];
  const out: EmailInput[] = [];
  for (const e of v) {
    if (!isObj(e)) continue;
    const value = str(e.value);
    if (value) out.push({ value, type: str(e.type) ?? null, primary: e.primary === true });
  }
  return out;
}

/** Role names as policy sees them: each role's `value` and `display` (a rule may name either). */
function roleNames(roles: unknown): string[] {
  if (!Array.isArray(roles)) return [];
  const out: string[] = [];
  for (const r of roles) {
    const names = typeof r === 'string' ? [r] : isObj(r) ? [str(r.value), str(r.display)] : [];
    for (const n of names) if (n && !out.includes(n)) out.push(n);
  }
  return out;
}

/** Maps a validated SCIM User (coerce.ts output) to the store's input. */
export function toUserInput(instance: Obj): UserInput {
  const ent = isObj(instance[ENTERPRISE_USER]) ? (instance[ENTERPRISE_USER] as Obj) : {};
  const ls = isObj(instance[LOCKSTEP_USER]) ? (instance[LOCKSTEP_USER] as Obj) : {};
  const name = isObj(instance.name) ? instance.name : {};
  const emails = emailsOf(instance.emails);
  const email = primaryEmail(emails);
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
    emails,
    profile,
    // `active` lives in its column only, so a deactivation does not rewrite the resource.
    resource: storedResource(instance, ['id', 'meta', 'groups', 'password', 'active']),
  };
}

export interface GroupMembers {
  /** Values that name a person (an id minted by lockstep), with the display the client gave. */
  members: Array<{ id: string; display?: string | null }>;
  /** Values that can never name a person ("string id 1"); dropped and audited, never an error. */
  ignored: string[];
}

/**
 * Member values from a request. `value` is the person id; `display` (or the non-standard
 * `displayName` Microsoft's collection sends) is kept as the member's display.
 */
export function memberValues(list: unknown): GroupMembers {
  const out: GroupMembers = { members: [], ignored: [] };
  for (const m of Array.isArray(list) ? list : list === undefined ? [] : [list]) {
    let value: unknown;
    let display: unknown;
    if (typeof m === 'string') value = m;
    else if (isObj(m)) {
      for (const [k, v] of Object.entries(m)) {
        const lk = k.toLowerCase();
        if (lk === 'value') value = v;
        else if (lk === 'display' || (lk === 'displayname' && display === undefined)) display = v;
      }
    }
    if (typeof value !== 'string' || value === '') continue;
    if (!isPersonId(value)) {
      out.ignored.push(value);
      continue;
    }
    out.members.push({ id: value, ...(typeof display === 'string' && display !== '' ? { display } : {}) });
  }
  return out;
}

export function toGroupInput(instance: Obj, rawMembers: unknown): { input: GroupInput; members: MemberInput[]; ignored: string[] } {
  const { members, ignored } = memberValues(rawMembers);
  return {
    input: {
      displayName: String(instance.displayName),
      externalId: str(instance.externalId) ?? null,
      resource: storedResource(instance, ['id', 'meta', 'members']),
    },
    members,
    ignored,
  };
}

/** Stable JSON (sorted keys) to compare stored and incoming values. */
export function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (isObj(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x));
}

export function sameUser(cur: UserRecord, next: UserInput): boolean {
  const { active: _a, ...stored } = cur.resource;
  return (
    cur.userName === next.userName &&
    cur.externalId === (next.externalId ?? null) &&
    cur.displayName === (next.displayName ?? null) &&
    cur.active === next.active &&
    (cur.email ?? null) === (next.email ? next.email.toLowerCase() : null) &&
    canonical(cur.profile) === canonical(next.profile) &&
    canonical(stored) === canonical(next.resource)
  );
}

export function sameGroup(cur: GroupRecord, next: GroupInput): boolean {
  return cur.displayName === next.displayName && cur.externalId === (next.externalId ?? null) && canonical(cur.resource) === canonical(next.resource);
}
