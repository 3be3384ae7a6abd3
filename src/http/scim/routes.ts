import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import SCIMMY from 'scimmy';
import type { SourceConfig } from '../../config/schema.ts';
import { ConflictError, type GroupChange, type IdentityRepo, type WriteContext } from '../../store/identities.ts';
import { type ScimTenant, TokenAuthenticator } from './auth.ts';
import { groupCoercer, userCoercer } from './coerce.ts';
import { SCIM_CONTENT_TYPE, ScimHttpError, scimError, sendScimError } from './errors.ts';
import { memberChange, splitMemberOps } from './members.ts';
import { type PatchOperation, normalisePatch, normaliseResource } from './normalise.ts';
import { activeOnly, applyPatch } from './patch.ts';
import { type Projection, project, projectionOf, wants } from './projection.ts';
import { groupFilter, userFilter } from './query.ts';
import { RateLimiter } from './rate-limit.ts';
import { sameGroup, sameUser, toGroupInput, toScimGroup, toScimUser, toUserInput, weakVersion } from './resources.ts';
import { CORE_GROUP, CORE_USER, DEFAULT_COUNT, ENTERPRISE_USER, LIST_RESPONSE, LOCKSTEP_USER, MAX_RESULTS, PATCH_OP, declareScimmy, withCanonicalValues } from './schema.ts';

export interface ScimOptions {
  identities: IdentityRepo;
  sources: SourceConfig[];
  /** Absolute URL clients reach lockstep at (e.g. http://127.0.0.1:8080); meta.location and Location are built from it. */
  publicBaseUrl: string;
}

type Obj = Record<string, unknown>;
type Query = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A write that lost a race with another write (version changed between read and write) is re-run this many times. */
const ATTEMPTS = 3;
const USER_EXTENSIONS = [ENTERPRISE_USER, LOCKSTEP_USER];

declare module 'fastify' {
  interface FastifyRequest {
    scimTenant: ScimTenant | null;
  }
}

/**
 * SCIM 2.0 service provider (RFC 7643/7644) for Users and Groups. Register with a prefix:
 * `app.register(scimRoutes, { prefix: '/scim/v2', ... })`. See README.md in this folder for
 * the endpoints, filters, extension and the leniencies real IdP clients need.
 *
 * Everything here is encapsulated in the plugin: content-type parsers, the SCIM error
 * handler, the 404 handler and the auth/rate-limit hook apply to /scim/v2 only.
 */
