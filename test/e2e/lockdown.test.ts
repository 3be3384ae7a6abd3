import { afterEach, describe, expect, it } from 'vitest';
import { LockdownService } from '../../src/lockdown/service.ts';
import { createLogger } from '../../src/log.ts';
import { startStack, waitFor, type Stack } from '../helpers/stack.ts';
import { newGroup, newUser } from './scim-user.ts';

describe('emergency lockdown', () => {
  let s: Stack;
  afterEach(async () => s?.stop());

  const setup = async (lockdown: Record<string, unknown> = {}, config: Record<string, unknown> = {}, backend: 'sqlite' | 'postgres' = 'sqlite') => {
    s = await startStack({ backend, config: { lockdown: { exemptions: { groups: ['Security Team'] }, ...lockdown }, ...config } });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await s.scim('POST', '/Users', newUser(`op${i}@example.com`))).body.id);
    const guard = (await s.scim('POST', '/Users', newUser('guard@example.com'))).body.id as string;
    await s.scim('POST', '/Groups', newGroup('Control Room', [...ids, guard]));
    await s.scim('POST', '/Groups', newGroup('Security Team', [guard]));
    await waitFor(() => [...ids, guard].every((id) => s.keyAccess(id)[0]?.includes('Control room')), { what: 'initial grants' });
    return { ids, guard };
  };

  it('revokes all but break-glass, holds grants, takes exemptions, reports progress, and the lift restores exactly the prior access', async () => {
    const { ids, guard } = await setup();
    const before = Object.fromEntries([...ids, guard].map((id) => [id, s.keyAccess(id)]));

    // Only the CRO may start it; refusals are audited.
    const body = { scope: { all: true }, reason: 'SOC: anomalous logins and cloned badges at Plant A' };
    expect((await s.admin('POST', '/lockdowns', body, s.auditorToken)).status).toBe(403);
    expect((await s.admin('POST', '/lockdowns', body)).status).toBe(403);
    expect((await s.admin('POST', '/lockdowns', { ...body, reason: 'x' }, s.croToken)).status).toBe(400);
    const started = await s.admin('POST', '/lockdowns', body, s.croToken);
    expect(started.status).toBe(202);
    const id = started.body.id as string;
    expect(started.body).toMatchObject({ state: 'active', created: true, startedBy: 'admin:cro' });

    await waitFor(() => ids.every((p) => s.keyAccess(p)[0]!.length === 0), { what: 'revocations under lockdown' });
    expect(s.keyAccess(guard)).toEqual([['Control room']]);

    // Starting the same scope again is the same lockdown.
    const again = await s.admin('POST', '/lockdowns', body, s.croToken);
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ id, created: false });

    // A joiner during the lockdown is recorded but not granted.
    const late = (await s.scim('POST', '/Users', newUser('late@example.com'))).body.id as string;
    await s.scim('PATCH', `/Groups/${(await s.scim('GET', '/Groups?filter=displayName eq "Control Room"')).body.Resources[0].id}`, {
      schemas: ['urn:ietf:params:scim:api:messages:2.0:PatchOp'],
      Operations: [{ op: 'add', path: 'members', value: [{ value: late }] }],
    });
    await waitFor(async () => (await s.admin('GET', `/persons/${late}`)).body.reconcilePending === null, { what: 'late joiner reconciled' });
    expect(s.keyAccess(late)).toEqual([]);

    // An exemption added to the running lockdown gives that person access back.
    expect((await s.admin('POST', `/lockdowns/${id}/exemptions`, { person: 'op0@example.com' }, s.croToken)).status).toBe(202);
    await waitFor(() => s.keyAccess(ids[0]!)[0]?.includes('Control room'), { what: 'exempted person restored' });

    const progress = await waitFor(
      async () => {
        const p = (await s.admin('GET', `/lockdowns/${id}`, undefined, s.auditorToken)).body;
        // Counted (markedAt) and drained: the persons marked after the first batch are planned too.
        return p.perLockSystem.iloq.accepted === 5 && p.markedAt && p.queuedPersons === 0 ? p : undefined;
      },
      { what: 'every revocation accepted' },
    );
    // The break-glass guard is not a target: nothing of theirs is to be revoked.
    expect(progress.perLockSystem.iloq).toMatchObject({ targeted: 5, accepted: 5, failed: 0, pending: 0 });

    // Readers asking at the same moment share one computation of the figures.
    const service = s.rt.engine.lockdowns;
    const figures = service.figures.bind(service);
    let computed = 0;
    service.figures = async (...args: Parameters<typeof figures>) => {
      computed++;
      return figures(...args);
    };
    const views = await Promise.all([1, 2, 3].map(() => s.admin('GET', `/lockdowns/${id}`, undefined, s.auditorToken)));
    expect(views.map((v) => v.body.id)).toEqual([id, id, id]);
    expect(computed).toBeLessThanOrEqual(1);
    service.figures = figures;

    // Server-Sent Events carry the same figures.
    const res = await fetch(`${s.url}/api/v1/lockdowns/${id}/events?intervalMs=200`, { headers: { authorization: `Bearer ${s.auditorToken}` } });
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    const reader = res.body!.getReader();
    const chunk = new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(chunk).toMatch(/^event: progress\ndata: \{/);
    expect(JSON.parse(chunk.split('data: ')[1]!)).toMatchObject({ id, state: 'active' });

    // Lift: everyone's normal access returns, the late joiner's too.
    expect((await s.admin('POST', `/lockdowns/${id}/lift`, {}, s.auditorToken)).status).toBe(403);
    expect((await s.admin('GET', `/lockdowns/${id}`, undefined, s.auditorToken)).body.state).toBe('active');
    const lifted = await s.admin('POST', `/lockdowns/${id}/lift`, {}, s.croToken);
    expect(lifted.body).toMatchObject({ state: 'lifted' });
    // Readers share figures for a moment, but never across this process's own lift.
    expect((await s.admin('GET', `/lockdowns/${id}`, undefined, s.auditorToken)).body.state).toBe('lifted');
    await waitFor(() => [...ids, late].every((p) => s.keyAccess(p)[0]?.includes('Control room')), { what: 'access restored' });
    for (const [p, access] of Object.entries(before)) expect(s.keyAccess(p)).toEqual(access);
    expect((await s.admin('POST', `/lockdowns/${id}/lift`, {}, s.croToken)).status).toBe(409);

    await waitFor(async () => (await s.admin('GET', `/lockdowns/${id}`, undefined, s.auditorToken)).body.liftMarkedAt, { what: 'everyone marked for the restore' });
    const actions = ((await s.admin('GET', '/audit?action=lockdown.*&limit=100')).body.items as Array<{ action: string }>).map((a) => a.action);
    expect(actions).toEqual(['lockdown.start', 'lockdown.marked', 'lockdown.exemption', 'lockdown.lift', 'lockdown.restore']);
    const restore = (await s.admin('GET', '/audit?action=lockdown.restore')).body.items[0];
    expect(restore.detail.figures.perLockSystem.iloq).toMatchObject({ targeted: 5, accepted: 5 });
    const marked = (await s.admin('GET', '/audit?action=lockdown.marked')).body.items[0];
    expect(marked.detail).toEqual({ targets: { iloq: 5 }, persons: 6 });
    expect((await s.admin('GET', `/lockdowns/${id}`, undefined, s.auditorToken)).body.markedAt).toEqual(expect.any(String));
    const refused = (await s.admin('GET', '/audit?action=admin.refused')).body.items;
    expect(refused.length).toBeGreaterThanOrEqual(3);
  });

  it('queues every affected person itself, past the first batch, without waiting for the sweeper', async () => {
    // The sweeper would hide a person the lockdown forgot to queue: here it would take ten minutes.
    const { ids, guard } = await setup({}, { reconcile: { sweepIntervalMs: 600_000, sweepAfterMs: 600_000 } });
    const started = await s.admin('POST', '/lockdowns', { scope: { all: true }, reason: 'Drill: revoke all, then restore' }, s.croToken);
    expect(started.status).toBe(202);
    await waitFor(() => ids.every((p) => s.keyAccess(p)[0]!.length === 0), { what: 'revocations of all five operators' });
    expect((await s.admin('POST', `/lockdowns/${started.body.id}/lift`, {}, s.croToken)).body).toMatchObject({ state: 'lifted' });
    await waitFor(() => [...ids, guard].every((p) => s.keyAccess(p)[0]?.includes('Control room')), { what: 'access of all six restored' });
  });

  it.each(['sqlite', 'postgres'] as const)('a start and a lift cut short before their second step are finished by the next lockdown check (%s)', async (backend) => {
    const { ids, guard } = await setup({}, { reconcile: { sweepIntervalMs: 600_000, sweepAfterMs: 600_000 } }, backend);
    // The first batch is read from what lockstep has recorded as accepted (the simulator has it a moment earlier).
    await waitFor(async () => {
      for (const p of [...ids, guard]) if (!(await s.admin('GET', `/persons/${p}`)).body.actual?.iloq?.access?.includes('Control room')) return false;
      return true;
    }, { what: 'the grants recorded as accepted' });
    // A service whose first batch has a head start of ten minutes: what a crash right after the
    // start's first transaction leaves behind (the lockdown and a first few marks, nothing else).
    const cutShort = new LockdownService({ store: s.rt.store, config: s.rt.config, log: createLogger('silent'), queues: s.rt.engine.queues, restDelayMs: 600_000 });
    const { lockdown } = await cutShort.start({ scope: { all: true }, reason: 'Drill: crash during the start' }, { name: 'admin:cro', correlationId: 'corr-cut-short' });
    const view = async () => (await s.admin('GET', `/lockdowns/${lockdown.id}`, undefined, s.auditorToken)).body;
    expect(await view()).toMatchObject({ state: 'active', markedAt: null, perLockSystem: {} });
    // The lockdown is in force at once: its first batch (four of the six holders) is revoked.
    await waitFor(async () => ids.filter((p) => s.keyAccess(p)[0]!.length === 0).length >= 3, { what: 'the first batch revoked' });
    // Started only now: left to the process that started it.
    expect(await s.rt.engine.lockdowns.resumeMarking()).toBe(0);
    expect(await s.rt.engine.lockdowns.resumeMarking(Date.now() + 10_000)).toBe(1);
    await waitFor(() => ids.every((p) => s.keyAccess(p)[0]!.length === 0), { what: 'every operator revoked' });
    expect(s.keyAccess(guard)).toEqual([['Control room']]);
    // (Readers share the figures for a moment: wait for a fresh view.)
    const done = await waitFor(async () => ((await view()).perLockSystem.iloq?.accepted === 5 ? view() : undefined), { what: 'figures with every revocation' });
    expect(done).toMatchObject({ markedAt: expect.any(String), perLockSystem: { iloq: { targeted: 5, accepted: 5 } } });
    // Once only.
    expect(await s.rt.engine.lockdowns.resumeMarking(Date.now() + 10_000)).toBe(0);
    expect((await s.admin('GET', '/audit?action=lockdown.marked')).body.items).toHaveLength(1);

    // The lift, cut short the same way: the first few persons it restores, then the rest once resumed.
    expect(await cutShort.lift(lockdown.id, { name: 'admin:cro', correlationId: 'corr-lift-cut-short' })).toEqual({ state: 'lifted' });
    await waitFor(async () => ids.filter((p) => s.keyAccess(p)[0]!.includes('Control room')).length >= 4, { what: 'the lift\'s first batch restored' });
    expect((await s.admin('GET', `/lockdowns/${lockdown.id}`, undefined, s.auditorToken)).body.liftMarkedAt).toBeNull();
    expect(await s.rt.engine.lockdowns.resumeMarking(Date.now() + 10_000)).toBe(1);
    await waitFor(() => ids.every((p) => s.keyAccess(p)[0]?.includes('Control room')), { what: 'everyone restored' });
    expect((await s.admin('GET', '/audit?action=lockdown.restore')).body.items).toHaveLength(1);
  });

  it('under dual control a second CRO must confirm the lift; starting never waits', async () => {
    const { ids } = await setup({ dualControl: true });
    const started = await s.admin('POST', '/lockdowns', { scope: { lockSystems: ['iloq'] }, reason: 'Substation intrusion alarm' }, s.croToken);
    expect(started.status).toBe(202);
    await waitFor(() => ids.every((p) => s.keyAccess(p)[0]!.length === 0), { what: 'revocations' });
    const first = await s.admin('POST', `/lockdowns/${started.body.id}/lift`, {}, s.croToken);
    expect(first.body).toMatchObject({ state: 'lift_requested' });
    expect((await s.admin('POST', `/lockdowns/${started.body.id}/lift`, {}, s.croToken)).status).toBe(403);
    // Still locked down while the lift waits for confirmation.
    expect(ids.every((p) => s.keyAccess(p)[0]!.length === 0)).toBe(true);
    const second = await s.admin('POST', `/lockdowns/${started.body.id}/lift`, {}, s.cro2Token);
    expect(second.body).toMatchObject({ state: 'lifted' });
    await waitFor(() => ids.every((p) => s.keyAccess(p)[0]?.includes('Control room')), { what: 'access restored' });
    const lift = (await s.admin('GET', '/audit?action=lockdown.lift')).body.items[0];
    expect(lift.detail).toMatchObject({ requestedBy: 'admin:cro', confirmedBy: 'admin:cro-deputy' });
  });

  it('a grant whose programming order failed is revoked by a lockdown that starts before its retry', async () => {
    s = await startStack();
    const id = (await s.scim('POST', '/Users', newUser('late@example.com'))).body.id as string;
    // The access is added, then the order answers 503 and asks for 2 s: the grant waits for its
    // retry with the access already on the key.
    s.sim.setFaults({ failMatching: { method: 'POST', path: '/Order', count: 1, status: 503 }, retryAfterSeconds: 2 });
    await s.scim('POST', '/Groups', newGroup('Control Room', [id]));
    const grant = () => s.t.store.db.selectFrom('operations').select(['state', 'attempts']).where('person_id', '=', id).where('kind', '=', 'grant').executeTakeFirst();
    await waitFor(async () => (await grant())?.state === 'pending' && Number((await grant())?.attempts) === 1, { what: 'the grant waiting for its retry' });
    expect(s.keyAccess(id)[0]).toContain('Control room');
    const started = await s.admin('POST', '/lockdowns', { scope: { all: true }, reason: 'Intrusion during a provisioning run' }, s.croToken);
    expect(started.status).toBe(202);
    // The grant finishes (it may be on the key already), then the lockdown's revoke takes it away.
    await waitFor(() => s.keyAccess(id)[0]!.length === 0, { what: 'the access revoked', timeoutMs: 10_000 });
    // The simulator has the change a moment before lockstep records the acceptance.
    const ops = () => s.t.store.db.selectFrom('operations').select(['kind', 'state']).where('person_id', '=', id).orderBy('seq').execute();
    await waitFor(async () => (await ops()).every((o) => o.state === 'accepted'), { what: 'both accepted' });
    expect(await ops()).toEqual([
      { kind: 'grant', state: 'accepted' },
      { kind: 'revoke', state: 'accepted' },
    ]);
    // Counted among what the lockdown had to revoke, though nothing was recorded on the key yet.
    expect((await s.admin('GET', `/lockdowns/${started.body.id}`)).body.perLockSystem.iloq).toMatchObject({ targeted: 1, accepted: 1 });
  });

  it('access a dead-lettered grant may have left (unsure) is taken away and counted by a lockdown', async () => {
    s = await startStack({ config: { apply: { retry: { attempts: 2, baseMs: 20, maxMs: 50 } } } });
    const id = (await s.scim('POST', '/Users', newUser('unsure@example.com'))).body.id as string;
    // The access is added, then ordering its programming fails until the attempts run out.
    s.sim.setFaults({ failMatching: { method: 'POST', path: '/Order', count: 1000, status: 503 }, retryAfterSeconds: null });
    await s.scim('POST', '/Groups', newGroup('Control Room', [id]));
    await waitFor(async () => (await s.admin('GET', `/persons/${id}`)).body.actual?.iloq?.unsure?.length > 0, { what: 'the dead grant recorded as unsure' });
    s.sim.clearFaults();
    expect(s.keyAccess(id)[0]).toContain('Control room');
    const started = await s.admin('POST', '/lockdowns', { scope: { all: true }, reason: 'Intrusion after a failed provisioning run' }, s.croToken);
    expect(started.status).toBe(202);
    await waitFor(() => s.keyAccess(id)[0]!.length === 0, { what: 'the unsure access revoked' });
    const progress = await waitFor(
      async () => {
        const p = (await s.admin('GET', `/lockdowns/${started.body.id}`)).body;
        // Targets are counted right after the first batch has started (markedAt).
        return p.perLockSystem.iloq?.accepted === 1 && p.markedAt ? p : undefined;
      },
      { what: 'the revocation accepted' },
    );
    expect(progress.perLockSystem.iloq).toMatchObject({ targeted: 1, accepted: 1 });
  });

  it('a lock system failing mid-lockdown recovers and every revocation still lands', async () => {
    // Enough attempts that a 1.2 s outage can never exhaust them, however the jobs are timed.
    const { ids } = await setup({}, { apply: { retry: { attempts: 30, baseMs: 50, maxMs: 400 } } });
    s.sim.setFaults({ unavailableForMs: 1200, retryAfterSeconds: null });
    const started = await s.admin('POST', '/lockdowns', { scope: { all: true }, reason: 'Lock system flapping during an incident' }, s.croToken);
    await waitFor(() => ids.every((p) => s.keyAccess(p)[0]!.length === 0), { what: 'revocations after the outage', timeoutMs: 20_000 });
    // The simulator has the change a moment before lockstep records the acceptance.
    const progress = await waitFor(
      async () => {
        const p = (await s.admin('GET', `/lockdowns/${started.body.id}`)).body;
        // Counted (markedAt) and drained: the persons marked after the first batch are planned too.
        return p.perLockSystem.iloq.accepted === 5 && p.markedAt && p.queuedPersons === 0 ? p : undefined;
      },
      { what: 'every revocation accepted' },
    );
    expect(progress.perLockSystem.iloq).toMatchObject({ accepted: 5, failed: 0, pending: 0 });
    const retries = (await s.admin('GET', '/audit?action=operation.retry&limit=1000')).body.items;
    expect(retries.length).toBeGreaterThan(0);
  });

  it('an expiry lifts it by itself', async () => {
    const { ids } = await setup();
    const started = await s.admin('POST', '/lockdowns', { scope: { all: true }, reason: 'Short drill, auto-expiring', expiresAt: new Date(Date.now() + 1500).toISOString() }, s.croToken);
    await waitFor(() => ids.every((p) => s.keyAccess(p)[0]!.length === 0), { what: 'revocations' });
    await waitFor(async () => (await s.admin('GET', `/lockdowns/${started.body.id}`)).body.state === 'expired', { what: 'expiry' });
    await waitFor(() => ids.every((p) => s.keyAccess(p)[0]?.includes('Control room')), { what: 'access restored after expiry' });
  });
});

