import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.ts';
import { newGroup, newUser, patch } from './scim-user.ts';

describe('resilience of the pipeline', () => {
  let s: Stack;
  afterEach(async () => s?.stop());

  it('rides out 429s with Retry-After and 503s; one person\'s operations are accepted in plan order', async () => {
    s = await startStack({ config: { apply: { rateLimit: { max: 1000, durationMs: 1000 } } } });
    const u = (await s.scim('POST', '/Users', newUser('ada@example.com'))).body.id as string;
    const g = (await s.scim('POST', '/Groups', newGroup('Control Room', []))).body.id as string;
    await waitFor(() => s.sim.state.findPersonByExternalId(u) !== undefined || true);
    s.sim.setFaults({ rateLimitNext: 4, retryAfterSeconds: 1 });
    await s.scim('PATCH', `/Groups/${g}`, patch({ op: 'add', path: 'members', value: [{ value: u }] }));
    await waitFor(() => s.keyAccess(u)[0]?.includes('Control room'), { what: 'grant despite 429s' });
    expect(s.sim.countRequests('POST', /SecurityAccesses$/)).toBeGreaterThan(0);

    s.sim.setFaults({ unavailableNext: 3, retryAfterSeconds: null });
    await s.scim('PATCH', `/Groups/${g}`, patch({ op: 'remove', path: `members[value eq "${u}"]` }));
    await s.scim('PATCH', `/Groups/${g}`, patch({ op: 'add', path: 'members', value: [{ value: u }] }));
    await s.scim('PATCH', `/Users/${u}`, patch({ op: 'replace', value: { active: false } }));
    await waitFor(async () => (await s.admin('GET', `/persons/${u}`)).body.actual?.iloq?.left === true, { what: 'leave despite 503s', timeoutMs: 20_000 });
    expect(s.keyAccess(u)).toEqual([[]]);
    const ops = await s.t.store.db.selectFrom('operations').select(['seq', 'state', 'accepted_at', 'attempts']).where('person_id', '=', u).where('state', '=', 'accepted').orderBy('seq').execute();
    const accepted = ops.map((o) => Number(o.accepted_at));
    expect(accepted).toEqual([...accepted].sort((a, b) => a - b));
    const audit = (await s.admin('GET', `/audit?person=${u}&limit=1000`)).body.items as Array<{ action: string }>;
    expect(audit.some((a) => a.action === 'operation.rate_limited' || a.action === 'operation.retry')).toBe(true);
  });

  it('an event arriving while the person is being reconciled is not lost', async () => {
    s = await startStack();
    const rec = s.rt.engine.reconciler;
    const original = rec.reconcile.bind(rec);
    let slowOnce = true;
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    rec.reconcile = async (personId: string) => {
      if (slowOnce) {
        slowOnce = false;
        entered();
        await new Promise((r) => setTimeout(r, 400));
      }
      return original(personId);
    };
    const u = (await s.scim('POST', '/Users', newUser('late@example.com'))).body.id as string;
    await inside;
    // While that reconcile sleeps, the person joins the group. Its enqueue is deduplicated away
    // (the job is active); the dirty generation must bring it back.
    await s.scim('POST', '/Groups', newGroup('Control Room', [u]));
    await waitFor(() => s.keyAccess(u)[0]?.includes('Control room'), { what: 'the late membership to be applied' });
  });

  it('a change committed after the reconcile but before its job finished is planned at once, not left to the sweeper', async () => {
    // The sweeper is far away: only the queue can bring the change in time.
    s = await startStack({ config: { reconcile: { sweepIntervalMs: 60_000, sweepAfterMs: 60_000 } } });
    const g = (await s.scim('POST', '/Groups', newGroup('Control Room', []))).body.id as string;
    const rec = s.rt.engine.reconciler;
    const original = rec.reconcile.bind(rec);
    let u = '';
    let once = true;
    rec.reconcile = async (personId: string) => {
      const result = await original(personId);
      if (once && personId === u) {
        once = false;
        // Committed now, while this job is still active in BullMQ: its enqueue is swallowed.
        await s.scim('PATCH', `/Groups/${g}`, patch({ op: 'add', path: 'members', value: [{ value: u }] }));
      }
      return result;
    };
    u = (await s.scim('POST', '/Users', newUser('between@example.com'))).body.id as string;
    await waitFor(() => !once, { what: 'the first reconcile' });
    await waitFor(() => s.keyAccess(u)[0]?.includes('Control room'), { what: 'the membership added between commit and job end', timeoutMs: 10_000 });
  });

  it('Redis flushed mid-flow: the sweeper restores the work from the database', async () => {
    const redisUrl = 'redis://127.0.0.1:6379/7';
    s = await startStack({ redisUrl, sim: {} });
    s.sim.setFaults({ latencyMs: 100 });
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push((await s.scim('POST', '/Users', newUser(`u${i}@example.com`))).body.id);
    await s.scim('POST', '/Groups', newGroup('Control Room', ids));
    const r = new Redis(redisUrl);
    await r.flushdb();
    await r.quit();
    await waitFor(() => ids.every((id) => s.keyAccess(id)[0]?.includes('Control room')), { what: 'all grants after the flush', timeoutMs: 20_000 });
  });

  it('a permanent failure is dead-lettered, visible, counted, audited, and retryable from the API', async () => {
    // Policy names an access the lock system does not have (yet).
    s = await startStack({ config: { rules: [{ name: 'ghost', when: { groups: ['Ghost'] }, grant: [{ lockSystem: 'iloq', access: ['Ghost door'] }] }] } });
    const u = (await s.scim('POST', '/Users', newUser('ghost@example.com'))).body.id as string;
    await s.scim('POST', '/Groups', newGroup('Ghost', [u]));
    const failed = await waitFor(async () => {
      const r = await s.admin('GET', '/jobs/failed');
      return r.body.items?.length ? r.body : undefined;
    }, { what: 'dead letter' });
    expect(failed.items[0]).toMatchObject({ lockSystem: 'iloq', personId: u, error: expect.stringMatching(/^permanent: .*Ghost door/) });
    expect(failed.items[0].operations).toEqual([expect.objectContaining({ kind: 'grant', access: ['Ghost door'] })]);
    const metrics = await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${s.adminToken}` } }).then((r) => r.text());
    expect(metrics).toMatch(/lockstep_dead_letters_open 1/);
    expect(metrics).toMatch(/lockstep_dead_lettered_jobs_total\{lock_system="iloq"\} 1/);
    const audit = (await s.admin('GET', `/audit?action=job.dead_lettered`)).body.items;
    expect(audit).toHaveLength(1);

    // An auditor may look but not retry.
    expect((await s.admin('POST', `/jobs/failed/${failed.items[0].id}/retry`, undefined, s.auditorToken)).status).toBe(403);
    s.sim.addSecurityAccess('Ghost door');
    // The adapter re-reads iLOQ's catalogue for an unknown name at most once a second.
    await new Promise((r) => setTimeout(r, 1100));
    const retry = await s.admin('POST', `/jobs/failed/${failed.items[0].id}/retry`);
    expect(retry.status).toBe(202);
    await waitFor(() => s.keyAccess(u)[0]?.includes('Ghost door'), { what: 'retried grant' });
    expect((await s.admin('GET', '/jobs/failed')).body.total).toBe(0);
    expect((await s.admin('POST', `/jobs/failed/${failed.items[0].id}/retry`)).status).toBe(409);
    const refused = (await s.admin('GET', '/audit?action=admin.refused')).body.items;
    expect(refused).toHaveLength(1);
  });

  it('a grant that failed for good after adding its access: the access is revoked once unwanted', async () => {
    s = await startStack({ config: { apply: { retry: { attempts: 3, baseMs: 20, maxMs: 50 } } } });
    const u = (await s.scim('POST', '/Users', newUser('halfway@example.com'))).body.id as string;
    // The access is added, then ordering its programming fails (503) until the attempts run out.
    s.sim.setFaults({ failMatching: { method: 'POST', path: '/Order', count: 1000, status: 503 }, retryAfterSeconds: null });
    const g = (await s.scim('POST', '/Groups', newGroup('Control Room', [u]))).body.id as string;
    await waitFor(async () => (await s.admin('GET', '/jobs/failed')).body.items?.length === 1, { what: 'dead letter' });
    expect(s.keyAccess(u)[0]).toContain('Control room');
    s.sim.clearFaults();
    const person = (await s.admin('GET', `/persons/${u}`)).body;
    expect(person.actual.iloq).toMatchObject({ access: [], unsure: expect.arrayContaining(['Control room']) });
    const audit = (await s.admin('GET', '/audit?action=job.dead_lettered')).body.items;
    expect(audit[0].detail.unsure).toEqual(expect.arrayContaining(['Control room']));

    // Out of the group: nothing accepted is recorded on the key, but the access may be there.
    await s.scim('PATCH', `/Groups/${g}`, patch({ op: 'remove', path: `members[value eq "${u}"]` }));
    await waitFor(() => s.keyAccess(u)[0]!.length === 0, { what: 'the unsure access revoked' });
    await waitFor(async () => (await s.admin('GET', `/persons/${u}`)).body.actual.iloq.unsure === undefined, { what: 'settled' });
    // Settled: the next change plans nothing more for it.
    const revokes = async () => (await s.t.store.db.selectFrom('operations').select('id').where('person_id', '=', u).where('kind', '=', 'revoke').execute()).length;
    expect(await revokes()).toBe(1);
    await s.scim('PATCH', `/Users/${u}`, patch({ op: 'replace', value: { displayName: 'Half Way' } }));
    await waitFor(async () => (await s.t.store.db.selectFrom('dirty').select('person_id').where('person_id', '=', u).execute()).length === 0, { what: 'reconciled' });
    expect(await revokes()).toBe(1);
  });

  it('a grant refused before any change (unknown access) leaves nothing unsure', async () => {
    s = await startStack({ config: { rules: [{ name: 'ghost', when: { groups: ['Ghost'] }, grant: [{ lockSystem: 'iloq', access: ['Ghost door'] }] }] } });
    const u = (await s.scim('POST', '/Users', newUser('ghost2@example.com'))).body.id as string;
    await s.scim('POST', '/Groups', newGroup('Ghost', [u]));
    await waitFor(async () => (await s.admin('GET', '/jobs/failed')).body.items?.length === 1, { what: 'dead letter' });
    const state = await s.t.store.db.selectFrom('lock_state').select(['unsure']).where('person_id', '=', u).executeTakeFirst();
    expect(state?.unsure ?? null).toBeNull();
  });

  it('exhausted retries dead-letter the remaining operations', async () => {
    s = await startStack({ config: { apply: { retry: { attempts: 3, baseMs: 20, maxMs: 50 } } } });
    const u = (await s.scim('POST', '/Users', newUser('down@example.com'))).body.id as string;
    await waitFor(() => s.sim.state.findPersonByExternalId(u) === undefined);
    s.sim.setFaults({ unavailableForMs: 60_000, retryAfterSeconds: null });
    await s.scim('POST', '/Groups', newGroup('Control Room', [u]));
    const failed = await waitFor(async () => {
      const r = await s.admin('GET', '/jobs/failed');
      return r.body.items?.length ? r.body.items[0] : undefined;
    }, { what: 'dead letter after 3 attempts' });
    expect(failed).toMatchObject({ attempts: 3, error: expect.stringMatching(/^retryable: /) });
  });
});
