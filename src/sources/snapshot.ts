import type { Logger } from '../log.ts';
import type { IdentitySource, SourceGroup, SourceUser } from '../ports/identity-source.ts';
import type { Store } from '../store/db.ts';
import { ConflictError, type IdentityRepo, type WriteContext } from '../store/identities.ts';
import { toUserInput, userHash } from './mapping.ts';
import { pool } from './mutex.ts';
import type { SourceSync } from './sync.ts';

/**
 * A full reconciliation of one source: stream `readSnapshot()`, upsert every user and group it
 * contains, and — only once the `complete` record arrived — replace memberships and remove what
 * the snapshot did not contain. A stream that throws or ends without `complete` changes
 * memberships and removes nothing ("unknown", never "deleted").
 *
 * What the snapshot had to change is the drift between the IdP and lockstep that hooks and
 * deltas missed; the summary is kept per source and shown by GET /api/v1/drift.
 *
 * A record confirmed by a hook while the snapshot ran (confirmed_at after its start) is newer
 * than the snapshot's view of it: the snapshot leaves it, and its memberships, alone.
 *
 * Memory: the source's record → person map and the seen sets (ids only) plus one batch of users;
 * group memberships are collected as person-id sets until `complete`.
 */

export interface SnapshotSummary {
  startedAt: string;
  finishedAt: string;
  complete: boolean;
  users: { seen: number; created: number; updated: number; linked: number; unchanged: number; removed: number; skippedNewer: number; errors: number };
  groups: { seen: number; created: number; updated: number; removed: number; membershipsChanged: number };
  /** A few ids per kind of change, for the drift report (source-side ids). */
  samples: { created: string[]; updated: string[]; removed: string[] };
  error?: string;
}

/**
 * What the snapshot knows of one source record. One object per record (preloaded or seen), and
 * group member sets hold references to these objects, so a 100,000-user source costs a few
 * tens of MB however many memberships it has.
 */
interface Entry {
  /** Person id when this record is a person of this source (primary). */
  person: string | undefined;
  /** The stored hash when the stored person is exactly this hash (present, written); else undefined. */
  cleanHash: string | undefined;
  present: boolean;
  /** confirmed_at when preloaded (0 for records new in this snapshot). */
  confirmedAt: number;
  seen: boolean;
  /** When this snapshot wrote the person (0 = it did not). */
  wroteAt: number;
}

const BATCH = 500;
const SAMPLES = 20;

