import { randomUUID } from 'node:crypto';
import { appendAudit } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import { managedAccess } from '../domain/policy.ts';
import type { Logger } from '../log.ts';
import type { LockSystem } from '../ports/lock-system.ts';
import type { Store } from '../store/db.ts';
import { markDirty, PRIORITY_LEAVER, PRIORITY_NORMAL, type DirtyMark } from '../store/identities.ts';
import { lockPerson } from '../store/sql.ts';
import { pool } from './mutex.ts';

/**
 * Lock-system drift: what a lock system holds for a person (`readPerson`: keys and the managed
 * access on each) against what lockstep recorded as accepted (`lock_state`).
 *
 * The planner plans against `lock_state`, so merely asking for a reconcile would plan nothing:
 * the repair first makes `lock_state` say what the lock system really holds, then marks the
 * person dirty — in one transaction, with an audit row — and the normal reconcile/apply path
 * puts the lock system back where policy wants it:
 * - access lockstep recorded but missing on some key → dropped from lock_state → re-granted;
 * - managed access on a key that lock_state does not record (granted by hand, or left over) →
 *   added to lock_state → revoked unless policy wants it;
 * - a departed person with managed access again → no longer departed → leave again.
 * Persons with operations pending or running are skipped (in flight is not drift), and the
 * repair re-checks that inside its transaction.
 */

export interface LockDriftItem {
  personId: string;
  lockSystem: string;
  /** What lock_state recorded (accepted). */
  expected: string[];
  /** What the lock system shows (managed access, on every key / on some key). */
  missing: string[];
  extra: string[];
  personFound: boolean;
  keys: Array<{ keyId: string; access: string[] }>;
  repaired: boolean;
}

export interface LockDriftResult {
  checkId: string;
  lockSystem: string;
  startedAt: string;
  finishedAt: string;
  checked: number;
  inFlight: number;
  errors: number;
  drifted: number;
  items: LockDriftItem[];
}

export interface DriftDeps {
  config: Config;
  store: Store;
  lockSystems: Map<string, LockSystem>;
  log: Logger;
  /** Tells the reconcile queue (the sweeper finds the marks anyway). */
  enqueueReconcile?: (marks: DirtyMark[]) => Promise<void>;
}

const ITEMS_KEPT = 1000;

export class LockDriftChecker {
  private readonly deps: DriftDeps;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(deps: DriftDeps) {
    this.deps = deps;
  }

