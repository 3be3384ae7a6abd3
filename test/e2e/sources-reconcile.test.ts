import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import nock from 'nock';
import { stringify } from 'yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { user, ctx } from '../helpers/fixtures.ts';
import { waitFor } from '../helpers/stack.ts';
import { OKTA_SECRET, oktaGroup, oktaHook, oktaSource, oktaUser, startSourceStack, type SourceStack } from '../sources/helpers.ts';

/**
 * Drift (lock system vs. lock_state, reported and repaired), the whole-population dry run over
 * HTTP and on the command line, and one person fed by two sources with a leaver in the
 * authoritative one — through a real lockstep, Redis and the iLOQ simulator.
 */

const CLI = new URL('../../src/cli.ts', import.meta.url).pathname;
const hookHeaders = { 'content-type': 'application/json', authorization: OKTA_SECRET };
const CR = oktaGroup('00gcr000000000000001', 'Control Room');

let s: SourceStack | undefined;
beforeEach(() => {
  nock.cleanAll();
  nock.disableNetConnect();
  nock.enableNetConnect(/127\.0\.0\.1|localhost/);
});
afterEach(async () => {
  await s?.stop();
  s = undefined;
  nock.cleanAll();
  nock.enableNetConnect();
});

function oktaNow(org: string, id: string, u: object, groups: object[] = []) {
  nock(org).get(`/api/v1/users/${id}`).reply(200, u).get(`/api/v1/users/${id}/groups`).reply(200, groups);
}

describe('lock-system drift', () => {
  it('reports access changed by hand in iLOQ and repairs it through the normal reconcile', async () => {
    s = await startSourceStack({ sources: [oktaSource()] });
    const ann = '00uann0000000000001';
    oktaNow('https://acme.okta.com', ann, oktaUser(ann), [CR]);
    await s.post('/hooks/okta/okta-prod', oktaHook([{ type: 'user.lifecycle.create', user: ann }]), hookHeaders);
    const personId = (await waitFor(() => s!.personOf('okta-prod', ann), { what: 'person' }))!;
    await waitFor(() => s!.keyAccess(personId)[0]?.includes('Control room'), { what: 'grant' });
    await waitFor(async () => (await s!.admin('GET', `/persons/${personId}`)).body.operations.every((o: { state: string }) => o.state === 'accepted'), { what: 'settled' });

    // A locksmith removes the control room and adds the main entrance by hand.
    const key = s.keys(personId)[0]!.FNKey_ID;
    s.sim.state.deleteAccess(key, s.sim.state.findAccess('Control room')!.SecurityAccess_ID);
    s.sim.state.addAccess(key, s.sim.state.findAccess('Main entrance')!.SecurityAccess_ID);
    expect(s.keyAccess(personId)).toEqual([['Main entrance']]);

    expect((await s.admin('POST', '/drift/check', s.auditorToken)).status).toBe(403);
    const check = await s.admin('POST', '/drift/check');
    expect(check.status).toBe(200);
    expect(check.body.results[0]).toMatchObject({ lockSystem: 'iloq', checked: 1, drifted: 1 });
    expect(check.body.results[0].items[0]).toMatchObject({ personId, expected: ['Control room'], missing: ['Control room'], extra: ['Main entrance'], repaired: true });

    await waitFor(() => JSON.stringify(s!.keyAccess(personId)) === JSON.stringify([['Control room']]), { what: 'repaired on the lock system' });
    const drift = await s.admin('GET', '/drift', s.auditorToken);
    expect(drift.status).toBe(200);
    expect(drift.body.lockSystems[0]).toMatchObject({ lockSystem: 'iloq', summary: { checked: 1, drifted: 1 } });
    expect(drift.body.lockSystems[0].items[0]).toMatchObject({ personId, repairedAt: expect.any(String) });
    expect((await s.admin('GET', '/drift', s.croToken)).status).toBe(403);
    expect((await s.get('/api/v1/drift')).status).toBe(401);
    const audit = (await s.admin('GET', `/audit?person=${personId}&action=drift.lock_system`)).body.items;
    expect(audit[0].detail).toMatchObject({ lockSystem: 'iloq', recorded: ['Control room'], observed: ['Main entrance'] });

    // Checked again: nothing left.
    await waitFor(async () => (await s!.admin('GET', `/persons/${personId}`)).body.operations.every((o: { state: string }) => o.state === 'accepted' || o.state === 'superseded'), { what: 'repair applied' });
    const again = await s.admin('POST', '/drift/check?lockSystem=iloq');
    expect(again.body.results[0]).toMatchObject({ drifted: 0 });
  });
});

