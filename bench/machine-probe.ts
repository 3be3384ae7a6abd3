/**
 * A fixed sample of the work the benchmarks are made of, timed in CPU: loopback HTTP exchanges
 * (server and client in this process) and small SQLite WAL commits.
 *
 * Why: on the shared 2-vCPU machines these benchmarks run on, the same benchmark's figures swing
 * by up to 1.5x within an hour while a compute-only loop does not move: what slows down is
 * syscall- and memory-heavy work, which is most of what a pipeline event costs. The benchmarks
 * record this probe before and after their run beside their figures, so that two runs can be
 * compared across the machine's phases (a run whose probe reads 1.4x higher ran on a slower
 * machine, not slower code). A reading, not a target: consecutive readings differ by 10-15 %
 * on such a machine, so it tells phases apart (1.3x and more), not small differences. The
 * load generator's own CPU per event, in the same results, is the reading taken during the run.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DatabaseSync } from 'node:sqlite';
import { Pool } from 'undici';

export interface MachineProbe {
  /** CPU µs per HTTP exchange (both ends in this process), 8 in flight. */
  httpUs: number;
  /** CPU µs per SQLite WAL commit of 10 rows into a table with two indexes on random keys. */
  commitUs: number;
}

const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

async function probeHttp(exchanges: number): Promise<number> {
  const body = JSON.stringify({ Result: 0, Items: [{ Id: 'a', Name: 'b' }] });
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const pool = new Pool(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { connections: 8 });
  const one = async () => {
    const r = await pool.request({ method: 'GET', path: '/api/v2/Probe' });
    await r.body.text();
  };
  try {
    // Warm-up: connections, JIT.
    await Promise.all(Array.from({ length: 200 }, one));
    const start = cpuUs();
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next++ < exchanges) await one();
      }),
    );
    return (cpuUs() - start) / exchanges;
  } finally {
    await pool.close();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

function probeCommits(commits: number): number {
  const dir = mkdtempSync(join(tmpdir(), 'lockstep-probe-'));
  const db = new DatabaseSync(join(dir, 'probe.db'));
  try {
    db.exec('PRAGMA journal_mode = WAL');
    db.exec('PRAGMA synchronous = NORMAL');
    db.exec('create table t (id text primary key, k text not null, v text not null)');
    db.exec('create index t_k on t (k)');
    const insert = db.prepare('insert into t (id, k, v) values (?, ?, ?)');
    const batch = (n: number) => {
      db.exec('begin immediate');
      for (let i = 0; i < 10; i++) insert.run(`${n}-${i}-${Math.random()}`, String(Math.random()), 'x'.repeat(200));
      db.exec('commit');
    };
    for (let n = 0; n < 100; n++) batch(n);
    const start = cpuUs();
    for (let n = 0; n < commits; n++) batch(n);
    return (cpuUs() - start) / commits;
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measure(): Promise<MachineProbe> {
  return { httpUs: await probeHttp(4000), commitUs: probeCommits(1000) };
}

/**
 * About a second of work, in a fresh Node process each time: in a process that has run it before
 * (or has run a benchmark), the JIT has warmed up and the same work reads up to 2.5x cheaper.
 */
export async function probeMachine(): Promise<MachineProbe> {
  const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--json'], { encoding: 'utf8' });
  return JSON.parse(out) as MachineProbe;
}

/** "41 → 44 µs per HTTP exchange, 120 → 131 µs per commit" */
export function describeProbes(before: MachineProbe, after: MachineProbe): string {
  const f = (n: number) => n.toFixed(0);
  return `machine probe before → after the run: ${f(before.httpUs)} → ${f(after.httpUs)} µs CPU per loopback HTTP exchange, ${f(before.commitUs)} → ${f(after.commitUs)} µs per SQLite commit (bench/machine-probe.ts)`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const p = await measure();
  if (process.argv.includes('--json')) console.log(JSON.stringify(p));
  else console.log(`${p.httpUs.toFixed(1)} µs CPU per loopback HTTP exchange, ${p.commitUs.toFixed(1)} µs per SQLite commit`);
}