describe('lockdown from the command line, with a notification sink', () => {
  let s: Stack;
  afterEach(async () => s?.stop());

  it('lockstep lockdown start|status|lift drives the API, shows progress and the sink is told', async () => {
    const { createServer } = await import('node:http');
    const { spawn } = await import('node:child_process');
    const received: Array<{ event: string; auth: string | undefined }> = [];
    const sink = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        received.push({ event: JSON.parse(body).event, auth: req.headers.authorization });
        res.end('ok');
      });
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const sinkUrl = `http://127.0.0.1:${(sink.address() as { port: number }).port}/hook`;
    try {
      s = await startStack({ config: { lockdown: { notify: { webhookUrl: sinkUrl, headers: { authorization: 'Bearer sink-secret' } } } } });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await s.scim('POST', '/Users', newUser(`c${i}@example.com`))).body.id);
      await s.scim('POST', '/Groups', newGroup('Control Room', ids));
      await waitFor(() => ids.every((id) => s.keyAccess(id)[0]?.includes('Control room')), { what: 'grants' });

      const cli = (args: string[]) =>
        new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
          const p = spawn(process.execPath, [new URL('../../src/cli.ts', import.meta.url).pathname, 'lockdown', ...args, '--url', s.url], {
            env: { ...process.env, LOCKSTEP_TOKEN: s.croToken },
          });
          let out = '';
          let err = '';
          p.stdout.on('data', (d) => (out += d));
          p.stderr.on('data', (d) => (err += d));
          p.on('exit', (code) => resolve({ code, out, err }));
        });
      expect((await cli(['start', '--all'])).code).toBe(2); // no reason
      const start = await cli(['start', '--all', '--reason', 'Drill from the command line']);
      expect(start.code).toBe(0);
      expect(start.out).toMatch(/LOCKDOWN STARTED: ([0-9a-f-]{36})/);
      expect(start.out).toMatch(/iloq\s+\[#{24}\] 100%\s+accepted 3\/3/);
      const id = /LOCKDOWN STARTED: ([0-9a-f-]{36})/.exec(start.out)![1]!;
      expect(ids.every((p) => s.keyAccess(p)[0]!.length === 0)).toBe(true);
      expect((await cli(['status', id])).out).toContain(`lockdown ${id}  state: active`);
      const lift = await cli(['lift', id]);
      expect(lift.code).toBe(0);
      expect(lift.out).toContain(`lockdown ${id} lifted`);
      await waitFor(() => ids.every((p) => s.keyAccess(p)[0]?.includes('Control room')), { what: 'restored' });
      await waitFor(() => received.length === 2, { what: 'both notifications' });
      expect(received).toEqual([
        { event: 'lockdown.started', auth: 'Bearer sink-secret' },
        { event: 'lockdown.lifted', auth: 'Bearer sink-secret' },
      ]);
      const notified = (await s.admin('GET', '/audit?action=lockdown.notified')).body.items;
      expect(notified.map((n: { detail: { outcome: string } }) => n.detail.outcome)).toEqual(['HTTP 200', 'HTTP 200']);
    } finally {
      sink.close();
    }
  });
});
