import { CliqLockSystem } from '../../adapters/locks/cliq/adapter.ts';
import { startCliqSimulator } from '../../adapters/locks/cliq/simulator.ts';
import { TOKEN, clientTls, configFor, mtlsServer } from '../cliq/helpers.ts';
import { runLockSystemConformance } from './lock-system.conformance.ts';

// CLIQ over HTTPS with mutual TLS *and* a bearer token (both required by the simulator), with
// revalidation enforced: the production-like setup.
runLockSystemConformance('CLIQ (mTLS + bearer)', async () => {
  const sim = await startCliqSimulator({ seed: 'demo', token: TOKEN, tls: mtlsServer() });
  const lock = new CliqLockSystem(configFor(sim, { bearerToken: TOKEN, tls: clientTls(), maxRevalidationHours: 24 }));
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
      await sim.close();
    },
  };
});
