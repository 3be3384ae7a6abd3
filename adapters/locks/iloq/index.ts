/** iLOQ 5 Series (Public API v2): adapter, client and simulator. */
export { IloqLockSystem } from './adapter.ts';
export { IloqClient, parseRetryAfter, type IloqClientOptions, type IloqSession } from './client.ts';
export {
  startIloqSimulator,
  runIloqSimulatorCli,
  DEMO_CREDENTIALS,
  type IloqSimulator,
  type IloqSimulatorOptions,
  type SimFaultsInput,
  type RequestLogEntry,
} from './simulator.ts';
export type { SimFailMatching } from './simulator.ts';