export async function runSnapshot(deps: {
  source: IdentitySource;
  sync: SourceSync;
  identities: IdentityRepo;
  store: Store;
  log: Logger;
  ctx: WriteContext;
  /** Called with the complete record's cursor before the removals (so deltas can continue). */
  onComplete?: (cursor: string | undefined) => Promise<void>;
}): Promise<SnapshotSummary> {
  const { source, sync, store, log, ctx } = deps;
  const sourceId = source.id;
  const db = store.db;
  const start = Date.now();
  const summary: SnapshotSummary = {
    startedAt: new Date(start).toISOString(),
    finishedAt: '',
    complete: false,
    users: { seen: 0, created: 0, updated: 0, linked: 0, unchanged: 0, removed: 0, skippedNewer: 0, errors: 0 },
    groups: { seen: 0, created: 0, updated: 0, removed: 0, membershipsChanged: 0 },
    samples: { created: [], updated: [], removed: [] },
  };
  const sample = (kind: 'created' | 'updated' | 'removed', id: string) => {
    if (summary.samples[kind].length < SAMPLES) summary.samples[kind].push(id);
  };

  const entries = new Map<string, Entry>();
  const entry = (remoteId: string): Entry => {
    let e = entries.get(remoteId);
    if (!e) entries.set(remoteId, (e = { person: undefined, cleanHash: undefined, present: false, confirmedAt: 0, seen: false, wroteAt: 0 }));
    return e;
  };
  for (let after = ''; ; ) {
    const rows = await db
      .selectFrom('source_users')
      .select(['remote_id', 'person_id', 'role', 'hash', 'written_hash', 'present', 'confirmed_at'])
      .where('source_id', '=', sourceId)
      .where('remote_id', '>', after)
      .orderBy('remote_id')
      .limit(5000)
      .execute();
    for (const r of rows)
      entries.set(r.remote_id, {
        person: r.role === 'primary' ? r.person_id : undefined,
        cleanHash: r.present === 1 && r.role === 'primary' && r.hash === r.written_hash ? r.hash : undefined,
        present: r.present === 1,
        confirmedAt: Number(r.confirmed_at),
        seen: false,
        wroteAt: 0,
      });
    if (rows.length < 5000) break;
    after = rows[rows.length - 1]!.remote_id;
  }

  const groups = new Map<string, { group: Pick<SourceGroup, 'id' | 'displayName'> & { raw?: Record<string, unknown>; externalId?: string }; members: Set<Entry> }>();
  let batch: SourceUser[] = [];

  const flush = async () => {
    const users = batch;
    batch = [];
    if (users.length === 0) return;
    const fresh: SourceUser[] = [];
    const write: SourceUser[] = [];
    for (const u of users) {
      const k = entry(u.id);
      if (k.confirmedAt >= start) {
        summary.users.skippedNewer++;
        continue;
      }
      if (k.confirmedAt === 0) {
        fresh.push(u);
        continue;
      }
      if (!sync.matchOn && k.cleanHash !== undefined && k.cleanHash === userHash(toUserInput(u))) {
        summary.users.unchanged++;
        continue;
      }
      write.push(u);
    }
    // New records without linking: one multi-row import per batch (the initial load).
    let single = write;
    if (fresh.length) {
      if (sync.matchOn) single = [...fresh, ...write];
      else {
        const imported = await importNew(fresh);
        single = [...imported.rest, ...write];
      }
    }
    await pool(single, 16, async (u) => {
      try {
        // Memberships are written at `complete`, for both membership styles.
        const change = await sync.applyUser(sourceId, u.id, u, ctx, { groups: false, notConfirmedSince: start });
        if (change === 'created') (summary.users.created++, sample('created', u.id));
        else if (change === 'newer') summary.users.skippedNewer++;
        else if (change === 'updated') (summary.users.updated++, sample('updated', u.id));
        else if (change === 'linked') summary.users.linked++;
        else summary.users.unchanged++;
        const link = await sync.link(sourceId, u.id);
        const e = entry(u.id);
        e.person = link?.role === 'primary' ? link.person_id : undefined;
        if (change !== 'newer') e.wroteAt = Date.now();
      } catch (err) {
        summary.users.errors++;
        log.warn({ source: sourceId, remoteId: u.id, err: (err as Error).message }, 'snapshot: user not stored');
      }
    });
  };

  /** createUser in bulk (IdentityRepo.importUsers) for records never seen; any clash falls back to one by one. */
  const importNew = async (users: SourceUser[]): Promise<{ rest: SourceUser[] }> => {
    const inputs = users.map(toUserInput);
    const names = inputs.map((i) => i.userName.toLowerCase());
    const exts = inputs.map((i) => i.externalId).filter((e): e is string => typeof e === 'string');
    // Unlinked persons of the same source (SCIM push on a shared source id) are adopted one by one.
    const clash = new Set<string>();
    const lookup = async (col: 'user_name_lc' | 'external_id', values: string[]) => {
      for (let i = 0; i < values.length; i += 200) {
        const rows = await db.selectFrom('persons').select(['user_name_lc', 'external_id']).where('source_id', '=', sourceId).where(col, 'in', values.slice(i, i + 200)).execute();
        for (const r of rows) {
          clash.add(`n:${r.user_name_lc}`);
          if (r.external_id) clash.add(`e:${r.external_id}`);
        }
      }
    };
    await lookup('user_name_lc', names);
    await lookup('external_id', exts);
    const bulk: number[] = [];
    const rest: SourceUser[] = [];
    const inBatch = new Set<string>();
    users.forEach((u, i) => {
      const n = names[i]!;
      const e = inputs[i]!.externalId;
      if (clash.has(`n:${n}`) || (e && clash.has(`e:${e}`)) || inBatch.has(n)) rest.push(u);
      else {
        inBatch.add(n);
        bulk.push(i);
      }
    });
    if (bulk.length === 0) return { rest };
    let ids: string[];
    try {
      ids = await deps.identities.importUsers(sourceId, bulk.map((i) => inputs[i]!), ctx);
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
      return { rest: users };
    }
    const now = Date.now();
    const rows = bulk.map((i, j) => {
      const h = userHash(inputs[i]!);
      return {
        source_id: sourceId,
        remote_id: users[i]!.id,
        person_id: ids[j]!,
        role: 'primary' as const,
        match_key: null,
        present: 1,
        hash: h,
        written_hash: h,
        record: null,
        created_at: now,
        confirmed_at: now,
      };
    });
    for (let i = 0; i < rows.length; i += 100) await db.insertInto('source_users').values(rows.slice(i, i + 100)).execute();
    const at = Date.now();
    for (const r of rows) {
      const e = entry(r.remote_id);
      e.person = r.person_id;
      e.wroteAt = at;
      summary.users.created++;
      sample('created', r.remote_id);
    }
    return { rest };
  };

  try {
    for await (const rec of source.readSnapshot()) {
      switch (rec.type) {
        case 'user': {
          const e = entry(rec.user.id);
          if (e.seen) break;
          e.seen = true;
          summary.users.seen++;
          if (rec.user.groups) {
            for (const g of rec.user.groups) {
              let ge = groups.get(g.id);
              if (!ge) groups.set(g.id, (ge = { group: { id: g.id, displayName: g.displayName }, members: new Set() }));
              ge.members.add(e);
            }
          }
          batch.push(rec.user);
          if (batch.length >= BATCH) await flush();
          break;
        }
        case 'group': {
          const ge = groups.get(rec.group.id);
          if (ge) ge.group = rec.group;
          else groups.set(rec.group.id, { group: rec.group, members: new Set() });
          break;
        }
        case 'members': {
          let ge = groups.get(rec.groupId);
          if (!ge) groups.set(rec.groupId, (ge = { group: { id: rec.groupId, displayName: rec.groupId }, members: new Set() }));
          for (const id of rec.userIds) ge.members.add(entry(id));
          break;
        }
        case 'complete': {
          await flush();
          summary.complete = true;
          await deps.onComplete?.(rec.cursor);
          break;
        }
      }
      if (summary.complete) break;
    }
    await flush();
  } catch (err) {
    summary.error = (err as Error).message;
    summary.finishedAt = new Date().toISOString();
    throw Object.assign(err as Error, { summary });
  }
  if (!summary.complete) {
    summary.error = 'the snapshot ended without its complete record: nothing was removed';
    summary.finishedAt = new Date().toISOString();
    return summary;
  }

  // ---- complete: memberships, then removals ----
  const newer = new Set(
    (await db.selectFrom('source_users').select(['remote_id', 'person_id', 'confirmed_at']).where('source_id', '=', sourceId).where('confirmed_at', '>=', start).execute())
      .filter((r) => Number(r.confirmed_at) > (entries.get(r.remote_id)?.wroteAt || 0))
      .map((r) => r.person_id),
  );
  summary.groups.seen = groups.size;
  const groupIds = [...groups.keys()];
  const seenGroups = new Set(groupIds);
  await pool(groupIds, 8, async (gid) => {
    const ge = groups.get(gid)!;
    let members: string[] = [];
    for (const m of ge.members) if (m.seen && m.person !== undefined) members.push(m.person);
    try {
      const { groupId, change } = await sync.ensureGroup(sourceId, ge.group, ctx, { members });
      if (change === 'created') summary.groups.created++;
      else if (change === 'updated') summary.groups.updated++;
      if (change !== 'created') {
        if (newer.size) {
          // Records confirmed after the snapshot started keep their current membership of this group.
          members = members.filter((p) => !newer.has(p));
          const keep = await db.selectFrom('memberships').select('person_id').where('group_id', '=', groupId).where('person_id', 'in', [...newer]).execute();
          members.push(...keep.map((k) => k.person_id));
        }
        if (await sync.setGroupMembers(sourceId, gid, members, ctx)) summary.groups.membershipsChanged++;
      }
    } catch (err) {
      log.warn({ source: sourceId, group: gid, err: (err as Error).message }, 'snapshot: group not stored');
    }
    groups.delete(gid);
  });

  const goneGroups = await db.selectFrom('source_groups').select(['remote_id', 'confirmed_at']).where('source_id', '=', sourceId).where('confirmed_at', '<', start).execute();
  for (const g of goneGroups) {
    if (seenGroups.has(g.remote_id)) continue;
    if ((await sync.removeGroup(sourceId, g.remote_id, ctx)) === 'removed') summary.groups.removed++;
  }

  for (const [remoteId, k] of entries) {
    if (k.seen || !k.present) continue;
    const link = await sync.link(sourceId, remoteId);
    if (!link || Number(link.confirmed_at) >= start || link.present !== 1) continue;
    try {
      if ((await sync.applyUser(sourceId, remoteId, null, ctx, { notConfirmedSince: start })) === 'removed') {
        summary.users.removed++;
        sample('removed', remoteId);
      }
    } catch (err) {
      summary.users.errors++;
      log.warn({ source: sourceId, remoteId, err: (err as Error).message }, 'snapshot: removal failed');
    }
  }
  summary.finishedAt = new Date().toISOString();
  return summary;
}
