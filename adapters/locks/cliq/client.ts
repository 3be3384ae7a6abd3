/**
 * CLIQ Web Manager wire mapping: THE one file that knows paths, JSON bodies, authentication and
 * how HTTP answers become `LockSystemError` kinds.
 *
 * ASSA ABLOY publishes no CWM API; this speaks the *assumed* contract in
 * /work/shared/reference/cliq-contract.md (v1). When the partner API is in hand, this file (and
 * its tests) is what changes: the adapter only sees the methods and the model types below, which
 * are the contract's resources as lockstep understands them (persons by external id, keys by
 * 9-digit serial, access profiles, programming jobs, audit events).
 *
 * Authentication: mutual TLS (client certificate + key, CA bundle for CWM's certificate) and/or
 * `Authorization: Bearer`. Certificate files are read on first use, so a missing file surfaces as
 * a `permanent` error on the first call rather than crashing the daemon at start.
 *
 * Error mapping (contract: `{code, message}` bodies):
 *   429                                   → rate_limited (+ retryAfterMs from Retry-After)
 *   5xx (503 maintenance), 408, network,
 *   timeouts                              → retryable (+ retryAfterMs when sent)
 *   401                                   → auth (token rejected/expired, client certificate missing or untrusted)
 *   TLS alerts about our certificate      → auth; server certificate not trusted → permanent
 *   403, 404, 409, 422, other 4xx         → permanent, unless a method below gives the answer a
 *                                           meaning (404 PERSON_NOT_FOUND → null, 409
 *                                           KEY_NOT_DYNAMIC / KEY_BLOCKED → a refusal value)
 *
 * Secrets (token, key passphrase) are never logged nor put into error messages.
 */

import { readFile } from 'node:fs/promises';
import { Agent } from 'undici';
import { exchange, type HttpAnswer } from '../shared/exchange.ts';
import type { Logger } from 'pino';
import { LockSystemError } from '../../../src/ports/lock-system.ts';

// ---- model (= contract v1 resources) -----------------------------------------------------

export type CliqValidity = { mode: 'always' } | { mode: 'never' } | { mode: 'between'; from: string; to: string };

export interface CliqRevalidation {
  enabled: boolean;
  periodHours: number;
}

export type CliqKeyType = 'dynamic' | 'normal' | 'connect';

export interface CliqKey {
  /** 9-digit serial engraved on the key. */
  serial: string;
  type: CliqKeyType;
  holderExternalId: string | null;
  validity: CliqValidity;
  revalidation: CliqRevalidation;
  accessProfileIds: string[];
  blocked: boolean;
  pendingJobs: number;
  lastUpdatedAt: string | null;
}

export interface CliqPerson {
  id: string;
  externalId: string;
  firstName: string;
  lastName: string;
  email: string | null;
  domainId: string;
  active: boolean;
}

export interface CliqPersonInput {
  firstName: string;
  lastName: string;
  email: string | null;
  domainId: string;
}

export interface CliqDomain {
  id: string;
  name: string;
}

export interface CliqAccessProfile {
  id: string;
  name: string;
  domainId: string;
}

export type CliqJobKind = 'access' | 'validity' | 'revalidation' | 'blocklist';
export type CliqJobState = 'pending' | 'done' | 'failed';

export interface CliqJob {
  id: string;
  serial: string;
  kind: CliqJobKind;
  state: CliqJobState;
  createdAt: string;
  doneAt: string | null;
}

export interface CliqEvent {
  id: string;
  at: string;
  serial: string;
  cylinderId: string;
  result: 'granted' | 'denied';
}

export interface CliqPage<T> {
  items: T[];
  next: string | null;
}

export interface CliqErrorBody {
  code: string;
  message: string;
}

/** Error codes of the contract (the simulator answers exactly these). */
export type CliqErrorCode =
  | 'UNAUTHENTICATED'
  | 'INVALID_TOKEN'
  | 'TOKEN_EXPIRED'
  | 'CLIENT_CERTIFICATE_REQUIRED'
  | 'DOMAIN_NOT_ADMINISTERED'
  | 'NOT_FOUND'
  | 'PERSON_NOT_FOUND'
  | 'KEY_NOT_FOUND'
  | 'JOB_NOT_FOUND'
  | 'KEY_NOT_DYNAMIC'
  | 'KEY_BLOCKED'
  | 'UNKNOWN_ACCESS_PROFILE'
  | 'INVALID_BODY'
  | 'INVALID_QUERY'
  | 'RATE_LIMITED'
  | 'MAINTENANCE'
  | 'INTERNAL';

/** Largest `limit` a list endpoint accepts. */
export const CLIQ_MAX_LIMIT = 500;

/** A key write: the key after the change and the job that carries it (null: nothing changed). */
export interface KeyChange {
  key: CliqKey;
  job: CliqJob | null;
}

