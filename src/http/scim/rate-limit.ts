/**
 * Per-source token buckets, in process. Each source's bucket holds up to `rate` tokens (one
 * second of burst) and refills continuously at `rate` per second; a request takes one token.
 * In-process is enough: one lockstep instance serves a source's SCIM traffic, and the limit
 * protects this process and its store, not a shared resource.
 */
export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the bucket is full again. */
  resetSeconds: number;
  /** Seconds until one token is available (0 when allowed). */
  retryAfterSeconds: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.now = now;
  }

  take(key: string, ratePerSecond: number): RateDecision {
    const now = this.now();
    const b = this.buckets.get(key) ?? { tokens: ratePerSecond, at: now };
    b.tokens = Math.min(ratePerSecond, b.tokens + ((now - b.at) / 1000) * ratePerSecond);
    b.at = now;
    const allowed = b.tokens >= 1;
    if (allowed) b.tokens -= 1;
    this.buckets.set(key, b);
    return {
      allowed,
      limit: ratePerSecond,
      remaining: Math.floor(b.tokens),
      resetSeconds: Math.ceil((ratePerSecond - b.tokens) / ratePerSecond),
      retryAfterSeconds: allowed ? 0 : Math.max(1, Math.ceil((1 - b.tokens) / ratePerSecond)),
    };
  }

  /** Headers SailPoint's SCIM connector reads for throttling; sent on every response to a known source. */
  static headers(d: RateDecision): Record<string, string> {
    const h: Record<string, string> = {
      'x-rate-limit-limit': String(d.limit),
      'x-rate-limit-remaining': String(d.remaining),
      // Seconds (not an epoch time) until the bucket is full again.
      'x-rate-limit-reset': String(d.resetSeconds),
    };
    if (!d.allowed) {
      h['retry-after'] = String(d.retryAfterSeconds);
      h['x-rate-limit-retry-after-seconds'] = String(d.retryAfterSeconds);
    }
    return h;
  }
}
