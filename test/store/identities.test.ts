import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyAudit } from '../../src/audit/audit.ts';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import {
  ConflictError,
  FilterError,
  IdentityRepo,
  NotFoundError,
  PRIORITY_LEAVER,
  PRIORITY_NORMAL,
  UnknownMemberError,
  type DirtyMark,
  type UserFilter,
  type UserInput,
} from '../../src/store/identities.ts';
import { newId } from '../../src/store/ids.ts';
import { DatabaseSync } from 'node:sqlite';
import { Kysely, SqliteDialect } from 'kysely';
import { openStore, type Store } from '../../src/store/db.ts';
import { openSqlite } from '../../src/store/sqlite-driver.ts';
import { migrations } from '../../src/store/migrations.ts';
import { ctx, user } from '../helpers/fixtures.ts';
import { BACKENDS, TEST_PG_URL, type Backend, freshStore, type TestStore, withSchemaLock } from '../helpers/stores.ts';

describe.each(BACKENDS)('identity store on %s', (backend) => {
  let t: TestStore;
  let repo: IdentityRepo;
  let marks: DirtyMark[];
  beforeEach(async () => {
    t = await freshStore(backend);
    marks = [];
    repo = new IdentityRepo(t.store, (m) => marks.push(...m));
  });
  afterEach(() => t.cleanup());

  const dirty = () => t.store.db.selectFrom('dirty').selectAll().orderBy('person_id').execute();

  it('creates a user with its dirty mark and audit row in one go', async () => {
    const u = await repo.createUser('s1', user('ada@example.com'), ctx);
    expect(u).toMatchObject({ userName: 'ada@example.com', active: true, version: 1, groups: [] });
    expect(await dirty()).toEqual([expect.objectContaining({ person_id: u.id, generation: 1, priority: PRIORITY_NORMAL, correlation_id: 'corr-1' })]);
    expect(marks).toEqual([{ personId: u.id, priority: PRIORITY_NORMAL }]);
    const audit = await t.store.db.selectFrom('audit').selectAll().execute();
    expect(audit.map((a) => a.action)).toEqual(['identity.user.create']);
    expect((await verifyAudit(t.store.db)).ok).toBe(true);
  });

  it('a queue that throws when told does not undo the change or stop the process: the mark stays for the sweeper', async () => {
    const throwing = new IdentityRepo(t.store, () => {
      throw new Error('queue unavailable');
    });
    const u = await throwing.createUser('s1', user('grace@example.com'), ctx);
    // Give the deferred tell its turn; an exception there would fail the run as unhandled.
    await new Promise((r) => setImmediate(r));
    expect(await dirty()).toEqual([expect.objectContaining({ person_id: u.id })]);
  });

  it('refuses a duplicate userName case-insensitively within a source, allows it in another', async () => {
    await repo.createUser('s1', user('ada@example.com'), ctx);
    await expect(repo.createUser('s1', user('ADA@example.com'), ctx)).rejects.toBeInstanceOf(ConflictError);
    await expect(repo.createUser('s2', user('ada@example.com'), ctx)).resolves.toBeTruthy();
    expect(await t.store.db.selectFrom('audit').select('action').execute()).toHaveLength(2);
  });

  it('deactivation bumps the generation and raises the priority to leaver', async () => {
    const u = await repo.createUser('s1', user('ada@example.com'), ctx);
    await repo.replaceUser('s1', u.id, user('ada@example.com', { active: false }), ctx);
    expect(await dirty()).toEqual([expect.objectContaining({ generation: 2, priority: PRIORITY_LEAVER })]);
    const actions = (await t.store.db.selectFrom('audit').select('action').orderBy('seq').execute()).map((a) => a.action);
    expect(actions).toEqual(['identity.user.create', 'identity.user.deactivate']);
  });

  it('sees only its own source', async () => {
    const u = await repo.createUser('s1', user('ada@example.com'), ctx);
    expect(await repo.getUser('s2', u.id)).toBeUndefined();
    await expect(repo.replaceUser('s2', u.id, user('x'), ctx)).rejects.toBeInstanceOf(NotFoundError);
    await expect(repo.deleteUser('s2', u.id, ctx)).rejects.toBeInstanceOf(NotFoundError);
    expect((await repo.listUsers('s2', undefined, 1, 10)).total).toBe(0);
    const g = await repo.createGroup('s2', { displayName: 'G', resource: {} }, [], ctx);
    // Another source's person is not a person here.
    await expect(repo.patchMembers('s2', g.id, [u.id], [], ctx)).rejects.toBeInstanceOf(UnknownMemberError);
    await expect(repo.patchMembers('s1', g.id, [u.id], [], ctx)).rejects.toBeInstanceOf(NotFoundError);
    expect((await repo.listUsers('s2', { field: 'id', op: 'eq', value: u.id }, 1, 10)).total).toBe(0);
  });

  it('membership deltas mark only the affected persons and removal is leaver priority', async () => {
    const a = await repo.createUser('s1', user('a'), ctx);
    const b = await repo.createUser('s1', user('b'), ctx);
    await t.store.db.deleteFrom('dirty').execute();
    const g = await repo.createGroup('s1', { displayName: 'Control Room', resource: {} }, [a.id], ctx);
    expect((await dirty()).map((d) => d.person_id)).toEqual([a.id]);
    await t.store.db.deleteFrom('dirty').execute();
    await repo.patchMembers('s1', g.id, [b.id], [a.id], ctx);
    const d = await dirty();
    expect(new Map(d.map((x) => [x.person_id, x.priority]))).toEqual(new Map([[a.id, PRIORITY_LEAVER], [b.id, PRIORITY_NORMAL]]));
    expect((await repo.getGroup('s1', g.id, true))!.members!.map((m) => m.id)).toEqual([b.id]);
    expect((await repo.loadIdentity(b.id))!.groups).toEqual([{ id: g.id, displayName: 'Control Room' }]);
  });

  it('a failed membership change (unknown member) writes nothing', async () => {
    const a = await repo.createUser('s1', user('a'), ctx);
    const g = await repo.createGroup('s1', { displayName: 'G', resource: {} }, [], ctx);
    const before = (await t.store.db.selectFrom('audit').select('seq').execute()).length;
    const ghost = newId();
    const err = await repo.patchMembers('s1', g.id, [a.id, ghost], [], ctx).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnknownMemberError);
    expect((err as UnknownMemberError).ids).toEqual([ghost]);
    expect((await repo.getGroup('s1', g.id, true))!.members).toEqual([]);
    expect((await t.store.db.selectFrom('audit').select('seq').execute()).length).toBe(before);
  });

  it('lists with filters and stable paging', async () => {
    for (let i = 0; i < 7; i++) await repo.createUser('s1', user(`u${i}@x`, { externalId: `e${i}` }), ctx);
    const pages = [];
    for (let start = 1; start <= 7; start += 3) pages.push(await repo.listUsers('s1', undefined, start, 3));
    expect(pages.map((p) => [p.total, p.items.length])).toEqual([[7, 3], [7, 3], [7, 1]]);
    const seen = pages.flatMap((p) => p.items.map((u) => u.userName));
    expect(new Set(seen).size).toBe(7);
    expect((await repo.listUsers('s1', undefined, 1, 3)).items.map((u) => u.id)).toEqual(pages[0]!.items.map((u) => u.id));
    // Creation order.
    expect(seen).toEqual(['u0@x', 'u1@x', 'u2@x', 'u3@x', 'u4@x', 'u5@x', 'u6@x']);
    expect((await repo.listUsers('s1', { field: 'userName', op: 'eq', value: 'U3@X' }, 1, 10)).items.map((u) => u.externalId)).toEqual(['e3']);
    expect((await repo.listUsers('s1', { field: 'externalId', op: 'eq', value: 'e5' }, 1, 10)).total).toBe(1);
    // The unique lookups page like any list.
    const three = pages[1]!.items[0]!;
    expect(await repo.listUsers('s1', { field: 'userName', op: 'eq', value: 'U3@x' }, 2, 10)).toEqual({ total: 1, items: [] });
    expect(await repo.listUsers('s1', { field: 'id', op: 'eq', value: three.id }, 1, 0)).toEqual({ total: 1, items: [] });
    expect((await repo.listUsers('s1', { field: 'id', op: 'eq', value: three.id }, 1, 1)).items.map((u) => u.userName)).toEqual([three.userName]);
    expect(await repo.listUsers('s2', { field: 'id', op: 'eq', value: three.id }, 1, 1)).toEqual({ total: 0, items: [] });
    const beyond = await repo.listUsers('s1', undefined, 50, 10);
    expect(beyond).toEqual({ total: 7, items: [] });
    expect(await repo.listUsers('s1', undefined, 1, 0)).toEqual({ total: 7, items: [] });
  });

  it('deleting a user keeps its dirty mark so access is revoked', async () => {
    const u = await repo.createUser('s1', user('a'), ctx);
    await repo.deleteUser('s1', u.id, ctx);
    expect(await repo.loadIdentity(u.id)).toBeNull();
    expect(await dirty()).toEqual([expect.objectContaining({ person_id: u.id, priority: PRIORITY_LEAVER })]);
  });

  const actions = async () => (await t.store.db.selectFrom('audit').select('action').orderBy('seq').execute()).map((a) => a.action);

  it('tells a taken userName from a concurrent modification', async () => {
    const a = await repo.createUser('s1', user('a'), ctx);
    const b = await repo.createUser('s1', user('b'), ctx);
    const taken = await repo.replaceUser('s1', b.id, user('A'), ctx).catch((e: unknown) => e);
    expect(taken).toBeInstanceOf(ConflictError);
    expect((taken as ConflictError).kind).toBe('uniqueness');
    const stale = await repo.replaceUser('s1', a.id, user('a2'), ctx, 7).catch((e: unknown) => e);
    expect((stale as ConflictError).kind).toBe('version');
    await expect(repo.setActive('s1', a.id, false, ctx, 7)).rejects.toMatchObject({ kind: 'version' });
    await expect(repo.deleteUser('s1', a.id, ctx, 7)).rejects.toMatchObject({ kind: 'version' });
    expect((await repo.getUser('s1', a.id))!).toMatchObject({ userName: 'a', version: 1, active: true });
  });

  it('sets active alone: leaver priority on deactivation, audited, nothing written when unchanged', async () => {
    const u = await repo.createUser('s1', user('ada'), ctx);
    await t.store.db.deleteFrom('dirty').execute();
    marks = [];
    expect(await repo.setActive('s1', u.id, true, ctx)).toEqual({ version: 1, changed: false });
    expect(marks).toEqual([]);
    expect(await repo.setActive('s1', u.id, false, ctx, 1)).toEqual({ version: 2, changed: true });
    expect(marks).toEqual([{ personId: u.id, priority: PRIORITY_LEAVER }]);
    expect(await dirty()).toEqual([expect.objectContaining({ person_id: u.id, priority: PRIORITY_LEAVER })]);
    expect((await repo.loadIdentity(u.id))!.active).toBe(false);
    expect(await repo.setActive('s1', u.id, true, ctx)).toEqual({ version: 3, changed: true });
    expect(await actions()).toEqual(['identity.user.create', 'identity.user.deactivate', 'identity.user.reactivate']);
    await expect(repo.setActive('s2', u.id, false, ctx)).rejects.toBeInstanceOf(NotFoundError);
    expect((await verifyAudit(t.store.db)).ok).toBe(true);
  });

  it('applies a group change (rename + members) in one transaction, all or nothing', async () => {
    const [a, b] = [await repo.createUser('s1', user('a'), ctx), await repo.createUser('s1', user('b'), ctx)];
    const g = await repo.createGroup('s1', { displayName: 'Old', resource: {} }, [a.id], ctx);
    const before = await actions();
    const ghost = newId();
    await expect(repo.changeGroup('s1', g.id, { input: { displayName: 'New', resource: {} }, add: [b.id, ghost], remove: [a.id] }, ctx)).rejects.toBeInstanceOf(UnknownMemberError);
    expect((await repo.getGroup('s1', g.id, true))!).toMatchObject({ displayName: 'Old', version: 1, members: [{ id: a.id }] });
    expect(await actions()).toEqual(before);

    await t.store.db.deleteFrom('dirty').execute();
    const r = await repo.changeGroup('s1', g.id, { input: { displayName: 'New', resource: {} }, add: [{ id: b.id, display: 'Bee' }], remove: [a.id] }, ctx, 1);
    expect(r).toEqual({ version: 2, changed: true });
    expect((await repo.getGroup('s1', g.id, true))!).toMatchObject({ displayName: 'New', version: 2, members: [{ id: b.id, display: 'Bee' }] });
    // Renamed: every member (then) is marked; a removed member at leaver priority.
    expect(new Map((await dirty()).map((d) => [d.person_id, d.priority]))).toEqual(new Map([[a.id, PRIORITY_LEAVER], [b.id, PRIORITY_NORMAL]]));
    expect((await actions()).slice(before.length)).toEqual(['identity.group.rename', 'identity.membership.remove', 'identity.membership.add']);
    await expect(repo.changeGroup('s1', g.id, { add: [a.id] }, ctx, 1)).rejects.toMatchObject({ kind: 'version' });
    // No-op change: no version bump, no audit.
    expect(await repo.changeGroup('s1', g.id, { input: { displayName: 'New', resource: {} }, add: [b.id] }, ctx)).toEqual({ version: 2, changed: false });
  });

  it('replaces a membership atomically from the member ids, and returns members only when asked', async () => {
    const [a, b, c] = [await repo.createUser('s1', user('a'), ctx), await repo.createUser('s1', user('b'), ctx), await repo.createUser('s1', user('c'), ctx)];
    const g = await repo.createGroup('s1', { displayName: 'G', resource: {} }, [a.id, b.id], ctx);
    await t.store.db.deleteFrom('dirty').execute();
    expect(await repo.replaceMembers('s1', g.id, [b.id, { id: c.id, display: 'See' }], ctx)).toEqual({ version: 2, changed: true });
    expect((await repo.getGroup('s1', g.id, true))!.members).toEqual([
      { id: b.id, display: 'b' },
      { id: c.id, display: 'See' },
    ]);
    // Only the difference is marked.
    expect((await dirty()).map((d) => d.person_id).sort()).toEqual([a.id, c.id].sort());
    const renamed = await repo.replaceGroup('s1', g.id, { displayName: 'G2', resource: {} }, undefined, ctx);
    expect(renamed.members).toBeUndefined();
    expect(renamed.displayName).toBe('G2');
    expect((await repo.replaceGroup('s1', g.id, { displayName: 'G2', resource: {} }, [a.id], ctx, { withMembers: true })).members).toEqual([{ id: a.id, display: 'a' }]);
  });

  it('imports users in bulk with their dirty marks and audit rows', async () => {
    const ids = await repo.importUsers('s1', [user('i1'), user('i2', { active: false }), user('i3')], ctx);
    expect(ids).toHaveLength(3);
    expect(new Map((await dirty()).map((d) => [d.person_id, d.priority]))).toEqual(new Map([[ids[0], PRIORITY_NORMAL], [ids[1], PRIORITY_LEAVER], [ids[2], PRIORITY_NORMAL]]));
    expect(await actions()).toEqual(['identity.user.create', 'identity.user.create', 'identity.user.create']);
    expect((await repo.listUsers('s1', undefined, 1, 10)).items.map((u) => u.userName)).toEqual(['i1', 'i2', 'i3']);
    await expect(repo.importUsers('s1', [user('i4'), user('I2')], ctx)).rejects.toMatchObject({ kind: 'uniqueness' });
    await expect(repo.importUsers('s1', [user('i5'), user('I5')], ctx)).rejects.toMatchObject({ kind: 'uniqueness' });
    expect((await repo.listUsers('s1', undefined, 1, 10)).total).toBe(3);
    expect((await verifyAudit(t.store.db)).ok).toBe(true);
  });

  describe('filters', () => {
    const people: Array<[string, Partial<UserInput>]> = [
      ['Ann.Lee@example.com', { displayName: 'Ann Lee', externalId: 'E-1', emails: [{ value: 'Ann.Lee@example.com', type: 'work', primary: true }, { value: 'ann@home.example', type: 'home' }] }],
      ['bob@example.com', { displayName: 'Bob', externalId: 'E-2', active: false, emails: [{ value: 'bob@example.com', type: 'work' }] }],
      ['carol@corp.example', { displayName: null, externalId: null, emails: [{ value: 'carol@corp.example' }], profile: { givenName: 'Carol', familyName: "O'Neil_%", roles: [], attributes: {} } }],
    ];
    let ids: string[];
    const find = async (f: UserFilter) => (await repo.listUsers('s1', f, 1, 100)).items.map((u) => u.userName);
    beforeEach(async () => {
      ids = [];
      for (const [name, extra] of people) ids.push((await repo.createUser('s1', user(name, { email: null, ...extra }), ctx)).id);
      await repo.createUser('s2', user('ann.lee@example.com'), ctx);
    });

    it('compares case-insensitively where SCIM does, exactly where it does not', async () => {
      expect(await find({ field: 'userName', op: 'eq', value: 'ANN.LEE@EXAMPLE.COM' })).toEqual(['Ann.Lee@example.com']);
      expect(await find({ field: 'displayName', op: 'eq', value: 'ann lee' })).toEqual(['Ann.Lee@example.com']);
      expect(await find({ field: 'externalId', op: 'eq', value: 'e-1' })).toEqual([]);
      expect(await find({ field: 'externalId', op: 'co', value: 'E-' })).toEqual(['Ann.Lee@example.com', 'bob@example.com']);
      expect(await find({ field: 'externalId', op: 'co', value: 'e-' })).toEqual([]);
    });

    it('serves every operator, with LIKE wildcards taken literally', async () => {
      expect(await find({ field: 'userName', op: 'sw', value: 'B' })).toEqual(['bob@example.com']);
      expect(await find({ field: 'userName', op: 'ew', value: '.EXAMPLE' })).toEqual(['carol@corp.example']);
      expect(await find({ field: 'userName', op: 'co', value: '@EX' })).toEqual(['Ann.Lee@example.com', 'bob@example.com']);
      expect(await find({ field: 'familyName', op: 'co', value: "'neil_%" })).toEqual(['carol@corp.example']);
      expect(await find({ field: 'familyName', op: 'co', value: '_' })).toEqual(['carol@corp.example']);
      expect(await find({ field: 'familyName', op: 'sw', value: 'o%' })).toEqual([]);
      expect(await find({ field: 'userName', op: 'gt', value: 'bob' })).toEqual(['bob@example.com', 'carol@corp.example']);
      expect(await find({ field: 'userName', op: 'lt', value: 'bob' })).toEqual(['Ann.Lee@example.com']);
      expect(await find({ field: 'displayName', op: 'pr' })).toEqual(['Ann.Lee@example.com', 'bob@example.com']);
      expect(await find({ field: 'displayName', op: 'ne', value: 'bob' })).toEqual(['Ann.Lee@example.com', 'carol@corp.example']);
      expect(await find({ field: 'active', op: 'eq', value: false })).toEqual(['bob@example.com']);
      expect(await find({ field: 'active', op: 'eq', value: 'TRUE' })).toEqual(['Ann.Lee@example.com', 'carol@corp.example']);
      expect(await find({ field: 'created', op: 'ge', value: '2000-01-01T00:00:00Z' })).toHaveLength(3);
      expect(await find({ field: 'lastModified', op: 'lt', value: '2000-01-01T00:00:00Z' })).toEqual([]);
      expect(await find({ not: { field: 'active', op: 'eq', value: true } })).toEqual(['bob@example.com']);
      expect(await find({ or: [{ field: 'userName', op: 'sw', value: 'c' }, { field: 'externalId', op: 'eq', value: 'E-2' }] })).toEqual(['bob@example.com', 'carol@corp.example']);
      expect(await find({ and: [{ field: 'userName', op: 'sw', value: 'a' }, { not: { field: 'displayName', op: 'co', value: 'x' } }] })).toEqual(['Ann.Lee@example.com']);
    });

    it('matches any of a user\'s e-mail addresses, by type and primary', async () => {
      expect(await find({ sub: 'emails', where: { field: 'value', op: 'eq', value: 'ANN@home.example' } })).toEqual(['Ann.Lee@example.com']);
      expect(await find({ sub: 'emails', where: { and: [{ field: 'type', op: 'eq', value: 'work' }, { field: 'value', op: 'eq', value: 'ann@home.example' }] } })).toEqual([]);
      expect(await find({ sub: 'emails', where: { field: 'primary', op: 'eq', value: true } })).toEqual(['Ann.Lee@example.com']);
      expect(await find({ sub: 'emails', where: { field: 'value', op: 'co', value: 'corp' } })).toEqual(['carol@corp.example']);
      expect(await find({ not: { sub: 'emails', where: { field: 'type', op: 'eq', value: 'home' } } })).toEqual(['bob@example.com', 'carol@corp.example']);
      // Rewritten on replace.
      await repo.replaceUser('s1', ids[0]!, user('Ann.Lee@example.com', { emails: [{ value: 'new@example.com', type: 'work' }] }), ctx);
      expect(await find({ sub: 'emails', where: { field: 'value', op: 'eq', value: 'ann@home.example' } })).toEqual([]);
      expect(await find({ sub: 'emails', where: { field: 'value', op: 'eq', value: 'new@example.com' } })).toEqual(['Ann.Lee@example.com']);
    });

    it('filters by membership both ways', async () => {
      const g = await repo.createGroup('s1', { displayName: 'Night Shift', externalId: 'X', resource: {} }, [ids[1]!], ctx);
      expect(await find({ field: 'group', op: 'eq', value: g.id })).toEqual(['bob@example.com']);
      expect((await repo.listGroups('s1', { field: 'member', op: 'eq', value: ids[1]! }, 1, 10, false)).items.map((x) => x.id)).toEqual([g.id]);
      expect((await repo.listGroups('s1', { field: 'displayName', op: 'sw', value: 'night' }, 1, 10, false)).total).toBe(1);
      expect((await repo.listGroups('s2', { field: 'displayName', op: 'sw', value: 'night' }, 1, 10, false)).total).toBe(0);
    });

    it('refuses a scan of a large source and values of the wrong type', async () => {
      const small = new IdentityRepo(t.store, () => {}, { scanLimit: 2 });
      await expect(small.listUsers('s1', { field: 'userName', op: 'co', value: 'a' }, 1, 10)).rejects.toBeInstanceOf(FilterError);
      await expect(small.listUsers('s1', { field: 'displayName', op: 'ne', value: 'a' }, 1, 10)).rejects.toBeInstanceOf(FilterError);
      await expect(small.listUsers('s1', { or: [{ field: 'userName', op: 'eq', value: 'a' }, { field: 'userName', op: 'co', value: 'b' }] }, 1, 10)).rejects.toBeInstanceOf(FilterError);
      // Narrowed by an index first: fine at any size.
      expect((await small.listUsers('s1', { and: [{ field: 'userName', op: 'sw', value: 'b' }, { field: 'userName', op: 'co', value: 'ob' }] }, 1, 10)).total).toBe(1);
      // s2 has one user: small enough.
      expect((await small.listUsers('s2', { field: 'userName', op: 'co', value: 'ann' }, 1, 10)).total).toBe(1);
      for (const f of [
        { field: 'active', op: 'eq', value: 'maybe' },
        { field: 'created', op: 'gt', value: 'not a date' },
        { field: 'active', op: 'co', value: 'x' },
        { field: 'group', op: 'co', value: 'x' },
        { field: 'nope', op: 'eq', value: 'x' },
      ] as UserFilter[])
        await expect(repo.listUsers('s1', f, 1, 10), JSON.stringify(f)).rejects.toBeInstanceOf(FilterError);
    });
  });

  it('commits changes made in the same turn together, rolling back a failing one alone', async () => {
    await repo.createUser('s1', user('taken'), ctx);
    const victim = await repo.createUser('s1', user('victim'), ctx);
    const told: DirtyMark[][] = [];
    repo.onDirty((m) => told.push(m));
    const results = await Promise.allSettled([
      repo.createUser('s1', user('n1'), ctx),
      repo.createUser('s1', user('TAKEN'), ctx),
      repo.createUser('s1', user('n2'), ctx),
      repo.createUser('s1', user('N2'), ctx),
      repo.setActive('s1', victim.id, false, ctx),
      repo.setActive('s1', victim.id, false, ctx, 1),
    ]);
    expect(results.slice(0, 2).map((r) => r.status)).toEqual(['fulfilled', 'rejected']);
    expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ kind: 'uniqueness' });
    // n2 and N2 clash: exactly one is created (on PostgreSQL, whichever commits first).
    const pair = results.slice(2, 4);
    expect(pair.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect((pair.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason).toMatchObject({ kind: 'uniqueness' });
    if (backend === 'sqlite') expect(pair.map((r) => r.status)).toEqual(['fulfilled', 'rejected']);
    // Two deactivations of one user: exactly one changes it; the other finds it done (or, with
    // its expected version gone, a version conflict). SQLite applies them in call order.
    const deactivations = results.slice(4);
    expect(deactivations.filter((r) => r.status === 'fulfilled' && (r.value as { changed: boolean }).changed)).toHaveLength(1);
    for (const r of deactivations) if (r.status === 'rejected') expect(r.reason).toMatchObject({ kind: 'version' });
    if (backend === 'sqlite') expect(deactivations.map((r) => r.status)).toEqual(['fulfilled', 'rejected']);
    expect((await repo.listUsers('s1', undefined, 1, 10)).items.map((u) => [u.userName.toLowerCase(), u.active])).toEqual([
      ['taken', true],
      ['victim', false],
      ['n1', true],
      ['n2', true],
    ]);
    expect((await actions()).filter((a) => a === 'identity.user.create')).toHaveLength(4);
    expect((await verifyAudit(t.store.db)).ok).toBe(true);
    const toldIds = told.flat().map((m) => m.personId);
    expect(toldIds).toHaveLength(3);
    // SQLite group-commits them and tells the queue once; PostgreSQL commits each on its own.
    expect(told).toHaveLength(backend === 'sqlite' ? 1 : 3);
  });

  it('mints ids that sort in creation order', () => {
    const list = Array.from({ length: 5000 }, () => newId());
    expect([...list].sort()).toEqual(list);
    expect(new Set(list).size).toBe(list.length);
    expect(list[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

/** A store at migration 0001 with rows written the way 0001-era code wrote them, then migrated to the latest. */
async function storeAt0001(backend: Backend) {
  let cfg: Parameters<typeof openStore>[0];
  let drop = async () => {};
  if (backend === 'sqlite') {
    const dir = mkdtempSync(join(tmpdir(), 'lockstep-mig-'));
    cfg = { driver: 'sqlite', sqlite: { path: join(dir, 'db.sqlite') }, postgres: { poolSize: 1 } } as Parameters<typeof openStore>[0];
    drop = async () => rmSync(dir, { recursive: true, force: true });
  } else {
    const schema = `m_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: TEST_PG_URL });
    await admin.connect();
    await admin.query(`create schema ${schema}`);
    await admin.end();
    const url = `${TEST_PG_URL}${TEST_PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    cfg = { driver: 'postgres', sqlite: { path: './unused' }, postgres: { url, poolSize: 2 } } as Parameters<typeof openStore>[0];
    drop = () =>
      withSchemaLock(backend, async () => {
        const c = new pg.Client({ connectionString: TEST_PG_URL });
        await c.connect();
        await c.query(`drop schema ${schema} cascade`);
        await c.end();
      });
  }
  const store = openStore(cfg);
  const schemaName = backend === 'postgres' ? ((await store.db.selectNoFrom((eb) => eb.fn<string>('current_schema', []).as('s')).executeTakeFirstOrThrow()).s) : undefined;
  const migrator = new Migrator({ db: store.db, provider: migrations(backend), ...(schemaName ? { migrationTableSchema: schemaName } : {}) });
  // Kysely's migrator introspects every schema: take turns with other tests' drops.
  const r = await withSchemaLock(backend, () => migrator.migrateTo('0001_identity_queue_audit'));
  if (r.error) throw r.error;
  return { store, drop };
}

describe.each(BACKENDS)('migration 0002 on %s', (backend) => {
  it('backfills case-folded names and every e-mail address of existing users', async () => {
    const { store, drop } = await storeAt0001(backend);
    try {
      const now = Date.now();
      const row = (id: string, userName: string, resource: object, profile: object, email: string | null) => ({
        id,
        source_id: 's1',
        external_id: null,
        user_name: userName,
        user_name_lc: userName.toLowerCase(),
        email_lc: email,
        display_name: 'Ärger Öl',
        active: 1,
        profile: JSON.stringify(profile),
        resource: JSON.stringify(resource),
        version: 1,
        created_at: now,
        updated_at: now,
      });
      const db = store.db as unknown as { insertInto(t: string): { values(v: unknown): { execute(): Promise<unknown> } } };
      await db
        .insertInto('persons')
        .values([
          row('p1', 'One', { emails: [{ value: 'One@X.com', type: 'Work', primary: true }, { value: 'alt@x.com' }] }, { givenName: 'Ünal', familyName: 'Smith', roles: [], attributes: {} }, 'one@x.com'),
          row('p2', 'Two', {}, { roles: [], attributes: {} }, 'two@x.com'),
        ])
        .execute();
      expect(await withSchemaLock(backend, () => store.migrate())).toContain('0002_scim_filters');
      const repo = new IdentityRepo(store);
      const names = async (f: UserFilter) => (await repo.listUsers('s1', f, 1, 10)).items.map((u) => u.id);
      expect(await names({ field: 'displayName', op: 'eq', value: 'ärger öl' })).toEqual(['p1', 'p2']);
      expect(await names({ field: 'givenName', op: 'eq', value: 'ÜNAL' })).toEqual(['p1']);
      expect(await names({ sub: 'emails', where: { field: 'value', op: 'eq', value: 'ALT@x.com' } })).toEqual(['p1']);
      expect(await names({ sub: 'emails', where: { and: [{ field: 'type', op: 'eq', value: 'work' }, { field: 'primary', op: 'eq', value: true }] } })).toEqual(['p1']);
      // No emails in the resource: the indexed address of 0001 is kept.
      expect(await names({ sub: 'emails', where: { field: 'value', op: 'eq', value: 'two@x.com' } })).toEqual(['p2']);
    } finally {
      await store.close();
      await drop();
    }
  });
});

describe('query plans on SQLite', () => {
  it('serves each narrow filter from its own index, not by walking the source', async () => {
    const t = await freshStore('sqlite');
    try {
      const repo0 = new IdentityRepo(t.store);
      const inputs = Array.from({ length: 300 }, (_, i) =>
        user(`p${i}@x`, { displayName: `P ${i}`, externalId: `e${i}`, emails: [{ value: `p${i}@x`, type: 'work' }], profile: { givenName: `g${i}`, familyName: `f${i}`, roles: [], attributes: {} } }),
      );
      const ids = await repo0.importUsers('s1', inputs, ctx);
      const g = await repo0.createGroup('s1', { displayName: 'G', resource: {} }, ids.slice(0, 10), ctx);
      // A second connection that records each statement.
      let seen: Array<{ sql: string; parameters: readonly unknown[] }> = [];
      const db = new Kysely<any>({ dialect: new SqliteDialect({ database: openSqlite(t.storeConfig.sqlite.path).kysely }), log: (e) => void seen.push(e.query) });
      const repo = new IdentityRepo({ ...t.store, db } as Store);
      const raw = new DatabaseSync(t.storeConfig.sqlite.path);
      // Every statement the call ran (the page, and the count when the page is full).
      const plan = () => {
        const plans = seen.map((q) => raw.prepare(`explain query plan ${q.sql}`).all(...(q.parameters as never[])).map((r) => (r as { detail: string }).detail).join(' | '));
        seen = [];
        return plans;
      };
      const cases: Array<[UserFilter, RegExp]> = [
        [{ field: 'userName', op: 'eq', value: 'p5@x' }, /persons USING (COVERING )?INDEX persons_source_username/],
        [{ field: 'userName', op: 'sw', value: 'p1' }, /persons USING (COVERING )?INDEX persons_source_username/],
        [{ field: 'displayName', op: 'eq', value: 'p 5' }, /persons USING (COVERING )?INDEX persons_source_display/],
        [{ field: 'givenName', op: 'eq', value: 'g5' }, /persons USING (COVERING )?INDEX persons_source_given/],
        [{ field: 'familyName', op: 'eq', value: 'f5' }, /persons USING (COVERING )?INDEX persons_source_family/],
        [{ field: 'externalId', op: 'eq', value: 'e5' }, /persons USING (COVERING )?INDEX persons_source_external/],
        [{ field: 'active', op: 'eq', value: false }, /persons USING (COVERING )?INDEX persons_source_active/],
        [{ sub: 'emails', where: { field: 'value', op: 'eq', value: 'p5@x' } }, /persons USING INDEX sqlite_autoindex_persons_1.*person_emails USING (COVERING )?INDEX person_emails_value/],
        [{ field: 'group', op: 'eq', value: g.id }, /persons USING INDEX sqlite_autoindex_persons_1/],
      ];
      for (const [f, expected] of cases) {
        await repo.listUsers('s1', f, 1, 10, { groups: false });
        const plans = plan();
        expect(plans.length, JSON.stringify(f)).toBeGreaterThan(0);
        for (const p of plans) {
          expect(p, JSON.stringify(f)).toMatch(expected);
          expect(p, JSON.stringify(f)).not.toMatch(/SCAN persons|persons_source_created/);
        }
      }
      // The unfiltered list reads in creation order from its index, without sorting.
      await repo.listUsers('s1', undefined, 1, 10, { groups: false });
      expect(plan()[0]).toMatch(/^SEARCH persons USING INDEX persons_source_created \(source_id=\?\)$/);
      await repo.listGroups('s1', { field: 'displayName', op: 'eq', value: 'g' }, 1, 10, false);
      expect(plan()[0]).toMatch(/groups USING (COVERING )?INDEX groups_source_name/);
      raw.close();
      await db.destroy();
    } finally {
      await t.cleanup();
    }
  });
});
