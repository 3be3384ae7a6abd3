/**
 * In-memory model behind the CLIQ simulator: domains, access profiles, persons, keys, programming
 * jobs and audit events, with the rules of the assumed contract (cliq-contract.md). Plain data
 * and rules, no HTTP (simulator.ts serves it).
 *
 * Rules the contract leaves open, chosen here:
 * - Every accepted change that alters a key creates one job (kind access | validity |
 *   revalidation | blocklist) and increments the key's `pendingJobs`; a PUT that changes nothing
 *   creates no job and answers `job: null`. A second report-lost answers the existing blocklist
 *   job (no new job).
 * - A key update (control call, or `jobDelayMs` after the job was created) completes the key's
 *   pending access/validity/revalidation jobs at once: state `done`, `doneAt` and the key's
 *   `lastUpdatedAt` set, `pendingJobs` decremented. Blocklist jobs complete only when the
 *   cylinders are visited (`visitCylinders`); that does not touch `lastUpdatedAt`.
 * - PUT /persons/{externalId} creates or updates and (re)activates the person; when the person
 *   then holds no key, `autoIssueKeys` dynamic keys are handed out (demo convenience).
 * - Access profiles must belong to an administered domain; order and duplicates in
 *   `accessProfileIds` do not matter (stored sorted, deduplicated).
 * - Event ids are fixed-width and increasing, so `after=<id>` means "ids greater than".
 */

import { randomUUID } from 'node:crypto';
import type {
  CliqAccessProfile,
  CliqDomain,
  CliqErrorCode,
  CliqEvent,
  CliqJob,
  CliqJobKind,
  CliqKey,
  CliqKeyType,
  CliqPerson,
  CliqRevalidation,
  CliqValidity,
} from './client.ts';

