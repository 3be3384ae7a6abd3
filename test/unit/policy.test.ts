import { describe, expect, it } from 'vitest';
import type { RuleConfig } from '../../src/config/schema.ts';
import { desiredAccess, managedAccess, matchingRules } from '../../src/domain/policy.ts';
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
