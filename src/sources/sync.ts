import { sql } from 'kysely';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../log.ts';
import { IdentitySourceError, type SourceGroup, type SourceUser } from '../ports/identity-source.ts';
import type { Store } from '../store/db.ts';
import { ConflictError, NotFoundError, UnknownMemberError, type IdentityRepo, type UserInput, type WriteContext } from '../store/identities.ts';
import type { SourceUsersTable } from '../store/schema.ts';
import { groupHash, idsHash, matchKey, toGroupInput, toUserInput, userHash } from './mapping.ts';
import { KeyedMutex } from './mutex.ts';

/**
 * Writes what an identity source's API confirmed into the identity store — always through
 * IdentityRepo, so every change carries its audit row and dirty mark in one transaction and the
 * reconciler takes over. This module only adds the bookkeeping of which source record feeds which
 * lockstep person or group (`source_users`, `source_groups`).
 *
 * Keys: a source record is (sourceId, source-side id). Its lockstep person is a persons row in
 * that source whose id is minted here once and kept for the record's lifetime: that id is the
 * external id lock systems know the person by.
 *
 * Linking (config `identity.matchOn`), see README.md: the first record of a match key owns the
 * person (`primary`); records of *other* sources with the same key join it (`secondary`) and
 * write no persons row of their own. The person's row is the primary record, with:
 * - active = primary active AND (when a record of `identity.authoritativeSource` is linked) that
 *   record present and active — a leaver in the authoritative source wins;
 * - attributes = secondaries' (non-authoritative) < primary's < authoritative record's;
 * - roles = union of the present records' roles; groups = the primary's own only.
 */

export type UserChange = 'created' | 'updated' | 'unchanged' | 'removed' | 'linked' | 'absent';
export type GroupChangeKind = 'created' | 'updated' | 'unchanged' | 'removed' | 'absent';

export type LinkRow = SourceUsersTable;

interface StoredRecord {
  input: UserInput;
  groups: Array<{ id: string; displayName: string }> | null;
}

/** One confirmed record, normalised. */
interface Rec {
  sourceId: string;
  remoteId: string;
  input: UserInput;
  hash: string;
  groups: Array<{ id: string; displayName: string }> | undefined;
  key: string | null;
}

export interface SyncDeps {
  store: Store;
  identities: IdentityRepo;
  config: Config;
  log: Logger;
  /** Re-read another record of the source soon (a userName it still holds blocks this one). */
  reconfirm?: (sourceId: string, remoteUserId: string) => Promise<void>;
}

export class SourceSync {
  readonly matchOn: string | undefined;
  readonly authoritative: string | undefined;
  private readonly deps: SyncDeps;
  private readonly userLocks = new KeyedMutex();
  private readonly groupLocks = new KeyedMutex();
  private readonly personLocks = new KeyedMutex();

  constructor(deps: SyncDeps) {
    this.deps = deps;
    this.matchOn = deps.config.identity.matchOn;
    this.authoritative = deps.config.identity.authoritativeSource;
  }

  private get db() {
    return this.deps.store.db;
  }

  onMissing(sourceId: string): 'delete' | 'deactivate' {
    return this.deps.config.sources.find((s) => s.id === sourceId)?.onMissing ?? 'delete';
  }

  async link(sourceId: string, remoteId: string): Promise<LinkRow | undefined> {
    return this.db.selectFrom('source_users').selectAll().where('source_id', '=', sourceId).where('remote_id', '=', remoteId).executeTakeFirst();
  }

  /** The lockstep person a source record feeds (primary or linked), if any. */
  async personOf(sourceId: string, remoteId: string): Promise<string | undefined> {
    return (await this.link(sourceId, remoteId))?.person_id;
  }

  // ---------- users ----------

