/**
 * iLOQ Public API v2 wire shapes (5 Series), as documented by iLOQ's OpenAPI description
 * (see /work/shared/reference/lock-systems.md §2 and the generated client Enkora/iloq_api).
 * Names are the wire names: PascalCase with `_ID` suffixes, `eMail`, `SessionID` in the
 * CreateSession answer but `SessionId` as request header.
 *
 * Shared by the client, the adapter and the simulator so that all three speak exactly one
 * dialect; only the fields lockstep reads or writes are listed, the rest pass through.
 */

export interface LockGroup {
  LockGroup_ID: string;
  Name: string;
  /** 2 = zones in use, 4 = real estates in use, 32 = code groups ... */
  OptionMask: number;
  State: number;
  /** Windows time zone name, e.g. "FLE Standard Time". Time-limit slots are in this zone. */
  TimeZoneStandardName: string;
}

export interface Person {
  Person_ID: string;
  PersonCode: string | null;
  ExternalPersonId: string | null;
  FirstName: string | null;
  LastName: string | null;
  eMail: string | null;
  EmploymentEndDate: string | null;
  Address?: string | null;
  CompanyName?: string | null;
  WorkTitle?: string | null;
  LanguageCode?: string | null;
  Phone1?: string | null;
  State?: number;
  [field: string]: unknown;
}

/** Key.State. */
export const KeyState = { planning: 0, handedOver: 1, hidden: 2, deleted: 3, returned: 4 } as const;

export interface Key {
  FNKey_ID: string;
  Person_ID: string | null;
  /** Bits: 2 S50, 4 phone, 256 5 Series ... (phone key = 6). */
  KeyTypeMask: number;
  State: number;
  /** Enum values are not published by iLOQ; see the simulator for the values it uses. */
  ProgrammingState: number;
  IsProgrammed: boolean;
  /** UTC ISO date-time or null. */
  ExpireDate: string | null;
  ROM_ID: string | null;
  Stamp: string | null;
  TagKey: string | null;
  RealEstate_ID: string | null;
  Description?: string | null;
  [field: string]: unknown;
}

/** SecurityAccess.Type. Only `api` (3) can be changed and ordered through the Public API. */
export const SecurityAccessType = { keySecurityAccess: 0, standard: 1, mask: 2, api: 3 } as const;

export interface SecurityAccess {
  SecurityAccess_ID: string;
  Name: string | null;
  Description?: string | null;
  Type: number;
  /** 0 active, 1 not in use, 2 blocklisted, 3 led to blocklist through a key, 4 blocked. */
  Status: number;
  RealEstate_ID?: string | null;
  Zone_ID?: string | null;
  [field: string]: unknown;
}

/** GET /api/v2/Keys/{id}/SecurityAccesses?mode=1|2 */
export interface GetKeySecurityAccessesResult {
  OutsideUserZonesCount: number;
  SecurityAccesses: SecurityAccess[] | null;
}

/** GetSecurityAccessesView / GetTimeLimitsView: 1 current state, 2 last programmed state. */
export const View = { current: 1, lastProgrammed: 2 } as const;

export interface KeyTimeLimitData {
  WeekDayMask: number;
  StartTimeMS: number;
  EndTimeMS: number;
}

/** Slot 0 = start date, slot 1 = end date, slot 2 = time profiles. */
export interface KeyTimeLimitSlot {
  SlotNo: number;
  /** `yyyy-MM-ddTHH:mm:ss` in the locking system's time zone, for slots 0 and 1. */
  LimitDateLg?: string | null;
  TimeLimitTitle_ID?: string | null;
  TimeLimitData?: KeyTimeLimitData[] | null;
  TimeLimitTitleStartDateLg?: string | null;
  TimeLimitTitleEndDateLg?: string | null;
  [field: string]: unknown;
}

/** GET /api/v2/Keys/{id}/TimeLimitTitles?mode=1|2 */
export interface GetTimeLimitsResult {
  KeyScheduler: Record<string, unknown> | null;
  KeyTimeLimitSlots: KeyTimeLimitSlot[] | null;
  OfflineExpirationSeconds: number;
  OutsideUserZoneTimeLimitTitleSlots: number[] | null;
}

