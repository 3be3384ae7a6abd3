import { sql, type Expression, type Kysely, type ExpressionBuilder, type SqlBool, type Transaction } from 'kysely';
import { appendAudit, type AuditEntry } from '../audit/audit.ts';
import type { Store } from './db.ts';
import { append } from './group-commit.ts';
import { exec, placeholders, tuples } from './sql.ts';
import { newId } from './ids.ts';
import { TurnBatch } from '../queue/turn-batch.ts';
import type { Identity } from '../domain/types.ts';
import type { Database, GroupsTable, PersonsTable } from './schema.ts';

/**
 * The identity store: persons, groups and memberships per source. Every change runs in one
 * transaction that also writes the audit row and the dirty mark (outbox) of each affected
 * person, so a change is never recorded without the reconcile it calls for, and vice versa.
 * Queues are told after commit; if that tell is lost, the sweeper finds the dirty mark.
 *
 * On SQLite, changes arriving together are group-committed (see `write` and GroupCommit): one
 * transaction and one audit append per batch.
 *
 * Reads and writes are scoped by source (the SCIM tenant): an id from another source is
 * "not found". Lists filter and page in SQL; filters that no index can narrow are only run
 * on sources small enough to scan (see `scanLimit`), never in memory. Membership changes touch
 * only the memberships named, never the whole group.
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

export interface EmailInput {
  value: string;
  type?: string | null;
  primary?: boolean;
}

export interface UserInput {
  userName: string;
  externalId?: string | null;
  displayName?: string | null;
  active: boolean;
  email?: string | null;
  /** Every address, for `emails` filters; defaults to `email` alone. */
  emails?: EmailInput[];
  profile: Profile;
  /** The resource as the source sent it (minus group memberships), stored as given. */
  resource: Record<string, unknown>;
}

export interface UserRecord extends Omit<UserInput, 'externalId' | 'displayName' | 'email' | 'emails'> {
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

/** A member as a client names it: a person id, and optionally the display the client gave it. */
export type MemberInput = string | { id: string; display?: string | null };

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

/** One change to a group, applied in one transaction (SCIM PATCH mixing rename and membership). */
export interface GroupChange {
  /** New own attributes of the group; undefined leaves them. */
  input?: GroupInput;
  /** Full membership (replace); when set, add/remove are applied on top of it by the caller. */
  replace?: MemberInput[];
  add?: MemberInput[];
  remove?: string[];
  /** Member values the caller dropped because they cannot name a person; audited as a warning. */
  ignored?: string[];
}

export interface Page<T> {
  total: number;
  items: T[];
}

export interface WriteContext {
  actor: string;
  correlationId: string;
}

// ---------- filters ----------

export type CompareOp = 'eq' | 'ne' | 'co' | 'sw' | 'ew' | 'gt' | 'ge' | 'lt' | 'le' | 'pr';
export type FilterValue = string | number | boolean | null;

/**
 * A filter the store can run, over named fields of one resource kind. `sub` filters a related
 * table (a person's e-mail addresses) and holds when one row of it matches.
 */
export type StoreFilter<F extends string, S extends string = never> =
  | { and: StoreFilter<F, S>[] }
  | { or: StoreFilter<F, S>[] }
  | { not: StoreFilter<F, S> }
  | { field: F; op: CompareOp; value?: FilterValue }
  | { sub: 'emails'; where: StoreFilter<S> };

export type UserField = 'id' | 'userName' | 'externalId' | 'displayName' | 'givenName' | 'familyName' | 'active' | 'created' | 'lastModified' | 'group';
export type EmailField = 'value' | 'type' | 'primary';
export type GroupField = 'id' | 'displayName' | 'externalId' | 'created' | 'lastModified' | 'member';
export type UserFilter = StoreFilter<UserField, EmailField>;
export type GroupFilter = StoreFilter<GroupField>;

// ---------- errors ----------

/** `uniqueness`: the userName is taken in this source. `version`: the resource changed since the caller read it. */
export type ConflictKind = 'uniqueness' | 'version';

export class ConflictError extends Error {
  readonly kind: ConflictKind;
  constructor(kind: ConflictKind, message: string) {
    super(message);
    this.name = 'ConflictError';
    this.kind = kind;
  }
}

export class NotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotFoundError';
  }
}

/** A membership names a person that does not exist in this source (a bad value, not a missing resource). */
export class UnknownMemberError extends Error {
  readonly ids: string[];
  constructor(ids: string[]) {
    super(`member(s) not found in this source: ${ids.slice(0, 5).join(', ')}${ids.length > 5 ? `, ... (${ids.length})` : ''}`);
    this.name = 'UnknownMemberError';
    this.ids = ids;
  }
}

/** A filter no index narrows, on a source too large to scan; or a value of the wrong type for its field. */
export class FilterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FilterError';
  }
}

export interface DirtyMark {
  personId: string;
  priority: number;
}

type Notify = (marks: DirtyMark[]) => void;

/** Person and group ids are UUIDs minted here; anything else can never name a person. */
const ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export function isPersonId(v: string): boolean {
  return ID_RE.test(v);
}

export interface IdentityRepoOptions {
  /**
   * Filters that no index narrows (co, ew, ne, not) run only on sources with at most this many
   * rows of the kind searched; larger sources get FilterError. Default 10,000.
   */
  scanLimit?: number;
}

/** Rows per multi-row statement; keeps SQLite and PostgreSQL well under their parameter limits. */
const CHUNK = 200;

export class IdentityRepo {
  private readonly store: Store;
  private notify: Notify;
  private readonly scanLimit: number;

  /** Every change of a committed batch tells the queue in the same turn: one call for all of them. */
  private readonly told = new TurnBatch<DirtyMark>((marks) => this.notify(dedupe(marks)));

  constructor(store: Store, notify: Notify = () => {}, options: IdentityRepoOptions = {}) {
    this.store = store;
    this.notify = notify;
    this.scanLimit = options.scanLimit ?? 10_000;
  }

  /** Set once the queue exists (the store is opened before Redis). */
  onDirty(notify: Notify): void {
    this.notify = notify;
  }

  // ---------- users ----------

  async createUser(sourceId: string, input: UserInput, ctx: WriteContext): Promise<UserRecord> {
    const id = newId();
    const now = Date.now();
    const row = personRow(id, sourceId, input, 1, now, now);
    await this.write(async (trx, marks, log) => {
      // The unique index (source_id, user_name_lc) decides; no read first.
      await exec(trx, PERSON_INSERT, personValues(row)).catch((e: unknown) => {
        throw isUserNameClash(e) ? new ConflictError('uniqueness', `userName "${input.userName}" is already in use`) : e;
      });
      await this.writeEmails(trx, id, sourceId, input, false);
      marks.push(await markDirty(trx, id, input.active ? PRIORITY_NORMAL : PRIORITY_LEAVER, 'user created', now, ctx.correlationId));
      record(log, [{ ...ctx, action: 'identity.user.create', subject: `person:${id}`, personId: id, detail: summary(input) }]);
    });
    return toUser(row, []);
  }