  /**
   * Stores what `readUser` returned: `null` = the user is gone (delete or deactivate, per
   * source `onMissing`); otherwise create/replace the person and, when `u.groups` is known and
   * `groups` is set, replace the person's memberships in this source's groups.
   */
  async applyUser(sourceId: string, remoteId: string, u: SourceUser | null, ctx: WriteContext, opts: { groups?: boolean; notConfirmedSince?: number } = {}): Promise<UserChange | 'newer'> {
    return this.userLocks.run(`${sourceId}\u0000${remoteId}`, async () => {
      const existing = await this.link(sourceId, remoteId);
      // A snapshot's view is older than a confirmation made after it started: keep the newer state.
      if (existing && opts.notConfirmedSince !== undefined && Number(existing.confirmed_at) >= opts.notConfirmedSince) return 'newer';
      if (!u) return existing && existing.present === 1 ? this.remove(existing, ctx) : 'absent';
      const input = toUserInput(u);
      const rec: Rec = { sourceId, remoteId, input, hash: userHash(input), groups: u.groups, key: matchKey(u, this.matchOn) };
      const setGroups = opts.groups !== false;
      return this.matchOn ? this.upsertLinked(rec, existing, ctx, setGroups) : this.upsertPlain(rec, existing, ctx, setGroups);
    });
  }

  private async upsertPlain(rec: Rec, existing: LinkRow | undefined, ctx: WriteContext, setGroups: boolean): Promise<UserChange> {
    const now = Date.now();
    let change: UserChange;
    let personId: string;
    if (!existing) {
      personId = await this.adoptOrCreate(rec, ctx);
      await this.insertLink(rec, personId, 'primary', now);
      change = 'created';
    } else if (existing.present !== 1 || existing.hash !== rec.hash || existing.written_hash !== rec.hash) {
      personId = await this.writePerson(rec.sourceId, existing.person_id, rec, rec.input, ctx);
      await this.db
        .updateTable('source_users')
        .set({ person_id: personId, hash: rec.hash, written_hash: rec.hash, present: 1, confirmed_at: now })
        .where('source_id', '=', rec.sourceId)
        .where('remote_id', '=', rec.remoteId)
        .execute();
      change = 'updated';
    } else {
      // Unchanged: nothing is written (not even confirmed_at). A snapshot that read this record
      // earlier either saw this same state, or a change came in between — and that change was
      // written, with its confirmed_at, which is what the snapshot's guard looks at.
      personId = existing.person_id;
      change = 'unchanged';
    }
    if (setGroups && rec.groups && (await this.setUserGroups(rec.sourceId, personId, rec.groups, ctx)) && change === 'unchanged') change = 'updated';
    return change;
  }

  private async remove(link: LinkRow, ctx: WriteContext): Promise<UserChange> {
    if (this.matchOn) return this.removeLinked(link, ctx);
    await this.removePerson(link, ctx);
    return 'removed';
  }

  /** The record is gone: its primary person is deleted or deactivated (per source `onMissing`). */
  private async removePerson(link: LinkRow, ctx: WriteContext): Promise<void> {
    const { identities } = this.deps;
    if (this.onMissing(link.source_id) === 'delete') {
      await identities.deleteUser(link.source_id, link.person_id, ctx).catch(ignoreNotFound);
      await this.db.deleteFrom('source_users').where('source_id', '=', link.source_id).where('remote_id', '=', link.remote_id).execute();
      return;
    }
    await identities.setActive(link.source_id, link.person_id, false, ctx).catch(ignoreNotFound);
    await this.db
      .updateTable('source_users')
      .set({ present: 0, hash: '', written_hash: null, confirmed_at: Date.now() })
      .where('source_id', '=', link.source_id)
      .where('remote_id', '=', link.remote_id)
      .execute();
  }

