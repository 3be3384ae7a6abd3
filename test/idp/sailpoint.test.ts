import nock from 'nock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IdentitySourceError, type SnapshotRecord } from '../../src/ports/identity-source.ts';
import { createSailpointSource } from '../../adapters/idp/sailpoint/index.ts';
import { collect, fakeTime, fixture, fixtureText, hookReq, silentLog, useNock } from './helpers.ts';

const API = 'https://acme.api.identitynow.com';
const WILLIAM = '2c91808568c529c60168cca6f90c1313';
const BASIC = { type: 'basic', userName: 'isc-trigger', password: 'trigger-password-0123456789' } as const;
const BEARER = { type: 'bearer', token: 'trigger-bearer-token-0123456789abcdef' } as const;
const basicHeader = `Basic ${Buffer.from('isc-trigger:trigger-password-0123456789').toString('base64')}`;

function source(time = fakeTime(), over: Record<string, unknown> = {}) {
  return createSailpointSource(
    { apiUrl: API, clientId: 'isc-client', clientSecret: 'isc-secret', hookAuth: BASIC, http: { maxRetries: 2, maxWaitMs: 10_000, timeoutMs: 5_000 }, ...over } as never,
    { sourceId: 'isc', log: silentLog, sleep: time.sleep, now: time.now },
  );
}

const trigger = (file: string, authorization: string | null = basicHeader, query: Record<string, string> = {}) =>
  hookReq({ method: 'POST', headers: { 'content-type': 'application/json', ...(authorization !== null ? { Authorization: authorization } : {}) }, query, body: fixtureText(file) });

/** POST /oauth/token (client credentials); each call hands out the next token. */
function tokenEndpoint(...tokens: string[]) {
  const forms: URLSearchParams[] = [];
  for (const t of tokens)
    nock(API)
      .post('/oauth/token')
      .reply(200, async (req: Request) => {
        forms.push(new URLSearchParams(await req.text()));
        return { ...fixture('sailpoint/token.json'), access_token: t };
      });
  return forms;
}

const net = useNock();
beforeEach(() => net.reset());
afterEach(() => net.reset());

describe('SailPoint triggers: authentication', () => {
  it('accepts the configured Basic credentials', () => {
    expect(source().handleHook(trigger('sailpoint/trigger-identity-created.json')).outcome).toBe('accepted');
  });

  it('rejects a wrong or missing Basic password with 401 and parses nothing', () => {
    const wrong = `Basic ${Buffer.from('isc-trigger:trigger-password-012345678X').toString('base64')}`;
    expect(source().handleHook(trigger('sailpoint/trigger-identity-attributes-changed-leaver.json', wrong))).toMatchObject({ outcome: 'rejected', status: 401, changes: [] });
    expect(source().handleHook(trigger('sailpoint/trigger-identity-attributes-changed-leaver.json', null))).toMatchObject({ outcome: 'rejected', status: 401, changes: [] });
  });

  it('with Bearer configured: accepts the token (scheme in any case), rejects a wrong token and Basic', () => {
    const s = source(fakeTime(), { hookAuth: BEARER });
    expect(s.handleHook(trigger('sailpoint/trigger-identity-created.json', `Bearer ${BEARER.token}`)).outcome).toBe('accepted');
    expect(s.handleHook(trigger('sailpoint/trigger-identity-created.json', `bearer ${BEARER.token}`)).outcome).toBe('accepted');
    expect(s.handleHook(trigger('sailpoint/trigger-identity-created.json', `Bearer ${BEARER.token}x`))).toMatchObject({ outcome: 'rejected', status: 401, changes: [] });
    expect(s.handleHook(trigger('sailpoint/trigger-identity-created.json', basicHeader))).toMatchObject({ outcome: 'rejected', status: 401, changes: [] });
  });

  it('does not accept NO_AUTH or short secrets in config', () => {
    expect(() => source(fakeTime(), { hookAuth: { type: 'none' } })).toThrow();
    expect(() => source(fakeTime(), { hookAuth: { type: 'bearer', token: 'short' } })).toThrow();
  });
});

