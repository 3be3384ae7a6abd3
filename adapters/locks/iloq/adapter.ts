/**
 * LockSystem adapter for iLOQ 5 Series through the Public API v2.
 *
 * Mapping of lockstep's vocabulary:
 * - person ↔ iLOQ Person correlated by `ExternalPersonId` (created on first grant);
 * - access name ↔ SecurityAccess of Type 3 ("API access") with that Name. Only Type 3 is ever
 *   added, removed or re-sent changed: it is the managed catalogue. Standard accesses given in
 *   iLOQ Manager stay on the key (they are re-sent unchanged when a full replace is needed);
 * - every change to a key is followed by CanOrder → Order so that it reaches the physical key.
 *   "Accepted" is the API call succeeding; "effective" is the last-programmed view (mode 2)
 *   catching up with the current view (mode 1), reported by readPerson as `programmed`.
 *
 * Operations are "ensure", never "toggle": each reads the key first and only writes the
 * difference. If an earlier attempt changed a key but died before ordering, the re-apply sees
 * no difference in mode 1 but one between mode 1 and mode 2, and orders then (CanOrder 4, "not
 * in planning", is read as "already ordered").
 *
 * Leave: removes *every* Type 3 access from each key (not only `req.access`): a leaver keeps no
 * API-managed access even if policy or the catalogue changed meanwhile, and Type 3 is exactly the
 * managed catalogue the port allows us to touch. It sets the key end date (time-limit slot 1) to
 * now, drops the KeyScheduler (it would renew the end date automatically), sets Key.ExpireDate
 * and Person.EmploymentEndDate, then orders programming. An end date already in the past is kept.
 * Reinstate clears the end date (or sets it to `person.terminationDate`), clears ExpireDate and
 * EmploymentEndDate, grants `req.access` if given, and orders programming. A KeyScheduler dropped
 * at leave is not restored.
 *
 * Leave also disposes of keys: phone keys are returned through the API (CanReturn → Return; a
 * never-programmed one is deleted instead), so they stop working at their next sync; every other
 * key (physical 5 Series keys and fobs) gets a `collect_key` task, since its old access stays on it
 * until it is programmed or collected. The task is reported on every leave while the key is still
 * held (the core deduplicates).
 *
 * Effectiveness and exposure: a KeyResult says `effective: true` only when nothing had to be
 * programmed for the operation's scope. For revoke/leave results that are not yet effective,
 * `exposureUntil` is the bound the *physical* key carries: its last-programmed end date (mode 2,
 * slot 1) and, for phone keys, now + OfflineExpirationSeconds. The new end date set by leave does
 * not count until programmed; Key.ExpireDate is server-side data, not known to be enforced by
 * the key, so it does not count either.
 *
 * A key refused permanently (400: e.g. blocklisted, not API-changeable) is reported as `skipped`
 * with the reason and the other keys are still processed; transient failures (retryable, rate
 * limited, auth) abort the operation so that the queue retries it whole, which is safe because
 * every step is idempotent.
 */

import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { IloqLockSystemConfig as LockSystemConfig } from '../../../src/config/schema.ts';
import {
  LockSystemError,
  type AccessEvent,
  type ApplyRequest,
  type ApplyResult,
  type KeyProgrammingState,
  type KeyResult,
  type LockKey,
  type LockPerson,
  type LockSystem,
  type ManualTaskRequest,
  type PersonRef,
  type ReportLostRequest,
} from '../../../src/ports/lock-system.ts';
import { IloqClient, type IloqLogger } from './client.ts';
import { LockGroupClock } from './time.ts';
import {
  BlacklistChangeType,
  CanAddResult,
  CanDeleteKeyResult,
  CanOrderBlacklistResult,
  canOrderBlacklistText,
  type GetBlacklistsResult,
  CanDeleteResult,
  CanOrderResult,
  CanReturnResult,
  DeviceLogType,
  KeyState,
  KeyTypeBit,
  LOCK_LOG_CAP,
  ProgrammingState,
  SecurityAccessType,
  View,
  canAddText,
  canDeleteKeyText,
  canDeleteText,
  canOrderText,
  canReturnText,
  describeCode,
  type GetKeySecurityAccessesResult,
  type GetLockLogDataResult,
  type LockLogData,
  type GetTimeLimitsResult,
  type Key,
  type KeyTimeLimitSlot,
  type Person,
  type SecurityAccess,
  type UpdateKeySecurityAccessesParam,
} from './wire.ts';

/**
 * Lock logs are read up to this long before now: a log inserted with a TimestampUtc just before
 * "now" may become visible a moment later, and the cursor must never pass it.
 */
const LOG_SETTLE_MS = 2_000;
/** First readEvents without a cursor starts here. */
const LOG_EPOCH = '2000-01-01T00:00:00.000Z';
const HOLDER_TTL_MS = 60_000;
/** Lock-log queries one readEvents may make (window narrowing included). */
const MAX_LOG_QUERIES = 64;

/** The catalogue is re-read at most this often when a name is not found. */
const CATALOGUE_MIN_REFRESH_MS = 1_000;
/** ... and in any case after this long. */
const CATALOGUE_TTL_MS = 5 * 60_000;

interface Catalogue {
  loadedAt: number;
  /** Type 3 accesses by exact name. */
  byName: Map<string, SecurityAccess[]>;
  /** Type 3 accesses by lower-cased name. */
  byFoldedName: Map<string, SecurityAccess[]>;
}

interface Ordered {
  ordered: boolean;
  reason?: string;
}

const lc = (s: string) => s.toLowerCase();
const enc = encodeURIComponent;
const isApi = (sa: SecurityAccess) => sa.Type === SecurityAccessType.api;
const isPhone = (key: Key) => (key.KeyTypeMask & KeyTypeBit.phone) !== 0;

