import module from 'node:module';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = new URL('../', import.meta.url).pathname;
/** Everything lockstep may load at run time: its own sources and the adapters. */
const TREES = ['src', 'adapters'];

export interface PrecompileResult {
  /** The compile cache directory, or undefined when the cache is off (see `reason`). */
  directory: string | undefined;
  reason?: string;
  modules: number;
  /** True when every module came from the cache already (nothing had to be stripped of types). */
  allCached: boolean;
}

/**
 * Loads every lockstep module once with Node's compile cache on (bin/lockstep.js turns it on),
 * so that the cache holds each of them stripped of types and compiled; later starts load them
 * from there without Node's TypeScript stripper (see bin/lockstep.js for why that matters).
 * Modules are imported, not run: none of them does anything when imported but src/cli.ts,
 * which is the running command itself and already loaded.
 */
export async function precompile(): Promise<PrecompileResult> {
  const directory = module.getCompileCacheDir?.();
  if (!directory) return { directory: undefined, reason: whyOff(), modules: 0, allCached: false };
  const files = TREES.flatMap((tree) =>
    readdirSync(join(ROOT, tree), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
      .map((f) => join(ROOT, tree, f)),
  ).sort();
  for (const file of files) await import(pathToFileURL(file).href);
  module.flushCompileCache?.();
  return { directory, modules: files.length, allCached: !typeScriptStripperLoaded() };
}

type Attempt = { status: number; message?: string } | undefined;
/** What bin/lockstep.js got when it tried to turn the cache on (undefined: not started through it). */
const attempt = (): Attempt => (globalThis as Record<symbol, Attempt>)[Symbol.for('lockstep.compileCache')];

/** Why the cache could not be turned on, when that was tried and failed (not when turned off on purpose). */
export function compileCacheFailure(): string | undefined {
  const tried = attempt();
  if (!tried || tried.status !== module.constants.compileCacheStatus.FAILED) return undefined;
  return tried.message ?? 'unknown reason';
}

/** Why the compile cache is off. */
function whyOff(): string {
  const tried = attempt();
  if (!tried) return 'start lockstep through its bin (bin/lockstep.js), which turns the cache on';
  if (process.env.NODE_DISABLE_COMPILE_CACHE || tried.status === module.constants.compileCacheStatus.DISABLED) return 'NODE_DISABLE_COMPILE_CACHE is set';
  return tried.message ?? `status ${tried.status}`;
}

/** Whether this process has had to strip types from a module (Node loads the stripper lazily). */
export function typeScriptStripperLoaded(): boolean {
  return (process as unknown as { moduleLoadList: string[] }).moduleLoadList.some((m) => m.includes('amaro'));
}
