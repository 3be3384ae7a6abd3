/**
 * In-memory model behind the iLOQ simulator: persons, keys, the security-access catalogue, key
 * access links in "current" and "last programmed" views, time-limit slots, programming state,
 * lock groups and sessions. Plain data and rules, no HTTP (simulator.ts serves it).
 *
 * Everything is indexed by id (and persons by ExternalPersonId) so that a request costs O(1) plus
 * the size of the answer, whatever the number of persons and keys.
 *
 * Where iLOQ does not publish a rule, the simulator picks one and says so:
 * - Key.ProgrammingState values (not published): 0 in planning (changes not yet ordered),
 *   1 ordered, 2 programmed. Any change of a key's accesses or time limits puts it in planning;
 *   CanOrder answers 4 (wrong state) unless the key is in planning; Order moves it to ordered;
 *   programming (control call or `programDelayMs`) copies current → last programmed.
 * - CanAdd takes no access id (as documented), so it is key-level: 2 when the key is blocklisted
 *   or deleted/returned, 3 when `maxAccessesPerKey` is reached, else 1. Adding a non-API access
 *   (Type ≠ 3) is refused by the POST itself (400); CanDelete answers 2 for a non-API access.
 * - PUT …/Keys/{id}/SecurityAccesses refuses (400) any change to the set of non-API accesses,
 *   since "changes to Standard access require Manager and Token".
 * - Ids are GUID strings compared case-insensitively (stored lower-case).
 * - Blocklist ("Blacklist"): CanAddKey is false for a key already listed, deleted/returned, not
 *   S50/5 Series, or without access rights in either view (the physical key carries its last
 *   programmed accesses, so a leaver's key emptied in the current view can still be listed).
 *   AddKey lists the key (CanAdd 2, CanOrder 8, CanReturn 4, CanDelete 3 from then on) and
 *   increments the blocklist version; CanOrderS40Blacklist is 0 while the version is newer than
 *   the one ordered, else 2; OrderS40Blacklist orders the current version; the locks have it
 *   once delivered (control call or `programDelayMs`). GET Blacklists answers `BlacklistItems`
 *   and `BlacklistPacket {BlacklistVersion: ordered, ProgrammedVersion: delivered}`.
 */

import { randomUUID } from 'node:crypto';
import {
  CanAddResult,
  CanDeleteKeyResult,
  CanDeleteResult,
  CanReturnResult,
  KeyState,
  KeyTypeBit,
  ProgrammingState,
  SecurityAccessType,
  BlacklistChangeType,
  CanOrderBlacklistResult,
  type BlacklistItem,
  type GetBlacklistsResult,
  type LockLogData,
  type GetKeySecurityAccessesResult,
  type GetTimeLimitsResult,
  type Key,
  type KeyTimeLimitSlot,
  type LockGroup,
  type Person,
  type SecurityAccess,
  type UpdateKeySecurityAccessesParam,
} from './wire.ts';

/** The values lockstep assumes for Key.ProgrammingState (see wire.ts). */
export const SimProgrammingState = ProgrammingState;

/** A refusal the HTTP layer turns into `status` with `{"Message": message}`. */
export class SimError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

interface KeyRecord {
  key: Key;
  current: Set<string>;
  programmed: Set<string>;
  slots: KeyTimeLimitSlot[];
  programmedSlots: KeyTimeLimitSlot[];
  keyScheduler: Record<string, unknown> | null;
  offlineExpirationSeconds: number;
  programmedOfflineExpirationSeconds: number;
  blocklisted: boolean;
  /** Forces the CanOrder answer (tests: licence limit, Manager + token ...). */
  canOrderOverride: number | undefined;
  /** Forces the CanReturn answer (tests: Manager + token needed ...). */
  canReturnOverride: number | undefined;
}

export interface SimSession {
  lockGroupId: string | null;
  createdAt: number;
  lastUsedAt: number;
}

