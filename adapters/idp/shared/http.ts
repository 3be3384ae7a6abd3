import { z } from 'zod';
import type { Logger } from '../../../src/log.ts';
import { IdentitySourceError } from '../../../src/ports/identity-source.ts';

/**
 * Outbound HTTP for the IdP adapters: one policy for auth refresh, rate limits and errors.
 *
 * - 401 → the auth provider drops its cached token and the request is sent once more; a second
 *   401 is an `auth` error.
 * - 429 / 503 → wait `Retry-After` (seconds or HTTP date) or `X-Rate-Limit-Reset` (epoch seconds)
 *   when that is within `maxWaitMs` and retries remain; otherwise surface
 *   `rate_limited`/`retryable` with `retryAfterMs` so the queue can wait instead of a worker.
 * - other 5xx and network errors/timeouts → `retryable`; 403 → `auth`; other 4xx → `permanent`
 *   (404 is returned to the caller, which knows whether "absent" is an answer).
 */

export const httpPolicySchema = z
  .object({
    /** Retries on 429/503 within one call (each waits what the server asked). */
    maxRetries: z.number().int().min(0).max(10).default(2),
    /** Longest in-process wait for a rate limit; longer waits surface as `rate_limited` with retryAfterMs. */
    maxWaitMs: z.number().int().min(0).max(600_000).default(30_000),
    /** Timeout of one HTTP request. */
    timeoutMs: z.number().int().min(100).max(300_000).default(30_000),
  })
  .strict();

export type HttpPolicy = z.infer<typeof httpPolicySchema>;
export const DEFAULT_HTTP_POLICY: HttpPolicy = httpPolicySchema.parse({});

/** What every adapter factory receives besides its config. */
export interface SourceDeps {
  /** lockstep's source id (config `sources[].id`). */
  sourceId: string;
  log: Logger;
  /** Outbound fetch (undici's or a test double). Defaults to the global fetch. Okta's SDK uses its own (node-fetch). */
  fetch?: typeof fetch;
  /** Waits (tests pass a recorder). Defaults to setTimeout. */
  sleep?: (ms: number) => Promise<void>;
  /** Clock in ms (tests pass a fixed one). Defaults to Date.now. */
  now?: () => number;
}

export interface ResolvedDeps {
  sourceId: string;
  log: Logger;
  fetch: typeof fetch;
  sleep: (ms: number) => Promise<void>;
  now: () => number;
}

export function resolveDeps(deps: SourceDeps): ResolvedDeps {
  return {
    sourceId: deps.sourceId,
    log: deps.log,
    fetch: deps.fetch ?? ((input, init) => fetch(input, init)),
    sleep: deps.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms))),
    now: deps.now ?? Date.now,
  };
}

/** `Retry-After` in ms: delta-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null | undefined, now: number): number | undefined {
  if (value === null || value === undefined || value.trim() === '') return undefined;
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.ceil(Number(v) * 1000);
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/**
 * How long a rate-limited response asks us to wait: Retry-After first, then Okta/SailPoint style
 * `X-Rate-Limit-Reset` (epoch seconds). The reset is compared with the response's own `Date`
 * when present, so a skewed local clock does not stretch or shrink the wait.
 */
export function rateLimitWaitMs(headers: Headers, now: number): number | undefined {
  const ra = parseRetryAfter(headers.get('retry-after'), now);
  if (ra !== undefined) return ra;
  const retrySeconds = headers.get('x-rate-limit-retry-after-seconds');
  if (retrySeconds && /^\d+$/.test(retrySeconds.trim())) return Number(retrySeconds.trim()) * 1000;
  const reset = headers.get('x-rate-limit-reset');
  if (reset && /^\d+$/.test(reset.trim())) {
    const dateHeader = headers.get('date');
    const base = dateHeader ? Date.parse(dateHeader) : Number.NaN;
    const ref = Number.isNaN(base) ? now : base;
    // +1 s: the reset has second resolution.
    return Math.max(0, Number(reset.trim()) * 1000 - ref) + 1000;
  }
  return undefined;
}