/** Access-list write on a key that cannot carry one, or is blocked (409). */
export interface AccessRefusal {
  refused: 'not_dynamic' | 'blocked';
  message: string;
}

// ---- client ------------------------------------------------------------------------------

export type CliqLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

export interface CliqClientOptions {
  /** e.g. https://cwm.example.com/cliq-api/v1 */
  baseUrl: string;
  bearerToken?: string | undefined;
  tls?: { certFile: string; keyFile: string; caFile?: string | undefined; passphrase?: string | undefined } | undefined;
  requestTimeoutMs: number;
  connections?: number;
  logger?: CliqLogger | undefined;
}

type Method = 'GET' | 'PUT' | 'POST';
type Query = Record<string, string | number | undefined>;

const enc = encodeURIComponent;
const noop = () => {};
const silent = { debug: noop, info: noop, warn: noop, error: noop } as unknown as CliqLogger;

/** TLS alerts a server sends when it does not accept *our* certificate. */
const CLIENT_CERT_REJECTED = /CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|CERTIFICATE_UNKNOWN|ACCESS_DENIED|UNSUPPORTED_CERTIFICATE/;
/** Our verification of the *server's* certificate failed. */
const SERVER_CERT_UNTRUSTED = /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID|CERT_UNTRUSTED|ERR_TLS_CERT_ALTNAME_INVALID|CERT_SIGNATURE_FAILURE)$/;

/** Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  const t = v.trim();
  if (/^\d+$/.test(t)) return Number(t) * 1000;
  const at = Date.parse(t);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** HTTP answer (not 2xx) → LockSystemError, per the table in the file comment. */
export function cliqError(method: string, path: string, res: HttpAnswer): LockSystemError {
  const { status } = res;
  const body = errorBody(res.text);
  const what = `CLIQ ${method} ${path} answered ${status}${body ? ` ${body.code}: ${body.message}` : ''}`;
  const retryAfterMs = parseRetryAfter(res.headers['retry-after']);
  const ra = retryAfterMs === undefined ? {} : { retryAfterMs };
  if (status === 429) return new LockSystemError('rate_limited', what, { status, ...ra });
  if (status >= 500 || status === 408) return new LockSystemError('retryable', what, { status, ...ra });
  if (status === 401) return new LockSystemError('auth', what, { status });
  return new LockSystemError('permanent', what, { status });
}

function errorBody(text: string): CliqErrorBody | undefined {
  if (!text) return undefined;
  try {
    const b = JSON.parse(text) as Partial<CliqErrorBody>;
    if (typeof b.code === 'string') return { code: b.code, message: String(b.message ?? '').slice(0, 300) };
  } catch {
    // not the contract's error shape
  }
  return undefined;
}

export class CliqClient {
  private readonly opts: CliqClientOptions;
  private readonly base: string;
  private readonly log: CliqLogger;
  private agent: Agent | null = null;
  private agentLoad: Promise<Agent> | null = null;
  private closed = false;

  constructor(opts: CliqClientOptions) {
    this.opts = opts;
    this.base = opts.baseUrl.replace(/\/+$/, '');
    this.log = opts.logger ?? silent;
  }

  // ---- reads -----------------------------------------------------------------------------

  domains(): Promise<CliqDomain[]> {
    return this.all<CliqDomain>('/domains');
  }

  accessProfiles(domainId: string): Promise<CliqAccessProfile[]> {
    return this.all<CliqAccessProfile>('/access-profiles', { domainId });
  }

  async findPerson(externalId: string): Promise<CliqPerson | null> {
    const page = await this.json<CliqPage<CliqPerson>>('GET', '/persons', { query: { externalId } });
    return page.items.find((p) => p.externalId === externalId) ?? null;
  }

  /** The person's keys; null when CWM does not know the person. */
  async keysOf(externalId: string): Promise<CliqKey[] | null> {
    try {
      return await this.all<CliqKey>(`/persons/${enc(externalId)}/keys`, {}, true);
    } catch (err) {
      if (err instanceof NotFound) return null;
      throw err;
    }
  }

  async key(serial: string): Promise<CliqKey | null> {
    try {
      return await this.json<CliqKey>('GET', `/keys/${enc(serial)}`, { notFound: true });
    } catch (err) {
      if (err instanceof NotFound) return null;
      throw err;
    }
  }

  async job(id: string): Promise<CliqJob | null> {
    try {
      return await this.json<CliqJob>('GET', `/jobs/${enc(id)}`, { notFound: true });
    } catch (err) {
      if (err instanceof NotFound) return null;
      throw err;
    }
  }

