import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { reconcileAllIfPolicyChanged } from '../../src/reconcile/policy-change.ts';
import { IdentityRepo } from '../../src/store/identities.ts';
import { ctx, testConfig, user } from '../helpers/fixtures.ts';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';

describe.each(BACKENDS)('policy change at start on %s', (backend) => {
  let t: TestStore;
  beforeEach(async () => {
    t = await freshStore(backend);
  });
  afterEach(() => t.cleanup());

  it('marks every known person (including deleted ones with lock state) dirty when the policy changed, once', async () => {
    const repo = new IdentityRepo(t.store);
    const a = await repo.createUser('s', user('a'), ctx);
    const b = await repo.createUser('s', user('b'), ctx);
    await t.store.db.insertInto('lock_state').values({ lock_system_id: 'iloq', person_id: 'gone', access: '["Control room"]', departed: 0, remote_person_id: null, updated_at: 1 }).execute();
    await t.store.db.deleteFrom('dirty').execute();

    const cfg = testConfig();
    expect(await reconcileAllIfPolicyChanged(t.store, cfg, 0)).toEqual({ changed: true, marked: 3 });
    const dirty = (await t.store.db.selectFrom('dirty').select('person_id').orderBy('person_id').execute()).map((d) => d.person_id);
    expect(dirty).toEqual([a.id, b.id, 'gone'].sort());
    await t.store.db.deleteFrom('dirty').execute();

    expect(await reconcileAllIfPolicyChanged(t.store, cfg, 0)).toEqual({ changed: false, marked: 0 });
    expect(await t.store.db.selectFrom('dirty').selectAll().execute()).toEqual([]);

    const changed = testConfig();
    changed.policy.rules[0]!.grant[0]!.access.push('Server room');
    expect((await reconcileAllIfPolicyChanged(t.store, changed, 0)).changed).toBe(true);
    const audit = await t.store.db.selectFrom('audit').select(['action']).where('action', 'like', 'policy.%').orderBy('seq').execute();
    expect(audit.map((r) => r.action)).toEqual(['policy.first_run', 'policy.changed']);
  });
});