  /**
   * Bulk creation for imports (initial load of a source): the same rows, dirty marks and audit
   * entries as createUser, written in one transaction with multi-row statements. A taken
   * userName fails the whole batch.
   */
  async importUsers(sourceId: string, inputs: UserInput[], ctx: WriteContext): Promise<string[]> {
    const now = Date.now();
    const ids = inputs.map(() => newId());
    await this.write(async (trx, marks, log) => {
      const names = inputs.map((u) => u.userName.toLowerCase());
      if (new Set(names).size !== names.length) throw new ConflictError('uniqueness', 'the batch repeats a userName');
      for (let i = 0; i < names.length; i += CHUNK) {
        const clash = await trx.selectFrom('persons').select('user_name').where('source_id', '=', sourceId).where('user_name_lc', 'in', names.slice(i, i + CHUNK)).executeTakeFirst();
        if (clash) throw new ConflictError('uniqueness', `userName "${clash.user_name}" is already in use`);
      }
      for (let i = 0; i < inputs.length; i += 50) {
        const rows = inputs.slice(i, i + 50).map((u, j) => personRow(ids[i + j]!, sourceId, u, 1, now, now));
        await trx.insertInto('persons').values(rows).execute();
      }
      const emails = inputs.flatMap((u, i) => emailRows(ids[i]!, sourceId, u));
      for (let i = 0; i < emails.length; i += CHUNK) await trx.insertInto('person_emails').values(emails.slice(i, i + CHUNK)).execute();
      const leavers = ids.filter((_, i) => !inputs[i]!.active);
      const joiners = ids.filter((_, i) => inputs[i]!.active);
      append(marks, await markDirtyMany(trx, joiners, PRIORITY_NORMAL, 'user created', now, ctx.correlationId));
      append(marks, await markDirtyMany(trx, leavers, PRIORITY_LEAVER, 'user created', now, ctx.correlationId));
      record(
        log,
        inputs.map((u, i) => ({ ...ctx, action: 'identity.user.create', subject: `person:${ids[i]}`, personId: ids[i], detail: summary(u) })),
      );
    });
    return ids;
  }

  async getUser(sourceId: string, id: string, opts: { groups?: boolean } = {}): Promise<UserRecord | undefined> {
    const [row] = await exec<PersonsTable>(this.store.db, 'select * from persons where id = ? and source_id = ?', [id, sourceId]);
    if (!row) return undefined;
    const groups = opts.groups === false ? [] : ((await this.groupsOf([id])).get(id) ?? []);
    return toUser(row, groups);
  }

  /** Full replacement (SCIM PUT, or the result of a PATCH). `expectedVersion` guards lost updates. */
  async replaceUser(sourceId: string, id: string, input: UserInput, ctx: WriteContext, expectedVersion?: number): Promise<UserRecord> {
    const now = Date.now();
    let row: PersonsTable | undefined;
    await this.write(async (trx, marks, log) => {
      const current = await trx
        .selectFrom('persons')
        .select(['version', 'active', 'created_at', 'user_name_lc'])
        .where('id', '=', id)
        .where('source_id', '=', sourceId)
        .executeTakeFirst();
      if (!current) throw new NotFoundError(`User ${id} not found`);
      if (expectedVersion !== undefined && current.version !== expectedVersion)
        throw new ConflictError('version', `User ${id} was modified concurrently (version ${current.version}, expected ${expectedVersion})`);
      if (current.user_name_lc !== input.userName.toLowerCase()) await this.assertUserNameFree(trx, sourceId, input.userName, id);
      row = personRow(id, sourceId, input, current.version + 1, Number(current.created_at), now);
      const { id: _id, source_id: _s, created_at: _c, ...set } = row;
      await trx.updateTable('persons').set(set).where('id', '=', id).execute();
      await this.writeEmails(trx, id, sourceId, input, true);
      const leaving = current.active === 1 && !input.active;
      marks.push(await markDirty(trx, id, !input.active ? PRIORITY_LEAVER : PRIORITY_NORMAL, leaving ? 'user deactivated' : 'user updated', now, ctx.correlationId));
      record(log, [
        { ...ctx, action: leaving ? 'identity.user.deactivate' : 'identity.user.update', subject: `person:${id}`, personId: id, detail: summary(input) },
      ]);
    });
    return toUser(row!, (await this.groupsOf([id])).get(id) ?? []);
  }

  /**
   * Sets only `active` (the deactivation/re-activation PATCH of Entra and Okta) without
   * rewriting the rest of the user. Unchanged → no write, no mark. Returns the version after.
   */
  async setActive(sourceId: string, id: string, active: boolean, ctx: WriteContext, expectedVersion?: number): Promise<{ version: number; changed: boolean }> {
    const now = Date.now();
    return this.write(async (trx, marks, log) => {
      // One statement when it changes something (the common case); a read only to explain why not.
      const [updated] =
        expectedVersion === undefined
          ? await exec<{ version: number; user_name: string }>(trx, SET_ACTIVE, [active ? 1 : 0, now, id, sourceId, active ? 0 : 1])
          : await exec<{ version: number; user_name: string }>(trx, SET_ACTIVE_AT_VERSION, [active ? 1 : 0, now, id, sourceId, active ? 0 : 1, expectedVersion]);
      if (!updated) {
        const current = await trx.selectFrom('persons').select(['version']).where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
        if (!current) throw new NotFoundError(`User ${id} not found`);
        if (expectedVersion !== undefined && current.version !== expectedVersion)
          throw new ConflictError('version', `User ${id} was modified concurrently (version ${current.version}, expected ${expectedVersion})`);
        return { version: current.version, changed: false };
      }
      marks.push(await markDirty(trx, id, active ? PRIORITY_NORMAL : PRIORITY_LEAVER, active ? 'user reactivated' : 'user deactivated', now, ctx.correlationId));
      record(log, [
        {
          ...ctx,
          action: active ? 'identity.user.reactivate' : 'identity.user.deactivate',
          subject: `person:${id}`,
          personId: id,
          detail: { userName: updated.user_name, active },
        },
      ]);
      return { version: updated.version, changed: true };
    });
  }

