/**
 * SCIM load benchmark: lockstep's SCIM server under the load shape of the peer figures
 * (50 connections, 2 s warm-up, 8 s measured per call), at two sizes:
 *   small: ~1,100 users and a 1,000-member group (seeded over SCIM, as the peers were);
 *   large: 100,000 users and a 50,000-member group (seeded through the store's bulk import).
 *
 *   node bench/scim-load.ts [--scale small|large|both] [--phases b,c,d,e,a] [--duration 8]
 *                           [--warmup 2] [--connections 50] [--json FILE] [--serve]
 *
 * lockstep runs as a child process (`lockstep serve`: HTTP and queue workers, SQLite store in
 * a temp dir, real Redis). Every write goes through the durable store, the outbox and the
 * reconcile queue, and the reconciler runs on each change; policy points at a group nobody in
 * the benchmark belongs to, so reconciles plan nothing for the (in-process) iLOQ simulator.
 * The load generator (autocannon, not a dependency of lockstep: `npm i --prefix /tmp/benchtools
 * autocannon@8`, or set BENCH_TOOLS to a node_modules that has it) runs in this process.
 *
 * Phases: a POST /Users · b GET /Users?filter=userName eq · c GET /Users/{id} ·
 * d PATCH /Users/{id} active (alternating false/true) · e PATCH /Groups/{id} add then remove a
 * spare member (each connection owns its spare while it is in the group).
 *
 * --serve starts lockstep on an empty store, prints its URL, token and pid, and waits (for
 * cross-checking with ../shared/bench/scim-load.mjs).
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, loadavg, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { startIloqSimulator } from '../adapters/locks/iloq/simulator.ts';
import { sha256Hex } from '../src/http/admin-auth.ts';
import { openStore } from '../src/store/db.ts';
import { IdentityRepo, type UserInput } from '../src/store/identities.ts';
import { sql } from 'kysely';
import { launchLockstep } from './lockstep-process.ts';

const ROOT = new URL('../', import.meta.url).pathname;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const SCIM_JSON = 'application/scim+json';
const PATCH_SCHEMA = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';

// Nobody in the benchmark is in this group: every reconcile runs and plans nothing.
const POLICY_RULES = [{ name: 'nobody', when: { groups: ['bench: no members'] }, grant: [{ lockSystem: 'iloq', access: ['Main entrance'] }] }];

const flag = (name: string) => process.argv.includes(`--${name}`);
const opt = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt;
};
const SCALE = opt('scale', 'both');
const PHASES = opt('phases', 'b,c,d,e,a').split(',');
const DURATION = Number(opt('duration', '8'));
const WARMUP = Number(opt('warmup', '2'));
const CONNECTIONS = Number(opt('connections', '50'));
const JSON_OUT = opt('json', '');
/** Diagnostic: HTTP only (changes still reach the store, outbox and queue; nothing reconciles them). */
const NO_WORKERS = flag('no-workers');
/** The scale-out shape: `serve --no-workers` plus one `lockstep worker` process (the reconciles on the other core). */
const SPLIT = flag('split');

type Autocannon = (opts: Record<string, unknown>, cb: (err: Error | null, result: AutocannonResult) => void) => { on(ev: 'response', fn: (client: unknown, status: number, bytes: number, ms: number) => void): void };
interface AutocannonResult {
  duration: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodeStats?: Record<string, { count: number }>;
}

function loadAutocannon(): { run: Autocannon; version: string } {
  const dirs = [process.env.BENCH_TOOLS, '/tmp/benchtools/node_modules', join(ROOT, 'node_modules')].filter((d): d is string => !!d);
  for (const d of dirs) {
    if (!existsSync(join(d, 'autocannon/package.json'))) continue;
    const req = createRequire(join(d, 'noop.js'));
    return { run: req('autocannon') as Autocannon, version: (req('autocannon/package.json') as { version: string }).version };
  }
  console.error('autocannon not found: npm i --prefix /tmp/benchtools autocannon@8 (or set BENCH_TOOLS to a node_modules that has it)');
  process.exit(2);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]! : NaN);

function procStatus(pid: number, key: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}
function cpuTicks(pid: number): number | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return undefined;
  }
}