  /**
   * Pending jobs, at most `maxPages` pages of 500. `complete` is false when there were more:
   * the caller then cannot rule out a pending job it did not see.
   */
  async pendingJobs(maxPages: number): Promise<{ jobs: CliqJob[]; complete: boolean }> {
    const jobs: CliqJob[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < maxPages; i++) {
      const page = await this.json<CliqPage<CliqJob>>('GET', '/jobs', { query: { state: 'pending', limit: CLIQ_MAX_LIMIT, cursor } });
      jobs.push(...page.items);
      if (!page.next) return { jobs, complete: true };
      cursor = page.next;
    }
    return { jobs, complete: false };
  }

  /** One page of audit events after `after` (an event id), oldest first. */
  async events(after: string | undefined, limit: number): Promise<CliqEvent[]> {
    const page = await this.json<CliqPage<CliqEvent>>('GET', '/events', {
      query: { after, limit: Math.max(1, Math.min(CLIQ_MAX_LIMIT, limit)) },
    });
    return page.items;
  }

  // ---- writes ----------------------------------------------------------------------------

  async upsertPerson(externalId: string, input: CliqPersonInput): Promise<{ person: CliqPerson; created: boolean }> {
    const { status, body } = await this.send<CliqPerson>('PUT', `/persons/${enc(externalId)}`, { body: input });
    return { person: body, created: status === 201 };
  }

  /** Idempotent; null when CWM does not know the person. */
  async deactivatePerson(externalId: string): Promise<CliqPerson | null> {
    try {
      return await this.json<CliqPerson>('POST', `/persons/${enc(externalId)}/deactivate`, { notFound: true });
    } catch (err) {
      if (err instanceof NotFound) return null;
      throw err;
    }
  }

  /** Full replace of the key's access profiles; a 409 becomes a refusal value. */
  async setAccessProfiles(serial: string, accessProfileIds: string[]): Promise<KeyChange | AccessRefusal> {
    const path = `/keys/${enc(serial)}/access-profiles`;
    const res = await this.raw('PUT', path, undefined, { accessProfileIds });
    if (res.status === 409) {
      const b = errorBody(res.text);
      if (b?.code === 'KEY_NOT_DYNAMIC') return { refused: 'not_dynamic', message: b.message };
      if (b?.code === 'KEY_BLOCKED') return { refused: 'blocked', message: b.message };
    }
    return this.interpret<KeyChange>('PUT', path, res);
  }

  setValidity(serial: string, validity: CliqValidity): Promise<KeyChange> {
    return this.json<KeyChange>('PUT', `/keys/${enc(serial)}/validity`, { body: validity });
  }

  setRevalidation(serial: string, revalidation: CliqRevalidation): Promise<KeyChange> {
    return this.json<KeyChange>('PUT', `/keys/${enc(serial)}/revalidation`, { body: revalidation });
  }

  reportLost(serial: string, reason: string): Promise<KeyChange> {
    return this.json<KeyChange>('POST', `/keys/${enc(serial)}/report-lost`, { body: { reason } });
  }

  async close(): Promise<void> {
    this.closed = true;
    const agent = this.agent ?? (await this.agentLoad?.catch(() => null)) ?? null;
    this.agent = null;
    await agent?.close();
  }

  // ---- plumbing --------------------------------------------------------------------------

  /** Every page of a list endpoint. */
  private async all<T>(path: string, query: Query = {}, notFound = false): Promise<T[]> {
    const out: T[] = [];
    let cursor: string | undefined;
    for (let guard = 0; guard < 10_000; guard++) {
      const page = await this.json<CliqPage<T>>('GET', path, { query: { ...query, limit: CLIQ_MAX_LIMIT, cursor }, notFound });
      out.push(...page.items);
      if (!page.next) return out;
      cursor = page.next;
    }
    throw new LockSystemError('retryable', `CLIQ GET ${path}: paging did not end after 10,000 pages`);
  }

  private async json<T>(method: Method, path: string, o: { query?: Query; body?: unknown; notFound?: boolean } = {}): Promise<T> {
    return (await this.send<T>(method, path, o)).body;
  }

  private async send<T>(method: Method, path: string, o: { query?: Query; body?: unknown; notFound?: boolean }): Promise<{ status: number; body: T }> {
    const res = await this.raw(method, path, o.query, o.body);
    if (o.notFound && res.status === 404) {
      const b = errorBody(res.text);
      // A 404 for an unknown route is a wrong base URL, not "no such person": keep it permanent.
      if (b && b.code !== 'NOT_FOUND') throw new NotFound(b.code);
    }
    return { status: res.status, body: this.interpret<T>(method, path, res) };
  }

  private interpret<T>(method: Method, path: string, res: HttpAnswer): T {
    if (res.status < 200 || res.status >= 300) throw cliqError(method, path, res);
    if (!res.text) throw new LockSystemError('retryable', `CLIQ ${method} ${path} answered ${res.status} without a body`);
    try {
      return JSON.parse(res.text) as T;
    } catch {
      throw new LockSystemError('retryable', `CLIQ ${method} ${path} answered unparseable JSON`);
    }
  }

