import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { IdentitySourceError } from '../../src/ports/identity-source.ts';
import { runSnapshot } from '../../src/sources/snapshot.ts';
import { SourceSync } from '../../src/sources/sync.ts';
import { IdentityRepo } from '../../src/store/identities.ts';
import { user } from '../helpers/fixtures.ts';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';
import { FakeSource, silentLog } from './helpers.ts';

const ctx = { actor: 'source:okta', correlationId: 'c-1' };

function setup(t: TestStore, over: Record<string, unknown> = {}) {
  const config = configSchema.parse({ sources: [{ id: 'okta', idp: 'okta', ...over }, { id: 'scim', idp: 'generic' }] });
  const identities = new IdentityRepo(t.store);
  const reconfirmed: string[] = [];
  const sync = new SourceSync({ store: t.store, identities, config, log: silentLog, reconfirm: async (_s, id) => void reconfirmed.push(id) });
  return { identities, sync, reconfirmed, db: t.store.db };
}

async function auditCount(t: TestStore) {
  return Number((await t.store.db.selectFrom('audit_head').select('seq').executeTakeFirstOrThrow()).seq);
}

describe.each(BACKENDS)('confirmed users and groups into the identity store (%s)', (backend) => {
  let t: TestStore;
  afterEach(async () => t?.cleanup());

  it('creates, leaves an unchanged read alone, updates, and deletes a gone user (dirty mark + audit each time)', async () => {
    t = await freshStore(backend);
    const { sync, identities, db } = setup(t);
    const src = new FakeSource('okta');
    src.addUser('00u1', { attributes: { site: 'Plant A' }, givenName: 'Ada' }, ['g-cr']);
    src.addGroup('g-cr', 'Control Room');
    expect(await sync.applyUser('okta', '00u1', await src.readUser('00u1'), ctx)).toBe('created');
    const personId = (await sync.personOf('okta', '00u1'))!;
    const identity = await identities.loadIdentity(personId);
    expect(identity).toMatchObject({ sourceId: 'okta', active: true, attributes: { site: 'Plant A' }, groups: [{ displayName: 'Control Room' }] });
    expect(await db.selectFrom('dirty').select('person_id').where('person_id', '=', personId).executeTakeFirst()).toBeDefined();

    // Volatile vendor fields do not rewrite the person.
    const before = await auditCount(t);
    src.users.get('00u1')!.raw = { id: '00u1', lastLogin: new Date().toISOString() };
    expect(await sync.applyUser('okta', '00u1', await src.readUser('00u1'), ctx)).toBe('unchanged');
    expect(await auditCount(t)).toBe(before);

    src.users.get('00u1')!.attributes = { site: 'Plant B' };
    expect(await sync.applyUser('okta', '00u1', await src.readUser('00u1'), ctx)).toBe('updated');
    expect((await identities.loadIdentity(personId))!.attributes).toEqual({ site: 'Plant B' });

    // Out of the group.
    src.removeMember('g-cr', '00u1');
    expect(await sync.applyUser('okta', '00u1', await src.readUser('00u1'), ctx)).toBe('updated');
    expect((await identities.loadIdentity(personId))!.groups).toEqual([]);

    // Gone at the source.
    src.users.delete('00u1');
    expect(await sync.applyUser('okta', '00u1', await src.readUser('00u1'), ctx)).toBe('removed');
    expect(await identities.loadIdentity(personId)).toBeNull();
    expect(await sync.personOf('okta', '00u1')).toBeUndefined();
    const actions = (await db.selectFrom('audit').select('action').where('person_id', '=', personId).orderBy('seq').execute()).map((a) => a.action);
    expect(actions).toEqual(['identity.user.create', 'identity.membership.add', 'identity.user.update', 'identity.membership.remove', 'identity.user.delete']);
  });

  it('onMissing: deactivate keeps the person, inactive (a leaver), and revives it when the user returns', async () => {
    t = await freshStore(backend);
    const { sync, identities } = setup(t, { onMissing: 'deactivate' });
    const src = new FakeSource('okta');
    src.addUser('00u2');
    await sync.applyUser('okta', '00u2', await src.readUser('00u2'), ctx);
    const personId = (await sync.personOf('okta', '00u2'))!;
    expect(await sync.applyUser('okta', '00u2', null, ctx)).toBe('removed');
    expect((await identities.loadIdentity(personId))!.active).toBe(false);
    expect(await sync.applyUser('okta', '00u2', null, ctx)).toBe('absent');
    expect(await sync.applyUser('okta', '00u2', await src.readUser('00u2'), ctx)).toBe('updated');
    expect((await identities.loadIdentity(personId))!.active).toBe(true);
  });

  it('adopts a person SCIM already created in the same source (externalId, else userName) instead of duplicating it', async () => {
    t = await freshStore(backend);
    const { sync, identities } = setup(t);
    const pushed = await identities.createUser('okta', user('ada@example.com', { externalId: '00u3' }), ctx);
    const src = new FakeSource('okta');
    src.addUser('00u3', { userName: 'ada.renamed@example.com', externalId: '00u3' });
    await sync.applyUser('okta', '00u3', await src.readUser('00u3'), ctx);
    expect(await sync.personOf('okta', '00u3')).toBe(pushed.id);
    expect((await identities.getUser('okta', pushed.id))!.userName).toBe('ada.renamed@example.com');
    // Memberships in groups a SCIM client created are not the source API's to replace.
    const scimGroup = await identities.createGroup('okta', { displayName: 'Pushed group', resource: {} }, [pushed.id], ctx);
    await sync.applyUser('okta', '00u3', await src.readUser('00u3'), ctx);
    expect((await identities.getGroup('okta', scimGroup.id, true))!.members!.map((m) => m.id)).toEqual([pushed.id]);
  });

  it('a userName still held by another record is retried after re-reading the holder', async () => {
    t = await freshStore(backend);
    const { sync, reconfirmed } = setup(t);
    const src = new FakeSource('okta');
    src.addUser('00ua', { userName: 'same@example.com' });
    await sync.applyUser('okta', '00ua', await src.readUser('00ua'), ctx);
    src.addUser('00ub', { userName: 'same@example.com' });
    const err = await sync.applyUser('okta', '00ub', await src.readUser('00ub'), ctx).catch((e) => e);
    expect(err).toBeInstanceOf(IdentitySourceError);
    expect(err.kind).toBe('retryable');
    expect(reconfirmed).toEqual(['00ua']);
  });

  it('groups: created on first sight, renamed, deleted when gone (members re-planned)', async () => {
    t = await freshStore(backend);
    const { sync, identities, db } = setup(t);
    const src = new FakeSource('okta');
    src.addUser('00u4', {}, ['g1']);
    src.addGroup('g1', 'Old name');
    await sync.applyUser('okta', '00u4', await src.readUser('00u4'), ctx);
    src.groups.get('g1')!.displayName = 'Control Room';
    expect(await sync.applyGroup('okta', 'g1', await src.readGroup('g1'), ctx)).toBe('updated');
    const personId = (await sync.personOf('okta', '00u4'))!;
    expect((await identities.loadIdentity(personId))!.groups.map((g) => g.displayName)).toEqual(['Control Room']);
    await db.deleteFrom('dirty').execute();
    expect(await sync.applyGroup('okta', 'g1', null, ctx)).toBe('removed');
    expect((await identities.loadIdentity(personId))!.groups).toEqual([]);
    expect(await db.selectFrom('dirty').select('person_id').execute()).toEqual([{ person_id: personId }]);
  });
});

