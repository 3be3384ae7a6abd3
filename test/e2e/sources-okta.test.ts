import nock from 'nock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifyAudit } from '../../src/audit/audit.ts';
import { waitFor } from '../helpers/stack.ts';
import { OKTA_ORG, OKTA_SECRET, oktaGroup, oktaHook, oktaSource, oktaUser, startSourceStack, type SourceStack } from '../sources/helpers.ts';

/**
 * Okta event hooks through the daemon: a real lockstep (SQLite, real Redis, the iLOQ simulator
 * over HTTP) receives deliveries on /hooks/okta/{sourceId}; the Okta API that confirms each hint
 * is nock at the HTTP layer (payload shapes from Okta's documentation, as in test/idp).
 */

const hookHeaders = { 'content-type': 'application/json', authorization: OKTA_SECRET };

/** GET /api/v1/users/{id} and its groups, as Okta answers now. */
function oktaNow(id: string, user: object, groups: object[] = [], opts: { persist?: boolean; times?: number } = {}) {
  const scope = nock(OKTA_ORG);
  if (opts.persist) scope.persist();
  scope.get(`/api/v1/users/${id}`).times(opts.times ?? 1).reply(200, user).get(`/api/v1/users/${id}/groups`).times(opts.times ?? 1).reply(200, groups);
  return scope;
}

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

async function hintRows(sourceId: string) {
  return s!.rt.store.db.selectFrom('source_hints').selectAll().where('source_id', '=', sourceId).orderBy('seq').execute();
}

