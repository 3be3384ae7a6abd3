import { IloqLockSystem } from '../../adapters/locks/iloq/adapter.ts';
import { startIloqSimulator } from '../../adapters/locks/iloq/simulator.ts';
import { SecurityAccessType } from '../../adapters/locks/iloq/wire.ts';
import { configFor } from '../iloq/helpers.ts';
import { runLockSystemConformance } from './lock-system.conformance.ts';

/** Login, session and log-query calls are not changes. */
const NOT_A_CHANGE = /\/(Url\/GetUrl|CreateSession|SetLockgroup|LockLogs\/.*)$/i;

runLockSystemConformance('iLOQ', async () => {
  const sim = await startIloqSimulator({ seed: 'demo' });
  // Events are read up to "now" here (no settle delay) so that the test need not wait.
  const lock = new IloqLockSystem(configFor(sim), undefined, { logSettleMs: 0 });
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
      await sim.close();
    },
  };
});
