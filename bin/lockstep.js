#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-old-space-size=512 --max-semi-space-size=16
// The lockstep command. Plain JavaScript on purpose: it turns on Node's compile cache before the
// TypeScript sources load, so that they come from the cache already stripped of their types and
// Node never loads its TypeScript stripper (a WebAssembly module that would otherwise stay in
// memory for the life of the daemon: ~15 MB of RSS). `lockstep precompile` fills the cache; npm
// install and the container image run it. A stale or missing entry is simply compiled again.
import module from 'node:module';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`lockstep needs Node.js 22.18 or later (24 LTS recommended); this is ${process.version}.`);
  process.exit(1);
}
// NODE_COMPILE_CACHE, when set, has already chosen the directory (and NODE_DISABLE_COMPILE_CACHE
// turns the cache off): then this call changes nothing. The outcome is kept for
// `lockstep precompile`, which says why the cache is off when it is (src/precompile.ts).
globalThis[Symbol.for('lockstep.compileCache')] = module.enableCompileCache?.(new URL('../node_modules/.cache/lockstep/', import.meta.url).pathname) ?? {
  status: -1,
  message: `Node.js ${process.version} has no compile cache`,
};
await import('../src/cli.ts');
