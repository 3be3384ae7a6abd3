/**
 * The lock-system thread (src/lock-thread/): what the conformance suite does not cover — log
 * lines crossing to the daemon's logger, a thread that dies, stopping, and that an idle thread
 * never keeps a process alive. The adapter is the real iLOQ one against its simulator over HTTP.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { startIloqSimulator, type IloqSimulator } from '../../adapters/locks/iloq/simulator.ts';
import { REDACT_PATHS, type Logger } from '../../src/log.ts';
import { NODE_FLAGS } from '../../src/node-flags.ts';
import { postLog } from '../../src/lock-thread/host.ts';
import { LockSystemThread } from '../../src/lock-thread/thread.ts';
import { LockSystemError } from '../../src/ports/lock-system.ts';
import { configFor } from '../iloq/helpers.ts';

function capture(level: string): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, sink) as Logger, lines };
}

async function until(check: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('lock-system thread', () => {
  let sim: IloqSimulator;
  let thread: LockSystemThread | undefined;
  beforeEach(async () => {
    sim = await startIloqSimulator({ seed: 'demo' });
  });
  afterEach(async () => {
    await thread?.stop();
    thread = undefined;
    await sim.close();
  });

  it("delivers the adapters' log lines to the daemon's logger with their bindings, above its level only", async () => {
    const info = capture('info');
    thread = new LockSystemThread([configFor(sim)], info.log);
    await thread.lockSystems().get('iloq-test')!.start();
    await until(() => info.lines.some((l) => l.msg === 'iloq session established'));
    expect(info.lines.find((l) => l.msg === 'iloq session established')).toMatchObject({ level: 30, lockSystem: 'iloq-test' });
    await thread.stop();

    const warn = capture('warn');
    thread = new LockSystemThread([configFor(sim)], warn.log);
    const lock = thread.lockSystems().get('iloq-test')!;
    await lock.start();
    await lock.ping();
    expect(warn.lines).toEqual([]);
  });

  it('fails the calls a dead thread held as retryable, refuses calls for respawnMs after its death, then starts a new one', async () => {
    thread = new LockSystemThread([configFor(sim)], pino({ level: 'silent' }), { respawnMs: 1_000 });
    const lock = thread.lockSystems().get('iloq-test')!;
    await lock.start();
    // Held by the simulator for longer than the test takes (the adapter's own timeout is 2 s).
    sim.setFaults({ latencyMs: 1_500 });
    const before = sim.requestsReceived;
    const inFlight = lock.ping().then(
      () => undefined,
      (e: unknown) => e,
    );
    await until(() => sim.requestsReceived > before);
    // The thread dies with the call unanswered (as after an out-of-memory error in it).
    await (thread as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    const err = await inFlight;
    expect(err).toBeInstanceOf(LockSystemError);
    expect(err).toMatchObject({ kind: 'retryable', message: expect.stringContaining('exited') });

    // Too soon after its death: refused at once, retryable, without a new thread.
    await expect(lock.ping()).rejects.toMatchObject({ kind: 'retryable', message: expect.stringContaining('restarting') });

    sim.clearFaults();
    await new Promise((r) => setTimeout(r, 1_100));
    // A new thread, a new session: the adapter logs in again on its own.
    const logins = sim.countRequests('POST', 'CreateSession');
    expect(await lock.catalogue()).toEqual(expect.arrayContaining(['Main entrance']));
    expect(sim.countRequests('POST', 'CreateSession')).toBe(logins + 1);
  });

  it('refuses calls once stopped', async () => {
    thread = new LockSystemThread([configFor(sim)], pino({ level: 'silent' }));
    const lock = thread.lockSystems().get('iloq-test')!;
    await lock.ping();
    await thread.stop();
    await expect(lock.ping()).rejects.toMatchObject({ kind: 'retryable', message: expect.stringContaining('stopped') });
  });

  describe('in a process of its own', () => {
    let dir: string;
    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), 'lockstep-thread-'));
    });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    // Both of lockstep's threads (this one and the SQLite checkpointer), then nothing left to do:
    // the process must exit by itself, as a CLI command that used a lock system does.
    const script = (db: string) => `
      import { createLogger } from ${JSON.stringify(new URL('../../src/log.ts', import.meta.url).href)};
      import { LockSystemThread } from ${JSON.stringify(new URL('../../src/lock-thread/thread.ts', import.meta.url).href)};
      import { openSqlite } from ${JSON.stringify(new URL('../../src/store/sqlite-driver.ts', import.meta.url).href)};
      const store = openSqlite(${JSON.stringify(db)}, { checkpointer: { onError: (e) => console.error('checkpointer', e.message) } });
      const thread = new LockSystemThread([JSON.parse(process.env.LS_CONFIG)], createLogger('warn'));
      await thread.lockSystems().get('iloq-test').ping();
      await store.checkpointer.stop();
      store.kysely.close();
      console.log('pinged');
    `;
    // Not spawnSync: the simulator answering the child runs on this event loop.
    const run = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = execFile(process.execPath, args, { env: { ...process.env, LS_CONFIG: JSON.stringify(configFor(sim)) }, timeout: 15_000 }, (_err, stdout, stderr) =>
          resolve({ code: child.exitCode, stdout, stderr }),
        );
      });

    it('with the Node options lockstep ships with, and exits once idle', async () => {
      const file = join(dir, 'script.mjs');
      writeFileSync(file, script(join(dir, 'a.db')));
      expect(await run([...NODE_FLAGS, file])).toEqual({ code: 0, stdout: 'pinged\n', stderr: '' });
    });

    it('inside node --input-type=module --eval', async () => {
      expect(await run([...NODE_FLAGS, '--input-type=module', '-e', script(join(dir, 'b.db'))])).toEqual({ code: 0, stdout: 'pinged\n', stderr: '' });
    });
  });

  it('a logged object that cannot cross threads arrives as JSON, and logging does not throw', () => {
    const { port1, port2 } = new MessageChannel();
    const err = Object.assign(new Error('socket hang up'), { socket: { destroy: () => {} } });
    postLog(port1, { log: 'warn', bindings: { lockSystem: 'x' }, obj: { err, retry: () => {} }, msg: 'odd' });
    expect(receiveMessageOnPort(port2)?.message).toEqual({
      log: 'warn',
      bindings: { lockSystem: 'x' },
      obj: { err: { type: 'Error', message: 'socket hang up', stack: expect.any(String) } },
      msg: 'odd',
    });
    port1.close();
  });
});
