import { describe, expect, it } from 'vitest';
import { sourceSchema } from '../../src/config/schema.ts';
import { TokenAuthenticator, hashToken } from '../../src/http/scim/auth.ts';
import { ScimHttpError } from '../../src/http/scim/errors.ts';
import { formatFilter, matches, parseFilter, parsePatchPath } from '../../src/http/scim/filter.ts';
import { memberChange, splitMemberOps } from '../../src/http/scim/members.ts';
import { normalisePatch, normaliseResource } from '../../src/http/scim/normalise.ts';
import { activeOnly, prepareOps } from '../../src/http/scim/patch.ts';
import { project, projectionOf, wants } from '../../src/http/scim/projection.ts';
import { groupFilter, userFilter } from '../../src/http/scim/query.ts';
import { RateLimiter } from '../../src/http/scim/rate-limit.ts';
import { newId } from '../../src/store/ids.ts';

const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
const CORE_USER = 'urn:ietf:params:scim:schemas:core:2.0:User';

function scimErrorOf(fn: () => unknown): ScimHttpError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ScimHttpError);
    return e as ScimHttpError;
  }
  throw new Error('expected an error');
}

describe('filter parser', () => {
  it('parses precedence, grouping, not and value paths into a tree', () => {
    expect(parseFilter('userName eq "a" or userName eq "b" and active eq true')).toEqual({
      kind: 'or',
      items: [
        { kind: 'cmp', path: { attr: 'userName' }, op: 'eq', value: 'a' },
        {
          kind: 'and',
          items: [
            { kind: 'cmp', path: { attr: 'userName' }, op: 'eq', value: 'b' },
            { kind: 'cmp', path: { attr: 'active' }, op: 'eq', value: true },
          ],
        },
      ],
    });
    // Nested parentheses (scimmy 1.3.5 fails on these) and escaped quotes.
    const nested = parseFilter('userName eq "a" or (userName eq "b\\"c" and (active eq true or not (displayName co "x")))');
    expect(formatFilter(nested)).toBe('userName eq "a" or userName eq "b\\"c" and (active eq true or not (displayName co "x"))');
    expect(parseFilter('emails[type eq "work" and value co "@x"]')).toMatchObject({ kind: 'valuePath', path: { attr: 'emails' }, filter: { kind: 'and' } });
    expect(parseFilter(`${CORE_USER}:name.familyName EQ "F"`)).toEqual({ kind: 'cmp', path: { urn: CORE_USER, attr: 'name', sub: 'familyName' }, op: 'eq', value: 'F' });
    expect(parseFilter('title pr')).toEqual({ kind: 'cmp', path: { attr: 'title' }, op: 'pr' });
    expect(parseFilter("userName eq 'single'")).toMatchObject({ value: 'single' });
    expect(parseFilter('x eq 12 and y eq null and z eq False')).toMatchObject({ items: [{ value: 12 }, { value: null }, { value: false }] });
  });

  it("reads Entra's emails[type eq \"work\"].value eq form and unquoted values", () => {
    expect(parseFilter('emails[type eq "work"].value eq "a@b"')).toEqual({
      kind: 'valuePath',
      path: { attr: 'emails' },
      filter: {
        kind: 'and',
        items: [
          { kind: 'cmp', path: { attr: 'type' }, op: 'eq', value: 'work' },
          { kind: 'cmp', path: { attr: 'value' }, op: 'eq', value: 'a@b' },
        ],
      },
    });
    expect(parseFilter('meta.Created gt 2015-10-10T14:38:21.8617979-07:00')).toMatchObject({ op: 'gt', value: '2015-10-10T14:38:21.8617979-07:00' });
  });

  it('refuses malformed filters with 400 invalidFilter', () => {
    for (const f of ['', 'userName', 'userName eq', 'userName xx "a"', '(userName eq "a"', 'userName eq "a")', 'userName eq "a" and', 'emails[type eq "w"', '"a" eq "b"', 'user%name eq "a"', 'userName eq "unterminated']) {
      expect(scimErrorOf(() => parseFilter(f)).scimType, f).toBe('invalidFilter');
    }
    // Bounded: nesting depth and number of terms.
    expect(scimErrorOf(() => parseFilter('('.repeat(40) + 'a eq "b"' + ')'.repeat(40))).message).toMatch(/deeper/);
    expect(scimErrorOf(() => parseFilter(Array(300).fill('a eq "b"').join(' or '))).message).toMatch(/terms/);
  });

  it('parses PATCH paths', () => {
    expect(parsePatchPath('emails[type eq "work"].value')).toMatchObject({ path: { attr: 'emails' }, filter: { kind: 'cmp' }, sub: 'value' });
    expect(parsePatchPath(`${ENTERPRISE}:manager`)).toEqual({ path: { urn: ENTERPRISE, attr: 'manager' } });
    expect(parsePatchPath('name.givenName')).toEqual({ path: { attr: 'name', sub: 'givenName' } });
    expect(scimErrorOf(() => parsePatchPath('members[value eq]')).scimType).toBe('invalidPath');
    expect(scimErrorOf(() => parsePatchPath('emails[type eq "w"]x')).scimType).toBe('invalidPath');
  });

  it('evaluates a filter on an element, case-insensitively and with string booleans', () => {
    const el = { type: 'Work', value: 'A@B.com', primary: true };
    expect(matches(parseFilter('type eq "work" and value ew "b.COM"'), el)).toBe(true);
    expect(matches(parseFilter('primary eq "True"'), el)).toBe(true);
    expect(matches(parseFilter('primary eq false or display pr'), el)).toBe(false);
  });
});

