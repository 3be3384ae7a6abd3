import { describe, expect, it } from 'vitest';
import type { RuleConfig } from '../../src/config/schema.ts';
import { desiredAccess, managedAccess, matchingRules, nextChange } from '../../src/domain/policy.ts';
import type { Identity } from '../../src/domain/types.ts';

const rules: RuleConfig[] = [
  { name: 'everyone-main', when: { attributes: { employeeType: ['Employee', 'Contractor'] } }, grant: [{ lockSystem: 'iloq', access: ['Main entrance'] }] },
  { name: 'control-room', when: { groups: ['Control Room Operators'] }, grant: [{ lockSystem: 'iloq', access: ['Control room'] }] },
  { name: 'substation', when: { roles: ['Substation.Technician'], attributes: { site: 'Plant A' } }, grant: [{ lockSystem: 'iloq', access: ['Substation A'] }, { lockSystem: 'cliq', access: ['Yard'] }] },
  { name: 'by-group-id', when: { groups: ['g-42'] }, grant: [{ lockSystem: 'iloq', access: ['Server room'] }] },
  { name: 'okta-only', when: { sources: ['okta'], attributes: { department: 'IT' } }, grant: [{ lockSystem: 'iloq', access: ['Server room'] }] },
];

const base: Identity = {
  personId: 'p1',
  sourceId: 'entra',
  externalId: 'p1',
  userName: 'ada@example.com',
  active: true,
  groups: [],
  roles: [],
  attributes: {},
};

const flat = (m: Map<string, Set<string>>) => Object.fromEntries([...m].map(([k, v]) => [k, [...v].sort()]));

describe('desiredAccess', () => {
  const cases: Array<[string, Partial<Identity> | null, Record<string, string[]>]> = [
    ['no identity gets nothing', null, {}],
    ['inactive gets nothing even when rules match', { active: false, attributes: { employeeType: 'Employee' } }, {}],
    ['no matching rule gets nothing', { attributes: { employeeType: 'Visitor' } }, {}],
    ['attribute match is case-insensitive, list is any-of', { attributes: { employeeType: 'contractor' } }, { iloq: ['Main entrance'] }],
    ['group by display name, case-insensitive', { groups: [{ id: 'x', displayName: 'control room operators' }] }, { iloq: ['Control room'] }],
    ['group by id', { groups: [{ id: 'g-42', displayName: 'Whatever' }] }, { iloq: ['Server room'] }],
    ['role AND attribute both required: role alone', { roles: ['Substation.Technician'] }, {}],
    ['role AND attribute both required: both', { roles: ['substation.technician'], attributes: { site: 'PLANT A' } }, { iloq: ['Substation A'], cliq: ['Yard'] }],
    ['unknown role grants nothing', { roles: ['Root.Everything'], attributes: { site: 'Plant A' } }, {}],
    ['source condition excludes other sources', { attributes: { department: 'IT' } }, {}],
    ['source condition matches its source', { sourceId: 'okta', attributes: { department: 'IT' } }, { iloq: ['Server room'] }],
    [
      'union of several rules, no duplicates',
      { attributes: { employeeType: 'Employee' }, groups: [{ id: 'g-42', displayName: 'Control Room Operators' }] },
      { iloq: ['Control room', 'Main entrance', 'Server room'] },
    ],
  ];
  it.each(cases)('%s', (_name, patch, expected) => {
    const identity = patch === null ? null : { ...base, ...patch };
    expect(flat(desiredAccess(identity, rules))).toEqual(expected);
  });

  it('explains which rules matched', () => {
    expect(matchingRules({ ...base, attributes: { employeeType: 'Employee' } }, rules)).toEqual(['everyone-main']);
  });

  it('managedAccess lists every grantable name per lock system', () => {
    expect(flat(managedAccess(rules))).toEqual({ iloq: ['Control room', 'Main entrance', 'Server room', 'Substation A'], cliq: ['Yard'] });
  });
});

describe('time: termination dates and access windows', () => {
  const windowRules: RuleConfig[] = [
    { name: 'contractors', when: { attributes: { employeeType: 'Contractor' } }, window: { untilAttribute: 'contractEndDate', maxDays: 30 }, grant: [{ lockSystem: 'iloq', access: ['Yard'] }] },
    { name: 'all', when: { attributes: { site: 'Plant A' } }, grant: [{ lockSystem: 'iloq', access: ['Main entrance'] }] },
  ];
  const day = 86_400_000;
  const now = Date.parse('2026-11-25T12:00:00Z');
  const person = (attributes: Record<string, string>): Identity => ({ ...base, attributes: { site: 'Plant A', ...attributes } });
  const cases: Array<[string, Record<string, string>, number | undefined, string[], number | undefined]> = [
    ['no dates: permanent access, nothing scheduled', {}, now - 100 * day, ['Main entrance'], undefined],
    ['termination date ahead: access until then, wake at it', { terminationDate: '2026-12-01T00:00:00Z' }, now - day, ['Main entrance'], Date.parse('2026-12-01T00:00:00Z')],
    ['termination date passed: a leaver, whatever active says', { terminationDate: '2026-11-25T11:59:59Z' }, now - day, [], undefined],
    ['contractor inside both bounds: wake at the earlier end', { employeeType: 'Contractor', contractEndDate: '2027-06-30' }, now - 10 * day, ['Main entrance', 'Yard'], now + 20 * day],
    ['contractor past maxDays', { employeeType: 'Contractor', contractEndDate: '2027-06-30' }, now - 31 * day, ['Main entrance'], undefined],
    ['contractor past contractEndDate', { employeeType: 'Contractor', contractEndDate: '2026-11-01' }, now - day, ['Main entrance'], undefined],
    ['contractor without a contractEndDate gets nothing windowed (fail safe)', { employeeType: 'Contractor' }, now - day, ['Main entrance'], undefined],
  ];
  it.each(cases)('%s', (_n, attributes, createdAt, expected, wake) => {
    const ctx = { now, ...(createdAt !== undefined ? { createdAt } : {}) };
    const access = desiredAccess(person(attributes), windowRules, ctx);
    expect([...(access.get('iloq') ?? [])].sort()).toEqual(expected);
    expect(nextChange(person(attributes), windowRules, ctx)).toBe(wake);
  });
});