describe('Okta event hook → confirmation → iLOQ', () => {
  it('verifies the hook, grants on a joiner event and revokes on the leaver event', async () => {
    s = await startSourceStack({ sources: [oktaSource()] });
    // Okta's one-time verification GET.
    const v = await s.get('/hooks/okta/okta-prod', { 'x-okta-verification-challenge': 'chal-VzJ7_x9' });
    expect(v.status).toBe(200);
    expect(v.body).toEqual({ verification: 'chal-VzJ7_x9' });

    const ada = '00uada0000000000001';
    oktaNow(ada, oktaUser(ada, { site: 'Plant A' }), [oktaGroup('00gcr000000000000001', 'Control Room')]);
    const started = Date.now();
    const res = await s.post('/hooks/okta/okta-prod', oktaHook([{ type: 'user.lifecycle.activate', user: ada }]), hookHeaders);
    expect(res.status).toBe(200);
    expect(res.text).toBe('');
    expect(Date.now() - started).toBeLessThan(3000); // Okta's deadline

    const personId = await waitFor(() => s!.personOf('okta-prod', ada), { what: 'person from the confirmed hint' });
    await waitFor(() => s!.keyAccess(personId!)[0]?.length === 2, { what: 'grants on the key' });
    expect(s.keyAccess(personId!)[0]!.sort()).toEqual(['Control room', 'Main entrance']);
    await waitFor(async () => (await hintRows('okta-prod')).every((h) => h.state === 'done'), { what: 'hint marked done' });
    expect((await hintRows('okta-prod')).map((h) => [h.kind, h.state])).toEqual([['user-upsert', 'done']]);

    // Leaver: the hook says deactivated; Okta's API confirms DEPROVISIONED.
    oktaNow(ada, oktaUser(ada, { status: 'DEPROVISIONED', site: 'Plant A' }), [oktaGroup('00gcr000000000000001', 'Control Room')]);
    expect((await s.post('/hooks/okta/okta-prod', oktaHook([{ type: 'user.lifecycle.deactivate', user: ada }]), hookHeaders)).status).toBe(200);
    await waitFor(async () => (await s!.admin('GET', `/persons/${personId}`)).body.actual?.iloq?.left === true, { what: 'leave accepted' });
    expect(s.keyAccess(personId!)).toEqual([[]]);
    const view = await s.admin('GET', `/persons/${personId}`);
    expect(view.body.identity).toMatchObject({ sourceId: 'okta-prod', active: false, userName: `${ada}@acme.example` });
    const actions = ((await s.admin('GET', `/audit?person=${personId}&limit=1000`)).body.items as Array<{ action: string; actor: string }>).map((a) => a.action);
    expect(actions).toEqual(expect.arrayContaining(['identity.user.create', 'identity.membership.add', 'identity.user.deactivate', 'plan', 'operation.accepted']));
    expect((await verifyAudit(s.rt.store.db)).ok).toBe(true);
    expect(nock.pendingMocks()).toEqual([]);

    // Per-source metrics: deliveries by outcome (this process), hints still unconfirmed (database).
    const metrics = await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${s.auditorToken}` } }).then((r) => r.text());
    expect(metrics).toMatch(/lockstep_source_hooks_total\{source="okta-prod",outcome="handshake"\} 1\n/);
    expect(metrics).toMatch(/lockstep_source_hooks_total\{source="okta-prod",outcome="accepted"\} 2\n/);
    expect(metrics).toMatch(/lockstep_source_hints_pending\{source="okta-prod"\} 0\n/);
    expect(metrics).not.toMatch(/lockstep_source_oldest_pending_hint_timestamp_seconds\{/);
  });

  it('stores a redelivered event once (dedupe on its key) and confirms it once', async () => {
    s = await startSourceStack({ sources: [oktaSource()] });
    const bob = '00ubob0000000000001';
    const uuid = '5b0f2c1e-6f0e-4d7c-9a53-1f2d3c4b5a60';
    const body = oktaHook([{ uuid, type: 'user.lifecycle.create', user: bob }]);
    oktaNow(bob, oktaUser(bob, { site: 'Plant A' }));
    expect((await s.post('/hooks/okta/okta-prod', body, hookHeaders)).status).toBe(200);
    const personId = await waitFor(() => s!.personOf('okta-prod', bob), { what: 'person' });
    await waitFor(() => s!.keyAccess(personId!)[0]?.includes('Main entrance'), { what: 'grant' });
    // Okta's retry of the same delivery, and the same event in a new envelope.
    expect((await s.post('/hooks/okta/okta-prod', body, hookHeaders)).status).toBe(200);
    expect((await s.post('/hooks/okta/okta-prod', oktaHook([{ uuid, type: 'user.lifecycle.create', user: bob }]), hookHeaders)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 800));
    expect((await hintRows('okta-prod')).map((h) => [h.event_id, h.state])).toEqual([[uuid, 'done']]);
    // No interceptor was left over and none was missing: the user was read exactly once.
    expect(nock.pendingMocks()).toEqual([]);
    const creates = ((await s.admin('GET', `/audit?person=${personId}&action=identity.user.create`)).body.items as unknown[]).length;
    expect(creates).toBe(1);
  });

  it('out of order: a deactivation then a late "added to group" ends deactivated', async () => {
    s = await startSourceStack({ sources: [oktaSource()] });
    const eve = '00ueve0000000000001';
    const cr = oktaGroup('00gcr000000000000001', 'Control Room');
    oktaNow(eve, oktaUser(eve), [cr]);
    await s.post('/hooks/okta/okta-prod', oktaHook([{ type: 'user.lifecycle.create', user: eve }]), hookHeaders);
    const personId = await waitFor(() => s!.personOf('okta-prod', eve), { what: 'person' });
    await waitFor(() => s!.keyAccess(personId!)[0]?.includes('Control room'), { what: 'grant' });

    // Okta now: deprovisioned (and still listed in the group). The late event was published
    // before the deactivation but arrives after it.
    const scope = oktaNow(eve, oktaUser(eve, { status: 'DEPROVISIONED' }), [cr], { persist: true });
    const deactivate = oktaHook([{ type: 'user.lifecycle.deactivate', user: eve, published: '2025-03-10T11:59:02.777Z' }]);
    const lateAdd = oktaHook([{ type: 'group.user_membership.add', user: eve, group: cr.id, published: '2025-03-10T11:58:40.120Z' }]);
    expect((await s.post('/hooks/okta/okta-prod', deactivate, hookHeaders)).status).toBe(200);
    expect((await s.post('/hooks/okta/okta-prod', lateAdd, hookHeaders)).status).toBe(200);
    await waitFor(async () => (await hintRows('okta-prod')).every((h) => h.state === 'done') && (await hintRows('okta-prod')).length === 3, { what: 'hints confirmed' });
    await waitFor(async () => (await s!.admin('GET', `/persons/${personId}`)).body.actual?.iloq?.left === true, { what: 'leave accepted' });
    // Settle: nothing re-grants afterwards.
    await new Promise((r) => setTimeout(r, 1000));
    const view = await s.admin('GET', `/persons/${personId}`);
    expect(view.body.identity.active).toBe(false);
    expect(view.body.pendingPlan).toEqual([]);
    expect(s.keyAccess(personId!)).toEqual([[]]);
    scope.persist(false);
  });

  it('rejects a wrong secret (401, nothing stored, audited) and answers unknown sources with a 404 problem', async () => {
    s = await startSourceStack({ sources: [oktaSource()] });
    const body = oktaHook([{ type: 'user.lifecycle.deactivate', user: '00uxxx' }]);
    const bad = await s.post('/hooks/okta/okta-prod', body, { 'content-type': 'application/json', authorization: 'okta-hook-secret-0123456789abcdeX' });
    expect(bad.status).toBe(401);
    const none = await s.post('/hooks/okta/okta-prod', body, { 'content-type': 'application/json' });
    expect(none.status).toBe(401);
    expect(await hintRows('okta-prod')).toEqual([]);
    const audit = (await s.admin('GET', '/audit?action=source.hook.rejected')).body.items as Array<{ actor: string; detail: { reason: string; status: number } }>;
    expect(audit).toHaveLength(2);
    const metrics = await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${s.auditorToken}` } }).then((r) => r.text());
    expect(metrics).toMatch(/lockstep_source_hooks_total\{source="okta-prod",outcome="rejected"\} 2\n/);
    expect(audit[0]).toMatchObject({ actor: 'hook:okta-prod', detail: { status: 401 } });
    expect(JSON.stringify(audit)).not.toContain('00uxxx'); // never the body

    const unknown = await s.post('/hooks/okta/nope', body, hookHeaders);
    expect(unknown.status).toBe(404);
    expect(unknown.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect(unknown.body).toMatchObject({ type: 'urn:lockstep:problem:not-found', status: 404 });
    expect(unknown.body.detail).toMatch(/no okta identity source "nope"/);
    const otherKind = await s.post('/hooks/sailpoint/okta-prod', body, hookHeaders);
    expect(otherKind.status).toBe(404);
    expect(otherKind.body.detail).toMatch(/no sailpoint identity source "okta-prod"/);
    const entraOnOkta = await s.post('/hooks/entra/okta-prod?validationToken=x', '', { 'content-type': 'text/plain' });
    expect(entraOnOkta.status).toBe(404);
  });

  it('answers 503 when the hints cannot be stored, so Okta delivers again', async () => {
    s = await startSourceStack({ sources: [oktaSource()] });
    const original = s.rt.sources.hints.persist.bind(s.rt.sources.hints);
    s.rt.sources.hints.persist = async () => {
      throw new Error('disk full');
    };
    const res = await s.post('/hooks/okta/okta-prod', oktaHook([{ type: 'user.lifecycle.create', user: '00u503' }]), hookHeaders);
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({ type: 'urn:lockstep:problem:unavailable' });
    s.rt.sources.hints.persist = original;
  });

  it('throttling: a 429 with a long X-Rate-Limit-Reset postpones the confirmation instead of failing it', async () => {
    s = await startSourceStack({ sources: [oktaSource()] });
    const tia = '00utia0000000000001';
    const now = Date.now();
    nock(OKTA_ORG)
      .get(`/api/v1/users/${tia}`)
      .reply(429, { errorCode: 'E0000047', errorSummary: 'API call exceeded rate limit due to too many requests.' }, {
        Date: new Date(now).toUTCString(),
        'X-Rate-Limit-Limit': '600',
        'X-Rate-Limit-Remaining': '0',
        'X-Rate-Limit-Reset': String(Math.floor(now / 1000) + 1),
      });
    oktaNow(tia, oktaUser(tia, { site: 'Plant A' }));
    expect((await s.post('/hooks/okta/okta-prod', oktaHook([{ type: 'user.lifecycle.create', user: tia }]), hookHeaders)).status).toBe(200);
    const personId = await waitFor(() => s!.personOf('okta-prod', tia), { what: 'person after the rate limit passed' });
    await waitFor(() => s!.keyAccess(personId!)[0]?.includes('Main entrance'), { what: 'grant' });
    expect(nock.pendingMocks()).toEqual([]);
    const hint = (await hintRows('okta-prod'))[0]!;
    expect(hint.state).toBe('done');
  });
});

