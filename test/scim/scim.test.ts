import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConflictError } from '../../src/store/identities.ts';
import { newId } from '../../src/store/ids.ts';
import { BACKENDS } from '../helpers/stores.ts';
import {
  ERROR_SCHEMA,
  GROUP_SCHEMA,
  PATCH_SCHEMA,
  type Harness,
  SCIM_BASE,
  TOKEN_A,
  TOKEN_B,
  TOKEN_C,
  USER_SCHEMA,
  harness,
  json,
  patch,
  scim,
  sources,
  user,
  type Res,
} from './helpers.ts';

const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
const LOCKSTEP = 'urn:ietf:params:scim:schemas:extension:lockstep:2.0:User';
const LIST = 'urn:ietf:params:scim:api:messages:2.0:ListResponse';

function expectScimError(res: Res, status: number, scimType?: string) {
  expect(res.statusCode, res.body).toBe(status);
  expect(res.headers['content-type']).toMatch(/^application\/scim\+json/);
  const body = json(res);
  expect(body.schemas).toEqual([ERROR_SCHEMA]);
  expect(body.status).toBe(String(status));
  expect(typeof body.detail).toBe('string');
  expect(body.detail.length).toBeGreaterThan(0);
  if (scimType) expect(body.scimType).toBe(scimType);
  return body;
}

async function createUser(h: Harness, userName: string, extra: Record<string, unknown> = {}, token = TOKEN_A): Promise<string> {
  const res = await scim(h.app, 'POST', '/Users', user(userName, extra), { token });
  expect(res.statusCode, res.body).toBe(201);
  return json(res).id as string;
}

async function createGroup(h: Harness, displayName: string, members: string[] = [], token = TOKEN_A): Promise<string> {
  const res = await scim(h.app, 'POST', '/Groups', { schemas: [GROUP_SCHEMA], displayName, members: members.map((value) => ({ value })) }, { token });
  expect(res.statusCode, res.body).toBe(201);
  return json(res).id as string;
}

async function memberIds(h: Harness, groupId: string, sourceId = 'entra-a'): Promise<string[]> {
  const g = await h.repo.getGroup(sourceId, groupId, true);
  return (g?.members ?? []).map((m) => m.id).sort();
}

