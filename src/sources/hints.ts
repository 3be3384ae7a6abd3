import { sql } from 'kysely';
import type { Change, SourceTask } from '../ports/identity-source.ts';
import type { Store } from '../store/db.ts';

/**
 * Hints and tasks as the database keeps them: the dedupe record and the confirmation outbox in
 * one table. A webhook's changes are inserted with `ON CONFLICT (source_id, dedupe_key) DO
 * NOTHING` in one transaction before the IdP gets its answer; only the rows actually inserted
 * come back, so a redelivery costs one statement and nothing downstream.
 *
 * Concurrent persists are group-committed (one transaction for every request that arrived in
 * the same event-loop turn): at hundreds of deliveries per second the commit, not the insert,
 * is what costs. A failing batch fails every request in it; each gets 503 and the IdP retries.
 */

export interface PersistedHint {
  seq: number;
  sourceId: string;
  target: 'user' | 'group';
  targetId: string;
  revocation: boolean;
}

export interface PersistedTask {
  seq: number;
  sourceId: string;
}

export interface Persisted {
  sourceId: string;
  hints: PersistedHint[];
  tasks: PersistedTask[];
  resync: 'delta' | 'full' | undefined;
  duplicates: number;
}

interface Pending {
  sourceId: string;
  changes: Change[];
  tasks: SourceTask[];
  resync: 'delta' | 'full' | undefined;
  cursor?: string | undefined;
  resolve: (p: Persisted) => void;
  reject: (e: unknown) => void;
}

const ROWS = 50;

export class HintStore {
  private readonly store: Store;
  private queue: Pending[] = [];
  private scheduled = false;

  constructor(store: Store) {
    this.store = store;
  }

