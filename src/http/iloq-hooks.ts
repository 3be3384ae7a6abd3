import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { auditAlone } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import type { EffectivenessWatcher } from '../reconcile/effectiveness.ts';
import type { Store } from '../store/db.ts';
import { sendProblem } from './problems.ts';

/**
 * POST /hooks/iloq/{lockSystemId}: iLOQ's signed webhooks (device_log_arrived, key_blocklisted,
 * key_added, ...). They are hints that a key was programmed or used: the delivery is verified
 * (HMAC-SHA256 of the raw body with the subscription's SignKey, lowercase hex in
 * Webhook-Signature, compared in constant time), checked for freshness (CreationTimeUtc) and
 * deduplicated on its Counter header, acknowledged at once (iLOQ waits 5 s), and then the
 * persons waiting on that key have their programming state checked — the second truth.
 */
export async function iloqHookRoutes(app: FastifyInstance, deps: { config: Config; store: Store; effectiveness: EffectivenessWatcher }): Promise<void> {
  const { store, effectiveness } = deps;
  // The signature covers the exact bytes sent: keep them, parse afterwards.
  app.addContentTypeParser(['application/json', 'text/json'], { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.post<{ Params: { id: string } }>('/hooks/iloq/:id', async (req, reply) => {
    const ls = deps.config.lockSystems.find((l) => l.id === req.params.id);
    if (!ls || ls.kind !== 'iloq' || !ls.iloq.webhook) return sendProblem(reply, 'NOT_FOUND', `no iLOQ lock system "${req.params.id}" with webhooks configured`);
    const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const given = String(req.headers['webhook-signature'] ?? '').trim().toLowerCase();
    const expected = createHmac('sha256', Buffer.from(ls.iloq.webhook.signKey, 'utf8')).update(raw).digest('hex');
    if (!/^[0-9a-f]{64}$/.test(given) || !timingSafeEqual(Buffer.from(given, 'hex'), Buffer.from(expected, 'hex'))) {
      await audit(store, req.params.id, 'webhook.rejected', String(req.id), { reason: 'signature', ip: req.ip });
      return sendProblem(reply, 'UNAUTHENTICATED', 'Webhook-Signature does not match the body');
    }
    let payload: { Data?: Record<string, unknown>; CreationTimeUtc?: string };
    try {
      payload = JSON.parse(raw.toString('utf8'));
    } catch {
      return sendProblem(reply, 'MALFORMED_JSON', 'the body is not JSON');
    }
    const created = Date.parse(`${payload.CreationTimeUtc ?? ''}${/Z|[+-]\d\d:?\d\d$/.test(payload.CreationTimeUtc ?? '') ? '' : 'Z'}`);
    if (Number.isNaN(created) || Math.abs(Date.now() - created) > ls.iloq.webhook.maxAgeSeconds * 1000) {
      await audit(store, req.params.id, 'webhook.rejected', String(req.id), { reason: 'stale or missing CreationTimeUtc', creationTimeUtc: payload.CreationTimeUtc ?? null });
      return sendProblem(reply, 'INVALID_REQUEST', `CreationTimeUtc must be within ${ls.iloq.webhook.maxAgeSeconds} s of now (replay protection)`);
    }
    const counter = String(req.headers.counter ?? '');
    const subscription = String(req.headers['subscription-id'] ?? '');
    const event = String(req.headers['event-name'] ?? '');
    const keyId = typeof payload.Data?.FNKey_ID === 'string' ? payload.Data.FNKey_ID.toLowerCase() : undefined;
    if (counter) {
      // Counter is not incremented on resend: a repeat is acknowledged and ignored.
      const fresh = await store.db
        .insertInto('inbound_events')
        .values({ source: `iloq:${ls.id}:${subscription}`, event_id: counter, received_at: Date.now() })
        .onConflict((oc) => oc.columns(['source', 'event_id']).doNothing())
        .returning('event_id')
        .executeTakeFirst();
      if (!fresh) return reply.code(200).send({ status: 'duplicate' });
    }
    await audit(store, ls.id, 'webhook.iloq', String(req.id), { event, counter: counter || null, subscription: subscription || null, keyId: keyId ?? null });
    reply.code(200).send({ status: 'accepted' });
    if (keyId) {
      const persons = await effectiveness.personsWaitingOnKey(ls.id, keyId);
      for (const p of persons) void effectiveness.check(ls.id, p).catch((err: Error) => req.log.warn({ err: err.message, lockSystem: ls.id }, 'effectiveness check after webhook failed'));
    }
    return reply;
  });
}

function audit(store: Store, subject: string, action: string, correlationId: string, detail: unknown) {
  return auditAlone(store, [{ actor: `webhook:iloq:${subject}`, action, subject: `lock-system:${subject}`, detail, correlationId }]);
}