describe('reconciliation catches what hooks missed', () => {
  it('a joiner and a leaver whose events were lost are caught by the scheduled snapshot', async () => {
    const kim = '00ukim0000000000001';
    const cr = oktaGroup('00gcr000000000000001', 'Control Room');
    let users: object[] = [oktaUser(kim, { site: 'Plant A' })];
    let members: object[] = [oktaUser(kim)];
    nock(OKTA_ORG)
      .persist()
      .get('/api/v1/users')
      .query({ limit: '200' })
      .reply(200, () => users)
      .get('/api/v1/groups')
      .query({ limit: '200' })
      .reply(200, [cr])
      .get(`/api/v1/groups/${cr.id}/users`)
      .query({ limit: '200' })
      .reply(200, () => members)
      // The System Log (delta) has nothing either: the events are lost.
      .get('/api/v1/logs')
      .query(true)
      .reply(200, []);
    s = await startSourceStack({ sources: [oktaSource('okta-prod', { reconcileEvery: '2s' })] });
    // No hook ever arrives; the scheduled full reconciliation finds the joiner.
    const personId = await waitFor(() => s!.personOf('okta-prod', kim), { what: 'joiner from the snapshot', timeoutMs: 10_000 });
    await waitFor(() => s!.keyAccess(personId!)[0]?.length === 2, { what: 'grants' });
    // The leaver's deletion event is lost too: the next snapshot no longer lists them.
    users = [];
    members = [];
    await waitFor(async () => (await s!.admin('GET', `/persons/${personId}`)).body.actual?.iloq?.left === true, { what: 'leave after the snapshot', timeoutMs: 10_000 });
    expect(s.keyAccess(personId!)).toEqual([[]]);
    const drift = await s.admin('GET', '/drift', s.auditorToken);
    expect(drift.status).toBe(200);
    const src = drift.body.sources.find((x: { id: string }) => x.id === 'okta-prod');
    expect(src.lastSnapshot).toMatchObject({ complete: true, users: { removed: 1 } });
    expect(src.cursorAt).not.toBeNull();
    const audit = (await s.admin('GET', '/audit?action=source.reconciled&limit=100')).body.items as Array<{ detail: { users: { created: number; removed: number } } }>;
    expect(audit.some((a) => a.detail.users.created === 1)).toBe(true);
    expect(audit.some((a) => a.detail.users.removed === 1)).toBe(true);
  });
});
