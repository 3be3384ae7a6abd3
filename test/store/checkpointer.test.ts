import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DatabaseSync } from 'node:sqlite';
import { CHECKPOINT_INTERVAL_MS, startCheckpointer, type WalRewind } from '../../src/store/checkpointer.ts';
import { openStore, type Store } from '../../src/store/db.ts';
import { exec } from '../../src/store/sql.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the SQLite checkpointer thread', () => {
  let dir: string;
  let store: Store | undefined;
  afterEach(async () => {
    await store?.close();
    store = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  const open = (opts: Parameters<typeof openStore>[1] = {}) => {
    dir = mkdtempSync(join(tmpdir(), 'lockstep-ckpt-'));
    const path = join(dir, 'lockstep.db');
    store = openStore({ driver: 'sqlite', sqlite: { path }, postgres: { poolSize: 1 } } as Parameters<typeof openStore>[0], opts);
    return path;
  };

  /**
   * Writes `rows` rows of one page each from `inFlight` writers that pause 1 ms after each
   * write: a steady load, under which the writer never waits for a checkpoint to finish and
   * SQLite alone never starts the WAL over (it grew to 105 MB in this test with rewinds turned
   * off). Returns the largest WAL file seen.
   */
  const sustainedWrites = async (path: string, rows: number, inFlight = 16, prefix = 'r') => {
    let next = 0;
    let maxWal = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next < rows) {
          const i = next++;
          await store!.write((trx) => exec(trx, 'insert into meta (key, value) values (?, ?)', [`${prefix}${i}`, 'x'.repeat(3000)]));
          await sleep(1);
          if (i % 100 === 0) maxWal = Math.max(maxWal, existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0);
        }
      }),
    );
    return maxWal;
  };
  const rowsLike = async (prefix: string) => (await exec<{ n: number }>(store!.db, 'select count(*) as n from meta where key like ?', [`${prefix}%`]))[0]!.n;

  it('folds committed pages into the database file while the writer stays open', async () => {
    const path = open();
    await store!.migrate();
    for (let i = 0; i < 50; i++) await store!.write((trx) => exec(trx, 'insert into meta (key, value) values (?, ?)', [`k${i}`, 'x'.repeat(2000)]));
    // The writer's own threshold (tens of thousands of pages) is far away: only the thread can
    // have moved the pages out of the WAL.
    const deadline = Date.now() + 20 * CHECKPOINT_INTERVAL_MS;
    while (statSync(path).size < 100 * 1024 && Date.now() < deadline) await sleep(CHECKPOINT_INTERVAL_MS / 2);
    expect(statSync(path).size).toBeGreaterThanOrEqual(100 * 1024);
    expect((await exec<{ n: number }>(store!.db, "select count(*) as n from meta where key like 'k%'", []))[0]!.n).toBe(50);
  });

  it('rewinds a WAL that grows under sustained writes: the file stays bounded and no write is lost', async () => {
    const rewinds: WalRewind[] = [];
    // 500 frames (2 MB) instead of 16,384; a checkpoint every 20 ms instead of every second.
    const path = open({ onWalRewound: (r) => rewinds.push(r), checkpoints: { intervalMs: 20, rewindAtFrames: 500 } });
    await store!.migrate();
    // 20,000 pages of rows and more of indexes: a WAL that was never started over would hold
    // them all, over 80 MB.
    const maxWal = await sustainedWrites(path, 20_000);
    expect(rewinds.filter((r) => r.complete).length).toBeGreaterThan(1);
    expect(maxWal).toBeLessThan(16 * 2 ** 20);
    expect(await rowsLike('r')).toBe(20_000);
  });

  it('gives a rewind up while another connection reads from the WAL, and rewinds once it is done', async () => {
    const rewinds: WalRewind[] = [];
    const path = open({ onWalRewound: (r) => rewinds.push(r), checkpoints: { intervalMs: 20, rewindAtFrames: 500 } });
    await store!.migrate();
    await store!.write((trx) => exec(trx, 'insert into meta (key, value) values (?, ?)', ['before', 'v']));
    // A read transaction left open (an operator's sqlite3 shell, say) pins the WAL.
    const reader = new DatabaseSync(path, { readOnly: true });
    reader.exec('begin');
    reader.prepare('select count(*) from meta').get();
    try {
      await sustainedWrites(path, 5000);
    } finally {
      reader.exec('rollback');
      reader.close();
    }
    expect(rewinds.length).toBeGreaterThan(0);
    expect(rewinds.every((r) => !r.complete)).toBe(true);
    const given = rewinds.length;
    // Not asked again for 30 intervals after one that gave up; then it succeeds.
    await sleep(30 * 20);
    await sustainedWrites(path, 5000, 16, 'q');
    expect(rewinds.slice(given).some((r) => r.complete)).toBe(true);
    expect(await rowsLike('r')).toBe(5000);
    expect(await rowsLike('q')).toBe(5000);
  });

  it('stops when asked, between two checkpoints, and the store closes with its data', async () => {
    const path = open();
    await store!.migrate();
    await store!.write((trx) => exec(trx, 'insert into meta (key, value) values (?, ?)', ['k', 'v']));
    const other = startCheckpointer(path, { onError: (err) => expect.fail(err.message) });
    await sleep(2 * CHECKPOINT_INTERVAL_MS);
    // Resolves once the thread has closed its connection and exited (hangs otherwise).
    await other.stop();
    await store!.close();
    // The store's own thread stopped first, so its writer was the last connection: SQLite folded
    // the WAL in and removed it, as it does without the thread.
    expect(existsSync(`${path}-wal`)).toBe(false);
    store = openStore({ driver: 'sqlite', sqlite: { path }, postgres: { poolSize: 1 } } as Parameters<typeof openStore>[0]);
    expect(await exec(store.db, "select value from meta where key = 'k'", [])).toEqual([{ value: 'v' }]);
  });

  it('does not hold the writes for a rewind that falls due while it stops', async () => {
    const path = open();
    await store!.migrate();
    await store!.close();
    store = undefined;
    // A writer of its own leaves 64 pages in the WAL, more than the 8 at which a rewind is due.
    const writer = new DatabaseSync(path);
    writer.exec('create table filler (v text)');
    const insert = writer.prepare('insert into filler (v) values (?)');
    writer.exec('begin');
    for (let i = 0; i < 64; i++) insert.run('x'.repeat(3000));
    writer.exec('commit');
    const sizeBefore = statSync(path).size;
    const errors: Error[] = [];
    const c = startCheckpointer(path, { onError: (err) => errors.push(err), intervalMs: 20, rewindAtFrames: 8 });
    let holds = 0;
    c.holdWritesWith(async (during) => {
      holds += 1;
      await during();
    });
    try {
      // Block this thread (no message can be handled) until the checkpointer thread has copied
      // the pages into the database file, which it does right before it posts that a rewind is
      // due, and a little longer; then stop it. The request is handled only after the stop
      // began: the race of a store that closes while its checkpointer asks for a rewind.
      const block = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      const deadline = Date.now() + 10_000;
      while (statSync(path).size === sizeBefore && Date.now() < deadline) block(10);
      expect(statSync(path).size).toBeGreaterThan(sizeBefore);
      block(100);
    } finally {
      await c.stop();
      writer.close();
    }
    expect(holds).toBe(0);
    expect(errors).toEqual([]);
  });

  it('reports a thread that fails instead of failing silently', async () => {
    dir = mkdtempSync(join(tmpdir(), 'lockstep-ckpt-'));
    const errors: Error[] = [];
    // A directory is no database: the thread's open throws.
    const c = startCheckpointer(dir, { onError: (err) => errors.push(err) });
    const deadline = Date.now() + 5000;
    while (errors.length === 0 && Date.now() < deadline) await sleep(20);
    await c.stop();
    expect(errors[0]?.message).toMatch(/unable to open|database/i);
  });
});
