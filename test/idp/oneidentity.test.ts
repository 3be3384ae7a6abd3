import nock from 'nock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SnapshotRecord } from '../../src/ports/identity-source.ts';
import { createOneIdentitySource } from '../../adapters/idp/oneidentity/index.ts';
import { collect, fakeTime, fixture, hookReq, silentLog, useNock } from './helpers.ts';

const HOST = 'https://oneim.acme.example';
const SCIM = '/ApiServer/scim/v2';
const JANE = '6f4a5c0e-1e43-4c3b-9d9e-0b0f3c1a2d01';
const LOST = '6f4a5c0e-1e43-4c3b-9d9e-0b0f3c1a2d03';
const basic = `Basic ${Buffer.from('svc-lockstep:oneim-pass').toString('base64')}`;

function source(over: Record<string, unknown> = {}, time = fakeTime()) {
  return createOneIdentitySource(
    { baseUrl: HOST, auth: { type: 'basic', userName: 'svc-lockstep', password: 'oneim-pass' }, pageSize: 2, http: { maxRetries: 1, maxWaitMs: 5_000, timeoutMs: 5_000 }, ...over } as never,
    { sourceId: 'oneim', log: silentLog, sleep: time.sleep, now: time.now },
  );
}

const net = useNock();
beforeEach(() => net.reset());
afterEach(() => net.reset());

