import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { startIloqSimulator, type IloqSimulator } from '../../adapters/locks/iloq/simulator.ts';
import { REDIS_URL, stackConfig, waitFor } from '../helpers/stack.ts';
import { freshStore, type TestStore } from '../helpers/stores.ts';
import { newGroup, newUser, patch } from './scim-user.ts';

const ROOT = new URL('../../', import.meta.url).pathname;

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('crash safety', () => {
  let child: ChildProcess | undefined;
  let sim: IloqSimulator | undefined;
  let t: TestStore | undefined;
  let prefix = '';
  afterEach(async () => {
    child?.kill('SIGKILL');
    await sim?.close();
    await t?.cleanup();
    const r = new Redis(REDIS_URL);
    for await (const batch of r.scanStream({ match: `${prefix}:*`, count: 1000 })) if ((batch as string[]).length) await r.del(...(batch as string[]));
    await r.quit();
  });

  it('killed with SIGKILL mid-apply, lockstep converges after restart: no duplicate grant, no missed revocation', async () => {
    sim = await startIloqSimulator({ port: 0, host: '127.0.0.1', seed: 'demo' });
    t = await freshStore('sqlite');
    prefix = `t${randomBytes(5).toString('hex')}`;
    const tokens = { scim: randomBytes(16).toString('hex'), admin: randomBytes(16).toString('hex'), auditor: randomBytes(16).toString('hex') };
    const port = await freePort();
    const cfg = stackConfig(sim, t, tokens, prefix, REDIS_URL, { server: { port }, reconcile: { jobLockMs: 1500, sweepIntervalMs: 300, sweepAfterMs: 500 } });
    const file = join(t.storeConfig.sqlite.path, '..', 'lockstep.json');
    writeFileSync(file, JSON.stringify(cfg)); // JSON is YAML
    const base = `http://127.0.0.1:${port}`;
    const start = async () => {
      child = spawn(process.execPath, [join(ROOT, 'src/cli.ts'), 'serve', '--config', file], { stdio: ['ignore', process.env.TEST_LOG_LEVEL ? 'inherit' : 'ignore', 'inherit'] });
      await waitFor(() => fetch(`${base}/healthz`).then((r) => r.ok), { what: 'lockstep to listen' });
    };
    const scim = (method: string, path: string, body?: unknown) =>
      fetch(`${base}/scim/v2${path}`, {
        method,
        headers: { authorization: `Bearer ${tokens.scim}`, 'content-type': 'application/scim+json' },
        body: JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, body: (await r.json().catch(() => undefined)) as any }));
    const access = (id: string) => {
      const p = sim!.state.findPersonByExternalId(id);
      return p ? sim!.state.keysOfPerson(p.Person_ID).map((k) => sim!.getKeyAccessNames(k.FNKey_ID)) : [];
    };

    await start();
    sim.setFaults({ latencyMs: 40 });
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await scim('POST', '/Users', newUser(`k${i}@example.com`))).body.id);
    const group = (await scim('POST', '/Groups', newGroup('Control Room', ids))).body.id as string;

    // Kill as soon as some, but not all, grants have landed.
    await waitFor(() => ids.some((id) => access(id)[0]?.includes('Control room')), { what: 'first grant' });
    child!.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    expect(ids.every((id) => access(id)[0]?.includes('Control room'))).toBe(false);

    await start();
    await waitFor(() => ids.every((id) => access(id)[0]?.includes('Control room')), { what: 'all grants after restart', timeoutMs: 30_000 });

    // Leavers, and another kill in the middle of them.
    const leavers = ids.slice(0, 6);
    for (const id of leavers) await scim('PATCH', `/Users/${id}`, patch({ op: 'replace', value: { active: false } }));
    await scim('PATCH', `/Groups/${group}`, patch({ op: 'remove', path: `members[value eq "${ids[11]}"]` }));
    await waitFor(() => leavers.some((id) => access(id)[0]?.length === 0), { what: 'first revocation' });
    child!.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    await start();
    await waitFor(() => [...leavers, ids[11]!].every((id) => access(id)[0]?.length === 0), { what: 'all revocations after restart', timeoutMs: 30_000 });
    for (const id of ids.slice(6, 11)) expect(access(id)).toEqual([['Control room']]);

    // No duplicate grant: each key got its access added exactly once.
    const adds = sim.requests.filter((r) => r.method === 'POST' && /\/Keys\/[^/]+\/SecurityAccesses$/i.test(r.path) && r.status < 300);
    const perKey = new Map<string, number>();
    for (const a of adds) perKey.set(a.path, (perKey.get(a.path) ?? 0) + 1);
    expect(Math.max(...perKey.values())).toBe(1);
    expect(perKey.size).toBe(12);

    child!.kill('SIGTERM');
    await new Promise((r) => child!.once('exit', r));
    child = undefined;
  }, 180_000);

  it('killed in the middle of a lockdown, lockstep resumes it after restart', async () => {
    sim = await startIloqSimulator({ port: 0, host: '127.0.0.1', seed: 'demo' });
    t = await freshStore('sqlite');
    prefix = `t${randomBytes(5).toString('hex')}`;
    const tokens = { scim: randomBytes(16).toString('hex'), admin: randomBytes(16).toString('hex'), auditor: randomBytes(16).toString('hex'), cro: randomBytes(16).toString('hex') };
    const port = await freePort();
    const cfg = stackConfig(sim, t, tokens, prefix, REDIS_URL, { server: { port }, reconcile: { jobLockMs: 1500, sweepIntervalMs: 300, sweepAfterMs: 500 } });
    const file = join(t.storeConfig.sqlite.path, '..', 'lockstep.json');
    writeFileSync(file, JSON.stringify(cfg));
    const base = `http://127.0.0.1:${port}`;
    const start = async () => {
      child = spawn(process.execPath, [join(ROOT, 'src/cli.ts'), 'serve', '--config', file], { stdio: ['ignore', process.env.TEST_LOG_LEVEL ? 'inherit' : 'ignore', 'inherit'] });
      await waitFor(() => fetch(`${base}/healthz`).then((r) => r.ok), { what: 'lockstep to listen' });
    };
    const req = (method: string, path: string, token: string, body?: unknown) =>
      fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, 'content-type': path.startsWith('/scim') ? 'application/scim+json' : 'application/json' },
        body: JSON.stringify(body),
      }).then(
        async (r) => ({ status: r.status, body: (await r.json().catch(() => undefined)) as any }),
      );
    const access = (id: string) => {
      const p = sim!.state.findPersonByExternalId(id);
      return p ? sim!.state.keysOfPerson(p.Person_ID).map((k) => sim!.getKeyAccessNames(k.FNKey_ID)) : [];
    };
    await start();
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await req('POST', '/scim/v2/Users', tokens.scim, newUser(`l${i}@example.com`))).body.id);
    await req('POST', '/scim/v2/Groups', tokens.scim, newGroup('Control Room', ids));
    await waitFor(() => ids.every((id) => access(id)[0]?.includes('Control room')), { what: 'grants' });
    sim.setFaults({ latencyMs: 60 });
    const started = await req('POST', '/api/v1/lockdowns', tokens.cro, { scope: { all: true }, reason: 'Kill test: resume after crash' });
    expect(started.status).toBe(202);
    await waitFor(() => ids.some((id) => access(id)[0]?.length === 0), { what: 'first revocation' });
    child!.kill('SIGKILL');
    await new Promise((r) => child!.once('exit', r));
    expect(ids.every((id) => access(id)[0]?.length === 0)).toBe(false);
    sim.setFaults({ latencyMs: 0 });
    await start();
    await waitFor(() => ids.every((id) => access(id)[0]?.length === 0), { what: 'every revocation after restart', timeoutMs: 60_000 });
    // Operations that were running at the kill are run again once their job locks lapse.
    const status = await waitFor(async () => {
      const r = await req('GET', `/api/v1/lockdowns/${started.body.id}`, tokens.cro);
      return r.body.perLockSystem.iloq.accepted === 10 ? r : undefined;
    }, { what: 'every revocation accepted in the record', timeoutMs: 60_000 });
    expect(status!.body).toMatchObject({ state: "active", perLockSystem: { iloq: { targeted: 10, accepted: 10, failed: 0, pending: 0 } } });
    child!.kill('SIGTERM');
    await new Promise((r) => child!.once('exit', r));
    child = undefined;
  }, 180_000);
});
