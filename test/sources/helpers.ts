import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { startIloqSimulator, type IloqSimulator } from '../../adapters/locks/iloq/simulator.ts';
import { configSchema, type Config } from '../../src/config/schema.ts';
import { sha256Hex } from '../../src/http/admin-auth.ts';
import { createLogger } from '../../src/log.ts';
import {
  IdentitySourceError,
  type Change,
  type DeltaResult,
  type HookRequest,
  type HookResult,
  type IdentitySource,
  type IdpKind,
  type MaintenanceResult,
  type SnapshotRecord,
  type SourceCapabilities,
  type SourceGroup,
  type SourceTask,
  type SourceUser,
} from '../../src/ports/identity-source.ts';
import { startLockstep, type Runtime } from '../../src/runtime.ts';
import { REDIS_URL } from '../helpers/stack.ts';
import { freshStore, type Backend, type TestStore } from '../helpers/stores.ts';

export const silentLog = pino({ level: 'silent' });

/** An in-memory IdentitySource: what it "has" is what readUser/readSnapshot return. */
export class FakeSource implements IdentitySource {
  readonly id: string;
  readonly kind: IdpKind;
  capabilities: SourceCapabilities = { hooks: true, delta: false, maintenance: false, recheckAfterMs: 0 };
  users = new Map<string, SourceUser>();
  groups = new Map<string, SourceGroup>();
  members = new Map<string, Set<string>>();
  membership: 'members' | 'user-groups' = 'members';
  reads: string[] = [];
  /** Thrown by the next reads (then cleared). */
  failNext: IdentitySourceError[] = [];
  /** Snapshot stops (throws) after this many user records. */
  breakSnapshotAfter: number | undefined;
  deltas: DeltaResult[] = [];
  cursorSeen: string[] = [];
  tasksRun: SourceTask[] = [];
  maintained = 0;
  maintainResult: MaintenanceResult = { actions: [], nextInMs: 3_600_000 };

  constructor(id: string, kind: IdpKind = 'okta') {
    this.id = id;
    this.kind = kind;
  }

  addUser(id: string, over: Partial<SourceUser> = {}, groups: string[] = []): SourceUser {
    const u: SourceUser = {
      sourceId: this.id,
      id,
      userName: `${id}@example.com`,
      active: true,
      email: `${id}@example.com`,
      roles: [],
      attributes: {},
      raw: { id },
      ...over,
    };
    this.users.set(id, u);
    for (const g of groups) this.addMember(g, id);
    return u;
  }

  addGroup(id: string, displayName = id): SourceGroup {
    const g = { sourceId: this.id, id, displayName, raw: { id, displayName } };
    this.groups.set(id, g);
    if (!this.members.has(id)) this.members.set(id, new Set());
    return g;
  }

  addMember(groupId: string, userId: string): void {
    if (!this.groups.has(groupId)) this.addGroup(groupId);
    this.members.get(groupId)!.add(userId);
  }

  removeMember(groupId: string, userId: string): void {
    this.members.get(groupId)?.delete(userId);
  }

  groupsOf(userId: string): Array<{ id: string; displayName: string }> {
    return [...this.members].filter(([, m]) => m.has(userId)).map(([gid]) => ({ id: gid, displayName: this.groups.get(gid)!.displayName }));
  }

  private fail(): void {
    const e = this.failNext.shift();
    if (e) throw e;
  }

  async start(): Promise<void> {}
  async close(): Promise<void> {}
  async ping(): Promise<void> {}
  handleHook(_req: HookRequest): HookResult {
    return { outcome: 'rejected', status: 404, changes: [], tasks: [] };
  }
  async readUser(userId: string): Promise<SourceUser | null> {
    this.reads.push(userId);
    this.fail();
    const u = this.users.get(userId);
    return u ? structuredClone({ ...u, groups: this.groupsOf(userId) }) : null;
  }
  async readGroup(groupId: string): Promise<SourceGroup | null> {
    this.fail();
    const g = this.groups.get(groupId);
    return g ? structuredClone(g) : null;
  }
  async *readGroupMembers(groupId: string): AsyncIterable<string[]> {
    yield [...(this.members.get(groupId) ?? [])];
  }
  async *readSnapshot(): AsyncIterable<SnapshotRecord> {
    this.fail();
    let n = 0;
    for (const u of this.users.values()) {
      if (this.breakSnapshotAfter !== undefined && n >= this.breakSnapshotAfter) throw new IdentitySourceError('retryable', 'snapshot broke midway');
      n++;
      yield { type: 'user', user: structuredClone(this.membership === 'user-groups' ? { ...u, groups: this.groupsOf(u.id) } : u) };
    }
    if (this.membership === 'members')
      for (const g of this.groups.values()) {
        yield { type: 'group', group: structuredClone(g) };
        const ids = [...(this.members.get(g.id) ?? [])];
        if (ids.length) yield { type: 'members', groupId: g.id, userIds: ids };
      }
    yield { type: 'complete', cursor: 'cursor-1', users: this.users.size, groups: this.groups.size, membership: this.membership };
  }
  async readDelta(cursor: string): Promise<DeltaResult> {
    this.cursorSeen.push(cursor);
    this.fail();
    return this.deltas.shift() ?? { status: 'ok', changes: [], cursor, more: false };
  }
  async maintain(): Promise<MaintenanceResult> {
    this.maintained++;
    return this.maintainResult;
  }
  async runTask(task: SourceTask): Promise<MaintenanceResult> {
    this.fail();
    this.tasksRun.push(task);
    return { actions: [`ran ${task.type}`], nextInMs: 3_600_000 };
  }

