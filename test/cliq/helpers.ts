import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lockSystemSchema, type CliqLockSystemConfig } from '../../src/config/schema.ts';
import type { ApplyRequest } from '../../src/ports/lock-system.ts';
import type { OperationKind } from '../../src/domain/types.ts';
import { CliqLockSystem } from '../../adapters/locks/cliq/adapter.ts';
import { generatePki, type PkiFiles } from '../../adapters/locks/cliq/pki.ts';
import { startCliqSimulator, type CliqSimulator, type CliqSimulatorOptions } from '../../adapters/locks/cliq/simulator.ts';

export const TOKEN = 'sim-token-123';

let pkiDir: string | undefined;
let pki: { good: PkiFiles; rogue: PkiFiles } | undefined;

/** Certificates made at test time: a CA with server and client certificates, and a second ("rogue") CA with its own client. */
export function testPki(): { good: PkiFiles; rogue: PkiFiles } {
  if (!pki) {
    pkiDir = mkdtempSync(join(tmpdir(), 'lockstep-cliq-pki-'));
    pki = { good: generatePki(pkiDir), rogue: generatePki(pkiDir, { prefix: 'rogue-', clientCn: 'intruder' }) };
    process.once('exit', () => rmSync(pkiDir!, { recursive: true, force: true }));
  }
  return pki;
}

export function mtlsServer(opts: { handshake?: boolean } = {}): NonNullable<CliqSimulatorOptions['tls']> {
  const { good } = testPki();
  return {
    cert: readFileSync(good.serverCert),
    key: readFileSync(good.serverKey),
    clientCa: readFileSync(good.caCert),
    ...(opts.handshake ? { clientCertCheck: 'handshake' as const } : {}),
  };
}

export function clientTls(which: 'good' | 'rogue' = 'good') {
  const p = testPki();
  const c = p[which];
  // The server certificate always comes from the good CA.
  return { certFile: c.clientCert, keyFile: c.clientKey, caFile: p.good.caCert };
}

export function configFor(sim: CliqSimulator, cliq: Record<string, unknown> = {}, apply: Record<string, unknown> = {}): CliqLockSystemConfig {
  return lockSystemSchema.parse({
    id: 'cliq-test',
    kind: 'cliq',
    cliq: { baseUrl: sim.url, domainId: sim.domainId, ...cliq },
    apply: { requestTimeoutMs: 2_000, ...apply },
  }) as CliqLockSystemConfig;
}

export interface Rig {
  sim: CliqSimulator;
  lock: CliqLockSystem;
  close(): Promise<void>;
}

/** Demo simulator (bearer token required) and an adapter pointed at it. */
export async function rig(opts: CliqSimulatorOptions = {}, cliq: Record<string, unknown> = {}): Promise<Rig> {
  const sim = await startCliqSimulator({ seed: 'demo', token: TOKEN, ...opts });
  const lock = new CliqLockSystem(configFor(sim, { bearerToken: TOKEN, ...cliq }));
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