export interface AddKeyOptions {
  /** Person_ID or ExternalPersonId of the holder (Person_ID tried first). */
  person?: string;
  keyTypeMask?: number;
  state?: number;
  /** Programmed once already (a key handed over in the field). Default true. */
  programmed?: boolean;
  /** Access names or ids linked (and programmed) from the start, of any type. */
  access?: string[];
  description?: string;
}

const LOCAL_DATE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$/;
const id = (s: string) => s.toLowerCase();

export class SimState {
  readonly lockGroups: LockGroup[] = [];
  readonly sessions = new Map<string, SimSession>();
  readonly persons = new Map<string, Person>();
  private readonly personByExternal = new Map<string, string>();
  readonly keys = new Map<string, KeyRecord>();
  private readonly keysByPerson = new Map<string, Set<string>>();
  readonly accesses = new Map<string, SecurityAccess>();
  /** Lock logs in arrival order (TimestampUtc). */
  readonly lockLogs: LockLogData[] = [];
  /** Most entries one GetLockLogData… answer carries (iLOQ: 2000). */
  maxLockLogsPerCall = 2000;
  private romCounter = 1;
  maxAccessesPerKey = 64;
  /** Keys auto-issued to a person created through the API without keys. */
  autoIssueKeys = 1;
  /** Blocklist changes, oldest first; the version increments on each change. */
  readonly blacklistItems: BlacklistItem[] = [];
  blacklistVersion = 0;
  /** Version last ordered (OrderS40Blacklist) and version every lock has (delivered). */
  blacklistOrderedVersion = 0;
  blacklistProgrammedVersion = 0;
  /** Forces the CanOrderS40Blacklist answer (tests: Manager + token needed ...). */
  canOrderBlacklistOverride: number | undefined;

  clear(): void {
    this.lockGroups.length = 0;
    this.sessions.clear();
    this.persons.clear();
    this.personByExternal.clear();
    this.keys.clear();
    this.keysByPerson.clear();
    this.accesses.clear();
    this.lockLogs.length = 0;
    this.romCounter = 1;
    this.blacklistItems.length = 0;
    this.blacklistVersion = 0;
    this.blacklistOrderedVersion = 0;
    this.blacklistProgrammedVersion = 0;
    this.canOrderBlacklistOverride = undefined;
  }

  // ---- catalogue -------------------------------------------------------------------------

  addSecurityAccess(name: string, type: number = SecurityAccessType.api, opts: { status?: number; id?: string } = {}): SecurityAccess {
    const sa: SecurityAccess = {
      SecurityAccess_ID: id(opts.id ?? randomUUID()),
      Name: name,
      Description: null,
      Type: type,
      Status: opts.status ?? 0,
      RealEstate_ID: null,
      Zone_ID: null,
    };
    this.accesses.set(sa.SecurityAccess_ID, sa);
    return sa;
  }

  /** By id, or else by exact name. */
  findAccess(idOrName: string): SecurityAccess | undefined {
    const byId = this.accesses.get(id(idOrName));
    if (byId) return byId;
    for (const sa of this.accesses.values()) if (sa.Name === idOrName) return sa;
    return undefined;
  }

  // ---- persons ---------------------------------------------------------------------------

  getPerson(personId: string): Person {
    const p = this.persons.get(id(personId));
    if (!p) throw new SimError(400, `Invalid value: Person_ID ${personId}`);
    return p;
  }

  findPersonByExternalId(externalId: string): Person | undefined {
    const pid = this.personByExternal.get(externalId);
    return pid ? this.persons.get(pid) : undefined;
  }

