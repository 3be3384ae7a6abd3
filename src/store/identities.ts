import { randomUUID } from 'node:crypto';
import { sql, type Transaction } from 'kysely';
import { appendAudit, type AuditEntry } from '../audit/audit.ts';
import type { Store } from './db.ts';
import type { Identity } from '../domain/types.ts';
import type { Database, GroupsTable, PersonsTable } from './schema.ts';

/**
 * The identity store: persons, groups and memberships per source. Every change runs in one
 * transaction that also writes the audit row and the dirty mark (outbox) of each affected
 * person, so a change is never recorded without the reconcile it calls for, and vice versa.
 * Queues are told after commit; if that tell is lost, the sweeper finds the dirty mark.
 */

export const PRIORITY_LEAVER = 1;
export const PRIORITY_NORMAL = 10;

export interface Profile {
  givenName?: string;
  familyName?: string;
  email?: string;
  roles: string[];
  /** Flat, policy-usable attributes (department, site, employeeType, terminationDate, ...). */
  attributes: Record<string, string>;
}

export interface UserInput {
  userName: string;
  externalId?: string | null;
  displayName?: string | null;
  active: boolean;
  email?: string | null;
  profile: Profile;
  /** The resource as the source sent it (minus group memberships), stored as given. */
  resource: Record<string, unknown>;
}

export interface UserRecord extends Omit<UserInput, 'externalId' | 'displayName' | 'email'> {
  id: string;
  sourceId: string;
  externalId: string | null;
  displayName: string | null;
  email: string | null;
  version: number;
  created: Date;
  lastModified: Date;
  groups: Array<{ id: string; displayName: string }>;
}

export interface GroupInput {
  displayName: string;
  externalId?: string | null;
  resource: Record<string, unknown>;
}

export interface GroupRecord {
  id: string;
  sourceId: string;
  displayName: string;
  externalId: string | null;
  resource: Record<string, unknown>;
  version: number;
  created: Date;
  lastModified: Date;
  /** Absent when the caller asked not to load members. */
  members?: Array<{ id: string; display: string | null }>;
}

export type UserFilterAttr = 'id' | 'userName' | 'externalId' | 'email' | 'displayName' | 'active';
export type GroupFilterAttr = 'id' | 'displayName' | 'externalId' | 'member';

export interface Page<T> {
  total: number;
  items: T[];
}

export interface WriteContext {
  actor: string;
  correlationId: string;
}

export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConflictError';
  }
}

export class NotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotFoundError';
  }
}

export interface DirtyMark {
  personId: string;
  priority: number;
}

type Notify = (marks: DirtyMark[]) => void;

export class IdentityRepo {
  private readonly store: Store;
  private notify: Notify;

  constructor(store: Store, notify: Notify = () => {}) {
    this.store = store;
    this.notify = notify;
  }

  /** Set once the queue exists (the store is opened before Redis). */
  onDirty(notify: Notify): void {
    this.notify = notify;
  }

  // ---------- users ----------

  async createUser(sourceId: string, input: UserInput, ctx: WriteContext): Promise<UserRecord> {
    const id = randomUUID();
    const now = Date.now();
    const marks: DirtyMark[] = [];
    await this.tx(async (trx) => {
      await this.assertUserNameFree(trx, sourceId, input.userName, null);
      await trx.insertInto('persons').values(personRow(id, sourceId, input, 1, now, now)).execute();
      marks.push(await markDirty(trx, id, input.active ? PRIORITY_NORMAL : PRIORITY_LEAVER, 'user created', now, ctx.correlationId));
      await this.audit(trx, [{ ...ctx, action: 'identity.user.create', subject: `person:${id}`, personId: id, detail: summary(input) }]);
    });
    this.notify(marks);
    return (await this.getUser(sourceId, id))!;
  }

  async getUser(sourceId: string, id: string): Promise<UserRecord | undefined> {
    const row = await this.store.db.selectFrom('persons').selectAll().where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
    if (!row) return undefined;
    const groups = await this.store.db
      .selectFrom('memberships')
      .innerJoin('groups', 'groups.id', 'memberships.group_id')
      .select(['groups.id', 'groups.display_name'])
      .where('memberships.person_id', '=', id)
      .orderBy('groups.display_name')
      .execute();
    return toUser(row, groups.map((g) => ({ id: g.id, displayName: g.display_name })));
  }

