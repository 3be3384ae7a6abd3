/**
 * Webhook acknowledgement benchmark: Okta event-hook deliveries at a fixed rate against a
 * running lockstep with an Okta source.
 *
 *   node bench/webhooks.ts [--rate 1000] [--seconds 15] [--warmup 3] [--users 5000] [--connections 128]
 *
 * lockstep runs as a child process (`lockstep serve`: HTTP + workers, SQLite store in a temp dir,
 * real Redis); the iLOQ simulator runs as another child (`lockstep sim iloq`). This process runs
 * the load generator and a small fake of the Okta API that the confirmation worker reads
 * (GET /api/v1/users/{id} and its groups), so the whole path works while the hooks arrive:
 * persist hints → confirm through the API → identity store → reconcile → apply on iLOQ.
 *
 * Open loop: request i is due at t0 + i/rate; its latency counts from that due time (a slow
 * server cannot hide queueing by slowing the generator down). Each delivery carries one event
 * with a fresh uuid about one of `--users` users (mixed event types), so every delivery is
 * persisted; the same users recur, so confirmations coalesce as they do in production.
 *
 * Results are printed and appended to bench/sources-results.md.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { cpus, loadavg, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { Pool } from 'undici';
import { Redis } from 'ioredis';
import { launchLockstep } from './lockstep-process.ts';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const RATE = arg('rate', 1000);
const SECONDS = arg('seconds', 15);
const WARMUP = arg('warmup', 3);
const USERS = arg('users', 5000);
const CONNECTIONS = arg('connections', 128);
const ROOT = new URL('../', import.meta.url).pathname;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const SECRET = randomBytes(24).toString('hex');
/** --split: `serve --no-workers` (hooks) plus one `worker` process (confirmations, reconcile, apply), the scale-out shape. */
const SPLIT = process.argv.includes('--split');
/** --intake-only: `serve --no-workers` and no worker: the acknowledgement path alone. */
const INTAKE_ONLY = process.argv.includes('--intake-only');
/** --cold: measure from an empty store (every user's first event creates the person); default: every user is known first. */
const COLD = process.argv.includes('--cold');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: Float64Array | number[], p: number) => {
  const s = Float64Array.from(xs).sort();
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : NaN;
};

/**
 * The Okta API as the confirmation worker reads it: every user exists and is active. It runs in
 * a child process (this file with --fake-okta) so that serving ~1,000 reads/s does not delay the
 * load generator's own event loop, which would show up as acknowledgement latency.
 */
function fakeOktaServer(): void {
  let reads = 0;
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const send = (status: number, body: unknown) => {
      const s = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s), 'x-rate-limit-limit': '6000', 'x-rate-limit-remaining': '5999', 'x-rate-limit-reset': String(Math.floor(Date.now() / 1000) + 60) });
      res.end(s);
    };
    const m = /^\/api\/v1\/users\/([^/]+)(\/groups)?$/.exec(url.pathname);
    if (m) {
      const id = m[1]!;
      const n = Number(id.replace(/\D/g, '')) || 0;
      if (m[2]) return send(200, n % 3 === 0 ? [{ id: '00gcontrolroom000001', type: 'OKTA_GROUP', profile: { name: 'Control Room' } }] : []);
      reads++;
      return send(200, {
        id,
        status: 'ACTIVE',
        profile: { login: `${id}@bench.example`, email: `${id}@bench.example`, firstName: 'Bench', lastName: id, site: n % 2 === 0 ? 'Plant A' : 'Plant B', employeeNumber: `E-${n}` },
      });
    }
    if (url.pathname === '/_reads') return send(200, { reads });
    if (url.pathname === '/api/v1/users' || url.pathname === '/api/v1/groups' || url.pathname === '/api/v1/logs') return send(200, []);
    send(404, { errorCode: 'E0000007', errorSummary: 'Not found' });
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`PORT ${(server.address() as { port: number }).port}\n`));
}

