import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyAudit } from '../../src/audit/audit.ts';
import { ConflictError, IdentityRepo, NotFoundError, PRIORITY_LEAVER, PRIORITY_NORMAL, type DirtyMark } from '../../src/store/identities.ts';
import { ctx, user } from '../helpers/fixtures.ts';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';

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
    expect((await repo.listUsers('s2', [], 1, 10)).total).toBe(0);
    const g = await repo.createGroup('s2', { displayName: 'G', resource: {} }, [], ctx);
    await expect(repo.patchMembers('s2', g.id, [u.id], [], ctx)).rejects.toBeInstanceOf(NotFoundError);
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
    await expect(repo.patchMembers('s1', g.id, [a.id, 'nope'], [], ctx)).rejects.toBeInstanceOf(NotFoundError);
    expect((await repo.getGroup('s1', g.id, true))!.members).toEqual([]);
    expect((await t.store.db.selectFrom('audit').select('seq').execute()).length).toBe(before);
  });

  it('lists with filters and stable paging', async () => {
    for (let i = 0; i < 7; i++) await repo.createUser('s1', user(`u${i}@x`, { externalId: `e${i}` }), ctx);
    const pages = [];
    for (let start = 1; start <= 7; start += 3) pages.push(await repo.listUsers('s1', [], start, 3));
    expect(pages.map((p) => [p.total, p.items.length])).toEqual([[7, 3], [7, 3], [7, 1]]);
    const seen = pages.flatMap((p) => p.items.map((u) => u.userName));
    expect(new Set(seen).size).toBe(7);
    expect((await repo.listUsers('s1', [], 1, 3)).items.map((u) => u.id)).toEqual(pages[0]!.items.map((u) => u.id));
    expect((await repo.listUsers('s1', [{ attr: 'userName', value: 'U3@X' }], 1, 10)).items.map((u) => u.externalId)).toEqual(['e3']);
    expect((await repo.listUsers('s1', [{ attr: 'externalId', value: 'e5' }], 1, 10)).total).toBe(1);
    expect((await repo.listUsers('s1', [], 50, 10)).items).toEqual([]);
  });

  it('deleting a user keeps its dirty mark so access is revoked', async () => {
    const u = await repo.createUser('s1', user('a'), ctx);
    await repo.deleteUser('s1', u.id, ctx);
    expect(await repo.loadIdentity(u.id)).toBeNull();
    expect(await dirty()).toEqual([expect.objectContaining({ person_id: u.id, priority: PRIORITY_LEAVER })]);
  });
});