/** What else is using the machine (the cores are shared): load average and the busiest other processes over one second. */
async function machineLoad(exclude: number[]): Promise<string> {
  const sample = () => {
    const out = new Map<number, number>();
    for (const d of readdirSync('/proc')) if (/^\d+$/.test(d)) out.set(Number(d), cpuTicks(Number(d)) ?? 0);
    return out;
  };
  const a = sample();
  await sleep(1000);
  const b = sample();
  const busy = [...b]
    .map(([pid, t]) => ({ pid, pct: t - (a.get(pid) ?? t) }))
    .filter((x) => x.pct >= 5 && !exclude.includes(x.pid) && x.pid !== process.pid)
    .sort((x, y) => y.pct - x.pct)
    .slice(0, 3)
    .map((x) => {
      let cmd = '?';
      try {
        cmd = readFileSync(`/proc/${x.pid}/cmdline`, 'utf8').split('\0').filter(Boolean).map((w) => w.split('/').pop()).join(' ').slice(0, 60);
      } catch {}
      return `${cmd} ${x.pct}%`;
    });
  return `load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}; other busy processes: ${busy.length ? busy.join(', ') : 'none'}`;
}

interface Server {
  url: string;
  adminToken: string;
  base: string;
  token: string;
  pid: number;
  child: ChildProcess;
  /** The `lockstep worker` process with --split. */
  workerPid: number | undefined;
  dir: string;
  dbPath: string;
  stop(): Promise<void>;
}

async function startServer(seed?: (dbPath: string) => Promise<void>): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'lockstep-scim-bench-'));
  const dbPath = join(dir, 'lockstep.db');
  if (seed) await seed(dbPath);
  const sim = await startIloqSimulator({ port: 0, host: '127.0.0.1', seed: 'demo', requestLogLimit: 1 });
  const token = randomBytes(16).toString('hex');
  const adminToken = randomBytes(16).toString('hex');
  const port = 20000 + Math.floor(Math.random() * 5000);
  const prefix = `scimbench${randomBytes(3).toString('hex')}`;
  const config = {
    server: { host: '127.0.0.1', port, shutdownGraceMs: 3000, bodyLimitBytes: 4 * 1024 * 1024 },
    store: { driver: 'sqlite', sqlite: { path: dbPath } },
    redis: { url: REDIS_URL, prefix },
    log: { level: 'warn' },
    // An Entra source: PATCH answers 204 (see src/http/scim/README.md); the rate limit is out of the way.
    sources: [{ id: 'bench', idp: 'entra', scim: { tokenSha256: sha256Hex(token), rateLimitPerSecond: 10_000_000 } }],
    lockSystems: [
      {
        id: 'iloq',
        kind: 'iloq',
        iloq: { serverUrl: sim.url, customerCode: sim.credentials.customerCode, userName: sim.credentials.userName, password: sim.credentials.password },
        apply: { concurrency: 16, retry: { attempts: 8, baseMs: 100, maxMs: 5000 } },
      },
    ],
    policy: { rules: POLICY_RULES },
    reconcile: { concurrency: 32, sweepIntervalMs: 5000, sweepAfterMs: 30000 },
    // For /metrics (V8 heap figures beside RSS).
    admin: { tokens: [{ name: 'bench', role: 'admin', sha256: sha256Hex(adminToken) }] },
  };
  const cfgFile = join(dir, 'lockstep.json');
  writeFileSync(cfgFile, JSON.stringify(config));
  const child = launchLockstep(['serve', '--config', cfgFile, ...(NO_WORKERS || SPLIT ? ['--no-workers'] : [])]);
  let worker: ChildProcess | undefined;
  if (SPLIT) {
    const workerCfg = join(dir, 'worker.json');
    writeFileSync(workerCfg, JSON.stringify({ ...config, server: { ...config.server, port: port + 1 } }));
    worker = launchLockstep(['worker', '--config', workerCfg]);
  }
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {}
    if (i > 300) throw new Error('lockstep did not become ready');
    await sleep(100);
  }
  return {
    url,
    adminToken,
    base: `${url}/scim/v2`,
    token,
    pid: child.pid!,
    child,
    dir,
    dbPath,
    workerPid: worker?.pid,
    async stop() {
      for (const c of [child, worker]) c?.kill('SIGTERM');
      await Promise.all([child, worker].map((c) => c && new Promise((r) => c.once('exit', r))));
      await sim.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function userBody(userName: string) {
  return JSON.stringify({
    schemas: ['urn:ietf:params:scim:schemas:core:2.0:User'],
    userName,
    externalId: `ext-${userName}`,
    name: { givenName: 'Load', familyName: userName },
    displayName: `Load ${userName}`,
    emails: [{ value: `${userName}@example.com`, type: 'work', primary: true }],
    active: true,
  });
}

function userInput(userName: string): UserInput {
  return {
    userName,
    externalId: `ext-${userName}`,
    displayName: `Load ${userName}`,
    active: true,
    email: `${userName}@example.com`,
    emails: [{ value: `${userName}@example.com`, type: 'work', primary: true }],
    profile: { givenName: 'Load', familyName: userName, email: `${userName}@example.com`, roles: [], attributes: {} },
    resource: JSON.parse(userBody(userName)) as Record<string, unknown>,
  };
}

interface Data {
  members: Array<{ id: string; userName: string }>;
  spares: string[];
  groupId: string;
  groupSize: number;
  seedSeconds: number;
}

async function call(s: Server, method: string, path: string, body?: string) {
  const res = await fetch(s.base + path, { method, headers: { authorization: `Bearer ${s.token}`, accept: SCIM_JSON, ...(body ? { 'content-type': SCIM_JSON } : {}) }, ...(body ? { body } : {}) });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, any>) : undefined };
}