describe('filters to store queries', () => {
  it('maps user attributes to indexed fields', () => {
    expect(userFilter('userName eq "A" and active eq true')).toEqual({
      and: [
        { field: 'userName', op: 'eq', value: 'A' },
        { field: 'active', op: 'eq', value: true },
      ],
    });
    expect(userFilter('emails[type eq "work"].value eq "a@b"')).toEqual({
      sub: 'emails',
      where: {
        and: [
          { field: 'type', op: 'eq', value: 'work' },
          { field: 'value', op: 'eq', value: 'a@b' },
        ],
      },
    });
    expect(userFilter('emails.value co "x"')).toEqual({ sub: 'emails', where: { field: 'value', op: 'co', value: 'x' } });
    expect(userFilter('emails co "x"')).toEqual({ sub: 'emails', where: { field: 'value', op: 'co', value: 'x' } });
    expect(userFilter(`${CORE_USER}:externalId eq "e"`)).toEqual({ field: 'externalId', op: 'eq', value: 'e' });
    expect(userFilter('NAME.FAMILYNAME sw "x"')).toEqual({ field: 'familyName', op: 'sw', value: 'x' });
    expect(userFilter('meta.lastModified ge "2024-01-01T00:00:00Z"')).toEqual({ field: 'lastModified', op: 'ge', value: '2024-01-01T00:00:00Z' });
    expect(userFilter('not (groups.value eq "g")')).toEqual({ not: { field: 'group', op: 'eq', value: 'g' } });
    expect(groupFilter('displayName eq "g" and members[value eq "u"]')).toEqual({
      and: [
        { field: 'displayName', op: 'eq', value: 'g' },
        { field: 'member', op: 'eq', value: 'u' },
      ],
    });
  });

  it('refuses what no index serves, naming what is supported', () => {
    for (const expr of ['title eq "x"', `${ENTERPRISE}:department eq "x"`, 'emails.display eq "x"', 'name eq "x"', 'phoneNumbers.value eq "1"', 'groups.value sw "x"']) {
      const e = scimErrorOf(() => userFilter(expr));
      expect(e.scimType, expr).toBe('invalidFilter');
    }
    expect(scimErrorOf(() => userFilter('title eq "x"')).message).toContain('supported: id, userName');
    expect(scimErrorOf(() => groupFilter('members.display eq "x"')).scimType).toBe('invalidFilter');
    expect(scimErrorOf(() => groupFilter('members[value co "x"]')).scimType).toBe('invalidFilter');
  });
});

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

  it("decodes Entra's JSON-encoded app role assignments", () => {
    const v = '{"id":"06b07648-ecfe-589f-9d2f-6325724a46ee","value":"25","displayName":"Role1234"}';
    const p = normalisePatch({ Operations: [{ op: 'Add', path: 'roles', value: [{ value: v }] }] }) as { Operations: unknown[] };
    expect(p.Operations).toEqual([{ op: 'add', path: 'roles', value: [{ value: '25', display: 'Role1234' }] }]);
    expect(normaliseResource({ roles: [v] })).toEqual({ roles: [{ value: '25', display: 'Role1234' }] });
    // Not JSON: kept as given.
    expect(normaliseResource({ roles: [{ value: '{not json' }] })).toEqual({ roles: [{ value: '{not json' }] });
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

  it('converts active strings in PATCH values, lower-cases ops and drops keys RFC 7644 does not define', () => {
    const p = normalisePatch({
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [
        { op: 'Replace', path: 'active', value: 'False' },
        { op: 'replace', value: { active: 'true' } },
        { name: 'addMember', op: 'add', path: 'members', value: [] },
        { op: 'add', path: 'roles[primary eq "True"].primary', value: 'True' },
      ],
    }) as { Operations: unknown[] };
    expect(p.Operations).toEqual([
      { op: 'replace', path: 'active', value: false },
      { op: 'replace', value: { active: true } },
      { op: 'add', path: 'members', value: [] },
      { op: 'add', path: 'roles[primary eq "True"].primary', value: true },
    ]);
  });
});

