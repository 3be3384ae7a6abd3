/**
 * The conformance rigs of the two adapters, each with its simulator over real HTTP. `place` puts
 * the adapter on this thread (as the adapter tests build it) or on the lock-system thread (as the
 * daemon runs it), so that the same suite checks the port both ways.
 */
import { pino } from 'pino';
import { startCliqSimulator } from '../../adapters/locks/cliq/simulator.ts';
import { startIloqSimulator } from '../../adapters/locks/iloq/simulator.ts';
import { SecurityAccessType } from '../../adapters/locks/iloq/wire.ts';
import type { LockSystemConfig } from '../../src/config/schema.ts';
import { type AdapterOptions, createLockSystem } from '../../src/lock-systems.ts';
import { LockSystemThread } from '../../src/lock-thread/thread.ts';
import type { LockSystem } from '../../src/ports/lock-system.ts';
import { TOKEN, clientTls, configFor as cliqConfig, mtlsServer } from '../cliq/helpers.ts';
import { configFor } from '../iloq/helpers.ts';
import type { ConformanceRig } from './lock-system.conformance.ts';

export type Placement = (cfg: LockSystemConfig, opts: AdapterOptions) => { lock: LockSystem; stop: () => Promise<void> };

export const onThisThread: Placement = (cfg, opts) => ({ lock: createLockSystem(cfg, undefined, opts), stop: async () => {} });

export const onLockThread: Placement = (cfg, opts) => {
  const thread = new LockSystemThread([cfg], pino({ level: 'silent' }), { adapterOptions: opts });
  return { lock: thread.lockSystems().get(cfg.id)!, stop: () => thread.stop() };
};

/** Login, session and log-query calls are not changes. */
const NOT_A_CHANGE = /\/(Url\/GetUrl|CreateSession|SetLockgroup|LockLogs\/.*)$/i;

export async function iloqRig(place: Placement): Promise<ConformanceRig> {
  const sim = await startIloqSimulator({ seed: 'demo' });
  // Events are read up to "now" here (no settle delay) so that the test need not wait.
  const { lock, stop } = place(configFor(sim), { iloq: { logSettleMs: 0 } });
  const managed = (keyId: string) =>
    sim.getKeyAccessNames(keyId).filter((n) => sim.state.findAccess(n)?.Type === SecurityAccessType.api);
  return {
    lock,
    access: ['Main entrance', 'Server room'],
    simAccess: managed,
    writes: () => sim.requests.filter((q) => q.method !== 'GET' && q.status < 300 && !NOT_A_CHANGE.test(q.path)).length,
    clearLog: () => sim.clearRequestLog(),
    rateLimitNext: (n, s) => sim.setFaults({ rateLimitNext: n, retryAfterSeconds: s }),
    // grant = POST access 1, POST access 2, CanOrder, Order: break it at the second POST.
    failMidGrant: () => sim.setFaults({ failMatching: { method: 'POST', path: '/SecurityAccesses', skip: 1 } }),
    clearFaults: () => sim.clearFaults(),
    expireAuth: () => sim.expireSessions(),
    authExpiry: 'transparent',
    completeProgramming: () => {
      sim.programOrderedKeys();
    },
    seedPersonWithAccess: (ext, names) => {
      sim.addPerson({ ExternalPersonId: ext });
      return sim.addKey({ person: ext, access: names }).FNKey_ID;
    },
    seedUnmanagedKey: (ext) => {
      // A Standard access given in iLOQ Manager: not changeable through the API.
      sim.addPerson({ ExternalPersonId: ext });
      return { keyId: sim.addKey({ person: ext, access: ['Manual master'] }).FNKey_ID, expectSkipped: false };
    },
    unmanagedIntact: (keyId) => sim.getKeyAccessNames(keyId).includes('Manual master'),
    seedLeaver: (ext) => {
      sim.addPerson({ ExternalPersonId: ext });
      const phone = sim.addKey({ person: ext, keyTypeMask: 6, access: ['Main entrance'] });
      const physical = sim.addKey({ person: ext, access: ['Main entrance'] });
      return { noTaskKeyId: phone.FNKey_ID, taskKeyId: physical.FNKey_ID };
    },
    blocklisted: (keyId) => sim.state.record(keyId).blocklisted,
    deliverBlocklist: () => {
      sim.deliverBlocklist();
    },
    injectEvent: (keyId, lockId, result) => {
      sim.addLockLog({ FNKey_ID: keyId, FLock_ID: lockId, AccessTypeMask: result === 'granted' ? 2052 : 2049 });
    },
    close: async () => {
      await lock.close();
      await stop();
      await sim.close();
    },
  };
}

// CLIQ over HTTPS with mutual TLS *and* a bearer token (both required by the simulator), with
// revalidation enforced: the production-like setup.
export async function cliqRig(place: Placement): Promise<ConformanceRig> {
  const sim = await startCliqSimulator({ seed: 'demo', token: TOKEN, tls: mtlsServer() });
  const { lock, stop } = place(cliqConfig(sim, { bearerToken: TOKEN, tls: clientTls(), maxRevalidationHours: 24 }), {});
  return {
    lock,
    access: ['Main entrance', 'Server room'],
    simAccess: (serial) => sim.getKeyAccessNames(serial),
    writes: () => sim.countWrites(),
    clearLog: () => sim.clearRequestLog(),
    rateLimitNext: (n, s) => sim.setFaults({ rateLimitNext: n, retryAfterSeconds: s }),
    // grant = PUT access-profiles then PUT revalidation: break it between the two.
    failMidGrant: () => sim.setFaults({ failMatching: { method: 'PUT', path: '/revalidation' } }),
    clearFaults: () => sim.clearFaults(),
    expireAuth: () => sim.expireToken(),
    authExpiry: 'auth_error',
    completeProgramming: () => {
      sim.completeJobs();
      sim.visitCylinders();
    },
    seedPersonWithAccess: (ext, names) => {
      sim.seedPerson({ externalId: ext });
      return sim.seedKey({ holder: ext, type: 'dynamic', access: names }).serial;
    },
    seedUnmanagedKey: (ext) => {
      sim.seedPerson({ externalId: ext });
      return { keyId: sim.seedKey({ holder: ext, type: 'normal' }).serial, expectSkipped: true };
    },
    unmanagedIntact: (serial) => {
      const k = sim.state.requireKey(serial);
      return k.accessProfileIds.length === 0 && k.validity.mode === 'always' && k.pendingJobs === 0 && !sim.state.jobs.some((j) => j.serial === serial);
    },
    seedLeaver: (ext) => {
      sim.seedPerson({ externalId: ext });
      const dynamic = sim.seedKey({ holder: ext, type: 'dynamic', access: ['Main entrance'] });
      const normal = sim.seedKey({ holder: ext, type: 'normal' });
      return { noTaskKeyId: dynamic.serial, taskKeyId: normal.serial };
    },
    blocklisted: (serial) => sim.state.requireKey(serial).blocked,
    deliverBlocklist: () => {
      sim.visitCylinders();
    },
    injectEvent: (serial, lockId, result) => {
      sim.addEvent({ serial, cylinderId: lockId, result });
    },
    close: async () => {
      await lock.close();
      await stop();
      await sim.close();
    },
  };
}
