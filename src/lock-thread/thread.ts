import module from 'node:module';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { LockSystemConfig } from '../config/schema.ts';
import type { AdapterOptions } from '../lock-systems.ts';
import type { Logger } from '../log.ts';
import { threadExecArgv } from '../node-flags.ts';
import { type AccessEvent, type ApplyRequest, type ApplyResult, type KeyProgrammingState, type KeyResult, type LockPerson, type LockSystem, LockSystemError, type ReportLostRequest } from '../ports/lock-system.ts';
import type { HostData } from './host.ts';
import { type CallMessage, errorFromWire, type LogMessage, type Method, type ReplyMessage } from './messages.ts';

/**
 * The directory bin/lockstep.js gave the compile cache: Node keeps entries in a subdirectory per
 * Node version, which getCompileCacheDir() names.
 */
function compileCacheBase(): string | undefined {
  const dir = module.getCompileCacheDir?.();
  return dir ? dirname(dir) : undefined;
}

/** A thread that died is replaced on the next call once this long has passed since it died. */
const RESPAWN_MS = 5_000;

export interface LockSystemThreadOptions {
  /** Least time from a thread's death to the start of the next (default 5 s): a thread that dies at once is not restarted in a loop. */
  respawnMs?: number;
  /** The adapters' test seams (see AdapterOptions). */
  adapterOptions?: AdapterOptions;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/**
 * Runs the lock-system adapters on a thread of their own.
 *
 * Why: applying one operation is about ten HTTP exchanges with the lock system (iLOQ), each
 * with its JSON, and under load that was a quarter of the event loop's time, beside SCIM
 * requests, the store and the queues. On their own thread the adapters use the machine's second
 * core and the event loop stays free for requests. The core sees the same LockSystem port: each
 * call is one message each way (arguments and results are plain data; a LockSystemError arrives
 * as a LockSystemError with its kind, status and Retry-After).
 *
 * If the thread dies, the calls it held fail as retryable (the apply queue retries them) and the
 * next call from 5 s after its death starts a new one; adapters log in again on their own.
 */
export class LockSystemThread {
  private readonly configs: LockSystemConfig[];
  private readonly log: Logger;
  private readonly opts: LockSystemThreadOptions;
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private stopped = false;
  private diedAt = 0;

  constructor(configs: LockSystemConfig[], log: Logger, opts: LockSystemThreadOptions = {}) {
    this.configs = configs;
    this.log = log;
    this.opts = opts;
  }

  /** One LockSystem per configured lock system, each forwarding its calls to the thread. */
  lockSystems(): Map<string, LockSystem> {
    return new Map(this.configs.map((c) => [c.id, new ThreadLockSystem(this, c)]));
  }

  call(system: string, method: Method, args: unknown[]): Promise<unknown> {
    if (this.stopped) return Promise.reject(new LockSystemError('retryable', `lock system ${system}: the lock-system thread has stopped`));
    const worker = this.worker ?? this.spawn();
    if (!worker) return Promise.reject(new LockSystemError('retryable', `lock system ${system}: the lock-system thread is restarting`));
    return new Promise((resolve, reject) => {
      const call = ++this.seq;
      // Referenced only while it owes an answer: an idle thread never keeps the process alive.
      if (this.pending.size === 0) worker.ref();
      this.pending.set(call, { resolve, reject });
      worker.postMessage({ call, system, method, args } satisfies CallMessage);
    });
  }

  /** Ends the thread (after the adapters' own close calls: those run on it). */
  async stop(): Promise<void> {
    this.stopped = true;
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }

  private spawn(): Worker | undefined {
    if (Date.now() - this.diedAt < (this.opts.respawnMs ?? RESPAWN_MS)) return undefined;
    const data: HostData & { compileCacheDir: string | undefined } = {
      configs: this.configs,
      levelValue: this.log.levelVal,
      adapterOptions: this.opts.adapterOptions ?? {},
      compileCacheDir: compileCacheBase(),
    };
    const worker = new Worker(new URL('./boot.mjs', import.meta.url), { workerData: data, execArgv: threadExecArgv(), stdout: false, stderr: false });
    worker.unref();
    worker.on('message', (m: ReplyMessage | LogMessage) => this.onMessage(m));
    worker.on('error', (err) => this.log.error({ err: err.message }, 'lock-system thread failed'));
    worker.on('exit', (code) => {
      if (this.worker === worker) this.worker = undefined;
      this.diedAt = Date.now();
      const error = new LockSystemError('retryable', `the lock-system thread exited (code ${code}) before answering`);
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
      if (!this.stopped) this.log.error({ code }, 'lock-system thread exited; the next call starts a new one');
    });
    this.worker = worker;
    return worker;
  }

  private onMessage(m: ReplyMessage | LogMessage): void {
    if ('log' in m) {
      const target = Object.keys(m.bindings).length ? this.log.child(m.bindings) : this.log;
      target[m.log](m.obj as object, m.msg);
      return;
    }
    const p = this.pending.get(m.call);
    if (!p) return;
    this.pending.delete(m.call);
    if (this.pending.size === 0) this.worker?.unref();
    if ('error' in m) p.reject(errorFromWire(m.error));
    else p.resolve(m.value);
  }
}

/** The LockSystem port, forwarded to the thread. */
class ThreadLockSystem implements LockSystem {
  readonly id: string;
  readonly kind: string;
  private readonly thread: LockSystemThread;

  constructor(thread: LockSystemThread, cfg: LockSystemConfig) {
    this.thread = thread;
    this.id = cfg.id;
    this.kind = cfg.kind;
  }

  private call<T>(method: Method, ...args: unknown[]): Promise<T> {
    return this.thread.call(this.id, method, args) as Promise<T>;
  }

  start(): Promise<void> {
    return this.call('start');
  }
  close(): Promise<void> {
    return this.call('close');
  }
  ping(): Promise<void> {
    return this.call('ping');
  }
  catalogue(): Promise<string[]> {
    return this.call('catalogue');
  }
  readPerson(externalId: string): Promise<LockPerson | null> {
    return this.call('readPerson', externalId);
  }
  apply(req: ApplyRequest): Promise<ApplyResult> {
    return this.call('apply', req);
  }
  programmingState(externalId: string): Promise<KeyProgrammingState[]> {
    return this.call('programmingState', externalId);
  }
  reportLost(req: ReportLostRequest): Promise<KeyResult> {
    return this.call('reportLost', req);
  }
  readEvents(cursor: string | undefined, limit: number): Promise<{ events: AccessEvent[]; cursor: string | undefined }> {
    return this.call('readEvents', cursor, limit);
  }
}
