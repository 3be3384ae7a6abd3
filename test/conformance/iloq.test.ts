import { iloqRig, onThisThread } from './rigs.ts';
import { runLockSystemConformance } from './lock-system.conformance.ts';

runLockSystemConformance('iLOQ', () => iloqRig(onThisThread));