  /**
   * A record seen for the first time: adopt an unlinked person of the same source with this
   * external id or userName (SCIM push and API on one source id describe the same people), or
   * create one. A userName still held by another record of the source (renames crossing) is
   * retried after that record is re-read.
   */
  private async adoptOrCreate(rec: Rec, ctx: WriteContext): Promise<string> {
    const { identities } = this.deps;
    const lc = rec.input.userName.toLowerCase();
    const ext = rec.input.externalId ?? null;
    const candidates = await this.db
      .selectFrom('persons')
      .select(['id', 'external_id', 'user_name_lc'])
      .where('source_id', '=', rec.sourceId)
      .where((eb) => (ext === null ? eb('user_name_lc', '=', lc) : eb.or([eb('user_name_lc', '=', lc), eb('external_id', '=', ext)])))
      .execute();
    const linked = candidates.length
      ? new Map(
          (
            await this.db
              .selectFrom('source_users')
              .select(['person_id', 'remote_id'])
              .where('person_id', 'in', candidates.map((c) => c.id))
              .execute()
          ).map((r) => [r.person_id, r.remote_id]),
        )
      : new Map<string, string>();
    const free = candidates.filter((c) => !linked.has(c.id));
    const adopt = free.find((c) => ext !== null && c.external_id === ext) ?? free.find((c) => c.user_name_lc === lc);
    if (adopt) {
      this.deps.log.info({ source: rec.sourceId, remoteId: rec.remoteId, personId: adopt.id }, 'source record adopted an existing person of the same source');
      return this.writePerson(rec.sourceId, adopt.id, rec, rec.input, ctx);
    }
    try {
      return (await identities.createUser(rec.sourceId, rec.input, ctx)).id;
    } catch (err) {
      if (!(err instanceof ConflictError && err.kind === 'uniqueness')) throw err;
      return this.userNameHeld(rec, err);
    }
  }

  private async userNameHeld(rec: Rec, err: Error): Promise<never> {
    const holder = await this.db
      .selectFrom('persons')
      .innerJoin('source_users', 'source_users.person_id', 'persons.id')
      .select(['source_users.remote_id'])
      .where('persons.source_id', '=', rec.sourceId)
      .where('persons.user_name_lc', '=', rec.input.userName.toLowerCase())
      .where('source_users.source_id', '=', rec.sourceId)
      .executeTakeFirst();
    if (holder && holder.remote_id !== rec.remoteId) await this.deps.reconfirm?.(rec.sourceId, holder.remote_id).catch(() => {});
    throw new IdentitySourceError('retryable', `userName "${rec.input.userName}" is still held by ${holder ? `record ${holder.remote_id}` : 'another person'} of source ${rec.sourceId}; re-reading it first`, { cause: err });
  }

  /** replaceUser; a person removed behind our back (SCIM DELETE on a shared source) is created again. Returns the person id. */
  private async writePerson(sourceId: string, personId: string, rec: Rec, input: UserInput, ctx: WriteContext): Promise<string> {
    try {
      await this.deps.identities.replaceUser(sourceId, personId, input, ctx);
      return personId;
    } catch (err) {
      if (err instanceof ConflictError && err.kind === 'uniqueness') return this.userNameHeld(rec, err);
      if (!(err instanceof NotFoundError)) throw err;
    }
    const id = await this.adoptOrCreate({ ...rec, input }, ctx);
    await this.db.updateTable('source_users').set({ person_id: id }).where('person_id', '=', personId).execute();
    return id;
  }

  private async insertLink(rec: Rec, personId: string, role: 'primary' | 'secondary', now: number): Promise<void> {
    const row: LinkRow = {
      source_id: rec.sourceId,
      remote_id: rec.remoteId,
      person_id: personId,
      role,
      match_key: rec.key,
      present: 1,
      hash: rec.hash,
      written_hash: role === 'primary' ? rec.hash : null,
      record: this.matchOn ? JSON.stringify({ input: rec.input, groups: rec.groups ?? null } satisfies StoredRecord) : null,
      created_at: now,
      confirmed_at: now,
    };
    await this.db
      .insertInto('source_users')
      .values(row)
      .onConflict((oc) =>
        oc.columns(['source_id', 'remote_id']).doUpdateSet({
          person_id: row.person_id,
          role: row.role,
          match_key: row.match_key,
          present: 1,
          hash: row.hash,
          written_hash: row.written_hash,
          record: row.record,
          confirmed_at: now,
        }),
      )
      .execute();
  }

