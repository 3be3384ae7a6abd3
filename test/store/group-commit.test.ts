import { Kysely, SqliteDialect, type SqliteDatabase } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { queryAudit, verifyAudit } from '../../src/audit/audit.ts';
import { openStore, storeOn, type Store } from '../../src/store/db.ts';
import type { Database } from '../../src/store/schema.ts';
import { openSqlite } from '../../src/store/sqlite-driver.ts';
import { exec, readsBeside } from '../../src/store/sql.ts';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';

/** A SQLite store whose statements without Kysely (inside the writer's transactions) are recorded in `seen`. */
function recordingStore(t: TestStore): { store: Store; seen: string[] } {
  const { kysely, direct } = openSqlite(t.storeConfig.sqlite.path);
  const seen: string[] = [];
  const store = storeOn(new Kysely<Database>({ dialect: new SqliteDialect({ database: kysely }) }), 'sqlite', (text, params) => {
    seen.push(text);
    return direct(text, params);
  });
  return { store, seen };
}

const put = (store: Store, key: string, value: string) =>
  store.write(async (trx, log) => {
    await exec(trx, 'insert into meta (key, value) values (?, ?)', [key, value]);
    log.push({ actor: 'test', action: 'test.put', subject: `meta:${key}`, correlationId: key, detail: { value } });
    return key;
  });

const keys = async (store: Store) => (await exec<{ key: string }>(store.db, "select key from meta where key like 'k%' order by key", [])).map((r) => r.key);

