/**
 * Plan no further ahead than the lock systems can take.
 *
 * Reconciling is cheap and fast (thousands of persons a second); applying waits on lock systems.
 * When a burst marks thousands of persons at once (a lockdown, its lift, a policy change), the
 * reconcile worker would plan all of them before the apply workers got a look in: they share one
 * event loop, and an apply worker fetches its jobs one Redis round trip at a time, each queued
 * behind the planning, so the lock systems would sit idle for the seconds the planning takes.
 * Planning therefore waits while every lock system that is at work (jobs ready or running)
 * already holds more ready jobs than its apply workers can start (its limit), re-reading the
 * backlogs every `intervalMs`: one lock system with room is enough to keep planning, so a fast
 * system is never held to a slow one's pace. A system that is still running jobs with nothing
 * ready behind them has room: it is the one planning must feed (a lockdown's persons come
 * round-robin over the lock systems, so holding planning for the slow one would starve the fast
 * one). Only a system with nothing ready and nothing running is left out: it has no part in
 * the current burst. Planning never waits longer than `maxHoldMs` per person: a lock system that
 * is down (its jobs pile up) slows planning, it does not stop it.
 */
export interface PlanAheadOptions {
  /** Per lock system: apply jobs ready to run (waiting, not delayed or active) above which it has no room. */
  limits: ReadonlyMap<string, number>;
  intervalMs: number;
  maxHoldMs: number;
}

/** One lock system's apply queue: jobs ready to run (waiting, not delayed) and jobs running. */
export interface ApplyBacklog {
  ready: number;
  active: number;
}

/** Pure: whether planning should wait, given each lock system's apply queue. */
export function shouldHold(backlog: ReadonlyMap<string, ApplyBacklog>, limits: ReadonlyMap<string, number>): boolean {
  let busy = 0;
  for (const [ls, { ready, active }] of backlog) {
    if (ready === 0 && active === 0) continue;
    if (ready <= (limits.get(ls) ?? Infinity)) return false;
    busy++;
  }
  return busy > 0;
}

export class PlanAhead {
  private readonly opts: PlanAheadOptions;
  private readonly read: () => Promise<ReadonlyMap<string, ApplyBacklog>>;
  private hold = false;
  private timer: NodeJS.Timeout | undefined;
  private waiters: Array<() => void> = [];
  private reading = false;
  /** Set by room(): only a daemon that is planning reads the backlogs (an idle one stays quiet). */
  private planning = false;

  private readonly onHold: ((held: boolean) => void) | undefined;

  constructor(read: () => Promise<ReadonlyMap<string, ApplyBacklog>>, opts: PlanAheadOptions, onHold?: (held: boolean) => void) {
    this.read = read;
    this.opts = opts;
    this.onHold = onHold;
  }

  /** Whether the last reading held planning back. */
  get holding(): boolean {
    return this.hold;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (!this.planning && !this.hold) return;
      this.planning = false;
      void this.refresh();
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    if (this.hold) this.onHold?.(false);
    this.hold = false;
    this.release();
  }

  /** Resolves at once while some lock system has room; otherwise once one has, or after maxHoldMs. */
  room(): Promise<void> {
    this.planning = true;
    if (!this.timer || !this.hold) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let done = false;
      const go = () => {
        if (done) return;
        done = true;
        clearTimeout(hold);
        resolve();
      };
      const hold = setTimeout(go, this.opts.maxHoldMs);
      this.waiters.push(go);
    });
  }

  /** Reads the backlogs now (the timer calls this). */
  async refresh(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    const was = this.hold;
    try {
      this.hold = shouldHold(await this.read(), this.opts.limits);
    } catch {
      // Cannot tell: do not hold planning back on a guess.
      this.hold = false;
    } finally {
      this.reading = false;
    }
    if (this.hold !== was) this.onHold?.(this.hold);
    if (!this.hold) this.release();
  }

  private release(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const go of w) go();
  }
}
