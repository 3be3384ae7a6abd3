/**
 * CLIQ Web Manager simulator: a real HTTP or HTTPS server implementing exactly the assumed
 * integration contract (/work/shared/reference/cliq-contract.md), for tests, the quick start and
 * demos. Model and rules: sim-state.ts; wire types: client.ts.
 *
 * Layout (one port):
 *   {origin}{basePath}/...     the API (basePath default /cliq-api/v1; `url` includes it)
 *   {origin}/__sim/...         control endpoints (no auth, not even with mTLS: bind to loopback)
 *
 * Authentication, as configured:
 * - `tls` serves HTTPS; with `tls.clientCa` every API request must come with a client
 *   certificate signed by that CA. By default a missing or untrusted certificate is answered at
 *   the HTTP level (401 CLIENT_CERTIFICATE_REQUIRED) so that clients see the contract's error;
 *   `clientCertCheck: 'handshake'` instead refuses the TLS handshake, as a strict front end would.
 * - `token` requires `Authorization: Bearer <token>`: missing → 401 UNAUTHENTICATED, wrong →
 *   401 INVALID_TOKEN, expired (expireToken) → 401 TOKEN_EXPIRED.
 * Both together: both are required.
 *
 * Faults (setFaults / POST /__sim/faults), applied to API requests only, in this order:
 * latency (+ jitter), 429 RATE_LIMITED (next N / for a window), 503 MAINTENANCE (next N / for a
 * window), both with Retry-After; `failMatching` (503 for the Nth..(N+count-1)th request matching
 * method/path, to break an operation in its middle); then authentication (`rejectAuth`: 401 for
 * everything), then the request itself.
 *
 * Control endpoints:
 *   GET  /__sim/state                 domains, profiles, persons with keys, pending jobs, counts
 *   GET  /__sim/requests?limit=N      request log (method, path, query, status, time, jobId)
 *   POST /__sim/faults                body: CliqSimFaultsInput; answers the active faults
 *   POST /__sim/complete-jobs         body {serials?, jobIds?}: keys updated, their jobs done
 *   POST /__sim/visit-cylinders       body {serials?}: blocklist jobs done
 *   POST /__sim/expire-token          the current token is answered 401 TOKEN_EXPIRED
 *   POST /__sim/token                 body {token}: accept this token from now on
 *   POST /__sim/reset                 back to the start state (seed re-applied), faults cleared
 *   POST /__sim/persons               body: {externalId, firstName?, lastName?, email?, domainId?, active?}
 *   POST /__sim/keys                  body: {serial?, type?, holder?, validity?, revalidation?, access?, blocked?, lastUpdatedAt?}
 *   POST /__sim/access-profiles       body: {name, domainId?}
 *   POST /__sim/events                body: {serial, cylinderId?, result?, at?} or {events: [...]}
 */

import http from 'node:http';
import https from 'node:https';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { CliqSimError, CliqSimState, type SeedEventOptions, type SeedKeyOptions, type SeedPersonOptions } from './sim-state.ts';
import { CLIQ_MAX_LIMIT, type CliqAccessProfile, type CliqEvent, type CliqJob, type CliqKey, type CliqPerson, type CliqRevalidation } from './client.ts';
import { readJsonBody } from '../shared/sim-body.ts';

export interface CliqFailMatching {
  /** HTTP method to match (any when absent). */
  method?: string;
  /** Substring of the path (after the base path) to match, e.g. "/revalidation". */
  path?: string;
  /** Matching requests to let through first. Default 0. */
  skip?: number;
  /** Matching requests to fail. Default 1. */
  count?: number;
  /** Status to answer; default 503 (with Retry-After). */
  status?: number;
}

export interface CliqSimFaultsInput {
  latencyMs?: number;
  jitterMs?: number;
  rateLimitNext?: number;
  rateLimitForMs?: number;
  unavailableNext?: number;
  unavailableForMs?: number;
  /** Retry-After with 429/503 in seconds; null omits it. Default 1. */
  retryAfterSeconds?: number | null;
  retryAfterAsDate?: boolean;
  /** Every API request answers 401 UNAUTHENTICATED. */
  rejectAuth?: boolean;
  /** The current bearer token is answered 401 TOKEN_EXPIRED from now on. */
  expireToken?: boolean;
  /** Fail requests in the middle of an operation; null clears. */
  failMatching?: CliqFailMatching | null;
}

