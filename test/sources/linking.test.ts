import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { matchKey } from '../../src/sources/mapping.ts';
import { SourceSync } from '../../src/sources/sync.ts';
import { IdentityRepo } from '../../src/store/identities.ts';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';
import { FakeSource, silentLog } from './helpers.ts';

/**
 * One person, many sources (identity.matchOn, identity.authoritativeSource): the rule as
 * documented in src/sources/README.md, case by case.
 */

const ctx = { actor: 'source:test', correlationId: 'c-1' };

function setup(t: TestStore, identity: Record<string, unknown> = { matchOn: 'employeeNumber', authoritativeSource: 'hr' }, onMissing = 'delete') {
  const config = configSchema.parse({
    sources: [
      { id: 'it', idp: 'okta', onMissing },
      { id: 'hr', idp: 'sailpoint', onMissing },
      { id: 'lab', idp: 'entra', onMissing },
    ],
    identity,
  });
  const identities = new IdentityRepo(t.store);
  const sync = new SourceSync({ store: t.store, identities, config, log: silentLog });
  const it = new FakeSource('it');
  const hr = new FakeSource('hr', 'sailpoint');
  const lab = new FakeSource('lab', 'entra');
  const put = async (src: FakeSource, id: string) => sync.applyUser(src.id, id, await src.readUser(id), ctx);
  const person = async (personId: string) => (await identities.loadIdentity(personId))!;
  return { sync, identities, it, hr, lab, put, person, db: t.store.db };
}

describe('match keys', () => {
  it('reads email, userName, externalId or an attribute; trims and folds case; absent or empty never links', () => {
    const u = { email: ' Ada@Example.COM ', userName: 'ada', externalId: 'X1', attributes: { employeeNumber: 'e-1 ' } };
    expect(matchKey(u, 'email')).toBe('ada@example.com');
    expect(matchKey(u, 'userName')).toBe('ada');
    expect(matchKey(u, 'externalId')).toBe('x1');
    expect(matchKey(u, 'employeeNumber')).toBe('e-1');
    expect(matchKey(u, 'costCenter')).toBeNull();
    expect(matchKey({ ...u, attributes: { employeeNumber: '  ' } }, 'employeeNumber')).toBeNull();
    expect(matchKey(u, undefined)).toBeNull();
  });
});

