/**
 * Lockdown benchmark: revoke-all of N keys (half on the iLOQ simulator, half on the CLIQ
 * simulator, each answering after `--latency` ms), then the lift.
 *
 *   node bench/lockdown.ts [--keys 10000] [--latency 20] [--concurrency N] [--workers N]
 *
 * --concurrency defaults to lockstep's own default for `apply.concurrency` (16): the bench
 * measures lockstep as it ships unless told otherwise.
 *
 * BENCH_TRACE=1 prints, while a phase runs, the requests in flight at each simulator and the
 * apply and reconcile queues' lengths in Redis (where the pipeline waits), and after it the CPU
 * this process and Redis used;
 * BENCH_CPU_PROF=dir writes lockstep's CPU profiles there.
 *
 * Persons, their group memberships, lockstep's accepted state and the simulators' keys are
 * seeded directly (the setup is not what is measured); lockstep then runs as a child process
 * (`lockstep serve`, SQLite, real Redis). Reported:
 *  - time from POST /api/v1/lockdowns until the first request reaches a lock system;
 *  - time until every revocation is accepted, against the bound set by concurrency and
 *    latency: ops × (calls per op) × latency ÷ concurrency, per lock system (the share is
 *    bound ÷ measured; 100% would be a lock system saturated at the configured concurrency);
 *  - the same for the lift; lockstep's CPU time per operation and peak RSS;
 *  - the mean number of requests in flight at each simulator (the bound assumes `concurrency`
 *    all the time, so this says how full lockstep keeps the pipes);
 *  - each lock system's own share: its bound ÷ the time until its last operation was accepted
 *    (polled every 100 ms), the figure issue 4 asks for per lock system;
 *  - the latency each simulator really served per call, arrival to answer (its timer fires a
 *    little after the requested latency; the bound still uses the requested one).
 * Figures are appended to bench/RESULTS.md. A benchmark, not a test.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startCliqSimulator } from '../adapters/locks/cliq/simulator.ts';
import { startIloqSimulator } from '../adapters/locks/iloq/simulator.ts';
import { sha256Hex } from '../src/http/admin-auth.ts';
import { policyFingerprint } from '../src/reconcile/policy-change.ts';
import { configSchema, DEFAULT_APPLY_CONCURRENCY } from '../src/config/schema.ts';
import { openStore } from '../src/store/db.ts';
import { IdentityRepo } from '../src/store/identities.ts';
import { cpuSecondsOf, killOnExit, launchLockstep, peakRssMbOf, redisCpuSeconds } from './lockstep-process.ts';

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const KEYS = arg('keys', 10_000);
const LATENCY = arg('latency', 20);
const CONCURRENCY = arg('concurrency', DEFAULT_APPLY_CONCURRENCY);
/** --workers N: `serve --no-workers` plus N `lockstep worker` processes (scale-out on one host). */
const WORKERS = arg('workers', 0);
/** apply.concurrency is per process: with worker processes each gets its share of the total. */
const PER_PROCESS = WORKERS ? Math.floor(CONCURRENCY / WORKERS) : CONCURRENCY;
if (PER_PROCESS * Math.max(1, WORKERS) !== CONCURRENCY) throw new Error('--concurrency must be a multiple of --workers');
const ROOT = new URL('../', import.meta.url).pathname;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'lockstep-lockdown-bench-'));
  const iloq = await startIloqSimulator({ port: 0, seed: 'demo', requestLogLimit: 100, programDelayMs: null });
  const cliq = await startCliqSimulator({ port: 0, seed: 'demo', token: 'bench', requestLogLimit: 100, jobDelayMs: null });
  const croToken = randomBytes(16).toString('hex');
  const port = 20000 + Math.floor(Math.random() * 2000);
  const prefix = `lbench${randomBytes(3).toString('hex')}`;
  const raw = {
    server: { host: '127.0.0.1', port },
    store: { driver: 'sqlite', sqlite: { path: join(dir, 'lockstep.db') } },
    redis: { url: REDIS_URL, prefix },
    log: { level: 'warn' },
    sources: [{ id: 'hr', idp: 'generic', scim: { tokenSha256: sha256Hex(randomBytes(8).toString('hex')) } }],
    lockSystems: [
      { id: 'iloq', kind: 'iloq', iloq: { serverUrl: iloq.url, customerCode: 'DEMO', userName: 'lockstep', password: 'lockstep-sim' }, apply: { concurrency: PER_PROCESS } },
      { id: 'cliq', kind: 'cliq', cliq: { baseUrl: cliq.url, domainId: cliq.domainId, bearerToken: 'bench' }, apply: { concurrency: PER_PROCESS } },
    ],
    policy: {
      rules: [
        { name: 'iloq-staff', when: { groups: ['iLOQ staff'] }, grant: [{ lockSystem: 'iloq', access: ['Main entrance'] }] },
        { name: 'cliq-staff', when: { groups: ['CLIQ staff'] }, grant: [{ lockSystem: 'cliq', access: ['Main entrance'] }] },
      ],
    },
    admin: { tokens: [{ name: 'cro', role: 'cro', sha256: sha256Hex(croToken) }] },
    reconcile: { concurrency: 64, effectiveCheckIntervalMs: 3_600_000 },
  };
  const config = configSchema.parse(raw);

  // Seed: identities, memberships, accepted state, and matching keys in the simulators.
  const t0 = Date.now();
  const store = openStore(config.store);
  await store.migrate();
  const repo = new IdentityRepo(store);
  const ctx = { actor: 'bench', correlationId: randomUUID() };
  const half = KEYS / 2;
  const ids: Record<'iloq' | 'cliq', string[]> = { iloq: [], cliq: [] };
  for (const ls of ['iloq', 'cliq'] as const)
    for (let i = 0; i < half; i++) {
      const u = await repo.createUser('hr', { userName: `${ls}${i}@example.com`, active: true, profile: { roles: [], attributes: {} }, resource: {} }, ctx);
      ids[ls].push(u.id);
    }
  await repo.createGroup('hr', { displayName: 'iLOQ staff', resource: {} }, ids.iloq, ctx);
  await repo.createGroup('hr', { displayName: 'CLIQ staff', resource: {} }, ids.cliq, ctx);
  await store.db.deleteFrom('dirty').execute();
  for (const ls of ['iloq', 'cliq'] as const)
    for (let i = 0; i < half; i += 500)
      await store.db
        .insertInto('lock_state')
        .values(ids[ls].slice(i, i + 500).map((p) => ({ lock_system_id: ls, person_id: p, access: '["Main entrance"]', departed: 0, remote_person_id: null, updated_at: Date.now() })))
        .execute();
  await store.db.insertInto('meta').values({ key: 'policy_fingerprint', value: policyFingerprint(config) }).execute();
  await store.close();
  for (const p of ids.iloq) {
    iloq.addPerson({ ExternalPersonId: p, FirstName: 'Bench', LastName: p.slice(0, 8) });
    iloq.addKey({ person: p, access: ['Main entrance'] });
  }
  for (const p of ids.cliq) {
    cliq.seedPerson({ externalId: p });
    cliq.seedKey({ holder: p, type: 'dynamic', access: ['Main entrance'] });
  }
  console.log(`seeded ${KEYS} persons and keys in ${Date.now() - t0} ms`);

  const cfgFile = join(dir, 'lockstep.json');
  writeFileSync(cfgFile, JSON.stringify(raw));
  const launch = (args: string[]) => launchLockstep(args);
  const child = launch(['serve', '--config', cfgFile, ...(WORKERS ? ['--no-workers'] : [])]);
  const workers = Array.from({ length: WORKERS }, (_, i) => {
    const f = join(dir, `worker${i}.json`);
    writeFileSync(f, JSON.stringify({ ...raw, server: { ...raw.server, port: port + 1 + i } }));
    return launch(['worker', '--config', f]);
  });
  const all = [child, ...workers];
  killOnExit(all);
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (await fetch(`${base}/healthz`).then((r) => r.ok, () => false)) break;
    if (i > 300) throw new Error('lockstep did not start');
    await sleep(100);
  }
  iloq.setFaults({ latencyMs: LATENCY });
  cliq.setFaults({ latencyMs: LATENCY });
  const api = (method: string, path: string, body?: unknown) =>
    fetch(`${base}/api/v1${path}`, { method, headers: { authorization: `Bearer ${croToken}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) }).then(
      async (r) => (await r.json()) as any,
    );
  const cpu = () => cpuSecondsOf(all);
  const phase = async (name: string, action: () => Promise<any>, systemDone: (f: any, ls: 'iloq' | 'cliq') => boolean) => {
    const doneWhen = (f: any) => systemDone(f, 'iloq') && systemDone(f, 'cliq');
    const before = { iloq: iloq.requestTotal, cliq: cliq.requestTotal, iloqReceived: iloq.requestsReceived, cliqReceived: cliq.requestsReceived, iloqServed: iloq.servedMsTotal, cliqServed: cliq.servedMsTotal, cpu: cpu() };
    let first: number | undefined;
    const benchCpu0 = process.cpuUsage();
    // BENCH_TRACE: queue lengths while it runs, and Redis's CPU (the third process on the cores).
    const tr = process.env.BENCH_TRACE ? new Redis(REDIS_URL) : undefined;
    const redis0 = tr ? await redisCpuSeconds(tr) : NaN;
    const watchFirst = setInterval(() => {
      if (iloq.requestsReceived > before.iloqReceived || cliq.requestsReceived > before.cliqReceived) {
        first = performance.now();
        // Polling every millisecond for the rest of the phase would load the simulators' loop.
        clearInterval(watchFirst);
      }
    }, 1);
    // Requests in flight at each simulator (arrived, not yet answered), sampled: how full lockstep
    // keeps the pipes it is allowed (the bound assumes `concurrency` in flight all the time).
    const flight = { iloq: 0, cliq: 0, n: 0, iloqDone: false, cliqDone: false };
    const watchFlight = setInterval(() => {
      flight.n++;
      flight.iloq += iloq.requestsReceived - iloq.requestTotal;
      flight.cliq += cliq.requestsReceived - cliq.requestTotal;
      if (process.env.BENCH_TRACE && flight.n % 50 === 0)
        console.log(`t=${Math.round(performance.now() - started)} in flight iloq=${iloq.requestsReceived - iloq.requestTotal} cliq=${cliq.requestsReceived - cliq.requestTotal}`);
    }, 5);
    const started = performance.now();
    const trTimer =
      tr &&
      setInterval(async () => {
        const counts = async (q: string) => {
          const k = `${prefix}:${q}`;
          const [p, w, a] = await Promise.all([tr.zcard(`${k}:prioritized`), tr.llen(`${k}:wait`), tr.llen(`${k}:active`)]);
          return `${q} ready=${p + w} active=${a}`;
        };
        const all = await Promise.all(['apply_iloq', 'apply_cliq', 'reconcile'].map(counts));
        console.log(`q t=${Math.round(performance.now() - started)} ${all.join(' ')}`);
      }, 100);
    const id = (await action()).id as string;
    const answered = performance.now() - started;
    if (process.env.BENCH_TRACE) console.log(`answered after ${answered.toFixed(0)} ms`);
    let f: any;
    // When each lock system had every revocation (or restoration) accepted: its own share.
    const doneAt: Partial<Record<'iloq' | 'cliq', number>> = {};
    for (;;) {
      f = await api('GET', `/lockdowns/${id}`);
      for (const ls of ['iloq', 'cliq'] as const) if (doneAt[ls] === undefined && systemDone(f, ls)) doneAt[ls] = performance.now() - started;
      if (doneWhen(f)) break;
      await sleep(100);
    }
    const elapsed = performance.now() - started;
    clearInterval(watchFirst);
    clearInterval(watchFlight);
    if (trTimer) clearInterval(trTimer);
    const calls = { iloq: iloq.requestTotal - before.iloq, cliq: cliq.requestTotal - before.cliq };
    const opsEach = half;
    const bound = Math.max(...(['iloq', 'cliq'] as const).map((ls) => (calls[ls] * LATENCY) / CONCURRENCY));
    const cpuSeconds = cpu() - before.cpu;
    if (process.env.BENCH_TRACE) {
      const u = process.cpuUsage(benchCpu0);
      console.log(`CPU during ${name}: this process (simulators, load) ${((u.user + u.system) / 1e6).toFixed(1)} s, redis-server ${((await redisCpuSeconds(tr!)) - redis0).toFixed(1)} s`);
    }
    tr?.disconnect();
    const r = {
      name,
      id,
      firstRequestMs: first === undefined ? NaN : first - started,
      answeredMs: answered,
      elapsedMs: elapsed,
      boundMs: bound,
      share: bound / elapsed,
      callsPerOp: { iloq: calls.iloq / opsEach, cliq: calls.cliq / opsEach },
      cpuMsPerOp: (cpuSeconds * 1000) / KEYS,
      // What each simulator really took per call (the bound assumes exactly LATENCY ms).
      servedMs: { iloq: (iloq.servedMsTotal - before.iloqServed) / Math.max(1, calls.iloq), cliq: (cliq.servedMsTotal - before.cliqServed) / Math.max(1, calls.cliq) },
      meanInFlight: { iloq: flight.iloq / Math.max(1, flight.n), cliq: flight.cliq / Math.max(1, flight.n) },
      shareBySystem: {
        iloq: (calls.iloq * LATENCY) / CONCURRENCY / (doneAt.iloq ?? elapsed),
        cliq: (calls.cliq * LATENCY) / CONCURRENCY / (doneAt.cliq ?? elapsed),
      },
      figures: f.perLockSystem,
    };
    console.log(JSON.stringify(r));
    return r;
  };

  const start = await phase(
    'revoke-all',
    () => api('POST', '/lockdowns', { scope: { all: true }, reason: 'Benchmark: revoke all keys' }),
    (f, ls) => {
      const c = (f.perLockSystem as Record<string, { accepted: number; failed: number; targeted: number }>)[ls];
      // Targets are counted just after the first batch has started (markedAt).
      return Boolean(f.markedAt) && c !== undefined && c.accepted + c.failed >= c.targeted;
    },
  );
  const lift = await phase(
    'lift',
    () => api('POST', `/lockdowns/${start.id}/lift`, {}).then(() => ({ id: start.id })),
    (f, ls) => Boolean(f.lift) && Boolean(f.liftMarkedAt) && (f.lift.perLockSystem[ls]?.accepted ?? 0) + (f.lift.perLockSystem[ls]?.failed ?? 0) >= half,
  );
  const hwm = peakRssMbOf(all);
  await Promise.all(
    all.map(
      (c) =>
        new Promise((r) => {
          c.once('exit', r);
          c.kill('SIGTERM');
        }),
    ),
  );
  await iloq.close();
  await cliq.close();
  const r = new Redis(REDIS_URL);
  for await (const b of r.scanStream({ match: `${prefix}:*`, count: 1000 })) if ((b as string[]).length) await r.del(...(b as string[]));
  await r.quit();
  rmSync(dir, { recursive: true, force: true });

  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const row = (p: typeof start) =>
    `| ${p.name} | ${p.firstRequestMs.toFixed(0)} ms | ${(p.elapsedMs / 1000).toFixed(1)} s | ${(p.boundMs / 1000).toFixed(1)} s | ${pct(p.share)} | ${p.callsPerOp.iloq.toFixed(1)} / ${p.callsPerOp.cliq.toFixed(1)} | ${p.cpuMsPerOp.toFixed(2)} ms | ${p.meanInFlight.iloq.toFixed(0)} / ${p.meanInFlight.cliq.toFixed(0)} | ${pct(p.shareBySystem.iloq)} / ${pct(p.shareBySystem.cliq)} | ${p.servedMs.iloq.toFixed(1)} / ${p.servedMs.cliq.toFixed(1)} ms |`;
  const text = [
    `### ${new Date().toISOString()} — lockdown (node bench/lockdown.ts)`,
    '',
    `Machine: ${cpus()[0]?.model ?? '?'} × ${cpus().length}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}; SQLite store; ${KEYS} keys (${half} iLOQ + ${half} CLIQ), ${LATENCY} ms per simulator call, apply concurrency ${CONCURRENCY} per lock system${WORKERS ? ` (${PER_PROCESS} per process)` : ''}; ${WORKERS ? `\`serve --no-workers\` + ${WORKERS} \`worker\` processes` : 'one `serve` process'}; simulators in the benchmark process. Peak RSS of lockstep ${hwm.toFixed(0)} MB${WORKERS ? ' (sum)' : ''}.`,
    '',
    '| phase | first request | all accepted | bound (calls × latency ÷ concurrency) | share of bound (target ≥ 80%) | calls per op iLOQ / CLIQ | lockstep CPU per op | requests in flight iLOQ / CLIQ (mean) | share per lock system iLOQ / CLIQ (its bound ÷ when it was done) | latency served per call iLOQ / CLIQ |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    row(start),
    row(lift),
    '',
  ].join('\n');
  appendFileSync(join(ROOT, 'bench/RESULTS.md'), `${text}\n`);
  console.log(text);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
