import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { auditAlone } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import type { Reconciler } from '../reconcile/reconciler.ts';
import type { SourceRuntime } from '../sources/index.ts';
import { planEveryone, reconcileEveryone } from '../sources/plan.ts';
import type { Store } from '../store/db.ts';
import type { IdentityRepo } from '../store/identities.ts';
import type { Permission, Principal } from './admin-auth.ts';
import { createGuard } from './guard.ts';
import { sendProblem } from './problems.ts';

/**
 * Drift and whole-population reconciliation under /api/v1 (admin tokens):
 * - `GET /drift` (admin, auditor): per identity source the last full reconciliation (what it had
 *   to change = IdP drift it repaired), pending/failed hints, cursor age, errors; per lock system
 *   the last drift check and its findings; linking duplicates.
 * - `POST /drift/check[?lockSystem=ID&repair=false]` (admin): run the lock-system drift check now.
 * - `POST /reconcile?dryRun=true[&limit=N]` (admin, auditor): everyone's plan, nothing applied.
 * - `POST /reconcile` (admin): reconcile everyone and run a full reconciliation of every source.
 * Every action and every refusal is audited, as in admin.ts.
 */

export interface DriftRouteDeps {
  config: Config;
  store: Store;
  identities: IdentityRepo;
  reconciler: Reconciler;
  sources: SourceRuntime;
}

export async function driftRoutes(app: FastifyInstance, deps: DriftRouteDeps): Promise<void> {
  const { store } = deps;

  const audit = (req: FastifyRequest, actor: string, action: string, subject: string, detail: unknown) =>
    auditAlone(store, [{ actor, action, subject, detail, correlationId: String(req.id) }]);

  const gate = createGuard(deps);
  /** Authenticates and authorises (the permission can depend on the request); sends the problem and returns undefined when refused. */
  const authorise = async (req: FastifyRequest, reply: FastifyReply, permission: Permission): Promise<Principal | undefined> => {
    await gate(permission)(req, reply);
    return reply.sent ? undefined : req.principal;
  };

  app.get('/drift', async (req, reply) => {
    if (!(await authorise(req, reply, 'audit:read'))) return reply;
    const rt = deps.sources;
    return {
      generatedAt: new Date().toISOString(),
      sources: await rt.status(),
      lockSystems: await rt.drift.latest(),
      linking: {
        matchOn: deps.config.identity.matchOn ?? null,
        authoritativeSource: deps.config.identity.authoritativeSource ?? null,
        duplicateMatchKeys: await rt.sync.duplicateMatchKeys(),
      },
    };
  });

  app.post<{ Querystring: { lockSystem?: string; repair?: string } }>('/drift/check', async (req, reply) => {
    const p = await authorise(req, reply, 'reconcile:request');
    if (!p) return reply;
    const repair = req.query.repair !== 'false';
    const ids = req.query.lockSystem ? [req.query.lockSystem] : [...deps.config.lockSystems.map((l) => l.id)];
    for (const id of ids) if (!deps.config.lockSystems.some((l) => l.id === id)) return sendProblem(reply, 'NOT_FOUND', `lock system "${id}" is not configured`);
    await audit(req, `admin:${p.name}`, 'admin.drift.check', 'drift', { lockSystems: ids, repair });
    const results = [];
    for (const id of ids) results.push(await deps.sources.drift.check(id, { repair }));
    return { results };
  });

  app.post<{ Querystring: { dryRun?: string; limit?: string } }>('/reconcile', async (req, reply) => {
    const dry = req.query.dryRun;
    if (dry !== undefined && dry !== 'true' && dry !== 'false') return sendProblem(reply, 'INVALID_REQUEST', 'dryRun must be true or false');
    if (dry === 'true') {
      const p = await authorise(req, reply, 'audit:read');
      if (!p) return reply;
      const limit = req.query.limit === undefined ? 1000 : Number(req.query.limit);
      if (!Number.isInteger(limit) || limit < 0 || limit > 100_000) return sendProblem(reply, 'INVALID_REQUEST', 'limit must be an integer between 0 and 100000');
      await audit(req, `admin:${p.name}`, 'admin.reconcile.dry_run', 'everyone', { limit });
      return planEveryone({ store, reconciler: deps.reconciler }, { limit });
    }
    const p = await authorise(req, reply, 'reconcile:request');
    if (!p) return reply;
    const sourceIds = [...deps.sources.sources.keys()];
    const r = await reconcileEveryone({ store, identities: deps.identities }, { actor: `admin:${p.name}`, correlationId: String(req.id) }, sourceIds);
    for (const id of sourceIds) await deps.sources.runner?.requestResync(id, 'full', `requested by admin:${p.name}`);
    return reply.code(202).send({ status: 'queued', personsMarked: r.persons, sourcesToReconcile: r.sources });
  });
}