describe('One Identity Manager SCIM reconciliation', () => {
  it('pages Users and Groups with startIndex/count until totalResults and maps the enterprise extension', async () => {
    nock(HOST)
      .get(`${SCIM}/Users`)
      .query({ startIndex: '1', count: '2' })
      .matchHeader('authorization', basic)
      .matchHeader('accept', /application\/scim\+json/)
      .reply(200, fixture('oneidentity/users-page1.json'), { 'Content-Type': 'application/scim+json' })
      .get(`${SCIM}/Users`)
      .query({ startIndex: '3', count: '2' })
      .reply(200, fixture('oneidentity/users-page2.json'), { 'Content-Type': 'application/scim+json' })
      .get(`${SCIM}/Groups`)
      .query({ startIndex: '1', count: '2' })
      .reply(200, fixture('oneidentity/groups-page1.json'), { 'Content-Type': 'application/scim+json' });
    const records = await collect(source().readSnapshot());
    const users = records.filter((r): r is Extract<SnapshotRecord, { type: 'user' }> => r.type === 'user').map((r) => r.user);
    expect(users).toHaveLength(3);
    expect(users[0]).toMatchObject({
      sourceId: 'oneim',
      id: JANE,
      userName: 'jdoe',
      externalId: 'EMP-30021',
      active: true,
      email: 'jane.doe@acme.example', // the primary one, not the first
      givenName: 'Jane',
      familyName: 'Doe',
      displayName: 'Doe, Jane',
      roles: ['control-room'],
      attributes: {
        department: 'Operations',
        division: 'Grid',
        organization: 'Acme Energy',
        costCenter: 'CC-4410',
        employeeNumber: '30021',
        title: 'Shift Supervisor',
        userType: 'Employee',
        employeeType: 'Employee',
      },
    });
    expect(users[0]!.groups).toBeUndefined();
    expect(users[1]).toMatchObject({ userName: 'rleaver', active: false, email: 'rita.leaver@acme.example' });
    expect(users[2]).toMatchObject({ id: LOST, userName: 'lost.event', active: true, attributes: { department: 'Maintenance' } }); // never pushed, found by reconciliation
    expect(records.filter((r) => r.type !== 'user')).toEqual([
      { type: 'group', group: expect.objectContaining({ id: 'a3c0b1d2-7e8f-4a5b-9c6d-0e1f2a3b4c5d', displayName: 'Substation North Access' }) },
      { type: 'members', groupId: 'a3c0b1d2-7e8f-4a5b-9c6d-0e1f2a3b4c5d', userIds: [JANE, LOST] }, // the nested group is not a user
      { type: 'complete', users: 3, groups: 1, membership: 'members' },
    ]);
    net.assertDone();
  });

  it('stops on an empty page even if totalResults promises more (no endless loop)', async () => {
    nock(HOST)
      .get(`${SCIM}/Users`)
      .query(true)
      .reply(200, { ...fixture('oneidentity/users-page1.json'), totalResults: 10 })
      .get(`${SCIM}/Users`)
      .query({ startIndex: '3', count: '2' })
      .reply(200, { schemas: ['urn:ietf:params:scim:api:messages:2.0:ListResponse'], totalResults: 10, Resources: [] })
      .get(`${SCIM}/Groups`)
      .query(true)
      .reply(200, { totalResults: 0, Resources: [] });
    const records = await collect(source().readSnapshot());
    expect(records.at(-1)).toEqual({ type: 'complete', users: 2, groups: 0, membership: 'members' });
  });

  it('confirms a user with its groups attribute, or by filtering Groups on members.value', async () => {
    nock(HOST)
      .get(`${SCIM}/Users/${JANE}`)
      .reply(200, fixture('oneidentity/user-with-groups.json'))
      .get(`${SCIM}/Users/${LOST}`)
      .reply(200, fixture('oneidentity/user-without-groups.json'))
      .get(`${SCIM}/Groups`)
      .query({ filter: `members.value eq "${LOST}"`, attributes: 'id,displayName', startIndex: '1', count: '2' })
      .reply(200, fixture('oneidentity/groups-of-user.json'));
    const s = source();
    expect((await s.readUser(JANE))?.groups).toEqual([{ id: 'a3c0b1d2-7e8f-4a5b-9c6d-0e1f2a3b4c5d', displayName: 'Substation North Access' }]);
    expect((await s.readUser(LOST))?.groups).toEqual([{ id: 'a3c0b1d2-7e8f-4a5b-9c6d-0e1f2a3b4c5d', displayName: 'Substation North Access' }]);
    net.assertDone();
  });

  it('a user that is gone reads as null', async () => {
    nock(HOST)
      .get(`${SCIM}/Users/nope`)
      .reply(404, { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '404', detail: 'Resource nope not found' });
    expect(await source().readUser('nope')).toBeNull();
  });

  it('OAuth client credentials: fetches a token, refreshes it once on 401', async () => {
    const forms: URLSearchParams[] = [];
    let n = 0;
    nock(HOST)
      .post('/AppServer/oauth/token')
      .times(2)
      .reply(200, async (req: Request) => {
        forms.push(new URLSearchParams(await req.text()));
        return { access_token: `oneim-token-${++n}`, token_type: 'Bearer', expires_in: 3600 };
      })
      .get(`${SCIM}/Users/${JANE}`)
      .matchHeader('authorization', 'Bearer oneim-token-1')
      .reply(401, { schemas: ['urn:ietf:params:scim:api:messages:2.0:Error'], status: '401' })
      .get(`${SCIM}/Users/${JANE}`)
      .matchHeader('authorization', 'Bearer oneim-token-2')
      .reply(200, fixture('oneidentity/user-with-groups.json'));
    const s = source({ auth: { type: 'oauth', tokenUrl: `${HOST}/AppServer/oauth/token`, clientId: 'lockstep', clientSecret: 's3cret', scope: 'scim' } });
    expect((await s.readUser(JANE))?.userName).toBe('jdoe');
    expect(Object.fromEntries(forms[0]!)).toEqual({ grant_type: 'client_credentials', client_id: 'lockstep', client_secret: 's3cret', scope: 'scim' });
    net.assertDone();
  });

  it('has no webhook and no delta', async () => {
    const s = source();
    expect(s.capabilities).toMatchObject({ hooks: false, delta: false });
    expect(s.handleHook(hookReq({ method: 'POST', body: '{}' }))).toMatchObject({ outcome: 'rejected', status: 404, changes: [] });
    await expect(s.readDelta('x')).rejects.toMatchObject({ kind: 'unsupported' });
  });
});
