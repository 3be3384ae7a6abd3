import SCIMMY from 'scimmy';
import { describe, expect, it } from 'vitest';
import { TokenAuthenticator, hashToken } from '../../src/http/scim/auth.ts';
import { ScimHttpError } from '../../src/http/scim/errors.ts';
import { groupFilters, userFilters, wantsAttribute } from '../../src/http/scim/filters.ts';
import { splitMemberOps } from '../../src/http/scim/members.ts';
import { normalisePatch, normaliseResource } from '../../src/http/scim/normalise.ts';
import { RateLimiter } from '../../src/http/scim/rate-limit.ts';

const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
const f = (s: string) => new SCIMMY.Types.Filter(s);

function scimErrorOf(fn: () => unknown): ScimHttpError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ScimHttpError);
    return e as ScimHttpError;
  }
  throw new Error('expected an error');
}

describe('normalise', () => {
  it('strips nulls, converts string booleans and plain-string roles, drops read-only echoes', () => {
    const out = normaliseResource({
      userName: 'u',
      active: 'False',
      phoneNumbers: null,
      emails: [{ value: 'a@b', Primary: 'True', display: null }],
      roles: ['r1', { value: 'r2' }],
      id: 'x',
      meta: { created: 'y' },
      groups: [],
    });
    expect(out).toEqual({ userName: 'u', active: false, emails: [{ value: 'a@b', Primary: true }], roles: [{ value: 'r1' }, { value: 'r2' }] });
  });

  it('moves every manager form into the enterprise extension as {value}', () => {
    expect(normaliseResource({ manager: 'm1' })).toEqual({ [ENTERPRISE]: { manager: { value: 'm1' } } });
    expect(normaliseResource({ [ENTERPRISE]: { Manager: { Value: 'm2' } } })).toEqual({ [ENTERPRISE]: { Manager: { value: 'm2' } } });
    expect(normaliseResource({ 'urn:ietf:params:scim:schemas:extension:enterprise:2.0User': { department: 'd' } })).toEqual({ [ENTERPRISE]: { department: 'd' } });
    const p = normalisePatch({
      Operations: [
        { op: 'Add', path: 'manager', value: [{ $ref: 'x', value: 'm3' }] },
        { op: 'replace', path: `${ENTERPRISE}:manager`, value: 'm4' },
        { op: 'Replace', value: { [`${ENTERPRISE}:manager`]: ['m5'] } },
      ],
    }) as { schemas: string[]; Operations: unknown[] };
    expect(p.schemas).toEqual(['urn:ietf:params:scim:api:messages:2.0:PatchOp']);
    expect(p.Operations).toEqual([
      { op: 'add', path: `${ENTERPRISE}:manager`, value: { value: 'm3' } },
      { op: 'replace', path: `${ENTERPRISE}:manager`, value: { value: 'm4' } },
      { op: 'replace', value: { [`${ENTERPRISE}:manager`]: { value: 'm5' } } },
    ]);
  });

  it('converts active strings in PATCH values and lower-cases ops', () => {
    const p = normalisePatch({
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [
        { op: 'Replace', path: 'active', value: 'False' },
        { op: 'replace', value: { active: 'true' } },
      ],
    }) as { Operations: unknown[] };
    expect(p.Operations).toEqual([
      { op: 'replace', path: 'active', value: false },
      { op: 'replace', value: { active: true } },
    ]);
  });
});

describe('filters', () => {
  it('translates eq/and on supported user attributes', () => {
    expect(userFilters(f('userName eq "A" and active eq true'))).toEqual([
      { attr: 'userName', value: 'A' },
      { attr: 'active', value: true },
    ]);
    expect(userFilters(f('emails[type eq "work"].value eq "a@b"'))).toEqual([{ attr: 'email', value: 'a@b' }]);
    expect(userFilters(f('urn:ietf:params:scim:schemas:core:2.0:User:externalId eq "e"'))).toEqual([{ attr: 'externalId', value: 'e' }]);
    expect(userFilters(undefined)).toEqual([]);
    expect(groupFilters(f('displayName eq "g" and members.value eq "u"'))).toEqual([
      { attr: 'displayName', value: 'g' },
      { attr: 'member', value: 'u' },
    ]);
  });

  it('refuses what the store cannot express', () => {
    for (const expr of ['userName co "a"', 'userName eq "a" or userName eq "b"', 'emails[type eq "home"].value eq "x"', 'title eq "x"', 'active eq "maybe"']) {
      expect(scimErrorOf(() => userFilters(f(expr))).scimType).toBe('invalidFilter');
    }
    expect(scimErrorOf(() => groupFilters(f('members.display eq "x"'))).scimType).toBe('invalidFilter');
  });

  it('tells whether members are wanted', () => {
    // scimmy's typings only declare the (id, config) form of the constructor.
    const attrs = (q: Record<string, string>) => (new (SCIMMY.Resources.Group as unknown as new (q: object) => { attributes: unknown })(q)).attributes;
    expect(wantsAttribute(undefined, 'members', '')).toBe(true);
    expect(wantsAttribute(attrs({ excludedAttributes: 'members' }), 'members', '')).toBe(false);
    expect(wantsAttribute(attrs({ excludedAttributes: 'Members,externalId' }), 'members', '')).toBe(false);
    expect(wantsAttribute(attrs({ excludedAttributes: 'externalId' }), 'members', '')).toBe(true);
    expect(wantsAttribute(attrs({ attributes: 'displayName' }), 'members', '')).toBe(false);
    expect(wantsAttribute(attrs({ attributes: 'displayName,members' }), 'members', '')).toBe(true);
  });
});

