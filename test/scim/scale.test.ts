import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { storeOn, type Store } from '../../src/store/db.ts';
import { IdentityRepo, type UserInput } from '../../src/store/identities.ts';
import { freshStore, type TestStore } from '../helpers/stores.ts';
import { TOKEN_A, buildScimApp, json, patch, scim } from './helpers.ts';

/**
 * Scale: paging through 100,000 users (SailPoint / One Identity aggregation) and membership
 * changes on a 50,000-member group, on SQLite. Setup writes through the repository's bulk
 * import, in batches, each in one transaction.
 */

const ctx = { actor: 'test', correlationId: 'scale' };

function person(i: number): UserInput {
  const userName = `user${String(i).padStart(6, '0')}@scale.example`;
  return {
    userName,
    externalId: `ext-${i}`,
    displayName: `User ${i}`,
    active: true,
    email: userName,
    emails: [{ value: userName, type: 'work', primary: true }],
    profile: { givenName: 'Scale', familyName: `F${i}`, email: userName, roles: [], attributes: {} },
    resource: { schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'], userName, displayName: `User ${i}`, emails: [{ value: userName, type: 'work', primary: true }] },
  };
}

async function seed(repo: IdentityRepo, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 10_000) ids.push(...(await repo.importUsers('entra-a', Array.from({ length: Math.min(10_000, n - i) }, (_, j) => person(i + j)), ctx)));
  return ids;
}

/** Records every statement and how many rows it returned. */
class QueryLog implements KyselyPlugin {
  readonly entries: Array<{ sql: string; rows: number }> = [];
  private readonly pending = new WeakMap<object, string>();
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    this.pending.set(args.queryId, args.node.kind);
    return args.node;
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    this.entries.push({ sql: this.pending.get(args.queryId) ?? '?', rows: args.result.rows.length });
    return args.result;
  }
}

