/**
 * # LockSystem port
 *
 * What it is: the one contract the core uses to change and observe a physical key system
 * (iLOQ, ASSA ABLOY CLIQ). An adapter owns its wire format, its session/auth handling and the
 * mapping of lock-system errors to the three outcomes the queue understands (retry, rate
 * limited, permanent). Adapters are constructed from their config section and live for the
 * process lifetime.
 *
 * What it is not: it does not decide *what* access a person should have (that is policy and the
 * planner), it does not retry (the apply queue does, with backoff and Retry-After), and it does
 * not persist anything (the store does). It never throws anything but `LockSystemError` for
 * failures it understands; any other exception is treated as retryable.
 *
 * Contract every adapter must meet (checked by the suite in test/conformance/):
 * - `apply` is idempotent: re-applying an accepted operation succeeds without a second change
 *   (a grant that is already there is "already" not "again").
 * - `apply` of a revoke/leave for a person the lock system does not know succeeds with
 *   `outcome: 'absent'` — there is nothing to take away.
 * - only access in the adapter's managed catalogue is ever touched; access granted by hand
 *   in the lock system's own tool is left alone.
 * - `reportLost` is idempotent: a key already on the blocklist answers `change: 'unchanged'`
 *   (and orders whatever an earlier, interrupted attempt left unordered).
 */

import type { OperationKind } from '../domain/types.ts';

export interface PersonRef {
  /** lockstep's person id. */
  personId: string;
  /** Correlation id on the lock system side (iLOQ ExternalPersonId). */
  externalId: string;
  givenName?: string;
  familyName?: string;
  email?: string;
  /** ISO date-time; when set, keys stop working then even if never updated again. */
  terminationDate?: string;
}

export interface ApplyRequest {
  /** lockstep's operation id: adapters may pass it to the lock system as a correlation id. */
  operationId: string;
  kind: OperationKind;
  /** Access names (as configured in policy). */
  access: string[];
  person: PersonRef;
}

/** A key its holder did not return: put it on the lock system's blocklist (report it lost). */
export interface ReportLostRequest {
  /** lockstep's correlation id for this blocklisting (adapters may pass it on). */
  operationId: string;
  /** The key, as the lock system names it (KeyResult.keyId). */
  keyId: string;
  /** The holder, for descriptions and sanity checks. */
  person: PersonRef;
  /** Why, in words (kept by the lock system where it has a field for it). */
  reason: string;
}

export interface KeyResult {
  keyId: string;
  /** What happened on this key. */
  change: 'changed' | 'unchanged' | 'skipped';
  /** Why a key was skipped (e.g. not API-changeable), for the manual worklist. */
  reason?: string;
  /** Programming was ordered so the change reaches the physical key. */
  programmingOrdered?: boolean;
  /** Lock-system job that carries this change to the physical key (CLIQ job id), if any. */
  jobId?: string;
  /** True when the change is already physically effective (e.g. nothing had to be programmed). */
  effective?: boolean;
  /**
   * For revocations: the latest moment (ISO) this key could still open a door with the access it
   * had, if the key is never updated again (validity end, revalidation horizon, offline expiry).
   * Absent when the lock system gives no bound.
   */
  exposureUntil?: string;
  /** Work only a person can do for this key; the core turns it into a manual task. */
  task?: ManualTaskRequest;
}

export interface ManualTaskRequest {
  kind: 'collect_key' | 'blocklist_key' | 'program_key';
  /** One sentence for the locksmith: what, where, why. */
  description: string;
}

/** Whether accepted changes on a key have physically reached it. */
export interface KeyProgrammingState {
  keyId: string;
  /** Every accepted change is on the physical key (iLOQ: programmed state equals current; CLIQ: no pending job). */
  effective: boolean;
  pendingJobs?: number;
  /** Latest moment (ISO) the key could still open a door with superseded access, when bounded. */
  horizon?: string;
  /** When the key was last updated/programmed, if known (ISO). */
  lastUpdatedAt?: string;
}

/** A physical access event read from the lock system's audit trail. */
export interface AccessEvent {
  id: string;
  at: string;
  keyId: string;
  lockId: string;
  result: 'granted' | 'denied';
  /** lockstep's person id (the external id on the lock system), when the key has a holder. */
  externalId?: string;
}

export interface ApplyResult {
  /** `applied`: accepted by the lock system; `absent`: nothing to do (unknown person on revoke). */
  outcome: 'applied' | 'absent';
  keys: KeyResult[];
  /** Lock-system person id, when known. */
  remotePersonId?: string;
}

export interface LockKey {
  keyId: string;
  /** Managed access names currently on the key. */
  access: string[];
  /** End of validity, if any (ISO). */
  validUntil?: string;
  /** Programming state as the lock system reports it. */
  programmed?: boolean;
}

export interface LockPerson {
  remotePersonId: string;
  externalId: string;
  keys: LockKey[];
}

export type LockErrorKind = 'retryable' | 'rate_limited' | 'permanent' | 'auth';

/** The only error type adapters throw on purpose; `kind` decides what the queue does. */
export class LockSystemError extends Error {
  readonly kind: LockErrorKind;
  /** From Retry-After, when the lock system said how long to wait. */
  readonly retryAfterMs: number | undefined;
  readonly status: number | undefined;
  /**
   * True when the adapter knows the call changed nothing on the lock system (it failed before
   * its first write: an access name it cannot resolve, say). A grant that fails otherwise may
   * have added part of its access, which the core then treats as possibly present.
   */
  readonly unchanged: boolean;
  constructor(kind: LockErrorKind, message: string, opts: { retryAfterMs?: number; status?: number; cause?: unknown; unchanged?: boolean } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'LockSystemError';
    this.kind = kind;
    this.retryAfterMs = opts.retryAfterMs;
    this.status = opts.status;
    this.unchanged = opts.unchanged ?? false;
  }
}

export interface LockSystem {
  readonly id: string;
  readonly kind: string;
  /** Log in / open sessions. Idempotent. */
  start(): Promise<void>;
  /** Release sessions (iLOQ KillSession). Called once at shutdown. */
  close(): Promise<void>;
  /** Cheap reachability check (used at start and by operators' diagnostics). */
  ping(): Promise<void>;
  /** Names of access this adapter can grant (its managed catalogue). */
  catalogue(): Promise<string[]>;
  /** The person with keys and managed access as the lock system sees it now, or null. */
  readPerson(externalId: string): Promise<LockPerson | null>;
  /** Apply one operation. Throws LockSystemError on failure. */
  apply(req: ApplyRequest): Promise<ApplyResult>;
  /** Programming state of the person's keys: has what was accepted become physically effective? */
  programmingState(externalId: string): Promise<KeyProgrammingState[]>;
  /**
   * Puts a key on the blocklist (iLOQ Blacklists; CLIQ report-lost), so that locks refuse it
   * once the blocklist reaches them. Idempotent: a key already blocklisted is `unchanged`.
   * The result may carry `jobId` (what carries the blocklist to the locks), `effective: false`
   * until it has reached them (then `programmingState` reports the key effective), and a
   * `task` of kind `blocklist_key` when people must visit cylinders or program locks for it to
   * take effect. Throws LockSystemError like `apply` (permanent: the key cannot be blocklisted).
   */
  reportLost(req: ReportLostRequest): Promise<KeyResult>;
  /** Physical access events after `cursor` (oldest first), and the cursor to continue from. */
  readEvents(cursor: string | undefined, limit: number): Promise<{ events: AccessEvent[]; cursor: string | undefined }>;
}
