import { describe, expect, it } from 'vitest';
import { roundRobin } from '../../src/lockdown/order.ts';

const e = (personId: string, lockSystemId: string) => ({ personId, lockSystemId });

describe('the order a lockdown queues persons in', () => {
  it.each([
    { why: 'nothing', input: [], out: [] },
    { why: 'one lock system keeps its order', input: [e('a', 'x'), e('b', 'x'), e('c', 'x')], out: ['a', 'b', 'c'] },
    { why: 'two lock systems take turns', input: [e('a', 'x'), e('b', 'x'), e('c', 'x'), e('d', 'y'), e('f', 'y')], out: ['a', 'd', 'b', 'f', 'c'] },
    { why: 'a person on several systems comes once, at the place of their first', input: [e('a', 'x'), e('b', 'x'), e('a', 'y'), e('c', 'y')], out: ['a', 'c', 'b'] },
    { why: 'three systems, uneven', input: [e('a', 'x'), e('b', 'y'), e('c', 'z'), e('d', 'z'), e('f', 'z')], out: ['a', 'b', 'c', 'd', 'f'] },
  ])('$why', ({ input, out }) => {
    expect(roundRobin(input)).toEqual(out);
  });
});
