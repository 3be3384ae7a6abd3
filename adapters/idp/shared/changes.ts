import type { Change, ChangeKind, IdpKind, MaintenanceResult } from '../../../src/ports/identity-source.ts';
import { IdentitySourceError } from '../../../src/ports/identity-source.ts';

const REVOKING: ReadonlySet<ChangeKind> = new Set(['user-deactivated', 'user-deleted', 'membership-removed']);

export interface ChangeInput {
  idp: IdpKind;
  sourceId: string;
  kind: ChangeKind;
  userId?: string | undefined;
  groupId?: string | undefined;
  eventId: string;
  eventType: string;
  occurredAt: string;
  /** Defaults to true for deactivations, deletions and membership removals. */
  revocation?: boolean;
}

/**
 * A hint with its dedupe key: `<idp>:<sourceId>:<eventId>:<kind>:<userId>:<groupId>` — the same
 * vendor event always yields the same keys; two changes of one event never share one.
 */
export function makeChange(c: ChangeInput): Change {
  return {
    kind: c.kind,
    sourceId: c.sourceId,
    ...(c.userId !== undefined ? { userId: c.userId } : {}),
    ...(c.groupId !== undefined ? { groupId: c.groupId } : {}),
    dedupeKey: `${c.idp}:${c.sourceId}:${c.eventId}:${c.kind}:${c.userId ?? ''}:${c.groupId ?? ''}`,
    eventId: c.eventId,
    eventType: c.eventType,
    occurredAt: c.occurredAt,
    revocation: c.revocation ?? REVOKING.has(c.kind),
  };
}

/** An ISO timestamp from a vendor value, or the fallback. */
export function isoOr(v: unknown, fallback: string): string {
  if (typeof v !== 'string') return fallback;
  const t = Date.parse(v);
  return Number.isNaN(t) ? fallback : new Date(t).toISOString();
}

export function unsupported(what: string): IdentitySourceError {
  return new IdentitySourceError('unsupported', what);
}

export const NO_MAINTENANCE: MaintenanceResult = { actions: [], nextInMs: 24 * 3600_000 };
