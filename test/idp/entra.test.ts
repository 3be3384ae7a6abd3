import nock from 'nock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IdentitySourceError, type SnapshotRecord } from '../../src/ports/identity-source.ts';
import { GRAPH_MAX_SUBSCRIPTION_MINUTES, createEntraSource, entraSourceSchema } from '../../adapters/idp/entra/index.ts';
import { collect, fakeTime, fixture, fixtureText, hookReq, silentLog, useNock } from './helpers.ts';

const TENANT = 'bf4b5b1e-7f3e-4b0a-9c29-4d1b7d0e6a11';
const CLIENT = '24d3b144-21ae-4080-943f-7067b395b913';
const GRAPH = 'https://graph.microsoft.com';
const LOGIN = 'https://login.microsoftonline.com';
const STATE = 'entra-client-state-0123456789';
const HOOK = 'https://lockstep.example.com/hooks/entra/entra-prod';
const ADELE = '6e7b768e-07e2-4810-8459-485f84f8f204';

function config(over: Record<string, unknown> = {}) {
  return {
    tenantId: TENANT,
    clientId: CLIENT,
    credential: { type: 'secret', clientSecret: 'app-secret' },
    hook: { clientState: STATE },
    subscriptions: { notificationUrl: HOOK, lifecycleNotificationUrl: `${HOOK}/lifecycle` },
    http: { maxRetries: 2, maxWaitMs: 10_000, timeoutMs: 5_000 },
    ...over,
  };
}

function source(time = fakeTime(), over: Record<string, unknown> = {}) {
  return createEntraSource(config(over) as never, { sourceId: 'entra-prod', log: silentLog, sleep: time.sleep, now: time.now });
}

/** The Entra token endpoint (client credentials); each call hands out the next token. */
function tokenEndpoint(...tokens: string[]) {
  const bodies: string[] = [];
  const scope = nock(LOGIN);
  for (const t of tokens)
    scope
      .post(`/${TENANT}/oauth2/v2.0/token`)
      .query(true)
      .reply(200, async (req: Request) => {
        bodies.push(await req.text());
        return { token_type: 'Bearer', expires_in: 3599, ext_expires_in: 3599, access_token: t };
      });
  return bodies;
}

const notify = (body: string) => hookReq({ method: 'POST', headers: { 'content-type': 'application/json' }, body });

const net = useNock();
beforeEach(() => net.reset());
afterEach(() => net.reset());

describe('Entra notification URL: validation handshake', () => {
  // What Graph sends, and what the HTTP layer hands over after decoding the query string.
  const raw = 'validationToken=Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+b3a1d7e2-5f0c-4c7e-9a21-0c3e8d2f4b61';
  const decoded = new URLSearchParams(raw).get('validationToken')!;

  it.each(['notification', 'lifecycle'])('answers the %s URL with 200 text/plain and the decoded token', () => {
    const res = source().handleHook(hookReq({ method: 'POST', headers: { 'content-type': 'text/plain; charset=utf-8' }, query: { validationToken: decoded } }));
    expect(res.outcome).toBe('handshake');
    expect(res.status).toBe(200);
    expect(res.headers?.['content-type']).toMatch(/^text\/plain/);
    expect(res.body).toBe('Validation: Testing client application reachability for subscription Request-Id: b3a1d7e2-5f0c-4c7e-9a21-0c3e8d2f4b61');
    expect(res.body).not.toContain('%');
    expect(res.changes).toEqual([]);
  });

  it('rejects an empty token', () => {
    expect(source().handleHook(hookReq({ method: 'POST', query: { validationToken: '' } }))).toMatchObject({ outcome: 'rejected', status: 400 });
  });
});

