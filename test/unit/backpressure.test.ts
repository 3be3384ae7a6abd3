import { afterEach, describe, expect, it, vi } from 'vitest';
import { PlanAhead, shouldHold } from '../../src/queue/backpressure.ts';

const limits = new Map(Object.entries({ iloq: 128, cliq: 128 }));
/** Backlogs as `ready` or `[ready, active]` per lock system (a plain number: nothing running). */
const m = (o: Record<string, number | [number, number]>) =>
  new Map(Object.entries(o).map(([ls, v]) => [ls, typeof v === 'number' ? { ready: v, active: 0 } : { ready: v[0], active: v[1] }]));

describe('planning holds back only while every lock system at work is full', () => {
  it.each<{ why: string; backlog: Record<string, number | [number, number]>; hold: boolean }>([
    { why: 'no backlog anywhere', backlog: {}, hold: false },
    { why: 'empty queues', backlog: { iloq: 0, cliq: 0 }, hold: false },
    { why: 'one system full, the other has room', backlog: { iloq: 500, cliq: 10 }, hold: false },
    { why: 'one system full, the other idle (no part in this burst)', backlog: { iloq: 500, cliq: 0 }, hold: true },
    // The fast system of a lockdown runs dry first: planning must go on to feed it.
    { why: 'one system full, the other running its last jobs', backlog: { iloq: 500, cliq: [0, 12] }, hold: false },
    { why: 'both full, both running', backlog: { iloq: [500, 64], cliq: [300, 64] }, hold: true },
    { why: 'exactly at the limit is still room', backlog: { iloq: 128, cliq: 0 }, hold: false },
    { why: 'a system without a limit always has room', backlog: { other: 10_000 }, hold: false },
  ])('$why', ({ backlog, hold }) => {
    expect(shouldHold(m(backlog), limits)).toBe(hold);
  });
});

describe('PlanAhead', () => {
  afterEach(() => vi.useRealTimers());

  it('lets planning through, holds it while the lock systems are full, and releases it when one has room', async () => {
    vi.useFakeTimers();
    let backlog = m({ iloq: 0 });
    const held: boolean[] = [];
    const p = new PlanAhead(async () => backlog, { limits, intervalMs: 50, maxHoldMs: 10_000 }, (h) => held.push(h));
    p.start();
    await expect(p.room()).resolves.toBeUndefined();
    backlog = m({ iloq: 1000 });
    await vi.advanceTimersByTimeAsync(60);
    expect(p.holding).toBe(true);
    let through = false;
    void p.room().then(() => (through = true));
    await vi.advanceTimersByTimeAsync(200);
    expect(through).toBe(false);
    backlog = m({ iloq: 100 });
    await vi.advanceTimersByTimeAsync(60);
    expect(through).toBe(true);
    // Reported on each change (the metric lockstep_planning_held), not on every reading.
    expect(held).toEqual([true, false]);
    p.stop();
  });

  it('never holds a person longer than maxHoldMs, and a failed reading holds nobody', async () => {
    vi.useFakeTimers();
    let fail = false;
    const p = new PlanAhead(async () => (fail ? Promise.reject(new Error('redis down')) : m({ iloq: 1000 })), { limits, intervalMs: 50, maxHoldMs: 300 });
    p.start();
    await p.room();
    await vi.advanceTimersByTimeAsync(60);
    let through = false;
    void p.room().then(() => (through = true));
    await vi.advanceTimersByTimeAsync(250);
    expect(through).toBe(false);
    await vi.advanceTimersByTimeAsync(60);
    expect(through).toBe(true);
    fail = true;
    await vi.advanceTimersByTimeAsync(60);
    expect(p.holding).toBe(false);
    p.stop();
  });

  it('stopping releases whoever waits', async () => {
    vi.useFakeTimers();
    const p = new PlanAhead(async () => m({ iloq: 1000 }), { limits, intervalMs: 50, maxHoldMs: 60_000 });
    p.start();
    await p.room();
    await vi.advanceTimersByTimeAsync(60);
    let through = false;
    void p.room().then(() => (through = true));
    p.stop();
    await vi.advanceTimersByTimeAsync(0);
    expect(through).toBe(true);
  });

  it('an idle daemon does not read the backlogs', async () => {
    vi.useFakeTimers();
    const read = vi.fn(async () => m({}));
    const p = new PlanAhead(read, { limits, intervalMs: 50, maxHoldMs: 300 });
    p.start();
    await vi.advanceTimersByTimeAsync(1000);
    expect(read).not.toHaveBeenCalled();
    await p.room();
    await vi.advanceTimersByTimeAsync(60);
    expect(read).toHaveBeenCalledTimes(1);
    p.stop();
  });
});