  /** Full replacement (SCIM PUT, or the result of a PATCH). `expectedVersion` guards lost updates. */
  async replaceUser(sourceId: string, id: string, input: UserInput, ctx: WriteContext, expectedVersion?: number): Promise<UserRecord> {
    const now = Date.now();
    const marks: DirtyMark[] = [];
    await this.tx(async (trx) => {
      const current = await trx.selectFrom('persons').select(['version', 'active']).where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
      if (!current) throw new NotFoundError(`User ${id} not found`);
      if (expectedVersion !== undefined && current.version !== expectedVersion)
        throw new ConflictError(`User ${id} was modified concurrently; retry the request`);
      await this.assertUserNameFree(trx, sourceId, input.userName, id);
      const { id: _id, source_id: _s, created_at: _c, ...row } = personRow(id, sourceId, input, current.version + 1, now, now);
      await trx.updateTable('persons').set(row).where('id', '=', id).execute();
      const leaving = current.active === 1 && !input.active;
      marks.push(await markDirty(trx, id, leaving || !input.active ? PRIORITY_LEAVER : PRIORITY_NORMAL, leaving ? 'user deactivated' : 'user updated', now, ctx.correlationId));
      await this.audit(trx, [
        { ...ctx, action: leaving ? 'identity.user.deactivate' : 'identity.user.update', subject: `person:${id}`, personId: id, detail: summary(input) },
      ]);
    });
    this.notify(marks);
    return (await this.getUser(sourceId, id))!;
  }

  async deleteUser(sourceId: string, id: string, ctx: WriteContext): Promise<void> {
    const now = Date.now();
    const marks: DirtyMark[] = [];
    await this.tx(async (trx) => {
      const row = await trx.selectFrom('persons').select(['user_name']).where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
      if (!row) throw new NotFoundError(`User ${id} not found`);
      await trx.deleteFrom('memberships').where('person_id', '=', id).execute();
      await trx.deleteFrom('persons').where('id', '=', id).execute();
      // The person is gone from the identity store; the reconciler sees no identity and revokes everything.
      marks.push(await markDirty(trx, id, PRIORITY_LEAVER, 'user deleted', now, ctx.correlationId));
      await this.audit(trx, [{ ...ctx, action: 'identity.user.delete', subject: `person:${id}`, personId: id, detail: { userName: row.user_name } }]);
    });
    this.notify(marks);
  }

  async listUsers(
    sourceId: string,
    filters: Array<{ attr: UserFilterAttr; value: string | boolean }>,
    startIndex: number,
    count: number,
  ): Promise<Page<UserRecord>> {
    let q = this.store.db.selectFrom('persons').where('source_id', '=', sourceId);
    for (const f of filters) {
      const v = f.value;
      switch (f.attr) {
        case 'id':
          q = q.where('id', '=', String(v));
          break;
        case 'userName':
          q = q.where('user_name_lc', '=', String(v).toLowerCase());
          break;
        case 'externalId':
          q = q.where('external_id', '=', String(v));
          break;
        case 'email':
          q = q.where('email_lc', '=', String(v).toLowerCase());
          break;
        case 'displayName':
          q = q.where('display_name', '=', String(v));
          break;
        case 'active':
          q = q.where('active', '=', v === true || String(v).toLowerCase() === 'true' ? 1 : 0);
          break;
      }
    }
    const { total } = await q.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow();
    if (count <= 0) return { total: Number(total), items: [] };
    const rows = await q
      .selectAll()
      .orderBy('created_at')
      .orderBy('id')
      .offset(Math.max(0, startIndex - 1))
      .limit(count)
      .execute();
    const groups = await this.groupsOf(rows.map((r) => r.id));
    return { total: Number(total), items: rows.map((r) => toUser(r, groups.get(r.id) ?? [])) };
  }

  // ---------- groups ----------