  /** Persists a hook's (or a delta round's) hints, tasks and resync wish; resolves after commit. */
  persist(sourceId: string, changes: Change[], tasks: SourceTask[], resync: 'delta' | 'full' | undefined, cursor?: string): Promise<Persisted> {
    return new Promise((resolve, reject) => {
      this.queue.push({ sourceId, changes, tasks, resync, cursor, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    const batch = this.queue.splice(0, 256);
    try {
      const results = await this.store.db.transaction().execute(async (trx) => {
        const out: Persisted[] = [];
        for (const p of batch) out.push(await this.write(trx as never, p));
        return out;
      });
      batch.forEach((p, i) => p.resolve(results[i]!));
    } catch (err) {
      for (const p of batch) p.reject(err);
    } finally {
      this.scheduled = false;
      if (this.queue.length) {
        this.scheduled = true;
        setImmediate(() => void this.drain());
      }
    }
  }

  private async write(trx: Store['db'], p: Pending): Promise<Persisted> {
    const now = Date.now();
    const hints: PersistedHint[] = [];
    const rows = p.changes
      .map((c) => {
        const target = c.userId ? ('user' as const) : ('group' as const);
        const targetId = c.userId ?? c.groupId;
        if (!targetId) return undefined;
        return {
          source_id: p.sourceId,
          dedupe_key: c.dedupeKey,
          kind: c.kind,
          target,
          target_id: targetId,
          group_id: c.groupId ?? null,
          event_id: c.eventId,
          event_type: c.eventType,
          occurred_at: c.occurredAt,
          revocation: c.revocation ? 1 : 0,
          received_at: now,
          state: 'pending',
          attempts: 0,
          done_at: null,
          error: null,
        };
      })
      .filter((r) => r !== undefined);
    for (let i = 0; i < rows.length; i += ROWS) {
      const inserted = await trx
        .insertInto('source_hints')
        .values(rows.slice(i, i + ROWS))
        .onConflict((oc) => oc.columns(['source_id', 'dedupe_key']).doNothing())
        .returning(['seq', 'target', 'target_id', 'revocation'])
        .execute();
      for (const r of inserted) hints.push({ seq: Number(r.seq), sourceId: p.sourceId, target: r.target as 'user' | 'group', targetId: r.target_id, revocation: r.revocation === 1 });
    }
    const tasks: PersistedTask[] = [];
    if (p.tasks.length) {
      const inserted = await trx
        .insertInto('source_tasks')
        .values(p.tasks.map((t) => ({ source_id: p.sourceId, dedupe_key: t.dedupeKey, type: t.type, data: JSON.stringify(t.data), received_at: now, state: 'pending', attempts: 0, done_at: null, error: null })))
        .onConflict((oc) => oc.columns(['source_id', 'dedupe_key']).doNothing())
        .returning(['seq'])
        .execute();
      tasks.push(...inserted.map((r) => ({ seq: Number(r.seq), sourceId: p.sourceId })));
    }
    if (p.resync || p.cursor !== undefined) await upsertState(trx, p.sourceId, now, { resync: p.resync, cursor: p.cursor });
    return { sourceId: p.sourceId, hints, tasks, resync: p.resync, duplicates: rows.length - hints.length };
  }

  /** Pending hints of one record: the newest seq, whether any asks for leaver priority, the event id for correlation. */
  async pendingFor(sourceId: string, target: string, targetId: string): Promise<{ maxSeq: number | undefined; revocation: boolean; eventId: string | undefined; count: number }> {
    const rows = await this.store.db
      .selectFrom('source_hints')
      .select(['seq', 'revocation', 'event_id'])
      .where('source_id', '=', sourceId)
      .where('target', '=', target)
      .where('target_id', '=', targetId)
      .where('state', '=', 'pending')
      .orderBy('seq')
      .execute();
    const last = rows.at(-1);
    return { maxSeq: last ? Number(last.seq) : undefined, revocation: rows.some((r) => r.revocation === 1), eventId: last?.event_id, count: rows.length };
  }

  async finish(sourceId: string, target: string, targetId: string, upToSeq: number, state: 'done' | 'failed', error?: string): Promise<void> {
    await this.store.db
      .updateTable('source_hints')
      .set({ state, done_at: Date.now(), attempts: sql<number>`attempts + 1`, error: error ?? null })
      .where('source_id', '=', sourceId)
      .where('target', '=', target)
      .where('target_id', '=', targetId)
      .where('state', '=', 'pending')
      .where('seq', '<=', upToSeq)
      .execute();
  }

  async hasPendingAfter(sourceId: string, target: string, targetId: string, seq: number): Promise<boolean> {
    const row = await this.store.db
      .selectFrom('source_hints')
      .select('seq')
      .where('source_id', '=', sourceId)
      .where('target', '=', target)
      .where('target_id', '=', targetId)
      .where('state', '=', 'pending')
      .where('seq', '>', seq)
      .executeTakeFirst();
    return row !== undefined;
  }

  /** Pending hints older than `before`, one row per record (for the sweeper). */
  async stale(before: number, limit: number): Promise<Array<{ sourceId: string; target: 'user' | 'group'; targetId: string; revocation: boolean }>> {
    const rows = await this.store.db
      .selectFrom('source_hints')
      .select(['source_id', 'target', 'target_id', (eb) => eb.fn.max('revocation').as('revocation')])
      .where('state', '=', 'pending')
      .where('received_at', '<=', before)
      .groupBy(['source_id', 'target', 'target_id'])
      .limit(limit)
      .execute();
    return rows.map((r) => ({ sourceId: r.source_id, target: r.target as 'user' | 'group', targetId: r.target_id, revocation: Number(r.revocation) === 1 }));
  }

  async staleTasks(before: number, limit: number): Promise<PersistedTask[]> {
    const rows = await this.store.db.selectFrom('source_tasks').select(['seq', 'source_id']).where('state', '=', 'pending').where('received_at', '<=', before).limit(limit).execute();
    return rows.map((r) => ({ seq: Number(r.seq), sourceId: r.source_id }));
  }

  /** Forgets processed hints and tasks older than `before` (their dedupe keys go with them). */
  async prune(before: number): Promise<number> {
    const h = await this.store.db.deleteFrom('source_hints').where('state', '<>', 'pending').where('received_at', '<', before).executeTakeFirst();
    await this.store.db.deleteFrom('source_tasks').where('state', '<>', 'pending').where('received_at', '<', before).execute();
    return Number(h.numDeletedRows ?? 0);
  }

  async counts(sourceId: string): Promise<{ pending: number; failed: number; lastReceivedAt: number | null }> {
    const rows = await this.store.db
      .selectFrom('source_hints')
      .select(['state', (eb) => eb.fn.countAll<number>().as('n'), (eb) => eb.fn.max('received_at').as('last')])
      .where('source_id', '=', sourceId)
      .groupBy('state')
      .execute();
    const by = new Map(rows.map((r) => [r.state, Number(r.n)]));
    const last = rows.reduce<number | null>((m, r) => (r.last === null ? m : Math.max(m ?? 0, Number(r.last))), null);
    return { pending: by.get('pending') ?? 0, failed: by.get('failed') ?? 0, lastReceivedAt: last };
  }
}

/** Creates or updates a source's state row; `resync` only ever escalates (delta → full). */
export async function upsertState(
  db: Store['db'],
  sourceId: string,
  now: number,
  set: { resync?: 'delta' | 'full' | undefined; cursor?: string | undefined },
): Promise<void> {
  const row = {
    source_id: sourceId,
    cursor: set.cursor ?? null,
    cursor_at: set.cursor !== undefined ? now : null,
    resync: set.resync ?? null,
    resync_at: set.resync ? now : null,
    last_delta_at: null,
    last_snapshot_at: null,
    last_snapshot_done_at: null,
    last_snapshot: null,
    next_maintain_at: null,
    last_error: null,
    last_error_at: null,
    updated_at: now,
  };
  await db
    .insertInto('source_state')
    .values(row)
    .onConflict((oc) =>
      oc.column('source_id').doUpdateSet({
        ...(set.cursor !== undefined ? { cursor: set.cursor, cursor_at: now } : {}),
        ...(set.resync
          ? {
              resync: sql<string>`case when source_state.resync = 'full' or excluded.resync = 'full' then 'full' else 'delta' end`,
              resync_at: now,
            }
          : {}),
        updated_at: now,
      }),
    )
    .execute();
}
