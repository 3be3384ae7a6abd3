import { LockSystemError, type LockErrorKind, type LockSystem } from '../ports/lock-system.ts';

/** The LockSystem methods a thread runs (all of the port's; `id` and `kind` are known on both sides from config). */
export type Method = Exclude<keyof LockSystem, 'id' | 'kind'>;

export interface CallMessage {
  call: number;
  system: string;
  method: Method;
  args: unknown[];
}

export type ReplyMessage = { call: number; value: unknown } | { call: number; error: WireError };

/** A log line from an adapter on the thread: the daemon's logger writes it. */
export interface LogMessage {
  log: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  bindings: Record<string, unknown>;
  obj: unknown;
  msg: string | undefined;
}

export interface WireError {
  name: string;
  message: string;
  stack: string | undefined;
  /** Present for LockSystemError: what the queue does with it depends on these. */
  kind?: LockErrorKind;
  status?: number | undefined;
  retryAfterMs?: number | undefined;
  unchanged?: boolean;
}

export function errorToWire(err: unknown): WireError {
  if (err instanceof LockSystemError)
    return { name: err.name, message: err.message, stack: err.stack, kind: err.kind, status: err.status, retryAfterMs: err.retryAfterMs, unchanged: err.unchanged };
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack };
  return { name: 'Error', message: String(err), stack: undefined };
}

/** The error as the caller would have seen it on its own thread (a LockSystemError stays one). */
export function errorFromWire(w: WireError): Error {
  const err =
    w.kind !== undefined
      ? new LockSystemError(w.kind, w.message, {
          ...(w.status === undefined ? {} : { status: w.status }),
          ...(w.retryAfterMs === undefined ? {} : { retryAfterMs: w.retryAfterMs }),
          ...(w.unchanged ? { unchanged: true } : {}),
        })
      : Object.assign(new Error(w.message), { name: w.name });
  if (w.stack) err.stack = w.stack;
  return err;
}
