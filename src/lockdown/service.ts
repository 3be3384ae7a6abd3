import { randomUUID } from 'node:crypto';
import { sql, type Kysely, type Transaction } from 'kysely';
import { appendAudit, auditAlone } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import { inScope, scopeKey, type LockdownScope, type LockdownView } from '../domain/lockdown.ts';
import { hasStarted } from '../domain/planner.ts';
import type { Logger } from '../log.ts';
import type { Queues } from '../queue/queues.ts';
import type { Store } from '../store/db.ts';
import { markEveryoneDirty, PRIORITY_NORMAL } from '../store/identities.ts';
import type { Database, LockdownsTable } from '../store/schema.ts';
import { inChunks } from '../queue/chunks.ts';
import { roundRobin } from './order.ts';
import { exec, placeholders } from '../store/sql.ts';

/** Persons queued before a lockdown's start or lift is answered; the rest follow in chunks. */
const FIRST_BATCH = 4;
const REST_CHUNK = 250;
/**
 * Head start of the first batch: its reconciles and first requests run before the second step
 * marks everyone (tens of ms of synchronous SQLite work for 10,000 persons) and thousands of other
 * jobs are queued (their encoding and Redis's executing them compete with the first batch). At
 * 20 ms, 2 of 12 lockdowns of 10,000 keys had their first request after 124-153 ms; at 60 ms none
 * of 8 took more than 71 ms, for 40 ms more on a revoke-all that takes 18 s.
 */
const REST_DELAY_MS = 60;
/** Starts and lifts this old whose second step has not run are finished by any process (resumeMarking). */
const RESUME_AFTER_MS = 5000;
/** The lockdowns in force, asked by every reconcile: fixed SQL (src/store/sql.ts). */
const IN_FORCE = "select id, scope from lockdowns where state in ('active', 'lift_requested')";

/**
 * Emergency lockdowns: the CRO's "revoke all" and its lift. A lockdown is a row in the database
 * that every reconcile reads (see domain/lockdown.ts): starting one marks the affected persons
 * dirty at the highest priority and hands them to the reconcile queue at once; lifting marks
 * everyone dirty so normal access returns through the same path. Nothing here talks to a lock
 * system, so retries, ordering, audit and the two truths apply unchanged, and a restart of
 * lockstep or Redis resumes from the database.
 */

/** BullMQ runs jobs without a priority before any prioritised job: lockdowns jump every queue. */
export const PRIORITY_LOCKDOWN = 0;

export interface StartInput {
  scope: { all?: boolean; lockSystems?: string[]; access?: string[]; sites?: string[] };
  reason: string;
  expiresAt?: number;
}

export class LockdownError extends Error {
  readonly code: 'INVALID' | 'NOT_FOUND' | 'CONFLICT' | 'FORBIDDEN';
  constructor(code: LockdownError['code'], message: string) {
    super(message);
    this.name = 'LockdownError';
    this.code = code;
  }
}

export interface Actor {
  name: string;
  correlationId: string;
}

export class LockdownService {
  private readonly store: Store;
  private readonly cfg: Config;
  private readonly log: Logger;
  private queues: Queues | undefined;
  private readonly restDelayMs: number;

  /** `restDelayMs`: the first batch's head start (tests stretch it to stand for a crash before the rest). */
  constructor(deps: { store: Store; config: Config; log: Logger; queues?: Queues; restDelayMs?: number }) {
    this.store = deps.store;
    this.cfg = deps.config;
    this.log = deps.log;
    this.queues = deps.queues;
    this.restDelayMs = deps.restDelayMs ?? REST_DELAY_MS;
  }

  /** Resolves a request's scope against config (sites) and validates names; throws INVALID. */
  resolveScope(input: StartInput['scope']): LockdownScope {
    const systems = new Set(this.cfg.lockSystems.map((l) => l.id));
    if (input.all) return { all: true };
    const scope: LockdownScope = {};
    if (input.lockSystems?.length) {
      const unknown = input.lockSystems.filter((l) => !systems.has(l));
      if (unknown.length) throw new LockdownError('INVALID', `unknown lock system(s): ${unknown.join(', ')}`);
      scope.lockSystems = input.lockSystems;
    }
    if (input.access?.length) scope.access = input.access;
    if (input.sites?.length) {
      const pairs: Array<{ lockSystem: string; access: string }> = [];
      for (const site of input.sites) {
        const doors = this.cfg.lockdown.sites[site];
        if (!doors) throw new LockdownError('INVALID', `unknown site "${site}" (configured: ${Object.keys(this.cfg.lockdown.sites).join(', ') || 'none'})`);
        for (const d of doors) for (const a of d.access) pairs.push({ lockSystem: d.lockSystem, access: a });
      }
      scope.siteAccess = pairs;
    }
    if (!scope.lockSystems && !scope.access && !scope.siteAccess)
      throw new LockdownError('INVALID', 'scope must be {"all": true} or name lockSystems, access or sites');
    return scope;
  }

