import { generateKeyPairSync } from 'node:crypto';
import nock from 'nock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { IdentitySourceError, type SnapshotRecord } from '../../src/ports/identity-source.ts';
import { createOktaSource, oktaSourceSchema } from '../../adapters/idp/okta/index.ts';
import { collect, fakeTime, fixture, fixtureText, hookReq, silentLog, useNock } from './helpers.ts';

const ORG = 'https://acme.okta.com';
const SECRET = 'okta-hook-secret-0123456789abcdef';

function source(time = fakeTime(), over: Record<string, unknown> = {}) {
  return createOktaSource(
    {
      orgUrl: ORG,
      auth: { type: 'ssws', token: 'api-token' },
      hook: { secret: SECRET },
      rolesAttribute: 'profile.lockstepRoles',
      attributes: { site: 'profile.site' },
      http: { maxRetries: 2, maxWaitMs: 10_000, timeoutMs: 5_000 },
      ...over,
    },
    { sourceId: 'okta-prod', log: silentLog, sleep: time.sleep, now: time.now },
  );
}

const post = (body: string, secret: string | null = SECRET, name = 'Authorization') =>
  hookReq({ method: 'POST', headers: { 'Content-Type': 'application/json', ...(secret !== null ? { [name]: secret } : {}) }, body });

const net = useNock();
beforeEach(() => net.reset());
afterEach(() => net.reset());

describe('Okta event hook: verification handshake', () => {
  it.each(['X-Okta-Verification-Challenge', 'x-okta-verification-challenge', 'X-OKTA-VERIFICATION-CHALLENGE'])('echoes %s as {"verification": value}', (name) => {
    const res = source().handleHook(hookReq({ method: 'GET', headers: { [name]: 'chal-VzJ7_x9' } }));
    expect(res.outcome).toBe('handshake');
    expect(res.status).toBe(200);
    expect(res.headers?.['content-type']).toBe('application/json');
    expect(JSON.parse(res.body!)).toEqual({ verification: 'chal-VzJ7_x9' });
    expect(res.changes).toEqual([]);
  });

  it('rejects a GET without the challenge header and other methods', () => {
    expect(source().handleHook(hookReq({ method: 'GET' }))).toMatchObject({ outcome: 'rejected', status: 400 });
    expect(source().handleHook(hookReq({ method: 'PUT', body: '{}' }))).toMatchObject({ outcome: 'rejected', status: 405 });
  });
});

describe('Okta event hook: authentication', () => {
  const body = fixtureText('okta/hook-deactivate.json');

  it('rejects a wrong secret with 401 and parses nothing', () => {
    const res = source().handleHook(post(body, 'okta-hook-secret-0123456789abcdeX'));
    expect(res).toMatchObject({ outcome: 'rejected', status: 401, changes: [], tasks: [] });
  });

  it('rejects a missing secret and a secret in another header', () => {
    expect(source().handleHook(post(body, null))).toMatchObject({ outcome: 'rejected', status: 401, changes: [] });
    expect(source().handleHook(post(body, SECRET, 'X-Other'))).toMatchObject({ outcome: 'rejected', status: 401, changes: [] });
  });

  it('accepts the secret in any header case, a configured header name, and a previous secret while rotating', () => {
    expect(source().handleHook(post(body, SECRET, 'authorization')).outcome).toBe('accepted');
    const custom = source(fakeTime(), { hook: { secret: SECRET, headerName: 'X-Hook-Key', previousSecrets: ['previous-secret-000000000000'] } });
    expect(custom.handleHook(post(body, SECRET, 'x-hook-key')).outcome).toBe('accepted');
    expect(custom.handleHook(post(body, 'previous-secret-000000000000', 'X-Hook-Key')).outcome).toBe('accepted');
    expect(custom.handleHook(post(body, SECRET, 'Authorization')).outcome).toBe('rejected');
  });

  it('requires a long secret in config', () => {
    expect(oktaSourceSchema.safeParse({ orgUrl: ORG, auth: { type: 'ssws', token: 't' }, hook: { secret: 'short' } }).success).toBe(false);
  });
});

