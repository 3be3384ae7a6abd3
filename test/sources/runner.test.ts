import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { IdentitySourceError, type IdentitySource } from '../../src/ports/identity-source.ts';
import { createSourceRuntime, type SourceRuntime } from '../../src/sources/index.ts';
import { sourceJobId, sourceRetryDelayMs } from '../../src/sources/runner.ts';
import { IdentityRepo } from '../../src/store/identities.ts';
import { REDIS_URL, waitFor } from '../helpers/stack.ts';
import { freshStore, type TestStore } from '../helpers/stores.ts';
import { FakeSource, silentLog } from './helpers.ts';

/** The source runner on real Redis and SQLite with an in-memory IdentitySource. */

interface Rig {
  t: TestStore;
  rt: SourceRuntime;
  src: FakeSource;
  identities: IdentityRepo;
  prefix: string;
  hints(): Promise<Array<{ target_id: string; state: string; error: string | null }>>;
}

let rig: Rig | undefined;
afterEach(async () => {
  if (!rig) return;
  await rig.rt.close();
  await rig.t.cleanup();
  const r = new Redis(REDIS_URL);
  const stream = r.scanStream({ match: `${rig.prefix}:*`, count: 1000 });
  for await (const batch of stream) if ((batch as string[]).length) await r.del(...(batch as string[]));
  await r.quit();
  rig = undefined;
});

async function start(opts: { source?: Record<string, unknown>; prepare?: (src: FakeSource) => void; start?: boolean } = {}): Promise<Rig> {
  const t = await freshStore('sqlite');
  const prefix = `t${randomBytes(5).toString('hex')}`;
  const config = configSchema.parse({
    store: t.storeConfig,
    redis: { url: REDIS_URL, prefix },
    sources: [{ id: 'fake', idp: 'okta', reconcileAtStart: false, ...opts.source }],
    identity: { driftCheckEvery: 0 },
    reconcile: { sweepIntervalMs: 150, sweepAfterMs: 300 },
    server: { shutdownGraceMs: 1000 },
  });
  const src = new FakeSource('fake');
  opts.prepare?.(src);
  const identities = new IdentityRepo(t.store);
  const rt = await createSourceRuntime({ config, store: t.store, identities, lockSystems: new Map(), log: silentLog, adapters: new Map<string, IdentitySource>([['fake', src]]) });
  if (opts.start !== false) await rt.start();
  rig = {
    t,
    rt,
    src,
    identities,
    prefix,
    hints: () => t.store.db.selectFrom('source_hints').select(['target_id', 'state', 'error']).orderBy('seq').execute(),
  };
  return rig;
}

const hook = (changes: ReturnType<FakeSource['change']>[], extra: { tasks?: Array<{ type: string; data: Record<string, string>; dedupeKey: string }>; resync?: 'delta' | 'full' } = {}) => ({
  outcome: 'accepted' as const,
  status: 200,
  changes,
  tasks: extra.tasks ?? [],
  ...(extra.resync ? { resync: extra.resync } : {}),
});

describe('job ids and backoff', () => {
  it('derives one id per record/source/task and never uses ":"', () => {
    const a = sourceJobId({ type: 'confirm', sourceId: 's', target: 'user', id: 'u:1' });
    expect(a).toMatch(/^c_[A-Za-z0-9_-]+$/);
    expect(sourceJobId({ type: 'confirm', sourceId: 's', target: 'user', id: 'u:1' })).toBe(a);
    expect(sourceJobId({ type: 'confirm', sourceId: 's', target: 'user', id: 'u:1', recheck: true })).toMatch(/^k_/);
    expect(sourceJobId({ type: 'confirm', sourceId: 's', target: 'group', id: 'u:1' })).not.toBe(a);
    expect(sourceJobId({ type: 'task', sourceId: 's', seq: 7 })).toMatch(/^t_.+_7$/);
  });

  it('backs off exponentially with jitter and honours a longer Retry-After', () => {
    expect(sourceRetryDelayMs(1, new Error('x'), () => 0)).toBe(500);
    expect(sourceRetryDelayMs(4, new Error('x'), () => 1)).toBe(8000);
    expect(sourceRetryDelayMs(30, new Error('x'), () => 1)).toBe(300_000);
    expect(sourceRetryDelayMs(1, new IdentitySourceError('retryable', 'x', { retryAfterMs: 20_000 }), () => 0)).toBe(20_000);
  });
});