export class IloqLockSystem implements LockSystem {
  readonly id: string;
  readonly kind = 'iloq';
  private readonly client: IloqClient;
  private readonly log: IloqLogger;
  private readonly cfg: LockSystemConfig;
  private cat: Catalogue | null = null;
  private catLoad: Promise<Catalogue> | null = null;
  private clock: LockGroupClock | null = null;
  private clockZoneName: string | undefined;
  private readonly holders = new Map<string, { externalId: string | undefined; at: number }>();
  private readonly logSettleMs: number;
  private readonly lockLogCap: number;

  /**
   * `opts.logSettleMs`: how far behind now readEvents stays (default 2 s); `opts.lockLogCap`:
   * entries at which a lock-log answer counts as cut off (default 2000, as documented). Both are
   * test seams: tests lower them together with the simulator's.
   */
  constructor(config: LockSystemConfig, logger?: Logger, opts: { logSettleMs?: number; lockLogCap?: number } = {}) {
    this.cfg = config;
    this.logSettleMs = opts.logSettleMs ?? LOG_SETTLE_MS;
    this.lockLogCap = opts.lockLogCap ?? LOCK_LOG_CAP;
    this.id = config.id;
    this.log = logger ? logger.child({ lockSystem: config.id }) : silent();
    const i = config.iloq;
    this.client = new IloqClient({
      serverUrl: i.serverUrl,
      customerCode: i.customerCode,
      userName: i.userName,
      password: i.password,
      apiKey: i.apiKey,
      lockGroupId: i.lockGroupId,
      requestTimeoutMs: config.apply.requestTimeoutMs,
      connections: Math.max(8, config.apply.concurrency * 2),
      logger: this.log,
    });
  }

