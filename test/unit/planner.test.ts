import { describe, expect, it } from 'vitest';
import { applyToState, deadToState, hasStarted, plan, type PlanInput } from '../../src/domain/planner.ts';
import type { ActualState } from '../../src/domain/types.ts';

const managed = new Map([
  ['iloq', new Set(['A', 'B', 'C'])],
  ['cliq', new Set(['Y'])],
]);
const m = (o: Record<string, string[]>) => new Map(Object.entries(o).map(([k, v]) => [k, new Set(v)]));
const st = (o: Record<string, { access: string[]; left?: boolean; unsure?: string[] }>) =>
  new Map<string, ActualState>(
    Object.entries(o).map(([k, v]) => [k, { access: new Set(v.access), left: v.left ?? false, ...(v.unsure ? { unsure: new Set(v.unsure) } : {}) }]),
  );

type Row = [string, Omit<PlanInput, 'managed'>, Array<[string, string, string[]]>];

describe('plan', () => {
  const cases: Row[] = [
    ['joiner: grants what is desired', { active: true, desired: m({ iloq: ['B', 'A'] }), actual: new Map() }, [['iloq', 'grant', ['A', 'B']]]],
    ['nothing to do when actual equals desired', { active: true, desired: m({ iloq: ['A'] }), actual: st({ iloq: { access: ['A'] } }) }, []],
    [
      'mover: revoke before grant',
      { active: true, desired: m({ iloq: ['B'] }), actual: st({ iloq: { access: ['A'] } }) },
      [
        ['iloq', 'revoke', ['A']],
        ['iloq', 'grant', ['B']],
      ],
    ],
    ['removed from every group: revoke only, no leave', { active: true, desired: new Map(), actual: st({ iloq: { access: ['A', 'C'] } }) }, [['iloq', 'revoke', ['A', 'C']]]],
    [
      'leaver: one leave per provisioned system, stripping all managed access',
      { active: false, desired: new Map(), actual: st({ iloq: { access: ['A'] }, cliq: { access: [] } }) },
      [
        ['cliq', 'leave', ['Y']],
        ['iloq', 'leave', ['A', 'B', 'C']],
      ],
    ],
    ['leaver never provisioned anywhere: nothing', { active: false, desired: new Map(), actual: new Map() }, []],
    ['leaver already left: nothing (idempotent)', { active: false, desired: new Map(), actual: st({ iloq: { access: [], left: true } }) }, []],
    [
      'returning person: reinstate before grants',
      { active: true, desired: m({ iloq: ['A'] }), actual: st({ iloq: { access: [], left: true } }) },
      [
        ['iloq', 'reinstate', []],
        ['iloq', 'grant', ['A']],
      ],
    ],
    ['left person still without access: stays left', { active: true, desired: new Map(), actual: st({ iloq: { access: [], left: true } }) }, []],
    ['unsure access no longer wanted: revoked', { active: true, desired: new Map(), actual: st({ iloq: { access: [], unsure: ['B'] } }) }, [['iloq', 'revoke', ['B']]]],
    [
      'unsure access beside accepted access: both revoked when unwanted, the wanted kept',
      { active: true, desired: m({ iloq: ['A'] }), actual: st({ iloq: { access: ['A', 'C'], unsure: ['B'] } }) },
      [['iloq', 'revoke', ['B', 'C']]],
    ],
    ['unsure access still wanted: granted again (it may be missing)', { active: true, desired: m({ iloq: ['B'] }), actual: st({ iloq: { access: [], unsure: ['B'] } }) }, [['iloq', 'grant', ['B']]]],
    [
      'leaver with only unsure access: one leave',
      { active: false, desired: new Map(), actual: st({ iloq: { access: [], unsure: ['B'] } }) },
      [['iloq', 'leave', ['A', 'B', 'C']]],
    ],
    [
      'several systems are planned independently, in a stable order',
      { active: true, desired: m({ iloq: ['A'], cliq: ['Y'] }), actual: new Map() },
      [
        ['cliq', 'grant', ['Y']],
        ['iloq', 'grant', ['A']],
      ],
    ],
  ];
  it.each(cases)('%s', (_n, input, expected) => {
    const ops = plan({ ...input, managed });
    expect(ops.map((o) => [o.lockSystemId, o.kind, o.access])).toEqual(expected);
    for (const o of ops) expect(o.priority).toBe(o.kind === 'grant' ? 10 : o.kind === 'reinstate' ? 5 : 1);
  });

  it.each(cases)('applying the plan then planning again is empty: %s', (_n, input) => {
    const actual = new Map(input.actual);
    for (const op of plan({ ...input, managed })) actual.set(op.lockSystemId, applyToState(actual.get(op.lockSystemId), op));
    expect(plan({ ...input, actual, managed })).toEqual([]);
  });
});

