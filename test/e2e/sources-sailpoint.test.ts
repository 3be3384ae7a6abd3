import nock from 'nock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fixture, fixtureText } from '../idp/helpers.ts';
import { waitFor } from '../helpers/stack.ts';
import { startSourceStack, type SourceStack } from '../sources/helpers.ts';

/**
 * SailPoint ISC event triggers through the daemon: Bearer-authenticated trigger on
 * /hooks/sailpoint/{sourceId}, confirmation through the v3 search API (nock), and the re-check
 * after `recheckAfterMs` that catches the search index lagging behind the trigger.
 */

const API = 'https://acme.api.identitynow.com';
const WILLIAM = '2c91808568c529c60168cca6f90c1313';
const TOKEN = 'trigger-bearer-token-0123456789abcdef';

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

describe('SailPoint triggers through the daemon', () => {
  it('confirms a created identity, then re-checks once the search index caught up (a leaver after all)', async () => {
    s = await startSourceStack({
      sources: [
        {
          id: 'isc',
          idp: 'sailpoint',
          reconcileAtStart: false,
          sailpoint: { apiUrl: API, clientId: 'isc-client', clientSecret: 'isc-secret', hookAuth: { type: 'bearer', token: TOKEN }, recheckAfterMs: 1500, http: { maxRetries: 0, maxWaitMs: 0, timeoutMs: 5000 } },
        },
      ],
      rules: [{ name: 'north', when: { groups: ['Building North Access'] }, grant: [{ lockSystem: 'iloq', access: ['Control room'] }] }],
    });
    const terminated = fixture('sailpoint/identity-document-terminated.json');
    const { endDate: _end, ...current } = terminated.attributes;
    const stale = { ...terminated, attributes: { ...current, cloudLifecycleState: 'active' } };
    nock(API).persist().post('/oauth/token').reply(200, fixture('sailpoint/token.json'));
    // The index still shows the identity active at the first read; terminated at the re-check.
    nock(API).get(`/v3/search/identities/${WILLIAM}`).reply(200, stale).get(`/v3/search/identities/${WILLIAM}`).reply(200, terminated);

    const wrong = await s.post('/hooks/sailpoint/isc?trigger=idn:identity-created', fixtureText('sailpoint/trigger-identity-created.json'), { 'content-type': 'application/json', authorization: 'Bearer nope' });
    expect(wrong.status).toBe(401);
    const res = await s.post('/hooks/sailpoint/isc?trigger=idn:identity-created', fixtureText('sailpoint/trigger-identity-created.json'), { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` });
    expect(res.status).toBeLessThan(300);

    const personId = (await waitFor(() => s!.personOf('isc', WILLIAM), { what: 'person from the first read' }))!;
    await waitFor(() => s!.keyAccess(personId)[0]?.includes('Control room'), { what: 'grant from the access profile' });
    await waitFor(async () => (await s!.admin('GET', `/persons/${personId}`)).body.actual?.iloq?.left === true, { what: 'leave after the re-check', timeoutMs: 10_000 });
    expect(s.keyAccess(personId)).toEqual([[]]);
    const identity = (await s.admin('GET', `/persons/${personId}`)).body.identity;
    expect(identity).toMatchObject({ active: false, attributes: expect.objectContaining({ lifecycleState: 'terminated' }) });
  });
});
