import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { NODE_ENV_VARS, NODE_FLAGS } from '../src/node-flags.ts';

const BIN = new URL('../bin/lockstep.js', import.meta.url).pathname;

/**
 * Starts `lockstep <args>` as it ships: bin/lockstep.js with its heap flags and environment.
 * BENCH_CPU_PROF=dir adds CPU profiles, BENCH_NODE_FLAGS more Node flags (diagnostics only;
 * recorded figures come from runs without). lockstep's stderr comes here; its stdout (the log)
 * only with `logs`.
 */
export function launchLockstep(args: readonly string[], opts: { logs?: boolean } = {}): ChildProcess {
  const flags = [...NODE_FLAGS];
  if (process.env.BENCH_CPU_PROF) flags.push('--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF);
  if (process.env.BENCH_NODE_FLAGS) flags.push(...process.env.BENCH_NODE_FLAGS.split(' ').filter(Boolean));
  return spawn(process.execPath, [...flags, BIN, ...args], { stdio: ['ignore', opts.logs ? 'inherit' : 'ignore', 'inherit'], env: { ...process.env, ...NODE_ENV_VARS } });
}

/**
 * However this process ends (an error, Ctrl-C, its output piped into `head`), `children` go too
 * (read at exit: a list filled later counts): a daemon left running would skew every later
 * measurement on the machine.
 */
export function killOnExit(children: readonly ChildProcess[]): void {
  process.on('exit', () => children.forEach((c) => c.exitCode === null && c.kill('SIGKILL')));
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => process.exit(130));
  process.stdout.on('error', () => process.exit(0));
}

/** CPU seconds (user + system, all threads) the processes have used so far, from /proc. */
export function cpuSecondsOf(children: readonly ChildProcess[]): number {
  return children.reduce((sum, c) => {
    const f = readFileSync(`/proc/${c.pid}/stat`, 'utf8').split(' ');
    return sum + (Number(f[13]) + Number(f[14])) / 100;
  }, 0);
}

/** CPU seconds Redis has used so far, from its own INFO: it shares the machine's cores. */
export async function redisCpuSeconds(redis: Redis): Promise<number> {
  const text = await redis.info('cpu');
  return ['used_cpu_sys', 'used_cpu_user'].reduce((sum, k) => sum + Number(new RegExp(`${k}:([\\d.]+)`).exec(text)?.[1] ?? NaN), 0);
}

/** Peak RSS (VmHWM) of the processes, summed, in MB. */
export function peakRssMbOf(children: readonly ChildProcess[]): number {
  return children.reduce((sum, c) => sum + Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${c.pid}/status`, 'utf8'))?.[1] ?? 0) / 1024, 0);
}
