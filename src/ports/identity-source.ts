/**
 * # IdentitySource port
 *
 * What it is: the one contract the core uses to *learn about* identities held in an IAM platform
 * (Okta, Entra ID, SailPoint ISC, One Identity Manager) outside of SCIM push. An adapter owns its
 * vendor's wire formats, webhook handshakes and authentication, API credentials, paging, rate
 * limits and the mapping of vendor objects to the normalized `SourceUser` / `SourceGroup`.
 * Adapters are constructed from their config section (`create<Name>Source(config, deps)` in
 * `adapters/idp/<name>/`) and live for the process lifetime.
 *
 * It has three faces:
 * 1. **Inbound hooks** — `handleHook` verifies and parses one webhook request *synchronously*
 *    (no I/O) into `Change` hints, or answers a handshake. The core persists the hints and only
 *    then sends the response the adapter prepared (the vendors' deadlines are 3-10 s).
 * 2. **Confirmation** — a `Change` is a HINT, never a fact. It names who may have changed and
 *    how; the core confirms by reading the current state through `readUser` / `readGroup` /
 *    `readGroupMembers` and stores *that*. Duplicated, reordered, replayed or forged-but-
 *    authenticated events therefore cannot push a stale state: a late "membership added" that
 *    arrives after "deactivated" leads to a read that says "deactivated".
 * 3. **Reconciliation** — `readSnapshot` streams everything (users, groups, memberships) for a
 *    full resync; `readDelta` returns the hints since a stored cursor (Graph delta, Okta System
 *    Log). Both are the backstop for lost events (SailPoint fire-and-forget has no resend; Graph
 *    notification latency is "unknown"; Okta retries once).
 *
 * What it is not: it does not store anything (the core persists hints, cursors and tasks), it
 * does not decide access (policy does), it does not dedupe (it exposes `dedupeKey`s; the core
 * dedupes), it does not resolve conflicts between several sources describing the same person
 * (that rule belongs to the core), and it does not retry beyond a short, bounded wait on
 * rate limits — longer waits surface as `IdentitySourceError('rate_limited', retryAfterMs)` for
 * the queue. It never throws anything but `IdentitySourceError` for failures it understands;
 * any other exception is treated as retryable.
 *
 * Contract every adapter must meet (checked by test/idp):
 * - `handleHook` never throws and never does I/O; an unauthenticated or malformed request yields
 *   `outcome: 'rejected'` with no changes and no tasks. Secrets are compared in constant time.
 * - `dedupeKey` is stable across redeliveries of the same vendor event and unique per change.
 * - `readUser` reads the source's *current* state (no caches); `null` means the user no longer
 *   exists there (deleted / hard-removed) and the core treats the person as gone.
 * - `readSnapshot` only ends with `{ type: 'complete' }` when every page was read; a stream that
 *   throws or stops early must never be taken as "everyone else was deleted".
 * - `readDelta` on an expired/unknown cursor returns `{ status: 'resync' }` — the core then runs
 *   a full snapshot and stores the cursor the snapshot's `complete` record carries.
 * - memory stays bounded by a page: snapshots and member lists are streamed, never collected.
 */

/** Which IdP dialect an adapter speaks. */
export type IdpKind = 'okta' | 'entra' | 'sailpoint' | 'oneidentity';

/** A person as the source describes them now, normalized. Maps 1:1 onto the store's `UserInput`. */
export interface SourceUser {
  /** lockstep's source id (config `sources[].id`). */
  sourceId: string;
  /** The source's immutable id of the user (Okta `00u…`, Entra object id, ISC identity id, SCIM id). */
  id: string;
  /** Login name (Okta login, Entra UPN, ISC name, SCIM userName). */
  userName: string;
  /** Correlation id as configured per adapter (see adapters/idp/README.md). */
  externalId?: string;
  /** Whether the source considers the person active (employed, enabled, not suspended). */
  active: boolean;
  email?: string;
  givenName?: string;
  familyName?: string;
  displayName?: string;
  /** Role names usable in policy (`when.roles`). */
  roles: string[];
  /** Flat, policy-usable attributes (department, site, employeeType, terminationDate, …). */
  attributes: Record<string, string>;
  /**
   * The user's complete group memberships in this source when known (always known from
   * `readUser`; in snapshots only where the adapter documents it). Absent = not known here.
   */
  groups?: Array<{ id: string; displayName: string }>;
  /** The vendor object as read (minus secrets), for the store's `resource` column and audit. */
  raw: Record<string, unknown>;
}