describe('PATCH preparation', () => {
  it('recognises deactivation and re-activation (and password sync) as active-only', () => {
    expect(activeOnly([{ op: 'replace', path: 'active', value: false }])).toEqual({ active: false });
    expect(activeOnly([{ op: 'replace', value: { active: true, password: 'x' } }])).toEqual({ active: true });
    expect(activeOnly([{ op: 'replace', value: { password: 'x' } }])).toEqual({ active: undefined });
    expect(activeOnly([{ op: 'replace', path: `${CORE_USER}:active`, value: true }])).toEqual({ active: true });
    expect(activeOnly([{ op: 'replace', value: { active: false, displayName: 'x' } }])).toBeUndefined();
    expect(activeOnly([{ op: 'remove', path: 'active' }])).toBeUndefined();
    expect(activeOnly([{ op: 'replace', path: 'active', value: 'maybe' }])).toBeUndefined();
  });

  it('turns a filtered add/replace with no matching element into an add of that element', () => {
    const current = { userName: 'u', emails: [{ value: 'a@b', type: 'work' }], roles: [] };
    expect(
      prepareOps(current, [
        { op: 'add', path: 'phoneNumbers[type eq "work"].value', value: '123' },
        { op: 'replace', path: 'phoneNumbers[type eq "work"].display', value: 'desk' },
        { op: 'replace', path: 'emails[type eq "WORK"].value', value: 'c@d' },
        { op: 'add', path: 'roles[primary eq "True"].value', value: 'Admin' },
        { op: 'remove', path: 'emails[type eq "home"]' },
      ]),
    ).toEqual([
      { op: 'add', path: 'phoneNumbers', value: [{ type: 'work', value: '123' }] },
      { op: 'replace', path: 'phoneNumbers[type eq "work"].display', value: 'desk' },
      { op: 'replace', path: 'emails[type eq "work"].value', value: 'c@d' },
      { op: 'add', path: 'roles', value: [{ primary: true, value: 'Admin' }] },
    ]);
  });
});