  insertPerson(input: Partial<Person>, opts: { autoIssue?: boolean } = {}): Person {
    if (!input.PersonCode) throw new SimError(400, 'PersonCode is required');
    const pid = id(input.Person_ID || randomUUID());
    if (this.persons.has(pid)) throw new SimError(400, `Person_ID ${pid} already exists`);
    const ext = input.ExternalPersonId || null;
    if (ext && this.personByExternal.has(ext)) throw new SimError(400, `ExternalPersonId must be unique: "${ext}" is already in use`);
    const person: Person = {
      Address: null,
      CompanyName: null,
      ContactInfo: null,
      Country: null,
      Description: null,
      LanguageCode: null,
      Phone1: null,
      Phone2: null,
      Phone3: null,
      PostOffice: null,
      WorkTitle: null,
      ZipCode: null,
      ExternalCanEdit: true,
      ...input,
      Person_ID: pid,
      PersonCode: input.PersonCode,
      ExternalPersonId: ext,
      FirstName: input.FirstName ?? null,
      LastName: input.LastName ?? null,
      eMail: input.eMail ?? null,
      EmploymentEndDate: input.EmploymentEndDate ?? null,
      State: 0,
    };
    this.persons.set(pid, person);
    if (ext) this.personByExternal.set(ext, pid);
    if (opts.autoIssue) for (let i = 0; i < this.autoIssueKeys; i++) this.addKey({ person: pid, description: '5 Series key (issued by simulator)' });
    return person;
  }

  updatePerson(input: Partial<Person>): Person {
    if (!input.Person_ID) throw new SimError(400, 'Person.Person_ID is required');
    const person = this.getPerson(input.Person_ID);
    const ext = input.ExternalPersonId === undefined ? person.ExternalPersonId : input.ExternalPersonId || null;
    if (ext !== person.ExternalPersonId) {
      if (ext && this.personByExternal.has(ext)) throw new SimError(400, `ExternalPersonId must be unique: "${ext}" is already in use`);
      if (person.ExternalPersonId) this.personByExternal.delete(person.ExternalPersonId);
      if (ext) this.personByExternal.set(ext, person.Person_ID);
    }
    for (const [k, v] of Object.entries(input)) {
      if (k === 'Person_ID' || k === 'State') continue;
      person[k] = v;
    }
    person.ExternalPersonId = ext;
    return person;
  }

  keysOfPerson(personId: string): Key[] {
    const ids = this.keysByPerson.get(id(personId));
    if (!ids) return [];
    const out: Key[] = [];
    for (const k of ids) out.push(this.keys.get(k)!.key);
    return out;
  }

  // ---- keys ------------------------------------------------------------------------------

  addKey(opts: AddKeyOptions = {}): Key {
    let personId: string | null = null;
    if (opts.person) {
      const p = this.persons.get(id(opts.person)) ?? this.findPersonByExternalId(opts.person);
      if (!p) throw new SimError(400, `Invalid value: person ${opts.person}`);
      personId = p.Person_ID;
    }
    const programmed = opts.programmed ?? true;
    const rom = (this.romCounter++).toString(16).padStart(12, '0');
    const key: Key = {
      FNKey_ID: randomUUID(),
      Person_ID: personId,
      KeyTypeMask: opts.keyTypeMask ?? 256,
      State: opts.state ?? KeyState.handedOver,
      ProgrammingState: programmed ? SimProgrammingState.programmed : SimProgrammingState.planning,
      IsProgrammed: programmed,
      ExpireDate: null,
      ROM_ID: rom,
      Stamp: `S${rom.slice(-6)}`,
      TagKey: null,
      RealEstate_ID: null,
      Description: opts.description ?? null,
      InfoText: null,
      VersionCode: null,
    };
    const initial = new Set<string>();
    for (const a of opts.access ?? []) {
      const sa = this.findAccess(a);
      if (!sa) throw new SimError(400, `unknown security access ${a}`);
      initial.add(sa.SecurityAccess_ID);
    }
    this.keys.set(key.FNKey_ID, {
      key,
      current: initial,
      programmed: programmed ? new Set(initial) : new Set(),
      slots: [],
      programmedSlots: [],
      keyScheduler: null,
      offlineExpirationSeconds: 0,
      programmedOfflineExpirationSeconds: 0,
      blocklisted: false,
      canOrderOverride: undefined,
      canReturnOverride: undefined,
    });
    if (personId) {
      let set = this.keysByPerson.get(personId);
      if (!set) this.keysByPerson.set(personId, (set = new Set()));
      set.add(key.FNKey_ID);
    }
    return key;
  }

