/**
 * LockSystem conformance: the same cases run against every adapter, each paired with its
 * simulator over real HTTP (iloq.test.ts, cliq.test.ts). A rig gives the suite what only the
 * simulator knows (its request log, its faults, how to seed what an administrator would have
 * done by hand); the assertions themselves are written once, against the port.
 *
 * What the port promises (src/ports/lock-system.ts) and is checked here:
 * - grant/revoke change exactly the named access; a re-apply sends no second change request;
 * - an operation broken in its middle by a 503 is completed by the retry, with no change sent twice;
 * - 429 → rate_limited with retryAfterMs; expired credentials → re-login or an `auth` error;
 * - an unknown access name → permanent with `unchanged` and no write; a failure mid-grant without it;
 * - revoke/leave of an unknown person → `absent`; grant creates the person;
 * - access the API may not change is left alone (skipped with a reason where the adapter says so);
 * - leave empties managed access and asks for a person's work (collect_key) where needed;
 * - programmingState is not effective until the simulator programs the key, then effective;
 * - readEvents returns events oldest first and continues from its cursor;
 * - reportLost blocklists a key, is idempotent (unchanged, same job), is effective once the
 *   blocklist reaches the locks, and refuses a key the person does not hold.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LockSystemError, type ApplyRequest, type LockSystem } from '../../src/ports/lock-system.ts';
import type { OperationKind } from '../../src/domain/types.ts';

export interface ConformanceRig {
  lock: LockSystem;
  /** Two names from the managed catalogue. */
  access: readonly [string, string];
  /** Managed access names on a key as the simulator holds them (current, not yet programmed included). */
  simAccess(keyId: string): string[];
  /** Change requests the simulator accepted (2xx writes) since the last clearLog. */
  writes(): number;
  clearLog(): void;
  /** 429 with Retry-After for the next n API requests. */
  rateLimitNext(n: number, retryAfterSeconds: number): void;
  /** A grant of both `access` names fails with 503 after its first change was accepted. */
  failMidGrant(): void;
  clearFaults(): void;
  /** Invalidates the adapter's credentials (iLOQ: sessions; CLIQ: the bearer token). */
  expireAuth(): void;
  /** What the adapter does about it: log in again, or fail with `auth`. */
  authExpiry: 'transparent' | 'auth_error';
  /** Every ordered programming / pending job reaches its key. */
  completeProgramming(): void;
  /** A known person with one managed key carrying `names`, set in the lock system directly. */
  seedPersonWithAccess(externalId: string, names: string[]): string;
  /** A known person with one key the API may not change; `expectSkipped`: grant reports it skipped. */
  seedUnmanagedKey(externalId: string): { keyId: string; expectSkipped: boolean };
  /** The unmanaged key is as it was seeded (hand-given access intact, nothing written). */
  unmanagedIntact(keyId: string): boolean;
  /** A known person with access[0] on a key needing no manual task at leave and on one that does. */
  seedLeaver(externalId: string): { noTaskKeyId: string; taskKeyId: string };
  /** The key is on the lock system's blocklist. */
  blocklisted(keyId: string): boolean;
  /** The blocklist reaches every lock/cylinder concerned. */
  deliverBlocklist(): void;
  /** An access event of a key at a lock arrives at the lock system now. */
  injectEvent(keyId: string, lockId: string, result: 'granted' | 'denied'): void;
  close(): Promise<void>;
}

let seq = 0;
export function request(kind: OperationKind, externalId: string, access: readonly string[]): ApplyRequest {
  seq++;
  return {
    operationId: `conf-${seq}`,
    kind,
    access: [...access],
    person: { personId: `p-${externalId}`, externalId, givenName: 'Grace', familyName: 'Hopper', email: `${externalId}@example.test` },
  };
}

async function rejection(p: Promise<unknown>): Promise<LockSystemError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LockSystemError);
  return err as LockSystemError;
}