describe('Okta event hook: parsing', () => {
  it('turns user.lifecycle.deactivate into a leaver hint keyed by the event uuid', () => {
    const res = source().handleHook(post(fixtureText('okta/hook-deactivate.json')));
    expect(res.outcome).toBe('accepted');
    expect(res.status).toBe(200);
    expect(res.body).toBeUndefined();
    expect(res.changes).toEqual([
      {
        kind: 'user-deactivated',
        sourceId: 'okta-prod',
        userId: '00ub0oNGTSWTBKOLGLNR',
        dedupeKey: 'okta:okta-prod:f790999f-fe87-467a-9880-6982a583986c:user-deactivated:00ub0oNGTSWTBKOLGLNR:',
        eventId: 'f790999f-fe87-467a-9880-6982a583986c',
        eventType: 'user.lifecycle.deactivate',
        occurredAt: '2025-03-10T11:59:02.777Z',
        revocation: true,
      },
    ]);
  });

  it('selects membership targets by type, whatever their order', () => {
    const [c] = source().handleHook(post(fixtureText('okta/hook-membership-add-late.json'))).changes;
    expect(c).toMatchObject({ kind: 'membership-added', userId: '00ub0oNGTSWTBKOLGLNR', groupId: '00g1emaKYZTWRYYRRTSK', revocation: false });
  });

  it('reads a batch: create, app assignment, membership removal; skips failed outcomes and unrelated events', () => {
    const res = source().handleHook(post(fixtureText('okta/hook-batch.json')));
    expect(res.changes.map((c) => [c.kind, c.userId, c.groupId ?? null, c.revocation])).toEqual([
      ['user-upsert', '00unewhire0000000001', null, false],
      ['user-upsert', '00unewhire0000000001', null, false],
      ['membership-removed', '00ub0oNGTSWTBKOLGLNR', '00g1emaKYZTWRYYRRTSK', true],
    ]);
    expect(res.ignored).toBe(2);
    expect(new Set(res.changes.map((c) => c.dedupeKey)).size).toBe(3);
  });

  it('tolerates preview payloads with target: null', () => {
    const res = source().handleHook(post(fixtureText('okta/hook-preview.json')));
    expect(res).toMatchObject({ outcome: 'accepted', status: 200, changes: [], ignored: 1 });
  });

  it('rejects bodies that are not an event hook envelope', () => {
    expect(source().handleHook(post('not json'))).toMatchObject({ outcome: 'rejected', status: 400, changes: [] });
    expect(source().handleHook(post(JSON.stringify({ data: {} })))).toMatchObject({ outcome: 'rejected', status: 400 });
  });

  it('gives a redelivered event the identical dedupe key (the core dedupes on it)', () => {
    const body = fixtureText('okta/hook-deactivate.json');
    const first = source().handleHook(post(body)).changes;
    // Okta's one retry: same events, possibly a new envelope around them.
    const again = JSON.parse(body);
    again.eventId = 'e2e2e2e2-retry-envelope';
    again.eventTime = '2025-03-10T11:59:06.000Z';
    const second = source().handleHook(post(JSON.stringify(again))).changes;
    expect(first).toHaveLength(1);
    expect(second.map((c) => c.dedupeKey)).toEqual(first.map((c) => c.dedupeKey));
    // A different event about the same user does not collide.
    const other = JSON.parse(body);
    other.data.events[0].uuid = '00000000-0000-0000-0000-000000000001';
    expect(source().handleHook(post(JSON.stringify(other))).changes[0]!.dedupeKey).not.toBe(first[0]!.dedupeKey);
  });
});