/** Small: over SCIM, 16 at a time, as the peers were seeded. */
async function seedOverScim(s: Server, run: string, members: number, spares: number): Promise<Data> {
  const t0 = Date.now();
  const names = [...Array.from({ length: members }, (_, i) => `${run}-m${i}`), ...Array.from({ length: spares }, (_, i) => `${run}-s${i}`)];
  const ids: string[] = new Array(names.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < names.length) {
        const i = next++;
        const r = await call(s, 'POST', '/Users', userBody(names[i]!));
        if (r.status !== 201) throw new Error(`seed POST ${r.status}`);
        ids[i] = r.json!.id as string;
      }
    }),
  );
  const g = await call(s, 'POST', '/Groups', JSON.stringify({ schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], displayName: `${run}-group`, members: ids.slice(0, members).map((value) => ({ value })) }));
  if (g.status !== 201) throw new Error(`seed group ${g.status}`);
  return {
    members: ids.slice(0, members).map((id, i) => ({ id, userName: names[i]! })),
    spares: ids.slice(members),
    groupId: g.json!.id as string,
    groupSize: (g.json!.members as unknown[]).length,
    seedSeconds: (Date.now() - t0) / 1000,
  };
}

/** Large: through the store's bulk import (same rows, marks and audit entries as SCIM creates), before lockstep starts. */
async function seedThroughStore(dbPath: string, run: string, users: number, members: number): Promise<Data> {
  const t0 = Date.now();
  const store = openStore({ driver: 'sqlite', sqlite: { path: dbPath }, postgres: { poolSize: 1 } } as Parameters<typeof openStore>[0]);
  await store.migrate();
  const repo = new IdentityRepo(store);
  const ctx = { actor: 'bench', correlationId: run };
  const names = Array.from({ length: users }, (_, i) => `${run}-u${i}`);
  const ids: string[] = [];
  for (let i = 0; i < users; i += 10_000) ids.push(...(await repo.importUsers('bench', names.slice(i, i + 10_000).map(userInput), ctx)));
  const g = await repo.createGroup('bench', { displayName: `${run}-group`, resource: { schemas: ['urn:ietf:params:scim:schemas:core:2.0:Group'], displayName: `${run}-group` } }, ids.slice(0, members), ctx, { withMembers: false });
  // Seeded identities count as reconciled: the benchmark measures SCIM traffic, not a 100k backlog.
  await store.db.deleteFrom('dirty').execute();
  // ...under the benchmark's policy, as if lockstep had already run with it (otherwise its first
  // start re-reconciles everyone, src/reconcile/policy-change.ts).
  try {
    const { policyFingerprint } = await import('../src/reconcile/policy-change.ts');
    const { ruleSchema } = await import('../src/config/schema.ts');
    const fingerprint = policyFingerprint({ policy: { rules: POLICY_RULES.map((r) => ruleSchema.parse(r)) }, lockSystems: [{ id: 'iloq' }] } as never);
    await sql`insert into meta (key, value) values ('policy_fingerprint', ${fingerprint})`.execute(store.db);
  } catch (err) {
    console.error(`[scim-load] could not preset the policy fingerprint (${(err as Error).message}); lockstep will reconcile the seed at start`);
  }
  await store.close();
  return {
    members: ids.slice(0, members).map((id, i) => ({ id, userName: names[i]! })),
    spares: ids.slice(members, members + 1000),
    groupId: g.id,
    groupSize: members,
    seedSeconds: (Date.now() - t0) / 1000,
  };
}