  /**
   * Makes the person's memberships in this source's API-managed groups exactly `groups`
   * (creating groups not seen before). Memberships in groups a SCIM client created are left alone.
   */
  async setUserGroups(sourceId: string, personId: string, groups: Array<{ id: string; displayName: string }>, ctx: WriteContext): Promise<boolean> {
    const want = new Set<string>();
    for (const g of groups) want.add((await this.ensureGroup(sourceId, { id: g.id, displayName: g.displayName }, ctx)).groupId);
    const current = new Set(
      (
        await this.db
          .selectFrom('memberships')
          .innerJoin('source_groups', 'source_groups.group_id', 'memberships.group_id')
          .select('memberships.group_id')
          .where('memberships.person_id', '=', personId)
          .where('source_groups.source_id', '=', sourceId)
          .execute()
      ).map((r) => r.group_id),
    );
    let changed = false;
    for (const gid of want)
      if (!current.has(gid)) changed = (await this.patch(sourceId, gid, [personId], [], ctx)) || changed;
    for (const gid of current)
      if (!want.has(gid)) changed = (await this.patch(sourceId, gid, [], [personId], ctx)) || changed;
    return changed;
  }

  private async patch(sourceId: string, groupId: string, add: string[], remove: string[], ctx: WriteContext): Promise<boolean> {
    try {
      return (await this.deps.identities.patchMembers(sourceId, groupId, add, remove, ctx)).changed;
    } catch (err) {
      if (err instanceof NotFoundError || err instanceof UnknownMemberError) return false;
      throw err;
    }
  }

  // ---------- groups ----------

  /**
   * Creates or updates the lockstep group of a source group. `members` (person ids) is used only
   * when the group is created; `rename: false` keeps an existing group's name (a user's group
   * list may lag behind the group itself).
   */
  async ensureGroup(
    sourceId: string,
    g: Pick<SourceGroup, 'id' | 'displayName'> & { externalId?: string; raw?: Record<string, unknown> },
    ctx: WriteContext,
    opts: { members?: string[] } = {},
  ): Promise<{ groupId: string; change: GroupChangeKind }> {
    return this.groupLocks.run(`${sourceId}\u0000${g.id}`, async () => {
      const { identities } = this.deps;
      const input = toGroupInput(g);
      const h = groupHash(input);
      const now = Date.now();
      const row = await this.db.selectFrom('source_groups').selectAll().where('source_id', '=', sourceId).where('remote_id', '=', g.id).executeTakeFirst();
      if (row) {
        let change: GroupChangeKind = 'unchanged';
        if (row.hash !== h) {
          try {
            await identities.replaceGroup(sourceId, row.group_id, input, undefined, ctx);
            change = 'updated';
          } catch (err) {
            if (!(err instanceof NotFoundError)) throw err;
            // Deleted behind our back: create it again below.
            await this.db.deleteFrom('source_groups').where('source_id', '=', sourceId).where('remote_id', '=', g.id).execute();
            return this.createGroupLinked(sourceId, g.id, input, h, opts.members ?? [], ctx, now);
          }
        }
        // Unchanged groups are written at most once a minute (confirmed_at guards snapshot removals).
        if (change !== 'unchanged' || now - Number(row.confirmed_at) > 60_000)
          await this.db.updateTable('source_groups').set({ hash: h, confirmed_at: now }).where('source_id', '=', sourceId).where('remote_id', '=', g.id).execute();
        return { groupId: row.group_id, change };
      }
      const adopt = await this.db
        .selectFrom('groups')
        .select('id')
        .where('source_id', '=', sourceId)
        .where('external_id', '=', input.externalId ?? g.id)
        .where('id', 'not in', (eb) => eb.selectFrom('source_groups').select('group_id').where('source_id', '=', sourceId))
        .executeTakeFirst();
      if (adopt) {
        await identities.replaceGroup(sourceId, adopt.id, input, undefined, ctx);
        await this.db.insertInto('source_groups').values({ source_id: sourceId, remote_id: g.id, group_id: adopt.id, hash: h, members_hash: null, confirmed_at: now }).execute();
        return { groupId: adopt.id, change: 'updated' };
      }
      return this.createGroupLinked(sourceId, g.id, input, h, opts.members ?? [], ctx, now);
    });
  }

