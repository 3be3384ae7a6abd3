import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import type { Config } from '../config/schema.ts';
import { LockdownError, publicView, type LockdownService } from '../lockdown/service.ts';
import type { Store } from '../store/db.ts';
import { createGuard } from './guard.ts';
import { sendProblem } from './problems.ts';

/** How long computed lockdown figures are shared between readers. */
const VIEW_TTL_MS = 250;

/**
 * /api/v1/lockdowns: the CRO's emergency revoke-all. Only `cro` acts; admins and auditors read.
 * Every refusal is audited, actions are rate-limited per principal, a reason is mandatory.
 */

const startBody = z
  .object({
    scope: z
      .object({
        all: z.boolean().optional(),
        lockSystems: z.array(z.string().min(1)).optional(),
        access: z.array(z.string().min(1)).optional(),
        sites: z.array(z.string().min(1)).optional(),
      })
      .strict(),
    reason: z.string().trim().min(10, 'give a reason of at least 10 characters (it goes into the incident record)').max(2000),
    expiresAt: z.iso.datetime({ offset: true }).optional(),
  })
  .strict();

const exemptionBody = z.object({ person: z.string().min(1).optional(), group: z.string().min(1).optional() }).strict();

export async function lockdownRoutes(app: FastifyInstance, deps: { config: Config; store: Store; lockdowns: LockdownService }): Promise<void> {
  const { store, lockdowns, config } = deps;
  const gate = createGuard(deps);
  const read = gate('lockdown:read');
  const act = gate('lockdown:act', { limit: config.lockdown.maxActionsPerMinute, what: 'lockdown actions' });

  const actor = (req: FastifyRequest) => ({ name: `admin:${req.principal!.name}`, correlationId: String(req.id) });
  const fail = (reply: FastifyReply, err: unknown) => {
    if (err instanceof LockdownError) {
      const code = err.code === 'INVALID' ? 'INVALID_REQUEST' : err.code === 'NOT_FOUND' ? 'NOT_FOUND' : err.code === 'CONFLICT' ? 'CONFLICT' : 'FORBIDDEN';
      return sendProblem(reply, code, err.message);
    }
    throw err;
  };
  const compute = async (id: string) => {
    const l = await lockdowns.get(id);
    return l ? { ...publicView(l), ...(await lockdowns.figures(store.db, l)) } : undefined;
  };
  // During an incident several people watch the same lockdown (dashboards polling, SSE streams,
  // `lockstep lockdown status`); the figures take a few ms of database work each and compete
  // with the revocations themselves. Everyone asking within VIEW_TTL_MS shares one computation;
  // this process's own lift or exemption drops the shared one at once.
  const recent = new Map<string, { at: number; value: ReturnType<typeof compute> }>();
  const view = (id: string) => {
    const now = Date.now();
    const hit = recent.get(id);
    if (hit && now - hit.at < VIEW_TTL_MS) return hit.value;
    const value = compute(id);
    recent.set(id, { at: now, value });
    value.catch(() => recent.delete(id));
    if (recent.size > 100) for (const [k, v] of recent) if (now - v.at >= VIEW_TTL_MS) recent.delete(k);
    return value;
  };

  app.post('/lockdowns', { preHandler: act }, async (req, reply) => {
    const parsed = startBody.safeParse(req.body ?? {});
    if (!parsed.success) return sendProblem(reply, 'INVALID_REQUEST', parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
    try {
      const { lockdown, created } = await lockdowns.start(
        { scope: parsed.data.scope, reason: parsed.data.reason, ...(parsed.data.expiresAt ? { expiresAt: Date.parse(parsed.data.expiresAt) } : {}) },
        actor(req),
      );
      reply.header('location', `/api/v1/lockdowns/${lockdown.id}`);
      return reply.code(created ? 202 : 200).send({ ...publicView(lockdown), created });
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.get('/lockdowns', { preHandler: read }, async () => ({ items: (await lockdowns.list()).map(publicView) }));

  app.get<{ Params: { id: string } }>('/lockdowns/:id', { preHandler: read }, async (req, reply) => {
    const v = await view(req.params.id);
    return v ?? sendProblem(reply, 'NOT_FOUND', `lockdown ${req.params.id} not found`);
  });

  app.post<{ Params: { id: string } }>('/lockdowns/:id/exemptions', { preHandler: act }, async (req, reply) => {
    const parsed = exemptionBody.safeParse(req.body ?? {});
    if (!parsed.success || (!parsed.data.person === !parsed.data.group))
      return sendProblem(reply, 'INVALID_REQUEST', 'send exactly one of {"person": "<id or userName>"} or {"group": "<id or display name>"}');
    try {
      await lockdowns.addExemption(req.params.id, parsed.data, actor(req));
      recent.delete(req.params.id);
      return reply.code(202).send({ id: req.params.id, exemption: parsed.data });
    } catch (err) {
      return fail(reply, err);
    }
  });

  app.post<{ Params: { id: string } }>('/lockdowns/:id/lift', { preHandler: act }, async (req, reply) => {
    try {
      const r = await lockdowns.lift(req.params.id, actor(req));
      recent.delete(req.params.id);
      return reply.code(202).send({ id: req.params.id, state: r.state, ...(r.state === 'lift_requested' ? { detail: 'dual control: a second cro principal must confirm the lift' } : {}) });
    } catch (err) {
      return fail(reply, err);
    }
  });

  /** Server-Sent Events: the same figures as GET /lockdowns/{id}, once a second. */
  app.get<{ Params: { id: string }; Querystring: { intervalMs?: string } }>('/lockdowns/:id/events', { preHandler: read }, async (req, reply) => {
    const first = await view(req.params.id);
    if (!first) return sendProblem(reply, 'NOT_FOUND', `lockdown ${req.params.id} not found`);
    const interval = Math.min(10_000, Math.max(200, Number(req.query.intervalMs ?? 1000) || 1000));
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive', 'x-request-id': String(req.id) });
    let closed = false;
    req.raw.on('close', () => (closed = true));
    const send = (data: unknown) => reply.raw.write(`event: progress\ndata: ${JSON.stringify(data)}\n\n`);
    send(first);
    while (!closed) {
      await new Promise((r) => setTimeout(r, interval));
      if (closed) break;
      const v = await view(req.params.id).catch(() => undefined);
      if (!v) break;
      send(v);
    }
    reply.raw.end();
  });
}