  /**
   * Starts a lockdown, or returns the one already running with the same scope (idempotent:
   * a second CRO pressing the button does not double the work).
   *
   * In two steps, so that the first revocation does not wait for the whole population: one
   * transaction writes the lockdown (from then on every reconcile applies it) and marks a first
   * few holders per lock system, read with a bound, which are queued before the answer. After
   * their head start (REST_DELAY_MS) a second transaction marks and counts every target and the
   * rest are queued (markTargets). Reading, counting and marking 10,000 holders in the first
   * transaction had held the first request back to 120-145 ms. A crash between the two leaves
   * `marked_at` NULL, and resumeMarking finishes the job after restart.
   */
  async start(input: StartInput, actor: Actor): Promise<{ lockdown: LockdownsTable; created: boolean }> {
    const scope = this.resolveScope(input.scope);
    const key = scopeKey(scope);
    const now = Date.now();
    if (input.expiresAt !== undefined && input.expiresAt <= now) throw new LockdownError('INVALID', 'expiresAt must be in the future');
    const id = randomUUID();
    const result = await this.store.db.transaction().execute(async (trx) => {
      const running = await trx.selectFrom('lockdowns').selectAll().where('scope_key', '=', key).where('state', 'in', ['active', 'lift_requested']).executeTakeFirst();
      if (running) return { lockdown: running, created: false, first: [] as string[] };
      const row: LockdownsTable = {
        id,
        scope: JSON.stringify(scope),
        scope_key: key,
        reason: input.reason,
        state: 'active',
        correlation_id: actor.correlationId,
        targets: '{}',
        marked_at: null,
        started_by: actor.name,
        started_at: now,
        expires_at: input.expiresAt ?? null,
        lift_requested_by: null,
        lift_requested_at: null,
        lifted_by: null,
        lifted_at: null,
        lift_correlation_id: null,
        lift_marked_at: null,
      };
      await trx.insertInto('lockdowns').values(row).execute();
      const first = await this.firstHolders(trx, scope);
      await markAll(trx, first, PRIORITY_LOCKDOWN, `lockdown ${id}`, now, actor.correlationId);
      await appendAudit(trx, this.store.dialect, [
        {
          actor: actor.name,
          action: 'lockdown.start',
          subject: `lockdown:${id}`,
          correlationId: actor.correlationId,
          detail: { scope, reason: input.reason, expiresAt: input.expiresAt ? new Date(input.expiresAt).toISOString() : null, breakGlass: this.cfg.lockdown.exemptions },
        },
      ]);
      return { lockdown: row, created: true, first };
    });
    if (result.created) {
      // Straight to the queue: the sweeper is the fallback, not the path, in an emergency.
      await this.enqueue(result.first, PRIORITY_LOCKDOWN);
      this.log.warn({ lockdown: id, scope, startedBy: actor.name }, 'LOCKDOWN STARTED');
      void this.notify('lockdown.started', result.lockdown);
      const queued = new Set(result.first);
      this.enqueueLater(async () => ((await this.markTargets(id)) ?? []).filter((p) => !queued.has(p)), PRIORITY_LOCKDOWN);
    }
    return { lockdown: result.lockdown, created: result.created };
  }

  /**
   * A few holders of in-scope access per lock system (FIRST_BATCH in all, round-robin), read
   * with a bound: the first batch of a lockdown, before its targets are counted.
   */
  private async firstHolders(trx: Transaction<Database>, scope: LockdownScope): Promise<string[]> {
    return firstPerSystem(this.systemsOf(scope), async (ls) => {
      const whole = scope.all || scope.lockSystems?.includes(ls);
      // A scope that names access needs a look at each holder's access: read more than needed.
      const rows = await exec<{ person_id: string; access: string; unsure: string | null }>(
        trx,
        "select person_id, access, unsure from lock_state where lock_system_id = ? and (access <> '[]' or unsure is not null) limit ?",
        [ls, whole ? FIRST_BATCH : FIRST_BATCH * 16],
      );
      const held = whole ? rows : rows.filter((r) => [...parseList(r.access), ...parseList(r.unsure)].some((a) => inScope(scope, ls, a)));
      return held.map((r) => r.person_id);
    });
  }

