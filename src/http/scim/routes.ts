import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import SCIMMY from 'scimmy';
import type { SourceConfig } from '../../config/schema.ts';
import type { IdentityRepo } from '../../store/identities.ts';
import { type ScimTenant, TokenAuthenticator } from './auth.ts';
import { SCIM_CONTENT_TYPE, ScimHttpError, isVersionConflict, scimError, sendScimError } from './errors.ts';
import { groupFilters, userFilters, wantsAttribute } from './filters.ts';
import { applyMemberDelta, splitMemberOps } from './members.ts';
import { type PatchOperation, normalisePatch, normaliseResource } from './normalise.ts';
import { RateLimiter } from './rate-limit.ts';
import { Groups, type ScimContext, Users, plain, toScimGroup, toScimUser } from './resources.ts';
import { CORE_GROUP, DEFAULT_COUNT, LIST_RESPONSE, MAX_RESULTS } from './schema.ts';

export interface ScimOptions {
  identities: IdentityRepo;
  sources: SourceConfig[];
  /** Absolute URL clients reach lockstep at (e.g. http://127.0.0.1:8080); meta.location and Location are built from it. */
  publicBaseUrl: string;
}

type Obj = Record<string, unknown>;
type Query = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** What scimmy's Resource constructor parsed from the query (its typings do not expose it). */
interface ParsedResource {
  filter?: unknown;
  attributes?: unknown;
}
/** scimmy resource instances as used here; ctx is ours (ScimContext), scimmy passes it through untouched. */
interface ScimmyResourceInstance extends ParsedResource {
  read(ctx?: ScimContext): Promise<unknown>;
  write(body: unknown, ctx?: ScimContext): Promise<unknown>;
  patch(body: unknown, ctx?: ScimContext): Promise<unknown>;
  dispose(ctx?: ScimContext): Promise<void>;
}
type ResourceClass = new (idOrParams?: string | Obj, params?: Obj) => ScimmyResourceInstance;
const UserResource = Users as unknown as ResourceClass;
const GroupResource = Groups as unknown as ResourceClass;

/** A PATCH that lost a race with another write is re-run on the fresh resource this many times. */
const PATCH_ATTEMPTS = 3;

/**
 * SCIM 2.0 service provider (RFC 7643/7644) for Users and Groups, on scimmy driven from
 * Fastify routes. Register with a prefix: `app.register(scimRoutes, { prefix: '/scim/v2', ... })`.
 *
 * Everything here is encapsulated in the plugin: content-type parsers, the SCIM error
 * handler, the 404 handler and the auth/rate-limit hook apply to /scim/v2 only.
 */
