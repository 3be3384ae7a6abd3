import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { desiredAccess } from '../../src/domain/policy.ts';
import { type Harness, SCIM_BASE, TOKEN_A, TOKEN_B, harness, json, scim, user, type Res } from './helpers.ts';

/**
 * Replays the request bodies Entra ID and Okta document (test/scim/fixtures/*.json) against
 * the server and checks what was stored, down to what policy sees.
 */

interface Fixture {
  source: string;
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  body?: unknown;
  contentType?: string;
}
type Fixtures = Record<string, Fixture>;

const load = (name: string) => JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8')) as Fixtures;
const entra = load('entra-requests.json');
const okta = load('okta-requests.json');

const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
const LOCKSTEP = 'urn:ietf:params:scim:schemas:extension:lockstep:2.0:User';

function fill<T>(v: T, vars: Record<string, string>): T {
  return JSON.parse(JSON.stringify(v).replace(/\{\{(\w+)\}\}/g, (_m, k: string) => {
    if (!(k in vars)) throw new Error(`fixture placeholder {{${k}}} has no value`);
    return vars[k]!;
  })) as T;
}

const rules = configSchema.shape.policy.parse({
  rules: [
    { name: 'admins', when: { roles: ['Admin'] }, grant: [{ lockSystem: 'iloq', access: ['Server room'] }] },
    { name: 'role-1234', when: { roles: ['Role1234'] }, grant: [{ lockSystem: 'iloq', access: ['Lab'] }] },
    { name: 'operators', when: { roles: ['Door operator'] }, grant: [{ lockSystem: 'iloq', access: ['Control room'] }] },
    { name: 'helsinki', when: { attributes: { site: 'HEL-1' } }, grant: [{ lockSystem: 'iloq', access: ['Main entrance'] }] },
  ],
}).rules;