describe('membership ops', () => {
  it('folds add/remove/replace in order and leaves other ops alone', () => {
    const { delta, rest } = splitMemberOps([
      { op: 'add', path: 'members', value: [{ value: 'a' }, { value: 'b' }] },
      { op: 'remove', path: 'members', value: [{ value: 'b' }] },
      { op: 'remove', path: 'members[value eq "c"]' },
      { op: 'replace', path: 'displayName', value: 'x' },
    ]);
    expect(delta).toEqual({ add: new Set(['a']), remove: new Set(['b', 'c']), replaceWith: null });
    expect(rest).toEqual([{ op: 'replace', path: 'displayName', value: 'x' }]);
  });

  it('turns replace and bare remove into a full membership', () => {
    expect(splitMemberOps([{ op: 'replace', path: 'members', value: [{ value: 'a' }] }, { op: 'add', path: 'members', value: { value: 'b' } }]).delta!.replaceWith).toEqual(
      new Set(['a', 'b']),
    );
    expect(splitMemberOps([{ op: 'remove', path: 'members' }]).delta!.replaceWith).toEqual(new Set());
  });

  it('takes members out of a path-less value and keeps the rest', () => {
    const { delta, rest } = splitMemberOps([{ op: 'replace', value: { displayName: 'n', members: [{ value: 'a' }] } }]);
    expect(delta!.replaceWith).toEqual(new Set(['a']));
    expect(rest).toEqual([{ op: 'replace', value: { displayName: 'n' } }]);
  });

  it('refuses member filters it cannot serve without loading the group', () => {
    expect(scimErrorOf(() => splitMemberOps([{ op: 'remove', path: 'members[display eq "x"]' }])).scimType).toBe('invalidPath');
    expect(scimErrorOf(() => splitMemberOps([{ op: 'add', path: 'members[value eq "x"]', value: [] }])).scimType).toBe('invalidPath');
    expect(scimErrorOf(() => splitMemberOps([{ op: 'add', path: 'members', value: [{ display: 'no value' }] }])).scimType).toBe('invalidValue');
  });
});

describe('auth and rate limit', () => {
  it('matches a bearer token by its digest only', () => {
    const auth = new TokenAuthenticator([
      { id: 'a', idp: 'entra', scim: { tokenSha256: hashToken('ta'), rateLimitPerSecond: 5 } },
      { id: 'b', idp: 'generic' },
    ]);
    expect(auth.authenticate('Bearer ta')).toEqual({ sourceId: 'a', rateLimitPerSecond: 5 });
    expect(auth.authenticate('bearer ta').sourceId).toBe('a');
    for (const h of [undefined, 'Bearer tb', 'Basic dGE=', 'Bearer ', 'ta']) expect(scimErrorOf(() => auth.authenticate(h)).status).toBe(401);
  });

  it('refills the bucket over time', () => {
    let now = 0;
    const rl = new RateLimiter(() => now);
    expect(rl.take('s', 2).allowed).toBe(true);
    expect(rl.take('s', 2).allowed).toBe(true);
    const denied = rl.take('s', 2);
    expect(denied).toMatchObject({ allowed: false, remaining: 0, retryAfterSeconds: 1, limit: 2 });
    expect(RateLimiter.headers(denied)).toMatchObject({ 'retry-after': '1', 'x-rate-limit-retry-after-seconds': '1', 'x-rate-limit-limit': '2' });
    now = 500;
    expect(rl.take('s', 2).allowed).toBe(true);
    expect(rl.take('s', 2).allowed).toBe(false);
    expect(rl.take('other', 2).allowed).toBe(true);
  });
});