export async function scimRoutes(app: FastifyInstance, opts: ScimOptions): Promise<void> {
  declareScimmy();
  // A fixed absolute base: meta.location must not depend on request headers.
  const base = `${opts.publicBaseUrl.replace(/\/+$/, '')}${app.prefix}`;
  const authenticator = new TokenAuthenticator(opts.sources);
  const limiter = new RateLimiter();
  const repo = opts.identities;
  const users = userCoercer();
  const groups = groupCoercer();

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
    if (status >= 500) req.log.error({ err }, 'SCIM request failed');
    return sendScimError(reply, err);
  });
  app.setNotFoundHandler((req, reply) =>
    sendScimError(reply, new ScimHttpError(404, undefined, `${req.method} ${req.url.split('?')[0]} is not a SCIM endpoint`)),
  );

  app.decorateRequest('scimTenant', null);
  app.addHook('onRequest', async (req, reply) => {
    const tenant = authenticator.authenticate(req.headers.authorization);
    const decision = limiter.take(tenant.sourceId, tenant.rateLimitPerSecond);
    const headers = RateLimiter.headers(decision);
    if (!decision.allowed) throw new ScimHttpError(429, undefined, `Too many requests: at most ${decision.limit} per second for this token`, headers);
    reply.headers(headers);
    req.scimTenant = tenant;
  });

  const tenantOf = (req: FastifyRequest): ScimTenant => {
    if (!req.scimTenant) throw new ScimHttpError(401, undefined, 'not authenticated');
    return req.scimTenant;
  };
  const writeCtx = (req: FastifyRequest): WriteContext => ({ actor: `scim:${tenantOf(req).sourceId}`, correlationId: String(req.id) });
  const send = (reply: FastifyReply, status: number, body: unknown) => reply.code(status).type(SCIM_CONTENT_TYPE).send(body);
  const sendResource = (reply: FastifyReply, status: number, resource: Obj, proj: Projection | undefined) => {
    const meta = resource.meta as Obj;
    reply.header('etag', meta.version as string);
    if (status === 201) reply.header('location', meta.location as string);
    return send(reply, status, project(resource, proj));
  };
  const userProjection = (q: unknown) => projectionOf(isObj(q) ? q : {}, CORE_USER, USER_EXTENSIONS);
  const groupProjection = (q: unknown) => projectionOf(isObj(q) ? q : {}, CORE_GROUP, []);

  // ---------- discovery ----------

  app.get('/ServiceProviderConfig', async (_req, reply) => {
    const spc = plain<Obj>(await new SCIMMY.Resources.ServiceProviderConfig().read());
    return send(reply, 200, { ...spc, meta: { ...(spc.meta as Obj), location: `${base}/ServiceProviderConfig` } });
  });

  app.get('/Schemas', async (_req, reply) => send(reply, 200, discoveryList(plain(await new SCIMMY.Resources.Schema().read()), 'Schemas', 'id')));
  app.get<{ Params: { id: string } }>('/Schemas/:id', async (req, reply) =>
    send(reply, 200, locate(withCanonicalValues(plain(await new SCIMMY.Resources.Schema(req.params.id).read())), 'Schemas', 'id')),
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
    const resources = (list.Resources as Obj[]).map((r) => locate(endpoint === 'Schemas' ? withCanonicalValues(r) : r, endpoint, key));
    return { schemas: [LIST_RESPONSE], totalResults: resources.length, startIndex: 1, itemsPerPage: resources.length, Resources: resources };
  }

  for (const path of ['/Bulk', '/Me', '/.search']) {
    app.all(path, async () => {
      throw new ScimHttpError(501, undefined, `${path} is not supported by lockstep`);
    });
  }

  // ---------- Users ----------

  const listUsers = async (req: FastifyRequest, query: Query) => {
    const t = tenantOf(req);
    const q = listQuery(query);
    const proj = userProjection(query);
    const page = await repo.listUsers(t.sourceId, q.filter !== undefined ? userFilter(q.filter) : undefined, q.startIndex, q.count, { groups: wants(proj, 'groups') });
    return listResponse(
      page.items.map((u) => project(toScimUser(u, base), proj)),
      page.total,
      q.startIndex,
    );
  };

  app.get<{ Querystring: Query }>('/Users', async (req, reply) => send(reply, 200, await listUsers(req, req.query)));
  app.post('/Users/.search', async (req, reply) => send(reply, 200, await listUsers(req, searchQuery(req.body))));

  app.get<{ Params: { id: string }; Querystring: Query }>('/Users/:id', async (req, reply) => {
    const proj = userProjection(req.query);
    const u = await repo.getUser(tenantOf(req).sourceId, req.params.id, { groups: wants(proj, 'groups') });
    if (!u) throw notFound('User', req.params.id);
    return sendResource(reply, 200, toScimUser(u, base), proj);
  });

  app.post<{ Querystring: Query }>('/Users', async (req, reply) => {
    const proj = userProjection(req.query);
    const input = toUserInput(users.coerce(normaliseResource(req.body)));
    const created = await repo.createUser(tenantOf(req).sourceId, input, writeCtx(req));
    return sendResource(reply, 201, toScimUser(created, base), proj);
  });

  app.put<{ Params: { id: string }; Querystring: Query }>('/Users/:id', async (req, reply) => {
    const t = tenantOf(req);
    const id = req.params.id;
    const proj = userProjection(req.query);
    const cond = ifMatch(req);
    const input = toUserInput(users.coerce(normaliseResource(req.body)));
    for (let attempt = 1; ; attempt++) {
      const cur = await repo.getUser(t.sourceId, id);
      if (!cur) throw notFound('User', id);
      checkVersion(cond, cur.version);
      // Okta PUTs the whole user on every profile push; an unchanged user is not a change.
      if (sameUser(cur, input)) return sendResource(reply, 200, toScimUser(cur, base), proj);
      try {
        const rec = await repo.replaceUser(t.sourceId, id, input, writeCtx(req), cur.version);
        return sendResource(reply, 200, toScimUser(rec, base), proj);
      } catch (err) {
        if (!retryable(err, cond, attempt)) throw err;
      }
    }
  });

  app.patch<{ Params: { id: string }; Querystring: Query }>('/Users/:id', async (req, reply) => {
    const t = tenantOf(req);
    const id = req.params.id;
    const proj = userProjection(req.query);
    const cond = ifMatch(req);
    const ops = validPatch(req.body).Operations;
    const fast = ops.length === 0 ? { active: undefined } : activeOnly(ops);
    let version: number;
    if (fast && fast.active === undefined) {
      // Nothing lockstep stores changes (empty Operations; Okta's password sync).
      const cur = await repo.getUser(t.sourceId, id, { groups: false });
      if (!cur) throw notFound('User', id);
      checkVersion(cond, cur.version);
      version = cur.version;
    } else if (fast && (!cond || cond.any || cond.versions.size === 1)) {
      // Deactivation / re-activation: one column, no read of the resource.
      const expected = cond && !cond.any ? [...cond.versions][0] : undefined;
      try {
        version = (await repo.setActive(t.sourceId, id, fast.active!, writeCtx(req), expected)).version;
      } catch (err) {
        if (err instanceof ConflictError && err.kind === 'version') throw preconditionFailed();
        throw err;
      }
    } else {
      version = await patchUser(req, t, id, ops, cond);
    }
    return patchResponse(reply, t, proj, version, async () => {
      const u = await repo.getUser(t.sourceId, id, { groups: wants(proj, 'groups') });
      if (!u) throw notFound('User', id);
      return toScimUser(u, base);
    });
  });

  /** A general user PATCH: read, apply (scimmy), validate, write with the version read. Returns the version after. */
  async function patchUser(req: FastifyRequest, t: ScimTenant, id: string, ops: PatchOperation[], cond: IfMatch | undefined): Promise<number> {
    for (let attempt = 1; ; attempt++) {
      const cur = await repo.getUser(t.sourceId, id, { groups: false });
      if (!cur) throw notFound('User', id);
      checkVersion(cond, cur.version);
      if (ops.length === 0) return cur.version;
      const patched = await applyPatch('User', toScimUser(cur, base), ops);
      if (!patched) return cur.version;
      const input = toUserInput(users.coerce(patched));
      if (sameUser(cur, input)) return cur.version;
      try {
        return (await repo.replaceUser(t.sourceId, id, input, writeCtx(req), cur.version)).version;
      } catch (err) {
        if (!retryable(err, cond, attempt)) throw err;
      }
    }
  }

  app.delete<{ Params: { id: string } }>('/Users/:id', async (req, reply) => {
    const t = tenantOf(req);
    const expected = await expectedVersion(ifMatch(req), async () => (await repo.getUser(t.sourceId, req.params.id, { groups: false }))?.version);
    try {
      await repo.deleteUser(t.sourceId, req.params.id, writeCtx(req), expected);
    } catch (err) {
      if (err instanceof ConflictError && err.kind === 'version') throw preconditionFailed();
      throw err;
    }
    return reply.code(204).send();
  });

  // ---------- Groups ----------

  const listGroups = async (req: FastifyRequest, query: Query) => {
    const t = tenantOf(req);
    const q = listQuery(query);
    const proj = groupProjection(query);
    const page = await repo.listGroups(t.sourceId, q.filter !== undefined ? groupFilter(q.filter) : undefined, q.startIndex, q.count, wants(proj, 'members'));
    return listResponse(
      page.items.map((g) => project(toScimGroup(g, base), proj)),
      page.total,
      q.startIndex,
    );
  };

  app.get<{ Querystring: Query }>('/Groups', async (req, reply) => send(reply, 200, await listGroups(req, req.query)));
  app.post('/Groups/.search', async (req, reply) => send(reply, 200, await listGroups(req, searchQuery(req.body))));

  app.get<{ Params: { id: string }; Querystring: Query }>('/Groups/:id', async (req, reply) => {
    const proj = groupProjection(req.query);
    const g = await repo.getGroup(tenantOf(req).sourceId, req.params.id, wants(proj, 'members'));
    if (!g) throw notFound('Group', req.params.id);
    return sendResource(reply, 200, toScimGroup(g, base), proj);
  });

  app.post<{ Querystring: Query }>('/Groups', async (req, reply) => {
    const proj = groupProjection(req.query);
    const body = normaliseResource(req.body);
    const { input, members, ignored } = toGroupInput(groups.coerce(body), (body as Obj).members);
    const g = await repo.createGroup(tenantOf(req).sourceId, input, members, writeCtx(req), { ignored, withMembers: wants(proj, 'members') });
    return sendResource(reply, 201, toScimGroup(g, base), proj);
  });

  app.put<{ Params: { id: string }; Querystring: Query }>('/Groups/:id', async (req, reply) => {
    const t = tenantOf(req);
    const proj = groupProjection(req.query);
    const body = normaliseResource(req.body);
    const { input, members, ignored } = toGroupInput(groups.coerce(body), (body as Obj).members);
    const expected = await expectedVersion(ifMatch(req), async () => (await repo.getGroup(t.sourceId, req.params.id, false))?.version);
    try {
      // PUT replaces the whole group, membership included (RFC 7644 §3.5.1).
      const g = await repo.replaceGroup(t.sourceId, req.params.id, input, members, writeCtx(req), { expectedVersion: expected, withMembers: wants(proj, 'members'), ignored });
      return sendResource(reply, 200, toScimGroup(g, base), proj);
    } catch (err) {
      if (err instanceof ConflictError && err.kind === 'version') throw preconditionFailed();
      throw err;
    }
  });

  app.patch<{ Params: { id: string }; Querystring: Query }>('/Groups/:id', async (req, reply) => {
    const t = tenantOf(req);
    const id = req.params.id;
    const proj = groupProjection(req.query);
    const cond = ifMatch(req);
    const { delta, rest } = splitMemberOps(validPatch(req.body).Operations);
    const single = cond && !cond.any && cond.versions.size === 1 ? [...cond.versions][0] : undefined;
    let version = 0;
    for (let attempt = 1; ; attempt++) {
      // Own attributes (Okta renames on every push) are computed first, then written together
      // with the membership delta in one transaction, guarded by the version they were read at.
      const change: GroupChange = delta ? memberChange(delta) : {};
      let expected = single;
      if (rest.length > 0 || (cond && !cond.any && single === undefined)) {
        const cur = await repo.getGroup(t.sourceId, id, false);
        if (!cur) throw notFound('Group', id);
        checkVersion(cond, cur.version);
        if (cond && !cond.any) expected = cur.version;
        const patched = rest.length > 0 ? await applyPatch('Group', toScimGroup(cur, base), rest) : undefined;
        if (patched) {
          const next = toGroupInput(groups.coerce(patched), undefined).input;
          if (!sameGroup(cur, next)) {
            change.input = next;
            expected = cur.version;
          }
        }
      }
      try {
        // Member changes alone commute with other writes; they need no version unless the client gave one.
        version = (await repo.changeGroup(t.sourceId, id, change, writeCtx(req), expected)).version;
        break;
      } catch (err) {
        if (!retryable(err, cond, attempt)) throw err;
      }
    }
    // Entra: PATCH on a group "should yield 204"; a body only when the client asks for attributes.
    if (!proj) return reply.code(204).header('etag', weakVersion(version)).send();
    const g = await repo.getGroup(t.sourceId, id, wants(proj, 'members'));
    if (!g) throw notFound('Group', id);
    return sendResource(reply, 200, toScimGroup(g, base), proj);
  });

  app.delete<{ Params: { id: string } }>('/Groups/:id', async (req, reply) => {
    const t = tenantOf(req);
    const expected = await expectedVersion(ifMatch(req), async () => (await repo.getGroup(t.sourceId, req.params.id, false))?.version);
    try {
      await repo.deleteGroup(t.sourceId, req.params.id, writeCtx(req), expected);
    } catch (err) {
      if (err instanceof ConflictError && err.kind === 'version') throw preconditionFailed();
      throw err;
    }
    return reply.code(204).send();
  });

  // ---------- helpers ----------

  /**
   * PATCH on a user: RFC 7644 §3.5.2 allows 200 with the resource or 204. Entra's documentation
   * and Microsoft's collection use 204 (and Entra accepts both); Okta's documentation shows
   * 200 with the user, and 200 is the safe choice for other clients. So: 204 for Entra
   * sources, 200 with the resource otherwise, and always 200 when the client names
   * attributes or excludedAttributes.
   */
  async function patchResponse(reply: FastifyReply, t: ScimTenant, proj: Projection | undefined, version: number, load: () => Promise<Obj>) {
    if (!proj && t.idp === 'entra') return reply.code(204).header('etag', weakVersion(version)).send();
    return sendResource(reply, 200, await load(), proj);
  }
}

