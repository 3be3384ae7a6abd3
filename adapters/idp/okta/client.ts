import { Client, RequestExecutor } from '@okta/okta-sdk-nodejs';
import { IdentitySourceError } from '../../../src/ports/identity-source.ts';
import { rateLimitWaitMs, type HttpPolicy, type ResolvedDeps } from '../shared/http.ts';
import type { OktaSourceConfig } from './config.ts';

/**
 * The Okta API side through @okta/okta-sdk-nodejs, with lockstep's policy in the request executor:
 * - `X-Rate-Limit-Limit/Remaining/Reset` are tracked per endpoint bucket (`/api/v1/users`,
 *   `/api/v1/groups`, `/api/v1/logs`, …). When a bucket is exhausted the next request waits for
 *   its reset — or, if that is longer than `maxWaitMs`, fails at once with `rate_limited` and
 *   `retryAfterMs` instead of spending a request on a certain 429.
 * - a 429 is retried after `X-Rate-Limit-Reset` (relative to the response's `Date`), at most
 *   `maxRetries` times and only when the wait fits `maxWaitMs`; otherwise it surfaces.
 * - the SDK's GET cache is disabled: confirmation must read current state.
 */

interface HeaderBag {
  get(name: string): string | null;
}

interface Bucket {
  limit?: number;
  remaining: number;
  resetAt: number;
}

/** `/api/v1/users/00u1/groups` → `/api/v1/users`: Okta's rate-limit buckets are per endpoint family. */
export function bucketOf(url: string): string {
  const path = new URL(url).pathname.split('/').filter(Boolean);
  return `/${path.slice(0, 3).join('/')}`;
}

export class OktaRateLimitExecutor extends RequestExecutor {
  readonly buckets = new Map<string, Bucket>();
  private readonly policy: HttpPolicy;
  private readonly deps: ResolvedDeps;

  constructor(policy: HttpPolicy, deps: ResolvedDeps) {
    super();
    this.policy = policy;
    this.deps = deps;
  }

  // The SDK types Response as node-fetch's; it is passed through untouched.
  override async fetch(request: Parameters<RequestExecutor['fetch']>[0]): ReturnType<RequestExecutor['fetch']> {
    const url = String((request as { url?: unknown }).url);
    const bucket = bucketOf(url);
    for (let attempt = 0; ; attempt++) {
      const gate = this.buckets.get(bucket);
      const now = this.deps.now();
      if (gate && gate.remaining <= 0 && gate.resetAt > now) {
        const wait = gate.resetAt - now;
        if (wait > this.policy.maxWaitMs)
          throw new IdentitySourceError('rate_limited', `okta: rate limit of ${bucket} exhausted until reset`, { retryAfterMs: wait, status: 429 });
        this.deps.log.warn({ source: this.deps.sourceId, bucket, waitMs: wait }, 'okta: rate limit exhausted, waiting for reset');
        await this.deps.sleep(wait);
        this.buckets.delete(bucket);
      }
      const res = await super.fetch(request);
      this.record(bucket, res.headers as HeaderBag);
      if (res.status !== 429) return res;
      const wait = rateLimitWaitMs(res.headers as unknown as Headers, this.deps.now());
      if (wait !== undefined && attempt < this.policy.maxRetries && wait <= this.policy.maxWaitMs) {
        this.deps.log.warn({ source: this.deps.sourceId, bucket, waitMs: wait }, 'okta: 429, waiting for X-Rate-Limit-Reset');
        this.buckets.delete(bucket);
        await this.deps.sleep(wait);
        continue;
      }
      return res; // the SDK turns it into OktaApiError(429) → mapOktaError
    }
  }

  private record(bucket: string, headers: HeaderBag): void {
    const remaining = headers.get('x-rate-limit-remaining');
    if (remaining === null || !/^\d+$/.test(remaining.trim())) return;
    const wait = rateLimitWaitMs(new Headers(pick(headers, ['x-rate-limit-reset', 'date'])), this.deps.now());
    const limit = headers.get('x-rate-limit-limit');
    this.buckets.set(bucket, {
      remaining: Number(remaining),
      resetAt: this.deps.now() + (wait ?? 60_000),
      ...(limit && /^\d+$/.test(limit) ? { limit: Number(limit) } : {}),
    });
  }
}

function pick(headers: HeaderBag, names: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = headers.get(n);
    if (v !== null) out[n] = v;
  }
  return out;
}

export function createOktaClient(cfg: OktaSourceConfig, deps: ResolvedDeps): { client: Client; executor: OktaRateLimitExecutor } {
  const executor = new OktaRateLimitExecutor(cfg.http, deps);
  const common = {
    orgUrl: cfg.orgUrl.replace(/\/+$/, ''),
    requestExecutor: executor,
    // Confirmation reads must see current state, never a cached GET.
    cacheMiddleware: null,
    userAgent: 'lockstep',
  };
  const client =
    cfg.auth.type === 'ssws'
      ? new Client({ ...common, token: cfg.auth.token })
      : new Client({
          ...common,
          authorizationMode: 'PrivateKey',
          clientId: cfg.auth.clientId,
          // The SDK splits a space-separated string.
          scopes: cfg.auth.scopes.join(' '),
          privateKey: cfg.auth.privateKey,
          ...(cfg.auth.keyId ? { keyId: cfg.auth.keyId } : {}),
        } as unknown as ConstructorParameters<typeof Client>[0]);
  return { client, executor };
}

/** Status of an SDK error (OktaApiError / HttpError), if it is one. */
export function oktaStatus(err: unknown): number | undefined {
  const s = (err as { status?: unknown } | null)?.status;
  return typeof s === 'number' ? s : undefined;
}

/** SDK/transport errors → IdentitySourceError (already-mapped errors pass through). */
export function mapOktaError(err: unknown, what: string, now: number): IdentitySourceError {
  if (err instanceof IdentitySourceError) return err;
  const status = oktaStatus(err);
  const message = `okta: ${what}: ${(err as Error)?.message ?? String(err)}`;
  if (status === undefined) return new IdentitySourceError('retryable', message, { cause: err });
  const headers = (err as { headers?: HeaderBag }).headers;
  const retryAfterMs = headers && typeof headers.get === 'function' ? rateLimitWaitMs(headers as unknown as Headers, now) : undefined;
  const opts = { status, cause: err, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
  if (status === 429) return new IdentitySourceError('rate_limited', message, opts);
  if (status === 401 || status === 403) return new IdentitySourceError('auth', message, opts);
  if (status >= 500) return new IdentitySourceError('retryable', message, opts);
  return new IdentitySourceError('permanent', message, opts);
}
