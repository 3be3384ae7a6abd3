import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { startCliqSimulator, type CliqSimulator } from '../../adapters/locks/cliq/simulator.ts';
import { startIloqSimulator, type IloqSimulator } from '../../adapters/locks/iloq/simulator.ts';
import { configSchema } from '../../src/config/schema.ts';
import { sha256Hex } from '../../src/http/admin-auth.ts';
import { createLogger } from '../../src/log.ts';
import { startLockstep, type Runtime } from '../../src/runtime.ts';
import { REDIS_URL, waitFor } from '../helpers/stack.ts';
import { freshStore, type TestStore } from '../helpers/stores.ts';
import { newGroup, newUser, patch } from './scim-user.ts';

describe('one policy over CLIQ and iLOQ', () => {
  let rt: Runtime | undefined;
  let cliq: CliqSimulator | undefined;
  let iloq: IloqSimulator | undefined;
  let t: TestStore | undefined;
  const prefix = `t${randomBytes(5).toString('hex')}`;
  afterEach(async () => {
    await rt?.close();
    await cliq?.close();
    await iloq?.close();
    await t?.cleanup();
    const r = new Redis(REDIS_URL);
    for await (const b of r.scanStream({ match: `${prefix}:*` })) if ((b as string[]).length) await r.del(...(b as string[]));
    await r.quit();
  });

  it('grants on both, and a leaver gets CLIQ validity "never" and an emptied access list, effective once the job is done', async () => {
    cliq = await startCliqSimulator({ port: 0, seed: 'demo', token: 'cliq-token', jobDelayMs: null });
    iloq = await startIloqSimulator({ port: 0, seed: 'demo', programDelayMs: 0 });
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
        { id: 'cliq', kind: 'cliq', cliq: { baseUrl: cliq.url, domainId: cliq.domainId, bearerToken: 'cliq-token', maxRevalidationHours: 24 }, apply: { retry: { attempts: 3, baseMs: 20, maxMs: 100 } } },
        { id: 'iloq', kind: 'iloq', iloq: { serverUrl: iloq.url, customerCode: iloq.credentials.customerCode, userName: iloq.credentials.userName, password: iloq.credentials.password } },
      ],
      policy: {
        rules: [
          {
            name: 'substation',
            when: { roles: ['Substation.Technician'] },
            grant: [
              { lockSystem: 'cliq', access: ['Substation A'] },
              { lockSystem: 'iloq', access: ['Main entrance'] },
            ],
          },
        ],
      },
      admin: { tokens: [{ name: 'ops', role: 'admin', sha256: sha256Hex(adminToken) }] },
      reconcile: { sweepIntervalMs: 300, sweepAfterMs: 500, effectiveCheckIntervalMs: 200 },
    });
    rt = await startLockstep(config, createLogger('silent'), { http: true, workers: true });
    const call = (method: string, path: string, body?: unknown, token = scimToken) =>
      fetch(`${rt!.url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/scim+json' }, body: body === undefined ? undefined : JSON.stringify(body) }).then(
        async (r) => ({ status: r.status, body: (await r.json().catch(() => undefined)) as any }),
      );
    // Entra sends app role assignments in `roles`.
    const user = await call('POST', '/scim/v2/Users', newUser('tech@example.com', { roles: [{ value: 'Substation.Technician', primary: false }] }));
    expect(user.status).toBe(201);
    const id = user.body.id as string;
    const serial = () => cliq!.state.keysOf(id)[0]!.serial;
    // Access and revalidation are two calls: wait for lockstep's acceptance of the whole grant.
    await waitFor(
      async () =>
        cliq!.state.keysOf(id).length === 1 &&
        cliq!.getKeyAccessNames(serial()).includes('Substation A') &&
        ((await call('GET', `/api/v1/persons/${id}`, undefined, adminToken)).body.operations as Array<{ lockSystem: string; kind: string; acceptedAt: string | null }>).some(
          (o) => o.lockSystem === 'cliq' && o.kind === 'grant' && o.acceptedAt,
        ),
      { what: 'CLIQ grant accepted' },
    );
    const key = cliq.state.requireKey(serial());
    expect(key.revalidation).toEqual({ enabled: true, periodHours: 24 });

    await call('PATCH', `/scim/v2/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'False' }));
    await waitFor(async () => (await call('GET', `/api/v1/persons/${id}`, undefined, adminToken)).body.actual?.cliq?.left === true, { what: 'CLIQ leave accepted' });
    const after = cliq.state.requireKey(serial());
    expect(after.validity).toEqual({ mode: 'never' });
    expect(after.accessProfileIds).toEqual([]);
    const exposure = (await call('GET', '/api/v1/exposure', undefined, adminToken)).body;
    expect(exposure.items.filter((i: { lockSystem: string }) => i.lockSystem === 'cliq')).toHaveLength(1);
    cliq.completeJobs();
    await waitFor(async () => (await call('GET', '/api/v1/exposure?lockSystem=cliq', undefined, adminToken)).body.keys === 0, { what: 'CLIQ leave effective' });
  });
});
