import { createHash, timingSafeEqual } from 'node:crypto';
import type { HookRequest, HookResult } from '../../../src/ports/identity-source.ts';

/** Inbound-webhook helpers shared by the IdP adapters. Pure: no I/O. */

/** A header value by name, any case; the first value when repeated. */
export function header(req: Pick<HookRequest, 'headers'>, name: string): string | undefined {
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(req.headers)) {
    if (k.toLowerCase() !== lower || v === undefined) continue;
    return Array.isArray(v) ? v[0] : v;
  }
  return undefined;
}

/** A query parameter (first value when repeated). Values arrive URL-decoded from the HTTP layer. */
export function queryParam(req: Pick<HookRequest, 'query'>, name: string): string | undefined {
  const v = req.query[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Constant-time comparison of a presented secret with the expected one. Both sides are hashed
 * first, so neither the length nor a common prefix leaks through timing.
 */
export function safeEqual(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

/** True when the presented secret matches any of the accepted ones (rotation). Compares all, in constant time each. */
export function safeEqualAny(presented: string | undefined, accepted: readonly string[]): boolean {
  let ok = false;
  for (const s of accepted) ok = safeEqual(presented, s) || ok;
  return ok;
}

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** JSON body, or undefined when it is not JSON. */
export function parseJsonBody(raw: Buffer): unknown {
  if (raw.length === 0) return undefined;
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    return undefined;
  }
}

export function rejected(status: number, reason: string, body?: string): HookResult {
  return {
    outcome: 'rejected',
    status,
    ...(body !== undefined ? { headers: { 'content-type': 'application/json' }, body } : {}),
    changes: [],
    tasks: [],
    reason,
  };
}

/** A rejection body that tells the caller nothing beyond the status. */
export const REJECT_BODY = JSON.stringify({ error: 'unauthorized' });

export const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