  record(keyId: string): KeyRecord {
    const r = this.keys.get(id(keyId));
    if (!r) throw new SimError(400, `Invalid value: FNKey_ID ${keyId}`);
    return r;
  }

  updateKey(input: Partial<Key>): void {
    if (!input.FNKey_ID) throw new SimError(400, 'Key.FNKey_ID is required');
    const k = this.record(input.FNKey_ID).key;
    // Identity, type and programming fields are read-only through PUT Keys.
    const exp = input.ExpireDate;
    if (exp !== undefined && exp !== null && (typeof exp !== 'string' || Number.isNaN(Date.parse(exp))))
      throw new SimError(400, `Invalid value: ExpireDate ${String(exp)}`);
    for (const f of ['ExpireDate', 'Description', 'InfoText', 'TagKey', 'Stamp'] as const)
      if (f in input) (k as Record<string, unknown>)[f] = input[f] ?? null;
  }

  securityAccessesView(keyId: string, mode: number): GetKeySecurityAccessesResult {
    const r = this.record(keyId);
    const ids = mode === 2 ? r.programmed : r.current;
    const list: SecurityAccess[] = [];
    for (const sa of ids) list.push(this.accesses.get(sa)!);
    return { OutsideUserZonesCount: 0, SecurityAccesses: list };
  }

  timeLimitsView(keyId: string, mode: number): GetTimeLimitsResult {
    const r = this.record(keyId);
    return {
      KeyScheduler: r.keyScheduler,
      KeyTimeLimitSlots: structuredClone(mode === 2 ? r.programmedSlots : r.slots),
      OfflineExpirationSeconds: mode === 2 ? r.programmedOfflineExpirationSeconds : r.offlineExpirationSeconds,
      OutsideUserZoneTimeLimitTitleSlots: [],
    };
  }

  canAdd(keyId: string): number {
    const r = this.record(keyId);
    if (r.blocklisted || r.key.State === KeyState.deleted || r.key.State === KeyState.returned) return CanAddResult.unmodifiable;
    if (r.current.size >= this.maxAccessesPerKey) return CanAddResult.maxReached;
    return CanAddResult.ok;
  }

  addAccess(keyId: string, saId: string | undefined): void {
    const r = this.record(keyId);
    if (!saId) throw new SimError(400, 'SecurityAccess_ID is required');
    const sa = this.accesses.get(id(saId));
    if (!sa) throw new SimError(400, `Invalid value: SecurityAccess_ID ${saId}`);
    if (sa.Type !== SecurityAccessType.api) throw new SimError(400, `Only API access rights can be added through the public API ("${sa.Name}" is type ${sa.Type})`);
    const can = this.canAdd(keyId);
    if (can !== CanAddResult.ok) throw new SimError(400, `Security access cannot be added to the key (CanAdd ${can})`);
    if (r.current.has(sa.SecurityAccess_ID)) throw new SimError(400, 'Security access is already linked to the key');
    r.current.add(sa.SecurityAccess_ID);
    this.touch(r);
  }

  canDelete(keyId: string, saId: string): number {
    const r = this.record(keyId);
    const sid = id(saId);
    if (!r.current.has(sid)) return CanDeleteResult.linkMissing;
    if (r.blocklisted || this.accesses.get(sid)?.Type !== SecurityAccessType.api) return CanDeleteResult.unmodifiable;
    return CanDeleteResult.ok;
  }

