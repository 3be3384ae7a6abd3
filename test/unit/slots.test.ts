import { describe, expect, it } from 'vitest';
import { Slots } from '../../src/queue/slots.ts';

const tick = () => new Promise((r) => setImmediate(r));

describe('Slots', () => {
  it('lets at most `size` holders run, and the rest in the order they came', async () => {
    const slots = new Slots(2);
    const release: Array<() => void> = [];
    const started: number[] = [];
    let running = 0;
    let most = 0;
    const runs = [0, 1, 2, 3, 4].map((i) =>
      slots.hold(async () => {
        started.push(i);
        most = Math.max(most, ++running);
        await new Promise<void>((r) => release.push(r));
        running -= 1;
        return i;
      }),
    );
    await tick();
    expect(started).toEqual([0, 1]);
    expect(slots.queued).toBe(3);
    release.shift()!();
    await tick();
    expect(started).toEqual([0, 1, 2]);
    while (release.length) {
      release.shift()!();
      await tick();
    }
    expect(await Promise.all(runs)).toEqual([0, 1, 2, 3, 4]);
    expect(started).toEqual([0, 1, 2, 3, 4]);
    expect(most).toBe(2);
    expect(slots.queued).toBe(0);
  });

  it('gives the slot back when the holder throws', async () => {
    const slots = new Slots(1);
    await expect(slots.hold(async () => Promise.reject(new Error('lock system down')))).rejects.toThrow('lock system down');
    expect(await slots.hold(async () => 'next')).toBe('next');
  });

  it('refuses a size that is not a positive integer', () => {
    expect(() => new Slots(0)).toThrow(RangeError);
    expect(() => new Slots(1.5)).toThrow(RangeError);
  });
});