  /** Lock systems whose holders a lockdown of this scope may concern. */
  private systemsOf(scope: LockdownScope): string[] {
    return scope.all || scope.access?.length || scope.siteAccess?.length ? this.cfg.lockSystems.map((l) => l.id) : (scope.lockSystems ?? []);
  }

  /**
   * Marks every target of a lockdown dirty, counts them per lock system and sets `marked_at`, in
   * one transaction; returns the persons in the order to queue them (round-robin over lock
   * systems), or undefined when there was nothing to do (marked already, or no longer in force).
   */
  private async markTargets(id: string): Promise<string[] | undefined> {
    const marked = await this.store.db.transaction().execute(async (trx) => {
      let q = trx.selectFrom('lockdowns').selectAll().where('id', '=', id);
      // Two processes resuming the same lockdown: the second waits, then finds it marked.
      if (this.store.dialect === 'postgres') q = q.forUpdate();
      const l = await q.executeTakeFirst();
      if (!l || l.marked_at !== null) return undefined;
      const now = Date.now();
      if (l.state !== 'active' && l.state !== 'lift_requested') {
        // Lifted before its targets were counted: nothing to revoke, and the lift restores everyone.
        await trx.updateTable('lockdowns').set({ marked_at: now }).where('id', '=', id).execute();
        return undefined;
      }
      const scope = JSON.parse(l.scope) as LockdownScope;
      // Holders: accepted access, or access a dead-lettered grant may have left (unsure).
      const holders = await trx
        .selectFrom('lock_state')
        .select(['person_id', 'lock_system_id', 'access', 'unsure'])
        .where((eb) => eb.or([eb('access', '!=', '[]'), eb('unsure', 'is not', null)]))
        .execute();
      // A grant already on its way to a lock system lands after this moment: its person must be
      // re-planned too (the plan then revokes right after it), or the grant would slip through.
      const inflight = await trx
        .selectFrom('operations')
        .select(['person_id', 'lock_system_id', 'access', 'state', 'attempts'])
        .where('kind', 'in', ['grant', 'reinstate'])
        .where('state', 'in', ['pending', 'running'])
        .execute();
      const revoked = await trx
        .selectFrom('operations')
        .select(['person_id', 'lock_system_id'])
        .where('correlation_id', '=', l.correlation_id)
        .where('kind', 'in', ['revoke', 'leave'])
        .execute();
      const breakGlass = await exemptByConfig(trx, this.cfg.lockdown.exemptions);
      const targets: Record<string, number> = {};
      const order: Array<{ personId: string; lockSystemId: string }> = [];
      // Per lock system, so that no key string is built per holder (a Set of 10,000
      // "ls/person" strings cost ~5 ms).
      const counted = new Map<string, Set<string>>();
      // Access lists are parsed only for scopes that name access (a revoke-all of 10,000 keys
      // would otherwise spend a noticeable time in JSON.parse).
      const count = (person: string, ls: string) => {
        let seen = counted.get(ls);
        if (!seen) counted.set(ls, (seen = new Set()));
        if (seen.has(person)) return;
        seen.add(person);
        targets[ls] = (targets[ls] ?? 0) + 1;
      };
      const consider = (person: string, ls: string, access: () => string[], target: boolean) => {
        const whole = scope.all || scope.lockSystems?.includes(ls);
        if (!whole && !access().some((a) => inScope(scope, ls, a))) return;
        order.push({ personId: person, lockSystemId: ls });
        // Progress counts what must be revoked: break-glass holders keep their access.
        if (target && !breakGlass.has(person)) count(person, ls);
      };
      // Holders the first batch has revoked already held in-scope access at the start too.
      for (const r of revoked) count(r.person_id, r.lock_system_id);
      for (const h of holders) consider(h.person_id, h.lock_system_id, () => [...parseList(h.access), ...parseList(h.unsure)], true);
      // Started grants (running, or tried and waiting for a retry) will land and then be revoked;
      // those that never started are superseded before they run.
      for (const op of inflight) consider(op.person_id, op.lock_system_id, () => parseList(op.access), hasStarted(op));
      // One set-based statement: every holder of managed access (a superset of the scope; an
      // unaffected person's reconcile is a no-op) and everyone with a grant on its way.
      const systems = this.systemsOf(scope);
      if (systems.length)
        await sql`
          insert into dirty (person_id, generation, priority, marked_at, reason, correlation_id)
          select person_id, 1, ${PRIORITY_LOCKDOWN}, ${now}, ${`lockdown ${id}`}, ${l.correlation_id}
          from (
            select person_id from lock_state where (access <> '[]' or unsure is not null) and lock_system_id in (${sql.join(systems)})
            union
            select person_id from operations where kind in ('grant', 'reinstate') and state in ('pending', 'running') and lock_system_id in (${sql.join(systems)})
          ) as affected
          where true
          on conflict (person_id) do update set generation = dirty.generation + 1, priority = ${PRIORITY_LOCKDOWN},
            reason = excluded.reason, correlation_id = excluded.correlation_id`.execute(trx);
      await trx.updateTable('lockdowns').set({ targets: JSON.stringify(targets), marked_at: now }).where('id', '=', id).execute();
      const persons = roundRobin(order);
      // Every person the lockdown marked, the first batch included.
      const markedCount = new Set([...persons, ...revoked.map((r) => r.person_id)]).size;
      await appendAudit(trx, this.store.dialect, [
        { actor: 'system:lockdown', action: 'lockdown.marked', subject: `lockdown:${id}`, correlationId: l.correlation_id, detail: { targets, persons: markedCount } },
      ]);
      return { persons, targets, markedCount };
    });
    if (!marked) return undefined;
    this.log.warn({ lockdown: id, targets: marked.targets, persons: marked.markedCount }, 'lockdown targets marked');
    return marked.persons;
  }

