import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify';
import { type SourceConfig, sourceSchema } from '../../src/config/schema.ts';
import { hashToken, scimRoutes } from '../../src/http/scim/index.ts';
import { IdentityRepo } from '../../src/store/identities.ts';
import { type Backend, freshStore, type TestStore } from '../helpers/stores.ts';

export const TOKEN_A = 'token-for-source-a';
export const TOKEN_B = 'token-for-source-b';
export const TOKEN_C = 'token-for-source-c';
export const PUBLIC_BASE = 'http://127.0.0.1:8080';
export const SCIM_BASE = `${PUBLIC_BASE}/scim/v2`;

export const USER_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:User';
export const GROUP_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:Group';
export const PATCH_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
export const ERROR_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:Error';

export function sources(overrides: { rateLimitPerSecond?: number } = {}): SourceConfig[] {
  const rate = overrides.rateLimitPerSecond ?? 1000;
  // Through the config schema, so the sources carry every default the daemon would give them.
  return [
    { id: 'entra-a', idp: 'entra', scim: { tokenSha256: hashToken(TOKEN_A), rateLimitPerSecond: rate } },
    { id: 'okta-b', idp: 'okta', scim: { tokenSha256: hashToken(TOKEN_B), rateLimitPerSecond: rate } },
    { id: 'sailpoint-c', idp: 'sailpoint', scim: { tokenSha256: hashToken(TOKEN_C), rateLimitPerSecond: rate } },
    { id: 'no-scim', idp: 'generic' },
  ].map((s) => sourceSchema.parse(s));
}

/**
 * The root app built the way src/http/app.ts builds it: same Fastify options, a root error and
 * not-found handler in another format, and a non-SCIM route, so tests can see that the SCIM
 * plugin's parsers and handlers stay inside /scim/v2.
 */
export async function buildScimApp(opts: { identities: IdentityRepo; sources?: SourceConfig[]; bodyLimit?: number; publicBaseUrl?: string }): Promise<FastifyInstance> {
  const app = Fastify({
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    routerOptions: { caseSensitive: false, ignoreTrailingSlash: true },
  });
  app.setErrorHandler((err, _req, reply) => reply.code((err as { statusCode?: number }).statusCode ?? 500).send({ rootError: (err as Error).message }));
  app.setNotFoundHandler((_req, reply) => reply.code(404).send({ rootError: 'not found' }));
  app.post('/echo', async (req) => ({ echoed: req.body }));
  await app.register(scimRoutes, {
    prefix: '/scim/v2',
    identities: opts.identities,
    sources: opts.sources ?? sources(),
    publicBaseUrl: opts.publicBaseUrl ?? PUBLIC_BASE,
  });
  await app.ready();
  return app;
}

export interface Harness {
  app: FastifyInstance;
  repo: IdentityRepo;
  store: TestStore;
  close(): Promise<void>;
}

export async function harness(backend: Backend, opts: { sources?: SourceConfig[]; bodyLimit?: number; scanLimit?: number } = {}): Promise<Harness> {
  const store = await freshStore(backend);
  const repo = new IdentityRepo(store.store, () => {}, opts.scanLimit !== undefined ? { scanLimit: opts.scanLimit } : {});
  const app = await buildScimApp({ identities: repo, ...(opts.sources ? { sources: opts.sources } : {}), ...(opts.bodyLimit ? { bodyLimit: opts.bodyLimit } : {}) });
  return {
    app,
    repo,
    store,
    async close() {
      await app.close();
      await store.cleanup();
    },
  };
}

export type Res = LightMyRequestResponse & { body: string };

/** A SCIM call through inject: JSON body, bearer token (default: source A). */
export async function scim(
  app: FastifyInstance,
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  url: string,
  body?: unknown,
  opts: { token?: string | null; contentType?: string; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<Res> {
  const headers: Record<string, string> = { ...opts.headers };
  const token = opts.token === undefined ? TOKEN_A : opts.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const payload = opts.rawBody ?? (body === undefined ? undefined : JSON.stringify(body));
  if (payload !== undefined) headers['content-type'] = opts.contentType ?? 'application/scim+json';
  return (await app.inject({ method, url: `/scim/v2${url}`, headers, ...(payload !== undefined ? { payload } : {}) })) as Res;
}

export function json<T = Record<string, any>>(res: Res): T {
  return JSON.parse(res.body) as T;
}

export function user(userName: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemas: [USER_SCHEMA],
    userName,
    name: { givenName: 'Given', familyName: 'Family' },
    emails: [{ value: userName.includes('@') ? userName : `${userName}@example.com`, type: 'work', primary: true }],
    active: true,
    ...extra,
  };
}

export function patch(...ops: Array<Record<string, unknown>>): Record<string, unknown> {
  return { schemas: [PATCH_SCHEMA], Operations: ops };
}