  deleteAccess(keyId: string, saId: string): void {
    const r = this.record(keyId);
    const can = this.canDelete(keyId, saId);
    if (can === CanDeleteResult.linkMissing) throw new SimError(400, 'Security access is not linked to the key');
    if (can !== CanDeleteResult.ok) throw new SimError(400, `Security access cannot be removed through the public API (CanDelete ${can})`);
    r.current.delete(id(saId));
    this.touch(r);
  }

  replaceAccesses(keyId: string, body: Partial<UpdateKeySecurityAccessesParam>): void {
    const r = this.record(keyId);
    if (r.blocklisted) throw new SimError(400, 'Key is in the block list');
    const next = new Set<string>();
    for (const raw of body.SecurityAccessIds ?? []) {
      if (typeof raw !== 'string' || !this.accesses.has(id(raw))) throw new SimError(400, `Invalid value: SecurityAccess_ID ${String(raw)}`);
      next.add(id(raw));
    }
    const nonApi = (s: Set<string>) => [...s].filter((x) => this.accesses.get(x)!.Type !== SecurityAccessType.api).sort().join(',');
    if (nonApi(next) !== nonApi(r.current))
      throw new SimError(400, 'Only API access rights can be changed through the public API; re-send every other security access unchanged');
    const slots: KeyTimeLimitSlot[] = [];
    for (const s of body.TimeLimitSlots ?? []) {
      if (!s || typeof s.SlotNo !== 'number' || s.SlotNo < 0) throw new SimError(400, 'TimeLimitSlots[].SlotNo is required');
      if ((s.SlotNo === 0 || s.SlotNo === 1) && !(typeof s.LimitDateLg === 'string' && LOCAL_DATE.test(s.LimitDateLg)))
        throw new SimError(400, `TimeLimitSlots slot ${s.SlotNo}: LimitDateLg must be "yyyy-MM-ddTHH:mm:ss" in the locking system's time zone`);
      if ((s.SlotNo === 0 || s.SlotNo === 1) && slots.some((x) => x.SlotNo === s.SlotNo)) throw new SimError(400, `TimeLimitSlots slot ${s.SlotNo} given twice`);
      slots.push({ ...s, TimeLimitData: s.TimeLimitData ?? [] });
    }
    slots.sort((a, b) => a.SlotNo - b.SlotNo);
    const offline = body.OfflineExpirationSeconds ?? r.offlineExpirationSeconds;
    const changed =
      !sameSet(next, r.current) ||
      JSON.stringify(slots) !== JSON.stringify(r.slots) ||
      JSON.stringify(body.KeyScheduler ?? null) !== JSON.stringify(r.keyScheduler) ||
      offline !== r.offlineExpirationSeconds;
    r.current = next;
    r.slots = slots;
    r.keyScheduler = body.KeyScheduler ?? null;
    r.offlineExpirationSeconds = offline;
    if (changed) this.touch(r);
  }

  canOrder(keyId: string): number {
    const r = this.record(keyId);
    if (r.canOrderOverride !== undefined) return r.canOrderOverride;
    if (!r.key.Person_ID) return 13;
    if (r.blocklisted) return 8;
    const mask = r.key.KeyTypeMask;
    if (!(mask & 256) && (mask & 6) !== 6) return 2;
    if (r.key.ProgrammingState !== SimProgrammingState.planning) return 4;
    return 0;
  }

  order(keyId: string): void {
    const can = this.canOrder(keyId);
    if (can !== 0) throw new SimError(400, `Key cannot be ordered (CanOrder ${can})`);
    this.record(keyId).key.ProgrammingState = SimProgrammingState.ordered;
  }

  /** The key executes its programming task: last programmed catches up with current. */
  program(keyId: string): boolean {
    const r = this.record(keyId);
    if (r.key.ProgrammingState !== SimProgrammingState.ordered) return false;
    r.programmed = new Set(r.current);
    r.programmedSlots = structuredClone(r.slots);
    r.programmedOfflineExpirationSeconds = r.offlineExpirationSeconds;
    r.key.ProgrammingState = SimProgrammingState.programmed;
    r.key.IsProgrammed = true;
    return true;
  }