  /**
   * Finishes the second step of starts and lifts that a crash (or a failure) cut short: marks
   * and queues everyone. Called with the expiry check. Those started or lifted in the last
   * RESUME_AFTER_MS are left to the process that did it.
   */
  async resumeMarking(now = Date.now()): Promise<number> {
    const steps = [
      { states: ['active', 'lift_requested'], marked: 'marked_at', since: 'started_at', mark: (id: string) => this.markTargets(id), priority: PRIORITY_LOCKDOWN },
      { states: ['lifted', 'expired'], marked: 'lift_marked_at', since: 'lifted_at', mark: (id: string) => this.markRestore(id), priority: PRIORITY_NORMAL },
    ] as const;
    let resumed = 0;
    for (const step of steps) {
      const unfinished = await this.store.db
        .selectFrom('lockdowns')
        .select('id')
        .where('state', 'in', step.states)
        .where(step.marked, 'is', null)
        .where(step.since, '<=', now - RESUME_AFTER_MS)
        .execute();
      for (const { id } of unfinished) {
        const persons = await step.mark(id);
        if (!persons) continue;
        resumed++;
        await inChunks(persons, REST_CHUNK, (part) => this.enqueue(part, step.priority));
      }
    }
    if (resumed) this.log.warn({ resumed }, 'finished lockdown starts or lifts that were cut short (see the marking logged above)');
    return resumed;
  }

  async get(id: string): Promise<LockdownsTable | undefined> {
    return this.store.db.selectFrom('lockdowns').selectAll().where('id', '=', id).executeTakeFirst();
  }

  async list(): Promise<LockdownsTable[]> {
    return this.store.db.selectFrom('lockdowns').selectAll().orderBy('started_at', 'desc').limit(100).execute();
  }

  async addExemption(id: string, exemption: { person?: string; group?: string }, actor: Actor): Promise<void> {
    const kind = exemption.person ? 'person' : 'group';
    const value = exemption.person ?? exemption.group;
    if (!value) throw new LockdownError('INVALID', 'name a person (id or userName) or a group (id or display name)');
    const now = Date.now();
    const persons = await this.store.db.transaction().execute(async (trx) => {
      const l = await trx.selectFrom('lockdowns').select(['state']).where('id', '=', id).executeTakeFirst();
      if (!l) throw new LockdownError('NOT_FOUND', `lockdown ${id} not found`);
      if (l.state !== 'active' && l.state !== 'lift_requested') throw new LockdownError('CONFLICT', `lockdown ${id} is ${l.state}`);
      await trx.insertInto('lockdown_exemptions').values({ lockdown_id: id, kind, value, added_by: actor.name, added_at: now }).onConflict((oc) => oc.doNothing()).execute();
      const affected = await exemptedPersons(trx, kind, value);
      await markAll(trx, affected, PRIORITY_NORMAL, `lockdown ${id} exemption`, now, actor.correlationId);
      await appendAudit(trx, this.store.dialect, [
        { actor: actor.name, action: 'lockdown.exemption', subject: `lockdown:${id}`, correlationId: actor.correlationId, detail: { kind, value, persons: affected.length } },
      ]);
      return affected;
    });
    await this.enqueue(persons, PRIORITY_NORMAL);
  }

