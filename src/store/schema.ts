/**
 * Row types as the query layer sees them. Both backends store booleans as 0/1 integers,
 * times as epoch milliseconds and structured values as JSON text, so one set of queries and
 * migrations serves SQLite and PostgreSQL; the repositories map them at the boundary.
 */
import type { Generated } from 'kysely';

export interface PersonsTable {
  id: string;
  source_id: string;
  external_id: string | null;
  user_name: string;
  user_name_lc: string;
  email_lc: string | null;
  display_name: string | null;
  /** Case-folded copies of what SCIM filters compare case-insensitively (migration 0002). */
  display_name_lc: string | null;
  given_name_lc: string | null;
  family_name_lc: string | null;
  active: number;
  /** Policy-relevant view: {givenName, familyName, email, roles[], attributes{}}. */
  profile: string;
  /** The SCIM resource as last written (without members/groups), JSON. */
  resource: string;
  version: number;
  created_at: number;
  updated_at: number;
}

export interface GroupsTable {
  id: string;
  source_id: string;
  external_id: string | null;
  display_name: string;
  display_name_lc: string;
  resource: string;
  version: number;
  created_at: number;
  updated_at: number;
}

export interface MembershipsTable {
  group_id: string;
  person_id: string;
  /** The member's display as the client sent it (`members[].display`), if any. */
  display: string | null;
}

/** Every e-mail address of a person, case-folded, for SCIM `emails` filters (migration 0002). */
export interface PersonEmailsTable {
  person_id: string;
  source_id: string;
  /** Position in the resource's `emails` list. */
  position: number;
  value_lc: string;
  type_lc: string | null;
  is_primary: number;
}

/** The outbox: a person whose desired state may have changed. Written in the same transaction as the change. */
export interface DirtyTable {
  person_id: string;
  generation: number;
  priority: number;
  marked_at: number;
  reason: string;
  /** Of the change that last marked the person; carried into the plan and its operations. */
  correlation_id: string;
}

export interface LockStateTable {
  lock_system_id: string;
  person_id: string;
  /** JSON array of access names accepted by the lock system. */
  access: string;
  departed: number;
  remote_person_id: string | null;
  /** The termination date last put on the keys: NULL unknown, '' none, else ISO (see migration 0008). */
  end_date: string | null;
  /** JSON array of access that may be on the keys without an accepted grant (migration 0010); NULL none. */
  unsure: string | null;
  updated_at: number;
}

export type OperationState = 'pending' | 'running' | 'accepted' | 'dead' | 'superseded';

export interface OperationsTable {
  seq: Generated<number>;
  id: string;
  person_id: string;
  lock_system_id: string;
  kind: string;
  access: string;
  priority: number;
  state: OperationState;
  attempts: number;
  correlation_id: string;
  requested_at: number;
  started_at: number | null;
  accepted_at: number | null;
  effective_at: number | null;
  last_error: string | null;
  result: string | null;
  /** The dead letter this operation was parked under, if any (migration 0003). */
  failed_job_id: string | null;
}

/** One key's share of an accepted operation, until it is physically effective. */
export interface KeyChangesTable {
  id: string;
  operation_id: string;
  lock_system_id: string;
  person_id: string;
  key_id: string;
  kind: string;
  /** 1 when the change takes access away (revoke, leave): it counts towards residual exposure. */
  revocation: number;
  job_id: string | null;
  accepted_at: number;
  effective_at: number | null;
  /** Latest moment the key could still open a door with its old access; null = unbounded/unknown. */
  horizon: number | null;
  checked_at: number | null;
}

export interface TasksTable {
  id: string;
  lock_system_id: string;
  person_id: string;
  key_id: string;
  kind: string;
  description: string;
  reason: string;
  correlation_id: string;
  created_at: number;
  deadline: number;
  done_at: number | null;
  done_by: string | null;
  note: string | null;
}

/** When a person must be reconciled again because time passes (termination date, access window). */
export interface ScheduleTable {
  person_id: string;
  due_at: number;
  reason: string;
}

export interface InboundEventsTable {
  source: string;
  event_id: string;
  received_at: number;
}

export type LockdownState = 'active' | 'lift_requested' | 'lifted' | 'expired';

export interface LockdownsTable {
  id: string;
  /** JSON LockdownScope. */
  scope: string;
  scope_key: string;
  reason: string;
  state: LockdownState;
  correlation_id: string;
  /** JSON {lockSystem: persons holding in-scope access at start}; {} until marked_at is set. */
  targets: string;
  /** When every target had been marked dirty and counted; null for the first moments (or until a restart resumes it). */
  marked_at: number | null;
  started_by: string;
  started_at: number;
  expires_at: number | null;
  lift_requested_by: string | null;
  lift_requested_at: number | null;
  lifted_by: string | null;
  lifted_at: number | null;
  lift_correlation_id: string | null;
  /** When everyone had been marked for the lift's restore; null before the lift and for its first moments. */
  lift_marked_at: number | null;
}