  private async createGroupLinked(
    sourceId: string,
    remoteId: string,
    input: ReturnType<typeof toGroupInput>,
    h: string,
    members: string[],
    ctx: WriteContext,
    now: number,
  ): Promise<{ groupId: string; change: GroupChangeKind }> {
    const members2 = await this.existingPersons(sourceId, members);
    const created = await this.deps.identities.createGroup(sourceId, input, members2, ctx, { withMembers: false });
    await this.db
      .insertInto('source_groups')
      .values({ source_id: sourceId, remote_id: remoteId, group_id: created.id, hash: h, members_hash: members.length ? idsHash(members2) : null, confirmed_at: now })
      .execute();
    return { groupId: created.id, change: 'created' };
  }

  /** Stores what `readGroup` returned (`null` = gone: the group is deleted and its members re-planned). */
  async applyGroup(sourceId: string, remoteId: string, g: SourceGroup | null, ctx: WriteContext): Promise<GroupChangeKind> {
    if (g) return (await this.ensureGroup(sourceId, g, ctx)).change;
    return this.removeGroup(sourceId, remoteId, ctx);
  }

  async removeGroup(sourceId: string, remoteId: string, ctx: WriteContext): Promise<GroupChangeKind> {
    return this.groupLocks.run(`${sourceId}\u0000${remoteId}`, async () => {
      const row = await this.db.selectFrom('source_groups').select('group_id').where('source_id', '=', sourceId).where('remote_id', '=', remoteId).executeTakeFirst();
      if (!row) return 'absent';
      await this.deps.identities.deleteGroup(sourceId, row.group_id, ctx).catch(ignoreNotFound);
      await this.db.deleteFrom('source_groups').where('source_id', '=', sourceId).where('remote_id', '=', remoteId).execute();
      return 'removed';
    });
  }

  /**
   * Sets a group's members to these person ids (of this source). Returns whether anything changed.
   * `membersHash` short-cuts an unchanged list (snapshots).
   */
  async setGroupMembers(sourceId: string, remoteGroupId: string, personIds: string[], ctx: WriteContext): Promise<boolean> {
    const row = await this.db.selectFrom('source_groups').select(['group_id', 'members_hash']).where('source_id', '=', sourceId).where('remote_id', '=', remoteGroupId).executeTakeFirst();
    if (!row) return false;
    const h = idsHash(personIds);
    if (row.members_hash === h) return false;
    let changed = false;
    try {
      changed = (await this.deps.identities.replaceMembers(sourceId, row.group_id, personIds, ctx)).changed;
    } catch (err) {
      if (!(err instanceof UnknownMemberError)) throw err;
      // A member was removed meanwhile: set the others.
      const gone = new Set(err.ids);
      changed = (await this.deps.identities.replaceMembers(sourceId, row.group_id, personIds.filter((p) => !gone.has(p)), ctx)).changed;
    }
    await this.db.updateTable('source_groups').set({ members_hash: h, confirmed_at: Date.now() }).where('source_id', '=', sourceId).where('remote_id', '=', remoteGroupId).execute();
    return changed;
  }

