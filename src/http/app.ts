import Fastify, { LogController, type FastifyInstance } from 'fastify';
import type { Config } from '../config/schema.ts';
import type { Engine } from '../engine.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import type { Store } from '../store/db.ts';
import type { IdentityRepo } from '../store/identities.ts';
import { newId } from '../store/ids.ts';
import { adminRoutes } from './admin.ts';
import { lockdownRoutes } from './lockdowns.ts';
import { iloqHookRoutes } from './iloq-hooks.ts';
import { authenticateAdmin, can } from './admin-auth.ts';
import { problemFromFastifyError, sendProblem } from './problems.ts';
import { scimRoutes } from './scim/index.ts';
import type { SourceRuntime } from '../sources/index.ts';
import { driftRoutes } from './drift.ts';
import { hookRoutes } from './hooks.ts';

export interface AppDeps {
  config: Config;
  store: Store;
  identities: IdentityRepo;
  engine: Engine;
  metrics: Metrics;
  log: Logger;
  /** Only /healthz, /readyz and /metrics (for `lockstep worker`). */
  probesOnly?: boolean;
  /** Identity sources: /hooks/* and /api/v1/drift, /api/v1/reconcile (src/sources). */
  sources?: SourceRuntime;
}

/**
 * The HTTP surface. Each area is an encapsulated plugin with its own error format: SCIM errors
 * under /scim/v2, RFC 9457 problems elsewhere. Request ids double as correlation ids and are
 * taken from X-Request-Id when the caller sends a sane one.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, store, engine, metrics } = deps;
  const app = Fastify({
    loggerInstance: deps.log,
    // Per-request lines would dominate the log at provisioning rates; failures are logged below.
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'correlationId' }),
    bodyLimit: config.server.bodyLimitBytes,
    routerOptions: { caseSensitive: false, ignoreTrailingSlash: true },
    requestIdHeader: 'x-request-id',
    // Time-ordered: the request id becomes the correlation id of the operations, tasks and audit
    // rows it causes, and their correlation indexes take a random id on a random page each.
    genReqId: () => newId(),
  });
  app.addHook('onRequest', async (req, reply) => {
    engine.pacer.request();
    // Reject caller-chosen ids that could smuggle log or header content.
    if (!/^[A-Za-z0-9._:-]{1,128}$/.test(String(req.id))) req.id = newId();
    reply.header('x-request-id', req.id);
  });
  app.addHook('onResponse', async (req, reply) => {
    if (reply.statusCode >= 500) req.log.error({ method: req.method, url: req.url, status: reply.statusCode }, 'request failed');
  });

  app.setErrorHandler((err, req, reply) => {
    const { code, detail } = problemFromFastifyError(err as never);
    if (code === 'INTERNAL') req.log.error({ err }, 'unhandled error');
    return sendProblem(reply, code, detail);
  });
  app.setNotFoundHandler((req, reply) => sendProblem(reply, 'ROUTE_NOT_FOUND', `${req.method} ${req.url} is not an endpoint of lockstep`));

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    const checks: Record<string, string> = {};
    await Promise.all([
      store.ping().then(
        () => (checks.store = 'ok'),
        (e: Error) => (checks.store = `unavailable: ${e.message}`),
      ),
      engine.ping().then(
        () => (checks.redis = 'ok'),
        (e: Error) => (checks.redis = `unavailable: ${e.message}`),
      ),
    ]);
    const ok = Object.values(checks).every((v) => v === 'ok');
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ready' : 'not ready', checks });
  });

  app.get('/metrics', async (req, reply) => {
    const principal = authenticateAdmin(config.admin.tokens, req.headers.authorization);
    if (!principal) return sendProblem(reply, 'UNAUTHENTICATED', 'metrics need a token: configure Prometheus with authorization credentials');
    if (!can(principal, 'metrics:read')) return sendProblem(reply, 'FORBIDDEN', `role "${principal.role}" cannot read metrics`);
    await refreshGauges(deps);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  if (deps.probesOnly) return app as unknown as FastifyInstance;
  await app.register(adminRoutes, { prefix: '/api/v1', config, store, identities: deps.identities, reconciler: engine.reconciler });
  await app.register(lockdownRoutes, { prefix: '/api/v1', config, store, lockdowns: engine.lockdowns });
  await app.register(iloqHookRoutes, { config, store, effectiveness: engine.effectiveness });
  const publicBaseUrl = config.server.publicBaseUrl ?? `http://${config.server.host}:${config.server.port}`;
  await app.register(scimRoutes, { prefix: '/scim/v2', identities: deps.identities, sources: config.sources, publicBaseUrl });
  if (deps.sources) {
    await app.register(hookRoutes, { sources: deps.sources, store, metrics });
    await app.register(driftRoutes, { prefix: '/api/v1', config, store, identities: deps.identities, reconciler: engine.reconciler, sources: deps.sources });
  }
  return app as unknown as FastifyInstance;
}

async function refreshGauges({ engine, store, metrics, config }: AppDeps): Promise<void> {
  const counts = await engine.queues.counts().catch(() => []);
  metrics.queueDepth.reset();
  for (const q of counts) for (const [state, n] of Object.entries(q.counts)) metrics.queueDepth.set({ queue: q.queue, state }, n);
  const dead = await store.db.selectFrom('failed_jobs').select((eb) => eb.fn.countAll<number>().as('n')).where('retried_at', 'is', null).executeTakeFirstOrThrow();
  metrics.openDeadLetters.set(Number(dead.n));
  const pending = await store.db.selectFrom('operations').select((eb) => eb.fn.countAll<number>().as('n')).where('state', 'in', ['pending', 'running']).executeTakeFirstOrThrow();
  metrics.pendingOperations.set(Number(pending.n));
  const exposure = await store.db
    .selectFrom('key_changes')
    .select((eb) => [
      'lock_system_id',
      eb.fn.countAll<number>().as('n'),
      eb.fn.min('horizon').as('oldest'),
      eb.fn.max('horizon').as('latest'),
      eb.fn.sum<number>(eb.case().when('horizon', 'is', null).then(1).else(0).end()).as('unbounded'),
    ])
    .where('revocation', '=', 1)
    .where('effective_at', 'is', null)
    .groupBy('lock_system_id')
    .execute();
  for (const g of [metrics.exposedKeys, metrics.unboundedKeys, metrics.oldestHorizon, metrics.latestHorizon]) g.reset();
  for (const e of exposure) {
    const labels = { lock_system: e.lock_system_id };
    metrics.exposedKeys.set(labels, Number(e.n));
    metrics.unboundedKeys.set(labels, Number(e.unbounded));
    if (e.oldest !== null) metrics.oldestHorizon.set(labels, Number(e.oldest) / 1000);
    if (e.latest !== null) metrics.latestHorizon.set(labels, Number(e.latest) / 1000);
  }
  const now = Date.now();
  const tasks = await store.db
    .selectFrom('tasks')
    .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.sum<number>(eb.case().when('deadline', '<', now).then(1).else(0).end()).as('overdue')])
    .where('done_at', 'is', null)
    .executeTakeFirstOrThrow();
  metrics.openTasks.set({ overdue: 'false' }, Number(tasks.n) - Number(tasks.overdue ?? 0));
  metrics.openTasks.set({ overdue: 'true' }, Number(tasks.overdue ?? 0));
  await refreshSourceGauges(store, metrics, config.sources.map((s) => s.id));
}

/** Per identity source, from the database: every process reports the same values. */
async function refreshSourceGauges(store: AppDeps['store'], metrics: Metrics, sourceIds: string[]): Promise<void> {
  for (const g of [metrics.sourcePendingHints, metrics.sourceOldestPendingHint, metrics.sourceLastSnapshot, metrics.sourceLastDelta, metrics.sourceLastError]) g.reset();
  if (sourceIds.length === 0) return;
  const pending = await store.db
    .selectFrom('source_hints')
    .select((eb) => ['source_id', eb.fn.countAll<number>().as('n'), eb.fn.min('received_at').as('oldest')])
    .where('state', '=', 'pending')
    .groupBy('source_id')
    .execute();
  const bySource = new Map(pending.map((p) => [p.source_id, p]));
  for (const id of sourceIds) {
    const p = bySource.get(id);
    metrics.sourcePendingHints.set({ source: id }, Number(p?.n ?? 0));
    if (p?.oldest !== null && p?.oldest !== undefined) metrics.sourceOldestPendingHint.set({ source: id }, Number(p.oldest) / 1000);
  }
  const states = await store.db.selectFrom('source_state').select(['source_id', 'last_snapshot_done_at', 'last_delta_at', 'last_error_at']).execute();
  for (const s of states) {
    if (!sourceIds.includes(s.source_id)) continue;
    const labels = { source: s.source_id };
    if (s.last_snapshot_done_at !== null) metrics.sourceLastSnapshot.set(labels, Number(s.last_snapshot_done_at) / 1000);
    if (s.last_delta_at !== null) metrics.sourceLastDelta.set(labels, Number(s.last_delta_at) / 1000);
    if (s.last_error_at !== null) metrics.sourceLastError.set(labels, Number(s.last_error_at) / 1000);
  }
}