  async deleteUser(sourceId: string, id: string, ctx: WriteContext, expectedVersion?: number): Promise<void> {
    const now = Date.now();
    await this.write(async (trx, marks, log) => {
      const row = await trx.selectFrom('persons').select(['user_name', 'version']).where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
      if (!row) throw new NotFoundError(`User ${id} not found`);
      if (expectedVersion !== undefined && row.version !== expectedVersion)
        throw new ConflictError('version', `User ${id} was modified concurrently (version ${row.version}, expected ${expectedVersion})`);
      await trx.deleteFrom('memberships').where('person_id', '=', id).execute();
      await trx.deleteFrom('person_emails').where('person_id', '=', id).execute();
      await trx.deleteFrom('persons').where('id', '=', id).execute();
      // The person is gone from the identity store; the reconciler sees no identity and revokes everything.
      marks.push(await markDirty(trx, id, PRIORITY_LEAVER, 'user deleted', now, ctx.correlationId));
      record(log, [{ ...ctx, action: 'identity.user.delete', subject: `person:${id}`, personId: id, detail: { userName: row.user_name } }]);
    });
  }

  /**
   * One page of users in a stable order (creation time, then id). `total` counts every match;
   * it is taken from the page itself when the page shows the end of the result.
   */
  async listUsers(sourceId: string, filter: UserFilter | undefined, startIndex: number, count: number, opts: { groups?: boolean } = {}): Promise<Page<UserRecord>> {
    // The lookup IdPs send before every create (userName, or id, eq): at most one row, by a unique index.
    if (filter && 'field' in filter && filter.op === 'eq' && (filter.field === 'userName' || filter.field === 'id') && typeof filter.value === 'string') {
      const [row] =
        filter.field === 'userName'
          ? await exec<PersonsTable>(this.store.db, 'select * from persons where source_id = ? and user_name_lc = ?', [sourceId, filter.value.toLowerCase()])
          : await exec<PersonsTable>(this.store.db, 'select * from persons where id = ? and source_id = ?', [filter.value, sourceId]);
      const rows = row && startIndex <= 1 && count > 0 ? [row] : [];
      const groups = opts.groups === false || rows.length === 0 ? new Map<string, Array<{ id: string; displayName: string }>>() : await this.groupsOf([row!.id]);
      return { total: row ? 1 : 0, items: rows.map((r) => toUser(r, groups.get(r.id) ?? [])) };
    }
    const where = filter ? await this.prepareFilter('persons', sourceId, filter, userSql(sourceId, this.store.dialect)) : undefined;
    const base = () => {
      const q = this.store.db.selectFrom('persons').where('source_id', '=', sourceId);
      return where ? q.where(where) : q;
    };
    const rows =
      count > 0 ? await base().selectAll().orderBy('created_at').orderBy('id').offset(Math.max(0, startIndex - 1)).limit(count).execute() : [];
    const total = await this.total(rows.length, startIndex, count, () => base().select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow());
    const groups = opts.groups === false ? new Map<string, Array<{ id: string; displayName: string }>>() : await this.groupsOf(rows.map((r) => r.id));
    return { total, items: rows.map((r) => toUser(r, groups.get(r.id) ?? [])) };
  }

  // ---------- groups ----------

  async createGroup(sourceId: string, input: GroupInput, members: MemberInput[], ctx: WriteContext, opts: { ignored?: string[]; withMembers?: boolean } = {}): Promise<GroupRecord> {
    const id = newId();
    const now = Date.now();
    const row = groupRow(id, sourceId, input, 1, now, now);
    await this.write(async (trx, marks, log) => {
      await trx.insertInto('groups').values(row).execute();
      const added = await this.insertMembers(trx, sourceId, id, members);
      append(marks, await markDirtyMany(trx, added, PRIORITY_NORMAL, 'group membership added', now, ctx.correlationId));
      record(log, [
        { ...ctx, action: 'identity.group.create', subject: `group:${id}`, detail: { displayName: input.displayName, members: added.length } },
        ...added.map((p) => ({ ...ctx, action: 'identity.membership.add', subject: `group:${id}`, personId: p, detail: { group: input.displayName } })),
        ...ignoredEntry(ctx, id, opts.ignored),
      ]);
    });
    const g = toGroup(row);
    if (opts.withMembers !== false) g.members = (await this.membersOf([id])).get(id) ?? [];
    return g;
  }

  async getGroup(sourceId: string, id: string, withMembers: boolean): Promise<GroupRecord | undefined> {
    const row = await this.store.db.selectFrom('groups').selectAll().where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
    if (!row) return undefined;
    const g = toGroup(row);
    if (withMembers) g.members = (await this.membersOf([id])).get(id) ?? [];
    return g;
  }

  /**
   * Replaces the group's own attributes; `members` undefined leaves membership alone, an array
   * replaces it (only the difference is written). Members are loaded for the result only when
   * `withMembers` is set.
   */
  async replaceGroup(
    sourceId: string,
    id: string,
    input: GroupInput,
    members: MemberInput[] | undefined,
    ctx: WriteContext,
    opts: { expectedVersion?: number; withMembers?: boolean; ignored?: string[] } = {},
  ): Promise<GroupRecord> {
    const change: GroupChange = { input, ...(members ? { replace: members } : {}), ...(opts.ignored ? { ignored: opts.ignored } : {}) };
    await this.changeGroup(sourceId, id, change, ctx, opts.expectedVersion);
    return (await this.getGroup(sourceId, id, opts.withMembers === true))!;
  }

  /** Membership delta without reading or rewriting the rest of the group. Returns the group's version after. */
  async patchMembers(sourceId: string, id: string, add: MemberInput[], remove: string[], ctx: WriteContext, expectedVersion?: number): Promise<{ version: number; changed: boolean }> {
    return this.changeGroup(sourceId, id, { add, remove }, ctx, expectedVersion);
  }

  /** Sets the membership to exactly `members`, atomically (reads the current member ids, not the group). */
  async replaceMembers(sourceId: string, id: string, members: MemberInput[], ctx: WriteContext, expectedVersion?: number): Promise<{ version: number; changed: boolean }> {
    return this.changeGroup(sourceId, id, { replace: members }, ctx, expectedVersion);
  }