export interface CliqSimFaults {
  latencyMs: number;
  jitterMs: number;
  rateLimitRemaining: number;
  rateLimitUntil: number;
  unavailableRemaining: number;
  unavailableUntil: number;
  retryAfterSeconds: number | null;
  retryAfterAsDate: boolean;
  rejectAuth: boolean;
  failMatching: (Required<Omit<CliqFailMatching, 'method' | 'path'>> & Pick<CliqFailMatching, 'method' | 'path'>) | null;
}

export interface CliqRequestLogEntry {
  method: string;
  /** Path after the base path, e.g. /keys/100000001/access-profiles (control calls are not logged). */
  path: string;
  query: string;
  status: number;
  time: number;
  /** Job created by this request, if any. */
  jobId?: string;
}

export interface CliqSimulatorTls {
  /** Server certificate and key (PEM). */
  cert: string | Buffer;
  key: string | Buffer;
  /** CA that signs acceptable client certificates; absent: no client certificate asked. */
  clientCa?: string | Buffer;
  /** 'http' (default): 401 CLIENT_CERTIFICATE_REQUIRED; 'handshake': refuse the TLS handshake. */
  clientCertCheck?: 'http' | 'handshake';
}

export interface CliqSimulatorOptions {
  port?: number;
  host?: string;
  /** Path prefix of the API. Default /cliq-api/v1. */
  basePath?: string;
  /** Bearer token required on API requests; absent: none required. */
  token?: string;
  tls?: CliqSimulatorTls;
  /** Domains administered by the client; default one: {id: "dom-main", name: "Main site"}. */
  domains?: Array<{ id?: string; name: string }>;
  /** 'demo' seeds access profiles Main entrance, Control room, Substation A, Server room. */
  seed?: 'demo' | 'none';
  /** Dynamic keys handed out when an upserted person holds none. Default 1. */
  autoIssueKeys?: number;
  /** Revalidation of issued keys. Default {enabled: false, periodHours: 24}. */
  issuedRevalidation?: CliqRevalidation;
  /** Jobs (not blocklist) complete this long after creation; null (default): only on demand. */
  jobDelayMs?: number | null;
  /** Items per page when the request gives no limit. Default 100. */
  pageSize?: number;
  requestLogLimit?: number;
  logRequests?: boolean;
}

export interface CliqSimulator {
  /** API base URL (configure as `cliq.baseUrl`). */
  readonly url: string;
  readonly origin: string;
  readonly port: number;
  /** First administered domain (configure as `cliq.domainId`). */
  readonly domainId: string;
  readonly token: string | undefined;
  readonly state: CliqSimState;
  readonly faults: CliqSimFaults;
  readonly requests: readonly CliqRequestLogEntry[];
  readonly requestTotal: number;
  /** API requests received (counted on arrival, before any injected latency) since start or reset. */
  readonly requestsReceived: number;
  /**
   * Milliseconds from each answered API request's arrival to its answer, summed since start or
   * reset: the latency really served (injected latency included; a timer fires a little late).
   */
  readonly servedMsTotal: number;
  setFaults(input: CliqSimFaultsInput): CliqSimFaults;
  clearFaults(): void;
  expireToken(): void;
  setToken(token: string | undefined): void;
  /** Keys (all or `serials`) are updated: pending non-blocklist jobs done. Returns the jobs. */
  completeJobs(opts?: { serials?: string[]; jobIds?: string[] }): CliqJob[];
  /** Cylinders visited: pending blocklist jobs (of `serials`) done. */
  visitCylinders(serials?: string[]): CliqJob[];
  reset(): void;
  clearRequestLog(): void;
  countRequests(method: string, path: RegExp | string): number;
  /** Accepted (2xx) PUT/POST requests, i.e. change requests. */
  countWrites(path?: RegExp | string): number;
  seedPerson(o: SeedPersonOptions): CliqPerson;
  seedKey(o: SeedKeyOptions): CliqKey;
  addProfile(name: string, domainId?: string): CliqAccessProfile;
  addEvent(o: SeedEventOptions): CliqEvent;
  /** Sorted access-profile names on a key. */
  getKeyAccessNames(serial: string): string[];
  close(): Promise<void>;
}

