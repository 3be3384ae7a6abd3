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

/** WAL frames in use past which writes pause for one rewind (64 MiB of 4 KiB pages). */
export const REWIND_AT_FRAMES = 16_384;

/**
 * Longest a rewind waits for another connection (another process's writer, a reader still on
 * the WAL) before it gives up, for writes are held meanwhile. One that gave up is not asked for
 * again for REWIND_BACKOFF_INTERVALS checkpoint intervals.
 */
export const REWIND_WAIT_MS = 50;
const REWIND_BACKOFF_INTERVALS = 30;

/**
 * Longest the store's writes are held for one rewind, should the thread not answer (a stalled
 * disk): the writer then waits in SQLite's busy handler instead, as it did before rewinds.
 */
export const REWIND_HOLD_MAX_MS = 2000;

// Plain CommonJS, not a TypeScript module: a thread that loaded a .ts file would load Node's
// type stripper with it (~15 MB of RSS, see bin/lockstep.js), for a few lines of code.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { DatabaseSync } = require('node:sqlite');
const db = new DatabaseSync(workerData.path);
// For the setup only (another connection may be recovering the WAL or changing the schema): a
// PASSIVE checkpoint never waits, and one that finds the database busy is simply skipped.
db.exec('PRAGMA busy_timeout = 5000');
db.exec('PRAGMA cache_size = -256');
const passive = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
const restart = db.prepare('PRAGMA wal_checkpoint(RESTART)');
const run = (stmt) => {
  try { return stmt.get(); } catch (err) { if (!/busy|locked/i.test(String(err && err.message))) throw err; return undefined; }
};
let due = false;
let notBefore = 0;
const timer = setInterval(() => {
  const r = run(passive);
  if (due || !r || r.log < workerData.rewindAtFrames || Date.now() < notBefore) return;
  // Catch up first: each pass copies only what the writer appended during the one before, so
  // the passes shrink, and the rewind, for which writes pause, has only the last one's left.
  let last = r;
  for (let pass = 0; pass < 4; pass++) {
    const next = run(passive);
    if (!next) break;
    const appended = next.log - last.log;
    last = next;
    if (appended < 256) break;
  }
  due = true;
  parentPort.postMessage({ due: last.log });
}, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m === 'rewind') {
    db.exec('PRAGMA busy_timeout = ' + workerData.waitMs);
    const r = run(restart);
    db.exec('PRAGMA busy_timeout = 5000');
    due = false;
    const complete = r !== undefined && r.busy === 0 && r.log === r.checkpointed;
    if (!complete) notBefore = Date.now() + workerData.backoffMs;
    parentPort.postMessage({ rewound: complete });
    return;
  }
  if (m === 'skip') {
    // No way to hold the writes (yet), or a rewind still under way: ask again later.
    due = false;
    notBefore = Date.now() + workerData.backoffMs;
    return;
  }
  // 'stop': between two checkpoints, never during one.
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

/** Holds the store's writes while `during` runs (the store's writer connection, see db.ts). */
export type WriteHold = (during: () => Promise<void>) => Promise<void>;

/** One rewind: how long writes were held, the WAL frames in use, whether the next write starts the WAL over. */
export interface WalRewind {
  heldMs: number;
  frames: number;
  complete: boolean;
}

export interface CheckpointerOptions {
  onError: (err: Error) => void;
  onRewound?: ((r: WalRewind) => void) | undefined;
  /** Tests shorten these; the defaults are the constants above. */
  intervalMs?: number;
  rewindAtFrames?: number;
}

export interface Checkpointer {
  /** Ends the thread between two checkpoints; resolves once its connection is closed. */
  stop(): Promise<void>;
  /** How to hold the store's writes for a rewind. Until it is given, the WAL is never rewound. */
  holdWritesWith(hold: WriteHold): void;
}