describe('membership ops', () => {
  const [a, b, c, d] = [newId(), newId(), newId(), newId()];

  it('folds add/remove/replace in order and leaves other ops alone', () => {
    const { delta, rest } = splitMemberOps([
      { op: 'add', path: 'members', value: [{ value: a }, { value: b, display: 'B' }] },
      { op: 'remove', path: 'members', value: [{ value: b }] },
      { op: 'remove', path: `members[value eq "${c}" or value eq "${d}"]` },
      { op: 'replace', path: 'displayName', value: 'x' },
    ]);
    expect(memberChange(delta!)).toEqual({ add: [a], remove: [b, c, d] });
    expect(rest).toEqual([{ op: 'replace', path: 'displayName', value: 'x' }]);
  });

  it('turns replace and bare remove into a full membership', () => {
    expect(memberChange(splitMemberOps([{ op: 'replace', path: 'members', value: [{ value: a }] }, { op: 'add', path: 'members', value: { value: b } }]).delta!)).toEqual({
      replace: [a, b],
    });
    expect(memberChange(splitMemberOps([{ op: 'remove', path: 'members' }]).delta!)).toEqual({ replace: [] });
  });

  it('takes members out of a path-less value and keeps the rest', () => {
    const { delta, rest } = splitMemberOps([{ op: 'replace', value: { displayName: 'n', members: [{ value: a }] } }]);
    expect(memberChange(delta!)).toEqual({ replace: [a] });
    expect(rest).toEqual([{ op: 'replace', value: { displayName: 'n' } }]);
  });

  it('keeps member displays and sets aside values that cannot be person ids', () => {
    const { delta } = splitMemberOps([{ op: 'add', path: 'members', value: [{ value: a, displayName: 'new User' }, 'string id 1', { value: 'string id 2' }] }]);
    expect(memberChange(delta!)).toEqual({ add: [{ id: a, display: 'new User' }], ignored: ['string id 1', 'string id 2'] });
  });

  it('refuses member filters it cannot serve without loading the group', () => {
    expect(scimErrorOf(() => splitMemberOps([{ op: 'remove', path: 'members[display eq "x"]' }])).scimType).toBe('invalidPath');
    expect(scimErrorOf(() => splitMemberOps([{ op: 'add', path: 'members[value eq "x"]', value: [] }])).scimType).toBe('invalidPath');
    expect(scimErrorOf(() => splitMemberOps([{ op: 'replace', path: 'members.display', value: 'x' }])).scimType).toBe('invalidPath');
    expect(scimErrorOf(() => splitMemberOps([{ op: 'add', path: 'members', value: [{ display: 'no value' }] }])).scimType).toBe('invalidValue');
  });
});

describe('projection', () => {
  const q = (query: Record<string, string>) => projectionOf(query, CORE_USER, [ENTERPRISE]);
  it('tells whether an attribute is wanted', () => {
    expect(wants(undefined, 'members')).toBe(true);
    expect(wants(q({ excludedAttributes: 'members' }), 'members')).toBe(false);
    expect(wants(q({ excludedAttributes: 'Members,externalId' }), 'members')).toBe(false);
    expect(wants(q({ excludedAttributes: 'members.display' }), 'members')).toBe(true);
    expect(wants(q({ attributes: 'displayName' }), 'members')).toBe(false);
    expect(wants(q({ attributes: 'displayName,members.value' }), 'members')).toBe(true);
    // attributes wins over excludedAttributes.
    expect(wants(q({ attributes: 'members', excludedAttributes: 'members' }), 'members')).toBe(true);
  });

  it('merges selections of one multi-valued attribute element-wise', () => {
    const r = { schemas: [CORE_USER], id: '1', emails: [{ value: 'a', type: 'work', primary: true }] };
    expect(project(r, q({ attributes: 'emails.value,emails.type' }))).toEqual({ schemas: [CORE_USER], id: '1', emails: [{ value: 'a', type: 'work' }] });
  });
});

describe('auth and rate limit', () => {
  it('matches a bearer token by its digest only', () => {
    const auth = new TokenAuthenticator(
      [
        { id: 'a', idp: 'entra', scim: { tokenSha256: hashToken('ta'), rateLimitPerSecond: 5 } },
        { id: 'b', idp: 'generic' },
      ].map((s) => sourceSchema.parse(s)),
    );
    expect(auth.authenticate('Bearer ta')).toEqual({ sourceId: 'a', idp: 'entra', rateLimitPerSecond: 5 });
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