describe.each(BACKENDS)('linking records of several sources into one person (%s)', (backend) => {
  let t: TestStore;
  afterEach(async () => t?.cleanup());

  it('the first record owns the person id; a record of another source with the same key joins it', async () => {
    t = await freshStore(backend);
    const { put, sync, it, hr, person, db } = setup(t);
    it.addUser('u1', { attributes: { employeeNumber: 'E-1', department: 'IT dept' }, roles: ['it-role'] }, ['g-cr']);
    it.addGroup('g-cr', 'Control Room');
    hr.addUser('h1', { attributes: { employeeNumber: 'e-1', department: 'HR dept', site: 'Plant A' }, roles: ['hr-role'] });
    expect(await put(it, 'u1')).toBe('created');
    expect(await put(hr, 'h1')).toBe('linked');
    const pid = (await sync.personOf('it', 'u1'))!;
    expect(await sync.personOf('hr', 'h1')).toBe(pid);
    expect(await db.selectFrom('persons').select('id').execute()).toEqual([{ id: pid }]);
    const p = await person(pid);
    // Attributes: the authoritative record wins conflicts, the others fill gaps; roles are a union; groups are the primary's.
    expect(p).toMatchObject({ sourceId: 'it', active: true, attributes: { employeeNumber: 'e-1', department: 'HR dept', site: 'Plant A' }, roles: ['hr-role', 'it-role'] });
    expect(p.groups.map((g) => g.displayName)).toEqual(['Control Room']);
  });

  it('a leaver in the authoritative source wins; a leaver elsewhere does not; the primary’s own state always counts', async () => {
    t = await freshStore(backend);
    const { put, sync, it, hr, lab, person } = setup(t);
    it.addUser('u1', { attributes: { employeeNumber: 'E-1' } });
    hr.addUser('h1', { attributes: { employeeNumber: 'E-1' } });
    lab.addUser('l1', { attributes: { employeeNumber: 'E-1' } });
    await put(it, 'u1');
    await put(hr, 'h1');
    await put(lab, 'l1');
    const pid = (await sync.personOf('it', 'u1'))!;
    expect(await sync.personOf('lab', 'l1')).toBe(pid);

    lab.users.get('l1')!.active = false; // not authoritative, not primary
    await put(lab, 'l1');
    expect((await person(pid)).active).toBe(true);

    hr.users.get('h1')!.active = false; // authoritative leaver
    await put(hr, 'h1');
    expect((await person(pid)).active).toBe(false);
    await put(it, 'u1'); // the primary still says active: still a leaver
    expect((await person(pid)).active).toBe(false);

    hr.users.get('h1')!.active = true;
    await put(hr, 'h1');
    expect((await person(pid)).active).toBe(true);

    // Gone from the authoritative source counts as a leaver (the record stays as a tombstone).
    hr.users.delete('h1');
    expect(await put(hr, 'h1')).toBe('removed');
    expect((await person(pid)).active).toBe(false);

    hr.addUser('h1', { attributes: { employeeNumber: 'E-1' } });
    await put(hr, 'h1');
    expect((await person(pid)).active).toBe(true);
    it.users.get('u1')!.active = false;
    await put(it, 'u1');
    expect((await person(pid)).active).toBe(false); // the primary's own leaver counts too
  });

  it('when the primary record is gone (onMissing: delete) the oldest linked record becomes a person with a new id', async () => {
    t = await freshStore(backend);
    const { put, sync, it, hr, person, identities } = setup(t);
    it.addUser('u1', { attributes: { employeeNumber: 'E-1' } });
    hr.addUser('h1', { attributes: { employeeNumber: 'E-1', site: 'Plant A' } });
    await put(it, 'u1');
    await put(hr, 'h1');
    const old = (await sync.personOf('it', 'u1'))!;
    it.users.delete('u1');
    expect(await put(it, 'u1')).toBe('removed');
    expect(await identities.loadIdentity(old)).toBeNull();
    const heir = (await sync.personOf('hr', 'h1'))!;
    expect(heir).not.toBe(old);
    expect(await person(heir)).toMatchObject({ sourceId: 'hr', active: true, attributes: { site: 'Plant A' } });
    expect((await sync.link('hr', 'h1'))!.role).toBe('primary');
  });

  it('onMissing: deactivate keeps the person as an inactive primary', async () => {
    t = await freshStore(backend);
    const { put, sync, it, hr, person } = setup(t, undefined, 'deactivate');
    it.addUser('u1', { attributes: { employeeNumber: 'E-1' } });
    hr.addUser('h1', { attributes: { employeeNumber: 'E-1' } });
    await put(it, 'u1');
    await put(hr, 'h1');
    const pid = (await sync.personOf('it', 'u1'))!;
    it.users.delete('u1');
    await put(it, 'u1');
    expect((await person(pid)).active).toBe(false);
    expect(await sync.personOf('hr', 'h1')).toBe(pid);
  });

  it('a changed match key moves a record out of the person; records of one source never link to each other', async () => {
    t = await freshStore(backend);
    const { put, sync, it, hr, person } = setup(t);
    it.addUser('u1', { attributes: { employeeNumber: 'E-1' } });
    it.addUser('u2', { attributes: { employeeNumber: 'E-1' } }); // same source, same key: separate
    hr.addUser('h1', { attributes: { employeeNumber: 'E-1', site: 'Plant A' } });
    await put(it, 'u1');
    await put(it, 'u2');
    await put(hr, 'h1');
    const p1 = (await sync.personOf('it', 'u1'))!;
    const p2 = (await sync.personOf('it', 'u2'))!;
    expect(p1).not.toBe(p2);
    expect(await sync.personOf('hr', 'h1')).toBe(p1);
    expect(await sync.duplicateMatchKeys()).toEqual([{ matchKey: 'e-1', persons: expect.arrayContaining([p1, p2]) }]);

    hr.users.get('h1')!.attributes = { employeeNumber: 'E-2', site: 'Plant A' };
    await put(hr, 'h1');
    const moved = (await sync.personOf('hr', 'h1'))!;
    expect(moved).not.toBe(p1);
    expect((await person(p1)).attributes.site).toBeUndefined();
    expect((await person(moved)).sourceId).toBe('hr');

    // The primary's key changes: its linked records leave with the old key.
    hr.users.get('h1')!.attributes = { employeeNumber: 'E-3' };
    it.addUser('u3', { attributes: { employeeNumber: 'E-3' } });
    await put(hr, 'h1');
    await put(it, 'u3');
    const p3 = (await sync.personOf('hr', 'h1'))!;
    expect(await sync.personOf('it', 'u3')).toBe(p3);
    hr.users.get('h1')!.attributes = { employeeNumber: 'E-4' };
    await put(hr, 'h1');
    expect(await sync.personOf('it', 'u3')).not.toBe(p3);
    expect((await sync.link('it', 'u3'))!.role).toBe('primary');
  });

  it('two records of one human arriving at the same time become one person', async () => {
    t = await freshStore(backend);
    const { sync, it, hr, lab, db } = setup(t);
    it.addUser('u1', { attributes: { employeeNumber: 'E-9' } });
    hr.addUser('h1', { attributes: { employeeNumber: 'E-9' } });
    lab.addUser('l1', { attributes: { employeeNumber: 'E-9' } });
    const [a, b, c] = await Promise.all([it.readUser('u1'), hr.readUser('h1'), lab.readUser('l1')]);
    await Promise.all([sync.applyUser('it', 'u1', a, ctx), sync.applyUser('hr', 'h1', b, ctx), sync.applyUser('lab', 'l1', c, ctx)]);
    expect(await db.selectFrom('persons').select('id').execute()).toHaveLength(1);
    expect(new Set([await sync.personOf('it', 'u1'), await sync.personOf('hr', 'h1'), await sync.personOf('lab', 'l1')]).size).toBe(1);
  });

  it('without matchOn every record is its own person', async () => {
    t = await freshStore(backend);
    const { put, sync, it, hr } = setup(t, {});
    it.addUser('u1', { attributes: { employeeNumber: 'E-1' } });
    hr.addUser('h1', { attributes: { employeeNumber: 'E-1' } });
    await put(it, 'u1');
    await put(hr, 'h1');
    expect(await sync.personOf('it', 'u1')).not.toBe(await sync.personOf('hr', 'h1'));
  });
});