  private async raw(method: Method, path: string, query: Query | undefined, body: unknown): Promise<HttpAnswer> {
    const agent = await this.dispatcher();
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.bearerToken) headers.authorization = `Bearer ${this.opts.bearerToken}`;
    let payload: string | undefined;
    if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['content-type'] = 'application/json';
    }
    const timeout = this.opts.requestTimeoutMs;
    try {
      return await exchange(agent, { method, url: this.base + path + queryString(query), headers, body: payload, timeoutMs: timeout });
    } catch (err) {
      throw cliqTransportError(method, path, timeout, err, Boolean(this.opts.tls));
    }
  }

  /** The undici Agent, with the client certificate loaded on first use. */
  private dispatcher(): Promise<Agent> {
    if (this.agent) return Promise.resolve(this.agent);
    if (this.closed) return Promise.reject(new LockSystemError('retryable', 'CLIQ client is closed'));
    if (!this.agentLoad) {
      this.agentLoad = (async () => {
        const tls = this.opts.tls;
        let connect: Record<string, unknown> = {};
        if (tls) {
          const read = async (file: string, what: string) => {
            try {
              return await readFile(file);
            } catch (err) {
              throw new LockSystemError('permanent', `CLIQ mutual TLS: cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
            }
          };
          const [cert, key, ca] = await Promise.all([
            read(tls.certFile, 'tls.certFile'),
            read(tls.keyFile, 'tls.keyFile'),
            tls.caFile ? read(tls.caFile, 'tls.caFile') : Promise.resolve(undefined),
          ]);
          connect = { cert, key, ...(ca ? { ca } : {}), ...(tls.passphrase ? { passphrase: tls.passphrase } : {}) };
        }
        const agent = new Agent({ connections: this.opts.connections ?? 32, pipelining: 1, connect });
        this.agent = agent;
        this.log.debug({ baseUrl: this.base, mtls: Boolean(tls), bearer: Boolean(this.opts.bearerToken) }, 'cliq client ready');
        return agent;
      })().finally(() => {
        this.agentLoad = null;
      });
    }
    return this.agentLoad;
  }
}

/** Internal: a 404 with a resource code, turned into null by the methods that expect it. */
class NotFound extends Error {
  constructor(code: string) {
    super(code);
  }
}

/**
 * A failed exchange (no HTTP answer) → LockSystemError. TLS alerts naming our certificate are
 * `auth`; an untrusted server certificate is `permanent` (configuration); the rest is retryable.
 * Over TLS 1.3 a server that refuses the client certificate during the handshake usually shows
 * only as a closed connection (the alert comes after the client thinks the handshake is done),
 * so with mutual TLS configured that case is retryable with a hint in the message.
 */
export function cliqTransportError(method: string, path: string, timeout: number, err: unknown, mtls = false): LockSystemError {
  if (err instanceof LockSystemError) return err;
  const codes: string[] = [];
  for (let e = err as (Error & { code?: string; cause?: unknown }) | undefined, i = 0; e && i < 4; e = e.cause as typeof e, i++) {
    if (e.code) codes.push(e.code);
    if (e.message) codes.push(e.message.toUpperCase().replace(/[^A-Z_]+/g, '_'));
  }
  const e = err as Error & { code?: string };
  const code = e.code ?? e.name;
  if (e.name === 'TimeoutError' || e.name === 'AbortError')
    return new LockSystemError('retryable', `CLIQ ${method} ${path} timed out after ${timeout} ms`, { cause: err });
  if (codes.some((c) => SERVER_CERT_UNTRUSTED.test(c)))
    return new LockSystemError('permanent', `CLIQ ${method} ${path}: server certificate not trusted (${codes[0]}); check tls.caFile and the base URL host`, { cause: err });
  if (codes.some((c) => CLIENT_CERT_REJECTED.test(c)))
    return new LockSystemError('auth', `CLIQ ${method} ${path}: the server rejected our client certificate (${codes.find((c) => CLIENT_CERT_REJECTED.test(c))})`, { cause: err });
  const closed = codes.includes('UND_ERR_SOCKET') || codes.includes('ECONNRESET');
  const hint = mtls && closed ? ' (if this persists, the server may be refusing our client certificate: check tls.certFile and the CA it trusts)' : '';
  return new LockSystemError('retryable', `CLIQ ${method} ${path} failed: ${code}: ${e.message}${hint}`, { cause: err });
}

function queryString(query: Query | undefined): string {
  if (!query) return '';
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) qs.append(k, String(v));
  const s = qs.toString();
  return s ? `?${s}` : '';
}
