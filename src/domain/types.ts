/**
 * The domain vocabulary shared by policy, planner, reconciler and adapters.
 * Plain data only: nothing here does I/O.
 */

/** What lockstep knows of a person, normalised from whichever source provisioned them. */
export interface Identity {
  personId: string;
  sourceId: string;
  /** Stable id lock systems correlate on (iLOQ ExternalPersonId, CLIQ external link). */
  externalId: string;
  userName: string;
  active: boolean;
  givenName?: string;
  familyName?: string;
  displayName?: string;
  email?: string;
  /** Group memberships, by id and display name. */
  groups: Array<{ id: string; displayName: string }>;
  /** SCIM roles (Entra app role assignments arrive here). */
  roles: string[];
  /** Flat attributes usable in policy: department, site, employeeType, division, costCenter, ... */
  attributes: Record<string, string>;
  /** When lockstep first saw the person (epoch ms): access windows count from it. */
  createdAt?: number;
}

/** Desired access for one person: lock system id -> access names. */
export type AccessMap = Map<string, Set<string>>;

/** What lockstep believes is applied on one lock system for one person. */
export interface ActualState {
  /** Access names lockstep has applied (and that were accepted) on this lock system. */
  access: Set<string>;
  /** True once the leaver treatment (access removed, end date set, programming ordered) was accepted. */
  left: boolean;
  /**
   * The termination date lockstep last put on the person's keys there (ISO), `null` for none,
   * `undefined` when not known (state recorded before lockstep kept it).
   */
  endDate?: string | null;
  /**
   * Access that may be on the keys although no operation adding it was accepted: a grant that
   * started (so the lock system may hold part of it) and was then dead-lettered. Unwanted, it is
   * revoked like accepted access; an accepted grant, revoke or leave of it settles it.
   */
  unsure?: Set<string>;
}

export type OperationKind = 'grant' | 'revoke' | 'leave' | 'reinstate';

/**
 * One idempotent step against one lock system for one person. Applying it twice has the
 * effect of applying it once: adapters implement "ensure", not "toggle".
 */
export interface PlannedOperation {
  lockSystemId: string;
  kind: OperationKind;
  /** Access name for grant/revoke; for leave, every managed access name to strip. */
  access: string[];
  /** Revocations and leavers first: lower runs earlier. */
  priority: number;
}

export interface Plan {
  personId: string;
  desired: Record<string, string[]>;
  operations: PlannedOperation[];
}
