import { Worker } from 'node:worker_threads';
import { threadExecArgv } from '../node-flags.ts';

/**
 * How often the background thread folds the WAL into the database file. About as often as the
 * writer's own 10,000-page threshold fired under benchmark load: checkpointing more often copies
 * the same hot pages more often (at 250 ms the process spent more CPU per event, not less).
 */
export const CHECKPOINT_INTERVAL_MS = 1000;

/**
 * The writer's own auto-checkpoint threshold (pages) while the background thread runs: a safety
 * net that only fires if the thread falls behind or has stopped.
 */
export const FALLBACK_AUTOCHECKPOINT_PAGES = 40_000;

// Plain CommonJS, not a TypeScript module: a thread that loaded a .ts file would load Node's
// type stripper with it (~15 MB of RSS, see bin/lockstep.js), for eight lines of code.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { DatabaseSync } = require('node:sqlite');
const db = new DatabaseSync(workerData.path);
// For the setup only (another connection may be recovering the WAL or changing the schema): a
// PASSIVE checkpoint never waits, and one that finds the database busy is simply skipped.
db.exec('PRAGMA busy_timeout = 5000');
db.exec('PRAGMA cache_size = -256');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
const timer = setInterval(() => {
  try { checkpoint.get(); } catch (err) { if (!/busy|locked/i.test(String(err && err.message))) throw err; }
}, workerData.intervalMs);
// Between two checkpoints, never during one.
parentPort.once('message', () => { clearInterval(timer); db.close(); parentPort.close(); });
`;

/**
 * Runs SQLite's WAL checkpoints on a thread of their own.
 *
 * A checkpoint copies every page the WAL holds into the database file and syncs both files. Left
 * to SQLite, it runs inside whichever commit crosses the auto-checkpoint threshold, on the event
 * loop: under load ~80 ms every second or two on a VM disk, half of all the time the store spent
 * committing, and each one stalls every request and job for its duration. A PASSIVE checkpoint
 * on another connection does the same work beside the writer, which keeps appending to the WAL
 * meanwhile (WAL mode allows one checkpointer beside one writer).
 *
 * `onError` hears of a thread that failed; the writer's fallback threshold then takes over.
 * `stop` ends the thread between two checkpoints and resolves once its connection is closed.
 */
export function startCheckpointer(path: string, onError: (err: Error) => void): { stop: () => Promise<void> } {
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    execArgv: threadExecArgv(),
    workerData: { path, intervalMs: CHECKPOINT_INTERVAL_MS },
    // It holds one statement and no data: a small heap keeps its share of RSS small.
    resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 1 },
  });
  worker.on('error', onError);
  // It must not keep a process alive that has nothing else to do (CLI commands, tests).
  worker.unref();
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    stop: async () => {
      // Held by its exit from here on: an unreferenced thread's exit would not keep a process
      // whose only remaining work is this wait alive, and the process would end mid-close.
      worker.ref();
      worker.postMessage('stop');
      await exited;
    },
  };
}