describe.each(BACKENDS)('SCIM server on %s', (backend) => {
  let h: Harness;
  beforeEach(async () => {
    h = await harness(backend);
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    await h.close();
  });

  describe('users', () => {
    it('creates, reads, replaces and deletes a user', async () => {
      const created = await scim(h.app, 'POST', '/Users', user('alice@example.com', { password: 'Secret123!', externalId: 'ext-1' }));
      expect(created.statusCode, created.body).toBe(201);
      expect(created.headers['content-type']).toMatch(/^application\/scim\+json/);
      const body = json(created);
      expect(body.id).toMatch(/[0-9a-f-]{36}/);
      expect(body.password).toBeUndefined();
      expect(body.meta).toMatchObject({ resourceType: 'User', version: 'W/"1"', location: `${SCIM_BASE}/Users/${body.id}` });
      expect(created.headers.location).toBe(body.meta.location);
      expect((await h.repo.getUser('entra-a', body.id))!.resource.password).toBeUndefined();

      const read = await scim(h.app, 'GET', `/Users/${body.id}`);
      expect(read.statusCode).toBe(200);
      expect(json(read)).toMatchObject({ id: body.id, userName: 'alice@example.com', externalId: 'ext-1', active: true, groups: [] });

      // Okta's PUT echoes id, meta and groups.
      const put = await scim(h.app, 'PUT', `/Users/${body.id}`, {
        ...user('alice@example.com', { name: { givenName: 'Alicia', familyName: 'Smith', middleName: '' } }),
        id: body.id,
        meta: body.meta,
        groups: [],
      });
      expect(put.statusCode, put.body).toBe(200);
      expect(json(put).name).toMatchObject({ givenName: 'Alicia', familyName: 'Smith' });
      expect(json(put).meta.version).toBe('W/"2"');
      expect((await h.repo.getUser('entra-a', body.id))!.profile.givenName).toBe('Alicia');

      const del = await scim(h.app, 'DELETE', `/Users/${body.id}`);
      expect(del.statusCode).toBe(204);
      expect(del.body).toBe('');
      expectScimError(await scim(h.app, 'GET', `/Users/${body.id}`), 404);
    });

    it('maps SCIM attributes and extensions into the policy profile', async () => {
      const id = await createUser(h, 'bob', {
        displayName: 'Bob B',
        title: 'Technician',
        userType: 'Contractor',
        emails: [
          { value: 'bob.home@example.com', type: 'home' },
          { value: 'Bob@Example.com', type: 'work' },
        ],
        roles: ['door-admin', { display: 'Night shift' }, { value: 'auditor', display: 'Auditor' }],
        [ENTERPRISE]: { department: 'Facilities', division: 'Ops', organization: 'ACME', costCenter: 'CC1', employeeNumber: '42', manager: { value: 'm-1' } },
        [LOCKSTEP]: { site: 'HEL-1', terminationDate: '2031-01-31T17:00:00Z', contractEndDate: '2030-12-31T00:00:00Z' },
      });
      const rec = (await h.repo.getUser('entra-a', id))!;
      expect(rec.email).toBe('bob@example.com');
      expect(rec.displayName).toBe('Bob B');
      expect(rec.profile).toEqual({
        givenName: 'Given',
        familyName: 'Family',
        email: 'Bob@Example.com',
        // A rule may name a role by value or by display.
        roles: ['door-admin', 'Night shift', 'auditor', 'Auditor'],
        attributes: {
          department: 'Facilities',
          division: 'Ops',
          organization: 'ACME',
          costCenter: 'CC1',
          employeeNumber: '42',
          title: 'Technician',
          userType: 'Contractor',
          employeeType: 'Contractor',
          site: 'HEL-1',
          terminationDate: '2031-01-31T17:00:00.000Z',
          contractEndDate: '2030-12-31T00:00:00.000Z',
        },
      });
      const read = json(await scim(h.app, 'GET', `/Users/${id}`));
      expect(read.schemas).toEqual(expect.arrayContaining([ENTERPRISE, LOCKSTEP]));
      expect(read[LOCKSTEP]).toEqual({ site: 'HEL-1', terminationDate: '2031-01-31T17:00:00.000Z', contractEndDate: '2030-12-31T00:00:00.000Z' });
      expect(read[ENTERPRISE].manager).toEqual({ value: 'm-1' });
    });

    it('accepts Entra create bodies: "True" strings, top-level nulls, bare manager, application/json', async () => {
      const res = await scim(
        h.app,
        'POST',
        '/Users',
        { ...user('entra.user'), active: 'True', phoneNumbers: null, manager: 'mgr-7', [ENTERPRISE]: { department: 'IT', manager: null }, roles: [] },
        { contentType: 'application/json' },
      );
      expect(res.statusCode, res.body).toBe(201);
      expect(json(res).active).toBe(true);
      expect(json(res)[ENTERPRISE]).toEqual({ department: 'IT', manager: { value: 'mgr-7' } });
    });

    it('rejects a duplicate userName (case-insensitive) with 409 uniqueness', async () => {
      const first = await createUser(h, 'dup@example.com');
      expectScimError(await scim(h.app, 'POST', '/Users', user('DUP@example.com')), 409, 'uniqueness');
      const other = await createUser(h, 'other@example.com');
      expectScimError(await scim(h.app, 'PUT', `/Users/${other}`, user('Dup@Example.com')), 409, 'uniqueness');
      expect(first).toBeTruthy();
    });

    it('answers 404 with a SCIM error for unknown users and groups', async () => {
      const missing = '00000000-0000-4000-8000-000000000000';
      expectScimError(await scim(h.app, 'GET', `/Users/${missing}`), 404);
      expectScimError(await scim(h.app, 'PUT', `/Users/${missing}`, user('x')), 404);
      expectScimError(await scim(h.app, 'PATCH', `/Users/${missing}`, patch({ op: 'replace', path: 'active', value: false })), 404);
      expectScimError(await scim(h.app, 'DELETE', `/Users/${missing}`), 404);
      expectScimError(await scim(h.app, 'GET', `/Groups/${missing}`), 404);
      expectScimError(await scim(h.app, 'PATCH', `/Groups/${missing}`, patch({ op: 'add', path: 'members', value: [] })), 404);
      expectScimError(await scim(h.app, 'PATCH', `/Groups/${missing}`, patch()), 404);
      expectScimError(await scim(h.app, 'DELETE', `/Groups/${missing}`), 404);
    });

    it('rejects a user without userName with 400', async () => {
      const { userName: _u, ...noName } = user('x');
      expectScimError(await scim(h.app, 'POST', '/Users', noName), 400, 'invalidValue');
    });
  });

  describe('user PATCH', () => {
    it('deactivates with Entra\'s "False" string and capitalised op, answering 204 to an Entra source', async () => {
      const id = await createUser(h, 'leaver');
      const res = await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'False' }));
      expect(res.statusCode, res.body).toBe(204);
      expect(res.body).toBe('');
      expect(res.headers.etag).toBe('W/"2"');
      expect((await h.repo.getUser('entra-a', id))!.active).toBe(false);
      // Asking for attributes gets the resource.
      const withBody = await scim(h.app, 'PATCH', `/Users/${id}?attributes=active`, patch({ op: 'Replace', path: 'active', value: 'True' }));
      expect(withBody.statusCode, withBody.body).toBe(200);
      expect(json(withBody)).toEqual({ schemas: expect.any(Array), id, active: true });
    });

    it("deactivates and re-activates with Okta's path-less replace, answering 200 with the user, and keeps the user", async () => {
      const id = await createUser(h, 'okta.leaver', {}, TOKEN_B);
      const asB = { token: TOKEN_B };
      const spy = vi.spyOn(h.repo, 'setActive');
      const res = await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', value: { active: false } }), asB);
      expect(res.statusCode, res.body).toBe(200);
      expect(json(res)).toMatchObject({ id, active: false, userName: 'okta.leaver', meta: { version: 'W/"2"' } });
      // Only the flag is written, not the resource.
      expect(spy).toHaveBeenCalledWith('okta-b', id, false, expect.anything(), undefined);
      // Okta never deletes: the deactivated user stays readable, listable and filterable.
      expect(json(await scim(h.app, 'GET', `/Users/${id}`, undefined, asB)).active).toBe(false);
      expect(json(await scim(h.app, 'GET', `/Users?filter=${encodeURIComponent('userName eq "OKTA.LEAVER"')}`, undefined, asB)).Resources).toEqual([
        expect.objectContaining({ id, active: false }),
      ]);
      const back = await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', value: { active: true } }), asB);
      expect(json(back)).toMatchObject({ active: true, meta: { version: 'W/"3"' } });
      // The same value again is not a change.
      await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', value: { active: true } }), asB);
      expect((await h.repo.getUser('okta-b', id))!.version).toBe(3);
    });

    it('answers 200 with the resource to other IdPs (SailPoint)', async () => {
      const id = await createUser(h, 'sp.user', {}, TOKEN_C);
      const res = await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'displayName', value: 'SP User' }), { token: TOKEN_C });
      expect(res.statusCode, res.body).toBe(200);
      expect(json(res)).toMatchObject({ id, displayName: 'SP User' });
    });

    it('applies Entra multi-attribute replace, work email and the manager forms', async () => {
      const id = await createUser(h, 'patchy');
      const res = await scim(
        h.app,
        'PATCH',
        `/Users/${id}`,
        patch(
          { op: 'Replace', value: { 'name.givenName': 'Pat', [`${ENTERPRISE}:employeeNumber`]: '777' } },
          { op: 'Replace', path: 'emails[type eq "work"].value', value: 'pat@example.com' },
          { op: 'Add', path: 'manager', value: [{ $ref: null, value: 'boss-1' }] },
        ),
      );
      expect(res.statusCode, res.body).toBe(204);
      const rec = (await h.repo.getUser('entra-a', id))!;
      expect(rec.profile.givenName).toBe('Pat');
      expect(rec.profile.attributes.employeeNumber).toBe('777');
      expect(rec.email).toBe('pat@example.com');
      expect((rec.resource[ENTERPRISE] as Record<string, unknown>).manager).toEqual({ value: 'boss-1' });
      const urnForm = await scim(h.app, 'PATCH', `/Users/${id}?excludedAttributes=groups`, patch({ op: 'replace', path: `${ENTERPRISE}:manager`, value: 'boss-2' }));
      expect(urnForm.statusCode, urnForm.body).toBe(200);
      expect(json(urnForm)[ENTERPRISE].manager).toEqual({ value: 'boss-2' });
      expect(json(urnForm).groups).toBeUndefined();
    });

    it('treats an empty Operations list as a no-op', async () => {
      const id = await createUser(h, 'noop');
      const res = await scim(h.app, 'PATCH', `/Users/${id}`, patch());
      expect(res.statusCode, res.body).toBe(204);
      expect(res.headers.etag).toBe('W/"1"');
      expect((await h.repo.getUser('entra-a', id))!.version).toBe(1);
    });

    it('does not write when a PATCH or PUT changes nothing (Okta password sync, repeated PUT)', async () => {
      const id = await createUser(h, 'same', { displayName: 'Same' });
      const spy = vi.spyOn(h.repo, 'replaceUser');
      expect((await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', value: { password: 'n3w-Secret!' } }))).statusCode).toBe(204);
      expect((await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'displayName', value: 'Same' }))).statusCode).toBe(204);
      expect((await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'active', value: true }))).statusCode).toBe(204);
      expect((await scim(h.app, 'PUT', `/Users/${id}`, user('same', { displayName: 'Same' }))).statusCode).toBe(200);
      expect(spy).not.toHaveBeenCalled();
      expect((await h.repo.getUser('entra-a', id))!.version).toBe(1);
    });

    it('re-applies a PATCH that lost a race with another write', async () => {
      const id = await createUser(h, 'racer');
      const original = h.repo.replaceUser.bind(h.repo);
      let calls = 0;
      vi.spyOn(h.repo, 'replaceUser').mockImplementation(async (...args) => {
        calls++;
        if (calls === 1) throw new ConflictError('version', `User ${id} was modified concurrently`);
        return original(...args);
      });
      const res = await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'displayName', value: 'Racer X' }));
      expect(res.statusCode, res.body).toBe(204);
      expect(calls).toBe(2);
      expect((await h.repo.getUser('entra-a', id))!.displayName).toBe('Racer X');
    });

    it('rejects an invalid path with 400 invalidPath', async () => {
      const id = await createUser(h, 'badpath');
      expectScimError(await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'noSuchAttribute', value: 'x' })), 400, 'invalidPath');
    });
  });

  describe('filters and paging', () => {
    it('filters users in the store, userName case-insensitively', async () => {
      const a = await createUser(h, 'Anna.Smith@example.com', { externalId: 'E-1', displayName: 'Anna Smith' });
      const b = await createUser(h, 'bert@example.com', { externalId: 'E-2', displayName: 'Bert' });
      await scim(h.app, 'PATCH', `/Users/${b}`, patch({ op: 'replace', path: 'active', value: false }));
      const ids = async (filter: string) => {
        const res = await scim(h.app, 'GET', `/Users?filter=${encodeURIComponent(filter)}`);
        expect(res.statusCode, res.body).toBe(200);
        expect(json(res).schemas).toEqual([LIST]);
        return (json(res).Resources as Array<{ id: string }>).map((r) => r.id);
      };
      expect(await ids('userName eq "anna.smith@EXAMPLE.com"')).toEqual([a]);
      expect(await ids('USERNAME eq "ANNA.SMITH@example.com"')).toEqual([a]);
      expect(await ids('externalId eq "E-2"')).toEqual([b]);
      expect(await ids('emails[type eq "work"].value eq "bert@example.com"')).toEqual([b]);
      expect(await ids('emails.value eq "ANNA.SMITH@example.com"')).toEqual([a]);
      expect(await ids('displayName eq "Anna Smith"')).toEqual([a]);
      expect(await ids(`id eq "${b}"`)).toEqual([b]);
      expect(await ids('active eq false')).toEqual([b]);
      expect(await ids('active eq true and userName eq "bert@example.com"')).toEqual([]);
      expect(await ids('externalId eq "E-1" and userName eq "anna.smith@example.com"')).toEqual([a]);
      expect(await ids('userName eq "nobody@example.com"')).toEqual([]);
    });

    it('filters groups by displayName, externalId, id and members.value', async () => {
      const u = await createUser(h, 'member');
      const g1 = await createGroup(h, 'Doors North', [u]);
      const g2 = await createGroup(h, 'Doors South');
      await scim(h.app, 'PUT', `/Groups/${g2}`, { schemas: [GROUP_SCHEMA], displayName: 'Doors South', externalId: 'X-2' });
      const ids = async (filter: string) =>
        (json(await scim(h.app, 'GET', `/Groups?excludedAttributes=members&filter=${encodeURIComponent(filter)}`)).Resources as Array<{ id: string }>).map((r) => r.id);
      expect(await ids('displayName eq "doors north"')).toEqual([g1]);
      expect(await ids('externalId eq "X-2"')).toEqual([g2]);
      expect(await ids(`id eq "${g2}"`)).toEqual([g2]);
      expect(await ids(`members.value eq "${u}"`)).toEqual([g1]);
      expect(await ids(`members[value eq "${u}"]`)).toEqual([g1]);
    });

    it('serves co, sw, ew, gt, ne, pr, or and not in the store', async () => {
      const omalley = await createUser(h, 'OMalley', { name: { givenName: 'Darl', familyName: 'OMalley' }, emails: [{ value: 'anna33@example.com', type: 'work' }] });
      const emp1 = await createUser(h, 'emp1', { name: { givenName: 'Darl', familyName: 'Employee' }, emails: [{ value: 'anna33@gmail.com', type: 'work' }, { value: 'anna33@example.org', type: 'other' }] });
      const emp2 = await createUser(h, 'emp2', { name: { givenName: 'Darl', familyName: 'Employee' }, emails: [{ value: 'x@example.net', type: 'work' }], externalId: 'EXT-2' });
      const ids = async (filter: string) => {
        const res = await scim(h.app, 'GET', `/Users?filter=${encodeURIComponent(filter)}`);
        expect(res.statusCode, res.body).toBe(200);
        return (json(res).Resources as Array<{ id: string }>).map((r) => r.id);
      };
      // Microsoft's collection, with its unquoted values.
      expect(await ids('name.FamilyName eq Employee and (emails.Value co example.com or emails.Value co example.org)')).toEqual([emp1]);
      expect(await ids('userName sw O')).toEqual([omalley]);
      expect(await ids('meta.Created gt 2015-10-10T14:38:21.8617979-07:00')).toEqual([omalley, emp1, emp2]);
      expect(await ids('meta.created lt "2015-10-10T00:00:00Z"')).toEqual([]);
      expect(await ids('userName ew "P2"')).toEqual([emp2]);
      expect(await ids('emails[type eq "other" and value ew ".org"]')).toEqual([emp1]);
      expect(await ids('externalId pr')).toEqual([emp2]);
      expect(await ids('externalId ne "EXT-2"')).toEqual([omalley, emp1]);
      expect(await ids('not (name.familyName eq "employee")')).toEqual([omalley]);
      expect(await ids('userName eq "emp1" or userName eq "emp2"')).toEqual([emp1, emp2]);
      expect(await ids('userName gt "emp1" and userName le "omalley"')).toEqual([omalley, emp2]);
      expect(await ids('name.givenName eq "DARL" and not (emails co "gmail")')).toEqual([omalley, emp2]);
      expect(await ids('userName eq "a\\"b"')).toEqual([]);
    });

    it('refuses filters it cannot serve with 400 invalidFilter', async () => {
      for (const filter of ['title eq "x"', 'name.honorificPrefix eq "x"', `${ENTERPRISE}:department eq "x"`, 'emails.display eq "x"', 'userName eq', 'userName eq "a" and', '(userName eq "a"', 'active gt true', 'meta.created eq "yesterday"', 'groups.value co "x"']) {
        const body = expectScimError(await scim(h.app, 'GET', `/Users?filter=${encodeURIComponent(filter)}`), 400, 'invalidFilter');
        expect(body.detail, filter).not.toBe('');
      }
      expectScimError(await scim(h.app, 'GET', `/Groups?filter=${encodeURIComponent('members.display eq "x"')}`), 400, 'invalidFilter');
      expectScimError(await scim(h.app, 'GET', `/Users?filter=`), 400, 'invalidFilter');
    });

    it('runs filters no index can narrow only on sources small enough to scan', async () => {
      const small = await harness(backend, { scanLimit: 2 });
      try {
        for (const n of ['a1', 'a2']) await createUser(small, n);
        const co = (q: string) => scim(small.app, 'GET', `/Users?filter=${encodeURIComponent(q)}`);
        expect(json(await co('userName co "2"')).totalResults).toBe(1);
        await createUser(small, 'a3');
        // Three users, limit two: a scan is refused...
        expectScimError(await co('userName co "2"'), 400, 'invalidFilter');
        expectScimError(await co('not (userName eq "a1")'), 400, 'invalidFilter');
        expectScimError(await co('userName eq "a1" or displayName co "x"'), 400, 'invalidFilter');
        // ...unless an index narrows it first.
        expect(json(await co('userName sw "a" and userName co "2"')).totalResults).toBe(1);
        expect(json(await co('userName eq "a1" or userName eq "a3"')).totalResults).toBe(2);
      } finally {
        await small.close();
      }
    });

    it('answers Entra\'s "Test connection" (a random GUID on the matching attribute) with an empty list', async () => {
      await createUser(h, 'someone');
      for (const attr of ['userName', 'externalId', 'id', 'emails[type eq "work"].value', 'displayName']) {
        const res = await scim(h.app, 'GET', `/Users?filter=${encodeURIComponent(`${attr} eq "${crypto.randomUUID()}"`)}`);
        expect(res.statusCode, res.body).toBe(200);
        expect(json(res)).toEqual({ schemas: [LIST], totalResults: 0, startIndex: 1, itemsPerPage: 0, Resources: [] });
      }
      const groups = await scim(h.app, 'GET', `/Groups?excludedAttributes=members&filter=${encodeURIComponent(`displayName eq "${crypto.randomUUID()}"`)}`);
      expect(json(groups)).toMatchObject({ totalResults: 0, Resources: [] });
    });

    it('pages in the store with integer startIndex/count and itemsPerPage = returned', async () => {
      const created: string[] = [];
      for (let i = 0; i < 5; i++) created.push(await createUser(h, `page${i}`));
      const page = async (q: string) => {
        const res = await scim(h.app, 'GET', `/Users?${q}`);
        expect(res.statusCode, res.body).toBe(200);
        return json(res);
      };
      const p1 = await page('startIndex=1&count=2');
      expect(p1).toMatchObject({ totalResults: 5, startIndex: 1, itemsPerPage: 2 });
      const p2 = await page('startIndex=3&count=2');
      const p3 = await page('startIndex=5&count=2');
      expect(p3).toMatchObject({ totalResults: 5, startIndex: 5, itemsPerPage: 1 });
      const all = [...p1.Resources, ...p2.Resources, ...p3.Resources].map((r: { id: string }) => r.id);
      expect(all).toEqual(created);
      // Same query, same order.
      expect((await page('startIndex=1&count=2')).Resources.map((r: { id: string }) => r.id)).toEqual(created.slice(0, 2));
      const beyond = await page('startIndex=10&count=2');
      expect(beyond).toMatchObject({ totalResults: 5, startIndex: 10, itemsPerPage: 0, Resources: [] });
      const none = await page('count=0');
      expect(none).toMatchObject({ totalResults: 5, itemsPerPage: 0, Resources: [] });
      expect(typeof p1.totalResults).toBe('number');
      expectScimError(await scim(h.app, 'GET', '/Users?count=abc'), 400, 'invalidValue');
    });

    it('serves POST /.search with filter, paging and attributes', async () => {
      for (let i = 0; i < 3; i++) await createUser(h, `search${i}`);
      const res = await scim(h.app, 'POST', '/Users/.search', {
        schemas: ['urn:ietf:params:scim:api:messages:2.0:SearchRequest'],
        filter: 'userName eq "search1"',
        attributes: ['userName'],
        startIndex: 1,
        count: 10,
      });
      expect(res.statusCode, res.body).toBe(200);
      const body = json(res);
      expect(body).toMatchObject({ totalResults: 1, itemsPerPage: 1 });
      expect(body.Resources[0].userName).toBe('search1');
      expect(body.Resources[0].emails).toBeUndefined();
      expect(body.Resources[0].id).toBeTruthy();
    });

    it('honours attributes and excludedAttributes on users', async () => {
      const id = await createUser(h, 'attrs');
      const only = json(await scim(h.app, 'GET', `/Users/${id}?attributes=userName`));
      expect(only.userName).toBe('attrs');
      expect(only.id).toBe(id);
      expect(only.emails).toBeUndefined();
      const without = json(await scim(h.app, 'GET', `/Users?excludedAttributes=emails`)).Resources[0];
      expect(without.emails).toBeUndefined();
      expect(without.userName).toBe('attrs');
    });
  });

  describe('groups', () => {
    it('creates, reads, replaces and deletes a group', async () => {
      const u1 = await createUser(h, 'g.u1');
      const u2 = await createUser(h, 'g.u2');
      const res = await scim(h.app, 'POST', '/Groups', {
        schemas: [GROUP_SCHEMA, 'http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group'],
        displayName: 'Lab access',
        externalId: 'grp-1',
        members: [{ value: u1 }],
      });
      expect(res.statusCode, res.body).toBe(201);
      const g = json(res);
      expect(res.headers.location).toBe(`${SCIM_BASE}/Groups/${g.id}`);
      expect(g.members).toEqual([{ value: u1, display: 'g.u1', $ref: `${SCIM_BASE}/Users/${u1}`, type: 'User' }]);
      expect(json(await scim(h.app, 'GET', `/Users/${u1}`)).groups).toEqual([
        { value: g.id, display: 'Lab access', $ref: `${SCIM_BASE}/Groups/${g.id}`, type: 'direct' },
      ]);

      const put = await scim(h.app, 'PUT', `/Groups/${g.id}`, { schemas: [GROUP_SCHEMA], id: g.id, displayName: 'Lab access 2', members: [{ value: u2 }] });
      expect(put.statusCode, put.body).toBe(200);
      expect(json(put).displayName).toBe('Lab access 2');
      expect(await memberIds(h, g.id)).toEqual([u2]);

      expect((await scim(h.app, 'DELETE', `/Groups/${g.id}`)).statusCode).toBe(204);
      expectScimError(await scim(h.app, 'GET', `/Groups/${g.id}`), 404);
    });

    it('does not load members when excludedAttributes=members', async () => {
      const u = await createUser(h, 'm');
      const g = await createGroup(h, 'Big group', [u]);
      const list = vi.spyOn(h.repo, 'listGroups');
      const get = vi.spyOn(h.repo, 'getGroup');
      const res = await scim(h.app, 'GET', `/Groups?filter=${encodeURIComponent('displayName eq "Big group"')}&excludedAttributes=members`);
      expect(json(res).Resources[0].members).toBeUndefined();
      expect(list).toHaveBeenCalledWith('entra-a', { field: 'displayName', op: 'eq', value: 'Big group' }, 1, 100, false);
      const one = await scim(h.app, 'GET', `/Groups/${g}?excludedAttributes=members`);
      expect(json(one).members).toBeUndefined();
      expect(get).toHaveBeenCalledWith('entra-a', g, false);
      expect(get).not.toHaveBeenCalledWith('entra-a', g, true);
      // ...and does load them otherwise.
      expect(json(await scim(h.app, 'GET', `/Groups/${g}`)).members).toHaveLength(1);
    });

    it("removes only the listed members with Entra's legacy remove, without loading the group", async () => {
      const [u1, u2, u3] = [await createUser(h, 'l1'), await createUser(h, 'l2'), await createUser(h, 'l3')];
      const g = await createGroup(h, 'Legacy', [u1, u2, u3]);
      const get = vi.spyOn(h.repo, 'getGroup');
      const replace = vi.spyOn(h.repo, 'replaceGroup');
      const res = await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'Remove', path: 'members', value: [{ value: u2 }] }));
      expect(res.statusCode, res.body).toBe(204);
      expect(res.body).toBe('');
      expect(get).not.toHaveBeenCalled();
      expect(replace).not.toHaveBeenCalled();
      expect(await memberIds(h, g)).toEqual([u1, u3].sort());
    });

    it('adds, removes by filter, replaces and clears members', async () => {
      const [u1, u2, u3, u4] = [await createUser(h, 'p1'), await createUser(h, 'p2'), await createUser(h, 'p3'), await createUser(h, 'p4')];
      const g = await createGroup(h, 'Members', [u1]);
      const change = vi.spyOn(h.repo, 'changeGroup');

      expect((await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'Add', path: 'members', value: [{ $ref: null, value: u2 }, { value: u3 }] }))).statusCode).toBe(204);
      expect(await memberIds(h, g)).toEqual([u1, u2, u3].sort());
      expect(change).toHaveBeenLastCalledWith('entra-a', g, { add: [u2, u3] }, expect.anything(), undefined);

      expect((await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'remove', path: `members[value eq "${u1}"]` }))).statusCode).toBe(204);
      expect(await memberIds(h, g)).toEqual([u2, u3].sort());

      expect((await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'replace', path: 'members', value: [{ value: u4 }, { value: u2 }] }))).statusCode).toBe(204);
      expect(await memberIds(h, g)).toEqual([u2, u4].sort());

      const withBody = await scim(h.app, 'PATCH', `/Groups/${g}?attributes=members`, patch({ op: 'remove', path: 'members' }));
      expect(withBody.statusCode, withBody.body).toBe(200);
      expect(json(withBody).members ?? []).toEqual([]);
      expect(await memberIds(h, g)).toEqual([]);
    });

    it('applies member ops and other ops of one PATCH (Okta rename + membership)', async () => {
      const [u1, u2] = [await createUser(h, 'o1'), await createUser(h, 'o2')];
      const g = await createGroup(h, 'Okta group', [u1]);
      const res = await scim(
        h.app,
        'PATCH',
        `/Groups/${g}`,
        patch(
          { op: 'replace', value: { id: g, displayName: 'Okta group renamed' } },
          { op: 'remove', path: `members[value eq "${u1}"]` },
          { op: 'add', path: 'members', value: [{ value: u2, display: 'o2' }] },
        ),
      );
      expect(res.statusCode, res.body).toBe(204);
      expect((await h.repo.getGroup('entra-a', g, false))!.displayName).toBe('Okta group renamed');
      expect(await memberIds(h, g)).toEqual([u2]);
    });

    it('refuses well-formed ids of no user with 400 invalidValue and writes nothing of that PATCH', async () => {
      const u = await createUser(h, 'real');
      const g = await createGroup(h, 'Strict');
      const ghost = newId();
      const res = await scim(
        h.app,
        'PATCH',
        `/Groups/${g}`,
        patch({ op: 'replace', value: { displayName: 'Renamed' } }, { op: 'add', path: 'members', value: [{ value: u }, { value: ghost }] }),
      );
      expect(expectScimError(res, 400, 'invalidValue').detail).toContain(ghost);
      // One transaction: neither the rename nor the real member was written.
      expect((await h.repo.getGroup('entra-a', g, false))!).toMatchObject({ displayName: 'Strict', version: 1 });
      expect(await memberIds(h, g)).toEqual([]);
      expectScimError(await scim(h.app, 'POST', '/Groups', { displayName: 'Bad', members: [{ value: ghost }] }), 400, 'invalidValue');
    });

    it('ignores member values that cannot name a user ("string id 1"), with a warning in the audit log', async () => {
      const u = await createUser(h, 'kept');
      const g = await createGroup(h, 'Lenient', [u]);
      const res = await scim(h.app, 'PATCH', `/Groups/${g}`, { id: g, Operations: [{ op: 'add', path: 'members', value: 'string id 1' }], schemas: [PATCH_SCHEMA] });
      expect(res.statusCode, res.body).toBe(204);
      expect(await memberIds(h, g)).toEqual([u]);
      const audit = await h.store.store.db.selectFrom('audit').select(['action', 'subject', 'detail']).where('action', '=', 'identity.membership.ignored').execute();
      expect(audit).toHaveLength(1);
      expect(audit[0]!.subject).toBe(`group:${g}`);
      expect(JSON.parse(audit[0]!.detail)).toMatchObject({ values: ['string id 1'], count: 1 });
      // Removing by such a value removes nobody.
      expect((await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'remove', path: 'members', value: [{ value: 'string id 1' }] }))).statusCode).toBe(204);
      expect(await memberIds(h, g)).toEqual([u]);
    });

    it('round-trips the display a client gives a member (display, or displayName as Microsoft sends)', async () => {
      const [u1, u2] = [await createUser(h, 'd1', { displayName: 'User One' }), await createUser(h, 'd2')];
      const g = await createGroup(h, 'Displays');
      await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'add', path: 'members', value: [{ displayName: 'new User', value: u1 }, { display: 'VP', value: u2 }] }));
      const members = json(await scim(h.app, 'GET', `/Groups/${g}`)).members;
      expect(members.map((m: { value: string; display: string }) => [m.value, m.display])).toEqual([
        [u1, 'new User'],
        [u2, 'VP'],
      ]);
      await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'remove', path: `members[value eq "${u1}"]` }), {});
      await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'add', path: 'members', value: [{ value: u1 }] }));
      // Without a client display, the user's own display name is shown.
      expect(json(await scim(h.app, 'GET', `/Groups/${g}`)).members.find((m: { value: string }) => m.value === u1).display).toBe('User One');
    });

    it('replaces the membership atomically and renames in the same transaction (Okta push)', async () => {
      const [u1, u2, u3] = [await createUser(h, 'r1'), await createUser(h, 'r2'), await createUser(h, 'r3')];
      const g = await createGroup(h, 'Push', [u1, u2]);
      const change = vi.spyOn(h.repo, 'changeGroup');
      const res = await scim(
        h.app,
        'PATCH',
        `/Groups/${g}`,
        patch({ op: 'replace', value: { id: g, displayName: 'Push renamed' } }, { op: 'replace', path: 'members', value: [{ value: u2 }, { value: u3 }] }),
      );
      expect(res.statusCode, res.body).toBe(204);
      expect(change).toHaveBeenCalledTimes(1);
      expect(change.mock.calls[0]![2]).toMatchObject({ input: { displayName: 'Push renamed' }, replace: [u2, u3] });
      expect(await memberIds(h, g)).toEqual([u2, u3].sort());
      const grp = (await h.repo.getGroup('entra-a', g, false))!;
      expect(grp).toMatchObject({ displayName: 'Push renamed', version: 2 });
      // Okta sends the same rename on every push: no write.
      await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'replace', value: { id: g, displayName: 'Push renamed' } }));
      expect((await h.repo.getGroup('entra-a', g, false))!.version).toBe(2);
    });
  });

  describe('tenants', () => {
    it("keeps each source to its own users and groups", async () => {
      const aUser = await createUser(h, 'shared.name@example.com');
      const aGroup = await createGroup(h, 'A group', [aUser]);
      // B may use the same userName: uniqueness is per source.
      const bUser = await createUser(h, 'shared.name@example.com', {}, TOKEN_B);
      const bGroup = await createGroup(h, 'B group', [], TOKEN_B);
      const asB = { token: TOKEN_B };

      expectScimError(await scim(h.app, 'GET', `/Users/${aUser}`, undefined, asB), 404);
      expectScimError(await scim(h.app, 'PUT', `/Users/${aUser}`, user('stolen'), asB), 404);
      expectScimError(await scim(h.app, 'PATCH', `/Users/${aUser}`, patch({ op: 'replace', path: 'active', value: false }), asB), 404);
      expectScimError(await scim(h.app, 'DELETE', `/Users/${aUser}`, undefined, asB), 404);
      expectScimError(await scim(h.app, 'GET', `/Groups/${aGroup}`, undefined, asB), 404);
      expectScimError(await scim(h.app, 'PATCH', `/Groups/${aGroup}`, patch({ op: 'remove', path: 'members' }), asB), 404);
      expectScimError(await scim(h.app, 'DELETE', `/Groups/${aGroup}`, undefined, asB), 404);
      // B cannot put A's user into its group.
      expectScimError(await scim(h.app, 'PATCH', `/Groups/${bGroup}`, patch({ op: 'add', path: 'members', value: [{ value: aUser }] }), asB), 400, 'invalidValue');
      expect(await memberIds(h, bGroup, 'okta-b')).toEqual([]);

      const bList = json(await scim(h.app, 'GET', '/Users', undefined, asB));
      expect(bList.Resources.map((r: { id: string }) => r.id)).toEqual([bUser]);
      expect(json(await scim(h.app, 'GET', `/Groups?filter=${encodeURIComponent(`members.value eq "${aUser}"`)}`, undefined, asB)).totalResults).toBe(0);
      // A's data is untouched.
      const a = (await h.repo.getUser('entra-a', aUser))!;
      expect(a.active).toBe(true);
      expect(a.userName).toBe('shared.name@example.com');
      expect(await memberIds(h, aGroup)).toEqual([aUser]);
    });
  });

  describe('protocol errors', () => {
    it('answers 401 with a SCIM error for a missing, malformed or unknown token', async () => {
      for (const token of [null, 'wrong-token']) {
        const res = await scim(h.app, 'GET', '/Users', undefined, { token });
        expectScimError(res, 401);
        expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
      }
      const basic = await h.app.inject({ method: 'GET', url: '/scim/v2/Users', headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } });
      expectScimError(basic as Res, 401);
      // Discovery endpoints need a token too.
      expectScimError(await scim(h.app, 'GET', '/ServiceProviderConfig', undefined, { token: null }), 401);
    });

    it('answers 400 invalidSyntax for malformed JSON', async () => {
      const res = await scim(h.app, 'POST', '/Users', undefined, { rawBody: '{"userName": "x",' });
      expectScimError(res, 400, 'invalidSyntax');
    });

    it('accepts both JSON media types with parameters', async () => {
      for (const [i, contentType] of ['application/scim+json; charset=utf-8', 'application/json; charset=UTF-8'].entries()) {
        const res = await scim(h.app, 'POST', '/Users', user(`ct${i}`), { contentType });
        expect(res.statusCode, res.body).toBe(201);
      }
    });

    it('answers 415 for a content type other than JSON', async () => {
      const res = await scim(h.app, 'POST', '/Users', undefined, { rawBody: 'userName=x', contentType: 'text/plain' });
      expectScimError(res, 415);
    });

    it('answers 413 with a SCIM error for a body over the limit', async () => {
      const small = await harness(backend, { bodyLimit: 2048 });
      try {
        const res = await scim(small.app, 'POST', '/Users', user('big', { displayName: 'x'.repeat(5000) }));
        expectScimError(res, 413);
      } finally {
        await small.close();
      }
    });

    it('answers 404 with a SCIM error for unknown endpoints and routes case-insensitively', async () => {
      expectScimError(await scim(h.app, 'GET', '/Nope'), 404);
      expectScimError(await scim(h.app, 'POST', '/Bulk', { schemas: [] }), 501);
      await createUser(h, 'routing');
      expect((await scim(h.app, 'GET', '/users')).statusCode).toBe(200);
      expect((await scim(h.app, 'GET', '/Users/?filter=userName%20eq%20%22routing%22')).statusCode).toBe(200);
    });

    it('answers 500 (not 404) when the store fails, without leaking the cause', async () => {
      const id = await createUser(h, 'fragile');
      vi.spyOn(h.repo, 'getUser').mockRejectedValue(new Error('connection terminated: secret-host:5432'));
      vi.spyOn(h.repo, 'setActive').mockRejectedValue(new Error('connection terminated: secret-host:5432'));
      for (const res of [
        await scim(h.app, 'GET', `/Users/${id}`),
        await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'active', value: false })),
        await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'displayName', value: 'x' })),
      ]) {
        const body = expectScimError(res, 500);
        expect(body.detail).not.toContain('secret-host');
      }
      expect((await h.repo.listUsers('entra-a', { field: 'id', op: 'eq', value: id }, 1, 1)).items[0]!.active).toBe(true);
    });

    it('keeps its parsers and error format inside /scim/v2', async () => {
      const ok = await h.app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'application/json' }, payload: '{"a":1}' });
      expect(ok.statusCode).toBe(200);
      expect(ok.json()).toEqual({ echoed: { a: 1 } });
      const bad = await h.app.inject({ method: 'POST', url: '/echo', headers: { 'content-type': 'application/json' }, payload: '{"a":' });
      expect(bad.statusCode).toBe(400);
      expect(bad.json()).toHaveProperty('rootError');
      const missing = await h.app.inject({ method: 'GET', url: '/elsewhere' });
      expect(missing.json()).toEqual({ rootError: 'not found' });
    });

    it('limits each token to its rate and answers 429 with Retry-After and SailPoint headers', async () => {
      const limited = await harness(backend, { sources: sources({ rateLimitPerSecond: 2 }) });
      try {
        const r1 = await scim(limited.app, 'GET', '/Users');
        expect(r1.statusCode).toBe(200);
        expect(r1.headers['x-rate-limit-limit']).toBe('2');
        await scim(limited.app, 'GET', '/Users');
        const r3 = await scim(limited.app, 'GET', '/Users');
        expectScimError(r3, 429);
        expect(Number(r3.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        expect(r3.headers['x-rate-limit-limit']).toBe('2');
        expect(r3.headers['x-rate-limit-remaining']).toBe('0');
        expect(Number(r3.headers['x-rate-limit-reset'])).toBeGreaterThanOrEqual(1);
        expect(r3.headers['x-rate-limit-retry-after-seconds']).toBe(r3.headers['retry-after']);
        // The other source has its own bucket.
        expect((await scim(limited.app, 'GET', '/Users', undefined, { token: TOKEN_B })).statusCode).toBe(200);
      } finally {
        await limited.close();
      }
    });
  });

  describe('discovery', () => {
    it('serves ServiceProviderConfig, Schemas and ResourceTypes with the lockstep extension', async () => {
      const spc = await scim(h.app, 'GET', '/ServiceProviderConfig');
      expect(spc.statusCode).toBe(200);
      expect(spc.headers['content-type']).toMatch(/^application\/scim\+json/);
      expect(json(spc)).toMatchObject({ patch: { supported: true }, filter: { supported: true }, bulk: { supported: false } });

      const schemas = json(await scim(h.app, 'GET', '/Schemas'));
      const ids = schemas.Resources.map((s: { id: string }) => s.id);
      expect(ids).toEqual(expect.arrayContaining(['urn:ietf:params:scim:schemas:core:2.0:User', 'urn:ietf:params:scim:schemas:core:2.0:Group', ENTERPRISE, LOCKSTEP]));
      expect(schemas.itemsPerPage).toBe(schemas.Resources.length);

      const ls = await scim(h.app, 'GET', `/Schemas/${LOCKSTEP}`);
      expect(ls.statusCode).toBe(200);
      const attrs = Object.fromEntries(json(ls).attributes.map((a: { name: string }) => [a.name, a]));
      for (const [name, type] of [['terminationDate', 'dateTime'], ['contractEndDate', 'dateTime'], ['site', 'string']]) {
        expect(attrs[name!]).toMatchObject({ type, required: false, multiValued: false });
        expect(attrs[name!].description.length).toBeGreaterThan(10);
      }
      expect(json(ls).meta.location).toBe(`${SCIM_BASE}/Schemas/${LOCKSTEP}`);

      const rt = json(await scim(h.app, 'GET', '/ResourceTypes/User'));
      expect(rt.endpoint).toBe('/Users');
      expect(rt.schemaExtensions).toEqual(
        expect.arrayContaining([
          { schema: ENTERPRISE, required: false },
          { schema: LOCKSTEP, required: false },
        ]),
      );
      expect(json(await scim(h.app, 'GET', '/ResourceTypes')).totalResults).toBe(2);
      expectScimError(await scim(h.app, 'GET', '/Schemas/urn:nope'), 404);
    });

    it('states truthfully what is supported and publishes canonical values (advisory)', async () => {
      const spc = json(await scim(h.app, 'GET', '/ServiceProviderConfig'));
      expect(spc).toMatchObject({
        patch: { supported: true },
        bulk: { supported: false },
        filter: { supported: true, maxResults: 1000 },
        changePassword: { supported: false },
        sort: { supported: false },
        etag: { supported: true },
      });
      expect(spc.authenticationSchemes[0]).toMatchObject({ type: 'oauthbearertoken' });
      const group = json(await scim(h.app, 'GET', '/ResourceTypes/Group'));
      expect(group).toMatchObject({ name: 'Group', endpoint: '/Groups', schema: GROUP_SCHEMA });
      const userSchema = json(await scim(h.app, 'GET', '/Schemas/urn:ietf:params:scim:schemas:core:2.0:User'));
      const emails = userSchema.attributes.find((a: { name: string }) => a.name === 'emails');
      expect(emails.subAttributes.find((a: { name: string }) => a.name === 'type').canonicalValues).toEqual(['work', 'home', 'other']);
      // Every schema the list names can be fetched by id.
      for (const s of json(await scim(h.app, 'GET', '/Schemas')).Resources) expect((await scim(h.app, 'GET', `/Schemas/${s.id}`)).statusCode).toBe(200);
    });
  });

  describe('attributes and excludedAttributes', () => {
    it('selects sub-attributes, extension attributes and filtered values', async () => {
      const id = await createUser(h, 'proj', {
        name: { givenName: 'Pro', familyName: 'Jection' },
        emails: [
          { value: 'w@x', type: 'work' },
          { value: 'h@x', type: 'home' },
        ],
        [ENTERPRISE]: { department: 'Ops', employeeNumber: '9' },
      });
      const get = async (q: string) => json(await scim(h.app, 'GET', `/Users/${id}?${q}`));
      expect(await get('attributes=name.givenName,emails.value')).toEqual({
        schemas: expect.any(Array),
        id,
        name: { givenName: 'Pro' },
        emails: [{ value: 'w@x' }, { value: 'h@x' }],
      });
      expect(await get(`attributes=${encodeURIComponent(`${ENTERPRISE}:department`)}`)).toEqual({ schemas: expect.any(Array), id, [ENTERPRISE]: { department: 'Ops' } });
      expect((await get(`attributes=${encodeURIComponent('emails[type eq "home"]')}`)).emails).toEqual([{ value: 'h@x', type: 'home' }]);
      const without = await get(`excludedAttributes=${encodeURIComponent(`${ENTERPRISE},groups,emails.type`)}`);
      expect(without[ENTERPRISE]).toBeUndefined();
      expect(without.schemas).not.toContain(ENTERPRISE);
      expect(without.groups).toBeUndefined();
      expect(without.emails).toEqual([{ value: 'w@x' }, { value: 'h@x' }]);
      expect(without.id).toBe(id);
      // id and schemas cannot be excluded.
      expect(await get('excludedAttributes=id,schemas,meta,name,emails,userName,active,groups,' + encodeURIComponent(ENTERPRISE))).toEqual({ schemas: [USER_SCHEMA], id });
    });
  });

  describe('ETags', () => {
    it('returns meta.version as ETag and honours If-Match on PUT, PATCH and DELETE', async () => {
      const created = await scim(h.app, 'POST', '/Users', user('etag'));
      const id = json(created).id as string;
      expect(created.headers.etag).toBe('W/"1"');
      expect((await scim(h.app, 'GET', `/Users/${id}`)).headers.etag).toBe('W/"1"');
      const stale = { headers: { 'if-match': 'W/"7"' } };
      expectScimError(await scim(h.app, 'PUT', `/Users/${id}`, user('etag', { displayName: 'x' }), stale), 412);
      expectScimError(await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'active', value: false }), stale), 412);
      expectScimError(await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'displayName', value: 'y' }), stale), 412);
      expectScimError(await scim(h.app, 'DELETE', `/Users/${id}`, undefined, stale), 412);
      expect((await h.repo.getUser('entra-a', id))!).toMatchObject({ version: 1, active: true, displayName: null });

      const put = await scim(h.app, 'PUT', `/Users/${id}`, user('etag', { displayName: 'x' }), { headers: { 'if-match': '"1"' } });
      expect(put.statusCode, put.body).toBe(200);
      expect(put.headers.etag).toBe('W/"2"');
      const p = await scim(h.app, 'PATCH', `/Users/${id}`, patch({ op: 'replace', path: 'active', value: false }), { headers: { 'if-match': 'W/"1", W/"2"' } });
      expect(p.statusCode, p.body).toBe(204);
      expect(p.headers.etag).toBe('W/"3"');
      expect((await scim(h.app, 'DELETE', `/Users/${id}`, undefined, { headers: { 'if-match': '*' } })).statusCode).toBe(204);

      const g = await createGroup(h, 'etag group');
      expectScimError(await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'replace', path: 'displayName', value: 'n' }), stale), 412);
      expectScimError(await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'add', path: 'members', value: [] }), stale), 412);
      expectScimError(await scim(h.app, 'PUT', `/Groups/${g}`, { displayName: 'n' }, stale), 412);
      expectScimError(await scim(h.app, 'DELETE', `/Groups/${g}`, undefined, stale), 412);
      const ok = await scim(h.app, 'PATCH', `/Groups/${g}`, patch({ op: 'replace', path: 'displayName', value: 'n' }), { headers: { 'if-match': 'W/"1"' } });
      expect(ok.statusCode, ok.body).toBe(204);
      expect(ok.headers.etag).toBe('W/"2"');
    });
  });
});