  /**
   * Lifts a lockdown. Under dual control the first cro request records itself and waits for a
   * second, different cro principal; the second lifts.
   */
  async lift(id: string, actor: Actor): Promise<{ state: 'lift_requested' | 'lifted' }> {
    const now = Date.now();
    const outcome = await this.store.db.transaction().execute(async (trx) => {
      const l = await trx.selectFrom('lockdowns').selectAll().where('id', '=', id).executeTakeFirst();
      if (!l) throw new LockdownError('NOT_FOUND', `lockdown ${id} not found`);
      if (l.state === 'lifted' || l.state === 'expired') throw new LockdownError('CONFLICT', `lockdown ${id} is already ${l.state}`);
      if (this.cfg.lockdown.dualControl) {
        if (l.state === 'active') {
          await trx.updateTable('lockdowns').set({ state: 'lift_requested', lift_requested_by: actor.name, lift_requested_at: now }).where('id', '=', id).execute();
          await appendAudit(trx, this.store.dialect, [
            { actor: actor.name, action: 'lockdown.lift_requested', subject: `lockdown:${id}`, correlationId: actor.correlationId, detail: { needs: 'a second cro principal to confirm' } },
          ]);
          return { state: 'lift_requested' as const, row: l, first: [] as string[] };
        }
        if (l.lift_requested_by === actor.name)
          throw new LockdownError('FORBIDDEN', `dual control: the lift requested by ${actor.name} must be confirmed by another cro principal`);
      }
      const first = await this.finish(trx, l, 'lifted', actor.name, actor.correlationId, now);
      return { state: 'lifted' as const, row: l, first };
    });
    if (outcome.state === 'lifted') await this.afterFinish(outcome.row, 'lockdown.lifted', outcome.first);
    return { state: outcome.state };
  }

  /** Lifts lockdowns whose expiry has passed; called by the engine's timer. */
  async expireDue(now = Date.now()): Promise<number> {
    const due = await this.store.db.selectFrom('lockdowns').selectAll().where('state', 'in', ['active', 'lift_requested']).where('expires_at', '<=', now).execute();
    for (const l of due) {
      const corr = randomUUID();
      const first = await this.store.db.transaction().execute(async (trx) => {
        const fresh = await trx.selectFrom('lockdowns').select('state').where('id', '=', l.id).executeTakeFirst();
        if (!fresh || (fresh.state !== 'active' && fresh.state !== 'lift_requested')) return undefined;
        return this.finish(trx, l, 'expired', 'system:lockdown-expiry', corr, now);
      });
      if (first) await this.afterFinish(l, 'lockdown.expired', first);
    }
    return due.length;
  }

  /**
   * Ends a lockdown, the first of the lift's two steps (as with the start): the state, and a
   * first few of the persons it revoked, read with a bound per lock system and marked to be
   * restored first; returns them. markRestore marks everyone after their head start.
   */
  private async finish(trx: Transaction<Database>, l: LockdownsTable, state: 'lifted' | 'expired', by: string, correlationId: string, now: number): Promise<string[]> {
    await trx.updateTable('lockdowns').set({ state, lifted_by: by, lifted_at: now, lift_correlation_id: correlationId, lift_marked_at: null }).where('id', '=', l.id).execute();
    const first = await firstPerSystem(
      this.cfg.lockSystems.map((ls) => ls.id),
      async (ls) =>
        (
          await exec<{ person_id: string }>(
            trx,
            "select distinct person_id from operations where correlation_id = ? and kind in ('revoke', 'leave') and lock_system_id = ? limit ?",
            [l.correlation_id, ls, FIRST_BATCH],
          )
        ).map((r) => r.person_id),
    );
    await markAll(trx, first, PRIORITY_NORMAL, `lockdown ${l.id} ${state}`, now, correlationId);
    await appendAudit(trx, this.store.dialect, [
      { actor: by, action: state === 'lifted' ? 'lockdown.lift' : 'lockdown.expire', subject: `lockdown:${l.id}`, correlationId, detail: { requestedBy: l.lift_requested_by, confirmedBy: by } },
    ]);
    return first;
  }