/** PUT /api/v2/Keys/{id}/SecurityAccesses: full replace; whatever is omitted is deleted. */
export interface UpdateKeySecurityAccessesParam {
  SecurityAccessIds: string[];
  TimeLimitSlots: KeyTimeLimitSlot[];
  KeyScheduler: Record<string, unknown> | null;
  OfflineExpirationSeconds: number;
  OutsideUserZoneTimeLimitTitleSlots: number[] | null;
}

export interface CreateSessionParam {
  CustomerCode: string;
  UserName: string;
  Password: string;
  ApiKey: string;
  ApiSecret: string;
}

export interface CreateSessionResult {
  SessionID: string | null;
  Result: number;
}

/** CreateSessionResultType. */
export const CreateSessionResultCode = {
  none: 0,
  success: 1,
  invalidInterfaceVersion: 2,
  httpsRequired: 3,
  databaseUpdateInProgress: 4,
  invalidCredentials: 5,
  databaseVersionTooLow: 6,
  lockedOut: 7,
  ignoredDueToLockout: 8,
  passwordExpired: 9,
  userCancelled: 10,
  databaseVersionTooHigh: 11,
} as const;

export const createSessionResultText: Record<number, string> = {
  0: 'no result',
  1: 'success',
  2: 'invalid web service interface version',
  3: 'HTTPS required',
  4: 'database update in progress',
  5: 'invalid credentials or customer code',
  6: 'database version too low (wrong server)',
  7: 'credentials locked out',
  8: 'login ignored due to lockout',
  9: 'password expired or reset requested',
  10: 'user cancelled (SSO)',
  11: 'database version too high',
};

/** GET …/SecurityAccesses/CanAdd (key level; the endpoint takes no access id). */
export const CanAddResult = { notSet: 0, ok: 1, unmodifiable: 2, maxReached: 3 } as const;
export const canAddText: Record<number, string> = {
  0: 'CanAdd returned "not set"',
  1: 'ok',
  2: 'key is in an unmodifiable state (for example blocklisted)',
  3: 'key has the maximum number of security accesses',
};

/** GET …/SecurityAccesses/{saId}/CanDelete. */
export const CanDeleteResult = { notSet: 0, ok: 1, unmodifiable: 2, linkMissing: 3 } as const;
export const canDeleteText: Record<number, string> = {
  0: 'CanDelete returned "not set"',
  1: 'ok',
  2: 'access link is unmodifiable through the API (not an API access, or key blocklisted)',
  3: 'access link does not exist',
};

/** GET /api/v2/Keys/{id}/CanOrder. */
export const CanOrderResult = { ok: 0, wrongState: 4 } as const;
export const canOrderText: Record<number, string> = {
  [-1]: 'error occurred during checking',
  0: 'ok',
  1: 'key has changes which require iLOQ Manager and a programming token to order',
  2: 'key is not a phone or 5 Series key and cannot be ordered through the API',
  3: 'licence limit exceeded',
  4: 'key is in the wrong state (only keys in planning state can be ordered)',
  5: "key's id is too large",
  6: 'key has security accesses outside its zones',
  7: 'key has time limits outside its zones',
  8: 'key is in the block list',
  9: 'phone key has no phone number',
  10: 'phone key has no e-mail address although messages go by e-mail',
  11: 'key has too many time limits',
  12: 'key main zone is not set',
  13: 'key has no person attached',
  14: 'external key has no TagKey',
};

export function describeCode(table: Record<number, string>, code: number, endpoint: string): string {
  return `${table[code] ?? 'unknown result'} (${endpoint} ${code})`;
}

/** Body of an error answer (ASP.NET Web API style), e.g. `{"Message":"Invalid value"}`. */
export interface ErrorBody {
  Message?: string;
}

/**
 * Key.ProgrammingState. iLOQ does not publish the values; these are the ones lockstep assumes
 * (and the simulator uses): 0 in planning (changed, not ordered), 1 ordered (programming task
 * waiting for the key), 2 programmed.
 */
export const ProgrammingState = { planning: 0, ordered: 1, programmed: 2 } as const;

/** KeyTypeMask bits lockstep reads. */
export const KeyTypeBit = { s50: 2, phone: 4, otherPhysical: 128, fiveSeries: 256 } as const;

