/**
 * iLOQ Public API v2 simulator: a real HTTP server speaking the documented subset of the API
 * (wire names and result codes as in wire.ts), for tests, the quick start and benchmarks.
 *
 * Layout (same process, one port):
 *   {origin}/iloqws/api/v2/Url/GetUrl        the service address (`iloq.serverUrl` = {origin}/iloqws)
 *   {origin}/iloqwspool/api/v2/...           the API, at the pool URL GetUrl answers
 *   {origin}/__sim/...                       control endpoints (no auth: bind to loopback)
 * With `pool: true` (default) API calls under /iloqws other than GetUrl answer 404, so a client
 * that skips URL resolution fails visibly. With `pool: false` GetUrl answers "" and the API is
 * served under /iloqws (the "empty answer: keep the original URL" case).
 *
 * Choices where iLOQ publishes nothing (see also sim-state.ts):
 * - Session missing/unknown/expired, or lock group not selected: 401 with the ASP.NET Web API
 *   body `{"Message":"Authorization has been denied for this request."}`. LockGroups,
 *   SetLockgroup, KillSession, Test and Version need a session but no selected lock group.
 * - Missing/wrong x-api-key when `apiKey` is set: 403 `{"message":"Forbidden"}` (gateway style).
 * - Errors: 400 `{"Message": "..."}` (e.g. "Invalid value: ..." for unknown ids, duplicate
 *   ExternalPersonId); unknown routes 404; injected faults 429/503 with `Retry-After`.
 * - Void operations answer 204; GET …/SecurityAccesses requires `mode` (0 is treated like 1,
 *   as the HelloID connector passes 0); Order accepts POST (documented) and GET (HelloID).
 * - Route matching is case-insensitive (ASP.NET routing), so `SetLockGroup` works too.
 *
 * Control endpoints:
 *   GET  /__sim/state               persons with keys (access names current/programmed, slots), catalogue
 *   GET  /__sim/requests?limit=N    request log (method, path, status, time)
 *   POST /__sim/faults              body: SimFaultsInput; answers the active faults
 *   POST /__sim/expire-sessions     every session is gone; next call gets the 401
 *   POST /__sim/program             body {keyIds?: string[]}: ordered keys become programmed
 *   POST /__sim/blocklist/deliver   the ordered blocklist reaches every lock ("Blocklist up to date")
 *   POST /__sim/reset               back to the start state (seed re-applied), faults cleared
 *   POST /__sim/persons             body: Person fields (PersonCode defaults to ExternalPersonId)
 *   POST /__sim/keys                body: {person?, keyTypeMask?, programmed?, access?: string[]}
 *   POST /__sim/security-accesses   body: {Name, Type?=3, Status?=0}
 *   POST /__sim/lock-logs           body: LockLogData fields (FNKey_ID, FLock_ID, AccessTypeMask=2052,
 *                                   GoingDate, TimestampUtc = now) or {LockLogs: [...]}
 */

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { SimError, SimState, type AddKeyOptions } from './sim-state.ts';
import { SecurityAccessType, type GetLockLogDataParam, type Key, type LockGroup, type LockLogData, type Person, type SecurityAccess } from './wire.ts';
import { readJsonBody } from '../shared/sim-body.ts';

/** Fail requests in the middle of an operation: the (skip+1)th..(skip+count)th matching request. */
export interface SimFailMatching {
  /** HTTP method to match (any when absent). */
  method?: string;
  /** Substring of the request path, e.g. "/SecurityAccesses". */
  path?: string;
  /** Matching requests let through first. Default 0. */
  skip?: number;
  /** Matching requests failed. Default 1. */
  count?: number;
  /** Status answered; default 503 (with Retry-After). */
  status?: number;
}

export interface SimFaultsInput {
  /** Added before every API answer. */
  latencyMs?: number;
  /** Uniform random extra latency 0..jitterMs. */
  jitterMs?: number;
  /** Answer 429 to the next N API requests. */
  rateLimitNext?: number;
  /** Answer 429 to every API request for this many ms from now. */
  rateLimitForMs?: number;
  /** Answer 503 to the next N API requests. */
  unavailableNext?: number;
  /** Answer 503 to every API request for this many ms from now. */
  unavailableForMs?: number;
  /** Retry-After sent with 429 and 503 (seconds); null omits the header. Default 1. */
  retryAfterSeconds?: number | null;
  /** Send Retry-After as an HTTP date instead of seconds. */
  retryAfterAsDate?: boolean;
  /** CreateSession answers Result 5 (invalid credentials) whatever is sent. */
  rejectCredentials?: boolean;
  /** CreateSession answers this Result code (e.g. 4 database update in progress); null clears. */
  forceLoginResult?: number | null;
  /** Drop every session now. */
  expireSessions?: boolean;
  /** Fail matching requests (e.g. the second access POST of a grant); null clears. */
  failMatching?: SimFailMatching | null;
}

