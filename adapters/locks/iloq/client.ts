/**
 * Typed HTTP client for the iLOQ Public API v2: URL resolution, session handling and the mapping
 * of HTTP answers to `LockSystemError` kinds. It knows nothing of lockstep's operations; the
 * adapter composes calls.
 *
 * Session flow (documented by iLOQ): POST {serverUrl}/api/v2/Url/GetUrl → base URL (empty/null:
 * keep serverUrl) → POST {base}/api/v2/CreateSession → GET LockGroups → POST SetLockgroup. Every
 * later call carries the `SessionId` header (+ `x-api-key` behind the API Gateway).
 *
 * iLOQ does not document how an expired session is answered; we treat 401 and 403 on a call made
 * with a session as "session expired": log in again once (single-flight, shared by all callers
 * that saw the same session fail) and retry the call once. A second 401/403 is an `auth` error.
 *
 * Secrets: the password and session ids are never logged nor put into error messages.
 */

import { Agent } from 'undici';
import { exchange, type HttpAnswer } from '../shared/exchange.ts';
import type { Logger } from 'pino';
import { LockSystemError } from '../../../src/ports/lock-system.ts';
import {
  CreateSessionResultCode,
  createSessionResultText,
  type CreateSessionParam,
  type CreateSessionResult,
  type ErrorBody,
  type LockGroup,
} from './wire.ts';

export type IloqLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

export interface IloqClientOptions {
  /** Service address GetUrl is posted to, e.g. https://s5.iloq.com/iloqws. */
  serverUrl: string;
  customerCode: string;
  userName: string;
  password: string;
  /** x-api-key for the iLOQ API Gateway. */
  apiKey?: string | undefined;
  /** LockGroup_ID to select; when absent the only lock group the user sees is used. */
  lockGroupId?: string | undefined;
  /** Timeout of one HTTP call (connect + headers + body). */
  requestTimeoutMs: number;
  /** Keep-alive connections per origin. */
  connections?: number;
  logger?: IloqLogger | undefined;
}

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';
export type Query = Record<string, string | number | boolean | Array<string | number> | undefined>;

export interface IloqSession {
  /** Resolved base URL without trailing slash; API paths are appended to it. */
  readonly baseUrl: string;
  readonly lockGroup: LockGroup;
  readonly rightsMask: number;
}

interface ActiveSession extends IloqSession {
  readonly id: string;
}

/** Internal signal: the server rejected our session (401/403). Never escapes the client. */
class SessionRejected extends Error {
  readonly status: number;
  constructor(status: number) {
    super(`session rejected (${status})`);
    this.status = status;
  }
}

const noop = () => {};
const silentLogger: IloqLogger = { debug: noop, info: noop, warn: noop, error: noop } as unknown as IloqLogger;

export function trimBase(url: string): string {
  return url.replace(/\/+$/, '');
}

/** Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  const t = v.trim();
  if (/^\d+$/.test(t)) return Number(t) * 1000;
  const at = Date.parse(t);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export class IloqClient {
  private readonly opts: IloqClientOptions;
  private readonly log: IloqLogger;
  private readonly agent: Agent;
  private session: ActiveSession | null = null;
  private loginInFlight: Promise<ActiveSession> | null = null;
  private closed = false;

  constructor(opts: IloqClientOptions) {
    this.opts = opts;
    this.log = opts.logger ?? silentLogger;
    this.agent = new Agent({ connections: opts.connections ?? 64, pipelining: 1 });
  }

  /** The current session's base URL and lock group, once logged in. */
  get current(): IloqSession | null {
    return this.session;
  }

  /** Log in unless a session is open. Concurrent callers share one login. */
  async login(): Promise<IloqSession> {
    return this.ensureSession();
  }

  async get<T>(path: string, query?: Query): Promise<T> {
    return this.call<T>('GET', path, { query });
  }
  async post<T>(path: string, body?: unknown): Promise<T> {
    return this.call<T>('POST', path, { body });
  }
  async put<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>('PUT', path, { body });
  }
  async delete<T>(path: string): Promise<T> {
    return this.call<T>('DELETE', path, {});
  }

  /** One API call with the session header; re-logs in once when the session was rejected. */
  async call<T>(method: HttpMethod, path: string, opts: { query?: Query | undefined; body?: unknown }): Promise<T> {
    const first = this.session ?? (await this.ensureSession());
    try {
      return (await this.send(method, first, path, opts)) as T;
    } catch (err) {
      if (!(err instanceof SessionRejected)) throw err;
      this.log.info({ path }, 'iloq session rejected; logging in again');
      if (this.session === first) this.session = null;
      const second = await this.ensureSession();
      try {
        return (await this.send(method, second, path, opts)) as T;
      } catch (err2) {
        if (err2 instanceof SessionRejected)
          throw new LockSystemError('auth', `iLOQ ${method} ${path} answered ${err2.status} right after a fresh login`, {
            status: err2.status,
          });
        throw err2;
      }
    }
  }

  /** KillSession (best effort) and release connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.loginInFlight) await this.loginInFlight.catch(() => undefined);
    const s = this.session;
    this.session = null;
    if (s) {
      try {
        const res = await this.raw('GET', `${s.baseUrl}/api/v2/KillSession`, { sessionId: s.id });
        if (res.status >= 400) this.log.warn({ status: res.status }, 'iloq KillSession failed');
        else this.log.info('iloq session closed');
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'iloq KillSession failed');
      }
    }
    await this.agent.close();
  }

  private ensureSession(): Promise<ActiveSession> {
    if (this.session) return Promise.resolve(this.session);
    if (this.closed) return Promise.reject(new LockSystemError('retryable', 'iLOQ client is closed'));
    if (!this.loginInFlight) {
      this.loginInFlight = this.doLogin().finally(() => {
        this.loginInFlight = null;
      });
    }
    return this.loginInFlight;
  }

  private async doLogin(): Promise<ActiveSession> {
    const o = this.opts;
    const serverUrl = trimBase(o.serverUrl);
    const baseUrl = await this.resolveBaseUrl(serverUrl);

    const param: CreateSessionParam = {
      CustomerCode: o.customerCode,
      UserName: o.userName,
      Password: o.password,
      ApiKey: '',
      ApiSecret: '',
    };
    const created = (await this.unauthenticated('POST', baseUrl, '/api/v2/CreateSession', param)) as CreateSessionResult | undefined;
    const result = Number(created?.Result);
    if (result !== CreateSessionResultCode.success || !created?.SessionID) {
      const text = `${createSessionResultText[result] ?? 'unknown result'} (CreateSession Result ${String(created?.Result)})`;
      if (result === CreateSessionResultCode.databaseUpdateInProgress)
        throw new LockSystemError('retryable', `iLOQ login: ${text}`);
      if (([5, 7, 8, 9] as number[]).includes(result)) throw new LockSystemError('auth', `iLOQ login: ${text}`);
      throw new LockSystemError('permanent', `iLOQ login: ${text}`);
    }
    const id = created.SessionID;

    const groups = await this.withSession<LockGroup[]>('GET', baseUrl, id, '/api/v2/LockGroups');
    const lockGroup = this.pickLockGroup(Array.isArray(groups) ? groups : []);
    const set = await this.withSession<{ RightsMask?: number }>('POST', baseUrl, id, '/api/v2/SetLockgroup', {
      LockGroup_ID: lockGroup.LockGroup_ID,
    });
    const session: ActiveSession = { id, baseUrl, lockGroup, rightsMask: Number(set?.RightsMask ?? 0) };
    if (this.closed) {
      // close() ran while we were logging in: do not leave the session open on the server.
      await this.raw('GET', `${baseUrl}/api/v2/KillSession`, { sessionId: id }).catch(() => undefined);
      throw new LockSystemError('retryable', 'iLOQ client is closed');
    }
    this.session = session;
    this.log.info({ baseUrl, lockGroup: lockGroup.Name, lockGroupId: lockGroup.LockGroup_ID }, 'iloq session established');
    return session;
  }

  private async resolveBaseUrl(serverUrl: string): Promise<string> {
    const answer = await this.unauthenticated('POST', serverUrl, '/api/v2/Url/GetUrl', { CustomerCode: this.opts.customerCode });
    if (answer === undefined || answer === null || answer === '') return serverUrl;
    if (typeof answer !== 'string') throw new LockSystemError('permanent', 'iLOQ GetUrl answered something other than a URL string');
    let url: URL;
    try {
      url = new URL(answer);
    } catch {
      throw new LockSystemError('permanent', `iLOQ GetUrl answered an invalid URL: ${JSON.stringify(answer.slice(0, 200))}`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:')
      throw new LockSystemError('permanent', `iLOQ GetUrl answered a non-HTTP URL (${url.protocol})`);
    return trimBase(url.toString());
  }

  private pickLockGroup(groups: LockGroup[]): LockGroup {
    const wanted = this.opts.lockGroupId;
    if (wanted) {
      const g = groups.find((x) => x.LockGroup_ID.toLowerCase() === wanted.toLowerCase());
      if (!g)
        throw new LockSystemError(
          'permanent',
          `iLOQ lock group ${wanted} is not visible to user ${this.opts.userName} (visible: ${groups.map((x) => `${x.LockGroup_ID} "${x.Name}"`).join(', ') || 'none'})`,
        );
      return g;
    }
    if (groups.length === 1) return groups[0]!;
    if (groups.length === 0) throw new LockSystemError('permanent', `iLOQ user ${this.opts.userName} sees no lock group`);
    throw new LockSystemError(
      'permanent',
      `iLOQ user ${this.opts.userName} sees ${groups.length} lock groups; set iloq.lockGroupId to one of: ${groups
        .map((x) => `${x.LockGroup_ID} "${x.Name}"`)
        .join(', ')}`,
    );
  }

  /** Calls during login: no session yet, so 401/403 is simply an auth failure. */
  private async unauthenticated(method: HttpMethod, baseUrl: string, path: string, body: unknown): Promise<unknown> {
    const res = await this.raw(method, baseUrl + path, { body });
    if (res.status === 401 || res.status === 403)
      throw new LockSystemError('auth', `iLOQ ${method} ${path} answered ${res.status}${messageOf(res)}`, { status: res.status });
    return this.interpret(method, path, res);
  }

  /** Calls during login that already carry the new session: a rejection is an auth failure. */
  private async withSession<T>(method: HttpMethod, baseUrl: string, id: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, baseUrl + path, { body, sessionId: id });
    if (res.status === 401 || res.status === 403)
      throw new LockSystemError('auth', `iLOQ ${method} ${path} answered ${res.status} for a new session${messageOf(res)}`, {
        status: res.status,
      });
    return this.interpret(method, path, res) as T;
  }

  private async send(method: HttpMethod, s: ActiveSession, path: string, opts: { query?: Query | undefined; body?: unknown }): Promise<unknown> {
    const url = s.baseUrl + path + queryString(opts.query);
    const res = await this.raw(method, url, { body: opts.body, sessionId: s.id });
    if (res.status === 401 || res.status === 403) throw new SessionRejected(res.status);
    return this.interpret(method, path, res);
  }

  /** Maps a complete HTTP answer to its JSON value or to a LockSystemError. */
  private interpret(method: HttpMethod, path: string, res: HttpAnswer): unknown {
    const { status } = res;
    if (status >= 200 && status < 300) return parseBody(res, method, path);
    const what = `iLOQ ${method} ${path} answered ${status}${messageOf(res)}`;
    const retryAfterMs = parseRetryAfter(res.headers['retry-after']);
    if (status === 429) return fail(new LockSystemError('rate_limited', what, { status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) }));
    if (status >= 500 || status === 408)
      return fail(new LockSystemError('retryable', what, { status, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) }));
    if (status === 401 || status === 403) return fail(new LockSystemError('auth', what, { status }));
    return fail(new LockSystemError('permanent', what, { status }));
  }

  private async raw(method: HttpMethod, url: string, opts: { body?: unknown; sessionId?: string }): Promise<HttpAnswer> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (opts.sessionId) headers.SessionId = opts.sessionId;
    if (this.opts.apiKey) headers['x-api-key'] = this.opts.apiKey;
    let payload: string | undefined;
    if (opts.body !== undefined) {
      payload = JSON.stringify(opts.body);
      headers['content-type'] = 'application/json; charset=utf-8';
    }
    const timeout = this.opts.requestTimeoutMs;
    try {
      return await exchange(this.agent, { method, url, headers, body: payload, timeoutMs: timeout });
    } catch (err) {
      const e = err as Error & { code?: string };
      const reason = e.name === 'TimeoutError' || e.name === 'AbortError' ? `timed out after ${timeout} ms` : `${e.code ?? e.name}: ${e.message}`;
      throw new LockSystemError('retryable', `iLOQ ${method} ${new URL(url).pathname} failed: ${reason}`, { cause: err });
    }
  }
}

function fail(err: LockSystemError): never {
  throw err;
}

function queryString(query: Query | undefined): string {
  if (!query) return '';
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const item of v) qs.append(k, String(item));
    else qs.append(k, String(v));
  }
  const s = qs.toString();
  return s ? `?${s}` : '';
}

function parseBody(res: HttpAnswer, method: HttpMethod, path: string): unknown {
  if (res.text === '') return undefined;
  try {
    return JSON.parse(res.text);
  } catch {
    const type = String(res.headers['content-type'] ?? '');
    if (type.includes('json')) throw new LockSystemError('retryable', `iLOQ ${method} ${path} answered unparseable JSON`);
    return res.text;
  }
}

function messageOf(res: HttpAnswer): string {
  if (!res.text) return '';
  try {
    const body = JSON.parse(res.text) as ErrorBody | string;
    const msg = typeof body === 'string' ? body : (body?.Message ?? (body as { message?: string })?.message);
    return msg ? `: ${String(msg).slice(0, 300)}` : '';
  } catch {
    return `: ${res.text.slice(0, 200)}`;
  }
}