describe('Entra notifications', () => {
  it('rejects a wrong clientState with 401 and parses nothing', () => {
    const res = source().handleHook(notify(fixtureText('entra/notification-bad-client-state.json')));
    expect(res).toMatchObject({ outcome: 'rejected', status: 401, changes: [], tasks: [] });
    expect(res.resync).toBeUndefined();
  });

  it('drops only the items with a wrong clientState in a mixed batch', () => {
    const good = fixture('entra/notification-user-updated.json');
    const bad = fixture('entra/notification-bad-client-state.json');
    const res = source().handleHook(notify(JSON.stringify({ value: [bad.value[0], good.value[0]] })));
    expect(res.outcome).toBe('accepted');
    expect(res.changes.map((c) => [c.kind, c.userId])).toEqual([['user-upsert', ADELE]]);
    expect(res.reason).toMatch(/dropped 1/);
  });

  it('accepts a previous clientState while rotating', () => {
    const s = source(fakeTime(), { hook: { clientState: 'the-new-client-state-000000', previousClientStates: [STATE] } });
    expect(s.handleHook(notify(fixtureText('entra/notification-user-updated.json'))).outcome).toBe('accepted');
  });

  it('turns user notifications into hints and answers 202', () => {
    const res = source().handleHook(notify(fixtureText('entra/notification-user-updated.json')));
    expect(res.status).toBe(202);
    expect(res.body).toBeUndefined();
    expect(res.changes.map((c) => [c.kind, c.userId, c.revocation, c.eventType])).toEqual([
      ['user-upsert', ADELE, false, 'user.updated'],
      ['user-deleted', '2c3d5e1f-0000-4000-8000-00000000dead', true, 'user.deleted'],
    ]);
    expect(res.changes[0]!.occurredAt).toBe('2025-03-10T12:00:00.000Z');
    expect(res.resync).toBeUndefined();
  });

  it('gives a replayed delivery the same dedupe keys', () => {
    const a = source().handleHook(notify(fixtureText('entra/notification-user-updated.json'))).changes;
    const b = source().handleHook(notify(fixtureText('entra/notification-user-updated.json'))).changes;
    expect(b.map((c) => c.dedupeKey)).toEqual(a.map((c) => c.dedupeKey));
    expect(new Set(a.map((c) => c.dedupeKey)).size).toBe(2);
  });

  it('turns a group notification into group-changed and asks for a delta round (membership unknown)', () => {
    const res = source().handleHook(notify(fixtureText('entra/notification-group-updated.json')));
    expect(res.changes.map((c) => [c.kind, c.groupId])).toEqual([['group-changed', '02bd9fd6-8f93-4758-87c3-1fb73740a315']]);
    expect(res.resync).toBe('delta');
  });

  it('rejects a body that is not a notification collection', () => {
    expect(source().handleHook(notify('{"foo":1}'))).toMatchObject({ outcome: 'rejected', status: 400 });
    expect(source().handleHook(notify('<xml/>'))).toMatchObject({ outcome: 'rejected', status: 400 });
  });
});