describe('documented IdP requests, replayed', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await harness('sqlite');
  });
  afterEach(() => h.close());

  const replay = async (set: Fixtures, name: string, vars: Record<string, string> = {}, token = TOKEN_A): Promise<Res> => {
    const fx = fill(set[name]!, vars);
    expect(fx, `fixture ${name}`).toBeDefined();
    return scim(h.app, fx.method, fx.path, fx.body, { token, ...(fx.contentType ? { contentType: fx.contentType } : {}) });
  };
  const ok = (res: Res, status: number) => {
    expect(res.statusCode, res.body).toBe(status);
    return res.body ? json(res) : undefined;
  };
  const newUser = async (name: string, token = TOKEN_A) => json(await scim(h.app, 'POST', '/Users', user(name), { token })).id as string;

  describe('Entra ID', () => {
    it('creates users from the documented bodies, nulls and schema typo included', async () => {
      const joy = ok(await replay(entra, 'createUserDocSampleWithNulls'), 201)!;
      expect(joy).toMatchObject({ userName: 'jyoung', externalId: 'jyoung', active: true, displayName: 'Joy Young', name: { familyName: 'Young', givenName: 'Joy' } });
      for (const k of ['addresses', 'phoneNumbers', 'preferredLanguage', 'title', 'department', 'manager']) expect(joy).not.toHaveProperty(k);
      // The typo'd extension carried no data, so no extension is claimed.
      expect(joy.schemas).toEqual(['urn:ietf:params:scim:schemas:core:2.0:User']);

      const created = ok(await replay(entra, 'createUser'), 201)!;
      expect(created.roles).toEqual([]);
      const found = ok(await replay(entra, 'getUserByQuery'), 200)!;
      expect(found).toMatchObject({ totalResults: 1, itemsPerPage: 1, Resources: [{ id: created.id }] });
      expect(ok(await replay(entra, 'getUserByQueryZeroResults'), 200)).toMatchObject({ totalResults: 0, Resources: [] });
      expect(ok(await replay(entra, 'testConnection'), 200)).toMatchObject({ totalResults: 0, Resources: [] });
      // The address is matched case-insensitively, and any of a user's addresses can match.
      expect(ok(await replay(entra, 'getUserByWorkEmail'), 200)).toMatchObject({ totalResults: 1, Resources: [{ id: created.id }] });
    });

    it('applies both PATCH dialects (per-attribute legacy ops and the aadOptscim062020 path-less replace)', async () => {
      const id = (ok(await replay(entra, 'createUser'), 201) as { id: string }).id;
      ok(await replay(entra, 'updateUserMultiValued', { user: id }), 204);
      let u = json(await scim(h.app, 'GET', `/Users/${id}`));
      expect(u.emails).toEqual([{ primary: true, type: 'work', value: 'updatedEmail@microsoft.com' }]);
      expect(u.name.familyName).toBe('updatedFamilyName');
      const byMail = json(await scim(h.app, 'GET', `/Users?filter=${encodeURIComponent('emails[type eq "work"].value eq "UPDATEDEMAIL@microsoft.com"')}`));
      expect(byMail.Resources.map((r: { id: string }) => r.id)).toEqual([id]);

      ok(await replay(entra, 'updateUserLegacyPerAttribute', { user: id }), 204);
      u = json(await scim(h.app, 'GET', `/Users/${id}`));
      expect(u).toMatchObject({ displayName: 'Pvlo', externalId: 'Eqpj', name: { givenName: 'Gtfd' }, [ENTERPRISE]: { employeeNumber: 'Eqpj' } });
      expect(u.emails).toEqual([{ primary: true, type: 'work', value: 'TestBcwqnm@test.microsoft.com' }]);
      // A phone type the user did not have yet is created, not refused as noTarget.
      expect(u.phoneNumbers).toEqual([{ type: 'mobile', value: '+1 555 0100' }]);

      ok(await replay(entra, 'updateUserFlagMultiAttribute', { user: id }), 204);
      u = json(await scim(h.app, 'GET', `/Users/${id}`));
      expect(u).toMatchObject({ displayName: 'Pvlo2', externalId: 'Eqpj2', name: { givenName: 'Gtfd2', familyName: 'Pkqf2' }, [ENTERPRISE]: { employeeNumber: 'Eqpj2' } });
      expect(u.emails).toEqual([{ primary: true, type: 'work', value: 'TestBcwqnm2@test.microsoft.com' }]);
      const rec = (await h.repo.getUser('entra-a', id))!;
      expect(rec.profile).toMatchObject({ givenName: 'Gtfd2', familyName: 'Pkqf2', attributes: { employeeNumber: 'Eqpj2' } });
      expect(json(await scim(h.app, 'GET', `/Users?filter=${encodeURIComponent('name.familyName eq "pkqf2"')}`)).totalResults).toBe(1);

      ok(await replay(entra, 'disableUserLegacy', { user: id }), 204);
      expect((await h.repo.loadIdentity(id))!.active).toBe(false);
      ok(await replay(entra, 'enableUserFlag', { user: id }), 204);
      expect((await h.repo.loadIdentity(id))!.active).toBe(true);

      const version = (await h.repo.getUser('entra-a', id))!.version;
      ok(await replay(entra, 'emptyPatch', { user: id }), 204);
      expect((await h.repo.getUser('entra-a', id))!.version).toBe(version);
    });

    it('normalises every manager form to the enterprise extension', async () => {
      const id = (ok(await replay(entra, 'createUser'), 201) as { id: string }).id;
      const [m1, m2] = [await newUser('manager.one'), await newUser('manager.two')];
      ok(await replay(entra, 'addManagerDocExample', { user: id, manager: m1 }), 204);
      expect(json(await scim(h.app, 'GET', `/Users/${id}`))[ENTERPRISE].manager).toEqual({ value: m1 });
      ok(await replay(entra, 'replaceManagerUrnString', { user: id, manager2: m2 }), 204);
      expect(json(await scim(h.app, 'GET', `/Users/${id}`))[ENTERPRISE].manager).toEqual({ value: m2 });
      ok(await replay(entra, 'removeManager', { user: id }), 204);
      expect(json(await scim(h.app, 'GET', `/Users/${id}`))[ENTERPRISE]?.manager).toBeUndefined();
    });

    it('stores app role assignments as roles that policy can use (single, encoded, by primary filter, several)', async () => {
      const single = ok(await replay(entra, 'createUserSingleAppRole'), 201)!;
      expect(single.roles).toEqual([{ primary: true, type: 'WindowsAzureActiveDirectoryRole', value: 'Admin' }]);
      let identity = (await h.repo.loadIdentity(single.id))!;
      expect(identity.roles).toEqual(['Admin']);
      expect(desiredAccess(identity, rules)).toEqual(new Map([['iloq', new Set(['Server room'])]]));

      ok(await replay(entra, 'addAppRoleEncoded', { roleUser: single.id }), 204);
      identity = (await h.repo.loadIdentity(single.id))!;
      expect(identity.roles).toEqual(['Admin', '25', 'Role1234']);
      expect(desiredAccess(identity, rules).get('iloq')).toEqual(new Set(['Server room', 'Lab']));

      const other = await newUser('role.by.filter');
      ok(await replay(entra, 'setPrimaryRoleByFilter', { roleUser2: other }), 204);
      expect(json(await scim(h.app, 'GET', `/Users/${other}`)).roles).toEqual([{ primary: true, value: 'Operator', display: 'Door operator' }]);
      expect(desiredAccess(await h.repo.loadIdentity(other), rules).get('iloq')).toEqual(new Set(['Control room']));

      const several = ok(await replay(entra, 'createUserComplexAppRoles'), 201)!;
      expect((await h.repo.loadIdentity(several.id))!.roles).toEqual(['Admin', 'User']);
    });

    it('provisions groups: create, query, excludedAttributes=members, add several, remove only the listed, rename, delete', async () => {
      const [m1, m2, m3] = [await newUser('g.m1'), await newUser('g.m2'), await newUser('g.m3')];
      const g = ok(await replay(entra, 'createGroup'), 201)!;
      expect(g.schemas).toEqual(['urn:ietf:params:scim:schemas:core:2.0:Group', 'http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group']);
      expect(g.meta.location).toBe(`${SCIM_BASE}/Groups/${g.id}`);
      const q = ok(await replay(entra, 'getGroupByQuery'), 200)!;
      expect(q).toMatchObject({ totalResults: 1, Resources: [{ id: g.id, displayName: 'displayName' }] });
      expect(q.Resources[0]).not.toHaveProperty('members');

      const vars = { group: g.id, member1: m1, member2: m2, member3: m3 };
      ok(await replay(entra, 'addMembers', vars), 204);
      const members = async () => ((await h.repo.getGroup('entra-a', g.id, true))!.members ?? []).map((m) => m.id).sort();
      expect(await members()).toEqual([m1, m2, m3].sort());
      expect(ok(await replay(entra, 'getGroupExcludingMembers', vars), 200)).not.toHaveProperty('members');
      ok(await replay(entra, 'removeMembersLegacy', vars), 204);
      expect(await members()).toEqual([m2, m3].sort());
      ok(await replay(entra, 'removeMemberFlag', vars), 204);
      expect(await members()).toEqual([m3]);
      ok(await replay(entra, 'renameGroup', vars), 204);
      expect((await h.repo.loadIdentity(m3))!.groups).toEqual([{ id: g.id, displayName: '1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName' }]);
      ok(await replay(entra, 'deleteGroup', vars), 204);
      ok(await replay(entra, 'deleteUser', { user: m1 }), 204);
      expect(await h.repo.loadIdentity(m1)).toBeNull();
      expect((await h.repo.loadIdentity(m3))!.groups).toEqual([]);
    });
  });

  describe('Okta', () => {
    const asOkta = (name: string, vars: Record<string, string> = {}) => replay(okta, name, vars, TOKEN_B);

    it('provisions a user: lookup, create, case-insensitive lookup, PUT with the full body, deactivate, reactivate, password sync', async () => {
      const conn = ok(await asOkta('testConnection'), 200)!;
      expect(conn).toMatchObject({ totalResults: 0, startIndex: 1, itemsPerPage: 0, Resources: [] });
      expect(ok(await asOkta('lookupUser'), 200)).toMatchObject({ totalResults: 0 });
      const created = ok(await asOkta('createUser'), 201)!;
      expect(created.password).toBeUndefined();
      expect((await h.repo.getUser('okta-b', created.id))!.resource.password).toBeUndefined();
      expect(ok(await asOkta('lookupUserOtherCase'), 200)).toMatchObject({ totalResults: 1, itemsPerPage: 1, Resources: [{ id: created.id }] });
      expect((await asOkta('createUser')).statusCode).toBe(409);

      const vars = { user: created.id };
      const put = ok(await asOkta('putUser', vars), 200)!;
      expect(put).toMatchObject({ id: created.id, name: { givenName: 'Another', familyName: 'User' }, externalId: '00u1dhhb1fkIGP7RL1d8', meta: { version: 'W/"2"' } });
      // Okta PUTs the same full body on every push: no write.
      ok(await asOkta('putUser', vars), 200);
      expect((await h.repo.getUser('okta-b', created.id))!.version).toBe(2);

      expect(ok(await asOkta('deactivateUser', vars), 200)).toMatchObject({ id: created.id, active: false });
      // Never deleted: still there, as Okta expects.
      expect(ok(await asOkta('getUser', vars), 200)).toMatchObject({ active: false, userName: 'test.user@okta.local' });
      expect(ok(await asOkta('reactivateUser', vars), 200)).toMatchObject({ active: true });
      const before = (await h.repo.getUser('okta-b', created.id))!.version;
      expect(ok(await asOkta('syncPassword', vars), 200)).toMatchObject({ id: created.id });
      expect((await h.repo.getUser('okta-b', created.id))!.version).toBe(before);
    });

    it('pushes groups: create, lookup, rename on every push, add, remove, replace, PUT', async () => {
      const [u1, u2] = [await newUser('okta.one', TOKEN_B), await newUser('okta.two', TOKEN_B)];
      const g = ok(await asOkta('createGroup'), 201)!;
      expect(g.members).toEqual([]);
      expect(ok(await asOkta('lookupGroup'), 200)).toMatchObject({ totalResults: 1, Resources: [{ id: g.id }] });
      const vars = { group: g.id, user: u1, user2: u2 };
      ok(await asOkta('renameGroup', vars), 204);
      ok(await asOkta('renameGroup', vars), 204);
      expect((await h.repo.getGroup('okta-b', g.id, false))!).toMatchObject({ displayName: 'Test SCIMv2 renamed', version: 2 });
      const members = async () => ((await h.repo.getGroup('okta-b', g.id, true))!.members ?? []).map((m) => [m.id, m.display]);
      ok(await asOkta('addMembers', vars), 204);
      expect(await members()).toEqual([
        [u1, 'test.user@okta.local'],
        [u2, 'other.user@okta.local'],
      ]);
      ok(await asOkta('removeMember', vars), 204);
      expect(await members()).toEqual([[u1, 'test.user@okta.local']]);
      ok(await asOkta('replaceMembers', vars), 204);
      expect(await members()).toEqual([[u2, 'other.user@okta.local']]);
      const put = ok(await asOkta('putGroup', vars), 200)!;
      expect(put.members.map((m: { value: string }) => m.value)).toEqual([u1]);
      expect(await members()).toEqual([[u1, 'test.user@okta.local']]);
    });
  });

  describe("lockstep's extension", () => {
    it('stores terminationDate, contractEndDate and site where policy and the lock-system applier read them', async () => {
      const res = await scim(h.app, 'POST', '/Users', {
        ...user('contractor@example.com'),
        schemas: ['urn:ietf:params:scim:schemas:core:2.0:User', LOCKSTEP],
        [LOCKSTEP]: { site: 'HEL-1', terminationDate: '2031-01-31T17:00:00+02:00', contractEndDate: '2030-12-31' },
      });
      const u = ok(res, 201)!;
      expect(u[LOCKSTEP]).toEqual({ site: 'HEL-1', terminationDate: '2031-01-31T15:00:00.000Z', contractEndDate: '2030-12-31T00:00:00.000Z' });
      const identity = (await h.repo.loadIdentity(u.id))!;
      expect(identity.attributes).toMatchObject({ site: 'HEL-1', terminationDate: '2031-01-31T15:00:00.000Z', contractEndDate: '2030-12-31T00:00:00.000Z' });
      expect(desiredAccess(identity, rules)).toEqual(new Map([['iloq', new Set(['Main entrance'])]]));
      // Changed by PATCH with the namespaced path, as SailPoint and Entra address extension attributes.
      await scim(h.app, 'PATCH', `/Users/${u.id}`, { schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'], Operations: [{ op: 'replace', path: `${LOCKSTEP}:site`, value: 'TRE-2' }] });
      expect((await h.repo.loadIdentity(u.id))!.attributes.site).toBe('TRE-2');
      expect(desiredAccess(await h.repo.loadIdentity(u.id), rules).size).toBe(0);
      expect((await scim(h.app, 'POST', '/Users', { ...user('bad.date'), [LOCKSTEP]: { terminationDate: 'next friday' } })).statusCode).toBe(400);
    });
  });
});
