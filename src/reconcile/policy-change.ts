import { createHash, randomUUID } from 'node:crypto';
import { appendAudit } from '../audit/audit.ts';
import type { Config } from '../config/schema.ts';
import type { Store } from '../store/db.ts';
import { markEveryoneDirty, PRIORITY_NORMAL } from '../store/identities.ts';

/**
 * A policy change alters everyone's desired access, but no identity event says so. At start
 * the daemon compares the policy's fingerprint with the one it last ran with; if they differ,
 * every known person is marked dirty (in one statement) and the sweeper feeds them to the
 * reconcile queue. The change and its reach are audited.
 */
export function policyFingerprint(cfg: Config): string {
  const relevant = { rules: cfg.policy.rules, lockSystems: cfg.lockSystems.map((l) => l.id).sort() };
  return createHash('sha256').update(JSON.stringify(relevant)).digest('hex');
}

export async function reconcileAllIfPolicyChanged(store: Store, cfg: Config, backdateMs: number): Promise<{ changed: boolean; marked: number }> {
  const fingerprint = policyFingerprint(cfg);
  return store.db.transaction().execute(async (trx) => {
    const row = await trx.selectFrom('meta').select('value').where('key', '=', 'policy_fingerprint').executeTakeFirst();
    if (row?.value === fingerprint) return { changed: false, marked: 0 };
    const now = Date.now();
    const correlationId = randomUUID();
    // Backdated so the sweeper takes them on its next pass instead of waiting sweepAfterMs.
    const markedAt = now - backdateMs;
    const marked = await markEveryoneDirty(trx, { priority: PRIORITY_NORMAL, reason: 'policy changed', markedAt, correlationId });
    await trx
      .insertInto('meta')
      .values({ key: 'policy_fingerprint', value: fingerprint })
      .onConflict((oc) => oc.column('key').doUpdateSet({ value: fingerprint }))
      .execute();
    await appendAudit(trx, store.dialect, [
      {
        actor: 'system:policy',
        action: row ? 'policy.changed' : 'policy.first_run',
        subject: 'policy',
        correlationId,
        detail: { fingerprint, previous: row?.value ?? null, personsToReconcile: marked, rules: cfg.policy.rules.map((r) => r.name) },
      },
    ]);
    return { changed: true, marked };
  });
}
