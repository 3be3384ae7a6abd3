import { lockSystemSchema, type IloqLockSystemConfig } from '../../src/config/schema.ts';
import type { ApplyRequest } from '../../src/ports/lock-system.ts';
import type { OperationKind } from '../../src/domain/types.ts';
import { IloqLockSystem } from '../../adapters/locks/iloq/adapter.ts';
import { startIloqSimulator, type IloqSimulator, type IloqSimulatorOptions } from '../../adapters/locks/iloq/simulator.ts';

export function configFor(sim: IloqSimulator, iloq: Record<string, unknown> = {}, apply: Record<string, unknown> = {}): IloqLockSystemConfig {
  return lockSystemSchema.parse({
    id: 'iloq-test',
    kind: 'iloq',
    iloq: {
      serverUrl: sim.url,
      customerCode: sim.credentials.customerCode,
      userName: sim.credentials.userName,
      password: sim.credentials.password,
      ...iloq,
    },
    apply: { requestTimeoutMs: 2_000, ...apply },
  }) as IloqLockSystemConfig;
}

export interface Rig {
  sim: IloqSimulator;
  lock: IloqLockSystem;
  close(): Promise<void>;
}

/** A simulator with the demo catalogue and an adapter pointed at it. */
export async function rig(opts: IloqSimulatorOptions = {}, iloq: Record<string, unknown> = {}): Promise<Rig> {
  const sim = await startIloqSimulator({ seed: 'demo', ...opts });
  const lock = new IloqLockSystem(configFor(sim, iloq));
  return {
    sim,
    lock,
    close: async () => {
      await lock.close();
      await sim.close();
    },
  };
}

let counter = 0;
export function op(kind: OperationKind, externalId: string, access: string[], person: Partial<ApplyRequest['person']> = {}): ApplyRequest {
  counter++;
  return {
    operationId: `op-${counter}`,
    kind,
    access,
    person: { personId: `p-${externalId}`, externalId, givenName: 'Ada', familyName: 'Lovelace', email: `${externalId}@example.test`, ...person },
  };
}
