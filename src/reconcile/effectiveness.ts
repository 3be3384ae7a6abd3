import { appendAudit, type AuditEntry } from '../audit/audit.ts';
import type { Logger } from '../log.ts';
import type { LockSystem } from '../ports/lock-system.ts';
import type { Store } from '../store/db.ts';

/**
 * The second truth of revocation. A lock system accepting a change is not a key refusing a
 * door: the change must reach the key (iLOQ programming, a CLIQ job done). For every key change
 * that is accepted but not yet effective, the watcher asks the lock system for the key's
 * programming state, records when it became effective, and keeps the key's exposure horizon
 * (latest moment it could still open a door) current. An operation is effective when all of
 * its keys are. Webhooks (iLOQ) call `check` for one person at once; the timer catches the rest.
 */
export class EffectivenessWatcher {
  private readonly store: Store;
  private readonly systems: Map<string, LockSystem>;
  private readonly log: Logger;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;

  constructor(deps: { store: Store; lockSystems: Map<string, LockSystem>; log: Logger; intervalMs: number }) {
    this.store = deps.store;
    this.systems = deps.lockSystems;
    this.log = deps.log;
    this.intervalMs = deps.intervalMs;
  }

  start(): void {
    this.timer = setInterval(() => {
      if (!this.running)
        this.running = this.checkAll()
          .then(() => undefined, (err: Error) => this.log.warn({ err: err.message }, 'effectiveness check failed'))
          .finally(() => (this.running = undefined));
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }

  /** One pass over persons with keys still waiting, least recently checked first. */
  async checkAll(batch = 200): Promise<number> {
    const pairs = await this.store.db
      .selectFrom('key_changes')
      .select(['lock_system_id', 'person_id', (eb) => eb.fn.min('checked_at').as('checked')])
      .where('effective_at', 'is', null)
      .groupBy(['lock_system_id', 'person_id'])
      .orderBy('checked')
      .limit(batch)
      .execute();
    let done = 0;
    for (const p of pairs) done += await this.check(p.lock_system_id, p.person_id).catch((err: Error) => {
      this.log.warn({ lockSystem: p.lock_system_id, personId: p.person_id, err: err.message }, 'programming state unavailable');
      return 0;
    });
    return done;
  }

  /** Checks one person's waiting keys on one lock system; returns how many became effective. */
  async check(lockSystemId: string, personId: string): Promise<number> {
    const system = this.systems.get(lockSystemId);
    if (!system) return 0;
    const states = new Map((await system.programmingState(personId)).map((s) => [s.keyId, s]));
    const now = Date.now();
    return this.store.db.transaction().execute(async (trx) => {
      const open = await trx
        .selectFrom('key_changes')
        .select(['id', 'operation_id', 'key_id', 'horizon', 'accepted_at', 'kind'])
        .where('lock_system_id', '=', lockSystemId)
        .where('person_id', '=', personId)
        .where('effective_at', 'is', null)
        .execute();
      let effective = 0;
      const touched = new Set<string>();
      for (const row of open) {
        const state = states.get(row.key_id);
        // A key the lock system no longer lists (returned, deleted) cannot open anything.
        if (!state || state.effective) {
          await trx.updateTable('key_changes').set({ effective_at: now, checked_at: now }).where('id', '=', row.id).execute();
          effective += 1;
          touched.add(row.operation_id);
        } else {
          const horizon = state.horizon ? Date.parse(state.horizon) : row.horizon;
          await trx.updateTable('key_changes').set({ checked_at: now, horizon }).where('id', '=', row.id).execute();
        }
      }
      const entries: AuditEntry[] = [];
      for (const opId of touched) {
        const still = await trx.selectFrom('key_changes').select('id').where('operation_id', '=', opId).where('effective_at', 'is', null).executeTakeFirst();
        if (still) continue;
        const op = await trx.selectFrom('operations').select(['kind', 'accepted_at', 'correlation_id', 'effective_at']).where('id', '=', opId).executeTakeFirst();
        if (!op || op.effective_at !== null) continue;
        await trx.updateTable('operations').set({ effective_at: now }).where('id', '=', opId).execute();
        entries.push({
          actor: `system:effectiveness:${lockSystemId}`,
          action: 'operation.effective',
          subject: `operation:${opId}`,
          personId,
          correlationId: op.correlation_id,
          detail: { lockSystem: lockSystemId, kind: op.kind, acceptedToEffectiveMs: op.accepted_at ? now - Number(op.accepted_at) : null },
        });
      }
      await appendAudit(trx, this.store.dialect, entries);
      return effective;
    });
  }

  /** The persons whose change on this key still waits (for webhooks that name a key). */
  async personsWaitingOnKey(lockSystemId: string, keyId: string): Promise<string[]> {
    const rows = await this.store.db
      .selectFrom('key_changes')
      .select('person_id')
      .distinct()
      .where('lock_system_id', '=', lockSystemId)
      .where('key_id', '=', keyId)
      .where('effective_at', 'is', null)
      .execute();
    return rows.map((r) => r.person_id);
  }
}