/** V8 heap used/total and external memory (MB), from lockstep's /metrics. */
async function heap(s: Server): Promise<{ used: number; total: number; external: number }> {
  try {
    const text = await (await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${s.adminToken}` } })).text();
    const g = (name: string) => Number(new RegExp(`^lockstep_${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text)?.[1] ?? NaN) / 2 ** 20;
    return { used: Math.round(g('nodejs_heap_size_used_bytes')), total: Math.round(g('nodejs_heap_size_total_bytes')), external: Math.round(g('nodejs_external_memory_bytes')) };
  } catch {
    return { used: NaN, total: NaN, external: NaN };
  }
}

/**
 * Waits until lockstep has reconciled every change so far (its outbox, the `dirty` table, is
 * empty), reading the SQLite file beside it (WAL allows a concurrent reader). Returns seconds.
 */
async function drained(s: Server, limitSeconds = 120): Promise<number> {
  const t0 = Date.now();
  const db = new DatabaseSync(s.dbPath, { readOnly: true });
  try {
    const q = db.prepare('select count(*) as n from dirty');
    while ((q.get() as { n: number }).n > 0 && Date.now() - t0 < limitSeconds * 1000) await sleep(200);
  } finally {
    db.close();
  }
  return (Date.now() - t0) / 1000;
}

interface Row {
  scale: string;
  phase: string;
  title: string;
  reqPerSec: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
  /** Seconds lockstep needed, after the phase, to reconcile what it had accepted. */
  catchUpSeconds: number;
  rssPeakMB: number;
  heapTotalMB: number;
  heapUsedMB: number;
  serverCpuPct: number;
  /** lockstep CPU time per successful request (µs), including the reconciles it caused: comparable across runs on a busy machine. */
  cpuMicrosPerRequest: number;
}

function phaseRequests(name: string, s: Server, d: Data, run: string, counter: { n: number }) {
  const auth = { authorization: `Bearer ${s.token}`, accept: SCIM_JSON };
  const json = { ...auth, 'content-type': SCIM_JSON };
  const prefix = '/scim/v2';
  const enc = encodeURIComponent;
  switch (name) {
    case 'a':
      return {
        title: 'POST /Users',
        requests: [
          {
            method: 'POST',
            headers: json,
            setupRequest: (req: Record<string, unknown>) => ({ ...req, path: `${prefix}/Users`, body: userBody(`${run}-a${counter.n++}`) }),
          },
        ],
      };
    case 'b':
      return {
        title: 'GET /Users?filter=userName eq',
        requests: [
          {
            method: 'GET',
            headers: auth,
            setupRequest: (req: Record<string, unknown>) => ({ ...req, path: `${prefix}/Users?filter=${enc(`userName eq "${d.members[counter.n++ % d.members.length]!.userName}"`)}` }),
          },
        ],
      };
    case 'c':
      return {
        title: 'GET /Users/{id}',
        requests: [{ method: 'GET', headers: auth, setupRequest: (req: Record<string, unknown>) => ({ ...req, path: `${prefix}/Users/${d.members[counter.n++ % d.members.length]!.id}` }) }],
      };
    case 'd':
      return {
        title: 'PATCH /Users/{id} active',
        requests: [
          {
            method: 'PATCH',
            headers: json,
            setupRequest: (req: Record<string, unknown>) => {
              const i = counter.n++;
              return {
                ...req,
                path: `${prefix}/Users/${d.members[i % d.members.length]!.id}`,
                body: JSON.stringify({ schemas: [PATCH_SCHEMA], Operations: [{ op: 'replace', path: 'active', value: Math.floor(i / d.members.length) % 2 === 1 }] }),
              };
            },
          },
        ],
      };
    case 'e': {
      const free = [...d.spares];
      const path = `${prefix}/Groups/${d.groupId}`;
      return {
        title: `PATCH /Groups/{id} member add/remove (${d.groupSize} members)`,
        requests: [
          {
            method: 'PATCH',
            headers: json,
            setupRequest: (req: Record<string, unknown>, ctx: Record<string, unknown>) => {
              ctx.spare = free.pop() ?? d.spares[counter.n++ % d.spares.length];
              return { ...req, path, body: JSON.stringify({ schemas: [PATCH_SCHEMA], Operations: [{ op: 'add', path: 'members', value: [{ value: ctx.spare }] }] }) };
            },
          },
          {
            method: 'PATCH',
            headers: json,
            setupRequest: (req: Record<string, unknown>, ctx: Record<string, unknown>) => ({
              ...req,
              path,
              body: JSON.stringify({ schemas: [PATCH_SCHEMA], Operations: [{ op: 'remove', path: `members[value eq "${String(ctx.spare)}"]` }] }),
            }),
            onResponse: (_status: number, _body: string, ctx: Record<string, unknown>) => {
              if (ctx.spare !== undefined && !free.includes(ctx.spare as string)) free.unshift(ctx.spare as string);
            },
          },
        ],
      };
    }
  }
  throw new Error(`unknown phase ${name}`);
}