  private async afterFinish(l: LockdownsTable, event: string, first: string[]): Promise<void> {
    await this.enqueue(first, PRIORITY_NORMAL);
    const queued = new Set(first);
    this.enqueueLater(async () => ((await this.markRestore(l.id)) ?? []).filter((p) => !queued.has(p)), PRIORITY_NORMAL);
    this.log.warn({ lockdown: l.id, event }, 'lockdown ended; normal access is being restored');
    const fresh = await this.get(l.id);
    if (fresh) void this.notify(event, fresh);
  }

  /**
   * The lift's second step: marks everyone dirty (joiners during the lockdown never got access,
   * so restoring means everyone, not only those who lost it), audits the lockdown's final
   * figures and sets `lift_marked_at`, in one transaction. Returns the persons marked in the
   * order to queue them (round-robin over lock systems), or undefined when there was nothing to do.
   */
  private async markRestore(id: string): Promise<string[] | undefined> {
    const done = await this.store.db.transaction().execute(async (trx) => {
      let q = trx.selectFrom('lockdowns').selectAll().where('id', '=', id);
      if (this.store.dialect === 'postgres') q = q.forUpdate();
      const l = await q.executeTakeFirst();
      if (!l || l.lift_marked_at !== null || (l.state !== 'lifted' && l.state !== 'expired') || !l.lift_correlation_id) return undefined;
      const now = Date.now();
      const persons = await markEveryoneDirty(trx, { priority: PRIORITY_NORMAL, reason: `lockdown ${id} ${l.state}`, markedAt: now, correlationId: l.lift_correlation_id });
      // The revocation's figures as the lockdown ended (the restore has figures of its own).
      const figures = await this.figures(trx, { ...l, lift_correlation_id: null });
      await trx.updateTable('lockdowns').set({ lift_marked_at: now }).where('id', '=', id).execute();
      await appendAudit(trx, this.store.dialect, [
        { actor: 'system:lockdown', action: 'lockdown.restore', subject: `lockdown:${id}`, correlationId: l.lift_correlation_id, detail: { persons, figures } },
      ]);
      return { persons };
    });
    if (!done) return undefined;
    this.log.warn({ lockdown: id, persons: done.persons }, 'everyone marked to have normal access restored');
    return roundRobin(await this.markedBy(`lockdown ${id}%`));
  }

  /** The lockdowns every reconcile must honour, with config and per-lockdown exemptions merged. */
  async activeViews(db: Kysely<Database> = this.store.db): Promise<LockdownView[]> {
    const rows = await exec<{ id: string; scope: string }>(db, IN_FORCE, []);
    if (rows.length === 0) return [];
    const ex = await exec<{ lockdown_id: string; kind: string; value: string }>(
      db,
      `select lockdown_id, kind, value from lockdown_exemptions where lockdown_id in (${placeholders(rows.length)})`,
      rows.map((r) => r.id),
    );
    return rows.map((r) => ({
      id: r.id,
      scope: JSON.parse(r.scope) as LockdownScope,
      exemptions: {
        persons: [...this.cfg.lockdown.exemptions.persons, ...ex.filter((e) => e.lockdown_id === r.id && e.kind === 'person').map((e) => e.value)],
        groups: [...this.cfg.lockdown.exemptions.groups, ...ex.filter((e) => e.lockdown_id === r.id && e.kind === 'group').map((e) => e.value)],
      },
    }));
  }