/** A scimmy message as plain JSON (scimmy objects are Errors or carry accessors Fastify would mis-serialise). */
function plain<T = Obj>(v: unknown): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

function notFound(kind: string, id: string): ScimHttpError {
  return new ScimHttpError(404, undefined, `${kind} ${id} not found`);
}

function preconditionFailed(): ScimHttpError {
  return new ScimHttpError(412, undefined, 'The resource has changed: If-Match does not match its current version (meta.version)');
}

interface IfMatch {
  any: boolean;
  versions: Set<number>;
}

/** `If-Match: W/"3"`, `"3"`, a list of them, or `*` (RFC 9110 §13.1.1; weak comparison as meta.version is weak). */
function ifMatch(req: FastifyRequest): IfMatch | undefined {
  const h = req.headers['if-match'];
  if (h === undefined || h === '') return undefined;
  const text = Array.isArray(h) ? h.join(',') : h;
  if (text.trim() === '*') return { any: true, versions: new Set() };
  const versions = new Set<number>();
  for (const m of text.matchAll(/(?:W\/)?"(\d+)"/g)) versions.add(Number(m[1]));
  return { any: false, versions };
}

function checkVersion(cond: IfMatch | undefined, version: number): void {
  if (cond && !cond.any && !cond.versions.has(version)) throw preconditionFailed();
}

