import { type ChildProcess, spawn } from 'node:child_process';
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