  programAllOrdered(): string[] {
    const done: string[] = [];
    for (const [kid, r] of this.keys) if (r.key.ProgrammingState === SimProgrammingState.ordered && this.program(kid)) done.push(kid);
    return done;
  }

  /**
   * CanReturn: only phone keys and external tags through the API; a never-programmed key must be
   * deleted instead; a blocklisted one cannot be returned.
   */
  canReturn(keyId: string): number {
    const r = this.record(keyId);
    if (r.canReturnOverride !== undefined) return r.canReturnOverride;
    if (!(r.key.KeyTypeMask & KeyTypeBit.phone) && !(r.key.KeyTypeMask & KeyTypeBit.otherPhysical)) return CanReturnResult.notReturnable;
    if (r.blocklisted) return CanReturnResult.blocklisted;
    if (!r.key.IsProgrammed) return CanReturnResult.neverProgrammed;
    return CanReturnResult.ok;
  }

  /** Return: the key is handed back and deleted (State 4, returned). */
  returnKey(keyId: string): void {
    const can = this.canReturn(keyId);
    if (can !== CanReturnResult.ok) throw new SimError(400, `Key cannot be returned (CanReturn ${can})`);
    this.record(keyId).key.State = KeyState.returned;
  }

  canDeleteKey(keyId: string): number {
    const r = this.record(keyId);
    if (r.blocklisted) return CanDeleteKeyResult.blocklisted;
    if (r.key.IsProgrammed) return CanDeleteKeyResult.programmed;
    if (r.key.ProgrammingState === SimProgrammingState.ordered) return CanDeleteKeyResult.givenToProgramming;
    return CanDeleteKeyResult.ok;
  }

  deleteKey(keyId: string): void {
    const can = this.canDeleteKey(keyId);
    if (can !== CanDeleteKeyResult.ok) throw new SimError(400, `Key cannot be deleted (CanDelete ${can})`);
    this.record(keyId).key.State = KeyState.deleted;
  }

  // ---- blocklist ---------------------------------------------------------------------------

  canAddToBlacklist(keyId: string): boolean {
    const r = this.record(keyId);
    if (r.blocklisted || r.key.State === KeyState.deleted || r.key.State === KeyState.returned) return false;
    if ((r.key.KeyTypeMask & (KeyTypeBit.fiveSeries | KeyTypeBit.s50)) === 0) return false;
    return r.current.size > 0 || r.programmed.size > 0;
  }

  addToBlacklist(keyId: string): void {
    if (!this.canAddToBlacklist(keyId)) throw new SimError(400, 'Key cannot be added to the blacklist (CanAddKey false)');
    const r = this.record(keyId);
    r.blocklisted = true;
    this.blacklistVersion++;
    this.blacklistItems.push({ FNKey_ID: r.key.FNKey_ID, ChangeType: BlacklistChangeType.added, BlacklistVersion: this.blacklistVersion });
  }

  canOrderBlacklist(): number {
    if (this.canOrderBlacklistOverride !== undefined) return this.canOrderBlacklistOverride;
    return this.blacklistVersion > this.blacklistOrderedVersion ? CanOrderBlacklistResult.ok : CanOrderBlacklistResult.noChanges;
  }

  orderBlacklist(): number {
    const can = this.canOrderBlacklist();
    if (can !== CanOrderBlacklistResult.ok) throw new SimError(400, `Blacklist cannot be ordered (CanOrderS40Blacklist ${can})`);
    this.blacklistOrderedVersion = this.blacklistVersion;
    return this.blacklistOrderedVersion;
  }

  /** Every lock has the ordered blocklist ("Blocklist up to date"); returns that version. */
  deliverBlacklist(): number {
    this.blacklistProgrammedVersion = this.blacklistOrderedVersion;
    return this.blacklistProgrammedVersion;
  }