  /** Person ids of these source records that are persons of this source (primaries). Unknown ids are returned apart. */
  async personsOfRemote(sourceId: string, remoteIds: string[]): Promise<{ persons: string[]; unknown: string[] }> {
    const found = new Map<string, string>();
    for (let i = 0; i < remoteIds.length; i += 500) {
      const rows = await this.db
        .selectFrom('source_users')
        .select(['remote_id', 'person_id', 'role', 'present'])
        .where('source_id', '=', sourceId)
        .where('remote_id', 'in', remoteIds.slice(i, i + 500))
        .execute();
      for (const r of rows) if (r.role === 'primary' && r.present === 1) found.set(r.remote_id, r.person_id);
      for (const r of rows) if (r.role !== 'primary') found.set(r.remote_id, '');
    }
    return {
      persons: [...found.values()].filter((p) => p !== ''),
      unknown: remoteIds.filter((id) => !found.has(id)),
    };
  }

  private async existingPersons(sourceId: string, ids: string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const out: string[] = [];
    for (let i = 0; i < ids.length; i += 500) {
      const rows = await this.db.selectFrom('persons').select('id').where('source_id', '=', sourceId).where('id', 'in', ids.slice(i, i + 500)).execute();
      out.push(...rows.map((r) => r.id));
    }
    return out;
  }

  // ---------- linking (identity.matchOn) ----------

  private async upsertLinked(rec: Rec, existing: LinkRow | undefined, ctx: WriteContext, setGroups: boolean): Promise<UserChange> {
    const now = Date.now();
    const record = JSON.stringify({ input: rec.input, groups: rec.groups ?? null } satisfies StoredRecord);
    if (existing?.role === 'secondary') {
      if (rec.key !== null && existing.match_key === rec.key) {
        await this.db
          .updateTable('source_users')
          .set({ hash: rec.hash, record, present: 1, confirmed_at: now })
          .where('source_id', '=', rec.sourceId)
          .where('remote_id', '=', rec.remoteId)
          .execute();
        const changed = await this.writeEffective(existing.person_id, ctx);
        return existing.hash === rec.hash && existing.present === 1 && !changed ? 'unchanged' : 'updated';
      }
      // The match key changed: this record no longer belongs to that person.
      await this.db.deleteFrom('source_users').where('source_id', '=', rec.sourceId).where('remote_id', '=', rec.remoteId).execute();
      await this.writeEffective(existing.person_id, ctx);
      existing = undefined;
    }
    if (existing) {
      await this.db
        .updateTable('source_users')
        .set({ hash: rec.hash, record, match_key: rec.key, present: 1, confirmed_at: now })
        .where('source_id', '=', rec.sourceId)
        .where('remote_id', '=', rec.remoteId)
        .execute();
      if (existing.match_key !== rec.key) await this.detachMismatched(existing.person_id, rec.key, ctx);
      let changed = await this.writeEffective(existing.person_id, ctx);
      const personId = (await this.link(rec.sourceId, rec.remoteId))?.person_id ?? existing.person_id;
      if (setGroups && rec.groups) changed = (await this.setUserGroups(rec.sourceId, personId, rec.groups, ctx)) || changed;
      return changed || existing.present !== 1 ? 'updated' : 'unchanged';
    }
    return this.placeNew(rec, ctx, setGroups, now);
  }

  /** A record with no link yet: join the person of its match key (another source), or become a person. */
  private async placeNew(rec: Rec, ctx: WriteContext, setGroups: boolean, now: number): Promise<UserChange> {
    // One placement per match key at a time: two records of one human arriving together from two
    // sources must not both become persons.
    return this.personLocks.run(`key\u0000${rec.key ?? `${rec.sourceId}\u0000${rec.remoteId}`}`, () => this.placeNewLocked(rec, ctx, setGroups, now));
  }

  private async placeNewLocked(rec: Rec, ctx: WriteContext, setGroups: boolean, now: number): Promise<UserChange> {
    const primary = rec.key ? await this.findPrimary(rec.key, rec.sourceId) : undefined;
    if (primary) {
      await this.insertLink(rec, primary, 'secondary', now);
      await this.writeEffective(primary, ctx);
      this.deps.log.info({ source: rec.sourceId, remoteId: rec.remoteId, personId: primary, matchOn: this.matchOn }, 'source record linked to an existing person');
      return 'linked';
    }
    const personId = await this.adoptOrCreate(rec, ctx);
    await this.insertLink(rec, personId, 'primary', now);
    if (setGroups && rec.groups) await this.setUserGroups(rec.sourceId, personId, rec.groups, ctx);
    return 'created';
  }