export async function scimRoutes(app: FastifyInstance, opts: ScimOptions): Promise<void> {
  // A fixed absolute base: scimmy's basepath() is process-global and would race between requests.
  const base = `${opts.publicBaseUrl.replace(/\/+$/, '')}${app.prefix}`;
  const authenticator = new TokenAuthenticator(opts.sources);
  const limiter = new RateLimiter();
  const tenants = new WeakMap<FastifyRequest, ScimTenant>();
  const repo = opts.identities;

  // Only JSON media types are accepted; Fastify answers others with 415 (mapped to a SCIM error).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(['application/scim+json', 'application/json'], { parseAs: 'string' }, (_req, body, done) => {
    const text = String(body);
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(new ScimHttpError(400, 'invalidSyntax', `Request body is not valid JSON: ${(e as Error).message}`), undefined);
    }
  });

  app.setErrorHandler((err, req, reply) => {
    const { status } = scimError(err);
    if (status >= 500) req.log.error({ err: (err as { cause?: unknown }).cause ?? err }, 'SCIM request failed');
    return sendScimError(reply, err);
  });
  app.setNotFoundHandler((req, reply) =>
    sendScimError(reply, new ScimHttpError(404, undefined, `${req.method} ${req.url.split('?')[0]} is not a SCIM endpoint`)),
  );

  app.addHook('onRequest', async (req, reply) => {
    const tenant = authenticator.authenticate(req.headers.authorization);
    const decision = limiter.take(tenant.sourceId, tenant.rateLimitPerSecond);
    const headers = RateLimiter.headers(decision);
    if (!decision.allowed) throw new ScimHttpError(429, undefined, `Too many requests: at most ${decision.limit} per second for this token`, headers);
    reply.headers(headers);
    tenants.set(req, tenant);
  });

  const ctxOf = (req: FastifyRequest): ScimContext => {
    const tenant = tenants.get(req);
    if (!tenant) throw new ScimHttpError(401, undefined, 'not authenticated');
    return { sourceId: tenant.sourceId, repo, base, write: { actor: `scim:${tenant.sourceId}`, correlationId: String(req.id) } };
  };

  const send = (reply: FastifyReply, status: number, body: unknown) => reply.code(status).type(SCIM_CONTENT_TYPE).send(body);

  // ---------- discovery ----------

  app.get('/ServiceProviderConfig', async (_req, reply) => {
    const spc = plain<Obj>(await new SCIMMY.Resources.ServiceProviderConfig().read());
    return send(reply, 200, { ...spc, meta: { ...(spc.meta as Obj), location: `${base}/ServiceProviderConfig` } });
  });

  app.get('/Schemas', async (_req, reply) => send(reply, 200, discoveryList(plain(await new SCIMMY.Resources.Schema().read()), 'Schemas', 'id')));
  app.get<{ Params: { id: string } }>('/Schemas/:id', async (req, reply) =>
    send(reply, 200, locate(plain(await new SCIMMY.Resources.Schema(req.params.id).read()), 'Schemas', 'id')),
  );
  app.get('/ResourceTypes', async (_req, reply) =>
    send(reply, 200, discoveryList(plain(await new SCIMMY.Resources.ResourceType().read()), 'ResourceTypes', 'name')),
  );
  app.get<{ Params: { id: string } }>('/ResourceTypes/:id', async (req, reply) =>
    send(reply, 200, locate(plain(await new SCIMMY.Resources.ResourceType(req.params.id).read()), 'ResourceTypes', 'name')),
  );

  function locate(item: Obj, endpoint: string, key: string): Obj {
    return { ...item, meta: { ...(item.meta as Obj), location: `${base}/${endpoint}/${String(item[key])}` } };
  }
  function discoveryList(list: Obj, endpoint: string, key: string): Obj {
    const resources = (list.Resources as Obj[]).map((r) => locate(r, endpoint, key));
    return { ...list, Resources: resources, totalResults: resources.length, itemsPerPage: resources.length, startIndex: 1 };
  }

  for (const path of ['/Bulk', '/Me', '/.search']) {
    app.all(path, async () => {
      throw new ScimHttpError(501, undefined, `${path} is not supported by lockstep`);
    });
  }

  // ---------- Users ----------

  app.get<{ Querystring: Query }>('/Users', async (req, reply) => send(reply, 200, await listUsers(ctxOf(req), req.query)));
  app.post('/Users/.search', async (req, reply) => send(reply, 200, await listUsers(ctxOf(req), searchQuery(req.body))));
  app.get<{ Params: { id: string }; Querystring: Query }>('/Users/:id', async (req, reply) =>
    send(reply, 200, plain(await new UserResource(req.params.id, attributeParams(req.query)).read(ctxOf(req)))),
  );
  app.post<{ Querystring: Query }>('/Users', async (req, reply) => {
    const created = plain<Obj>(await new UserResource(attributeParams(req.query)).write(normaliseResource(req.body), ctxOf(req)));
    return send(reply.header('location', (created.meta as Obj).location as string), 201, created);
  });
  app.put<{ Params: { id: string }; Querystring: Query }>('/Users/:id', async (req, reply) =>
    send(reply, 200, plain(await new UserResource(req.params.id, attributeParams(req.query)).write(normaliseResource(req.body), ctxOf(req)))),
  );
  app.patch<{ Params: { id: string }; Querystring: Query }>('/Users/:id', async (req, reply) => {
    const id = req.params.id;
    const message = validPatch(req.body);
    const ops = message.Operations;
    // Entra's validator sends an empty PATCH; RFC 7644 calls it invalid, clients expect a no-op.
    if (ops.length > 0) await patchWithRetry(UserResource, id, message, () => ctxOf(req));
    // PATCH user answers 200 with the resource (read after the write, with the requested attributes).
    return send(reply, 200, plain(await new UserResource(id, attributeParams(req.query)).read(ctxOf(req))));
  });
  app.delete<{ Params: { id: string } }>('/Users/:id', async (req, reply) => {
    await new UserResource(req.params.id).dispose(ctxOf(req));
    return reply.code(204).send();
  });

  // ---------- Groups ----------

  app.get<{ Querystring: Query }>('/Groups', async (req, reply) => send(reply, 200, await listGroups(ctxOf(req), req.query)));
  app.post('/Groups/.search', async (req, reply) => send(reply, 200, await listGroups(ctxOf(req), searchQuery(req.body))));
  app.get<{ Params: { id: string }; Querystring: Query }>('/Groups/:id', async (req, reply) =>
    send(reply, 200, plain(await new GroupResource(req.params.id, attributeParams(req.query)).read(ctxOf(req)))),
  );
  app.post<{ Querystring: Query }>('/Groups', async (req, reply) => {
    const created = plain<Obj>(await new GroupResource(attributeParams(req.query)).write(normaliseResource(req.body), ctxOf(req)));
    return send(reply.header('location', (created.meta as Obj).location as string), 201, created);
  });
  app.put<{ Params: { id: string }; Querystring: Query }>('/Groups/:id', async (req, reply) =>
    send(reply, 200, plain(await new GroupResource(req.params.id, attributeParams(req.query)).write(normaliseResource(req.body), ctxOf(req)))),
  );
  app.patch<{ Params: { id: string }; Querystring: Query }>('/Groups/:id', async (req, reply) => {
    const id = req.params.id;
    const ctx = ctxOf(req);
    const message = validPatch(req.body);
    const { delta, rest } = splitMemberOps(message.Operations);
    // Non-member ops first: scimmy validates them all before writing, so a bad op fails before any membership changes.
    if (rest.length > 0) await patchWithRetry(GroupResource, id, { ...message, Operations: rest }, () => ctxOf(req));
    if (delta) await applyMemberDelta(repo, ctx.sourceId, id, delta, ctx.write);
    if (rest.length === 0 && !delta && !(await repo.getGroup(ctx.sourceId, id, false))) throw new ScimHttpError(404, undefined, `Group ${id} not found`);
    // Entra: PATCH on a group "should yield 204"; a body only when the client asks for attributes.
    const params = attributeParams(req.query);
    if (Object.keys(params).length === 0) return reply.code(204).send();
    return send(reply, 200, plain(await new GroupResource(id, params).read(ctx)));
  });
  app.delete<{ Params: { id: string } }>('/Groups/:id', async (req, reply) => {
    await new GroupResource(req.params.id).dispose(ctxOf(req));
    return reply.code(204).send();
  });

  // ---------- helpers ----------

  /** Lists straight from the store (SQL filter and paging); scimmy parses the query and shapes each resource. */
  async function listUsers(ctx: ScimContext, query: Query) {
    const { params, startIndex, count } = listQuery(query);
    const parsed = new UserResource(params);
    const page = await ctx.repo.listUsers(ctx.sourceId, userFilters(parsed.filter), startIndex, count);
    const resources = page.items.map((u) => plain(new SCIMMY.Schemas.User(toScimUser(u, ctx.base), 'out', undefined, parsed.attributes as never)));
    return listResponse(resources, page.total, startIndex);
  }

  async function listGroups(ctx: ScimContext, query: Query) {
    const { params, startIndex, count } = listQuery(query);
    const parsed = new GroupResource(params);
    const withMembers = wantsAttribute(parsed.attributes, 'members', CORE_GROUP);
    const page = await ctx.repo.listGroups(ctx.sourceId, groupFilters(parsed.filter), startIndex, count, withMembers);
    const resources = page.items.map((g) => plain(new SCIMMY.Schemas.Group(toScimGroup(g, ctx.base), 'out', undefined, parsed.attributes as never)));
    return listResponse(resources, page.total, startIndex);
  }
}