  /**
   * Applies one GroupChange in one transaction: own attributes, then `replace`, then
   * `remove`, then `add`. Only the listed memberships are read or written, except for
   * `replace` (which reads the member ids to compute the difference) and a rename (which
   * marks every member dirty: policy may match on the group's name).
   */
  async changeGroup(sourceId: string, id: string, change: GroupChange, ctx: WriteContext, expectedVersion?: number): Promise<{ version: number; changed: boolean }> {
    const now = Date.now();
    let result = { version: 0, changed: false };
    await this.write(async (trx, marks, log) => {
      const [current] = await exec<Pick<GroupsTable, 'version' | 'display_name' | 'external_id' | 'resource'>>(
        trx,
        'select version, display_name, external_id, resource from groups where id = ? and source_id = ?',
        [id, sourceId],
      );
      if (!current) throw new NotFoundError(`Group ${id} not found`);
      if (expectedVersion !== undefined && current.version !== expectedVersion)
        throw new ConflictError('version', `Group ${id} was modified concurrently (version ${current.version}, expected ${expectedVersion})`);
      const entries: AuditEntry[] = [];
      let name = current.display_name;
      let changed = false;
      if (change.input) {
        const row = groupRow(id, sourceId, change.input, current.version + 1, 0, now);
        if (row.display_name !== current.display_name || row.external_id !== current.external_id || row.resource !== current.resource) {
          changed = true;
          const { id: _i, source_id: _s, created_at: _c, version: _v, updated_at: _u, ...set } = row;
          await trx.updateTable('groups').set(set).where('id', '=', id).execute();
          if (current.display_name !== change.input.displayName) {
            // Policy may match on the display name: every member's desired access may change.
            append(marks, await markGroupDirty(trx, id, 'group renamed', now, ctx.correlationId));
            entries.push({ ...ctx, action: 'identity.group.rename', subject: `group:${id}`, detail: { from: current.display_name, to: change.input.displayName } });
          } else {
            entries.push({ ...ctx, action: 'identity.group.update', subject: `group:${id}`, detail: { displayName: change.input.displayName } });
          }
          name = change.input.displayName;
        }
      }
      let add = change.add ?? [];
      let remove = change.remove ?? [];
      if (change.replace) {
        const wanted = new Map(change.replace.map((m) => [memberId(m), m]));
        for (const r of remove) wanted.delete(r);
        for (const a of add) wanted.set(memberId(a), a);
        const existing = (await trx.selectFrom('memberships').select('person_id').where('group_id', '=', id).execute()).map((m) => m.person_id);
        const have = new Set(existing);
        remove = existing.filter((p) => !wanted.has(p));
        // Members already present are passed on too, so a new display given for them is stored.
        add = [...wanted.values()];
        if (remove.length > 0 || [...wanted.keys()].some((p) => !have.has(p))) changed = true;
      }
      const delta = await this.changeMembers(trx, sourceId, id, name, add, remove, ctx, entries, now);
      if (delta.marks.length > 0) changed = true;
      append(marks, delta.marks);
      entries.push(...ignoredEntry(ctx, id, change.ignored));
      const version = changed ? current.version + 1 : current.version;
      if (changed) await exec(trx, 'update groups set version = ?, updated_at = ? where id = ?', [version, now, id]);
      record(log, entries);
      result = { version, changed };
    });
    return result;
  }

  async deleteGroup(sourceId: string, id: string, ctx: WriteContext, expectedVersion?: number): Promise<void> {
    const now = Date.now();
    await this.write(async (trx, marks, log) => {
      const row = await trx.selectFrom('groups').select(['display_name', 'version']).where('id', '=', id).where('source_id', '=', sourceId).executeTakeFirst();
      if (!row) throw new NotFoundError(`Group ${id} not found`);
      if (expectedVersion !== undefined && row.version !== expectedVersion)
        throw new ConflictError('version', `Group ${id} was modified concurrently (version ${row.version}, expected ${expectedVersion})`);
      append(marks, await markGroupDirty(trx, id, 'group deleted', now, ctx.correlationId));
      await trx.deleteFrom('memberships').where('group_id', '=', id).execute();
      await trx.deleteFrom('groups').where('id', '=', id).execute();
      record(log, [{ ...ctx, action: 'identity.group.delete', subject: `group:${id}`, detail: { displayName: row.display_name, members: marks.length } }]);
    });
  }

  async listGroups(sourceId: string, filter: GroupFilter | undefined, startIndex: number, count: number, withMembers: boolean): Promise<Page<GroupRecord>> {
    const where = filter ? await this.prepareFilter('groups', sourceId, filter, groupSql(this.store.dialect)) : undefined;
    const base = () => {
      const q = this.store.db.selectFrom('groups').where('source_id', '=', sourceId);
      return where ? q.where(where) : q;
    };
    const rows = count > 0 ? await base().selectAll().orderBy('created_at').orderBy('id').offset(Math.max(0, startIndex - 1)).limit(count).execute() : [];
    const total = await this.total(rows.length, startIndex, count, () => base().select((eb) => eb.fn.countAll<number>().as('total')).executeTakeFirstOrThrow());
    const items = rows.map(toGroup);
    if (withMembers) {
      const members = await this.membersOf(items.map((g) => g.id));
      for (const g of items) g.members = members.get(g.id) ?? [];
    }
    return { total, items };
  }

  // ---------- reconciliation ----------

  /** The identity as policy sees it, or null when the person no longer exists; `db` may be a change's transaction. */
  async loadIdentity(personId: string, db: Kysely<Database> = this.store.db): Promise<Identity | null> {
    const [row] = await exec<Pick<PersonsTable, 'id' | 'source_id' | 'user_name' | 'active' | 'display_name' | 'profile' | 'created_at'>>(db, LOAD_PERSON, [personId]);
    if (!row) return null;
    const groups = await exec<{ id: string; display_name: string }>(db, LOAD_GROUPS, [personId]);
    const profile = JSON.parse(row.profile) as Profile;
    return {
      personId: row.id,
      sourceId: row.source_id,
      externalId: row.id,
      userName: row.user_name,
      active: Number(row.active) === 1,
      givenName: profile.givenName,
      familyName: profile.familyName,
      displayName: row.display_name ?? undefined,
      email: profile.email,
      groups: groups.map((g) => ({ id: g.id, displayName: g.display_name })),
      roles: profile.roles ?? [],
      attributes: profile.attributes ?? {},
      createdAt: Number(row.created_at),
    };
  }

  /** The person's profile alone (names, email, attributes): what a lock system is told. */
  async loadProfile(personId: string, db: Kysely<Database> = this.store.db): Promise<Profile | null> {
    const [row] = await exec<{ profile: string }>(db, LOAD_PROFILE, [personId]);
    return row ? (JSON.parse(row.profile) as Profile) : null;
  }

  /** Asks for a reconcile of these persons (admin action, sweeps); audited like any change. */
  async requestReconcile(personIds: string[], reason: string, ctx: WriteContext, priority = PRIORITY_NORMAL): Promise<void> {
    const now = Date.now();
    await this.write(async (trx, marks, log) => {
      for (const p of personIds) marks.push(await markDirty(trx, p, priority, reason, now, ctx.correlationId));
      record(log, personIds.map((p) => ({ ...ctx, action: 'reconcile.request', subject: `person:${p}`, personId: p, detail: { reason } })));
    });
  }