export const DEMO_ACCESS_PROFILES = ['Main entrance', 'Control room', 'Substation A', 'Server room'];
const MAX_BODY = 1024 * 1024;

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  jobId?: string;
}

function freshFaults(): CliqSimFaults {
  return {
    latencyMs: 0,
    jitterMs: 0,
    rateLimitRemaining: 0,
    rateLimitUntil: 0,
    unavailableRemaining: 0,
    unavailableUntil: 0,
    retryAfterSeconds: 1,
    retryAfterAsDate: false,
    rejectAuth: false,
    failMatching: null,
  };
}

const err = (status: number, code: string, message: string): Reply => ({ status, body: { code, message } });

export async function startCliqSimulator(opts: CliqSimulatorOptions = {}): Promise<CliqSimulator> {
  const basePath = (opts.basePath ?? '/cliq-api/v1').replace(/\/+$/, '');
  const pageSize = Math.min(CLIQ_MAX_LIMIT, Math.max(1, opts.pageSize ?? 100));
  const logLimit = opts.requestLogLimit ?? 10_000;
  const state = new CliqSimState();
  let faults = freshFaults();
  let token = opts.token;
  let tokenExpired = false;
  let failSeen = 0;
  let log: CliqRequestLogEntry[] = [];
  let total = 0;
  let received = 0;
  let servedMs = 0;
  const timers = new Set<NodeJS.Timeout>();

  const scheduleJob = (job: CliqJob) => {
    const delay = opts.jobDelayMs;
    if (delay === null || delay === undefined || job.kind === 'blocklist') return;
    const t = setTimeout(() => {
      timers.delete(t);
      if (job.state === 'pending') state.updateKeys({ jobIds: [job.id] });
    }, delay);
    t.unref();
    timers.add(t);
  };

  const seed = () => {
    state.clear();
    state.autoIssueKeys = opts.autoIssueKeys ?? 1;
    state.issuedRevalidation = opts.issuedRevalidation ?? { enabled: false, periodHours: 24 };
    state.onJob = scheduleJob;
    for (const d of opts.domains ?? [{ id: 'dom-main', name: 'Main site' }]) state.addDomain(d.name, d.id);
    if (opts.seed === 'demo') for (const n of DEMO_ACCESS_PROFILES) state.addProfile(n);
    else if (opts.seed !== undefined && opts.seed !== 'none') throw new Error(`unknown CLIQ simulator seed "${String(opts.seed)}" (known: demo, none)`);
  };
  seed();

  const setFaults = (input: CliqSimFaultsInput): CliqSimFaults => {
    const now = Date.now();
    const num = (v: unknown, name: string) => {
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new CliqSimError(422, 'INVALID_BODY', `${name} must be a non-negative number`);
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
    if (input.rejectAuth !== undefined) faults.rejectAuth = Boolean(input.rejectAuth);
    if (input.expireToken) tokenExpired = true;
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

  const retryAfter = (): Record<string, string> => {
    if (faults.retryAfterSeconds === null) return {};
    return {
      'retry-after': faults.retryAfterAsDate
        ? new Date(Date.now() + faults.retryAfterSeconds * 1000).toUTCString()
        : String(Math.ceil(faults.retryAfterSeconds)),
    };
  };

  const injectedFault = (method: string, path: string): Reply | undefined => {
    const now = Date.now();
    if (faults.rateLimitRemaining > 0 || now < faults.rateLimitUntil) {
      if (faults.rateLimitRemaining > 0) faults.rateLimitRemaining--;
      return { ...err(429, 'RATE_LIMITED', 'Too many requests; retry after the given delay.'), headers: retryAfter() };
    }
    if (faults.unavailableRemaining > 0 || now < faults.unavailableUntil) {
      if (faults.unavailableRemaining > 0) faults.unavailableRemaining--;
      return { ...err(503, 'MAINTENANCE', 'CLIQ Web Manager is in maintenance.'), headers: retryAfter() };
    }
    const f = faults.failMatching;
    if (f && (!f.method || f.method === method) && (!f.path || path.includes(f.path))) {
      const n = failSeen++;
      if (n >= f.skip && n < f.skip + f.count) {
        const reply = f.status === 503 ? err(503, 'MAINTENANCE', 'CLIQ Web Manager is in maintenance.') : err(f.status, 'INTERNAL', 'Injected failure.');
        return { ...reply, headers: f.status === 503 || f.status === 429 ? retryAfter() : {} };
      }
    }
    return undefined;
  };

  const authenticate = (req: http.IncomingMessage): Reply | undefined => {
    if (opts.tls?.clientCa) {
      const sock = req.socket as TLSSocket;
      if (!sock.authorized) {
        const presented = typeof sock.getPeerCertificate === 'function' && Object.keys(sock.getPeerCertificate() ?? {}).length > 0;
        return err(401, 'CLIENT_CERTIFICATE_REQUIRED', presented
          ? `client certificate not trusted: ${String(sock.authorizationError ?? 'unknown issuer')}`
          : 'a client certificate signed by the configured CA is required');
      }
    }
    if (token !== undefined) {
      const h = req.headers.authorization;
      const m = typeof h === 'string' ? /^Bearer\s+(.+)$/i.exec(h) : null;
      if (!m) return err(401, 'UNAUTHENTICATED', 'Authorization: Bearer <token> is required');
      if (m[1] !== token) return err(401, 'INVALID_TOKEN', 'the bearer token is not valid');
      if (tokenExpired) return err(401, 'TOKEN_EXPIRED', 'the bearer token has expired');
    }
    if (faults.rejectAuth) return err(401, 'UNAUTHENTICATED', 'authentication rejected');
    return undefined;
  };

  const page = <T>(items: T[], query: URLSearchParams): { items: T[]; next: string | null } => {
    const rawLimit = query.get('limit');
    let limit = pageSize;
    if (rawLimit !== null) {
      limit = Number(rawLimit);
      if (!Number.isInteger(limit) || limit < 1 || limit > CLIQ_MAX_LIMIT)
        throw new CliqSimError(422, 'INVALID_QUERY', `limit must be an integer from 1 to ${CLIQ_MAX_LIMIT}`);
    }
    let offset = 0;
    const cursor = query.get('cursor');
    if (cursor) {
      try {
        const c = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as { o?: unknown };
        if (typeof c.o !== 'number' || !Number.isInteger(c.o) || c.o < 0) throw new Error('bad');
        offset = c.o;
      } catch {
        throw new CliqSimError(422, 'INVALID_QUERY', 'cursor is not valid');
      }
    }
    const end = offset + limit;
    return {
      items: items.slice(offset, end),
      next: end < items.length ? Buffer.from(JSON.stringify({ o: end })).toString('base64url') : null,
    };
  };

  const api = (method: string, segs: string[], query: URLSearchParams, body: unknown): Reply => {
    const [a, b, c] = segs;
    const n = segs.length;
    const ok = (value: unknown, status = 200): Reply => ({ status, body: value });
    const change = (r: { key: CliqKey; job: CliqJob | null }): Reply => ({ status: 200, body: r, ...(r.job ? { jobId: r.job.id } : {}) });

    if (method === 'GET' && a === 'domains' && n === 1) return ok(page([...state.domains.values()], query));
    if (method === 'GET' && a === 'access-profiles' && n === 1) {
      const dom = state.requireDomain(query.get('domainId'));
      return ok(page([...state.profiles.values()].filter((p) => p.domainId === dom.id), query));
    }
    if (a === 'persons') {
      if (method === 'GET' && n === 1) {
        const ext = query.get('externalId');
        const all = [...state.persons.values()].filter((p) => state.domains.has(p.domainId));
        return ok(page(ext === null ? all : all.filter((p) => p.externalId === ext), query));
      }
      if (method === 'PUT' && n === 2) {
        const r = state.upsertPerson(b!, body);
        return ok(r.person, r.created ? 201 : 200);
      }
      if (method === 'POST' && n === 3 && c === 'deactivate') return ok(state.deactivatePerson(b!));
      if (method === 'GET' && n === 3 && c === 'keys') {
        state.requirePerson(b!);
        return ok(page(state.keysOf(b!), query));
      }
    }
    if (a === 'keys' && n >= 2) {
      const serial = b!;
      if (method === 'GET' && n === 2) return ok(state.requireKey(serial));
      if (method === 'PUT' && n === 3 && c === 'access-profiles') return change(state.setAccessProfiles(serial, body));
      if (method === 'PUT' && n === 3 && c === 'validity') return change(state.setValidity(serial, body));
      if (method === 'PUT' && n === 3 && c === 'revalidation') return change(state.setRevalidation(serial, body));
      if (method === 'POST' && n === 3 && c === 'report-lost') return change(state.reportLost(serial, body ?? {}));
    }
    if (a === 'jobs' && method === 'GET') {
      if (n === 2) return ok(state.getJob(b!));
      if (n === 1) {
        const s = query.get('state');
        if (s !== null && s !== 'pending' && s !== 'done' && s !== 'failed') throw new CliqSimError(422, 'INVALID_QUERY', 'state must be pending, done or failed');
        return ok(page(s === null ? state.jobs : state.jobs.filter((j) => j.state === s), query));
      }
    }
    if (a === 'events' && method === 'GET' && n === 1) {
      const after = query.get('after');
      return ok(page(after ? state.events.filter((e) => e.id > after) : state.events, query));
    }
    return err(404, 'NOT_FOUND', `no route ${method} ${basePath}/${segs.join('/')}`);
  };

  const control = (method: string, path: string, query: URLSearchParams, body: unknown): Reply => {
    const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
    const strings = (v: unknown) => (Array.isArray(v) ? v.map(String) : undefined);
    switch (`${method} ${path}`) {
      case 'GET /__sim/state':
        return { status: 200, body: { ...(state.snapshot() as object), faults, tokenExpired, requestCount: log.length } };
      case 'GET /__sim/requests': {
        const limit = Number(query.get('limit') ?? log.length);
        return { status: 200, body: log.slice(Math.max(0, log.length - limit)) };
      }
      case 'POST /__sim/faults':
        return { status: 200, body: setFaults(b as CliqSimFaultsInput) };
      case 'POST /__sim/complete-jobs': {
        const serials = strings(b.serials);
        const jobIds = strings(b.jobIds);
        return { status: 200, body: { completed: state.updateKeys({ ...(serials ? { serials } : {}), ...(jobIds ? { jobIds } : {}) }) } };
      }
      case 'POST /__sim/visit-cylinders':
        return { status: 200, body: { completed: state.visitCylinders(strings(b.serials)) } };
      case 'POST /__sim/expire-token':
        tokenExpired = true;
        return { status: 204 };
      case 'POST /__sim/token':
        handle.setToken(typeof b.token === 'string' ? b.token : undefined);
        return { status: 204 };
      case 'POST /__sim/reset':
        handle.reset();
        return { status: 204 };
      case 'POST /__sim/persons':
        if (typeof b.externalId !== 'string' || !b.externalId) throw new CliqSimError(422, 'INVALID_BODY', 'externalId is required');
        return { status: 200, body: state.seedPerson(b as unknown as SeedPersonOptions) };
      case 'POST /__sim/keys':
        return { status: 200, body: state.seedKey(b as SeedKeyOptions) };
      case 'POST /__sim/access-profiles':
        if (typeof b.name !== 'string' || !b.name) throw new CliqSimError(422, 'INVALID_BODY', 'name is required');
        return { status: 200, body: state.addProfile(b.name, typeof b.domainId === 'string' ? b.domainId : undefined) };
      case 'POST /__sim/events': {
        const list = Array.isArray(b.events) ? (b.events as SeedEventOptions[]) : [b as unknown as SeedEventOptions];
        return { status: 200, body: { events: list.map((e) => state.addEvent(e)) } };
      }
      default:
        return err(404, 'NOT_FOUND', `no control route ${method} ${path}`);
    }
  };

  const serve = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const time = Date.now();
    const arrived = performance.now();
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const fullPath = qi >= 0 ? url.slice(0, qi) : url;
    const rawQuery = qi >= 0 ? url.slice(qi + 1) : '';
    const query = new URLSearchParams(rawQuery);
    let reply: Reply;
    if (fullPath.startsWith('/__sim/')) {
      try {
        reply = control(method, fullPath, query, await readJson(req));
      } catch (e) {
        reply = toReply(e);
      }
      send(res, reply);
      return;
    }
    const inBase = fullPath === basePath || fullPath.startsWith(`${basePath}/`);
    const path = inBase ? fullPath.slice(basePath.length) || '/' : fullPath;
    try {
      const body = await readJson(req);
      received++;
      const delay = faults.latencyMs + (faults.jitterMs > 0 ? Math.random() * faults.jitterMs : 0);
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      if (!inBase) reply = err(404, 'NOT_FOUND', `no route ${method} ${fullPath}`);
      else {
        const segs = path.split('/').filter(Boolean).map(decodeURIComponent);
        reply = injectedFault(method, path) ?? authenticate(req) ?? api(method, segs, query, body);
      }
    } catch (e) {
      reply = toReply(e);
    }
    send(res, reply);
    servedMs += performance.now() - arrived;
    total++;
    log.push({ method, path, query: rawQuery, status: reply.status, time, ...(reply.jobId ? { jobId: reply.jobId } : {}) });
    if (log.length > logLimit * 2) log = log.slice(-logLimit);
    if (opts.logRequests) console.log(`${new Date(time).toISOString()} ${method} ${url} ${reply.status}`);
  };

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    void serve(req, res);
  };
  const tls = opts.tls;
  const server: http.Server = tls
    ? https.createServer(
        {
          cert: tls.cert,
          key: tls.key,
          ...(tls.clientCa ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: tls.clientCertCheck === 'handshake' } : {}),
        },
        handler,
      )
    : http.createServer(handler);
  server.keepAliveTimeout = 30_000;
  server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const hostForUrl = opts.host && opts.host !== '0.0.0.0' && opts.host !== '::' ? opts.host : '127.0.0.1';
  const origin = `${tls ? 'https' : 'http'}://${hostForUrl.includes(':') ? `[${hostForUrl}]` : hostForUrl}:${port}`;

  const matches = (p: string, path: RegExp | string) => (typeof path === 'string' ? p.includes(path) : path.test(p));

  const handle: CliqSimulator = {
    url: `${origin}${basePath}`,
    origin,
    port,
    get domainId() {
      return state.defaultDomain().id;
    },
    get token() {
      return token;
    },
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
    setFaults,
    clearFaults: () => {
      faults = freshFaults();
      failSeen = 0;
    },
    expireToken: () => {
      tokenExpired = true;
    },
    setToken: (t) => {
      token = t;
      tokenExpired = false;
    },
    completeJobs: (o) => state.updateKeys(o),
    visitCylinders: (serials) => state.visitCylinders(serials),
    reset: () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      faults = freshFaults();
      failSeen = 0;
      token = opts.token;
      tokenExpired = false;
      log = [];
      total = 0;
      received = 0;
      servedMs = 0;
      seed();
    },
    clearRequestLog: () => {
      log = [];
    },
    countRequests: (method, path) => log.filter((r) => r.method === method && matches(r.path, path)).length,
    countWrites: (path) =>
      log.filter((r) => (r.method === 'PUT' || r.method === 'POST') && r.status >= 200 && r.status < 300 && (path === undefined || matches(r.path, path))).length,
    seedPerson: (o) => state.seedPerson(o),
    seedKey: (o) => state.seedKey(o),
    addProfile: (name, domainId) => state.addProfile(name, domainId),
    addEvent: (o) => state.addEvent(o),
    getKeyAccessNames: (serial) => state.accessNames(serial),
    close: async () => {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return handle;
}