/**
 * Built here rather than with scimmy's ListResponse, which re-slices an already paged result
 * and reports itemsPerPage = requested count (scimmy#101, #102). Okta needs itemsPerPage =
 * number returned, and a startIndex past the end is an empty page.
 */
function listResponse(resources: unknown[], total: number, startIndex: number) {
  return { schemas: [LIST_RESPONSE], totalResults: total, startIndex, itemsPerPage: resources.length, Resources: resources };
}

function one(v: unknown): string | undefined {
  const x = Array.isArray(v) ? v[0] : v;
  return typeof x === 'string' ? x : typeof x === 'number' ? String(x) : undefined;
}

function intParam(v: unknown, name: string): number | undefined {
  const s = one(v);
  if (s === undefined || s.trim() === '') return undefined;
  if (!/^\s*[-+]?\d+\s*$/.test(s)) throw new ScimHttpError(400, 'invalidValue', `${name} must be an integer`);
  return Number.parseInt(s, 10);
}

/** attributes / excludedAttributes only (for single-resource requests). */
function attributeParams(query: unknown): Obj {
  const q = isObj(query) ? query : {};
  const out: Obj = {};
  for (const key of ['attributes', 'excludedAttributes']) {
    const v = one(q[key]);
    if (v !== undefined && v.trim() !== '') out[key] = v;
  }
  return out;
}