/**
 * Runs SQLite's WAL checkpoints on a thread of their own, and rewinds the WAL when it has grown.
 *
 * A checkpoint copies every page the WAL holds into the database file and syncs both files. Left
 * to SQLite, it runs inside whichever commit crosses the auto-checkpoint threshold, on the event
 * loop: under load ~80 ms every second or two on a VM disk, half of all the time the store spent
 * committing, and each one stalls every request and job for its duration. A PASSIVE checkpoint
 * on another connection does the same work beside the writer, which keeps appending to the WAL
 * meanwhile (WAL mode allows one checkpointer beside one writer).
 *
 * Rewinding: SQLite writes the WAL from its start again only when a write transaction begins
 * with every frame already copied, and under sustained writes that moment never comes, since
 * the writer appends while each checkpoint copies. The WAL file then grows for as long as the
 * load lasts (the pipeline benchmark's reached 157 MB for a 97 MB database, ~20-40 MB per second
 * of full load), and a burst of an hour would fill a disk. So once the WAL holds more than
 * REWIND_AT_FRAMES, the thread catches up with further PASSIVE passes and asks for a rewind: the
 * store's writes are held (asynchronously; the event loop and reads go on) while a RESTART
 * checkpoint copies the few frames left, and the next write starts the WAL over. The file keeps
 * its size and is overwritten from the start; it is not truncated, because freeing ~100 MB of
 * blocks took 70-140 ms (the held writes with it) on a VM disk mounted with `discard`, where
 * the restart alone held them 3-17 ms (pipeline benchmark).
 *
 * `onError` hears of a thread that failed; the writer's fallback threshold then takes over.
 */
export function startCheckpointer(path: string, opts: CheckpointerOptions): Checkpointer {
  const intervalMs = opts.intervalMs ?? CHECKPOINT_INTERVAL_MS;
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    execArgv: threadExecArgv(),
    workerData: {
      path,
      intervalMs,
      rewindAtFrames: opts.rewindAtFrames ?? REWIND_AT_FRAMES,
      waitMs: REWIND_WAIT_MS,
      backoffMs: REWIND_BACKOFF_INTERVALS * intervalMs,
    },
    // It holds two statements and no data: a small heap keeps its share of RSS small.
    resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 1 },
  });
  worker.on('error', opts.onError);
  // It must not keep a process alive that has nothing else to do (CLI commands, tests).
  worker.unref();
  /** Stopping or gone: no rewind starts (the store's connection may close before a hold takes it). */
  let ended = false;
  const exited = new Promise<void>((resolve) =>
    worker.once('exit', () => {
      ended = true;
      answer?.(false);
      resolve();
    }),
  );
  let hold: WriteHold | undefined;
  let rewinding = false;
  /** Settles the rewind under way with the thread's answer: whether it was complete. */
  let answer: ((complete: boolean) => void) | undefined;

  const rewind = (frames: number) => {
    if (ended) return;
    if (!hold || rewinding) return worker.postMessage('skip');
    rewinding = true;
    let outcome: { heldMs: number; complete: boolean } | undefined;
    void hold(async () => {
      const t0 = performance.now();
      let timer: NodeJS.Timeout | undefined;
      const complete = await new Promise<boolean>((resolve) => {
        answer = resolve;
        timer = setTimeout(() => resolve(false), REWIND_HOLD_MAX_MS);
        worker.postMessage('rewind');
      });
      clearTimeout(timer);
      answer = undefined;
      outcome = { heldMs: performance.now() - t0, complete };
    })
      .then(
        () => outcome && opts.onRewound?.({ frames, ...outcome }),
        (err: Error) => opts.onError(err),
      )
      .finally(() => {
        rewinding = false;
      });
  };

  worker.on('message', (m: { due?: number; rewound?: boolean }) => {
    if (m.due !== undefined) rewind(m.due);
    else if (m.rewound !== undefined) answer?.(m.rewound);
  });

  return {
    holdWritesWith: (h) => {
      hold = h;
    },
    stop: async () => {
      ended = true;
      // Held by its exit from here on: an unreferenced thread's exit would not keep a process
      // whose only remaining work is this wait alive, and the process would end mid-close.
      worker.ref();
      worker.postMessage('stop');
      await exited;
    },
  };
}