  async start(): Promise<void> {
    await this.client.login();
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  async ping(): Promise<void> {
    await this.client.get('/api/v2/Test');
  }

  async catalogue(): Promise<string[]> {
    const cat = await this.loadCatalogue(false);
    const names = new Set<string>();
    for (const [name, list] of cat.byName) if (list.some((sa) => sa.Status === 0)) names.add(name);
    return [...names].sort();
  }

  async readPerson(externalId: string): Promise<LockPerson | null> {
    const person = await this.findPerson(externalId);
    if (!person) return null;
    const clock = await this.lockGroupClock();
    const keys = await this.keysOf(person.Person_ID);
    const out: LockKey[] = await Promise.all(
      keys.map(async (key) => {
        const kid = key.FNKey_ID;
        const [current, programmed, limits] = await Promise.all([
          this.keyAccesses(kid, View.current),
          this.keyAccesses(kid, View.lastProgrammed),
          this.timeLimits(kid, View.current),
        ]);
        const end = clock.normalise(endSlot(limits)?.LimitDateLg);
        const candidates = [end ? clock.toDate(end) : undefined, key.ExpireDate ? new Date(key.ExpireDate) : undefined].filter(
          (d): d is Date => d !== undefined && !Number.isNaN(d.getTime()),
        );
        const validUntil = candidates.length ? new Date(Math.min(...candidates.map((d) => d.getTime()))).toISOString() : undefined;
        return {
          keyId: kid,
          access: current.filter(isApi).map((sa) => sa.Name ?? sa.SecurityAccess_ID).sort(),
          ...(validUntil ? { validUntil } : {}),
          programmed: key.IsProgrammed !== false && sameIds(current, programmed),
        };
      }),
    );
    return { remotePersonId: person.Person_ID, externalId, keys: out };
  }

  async apply(req: ApplyRequest): Promise<ApplyResult> {
    this.log.debug({ operationId: req.operationId, kind: req.kind, personId: req.person.personId }, 'iloq apply');
    switch (req.kind) {
      case 'grant':
        return this.grant(req);
      case 'revoke':
        return this.revoke(req);
      case 'leave':
        return this.leave(req);
      case 'reinstate':
        return this.reinstate(req);
      default:
        throw new LockSystemError('permanent', `unsupported operation kind ${String((req as { kind: unknown }).kind)}`);
    }
  }

  /**
   * Per key: effective when the current and last-programmed views agree (accesses of every type
   * and the end date) and no programming task is waiting (ProgrammingState ≠ ordered). Horizon:
   * the bound the physical key carries (see the file comment).
   */
  async programmingState(externalId: string): Promise<KeyProgrammingState[]> {
    const person = await this.findPerson(externalId);
    if (!person) return [];
    const clock = await this.lockGroupClock();
    const keys = await this.keysOf(person.Person_ID);
    const now = new Date();
    let blacklist: Promise<GetBlacklistsResult> | undefined;
    return Promise.all(
      keys.map(async (key) => {
        const kid = key.FNKey_ID;
        const [current, programmed, currentLimits, programmedLimits] = await Promise.all([
          this.keyAccesses(kid, View.current),
          this.keyAccesses(kid, View.lastProgrammed),
          this.timeLimits(kid, View.current),
          this.timeLimits(kid, View.lastProgrammed),
        ]);
        const sameEnd = clock.normalise(endSlot(currentLimits)?.LimitDateLg) === clock.normalise(endSlot(programmedLimits)?.LimitDateLg);
        let effective = sameIds(current, programmed) && sameEnd && key.ProgrammingState !== ProgrammingState.ordered;
        let horizon = physicalBound(key, programmedLimits, clock, now);
        // A key that never comes back to be programmed is stopped by the blocklist instead, once every lock has it.
        if (!effective && blocklistDelivered(await (blacklist ??= this.blacklist()), kid)) {
          effective = true;
          horizon = now;
        }
        return {
          keyId: kid,
          effective,
          pendingJobs: key.ProgrammingState === ProgrammingState.ordered ? 1 : 0,
          ...(horizon ? { horizon: horizon.toISOString() } : {}),
        };
      }),
    );
  }

  /**
   * Blocklists a key the holder did not return: GET Blacklists (already listed → nothing to
   * add), CanAddKey → AddKey, then CanOrderS40Blacklist → OrderS40Blacklist (2, "no changes",
   * means an earlier order already carries it). The key is checked to still belong to the
   * person (a key handed to someone else meanwhile is not blocklisted). `jobId` names the
   * blocklist version that carries the key; `effective` once every lock has that version
   * (BlacklistPacket.ProgrammedVersion). When the blocklist cannot be ordered through the API
   * (CanOrderS40Blacklist 1 or 3), a `blocklist_key` task asks for it to be ordered in iLOQ Manager.
   */
  async reportLost(req: ReportLostRequest): Promise<KeyResult> {
    const kid = req.keyId;
    this.log.debug({ operationId: req.operationId, keyId: kid, personId: req.person.personId }, 'iloq report lost');
    const key = await this.client.get<Key | undefined>(`/api/v2/Keys/${enc(kid)}`);
    if (!key) throw new LockSystemError('permanent', `iLOQ key ${kid} not found`);
    const label = key.Stamp || key.ROM_ID || kid;
    const holder = await this.findPerson(req.person.externalId);
    // A key handed back and given to someone else meanwhile must not be blocklisted on the leaver's account.
    if (!holder || !key.Person_ID || lc(key.Person_ID) !== lc(holder.Person_ID))
      throw new LockSystemError('permanent', `iLOQ key ${label} is not held by ${req.person.externalId} (any more): not blocklisted`);
    let change: KeyResult['change'] = 'unchanged';
    if (!blocklistVersion(await this.blacklist(), kid)) {
      const can = await this.client.get<unknown>(`/api/v2/Blacklists/CanAddKey/${enc(kid)}`);
      if (!(can === true || String(can).toLowerCase() === 'true'))
        throw new LockSystemError('permanent', `iLOQ key ${label} cannot be added to the blocklist (CanAddKey false: not an S50/5 Series key, or it has no access rights)`);
      await this.client.post(`/api/v2/Blacklists/AddKey/${enc(kid)}`);
      change = 'changed';
      this.log.info({ keyId: kid, reason: req.reason }, 'iloq key added to the blocklist');
    }
    const canOrder = Number(await this.client.get('/api/v2/Blacklists/CanOrderS40Blacklist'));
    let ordered = canOrder === CanOrderBlacklistResult.noChanges;
    if (canOrder === CanOrderBlacklistResult.ok) {
      await this.client.post('/api/v2/Blacklists/OrderS40Blacklist');
      ordered = true;
    }
    const list = await this.blacklist();
    const version = blocklistVersion(list, kid);
    const effective = blocklistDelivered(list, kid);
    const res: KeyResult = { keyId: kid, change, programmingOrdered: ordered, effective, ...(version ? { jobId: `blacklist-v${version}` } : {}) };
    if (!ordered) {
      const why = describeCode(canOrderBlacklistText, canOrder, 'CanOrderS40Blacklist');
      res.reason = `blocklist not ordered: ${why}`;
      res.task = {
        kind: 'blocklist_key',
        description: `Order the iLOQ blocklist with key ${label} of ${req.person.externalId} in iLOQ Manager (the API could not: ${why}), then make sure it reaches the locks (network modules, phone keys, or a visit with the programming key).`,
      };
    }
    return res;
  }

  /**
   * Access events through POST /api/v2/LockLogs/GetLockLogDataByTimestamp (by server arrival
   * time, start inclusive, end exclusive), read up to now − 2 s (`logSettleMs`).
   *
   * Cursor: `<ISO TimestampUtc>|<DeviceLog_IDs already returned at exactly that timestamp>`. The
   * next window starts at that timestamp (inclusive) and the listed ids are dropped, so logs that
   * share a timestamp are neither lost nor repeated. When a window was read whole, the cursor
   * moves to its end and the next window is read in the same call, until `limit` events or 64
   * queries. An answer at the documented cap (2,000) halves the window until it is not, since
   * iLOQ does not say which entries it leaves out. Logs that are not access events
   * (AccessTypeMask without bit 4 "successful" or 1 "failed") advance the cursor but are not
   * returned.
   */
  async readEvents(cursor: string | undefined, limit: number): Promise<{ events: AccessEvent[]; cursor: string | undefined }> {
    const start = parseLogCursor(cursor);
    const end = Date.now() - this.logSettleMs;
    let at = start.at;
    let seen = start.seen;
    const picked: LockLogData[] = [];
    let queries = 0;
    // Window by window from the cursor to `end`, until `limit` events or the query budget.
    windows: while (at < end && picked.length < limit && queries < MAX_LOG_QUERIES) {
      let windowEnd = end;
      let logs: LockLogData[] = [];
      let capped = false;
      for (;;) {
        const r = await this.client.post<GetLockLogDataResult | undefined>('/api/v2/LockLogs/GetLockLogDataByTimestamp', {
          StartDateUtc: new Date(at).toISOString(),
          EndDateUtc: new Date(windowEnd).toISOString(),
        });
        queries++;
        logs = r?.LockLogs ?? [];
        capped = logs.length >= this.lockLogCap;
        if (!capped || windowEnd - at <= 1 || queries >= MAX_LOG_QUERIES) break;
        windowEnd = at + Math.floor((windowEnd - at) / 2);
      }
      if (capped && windowEnd - at > 1) break; // budget spent while still narrowing: next call goes on from here
      const sorted = logs
        .map((l) => ({ l, t: parseUtc(l.TimestampUtc) }))
        .filter((x) => !Number.isNaN(x.t))
        .sort((a, b) => a.t - b.t || String(a.l.DeviceLog_ID).localeCompare(String(b.l.DeviceLog_ID)));
      const windowStart = at;
      const skip = seen;
      for (const { l, t } of sorted) {
        const lid = lc(String(l.DeviceLog_ID));
        if (t === windowStart && skip.has(lid)) continue;
        const access = Boolean(l.FNKey_ID) && (l.AccessTypeMask & (DeviceLogType.successfulAccess | DeviceLogType.failedAccess)) !== 0;
        if (access && picked.length >= limit) break windows;
        if (t !== at) {
          at = t;
          seen = new Set();
        }
        seen.add(lid);
        if (access) picked.push(l);
      }
      if (capped)
        this.log.error({ at: new Date(windowStart).toISOString() }, 'iloq lock logs: more logs in 1 ms than one answer carries; some may be missed');
      // The window was read whole: continue after it.
      at = windowEnd;
      seen = new Set();
    }
    const holders = new Map<string, string | undefined>();
    for (const kid of new Set(picked.map((l) => lc(l.FNKey_ID!)))) holders.set(kid, await this.holderOf(kid));
    const events = picked.map((l): AccessEvent => {
      const ext = holders.get(lc(l.FNKey_ID!));
      return {
        id: l.DeviceLog_ID,
        at: new Date(parseUtc(l.GoingDate ?? l.TimestampUtc)).toISOString(),
        keyId: l.FNKey_ID!,
        lockId: l.FLock_ID,
        result: l.AccessTypeMask & DeviceLogType.successfulAccess ? 'granted' : 'denied',
        ...(ext ? { externalId: ext } : {}),
      };
    });
    return { events, cursor: formatLogCursor(at, seen) };
  }

  // ---- operations ------------------------------------------------------------------------

  private async grant(req: ApplyRequest): Promise<ApplyResult> {
    const wanted = await this.resolve(req.access, 'grant');
    const person = await this.ensurePerson(req.person);
    const clock = await this.lockGroupClock();
    const endDate = req.person.terminationDate ? clock.format(new Date(req.person.terminationDate)) : undefined;
    const keys = await this.keysOf(person.Person_ID);
    const results: KeyResult[] = [];
    for (const key of keys) {
      results.push(
        await this.perKey(key, async () => {
          // With an end date to keep, the key's time limits are read beside its accesses.
          const [current, limits] = await Promise.all([
            this.keyAccesses(key.FNKey_ID, View.current),
            endDate !== undefined ? this.timeLimits(key.FNKey_ID, View.current) : undefined,
          ]);
          const changed = limits ? await this.ensureEndDate(key, current, limits, clock, endDate) : false;
          const added = await this.addMissing(key.FNKey_ID, current, wanted);
          return this.finish(key.FNKey_ID, changed || added.changed, added.problems, () =>
            this.pending(key.FNKey_ID, current, wanted, limits ? { clock, limits } : undefined),
          );
        }),
      );
    }
    return { outcome: 'applied', keys: results, remotePersonId: person.Person_ID };
  }

  private async revoke(req: ApplyRequest): Promise<ApplyResult> {
    const person = await this.findPerson(req.person.externalId);
    if (!person) return { outcome: 'absent', keys: [] };
    const unwanted = await this.resolve(req.access, 'revoke');
    const clock = await this.lockGroupClock();
    const keys = await this.keysOf(person.Person_ID);
    const results: KeyResult[] = [];
    for (const key of keys) {
      results.push(
        await this.perKey(key, async () => {
          // The last-programmed time limits bound the exposure; read beside the first read, as
          // nothing lockstep writes changes them (see leave): one round trip less per key that
          // changes, one call more per key that needed nothing.
          const [current, programmedLimits] = await Promise.all([
            this.keyAccesses(key.FNKey_ID, View.current),
            this.timeLimits(key.FNKey_ID, View.lastProgrammed),
          ]);
          const present = new Set(current.map((sa) => lc(sa.SecurityAccess_ID)));
          let changed = false;
          const problems: string[] = [];
          for (const sa of unwanted) {
            if (!present.has(lc(sa.SecurityAccess_ID))) continue;
            const path = `/api/v2/Keys/${enc(key.FNKey_ID)}/SecurityAccesses/${enc(sa.SecurityAccess_ID)}`;
            const can = Number(await this.client.get(`${path}/CanDelete`));
            if (can === CanDeleteResult.linkMissing) continue;
            if (can !== CanDeleteResult.ok) {
              problems.push(`"${sa.Name}" not removed: ${describeCode(canDeleteText, can, 'CanDelete')}`);
              continue;
            }
            await this.client.delete(path);
            changed = true;
          }
          const res = await this.finish(key.FNKey_ID, changed, problems, () => this.pending(key.FNKey_ID, current, unwanted));
          return withExposure(key, res, programmedLimits, clock);
        }),
      );
    }
    return { outcome: 'applied', keys: results, remotePersonId: person.Person_ID };
  }

  private async leave(req: ApplyRequest): Promise<ApplyResult> {
    const person = await this.findPerson(req.person.externalId);
    if (!person) return { outcome: 'absent', keys: [] };
    const clock = await this.lockGroupClock();
    const now = new Date();
    const nowLocal = clock.format(now);
    // Independent of each other: one round trip less before the keys are changed.
    const [, keys] = await Promise.all([this.setEmploymentEnd(person, clock, now), this.keysOf(person.Person_ID)]);
    const results: KeyResult[] = [];
    for (const key of keys) {
      results.push(
        await this.perKey(key, async () => {
          const kid = key.FNKey_ID;
          if (isPhone(key)) {
            const deleted = await this.deleteIfNeverProgrammed(key);
            if (deleted) return deleted;
          }
          // All three reads at once: the last-programmed view changes only when the key is
          // programmed, never by the writes below, so reading it now instead of after them
          // saves a sequential round trip per key (with iLOQ answering in ~80 ms, a leaver's
          // keys are closed that much sooner).
          const [current, limits, programmedLimits] = await Promise.all([
            this.keyAccesses(kid, View.current),
            this.timeLimits(kid, View.current),
            this.timeLimits(kid, View.lastProgrammed),
          ]);
          const existingEnd = clock.normalise(endSlot(limits)?.LimitDateLg);
          const endInPast = existingEnd !== undefined && existingEnd <= nowLocal;
          let changed = false;
          if (current.some(isApi) || !endInPast || limits.KeyScheduler) {
            await this.replaceKeyAccesses(kid, {
              SecurityAccessIds: current.filter((sa) => !isApi(sa)).map((sa) => sa.SecurityAccess_ID),
              TimeLimitSlots: withEndSlot(limits.KeyTimeLimitSlots, endInPast ? existingEnd : nowLocal),
              KeyScheduler: null,
              OfflineExpirationSeconds: limits.OfflineExpirationSeconds ?? 0,
              OutsideUserZoneTimeLimitTitleSlots: limits.OutsideUserZoneTimeLimitTitleSlots ?? null,
            });
            changed = true;
          }
          const expires = key.ExpireDate ? Date.parse(key.ExpireDate) : NaN;
          if (!(expires <= now.getTime())) {
            await this.client.put('/api/v2/Keys', { Key: { ...key, ExpireDate: now.toISOString() } });
            changed = true;
          }
          const res = withExposure(
            key,
            await this.finish(kid, changed, [], async () => {
              const programmed = await this.keyAccesses(kid, View.lastProgrammed);
              const programmedEnd = clock.normalise(endSlot(programmedLimits)?.LimitDateLg);
              return programmed.some(isApi) || programmedEnd === undefined || programmedEnd > nowLocal;
            }),
            programmedLimits,
            clock,
          );
          return this.dispose(key, person, res);
        }),
      );
    }
    return { outcome: 'applied', keys: results, remotePersonId: person.Person_ID };
  }

  private async reinstate(req: ApplyRequest): Promise<ApplyResult> {
    const person = await this.findPerson(req.person.externalId);
    if (!person) return { outcome: 'absent', keys: [] };
    const wanted = req.access.length ? await this.resolve(req.access, 'grant') : [];
    const clock = await this.lockGroupClock();
    const term = req.person.terminationDate;
    const endDate = term ? clock.format(new Date(term)) : undefined;
    await this.updatePerson(person, { EmploymentEndDate: endDate ?? null });
    const keys = await this.keysOf(person.Person_ID);
    const results: KeyResult[] = [];
    for (const key of keys) {
      results.push(
        await this.perKey(key, async () => {
          const kid = key.FNKey_ID;
          const [current, limits] = await Promise.all([this.keyAccesses(kid, View.current), this.timeLimits(kid, View.current)]);
          let changed = await this.ensureEndDate(key, current, limits, clock, endDate);
          const wantedExpire = term ? new Date(term).toISOString() : null;
          const currentExpire = key.ExpireDate ? Date.parse(key.ExpireDate) : null;
          if (currentExpire !== (wantedExpire === null ? null : Date.parse(wantedExpire))) {
            await this.client.put('/api/v2/Keys', { Key: { ...key, ExpireDate: wantedExpire } });
            changed = true;
          }
          const added = await this.addMissing(kid, current, wanted);
          return this.finish(kid, changed || added.changed, added.problems, () => this.pending(kid, current, wanted, { clock, limits }));
        }),
      );
    }
    return { outcome: 'applied', keys: results, remotePersonId: person.Person_ID };
  }

  // ---- key steps -------------------------------------------------------------------------

  /** Runs one key's work; a permanent refusal of this key becomes a `skipped` result. */
  private async perKey(key: Key, work: () => Promise<KeyResult>): Promise<KeyResult> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof LockSystemError && err.kind === 'permanent') {
        this.log.warn({ keyId: key.FNKey_ID, err: err.message }, 'iloq key skipped');
        return { keyId: key.FNKey_ID, change: 'skipped', reason: err.message };
      }
      throw err;
    }
  }

  private async addMissing(keyId: string, current: SecurityAccess[], wanted: SecurityAccess[]): Promise<{ changed: boolean; problems: string[] }> {
    const present = new Set(current.map((sa) => lc(sa.SecurityAccess_ID)));
    const missing = wanted.filter((sa) => !present.has(lc(sa.SecurityAccess_ID)));
    const problems: string[] = [];
    let changed = false;
    for (let i = 0; i < missing.length; i++) {
      const sa = missing[i]!;
      const can = Number(await this.client.get(`/api/v2/Keys/${enc(keyId)}/SecurityAccesses/CanAdd`));
      if (can !== CanAddResult.ok) {
        // CanAdd is key-level: the same answer holds for every access still missing.
        const names = missing.slice(i).map((x) => `"${x.Name}"`).join(', ');
        problems.push(`${names} not added: ${describeCode(canAddText, can, 'CanAdd')}`);
        break;
      }
      await this.client.post(`/api/v2/Keys/${enc(keyId)}/SecurityAccesses`, { SecurityAccess_ID: sa.SecurityAccess_ID });
      changed = true;
    }
    return { changed, problems };
  }

  /** Makes slot 1 (end date) equal `endDate` (absent when undefined); true when it wrote. */
  private async ensureEndDate(key: Key, current: SecurityAccess[], limits: GetTimeLimitsResult, clock: LockGroupClock, endDate: string | undefined): Promise<boolean> {
    if (clock.normalise(endSlot(limits)?.LimitDateLg) === endDate) return false;
    await this.replaceKeyAccesses(key.FNKey_ID, {
      SecurityAccessIds: current.map((sa) => sa.SecurityAccess_ID),
      TimeLimitSlots: withEndSlot(limits.KeyTimeLimitSlots, endDate),
      KeyScheduler: limits.KeyScheduler ?? null,
      OfflineExpirationSeconds: limits.OfflineExpirationSeconds ?? 0,
      OutsideUserZoneTimeLimitTitleSlots: limits.OutsideUserZoneTimeLimitTitleSlots ?? null,
    });
    return true;
  }

  /**
   * Orders programming when the key changed; when it did not, orders only if an earlier change
   * is still unprogrammed (`pending`). Problems make the key `skipped` for the worklist.
   */
  private async finish(keyId: string, changed: boolean, problems: string[], pending: () => Promise<boolean>): Promise<KeyResult> {
    let ordered: Ordered = { ordered: false };
    if (changed) ordered = await this.order(keyId, false);
    else if (await pending()) ordered = await this.order(keyId, true);
    const reasons = [...problems, ...(ordered.reason ? [ordered.reason] : [])];
    return {
      keyId,
      change: problems.length ? 'skipped' : changed ? 'changed' : 'unchanged',
      ...(reasons.length ? { reason: reasons.join('; ') } : {}),
      programmingOrdered: ordered.ordered,
      // Nothing was written and nothing in scope waits for programming: already on the key.
      ...(problems.length ? {} : { effective: !changed && !ordered.ordered && !ordered.reason }),
    };
  }

  /**
   * A phone key that was never programmed (CanReturn 3) opens nothing: it is deleted right away
   * (CanDelete → DELETE) instead of being changed and ordered first, since ordering it would make
   * it undeletable ("given to programming"). Undefined when that does not apply.
   */
  private async deleteIfNeverProgrammed(key: Key): Promise<KeyResult | undefined> {
    const kid = key.FNKey_ID;
    if (Number(await this.client.get(`/api/v2/Keys/${enc(kid)}/CanReturn`)) !== CanReturnResult.neverProgrammed) return undefined;
    const del = Number(await this.client.get(`/api/v2/Keys/${enc(kid)}/CanDelete`));
    if (del !== CanDeleteKeyResult.ok) {
      this.log.info({ keyId: kid, reason: describeCode(canDeleteKeyText, del, 'CanDelete') }, 'iloq never-programmed phone key not deletable');
      return undefined;
    }
    await this.client.delete(`/api/v2/Keys/${enc(kid)}`);
    this.log.info({ keyId: kid }, 'iloq phone key deleted (never programmed)');
    return { keyId: kid, change: 'changed', programmingOrdered: false, effective: true };
  }

  /**
   * Leaver key disposal: phone keys are returned; other keys get a collect_key task. A phone key
   * the API may not return gets the task too, unless it is already blocklisted.
   */
  private async dispose(key: Key, person: Person, res: KeyResult): Promise<KeyResult> {
    const kid = key.FNKey_ID;
    const label = key.Stamp || key.ROM_ID || kid;
    const who = [person.FirstName, person.LastName].filter(Boolean).join(' ') || person.ExternalPersonId || person.Person_ID;
    const task = (why: string): ManualTaskRequest => ({
      kind: 'collect_key',
      description: `Collect iLOQ key ${label} from ${who} (${person.ExternalPersonId ?? person.Person_ID}): ${why}`,
    });
    if (!isPhone(key))
      return {
        ...res,
        task: task('a physical key keeps its old access until it is programmed; if it cannot be collected, add it to the blocklist in iLOQ Manager.'),
      };
    const can = Number(await this.client.get(`/api/v2/Keys/${enc(kid)}/CanReturn`));
    if (can === CanReturnResult.ok) {
      await this.client.post(`/api/v2/Keys/${enc(kid)}/Return`);
      this.log.info({ keyId: kid }, 'iloq phone key returned');
      return { ...res, change: 'changed' };
    }
    if (can === CanReturnResult.blocklisted) return res;
    return { ...res, task: task(`return the phone key in iLOQ Manager: the API may not return it (${describeCode(canReturnText, can, 'CanReturn')}).`) };
  }

  private async order(keyId: string, maybeAlreadyOrdered: boolean): Promise<Ordered> {
    const can = Number(await this.client.get(`/api/v2/Keys/${enc(keyId)}/CanOrder`));
    if (can === 0) {
      await this.client.post(`/api/v2/Keys/${enc(keyId)}/Order`);
      return { ordered: true };
    }
    // Re-apply of an already ordered change: the key is no longer in planning.
    if (maybeAlreadyOrdered && can === CanOrderResult.wrongState) return { ordered: true };
    return { ordered: false, reason: `programming not ordered: ${describeCode(canOrderText, can, 'CanOrder')}` };
  }

  /**
   * True when the accesses in scope (and, with `end`, the end date) differ between current and last
   * programmed. Asked only when nothing was written, so `current` and `end.limits` (the current
   * time limits) are still the key's current state.
   */
  private async pending(keyId: string, current: SecurityAccess[], scope: SecurityAccess[], end?: { clock: LockGroupClock; limits: GetTimeLimitsResult }): Promise<boolean> {
    if (scope.length === 0 && !end) return false;
    const [programmed, programmedLimits] = await Promise.all([this.keyAccesses(keyId, View.lastProgrammed), end ? this.timeLimits(keyId, View.lastProgrammed) : undefined]);
    const cur = new Set(current.map((sa) => lc(sa.SecurityAccess_ID)));
    const prog = new Set(programmed.map((sa) => lc(sa.SecurityAccess_ID)));
    if (scope.some((sa) => cur.has(lc(sa.SecurityAccess_ID)) !== prog.has(lc(sa.SecurityAccess_ID)))) return true;
    if (end && programmedLimits) return end.clock.normalise(endSlot(end.limits)?.LimitDateLg) !== end.clock.normalise(endSlot(programmedLimits)?.LimitDateLg);
    return false;
  }

  // ---- reads and writes ------------------------------------------------------------------

  private async blacklist(): Promise<GetBlacklistsResult> {
    const r = await this.client.get<GetBlacklistsResult | undefined>('/api/v2/Blacklists');
    return r ?? { BlacklistItems: [] };
  }

  private async keyAccesses(keyId: string, mode: number): Promise<SecurityAccess[]> {
    const r = await this.client.get<GetKeySecurityAccessesResult | undefined>(`/api/v2/Keys/${enc(keyId)}/SecurityAccesses`, { mode });
    return r?.SecurityAccesses ?? [];
  }

  private async timeLimits(keyId: string, mode: number): Promise<GetTimeLimitsResult> {
    const r = await this.client.get<GetTimeLimitsResult | undefined>(`/api/v2/Keys/${enc(keyId)}/TimeLimitTitles`, { mode });
    return r ?? { KeyScheduler: null, KeyTimeLimitSlots: [], OfflineExpirationSeconds: 0, OutsideUserZoneTimeLimitTitleSlots: null };
  }

  private async replaceKeyAccesses(keyId: string, body: UpdateKeySecurityAccessesParam): Promise<void> {
    await this.client.put(`/api/v2/Keys/${enc(keyId)}/SecurityAccesses`, body);
  }

  private async keysOf(personId: string): Promise<Key[]> {
    const r = await this.client.get<{ Keys?: Key[] | null } | undefined>(`/api/v2/Persons/${enc(personId)}/Keys`);
    return (r?.Keys ?? []).filter((k) => k.State !== KeyState.deleted && k.State !== KeyState.returned);
  }

  private async findPerson(externalId: string): Promise<Person | null> {
    const list = await this.client.get<Person[] | undefined>('/api/v2/Persons/GetByExternalPersonIds', { externalPersonIds: [externalId] });
    return (list ?? []).find((p) => p.ExternalPersonId === externalId) ?? null;
  }

  private async ensurePerson(ref: PersonRef): Promise<Person> {
    const found = await this.findPerson(ref.externalId);
    if (found) {
      await this.updatePerson(found, {
        ...(ref.givenName !== undefined ? { FirstName: ref.givenName } : {}),
        ...(ref.familyName !== undefined ? { LastName: ref.familyName } : {}),
        ...(ref.email !== undefined ? { eMail: ref.email } : {}),
      });
      return found;
    }
    const clock = await this.lockGroupClock();
    // iLOQ: "integrator defines new GUIDs for ID fields for POST requests".
    const person: Person = {
      Person_ID: randomUUID(),
      PersonCode: ref.externalId,
      ExternalPersonId: ref.externalId,
      FirstName: ref.givenName ?? '',
      LastName: ref.familyName ?? ref.externalId,
      eMail: ref.email ?? '',
      Address: '',
      EmploymentEndDate: ref.terminationDate ? clock.format(new Date(ref.terminationDate)) : null,
    };
    const zone = this.cfg.iloq.personZoneId;
    try {
      const res = await this.client.post<{ PersonIds?: string[] | null } | undefined>('/api/v2/Persons', { Person: person, ZoneIds: zone ? [zone] : [] });
      const created = res?.PersonIds?.[0];
      this.log.info({ personId: ref.personId, remotePersonId: created ?? person.Person_ID }, 'iloq person created');
      return { ...person, Person_ID: created ?? person.Person_ID };
    } catch (err) {
      // Someone else may have created the same ExternalPersonId a moment ago (unique in iLOQ).
      if (err instanceof LockSystemError && err.kind === 'permanent') {
        const again = await this.findPerson(ref.externalId);
        if (again) return again;
      }
      throw err;
    }
  }

  /** PUT the whole person back with `changes`, only when something differs. */
  private async updatePerson(person: Person, changes: Partial<Person>): Promise<void> {
    // iLOQ may hand back '' as null; both mean "not set".
    const diff = Object.entries(changes).filter(([k, v]) => (person[k] ?? '') !== (v ?? ''));
    if (diff.length === 0) return;
    const next = { ...person, ...Object.fromEntries(diff) };
    await this.client.put('/api/v2/Persons', { Person: next });
    Object.assign(person, next);
  }

  private async setEmploymentEnd(person: Person, clock: LockGroupClock, now: Date): Promise<void> {
    const existing = person.EmploymentEndDate;
    if (existing) {
      const local = clock.normalise(existing);
      const at = local ? clock.toDate(local) : new Date(existing);
      if (at && !Number.isNaN(at.getTime()) && at.getTime() <= now.getTime()) return;
    }
    await this.updatePerson(person, { EmploymentEndDate: clock.format(now) });
  }

  /** ExternalPersonId of a key's holder, cached for a minute (readEvents). */
  private async holderOf(keyId: string): Promise<string | undefined> {
    const hit = this.holders.get(keyId);
    if (hit && Date.now() - hit.at < HOLDER_TTL_MS) return hit.externalId;
    let externalId: string | undefined;
    try {
      const key = await this.client.get<Key | undefined>(`/api/v2/Keys/${enc(keyId)}`);
      if (key?.Person_ID) {
        const p = await this.client.get<Person | undefined>(`/api/v2/Persons/${enc(key.Person_ID)}`);
        externalId = p?.ExternalPersonId ?? undefined;
      }
    } catch (err) {
      // A key deleted since: the event stays, without a holder.
      if (!(err instanceof LockSystemError && err.kind === 'permanent')) throw err;
    }
    this.holders.set(keyId, { externalId, at: Date.now() });
    if (this.holders.size > 10_000) this.holders.delete(this.holders.keys().next().value!);
    return externalId;
  }

  // ---- catalogue ---------------------------------------------------------------------------

  private async loadCatalogue(force: boolean): Promise<Catalogue> {
    const age = this.cat ? Date.now() - this.cat.loadedAt : Infinity;
    if (this.cat && !force && age < CATALOGUE_TTL_MS) return this.cat;
    if (this.cat && force && age < CATALOGUE_MIN_REFRESH_MS) return this.cat;
    if (!this.catLoad) {
      this.catLoad = (async () => {
        const list = (await this.client.get<SecurityAccess[] | undefined>('/api/v2/SecurityAccesses')) ?? [];
        const byName = new Map<string, SecurityAccess[]>();
        const byFoldedName = new Map<string, SecurityAccess[]>();
        for (const sa of list) {
          if (!isApi(sa) || !sa.Name) continue;
          push(byName, sa.Name, sa);
          push(byFoldedName, lc(sa.Name), sa);
        }
        const cat: Catalogue = { loadedAt: Date.now(), byName, byFoldedName };
        this.cat = cat;
        return cat;
      })().finally(() => {
        this.catLoad = null;
      });
    }
    return this.catLoad;
  }

  /** Access names → Type 3 SecurityAccesses; re-reads the catalogue once for unknown names. */
  private async resolve(names: string[], purpose: 'grant' | 'revoke'): Promise<SecurityAccess[]> {
    if (names.length === 0) return [];
    let cat = await this.loadCatalogue(false);
    if (names.some((n) => !lookup(cat, n))) cat = await this.loadCatalogue(true);
    const out: SecurityAccess[] = [];
    for (const name of new Set(names)) {
      const hits = lookup(cat, name);
      if (!hits) {
        const known = [...cat.byName.keys()].sort().join(', ') || 'none';
        throw new LockSystemError('permanent', `unknown iLOQ access "${name}": no API access (SecurityAccess Type 3) has that name (known: ${known})`, { unchanged: true });
      }
      if (hits.length > 1)
        throw new LockSystemError('permanent', `iLOQ access name "${name}" is ambiguous: ${hits.length} API accesses carry it (${hits.map((h) => h.SecurityAccess_ID).join(', ')})`, {
          unchanged: true,
        });
      const sa = hits[0]!;
      if (purpose === 'grant' && sa.Status !== 0)
        throw new LockSystemError('permanent', `iLOQ access "${name}" cannot be granted: its status is ${sa.Status} (only 0, active, can be granted)`, { unchanged: true });
      out.push(sa);
    }
    return out;
  }

  private async lockGroupClock(): Promise<LockGroupClock> {
    const session = this.client.current ?? (await this.client.login());
    const tz = session.lockGroup.TimeZoneStandardName;
    if (!this.clock || this.clockZoneName !== tz) {
      this.clock = new LockGroupClock(tz);
      this.clockZoneName = tz;
      if (!this.clock.exact)
        this.log.warn({ timeZone: tz }, 'iloq lock group time zone not recognised; writing dates as UTC-12 wall time so they are never late');
    }
    return this.clock;
  }
}