/** A group as the source describes it now. Members are read separately (streamed). */
export interface SourceGroup {
  sourceId: string;
  id: string;
  displayName: string;
  externalId?: string;
  raw: Record<string, unknown>;
}

export type ChangeKind =
  | 'user-upsert'
  | 'user-deactivated'
  | 'user-deleted'
  | 'membership-added'
  | 'membership-removed'
  | 'group-changed';

/**
 * A hint that something about a user or group may have changed. The core confirms it:
 * user-* and membership-* → `readUser(userId)` (its groups are the full membership);
 * group-changed → `readGroup(groupId)` (null = gone) and, if membership may have changed,
 * `readGroupMembers(groupId)` or a delta round.
 */
export interface Change {
  kind: ChangeKind;
  sourceId: string;
  /** Source-side user id; present on every kind except `group-changed`. */
  userId?: string;
  /** Source-side group id; present on `membership-*` and `group-changed`. */
  groupId?: string;
  /**
   * Dedupe key: identical for redeliveries of the same vendor event, distinct for distinct
   * changes. Prefixed with the idp kind and source id, so keys of different sources never collide.
   */
  dedupeKey: string;
  /** The vendor's event id (Okta uuid, Graph notification id…) or a derived one; several changes of one event share it. */
  eventId: string;
  /** Vendor event type verbatim, for the audit trail (`user.lifecycle.deactivate`, `updated`, `idn:identity-deleted`). */
  eventType: string;
  /** When it happened at the source (ISO 8601); receipt time when the source does not say. */
  occurredAt: string;
  /** May take access away (leaver, suspension, removal): queue it with leaver priority. */
  revocation: boolean;
}

/** An inbound webhook request as the HTTP layer received it. Header names in any case. */
export interface HookRequest {
  method: string;
  headers: Record<string, string | string[] | undefined>;
  query: Record<string, string | string[] | undefined>;
  /** Exact bytes of the body (needed for signatures; parsed by the adapter). */
  rawBody: Buffer;
}

/**
 * Work an adapter needs done outside the request (Entra: re-authorize a subscription). The core
 * persists it with the changes and later hands it back to `runTask` from a worker.
 */
export interface SourceTask {
  /** Adapter-defined, e.g. `entra.reauthorize`, `entra.ensure-subscriptions`. */
  type: string;
  /** JSON-serializable parameters. */
  data: Record<string, string>;
  dedupeKey: string;
}

/**
 * What `handleHook` decided. The core persists `changes` and `tasks` (in one transaction), then
 * answers with `status`/`headers`/`body`. If persisting fails it answers 503 instead, so that
 * the vendor retries (Okta: once; Graph: up to 4 h; SailPoint fire-and-forget: never).
 */
export interface HookResult {
  /** handshake: answer only; accepted: persist then answer; rejected: answer, persist nothing. */
  outcome: 'handshake' | 'accepted' | 'rejected';
  status: number;
  headers?: Record<string, string>;
  body?: string;
  changes: Change[];
  tasks: SourceTask[];
  /**
   * Ask the core for a (coalesced) reconciliation soon: `delta` when the source can say what
   * changed since the stored cursor (e.g. Graph group notifications, which do not say which
   * member changed); `full` when events are known to be lost.
   */
  resync?: 'delta' | 'full';
  /** Why the request was rejected or what was ignored: for logs, never sent to the caller. */
  reason?: string;
  /** Events in the request that were understood but are not identity changes (logged). */
  ignored?: number;
}