  change(kind: Change['kind'], userId: string | undefined, groupId?: string, eventId: string = randomUUID()): Change {
    return {
      kind,
      sourceId: this.id,
      ...(userId ? { userId } : {}),
      ...(groupId ? { groupId } : {}),
      dedupeKey: `${this.kind}:${this.id}:${eventId}:${kind}:${userId ?? ''}:${groupId ?? ''}`,
      eventId,
      eventType: kind,
      occurredAt: new Date().toISOString(),
      revocation: kind === 'user-deactivated' || kind === 'user-deleted' || kind === 'membership-removed',
    };
  }
}

export const OKTA_ORG = 'https://acme.okta.com';
export const OKTA_SECRET = 'okta-hook-secret-0123456789abcdef';
export const ENTRA_STATE = 'entra-client-state-0123456789';
export const ENTRA_TENANT = 'bf4b5b1e-7f3e-4b0a-9c29-4d1b7d0e6a11';

export function oktaSource(id = 'okta-prod', over: Record<string, unknown> = {}, okta: Record<string, unknown> = {}) {
  return {
    id,
    idp: 'okta',
    reconcileAtStart: false,
    okta: {
      orgUrl: OKTA_ORG,
      auth: { type: 'ssws', token: 'api-token' },
      hook: { secret: OKTA_SECRET },
      attributes: { site: 'profile.site' },
      http: { maxRetries: 0, maxWaitMs: 0, timeoutMs: 5000 },
      ...okta,
    },
    ...over,
  };
}

export function entraSource(id = 'entra-prod', over: Record<string, unknown> = {}) {
  return {
    id,
    idp: 'entra',
    reconcileAtStart: false,
    entra: {
      tenantId: ENTRA_TENANT,
      clientId: '24d3b144-21ae-4080-943f-7067b395b913',
      credential: { type: 'secret', clientSecret: 'app-secret' },
      hook: { clientState: ENTRA_STATE },
      http: { maxRetries: 0, maxWaitMs: 0, timeoutMs: 5000 },
    },
    ...over,
  };
}

/** An Okta user as GET /api/v1/users/{id} returns it. */
export function oktaUser(id: string, opts: { status?: string; login?: string; site?: string; employeeNumber?: string } = {}) {
  const login = opts.login ?? `${id}@acme.example`;
  return {
    id,
    status: opts.status ?? 'ACTIVE',
    created: '2025-01-01T00:00:00.000Z',
    lastUpdated: '2025-03-10T11:59:02.000Z',
    profile: {
      firstName: 'Ada',
      lastName: 'Lovelace',
      email: login,
      login,
      ...(opts.site ? { site: opts.site } : {}),
      ...(opts.employeeNumber ? { employeeNumber: opts.employeeNumber } : {}),
    },
    credentials: { provider: { type: 'OKTA', name: 'OKTA' } },
    _links: { self: { href: `${OKTA_ORG}/api/v1/users/${id}` } },
  };
}

export const oktaGroup = (id: string, name: string) => ({ id, type: 'OKTA_GROUP', profile: { name, description: null }, _links: {} });

/** An Okta event hook delivery (CloudEvents envelope of System Log events). */
export function oktaHook(events: Array<{ uuid?: string; type: string; user?: string; group?: string; published?: string }>, envelopeId = randomUUID()) {
  return JSON.stringify({
    eventType: 'com.okta.event_hook',
    eventTypeVersion: '1.0',
    cloudEventsVersion: '0.1',
    source: `${OKTA_ORG}/api/v1/eventHooks/whoql0HfiLGPWc8Jx0g3`,
    eventId: envelopeId,
    data: {
      events: events.map((e) => ({
        uuid: e.uuid ?? randomUUID(),
        published: e.published ?? new Date().toISOString(),
        eventType: e.type,
        version: '0',
        severity: 'INFO',
        displayMessage: e.type,
        actor: { id: '00uadmin', type: 'User', alternateId: 'admin@acme.example', displayName: 'Admin' },
        outcome: { result: 'SUCCESS', reason: null },
        target: [
          ...(e.group ? [{ id: e.group, type: 'UserGroup', alternateId: 'unknown', displayName: 'Group' }] : []),
          ...(e.user ? [{ id: e.user, type: 'User', alternateId: `${e.user}@acme.example`, displayName: 'User' }] : []),
        ],
      })),
    },
    eventTime: new Date().toISOString(),
    contentType: 'application/json',
  });
}

