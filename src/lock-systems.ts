import { CliqLockSystem } from '../adapters/locks/cliq/adapter.ts';
import { IloqLockSystem } from '../adapters/locks/iloq/adapter.ts';
import type { LockSystemConfig } from './config/schema.ts';
import type { Logger } from './log.ts';
import type { LockSystem } from './ports/lock-system.ts';

/** Test seams of the adapters' constructors, by kind (see IloqLockSystem's constructor). */
export interface AdapterOptions {
  iloq?: { logSettleMs?: number; lockLogCap?: number };
}

/** The adapter for one configured lock system, on the thread that calls this. */
export function createLockSystem(cfg: LockSystemConfig, log?: Logger, opts: AdapterOptions = {}): LockSystem {
  switch (cfg.kind) {
    case 'iloq':
      return new IloqLockSystem(cfg, log, opts.iloq);
    case 'cliq':
      return new CliqLockSystem(cfg, log);
  }
}
