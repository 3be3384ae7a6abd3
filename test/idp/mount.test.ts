import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import type { Change, IdentitySource, SourceTask } from '../../src/ports/identity-source.ts';
import { HOOK_ROUTES, createIdentitySource } from '../../adapters/idp/index.ts';
import { fakeTime, fixtureText, silentLog } from './helpers.ts';

/**
 * The mounting recipe from adapters/idp/README.md on a real Fastify instance: raw bodies, decoded
 * query strings, persist-then-answer, 503 when persisting fails. Guards the README against rot.
 */

interface Persisted {
  changes: Change[];
  tasks: SourceTask[];
  resync: Array<string | undefined>;
}

function buildApp(sources: Map<string, IdentitySource>, persist: (src: string, changes: Change[], tasks: SourceTask[], resync?: string) => Promise<void>) {
  const app = Fastify({ logger: false });
  app.register(async (hooks) => {
    hooks.removeAllContentTypeParsers();
    hooks.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
    const handlerFor = (idp: string) => async (req: any, reply: any) => {
      const src = sources.get(req.params.sourceId);
      if (!src || src.kind !== idp) return reply.code(404).send();
      const res = src.handleHook({ method: req.method, headers: req.headers, query: req.query, rawBody: req.body ?? Buffer.alloc(0) });
      if (res.outcome === 'accepted' && (res.changes.length || res.tasks.length || res.resync)) {
        try {
          await persist(src.id, res.changes, res.tasks, res.resync);
        } catch {
          return reply.code(503).send();
        }
      }
      return reply.code(res.status).headers(res.headers ?? {}).send(res.body ?? '');
    };
    for (const [idp, routes] of Object.entries(HOOK_ROUTES))
      for (const r of routes) hooks.route({ method: r.methods as never, url: r.path, handler: handlerFor(idp) });
  });
  return app;
}

function sources(): Map<string, IdentitySource> {
  const t = fakeTime();
  const deps = (sourceId: string) => ({ sourceId, log: silentLog, now: t.now, sleep: t.sleep });
  return new Map<string, IdentitySource>([
    ['okta-prod', createIdentitySource('okta', { orgUrl: 'https://acme.okta.com', auth: { type: 'ssws', token: 't' }, hook: { secret: 'okta-hook-secret-0123456789abcdef' } }, deps('okta-prod'))],
    [
      'entra-prod',
      createIdentitySource(
        'entra',
        { tenantId: 't', clientId: 'c', credential: { type: 'secret', clientSecret: 's' }, hook: { clientState: 'entra-client-state-0123456789' } },
        deps('entra-prod'),
      ),
    ],
  ]);
}

let app: FastifyInstance | undefined;
afterEach(async () => {
  await app?.close();
  app = undefined;
});

describe('mounting the hooks on Fastify', () => {
  it('answers the Okta verification GET and persists before answering a delivery', async () => {
    const saved: Persisted = { changes: [], tasks: [], resync: [] };
    app = buildApp(sources(), async (_s, changes, tasks, resync) => {
      saved.changes.push(...changes);
      saved.tasks.push(...tasks);
      saved.resync.push(resync);
    });
    const v = await app.inject({ method: 'GET', url: '/hooks/okta/okta-prod', headers: { 'x-okta-verification-challenge': 'abc123' } });
    expect(v.statusCode).toBe(200);
    expect(v.json()).toEqual({ verification: 'abc123' });
    const d = await app.inject({
      method: 'POST',
      url: '/hooks/okta/okta-prod',
      headers: { 'content-type': 'application/json', authorization: 'okta-hook-secret-0123456789abcdef' },
      payload: fixtureText('okta/hook-deactivate.json'),
    });
    expect(d.statusCode).toBe(200);
    expect(d.body).toBe('');
    expect(saved.changes.map((c) => c.kind)).toEqual(['user-deactivated']);
    const bad = await app.inject({ method: 'POST', url: '/hooks/okta/okta-prod', headers: { 'content-type': 'application/json', authorization: 'nope' }, payload: '{}' });
    expect(bad.statusCode).toBe(401);
    expect(saved.changes).toHaveLength(1);
  });

  it('answers the Graph validation POST (text/plain, empty body, encoded token) on both Entra URLs', async () => {
    app = buildApp(sources(), async () => {});
    for (const url of ['/hooks/entra/entra-prod', '/hooks/entra/entra-prod/lifecycle']) {
      const res = await app.inject({
        method: 'POST',
        url: `${url}?validationToken=Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+42`,
        headers: { 'content-type': 'text/plain; charset=utf-8' },
      });
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/plain/);
      expect(res.body).toBe('Validation: Testing client application reachability for subscription Request-Id: 42');
    }
  });

  it('answers 202 after persisting Entra notifications, and 503 when persisting fails (so Graph retries)', async () => {
    let fail = false;
    const saved: Change[] = [];
    app = buildApp(sources(), async (_s, changes) => {
      if (fail) throw new Error('db down');
      saved.push(...changes);
    });
    const post = () =>
      app!.inject({ method: 'POST', url: '/hooks/entra/entra-prod', headers: { 'content-type': 'application/json' }, payload: fixtureText('entra/notification-user-updated.json') });
    expect((await post()).statusCode).toBe(202);
    expect(saved).toHaveLength(2);
    fail = true;
    expect((await post()).statusCode).toBe(503);
  });

  it('404s a source id of another IdP', async () => {
    app = buildApp(sources(), async () => {});
    const res = await app.inject({ method: 'POST', url: '/hooks/sailpoint/okta-prod', headers: { 'content-type': 'application/json' }, payload: '{}' });
    expect(res.statusCode).toBe(404);
  });
});