describe('plan: the keys follow the termination date', () => {
  const T1 = '2027-03-31T00:00:00.000Z';
  const T2 = '2027-06-30T00:00:00.000Z';
  const actual = (endDate: string | null | undefined, access = ['A'], left = false) =>
    new Map<string, ActualState>([['iloq', { access: new Set(access), left, ...(endDate === undefined ? {} : { endDate }) }]]);
  const ops = (input: Omit<PlanInput, 'managed'>) => plan({ ...input, managed }).map((o) => [o.lockSystemId, o.kind, o.access]);

  it.each([
    ['moved later: the keys get the new end date', T1, T2, [['iloq', 'reinstate', []]]],
    ['moved earlier: the keys get the new end date', T2, T1, [['iloq', 'reinstate', []]]],
    ['removed: the end date is cleared', T1, null, [['iloq', 'reinstate', []]]],
    ['set for the first time', null, T1, [['iloq', 'reinstate', []]]],
    ['unchanged: nothing to do', T1, T1, []],
    ['not known (state from before) and none wanted: nothing to do', undefined, null, []],
    ['not known and a date wanted: set it', undefined, T1, [['iloq', 'reinstate', []]]],
  ] as const)('%s', (_why, have, want, expected) => {
    expect(ops({ active: true, desired: m({ iloq: ['A'] }), actual: actual(have), endDate: want })).toEqual(expected);
  });

  it('comes after revocations and before grants', () => {
    expect(ops({ active: true, desired: m({ iloq: ['B'] }), actual: actual(T1, ['A', 'C']), endDate: T2 })).toEqual([
      ['iloq', 'revoke', ['A', 'C']],
      ['iloq', 'reinstate', []],
      ['iloq', 'grant', ['B']],
    ]);
  });

  it('leaves keys alone that keep no access, and leavers (their leave sets the end date)', () => {
    expect(ops({ active: true, desired: new Map(), actual: actual(T1), endDate: T2 })).toEqual([['iloq', 'revoke', ['A']]]);
    expect(ops({ active: false, desired: new Map(), actual: actual(T1, [], true), endDate: T2 })).toEqual([]);
  });

  it('a returning leaver gets one reinstate, not two', () => {
    expect(ops({ active: true, desired: m({ iloq: ['A'] }), actual: actual(T1, [], true), endDate: T2 })).toEqual([
      ['iloq', 'reinstate', []],
      ['iloq', 'grant', ['A']],
    ]);
  });

  it('records what the keys were given: reinstate and the first grant set it, later grants keep it', () => {
    expect(applyToState(undefined, { kind: 'grant', access: ['A'] }, T1).endDate).toBe(T1);
    expect(applyToState({ access: new Set(['A']), left: false, endDate: T1 }, { kind: 'grant', access: ['B'] }, T2).endDate).toBe(T1);
    expect(applyToState({ access: new Set(['A']), left: false, endDate: T1 }, { kind: 'reinstate', access: [] }, T2).endDate).toBe(T2);
    expect(applyToState({ access: new Set(['A']), left: false, endDate: T1 }, { kind: 'reinstate', access: [] }, null).endDate).toBeNull();
    expect(applyToState({ access: new Set(['A']), left: false }, { kind: 'revoke', access: ['A'] }, T2)).not.toHaveProperty('endDate');
  });
});

describe('unsure access: what a dead-lettered grant may have left on the keys', () => {
  it('a started grant that died makes its access unsure, unless already accepted', () => {
    const state = deadToState({ access: new Set(['A']), left: false, endDate: null }, { kind: 'grant', access: ['A', 'B'] });
    expect(state).toEqual({ access: new Set(['A']), left: false, endDate: null, unsure: new Set(['B']) });
    expect(deadToState(undefined, { kind: 'grant', access: ['B'] })).toEqual({ access: new Set(), left: false, unsure: new Set(['B']) });
    const before = { access: new Set(['A']), left: false };
    expect(deadToState(before, { kind: 'grant', access: ['A'] })).toBe(before);
    expect(deadToState(before, { kind: 'revoke', access: ['A'] })).toBe(before);
  });

  it('an accepted grant, revoke or leave settles it; a reinstate does not', () => {
    const s = { access: new Set<string>(), left: false, unsure: new Set(['A', 'B']) };
    expect(applyToState(s, { kind: 'grant', access: ['A'] }).unsure).toEqual(new Set(['B']));
    expect(applyToState(s, { kind: 'revoke', access: ['A', 'B'] })).not.toHaveProperty('unsure');
    expect(applyToState(s, { kind: 'leave', access: ['C'] })).not.toHaveProperty('unsure');
    expect(applyToState(s, { kind: 'reinstate', access: [] }).unsure).toEqual(new Set(['A', 'B']));
  });
});

describe('hasStarted: which in-flight operations may already have reached the lock system', () => {
  it.each([
    ['running, first attempt', { state: 'running', attempts: 1 }, true],
    ['pending after a failed attempt (waits for its retry)', { state: 'pending', attempts: 1 }, true],
    ['pending, attempts as text (PostgreSQL bigint as read elsewhere)', { state: 'pending', attempts: '2' }, true],
    ['pending, never tried', { state: 'pending', attempts: 0 }, false],
  ])('%s', (_name, op, started) => {
    expect(hasStarted(op)).toBe(started);
  });
});