export interface SimFaults {
  latencyMs: number;
  jitterMs: number;
  rateLimitRemaining: number;
  rateLimitUntil: number;
  unavailableRemaining: number;
  unavailableUntil: number;
  retryAfterSeconds: number | null;
  retryAfterAsDate: boolean;
  rejectCredentials: boolean;
  forceLoginResult: number | null;
  failMatching: { method?: string; path?: string; skip: number; count: number; status: number } | null;
}

export interface RequestLogEntry {
  method: string;
  /** Path without query, as sent (e.g. /iloqwspool/api/v2/Keys/…/SecurityAccesses). */
  path: string;
  query: string;
  status: number;
  /** Epoch ms when the request arrived. */
  time: number;
}

export interface IloqSimulatorOptions {
  port?: number;
  host?: string;
  customerCode?: string;
  userName?: string;
  password?: string;
  /** When set, every API request must carry this `x-api-key`. */
  apiKey?: string;
  /** GetUrl answers the pool URL and the API lives only there (default true). */
  pool?: boolean;
  /** Lock groups the API user sees; default one "Simulated locking system" in `timeZone`. */
  lockGroups?: Array<Partial<LockGroup> & { Name: string }>;
  /** TimeZoneStandardName of the default lock group (Windows zone id). Default "UTC". */
  timeZone?: string;
  /** Keys auto-issued (5 Series, handed over, programmed) to a person created through the API. */
  autoIssueKeys?: number;
  maxAccessesPerKey?: number;
  /** Ordered keys become programmed after this delay; null (default): only via program(). */
  programDelayMs?: number | null;
  /** Sessions unused for this long expire; null (default): never. */
  sessionIdleTimeoutMs?: number | null;
  /** Request log entries kept (oldest dropped). Default 10,000. */
  requestLogLimit?: number;
  /** 'demo' seeds the demo catalogue; default none. */
  seed?: 'demo' | 'none';
  /** Print one line per request to stdout (off by default: the simulator is benchmarked). */
  logRequests?: boolean;
  /** Most lock logs one GetLockLogData… answer carries (default 2000, as iLOQ documents). */
  maxLockLogsPerCall?: number;
}

export interface IloqSimulator {
  /** Configure as `iloq.serverUrl`; GetUrl is posted here. */
  readonly url: string;
  readonly poolUrl: string;
  readonly port: number;
  readonly credentials: { customerCode: string; userName: string; password: string; apiKey?: string };
  readonly state: SimState;
  readonly faults: SimFaults;
  /** Newest last; bounded by `requestLogLimit` (control calls are not logged). */
  readonly requests: readonly RequestLogEntry[];
  /** API requests answered since start or reset (not bounded; for benchmarks). */
  readonly requestTotal: number;
  /** API requests received (counted on arrival, before any injected latency) since start or reset. */
  readonly requestsReceived: number;
  /**
   * Milliseconds from each answered API request's arrival to its answer, summed since start or
   * reset: the latency really served (injected latency included; a timer fires a little late).
   */
  readonly servedMsTotal: number;
  setFaults(input: SimFaultsInput): SimFaults;
  clearFaults(): void;
  expireSessions(): void;
  /** Ordered keys (or the given ones) become programmed; returns their ids. */
  programOrderedKeys(keyIds?: string[]): string[];
  /** The ordered blocklist reaches every lock; returns the version they now have. */
  deliverBlocklist(): number;
  /** Back to the start state: data, sessions, faults, request log. */
  reset(): void;
  clearRequestLog(): void;
  /** Requests whose method matches and whose path matches (regexp or substring). */
  countRequests(method: string, path: RegExp | string): number;
  addPerson(person: Partial<Person> & { ExternalPersonId: string }): Person;
  /** `addKey('emp-1')`, `addKey(personId, 6)` or `addKey({ person, access, programmed, ... })`. */
  addKey(personOrOpts: string | AddKeyOptions, keyTypeMask?: number): Key;
  addSecurityAccess(name: string, type?: number): SecurityAccess;
  /** A lock log arrives at the server (defaults: successful 5 Series access, now). */
  addLockLog(entry: Partial<LockLogData>): LockLogData;
  /** Sorted names of the accesses on a key (any type). */
  getKeyAccessNames(keyId: string, view?: 'current' | 'programmed'): string[];
  close(): Promise<void>;
}

