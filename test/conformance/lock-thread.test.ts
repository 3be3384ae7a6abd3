import { cliqRig, iloqRig, onLockThread } from './rigs.ts';
import { runLockSystemConformance } from './lock-system.conformance.ts';

// The daemon runs the adapters on the lock-system thread (src/lock-thread/): the port must hold
// there too, LockSystemError kinds, Retry-After and statuses included.
runLockSystemConformance('iLOQ on the lock-system thread', () => iloqRig(onLockThread));
runLockSystemConformance('CLIQ (mTLS + bearer) on the lock-system thread', () => cliqRig(onLockThread));