function toReply(e: unknown): Reply {
  if (e instanceof CliqSimError) return err(e.status, e.code, e.message);
  console.error('cliq simulator: unexpected error', e);
  return err(500, 'INTERNAL', 'internal error');
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
  return readJsonBody(req, MAX_BODY, (problem) => new CliqSimError(422, 'INVALID_BODY', problem === 'too_large' ? 'request body too large' : 'the request body is not valid JSON'));
}

/**
 * `lockstep sim cliq [--port N] [--host H] [--seed demo|none] [--tls-dir DIR] [--token T]
 *  [--job-delay-ms N] [--latency-ms N]`
 * With --tls-dir the simulator serves HTTPS and requires a client certificate: it uses
 * ca.pem/server.pem/server-key.pem (+ client.pem/client-key.pem for lockstep) from DIR, and
 * generates them there with openssl when absent. Runs until SIGINT/SIGTERM.
 */
export async function runCliqSimulatorCli(argv: string[]): Promise<void> {
  const args = parseArgs(argv);
  let tls: CliqSimulatorTls | undefined;
  let pki: import('./pki.ts').PkiFiles | undefined;
  if (args.tlsDir) {
    const { generatePki, hasPki, pkiPaths } = await import('./pki.ts');
    const { readFileSync } = await import('node:fs');
    pki = hasPki(args.tlsDir) ? pkiPaths(args.tlsDir) : generatePki(args.tlsDir, { days: 30 });
    tls = { cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey), clientCa: readFileSync(pki.caCert) };
  }
  const sim = await startCliqSimulator({
    port: args.port ?? 8091,
    host: args.host ?? '127.0.0.1',
    seed: (args.seed ?? 'demo') as 'demo' | 'none',
    jobDelayMs: args.jobDelayMs ?? 2_000,
    ...(args.token ? { token: args.token } : {}),
    ...(tls ? { tls } : {}),
  });
  if (args.latencyMs) sim.setFaults({ latencyMs: args.latencyMs });
  const lines = [
    `CLIQ simulator (assumed contract v1) listening on ${sim.url}`,
    '',
    'lockSystems:',
    '  - id: cliq-sim',
    '    kind: cliq',
    '    cliq:',
    `      baseUrl: ${sim.url}`,
    `      domainId: ${sim.domainId}`,
  ];
  if (args.token) lines.push(`      bearerToken: ${args.token}`);
  if (pki) lines.push('      tls:', `        certFile: ${pki.clientCert}`, `        keyFile: ${pki.clientKey}`, `        caFile: ${pki.caCert}`);
  if (!args.token && !pki) lines.push('      bearerToken: any   # the simulator checks no credentials without --token/--tls-dir');
  lines.push(
    '',
    `Access profiles: ${[...sim.state.profiles.values()].map((p) => p.name).join(', ') || 'none'}`,
    `Control: ${sim.origin}/__sim/state, POST /__sim/faults, /__sim/complete-jobs, /__sim/visit-cylinders, /__sim/events, /__sim/reset`,
  );
  console.log(lines.join('\n'));
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

interface CliArgs {
  port?: number;
  host?: string;
  seed?: string;
  tlsDir?: string;
  token?: string;
  jobDelayMs?: number;
  latencyMs?: number;
}

function parseArgs(argv: string[]): CliArgs {
  const out: CliArgs = {};
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
      case '--tls-dir':
        out.tlsDir = value();
        break;
      case '--token':
        out.token = value();
        break;
      case '--job-delay-ms':
        out.jobDelayMs = int(value());
        break;
      case '--latency-ms':
        out.latencyMs = int(value());
        break;
      default:
        throw new Error(`unknown option ${flag} (known: --port, --host, --seed, --tls-dir, --token, --job-delay-ms, --latency-ms)`);
    }
  }
  return out;
}
