import { describe, expect, it } from 'vitest';
import { applyLockdowns, scopeKey, type LockdownView } from '../../src/domain/lockdown.ts';
import type { Identity } from '../../src/domain/types.ts';

const who: Identity = {
  personId: 'p1',
  sourceId: 's',
  externalId: 'p1',
  userName: 'ada@example.com',
  active: true,
  groups: [{ id: 'g-sec', displayName: 'Security Team' }],
  roles: [],
  attributes: {},
};
const desired = () =>
  new Map([
    ['iloq', new Set(['Main entrance', 'Control room'])],
    ['cliq', new Set(['Substation A'])],
  ]);
const flat = (m: Map<string, Set<string>>) => Object.fromEntries([...m].map(([k, v]) => [k, [...v].sort()]));
const ld = (scope: LockdownView['scope'], exemptions: Partial<LockdownView['exemptions']> = {}): LockdownView => ({
  id: 'L1',
  scope,
  exemptions: { persons: [], groups: [], ...exemptions },
});

describe('applyLockdowns', () => {
  const cases: Array<[string, LockdownView[], Identity, Record<string, string[]>, string[]]> = [
    ['no lockdown: desired unchanged', [], who, { iloq: ['Control room', 'Main entrance'], cliq: ['Substation A'] }, []],
    ['all: nothing left', [ld({ all: true })], who, {}, ['L1']],
    ['one lock system', [ld({ lockSystems: ['iloq'] })], who, { cliq: ['Substation A'] }, ['L1']],
    ['access names, case-insensitive', [ld({ access: ['control ROOM'] })], who, { iloq: ['Main entrance'], cliq: ['Substation A'] }, ['L1']],
    ['site access pairs', [ld({ siteAccess: [{ lockSystem: 'cliq', access: 'Substation A' }] })], who, { iloq: ['Control room', 'Main entrance'] }, ['L1']],
    ['exempt by group name', [ld({ all: true }, { groups: ['security team'] })], who, { iloq: ['Control room', 'Main entrance'], cliq: ['Substation A'] }, []],
    ['exempt by user name', [ld({ all: true }, { persons: ['ADA@example.com'] })], who, { iloq: ['Control room', 'Main entrance'], cliq: ['Substation A'] }, []],
    ['exempt from one lockdown, not from the other', [ld({ all: true }, { persons: ['p1'] }), { ...ld({ lockSystems: ['cliq'] }), id: 'L2' }], who, { iloq: ['Control room', 'Main entrance'] }, ['L2']],
  ];
  it.each(cases)('%s', (_n, lockdowns, identity, expected, applied) => {
    const r = applyLockdowns(desired(), identity, lockdowns);
    expect(flat(r.access)).toEqual(expected);
    expect(r.applied).toEqual(applied);
  });

  it('an absent identity is untouched (policy already grants it nothing)', () => {
    expect(applyLockdowns(new Map(), null, [ld({ all: true })]).access.size).toBe(0);
  });

  it('the same scope written differently has the same key', () => {
    expect(scopeKey({ lockSystems: ['b', 'a'], access: ['X', 'x'] })).toBe(scopeKey({ access: ['x'], lockSystems: ['a', 'b', 'a'] }));
    expect(scopeKey({ all: true, lockSystems: ['a'] })).toBe('all');
    expect(scopeKey({ lockSystems: ['a'] })).not.toBe(scopeKey({ access: ['a'] }));
  });
});