async function measure(ac: Autocannon, scale: string, name: string, s: Server, d: Data, run: string, created: { n: number }): Promise<Row> {
  // One counter per phase, shared by warm-up and measurement: phase d's first pass over the
  // users deactivates each (they start active), so every measured PATCH changes something.
  const counter = name === 'a' ? created : { n: 0 };
  const go = (seconds: number, collect: number[] | undefined) =>
    new Promise<AutocannonResult>((resolve, reject) => {
      const phase = phaseRequests(name, s, d, run, counter);
      const inst = ac({ url: s.url, connections: CONNECTIONS, pipelining: 1, duration: seconds, timeout: 10, requests: phase.requests }, (err, r) => (err ? reject(err) : resolve(r)));
      if (collect) inst.on('response', (_c, _status, _bytes, ms) => collect.push(ms));
    });
  if (WARMUP > 0) await go(WARMUP, undefined);
  const lat: number[] = [];
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, procStatus(s.pid, 'VmRSS') ?? 0)), 100);
  const ticks = () => {
    const a = cpuTicks(s.pid);
    const b = s.workerPid ? cpuTicks(s.workerPid) : 0;
    return a === undefined || b === undefined ? undefined : a + b;
  };
  const t0 = ticks();
  const started = process.hrtime.bigint();
  const r = await go(DURATION, lat);
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  clearInterval(sampler);
  const h = await heap(s);
  const catchUp = NO_WORKERS ? 0 : await drained(s);
  // CPU including the reconciles the calls caused, also those finished after the phase.
  const t2 = ticks();
  peak = Math.max(peak, procStatus(s.pid, 'VmRSS') ?? 0);
  const t1 = ticks();
  lat.sort((x, y) => x - y);
  const ok = lat.length - r.non2xx;
  return {
    scale,
    phase: name,
    title: phaseRequests(name, s, d, run, { n: 0 }).title,
    reqPerSec: Math.round(ok / (r.duration || elapsed)),
    p50: Number(pct(lat, 50).toFixed(2)),
    p99: Number(pct(lat, 99).toFixed(2)),
    non2xx: r.non2xx,
    errors: r.errors + r.timeouts,
    catchUpSeconds: Number(catchUp.toFixed(1)),
    rssPeakMB: Math.round(peak),
    heapTotalMB: h.total,
    heapUsedMB: h.used,
    serverCpuPct: t0 !== undefined && t1 !== undefined ? Math.round((100 * (t1 - t0)) / 100 / elapsed) : NaN,
    // Ticks are 10 ms (CLK_TCK 100).
    cpuMicrosPerRequest: t0 !== undefined && t2 !== undefined && ok > 0 ? Math.round(((t2 - t0) * 10_000) / ok) : NaN,
  };
}