/** The version a write must find, from If-Match; reads the current one only for a list of several. */
async function expectedVersion(cond: IfMatch | undefined, current: () => Promise<number | undefined>): Promise<number | undefined> {
  if (!cond || cond.any) return undefined;
  if (cond.versions.size === 1) return [...cond.versions][0];
  const v = await current();
  if (v === undefined) return undefined; // the write reports 404
  checkVersion(cond, v);
  return v;
}

/** Whether a failed write should be re-run: a version conflict we caused by reading first, not one the client asked for. */
function retryable(err: unknown, cond: IfMatch | undefined, attempt: number): boolean {
  if (!(err instanceof ConflictError) || err.kind !== 'version') return false;
  if (cond && !cond.any) throw preconditionFailed();
  return attempt < ATTEMPTS;
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

/** Query of a list request: integers for paging (RFC 7644 §3.4.2.4: startIndex < 1 means 1, count < 0 means 0). */
function listQuery(query: unknown): { filter: string | undefined; startIndex: number; count: number } {
  const q = isObj(query) ? query : {};
  const filter = one(q.filter);
  if (filter !== undefined && filter.trim() === '') throw new ScimHttpError(400, 'invalidFilter', 'filter is empty');
  const startIndex = Math.max(1, intParam(q.startIndex, 'startIndex') ?? 1);
  const count = Math.min(MAX_RESULTS, Math.max(0, intParam(q.count, 'count') ?? DEFAULT_COUNT));
  return { filter, startIndex, count };
}

/** A SearchRequest body (POST /.search) as list query parameters. */
function searchQuery(body: unknown): Query {
  if (!isObj(body)) throw new ScimHttpError(400, 'invalidSyntax', 'SearchRequest body must be a JSON object');
  const list = (v: unknown, name: string): string | undefined => {
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new ScimHttpError(400, 'invalidValue', `${name} must be a list of attribute names`);
    return v.length > 0 ? v.join(',') : undefined;
  };
  const q: Query = {};
  if (body.filter !== undefined) {
    if (typeof body.filter !== 'string') throw new ScimHttpError(400, 'invalidFilter', 'filter must be a string');
    q.filter = body.filter;
  }
  const attributes = list(body.attributes, 'attributes');
  const excluded = list(body.excludedAttributes, 'excludedAttributes');
  if (attributes) q.attributes = attributes;
  if (excluded) q.excludedAttributes = excluded;
  for (const k of ['startIndex', 'count'] as const) if (body[k] !== undefined) q[k] = String(body[k]);
  return q;
}

/** A normalised PatchOp message (empty `Operations` allowed: Entra's validator sends it, clients expect a no-op). */
function validPatch(body: unknown): { schemas: string[]; Operations: PatchOperation[] } {
  const message = normalisePatch(body);
  if (!isObj(message)) throw new ScimHttpError(400, 'invalidSyntax', 'PATCH body must be a PatchOp message object');
  const ops = message.Operations;
  if (!Array.isArray(ops)) throw new ScimHttpError(400, 'invalidSyntax', 'PatchOp message needs an "Operations" array');
  if (!Array.isArray(message.schemas) || !message.schemas.includes(PATCH_OP))
    throw new ScimHttpError(400, 'invalidSyntax', 'PatchOp message must declare the PatchOp schema');
  ops.forEach((o, i) => {
    if (!isObj(o) || !['add', 'remove', 'replace'].includes(String(o.op)))
      throw new ScimHttpError(400, 'invalidSyntax', `operation ${i + 1}: "op" must be add, remove or replace`);
    if (o.path !== undefined && typeof o.path !== 'string') throw new ScimHttpError(400, 'invalidPath', `operation ${i + 1}: "path" must be a string`);
    if (o.op === 'remove' && o.path === undefined) throw new ScimHttpError(400, 'noTarget', `operation ${i + 1}: "remove" needs a path`);
    if (o.op !== 'remove' && o.value === undefined) throw new ScimHttpError(400, 'invalidValue', `operation ${i + 1}: "${String(o.op)}" needs a value`);
  });
  return message as { schemas: string[]; Operations: PatchOperation[] };
}
