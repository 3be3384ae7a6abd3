import module from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { compileCacheFailure, precompile } from '../../src/precompile.ts';

const KEY = Symbol.for('lockstep.compileCache');
const g = globalThis as Record<symbol, unknown>;
const { FAILED, DISABLED } = module.constants.compileCacheStatus;

// The bin (bin/lockstep.js) leaves the outcome of turning the cache on here; this process has no
// compile cache, so precompile reports why instead of compiling.
describe('compile cache status', () => {
  afterEach(() => delete g[KEY]);

  it('a cache directory that could not be made is a failure to report, with Node’s reason', async () => {
    g[KEY] = { status: FAILED, message: 'Cannot create cache directory: permission denied' };
    expect(compileCacheFailure()).toBe('Cannot create cache directory: permission denied');
    expect(await precompile()).toMatchObject({ directory: undefined, modules: 0, reason: 'Cannot create cache directory: permission denied' });
  });

  it('a cache turned off on purpose, or a start that bypassed the bin, is not a failure', async () => {
    g[KEY] = { status: DISABLED };
    expect(compileCacheFailure()).toBeUndefined();
    expect((await precompile()).reason).toBe('NODE_DISABLE_COMPILE_CACHE is set');
    delete g[KEY];
    expect(compileCacheFailure()).toBeUndefined();
    expect((await precompile()).reason).toMatch(/start lockstep through its bin/);
  });
});