async function runScale(ac: Autocannon, scale: 'small' | 'large'): Promise<{ rows: Row[]; seed: Data; hwm: number; load: string }> {
  const run = `b${Date.now().toString(36)}`;
  let seeded: Data | undefined;
  const s = await startServer(scale === 'large' ? async (db) => void (seeded = await seedThroughStore(db, run, 100_000, 50_000)) : undefined);
  try {
    const data = seeded ?? (await seedOverScim(s, run, 1000, 100));
    console.error(`[scim-load] ${scale}: seeded in ${data.seedSeconds.toFixed(1)} s (group ${data.groupSize} members)`);
    // Let the reconciles of the seed drain before measuring.
    if (!NO_WORKERS) console.error(`[scim-load] ${scale}: seed reconciled after ${(await drained(s)).toFixed(1)} s more`);
    const load = await machineLoad([s.pid, ...(s.workerPid ? [s.workerPid] : [])]);
    console.error(`[scim-load] ${load}`);
    const rows: Row[] = [];
    const created = { n: 0 };
    for (const p of PHASES) {
      const row = await measure(ac, scale, p, s, data, run, created);
      console.error(`[scim-load] ${scale} ${row.title}: ${row.reqPerSec}/s p50 ${row.p50} ms p99 ${row.p99} ms non2xx ${row.non2xx} rss ${row.rssPeakMB} MB heap ${row.heapUsedMB}/${row.heapTotalMB} MB cpu ${row.serverCpuPct}% (${row.cpuMicrosPerRequest} µs/req) catch-up ${row.catchUpSeconds} s`);
      rows.push(row);
    }
    const members = await call(s, 'GET', `/Groups/${data.groupId}?attributes=displayName`);
    if (members.status !== 200) throw new Error('group vanished');
    return { rows, seed: data, hwm: Math.round(procStatus(s.pid, 'VmHWM') ?? 0), load };
  } finally {
    await s.stop();
  }
}

async function main() {
  if (flag('serve')) {
    let seeded: Data | undefined;
    const s = await startServer(SCALE === 'large' ? async (db) => void (seeded = await seedThroughStore(db, `s${Date.now().toString(36)}`, 100_000, 50_000)) : undefined);
    if (seeded) console.log(`seeded 100,000 users; group ${seeded.groupId} with ${seeded.groupSize} members`);
    console.log(`lockstep SCIM at ${s.base}\ntoken ${s.token}\npid ${s.pid}\n(Ctrl-C to stop)`);
    await new Promise<void>((r) => process.once('SIGINT', () => r()));
    await s.stop();
    return;
  }
  const ac = loadAutocannon();
  const scales = SCALE === 'both' ? (['small', 'large'] as const) : [SCALE as 'small' | 'large'];
  const results = [];
  for (const sc of scales) results.push({ scale: sc, ...(await runScale(ac.run, sc)) });
  const versions = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
  const v = (p: string) => versions.packages[`node_modules/${p}`]?.version ?? '?';
  const header =
    `Machine: ${cpus()[0]?.model ?? '?'} × ${cpus().length}, ${Math.round(totalmem() / 2 ** 30)} GiB; Node ${process.version}; SQLite store; Redis ${REDIS_URL}; ` +
    `fastify ${v('fastify')}, scimmy ${v('scimmy')}, kysely ${v('kysely')}, bullmq ${v('bullmq')}; autocannon ${ac.version} in the same process as the iLOQ simulator, lockstep as a child (serve: HTTP + workers).\n` +
    `Settings: ${CONNECTIONS} connections, ${WARMUP} s warm-up + ${DURATION} s measured per call, phase order ${PHASES.join(',')}${NO_WORKERS ? '; --no-workers (HTTP only: nothing reconciles)' : ''}${SPLIT ? '; --split (serve --no-workers + one worker process; CPU figures are both processes, RSS the serving one)' : ''}.`;
  const lines = [header, ''];
  for (const r of results) {
    lines.push(`${r.scale === 'small' ? `~1,100 users, ${r.seed.groupSize}-member group (seeded over SCIM)` : `100,000 users, ${r.seed.groupSize}-member group (seeded by bulk import)`}; lockstep peak RSS (VmHWM) ${r.hwm} MB; ${r.load} before measuring`);
    lines.push('');
    lines.push('| call | req/s | p50 ms | p99 ms | non-2xx | RSS peak MB | V8 heap used / total MB | lockstep CPU % | lockstep CPU µs / request | reconcile catch-up s |');
    lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const row of [...r.rows].sort((a, b) => a.phase.localeCompare(b.phase)))
      lines.push(`| ${row.title} | ${row.reqPerSec} | ${row.p50} | ${row.p99} | ${row.non2xx + row.errors} | ${row.rssPeakMB} | ${row.heapUsedMB} / ${row.heapTotalMB} | ${row.serverCpuPct} | ${row.cpuMicrosPerRequest} | ${row.catchUpSeconds} |`);
    lines.push('');
  }
  console.log(lines.join('\n'));
  if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify({ at: new Date().toISOString(), header, results }, null, 2));
}

main().catch((err: Error) => {
  console.error(err.stack ?? err.message);
  process.exit(1);
});
