/**
 * Residual exposure of a CLIQ key: the latest moment it could still open a door if it is never
 * updated again.
 *
 * CLIQ is offline: the key resource CWM shows is what CWM *wants* on the key. Only settings
 * without a pending job are known to be physically on the key. So a bound is computed from the
 * settings known to be on the key, never from ones still waiting in a job (a validity `never`
 * that has not reached the key bounds nothing):
 * - validity `between` → its `to`; validity `never` → already over (lastUpdatedAt, or now);
 * - revalidation enabled → lastUpdatedAt + period (now + period when the key never reported an
 *   update: the key's own deadline can only be earlier);
 * - blocked, with the blocklist job done → blocked in every cylinder concerned: over.
 * A setting whose state on the key is unknown contributes no bound, so the result is an upper
 * bound, never an optimistic guess. Undefined: no bound at all.
 */

import type { CliqJobKind, CliqKey } from './client.ts';

export interface KnownOnKey {
  validity: boolean;
  revalidation: boolean;
  /** The key is blocked and its blocklist job is done. */
  blocklisted: boolean;
}

/**
 * Which of the key's settings are physically on it, given the kinds of its pending jobs
 * (`undefined`: could not be determined, so only a key without pending jobs is known).
 */
export function knownOnKey(key: CliqKey, pendingKinds: ReadonlySet<CliqJobKind> | undefined): KnownOnKey {
  if (key.pendingJobs === 0) return { validity: true, revalidation: true, blocklisted: key.blocked };
  if (!pendingKinds) return { validity: false, revalidation: false, blocklisted: false };
  return {
    validity: !pendingKinds.has('validity'),
    revalidation: !pendingKinds.has('revalidation'),
    blocklisted: key.blocked && !pendingKinds.has('blocklist'),
  };
}

export function keyHorizon(key: CliqKey, known: KnownOnKey, now: Date = new Date()): Date | undefined {
  const nowMs = now.getTime();
  const parsed = key.lastUpdatedAt ? Date.parse(key.lastUpdatedAt) : NaN;
  // A lastUpdatedAt in the future (clock skew) is not trusted beyond now.
  const last = Number.isNaN(parsed) ? undefined : Math.min(parsed, nowMs);
  const bounds: number[] = [];
  // Blocked in every cylinder concerned: over by now (when exactly is the blocklist job's doneAt).
  if (known.blocklisted) bounds.push(nowMs);
  if (known.validity) {
    if (key.validity.mode === 'never') bounds.push(last ?? nowMs);
    else if (key.validity.mode === 'between') {
      const to = Date.parse(key.validity.to);
      if (!Number.isNaN(to)) bounds.push(to);
    }
  }
  if (known.revalidation && key.revalidation.enabled && key.revalidation.periodHours > 0)
    bounds.push((last ?? nowMs) + key.revalidation.periodHours * 3_600_000);
  return bounds.length ? new Date(Math.min(...bounds)) : undefined;
}