  async createGroup(sourceId: string, input: GroupInput, memberIds: string[], ctx: WriteContext): Promise<GroupRecord> {
    const id = randomUUID();
    const now = Date.now();
    const marks: DirtyMark[] = [];
    await this.tx(async (trx) => {
      await trx.insertInto('groups').values(groupRow(id, sourceId, input, 1, now, now)).execute();
      const added = await this.insertMembers(trx, sourceId, id, memberIds);
      for (const p of added) marks.push(await markDirty(trx, p, PRIORITY_NORMAL, 'group membership added', now, ctx.correlationId));
      await this.audit(trx, [
        { ...ctx, action: 'identity.group.create', subject: `group:${id}`, detail: { displayName: input.displayName, members: added.length } },
        ...added.map((p) => ({ ...ctx, action: 'identity.membership.add', subject: `group:${id}`, personId: p, detail: { group: input.displayName } })),
      ]);
    });
    this.notify(marks);
    return (await this.getGroup(sourceId, id, true))!;
  }

  async getGroup(sourceId: string, id: string, withMembers: boolean): Promise<GroupRecord | undefined> {
    const row = await this.store.db.selectFrom('groups').selectAll().where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
    if (!row) return undefined;
    const g = toGroup(row);
    if (withMembers) g.members = (await this.membersOf([id])).get(id) ?? [];
    return g;
  }

  /**
   * Replaces the group's own attributes; `memberIds` undefined leaves membership alone,
   * an array replaces it (only the difference is written).
   */
  async replaceGroup(sourceId: string, id: string, input: GroupInput, memberIds: string[] | undefined, ctx: WriteContext): Promise<GroupRecord> {
    const now = Date.now();
    const marks: DirtyMark[] = [];
    await this.tx(async (trx) => {
      const current = await trx.selectFrom('groups').select(['version', 'display_name']).where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
      if (!current) throw new NotFoundError(`Group ${id} not found`);
      const { id: _i, source_id: _s, created_at: _c, ...row } = groupRow(id, sourceId, input, current.version + 1, now, now);
      await trx.updateTable('groups').set(row).where('id', '=', id).execute();
      const entries: AuditEntry[] = [];
      if (current.display_name !== input.displayName) {
        // Policy may match on the display name: every member's desired access may change.
        const members = await trx.selectFrom('memberships').select('person_id').where('group_id', '=', id).execute();
        for (const m of members) marks.push(await markDirty(trx, m.person_id, PRIORITY_NORMAL, 'group renamed', now, ctx.correlationId));
        entries.push({ ...ctx, action: 'identity.group.rename', subject: `group:${id}`, detail: { from: current.display_name, to: input.displayName } });
      } else {
        entries.push({ ...ctx, action: 'identity.group.update', subject: `group:${id}`, detail: { displayName: input.displayName } });
      }
      if (memberIds) {
        const existing = new Set((await trx.selectFrom('memberships').select('person_id').where('group_id', '=', id).execute()).map((m) => m.person_id));
        const wanted = new Set(memberIds);
        const remove = [...existing].filter((p) => !wanted.has(p));
        const add = [...wanted].filter((p) => !existing.has(p));
        marks.push(...(await this.changeMembers(trx, sourceId, id, input.displayName, add, remove, ctx, entries, now)));
      }
      await this.audit(trx, entries);
    });
    this.notify(dedupe(marks));
    return (await this.getGroup(sourceId, id, true))!;
  }

  /** Membership delta without reading or rewriting the rest of the group. */
  async patchMembers(sourceId: string, id: string, add: string[], remove: string[], ctx: WriteContext): Promise<void> {
    const now = Date.now();
    const marks: DirtyMark[] = [];
    await this.tx(async (trx) => {
      const current = await trx.selectFrom('groups').select(['display_name', 'version']).where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
      if (!current) throw new NotFoundError(`Group ${id} not found`);
      const entries: AuditEntry[] = [];
      marks.push(...(await this.changeMembers(trx, sourceId, id, current.display_name, add, remove, ctx, entries, now)));
      await trx.updateTable('groups').set({ version: current.version + 1, updated_at: now }).where('id', '=', id).execute();
      await this.audit(trx, entries);
    });
    this.notify(dedupe(marks));
  }

