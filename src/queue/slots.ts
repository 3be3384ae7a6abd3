/**
 * At most `size` holders at a time, served first come, first served.
 *
 * The apply worker runs more jobs than a lock system has slots, so that a job's bookkeeping
 * (claiming its operation, recording the acceptance, BullMQ handing over the next job) happens
 * while other jobs' calls are in flight; only the calls to the lock system hold a slot. That
 * keeps `apply.concurrency` what it says to the operator of the lock system: the most
 * operations lockstep has in flight there at once.
 */
export class Slots {
  private free: number;
  private readonly waiting: Array<() => void> = [];

  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`slots: size must be a positive integer, got ${size}`);
    this.free = size;
  }

  /** Runs `fn` holding a slot; the slot is given back however `fn` ends. */
  async hold<T>(fn: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free -= 1;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await fn();
    } finally {
      // Hand the slot straight to the next in line, or put it back.
      const next = this.waiting.shift();
      if (next) next();
      else this.free += 1;
    }
  }

  /** Holders waiting for a slot now (for tests and metrics). */
  get queued(): number {
    return this.waiting.length;
  }
}