describe('reconcile everyone: dry run and real', () => {
  it('POST /api/v1/reconcile?dryRun=true and `lockstep reconcile --dry-run` print the plan and apply nothing', async () => {
    s = await startSourceStack({ sources: [oktaSource()], workers: false });
    const ids = s.rt.identities;
    const a = await ids.createUser('hr', user('ann@example.com'), ctx);
    const b = await ids.createUser('hr', user('bo@example.com', { profile: { roles: [], attributes: { site: 'Plant A' } } }), ctx);
    await ids.createUser('hr', user('cy@example.com', { active: false }), ctx);
    await ids.createGroup('hr', { displayName: 'Control Room', resource: {} }, [a.id], ctx);
    const dirtyBefore = (await s.rt.store.db.selectFrom('dirty').selectAll().execute()).length;
    const auditBefore = (await s.rt.store.db.selectFrom('audit_head').select('seq').executeTakeFirstOrThrow()).seq;

    const plan = await s.admin('POST', '/reconcile?dryRun=true', s.auditorToken);
    expect(plan.status).toBe(200);
    expect(plan.body).toMatchObject({ dryRun: true, persons: 3, personsWithChanges: 2, operations: { grant: 2, revoke: 0, leave: 0, reinstate: 0 } });
    const byPerson = Object.fromEntries(plan.body.items.map((i: { personId: string; operations: unknown }) => [i.personId, i.operations]));
    expect(byPerson[a.id]).toEqual([{ lockSystem: 'iloq', kind: 'grant', access: ['Control room'] }]);
    expect(byPerson[b.id]).toEqual([{ lockSystem: 'iloq', kind: 'grant', access: ['Main entrance'] }]);
    expect(plan.body.tasks).toMatchObject({ leaversInPlan: 0 });
    // Nothing was applied: no operations, dirty marks as before, only the admin action audited.
    expect(await s.rt.store.db.selectFrom('operations').selectAll().execute()).toEqual([]);
    expect((await s.rt.store.db.selectFrom('dirty').selectAll().execute()).length).toBe(dirtyBefore);
    const auditAfter = (await s.rt.store.db.selectFrom('audit').select('action').where('seq', '>', auditBefore).execute()).map((r) => r.action);
    expect(auditAfter).toEqual(['admin.reconcile.dry_run']);
    expect((await s.admin('POST', '/reconcile?dryRun=maybe')).status).toBe(400);

    // The same on the command line, against the same database.
    const cfgFile = join(dirname(s.t.storeConfig.sqlite.path), 'lockstep.yaml');
    writeFileSync(
      cfgFile,
      stringify({
        store: s.t.storeConfig,
        lockSystems: s.config.lockSystems.map((l) => ({ id: l.id, kind: l.kind, iloq: (l as { iloq: unknown }).iloq })),
        policy: s.config.policy,
      }),
    );
    const r = spawnSync(process.execPath, [CLI, 'reconcile', '--dry-run', '--config', cfgFile], { encoding: 'utf8', timeout: 30_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/3 person\(s\) known, 2 with changes/);
    expect(r.stdout).toMatch(/operations: 2 grant, 0 revoke, 0 leave, 0 reinstate/);
    expect(r.stdout).toContain(`person ${a.id} (ann@example.com @ hr)`);
    expect(r.stdout).toMatch(/grant\s+iloq: Control room/);
    expect(r.stdout).toMatch(/nothing was applied/);
    const json = spawnSync(process.execPath, [CLI, 'reconcile', '--dry-run', '--json', '--config', cfgFile], { encoding: 'utf8', timeout: 30_000 });
    expect(JSON.parse(json.stdout)).toMatchObject({ dryRun: true, personsWithChanges: 2 });
    expect(await s.rt.store.db.selectFrom('operations').selectAll().execute()).toEqual([]);

    // Without dryRun: admins only; everyone is marked for reconciliation and every source resynced.
    expect((await s.admin('POST', '/reconcile', s.auditorToken)).status).toBe(403);
    const real = await s.admin('POST', '/reconcile');
    expect(real.status).toBe(202);
    expect(real.body).toMatchObject({ status: 'queued', personsMarked: 3, sourcesToReconcile: ['okta-prod'] });
    expect((await s.rt.store.db.selectFrom('dirty').selectAll().execute()).length).toBe(3);
    const st = await s.rt.store.db.selectFrom('source_state').select('resync').where('source_id', '=', 'okta-prod').executeTakeFirst();
    expect(st?.resync).toBe('full');
    const cli = spawnSync(process.execPath, [CLI, 'reconcile', '--config', cfgFile], { encoding: 'utf8', timeout: 30_000 });
    expect(cli.status).toBe(0);
    expect(cli.stdout).toMatch(/marked 3 person\(s\) for reconciliation/);
  });
});

describe('one person, two sources (identity.matchOn)', () => {
  it('links an HR record to the IT person by employee number; a leaver in the authoritative HR source wins', async () => {
    const HR = 'https://hr.okta.com';
    const IT = 'https://it.okta.com';
    s = await startSourceStack({
      sources: [oktaSource('it', {}, { orgUrl: IT }), oktaSource('hr', {}, { orgUrl: HR, hook: { secret: 'hr-hook-secret-0123456789abcdef' } })],
      identity: { matchOn: 'employeeNumber', authoritativeSource: 'hr' },
    });
    const itId = '00uitdan000000000001';
    const hrId = '00uhrdan000000000001';
    oktaNow(IT, itId, oktaUser(itId, { employeeNumber: 'E-1042', login: 'dan@it.example' }), [CR]);
    await s.post('/hooks/okta/it', oktaHook([{ type: 'user.lifecycle.create', user: itId }]), hookHeaders);
    const personId = (await waitFor(() => s!.personOf('it', itId), { what: 'IT person' }))!;
    await waitFor(() => s!.keyAccess(personId)[0]?.includes('Control room'), { what: 'grant from the IT groups' });

    // HR knows the same employee: linked, not a second person (one person in iLOQ).
    const hrHeaders = { 'content-type': 'application/json', authorization: 'hr-hook-secret-0123456789abcdef' };
    oktaNow(HR, hrId, oktaUser(hrId, { employeeNumber: 'e-1042 ', login: 'dan@hr.example', site: 'Plant A' }));
    await s.post('/hooks/okta/hr', oktaHook([{ type: 'user.lifecycle.create', user: hrId }]), hrHeaders);
    await waitFor(async () => (await s!.personOf('hr', hrId)) === personId, { what: 'HR record linked to the IT person' });
    // HR's attribute (site) now applies to the person too.
    await waitFor(() => s!.keyAccess(personId)[0]?.length === 2, { what: 'grant from the HR attribute' });
    expect(await s.rt.store.db.selectFrom('persons').select('id').execute()).toHaveLength(1);

    // HR terminates; IT still says active. The authoritative leaver wins.
    oktaNow(HR, hrId, oktaUser(hrId, { employeeNumber: 'E-1042', status: 'DEPROVISIONED', login: 'dan@hr.example', site: 'Plant A' }));
    await s.post('/hooks/okta/hr', oktaHook([{ type: 'user.lifecycle.deactivate', user: hrId }]), hrHeaders);
    await waitFor(async () => (await s!.admin('GET', `/persons/${personId}`)).body.actual?.iloq?.left === true, { what: 'leave' });
    expect(s.keyAccess(personId)).toEqual([[]]);
    // An IT update afterwards does not bring access back.
    oktaNow(IT, itId, oktaUser(itId, { employeeNumber: 'E-1042', login: 'dan@it.example' }), [CR]);
    await s.post('/hooks/okta/it', oktaHook([{ type: 'user.account.update_profile', user: itId }]), hookHeaders);
    await waitFor(async () => (await s!.rt.store.db.selectFrom('source_hints').select('state').where('source_id', '=', 'it').execute()).every((h) => h.state === 'done'), { what: 'IT hint done' });
    await new Promise((r) => setTimeout(r, 500));
    expect((await s.admin('GET', `/persons/${personId}`)).body.identity.active).toBe(false);
    expect(s.keyAccess(personId)).toEqual([[]]);
  });
});