describe('SailPoint triggers: parsing', () => {
  it('Identity Attributes Changed with cloudLifecycleState → leaver hint', () => {
    const [c] = source().handleHook(trigger('sailpoint/trigger-identity-attributes-changed-leaver.json')).changes;
    expect(c).toMatchObject({ kind: 'user-deactivated', userId: WILLIAM, revocation: true, eventType: 'idn:identity-attributes-changed', sourceId: 'isc' });
  });

  it('Identity Attributes Changed on department → mover hint', () => {
    const [c] = source().handleHook(trigger('sailpoint/trigger-identity-attributes-changed-mover.json')).changes;
    expect(c).toMatchObject({ kind: 'user-upsert', userId: WILLIAM, revocation: false });
  });

  it('Identity Created / Deleted are told apart by the subscription URL ?trigger=…; without it the hint is conservative', () => {
    const created = source().handleHook(trigger('sailpoint/trigger-identity-created.json', basicHeader, { trigger: 'idn:identity-created' }));
    expect(created.changes[0]).toMatchObject({ kind: 'user-upsert', revocation: false, eventType: 'idn:identity-created' });
    expect(created.status).toBe(200);
    const deleted = source().handleHook(trigger('sailpoint/trigger-identity-deleted.json', basicHeader, { trigger: 'idn:identity-deleted' }));
    expect(deleted.changes[0]).toMatchObject({ kind: 'user-deleted', userId: WILLIAM, revocation: true, eventType: 'idn:identity-deleted' });
    const unknown = source().handleHook(trigger('sailpoint/trigger-identity-deleted.json'));
    expect(unknown.changes[0]).toMatchObject({ kind: 'user-upsert', revocation: true });
    expect(source().handleHook(trigger('sailpoint/trigger-identity-deleted.json', basicHeader, { trigger: 'idn:bogus' }))).toMatchObject({ outcome: 'rejected', status: 400 });
  });

  it('rejects payloads without identity.id', () => {
    const req = hookReq({ method: 'POST', headers: { authorization: basicHeader }, body: { identity: { type: 'IDENTITY' } } });
    expect(source().handleHook(req)).toMatchObject({ outcome: 'rejected', status: 400, changes: [] });
  });

  it('dedupe key: identical for a repeated delivery, different for different payloads', () => {
    const a = source().handleHook(trigger('sailpoint/trigger-identity-attributes-changed-leaver.json')).changes[0]!;
    const b = source().handleHook(trigger('sailpoint/trigger-identity-attributes-changed-leaver.json')).changes[0]!;
    const c = source().handleHook(trigger('sailpoint/trigger-identity-attributes-changed-mover.json')).changes[0]!;
    expect(b.dedupeKey).toBe(a.dedupeKey);
    expect(c.dedupeKey).not.toBe(a.dedupeKey);
  });
});

describe('SailPoint confirmation through the ISC API', () => {
  it('reads the identity document with an OAuth client-credentials token', async () => {
    const forms = tokenEndpoint('isc-token-1');
    nock(API).get(`/v3/search/identities/${WILLIAM}`).matchHeader('authorization', 'Bearer isc-token-1').reply(200, fixture('sailpoint/identity-document-terminated.json'));
    const u = await source().readUser(WILLIAM);
    expect(u).toMatchObject({
      id: WILLIAM,
      userName: 'william.wilson',
      externalId: 'E-7731',
      active: false, // cloudLifecycleState "terminated"
      email: 'william.wilson@acme.example',
      givenName: 'William',
      familyName: 'Wilson',
      displayName: 'William Wilson',
      roles: ['Facility Lead'],
      groups: [{ id: '2c9180835d2e5168015d32f890ca1581', displayName: 'Building North Access' }],
      attributes: { department: 'Facilities', site: 'HQ-North', lifecycleState: 'terminated', terminationDate: '2025-03-10', employeeNumber: 'E-7731' },
    });
    expect(Object.fromEntries(forms[0]!)).toEqual({ grant_type: 'client_credentials', client_id: 'isc-client', client_secret: 'isc-secret' });
    net.assertDone();
  });

  it('a mover event after the deletion: confirmation reads "gone", not the event', async () => {
    const s = source();
    const [hint] = s.handleHook(trigger('sailpoint/trigger-identity-attributes-changed-mover.json')).changes;
    tokenEndpoint('isc-token-1');
    nock(API).get(`/v3/search/identities/${WILLIAM}`).reply(404, { detailCode: '404 Not found', messages: [{ locale: 'en-US', text: 'The identity was not found.' }] });
    expect(await s.readUser(hint!.userId!)).toBeNull();
    expect(s.capabilities.recheckAfterMs).toBe(60_000);
  });

  it('token expiry: a 401 gets a new token once and retries', async () => {
    tokenEndpoint('isc-token-1', 'isc-token-2');
    nock(API)
      .get(`/v3/search/identities/${WILLIAM}`)
      .matchHeader('authorization', 'Bearer isc-token-1')
      .reply(401, { error: 'JWT validation failed: JWT is expired' })
      .get(`/v3/search/identities/${WILLIAM}`)
      .matchHeader('authorization', 'Bearer isc-token-2')
      .reply(200, fixture('sailpoint/identity-document-terminated.json'));
    expect((await source().readUser(WILLIAM))?.id).toBe(WILLIAM);
    net.assertDone();
  });

  it('a second 401 is an auth error; the token is not requested a third time', async () => {
    tokenEndpoint('isc-token-1', 'isc-token-2');
    nock(API).get(`/v3/search/identities/${WILLIAM}`).times(2).reply(401, { error: 'JWT validation failed' });
    const err = await source().readUser(WILLIAM).catch((e) => e);
    expect(err).toBeInstanceOf(IdentitySourceError);
    expect(err).toMatchObject({ kind: 'auth', status: 401 });
    net.assertDone();
  });

  it('a rejected client secret is an auth error', async () => {
    nock(API).post('/oauth/token').reply(401, { error: 'invalid_client', error_description: 'Bad credentials' });
    await expect(source().readUser(WILLIAM)).rejects.toMatchObject({ kind: 'auth' });
  });

  it('429 with Retry-After is waited out and retried', async () => {
    const time = fakeTime();
    tokenEndpoint('isc-token-1');
    nock(API)
      .get(`/v3/search/identities/${WILLIAM}`)
      .reply(429, { message: 'Rate Limit Exceeded' }, { 'Retry-After': '3' })
      .get(`/v3/search/identities/${WILLIAM}`)
      .reply(200, fixture('sailpoint/identity-document-terminated.json'));
    expect((await source(time).readUser(WILLIAM))?.active).toBe(false);
    expect(time.sleeps).toEqual([3000]);
    net.assertDone();
  });
});

