import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { startIloqSimulator, type IloqSimulator, type IloqSimulatorOptions } from '../../adapters/locks/iloq/simulator.ts';
import { configSchema, type Config } from '../../src/config/schema.ts';
import { sha256Hex } from '../../src/http/admin-auth.ts';
import { createLogger } from '../../src/log.ts';
import { startLockstep, type Runtime } from '../../src/runtime.ts';
import { freshStore, type Backend, type TestStore } from './stores.ts';

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface StackOptions {
  backend?: Backend;
  sim?: IloqSimulatorOptions;
  /**
   * Partial config merged over the defaults below (shallow per section). Also: `rules`,
   * `iloqWebhook`, `iloqTasks` (the iLOQ lock system's `tasks` section), `lockdown`.
   */
  config?: Record<string, unknown>;
  /** Redis URL (e.g. another db index for tests that flush). */
  redisUrl?: string;
  workers?: boolean;
}

export interface Stack {
  rt: Runtime;
  sim: IloqSimulator;
  t: TestStore;
  url: string;
  scimToken: string;
  adminToken: string;
  auditorToken: string;
  croToken: string;
  cro2Token: string;
  config: Config;
  scim(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Headers }>;
  admin(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: any; headers: Headers }>;
  /** Access names on every key of the person (by lockstep person id) in the simulator. */
  keyAccess(personId: string): string[][];
  keys(personId: string): Array<{ FNKey_ID: string; ExpireDate?: unknown }>;
  stop(): Promise<void>;
}

export async function waitFor<T>(fn: () => Promise<T> | T, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<T> {
  // Generous: CI machines are small and busy; a test that truly hangs still fails.
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${opts.what ?? 'condition'}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}

/** Builds the config the stack runs with; exported for tests that start lockstep in a child process. */
export function stackConfig(
  sim: IloqSimulator,
  t: TestStore,
  tokens: { scim: string; admin: string; auditor: string; cro?: string; cro2?: string },
  prefix: string,
  redisUrl: string,
  extra: Record<string, unknown> = {},
): Config {
  return configSchema.parse({
    server: { host: '127.0.0.1', port: 0, shutdownGraceMs: 2000, ...(extra.server as object) },
    store: t.storeConfig,
    redis: { url: redisUrl, prefix },
    log: { level: process.env.TEST_LOG_LEVEL ?? 'silent' },
    sources: [{ id: 'okta', idp: 'okta', scim: { tokenSha256: sha256Hex(tokens.scim), rateLimitPerSecond: 10_000 } }],
    lockSystems: [
      {
        id: 'iloq',
        kind: 'iloq',
        iloq: {
          serverUrl: sim.url,
          customerCode: sim.credentials.customerCode,
          userName: sim.credentials.userName,
          password: sim.credentials.password,
          ...(extra.iloqWebhook ? { webhook: extra.iloqWebhook } : {}),
        },
        apply: { concurrency: 8, retry: { attempts: 6, baseMs: 50, maxMs: 1000 }, requestTimeoutMs: 5000, ...(extra.apply as object) },
        ...(extra.iloqTasks ? { tasks: extra.iloqTasks } : {}),
      },
    ],
    policy: {
      rules: [
        { name: 'control-room', when: { groups: ['Control Room'] }, grant: [{ lockSystem: 'iloq', access: ['Control room'] }] },
        { name: 'plant-a', when: { attributes: { site: 'Plant A' } }, grant: [{ lockSystem: 'iloq', access: ['Main entrance'] }] },
        ...((extra.rules as unknown[]) ?? []),
      ],
    },
    admin: {
      tokens: [
        { name: 'ops', sha256: sha256Hex(tokens.admin), role: 'admin' },
        { name: 'audit', sha256: sha256Hex(tokens.auditor), role: 'auditor' },
        ...(tokens.cro ? [{ name: 'cro', sha256: sha256Hex(tokens.cro), role: 'cro' }] : []),
        ...(tokens.cro2 ? [{ name: 'cro-deputy', sha256: sha256Hex(tokens.cro2), role: 'cro' }] : []),
      ],
    },
    ...(extra.lockdown ? { lockdown: extra.lockdown } : {}),
    ...(extra.lockSystemThread !== undefined ? { lockSystemThread: extra.lockSystemThread } : {}),
    reconcile: { concurrency: 8, sweepIntervalMs: 500, sweepAfterMs: 1000, jobLockMs: 2000, ...(extra.reconcile as object) },
  });
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const sim = await startIloqSimulator({ port: 0, host: '127.0.0.1', seed: 'demo', ...opts.sim });
  const t = await freshStore(opts.backend ?? 'sqlite');
  const prefix = `t${randomBytes(5).toString('hex')}`;
  const tokens = {
    scim: randomBytes(16).toString('hex'),
    admin: randomBytes(16).toString('hex'),
    auditor: randomBytes(16).toString('hex'),
    cro: randomBytes(16).toString('hex'),
    cro2: randomBytes(16).toString('hex'),
  };
  const redisUrl = opts.redisUrl ?? REDIS_URL;
  const config = stackConfig(sim, t, tokens, prefix, redisUrl, opts.config);
  // The stack's own store connection is replaced by the runtime's; close the test one first.
  const log = createLogger(config.log.level);
  const rt = await startLockstep(config, log, { http: true, workers: opts.workers ?? true });
  const url = rt.url!;
  const call = async (method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/scim+json' } : {}), ...headers },
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {}
    return { status: res.status, body: parsed as any, headers: res.headers };
  };
  const keys = (personId: string) => {
    const p = sim.state.findPersonByExternalId(personId);
    return p ? (sim.state.keysOfPerson(p.Person_ID) as Array<{ FNKey_ID: string; ExpireDate?: unknown }>) : [];
  };
  return {
    rt,
    sim,
    t,
    url,
    config,
    scimToken: tokens.scim,
    adminToken: tokens.admin,
    auditorToken: tokens.auditor,
    croToken: tokens.cro,
    cro2Token: tokens.cro2,
    scim: (m, p, b, h) => call(m, `/scim/v2${p}`, tokens.scim, b, h),
    admin: (m, p, b, tok) => call(m, `/api/v1${p}`, tok ?? tokens.admin, b, b !== undefined ? { 'content-type': 'application/json' } : {}),
    keys,
    keyAccess: (personId) => keys(personId).map((k) => sim.getKeyAccessNames(k.FNKey_ID)),
    async stop() {
      await rt.close();
      await sim.close();
      await t.cleanup();
      const r = new Redis(redisUrl);
      const stream = r.scanStream({ match: `${prefix}:*`, count: 1000 });
      for await (const batch of stream) if ((batch as string[]).length) await r.del(...(batch as string[]));
      await r.quit();
    },
  };
}
