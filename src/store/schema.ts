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
  /** JSON {lockSystem: persons holding in-scope access at start}. */
  targets: string;
  started_by: string;
  started_at: number;
  expires_at: number | null;
  lift_requested_by: string | null;
  lift_requested_at: number | null;
  lifted_by: string | null;
  lifted_at: number | null;
  lift_correlation_id: string | null;
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


