import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import nock from 'nock';
import { pino } from 'pino';
import type { HookRequest, SnapshotRecord } from '../../src/ports/identity-source.ts';

/** Shared test helpers for the IdP adapters: fixtures, hook requests, a recording clock/sleep. */

export const silentLog = pino({ level: 'silent' });

const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));

/** A fixture as text (payloads are kept exactly as the vendors document them). */
export function fixtureText(path: string): string {
  return readFileSync(`${FIXTURES}${path}`, 'utf8');
}

export function fixture<T = any>(path: string): T {
  return JSON.parse(fixtureText(path)) as T;
}

export function hookReq(opts: { method?: string; headers?: Record<string, string>; query?: Record<string, string>; body?: string | object }): HookRequest {
  const body = opts.body === undefined ? '' : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
  return { method: opts.method ?? 'POST', headers: opts.headers ?? {}, query: opts.query ?? {}, rawBody: Buffer.from(body, 'utf8') };
}

/** A clock fixed at `start` that `sleep` advances: waits are recorded, never really slept. */
export function fakeTime(start = Date.parse('2025-03-10T12:00:00Z')) {
  let now = start;
  const sleeps: number[] = [];
  return {
    now: () => now,
    sleep: async (ms: number) => {
      sleeps.push(ms);
      now += ms;
    },
    sleeps,
    advance(ms: number) {
      now += ms;
    },
  };
}

export async function collect(records: AsyncIterable<SnapshotRecord>): Promise<SnapshotRecord[]> {
  const out: SnapshotRecord[] = [];
  for await (const r of records) out.push(r);
  return out;
}

/** Isolates nock per test: no real network, every interceptor consumed. */
export function useNock() {
  nock.disableNetConnect();
  return {
    reset() {
      nock.cleanAll();
    },
    /** Fails the test if a declared interceptor was not used. */
    assertDone() {
      const pending = nock.pendingMocks();
      nock.cleanAll();
      if (pending.length) throw new Error(`unused HTTP mocks: ${pending.join(', ')}`);
    },
  };
}