  // ---------- internals ----------

  private async total(returned: number, startIndex: number, count: number, countAll: () => Promise<{ total: number | string | bigint }>): Promise<number> {
    // A page that is not full shows the end of the result, unless it is empty past the start.
    if (count > 0 && returned < count && (returned > 0 || startIndex <= 1)) return Math.max(0, startIndex - 1) + returned;
    return Number((await countAll()).total);
  }

  /**
   * Compiles a filter, refusing one that would make the database read every row of a large
   * source: a filter is "narrow" when, in every alternative, some condition can be served by an
   * index (eq, sw, ranges, pr on indexed columns). Others run only on small sources.
   */
  private async prepareFilter<F extends string, S extends string>(
    table: 'persons' | 'groups',
    sourceId: string,
    filter: StoreFilter<F, S>,
    fields: FieldSql<F, S>,
  ): Promise<(eb: ExpressionBuilder<Database, any>) => Expression<SqlBool>> {
    validate(filter, fields);
    if (!narrow(filter, fields, false)) {
      const { n } = await this.store.db
        .selectFrom((eb) => eb.selectFrom(table).select('id').where('source_id', '=', sourceId).limit(this.scanLimit + 1).as('t'))
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .executeTakeFirstOrThrow();
      if (Number(n) > this.scanLimit)
        throw new FilterError(
          `this filter needs a scan (co, ew, ne and not cannot use an index) and this source has more than ${this.scanLimit} ${table === 'persons' ? 'users' : 'groups'}; ` +
            'combine it with "and" and an eq, sw or range condition on an indexed attribute',
        );
    }
    return (eb) => compile(eb, filter, fields, false);
  }

  private async changeMembers(
    trx: Transaction<Database>,
    sourceId: string,
    groupId: string,
    groupName: string,
    add: MemberInput[],
    remove: string[],
    ctx: WriteContext,
    entries: AuditEntry[],
    now: number,
  ): Promise<{ marks: DirtyMark[] }> {
    const marks: DirtyMark[] = [];
    const gone: string[] = [];
    for (let i = 0; i < remove.length; i += CHUNK) {
      const chunk = remove.slice(i, i + CHUNK);
      const rows = await exec<{ person_id: string }>(trx, `delete from memberships where group_id = ? and person_id in (${placeholders(chunk.length)}) returning person_id`, [groupId, ...chunk]);
      gone.push(...rows.map((r) => r.person_id));
    }
    // Losing a membership can only take access away: treat it with leaver priority.
    append(marks, await markDirtyMany(trx, gone, PRIORITY_LEAVER, 'group membership removed', now, ctx.correlationId));
    for (const p of gone)
      entries.push({ ...ctx, action: 'identity.membership.remove', subject: `group:${groupId}`, personId: p, detail: { group: groupName } });
    const added = await this.insertMembers(trx, sourceId, groupId, add);
    append(marks, await markDirtyMany(trx, added, PRIORITY_NORMAL, 'group membership added', now, ctx.correlationId));
    for (const p of added) entries.push({ ...ctx, action: 'identity.membership.add', subject: `group:${groupId}`, personId: p, detail: { group: groupName } });
    return { marks };
  }

  /**
   * Inserts memberships for persons of the same source and returns the persons newly added.
   * A member already present keeps its membership; a display given for it replaces the stored one.
   * Unknown ids fail the whole change (UnknownMemberError).
   */
  private async insertMembers(trx: Transaction<Database>, sourceId: string, groupId: string, members: MemberInput[]): Promise<string[]> {
    const byId = new Map<string, string | null>();
    for (const m of members) {
      const id = memberId(m);
      const display = typeof m === 'string' ? null : (m.display ?? null);
      if (!byId.has(id) || display !== null) byId.set(id, display);
    }
    const unique = [...byId.keys()];
    const added: string[] = [];
    for (let i = 0; i < unique.length; i += CHUNK) {
      const chunk = unique.slice(i, i + CHUNK);
      const known = await exec<{ id: string }>(trx, `select id from persons where source_id = ? and id in (${placeholders(chunk.length)})`, [sourceId, ...chunk]);
      if (known.length !== chunk.length) {
        const have = new Set(known.map((k) => k.id));
        throw new UnknownMemberError(chunk.filter((c) => !have.has(c)));
      }
      const inserted = await exec<{ person_id: string }>(
        trx,
        `insert into memberships (group_id, person_id, display) values ${tuples(chunk.length, 3)} on conflict (group_id, person_id) do nothing returning person_id`,
        chunk.flatMap((p) => [groupId, p, byId.get(p) ?? null]),
      );
      added.push(...inserted.map((r) => r.person_id));
      const fresh = new Set(inserted.map((r) => r.person_id));
      for (const p of chunk) {
        const display = byId.get(p);
        if (!fresh.has(p) && display) await trx.updateTable('memberships').set({ display }).where('group_id', '=', groupId).where('person_id', '=', p).execute();
      }
    }
    return added;
  }

  private async writeEmails(trx: Transaction<Database>, id: string, sourceId: string, input: UserInput, replace: boolean): Promise<void> {
    if (replace) await exec(trx, 'delete from person_emails where person_id = ?', [id]);
    const rows = emailRows(id, sourceId, input);
    if (rows.length > 0)
      await exec(
        trx,
        `insert into person_emails (person_id, source_id, position, value_lc, type_lc, is_primary) values ${tuples(rows.length, 6)}`,
        rows.flatMap((r) => [r.person_id, r.source_id, r.position, r.value_lc, r.type_lc, r.is_primary]),
      );
  }

  private async assertUserNameFree(trx: Transaction<Database>, sourceId: string, userName: string, self: string | null) {
    const clash = await trx
      .selectFrom('persons')
      .select('id')
      .where('source_id', '=', sourceId)
      .where('user_name_lc', '=', userName.toLowerCase())
      .executeTakeFirst();
    if (clash && clash.id !== self) throw new ConflictError('uniqueness', `userName "${userName}" is already in use`);
  }

