import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { startCliqSimulator, type CliqSimulator } from '../../adapters/locks/cliq/simulator.ts';
import { configSchema } from '../../src/config/schema.ts';
import { sha256Hex } from '../../src/http/admin-auth.ts';
import { createLogger } from '../../src/log.ts';
import { startLockstep, type Runtime } from '../../src/runtime.ts';
import { REDIS_URL, startStack, waitFor, type Stack } from '../helpers/stack.ts';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';
import { newGroup, newUser, patch } from './scim-user.ts';

/**
 * "Keys not returned by the deadline go to the blocklist, when configured": a leaver's physical
 * key gets a collect task; past its deadline (0 hours here) lockstep reports the key lost, closes
 * the task as `system:overdue`, and lists the key as exposed until the blocklist reaches the locks.
 */
describe.each(BACKENDS)('overdue collect tasks → blocklist on iLOQ (%s)', (backend) => {
  let s: Stack;
  afterEach(async () => s?.stop());

  it('blocklists the physical key of a leaver that was not collected by the deadline', async () => {
    s = await startStack({
      backend,
      sim: { programDelayMs: null },
      config: { reconcile: { effectiveCheckIntervalMs: 300 }, iloqTasks: { collectDeadlineHours: 0, blocklistOverdue: true } },
    });
    const id = (await s.scim('POST', '/Users', newUser('grace@example.com'))).body.id as string;
    await s.scim('POST', '/Groups', newGroup('Control Room', [id]));
    // lockstep's acceptance, not the simulator's access: programming is ordered one call later.
    await waitFor(
      async () =>
        s.keyAccess(id)[0]?.includes('Control room') && (await s.admin('GET', `/persons/${id}`)).body.operations.some((o: { kind: string; acceptedAt: string | null }) => o.kind === 'grant' && o.acceptedAt),
      { what: 'grant accepted' },
    );
    s.sim.programOrderedKeys(); // the key carries Control room physically
    const keyId = s.keys(id)[0]!.FNKey_ID;

    await s.scim('PATCH', `/Users/${id}`, patch({ op: 'replace', value: { active: false } }));
    // AddKey, then the blocklist is ordered one call later.
    await waitFor(() => s.sim.state.record(keyId).blocklisted && s.sim.state.blacklistOrderedVersion === 1, { what: 'key on the iLOQ blocklist, ordered' });
    expect(s.sim.state.blacklists().BlacklistItems).toEqual([expect.objectContaining({ FNKey_ID: keyId, BlacklistVersion: 1 })]);
    expect(s.sim.state.blacklistOrderedVersion).toBe(1);

    // The collect task is closed by the system, with a note; nothing else is open.
    const done = await waitFor(async () => (await s.admin('GET', '/tasks?state=done')).body.items.find((t: { kind: string }) => t.kind === 'collect_key'), { what: 'task closed' });
    expect(done).toMatchObject({ personId: id, keyId, doneBy: 'system:overdue', note: expect.stringMatching(/reported lost on iloq \(blacklist-v1\)/) });
    expect((await s.admin('GET', '/tasks')).body.items).toEqual([]);

    // Exposed until the blocklist reaches the locks: the key is listed with the blocklist job, unbounded.
    const exposure = (await s.admin('GET', '/exposure?lockSystem=iloq')).body;
    expect(exposure.items).toEqual(
      expect.arrayContaining([expect.objectContaining({ personId: id, keyId, kind: 'blocklist', jobId: 'blacklist-v1', horizon: null })]),
    );
    expect(exposure.latestHorizon).toBeNull();
    const actions = (await s.admin('GET', `/audit?person=${id}`)).body.items.map((a: { action: string }) => a.action);
    expect(actions).toEqual(expect.arrayContaining(['task.raised', 'task.overdue', 'key.blocklisted']));
    expect(actions).not.toContain('task.overdue_failed');

    s.sim.deliverBlocklist();
    await waitFor(async () => (await s.admin('GET', '/exposure')).body.keys === 0, { what: 'blocklist effective' });
    const leave = (await s.admin('GET', `/persons/${id}`)).body.operations.find((o: { kind: string }) => o.kind === 'leave');
    expect(leave.effectiveAt).not.toBeNull();
    // One blocklisting only, however many passes ran.
    expect(s.sim.countRequests('POST', /Blacklists\/AddKey/)).toBe(1);
  });

  it('leaves the task open when blocklistOverdue is off', async () => {
    s = await startStack({ backend, sim: { programDelayMs: null }, config: { iloqTasks: { collectDeadlineHours: 0 } } });
    const id = (await s.scim('POST', '/Users', newUser('ada@example.com'))).body.id as string;
    await s.scim('POST', '/Groups', newGroup('Control Room', [id]));
    await waitFor(() => s.keyAccess(id)[0]?.includes('Control room'), { what: 'grant accepted' });
    await s.scim('PATCH', `/Users/${id}`, patch({ op: 'replace', value: { active: false } }));
    const open = await waitFor(async () => (await s.admin('GET', '/tasks')).body.items[0], { what: 'collect task' });
    expect(open).toMatchObject({ kind: 'collect_key', overdue: true });
    await new Promise((r) => setTimeout(r, 1200)); // two sweep intervals
    expect((await s.admin('GET', '/tasks')).body.items).toHaveLength(1);
    expect(s.sim.state.blacklistItems).toEqual([]);
  });
});

