import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CHECKPOINT_INTERVAL_MS, startCheckpointer } from '../../src/store/checkpointer.ts';
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

  const open = () => {
    dir = mkdtempSync(join(tmpdir(), 'lockstep-ckpt-'));
    const path = join(dir, 'lockstep.db');
    store = openStore({ driver: 'sqlite', sqlite: { path }, postgres: { poolSize: 1 } } as Parameters<typeof openStore>[0]);
    return path;
  };

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

  it('stops when asked, between two checkpoints, and the store closes with its data', async () => {
    const path = open();
    await store!.migrate();
    await store!.write((trx) => exec(trx, 'insert into meta (key, value) values (?, ?)', ['k', 'v']));
    const other = startCheckpointer(path, (err) => expect.fail(err.message));
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

  it('reports a thread that fails instead of failing silently', async () => {
    dir = mkdtempSync(join(tmpdir(), 'lockstep-ckpt-'));
    const errors: Error[] = [];
    // A directory is no database: the thread's open throws.
    const c = startCheckpointer(dir, (err) => errors.push(err));
    const deadline = Date.now() + 5000;
    while (errors.length === 0 && Date.now() < deadline) await sleep(20);
    await c.stop();
    expect(errors[0]?.message).toMatch(/unable to open|database/i);
  });
});
