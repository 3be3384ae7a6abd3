import type { ActualState } from '../domain/types.ts';

/**
 * lock_state rows as the planner sees them (ActualState) and back. `end_date` is NULL when not
 * known (rows from before migration 0008), '' for no end date, else the ISO date. `unsure` is
 * NULL for none, else a JSON array (migration 0010).
 */

export interface LockStateRowView {
  access: string;
  departed: number;
  end_date: string | null;
  unsure: string | null;
}

export function actualFromRow(row: LockStateRowView): ActualState {
  const unsure = row.unsure ? (JSON.parse(row.unsure) as string[]) : [];
  return {
    access: new Set(JSON.parse(row.access) as string[]),
    left: row.departed === 1,
    ...endDateFromRow(row.end_date),
    ...(unsure.length ? { unsure: new Set(unsure) } : {}),
  };
}

export function unsureToRow(unsure: ReadonlySet<string> | undefined): string | null {
  return unsure?.size ? JSON.stringify([...unsure].sort()) : null;
}

/** The `endDate` part of ActualState: absent when not known. */
export function endDateFromRow(v: string | null): { endDate?: string | null } {
  if (v === null) return {};
  return { endDate: v === '' ? null : v };
}

export function endDateToRow(endDate: string | null | undefined): string | null {
  return endDate === undefined ? null : (endDate ?? '');
}