export function runLockSystemConformance(name: string, makeRig: () => Promise<ConformanceRig>): void {
  describe(`LockSystem conformance: ${name}`, () => {
    let r: ConformanceRig;
    beforeEach(async () => {
      r = await makeRig();
    });
    afterEach(async () => {
      await r.close();
    });

    it('lists its catalogue and answers ping', async () => {
      await r.lock.start();
      await r.lock.ping();
      const cat = await r.lock.catalogue();
      expect(cat).toEqual(expect.arrayContaining([...r.access]));
    });

    it('grant: creates an unknown person and puts the access on their keys', async () => {
      const [a] = r.access;
      expect(await r.lock.readPerson('c-grant')).toBeNull();
      const res = await r.lock.apply(request('grant', 'c-grant', [a]));
      expect(res.outcome).toBe('applied');
      expect(res.remotePersonId).toBeTruthy();
      expect(res.keys.length).toBeGreaterThan(0);
      for (const k of res.keys) {
        expect(k).toMatchObject({ change: 'changed', effective: false });
        expect(r.simAccess(k.keyId)).toEqual([a]);
      }
      const seen = await r.lock.readPerson('c-grant');
      expect(seen?.keys.map((k) => k.access)).toEqual(res.keys.map(() => [a]));
    });

    it('revoke: takes away only the named access', async () => {
      const [a, b] = r.access;
      const keyId = r.seedPersonWithAccess('c-revoke', [a, b]);
      const res = await r.lock.apply(request('revoke', 'c-revoke', [b]));
      expect(res.outcome).toBe('applied');
      expect(res.keys).toEqual([expect.objectContaining({ keyId, change: 'changed', effective: false })]);
      expect(r.simAccess(keyId)).toEqual([a]);
      expect((await r.lock.readPerson('c-revoke'))!.keys[0]!.access).toEqual([a]);
    });

    it('re-applying an accepted grant or revoke sends no second change request', async () => {
      const [a, b] = r.access;
      await r.lock.apply(request('grant', 'c-idem', [a, b]));
      r.clearLog();
      const again = await r.lock.apply(request('grant', 'c-idem', [a, b]));
      expect(again.keys.length).toBeGreaterThan(0);
      expect(again.keys.every((k) => k.change === 'unchanged')).toBe(true);
      expect(r.writes()).toBe(0);

      await r.lock.apply(request('revoke', 'c-idem', [b]));
      r.clearLog();
      const revokedAgain = await r.lock.apply(request('revoke', 'c-idem', [b]));
      expect(revokedAgain.keys.every((k) => k.change === 'unchanged')).toBe(true);
      expect(r.writes()).toBe(0);
      for (const k of again.keys) expect(r.simAccess(k.keyId)).toEqual([a]);
    });

    it('a 503 in the middle of an operation: the retry completes it without sending a change twice', async () => {
      const [a, b] = r.access;
      await r.lock.start();
      r.clearLog();
      await r.lock.apply(request('grant', 'c-base', [a, b]));
      const cleanRun = r.writes();
      expect(cleanRun).toBeGreaterThan(1);

      r.clearLog();
      r.failMidGrant();
      const broken = await rejection(r.lock.apply(request('grant', 'c-mid', [a, b])));
      expect(broken.kind).toBe('retryable');
      expect(r.writes()).toBeGreaterThan(0); // the first change was accepted before the failure
      expect(r.writes()).toBeLessThan(cleanRun);
      r.clearFaults();
      const retried = await r.lock.apply(request('grant', 'c-mid', [a, b]));
      expect(retried.outcome).toBe('applied');
      expect(r.writes()).toBe(cleanRun);
      for (const k of retried.keys) expect(r.simAccess(k.keyId)).toEqual([a, b].sort());

      r.clearLog();
      await r.lock.apply(request('grant', 'c-mid', [a, b]));
      expect(r.writes()).toBe(0);
    });

    it('429 surfaces as rate_limited with the Retry-After delay', async () => {
      const [a] = r.access;
      await r.lock.start();
      r.rateLimitNext(1, 7);
      const err = await rejection(r.lock.apply(request('grant', 'c-429', [a])));
      expect(err).toMatchObject({ kind: 'rate_limited', retryAfterMs: 7_000, status: 429 });
      const ok = await r.lock.apply(request('grant', 'c-429', [a]));
      expect(ok.outcome).toBe('applied');
    });

    it('an access name the lock system does not have: permanent, and says nothing was changed', async () => {
      const [a] = r.access;
      await r.lock.start();
      r.clearLog();
      const err = await rejection(r.lock.apply(request('grant', 'c-unknown', [a, 'No such door'])));
      expect(err).toMatchObject({ kind: 'permanent', unchanged: true, message: expect.stringContaining('No such door') });
      expect(r.writes()).toBe(0);
      expect(await r.lock.readPerson('c-unknown')).toBeNull();
      // A failure after a change was sent does not claim that.
      r.failMidGrant();
      const mid = await rejection(r.lock.apply(request('grant', 'c-unknown', r.access)));
      expect(mid.unchanged).toBe(false);
      r.clearFaults();
    });

    it('expired credentials: logs in again, or fails with kind auth', async () => {
      const [a] = r.access;
      await r.lock.apply(request('grant', 'c-auth-1', [a]));
      r.expireAuth();
      const attempt = r.lock.apply(request('grant', 'c-auth-2', [a]));
      if (r.authExpiry === 'transparent') {
        expect((await attempt).outcome).toBe('applied');
      } else {
        const err = await rejection(attempt);
        expect(err).toMatchObject({ kind: 'auth', status: 401 });
        expect(err.message).not.toMatch(/Bearer|token-value/);
      }
    });

    it('unknown person: revoke and leave are absent and create nobody', async () => {
      const [a] = r.access;
      expect(await r.lock.apply(request('revoke', 'c-ghost', [a]))).toEqual({ outcome: 'absent', keys: [] });
      expect(await r.lock.apply(request('leave', 'c-ghost', [a]))).toEqual({ outcome: 'absent', keys: [] });
      expect(await r.lock.apply(request('reinstate', 'c-ghost', [a]))).toEqual({ outcome: 'absent', keys: [] });
      expect(await r.lock.readPerson('c-ghost')).toBeNull();
      expect(await r.lock.programmingState('c-ghost')).toEqual([]);
    });

    it('a key whose access the API may not change is left alone', async () => {
      const [a] = r.access;
      const { keyId, expectSkipped } = r.seedUnmanagedKey('c-unmanaged');
      const granted = await r.lock.apply(request('grant', 'c-unmanaged', [a]));
      const res = granted.keys.find((k) => k.keyId === keyId);
      expect(res).toBeDefined();
      if (expectSkipped) {
        expect(res!.change).toBe('skipped');
        expect(res!.reason).toMatch(/\w+/);
      } else expect(res!.change).not.toBe('skipped');
      expect(r.unmanagedIntact(keyId)).toBe(true);
      await r.lock.apply(request('revoke', 'c-unmanaged', [a]));
      expect(r.unmanagedIntact(keyId)).toBe(true);
    });

    it('leave empties managed access, asks for a collect task where a person must act, and is idempotent', async () => {
      const [a] = r.access;
      const { noTaskKeyId, taskKeyId } = r.seedLeaver('c-leaver');
      const res = await r.lock.apply(request('leave', 'c-leaver', [a]));
      expect(res.outcome).toBe('applied');
      const byId = new Map(res.keys.map((k) => [k.keyId, k]));
      expect(byId.get(taskKeyId)?.task).toEqual({ kind: 'collect_key', description: expect.stringMatching(/.{20,}/) });
      expect(byId.get(noTaskKeyId)).toBeDefined();
      expect(byId.get(noTaskKeyId)!.task).toBeUndefined();
      expect(r.simAccess(noTaskKeyId)).toEqual([]);
      expect(r.simAccess(taskKeyId)).toEqual([]);
      const seen = await r.lock.readPerson('c-leaver');
      for (const k of seen?.keys ?? []) expect(k.access).toEqual([]);

      r.clearLog();
      const again = await r.lock.apply(request('leave', 'c-leaver', [a]));
      expect(again.outcome).toBe('applied');
      expect(r.writes()).toBe(0);
    });

    it('programmingState: not effective until the key is programmed, then effective', async () => {
      const [a] = r.access;
      const res = await r.lock.apply(request('grant', 'c-prog', [a]));
      const before = await r.lock.programmingState('c-prog');
      expect(before.map((s) => s.keyId).sort()).toEqual(res.keys.map((k) => k.keyId).sort());
      expect(before.every((s) => s.effective === false)).toBe(true);
      r.completeProgramming();
      const after = await r.lock.programmingState('c-prog');
      expect(after.length).toBe(before.length);
      expect(after.every((s) => s.effective === true)).toBe(true);
      // Once effective, a re-apply reports the key as already effective.
      const again = await r.lock.apply(request('grant', 'c-prog', [a]));
      expect(again.keys.every((k) => k.change === 'unchanged' && k.effective === true)).toBe(true);
    });

    it('readEvents: oldest first with the holder, continuing from the cursor', async () => {
      const [a] = r.access;
      const res = await r.lock.apply(request('grant', 'c-events', [a]));
      const keyId = res.keys[0]!.keyId;
      // Events "arrive" a few ms apart and before the read, as they would from keys.
      const arrive = async (lockId: string, result: 'granted' | 'denied') => {
        r.injectEvent(keyId, lockId, result);
        await new Promise((ok) => setTimeout(ok, 5));
      };
      await arrive('lock-1', 'granted');
      await arrive('lock-2', 'denied');

      const first = await r.lock.readEvents(undefined, 1);
      expect(first.events).toEqual([expect.objectContaining({ keyId, lockId: 'lock-1', result: 'granted', externalId: 'c-events' })]);
      expect(first.cursor).toBeDefined();
      const second = await r.lock.readEvents(first.cursor, 10);
      expect(second.events.map((e) => [e.lockId, e.result])).toEqual([['lock-2', 'denied']]);
      expect(Date.parse(second.events[0]!.at)).toBeGreaterThanOrEqual(Date.parse(first.events[0]!.at));

      const idle = await r.lock.readEvents(second.cursor, 10);
      expect(idle.events).toEqual([]);
      await new Promise((ok) => setTimeout(ok, 5));
      await arrive('lock-3', 'granted');
      const third = await r.lock.readEvents(idle.cursor, 10);
      expect(third.events.map((e) => e.lockId)).toEqual(['lock-3']);
      expect(new Set([first, second, third].flatMap((p) => p.events.map((e) => e.id))).size).toBe(3);
    });
    it('reportLost: blocklists a key, is idempotent, and is effective once the blocklist reaches the locks', async () => {
      const [a] = r.access;
      const { taskKeyId } = r.seedLeaver('c-lost');
      await r.lock.apply(request('leave', 'c-lost', [a]));
      const person = request('leave', 'c-lost', []).person;
      const lost = (n: number) => r.lock.reportLost({ operationId: `lost-${n}`, keyId: taskKeyId, person, reason: 'not returned by the deadline' });
      expect(r.blocklisted(taskKeyId)).toBe(false);

      const first = await lost(1);
      expect(first).toMatchObject({ keyId: taskKeyId, change: 'changed', effective: false, jobId: expect.any(String) });
      if (first.task) expect(first.task).toEqual({ kind: 'blocklist_key', description: expect.stringMatching(/.{20,}/) });
      expect(r.blocklisted(taskKeyId)).toBe(true);
      const waiting = (await r.lock.programmingState('c-lost')).find((k) => k.keyId === taskKeyId);
      expect(waiting?.effective).toBe(false);

      const again = await lost(2);
      expect(again).toMatchObject({ keyId: taskKeyId, change: 'unchanged', effective: false, jobId: first.jobId });
      expect(r.blocklisted(taskKeyId)).toBe(true);

      r.deliverBlocklist();
      const state = (await r.lock.programmingState('c-lost')).find((k) => k.keyId === taskKeyId);
      expect(state?.effective).toBe(true);
      const done = await lost(3);
      expect(done).toMatchObject({ change: 'unchanged', effective: true });
      expect(done.task).toBeUndefined();
    });

    it('reportLost refuses a key the person does not hold', async () => {
      const { taskKeyId } = r.seedLeaver('c-holder');
      r.seedPersonWithAccess('c-other', [r.access[0]]);
      const person = request('leave', 'c-other', []).person;
      const err = await rejection(r.lock.reportLost({ operationId: 'lost-x', keyId: taskKeyId, person, reason: 'wrong person' }));
      expect(err.kind).toBe('permanent');
      expect(r.blocklisted(taskKeyId)).toBe(false);
    });
  });
}
