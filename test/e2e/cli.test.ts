import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { startIloqSimulator } from '../../adapters/locks/iloq/simulator.ts';
import { REDIS_URL, stackConfig, waitFor } from '../helpers/stack.ts';
import { freshStore } from '../helpers/stores.ts';
import { newGroup, newUser } from './scim-user.ts';

// The shipped entry (package.json bin, npm start, the image).
const CLI = new URL('../../bin/lockstep.js', import.meta.url).pathname;
const run = (args: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });

/** The machine's own node, when it is one the bin must refuse (the CI machine has Node 20 there). */
function oldSystemNode(): boolean {
  const r = spawnSync('/usr/bin/node', ['-p', 'process.versions.node'], { encoding: 'utf8' });
  if (r.status !== 0) return false;
  const [major, minor] = r.stdout.trim().split('.').map(Number) as [number, number];
  return major < 22 || (major === 22 && minor < 18);
}

describe('lockstep CLI', () => {
  it('refuses to start on an invalid config, naming each bad path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'server: { port: -1 }\nstore: { driver: oracle }\nredis: { url: "${NOPE_NOT_SET}" }\n');
    const r = run(['serve', '--config', file]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`invalid configuration in ${file}`);
    expect(r.stderr).toContain('redis.url: environment variable NOPE_NOT_SET is not set');
    writeFileSync(file, 'server: { port: -1 }\nstore: { driver: oracle }\n');
    const r2 = run(['serve', '--config', file]);
    expect(r2.stderr).toMatch(/server\.port: /);
    expect(r2.stderr).toMatch(/store\.driver: /);
    expect(run(['serve']).stderr).toMatch(/no config file: pass --config FILE or set LOCKSTEP_CONFIG/);
    expect(run(['bogus']).status).toBe(2);
  });

  it('migrate is idempotent; audit verify exits 1 on a tampered chain', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-'));
    const db = join(dir, 'l.db');
    const file = join(dir, 'l.yaml');
    writeFileSync(file, `store: { driver: sqlite, sqlite: { path: "${db}" } }\n`);
    expect(run(['migrate', '--config', file]).stdout).toMatch(/applied: 0001/);
    expect(run(['migrate'], { LOCKSTEP_CONFIG: file }).stdout).toMatch(/up to date/);
    // Put a few real rows in through the store, then tamper with one.
    const { openStore } = await import('../../src/store/db.ts');
    const { IdentityRepo } = await import('../../src/store/identities.ts');
    const store = openStore({ driver: 'sqlite', sqlite: { path: db }, postgres: { poolSize: 1 } });
    const repo = new IdentityRepo(store);
    const { user, ctx } = await import('../helpers/fixtures.ts');
    await repo.createUser('s', user('a'), ctx);
    await repo.createUser('s', user('b'), ctx);
    await store.close();
    const ok = run(['audit', 'verify', '--config', file]);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/audit chain intact: 2 rows verified/);
    const raw = new DatabaseSync(db);
    raw.prepare("update audit set actor = 'mallory' where seq = 1").run();
    raw.close();
    const bad = run(['audit', 'verify', '--config', file]);
    expect(bad.status, bad.stdout + bad.stderr).toBe(1);
    expect(bad.stderr).toMatch(/audit chain BROKEN/);
    expect(bad.stderr).toMatch(/seq 1: hash does not match the row \(row edited\)/);
  });

  it('precompile fills the compile cache with every module; the next run needs no type stripping', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-cache-'));
    const first = run(['precompile'], { NODE_COMPILE_CACHE: dir });
    expect(first.status, first.stderr).toBe(0);
    const m = /^(\d+) modules compiled into the compile cache at (.+)$/m.exec(first.stdout);
    expect(m, first.stdout).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(100);
    expect(m![2]!.startsWith(dir)).toBe(true);
    // "all in the cache" is reported only when Node never loaded its TypeScript stripper.
    expect(run(['precompile'], { NODE_COMPILE_CACHE: dir }).stdout).toMatch(new RegExp(`^${m![1]} modules were all in the compile cache at `, 'm'));
    expect(run(['precompile', '--quiet'], { NODE_COMPILE_CACHE: dir }).stdout).toBe('');
    // Without NODE_COMPILE_CACHE the bin uses the package's own cache directory.
    const own = run(['precompile']);
    expect(own.status).toBe(0);
    expect(own.stdout).toContain(new URL('../../node_modules/.cache/lockstep/', import.meta.url).pathname);
    const off = run(['precompile'], { NODE_DISABLE_COMPILE_CACHE: '1' });
    expect(off.status).toBe(0);
    expect(off.stdout).toMatch(/compile cache off \(NODE_DISABLE_COMPILE_CACHE is set\)/);
  });

  it.skipIf(!oldSystemNode())('the bin refuses a Node.js older than it supports, saying which it needs', () => {
    const r = spawnSync('/usr/bin/node', [CLI, 'help'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/lockstep needs Node\.js 22\.18 or later \(24 LTS recommended\); this is v\d+/);
  });

  it('prints a token and its hash, and hashes a given token', () => {
    const r = run(['token']);
    const [, token] = /token:\s+(\S+)/.exec(r.stdout)!;
    const [, hash] = /sha256: ([0-9a-f]{64})/.exec(r.stdout)!;
    expect(run(['hash-token', token!]).stdout.trim()).toBe(hash);
  });

  it('SIGTERM: stops taking requests, lets the running operation finish, closes the iLOQ session, exits 0', async () => {
    const sim = await startIloqSimulator({ port: 0, seed: 'demo' });
    const t = await freshStore('sqlite');
    const prefix = `t${randomBytes(5).toString('hex')}`;
    const tokens = { scim: 's'.repeat(20), admin: 'a'.repeat(20), auditor: 'u'.repeat(20) };
    const { createServer } = await import('node:net');
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    await new Promise((r) => srv.close(r));
    const cfg = stackConfig(sim, t, tokens, prefix, REDIS_URL, { server: { port, shutdownGraceMs: 10_000 } });
    const file = join(t.storeConfig.sqlite.path, '..', 'l.json');
    writeFileSync(file, JSON.stringify(cfg));
    // A cold compile cache of its own: a running daemon writes it without waiting for its exit.
    const cache = mkdtempSync(join(tmpdir(), 'cli-serve-cache-'));
    const child = spawn(process.execPath, [CLI, 'serve', '--config', file], { stdio: 'ignore', env: { ...process.env, NODE_COMPILE_CACHE: cache } });
    try {
      const base = `http://127.0.0.1:${port}`;
      await waitFor(() => fetch(`${base}/healthz`).then((r) => r.ok), { what: 'listening' });
      await waitFor(() => readdirSync(cache, { recursive: true }).length > 50, { what: 'the compile cache written while serving' });
      const post = (path: string, body: unknown) =>
        fetch(`${base}/scim/v2${path}`, { method: 'POST', headers: { authorization: `Bearer ${tokens.scim}`, 'content-type': 'application/scim+json' }, body: JSON.stringify(body) }).then((r) => r.json() as Promise<{ id: string }>);
      const u = await post('/Users', newUser('slow@example.com'));
      sim.setFaults({ latencyMs: 300 });
      await post('/Groups', newGroup('Control Room', [u.id]));
      await waitFor(() => sim.countRequests('GET', /GetByExternalPersonIds/) > 0, { what: 'the operation to start' });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      const op = await t.store.db.selectFrom('operations').select(['state']).where('person_id', '=', u.id).executeTakeFirstOrThrow();
      expect(op.state).toBe('accepted');
      expect(sim.countRequests('GET', /KillSession/)).toBe(1);
      await expect(fetch(`${base}/healthz`)).rejects.toThrow();
    } finally {
      child.kill('SIGKILL');
      await sim.close();
      await t.cleanup();
      const r = new Redis(REDIS_URL);
      for await (const b of r.scanStream({ match: `${prefix}:*` })) if ((b as string[]).length) await r.del(...(b as string[]));
      await r.quit();
    }
  });
});