/** GET /api/v2/Keys/{id}/CanReturn (CanReturnKeyResultType). */
export const CanReturnResult = { ok: 0, needsManager: 1, notReturnable: 2, neverProgrammed: 3, blocklisted: 4 } as const;
export const canReturnText: Record<number, string> = {
  0: 'ok',
  1: 'returning needs iLOQ Manager and a programming token',
  2: 'only phone keys and external tags can be returned through the API',
  3: 'key was never programmed (delete it instead)',
  4: 'key is in the block list',
};

/** GET /api/v2/Keys/{id}/CanDelete (CanDeleteKeyResult). */
export const CanDeleteKeyResult = { ok: 0, programmed: 1, givenToProgramming: 2, blocklisted: 3 } as const;
export const canDeleteKeyText: Record<number, string> = {
  0: 'ok',
  1: 'key is programmed (return it instead)',
  2: 'key is given to programming',
  3: 'key is in the block list',
};

/** POST /api/v2/LockLogs/GetLockLogDataByTimestamp and …ByGoingDates body (UTC, start inclusive, end exclusive). */
export interface GetLockLogDataParam {
  StartDateUtc: string | null;
  EndDateUtc: string | null;
}

/** One lock log entry (LockLogData). */
export interface LockLogData {
  DeviceLog_ID: string;
  /** Log kind bits; lockstep assumes DeviceLogTypeMask values: 1 failed access, 4 successful access. */
  AccessTypeMask: number;
  ErrorCode: number;
  ErrorDescription?: string | null;
  FLock_ID: string;
  FNKey_ID: string | null;
  GoingCounter?: number;
  /** When the key accessed the lock (UTC). */
  GoingDate: string | null;
  KeyId?: number;
  LocationCode?: string | null;
  LockGroup_ID: string;
  LockingObject?: string | null;
  ReadingDate?: string | null;
  /** When the log arrived at the server (UTC); GetLockLogDataByTimestamp filters on this. */
  TimestampUtc: string;
  [field: string]: unknown;
}

export interface GetLockLogDataResult {
  StartDateUtc: string | null;
  EndDateUtc: string | null;
  /** "Currently maximum of 2000 is returned at once." */
  LockLogs: LockLogData[] | null;
}

/** Documented cap of one lock-log answer. */
export const LOCK_LOG_CAP = 2000;

/** DeviceLogTypeMask bits used to classify access events. */
export const DeviceLogType = { failedAccess: 1, lockProgrammed: 2, successfulAccess: 4, fiveSeriesKey: 2048 } as const;

// ---- blocklist (API term "Blacklist") -------------------------------------------------------

/** BlacklistItem.ChangeType. iLOQ does not publish the values; lockstep assumes 0 added, 1 removed. */
export const BlacklistChangeType = { added: 0, removed: 1 } as const;

/** One entry of GET /api/v2/Blacklists: a key added to (or removed from) the blocklist in a version. */
export interface BlacklistItem {
  FNKey_ID: string;
  ChangeType: number;
  /** The blocklist version this change is part of (increments on each change). */
  BlacklistVersion: number;
  [field: string]: unknown;
}

/**
 * The blocklist packet as the locks are sent it. iLOQ names the field but does not publish its
 * shape; lockstep reads `BlacklistVersion` (the version ordered to the locks) and
 * `ProgrammedVersion` (the version every lock has: "Blocklist up to date"). Without the latter,
 * a blocklisting is never reported effective (fail-safe: the key stays listed as exposed).
 */
export interface BlacklistPacket {
  BlacklistVersion?: number | null;
  ProgrammedVersion?: number | null;
  [field: string]: unknown;
}

/** GET /api/v2/Blacklists */
export interface GetBlacklistsResult {
  BlacklistItems: BlacklistItem[] | null;
  BlacklistPacket?: BlacklistPacket | null;
}

/** GET /api/v2/Blacklists/CanOrderS40Blacklist. */
export const CanOrderBlacklistResult = { ok: 0, needsManager: 1, noChanges: 2, tooManyItems: 3 } as const;
export const canOrderBlacklistText: Record<number, string> = {
  0: 'ok',
  1: 'ordering the blocklist needs iLOQ Manager and a programming token',
  2: 'no blocklist changes to order (or the blocklist is empty)',
  3: 'the blocklist has too many items',
};