  async deleteGroup(sourceId: string, id: string, ctx: WriteContext): Promise<void> {
    const now = Date.now();
    const marks: DirtyMark[] = [];
    await this.tx(async (trx) => {
      const row = await trx.selectFrom('groups').select(['display_name']).where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
      if (!row) throw new NotFoundError(`Group ${id} not found`);
      const members = await trx.selectFrom('memberships').select('person_id').where('group_id', '=', id).execute();
      await trx.deleteFrom('memberships').where('group_id', '=', id).execute();
      await trx.deleteFrom('groups').where('id', '=', id).execute();
      for (const m of members) marks.push(await markDirty(trx, m.person_id, PRIORITY_NORMAL, 'group deleted', now, ctx.correlationId));
      await this.audit(trx, [{ ...ctx, action: 'identity.group.delete', subject: `group:${id}`, detail: { displayName: row.display_name, members: members.length } }]);
    });
    this.notify(marks);
  }

  async listGroups(
    sourceId: string,
    filters: Array<{ attr: GroupFilterAttr; value: string }>,
    startIndex: number,
    count: number,
    withMembers: boolean,
  ): Promise<Page<GroupRecord>> {
    let q = this.store.db.selectFrom('groups').where('source_id', '=', sourceId);
    for (const f of filters) {
      if (f.attr === 'id') q = q.where('id', '=', f.value);
      else if (f.attr === 'displayName') q = q.where('display_name_lc', '=', f.value.toLowerCase());
      else if (f.attr === 'externalId') q = q.where('external_id', '=', f.value);
      else if (f.attr === 'member') {
        const person = f.value;
        q = q.where('id', 'in', (eb) => eb.selectFrom('memberships').select('group_id').where('person_id', '=', person));
      }
    }
    const { total } = await q.select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow();
    if (count <= 0) return { total: Number(total), items: [] };
    const rows = await q.selectAll().orderBy('created_at').orderBy('id').offset(Math.max(0, startIndex - 1)).limit(count).execute();
    const items = rows.map(toGroup);
    if (withMembers) {
      const members = await this.membersOf(items.map((g) => g.id));
      for (const g of items) g.members = members.get(g.id) ?? [];
    }
    return { total: Number(total), items };
  }

  // ---------- reconciliation ----------

  /** The identity as policy sees it, or null when the person no longer exists. */
  async loadIdentity(personId: string): Promise<Identity | null> {
    const row = await this.store.db.selectFrom('persons').selectAll().where('id', '=', personId).executeTakeFirst();
    if (!row) return null;
    const groups = await this.store.db
      .selectFrom('memberships')
      .innerJoin('groups', 'groups.id', 'memberships.group_id')
      .select(['groups.id', 'groups.display_name'])
      .where('memberships.person_id', '=', personId)
      .execute();
    const profile = JSON.parse(row.profile) as Profile;
    return {
      personId: row.id,
      sourceId: row.source_id,
      externalId: row.id,
      userName: row.user_name,
      active: row.active === 1,
      givenName: profile.givenName,
      familyName: profile.familyName,
      displayName: row.display_name ?? undefined,
      email: profile.email,
      groups: groups.map((g) => ({ id: g.id, displayName: g.display_name })),
      roles: profile.roles ?? [],
      attributes: profile.attributes ?? {},
    };
  }

  /** Asks for a reconcile of these persons (admin action, sweeps); audited like any change. */
  async requestReconcile(personIds: string[], reason: string, ctx: WriteContext, priority = PRIORITY_NORMAL): Promise<void> {
    const now = Date.now();
    const marks: DirtyMark[] = [];
    await this.tx(async (trx) => {
      for (const p of personIds) marks.push(await markDirty(trx, p, priority, reason, now, ctx.correlationId));
      await this.audit(trx, personIds.map((p) => ({ ...ctx, action: 'reconcile.request', subject: `person:${p}`, personId: p, detail: { reason } })));
    });
    this.notify(marks);
  }