describe('Okta confirmation through the API', () => {
  const user = fixture('okta/user-deprovisioned.json');

  function mockUserNow() {
    return nock(ORG)
      .get('/api/v1/users/00ub0oNGTSWTBKOLGLNR')
      .matchHeader('authorization', 'SSWS api-token')
      .reply(200, user)
      .get('/api/v1/users/00ub0oNGTSWTBKOLGLNR/groups')
      .reply(200, fixture('okta/user-groups-page1.json'), { Link: `<${ORG}/api/v1/users/00ub0oNGTSWTBKOLGLNR/groups?after=00g1emaKYZTWRYYRRTSK>; rel="next"` })
      .get('/api/v1/users/00ub0oNGTSWTBKOLGLNR/groups')
      .query({ after: '00g1emaKYZTWRYYRRTSK' })
      .reply(200, fixture('okta/user-groups-page2.json'));
  }

  it('maps the user and all group pages', async () => {
    mockUserNow();
    const u = await source().readUser('00ub0oNGTSWTBKOLGLNR');
    expect(u).toMatchObject({
      sourceId: 'okta-prod',
      id: '00ub0oNGTSWTBKOLGLNR',
      userName: 'isaac.brock@acme.example',
      externalId: '00ub0oNGTSWTBKOLGLNR',
      active: false,
      email: 'isaac.brock@acme.example',
      givenName: 'Isaac',
      familyName: 'Brock',
      displayName: 'Isaac Brock',
      roles: ['facility-lead'],
      attributes: { department: 'Facilities', employeeNumber: 'E-1042', employeeType: 'Employee', userType: 'Employee', site: 'HQ-North', status: 'DEPROVISIONED' },
      groups: [
        { id: '00g1emaKYZTWRYYRRTSK', displayName: 'Facilities - North' },
        { id: '00gak46y5hydV6NdM0g4', displayName: 'Everyone' },
      ],
    });
    expect(u!.raw).not.toHaveProperty('credentials');
    net.assertDone();
  });

  it('OAuth service app (private_key_jwt): token from /oauth2/v1/token, refreshed once on 401', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
    const forms: URLSearchParams[] = [];
    nock(ORG)
      .post('/oauth2/v1/token')
      .times(2)
      .reply(200, async (req: Request) => {
        forms.push(new URLSearchParams(await req.text()));
        return { token_type: 'Bearer', expires_in: 3600, access_token: `oat-${forms.length}`, scope: 'okta.users.read okta.groups.read okta.logs.read' };
      })
      .get('/api/v1/users/00u1')
      .matchHeader('authorization', 'Bearer oat-1')
      .reply(401, { errorCode: 'E0000011', errorSummary: 'Invalid token provided' })
      .get('/api/v1/users/00u1')
      .matchHeader('authorization', 'Bearer oat-2')
      .reply(200, { id: '00u1', status: 'ACTIVE', profile: { login: 'a@acme.example' } })
      .get('/api/v1/users/00u1/groups')
      .reply(200, []);
    const s = source(fakeTime(), { auth: { type: 'privateKey', clientId: '0oa1svcapp', privateKey, keyId: 'kid-1' } });
    expect((await s.readUser('00u1'))?.active).toBe(true);
    expect(forms.map((f) => [f.get('grant_type'), f.get('scope'), f.get('client_assertion_type')])).toEqual([
      ['client_credentials', 'okta.users.read okta.groups.read okta.logs.read', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'],
      ['client_credentials', 'okta.users.read okta.groups.read okta.logs.read', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'],
    ]);
    net.assertDone();
  });

  it('answers null for a deleted user', async () => {
    nock(ORG).get('/api/v1/users/00ugone').reply(404, { errorCode: 'E0000007', errorSummary: 'Not found: Resource not found: 00ugone (User)' });
    expect(await source().readUser('00ugone')).toBeNull();
  });

  it('out of order: deactivate, then a late membership add; confirming every hint yields the current state "deactivated"', async () => {
    const s = source();
    const hints = [
      ...s.handleHook(post(fixtureText('okta/hook-deactivate.json'))).changes,
      ...s.handleHook(post(fixtureText('okta/hook-membership-add-late.json'))).changes,
    ];
    expect(hints.map((h) => h.kind)).toEqual(['user-deactivated', 'membership-added']);
    // The late event still says "added to Facilities - North", published before the deactivation.
    // Confirmation ignores event state and reads Okta now — twice, once per hint, each time DEPROVISIONED.
    const states = [];
    for (const h of hints) {
      mockUserNow();
      const u = await s.readUser(h.userId!);
      states.push({ active: u!.active, status: u!.attributes.status });
      net.assertDone();
    }
    expect(states).toEqual([
      { active: false, status: 'DEPROVISIONED' },
      { active: false, status: 'DEPROVISIONED' },
    ]);
  });

  it('reads a group and streams its members', async () => {
    nock(ORG)
      .get('/api/v1/groups/00g1emaKYZTWRYYRRTSK')
      .reply(200, fixture('okta/groups.json')[0])
      .get('/api/v1/groups/00g1emaKYZTWRYYRRTSK/users')
      .query({ limit: '200' })
      .reply(200, fixture('okta/group-users.json'));
    const s = source();
    expect(await s.readGroup('00g1emaKYZTWRYYRRTSK')).toMatchObject({ id: '00g1emaKYZTWRYYRRTSK', displayName: 'Facilities - North' });
    const pages: string[][] = [];
    for await (const p of s.readGroupMembers('00g1emaKYZTWRYYRRTSK')) pages.push(p);
    expect(pages).toEqual([['00ub0oNGTSWTBKOLGLNR', '00ulostevent00000001']]);
  });
});

describe('Okta rate limits (X-Rate-Limit-*)', () => {
  it('waits for X-Rate-Limit-Reset after a 429 and retries', async () => {
    const time = fakeTime();
    const date = new Date(time.now()).toUTCString();
    const reset = String(Math.floor(time.now() / 1000) + 3);
    nock(ORG)
      .get('/api/v1/users/00u1')
      .reply(429, { errorCode: 'E0000047', errorSummary: 'API call exceeded rate limit due to too many requests.' }, {
        Date: date,
        'X-Rate-Limit-Limit': '600',
        'X-Rate-Limit-Remaining': '0',
        'X-Rate-Limit-Reset': reset,
      })
      .get('/api/v1/users/00u1')
      .reply(200, { id: '00u1', status: 'ACTIVE', profile: { login: 'a@acme.example' } }, { 'X-Rate-Limit-Limit': '600', 'X-Rate-Limit-Remaining': '599', 'X-Rate-Limit-Reset': reset })
      .get('/api/v1/users/00u1/groups')
      .reply(200, []);
    const u = await source(time).readUser('00u1');
    expect(u?.active).toBe(true);
    expect(time.sleeps).toEqual([4000]); // reset − Date + 1 s (second resolution)
    net.assertDone();
  });

  it('surfaces a long reset as rate_limited with retryAfterMs instead of blocking', async () => {
    const time = fakeTime();
    nock(ORG)
      .get('/api/v1/users/00u1')
      .reply(429, { errorCode: 'E0000047' }, {
        Date: new Date(time.now()).toUTCString(),
        'X-Rate-Limit-Limit': '600',
        'X-Rate-Limit-Remaining': '0',
        'X-Rate-Limit-Reset': String(Math.floor(time.now() / 1000) + 45),
      });
    const err = await source(time).readUser('00u1').catch((e) => e);
    expect(err).toBeInstanceOf(IdentitySourceError);
    expect(err).toMatchObject({ kind: 'rate_limited', status: 429, retryAfterMs: 46_000 });
    expect(time.sleeps).toEqual([]);
  });

  it('honours Remaining: 0 before sending: waits for the reset rather than spending a request on a 429', async () => {
    const time = fakeTime();
    const reset = String(Math.floor(time.now() / 1000) + 2);
    nock(ORG)
      .get('/api/v1/groups/00g1')
      .reply(200, { id: '00g1', profile: { name: 'G1' } }, { Date: new Date(time.now()).toUTCString(), 'X-Rate-Limit-Remaining': '0', 'X-Rate-Limit-Reset': reset })
      .get('/api/v1/groups/00g2')
      .reply(200, { id: '00g2', profile: { name: 'G2' } });
    const s = source(time);
    await s.readGroup('00g1');
    expect(time.sleeps).toEqual([]);
    await s.readGroup('00g2');
    expect(time.sleeps).toEqual([3000]);
    net.assertDone();
  });
});

describe('Okta reconciliation', () => {
  it('snapshot streams all user pages, groups and members, and completes with a System Log cursor; catches a lost event', async () => {
    const time = fakeTime();
    nock(ORG)
      .get('/api/v1/users')
      .query({ limit: '200' })
      .reply(200, fixture('okta/users-page1.json'), { Link: `<${ORG}/api/v1/users?after=00ub0oNGTSWTBKOLGLNS&limit=200>; rel="next"` })
      .get('/api/v1/users')
      .query({ after: '00ub0oNGTSWTBKOLGLNS', limit: '200' })
      .reply(200, fixture('okta/users-page2.json'))
      .get('/api/v1/groups')
      .query({ limit: '200' })
      .reply(200, fixture('okta/groups.json'))
      .get('/api/v1/groups/00g1emaKYZTWRYYRRTSK/users')
      .query({ limit: '200' })
      .reply(200, fixture('okta/group-users.json'));
    const records = await collect(source(time).readSnapshot());
    const users = records.filter((r): r is Extract<SnapshotRecord, { type: 'user' }> => r.type === 'user').map((r) => r.user);
    expect(users.map((u) => [u.id, u.active])).toEqual([
      ['00ub0oNGTSWTBKOLGLNR', true],
      ['00ub0oNGTSWTBKOLGLNS', false],
      ['00ulostevent00000001', true],
    ]);
    // The user whose hook delivery never arrived is in the snapshot.
    expect(users.find((u) => u.id === '00ulostevent00000001')).toMatchObject({ userName: 'lost.event@acme.example', attributes: { site: 'Plant-2' } });
    expect(records.filter((r) => r.type !== 'user')).toEqual([
      { type: 'group', group: expect.objectContaining({ id: '00g1emaKYZTWRYYRRTSK', displayName: 'Facilities - North' }) },
      { type: 'members', groupId: '00g1emaKYZTWRYYRRTSK', userIds: ['00ub0oNGTSWTBKOLGLNR', '00ulostevent00000001'] },
      { type: 'complete', cursor: 'since:2025-03-10T11:59:00.000Z', users: 3, groups: 1, membership: 'members' },
    ]);
    net.assertDone();
  });

  it('a snapshot that fails midway never completes', async () => {
    nock(ORG)
      .get('/api/v1/users')
      .query(true)
      .reply(200, fixture('okta/users-page1.json'), { Link: `<${ORG}/api/v1/users?after=x&limit=200>; rel="next"` })
      .get('/api/v1/users')
      .query({ after: 'x', limit: '200' })
      .reply(500, { errorCode: 'E0000009', errorSummary: 'Internal Server Error' });
    const seen: SnapshotRecord[] = [];
    const err = await (async () => {
      for await (const r of source().readSnapshot()) seen.push(r);
    })().catch((e) => e);
    expect(err).toMatchObject({ kind: 'retryable', status: 500 });
    expect(seen.some((r) => r.type === 'complete')).toBe(false);
  });

  it('delta polls the System Log from the cursor, with hook-compatible dedupe keys, and stores the next link', async () => {
    const next = `${ORG}/api/v1/logs?after=1741607970000_1&limit=1000&sortOrder=ASCENDING`;
    nock(ORG)
      .get('/api/v1/logs')
      .query((q) => q.since === '2025-03-10T11:59:00.000Z' && q.sortOrder === 'ASCENDING' && String(q.filter).includes('eventType eq "user.lifecycle.deactivate"'))
      .reply(200, fixture('okta/system-log-page.json'), { Link: `<${ORG}/api/v1/logs?since=2025-03-10T11%3A59%3A00.000Z>; rel="self", <${next}>; rel="next"` });
    const s = source();
    const res = await s.readDelta('since:2025-03-10T11:59:00.000Z');
    expect(res).toMatchObject({ status: 'ok', cursor: next, more: false });
    if (res.status !== 'ok') throw new Error('unreachable');
    expect(res.changes.map((c) => [c.kind, c.userId])).toEqual([
      ['user-deactivated', '00ub0oNGTSWTBKOLGLNR'],
      ['user-upsert', '00ulostevent00000001'],
    ]);
    const hookKey = s.handleHook(post(fixtureText('okta/hook-deactivate.json'))).changes[0]!.dedupeKey;
    expect(res.changes[0]!.dedupeKey).toBe(hookKey);
    net.assertDone();
  });

  it('delta signals resync for a cursor Okta rejects or one pointing elsewhere', async () => {
    nock(ORG).get('/api/v1/logs').query(true).reply(400, { errorCode: 'E0000001', errorSummary: 'Api validation failed: since' });
    expect(await source().readDelta('since:2024-01-01T00:00:00.000Z')).toMatchObject({ status: 'resync' });
    expect(await source().readDelta('https://evil.example/api/v1/logs?x=1')).toMatchObject({ status: 'resync' });
  });
});