/** A refusal the HTTP layer turns into `status` with `{code, message}`. */
export class CliqSimError extends Error {
  readonly status: number;
  readonly code: CliqErrorCode;
  constructor(status: number, code: CliqErrorCode, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export interface SeedKeyOptions {
  serial?: string;
  type?: CliqKeyType;
  /** externalId of the holder. */
  holder?: string | null;
  validity?: CliqValidity;
  revalidation?: CliqRevalidation;
  /** Access profile ids or names. */
  access?: string[];
  blocked?: boolean;
  lastUpdatedAt?: string | null;
}

export interface SeedPersonOptions {
  externalId: string;
  firstName?: string;
  lastName?: string;
  email?: string | null;
  domainId?: string;
  active?: boolean;
}

export interface SeedEventOptions {
  serial: string;
  cylinderId?: string;
  result?: 'granted' | 'denied';
  at?: string;
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

export class CliqSimState {
  readonly domains = new Map<string, CliqDomain>();
  readonly profiles = new Map<string, CliqAccessProfile>();
  readonly persons = new Map<string, CliqPerson>();
  readonly keys = new Map<string, CliqKey>();
  private readonly keysByHolder = new Map<string, Set<string>>();
  /** In creation order (paging walks this list). */
  readonly jobs: CliqJob[] = [];
  private readonly jobsById = new Map<string, CliqJob>();
  /** Oldest first. */
  readonly events: CliqEvent[] = [];
  private serialCounter = 100_000_001;
  private jobCounter = 1;
  private eventCounter = 1;
  /** Dynamic keys handed out when an upserted person holds none. */
  autoIssueKeys = 1;
  /** Revalidation setting of keys the simulator issues. */
  issuedRevalidation: CliqRevalidation = { enabled: false, periodHours: 24 };
  /** Called with each new job (the simulator schedules its completion). */
  onJob: ((job: CliqJob) => void) | undefined;

  clear(): void {
    this.domains.clear();
    this.profiles.clear();
    this.persons.clear();
    this.keys.clear();
    this.keysByHolder.clear();
    this.jobs.length = 0;
    this.jobsById.clear();
    this.events.length = 0;
    this.serialCounter = 100_000_001;
    this.jobCounter = 1;
    this.eventCounter = 1;
  }

  // ---- catalogue -------------------------------------------------------------------------

  addDomain(name: string, id?: string): CliqDomain {
    const d = { id: id ?? `dom-${randomUUID().slice(0, 8)}`, name };
    this.domains.set(d.id, d);
    return d;
  }

  addProfile(name: string, domainId?: string, id?: string): CliqAccessProfile {
    const dom = domainId ?? this.defaultDomain().id;
    if (!this.domains.has(dom)) throw new CliqSimError(422, 'INVALID_BODY', `unknown domain ${dom}`);
    const p = { id: id ?? `ap-${randomUUID().slice(0, 8)}`, name, domainId: dom };
    this.profiles.set(p.id, p);
    return p;
  }

  defaultDomain(): CliqDomain {
    const d = this.domains.values().next().value;
    if (!d) throw new CliqSimError(422, 'INVALID_BODY', 'the simulator has no domain');
    return d;
  }

  /** Profile by id, else by exact name (for seeding). */
  findProfile(idOrName: string): CliqAccessProfile | undefined {
    const byId = this.profiles.get(idOrName);
    if (byId) return byId;
    for (const p of this.profiles.values()) if (p.name === idOrName) return p;
    return undefined;
  }

  requireDomain(domainId: unknown): CliqDomain {
    if (typeof domainId !== 'string' || !domainId) throw new CliqSimError(422, 'INVALID_BODY', 'domainId is required');
    const d = this.domains.get(domainId);
    if (!d) throw new CliqSimError(403, 'DOMAIN_NOT_ADMINISTERED', `domain ${domainId} is not administered by this client`);
    return d;
  }

  // ---- persons ---------------------------------------------------------------------------

  seedPerson(o: SeedPersonOptions): CliqPerson {
    const p: CliqPerson = {
      id: randomUUID(),
      externalId: o.externalId,
      firstName: o.firstName ?? '',
      lastName: o.lastName ?? o.externalId,
      email: o.email ?? null,
      domainId: o.domainId ?? this.defaultDomain().id,
      active: o.active ?? true,
    };
    this.persons.set(p.externalId, p);
    return p;
  }

  /** PUT /persons/{externalId}. */
  upsertPerson(externalId: string, body: unknown): { person: CliqPerson; created: boolean } {
    const b = object(body);
    const str = (k: string, optional = false): string | null => {
      const v = b[k];
      if (v === undefined || v === null) {
        if (optional) return null;
        throw new CliqSimError(422, 'INVALID_BODY', `${k} is required`);
      }
      if (typeof v !== 'string') throw new CliqSimError(422, 'INVALID_BODY', `${k} must be a string`);
      return v;
    };
    const firstName = str('firstName')!;
    const lastName = str('lastName')!;
    const email = str('email', true);
    const domain = this.requireDomain(b.domainId);
    const existing = this.persons.get(externalId);
    let person: CliqPerson;
    if (existing) {
      Object.assign(existing, { firstName, lastName, email, domainId: domain.id, active: true });
      person = existing;
    } else {
      person = { id: randomUUID(), externalId, firstName, lastName, email, domainId: domain.id, active: true };
      this.persons.set(externalId, person);
    }
    if (this.keysOf(externalId).length === 0)
      for (let i = 0; i < this.autoIssueKeys; i++) this.seedKey({ holder: externalId, type: 'dynamic' });
    return { person, created: !existing };
  }

  deactivatePerson(externalId: string): CliqPerson {
    const p = this.requirePerson(externalId);
    p.active = false;
    return p;
  }

  requirePerson(externalId: string): CliqPerson {
    const p = this.persons.get(externalId);
    if (!p) throw new CliqSimError(404, 'PERSON_NOT_FOUND', `no person with externalId ${externalId}`);
    return p;
  }

  keysOf(externalId: string): CliqKey[] {
    return [...(this.keysByHolder.get(externalId) ?? [])].map((s) => this.keys.get(s)!);
  }

  // ---- keys ------------------------------------------------------------------------------

  seedKey(o: SeedKeyOptions = {}): CliqKey {
    const serial = o.serial ?? String(this.serialCounter++);
    if (!/^\d{9}$/.test(serial)) throw new CliqSimError(422, 'INVALID_BODY', `serial must be 9 digits: ${serial}`);
    if (this.keys.has(serial)) throw new CliqSimError(422, 'INVALID_BODY', `serial ${serial} exists`);
    const holder = o.holder ?? null;
    if (holder && !this.persons.has(holder)) throw new CliqSimError(422, 'INVALID_BODY', `unknown holder ${holder}`);
    const ids = (o.access ?? []).map((a) => {
      const p = this.findProfile(a);
      if (!p) throw new CliqSimError(422, 'UNKNOWN_ACCESS_PROFILE', `unknown access profile ${a}`);
      return p.id;
    });
    const key: CliqKey = {
      serial,
      type: o.type ?? 'dynamic',
      holderExternalId: holder,
      validity: o.validity ?? { mode: 'always' },
      revalidation: o.revalidation ?? { ...this.issuedRevalidation },
      accessProfileIds: [...new Set(ids)].sort(),
      blocked: o.blocked ?? false,
      pendingJobs: 0,
      lastUpdatedAt: o.lastUpdatedAt === undefined ? new Date().toISOString() : o.lastUpdatedAt,
    };
    this.keys.set(serial, key);
    if (holder) {
      let set = this.keysByHolder.get(holder);
      if (!set) this.keysByHolder.set(holder, (set = new Set()));
      set.add(serial);
    }
    return key;
  }

  requireKey(serial: string): CliqKey {
    const k = this.keys.get(serial);
    if (!k) throw new CliqSimError(404, 'KEY_NOT_FOUND', `no key with serial ${serial}`);
    return k;
  }

  setAccessProfiles(serial: string, body: unknown): { key: CliqKey; job: CliqJob | null } {
    const key = this.requireKey(serial);
    const raw = object(body).accessProfileIds;
    if (!Array.isArray(raw) || raw.some((x) => typeof x !== 'string'))
      throw new CliqSimError(422, 'INVALID_BODY', 'accessProfileIds must be an array of strings');
    if (key.type === 'normal')
      throw new CliqSimError(409, 'KEY_NOT_DYNAMIC', `key ${serial} is a normal key: it carries no access list (change access by programming the cylinders)`);
    if (key.blocked) throw new CliqSimError(409, 'KEY_BLOCKED', `key ${serial} is blocked (reported lost)`);
    const unknown = (raw as string[]).filter((id) => {
      const p = this.profiles.get(id);
      return !p || !this.domains.has(p.domainId);
    });
    if (unknown.length) throw new CliqSimError(422, 'UNKNOWN_ACCESS_PROFILE', `unknown access profile(s): ${unknown.join(', ')}`);
    const next = [...new Set(raw as string[])].sort();
    if (next.join('\n') === key.accessProfileIds.join('\n')) return { key, job: null };
    key.accessProfileIds = next;
    return { key, job: this.createJob(key, 'access') };
  }

  setValidity(serial: string, body: unknown): { key: CliqKey; job: CliqJob | null } {
    const key = this.requireKey(serial);
    const v = parseValidity(body);
    if (JSON.stringify(v) === JSON.stringify(key.validity)) return { key, job: null };
    key.validity = v;
    return { key, job: this.createJob(key, 'validity') };
  }

  setRevalidation(serial: string, body: unknown): { key: CliqKey; job: CliqJob | null } {
    const key = this.requireKey(serial);
    const b = object(body);
    if (typeof b.enabled !== 'boolean') throw new CliqSimError(422, 'INVALID_BODY', 'enabled must be a boolean');
    if (typeof b.periodHours !== 'number' || !Number.isInteger(b.periodHours) || b.periodHours < 1 || b.periodHours > 24 * 365)
      throw new CliqSimError(422, 'INVALID_BODY', 'periodHours must be an integer from 1 to 8760');
    const r = { enabled: b.enabled, periodHours: b.periodHours };
    if (r.enabled === key.revalidation.enabled && r.periodHours === key.revalidation.periodHours) return { key, job: null };
    key.revalidation = r;
    return { key, job: this.createJob(key, 'revalidation') };
  }

  reportLost(serial: string, body: unknown): { key: CliqKey; job: CliqJob | null } {
    const key = this.requireKey(serial);
    const reason = object(body).reason;
    if (reason !== undefined && typeof reason !== 'string') throw new CliqSimError(422, 'INVALID_BODY', 'reason must be a string');
    if (key.blocked) {
      const existing = [...this.jobs].reverse().find((j) => j.serial === serial && j.kind === 'blocklist') ?? null;
      return { key, job: existing };
    }
    key.blocked = true;
    return { key, job: this.createJob(key, 'blocklist') };
  }

  // ---- jobs ------------------------------------------------------------------------------

  getJob(id: string): CliqJob {
    const j = this.jobsById.get(id);
    if (!j) throw new CliqSimError(404, 'JOB_NOT_FOUND', `no job ${id}`);
    return j;
  }

  private createJob(key: CliqKey, kind: CliqJobKind): CliqJob {
    const job: CliqJob = {
      id: `job-${String(this.jobCounter++).padStart(8, '0')}`,
      serial: key.serial,
      kind,
      state: 'pending',
      createdAt: new Date().toISOString(),
      doneAt: null,
    };
    this.jobs.push(job);
    this.jobsById.set(job.id, job);
    key.pendingJobs++;
    this.onJob?.(job);
    return job;
  }

  /**
   * The keys (all, or `serials`) are updated: their pending non-blocklist jobs are done.
   * With `jobIds`, only those jobs (blocklist jobs excepted). Returns the completed jobs.
   */
  updateKeys(opts: { serials?: string[]; jobIds?: string[] } = {}): CliqJob[] {
    const serials = opts.serials ? new Set(opts.serials) : undefined;
    const ids = opts.jobIds ? new Set(opts.jobIds) : undefined;
    const now = new Date().toISOString();
    const done: CliqJob[] = [];
    for (const job of this.jobs) {
      if (job.state !== 'pending' || job.kind === 'blocklist') continue;
      if (serials && !serials.has(job.serial)) continue;
      if (ids && !ids.has(job.id)) continue;
      this.finish(job, now);
      const key = this.keys.get(job.serial);
      if (key) key.lastUpdatedAt = now;
      done.push(job);
    }
    return done;
  }

  /** Every cylinder concerned was visited: pending blocklist jobs (of `serials`) are done. */
  visitCylinders(serials?: string[]): CliqJob[] {
    const set = serials ? new Set(serials) : undefined;
    const now = new Date().toISOString();
    const done: CliqJob[] = [];
    for (const job of this.jobs) {
      if (job.state !== 'pending' || job.kind !== 'blocklist') continue;
      if (set && !set.has(job.serial)) continue;
      this.finish(job, now);
      done.push(job);
    }
    return done;
  }

  private finish(job: CliqJob, now: string): void {
    job.state = 'done';
    job.doneAt = now;
    const key = this.keys.get(job.serial);
    if (key) key.pendingJobs = Math.max(0, key.pendingJobs - 1);
  }

  // ---- events ----------------------------------------------------------------------------

  addEvent(o: SeedEventOptions): CliqEvent {
    if (typeof o.serial !== 'string' || !o.serial) throw new CliqSimError(422, 'INVALID_BODY', 'serial is required');
    if (o.at !== undefined && !ISO.test(o.at)) throw new CliqSimError(422, 'INVALID_BODY', 'at must be an ISO-8601 date-time');
    const e: CliqEvent = {
      id: `evt-${String(this.eventCounter++).padStart(12, '0')}`,
      at: o.at ?? new Date().toISOString(),
      serial: o.serial,
      cylinderId: o.cylinderId ?? 'cyl-0001',
      result: o.result ?? 'granted',
    };
    this.events.push(e);
    return e;
  }

  // ---- views -----------------------------------------------------------------------------

  /** Sorted names of a key's access profiles. */
  accessNames(serial: string): string[] {
    return this.requireKey(serial)
      .accessProfileIds.map((id) => this.profiles.get(id)?.name ?? id)
      .sort();
  }

  snapshot(): unknown {
    return {
      domains: [...this.domains.values()],
      accessProfiles: [...this.profiles.values()],
      persons: [...this.persons.values()].map((p) => ({ ...p, keys: this.keysOf(p.externalId).map((k) => ({ ...k, access: this.accessNames(k.serial) })) })),
      unassignedKeys: [...this.keys.values()].filter((k) => !k.holderExternalId),
      pendingJobs: this.jobs.filter((j) => j.state === 'pending'),
      jobCount: this.jobs.length,
      eventCount: this.events.length,
    };
  }
}

function object(body: unknown): Record<string, unknown> {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new CliqSimError(422, 'INVALID_BODY', 'a JSON object body is required');
  return body as Record<string, unknown>;
}

export function parseValidity(body: unknown): CliqValidity {
  const b = object(body);
  if (b.mode === 'always' || b.mode === 'never') {
    if (Object.keys(b).some((k) => k !== 'mode')) throw new CliqSimError(422, 'INVALID_BODY', `validity mode ${b.mode} takes no other field`);
    return { mode: b.mode };
  }
  if (b.mode === 'between') {
    if (typeof b.from !== 'string' || !ISO.test(b.from) || typeof b.to !== 'string' || !ISO.test(b.to))
      throw new CliqSimError(422, 'INVALID_BODY', 'validity between needs from and to as ISO-8601 date-times');
    const from = new Date(b.from);
    const to = new Date(b.to);
    if (!(from.getTime() < to.getTime())) throw new CliqSimError(422, 'INVALID_BODY', 'validity from must be before to');
    return { mode: 'between', from: from.toISOString(), to: to.toISOString() };
  }
  throw new CliqSimError(422, 'INVALID_BODY', 'validity mode must be always, never or between');
}