export interface LockdownExemptionsTable {
  lockdown_id: string;
  kind: 'person' | 'group';
  value: string;
  added_by: string;
  added_at: number;
}

export interface MetaTable {
  key: string;
  value: string;
}

export interface FailedJobsTable {
  id: string;
  queue: string;
  lock_system_id: string;
  person_id: string;
  error: string;
  attempts: number;
  failed_at: number;
  retried_at: number | null;
}

export interface AuditTable {
  seq: number;
  at: number;
  actor: string;
  action: string;
  subject: string;
  person_id: string | null;
  detail: string;
  correlation_id: string;
  prev_hash: string;
  hash: string;
}

export interface AuditHeadTable {
  id: number;
  seq: number;
  hash: string;
}

export interface Database {
  persons: PersonsTable;
  groups: GroupsTable;
  memberships: MembershipsTable;
  person_emails: PersonEmailsTable;
  dirty: DirtyTable;
  lock_state: LockStateTable;
  operations: OperationsTable;
  failed_jobs: FailedJobsTable;
  audit: AuditTable;
  audit_head: AuditHeadTable;
  meta: MetaTable;
  key_changes: KeyChangesTable;
  tasks: TasksTable;
  schedule: ScheduleTable;
  inbound_events: InboundEventsTable;
  lockdowns: LockdownsTable;
  lockdown_exemptions: LockdownExemptionsTable;
}

// ---------- identity sources (migration 0005; src/sources) ----------

/** One record of an API-connected identity source (Okta user id, Entra object id, …) and the lockstep person it feeds. */
export interface SourceUsersTable {
  source_id: string;
  /** The source's own id of the user. */
  remote_id: string;
  /** lockstep's person id: this record's own persons row (`primary`) or the person it is linked to (`secondary`). */
  person_id: string;
  role: 'primary' | 'secondary';
  /** Normalised value of `identity.matchOn`, or null when linking is off or the value is absent. */
  match_key: string | null;
  /** 0 once the source said the user is gone (kept as a tombstone while it matters). */
  present: number;
  /** Hash of the mapped record (policy-relevant fields only). */
  hash: string;
  /** Hash of what was last written to the persons row (primary records). */
  written_hash: string | null;
  /** The mapped record as JSON, kept only when linking is on (to recompute the linked person). */
  record: string | null;
  created_at: number;
  /** When the source's API last confirmed this record (hook confirmation, delta or snapshot). */
  confirmed_at: number;
}

/** A group of an API-connected source and the lockstep group it is stored as. */
export interface SourceGroupsTable {
  source_id: string;
  remote_id: string;
  group_id: string;
  hash: string;
  /** Hash of the member person ids last written by a snapshot. */
  members_hash: string | null;
  confirmed_at: number;
}

/** Webhook / delta hints: the dedupe record and the confirmation outbox in one. */
export interface SourceHintsTable {
  seq: Generated<number>;
  source_id: string;
  dedupe_key: string;
  kind: string;
  /** `user` or `group`: what confirmation reads. */
  target: string;
  target_id: string;
  group_id: string | null;
  event_id: string;
  event_type: string;
  occurred_at: string;
  revocation: number;
  received_at: number;
  /** `pending`, `done` or `failed`. */
  state: string;
  attempts: number;
  done_at: number | null;
  error: string | null;
}

/** Work a hook asked for (Entra subscription re-authorisation), run by the source worker. */
export interface SourceTasksTable {
  seq: Generated<number>;
  source_id: string;
  dedupe_key: string;
  type: string;
  data: string;
  received_at: number;
  state: string;
  attempts: number;
  done_at: number | null;
  error: string | null;
}

/** Per-source synchronisation state: delta cursor, schedule and the last full reconciliation. */
export interface SourceStateTable {
  source_id: string;
  cursor: string | null;
  cursor_at: number | null;
  /** `delta` or `full` when a hook, a delta or an operator asked for a reconciliation. */
  resync: string | null;
  resync_at: number | null;
  last_delta_at: number | null;
  last_snapshot_at: number | null;
  last_snapshot_done_at: number | null;
  /** JSON summary of the last snapshot (counts of what it had to change: the IdP drift it repaired). */
  last_snapshot: string | null;
  next_maintain_at: number | null;
  last_error: string | null;
  last_error_at: number | null;
  updated_at: number;
}

/** One drift check (lock-system drift: what the lock system holds vs. lock_state). */
export interface DriftChecksTable {
  id: string;
  kind: string;
  system_id: string;
  started_at: number;
  finished_at: number | null;
  /** JSON: persons checked, drifted, errors. */
  summary: string | null;
}

export interface DriftFindingsTable {
  id: string;
  check_id: string;
  kind: string;
  system_id: string;
  person_id: string;
  detail: string;
  found_at: number;
  repaired_at: number | null;
}

export interface Database {
  source_users: SourceUsersTable;
  source_groups: SourceGroupsTable;
  source_hints: SourceHintsTable;
  source_tasks: SourceTasksTable;
  source_state: SourceStateTable;
  drift_checks: DriftChecksTable;
  drift_findings: DriftFindingsTable;
}