describe('overdue collect tasks → blocklist on CLIQ normal keys', () => {
  let rt: Runtime | undefined;
  let cliq: CliqSimulator | undefined;
  let t: TestStore | undefined;
  const prefix = `t${randomBytes(5).toString('hex')}`;
  afterEach(async () => {
    await rt?.close();
    await cliq?.close();
    await t?.cleanup();
    const r = new Redis(REDIS_URL);
    for await (const b of r.scanStream({ match: `${prefix}:*` })) if ((b as string[]).length) await r.del(...(b as string[]));
    await r.quit();
  });

  it('reports a normal key lost, raises the cylinder task, and clears exposure once the cylinders are visited', async () => {
    cliq = await startCliqSimulator({ port: 0, seed: 'demo', token: 'cliq-token', jobDelayMs: null });
    t = await freshStore('sqlite');
    const scimToken = randomBytes(8).toString('hex');
    const adminToken = randomBytes(8).toString('hex');
    const config = configSchema.parse({
      server: { port: 0 },
      store: t.storeConfig,
      redis: { url: REDIS_URL, prefix },
      log: { level: 'silent' },
      sources: [{ id: 'entra', idp: 'entra', scim: { tokenSha256: sha256Hex(scimToken) } }],
      lockSystems: [
        {
          id: 'cliq',
          kind: 'cliq',
          cliq: { baseUrl: cliq.url, domainId: cliq.domainId, bearerToken: 'cliq-token' },
          tasks: { collectDeadlineHours: 0, blocklistOverdue: true },
          apply: { retry: { attempts: 3, baseMs: 20, maxMs: 100 } },
        },
      ],
      policy: { rules: [{ name: 'substation', when: { roles: ['Substation.Technician'] }, grant: [{ lockSystem: 'cliq', access: ['Substation A'] }] }] },
      admin: { tokens: [{ name: 'ops', role: 'admin', sha256: sha256Hex(adminToken) }] },
      reconcile: { sweepIntervalMs: 300, sweepAfterMs: 500, effectiveCheckIntervalMs: 200 },
    });
    rt = await startLockstep(config, createLogger('silent'), { http: true, workers: true });
    const call = (method: string, path: string, body?: unknown, token = scimToken) =>
      fetch(`${rt!.url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/scim+json' }, body: body === undefined ? undefined : JSON.stringify(body) }).then(
        async (r) => ({ status: r.status, body: (await r.json().catch(() => undefined)) as any }),
      );
    const admin = (path: string) => call('GET', `/api/v1${path}`, undefined, adminToken);
    const id = (await call('POST', '/scim/v2/Users', newUser('tech@example.com', { roles: [{ value: 'Substation.Technician', primary: false }] }))).body.id as string;
    await waitFor(() => cliq!.state.keysOf(id).some((k) => cliq!.getKeyAccessNames(k.serial).includes('Substation A')), { what: 'CLIQ grant' });
    // The technician also holds a normal key (its access lives in the cylinders).
    const normal = cliq.seedKey({ holder: id, type: 'normal' }).serial;
    cliq.completeJobs();

    await call('PATCH', `/scim/v2/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'False' }));
    await waitFor(() => cliq!.state.requireKey(normal).blocked, { what: 'normal key reported lost' });
    const blocklistJob = cliq.state.jobs.find((j) => j.serial === normal && j.kind === 'blocklist')!;
    expect(blocklistJob.state).toBe('pending');

    const done = await waitFor(async () => (await admin('/tasks?state=done')).body.items.find((x: { kind: string }) => x.kind === 'collect_key'), { what: 'collect task closed' });
    expect(done).toMatchObject({ keyId: normal, doneBy: 'system:overdue' });
    // Someone must now visit the cylinders: that is the new open task.
    const open = (await admin('/tasks')).body.items;
    expect(open).toEqual([expect.objectContaining({ kind: 'blocklist_key', keyId: normal, personId: id, description: expect.stringContaining(blocklistJob.id) })]);

    const exposure = (await admin('/exposure?lockSystem=cliq')).body;
    expect(exposure.items).toEqual(expect.arrayContaining([expect.objectContaining({ keyId: normal, kind: 'blocklist', jobId: blocklistJob.id })]));

    cliq.visitCylinders();
    await waitFor(async () => !(await admin('/exposure?lockSystem=cliq')).body.items.some((i: { keyId: string }) => i.keyId === normal), { what: 'blocklist effective' });
    // The dynamic key's leave (validity never) still waits for its own update; the normal key is done.
    expect(cliq.state.jobs.filter((j) => j.kind === 'blocklist')).toHaveLength(1);
  });
});
