import type { FastifyReply, FastifyRequest } from 'fastify';
import { auditAlone } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import type { Store } from '../store/db.ts';
import { authenticateAdmin, can, type Permission } from './admin-auth.ts';
import { sendProblem } from './problems.ts';

/**
 * The admin API's one gate: bearer token → principal → permission, with every refusal (401,
 * 403, and 429 for rate-limited actions) audited against the endpoint. Plugins share it so a
 * refusal is recorded the same way wherever it happens.
 */
export function createGuard(deps: { config: Config; store: Store }) {
  const { config, store } = deps;
  const recent = new Map<string, number[]>();

  const audit = (req: FastifyRequest, actor: string, action: string, detail: unknown) =>
    auditAlone(store, [{ actor, action, subject: `endpoint:${req.routeOptions.url}`, detail, correlationId: String(req.id) }]);

  /** `perMinute`: at most this many requests per principal per minute through this guard. */
  return (permission: Permission, perMinute?: { limit: number; what: string }) => async (req: FastifyRequest, reply: FastifyReply) => {
    const principal = authenticateAdmin(config.admin.tokens, req.headers.authorization);
    if (!principal) {
      await audit(req, 'anonymous', 'admin.unauthenticated', { method: req.method, ip: req.ip, tokenPresented: Boolean(req.headers.authorization) });
      return sendProblem(reply, 'UNAUTHENTICATED', 'send an admin token as "Authorization: Bearer <token>"');
    }
    if (!can(principal, permission)) {
      await audit(req, `admin:${principal.name}`, 'admin.refused', { permission, method: req.method, role: principal.role });
      return sendProblem(reply, 'FORBIDDEN', `role "${principal.role}" lacks permission "${permission}"`);
    }
    if (perMinute) {
      const now = Date.now();
      const times = (recent.get(principal.name) ?? []).filter((t) => t > now - 60_000);
      if (times.length >= perMinute.limit) {
        await audit(req, `admin:${principal.name}`, 'admin.rate_limited', { method: req.method });
        reply.header('retry-after', String(Math.ceil((times[0]! + 60_000 - now) / 1000)));
        return sendProblem(reply, 'RATE_LIMITED', `at most ${perMinute.limit} ${perMinute.what} per minute per principal`);
      }
      times.push(now);
      recent.set(principal.name, times);
    }
    req.principal = principal;
  };
}