/** Query of a list request: integers for paging (RFC 7644 §3.4.2.4: startIndex < 1 means 1, count < 0 means 0). */
function listQuery(query: unknown): { params: Obj; startIndex: number; count: number } {
  const q = isObj(query) ? query : {};
  const params = attributeParams(q);
  const filter = one(q.filter);
  if (filter !== undefined) params.filter = filter;
  const startIndex = Math.max(1, intParam(q.startIndex, 'startIndex') ?? 1);
  const count = Math.min(MAX_RESULTS, Math.max(0, intParam(q.count, 'count') ?? DEFAULT_COUNT));
  return { params, startIndex, count };
}

/** A SearchRequest body (POST /.search) as list query parameters; scimmy validates its shape. */
function searchQuery(body: unknown): Query {
  const sr = new SCIMMY.Messages.SearchRequest(body as never) as unknown as {
    filter?: string;
    attributes?: string[];
    excludedAttributes?: string[];
    startIndex?: number;
    count?: number;
  };
  const q: Query = {};
  if (sr.filter !== undefined) q.filter = sr.filter;
  if (sr.attributes?.length) q.attributes = sr.attributes.join(',');
  if (sr.excludedAttributes?.length) q.excludedAttributes = sr.excludedAttributes.join(',');
  if (sr.startIndex !== undefined) q.startIndex = String(sr.startIndex);
  if (sr.count !== undefined) q.count = String(sr.count);
  return q;
}

/** A normalised PatchOp message, validated by scimmy (empty `Operations` allowed: a no-op). */
function validPatch(body: unknown): { schemas: string[]; Operations: PatchOperation[] } {
  const message = normalisePatch(body);
  if (!isObj(message)) throw new ScimHttpError(400, 'invalidSyntax', 'PATCH body must be a PatchOp message object');
  const ops = message.Operations;
  if (!Array.isArray(ops)) throw new ScimHttpError(400, 'invalidSyntax', 'PatchOp message needs an "Operations" array');
  if (ops.length > 0) new SCIMMY.Messages.PatchOp(message as never);
  else if (!Array.isArray(message.schemas) || !message.schemas.includes('urn:ietf:params:scim:api:messages:2.0:PatchOp'))
    throw new ScimHttpError(400, 'invalidSyntax', 'PatchOp message must declare the PatchOp schema');
  return message as { schemas: string[]; Operations: PatchOperation[] };
}

/**
 * Runs a PATCH through scimmy (read → apply → write). The write carries the version the read
 * saw; if another request wrote in between, the store refuses it and the PATCH is re-applied to
 * the fresh resource rather than overwriting that change.
 */
async function patchWithRetry(R: ResourceClass, id: string, message: Obj, ctxOf: () => ScimContext): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const ctx: ScimContext = { ...ctxOf(), patch: {} };
    try {
      await new R(id).patch(message, ctx);
      return;
    } catch (err) {
      if (attempt < PATCH_ATTEMPTS && isVersionConflict((err as { cause?: unknown }).cause)) continue;
      throw err;
    }
  }
}