  /** Periodic checks every `identity.driftCheckEvery` (0 = only on request). */
  start(): void {
    const every = this.deps.config.identity.driftCheckEvery;
    if (!every || this.deps.lockSystems.size === 0) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.checkAll()
        .catch((err: Error) => this.deps.log.warn({ err: err.message }, 'drift check failed'))
        .finally(() => (this.running = undefined));
    }, every);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  async checkAll(opts: { repair?: boolean } = {}): Promise<LockDriftResult[]> {
    const out: LockDriftResult[] = [];
    for (const id of this.deps.lockSystems.keys()) out.push(await this.check(id, opts));
    return out;
  }

  async check(lockSystemId: string, opts: { repair?: boolean } = {}): Promise<LockDriftResult> {
    const { store, log } = this.deps;
    const ls = this.deps.lockSystems.get(lockSystemId);
    if (!ls) throw new Error(`unknown lock system "${lockSystemId}"`);
    const repair = opts.repair !== false;
    const db = store.db;
    const checkId = randomUUID();
    const started = Date.now();
    await db.insertInto('drift_checks').values({ id: checkId, kind: 'lock', system_id: lockSystemId, started_at: started, finished_at: null, summary: null }).execute();
    const managed = managedAccess(this.deps.config.policy.rules).get(lockSystemId) ?? new Set<string>();
    const result: LockDriftResult = { checkId, lockSystem: lockSystemId, startedAt: new Date(started).toISOString(), finishedAt: '', checked: 0, inFlight: 0, errors: 0, drifted: 0, items: [] };
    const marks: DirtyMark[] = [];

    for (let after = ''; ; ) {
      const rows = await db
        .selectFrom('lock_state')
        .selectAll()
        .where('lock_system_id', '=', lockSystemId)
        .where('person_id', '>', after)
        .orderBy('person_id')
        .limit(200)
        .execute();
      if (rows.length === 0) break;
      after = rows[rows.length - 1]!.person_id;
      const busy = new Set(
        (
          await db
            .selectFrom('operations')
            .select('person_id')
            .where('lock_system_id', '=', lockSystemId)
            .where('person_id', 'in', rows.map((r) => r.person_id))
            .where('state', 'in', ['pending', 'running'])
            .execute()
        ).map((o) => o.person_id),
      );
      await pool(rows, 4, async (row) => {
        if (busy.has(row.person_id)) {
          result.inFlight++;
          return;
        }
        let person;
        try {
          person = await ls.readPerson(row.person_id);
        } catch (err) {
          result.errors++;
          log.warn({ lockSystem: lockSystemId, personId: row.person_id, err: (err as Error).message }, 'drift check: could not read the person');
          return;
        }
        result.checked++;
        const expected = row.departed === 1 ? [] : (JSON.parse(row.access) as string[]);
        const relevant = new Set([...managed, ...expected]);
        const keys = (person?.keys ?? []).map((k) => ({ keyId: k.keyId, access: k.access.filter((a) => relevant.has(a)).sort() }));
        const missing = expected.filter((e) => keys.length === 0 || keys.some((k) => !k.access.includes(e)));
        const extra = [...new Set(keys.flatMap((k) => k.access))].filter((a) => !expected.includes(a)).sort();
        if (missing.length === 0 && extra.length === 0) return;
        result.drifted++;
        const item: LockDriftItem = { personId: row.person_id, lockSystem: lockSystemId, expected, missing, extra, personFound: person !== null, keys, repaired: false };
        if (repair) {
          const observed = [...new Set([...expected.filter((e) => !missing.includes(e)), ...extra])].sort();
          const mark = await this.repair(lockSystemId, row, observed, item);
          if (mark) {
            marks.push(mark);
            item.repaired = true;
          }
        }
        if (result.items.length < ITEMS_KEPT) result.items.push(item);
        await db
          .insertInto('drift_findings')
          .values({ id: randomUUID(), check_id: checkId, kind: 'lock', system_id: lockSystemId, person_id: row.person_id, detail: JSON.stringify(item), found_at: Date.now(), repaired_at: item.repaired ? Date.now() : null })
          .execute();
      });
    }
    const finished = Date.now();
    result.finishedAt = new Date(finished).toISOString();
    await db
      .updateTable('drift_checks')
      .set({ finished_at: finished, summary: JSON.stringify({ checked: result.checked, inFlight: result.inFlight, errors: result.errors, drifted: result.drifted }) })
      .where('id', '=', checkId)
      .execute();
    if (marks.length) await this.deps.enqueueReconcile?.(marks).catch((err: Error) => log.warn({ err: err.message }, 'enqueue after drift repair failed; the sweeper will pick the persons up'));
    log.info({ lockSystem: lockSystemId, checked: result.checked, drifted: result.drifted, inFlight: result.inFlight, errors: result.errors }, 'lock-system drift check finished');
    return result;
  }

  /** lock_state := what the lock system holds; person dirty; audited. Skipped if anything moved meanwhile. */
  private async repair(
    lockSystemId: string,
    row: { person_id: string; access: string; departed: number; updated_at: number },
    observed: string[],
    item: LockDriftItem,
  ): Promise<DirtyMark | undefined> {
    const { store } = this.deps;
    const now = Date.now();
    const correlationId = randomUUID();
    return store.db.transaction().execute(async (trx) => {
      await lockPerson(trx, store.dialect, row.person_id);
      const current = await trx
        .selectFrom('lock_state')
        .select(['updated_at'])
        .where('lock_system_id', '=', lockSystemId)
        .where('person_id', '=', row.person_id)
        .executeTakeFirst();
      const busy = await trx
        .selectFrom('operations')
        .select('id')
        .where('lock_system_id', '=', lockSystemId)
        .where('person_id', '=', row.person_id)
        .where('state', 'in', ['pending', 'running'])
        .executeTakeFirst();
      if (!current || Number(current.updated_at) !== Number(row.updated_at) || busy) return undefined;
      await trx
        .updateTable('lock_state')
        // What the lock system holds is known now: nothing is unsure any more.
        .set({ access: JSON.stringify(observed), departed: row.departed === 1 && item.extra.length === 0 ? 1 : 0, unsure: null, updated_at: now })
        .where('lock_system_id', '=', lockSystemId)
        .where('person_id', '=', row.person_id)
        .execute();
      const mark = await markDirty(trx, row.person_id, item.extra.length ? PRIORITY_LEAVER : PRIORITY_NORMAL, 'lock-system drift', now, correlationId);
      await appendAudit(trx, store.dialect, [
        {
          actor: 'system:drift',
          action: 'drift.lock_system',
          subject: `person:${row.person_id}`,
          personId: row.person_id,
          correlationId,
          detail: { lockSystem: lockSystemId, recorded: item.expected, observed, missing: item.missing, extra: item.extra, personFound: item.personFound, keys: item.keys },
        },
      ]);
      return mark;
    });
  }

  /** The latest check per lock system with its findings (for GET /api/v1/drift). */
  async latest(limit = 500): Promise<
    Array<{ lockSystem: string; checkId: string | null; startedAt: string | null; finishedAt: string | null; summary: unknown; items: unknown[] }>
  > {
    const db = this.deps.store.db;
    const out = [];
    for (const id of this.deps.lockSystems.keys()) {
      const c = await db.selectFrom('drift_checks').selectAll().where('kind', '=', 'lock').where('system_id', '=', id).orderBy('started_at', 'desc').limit(1).executeTakeFirst();
      const items = c
        ? (await db.selectFrom('drift_findings').select(['detail', 'repaired_at']).where('check_id', '=', c.id).limit(limit).execute()).map((f) => ({
            ...(JSON.parse(f.detail) as object),
            repairedAt: f.repaired_at === null ? null : new Date(Number(f.repaired_at)).toISOString(),
          }))
        : [];
      out.push({
        lockSystem: id,
        checkId: c?.id ?? null,
        startedAt: c ? new Date(Number(c.started_at)).toISOString() : null,
        finishedAt: c?.finished_at ? new Date(Number(c.finished_at)).toISOString() : null,
        summary: c?.summary ? JSON.parse(c.summary) : null,
        items,
      });
    }
    return out;
  }
}
