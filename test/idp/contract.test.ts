import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import nock from 'nock';
import type { Change, HookRequest, HookResult, IdentitySource } from '../../src/ports/identity-source.ts';
import { HOOK_ROUTES, createIdentitySource, identitySourceSchemas } from '../../adapters/idp/index.ts';
import { fakeTime, fixtureText, hookReq, silentLog } from './helpers.ts';

/**
 * The IdentitySource contract, checked the same way for every adapter: `handleHook` is
 * synchronous, never throws, rejects what it cannot authenticate with no changes and no tasks,
 * and every change it emits is well-formed with a unique dedupe key.
 */

const basic = `Basic ${Buffer.from('isc-trigger:trigger-password-0123456789').toString('base64')}`;

interface Case {
  kind: 'okta' | 'entra' | 'sailpoint' | 'oneidentity';
  config: Record<string, unknown>;
  /** A valid, authenticated delivery from the fixtures. */
  valid?: () => HookRequest;
  /** Makes a request authenticated (for the garbage-body checks). */
  auth: (r: HookRequest) => HookRequest;
}

const cases: Case[] = [
  {
    kind: 'okta',
    config: { orgUrl: 'https://acme.okta.com', auth: { type: 'ssws', token: 't' }, hook: { secret: 'okta-hook-secret-0123456789abcdef' } },
    valid: () => hookReq({ headers: { authorization: 'okta-hook-secret-0123456789abcdef' }, body: fixtureText('okta/hook-batch.json') }),
    auth: (r) => ({ ...r, headers: { ...r.headers, authorization: 'okta-hook-secret-0123456789abcdef' } }),
  },
  {
    kind: 'entra',
    config: { tenantId: 't', clientId: 'c', credential: { type: 'secret', clientSecret: 's' }, hook: { clientState: 'entra-client-state-0123456789' } },
    valid: () => hookReq({ body: fixtureText('entra/notification-user-updated.json') }),
    auth: (r) => r, // Entra authenticates per item (clientState in the body)
  },
  {
    kind: 'sailpoint',
    config: {
      apiUrl: 'https://acme.api.identitynow.com',
      clientId: 'c',
      clientSecret: 's',
      hookAuth: { type: 'basic', userName: 'isc-trigger', password: 'trigger-password-0123456789' },
    },
    valid: () => hookReq({ headers: { authorization: basic }, body: fixtureText('sailpoint/trigger-identity-attributes-changed-leaver.json') }),
    auth: (r) => ({ ...r, headers: { ...r.headers, authorization: basic } }),
  },
  {
    kind: 'oneidentity',
    config: { baseUrl: 'https://oneim.acme.example', auth: { type: 'basic', userName: 'u', password: 'p' } },
    auth: (r) => r,
  },
];

function build(c: Case): IdentitySource {
  const t = fakeTime();
  return createIdentitySource(c.kind, c.config, { sourceId: `${c.kind}-1`, log: silentLog, now: t.now, sleep: t.sleep });
}

function garbage(): HookRequest[] {
  const bodies: Array<string | Buffer> = [
    '',
    'null',
    '[]',
    '"x"',
    '{}',
    '{"data":null}',
    '{"data":{"events":"nope"}}',
    '{"data":{"events":[null,1,"x",{"eventType":5},{"eventType":"user.lifecycle.deactivate","target":"x"}]}}',
    '{"value":[null,1,{"clientState":null}]}',
    '{"identity":{"id":7}}',
    '{"identity":null,"changes":{}}',
    '{'.repeat(5000),
    randomBytes(512),
  ];
  const out: HookRequest[] = [];
  for (const b of bodies)
    for (const method of ['POST', 'GET', 'PUT', 'DELETE'])
      out.push({ method, headers: { 'content-type': 'application/json' }, query: {}, rawBody: Buffer.isBuffer(b) ? b : Buffer.from(b) });
  return out;
}

function checkChange(c: Change, sourceId: string): void {
  expect(c.sourceId).toBe(sourceId);
  expect(c.dedupeKey.startsWith(`${sourceId.split('-')[0]}:${sourceId}:`)).toBe(true);
  expect(c.eventId.length).toBeGreaterThan(0);
  expect(c.eventType.length).toBeGreaterThan(0);
  expect(new Date(c.occurredAt).toISOString()).toBe(c.occurredAt);
  if (c.kind === 'group-changed') expect(c.groupId).toBeTruthy();
  else expect(c.userId).toBeTruthy();
  if (c.kind.startsWith('membership-')) expect(c.groupId).toBeTruthy();
  expect(typeof c.revocation).toBe('boolean');
}

beforeAll(() => nock.disableNetConnect());
afterAll(() => nock.cleanAll());

describe.each(cases)('IdentitySource contract: $kind', (c) => {
  it('exports a config schema, a factory and its hook routes', () => {
    expect(identitySourceSchemas[c.kind].safeParse(c.config).success).toBe(true);
    const s = build(c);
    expect(s.kind).toBe(c.kind);
    expect(s.id).toBe(`${c.kind}-1`);
    expect(HOOK_ROUTES[c.kind].length > 0).toBe(s.capabilities.hooks);
  });

  it('handleHook is synchronous and never throws on garbage; unauthenticated garbage yields nothing', () => {
    const s = build(c);
    for (const req of garbage()) {
      let res!: HookResult;
      expect(() => (res = s.handleHook(req))).not.toThrow();
      expect(typeof (res as unknown as { then?: unknown }).then).toBe('undefined');
      if (res.outcome === 'rejected') {
        expect(res.changes).toEqual([]);
        expect(res.tasks).toEqual([]);
        expect(res.status).toBeGreaterThanOrEqual(400);
      }
      if (c.kind !== 'entra' && req.method === 'POST') expect(res.outcome).toBe('rejected'); // no credentials presented
      expect(res.changes).toEqual([]);
    }
  });

  it('authenticated garbage is rejected or yields only well-formed changes', () => {
    const s = build(c);
    for (const req of garbage()) {
      const res = s.handleHook(c.auth(req));
      if (res.outcome === 'rejected') expect(res.changes).toEqual([]);
      res.changes.forEach((ch) => checkChange(ch, s.id));
    }
  });

  if (c.valid)
    it('a valid delivery yields well-formed hints with unique dedupe keys, and is deterministic', () => {
    const s = build(c);
    const a = s.handleHook(c.valid!());
    expect(a.outcome).toBe('accepted');
    expect(a.status).toBeLessThan(300);
    expect(a.changes.length).toBeGreaterThan(0);
    a.changes.forEach((ch) => checkChange(ch, s.id));
    expect(new Set(a.changes.map((ch) => ch.dedupeKey)).size).toBe(a.changes.length);
    expect(s.handleHook(c.valid!()).changes).toEqual(a.changes);
  });
});
