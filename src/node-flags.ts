/**
 * The V8 heap settings lockstep runs with (`npm start`, the `lockstep` bin, the container image).
 *
 * Why: on a machine with plenty of RAM, V8's defaults let the young generation grow to ~100 MB and
 * the old generation to several hundred MB of garbage before collecting, so a full reconciliation
 * of 100,000 users peaked at ~700 MB RSS with a live heap under 100 MB. A smaller young
 * generation and an explicit old-space limit keep it under ~380 MB at the same speed (figures in
 * bench/sources-results.md). 512 MB of old space is five times the largest live heap measured;
 * a larger tenant raises it (docs/operations.md, "Memory"). The young generation went from 8 to
 * 16 MB semi-spaces on 2026-11-26: 5-8 % less CPU per event in every benchmark (fewer scavenges,
 * less promoted garbage) for ~10-20 MB more RSS.
 *
 * The same list is written out in package.json's scripts, bin/lockstep.js's shebang and the
 * Dockerfile's NODE_OPTIONS; test/unit/node-flags.test.ts keeps them equal. The benchmarks start
 * lockstep with these flags so that they measure what ships.
 */
export const NODE_FLAGS: readonly string[] = ['--max-old-space-size=512', '--max-semi-space-size=16'];

/**
 * Environment lockstep runs with, beside the flags (same places, same test).
 *
 * MALLOC_ARENA_MAX=2: glibc gives each thread that allocates (V8's GC and compiler helpers,
 * libuv's pool) its own malloc arena and rarely returns their free pages; two arenas measured
 * 15-20 MB less RSS under SCIM load at the same throughput (bench/scim-results.md).
 */
export const NODE_ENV_VARS: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/**
 * `execArgv` for lockstep's own threads: undefined (a thread inherits the process's options),
 * except under `--input-type` (lockstep inside `node --input-type=module --eval`), which a thread
 * would inherit too and which makes its entry (a file, or CommonJS source) fail to load; then none.
 * Not the process's list minus that flag: Node refuses V8 and per-process options (such as
 * NODE_FLAGS) given to a thread explicitly.
 */
export function threadExecArgv(): string[] | undefined {
  return process.execArgv.some((a) => a === '--input-type' || a.startsWith('--input-type=')) ? [] : undefined;
}