  blacklists(): GetBlacklistsResult {
    return {
      BlacklistItems: this.blacklistItems.map((i) => ({ ...i })),
      BlacklistPacket: { BlacklistVersion: this.blacklistOrderedVersion, ProgrammedVersion: this.blacklistProgrammedVersion },
    };
  }

  /** A log arrives at the server (control endpoint). Defaults: successful 5 Series access, now. */
  addLockLog(input: Partial<LockLogData>): LockLogData {
    const iso = (v: unknown, name: string): string => {
      if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) throw new SimError(400, `${name} must be a date-time`);
      return new Date(v).toISOString();
    };
    const now = new Date().toISOString();
    const entry: LockLogData = {
      ...input,
      DeviceLog_ID: id(input.DeviceLog_ID ?? randomUUID()),
      AccessTypeMask: input.AccessTypeMask ?? 2052,
      ErrorCode: input.ErrorCode ?? 0,
      FLock_ID: id(input.FLock_ID ?? randomUUID()),
      FNKey_ID: input.FNKey_ID ? id(input.FNKey_ID) : null,
      GoingDate: input.GoingDate === null ? null : iso(input.GoingDate ?? now, 'GoingDate'),
      LockGroup_ID: input.LockGroup_ID ?? this.lockGroups[0]?.LockGroup_ID ?? randomUUID(),
      TimestampUtc: iso(input.TimestampUtc ?? now, 'TimestampUtc'),
    };
    this.lockLogs.push(entry);
    return entry;
  }

  /**
   * Logs with StartDateUtc <= TimestampUtc < EndDateUtc, oldest first. Over the cap, the *newest*
   * `maxLockLogsPerCall` are answered: iLOQ does not say which ones it drops, so a client must
   * narrow its window rather than rely on getting the oldest.
   */
  lockLogsByTimestamp(start: string | null | undefined, end: string | null | undefined): LockLogData[] {
    const from = start ? Date.parse(start) : -Infinity;
    const to = end ? Date.parse(end) : Infinity;
    if (Number.isNaN(from) || Number.isNaN(to)) throw new SimError(400, 'Invalid value: StartDateUtc/EndDateUtc');
    const hits = this.lockLogs
      .filter((l) => {
        const t = Date.parse(l.TimestampUtc);
        return t >= from && t < to;
      })
      .sort((a, b) => Date.parse(a.TimestampUtc) - Date.parse(b.TimestampUtc));
    return hits.length > this.maxLockLogsPerCall ? hits.slice(hits.length - this.maxLockLogsPerCall) : hits;
  }

  /** Names of accesses on a key (any type) in the current or last programmed view. */
  accessNames(keyId: string, view: 'current' | 'programmed' = 'current'): string[] {
    const r = this.record(keyId);
    return [...(view === 'programmed' ? r.programmed : r.current)].map((x) => this.accesses.get(x)!.Name ?? x).sort();
  }

  /** For /__sim/state and tests. */
  snapshot(): unknown {
    return {
      lockGroups: this.lockGroups,
      sessions: this.sessions.size,
      securityAccesses: [...this.accesses.values()],
      persons: [...this.persons.values()].map((p) => ({
        ...p,
        keys: this.keysOfPerson(p.Person_ID).map((k) => this.describeKey(k.FNKey_ID)),
      })),
      unassignedKeys: [...this.keys.values()].filter((r) => !r.key.Person_ID).map((r) => this.describeKey(r.key.FNKey_ID)),
    };
  }

  describeKey(keyId: string): unknown {
    const r = this.record(keyId);
    return {
      ...r.key,
      access: this.accessNames(keyId, 'current'),
      programmedAccess: this.accessNames(keyId, 'programmed'),
      timeLimitSlots: r.slots,
      keyScheduler: r.keyScheduler,
      blocklisted: r.blocklisted,
    };
  }

  private touch(r: KeyRecord): void {
    r.key.ProgrammingState = SimProgrammingState.planning;
  }
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
