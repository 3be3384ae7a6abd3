import { monitorEventLoopDelay } from 'node:perf_hooks';

type IntervalHistogram = ReturnType<typeof monitorEventLoopDelay>;

/**
 * Background work yields to requests.
 *
 * HTTP handlers, confirmation, reconcile and apply jobs share one event loop. When requests
 * arrive fast (an IdP's webhook burst, a SCIM bulk push) and the workers keep every core busy,
 * each request waits behind dozens of ready job callbacks: the acknowledgement an IdP waits for
 * gets slow although nothing is wrong. The pacer watches the event loop's delay and, while
 * requests are arriving, scales every background worker's concurrency down (multiplicatively
 * while the delay is above target) and back up (additively once it is well below), the way TCP
 * paces a sender. Work is never dropped, only spread out; leavers still jump the queues' order.
 *
 * Without request traffic (a lockdown, a full reconciliation, a `lockstep worker` process) the
 * pacer stands aside at once, so work that has the machine to itself runs at its configured
 * concurrency.
 */

export interface PacingOptions {
  /** Event-loop delay (p99 over one interval) above which background work is slowed. */
  targetDelayMs: number;
  /** Smallest share of each worker's configured concurrency (at least one job always runs). */
  minShare: number;
  /** Requests per second from which request latency is worth protecting. */
  minRequestsPerSecond: number;
  intervalMs: number;
}

export const DEFAULT_PACING: PacingOptions = { targetDelayMs: 10, minShare: 0.1, minRequestsPerSecond: 50, intervalMs: 250 };

const RESOLUTION_MS = 10;
const DECREASE = 0.7;
const INCREASE = 0.05;

/**
 * One control step: the share of configured concurrency for the next interval, from the last
 * interval's event-loop delay (ms) and request rate (per second). Pure, so it is tested alone.
 */
export function nextShare(share: number, delayMs: number, requestsPerSecond: number, o: PacingOptions): number {
  // Nothing to protect: background work gets the machine back at once.
  if (requestsPerSecond < o.minRequestsPerSecond) return 1;
  if (delayMs > o.targetDelayMs) return Math.max(o.minShare, share * DECREASE);
  if (delayMs < o.targetDelayMs / 2) return Math.min(1, share + INCREASE);
  return share;
}

/** What the pacer needs of a BullMQ Worker: its concurrency, settable at runtime. */
export interface Paced {
  concurrency: number;
}

export class Pacer {
  private readonly opts: PacingOptions;
  private readonly workers: Array<{ worker: Paced; configured: number }> = [];
  private histogram: IntervalHistogram | undefined;
  private timer: NodeJS.Timeout | undefined;
  private requests = 0;
  private current = 1;
  private readonly onShare: ((share: number) => void) | undefined;

  constructor(opts: Partial<PacingOptions> = {}, onShare?: (share: number) => void) {
    this.opts = { ...DEFAULT_PACING, ...opts };
    this.onShare = onShare;
  }

  /** The share of configured concurrency the workers run at now (1 = unthrottled). */
  get share(): number {
    return this.current;
  }

  /** Counts one incoming request (a Fastify onRequest hook calls this). */
  request(): void {
    this.requests++;
  }

  register(worker: Paced): void {
    this.workers.push({ worker, configured: worker.concurrency });
    this.apply();
  }

  start(): void {
    if (this.timer) return;
    // 10 ms resolution: finer sampling costs CPU on the loop it measures.
    this.histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.histogram.enable();
    this.timer = setInterval(() => this.tick(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.histogram?.disable();
    this.current = 1;
    this.apply();
  }

  private tick(): void {
    const h = this.histogram!;
    // The histogram records the time between timer runs, so an idle loop reads one resolution.
    const delayMs = h.count > 0 ? Math.max(0, h.percentile(99) / 1e6 - RESOLUTION_MS) : 0;
    h.reset();
    const rps = (this.requests * 1000) / this.opts.intervalMs;
    this.requests = 0;
    const next = nextShare(this.current, delayMs, rps, this.opts);
    if (next === this.current) return;
    this.current = next;
    this.apply();
    this.onShare?.(next);
  }

  private apply(): void {
    for (const w of this.workers) w.worker.concurrency = Math.max(1, Math.round(w.configured * this.current));
  }
}