describe('source runner', () => {
  it('confirms hook hints: one read per record for a burst, done marks, store written', async () => {
    const r = await start({ prepare: (s) => s.addUser('u1', { attributes: { site: 'Plant A' } }) });
    const burst = Array.from({ length: 5 }, () => r.src.change('user-upsert', 'u1'));
    const p = await r.rt.persistHook('fake', hook(burst));
    expect(p.hints).toHaveLength(5);
    await waitFor(async () => (await r.hints()).every((h) => h.state === 'done'), { what: 'hints done' });
    expect(r.src.reads.length).toBeLessThanOrEqual(2);
    const personId = (await r.rt.sync.personOf('fake', 'u1'))!;
    expect((await r.identities.loadIdentity(personId))!.attributes).toEqual({ site: 'Plant A' });
    // A redelivery is a no-op: nothing new stored, nothing enqueued.
    const again = await r.rt.persistHook('fake', hook(burst));
    expect(again).toMatchObject({ hints: [], duplicates: 5 });
  });

  it('a hint arriving while its record is being confirmed runs the confirmation again', async () => {
    const r = await start({ prepare: (s) => s.addUser('u1') });
    const slow = r.src.readUser.bind(r.src);
    let gate: () => void = () => {};
    let first = true;
    r.src.readUser = async (id) => {
      if (first) {
        first = false;
        await new Promise<void>((res) => (gate = res));
      }
      return slow(id);
    };
    await r.rt.persistHook('fake', hook([r.src.change('user-upsert', 'u1')]));
    await waitFor(() => r.src.reads.length === 0 && !first, { what: 'first read started' });
    r.src.users.get('u1')!.active = false;
    await r.rt.persistHook('fake', hook([r.src.change('user-deactivated', 'u1')]));
    gate();
    await waitFor(async () => (await r.hints()).length === 2 && (await r.hints()).every((h) => h.state === 'done'), { what: 'both done' });
    const personId = (await r.rt.sync.personOf('fake', 'u1'))!;
    await waitFor(async () => (await r.identities.loadIdentity(personId))?.active === false, { what: 'deactivated by the second read' });
  });

  it('rate limited: the job waits Retry-After without failing; permanent: the hint is marked failed at once', async () => {
    const r = await start({ prepare: (s) => s.addUser('u1') });
    r.src.failNext.push(new IdentitySourceError('rate_limited', 'slow down', { status: 429, retryAfterMs: 400 }));
    const t0 = Date.now();
    await r.rt.persistHook('fake', hook([r.src.change('user-upsert', 'u1')]));
    await waitFor(async () => (await r.hints())[0]?.state === 'done', { what: 'done after the wait' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    expect(r.src.reads).toEqual(['u1', 'u1']);

    r.src.failNext.push(new IdentitySourceError('permanent', 'bad request'));
    await r.rt.persistHook('fake', hook([r.src.change('user-upsert', 'u2')]));
    await waitFor(async () => (await r.hints())[1]?.state === 'failed', { what: 'failed' });
    expect((await r.hints())[1]!.error).toMatch(/bad request/);
    expect(r.src.reads.filter((x) => x === 'u2')).toHaveLength(1);
  });

  it('the sweeper re-offers hints whose job Redis lost', async () => {
    const r = await start({ prepare: (s) => s.addUser('u9') });
    // Persisted, but never enqueued (as if the process died after the commit).
    await r.rt.hints.persist('fake', [r.src.change('user-upsert', 'u9')], [], undefined);
    await waitFor(async () => (await r.hints())[0]?.state === 'done', { what: 'swept and confirmed', timeoutMs: 5000 });
  });

  it('delta: hints and cursor in one go, again while `more`, and a resync runs a full snapshot that stores the cursor', async () => {
    const r = await start({
      source: { deltaEvery: '1h' },
      prepare: (s) => {
        s.capabilities = { ...s.capabilities, delta: true };
        s.addUser('u1');
        s.addUser('u2');
      },
      start: false,
    });
    await r.t.store.db.insertInto('source_state').values({ source_id: 'fake', cursor: 'c0', cursor_at: 0, resync: null, resync_at: null, last_delta_at: null, last_snapshot_at: Date.now(), last_snapshot_done_at: null, last_snapshot: null, next_maintain_at: null, last_error: null, last_error_at: null, updated_at: 0 }).execute();
    r.src.deltas.push({ status: 'ok', changes: [r.src.change('user-upsert', 'u1')], cursor: 'c1', more: true });
    r.src.deltas.push({ status: 'ok', changes: [r.src.change('user-upsert', 'u2')], cursor: 'c2', more: false });
    r.src.deltas.push({ status: 'resync', reason: 'token expired' });
    await r.rt.start();
    await waitFor(async () => (await r.rt.sync.personOf('fake', 'u2')) !== undefined, { what: 'both delta pages confirmed' });
    expect(r.src.cursorSeen.slice(0, 2)).toEqual(['c0', 'c1']);
    const st = await r.t.store.db.selectFrom('source_state').selectAll().executeTakeFirstOrThrow();
    expect(st.cursor).toBe('c2');
    // The next round finds the cursor expired: a snapshot follows and stores its own cursor.
    await r.rt.runner!.requestResync('fake', 'delta', 'test');
    await waitFor(async () => (await r.t.store.db.selectFrom('source_state').select('cursor').executeTakeFirstOrThrow()).cursor === 'cursor-1', { what: 'snapshot cursor' });
    const after = await r.t.store.db.selectFrom('source_state').selectAll().executeTakeFirstOrThrow();
    expect(JSON.parse(after.last_snapshot!)).toMatchObject({ complete: true, users: { seen: 2 } });
    expect(after.last_snapshot_done_at).not.toBeNull();
  });

  it('tasks from hooks run once on the worker; maintenance runs at start and asks for its resync', async () => {
    const r = await start({
      prepare: (s) => {
        s.capabilities = { ...s.capabilities, maintenance: true };
        s.maintainResult = { actions: ['created subscription /users'], resync: 'full', nextInMs: 3_600_000 };
        s.addUser('u1');
      },
    });
    await waitFor(() => r.src.maintained === 1, { what: 'maintain at start' });
    await waitFor(async () => (await r.rt.sync.personOf('fake', 'u1')) !== undefined, { what: 'resync snapshot after maintenance' });
    const task = { type: 'entra.reauthorize', data: { subscriptionId: 's1' }, dedupeKey: 'k1' };
    r.src.failNext.push(new IdentitySourceError('retryable', 'graph hiccup'));
    await r.rt.persistHook('fake', hook([], { tasks: [task, task] }));
    await waitFor(() => r.src.tasksRun.length === 1, { what: 'task ran after one retry', timeoutMs: 8000 });
    await waitFor(async () => (await r.t.store.db.selectFrom('source_tasks').select('state').executeTakeFirstOrThrow()).state === 'done', { what: 'task done' });
    const st = await r.t.store.db.selectFrom('source_state').selectAll().executeTakeFirstOrThrow();
    expect(Number(st.next_maintain_at)).toBeGreaterThan(Date.now() + 3_000_000);
  });

  it('recheck: an eventually consistent source is read again after recheckAfterMs', async () => {
    const r = await start({
      prepare: (s) => {
        s.capabilities = { ...s.capabilities, recheckAfterMs: 300 };
        s.addUser('u1');
      },
    });
    await r.rt.persistHook('fake', hook([r.src.change('user-upsert', 'u1')]));
    await waitFor(() => r.src.reads.length === 1, { what: 'first read' });
    r.src.users.get('u1')!.active = false; // the index caught up
    await waitFor(() => r.src.reads.length === 2, { what: 'recheck' });
    const personId = (await r.rt.sync.personOf('fake', 'u1'))!;
    await waitFor(async () => (await r.identities.loadIdentity(personId))?.active === false, { what: 'recheck stored' });
  });

  it('scheduled snapshots: at start when configured, then every reconcileEvery', async () => {
    const r = await start({ source: { reconcileAtStart: true, reconcileEvery: '1s' }, prepare: (s) => s.addUser('u1') });
    await waitFor(async () => (await r.rt.sync.personOf('fake', 'u1')) !== undefined, { what: 'start-up snapshot' });
    r.src.addUser('u2');
    await waitFor(async () => (await r.rt.sync.personOf('fake', 'u2')) !== undefined, { what: 'scheduled snapshot', timeoutMs: 5000 });
    const status = await r.rt.status();
    expect(status[0]).toMatchObject({ id: 'fake', reconcileEveryMs: 1000, hints: { pending: 0, failed: 0 } });
  });
});