  // ---------- internals ----------

  private async changeMembers(
    trx: Transaction<Database>,
    sourceId: string,
    groupId: string,
    groupName: string,
    add: string[],
    remove: string[],
    ctx: WriteContext,
    entries: AuditEntry[],
    now: number,
  ): Promise<DirtyMark[]> {
    const marks: DirtyMark[] = [];
    const added = await this.insertMembers(trx, sourceId, groupId, add);
    for (const p of added) {
      marks.push(await markDirty(trx, p, PRIORITY_NORMAL, 'group membership added', now, ctx.correlationId));
      entries.push({ ...ctx, action: 'identity.membership.add', subject: `group:${groupId}`, personId: p, detail: { group: groupName } });
    }
    for (let i = 0; i < remove.length; i += 500) {
      const chunk = remove.slice(i, i + 500);
      const gone = await trx.deleteFrom('memberships').where('group_id', '=', groupId).where('person_id', 'in', chunk).returning('person_id').execute();
      for (const g of gone) {
        // Losing a membership can only take access away: treat it with leaver priority.
        marks.push(await markDirty(trx, g.person_id, PRIORITY_LEAVER, 'group membership removed', now, ctx.correlationId));
        entries.push({ ...ctx, action: 'identity.membership.remove', subject: `group:${groupId}`, personId: g.person_id, detail: { group: groupName } });
      }
    }
    return marks;
  }