describe('Entra lifecycle notifications and subscriptions', () => {
  it('reauthorizationRequired → a task; running it reauthorizes the subscription and asks for a delta round', async () => {
    const s = source();
    const res = s.handleHook(notify(fixtureText('entra/lifecycle-reauthorization-required.json')));
    expect(res).toMatchObject({ outcome: 'accepted', status: 202, changes: [], resync: 'delta' });
    expect(res.tasks).toEqual([
      {
        type: 'entra.reauthorize',
        data: { subscriptionId: '7f105c7d-2dc5-4530-97cd-4e7ae6534c07' },
        dedupeKey: 'entra:entra-prod:reauthorize:7f105c7d-2dc5-4530-97cd-4e7ae6534c07:2025-04-06T11:00:00.0000000+00:00',
      },
    ]);
    tokenEndpoint('tokA');
    nock(GRAPH).post('/v1.0/subscriptions/7f105c7d-2dc5-4530-97cd-4e7ae6534c07/reauthorize').matchHeader('authorization', 'Bearer tokA').reply(204);
    const done = await s.runTask(res.tasks[0]!);
    expect(done).toMatchObject({ actions: ['reauthorized subscription 7f105c7d-2dc5-4530-97cd-4e7ae6534c07'], resync: 'delta' });
    net.assertDone();
  });

  it('subscriptionRemoved → recreates the missing subscriptions within the documented maximum lifetime', async () => {
    const time = fakeTime();
    const s = source(time);
    const res = s.handleHook(notify(fixtureText('entra/lifecycle-subscription-removed.json')));
    expect(res.tasks.map((t) => t.type)).toEqual(['entra.ensure-subscriptions']);
    tokenEndpoint('tokA');
    const created: any[] = [];
    nock(GRAPH)
      .get('/v1.0/subscriptions')
      .reply(200, { value: [] })
      .post('/v1.0/subscriptions')
      .times(2)
      .reply(201, async (req: Request) => {
        const body = (await req.json()) as any;
        created.push(body);
        return { ...fixture('entra/subscription-created.json'), id: `sub-${created.length}`, resource: body.resource, expirationDateTime: body.expirationDateTime };
      });
    const done = await s.runTask(res.tasks[0]!);
    expect(done.resync).toBe('delta');
    expect(created.map((c) => c.resource)).toEqual(['/users', '/groups']);
    for (const c of created) {
      expect(c).toMatchObject({ changeType: 'updated,deleted', notificationUrl: HOOK, lifecycleNotificationUrl: `${HOOK}/lifecycle`, clientState: STATE });
      const minutes = (Date.parse(c.expirationDateTime) - time.now()) / 60_000;
      expect(minutes).toBeLessThanOrEqual(GRAPH_MAX_SUBSCRIPTION_MINUTES);
      expect(minutes).toBeGreaterThan(GRAPH_MAX_SUBSCRIPTION_MINUTES - 24 * 60);
    }
    net.assertDone();
  });

  it('maintain renews before expiry, recreates one without the lifecycle URL, and leaves healthy ones alone', async () => {
    const time = fakeTime();
    const now = time.now();
    const iso = (ms: number) => new Date(now + ms).toISOString();
    tokenEndpoint('tokA');
    const patched: any[] = [];
    nock(GRAPH)
      .get('/v1.0/subscriptions')
      .reply(200, {
        value: [
          // users: expires in 2 days (< renewBefore 3 days) → renew
          { id: 'sub-users', resource: '/users', notificationUrl: HOOK, lifecycleNotificationUrl: `${HOOK}/lifecycle`, expirationDateTime: iso(2 * 86_400_000) },
          // groups: created without lifecycle URL → cannot be added later → delete + recreate
          { id: 'sub-groups-old', resource: '/groups', notificationUrl: HOOK, lifecycleNotificationUrl: null, expirationDateTime: iso(20 * 86_400_000) },
          // someone else's subscription on another URL is not ours
          { id: 'other-app', resource: '/users', notificationUrl: 'https://other.example/hook', expirationDateTime: iso(86_400_000) },
        ],
      })
      .delete('/v1.0/subscriptions/sub-groups-old')
      .reply(204)
      .patch('/v1.0/subscriptions/sub-users')
      .reply(200, async (req: Request) => {
        const body = (await req.json()) as any;
        patched.push(body);
        return { id: 'sub-users', resource: '/users', expirationDateTime: body.expirationDateTime };
      })
      .post('/v1.0/subscriptions', (b) => b.resource === '/groups')
      .reply(201, { id: 'sub-groups-new', resource: '/groups', expirationDateTime: iso(28 * 86_400_000) });
    const r = await source(time).maintain();
    expect(patched).toHaveLength(1);
    expect((Date.parse(patched[0].expirationDateTime) - now) / 60_000).toBeLessThanOrEqual(GRAPH_MAX_SUBSCRIPTION_MINUTES);
    expect(r.actions.join('\n')).toMatch(/renewed subscription sub-users/);
    expect(r.actions.join('\n')).toMatch(/deleted subscription sub-groups-old.*lifecycle URL differs/);
    expect(r.actions.join('\n')).toMatch(/created subscription sub-groups-new/);
    expect(r.resync).toBe('delta');
    expect(r.nextInMs).toBe(60 * 60_000);
    net.assertDone();

    tokenEndpoint('tokB');
    nock(GRAPH)
      .get('/v1.0/subscriptions')
      .reply(200, {
        value: [
          { id: 'sub-users', resource: '/users', notificationUrl: HOOK, lifecycleNotificationUrl: `${HOOK}/lifecycle`, expirationDateTime: iso(25 * 86_400_000) },
          { id: 'sub-groups', resource: '/groups', notificationUrl: HOOK, lifecycleNotificationUrl: `${HOOK}/lifecycle`, expirationDateTime: iso(25 * 86_400_000) },
        ],
      });
    expect(await source(time).maintain()).toEqual({ actions: [], nextInMs: 60 * 60_000 });
    net.assertDone();
  });

  it('config caps the subscription lifetime at 41,760 minutes', () => {
    const over = (lifetimeMinutes: number) =>
      entraSourceSchema.safeParse(config({ subscriptions: { notificationUrl: HOOK, lifecycleNotificationUrl: `${HOOK}/lifecycle`, lifetimeMinutes } })).success;
    expect(over(41_760)).toBe(true);
    expect(over(41_761)).toBe(false);
  });
});