  /** Progress of a lockdown (and of its lift): per lock system, exposure and tasks. */
  async figures(db: Kysely<Database>, l: LockdownsTable) {
    const count = async (correlationId: string | null, kinds: string[]) => {
      const out: Record<string, { accepted: number; effective: number; failed: number; pending: number }> = {};
      if (!correlationId) return out;
      const rows = await db
        .selectFrom('operations')
        .select(['lock_system_id', 'state', (eb) => eb.fn.countAll<number>().as('n'), (eb) => eb.fn.count<number>('effective_at').as('eff')])
        .where('correlation_id', '=', correlationId)
        .where('kind', 'in', kinds)
        .where('state', '!=', 'superseded')
        .groupBy(['lock_system_id', 'state'])
        .execute();
      for (const r of rows) {
        const c = (out[r.lock_system_id] ??= { accepted: 0, effective: 0, failed: 0, pending: 0 });
        const n = Number(r.n);
        if (r.state === 'accepted') {
          c.accepted += n;
          c.effective += Number(r.eff);
        } else if (r.state === 'dead') c.failed += n;
        else c.pending += n;
      }
      return out;
    };
    const targets = JSON.parse(l.targets) as Record<string, number>;
    const revocations = await count(l.correlation_id, ['revoke', 'leave']);
    const perLockSystem = Object.fromEntries(
      [...new Set([...Object.keys(targets), ...Object.keys(revocations)])].sort().map((ls) => [ls, { targeted: targets[ls] ?? 0, ...(revocations[ls] ?? { accepted: 0, effective: 0, failed: 0, pending: 0 }) }]),
    );
    const exposure = await db
      .selectFrom('key_changes')
      .innerJoin('operations', 'operations.id', 'key_changes.operation_id')
      .select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.max('key_changes.horizon').as('latest'), eb.fn.sum<number>(eb.case().when('key_changes.horizon', 'is', null).then(1).else(0).end()).as('unbounded')])
      .where('operations.correlation_id', '=', l.correlation_id)
      .where('key_changes.revocation', '=', 1)
      .where('key_changes.effective_at', 'is', null)
      .executeTakeFirstOrThrow();
    const tasks = await db.selectFrom('tasks').select((eb) => eb.fn.countAll<number>().as('n')).where('correlation_id', '=', l.correlation_id).executeTakeFirstOrThrow();
    // Persons marked for this lockdown (or its lift) but not yet planned: work still to come.
    const queued = await db
      .selectFrom('dirty')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('correlation_id', 'in', [l.correlation_id, l.lift_correlation_id ?? l.correlation_id])
      .executeTakeFirstOrThrow();
    const restored = await count(l.lift_correlation_id, ['grant', 'reinstate']);
    const unbounded = Number(exposure.unbounded ?? 0);
    return {
      perLockSystem,
      exposure: {
        keysNotYetEffective: Number(exposure.n),
        unbounded,
        latestHorizon: unbounded || exposure.latest === null ? null : new Date(Number(exposure.latest)).toISOString(),
      },
      tasks: Number(tasks.n),
      queuedPersons: Number(queued.n),
      lift: l.lift_correlation_id ? { perLockSystem: restored } : null,
    };
  }

  /** Persons whose dirty mark has `reason` (a LIKE pattern), with their lock systems. */
  private async markedBy(reason: string): Promise<Array<{ personId: string; lockSystemId: string }>> {
    const rows = await this.store.db
      .selectFrom('dirty')
      .leftJoin('lock_state', 'lock_state.person_id', 'dirty.person_id')
      .select(['dirty.person_id', 'lock_state.lock_system_id'])
      .where('dirty.reason', 'like', reason)
      .execute();
    return rows.map((p) => ({ personId: p.person_id, lockSystemId: p.lock_system_id ?? '' }));
  }

  /**
   * Queues `rest()` after the first batch's head start, in the background, in chunks that yield to
   * the event loop: creating thousands of jobs in one go would starve the first batch's
   * reconciles. What it queues is marked in the database before, so whatever Redis misses (or a
   * failure here) the sweeper offers again; targets not yet marked, the next expiry check.
   */
  private enqueueLater(rest: () => Promise<string[]>, priority: number): void {
    void (async () => {
      // Unreferenced: a process with nothing else to do ends (the marks are in the database).
      await new Promise((r) => setTimeout(r, this.restDelayMs).unref());
      await inChunks(await rest(), REST_CHUNK, (part) => this.enqueue(part, priority));
    })().catch((err: Error) => this.log.error({ err: err.message }, 'queueing lockdown persons failed; the sweeper and the next expiry check take over'));
  }

  private async enqueue(persons: string[], priority: number): Promise<void> {
    if (!this.queues || persons.length === 0) return;
    for (let i = 0; i < persons.length; i += 1000)
      await this.queues.enqueueReconcile(persons.slice(i, i + 1000).map((personId) => ({ personId, priority })));
  }

  private async notify(event: string, l: LockdownsTable): Promise<void> {
    const n = this.cfg.lockdown.notify;
    const body = { event, lockdown: publicView(l), at: new Date().toISOString() };
    this.log.warn(body, `lockdown notification: ${event}`);
    if (!n.webhookUrl) return;
    let outcome: string;
    try {
      const res = await fetch(n.webhookUrl, { method: 'POST', headers: { 'content-type': 'application/json', ...n.headers }, body: JSON.stringify(body), signal: AbortSignal.timeout(n.timeoutMs) });
      outcome = `HTTP ${res.status}`;
      await res.body?.cancel();
    } catch (err) {
      outcome = `failed: ${(err as Error).message}`;
    }
    await auditAlone(this.store, [{ actor: 'system:lockdown', action: 'lockdown.notified', subject: `lockdown:${l.id}`, correlationId: l.correlation_id, detail: { event, outcome } }]).catch(() => {});
  }
}