describe('SCIM at scale (SQLite)', () => {
  describe('paging through 100,000 users', () => {
    let t: TestStore;
    let app: Awaited<ReturnType<typeof buildScimApp>>;
    let repo: IdentityRepo;
    let ids: string[];

    beforeAll(async () => {
      t = await freshStore('sqlite');
      repo = new IdentityRepo(t.store);
      ids = await seed(repo, 100_000);
      app = await buildScimApp({ identities: repo });
    }, 120_000);

    afterAll(async () => {
      await app?.close();
      await t?.cleanup();
    });

    it('returns every user exactly once, in a stable order, while users are added and changed', async () => {
      const seen = new Map<string, number>();
      const pageSize = 1000;
      let added = 0;
      for (let start = 1; ; start += pageSize) {
        const res = await scim(app, 'GET', `/Users?startIndex=${start}&count=${pageSize}&attributes=userName`);
        expect(res.statusCode, res.body).toBe(200);
        const page = json(res);
        expect(page.startIndex).toBe(start);
        expect(page.itemsPerPage).toBe(page.Resources.length);
        expect(page.totalResults).toBe(100_000 + added);
        for (const r of page.Resources as Array<{ id: string }>) seen.set(r.id, (seen.get(r.id) ?? 0) + 1);
        if (page.Resources.length < pageSize) break;
        // Concurrent provisioning: a new user (lands at the end) and a deactivation (does not move anyone).
        if (start % 20_000 === 1) {
          await scim(app, 'POST', '/Users', { userName: `late${start}@scale.example` });
          added++;
          await scim(app, 'PATCH', `/Users/${ids[start + 5]}`, patch({ op: 'replace', path: 'active', value: false }));
        }
      }
      const dup = [...seen].filter(([, n]) => n > 1);
      expect(dup).toEqual([]);
      const missing = ids.filter((id) => !seen.has(id));
      expect(missing).toEqual([]);
      expect(seen.size).toBe(100_000 + added);
    }, 60_000);

    it('answers indexed filters on 100,000 users without scanning, and refuses scans', async () => {
      const list = vi.spyOn(repo, 'listUsers');
      const q = async (filter: string) => json(await scim(app, 'GET', `/Users?filter=${encodeURIComponent(filter)}&count=5`));
      expect((await q('userName eq "USER054321@scale.example"')).Resources[0].id).toBe(ids[54_321]);
      expect((await q('emails[type eq "work"].value eq "user054321@scale.example"')).totalResults).toBe(1);
      expect((await q('userName sw "user05432"')).totalResults).toBe(10);
      expect((await q('name.familyName eq "f99999"')).totalResults).toBe(1);
      const co = await scim(app, 'GET', `/Users?filter=${encodeURIComponent('userName co "4321"')}`);
      expect(co.statusCode).toBe(400);
      expect(json(co).scimType).toBe('invalidFilter');
      expect((await q('userName sw "user0543" and userName co "21"')).totalResults).toBe(1);
      expect(list).toHaveBeenCalledTimes(6);
    });
  });

  describe('a 50,000-member group', () => {
    let t: TestStore;
    let app: Awaited<ReturnType<typeof buildScimApp>>;
    let repo: IdentityRepo;
    let log: QueryLog;
    let ids: string[];
    let group: string;

    beforeAll(async () => {
      t = await freshStore('sqlite');
      log = new QueryLog();
      const logged: Store = storeOn(t.store.db.withPlugin(log), 'sqlite');
      repo = new IdentityRepo(logged);
      ids = await seed(repo, 50_010);
      group = (await repo.createGroup('entra-a', { displayName: 'Everyone', resource: {} }, ids.slice(0, 50_000), ctx, { withMembers: false })).id;
      app = await buildScimApp({ identities: repo });
    }, 120_000);

    afterAll(async () => {
      await app?.close();
      await t?.cleanup();
    });

    it('adds and removes a member without reading or rewriting the group', async () => {
      const getGroup = vi.spyOn(repo, 'getGroup');
      const spare = ids[50_005]!;
      const member = ids[123]!;
      log.entries.length = 0;
      const add = await scim(app, 'PATCH', `/Groups/${group}`, patch({ op: 'add', path: 'members', value: [{ value: spare }] }));
      expect(add.statusCode, add.body).toBe(204);
      const remove = await scim(app, 'PATCH', `/Groups/${group}`, patch({ op: 'remove', path: `members[value eq "${member}"]` }, { op: 'Remove', path: 'members', value: [{ value: spare }] }));
      expect(remove.statusCode, remove.body).toBe(204);
      expect(getGroup).not.toHaveBeenCalled();
      // Structural: a handful of statements, none returning more than a few rows.
      expect(log.entries.length).toBeLessThan(40);
      expect(Math.max(...log.entries.map((e) => e.rows))).toBeLessThanOrEqual(2);
      expect(log.entries.reduce((n, e) => n + e.rows, 0)).toBeLessThan(40);

      const members = await t.store.db.selectFrom('memberships').select((eb) => eb.fn.countAll<number>().as('n')).where('group_id', '=', group).executeTakeFirstOrThrow();
      expect(Number(members.n)).toBe(49_999);
      expect((await repo.loadIdentity(member))!.groups).toEqual([]);
      expect((await repo.loadIdentity(spare))!.groups).toEqual([]);
    });

    it('renames without loading members (members are marked dirty in one statement per group)', async () => {
      log.entries.length = 0;
      const res = await scim(app, 'PATCH', `/Groups/${group}`, patch({ op: 'replace', value: { id: group, displayName: 'Everyone (renamed)' } }));
      expect(res.statusCode, res.body).toBe(204);
      // The only large result is the dirty marks' RETURNING (who must be reconciled); no member list is read.
      const large = log.entries.filter((e) => e.rows > 10);
      expect(large).toHaveLength(1);
      expect(large[0]!.sql).toBe('InsertQueryNode');
      expect((await repo.loadIdentity(ids[7]!))!.groups).toEqual([{ id: group, displayName: 'Everyone (renamed)' }]);
    });

    it('answers GET /Groups with excludedAttributes=members without reading members', async () => {
      log.entries.length = 0;
      const res = await scim(app, 'GET', `/Groups?excludedAttributes=members&filter=${encodeURIComponent('displayName eq "everyone (renamed)"')}`);
      expect(json(res)).toMatchObject({ totalResults: 1, Resources: [{ id: group }] });
      expect(json(res).Resources[0].members).toBeUndefined();
      expect(Math.max(...log.entries.map((e) => e.rows))).toBe(1);
    });
  });
});