export const DEMO_CREDENTIALS = { customerCode: 'DEMO', userName: 'lockstep', password: 'lockstep-sim' } as const;

const DEMO_API_ACCESSES = ['Main entrance', 'Control room', 'Substation A', 'Server room'];
const DEMO_STANDARD_ACCESSES = ['Manual master'];
const DENIED = { Message: 'Authorization has been denied for this request.' };
const NO_LOCKGROUP_NEEDED = new Set(['lockgroups', 'setlockgroup', 'killsession', 'test', 'version']);
const MAX_BODY = 1024 * 1024;

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

function freshFaults(): SimFaults {
  return {
    latencyMs: 0,
    jitterMs: 0,
    rateLimitRemaining: 0,
    rateLimitUntil: 0,
    unavailableRemaining: 0,
    unavailableUntil: 0,
    retryAfterSeconds: 1,
    retryAfterAsDate: false,
    rejectCredentials: false,
    forceLoginResult: null,
    failMatching: null,
  };
}

export async function startIloqSimulator(opts: IloqSimulatorOptions = {}): Promise<IloqSimulator> {
  const creds = {
    customerCode: opts.customerCode ?? DEMO_CREDENTIALS.customerCode,
    userName: opts.userName ?? DEMO_CREDENTIALS.userName,
    password: opts.password ?? DEMO_CREDENTIALS.password,
    ...(opts.apiKey ? { apiKey: opts.apiKey } : {}),
  };
  const pool = opts.pool ?? true;
  const logLimit = opts.requestLogLimit ?? 10_000;
  const state = new SimState();
  let faults = freshFaults();
  let log: RequestLogEntry[] = [];
  let total = 0;
  let received = 0;
  let servedMs = 0;
  let failSeen = 0;
  const timers = new Set<NodeJS.Timeout>();

  const seed = () => {
    state.clear();
    state.autoIssueKeys = opts.autoIssueKeys ?? 1;
    state.maxAccessesPerKey = opts.maxAccessesPerKey ?? 64;
    state.maxLockLogsPerCall = opts.maxLockLogsPerCall ?? 2000;
    const groups = opts.lockGroups ?? [{ Name: 'Simulated locking system' }];
    for (const g of groups)
      state.lockGroups.push({
        LockGroup_ID: (g.LockGroup_ID ?? randomUUID()).toLowerCase(),
        Name: g.Name,
        OptionMask: g.OptionMask ?? 2,
        State: g.State ?? 0,
        TimeZoneStandardName: g.TimeZoneStandardName ?? opts.timeZone ?? 'UTC',
      });
    if (opts.seed === 'demo') {
      for (const n of DEMO_API_ACCESSES) state.addSecurityAccess(n, SecurityAccessType.api);
      for (const n of DEMO_STANDARD_ACCESSES) state.addSecurityAccess(n, SecurityAccessType.standard);
    } else if (opts.seed !== undefined && opts.seed !== 'none') {
      throw new Error(`unknown iLOQ simulator seed "${String(opts.seed)}" (known: demo, none)`);
    }
  };
  seed();

  const setFaults = (input: SimFaultsInput): SimFaults => {
    const now = Date.now();
    const num = (v: unknown, name: string) => {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new SimError(400, `${name} must be a non-negative number`);
      return v;
    };
    if (input.latencyMs !== undefined) faults.latencyMs = num(input.latencyMs, 'latencyMs');
    if (input.jitterMs !== undefined) faults.jitterMs = num(input.jitterMs, 'jitterMs');
    if (input.rateLimitNext !== undefined) faults.rateLimitRemaining = num(input.rateLimitNext, 'rateLimitNext');
    if (input.rateLimitForMs !== undefined) faults.rateLimitUntil = now + num(input.rateLimitForMs, 'rateLimitForMs');
    if (input.unavailableNext !== undefined) faults.unavailableRemaining = num(input.unavailableNext, 'unavailableNext');
    if (input.unavailableForMs !== undefined) faults.unavailableUntil = now + num(input.unavailableForMs, 'unavailableForMs');
    if (input.retryAfterSeconds !== undefined)
      faults.retryAfterSeconds = input.retryAfterSeconds === null ? null : num(input.retryAfterSeconds, 'retryAfterSeconds');
    if (input.retryAfterAsDate !== undefined) faults.retryAfterAsDate = Boolean(input.retryAfterAsDate);
    if (input.rejectCredentials !== undefined) faults.rejectCredentials = Boolean(input.rejectCredentials);
    if (input.forceLoginResult !== undefined)
      faults.forceLoginResult = input.forceLoginResult === null ? null : num(input.forceLoginResult, 'forceLoginResult');
    if (input.expireSessions) state.sessions.clear();
    if (input.failMatching !== undefined) {
      const f = input.failMatching;
      failSeen = 0;
      faults.failMatching =
        f === null
          ? null
          : {
              ...(f.method ? { method: f.method.toUpperCase() } : {}),
              ...(f.path ? { path: f.path } : {}),
              skip: num(f.skip ?? 0, 'failMatching.skip'),
              count: num(f.count ?? 1, 'failMatching.count'),
              status: num(f.status ?? 503, 'failMatching.status'),
            };
    }
    return { ...faults };
  };

  const programOrderedKeys = (keyIds?: string[]): string[] =>
    keyIds ? keyIds.filter((k) => state.program(k)) : state.programAllOrdered();

  const scheduleProgramming = (keyId: string) => {
    const delay = opts.programDelayMs;
    if (delay === null || delay === undefined) return;
    const t = setTimeout(() => {
      timers.delete(t);
      try {
        state.program(keyId);
      } catch {
        // the key was removed by a reset meanwhile
      }
    }, delay);
    t.unref();
    timers.add(t);
  };

  const scheduleBlocklistDelivery = () => {
    const delay = opts.programDelayMs;
    if (delay === null || delay === undefined) return;
    const t = setTimeout(() => {
      timers.delete(t);
      state.deliverBlacklist();
    }, delay);
    t.unref();
    timers.add(t);
  };

  const retryAfterHeader = (): Record<string, string> => {
    if (faults.retryAfterSeconds === null) return {};
    const value = faults.retryAfterAsDate
      ? new Date(Date.now() + faults.retryAfterSeconds * 1000).toUTCString()
      : String(Math.ceil(faults.retryAfterSeconds));
    return { 'retry-after': value };
  };

  const injectedFault = (method: string, path: string): Reply | undefined => {
    const now = Date.now();
    if (faults.rateLimitRemaining > 0 || now < faults.rateLimitUntil) {
      if (faults.rateLimitRemaining > 0) faults.rateLimitRemaining--;
      return { status: 429, body: { Message: 'Too many requests.' }, headers: retryAfterHeader() };
    }
    if (faults.unavailableRemaining > 0 || now < faults.unavailableUntil) {
      if (faults.unavailableRemaining > 0) faults.unavailableRemaining--;
      return { status: 503, body: { Message: 'The service is unavailable.' }, headers: retryAfterHeader() };
    }
    const f = faults.failMatching;
    if (f && (!f.method || f.method === method) && (!f.path || path.includes(f.path))) {
      const n = failSeen++;
      if (n >= f.skip && n < f.skip + f.count)
        return {
          status: f.status,
          body: { Message: f.status === 503 ? 'The service is unavailable.' : 'An error has occurred.' },
          headers: f.status === 503 || f.status === 429 ? retryAfterHeader() : {},
        };
    }
    return undefined;
  };

  const sessionOf = (headers: http.IncomingHttpHeaders, needLockGroup: boolean): Reply | { id: string } => {
    const raw = headers.sessionid;
    const sid = Array.isArray(raw) ? raw[0] : raw;
    const s = sid ? state.sessions.get(sid) : undefined;
    if (!sid || !s) return { status: 401, body: DENIED };
    const now = Date.now();
    const idle = opts.sessionIdleTimeoutMs;
    if (idle !== null && idle !== undefined && now - s.lastUsedAt > idle) {
      state.sessions.delete(sid);
      return { status: 401, body: DENIED };
    }
    if (needLockGroup && !s.lockGroupId) return { status: 401, body: { Message: 'Lock group is not selected for the session.' } };
    s.lastUsedAt = now;
    return { id: sid };
  };

  /** The API proper; `rest` is the path after /api/v2, `lower` the same lower-cased. */
  const api = (method: string, rest: string[], lower: string[], query: URLSearchParams, body: unknown, headers: http.IncomingHttpHeaders, origin: string): Reply => {
    const [a, b, c, d, e] = lower;
    const n = rest.length;

    if (method === 'POST' && a === 'url' && b === 'geturl' && n === 2) {
      return { status: 200, body: pool ? `${origin}/iloqwspool/` : '' };
    }
    if (method === 'POST' && a === 'createsession' && n === 1) {
      const p = (body ?? {}) as Record<string, unknown>;
      let result = 1;
      if (faults.forceLoginResult !== null) result = faults.forceLoginResult;
      else if (faults.rejectCredentials || p.CustomerCode !== creds.customerCode || p.UserName !== creds.userName || p.Password !== creds.password)
        result = 5;
      if (result !== 1) return { status: 200, body: { SessionID: null, Result: result } };
      const sid = randomUUID();
      state.sessions.set(sid, { lockGroupId: null, createdAt: Date.now(), lastUsedAt: Date.now() });
      return { status: 200, body: { SessionID: sid, Result: 1 } };
    }

    const sess = sessionOf(headers, !NO_LOCKGROUP_NEEDED.has(a ?? ''));
    if ('status' in sess) return sess;

    if (n === 1) {
      if (method === 'GET' && a === 'lockgroups') return { status: 200, body: state.lockGroups };
      if (method === 'POST' && a === 'setlockgroup') {
        const wanted = String((body as { LockGroup_ID?: unknown } | undefined)?.LockGroup_ID ?? '').toLowerCase();
        const g = state.lockGroups.find((x) => x.LockGroup_ID === wanted);
        if (!g) throw new SimError(400, `Invalid value: LockGroup_ID ${wanted}`);
        state.sessions.get(sess.id)!.lockGroupId = g.LockGroup_ID;
        // Everything a lockstep API user needs: edit persons, keys, key access; order keys.
        return { status: 200, body: { RightsMask: 65536 + 524288 + 33554432 + 34359738368 } };
      }
      if (method === 'GET' && a === 'killsession') {
        state.sessions.delete(sess.id);
        return { status: 204 };
      }
      if (method === 'GET' && a === 'test') return { status: 200, body: 'Test OK' };
      if (method === 'GET' && a === 'version') return { status: 200, body: '2.0.0-lockstep-simulator' };
      if (method === 'GET' && a === 'securityaccesses') return { status: 200, body: [...state.accesses.values()] };
      if (method === 'POST' && a === 'persons') {
        const p = body as { Person?: Partial<Person>; ZoneIds?: unknown } | undefined;
        if (!p?.Person) throw new SimError(400, 'Person is required');
        const person = state.insertPerson(p.Person, { autoIssue: true });
        return { status: 200, body: { PersonIds: [person.Person_ID] } };
      }
      if (method === 'PUT' && a === 'persons') {
        const p = body as { Person?: Partial<Person> } | undefined;
        if (!p?.Person) throw new SimError(400, 'Person is required');
        state.updatePerson(p.Person);
        return { status: 204 };
      }
      if (method === 'PUT' && a === 'keys') {
        const k = body as { Key?: Partial<Key> } | undefined;
        if (!k?.Key) throw new SimError(400, 'Key is required');
        state.updateKey(k.Key);
        return { status: 204 };
      }
    }

    if (a === 'persons' && method === 'GET') {
      if (b === 'getbyexternalpersonids' && n === 2) {
        const out: Person[] = [];
        for (const ext of query.getAll('externalPersonIds')) {
          const p = state.findPersonByExternalId(ext);
          if (p) out.push(p);
        }
        return { status: 200, body: out };
      }
      if (n === 2) return { status: 200, body: state.getPerson(rest[1]!) };
      if (n === 3 && c === 'keys') {
        state.getPerson(rest[1]!);
        return { status: 200, body: { Keys: state.keysOfPerson(rest[1]!) } };
      }
    }

    if (a === 'blacklists') {
      if (n === 1 && method === 'GET') return { status: 200, body: state.blacklists() };
      if (n === 3 && b === 'canaddkey' && method === 'GET') return { status: 200, body: state.canAddToBlacklist(rest[2]!) };
      if (n === 3 && b === 'addkey' && method === 'POST') {
        state.addToBlacklist(rest[2]!);
        return { status: 204 };
      }
      if (n === 2 && b === 'canorders40blacklist' && method === 'GET') return { status: 200, body: state.canOrderBlacklist() };
      if (n === 2 && b === 'orders40blacklist' && method === 'POST') {
        state.orderBlacklist();
        scheduleBlocklistDelivery();
        return { status: 204 };
      }
    }

    if (a === 'locklogs' && b === 'getlocklogdatabytimestamp' && n === 2 && method === 'POST') {
      const p = (body ?? {}) as Partial<GetLockLogDataParam>;
      return {
        status: 200,
        body: { StartDateUtc: p.StartDateUtc ?? null, EndDateUtc: p.EndDateUtc ?? null, LockLogs: state.lockLogsByTimestamp(p.StartDateUtc, p.EndDateUtc) },
      };
    }

    if (a === 'keys' && n >= 2) {
      const keyId = rest[1]!;
      if (n === 2 && method === 'GET') return { status: 200, body: state.record(keyId).key };
      if (n === 2 && method === 'DELETE') {
        state.deleteKey(keyId);
        return { status: 204 };
      }
      if (n === 3 && c === 'candelete' && method === 'GET') return { status: 200, body: state.canDeleteKey(keyId) };
      if (n === 3 && c === 'canreturn' && method === 'GET') return { status: 200, body: state.canReturn(keyId) };
      if (n === 3 && c === 'return' && method === 'POST') {
        state.returnKey(keyId);
        return { status: 204 };
      }
      if (c === 'securityaccesses') {
        if (n === 3 && method === 'GET') return { status: 200, body: state.securityAccessesView(keyId, viewMode(query)) };
        if (n === 3 && method === 'POST') {
          state.addAccess(keyId, (body as { SecurityAccess_ID?: string } | undefined)?.SecurityAccess_ID);
          return { status: 204 };
        }
        if (n === 3 && method === 'PUT') {
          state.replaceAccesses(keyId, (body ?? {}) as Record<string, never>);
          return { status: 204 };
        }
        if (n === 4 && d === 'canadd' && method === 'GET') return { status: 200, body: state.canAdd(keyId) };
        if (n === 5 && e === 'candelete' && method === 'GET') return { status: 200, body: state.canDelete(keyId, rest[3]!) };
        if (n === 4 && method === 'DELETE') {
          state.deleteAccess(keyId, rest[3]!);
          return { status: 204 };
        }
      }
      if (n === 3 && c === 'timelimittitles' && method === 'GET') return { status: 200, body: state.timeLimitsView(keyId, viewMode(query)) };
      if (n === 3 && c === 'canorder' && method === 'GET') return { status: 200, body: state.canOrder(keyId) };
      if (n === 3 && c === 'order' && (method === 'POST' || method === 'GET')) {
        state.order(keyId);
        scheduleProgramming(state.record(keyId).key.FNKey_ID);
        return { status: 204 };
      }
    }
    return notFound();
  };

  const control = (method: string, path: string, query: URLSearchParams, body: unknown): Reply => {
    const b = (body ?? {}) as Record<string, unknown>;
    switch (`${method} ${path}`) {
      case 'GET /__sim/state':
        return { status: 200, body: { ...(state.snapshot() as object), faults, requestCount: log.length } };
      case 'GET /__sim/requests': {
        const limit = Number(query.get('limit') ?? log.length);
        return { status: 200, body: log.slice(Math.max(0, log.length - limit)) };
      }
      case 'POST /__sim/faults':
        return { status: 200, body: setFaults(b as SimFaultsInput) };
      case 'POST /__sim/expire-sessions':
        state.sessions.clear();
        return { status: 204 };
      case 'POST /__sim/program':
        return { status: 200, body: { programmed: programOrderedKeys(Array.isArray(b.keyIds) ? (b.keyIds as string[]) : undefined) } };
      case 'POST /__sim/blocklist/deliver':
        return { status: 200, body: { programmedVersion: state.deliverBlacklist() } };
      case 'POST /__sim/reset':
        handle.reset();
        return { status: 204 };
      case 'POST /__sim/persons': {
        const ext = String(b.ExternalPersonId ?? '');
        if (!ext) throw new SimError(400, 'ExternalPersonId is required');
        return { status: 200, body: state.insertPerson({ PersonCode: ext, ...(b as Partial<Person>) }) };
      }
      case 'POST /__sim/keys':
        return {
          status: 200,
          body: state.addKey({
            ...(typeof b.person === 'string' ? { person: b.person } : {}),
            ...(typeof b.keyTypeMask === 'number' ? { keyTypeMask: b.keyTypeMask } : {}),
            ...(typeof b.programmed === 'boolean' ? { programmed: b.programmed } : {}),
            ...(Array.isArray(b.access) ? { access: b.access as string[] } : {}),
          }),
        };
      case 'POST /__sim/security-accesses': {
        if (typeof b.Name !== 'string' || !b.Name) throw new SimError(400, 'Name is required');
        const type = typeof b.Type === 'number' ? b.Type : SecurityAccessType.api;
        return { status: 200, body: state.addSecurityAccess(b.Name, type, typeof b.Status === 'number' ? { status: b.Status } : {}) };
      }
      case 'POST /__sim/lock-logs': {
        const list = Array.isArray(b.LockLogs) ? (b.LockLogs as Array<Partial<LockLogData>>) : [b as Partial<LockLogData>];
        return { status: 200, body: { LockLogs: list.map((l) => state.addLockLog(l)) } };
      }
      default:
        return notFound();
    }
  };

  const server = http.createServer((req, res) => {
    void serve(req, res);
  });

  const serve = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const time = Date.now();
    const arrived = performance.now();
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const path = qi >= 0 ? url.slice(0, qi) : url;
    const rawQuery = qi >= 0 ? url.slice(qi + 1) : '';
    let reply: Reply;
    try {
      const body = await readJson(req);
      const query = new URLSearchParams(rawQuery);
      if (path.startsWith('/__sim/')) {
        send(res, control(method, path, query, body));
        return;
      }
      received++;
      const delay = faults.latencyMs + (faults.jitterMs > 0 ? Math.random() * faults.jitterMs : 0);
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      reply = injectedFault(method, path) ?? route(method, path, query, body, req.headers);
    } catch (err) {
      reply = err instanceof SimError ? { status: err.status, body: { Message: err.message } } : { status: 500, body: { Message: 'An error has occurred.' } };
      if (!(err instanceof SimError)) console.error('iloq simulator: unexpected error', err);
    }
    send(res, reply);
    servedMs += performance.now() - arrived;
    total++;
    log.push({ method, path, query: rawQuery, status: reply.status, time });
    if (log.length > logLimit * 2) log = log.slice(-logLimit);
    if (opts.logRequests) console.log(`${new Date(time).toISOString()} ${method} ${url} ${reply.status}`);
  };

  const route = (method: string, path: string, query: URLSearchParams, body: unknown, headers: http.IncomingHttpHeaders): Reply => {
    const segs = path.split('/').filter(Boolean);
    const base = segs[0]?.toLowerCase();
    if (segs[1]?.toLowerCase() !== 'api' || segs[2]?.toLowerCase() !== 'v2') return notFound();
    const rest = segs.slice(3).map(decodeURIComponent);
    const lower = rest.map((s) => s.toLowerCase());
    const isGetUrl = lower[0] === 'url' && lower[1] === 'geturl';
    if (base === 'iloqws' && pool && !isGetUrl) return notFound();
    if (base === 'iloqwspool' && !pool) return notFound();
    if (base !== 'iloqws' && base !== 'iloqwspool') return notFound();
    if (opts.apiKey && headers['x-api-key'] !== opts.apiKey) return { status: 403, body: { message: 'Forbidden' } };
    const host = headers.host ?? `127.0.0.1:${port}`;
    return api(method, rest, lower, query, body, headers, `http://${host}`);
  };

  server.keepAliveTimeout = 30_000;
  server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const hostForUrl = opts.host && opts.host !== '0.0.0.0' && opts.host !== '::' ? opts.host : '127.0.0.1';
  const origin = `http://${hostForUrl.includes(':') ? `[${hostForUrl}]` : hostForUrl}:${port}`;

  const handle: IloqSimulator = {
    url: `${origin}/iloqws`,
    poolUrl: pool ? `${origin}/iloqwspool/` : `${origin}/iloqws`,
    port,
    credentials: creds,
    state,
    get faults() {
      return { ...faults };
    },
    get requests() {
      return log;
    },
    get requestTotal() {
      return total;
    },
    get requestsReceived() {
      return received;
    },
    get servedMsTotal() {
      return servedMs;
    },
    setFaults: (input) => setFaults(input),
    clearFaults: () => {
      faults = freshFaults();
      failSeen = 0;
    },
    expireSessions: () => state.sessions.clear(),
    programOrderedKeys,
    deliverBlocklist: () => state.deliverBlacklist(),
    reset: () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      faults = freshFaults();
      failSeen = 0;
      log = [];
      total = 0;
      received = 0;
      servedMs = 0;
      seed();
    },
    clearRequestLog: () => {
      log = [];
    },
    countRequests: (method, path) =>
      log.filter((r) => r.method === method && (typeof path === 'string' ? r.path.includes(path) : path.test(r.path))).length,
    addPerson: (person) => state.insertPerson({ PersonCode: person.ExternalPersonId, ...person }),
    addKey: (personOrOpts, keyTypeMask) =>
      state.addKey(
        typeof personOrOpts === 'string'
          ? { person: personOrOpts, ...(keyTypeMask === undefined ? {} : { keyTypeMask }) }
          : { ...personOrOpts, ...(keyTypeMask === undefined ? {} : { keyTypeMask }) },
      ),
    addSecurityAccess: (name, type = SecurityAccessType.api) => state.addSecurityAccess(name, type),
    addLockLog: (entry) => state.addLockLog(entry),
    getKeyAccessNames: (keyId, view = 'current') => state.accessNames(keyId, view),
    close: async () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return handle;
}

