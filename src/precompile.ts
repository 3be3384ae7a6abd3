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
  if (!directory) {
    const reason = process.env.NODE_DISABLE_COMPILE_CACHE ? 'NODE_DISABLE_COMPILE_CACHE is set' : 'start lockstep through its bin (bin/lockstep.js), which turns the cache on';
    return { directory: undefined, reason, modules: 0, allCached: false };
  }
  const files = TREES.flatMap((tree) =>
    readdirSync(join(ROOT, tree), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
      .map((f) => join(ROOT, tree, f)),
  ).sort();
  for (const file of files) await import(pathToFileURL(file).href);
  module.flushCompileCache?.();
  return { directory, modules: files.length, allCached: !typeScriptStripperLoaded() };
}

/** Whether this process has had to strip types from a module (Node loads the stripper lazily). */
export function typeScriptStripperLoaded(): boolean {
  return (process as unknown as { moduleLoadList: string[] }).moduleLoadList.some((m) => m.includes('amaro'));
}
