import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { appendAudit } from '../audit/audit.ts';
import type { IdpKind } from '../ports/identity-source.ts';
import type { SourceRuntime } from '../sources/index.ts';
import type { Metrics } from '../metrics.ts';
import type { Store } from '../store/db.ts';
import { sendProblem } from './problems.ts';

/**
 * IdP webhooks: `/hooks/okta/{sourceId}` (GET verification + POST), `/hooks/entra/{sourceId}`
 * and `/hooks/entra/{sourceId}/lifecycle`, `/hooks/sailpoint/{sourceId}`.
 *
 * The documented exception to "every endpoint needs a bearer token": these requests are
 * authenticated by the source's adapter (Okta shared secret header, Graph `clientState`,
 * SailPoint Bearer/Basic), compared in constant time. The body reaches the adapter as raw bytes.
 *
 * Accepted hints are persisted (deduplicated on their key) in one transaction *before* the IdP
 * gets its answer; if that fails the answer is 503, so Okta and Graph deliver again. The answer
 * does not wait for anything else: confirmation runs on the `sources` queue.
 *
 * Rejected requests are audited (reason, status, client address; never the body), at most
 * `AUDITED_REJECTIONS_PER_MINUTE` per source — the rest are only logged, so an unauthenticated
 * flood cannot grow the audit log without bound.
 */

const AUDITED_REJECTIONS_PER_MINUTE = 30;

/**
 * The routes of adapters/idp/index.ts `HOOK_ROUTES`, repeated here so that mounting them does
 * not load every IdP SDK (test/sources/hooks.test.ts keeps the two equal).
 */
export const HOOK_ROUTE_TABLE: Record<IdpKind, Array<{ path: string; methods: string[] }>> = {
  okta: [{ path: '/hooks/okta/:sourceId', methods: ['GET', 'POST'] }],
  entra: [
    { path: '/hooks/entra/:sourceId', methods: ['POST'] },
    { path: '/hooks/entra/:sourceId/lifecycle', methods: ['POST'] },
  ],
  sailpoint: [{ path: '/hooks/sailpoint/:sourceId', methods: ['POST'] }],
  oneidentity: [],
};

export async function hookRoutes(app: FastifyInstance, opts: { sources: SourceRuntime; store: Store; metrics?: Metrics }): Promise<void> {
  const { sources, store, metrics } = opts;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  const rejections = new Map<string, { minute: number; n: number }>();

  const auditRejection = async (req: FastifyRequest, sourceId: string, idp: string, status: number, reason: string) => {
    const minute = Math.floor(Date.now() / 60_000);
    const r = rejections.get(sourceId);
    const n = r && r.minute === minute ? r.n + 1 : 1;
    rejections.set(sourceId, { minute, n });
    req.log.warn({ source: sourceId, idp, status, reason }, 'hook rejected');
    if (n > AUDITED_REJECTIONS_PER_MINUTE) return;
    await store.db
      .transaction()
      .execute((trx) =>
        appendAudit(trx, store.dialect, [
          {
            actor: `hook:${sourceId}`,
            action: 'source.hook.rejected',
            subject: `source:${sourceId}`,
            correlationId: String(req.id),
            detail: { idp, status, reason, method: req.method, ip: req.ip, ...(n === AUDITED_REJECTIONS_PER_MINUTE ? { note: 'further rejections this minute are only logged' } : {}) },
          },
        ]),
      )
      .catch((err: Error) => req.log.warn({ err: err.message }, 'could not audit a rejected hook'));
  };

  const handlerFor = (idp: IdpKind) => async (req: FastifyRequest<{ Params: { sourceId: string } }>, reply: FastifyReply) => {
    const sourceId = req.params.sourceId;
    const src = sources.sources.get(sourceId);
    if (!src || src.kind !== idp) return sendProblem(reply, 'NOT_FOUND', `no ${idp} identity source "${sourceId}" is configured (see sources[].${idp} in the configuration)`);
    const res = src.handleHook({
      method: req.method,
      headers: req.headers,
      query: (req.query ?? {}) as Record<string, string | string[] | undefined>,
      rawBody: Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0),
    });
    if (res.outcome === 'rejected') {
      metrics?.sourceHooks.inc({ source: sourceId, outcome: 'rejected' });
      await auditRejection(req, sourceId, idp, res.status, res.reason ?? 'rejected');
    } else if (res.reason) req.log.info({ source: sourceId, reason: res.reason }, 'hook partly ignored');
    if (res.outcome === 'accepted' && (res.changes.length || res.tasks.length || res.resync)) {
      try {
        await sources.persistHook(sourceId, res);
      } catch (err) {
        metrics?.sourceHooks.inc({ source: sourceId, outcome: 'unavailable' });
        req.log.error({ source: sourceId, err: (err as Error).message }, 'could not persist hook hints; answering 503 so the IdP retries');
        return sendProblem(reply.header('retry-after', '5'), 'UNAVAILABLE', 'the hints could not be stored; deliver again');
      }
    }
    if (res.outcome !== 'rejected') metrics?.sourceHooks.inc({ source: sourceId, outcome: res.outcome });
    reply.code(res.status);
    if (res.headers) reply.headers(res.headers);
    return reply.send(res.body ?? '');
  };

  for (const [idp, routes] of Object.entries(HOOK_ROUTE_TABLE) as Array<[IdpKind, Array<{ path: string; methods: string[] }>]>)
    for (const r of routes) app.route({ method: r.methods as never, url: r.path, handler: handlerFor(idp) as never });
}
