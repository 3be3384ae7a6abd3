/** ASSA ABLOY CLIQ (CLIQ Web Manager, assumed contract v1): adapter, client and simulator. */
export { CliqLockSystem } from './adapter.ts';
export { CliqClient, cliqError, parseRetryAfter, type CliqClientOptions } from './client.ts';
export type { CliqAccessProfile, CliqEvent, CliqJob, CliqKey, CliqPerson, CliqValidity, CliqRevalidation } from './client.ts';
export { keyHorizon, knownOnKey } from './horizon.ts';
export { generatePki, hasPki, pkiPaths, type PkiFiles } from './pki.ts';
export {
  startCliqSimulator,
  runCliqSimulatorCli,
  DEMO_ACCESS_PROFILES,
  type CliqSimulator,
  type CliqSimulatorOptions,
  type CliqSimulatorTls,
  type CliqSimFaultsInput,
  type CliqFailMatching,
  type CliqRequestLogEntry,
} from './simulator.ts';