function viewMode(query: URLSearchParams): number {
  const raw = query.get('mode');
  if (raw === null || raw === '') throw new SimError(400, 'The mode field is required.');
  const m = Number(raw);
  if (m === 0 || m === 1) return 1;
  if (m === 2) return 2;
  throw new SimError(400, `Invalid value: mode ${raw}`);
}

function notFound(): Reply {
  return { status: 404, body: { Message: 'No HTTP resource was found that matches the request URI.' } };
}

function send(res: http.ServerResponse, reply: Reply): void {
  if (reply.status === 204 || reply.body === undefined) {
    res.writeHead(reply.status, reply.headers);
    res.end();
    return;
  }
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...reply.headers,
  });
  res.end(text);
}

function readJson(req: http.IncomingMessage): Promise<unknown> {
  return readJsonBody(req, MAX_BODY, (problem) => (problem === 'too_large' ? new SimError(413, 'Request body too large.') : new SimError(400, 'The request body is not valid JSON.')));
}

/**
 * `lockstep sim iloq [--port N] [--host H] [--seed demo|none] [--program-delay-ms N] [--latency-ms N]`
 * Starts the simulator with the demo catalogue, prints how to configure lockstep, and runs until
 * SIGINT/SIGTERM.
 */
export async function runIloqSimulatorCli(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  const sim = await startIloqSimulator({
    port: args.port ?? 8090,
    host: args.host ?? '127.0.0.1',
    seed: (args.seed ?? 'demo') as 'demo' | 'none',
    programDelayMs: args.programDelayMs ?? 2_000,
    timeZone: 'FLE Standard Time',
  });
  if (args.latencyMs) sim.setFaults({ latencyMs: args.latencyMs });
  const c = sim.credentials;
  console.log(
    [
      `iLOQ simulator listening on ${sim.url} (API at ${sim.poolUrl})`,
      '',
      'lockSystems:',
      '  - id: iloq-sim',
      '    kind: iloq',
      '    iloq:',
      `      serverUrl: ${sim.url}`,
      `      customerCode: ${c.customerCode}`,
      `      userName: ${c.userName}`,
      `      password: ${c.password}`,
      '',
      `API accesses: ${DEMO_API_ACCESSES.join(', ')}; standard (not API-changeable): ${DEMO_STANDARD_ACCESSES.join(', ')}`,
      `Control: GET ${sim.url.replace(/\/iloqws$/, '')}/__sim/state, POST /__sim/faults, /__sim/program, /__sim/reset`,
    ].join('\n'),
  );
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await sim.close();
}

function parseArgs(argv: string[]): { port?: number; host?: string; seed?: string; programDelayMs?: number; latencyMs?: number } {
  const out: { port?: number; host?: string; seed?: string; programDelayMs?: number; latencyMs?: number } = {};
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split('=', 2) as [string, string | undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    const int = (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${flag} must be a non-negative integer`);
      return n;
    };
    switch (flag) {
      case '--port':
        out.port = int(value());
        break;
      case '--host':
        out.host = value();
        break;
      case '--seed':
        out.seed = value();
        break;
      case '--program-delay-ms':
        out.programDelayMs = int(value());
        break;
      case '--latency-ms':
        out.latencyMs = int(value());
        break;
      default:
        throw new Error(`unknown option ${flag} (known: --port, --host, --seed, --program-delay-ms, --latency-ms)`);
    }
  }
  return out;
}