  /** Inserts memberships for persons of the same source; unknown ids are an error (SCIM invalidValue). */
  private async insertMembers(trx: Transaction<Database>, sourceId: string, groupId: string, personIds: string[]): Promise<string[]> {
    const unique = [...new Set(personIds)];
    const added: string[] = [];
    for (let i = 0; i < unique.length; i += 500) {
      const chunk = unique.slice(i, i + 500);
      const known = await trx.selectFrom('persons').select('id').where('source_id', '=', sourceId).where('id', 'in', chunk).execute();
      if (known.length !== chunk.length) {
        const have = new Set(known.map((k) => k.id));
        const missing = chunk.filter((c) => !have.has(c));
        throw new NotFoundError(`member(s) not found: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
      }
      const inserted = await trx
        .insertInto('memberships')
        .values(chunk.map((p) => ({ group_id: groupId, person_id: p })))
        .onConflict((oc) => oc.columns(['group_id', 'person_id']).doNothing())
        .returning('person_id')
        .execute();
      added.push(...inserted.map((r) => r.person_id));
    }
    return added;
  }

  private async assertUserNameFree(trx: Transaction<Database>, sourceId: string, userName: string, self: string | null) {
    const clash = await trx
      .selectFrom('persons')
      .select('id')
      .where('source_id', '=', sourceId)
      .where('user_name_lc', '=', userName.toLowerCase())
      .executeTakeFirst();
    if (clash && clash.id !== self) throw new ConflictError(`userName "${userName}" is already in use`);
  }

  private async groupsOf(personIds: string[]): Promise<Map<string, Array<{ id: string; displayName: string }>>> {
    const out = new Map<string, Array<{ id: string; displayName: string }>>();
    if (personIds.length === 0) return out;
    const rows = await this.store.db
      .selectFrom('memberships')
      .innerJoin('groups', 'groups.id', 'memberships.group_id')
      .select(['memberships.person_id', 'groups.id', 'groups.display_name'])
      .where('memberships.person_id', 'in', personIds)
      .execute();
    for (const r of rows) {
      const list = out.get(r.person_id) ?? [];
      list.push({ id: r.id, displayName: r.display_name });
      out.set(r.person_id, list);
    }
    return out;
  }

  private async membersOf(groupIds: string[]): Promise<Map<string, Array<{ id: string; display: string | null }>>> {
    const out = new Map<string, Array<{ id: string; display: string | null }>>();
    if (groupIds.length === 0) return out;
    const rows = await this.store.db
      .selectFrom('memberships')
      .innerJoin('persons', 'persons.id', 'memberships.person_id')
      .select(['memberships.group_id', 'persons.id', 'persons.display_name', 'persons.user_name'])
      .where('memberships.group_id', 'in', groupIds)
      .orderBy('persons.created_at')
      .execute();
    for (const r of rows) {
      const list = out.get(r.group_id) ?? [];
      list.push({ id: r.id, display: r.display_name ?? r.user_name });
      out.set(r.group_id, list);
    }
    return out;
  }

  private tx<T>(fn: (trx: Transaction<Database>) => Promise<T>): Promise<T> {
    return this.store.db.transaction().execute(fn);
  }

  private audit(trx: Transaction<Database>, entries: AuditEntry[]) {
    return appendAudit(trx, this.store.dialect, entries);
  }
}

/**
 * Marks a person dirty in the caller's transaction. The generation lets the reconciler clear
 * the mark only if nothing new arrived while it ran; the first marked_at is kept so the sweeper
 * can tell stale work from fresh.
 */
export async function markDirty(
  trx: Transaction<Database>,
  personId: string,
  priority: number,
  reason: string,
  now: number,
  correlationId: string,
): Promise<DirtyMark> {
  const row = await trx
    .insertInto('dirty')
    .values({ person_id: personId, generation: 1, priority, marked_at: now, reason, correlation_id: correlationId })
    .onConflict((oc) =>
      oc.column('person_id').doUpdateSet({
        generation: sql<number>`dirty.generation + 1`,
        priority: sql<number>`case when excluded.priority < dirty.priority then excluded.priority else dirty.priority end`,
        reason: sql<string>`excluded.reason`,
        correlation_id: sql<string>`excluded.correlation_id`,
      }),
    )
    .returning(['priority'])
    .executeTakeFirstOrThrow();
  return { personId, priority: row.priority };
}

function dedupe(marks: DirtyMark[]): DirtyMark[] {
  const m = new Map<string, number>();
  for (const d of marks) m.set(d.personId, Math.min(m.get(d.personId) ?? Infinity, d.priority));
  return [...m].map(([personId, priority]) => ({ personId, priority }));
}

function personRow(id: string, sourceId: string, u: UserInput, version: number, created: number, updated: number): PersonsTable {
  return {
    id,
    source_id: sourceId,
    external_id: u.externalId ?? null,
    user_name: u.userName,
    user_name_lc: u.userName.toLowerCase(),
    email_lc: u.email ? u.email.toLowerCase() : null,
    display_name: u.displayName ?? null,
    active: u.active ? 1 : 0,
    profile: JSON.stringify(u.profile),
    resource: JSON.stringify(u.resource),
    version,
    created_at: created,
    updated_at: updated,
  };
}

function groupRow(id: string, sourceId: string, g: GroupInput, version: number, created: number, updated: number): GroupsTable {
  return {
    id,
    source_id: sourceId,
    external_id: g.externalId ?? null,
    display_name: g.displayName,
    display_name_lc: g.displayName.toLowerCase(),
    resource: JSON.stringify(g.resource),
    version,
    created_at: created,
    updated_at: updated,
  };
}

function toUser(r: PersonsTable, groups: Array<{ id: string; displayName: string }>): UserRecord {
  return {
    id: r.id,
    sourceId: r.source_id,
    userName: r.user_name,
    externalId: r.external_id,
    displayName: r.display_name,
    email: r.email_lc,
    active: r.active === 1,
    profile: JSON.parse(r.profile) as Profile,
    resource: JSON.parse(r.resource) as Record<string, unknown>,
    version: r.version,
    created: new Date(Number(r.created_at)),
    lastModified: new Date(Number(r.updated_at)),
    groups,
  };
}

function toGroup(r: GroupsTable): GroupRecord {
  return {
    id: r.id,
    sourceId: r.source_id,
    displayName: r.display_name,
    externalId: r.external_id,
    resource: JSON.parse(r.resource) as Record<string, unknown>,
    version: r.version,
    created: new Date(Number(r.created_at)),
    lastModified: new Date(Number(r.updated_at)),
  };
}

function summary(u: UserInput) {
  return { userName: u.userName, active: u.active, externalId: u.externalId ?? null, attributes: u.profile.attributes, roles: u.profile.roles };
}