export interface SourceStack {
  rt: Runtime;
  sim: IloqSimulator;
  t: TestStore;
  url: string;
  config: Config;
  adminToken: string;
  auditorToken: string;
  croToken: string;
  post(path: string, body: string | undefined, headers?: Record<string, string>): Promise<{ status: number; body: any; text: string; headers: Headers }>;
  get(path: string, headers?: Record<string, string>): Promise<{ status: number; body: any; text: string; headers: Headers }>;
  admin(method: string, path: string, token?: string): Promise<{ status: number; body: any }>;
  personOf(sourceId: string, remoteId: string): Promise<string | undefined>;
  keyAccess(personId: string): string[][];
  keys(personId: string): Array<{ FNKey_ID: string }>;
  stop(): Promise<void>;
}

/** A real lockstep (store, Redis, iLOQ simulator, HTTP) with API-connected sources. */
export async function startSourceStack(opts: { backend?: Backend; sources: unknown[]; identity?: Record<string, unknown>; rules?: unknown[]; workers?: boolean; reconcile?: Record<string, unknown> }): Promise<SourceStack> {
  const sim = await startIloqSimulator({ port: 0, host: '127.0.0.1', seed: 'demo' });
  const t = await freshStore(opts.backend ?? 'sqlite');
  const prefix = `t${randomBytes(5).toString('hex')}`;
  const tokens = { admin: randomBytes(16).toString('hex'), auditor: randomBytes(16).toString('hex'), cro: randomBytes(16).toString('hex') };
  const config = configSchema.parse({
    server: { host: '127.0.0.1', port: 0, shutdownGraceMs: 2000 },
    store: t.storeConfig,
    redis: { url: REDIS_URL, prefix },
    log: { level: process.env.TEST_LOG_LEVEL ?? 'silent' },
    sources: opts.sources,
    identity: { driftCheckEvery: 0, ...opts.identity },
    lockSystems: [
      {
        id: 'iloq',
        kind: 'iloq',
        iloq: { serverUrl: sim.url, customerCode: sim.credentials.customerCode, userName: sim.credentials.userName, password: sim.credentials.password },
        apply: { concurrency: 8, retry: { attempts: 6, baseMs: 50, maxMs: 1000 }, requestTimeoutMs: 5000 },
      },
    ],
    policy: {
      rules: opts.rules ?? [
        { name: 'control-room', when: { groups: ['Control Room'] }, grant: [{ lockSystem: 'iloq', access: ['Control room'] }] },
        { name: 'plant-a', when: { attributes: { site: 'Plant A' } }, grant: [{ lockSystem: 'iloq', access: ['Main entrance'] }] },
      ],
    },
    admin: {
      tokens: [
        { name: 'ops', sha256: sha256Hex(tokens.admin), role: 'admin' },
        { name: 'audit', sha256: sha256Hex(tokens.auditor), role: 'auditor' },
        { name: 'cro', sha256: sha256Hex(tokens.cro), role: 'cro' },
      ],
    },
    reconcile: { concurrency: 8, sweepIntervalMs: 300, sweepAfterMs: 1000, jobLockMs: 2000, ...opts.reconcile },
  });
  const rt = await startLockstep(config, createLogger(config.log.level), { http: true, workers: opts.workers ?? true });
  // Let BullMQ finish initialising its connections: a stack stopped within milliseconds of its
  // start otherwise closes the engine's shared connection under BullMQ's version check.
  await Promise.all([rt.engine.queues.reconcile.waitUntilReady(), ...[...rt.engine.queues.apply.values()].map((q) => q.waitUntilReady()), rt.sources.runner?.queue.waitUntilReady()]);
  await new Promise((r) => setTimeout(r, 100));
  const url = rt.url!;
  const call = async (method: string, path: string, body: string | undefined, headers: Record<string, string>) => {
    const res = await fetch(url + path, { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {}
    return { status: res.status, body: parsed as any, text, headers: res.headers };
  };
  const keys = (personId: string) => {
    const p = sim.state.findPersonByExternalId(personId);
    return p ? (sim.state.keysOfPerson(p.Person_ID) as Array<{ FNKey_ID: string }>) : [];
  };
  return {
    rt,
    sim,
    t,
    url,
    config,
    adminToken: tokens.admin,
    auditorToken: tokens.auditor,
    croToken: tokens.cro,
    post: (path, body, headers = {}) => call('POST', path, body, headers),
    get: (path, headers = {}) => call('GET', path, undefined, headers),
    admin: async (method, path, token) => {
      const r = await call(method, `/api/v1${path}`, undefined, { authorization: `Bearer ${token ?? tokens.admin}` });
      return { status: r.status, body: r.body };
    },
    personOf: async (sourceId, remoteId) =>
      (await rt.store.db.selectFrom('source_users').select('person_id').where('source_id', '=', sourceId).where('remote_id', '=', remoteId).executeTakeFirst())?.person_id,
    keys,
    keyAccess: (personId) => keys(personId).map((k) => sim.getKeyAccessNames(k.FNKey_ID)),
    async stop() {
      await rt.close();
      await sim.close();
      await t.cleanup();
      const r = new Redis(REDIS_URL);
      const stream = r.scanStream({ match: `${prefix}:*`, count: 1000 });
      for await (const batch of stream) if ((batch as string[]).length) await r.del(...(batch as string[]));
      await r.quit();
    },
  };
}