describe('Entra confirmation through Graph', () => {
  function mockAdele(token = 'tokA') {
    return nock(GRAPH)
      .get(`/v1.0/users/${ADELE}`)
      .query((q) => String(q.$select).split(',').includes('accountEnabled'))
      .matchHeader('authorization', `Bearer ${token}`)
      .reply(200, fixture('entra/user.json'))
      .get(`/v1.0/users/${ADELE}/memberOf/microsoft.graph.group`)
      .query((q) => q.$top === '999' && !q.$skiptoken)
      .reply(200, fixture('entra/user-memberof-page1.json'))
      .get(`/v1.0/users/${ADELE}/memberOf/microsoft.graph.group`)
      .query((q) => q.$skiptoken === 'RFNwdAIAAQAAAB86QWRlbGVW')
      .reply(200, fixture('entra/user-memberof-page2.json'));
  }

  it('reads the user with a client-secret token and all memberOf pages', async () => {
    const bodies = tokenEndpoint('tokA');
    mockAdele();
    const u = await source().readUser(ADELE);
    expect(u).toMatchObject({
      id: ADELE,
      userName: 'AdeleV@contoso.example',
      externalId: 'AdeleV',
      active: false,
      email: 'AdeleV@contoso.example',
      givenName: 'Adele',
      familyName: 'Vance',
      attributes: { department: 'Retail', title: 'Retail Manager', employeeNumber: 'E-20117', employeeType: 'Employee', site: '18/2111', organization: 'Contoso' },
      groups: [
        { id: '02bd9fd6-8f93-4758-87c3-1fb73740a315', displayName: 'HR Taskforce' },
        { id: '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e', displayName: 'Building 18 Access' },
      ],
    });
    expect(new URLSearchParams(bodies[0]).get('grant_type')).toBe('client_credentials');
    expect(new URLSearchParams(bodies[0]).get('client_secret')).toBe('app-secret');
    expect(new URLSearchParams(bodies[0]).get('scope')).toBe('https://graph.microsoft.com/.default');
    net.assertDone();
  });

  it('reads a group and streams its user members page by page; a gone group is null', async () => {
    tokenEndpoint('tokA');
    const G = '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e';
    nock(GRAPH)
      .get(`/v1.0/groups/${G}`)
      .query({ $select: 'id,displayName' })
      .reply(200, { id: G, displayName: 'Building 18 Access' })
      .get('/v1.0/groups/gone')
      .query(true)
      .reply(404, { error: { code: 'Request_ResourceNotFound', message: 'gone' } })
      .get(`/v1.0/groups/${G}/members/microsoft.graph.user`)
      .query({ $select: 'id', $top: '999' })
      .reply(200, { value: [{ id: ADELE }], '@odata.nextLink': `${GRAPH}/v1.0/groups/${G}/members/microsoft.graph.user?$select=id&$top=999&$skiptoken=X2` })
      .get(`/v1.0/groups/${G}/members/microsoft.graph.user`)
      .query({ $select: 'id', $top: '999', $skiptoken: 'X2' })
      .reply(200, { value: [{ id: 'd36e3b45-6a4a-4e5b-9c38-d3e1b0a7c2f1' }] });
    const s = source();
    expect(await s.readGroup(G)).toMatchObject({ id: G, displayName: 'Building 18 Access' });
    expect(await s.readGroup('gone')).toBeNull();
    const pages: string[][] = [];
    for await (const p of s.readGroupMembers(G)) pages.push(p);
    expect(pages).toEqual([[ADELE], ['d36e3b45-6a4a-4e5b-9c38-d3e1b0a7c2f1']]);
    net.assertDone();
  });

  it('follows paging and delta links on an http:// graphBaseUrl with an explicit port (a local fake or proxy)', async () => {
    tokenEndpoint('tokA');
    const LOCAL = 'http://127.0.0.1:8089';
    const G = '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e';
    nock(LOCAL)
      .get(`/v1.0/groups/${G}/members/microsoft.graph.user`)
      .query({ $select: 'id', $top: '999' })
      .reply(200, { value: [{ id: ADELE }], '@odata.nextLink': `${LOCAL}/v1.0/groups/${G}/members/microsoft.graph.user?$select=id&$top=999&$skiptoken=X2` })
      .get(`/v1.0/groups/${G}/members/microsoft.graph.user`)
      .query({ $select: 'id', $top: '999', $skiptoken: 'X2' })
      .reply(200, { value: [{ id: 'd36e3b45-6a4a-4e5b-9c38-d3e1b0a7c2f1' }] })
      .get('/v1.0/users/delta')
      .query({ $deltatoken: 'T1' })
      .reply(200, { value: [{ id: ADELE, accountEnabled: false }], '@odata.nextLink': `${LOCAL}/v1.0/users/delta?$skiptoken=S2` })
      .get('/v1.0/users/delta')
      .query({ $skiptoken: 'S2' })
      .reply(200, { value: [], '@odata.deltaLink': `${LOCAL}/v1.0/users/delta?$deltatoken=T2` })
      .get('/v1.0/groups/delta')
      .query({ $deltatoken: 'G1' })
      .reply(200, { value: [], '@odata.deltaLink': `${LOCAL}/v1.0/groups/delta?$deltatoken=G2` });
    const s = source(fakeTime(), { graphBaseUrl: LOCAL });
    const pages: string[][] = [];
    for await (const p of s.readGroupMembers(G)) pages.push(p);
    expect(pages).toEqual([[ADELE], ['d36e3b45-6a4a-4e5b-9c38-d3e1b0a7c2f1']]);
    const delta = await s.readDelta(JSON.stringify({ v: 1, users: `${LOCAL}/v1.0/users/delta?$deltatoken=T1`, groups: `${LOCAL}/v1.0/groups/delta?$deltatoken=G1` }));
    if (delta.status !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(delta)}`);
    expect(delta.changes.map((c) => [c.kind, c.userId])).toEqual([['user-deactivated', ADELE]]);
    expect(JSON.parse(delta.cursor)).toMatchObject({ users: `${LOCAL}/v1.0/users/delta?$deltatoken=T2`, groups: `${LOCAL}/v1.0/groups/delta?$deltatoken=G2` });
    net.assertDone();
  });

  it('refuses to follow a paging link to another host', async () => {
    tokenEndpoint('tokA');
    nock(GRAPH)
      .get(`/v1.0/users/${ADELE}`)
      .query(true)
      .reply(200, fixture('entra/user.json'))
      .get(`/v1.0/users/${ADELE}/memberOf/microsoft.graph.group`)
      .query(true)
      .reply(200, { value: [], '@odata.nextLink': 'https://evil.example/v1.0/steal' });
    await expect(source().readUser(ADELE)).rejects.toMatchObject({ kind: 'permanent' });
  });

  it('answers null for a user that is gone (404)', async () => {
    tokenEndpoint('tokA');
    nock(GRAPH).get('/v1.0/users/gone').query(true).reply(404, { error: { code: 'Request_ResourceNotFound', message: "Resource 'gone' does not exist" } });
    expect(await source().readUser('gone')).toBeNull();
  });

  it('gets a certificate-based token (client assertion, no secret)', async () => {
    const bodies = tokenEndpoint('tokA');
    mockAdele();
    const s = source(fakeTime(), { credential: { type: 'certificate', certificate: fixtureText('entra/test-cert-and-key.pem') } });
    expect((await s.readUser(ADELE))?.id).toBe(ADELE);
    const form = new URLSearchParams(bodies[0]);
    expect(form.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    expect(form.get('client_assertion')?.split('.')).toHaveLength(3);
    expect(form.get('client_secret')).toBeNull();
    net.assertDone();
  });

  it('token expiry: a 401 fetches a new token once and retries', async () => {
    tokenEndpoint('tokA', 'tokB');
    nock(GRAPH).get(`/v1.0/users/${ADELE}`).query(true).matchHeader('authorization', 'Bearer tokA').reply(401, fixture('entra/token-expired.json'));
    mockAdele('tokB');
    const u = await source().readUser(ADELE);
    expect(u?.id).toBe(ADELE);
    net.assertDone();
  });

  it('a second 401 after the refresh surfaces as an auth error', async () => {
    tokenEndpoint('tokA', 'tokB');
    nock(GRAPH)
      .get(`/v1.0/users/${ADELE}`)
      .query(true)
      .matchHeader('authorization', 'Bearer tokA')
      .reply(401, fixture('entra/token-expired.json'))
      .get(`/v1.0/users/${ADELE}`)
      .query(true)
      .matchHeader('authorization', 'Bearer tokB')
      .reply(401, fixture('entra/token-expired.json'));
    const err = await source().readUser(ADELE).catch((e) => e);
    expect(err).toBeInstanceOf(IdentitySourceError);
    expect(err).toMatchObject({ kind: 'auth', status: 401 });
    net.assertDone();
  });

  it('throttling: waits Retry-After on 429 and retries', async () => {
    const time = fakeTime();
    tokenEndpoint('tokA');
    nock(GRAPH).get(`/v1.0/users/${ADELE}`).query(true).reply(429, fixture('entra/throttled.json'), { 'Retry-After': '2', 'x-ms-throttle-scope': `Tenant_Application/ReadWrite/${CLIENT}/${TENANT}` });
    mockAdele();
    expect((await source(time).readUser(ADELE))?.active).toBe(false);
    expect(time.sleeps).toEqual([2000]);
    net.assertDone();
  });

  it('throttling: a Retry-After beyond maxWaitMs surfaces as rate_limited with retryAfterMs', async () => {
    const time = fakeTime();
    tokenEndpoint('tokA');
    nock(GRAPH).get(`/v1.0/users/${ADELE}`).query(true).reply(429, fixture('entra/throttled.json'), { 'Retry-After': '120' });
    const err = await source(time).readUser(ADELE).catch((e) => e);
    expect(err).toBeInstanceOf(IdentitySourceError);
    expect(err).toMatchObject({ kind: 'rate_limited', status: 429, retryAfterMs: 120_000 });
    expect(time.sleeps).toEqual([]);
  });

  it('a network failure is retryable', async () => {
    tokenEndpoint('tokA');
    nock(GRAPH).get(`/v1.0/users/${ADELE}`).query(true).replyWithError(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
    const err = await source().readUser(ADELE).catch((e) => e);
    expect(err).toBeInstanceOf(IdentitySourceError);
    expect(err.kind).toBe('retryable');
  });
});

describe('Entra delta', () => {
  it('snapshot = initial delta round: users, groups with members across pages, and the deltaLinks as cursor', async () => {
    tokenEndpoint('tokA');
    nock(GRAPH)
      .get('/v1.0/users/delta')
      .query((q) => String(q.$select).includes('accountEnabled'))
      .reply(200, fixture('entra/users-delta-initial-page1.json'))
      .get('/v1.0/users/delta')
      .query({ $skiptoken: 'pqwSUjGYvb3jQpbwVAwEL7yuI3dU1LecfkkfLPtnIjsXoYQp_dpA3cNJWc' })
      .reply(200, fixture('entra/users-delta-initial-page2.json'))
      .get('/v1.0/groups/delta')
      .query({ $select: 'displayName,members' })
      .reply(200, fixture('entra/groups-delta-initial-page1.json'))
      .get('/v1.0/groups/delta')
      .query({ $skiptoken: 'pqwSUjGYvb3jQpbwVAwEL7yuI3dU1LecfkkfLPtnIjvB7XnF_yllFsCrZJ' })
      .reply(200, fixture('entra/groups-delta-initial-page2.json'));
    const records = await collect(source().readSnapshot());
    const users = records.filter((r): r is Extract<SnapshotRecord, { type: 'user' }> => r.type === 'user').map((r) => [r.user.id, r.user.active]);
    expect(users).toEqual([
      [ADELE, true],
      ['87d349ed-44d7-43e1-9a83-5f2406dee5bd', false],
      ['d36e3b45-6a4a-4e5b-9c38-d3e1b0a7c2f1', true], // the user whose notification was lost
    ]);
    expect(records.filter((r) => r.type !== 'user')).toEqual([
      { type: 'group', group: expect.objectContaining({ id: '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e', displayName: 'Building 18 Access' }) },
      { type: 'members', groupId: '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e', userIds: [ADELE] }, // the nested group is not a user
      { type: 'members', groupId: '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e', userIds: ['d36e3b45-6a4a-4e5b-9c38-d3e1b0a7c2f1'] },
      { type: 'group', group: expect.objectContaining({ id: 'ec22655c-8eb2-432a-b4ea-8b8a254bffff', displayName: 'Empty Group' }) },
      {
        type: 'complete',
        cursor: JSON.stringify({
          v: 1,
          users: fixture('entra/users-delta-initial-page2.json')['@odata.deltaLink'],
          groups: fixture('entra/groups-delta-initial-page2.json')['@odata.deltaLink'],
        }),
        users: 3,
        groups: 2,
        membership: 'members',
      },
    ]);
    net.assertDone();
  });

  const cursor = JSON.stringify({
    v: 1,
    users: 'https://graph.microsoft.com/v1.0/users/delta?$deltatoken=OLD-users-token',
    groups: 'https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=OLD-groups-token',
  });

  it('turns delta pages into hints (@removed, accountEnabled, members@delta) and advances the cursor', async () => {
    tokenEndpoint('tokA');
    nock(GRAPH)
      .get('/v1.0/users/delta')
      .query({ $deltatoken: 'OLD-users-token' })
      .reply(200, fixture('entra/users-delta-changes.json'))
      .get('/v1.0/groups/delta')
      .query({ $deltatoken: 'OLD-groups-token' })
      .reply(200, fixture('entra/groups-delta-changes.json'));
    const res = await source().readDelta(cursor);
    if (res.status !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(res)}`);
    expect(res.changes.map((c) => [c.kind, c.userId ?? null, c.groupId ?? null, c.revocation])).toEqual([
      ['user-deactivated', ADELE, null, true],
      ['user-deleted', '87d349ed-44d7-43e1-9a83-5f2406dee5bd', null, true],
      ['user-upsert', 'd36e3b45-6a4a-4e5b-9c38-d3e1b0a7c2f1', null, false],
      ['group-changed', null, '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e', false],
      ['membership-removed', ADELE, '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e', true],
      ['membership-added', '37de1ae3-408f-4702-8636-20824abda004', '5ba20b4b-0e56-4f32-9b9a-5a2c0b2f1f5e', false],
      ['group-changed', null, 'ec22655c-8eb2-432a-b4ea-8b8a254bffff', true],
    ]);
    expect(JSON.parse(res.cursor)).toEqual({
      v: 1,
      users: 'https://graph.microsoft.com/v1.0/users/delta?$deltatoken=NEW-users-token-2',
      groups: 'https://graph.microsoft.com/v1.0/groups/delta?$deltatoken=NEW-groups-token-2',
    });
    expect(res.more).toBe(false);
    net.assertDone();
  });

  it('410 Gone → resync signal', async () => {
    tokenEndpoint('tokA');
    nock(GRAPH)
      .get('/v1.0/users/delta')
      .query(true)
      .reply(410, fixture('entra/delta-410.json'), { Location: 'https://graph.microsoft.com/v1.0/users/delta?$deltatoken=' });
    expect(await source().readDelta(cursor)).toMatchObject({ status: 'resync' });
  });

  it('an expired token reported as syncStateNotFound → resync signal', async () => {
    tokenEndpoint('tokA');
    nock(GRAPH).get('/v1.0/users/delta').query(true).reply(400, fixture('entra/delta-gone.json'));
    expect(await source().readDelta(cursor)).toMatchObject({ status: 'resync' });
  });

  it('rejects cursors that do not point at this Graph endpoint', async () => {
    expect(await source().readDelta('garbage')).toMatchObject({ status: 'resync' });
    expect(await source().readDelta(JSON.stringify({ v: 1, users: 'https://evil.example/v1.0/users/delta?x', groups: 'https://evil.example/v1.0/groups/delta?x' }))).toMatchObject({
      status: 'resync',
    });
  });

  it('throttled delta with a long Retry-After surfaces rate_limited (not resync)', async () => {
    tokenEndpoint('tokA');
    nock(GRAPH).get('/v1.0/users/delta').query(true).reply(429, fixture('entra/throttled.json'), { 'Retry-After': '300' });
    const err = await source().readDelta(cursor).catch((e) => e);
    expect(err).toMatchObject({ kind: 'rate_limited', retryAfterMs: 300_000 });
  });
});