export function publicView(l: LockdownsTable) {
  const iso = (ms: number | null) => (ms === null ? null : new Date(Number(ms)).toISOString());
  return {
    id: l.id,
    state: l.state,
    scope: JSON.parse(l.scope) as LockdownScope,
    reason: l.reason,
    startedBy: l.started_by,
    startedAt: iso(l.started_at),
    /** When every target had been marked and counted (null for the first moments). */
    markedAt: iso(l.marked_at),
    expiresAt: iso(l.expires_at),
    liftRequestedBy: l.lift_requested_by,
    liftRequestedAt: iso(l.lift_requested_at),
    liftedBy: l.lifted_by,
    liftedAt: iso(l.lifted_at),
    /** When everyone had been marked for the restore (null for the lift's first moments). */
    liftMarkedAt: iso(l.lift_marked_at),
  };
}

async function markAll(trx: Kysely<Database>, persons: string[], priority: number, reason: string, now: number, correlationId: string): Promise<void> {
  for (let i = 0; i < persons.length; i += 500) {
    const chunk = persons.slice(i, i + 500);
    await trx
      .insertInto('dirty')
      .values(chunk.map((p) => ({ person_id: p, generation: 1, priority, marked_at: now, reason, correlation_id: correlationId })))
      .onConflict((oc) =>
        oc.column('person_id').doUpdateSet({
          generation: sql<number>`dirty.generation + 1`,
          priority: sql<number>`case when excluded.priority < dirty.priority then excluded.priority else dirty.priority end`,
          reason: sql<string>`excluded.reason`,
          correlation_id: sql<string>`excluded.correlation_id`,
        }),
      )
      .execute();
  }
}

/**
 * The first batch of a start or a lift: up to FIRST_BATCH persons from each lock system's bounded
 * read, taken round-robin over the lock systems, FIRST_BATCH in all.
 */
async function firstPerSystem(systems: string[], read: (lockSystemId: string) => Promise<string[]>): Promise<string[]> {
  const heads = await Promise.all(systems.map(async (ls) => (await read(ls)).slice(0, FIRST_BATCH).map((personId) => ({ personId, lockSystemId: ls }))));
  return roundRobin(heads.flat()).slice(0, FIRST_BATCH);
}

/** A JSON list of access names as stored (null: none). */
function parseList(json: string | null): string[] {
  return json ? (JSON.parse(json) as string[]) : [];
}

/** Persons covered by the configured break-glass exemptions. */
async function exemptByConfig(db: Kysely<Database>, ex: { persons: string[]; groups: string[] }): Promise<Set<string>> {
  const out = new Set<string>();
  for (const p of ex.persons) for (const id of await exemptedPersons(db, 'person', p)) out.add(id);
  for (const g of ex.groups) for (const id of await exemptedPersons(db, 'group', g)) out.add(id);
  return out;
}

/** Persons a new exemption concerns: by id or userName, or members of a group by id or name. */
async function exemptedPersons(db: Kysely<Database>, kind: 'person' | 'group', value: string): Promise<string[]> {
  if (kind === 'person') {
    const rows = await db
      .selectFrom('persons')
      .select('id')
      .where((eb) => eb.or([eb('id', '=', value), eb('user_name_lc', '=', value.toLowerCase())]))
      .execute();
    return rows.map((r) => r.id);
  }
  const rows = await db
    .selectFrom('memberships')
    .innerJoin('groups', 'groups.id', 'memberships.group_id')
    .select('memberships.person_id')
    .where((eb) => eb.or([eb('groups.id', '=', value), eb('groups.display_name_lc', '=', value.toLowerCase())]))
    .execute();
  return [...new Set(rows.map((r) => r.person_id))];
}
