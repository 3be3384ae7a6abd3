/**
 * The lock-system thread's side (see thread.ts): builds the adapters from their config and runs
 * each call it is sent; their log lines go back to the daemon's logger.
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import type { LockSystemConfig } from '../config/schema.ts';
import { type AdapterOptions, createLockSystem } from '../lock-systems.ts';
import type { Logger } from '../log.ts';
import type { LockSystem } from '../ports/lock-system.ts';
import { type CallMessage, errorToWire, type LogMessage } from './messages.ts';

export interface HostData {
  configs: LockSystemConfig[];
  /** The daemon logger's level as a number (pino: trace 10, debug 20 … fatal 60; silent: Infinity). */
  levelValue: number;
  adapterOptions: AdapterOptions;
}

const LEVELS: Record<LogMessage['log'], number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };
type Level = LogMessage['log'];

/**
 * What adapters use of a pino logger (child and the level methods): lines at or above the
 * daemon's level are posted to it, so redaction, format and destination stay the daemon's.
 */
function threadLogger(post: (m: LogMessage) => void, levelValue: number, bindings: Record<string, unknown> = {}): Logger {
  const at =
    (level: Level) =>
    (objOrMsg: unknown, msg?: string): void => {
      if (LEVELS[level] < levelValue) return;
      if (typeof objOrMsg === 'string') post({ log: level, bindings, obj: {}, msg: objOrMsg });
      else post({ log: level, bindings, obj: objOrMsg ?? {}, msg });
    };
  const logger = {
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    fatal: at('fatal'),
    child: (more: Record<string, unknown>) => threadLogger(post, levelValue, { ...bindings, ...more }),
  };
  return logger as unknown as Logger;
}

/** Errors as pino would show them; everything else as JSON has it. */
function plain(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (v instanceof Error ? { type: v.name, message: v.message, stack: v.stack } : v)) ?? 'null');
}

/**
 * Posts a log line. A logged object that cannot cross to the other thread (one holding a
 * function or a socket) goes as JSON; logging never throws into the adapter that logs.
 */
export function postLog(port: Pick<MessagePort, 'postMessage'>, m: LogMessage): void {
  try {
    port.postMessage(m);
  } catch {
    try {
      port.postMessage({ ...m, bindings: plain(m.bindings), obj: plain(m.obj) });
    } catch (err) {
      port.postMessage({ log: m.log, bindings: {}, obj: { logError: (err as Error).message }, msg: m.msg });
    }
  }
}

/** Called by the thread's entry (boot.mjs). */
export function runHost(): void {
  const port = parentPort;
  if (!port) throw new Error('the lock-system host runs on a worker thread (see thread.ts)');
  const data = workerData as HostData;
  const log = threadLogger((m) => postLog(port, m), data.levelValue);
  const systems = new Map<string, LockSystem>(data.configs.map((c) => [c.id, createLockSystem(c, log, data.adapterOptions)]));
  const run = async (m: CallMessage): Promise<void> => {
    try {
      const system = systems.get(m.system);
      if (!system) throw new Error(`lock system ${m.system} is not on this thread`);
      const fn = system[m.method] as (...args: unknown[]) => Promise<unknown>;
      port.postMessage({ call: m.call, value: await fn.apply(system, m.args) });
    } catch (err) {
      port.postMessage({ call: m.call, error: errorToWire(err) });
    }
  };
  port.on('message', (m: CallMessage) => void run(m));
}