/** One record of a streamed full snapshot. */
export type SnapshotRecord =
  | { type: 'user'; user: SourceUser }
  /** May repeat for the same id (Graph delta pages): treat as upsert. */
  | { type: 'group'; group: SourceGroup }
  /**
   * One page of a group's direct user members (source user ids). Always after that group's
   * first `group` record; several pages per group, possibly interleaved with other records.
   * A group's membership in the snapshot is the union of its pages.
   */
  | { type: 'members'; groupId: string; userIds: string[] }
  /**
   * The snapshot is complete: users/groups not seen are gone from the source. Only now may the
   * core remove what the snapshot did not contain. `cursor` (delta-capable sources) is where the
   * next `readDelta` starts; it was taken before the first page, so nothing is missed.
   * `membership` says how memberships came: `members` — as group + members records (users carry
   * no `groups`); `user-groups` — in each user's `groups` (no group/members records; groups are
   * known only through the users that hold them).
   */
  | { type: 'complete'; cursor?: string; users: number; groups: number; membership: 'members' | 'user-groups' };

export type DeltaResult =
  | {
      status: 'ok';
      changes: Change[];
      /** Store it (after persisting `changes`) and pass it to the next `readDelta`. */
      cursor: string;
      /** More is waiting: call again soon with the new cursor (bounded pages per call). */
      more: boolean;
    }
  /** The cursor is expired or unknown (Graph 410 / syncStateNotFound): run a full snapshot. */
  | { status: 'resync'; reason: string };

export interface MaintenanceResult {
  /** Human-readable actions taken, for logs and audit (`created subscription /users`, …). */
  actions: string[];
  /** Notifications may have been lost (subscription recreated/expired): the core should run a delta (or full) round. */
  resync?: 'delta' | 'full';
  /** When `maintain` wants to run next (ms from now). */
  nextInMs: number;
}

export interface SourceCapabilities {
  /** `handleHook` understands this vendor's webhooks (false: it answers 404). */
  hooks: boolean;
  /** `readDelta` works (false: it throws `unsupported`; reconcile with snapshots). */
  delta: boolean;
  /** `maintain` does something (Entra subscriptions); false: it is a cheap no-op. */
  maintenance: boolean;
  /**
   * The read API is eventually consistent (SailPoint search index): confirm a hint again after
   * this many ms, because the first read may predate the change. 0 = reads are current.
   */
  recheckAfterMs: number;
}

export type SourceErrorKind = 'retryable' | 'rate_limited' | 'auth' | 'permanent' | 'unsupported';

/** The only error type adapters throw on purpose; `kind` decides what the queue does. */
export class IdentitySourceError extends Error {
  readonly kind: SourceErrorKind;
  /** From Retry-After / X-Rate-Limit-Reset, when the source said how long to wait. */
  readonly retryAfterMs: number | undefined;
  readonly status: number | undefined;
  constructor(kind: SourceErrorKind, message: string, opts: { retryAfterMs?: number; status?: number; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'IdentitySourceError';
    this.kind = kind;
    this.retryAfterMs = opts.retryAfterMs;
    this.status = opts.status;
  }
}

export interface IdentitySource {
  readonly id: string;
  readonly kind: IdpKind;
  readonly capabilities: SourceCapabilities;
  /** Validate credentials lazily; no network needed. Idempotent. */
  start(): Promise<void>;
  /** Release resources. Called once at shutdown. */
  close(): Promise<void>;
  /** Cheap reachability + credential check for /readyz. */
  ping(): Promise<void>;
  /** Verify and parse one webhook request. Synchronous, no I/O, never throws. */
  handleHook(req: HookRequest): HookResult;
  /** The user's current state with complete group memberships, or null when gone. */
  readUser(userId: string): Promise<SourceUser | null>;
  /** The group's current state, or null when gone. */
  readGroup(groupId: string): Promise<SourceGroup | null>;
  /** The group's direct user members (source user ids), one page per item. */
  readGroupMembers(groupId: string): AsyncIterable<string[]>;
  /** Everything, streamed; ends with a `complete` record only on success. */
  readSnapshot(): AsyncIterable<SnapshotRecord>;
  /** Hints since `cursor` (from the last `readDelta` or snapshot `complete`). */
  readDelta(cursor: string): Promise<DeltaResult>;
  /** Periodic housekeeping (Entra: create/renew subscriptions). Idempotent. */
  maintain(): Promise<MaintenanceResult>;
  /** Run a task a hook asked for (persisted by the core in between). Idempotent. */
  runTask(task: SourceTask): Promise<MaintenanceResult>;
}