describe.each(BACKENDS)('the store writer on %s', (backend) => {
  let t: TestStore;
  afterEach(async () => t?.cleanup());

  it('commits every change with its audit entries and resolves each with its own value', async () => {
    t = await freshStore(backend);
    const values = await Promise.all(['k1', 'k2', 'k3'].map((k) => put(t.store, k, `v-${k}`)));
    expect(values).toEqual(['k1', 'k2', 'k3']);
    expect(await keys(t.store)).toEqual(['k1', 'k2', 'k3']);
    const audit = await queryAudit(t.store.db, { action: 'test.put', limit: 10 });
    expect(audit.map((a) => a.subject).sort()).toEqual(['meta:k1', 'meta:k2', 'meta:k3']);
    expect((await verifyAudit(t.store.db)).ok).toBe(true);
  });

  it('rolls a failing change back alone: its rows and audit entries are gone, the others commit', async () => {
    t = await freshStore(backend);
    const boom = new Error('refused by the change itself');
    const results = await Promise.allSettled([
      put(t.store, 'k1', 'a'),
      t.store.write(async (trx, log) => {
        await exec(trx, 'insert into meta (key, value) values (?, ?)', ['k2', 'written, then undone']);
        log.push({ actor: 'test', action: 'test.put', subject: 'meta:k2', correlationId: 'k2' });
        throw boom;
      }),
      // A statement that fails in the database, not in JavaScript: duplicate key.
      put(t.store, 'k1', 'again'),
      put(t.store, 'k3', 'c'),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toBe(boom);
    expect(await keys(t.store)).toEqual(['k1', 'k3']);
    const audit = await queryAudit(t.store.db, { action: 'test.put', limit: 10 });
    // Sorted: on PostgreSQL the changes commit concurrently, in no fixed order.
    expect(audit.map((a) => a.subject).sort()).toEqual(['meta:k1', 'meta:k3']);
    expect((await verifyAudit(t.store.db)).ok).toBe(true);
  });

  it('runs the after-commit step once the change is visible, and its failure does not undo the change', async () => {
    t = await freshStore(backend);
    let seenInside: string[] | undefined;
    const value = await t.store.write(
      async (trx) => {
        await exec(trx, 'insert into meta (key, value) values (?, ?)', ['k9', 'x']);
        return 'k9';
      },
      () => {
        // Synchronous by contract: note what is committed by reading it right after.
        void keys(t.store).then((k) => (seenInside = k));
        throw new Error('telling the queue failed');
      },
    );
    expect(value).toBe('k9');
    await expect.poll(() => seenInside).toEqual(['k9']);
  });

  it('on close, commits what it already took and refuses what comes after', async () => {
    t = await freshStore(backend);
    const second = openStore(t.storeConfig);
    const pending = put(second, 'k1', 'a');
    const closing = second.close();
    await expect(put(second, 'k2', 'b')).rejects.toThrow(/closed/);
    await expect(pending).resolves.toBe('k1');
    await closing;
    expect(await keys(t.store)).toEqual(['k1']);
  });
});

describe('closing a store', () => {
  let t: TestStore;
  afterEach(async () => t?.cleanup());

  it('runs beforeDisconnect after the last change committed and before the connections close', async () => {
    t = await freshStore('sqlite');
    const { kysely } = openSqlite(t.storeConfig.sqlite.path);
    const seen: string[] = [];
    const store = storeOn(new Kysely<Database>({ dialect: new SqliteDialect({ database: kysely }) }), 'sqlite', undefined, async () => {
      // The connection still answers, and it already holds the change taken before close.
      seen.push(...(await keys(store)));
      await expect(put(store, 'k2', 'late')).rejects.toThrow(/closed/);
    });
    const pending = put(store, 'k1', 'a');
    await store.close();
    await expect(pending).resolves.toBe('k1');
    expect(seen).toEqual(['k1']);
    await expect(keys(store)).rejects.toThrow();
  });
});

describe('group commit on SQLite', () => {
  let t: TestStore;
  afterEach(async () => t?.cleanup());

  it('changes that arrive together share one transaction', async () => {
    t = await freshStore('sqlite');
    // A second connection to the same file whose driver counts the transactions it opens.
    const { kysely: raw } = openSqlite(t.storeConfig.sqlite.path);
    let begins = 0;
    const counting: SqliteDatabase = {
      ...raw,
      close: () => raw.close(),
      prepare: (text: string) => {
        if (text === 'begin') begins++;
        return raw.prepare(text);
      },
    };
    const watched = storeOn(new Kysely<Database>({ dialect: new SqliteDialect({ database: counting }) }), 'sqlite');
    try {
      const done = await Promise.all(Array.from({ length: 20 }, (_, i) => put(watched, `k${String(i).padStart(2, '0')}`, 'v')));
      expect(done).toHaveLength(20);
      expect(begins).toBe(1);
      await put(watched, 'k99', 'alone');
      expect(begins).toBe(2);
      expect(await keys(t.store)).toHaveLength(21);
      expect((await verifyAudit(t.store.db)).ok).toBe(true);
    } finally {
      await watched.close();
    }
  });

  it('runs a batch without savepoints, and again with one per change only when a change fails', async () => {
    t = await freshStore('sqlite');
    const { store, seen } = recordingStore(t);
    const runs = new Map<string, number>();
    const counted = (key: string, fail = false) =>
      store.write(async (trx, log) => {
        runs.set(key, (runs.get(key) ?? 0) + 1);
        await exec(trx, 'insert into meta (key, value) values (?, ?)', [key, 'v']);
        log.push({ actor: 'test', action: 'test.put', subject: `meta:${key}`, correlationId: key });
        if (fail) throw new Error(`${key} refused`);
        return key;
      });
    try {
      await Promise.all([counted('k1'), counted('k2'), counted('k3')]);
      expect(seen.filter((s) => s.includes('savepoint'))).toEqual([]);
      expect([...runs.values()]).toEqual([1, 1, 1]);

      seen.length = 0;
      runs.clear();
      const results = await Promise.allSettled([counted('k4'), counted('k5', true), counted('k6')]);
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      // k4 and k5 ran in the optimistic pass, which k5's failure rolled back; all three in the isolated one.
      expect(Object.fromEntries(runs)).toEqual({ k4: 2, k5: 2, k6: 1 });
      expect(seen.filter((s) => s === 'savepoint change')).toHaveLength(3);
      expect(seen).toContain('rollback to savepoint change');
      expect(await keys(store)).toEqual(['k1', 'k2', 'k3', 'k4', 'k6']);

      // Failures come in runs: the batch after one starts isolated, and the one after that does not.
      seen.length = 0;
      runs.clear();
      await Promise.all([counted('k7'), counted('k8')]);
      expect(Object.fromEntries(runs)).toEqual({ k7: 1, k8: 1 });
      expect(seen.filter((s) => s === 'savepoint change')).toHaveLength(2);
      seen.length = 0;
      await Promise.all([counted('k9'), counted('ka')]);
      expect(seen.filter((s) => s.includes('savepoint'))).toEqual([]);

      const audit = await queryAudit(store.db, { action: 'test.put', limit: 20 });
      expect(audit.map((a) => a.subject).sort()).toEqual(['meta:k1', 'meta:k2', 'meta:k3', 'meta:k4', 'meta:k6', 'meta:k7', 'meta:k8', 'meta:k9', 'meta:ka']);
      expect((await verifyAudit(store.db)).ok).toBe(true);
    } finally {
      await store.close();
    }
  });
});

describe('statements of the SQLite writer without Kysely', () => {
  let t: TestStore;
  afterEach(async () => t?.cleanup());

  it('run straight on SQLite inside the writer transactions only, and roll back with them', async () => {
    t = await freshStore('sqlite');
    const { store, seen } = recordingStore(t);
    try {
      await Promise.allSettled([
        put(store, 'k1', 'a'),
        store.write(async (trx) => {
          await exec(trx, 'insert into meta (key, value) values (?, ?)', ['k2', 'undone']);
          throw new Error('refused');
        }),
      ]);
      expect(seen).toContain('insert into meta (key, value) values (?, ?)');
      expect(seen).toContain('rollback to savepoint change');
      // Outside a writer transaction (a read beside it), Kysely runs it: it waits for the commit.
      seen.length = 0;
      expect(await keys(store)).toEqual(['k1']);
      expect(seen).toEqual([]);
      expect((await verifyAudit(store.db)).ok).toBe(true);
    } finally {
      await store.close();
    }
  });
});

describe('plain reads beside the SQLite writer', () => {
  let t: TestStore;
  afterEach(async () => t?.cleanup());

  it('read the last committed state at once, without waiting for an open transaction', async () => {
    t = await freshStore('sqlite');
    await put(t.store, 'k1', 'a');
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let inside!: () => void;
    const opened = new Promise<void>((r) => (inside = r));
    // Holds its transaction open (a test breaks the writer's contract on purpose).
    const writing = t.store.write(async (trx) => {
      await exec(trx, 'insert into meta (key, value) values (?, ?)', ['k2', 'b']);
      inside();
      await held;
      return 'k2';
    });
    await opened;
    // Through Kysely this read would wait for the transaction (one connection, one lock).
    expect(await keys(t.store)).toEqual(['k1']);
    release();
    await writing;
    expect(await keys(t.store)).toEqual(['k1', 'k2']);
  });

  it("run on the writer's own connection while it is between transactions, beside it while one is open", async () => {
    t = await freshStore('sqlite');
    const { db: writer, kysely, direct, read } = openSqlite(t.storeConfig.sqlite.path);
    const store = storeOn(new Kysely<Database>({ dialect: new SqliteDialect({ database: kysely }) }), 'sqlite', direct);
    readsBeside(store.db, read!);
    // A temporary table exists on the writer's connection only: it tells which connection answered.
    writer.exec('create temp table probe (x integer)');
    const probe = () => exec<{ n: number }>(store.db, 'select count(*) as n from temp.probe', []);
    try {
      expect(await probe()).toEqual([{ n: 0 }]);
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let inside!: () => void;
      const opened = new Promise<void>((r) => (inside = r));
      const writing = store.write(async (trx) => {
        await exec(trx, 'insert into meta (key, value) values (?, ?)', ['k1', 'a']);
        inside();
        await held;
      });
      await opened;
      await expect(probe()).rejects.toThrow(/no such table/);
      release();
      await writing;
      expect(await probe()).toEqual([{ n: 0 }]);
    } finally {
      await store.close();
    }
  });
});