async function fakeOkta(): Promise<{ url: string; reads: () => Promise<number>; close: () => void }> {
  const child: ChildProcess = spawn(process.execPath, [new URL(import.meta.url).pathname, '--fake-okta'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /PORT (\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`fake Okta exited ${code}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return { url, reads: async () => ((await (await fetch(`${url}/_reads`)).json()) as { reads: number }).reads, close: () => child.kill() };
}

const EVENT_TYPES = [
  ['user.account.update_profile', 40],
  ['user.lifecycle.activate', 20],
  ['group.user_membership.add', 15],
  ['group.user_membership.remove', 10],
  ['user.lifecycle.deactivate', 5],
  ['application.user_membership.add', 10],
] as const;
const WEIGHTS = EVENT_TYPES.flatMap(([t, w]) => Array.from({ length: w }, () => t));

function delivery(i: number): string {
  const type = WEIGHTS[i % WEIGHTS.length]!;
  const user = `00ubench${String((i * 7919) % USERS).padStart(8, '0')}`;
  const target = [{ id: user, type: 'User', alternateId: `${user}@bench.example`, displayName: user }];
  if (type.startsWith('group.')) target.push({ id: '00gcontrolroom000001', type: 'UserGroup', alternateId: 'unknown', displayName: 'Control Room' });
  return JSON.stringify({
    eventType: 'com.okta.event_hook',
    eventTypeVersion: '1.0',
    cloudEventsVersion: '0.1',
    source: 'https://bench.okta.example/api/v1/eventHooks/whoBench',
    eventId: randomUUID(),
    data: { events: [{ uuid: randomUUID(), published: new Date().toISOString(), eventType: type, version: '0', severity: 'INFO', outcome: { result: 'SUCCESS' }, target }] },
    eventTime: new Date().toISOString(),
    contentType: 'application/json',
  });
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'lockstep-webhooks-bench-'));
  const okta = await fakeOkta();
  const port = 19000 + Math.floor(Math.random() * 1000);
  const simPort = port + 1000;
  const prefix = `benchwh${randomBytes(3).toString('hex')}`;
  const dbPath = join(dir, 'lockstep.db');
  const children: ChildProcess[] = [];
  const sim = spawn(process.execPath, [join(ROOT, 'bin/lockstep.js'), 'sim', 'iloq', '--port', String(simPort)], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(sim);
  const simCfg = await new Promise<Record<string, string>>((resolve) => {
    let out = '';
    sim.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (!/password: /.test(out)) return;
      const get = (k: string) => new RegExp(`${k}: (\\S+)`).exec(out)?.[1] ?? '';
      resolve({ serverUrl: get('serverUrl'), customerCode: get('customerCode'), userName: get('userName'), password: get('password') });
    });
  });
  const config = {
    server: { host: '127.0.0.1', port, shutdownGraceMs: 5000 },
    store: { driver: 'sqlite', sqlite: { path: dbPath } },
    redis: { url: REDIS_URL, prefix },
    log: { level: process.env.BENCH_LOG_LEVEL ?? 'warn' },
    sources: [
      {
        id: 'okta-bench',
        idp: 'okta',
        reconcileAtStart: false,
        reconcileEvery: '1d',
        deltaEvery: '1d',
        okta: { orgUrl: okta.url, auth: { type: 'ssws', token: 'bench' }, hook: { secret: SECRET }, attributes: { site: 'profile.site' } },
      },
    ],
    identity: { driftCheckEvery: 0, concurrency: 16 },
    lockSystems: [{ id: 'iloq', kind: 'iloq', iloq: simCfg, apply: { concurrency: 32 } }],
    policy: {
      rules: [
        { name: 'plant-a', when: { attributes: { site: 'Plant A' } }, grant: [{ lockSystem: 'iloq', access: ['Main entrance'] }] },
        { name: 'control-room', when: { groups: ['Control Room'] }, grant: [{ lockSystem: 'iloq', access: ['Control room'] }] },
      ],
    },
    reconcile: { concurrency: 32 },
  };
  const cfgFile = join(dir, 'lockstep.json');
  writeFileSync(cfgFile, JSON.stringify(config));
  const launch = (args: string[]) => launchLockstep(args, { logs: Boolean(process.env.BENCH_LOG_LEVEL) });
  // One process creates the schema before two processes open it.
  await new Promise<void>((resolve, reject) => launch(['migrate', '--config', cfgFile]).on('exit', (c) => (c === 0 ? resolve() : reject(new Error(`migrate exited ${c}`)))));
  const lockstep = launch(['serve', '--config', cfgFile, ...(SPLIT || INTAKE_ONLY ? ['--no-workers'] : [])]);
  children.push(lockstep);
  if (SPLIT) {
    const workerCfg = join(dir, 'worker.json');
    writeFileSync(workerCfg, JSON.stringify({ ...config, server: { ...config.server, port: port + 1 } }));
    children.push(launch(['worker', '--config', workerCfg]));
  }
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const ok = await fetch(`${base}/readyz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (i > 200) throw new Error('lockstep did not become ready');
    await sleep(100);
  }
  const pool = new Pool(base, { connections: CONNECTIONS, pipelining: 1, keepAliveTimeout: 30_000 });
  const headers = { 'content-type': 'application/json', authorization: SECRET };
  // Verification handshake first, as Okta does when the hook is registered.
  const v = await pool.request({ path: '/hooks/okta/okta-bench', method: 'GET', headers: { 'x-okta-verification-challenge': 'bench' } });
  if (v.statusCode !== 200) throw new Error(`verification answered ${v.statusCode}`);
  await v.body.dump();

  const db = new DatabaseSync(dbPath, { readOnly: true });
  const count = (sql: string) => Number((db.prepare(sql).get() as { n: number }).n);
  if (!COLD && !INTAKE_ONLY) {
    // A running lockstep knows its users: one event per user first, then wait until confirmed,
    // reconciled and applied, so the measured load is the steady state (updates of known people).
    const pre: Promise<unknown>[] = [];
    for (let u = 0; u < USERS; u++) {
      const user = `00ubench${String(u).padStart(8, '0')}`;
      const body = JSON.stringify({ eventType: 'com.okta.event_hook', eventId: randomUUID(), data: { events: [{ uuid: randomUUID(), eventType: 'user.lifecycle.create', outcome: { result: 'SUCCESS' }, target: [{ id: user, type: 'User' }] }] } });
      pre.push(pool.request({ path: '/hooks/okta/okta-bench', method: 'POST', headers, body }).then((r) => r.body.dump()));
      if (pre.length % 200 === 0) await sleep(200);
    }
    await Promise.all(pre);
    for (let i = 0; i < 1200; i++) {
      const busy = count("select (select count(*) from source_hints where state = 'pending') + (select count(*) from dirty) + (select count(*) from operations where state in ('pending','running')) as n");
      if (busy === 0) break;
      await sleep(250);
    }
    console.log(`pre-warmed: ${count('select count(*) as n from persons')} persons known`);
  }
  const readsBefore = await okta.reads();
  const total = RATE * (WARMUP + SECONDS);
  const latencies = new Float64Array(RATE * SECONDS);
  const service = new Float64Array(RATE * SECONDS);
  let measured = 0;
  const statuses = new Map<number, number>();
  let errors = 0;
  let inflight = 0;
  let maxInflight = 0;
  let peakRss = 0;
  const rssTimer = setInterval(() => {
    try {
      const kb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${lockstep.pid}/status`, 'utf8'))?.[1] ?? 0);
      peakRss = Math.max(peakRss, kb * 1024);
    } catch {}
  }, 250);
  const t0 = performance.now() + 50;
  let sent = 0;
  const done: Promise<void>[] = [];
  while (sent < total) {
    const now = performance.now();
    const due = Math.min(total, Math.floor(((now - t0) * RATE) / 1000) + 1);
    for (; sent < due; sent++) {
      const i = sent;
      const dueAt = t0 + (i * 1000) / RATE;
      const body = delivery(i);
      inflight++;
      maxInflight = Math.max(maxInflight, inflight);
      const startedAt = performance.now();
      done.push(
        pool.request({ path: '/hooks/okta/okta-bench', method: 'POST', headers, body }).then(
          async (r) => {
            await r.body.dump();
            const end = performance.now();
            inflight--;
            statuses.set(r.statusCode, (statuses.get(r.statusCode) ?? 0) + 1);
            if (i >= RATE * WARMUP && measured < latencies.length) {
              latencies[measured] = end - dueAt;
              service[measured] = end - startedAt;
              measured++;
            }
          },
          () => {
            inflight--;
            errors++;
          },
        ),
      );
    }
    const next = t0 + (sent * 1000) / RATE - performance.now();
    await sleep(Math.max(0, Math.min(next, 5)));
  }
  await Promise.all(done);
  const elapsed = (performance.now() - t0) / 1000;
  const lat = latencies.subarray(0, measured);
  const svc = service.subarray(0, measured);

  // How long the confirmations take to catch up with what was acknowledged.
  const drainStart = performance.now();
  let pending = count("select count(*) as n from source_hints where state = 'pending'");
  while (!INTAKE_ONLY && pending > 0 && performance.now() - drainStart < 120_000) {
    await sleep(500);
    pending = count("select count(*) as n from source_hints where state = 'pending'");
  }
  const drainS = (performance.now() - drainStart) / 1000;
  const hints = count('select count(*) as n from source_hints') - (COLD || INTAKE_ONLY ? 0 : USERS);
  const persons = count('select count(*) as n from persons');
  db.close();
  clearInterval(rssTimer);
  await pool.close();
  const readsAfter = await okta.reads();
  for (const c of children.reverse()) c.kill('SIGTERM');
  okta.close();
  await sleep(500);
  const r = new Redis(REDIS_URL);
  const stream = r.scanStream({ match: `${prefix}:*`, count: 1000 });
  for await (const batch of stream) if ((batch as string[]).length) await r.del(...(batch as string[]));
  await r.quit();
  rmSync(dir, { recursive: true, force: true });

  const versions = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')).packages as Record<string, { version: string }>;
  const v2 = (p: string) => versions[`node_modules/${p}`]?.version ?? '?';
  const f = (x: number) => `${x.toFixed(1)} ms`;
  const text = [
    '',
    `### ${new Date().toISOString()} — Okta event-hook acknowledgement (node bench/webhooks.ts)`,
    '',
    `Machine: ${cpus()[0]?.model ?? '?'} × ${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, load average at end ${loadavg()[0]!.toFixed(2)}; Node ${process.version}; SQLite store; Redis ${REDIS_URL}; fastify ${v2('fastify')}, bullmq ${v2('bullmq')}, @okta/okta-sdk-nodejs ${v2('@okta/okta-sdk-nodejs')}.`,
    `Setup: ${SPLIT ? '`lockstep serve --no-workers` (HTTP) plus `lockstep worker` (confirmation concurrency 16, reconcile 32, apply 32) as two child processes' : INTAKE_ONLY ? '`lockstep serve --no-workers` alone (acknowledgement path only; nothing confirms the hints)' : '`lockstep serve` (HTTP + workers: confirmation concurrency 16, reconcile 32, apply 32) as one child process'}; the iLOQ simulator as another; the fake Okta API as a third; this process: the open-loop load generator (${CONNECTIONS} keep-alive connections). ${RATE} deliveries/s for ${WARMUP} s warm-up + ${SECONDS} s measured, one event each (fresh uuid), ${USERS.toLocaleString('en')} distinct users${INTAKE_ONLY ? '' : COLD ? ' (cold: the store starts empty, so the first event of each user creates the person)' : ' (steady state: every user was created, reconciled and applied on iLOQ before the measurement)'}; latency from each request's due time to the end of its response.`,
    '',
    '| figure | result | target |',
    '|---|---:|---:|',
    `| deliveries sent / achieved rate | ${sent.toLocaleString('en')} / ${Math.round(sent / elapsed)} per s | 1,000 per s |`,
    `| answers | ${[...statuses].map(([s, n]) => `${n.toLocaleString('en')}× ${s}`).join(', ')}${errors ? `, ${errors} transport errors` : ''} | all 200 |`,
    `| ack latency p50 / p90 / p99 / max (measured ${measured.toLocaleString('en')}) | ${f(pct(lat, 50))} / ${f(pct(lat, 90))} / ${f(pct(lat, 99))} / ${f(pct(lat, 100))} | p99 < 50 ms |`,
    `| service time p50 / p99 (send → response) | ${f(pct(svc, 50))} / ${f(pct(svc, 99))} | |`,
    `| most requests in flight | ${maxInflight} | |`,
    `| hints stored (= deliveries: none lost, none doubled) | ${hints.toLocaleString('en')} | ${sent.toLocaleString('en')} |`,
    `| confirmations caught up after the load | ${pending === 0 ? `${drainS.toFixed(1)} s` : `no: ${pending} pending after 120 s`}; ${(readsAfter - readsBefore).toLocaleString('en')} user reads for ${hints.toLocaleString('en')} hints (coalesced per user); ${persons.toLocaleString('en')} persons | |`,
    `| lockstep peak RSS (VmHWM${SPLIT ? ' of the serve process' : ''}) | ${(peakRss / 2 ** 20).toFixed(0)} MB | |`,
    '',
  ].join('\n');
  appendFileSync(join(ROOT, 'bench/sources-results.md'), text);
  console.log(text);
}

if (process.argv.includes('--fake-okta')) fakeOktaServer();
else
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
