// Entry of the lock-system thread (thread.ts). Plain JavaScript, and .mjs so that it loads the
// same whatever module type the process was started with: the compile cache must be on before
// the TypeScript host loads (see bin/lockstep.js), and a thread has its own module loader.
import module from 'node:module';
import { workerData } from 'node:worker_threads';

if (workerData.compileCacheDir) module.enableCompileCache?.(workerData.compileCacheDir);
const host = await import('./host.ts');
host.runHost();