  private async groupsOf(personIds: string[]): Promise<Map<string, Array<{ id: string; displayName: string }>>> {
    const out = new Map<string, Array<{ id: string; displayName: string }>>();
    if (personIds.length === 0) return out;
    const rows = await exec<{ person_id: string; id: string; display_name: string }>(
      this.store.db,
      `select m.person_id, g.id, g.display_name from memberships m inner join groups g on g.id = m.group_id where m.person_id in (${placeholders(personIds.length)}) order by g.display_name`,
      personIds,
    );
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
      .select(['memberships.group_id', 'memberships.display', 'persons.id', 'persons.display_name', 'persons.user_name'])
      .where('memberships.group_id', 'in', groupIds)
      .orderBy('persons.created_at')
      .orderBy('persons.id')
      .execute();
    for (const r of rows) {
      const list = out.get(r.group_id) ?? [];
      list.push({ id: r.id, display: r.display ?? r.display_name ?? r.user_name });
      out.set(r.group_id, list);
    }
    return out;
  }

  /**
   * Runs one change through the store's writer (on SQLite group-committed with whatever else is
   * being written: see GroupCommit) and tells the queue about its dirty marks after commit.
   * The marks of changes that committed together are handed to the queue in one call.
   *
   * A change records its audit entries in `log` and its dirty marks in `marks`.
   */
  private write<T>(fn: ChangeFn<T>): Promise<T> {
    return this.store
      .write(
        async (trx, log) => {
          const marks: DirtyMark[] = [];
          return { value: await fn(trx, marks, log), marks };
        },
        (r) => this.tell(r.marks),
      )
      .then((r) => r.value);
  }

  private tell(marks: DirtyMark[]): void {
    // The marks are committed: the sweeper finds them if this tell is lost. A throw (or a
    // rejection) here would otherwise surface as an uncaught error and stop the daemon.
    this.told.add(marks).catch(() => {});
  }
}

// ---------- hot statements ----------
//
// The statements on every SCIM write and read run as fixed SQL text (src/store/sql.ts).
// Dynamic queries (filters) use the query builder.

const PERSON_COLUMNS = [
  'id',
  'source_id',
  'external_id',
  'user_name',
  'user_name_lc',
  'email_lc',
  'display_name',
  'display_name_lc',
  'given_name_lc',
  'family_name_lc',
  'active',
  'profile',
  'resource',
  'version',
  'created_at',
  'updated_at',
] as const satisfies ReadonlyArray<keyof PersonsTable>;
const PERSON_INSERT = `insert into persons (${PERSON_COLUMNS.join(', ')}) values (${placeholders(PERSON_COLUMNS.length)})`;
const personValues = (r: PersonsTable) => PERSON_COLUMNS.map((c) => r[c]);

// What a reconcile needs of a person; never the stored SCIM resource, which can be large.
const LOAD_PERSON = 'select id, source_id, user_name, active, display_name, profile, created_at from persons where id = ?';
const LOAD_PROFILE = 'select profile from persons where id = ?';
const LOAD_GROUPS = 'select groups.id, groups.display_name from memberships inner join groups on groups.id = memberships.group_id where memberships.person_id = ?';

const SET_ACTIVE = 'update persons set active = ?, version = version + 1, updated_at = ? where id = ? and source_id = ? and active = ? returning version, user_name';
const SET_ACTIVE_AT_VERSION = SET_ACTIVE.replace(' returning', ' and version = ? returning');

const DIRTY_UPSERT =
  'on conflict (person_id) do update set generation = dirty.generation + 1, ' +
  'priority = case when excluded.priority < dirty.priority then excluded.priority else dirty.priority end, ' +
  'reason = excluded.reason, correlation_id = excluded.correlation_id returning person_id, priority';

/** One change: writes through `trx`, records the persons it marks dirty and its audit entries. */
type ChangeFn<T> = (trx: Transaction<Database>, marks: DirtyMark[], log: AuditEntry[]) => Promise<T>;

const record = append<AuditEntry>;

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
  const [mark] = await markDirtyMany(trx, [personId], priority, reason, now, correlationId);
  return mark!;
}

/** markDirty for many persons with multi-row statements. */
async function markDirtyMany(
  trx: Transaction<Database>,
  personIds: string[],
  priority: number,
  reason: string,
  now: number,
  correlationId: string,
): Promise<DirtyMark[]> {
  const out: DirtyMark[] = [];
  for (let i = 0; i < personIds.length; i += CHUNK) {
    const chunk = personIds.slice(i, i + CHUNK);
    const rows = await exec<{ person_id: string; priority: number }>(
      trx,
      `insert into dirty (person_id, generation, priority, marked_at, reason, correlation_id) values ${tuples(chunk.length, 6)} ${DIRTY_UPSERT}`,
      chunk.flatMap((p) => [p, 1, priority, now, reason, correlationId]),
    );
    out.push(...rows.map((r) => ({ personId: r.person_id, priority: r.priority })));
  }
  return out;
}

/** Marks every member of a group dirty with one statement per chunk, without loading the group. */
async function markGroupDirty(trx: Transaction<Database>, groupId: string, reason: string, now: number, correlationId: string): Promise<DirtyMark[]> {
  const rows = await trx
    .insertInto('dirty')
    .columns(['person_id', 'generation', 'priority', 'marked_at', 'reason', 'correlation_id'])
    .expression((eb) =>
      eb
        .selectFrom('memberships')
        // Parameters in a SELECT list have no type in PostgreSQL until cast.
        .select((s) => [
          s.ref('memberships.person_id').as('person_id'),
          sql<number>`1`.as('generation'),
          sql<number>`cast(${PRIORITY_NORMAL} as integer)`.as('priority'),
          sql<number>`cast(${now} as bigint)`.as('marked_at'),
          sql<string>`cast(${reason} as text)`.as('reason'),
          sql<string>`cast(${correlationId} as text)`.as('correlation_id'),
        ])
        .where('memberships.group_id', '=', groupId)
        // SQLite needs a WHERE on INSERT ... SELECT ... ON CONFLICT to parse the upsert unambiguously.
        .where(sql<boolean>`true`),
    )
    .onConflict((oc) =>
      oc.column('person_id').doUpdateSet({
        generation: sql<number>`dirty.generation + 1`,
        priority: sql<number>`case when excluded.priority < dirty.priority then excluded.priority else dirty.priority end`,
        reason: sql<string>`excluded.reason`,
        correlation_id: sql<string>`excluded.correlation_id`,
      }),
    )
    .returning(['person_id', 'priority'])
    .execute();
  return rows.map((r) => ({ personId: r.person_id, priority: r.priority }));
}

/** A violation of persons_source_username (SQLite or PostgreSQL). */
function isUserNameClash(e: unknown): boolean {
  const err = e as { code?: string; errcode?: number; constraint?: string; message?: string };
  if (err?.code === '23505') return err.constraint === 'persons_source_username';
  return typeof err?.message === 'string' && err.message.includes('UNIQUE constraint failed: persons.source_id, persons.user_name_lc');
}

