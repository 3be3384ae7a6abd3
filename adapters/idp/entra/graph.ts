import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ClientCertificateCredential, ClientSecretCredential, type TokenCredential } from '@azure/identity';
import { Client, GraphError, type Context, type Middleware } from '@microsoft/microsoft-graph-client';
import { IdentitySourceError } from '../../../src/ports/identity-source.ts';
import { errorFor, rateLimitWaitMs, sendWithPolicy, type AuthProvider, type ResolvedDeps, type SendContext } from '../shared/http.ts';
import type { EntraSourceConfig } from './config.ts';

/**
 * Microsoft Graph access: @azure/identity credentials (client secret or certificate) and the
 * @microsoft/microsoft-graph-client request builder, with lockstep's transport at the end of
 * its middleware chain:
 * - the token comes from the credential; on a 401 the credential is rebuilt (dropping MSAL's
 *   token cache) and the request is sent once more — a token revoked or expired early is
 *   refreshed once, a second 401 surfaces as `auth`;
 * - 429/503 with `Retry-After` are waited out and retried while the wait fits `maxWaitMs`
 *   (Graph: "keep honouring Retry-After while still throttled"); otherwise the error surfaces as
 *   `rate_limited` with `retryAfterMs`.
 */

const GRAPH_SCOPE_SUFFIX = '/.default';

export function makeCredential(cfg: EntraSourceConfig): TokenCredential {
  const options = { authorityHost: cfg.authorityHost };
  const c = cfg.credential;
  if (c.type === 'secret') return new ClientSecretCredential(cfg.tenantId, cfg.clientId, c.clientSecret, options);
  const pem = c.certificate ?? readFileSync(c.certificatePath!, 'utf8');
  return new ClientCertificateCredential(
    cfg.tenantId,
    cfg.clientId,
    { certificate: pem, ...(c.password ? { certificatePassword: c.password } : {}) },
    { ...options, sendCertificateChain: c.sendCertificateChain },
  );
}

/** Bearer tokens for Graph; `refresh()` drops the cached token by building a new credential. */
export class GraphTokenProvider implements AuthProvider {
  private credential: TokenCredential;
  private readonly make: () => TokenCredential;
  private readonly scope: string;

  constructor(make: () => TokenCredential, graphBaseUrl: string) {
    this.make = make;
    this.credential = make();
    this.scope = `${new URL(graphBaseUrl).origin}${GRAPH_SCOPE_SUFFIX}`;
  }

  async authorization(): Promise<string> {
    try {
      const t = await this.credential.getToken(this.scope);
      if (!t?.token) throw new Error('no token');
      return `Bearer ${t.token}`;
    } catch (err) {
      if (err instanceof IdentitySourceError) throw err;
      throw new IdentitySourceError('auth', `entra: token request failed: ${(err as Error).message.split('\n')[0]}`, { cause: err });
    }
  }

  refresh(): void {
    this.credential = this.make();
  }
}

/**
 * The Graph client wraps whatever a middleware throws into a GraphError (statusCode -1), losing
 * our error. The transport parks its IdentitySourceError here under a unique marker that
 * survives in the GraphError's body, and `mapGraphError` takes it back out.
 */
const parked = new Map<string, IdentitySourceError>();
const MARKER = 'lockstep-transport-error:';

/** The terminal middleware: auth + throttling policy + fetch. */
class PolicyTransport implements Middleware {
  private readonly ctx: SendContext;
  constructor(ctx: SendContext) {
    this.ctx = ctx;
  }

  async execute(context: Context): Promise<void> {
    const url = typeof context.request === 'string' ? context.request : context.request.url;
    const opts = (context.options ?? {}) as RequestInit;
    const base = new Headers(opts.headers as ConstructorParameters<typeof Headers>[0]);
    if (typeof context.request !== 'string') (context.request as Request).headers.forEach((v: string, k: string) => base.set(k, v));
    try {
      context.response = await sendWithPolicy(this.ctx, (authorization) => {
        const headers = new Headers(base);
        if (authorization) headers.set('authorization', authorization);
        return this.ctx.deps.fetch(url, {
          ...opts,
          method: opts.method ?? (typeof context.request === 'string' ? 'GET' : context.request.method),
          headers,
          signal: AbortSignal.timeout(this.ctx.policy.timeoutMs),
        });
      });
    } catch (err) {
      if (!(err instanceof IdentitySourceError)) throw err;
      const key = `${MARKER}${randomUUID()}`;
      parked.set(key, err);
      setTimeout(() => parked.delete(key), 60_000).unref();
      throw new Error(key);
    }
  }
}

export function createGraphClient(cfg: EntraSourceConfig, deps: ResolvedDeps, auth: AuthProvider): Client {
  const host = new URL(cfg.graphBaseUrl).host;
  return Client.initWithMiddleware({
    middleware: new PolicyTransport({ name: 'entra', policy: cfg.http, deps, auth }),
    baseUrl: new URL(cfg.graphBaseUrl).origin,
    defaultVersion: 'v1.0',
    customHosts: new Set([host]),
  });
}

/** Graph/transport errors → IdentitySourceError; `null` for the statuses the caller handles. */
export function mapGraphError(err: unknown, what: string, now: number): IdentitySourceError {
  if (err instanceof IdentitySourceError) return err;
  const body = (err as { body?: unknown; message?: unknown } | null)?.body;
  const m = typeof body === 'string' ? new RegExp(`${MARKER}[0-9a-f-]{36}`).exec(body) : null;
  if (m) {
    const original = parked.get(m[0]);
    parked.delete(m[0]);
    if (original) return original;
  }
  if (err instanceof GraphError || (typeof (err as GraphError)?.statusCode === 'number' && (err as GraphError).statusCode > 0)) {
    const g = err as GraphError;
    const headers = g.headers ?? new Headers();
    const mapped = errorFor(`entra: ${what}`, { status: g.statusCode, headers }, `${g.code ?? ''} ${g.message ?? ''}`.trim(), now);
    if (mapped.retryAfterMs === undefined && g.statusCode === 429) {
      const wait = rateLimitWaitMs(headers, now);
      if (wait !== undefined) return new IdentitySourceError('rate_limited', mapped.message, { status: 429, retryAfterMs: wait, cause: err });
    }
    return mapped;
  }
  return new IdentitySourceError('retryable', `entra: ${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

export function graphStatus(err: unknown): number | undefined {
  const s = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof s === 'number' && s > 0 ? s : undefined;
}

export function graphCode(err: unknown): string {
  const g = err as { code?: unknown; body?: unknown } | null;
  if (typeof g?.code === 'string') return g.code;
  return '';
}

/** A Graph collection page. */
export interface GraphPage<T> {
  value?: T[];
  '@odata.nextLink'?: string;
  '@odata.deltaLink'?: string;
}