/** The blocklist version that added the key (its latest change being an addition), if listed. */
function blocklistVersion(list: GetBlacklistsResult, keyId: string): number | undefined {
  let latest: { change: number; version: number } | undefined;
  for (const i of list.BlacklistItems ?? []) {
    if (lc(String(i.FNKey_ID)) !== lc(keyId)) continue;
    const version = Number(i.BlacklistVersion);
    if (!latest || version >= latest.version) latest = { change: Number(i.ChangeType), version };
  }
  return latest && latest.change === BlacklistChangeType.added ? latest.version : undefined;
}

/** Listed, and every lock has a blocklist version that includes it. */
function blocklistDelivered(list: GetBlacklistsResult, keyId: string): boolean {
  const version = blocklistVersion(list, keyId);
  const programmed = list.BlacklistPacket?.ProgrammedVersion;
  return version !== undefined && typeof programmed === 'number' && programmed >= version;
}

function lookup(cat: Catalogue, name: string): SecurityAccess[] | undefined {
  return cat.byName.get(name) ?? cat.byFoldedName.get(lc(name));
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

function endSlot(limits: GetTimeLimitsResult): KeyTimeLimitSlot | undefined {
  return (limits.KeyTimeLimitSlots ?? []).find((s) => s.SlotNo === 1);
}

/** All slots but the end date, plus the end date when given (slot 1 holds only LimitDateLg). */
function withEndSlot(slots: KeyTimeLimitSlot[] | null, endDate: string | undefined): KeyTimeLimitSlot[] {
  const rest = (slots ?? []).filter((s) => s.SlotNo !== 1);
  return endDate === undefined ? rest : [...rest, { SlotNo: 1, LimitDateLg: endDate, TimeLimitData: [] }];
}

/** Adds `exposureUntil` to a revocation that has not reached the key yet, when the key bounds it. */
function withExposure(key: Key, res: KeyResult, programmedLimits: GetTimeLimitsResult, clock: LockGroupClock): KeyResult {
  if (res.effective === true) return res;
  const bound = physicalBound(key, programmedLimits, clock, new Date());
  return bound ? { ...res, exposureUntil: bound.toISOString() } : res;
}

/**
 * Latest moment the physical key can open a door if never programmed again: its last-programmed
 * end date, and for phone keys now + OfflineExpirationSeconds (the phone key stops working after
 * that long without reaching the server). Undefined: unbounded.
 */
function physicalBound(key: Key, programmedLimits: GetTimeLimitsResult, clock: LockGroupClock, now: Date): Date | undefined {
  const bounds: number[] = [];
  const end = clock.normalise(endSlot(programmedLimits)?.LimitDateLg);
  const endAt = end ? clock.toDate(end) : undefined;
  if (endAt && !Number.isNaN(endAt.getTime())) bounds.push(endAt.getTime());
  const offline = Number(programmedLimits.OfflineExpirationSeconds ?? 0);
  if (isPhone(key) && offline > 0) bounds.push(now.getTime() + offline * 1000);
  return bounds.length ? new Date(Math.min(...bounds)) : undefined;
}

/** iLOQ date-times may come without a zone; they are UTC. */
function parseUtc(s: string): number {
  return Date.parse(/(Z|[+-]\d{2}:?\d{2})$/.test(s) ? s : `${s}Z`);
}

function parseLogCursor(cursor: string | undefined): { at: number; seen: Set<string> } {
  if (!cursor) return { at: Date.parse(LOG_EPOCH), seen: new Set() };
  const bar = cursor.indexOf('|');
  const at = Date.parse(bar >= 0 ? cursor.slice(0, bar) : cursor);
  if (Number.isNaN(at)) throw new LockSystemError('permanent', `invalid iLOQ event cursor ${JSON.stringify(cursor.slice(0, 80))}`);
  const ids = bar >= 0 ? cursor.slice(bar + 1).split(',').filter(Boolean) : [];
  return { at, seen: new Set(ids.map(lc)) };
}

function formatLogCursor(at: number, seen: Set<string>): string {
  return `${new Date(at).toISOString()}|${[...seen].join(',')}`;
}

function sameIds(a: SecurityAccess[], b: SecurityAccess[]): boolean {
  const x = new Set(a.map((sa) => lc(sa.SecurityAccess_ID)));
  const y = new Set(b.map((sa) => lc(sa.SecurityAccess_ID)));
  return x.size === y.size && [...x].every((v) => y.has(v));
}

function silent(): IloqLogger {
  const noop = () => {};
  return { debug: noop, info: noop, warn: noop, error: noop } as unknown as IloqLogger;
}
