import { describe, expect, it } from 'vitest';
import { applyToState, plan, type PlanInput } from '../../src/domain/planner.ts';
import type { ActualState } from '../../src/domain/types.ts';

const managed = new Map([
  ['iloq', new Set(['A', 'B', 'C'])],
  ['cliq', new Set(['Y'])],
]);
const m = (o: Record<string, string[]>) => new Map(Object.entries(o).map(([k, v]) => [k, new Set(v)]));
const st = (o: Record<string, { access: string[]; left?: boolean }>) =>
  new Map<string, ActualState>(Object.entries(o).map(([k, v]) => [k, { access: new Set(v.access), left: v.left ?? false }]));

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