function dedupe(marks: DirtyMark[]): DirtyMark[] {
  const m = new Map<string, number>();
  for (const d of marks) m.set(d.personId, Math.min(m.get(d.personId) ?? Infinity, d.priority));
  return [...m].map(([personId, priority]) => ({ personId, priority }));
}

function memberId(m: MemberInput): string {
  return typeof m === 'string' ? m : m.id;
}

function ignoredEntry(ctx: WriteContext, groupId: string, ignored: string[] | undefined): AuditEntry[] {
  if (!ignored || ignored.length === 0) return [];
  return [
    {
      ...ctx,
      action: 'identity.membership.ignored',
      subject: `group:${groupId}`,
      detail: { values: ignored.slice(0, 20), count: ignored.length, reason: 'member values that are not person ids were ignored' },
    },
  ];
}

const fold = (s: string | null | undefined): string | null => (typeof s === 'string' ? s.toLowerCase() : null);

function personRow(id: string, sourceId: string, u: UserInput, version: number, created: number, updated: number): PersonsTable {
  return {
    id,
    source_id: sourceId,
    external_id: u.externalId ?? null,
    user_name: u.userName,
    user_name_lc: u.userName.toLowerCase(),
    email_lc: fold(u.email),
    display_name: u.displayName ?? null,
    display_name_lc: fold(u.displayName),
    given_name_lc: fold(u.profile.givenName),
    family_name_lc: fold(u.profile.familyName),
    active: u.active ? 1 : 0,
    profile: JSON.stringify(u.profile),
    resource: JSON.stringify(u.resource),
    version,
    created_at: created,
    updated_at: updated,
  };
}

