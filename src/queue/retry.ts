import type { RetryConfig } from '../config/schema.ts';

/**
 * Retry as data (after undici's RetryHandler): the policy is the config section, the delay is
 * a pure function of it. Exponential growth with "equal jitter" (half fixed, half random) keeps
 * a herd of failed jobs from retrying in lockstep while never retrying sooner than half the
 * nominal delay. A lock system's Retry-After wins when it asks for longer.
 */
export function retryDelayMs(policy: RetryConfig, attempt: number, retryAfterMs: number | undefined, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, attempt - 1));
  const jittered = Math.round(exp / 2 + (random() * exp) / 2);
  if (retryAfterMs !== undefined && retryAfterMs > jittered) return retryAfterMs;
  return jittered;
}
