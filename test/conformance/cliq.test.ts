import { cliqRig, onThisThread } from './rigs.ts';
import { runLockSystemConformance } from './lock-system.conformance.ts';

// CLIQ over HTTPS with mutual TLS *and* a bearer token (both required by the simulator), with
// revalidation enforced: the production-like setup.
runLockSystemConformance('CLIQ (mTLS + bearer)', () => cliqRig(onThisThread));
