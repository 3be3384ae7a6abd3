import nock from 'nock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fixture, fixtureText } from '../idp/helpers.ts';
import { waitFor } from '../helpers/stack.ts';
import { ENTRA_STATE, ENTRA_TENANT, entraSource, startSourceStack, type SourceStack } from '../sources/helpers.ts';

/**
 * Microsoft Graph change notifications through the daemon: the validation handshake on both
 * URLs, a notification confirmed through Graph (nock) with an expired token on the way, and a
 * wrong clientState. Payloads are the documented ones in test/idp/fixtures/entra.
 */

const GRAPH = 'https://graph.microsoft.com';
const LOGIN = 'https://login.microsoftonline.com';
const ADELE = '6e7b768e-07e2-4810-8459-485f84f8f204';
const GONE = '2c3d5e1f-0000-4000-8000-00000000dead';

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

function tokens(...list: string[]) {
  const scope = nock(LOGIN);
  for (const t of list)
    scope.post(`/${ENTRA_TENANT}/oauth2/v2.0/token`).query(true).reply(200, { token_type: 'Bearer', expires_in: 3599, ext_expires_in: 3599, access_token: t });
}

describe('Entra change notifications through the daemon', () => {
  it('answers the validation handshake on the notification and lifecycle URLs (decoded token, text/plain)', async () => {
    s = await startSourceStack({ sources: [entraSource()] });
    const q = 'validationToken=Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+b3a1d7e2-5f0c-4c7e-9a21-0c3e8d2f4b61';
    for (const path of ['/hooks/entra/entra-prod', '/hooks/entra/entra-prod/lifecycle']) {
      const started = Date.now();
      const res = await s.post(`${path}?${q}`, '', { 'content-type': 'text/plain; charset=utf-8' });
      expect(Date.now() - started).toBeLessThan(10_000); // Graph's deadline
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      expect(res.text).toBe('Validation: Testing client application reachability for subscription Request-Id: b3a1d7e2-5f0c-4c7e-9a21-0c3e8d2f4b61');
    }
    // Without a body and without a content type at all.
    const bare = await fetch(`${s.url}/hooks/entra/entra-prod?validationToken=abc`, { method: 'POST' });
    expect(bare.status).toBe(200);
    expect(await bare.text()).toBe('abc');
  });

  it('202 after persisting; confirms through Graph (token expired once on the way); a deleted user is gone', async () => {
    s = await startSourceStack({ sources: [entraSource()], rules: [{ name: 'b18', when: { groups: ['Building 18 Access'] }, grant: [{ lockSystem: 'iloq', access: ['Control room'] }] }] });
    tokens('tokA', 'tokB');
    const active = { ...fixture('entra/user.json'), accountEnabled: true };
    nock(GRAPH)
      .get(`/v1.0/users/${ADELE}`)
      .query(true)
      .matchHeader('authorization', 'Bearer tokA')
      .reply(401, fixture('entra/token-expired.json'))
      .get(`/v1.0/users/${ADELE}`)
      .query(true)
      .matchHeader('authorization', 'Bearer tokB')
      .reply(200, active)
      .get(`/v1.0/users/${ADELE}/memberOf/microsoft.graph.group`)
      .query(true)
      .reply(200, { value: [{ '@odata.type': '#microsoft.graph.group', id: '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e', displayName: 'Building 18 Access' }] })
      .get(`/v1.0/users/${GONE}`)
      .query(true)
      .reply(404, { error: { code: 'Request_ResourceNotFound', message: `Resource '${GONE}' does not exist` } });
    const res = await s.post('/hooks/entra/entra-prod', fixtureText('entra/notification-user-updated.json'), { 'content-type': 'application/json' });
    expect(res.status).toBe(202);
    expect(res.text).toBe('');
    const personId = await waitFor(() => s!.personOf('entra-prod', ADELE), { what: 'person confirmed through Graph' });
    await waitFor(() => s!.keyAccess(personId!)[0]?.includes('Control room'), { what: 'grant' });
    await waitFor(
      async () => (await s!.rt.store.db.selectFrom('source_hints').select('state').where('source_id', '=', 'entra-prod').execute()).every((h) => h.state === 'done'),
      { what: 'both hints done' },
    );
    expect(await s.personOf('entra-prod', GONE)).toBeUndefined();
    const view = await s.admin('GET', `/persons/${personId}`);
    expect(view.body.identity).toMatchObject({ userName: 'AdeleV@contoso.example', active: true, attributes: expect.objectContaining({ department: 'Retail' }) });
    expect(nock.pendingMocks()).toEqual([]);
  });

  it('a wrong clientState is refused with 401 and stores nothing', async () => {
    s = await startSourceStack({ sources: [entraSource()] });
    const res = await s.post('/hooks/entra/entra-prod', fixtureText('entra/notification-bad-client-state.json'), { 'content-type': 'application/json' });
    expect(res.status).toBe(401);
    expect(await s.rt.store.db.selectFrom('source_hints').selectAll().execute()).toEqual([]);
    const audit = (await s.admin('GET', '/audit?action=source.hook.rejected')).body.items;
    expect(audit).toHaveLength(1);
    expect(audit[0].detail.reason).toMatch(/clientState/);
    void ENTRA_STATE;
  });

  it('lifecycle reauthorizationRequired becomes a task run by the worker (re-authorise the subscription), then a delta round', async () => {
    s = await startSourceStack({ sources: [entraSource()] });
    tokens('tokA');
    const sub = '7f105c7d-2dc5-4530-97cd-4e7ae6534c07';
    nock(GRAPH).post(`/v1.0/subscriptions/${sub}/reauthorize`).reply(204);
    const res = await s.post('/hooks/entra/entra-prod/lifecycle', fixtureText('entra/lifecycle-reauthorization-required.json'), { 'content-type': 'application/json' });
    expect(res.status).toBe(202);
    await waitFor(async () => (await s!.rt.store.db.selectFrom('source_tasks').select('state').executeTakeFirst())?.state === 'done', { what: 'task done' });
    const audit = (await s.admin('GET', '/audit?action=source.task')).body.items;
    expect(audit[0].detail).toMatchObject({ type: 'entra.reauthorize', actions: [expect.stringMatching(/reauthorized subscription/)] });
    // A duplicate delivery of the same lifecycle event is one task.
    await s.post('/hooks/entra/entra-prod/lifecycle', fixtureText('entra/lifecycle-reauthorization-required.json'), { 'content-type': 'application/json' });
    expect(await s.rt.store.db.selectFrom('source_tasks').selectAll().execute()).toHaveLength(1);
    const state = await s.rt.store.db.selectFrom('source_state').selectAll().where('source_id', '=', 'entra-prod').executeTakeFirst();
    // No delta cursor yet (no snapshot ran): the delta wish waits for the first full reconciliation.
    expect(state?.resync === 'delta' || state?.resync === null).toBe(true);
  });
});