describe.each(BACKENDS)('full reconciliation (snapshot) on %s', (backend) => {
  let t: TestStore;
  afterEach(async () => t?.cleanup());

  async function snap(t: TestStore, src: FakeSource, sync: SourceSync, identities: IdentityRepo) {
    let cursor: string | undefined;
    const s = await runSnapshot({ source: src, sync, identities, store: t.store, log: silentLog, ctx, onComplete: async (c) => void (cursor = c) });
    return { ...s, cursor };
  }

  it('loads everything, then changes only what differs, and removes only after `complete`', async () => {
    t = await freshStore(backend);
    const { sync, identities, db } = setup(t);
    const src = new FakeSource('okta');
    for (let i = 0; i < 30; i++) src.addUser(`00u${i}`, { attributes: { site: i % 2 ? 'Plant A' : 'Plant B' } }, i < 10 ? ['g-cr'] : []);
    src.addGroup('g-cr', 'Control Room');
    src.addGroup('g-empty', 'Nobody');
    const first = await snap(t, src, sync, identities);
    expect(first).toMatchObject({ complete: true, cursor: 'cursor-1', users: { seen: 30, created: 30, updated: 0, removed: 0 }, groups: { seen: 2, created: 2 } });
    expect(Number((await db.selectFrom('persons').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)).toBe(30);
    const cr = (await identities.listGroups('okta', { field: 'displayName', op: 'eq', value: 'Control Room' }, 1, 10, true)).items[0]!;
    expect(cr.members).toHaveLength(10);

    // The same again: nothing written.
    const audit = await auditCount(t);
    const second = await snap(t, src, sync, identities);
    expect(second.users).toMatchObject({ unchanged: 30, created: 0, updated: 0, removed: 0 });
    expect(second.groups.membershipsChanged).toBe(0);
    expect(await auditCount(t)).toBe(audit);

    // Drift the IdP had but no event told us: one attribute, one membership, one leaver, one joiner.
    src.users.get('00u11')!.attributes = { site: 'Plant C' };
    src.addMember('g-cr', '00u12');
    src.users.delete('00u13');
    src.addUser('00unew', {}, ['g-cr']);
    const third = await snap(t, src, sync, identities);
    expect(third.users).toMatchObject({ created: 1, updated: 1, removed: 1 });
    expect(third.groups.membershipsChanged).toBe(1);
    expect(third.samples).toMatchObject({ created: ['00unew'], updated: ['00u11'], removed: ['00u13'] });
    const members = (await identities.getGroup('okta', cr.id, true))!.members!.map((m) => m.id).sort();
    expect(members).toEqual([...(await Promise.all(['00u0', '00u1', '00u2', '00u3', '00u4', '00u5', '00u6', '00u7', '00u8', '00u9', '00u12', '00unew'].map((id) => sync.personOf('okta', id))))].sort());

    // A snapshot that breaks midway removes nothing.
    src.users.delete('00u14');
    src.breakSnapshotAfter = 5;
    const err = await snap(t, src, sync, identities).catch((e) => e);
    expect(err.message).toMatch(/broke midway/);
    expect(err.summary).toMatchObject({ complete: false });
    expect(await sync.personOf('okta', '00u14')).toBeDefined();
  });

  it('memberships from users (`user-groups`), and a record confirmed during the snapshot keeps its newer state', async () => {
    t = await freshStore(backend);
    const { sync, identities } = setup(t);
    const src = new FakeSource('okta');
    src.membership = 'user-groups';
    src.addUser('00ua', {}, ['g1']);
    src.addUser('00ub', {}, ['g1', 'g2']);
    src.addGroup('g1', 'Control Room');
    src.addGroup('g2', 'Plant');
    await snap(t, src, sync, identities);
    const pb = (await sync.personOf('okta', '00ub'))!;
    expect((await identities.loadIdentity(pb))!.groups.map((g) => g.displayName).sort()).toEqual(['Control Room', 'Plant']);

    // A hook confirms 00ub as a leaver while a (stale) snapshot still lists them active in g2.
    const stale = new FakeSource('okta');
    stale.membership = 'user-groups';
    stale.addUser('00ua', {}, ['g1']);
    stale.addUser('00ub', { attributes: { site: 'stale view' } }, ['g1', 'g2']);
    stale.addGroup('g1', 'Control Room');
    stale.addGroup('g2', 'Plant');
    const realSnapshot = stale.readSnapshot.bind(stale);
    stale.readSnapshot = async function* () {
      for await (const r of realSnapshot()) {
        if (r.type === 'complete') {
          src.users.get('00ub')!.active = false;
          src.removeMember('g2', '00ub');
          await sync.applyUser('okta', '00ub', await src.readUser('00ub'), ctx);
        }
        yield r;
      }
    };
    const s = await snap(t, stale, sync, identities);
    expect(s).toMatchObject({ complete: true, users: { skippedNewer: 1 } });
    const after = (await identities.loadIdentity(pb))!;
    expect(after.active).toBe(false);
    expect(after.groups.map((g) => g.displayName)).toEqual(['Control Room']);
  });
});