  /** The oldest present primary with this key in another source that has no record of `sourceId` yet. */
  private async findPrimary(key: string, sourceId: string): Promise<string | undefined> {
    const candidates = await this.db
      .selectFrom('source_users')
      .select(['person_id'])
      .where('match_key', '=', key)
      .where('role', '=', 'primary')
      .where('present', '=', 1)
      .where('source_id', '<>', sourceId)
      .orderBy('created_at')
      .execute();
    for (const c of candidates) {
      const mine = await this.db.selectFrom('source_users').select('remote_id').where('person_id', '=', c.person_id).where('source_id', '=', sourceId).executeTakeFirst();
      if (!mine) return c.person_id;
    }
    return undefined;
  }

  /** After a primary's key changed: its secondaries with another key leave and are placed again. */
  private async detachMismatched(personId: string, key: string | null, ctx: WriteContext): Promise<void> {
    const rows = await this.db.selectFrom('source_users').selectAll().where('person_id', '=', personId).where('role', '=', 'secondary').execute();
    for (const r of rows) {
      if (r.match_key === key && key !== null) continue;
      await this.db.deleteFrom('source_users').where('source_id', '=', r.source_id).where('remote_id', '=', r.remote_id).execute();
      if (r.present !== 1 || !r.record) continue;
      const stored = JSON.parse(r.record) as StoredRecord;
      await this.placeNew(
        { sourceId: r.source_id, remoteId: r.remote_id, input: stored.input, hash: r.hash, groups: stored.groups ?? undefined, key: r.match_key },
        ctx,
        true,
        Date.now(),
      );
    }
  }

  /**
   * Writes the linked person's row from its records (the conflict rule in the class comment).
   * Returns whether the persons row changed.
   */
  async writeEffective(personId: string, ctx: WriteContext): Promise<boolean> {
    return this.personLocks.run(`person\u0000${personId}`, async () => {
      const rows = await this.db.selectFrom('source_users').selectAll().where('person_id', '=', personId).orderBy('created_at').execute();
      const primary = rows.find((r) => r.role === 'primary');
      if (!primary?.record) return false;
      const own = (JSON.parse(primary.record) as StoredRecord).input;
      const secondaries = rows.filter((r) => r.role === 'secondary');
      const recs = secondaries.map((r) => ({ row: r, input: r.record ? (JSON.parse(r.record) as StoredRecord).input : undefined }));
      const auth = this.authoritative && primary.source_id !== this.authoritative ? recs.filter((r) => r.row.source_id === this.authoritative) : [];
      let active = primary.present === 1 && own.active;
      // A leaver (inactive or gone) in the authoritative source wins over every other record.
      for (const a of auth) active = active && a.row.present === 1 && a.input?.active === true;
      const attributes: Record<string, string> = {};
      for (const r of recs) if (r.row.present === 1 && r.row.source_id !== this.authoritative && r.input) Object.assign(attributes, r.input.profile.attributes);
      Object.assign(attributes, own.profile.attributes);
      for (const a of auth) if (a.row.present === 1 && a.input) Object.assign(attributes, a.input.profile.attributes);
      const roles = new Set(own.profile.roles);
      for (const r of recs) if (r.row.present === 1 && r.input) for (const role of r.input.profile.roles) roles.add(role);
      const effective: UserInput = { ...own, active, profile: { ...own.profile, roles: [...roles].sort(), attributes } };
      const h = userHash(effective);
      if (primary.written_hash === h) return false;
      const rec: Rec = { sourceId: primary.source_id, remoteId: primary.remote_id, input: effective, hash: primary.hash, groups: undefined, key: primary.match_key };
      const id = await this.writePerson(primary.source_id, personId, rec, effective, ctx);
      await this.db.updateTable('source_users').set({ written_hash: h }).where('source_id', '=', primary.source_id).where('remote_id', '=', primary.remote_id).execute();
      if (id !== personId) this.deps.log.warn({ personId, newPersonId: id }, 'linked person was removed outside the source and created again');
      return true;
    });
  }