describe('SailPoint reconciliation', () => {
  it('pages the identities index with searchAfter; users carry their groups; a lost event is caught', async () => {
    tokenEndpoint('isc-token-1');
    const bodies: any[] = [];
    nock(API)
      .post('/v3/search')
      .query({ limit: '2' })
      .times(2)
      .reply(200, async (req: Request) => {
        const body = (await req.json()) as any;
        bodies.push(body);
        return bodies.length === 1 ? fixture('sailpoint/search-page1.json') : fixture('sailpoint/search-page2.json');
      });
    const records = await collect(source(fakeTime(), { pageSize: 2, searchQuery: 'attributes.cloudLifecycleState:*' }).readSnapshot());
    expect(bodies[0]).toEqual({ indices: ['identities'], query: { query: 'attributes.cloudLifecycleState:*' }, sort: ['id'] });
    expect(bodies[1]).toMatchObject({ searchAfter: ['2c91808568c529c60168cca6f90c1400'] });
    const users = records.filter((r): r is Extract<SnapshotRecord, { type: 'user' }> => r.type === 'user').map((r) => r.user);
    expect(users.map((u) => [u.userName, u.active, u.groups?.map((g) => g.displayName)])).toEqual([
      ['william.wilson', true, ['Building North Access']],
      ['carol.adams', false, []], // inactive wins over the lifecycle state
      ['lost.event', true, ['Building North Access']],
    ]);
    expect(records.at(-1)).toEqual({ type: 'complete', users: 3, groups: 1, membership: 'user-groups' });
    net.assertDone();
  });

  it('reads an access profile as a group and streams the identities holding it', async () => {
    tokenEndpoint('isc-token-1');
    const queries: unknown[] = [];
    nock(API)
      .get('/v3/access-profiles/2c9180835d2e5168015d32f890ca1581')
      .reply(200, { id: '2c9180835d2e5168015d32f890ca1581', name: 'Building North Access', enabled: true, requestable: true })
      .get('/v3/access-profiles/gone')
      .reply(404, { detailCode: '404 Not found' })
      .post('/v3/search')
      .query({ limit: '2' })
      .reply(200, async (req: Request) => {
        queries.push(((await req.json()) as any).query.query);
        return [{ id: WILLIAM }, { id: '2c91808568c529c60168cca6f90c1500' }];
      })
      .post('/v3/search')
      .query({ limit: '2' })
      .reply(200, []);
    const s = source(fakeTime(), { pageSize: 2 });
    expect(await s.readGroup('2c9180835d2e5168015d32f890ca1581')).toMatchObject({ id: '2c9180835d2e5168015d32f890ca1581', displayName: 'Building North Access' });
    expect(await s.readGroup('gone')).toBeNull();
    const pages: string[][] = [];
    for await (const p of s.readGroupMembers('2c9180835d2e5168015d32f890ca1581')) pages.push(p);
    expect(pages).toEqual([[WILLIAM, '2c91808568c529c60168cca6f90c1500']]);
    expect(queries[0]).toBe('@access(id:"2c9180835d2e5168015d32f890ca1581")');
    net.assertDone();
  });

  it('has no delta: readDelta is unsupported', async () => {
    const s = source();
    expect(s.capabilities.delta).toBe(false);
    await expect(s.readDelta('x')).rejects.toMatchObject({ kind: 'unsupported' });
  });
});
