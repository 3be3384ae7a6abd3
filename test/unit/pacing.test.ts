import { describe, expect, it } from 'vitest';
import { DEFAULT_PACING, Pacer, nextShare } from '../../src/queue/pacing.ts';

const o = DEFAULT_PACING; // target 10 ms, min share 0.1, from 50 requests/s

describe('pacing: one control step (pure)', () => {
  it.each([
    // share, loop delay ms, requests/s → next share
    { share: 1, delay: 40, rps: 1000, next: 0.7, why: 'requests waiting behind background work: back off' },
    { share: 0.12, delay: 40, rps: 1000, next: 0.1, why: 'never below the minimum share' },
    { share: 0.5, delay: 7, rps: 1000, next: 0.5, why: 'near target: hold' },
    { share: 0.5, delay: 2, rps: 1000, next: 0.55, why: 'well below target: grow slowly' },
    { share: 1, delay: 2, rps: 1000, next: 1, why: 'never above the configured concurrency' },
    { share: 0.1, delay: 80, rps: 10, next: 1, why: 'no request traffic to protect: stand aside at once' },
  ])('$why', ({ share, delay, rps, next }) => {
    expect(nextShare(share, delay, rps, o)).toBeCloseTo(next, 10);
  });

  it('backs off from full concurrency to the minimum within a couple of seconds and recovers', () => {
    let share = 1;
    let steps = 0;
    while (share > o.minShare) {
      share = nextShare(share, 50, 1000, o);
      steps++;
    }
    expect(steps * o.intervalMs).toBeLessThanOrEqual(2_000);
    for (let i = 0; i < 100; i++) share = nextShare(share, 0, 1000, o);
    expect(share).toBe(1);
  });
});

describe('pacing: the pacer scales each worker from its own configured concurrency', () => {
  it('applies the share (at least one job each) and restores everything on stop', () => {
    const pacer = new Pacer();
    const reconcile = { concurrency: 32 };
    const apply = { concurrency: 3 };
    pacer.register(reconcile);
    pacer.register(apply);
    // Drive the private step the timer would take, with a saturated loop and busy HTTP.
    const p = pacer as unknown as { current: number; apply(): void };
    p.current = 0.1;
    p.apply();
    expect([reconcile.concurrency, apply.concurrency]).toEqual([3, 1]);
    pacer.stop();
    expect([reconcile.concurrency, apply.concurrency]).toEqual([32, 3]);
    expect(pacer.share).toBe(1);
  });

  it('measures the live event loop: a blocked loop with requests arriving lowers the share; quiet restores it', async () => {
    const pacer = new Pacer({ intervalMs: 100 });
    const worker = { concurrency: 20 };
    pacer.register(worker);
    pacer.start();
    let lowest = worker.concurrency;
    try {
      const until = Date.now() + 600;
      while (Date.now() < until) {
        for (let i = 0; i < 20; i++) pacer.request();
        const busy = Date.now() + 30; // a 30 ms synchronous stretch, as a big batch would be
        while (Date.now() < busy);
        await new Promise((r) => setImmediate(r));
        lowest = Math.min(lowest, worker.concurrency);
      }
      expect(lowest).toBeLessThan(20);
      // No more requests: the pacer stands aside.
      await new Promise((r) => setTimeout(r, 250));
      expect(worker.concurrency).toBe(20);
    } finally {
      pacer.stop();
    }
  });
});
