import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.ts';
import { newGroup, newUser, patch } from './scim-user.ts';

const SIGN_KEY = 'EFE3FD29-0B3E-405F-98EE-0CC5385DF5D5';

describe('iLOQ webhooks on /hooks/iloq/{id}', () => {
  let s: Stack;
  afterEach(async () => s?.stop());

  const deliver = (body: string, headers: Record<string, string> = {}, key = SIGN_KEY) =>
    fetch(`${s.url}/hooks/iloq/iloq`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json; charset=utf-8',
        'webhook-signature': createHmac('sha256', key).update(body, 'utf8').digest('hex'),
        'event-name': 'device_log_arrived',
        'subscription-id': 'sub-1',
        ...headers,
      },
      body,
    });

  it('verifies the signature and freshness, dedupes on Counter, and turns a programmed key into an effective revocation at once', async () => {
    // The periodic check is slowed right down so only the webhook can explain an early "effective".
    s = await startStack({ sim: { programDelayMs: null }, config: { reconcile: { effectiveCheckIntervalMs: 3_600_000 }, iloqWebhook: { signKey: SIGN_KEY, maxAgeSeconds: 300 } } });
    const id = (await s.scim('POST', '/Users', newUser('ada@example.com'))).body.id as string;
    await s.scim('POST', '/Groups', newGroup('Control Room', [id]));
    await waitFor(() => s.keyAccess(id)[0]?.includes('Control room'), { what: 'grant' });
    await s.scim('PATCH', `/Users/${id}`, patch({ op: 'replace', value: { active: false } }));
    await waitFor(async () => (await s.admin('GET', '/exposure')).body.keys === 1, { what: 'leave accepted, not yet effective' });
    const keyId = s.keys(id)[0]!.FNKey_ID;

    const now = new Date().toISOString().replace(/\.\d+Z$/, '');
    const body = JSON.stringify({ Data: { FNKey_ID: keyId.toUpperCase(), DeviceLogTypeMask: 32768, GoingDateUtc: now }, CreationTimeUtc: now });
    // Bad signature, stale delivery: refused and audited, nothing done.
    expect((await deliver(body, { counter: '1' }, 'wrong-key')).status).toBe(401);
    const stale = JSON.stringify({ Data: { FNKey_ID: keyId }, CreationTimeUtc: '2020-01-01T00:00:00' });
    expect((await deliver(stale, { counter: '2' })).status).toBe(400);
    expect((await fetch(`${s.url}/hooks/iloq/nope`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } })).status).toBe(404);

    s.sim.programOrderedKeys();
    const ok = await deliver(body, { counter: '7' });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ status: 'accepted' });
    await waitFor(async () => (await s.admin('GET', '/exposure')).body.keys === 0, { what: 'effective after the webhook' });
    const again = await deliver(body, { counter: '7' });
    expect(await again.json()).toEqual({ status: 'duplicate' });

    const audit = ((await s.admin('GET', '/audit?action=webhook.*&limit=100')).body.items as Array<{ action: string; detail: { reason?: string } }>).map((a) => `${a.action}${a.detail.reason ? `:${a.detail.reason}` : ''}`);
    expect(audit).toEqual(['webhook.rejected:signature', 'webhook.rejected:stale or missing CreationTimeUtc', 'webhook.iloq']);
  });
});