function emailRows(id: string, sourceId: string, u: UserInput) {
  const list: EmailInput[] = u.emails ?? (u.email ? [{ value: u.email }] : []);
  return list
    .filter((e) => typeof e.value === 'string' && e.value.length > 0)
    .map((e, position) => ({
      person_id: id,
      source_id: sourceId,
      position,
      value_lc: e.value.toLowerCase(),
      type_lc: fold(e.type),
      is_primary: e.primary === true ? 1 : 0,
    }));
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

// ---------- filter compilation ----------

type Kind = 'ci' | 'exact' | 'bool' | 'time' | 'link';

interface FieldDef {
  /** Column (qualified) or, for `link`, the related-table lookup. */
  col: string;
  kind: Kind;
  indexed: boolean;
  /** For `link`: `col in (select <self> from memberships where <other> = value)`. */
  link?: { self: 'group_id' | 'person_id'; other: 'group_id' | 'person_id' };
}

interface FieldSql<F extends string, S extends string> {
  dialect: 'sqlite' | 'postgres';
  fields: Record<F, FieldDef>;
  sub?: { table: 'person_emails'; key: string; sourceId: string; fields: Record<S, FieldDef> };
}

function userSql(sourceId: string, dialect: 'sqlite' | 'postgres'): FieldSql<UserField, EmailField> {
  return {
    dialect,
    fields: {
      id: { col: 'persons.id', kind: 'exact', indexed: true },
      userName: { col: 'persons.user_name_lc', kind: 'ci', indexed: true },
      externalId: { col: 'persons.external_id', kind: 'exact', indexed: true },
      displayName: { col: 'persons.display_name_lc', kind: 'ci', indexed: true },
      givenName: { col: 'persons.given_name_lc', kind: 'ci', indexed: true },
      familyName: { col: 'persons.family_name_lc', kind: 'ci', indexed: true },
      active: { col: 'persons.active', kind: 'bool', indexed: true },
      created: { col: 'persons.created_at', kind: 'time', indexed: true },
      lastModified: { col: 'persons.updated_at', kind: 'time', indexed: true },
      group: { col: 'persons.id', kind: 'link', indexed: true, link: { self: 'person_id', other: 'group_id' } },
    },
    sub: {
      table: 'person_emails',
      key: 'persons.id',
      sourceId,
      fields: {
        value: { col: 'person_emails.value_lc', kind: 'ci', indexed: true },
        type: { col: 'person_emails.type_lc', kind: 'ci', indexed: false },
        primary: { col: 'person_emails.is_primary', kind: 'bool', indexed: false },
      },
    },
  };
}

function groupSql(dialect: 'sqlite' | 'postgres'): FieldSql<GroupField, never> {
  return {
    dialect,
    fields: {
      id: { col: 'groups.id', kind: 'exact', indexed: true },
      displayName: { col: 'groups.display_name_lc', kind: 'ci', indexed: true },
      externalId: { col: 'groups.external_id', kind: 'exact', indexed: true },
      created: { col: 'groups.created_at', kind: 'time', indexed: true },
      lastModified: { col: 'groups.updated_at', kind: 'time', indexed: true },
      member: { col: 'groups.id', kind: 'link', indexed: true, link: { self: 'group_id', other: 'person_id' } },
    },
  };
}

const OPS_BY_KIND: Record<Kind, ReadonlySet<CompareOp>> = {
  ci: new Set(['eq', 'ne', 'co', 'sw', 'ew', 'gt', 'ge', 'lt', 'le', 'pr']),
  exact: new Set(['eq', 'ne', 'co', 'sw', 'ew', 'gt', 'ge', 'lt', 'le', 'pr']),
  bool: new Set(['eq', 'ne', 'pr']),
  time: new Set(['eq', 'ne', 'gt', 'ge', 'lt', 'le', 'pr']),
  link: new Set(['eq']),
};
const NARROW_OPS: ReadonlySet<CompareOp> = new Set(['eq', 'sw', 'gt', 'ge', 'lt', 'le', 'pr']);

type AnyFilter = StoreFilter<string, string>;

function validate(f: AnyFilter, fs: FieldSql<string, string>, inSub = false): void {
  if ('and' in f) return f.and.forEach((x) => validate(x, fs, inSub));
  if ('or' in f) return f.or.forEach((x) => validate(x, fs, inSub));
  if ('not' in f) return validate(f.not, fs, inSub);
  if ('sub' in f) {
    if (inSub || !fs.sub) throw new FilterError(`no related "${f.sub}" to filter on here`);
    return validate(f.where, { dialect: fs.dialect, fields: fs.sub.fields }, true);
  }
  const def = (fs.fields as Record<string, FieldDef | undefined>)[f.field];
  if (!def) throw new FilterError(`unknown field "${f.field}"`);
  if (!OPS_BY_KIND[def.kind].has(f.op)) throw new FilterError(`operator "${f.op}" cannot be used on "${f.field}"`);
  if (f.op !== 'pr') value(f.value, def, f.field);
}

/** The bound value for a comparison, converted to the column's representation. */
function value(v: FilterValue | undefined, def: FieldDef, field: string): string | number {
  switch (def.kind) {
    case 'bool': {
      const b = typeof v === 'boolean' ? v : typeof v === 'string' && /^(true|false)$/i.test(v) ? v.toLowerCase() === 'true' : undefined;
      if (b === undefined) throw new FilterError(`"${field}" is compared with true or false`);
      return b ? 1 : 0;
    }
    case 'time': {
      const ms = typeof v === 'string' ? Date.parse(v) : Number.NaN;
      if (Number.isNaN(ms)) throw new FilterError(`"${field}" is compared with a date and time (e.g. 2024-01-31T12:00:00Z)`);
      return ms;
    }
    case 'ci':
    case 'exact':
    case 'link': {
      if (typeof v !== 'string' && typeof v !== 'number') throw new FilterError(`"${field}" is compared with a string`);
      const s = String(v);
      return def.kind === 'ci' ? s.toLowerCase() : s;
    }
  }
}

/** Whether an index can bound the rows read: some narrow condition in every alternative. */
function narrow(f: AnyFilter, fs: FieldSql<string, string>, negated: boolean): boolean {
  if ('and' in f) return negated ? f.and.every((x) => narrow(x, fs, true)) : f.and.some((x) => narrow(x, fs, false));
  if ('or' in f) return negated ? f.or.some((x) => narrow(x, fs, true)) : f.or.every((x) => narrow(x, fs, false));
  if ('not' in f) return narrow(f.not, fs, !negated);
  if ('sub' in f) return !negated && narrow(f.where, { dialect: fs.dialect, fields: fs.sub!.fields }, false);
  const def = (fs.fields as Record<string, FieldDef>)[f.field]!;
  return !negated && def.indexed && NARROW_OPS.has(f.op);
}

function compile(eb: ExpressionBuilder<any, any>, f: AnyFilter, fs: FieldSql<string, string>, negated: boolean): Expression<SqlBool> {
  if ('and' in f) {
    const parts = f.and.map((x) => compile(eb, x, fs, negated));
    return negated ? eb.or(parts) : eb.and(parts);
  }
  if ('or' in f) {
    const parts = f.or.map((x) => compile(eb, x, fs, negated));
    return negated ? eb.and(parts) : eb.or(parts);
  }
  if ('not' in f) return compile(eb, f.not, fs, !negated);
  if ('sub' in f) {
    const sub = fs.sub!;
    const inner = eb
      .selectFrom(sub.table)
      .select(`${sub.table}.person_id`)
      .where(`${sub.table}.source_id`, '=', sub.sourceId)
      .where((e) => compile(e, f.where, { dialect: fs.dialect, fields: sub.fields }, false));
    return eb(sub.key, negated ? 'not in' : 'in', inner);
  }
  const def = (fs.fields as Record<string, FieldDef>)[f.field]!;
  return compare(eb, def, f.op, f.op === 'pr' ? undefined : value(f.value, def, f.field), negated, fs.dialect);
}

const likeEscape = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/**
 * One comparison, null-aware: a positive test never matches an absent value; its negation
 * (`not`, or `ne`) does, as RFC 7644 §3.4.2.2 reads "not identical".
 */
function compare(eb: ExpressionBuilder<any, any>, def: FieldDef, op: CompareOp, v: string | number | undefined, negated: boolean, dialect: 'sqlite' | 'postgres'): Expression<SqlBool> {
  const col = sql.ref(def.col);
  if (def.kind === 'link') {
    const link = def.link!;
    const inner = eb.selectFrom('memberships').select(`memberships.${link.self}`).where(`memberships.${link.other}`, '=', v as string);
    return eb(def.col, negated ? 'not in' : 'in', inner);
  }
  if (op === 'ne') return compare(eb, def, 'eq', v, !negated, dialect);
  let positive: Expression<SqlBool>;
  switch (op) {
    case 'eq':
      positive = eb(def.col, '=', v);
      break;
    case 'gt':
      positive = eb(def.col, '>', v);
      break;
    case 'ge':
      positive = eb(def.col, '>=', v);
      break;
    case 'lt':
      positive = eb(def.col, '<', v);
      break;
    case 'le':
      positive = eb(def.col, '<=', v);
      break;
    case 'pr':
      positive = def.kind === 'ci' || def.kind === 'exact' ? eb.and([eb(def.col, 'is not', null), eb(def.col, '<>', '')]) : eb(def.col, 'is not', null);
      break;
    case 'sw': {
      const s = String(v);
      // A range on the column uses its index (byte order in SQLite, code-point order in a C
      // collation); in PostgreSQL the LIKE keeps the result exact under any collation.
      const range = eb.and([eb(def.col, '>=', s), eb(def.col, '<', `${s}\u{10FFFF}`)]);
      positive = dialect === 'postgres' ? eb.and([range, sql<SqlBool>`${col} like ${`${likeEscape(s)}%`} escape '\\'`]) : range;
      break;
    }
    case 'co':
      positive = dialect === 'postgres' ? sql<SqlBool>`strpos(${col}, ${String(v)}) > 0` : sql<SqlBool>`instr(${col}, ${String(v)}) > 0`;
      break;
    case 'ew': {
      const s = String(v);
      positive = dialect === 'postgres' ? sql<SqlBool>`right(${col}, ${s.length}) = ${s}` : sql<SqlBool>`substr(${col}, ${-s.length}) = ${s}`;
      if (dialect === 'sqlite') positive = eb.and([sql<SqlBool>`length(${col}) >= ${s.length}`, positive]);
      break;
    }
    default:
      throw new FilterError(`operator "${op}" is not supported`);
  }
  if (!negated) return positive;
  return eb.or([eb(def.col, 'is', null), eb.not(positive)]);
}

/**
 * Marks every person lockstep knows (identities and anyone with lock-system state) dirty in one
 * statement, relabelling existing marks with this cause. For changes that alter everyone's
 * desired access at once: a policy change, the end of a lockdown. Returns how many were marked.
 */
export async function markEveryoneDirty(
  trx: Transaction<Database>,
  mark: { priority: number; reason: string; markedAt: number; correlationId: string },
): Promise<number> {
  const result = await sql`
    insert into dirty (person_id, generation, priority, marked_at, reason, correlation_id)
    select person_id, 1, ${mark.priority}, ${mark.markedAt}, ${mark.reason}, ${mark.correlationId}
    from (select id as person_id from persons union select person_id from lock_state) as everyone
    where true
    on conflict (person_id) do update set generation = dirty.generation + 1, correlation_id = excluded.correlation_id, reason = excluded.reason`.execute(trx);
  return Number(result.numAffectedRows ?? 0);
}