  private async removeLinked(link: LinkRow, ctx: WriteContext): Promise<UserChange> {
    const where = (q: any) => q.where('source_id', '=', link.source_id).where('remote_id', '=', link.remote_id);
    if (link.role === 'secondary') {
      // An authoritative record is kept as a tombstone: its absence is a leaver and must keep winning.
      if (link.source_id === this.authoritative) await where(this.db.updateTable('source_users').set({ present: 0, confirmed_at: Date.now() })).execute();
      else await where(this.db.deleteFrom('source_users')).execute();
      await this.writeEffective(link.person_id, ctx);
      return 'removed';
    }
    if (this.onMissing(link.source_id) === 'deactivate') {
      await where(this.db.updateTable('source_users').set({ present: 0, confirmed_at: Date.now() })).execute();
      await this.writeEffective(link.person_id, ctx);
      return 'removed';
    }
    const others = await this.db.selectFrom('source_users').selectAll().where('person_id', '=', link.person_id).where('role', '=', 'secondary').orderBy('created_at').execute();
    await this.deps.identities.deleteUser(link.source_id, link.person_id, ctx).catch(ignoreNotFound);
    await where(this.db.deleteFrom('source_users')).execute();
    const heir = others.find((o) => o.present === 1 && o.record);
    if (!heir) {
      await this.db.deleteFrom('source_users').where('person_id', '=', link.person_id).execute();
      return 'removed';
    }
    // The person's own record is gone; the oldest linked record becomes a person of its own
    // source (a new person id: lock systems see a new person, the old one left).
    const stored = JSON.parse(heir.record!) as StoredRecord;
    const rec: Rec = { sourceId: heir.source_id, remoteId: heir.remote_id, input: stored.input, hash: heir.hash, groups: stored.groups ?? undefined, key: heir.match_key };
    const newId = await this.adoptOrCreate(rec, ctx);
    await this.db
      .updateTable('source_users')
      .set({ role: 'primary', person_id: newId, written_hash: heir.hash })
      .where('source_id', '=', heir.source_id)
      .where('remote_id', '=', heir.remote_id)
      .execute();
    await this.db.updateTable('source_users').set({ person_id: newId }).where('person_id', '=', link.person_id).execute();
    if (rec.groups) await this.setUserGroups(rec.sourceId, newId, rec.groups, ctx);
    await this.writeEffective(newId, ctx);
    this.deps.log.info({ personId: link.person_id, newPersonId: newId, source: heir.source_id }, 'primary record gone; a linked record became the person');
    return 'removed';
  }

  /** Records sharing a match key that stayed separate persons (they existed before linking could join them). */
  async duplicateMatchKeys(limit = 100): Promise<Array<{ matchKey: string; persons: string[] }>> {
    if (!this.matchOn) return [];
    const rows = await this.db
      .selectFrom('source_users')
      .select(['match_key', sql<number>`count(*)`.as('n')])
      .where('role', '=', 'primary')
      .where('present', '=', 1)
      .where('match_key', 'is not', null)
      .groupBy('match_key')
      .having(sql`count(*)`, '>', 1)
      .limit(limit)
      .execute();
    const out: Array<{ matchKey: string; persons: string[] }> = [];
    for (const r of rows) {
      const persons = await this.db.selectFrom('source_users').select('person_id').where('match_key', '=', r.match_key).where('role', '=', 'primary').where('present', '=', 1).execute();
      out.push({ matchKey: r.match_key!, persons: persons.map((p) => p.person_id) });
    }
    return out;
  }
}

function ignoreNotFound(err: unknown): void {
  if (!(err instanceof NotFoundError)) throw err;
}
