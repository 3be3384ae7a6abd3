/**
 * LockSystem adapter for ASSA ABLOY CLIQ (CLIQ Web Manager), over the *assumed* integration
 * contract (see README.md and client.ts, the only file that knows the wire).
 *
 * Mapping of lockstep's vocabulary:
 * - person ↔ CWM person by `externalId` (upserted in `cliq.domainId` on grant/reinstate);
 * - access name ↔ access profile with that name in the domain (resolved by name, cached,
 *   re-read once when a name is unknown; two profiles with one name → permanent error);
 * - dynamic and connect keys carry an access list, changed with a full replace of
 *   `accessProfileIds` computed from the current list: grant = current ∪ wanted, revoke =
 *   current − named. Profiles given by hand in CWM are therefore kept (except at leave, which
 *   empties the list on purpose). Normal keys carry no list: grant/revoke skip them with the
 *   reason; leave sets their validity to `never` and asks for the key to be collected.
 * - "accepted" is CWM answering 200; "effective" is the key having no pending job
 *   (`programmingState`, `effective` in each KeyResult).
 *
 * Every step reads first and writes only a difference, so re-applying an accepted operation
 * sends no write at all, and an operation that died half-way (a 503 between two writes) is
 * completed by the retry without repeating the part that was done.
 *
 * A key refused permanently (e.g. 409 for a key that turned normal or blocked meanwhile) is
 * reported `skipped` with the reason while the other keys are still handled; transient failures
 * (retryable, rate_limited, auth) abort the operation so the queue retries it whole.
 *
 * With `cliq.maxRevalidationHours`, every key lockstep writes to (and every dynamic/connect key
 * it handles) gets revalidation `{enabled: true, periodHours: min(current, max)}`: a revoked key
 * that never meets a programming device then stops working within that period.
 */

import type { Logger } from 'pino';
import type { CliqLockSystemConfig } from '../../../src/config/schema.ts';
import {
  LockSystemError,
  type AccessEvent,
  type ApplyRequest,
  type ApplyResult,
  type KeyProgrammingState,
  type KeyResult,
  type LockKey,
  type LockPerson,
  type LockSystem,
  type ManualTaskRequest,
  type PersonRef,
  type ReportLostRequest,
} from '../../../src/ports/lock-system.ts';
import {
  CliqClient,
  type CliqAccessProfile,
  type CliqJob,
  type CliqJobKind,
  type CliqKey,
  type CliqLogger,
  type CliqPerson,
  type CliqValidity,
  type KeyChange,
} from './client.ts';
import { keyHorizon, knownOnKey } from './horizon.ts';

const CATALOGUE_MIN_REFRESH_MS = 1_000;
const CATALOGUE_TTL_MS = 5 * 60_000;
const HOLDER_TTL_MS = 60_000;
/** Pages of pending jobs read to tell which settings of a key are still waiting (500 each). */
const PENDING_JOB_PAGES = 20;

interface Catalogue {
  loadedAt: number;
  byName: Map<string, CliqAccessProfile[]>;
  byFoldedName: Map<string, CliqAccessProfile[]>;
  byId: Map<string, CliqAccessProfile>;
}

/** Per-operation lazy view of pending job kinds by serial (one scan, only when needed). */
class PendingKinds {
  private scan: Promise<Map<string, Set<CliqJobKind>> | undefined> | null = null;
  private readonly client: CliqClient;
  constructor(client: CliqClient) {
    this.client = client;
  }
  /** Kinds of the key's pending jobs; undefined when the list was too long to read whole. */
  async of(key: CliqKey): Promise<Set<CliqJobKind> | undefined> {
    if (key.pendingJobs === 0) return new Set();
    this.scan ??= this.client.pendingJobs(PENDING_JOB_PAGES).then(({ jobs, complete }) => {
      if (!complete) return undefined;
      const m = new Map<string, Set<CliqJobKind>>();
      for (const j of jobs) {
        let s = m.get(j.serial);
        if (!s) m.set(j.serial, (s = new Set()));
        s.add(j.kind);
      }
      return m;
    });
    const m = await this.scan;
    return m ? (m.get(key.serial) ?? new Set()) : undefined;
  }
}

const sameSet = (a: readonly string[], b: readonly string[]) => {
  const x = new Set(a);
  const y = new Set(b);
  return x.size === y.size && [...x].every((v) => y.has(v));
};
const lc = (s: string) => s.toLowerCase();
const dynamicList = (k: CliqKey) => k.type === 'dynamic' || k.type === 'connect';