/** Supplies the Authorization header. `refresh` drops cached credentials (called once on 401). */
export interface AuthProvider {
  authorization(): Promise<string>;
  refresh?(): void;
}

export function basicAuth(userName: string, password: string): AuthProvider {
  const value = `Basic ${Buffer.from(`${userName}:${password}`, 'utf8').toString('base64')}`;
  return { authorization: async () => value };
}

export interface ClientCredentialsOptions {
  tokenUrl: string;
  clientId: string;
  clientSecret: string;
  scope?: string;
  /** Send the client credentials as HTTP Basic instead of form fields. */
  basicClientAuth?: boolean;
  deps: ResolvedDeps;
  timeoutMs: number;
}

/**
 * OAuth 2.0 client-credentials grant (SailPoint ISC `POST /oauth/token`, One Identity API Server).
 * The token is cached until shortly before `expires_in`; concurrent callers share one request.
 */
export function oauthClientCredentials(opts: ClientCredentialsOptions): AuthProvider {
  let cached: { token: string; until: number } | undefined;
  let inflight: Promise<string> | undefined;
  const fetchToken = async (): Promise<string> => {
    const form = new URLSearchParams({ grant_type: 'client_credentials' });
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
    if (opts.basicClientAuth) headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(opts.clientId)}:${encodeURIComponent(opts.clientSecret)}`).toString('base64')}`;
    else {
      form.set('client_id', opts.clientId);
      form.set('client_secret', opts.clientSecret);
    }
    if (opts.scope) form.set('scope', opts.scope);
    let res: Response;
    try {
      res = await opts.deps.fetch(opts.tokenUrl, { method: 'POST', headers, body: form.toString(), signal: AbortSignal.timeout(opts.timeoutMs) });
    } catch (err) {
      throw new IdentitySourceError('retryable', `token request to ${opts.tokenUrl} failed: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.text();
    if (!res.ok) {
      const kind = res.status === 429 ? 'rate_limited' : res.status >= 500 ? 'retryable' : 'auth';
      const retryAfterMs = rateLimitWaitMs(res.headers, opts.deps.now());
      throw new IdentitySourceError(kind, `token request rejected (${res.status})`, { status: res.status, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
    }
    let body: { access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new IdentitySourceError('permanent', 'token endpoint answered without JSON');
    }
    if (typeof body.access_token !== 'string' || body.access_token === '') throw new IdentitySourceError('auth', 'token endpoint answered without access_token');
    const ttl = typeof body.expires_in === 'number' ? body.expires_in : Number(body.expires_in ?? 300);
    // Refresh a minute early (or at half-life for short tokens).
    const margin = Math.min(60, Math.max(0, ttl / 2));
    cached = { token: body.access_token, until: opts.deps.now() + (ttl - margin) * 1000 };
    return body.access_token;
  };
  return {
    async authorization() {
      if (cached && cached.until > opts.deps.now()) return `Bearer ${cached.token}`;
      inflight ??= fetchToken().finally(() => {
        inflight = undefined;
      });
      return `Bearer ${await inflight}`;
    },
    refresh() {
      cached = undefined;
    },
  };
}

export interface SendContext {
  name: string;
  policy: HttpPolicy;
  deps: ResolvedDeps;
  auth?: AuthProvider;
}

/**
 * Sends with the policy above and returns the final response: success, 404, or an error status
 * once waiting/refreshing is exhausted (the caller turns that into an error with `errorFor`).
 */
export async function sendWithPolicy(ctx: SendContext, send: (authorization: string | undefined) => Promise<Response>): Promise<Response> {
  let refreshed = false;
  let attempt = 0;
  for (;;) {
    const authorization = ctx.auth ? await ctx.auth.authorization() : undefined;
    let res: Response;
    try {
      res = await send(authorization);
    } catch (err) {
      if (err instanceof IdentitySourceError) throw err;
      throw new IdentitySourceError('retryable', `${ctx.name}: request failed: ${(err as Error).message}${(err as Error).cause ? ` (${String((err as Error).cause)})` : ''}`, { cause: err });
    }
    if (res.status === 401 && ctx.auth?.refresh && !refreshed) {
      refreshed = true;
      await res.body?.cancel().catch(() => {});
      ctx.deps.log.info({ source: ctx.deps.sourceId }, `${ctx.name}: 401, refreshing token once`);
      ctx.auth.refresh();
      continue;
    }
    if (res.status === 429 || res.status === 503) {
      const wait = rateLimitWaitMs(res.headers, ctx.deps.now()) ?? (res.status === 503 ? 1000 * 2 ** attempt : undefined);
      if (wait !== undefined && attempt < ctx.policy.maxRetries && wait <= ctx.policy.maxWaitMs) {
        attempt++;
        await res.body?.cancel().catch(() => {});
        ctx.deps.log.warn({ source: ctx.deps.sourceId, status: res.status, waitMs: wait }, `${ctx.name}: throttled, waiting`);
        await ctx.deps.sleep(wait);
        continue;
      }
    }
    return res;
  }
}

/** The error for a final non-success response (never called for 2xx). */
export function errorFor(name: string, res: { status: number; headers: Headers }, detail: string, now: number): IdentitySourceError {
  const s = res.status;
  const retryAfterMs = rateLimitWaitMs(res.headers, now);
  const extra = { status: s, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
  const msg = `${name}: HTTP ${s}${detail ? `: ${detail.slice(0, 300)}` : ''}`;
  if (s === 429) return new IdentitySourceError('rate_limited', msg, extra);
  if (s === 401 || s === 403) return new IdentitySourceError('auth', msg, extra);
  if (s >= 500 || s === 408) return new IdentitySourceError('retryable', msg, extra);
  return new IdentitySourceError('permanent', msg, extra);
}

export interface JsonResponse {
  status: number;
  headers: Headers;
  body: unknown;
}

/** A small JSON client over `sendWithPolicy` (SailPoint, One Identity). */
export class JsonHttpClient {
  private readonly ctx: SendContext;
  private readonly baseUrl: string;
  private readonly defaultHeaders: Record<string, string>;

  constructor(opts: { name: string; baseUrl: string; policy: HttpPolicy; deps: ResolvedDeps; auth?: AuthProvider; headers?: Record<string, string> }) {
    this.ctx = { name: opts.name, policy: opts.policy, deps: opts.deps, ...(opts.auth ? { auth: opts.auth } : {}) };
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.defaultHeaders = opts.headers ?? {};
  }

  url(path: string, query?: Record<string, string | number | undefined>): string {
    const u = new URL(/^https?:\/\//.test(path) ? path : `${this.baseUrl}${path.startsWith('/') ? '' : '/'}${path}`);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) u.searchParams.set(k, String(v));
    return u.toString();
  }

  /** Returns 2xx and 404 responses; throws `IdentitySourceError` for everything else. */
  async request(method: string, path: string, opts: { query?: Record<string, string | number | undefined>; json?: unknown; headers?: Record<string, string> } = {}): Promise<JsonResponse> {
    const url = this.url(path, opts.query);
    const res = await sendWithPolicy(this.ctx, (authorization) =>
      this.ctx.deps.fetch(url, {
        method,
        headers: {
          accept: 'application/json',
          ...this.defaultHeaders,
          ...(opts.json !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(authorization ? { authorization } : {}),
          ...opts.headers,
        },
        ...(opts.json !== undefined ? { body: JSON.stringify(opts.json) } : {}),
        signal: AbortSignal.timeout(this.ctx.policy.timeoutMs),
      }),
    );
    const text = await res.text().catch(() => '');
    if (!res.ok && res.status !== 404) throw errorFor(this.ctx.name, res, text, this.ctx.deps.now());
    let body: unknown = undefined;
    if (text.length > 0) {
      try {
        body = JSON.parse(text);
      } catch {
        if (res.ok) throw new IdentitySourceError('permanent', `${this.ctx.name}: ${method} ${new URL(url).pathname} answered without JSON`);
      }
    }
    return { status: res.status, headers: res.headers, body };
  }
}