export class CliqLockSystem implements LockSystem {
  readonly id: string;
  readonly kind = 'cliq';
  private readonly cfg: CliqLockSystemConfig;
  private readonly client: CliqClient;
  private readonly log: CliqLogger;
  private cat: Catalogue | null = null;
  private catLoad: Promise<Catalogue> | null = null;
  private readonly holders = new Map<string, { externalId: string | undefined; at: number }>();

  constructor(config: CliqLockSystemConfig, logger?: Logger) {
    this.cfg = config;
    this.id = config.id;
    this.log = logger ? logger.child({ lockSystem: config.id }) : silent();
    const c = config.cliq;
    this.client = new CliqClient({
      baseUrl: c.baseUrl,
      bearerToken: c.bearerToken,
      tls: c.tls,
      requestTimeoutMs: config.apply.requestTimeoutMs,
      connections: Math.max(8, config.apply.concurrency * 2),
      logger: this.log,
    });
  }

  /** Checks reachability, credentials and that `cliq.domainId` is administered by this client. */
  async start(): Promise<void> {
    const domains = await this.client.domains();
    const want = this.cfg.cliq.domainId;
    if (!domains.some((d) => d.id === want))
      throw new LockSystemError(
        'permanent',
        `CLIQ domain ${want} is not administered by this client (administered: ${domains.map((d) => `${d.id} "${d.name}"`).join(', ') || 'none'})`,
      );
    await this.loadCatalogue(false);
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  async ping(): Promise<void> {
    await this.client.domains();
  }

  async catalogue(): Promise<string[]> {
    const cat = await this.loadCatalogue(false);
    return [...cat.byName.keys()].sort();
  }

  async readPerson(externalId: string): Promise<LockPerson | null> {
    const person = await this.client.findPerson(externalId);
    if (!person) return null;
    const keys = (await this.client.keysOf(externalId)) ?? [];
    const cat = await this.loadCatalogue(false);
    const out: LockKey[] = keys.map((k) => {
      const validUntil = k.validity.mode === 'between' ? k.validity.to : k.validity.mode === 'never' ? NEVER_VALID : undefined;
      return {
        keyId: k.serial,
        access: k.accessProfileIds.map((id) => cat.byId.get(id)?.name ?? id).sort(),
        ...(validUntil ? { validUntil } : {}),
        programmed: k.pendingJobs === 0,
      };
    });
    return { remotePersonId: person.id, externalId, keys: out };
  }

  async apply(req: ApplyRequest): Promise<ApplyResult> {
    this.log.debug({ operationId: req.operationId, kind: req.kind, personId: req.person.personId }, 'cliq apply');
    switch (req.kind) {
      case 'grant':
        return this.grant(req);
      case 'revoke':
        return this.revoke(req);
      case 'leave':
        return this.leave(req);
      case 'reinstate':
        return this.reinstate(req);
      default:
        throw new LockSystemError('permanent', `unsupported operation kind ${String((req as { kind: unknown }).kind)}`);
    }
  }

  async programmingState(externalId: string): Promise<KeyProgrammingState[]> {
    const keys = await this.client.keysOf(externalId);
    if (!keys) return [];
    const pending = new PendingKinds(this.client);
    const now = new Date();
    return Promise.all(
      keys.map(async (k) => {
        const known = knownOnKey(k, await pending.of(k));
        const horizon = keyHorizon(k, known, now);
        return {
          keyId: k.serial,
          // Blocked in every cylinder concerned: whatever else waits for the key no longer matters.
          effective: k.pendingJobs === 0 || known.blocklisted,
          pendingJobs: k.pendingJobs,
          ...(horizon ? { horizon: horizon.toISOString() } : {}),
          ...(k.lastUpdatedAt ? { lastUpdatedAt: k.lastUpdatedAt } : {}),
        };
      }),
    );
  }

  /**
   * Report lost: POST /keys/{serial}/report-lost blocks the key and creates a `blocklist` job
   * that is done only once every cylinder concerned has been updated; idempotent (a blocked key
   * answers its existing job, and the result is `unchanged`). A key that now has another holder
   * (or none) is refused (permanent). While the job is pending, a `blocklist_key` task asks for the
   * cylinders to be visited: CWM keeps a normal key's access in the cylinders, so the access
   * profiles the key still lists (dynamic keys) name them where possible.
   */
  async reportLost(req: ReportLostRequest): Promise<KeyResult> {
    this.log.debug({ operationId: req.operationId, keyId: req.keyId, personId: req.person.personId }, 'cliq report lost');
    const key = await this.client.key(req.keyId);
    if (!key) throw new LockSystemError('permanent', `CLIQ key ${req.keyId} not found`);
    // A key handed back and given to someone else meanwhile must not be blocked on the leaver's account.
    if (key.holderExternalId !== req.person.externalId)
      throw new LockSystemError('permanent', `CLIQ key ${key.serial} is not held by ${req.person.externalId} (holder: ${key.holderExternalId ?? 'none'}): not reported lost`);
    const { key: k, job } = await this.client.reportLost(key.serial, req.reason);
    if (!key.blocked) this.log.info({ keyId: key.serial, job: job?.id, reason: req.reason }, 'cliq key reported lost');
    const effective = job ? job.state === 'done' : k.blocked && k.pendingJobs === 0;
    const res: KeyResult = {
      keyId: k.serial,
      change: key.blocked ? 'unchanged' : 'changed',
      programmingOrdered: true,
      effective,
      ...(job ? { jobId: job.id } : {}),
    };
    if (!effective) {
      const cat = await this.loadCatalogue(false);
      const profiles = k.accessProfileIds.map((id) => cat.byId.get(id)?.name ?? id);
      const where = profiles.length
        ? `the cylinders of access profile${profiles.length > 1 ? 's' : ''} ${profiles.map((n) => `"${n}"`).join(', ')}`
        : `every cylinder this ${k.type} key could open (CWM keeps its access in the cylinders: see the key's authorisations in CLIQ Web Manager)`;
      res.task = {
        kind: 'blocklist_key',
        description: `Update ${where} with a programming key so that they block CLIQ key ${k.serial} of ${req.person.externalId}, reported lost${job ? ` (blocklist job ${job.id})` : ''}: until a cylinder is updated, the key still opens it.`,
      };
    }
    return res;
  }

  /**
   * Cursor = the id of the last event returned (CWM's `after`); an empty page keeps the cursor.
   * The holder of each key is looked up once a minute at most (GET /keys/{serial}).
   */
  async readEvents(cursor: string | undefined, limit: number): Promise<{ events: AccessEvent[]; cursor: string | undefined }> {
    const items = await this.client.events(cursor, limit);
    const serials = [...new Set(items.map((e) => e.serial))];
    const holders = new Map(await Promise.all(serials.map(async (s) => [s, await this.holderOf(s)] as const)));
    const events: AccessEvent[] = items.map((e) => {
      const ext = holders.get(e.serial);
      return { id: e.id, at: e.at, keyId: e.serial, lockId: e.cylinderId, result: e.result, ...(ext ? { externalId: ext } : {}) };
    });
    return { events, cursor: items.length ? items[items.length - 1]!.id : cursor };
  }

  // ---- operations ------------------------------------------------------------------------

  private async grant(req: ApplyRequest): Promise<ApplyResult> {
    const wanted = await this.resolve(req.access);
    const person = await this.ensurePerson(req.person);
    const keys = (await this.client.keysOf(req.person.externalId)) ?? [];
    const term = req.person.terminationDate;
    const results: KeyResult[] = [];
    for (const key of keys) {
      results.push(
        await this.perKey(key, async () => {
          if (!dynamicList(key)) return skipped(key, NORMAL_KEY_REASON);
          if (key.blocked) return skipped(key, BLOCKED_REASON);
          const jobs: Array<CliqJob | null> = [];
          let k = key;
          const next = [...new Set([...k.accessProfileIds, ...wanted.map((p) => p.id)])];
          if (!sameSet(next, k.accessProfileIds)) {
            const r = await this.client.setAccessProfiles(k.serial, next);
            if ('refused' in r) return skipped(k, r.refused === 'blocked' ? BLOCKED_REASON : NORMAL_KEY_REASON);
            k = track(r, jobs);
          }
          if (term) {
            const v = clampValidity(k.validity, new Date(term));
            if (v) k = track(await this.client.setValidity(k.serial, v), jobs);
          }
          k = await this.ensureRevalidation(k, jobs);
          return outcome(k, jobs);
        }),
      );
    }
    return { outcome: 'applied', keys: results, remotePersonId: person.id };
  }

  /**
   * Two calls for a key: CWM answers 404 for the keys of a person it does not know, so no person
   * lookup comes first (a lockdown revokes thousands; each call saved is a round trip off every
   * revocation and load off CWM). The person id is not reported: lockstep keeps the one it has.
   */
  private async revoke(req: ApplyRequest): Promise<ApplyResult> {
    const keys = await this.client.keysOf(req.person.externalId);
    if (!keys) return { outcome: 'absent', keys: [] };
    const unwanted = new Set((await this.resolve(req.access)).map((p) => p.id));
    const pending = new PendingKinds(this.client);
    const results: KeyResult[] = [];
    for (const key of keys) {
      results.push(
        await this.perKey(key, async () => {
          const exposure = await this.exposure(key, pending);
          if (!dynamicList(key)) return skipped(key, 'normal CLIQ key: it carries no access list, so lockstep never gave it access; nothing to revoke through the API');
          if (key.blocked) return { ...skipped(key, BLOCKED_REASON), ...exposureOf(key, exposure) };
          const jobs: Array<CliqJob | null> = [];
          let k = key;
          const next = k.accessProfileIds.filter((id) => !unwanted.has(id));
          if (next.length !== k.accessProfileIds.length) {
            const r = await this.client.setAccessProfiles(k.serial, next);
            if ('refused' in r) return { ...skipped(k, r.refused === 'blocked' ? BLOCKED_REASON : NORMAL_KEY_REASON), ...exposureOf(key, exposure) };
            k = track(r, jobs);
          }
          k = await this.ensureRevalidation(k, jobs);
          return { ...outcome(k, jobs), ...exposureOf(k, exposure) };
        }),
      );
    }
    return { outcome: 'applied', keys: results };
  }

  /**
   * Leaver: dynamic/connect keys lose every access profile and get validity `never`; normal keys
   * get validity `never` and a collect-key task (their access lives in the cylinders); then the
   * person is deactivated. Keys first, so a failure leaves the person active and visible.
   */
  private async leave(req: ApplyRequest): Promise<ApplyResult> {
    // Both by the external id: one round trip for the two reads.
    const [person, found] = await Promise.all([this.client.findPerson(req.person.externalId), this.client.keysOf(req.person.externalId)]);
    if (!person) return { outcome: 'absent', keys: [] };
    const keys = found ?? [];
    const pending = new PendingKinds(this.client);
    const results: KeyResult[] = [];
    for (const key of keys) {
      results.push(
        await this.perKey(key, async () => {
          const exposure = await this.exposure(key, pending);
          const jobs: Array<CliqJob | null> = [];
          let k = key;
          // A blocked key's list cannot change (409) and no longer matters: the blocklist is stronger.
          if (dynamicList(k) && !k.blocked && k.accessProfileIds.length > 0) {
            const r = await this.client.setAccessProfiles(k.serial, []);
            if (!('refused' in r)) k = track(r, jobs);
          }
          if (k.validity.mode !== 'never') k = track(await this.client.setValidity(k.serial, { mode: 'never' }), jobs);
          k = await this.ensureRevalidation(k, jobs);
          const res: KeyResult = { ...outcome(k, jobs), ...exposureOf(k, exposure) };
          if (!dynamicList(k)) res.task = collectTask(k, person);
          return res;
        }),
      );
    }
    if (person.active) await this.client.deactivatePerson(req.person.externalId);
    return { outcome: 'applied', keys: results, remotePersonId: person.id };
  }

  /** Validity back to `always` (or now → terminationDate), person re-activated, `req.access` granted. */
  private async reinstate(req: ApplyRequest): Promise<ApplyResult> {
    const existing = await this.client.findPerson(req.person.externalId);
    if (!existing) return { outcome: 'absent', keys: [] };
    const wanted = req.access.length ? await this.resolve(req.access) : [];
    const person = await this.ensurePerson(req.person, existing);
    const keys = (await this.client.keysOf(req.person.externalId)) ?? [];
    const term = req.person.terminationDate ? new Date(req.person.terminationDate) : undefined;
    const results: KeyResult[] = [];
    for (const key of keys) {
      results.push(
        await this.perKey(key, async () => {
          const jobs: Array<CliqJob | null> = [];
          let k = key;
          const v = reinstatedValidity(k.validity, term);
          if (v) k = track(await this.client.setValidity(k.serial, v), jobs);
          let reason: string | undefined;
          if (wanted.length && !dynamicList(k)) reason = NORMAL_KEY_REASON;
          else if (wanted.length && k.blocked) reason = BLOCKED_REASON;
          else if (wanted.length) {
            const next = [...new Set([...k.accessProfileIds, ...wanted.map((p) => p.id)])];
            if (!sameSet(next, k.accessProfileIds)) {
              const r = await this.client.setAccessProfiles(k.serial, next);
              if ('refused' in r) reason = r.refused === 'blocked' ? BLOCKED_REASON : NORMAL_KEY_REASON;
              else k = track(r, jobs);
            }
          }
          k = await this.ensureRevalidation(k, jobs);
          return reason ? { ...outcome(k, jobs), change: 'skipped', reason } : outcome(k, jobs);
        }),
      );
    }
    return { outcome: 'applied', keys: results, remotePersonId: person.id };
  }

  // ---- steps -----------------------------------------------------------------------------

  /** Runs one key's work; a permanent refusal of this key becomes a `skipped` result. */
  private async perKey(key: CliqKey, work: () => Promise<KeyResult>): Promise<KeyResult> {
    try {
      return await work();
    } catch (err) {
      if (err instanceof LockSystemError && err.kind === 'permanent') {
        this.log.warn({ keyId: key.serial, err: err.message }, 'cliq key skipped');
        return skipped(key, err.message);
      }
      throw err;
    }
  }

  /** Bound on the key's residual exposure from the settings physically on it *before* our change. */
  private async exposure(before: CliqKey, pending: PendingKinds): Promise<Date | undefined> {
    return keyHorizon(before, knownOnKey(before, await pending.of(before)));
  }

  private async ensureRevalidation(k: CliqKey, jobs: Array<CliqJob | null>): Promise<CliqKey> {
    const max = this.cfg.cliq.maxRevalidationHours;
    if (max === undefined) return k;
    const periodHours = k.revalidation.enabled ? Math.min(k.revalidation.periodHours, max) : max;
    if (k.revalidation.enabled && k.revalidation.periodHours === periodHours) return k;
    return track(await this.client.setRevalidation(k.serial, { enabled: true, periodHours }), jobs);
  }

  /**
   * PUT the person when unknown, inactive, or when given names/e-mail differ; nothing otherwise
   * (a re-apply sends no write). PUT also (re)activates the person (contract).
   */
  private async ensurePerson(ref: PersonRef, known?: CliqPerson | null): Promise<CliqPerson> {
    const found = known === undefined ? await this.client.findPerson(ref.externalId) : known;
    const input = {
      firstName: ref.givenName ?? found?.firstName ?? '',
      lastName: ref.familyName ?? found?.lastName ?? ref.externalId,
      email: ref.email ?? found?.email ?? null,
      domainId: found?.domainId ?? this.cfg.cliq.domainId,
    };
    if (found && found.active && found.firstName === input.firstName && found.lastName === input.lastName && (found.email ?? null) === input.email)
      return found;
    const { person, created } = await this.client.upsertPerson(ref.externalId, input);
    if (created) this.log.info({ personId: ref.personId, remotePersonId: person.id }, 'cliq person created');
    return person;
  }

  private async holderOf(serial: string): Promise<string | undefined> {
    const hit = this.holders.get(serial);
    if (hit && Date.now() - hit.at < HOLDER_TTL_MS) return hit.externalId;
    const key = await this.client.key(serial);
    const externalId = key?.holderExternalId ?? undefined;
    this.holders.set(serial, { externalId, at: Date.now() });
    if (this.holders.size > 10_000) this.holders.delete(this.holders.keys().next().value!);
    return externalId;
  }

  // ---- catalogue -------------------------------------------------------------------------

  private async loadCatalogue(force: boolean): Promise<Catalogue> {
    const age = this.cat ? Date.now() - this.cat.loadedAt : Infinity;
    if (this.cat && !force && age < CATALOGUE_TTL_MS) return this.cat;
    if (this.cat && force && age < CATALOGUE_MIN_REFRESH_MS) return this.cat;
    this.catLoad ??= (async () => {
      const list = await this.client.accessProfiles(this.cfg.cliq.domainId);
      const cat: Catalogue = { loadedAt: Date.now(), byName: new Map(), byFoldedName: new Map(), byId: new Map() };
      for (const p of list) {
        cat.byId.set(p.id, p);
        push(cat.byName, p.name, p);
        push(cat.byFoldedName, lc(p.name), p);
      }
      this.cat = cat;
      return cat;
    })().finally(() => {
      this.catLoad = null;
    });
    return this.catLoad;
  }

  /** Access names → access profiles; re-reads the catalogue once for unknown names. */
  private async resolve(names: string[]): Promise<CliqAccessProfile[]> {
    if (names.length === 0) return [];
    let cat = await this.loadCatalogue(false);
    const lookup = (n: string) => cat.byName.get(n) ?? cat.byFoldedName.get(lc(n));
    if (names.some((n) => !lookup(n))) cat = await this.loadCatalogue(true);
    const out: CliqAccessProfile[] = [];
    for (const name of new Set(names)) {
      const hits = lookup(name);
      if (!hits)
        throw new LockSystemError(
          'permanent',
          `unknown CLIQ access "${name}": no access profile in domain ${this.cfg.cliq.domainId} has that name (known: ${[...cat.byName.keys()].sort().join(', ') || 'none'})`,
          { unchanged: true },
        );
      if (hits.length > 1)
        throw new LockSystemError('permanent', `CLIQ access name "${name}" is ambiguous: ${hits.length} access profiles carry it (${hits.map((h) => h.id).join(', ')})`, {
          unchanged: true,
        });
      out.push(hits[0]!);
    }
    return out;
  }
}

/** readPerson's `validUntil` for validity `never`: already over. */
const NEVER_VALID = new Date(0).toISOString();
const NORMAL_KEY_REASON =
  'normal CLIQ key: it carries no access list, so its access cannot be changed through the API (program the cylinders with a programming key)';
const BLOCKED_REASON = 'CLIQ key is blocked (reported lost): its access list can no longer be changed';

function track(change: KeyChange, jobs: Array<CliqJob | null>): CliqKey {
  jobs.push(change.job);
  return change.key;
}

function outcome(k: CliqKey, jobs: Array<CliqJob | null>): KeyResult {
  const created = jobs.filter((j): j is CliqJob => j !== null);
  return {
    keyId: k.serial,
    change: created.length ? 'changed' : 'unchanged',
    programmingOrdered: k.pendingJobs > 0,
    effective: k.pendingJobs === 0,
    // The first job is the main change (access, else validity); revalidation rides along at the same update.
    ...(created[0] ? { jobId: created[0].id } : {}),
  };
}

function skipped(k: CliqKey, reason: string): KeyResult {
  return { keyId: k.serial, change: 'skipped', reason, programmingOrdered: k.pendingJobs > 0 };
}

/** exposureUntil only while the revocation is not yet effective on the key. */
function exposureOf(k: CliqKey, bound: Date | undefined): Pick<KeyResult, 'exposureUntil'> {
  return k.pendingJobs > 0 && bound ? { exposureUntil: bound.toISOString() } : {};
}

function collectTask(k: CliqKey, p: CliqPerson): ManualTaskRequest {
  const who = [p.firstName, p.lastName].filter(Boolean).join(' ') || p.externalId;
  return {
    kind: 'collect_key',
    description: `Collect CLIQ key ${k.serial} (normal key) from ${who} (${p.externalId}): its access lives in the cylinders and its "never valid" setting reaches it only when the key is next updated; if it cannot be collected, report it lost so that it is blocked in the cylinders.`,
  };
}

/** Validity ending no later than `term` (grant with a termination date); undefined: already so. */
function clampValidity(v: CliqValidity, term: Date): CliqValidity | undefined {
  const now = Date.now();
  if (v.mode === 'never') return undefined;
  if (term.getTime() <= now) return { mode: 'never' };
  if (v.mode === 'always') return { mode: 'between', from: new Date(now).toISOString(), to: term.toISOString() };
  if (Date.parse(v.to) <= term.getTime()) return undefined;
  return Date.parse(v.from) < term.getTime() ? { mode: 'between', from: v.from, to: term.toISOString() } : { mode: 'never' };
}

/** Validity after reinstate: always, or now → term (never when term has passed); undefined: already so. */
function reinstatedValidity(v: CliqValidity, term: Date | undefined): CliqValidity | undefined {
  if (!term) return v.mode === 'always' ? undefined : { mode: 'always' };
  if (term.getTime() <= Date.now()) return v.mode === 'never' ? undefined : { mode: 'never' };
  if (v.mode === 'between' && Date.parse(v.to) === term.getTime() && Date.parse(v.from) <= Date.now()) return undefined;
  return { mode: 'between', from: new Date().toISOString(), to: term.toISOString() };
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list) list.push(value);
  else map.set(key, [value]);
}

function silent(): CliqLogger {
  const noop = () => {};
  return { debug: noop, info: noop, warn: noop, error: noop } as unknown as CliqLogger;
}
