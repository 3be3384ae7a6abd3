/**
 * coalesceWrites against the real Redis: the commands of one turn leave in one socket write, in
 * order, with their own answers, before and after a reconnect.
 */
import type { Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { coalesceWrites } from '../../src/queue/coalesce-writes.ts';

const URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Counts the writes that reach the socket's handle (one system call each). */
function countSocketWrites(redis: Redis): { writes: number } {
  const socket = redis.stream as Socket & { _writeGeneric: (...a: unknown[]) => unknown };
  const counter = { writes: 0 };
  const original = socket._writeGeneric;
  socket._writeGeneric = function (...args: unknown[]) {
    counter.writes += 1;
    return original.apply(this, args);
  };
  return counter;
}

describe('coalesceWrites', () => {
  let redis: Redis | undefined;
  afterEach(async () => {
    await redis?.quit().catch(() => {});
    redis = undefined;
  });

  it('sends the commands of one turn in one socket write, in order, each with its answer', async () => {
    redis = coalesceWrites(new Redis(URL, { maxRetriesPerRequest: null }));
    await redis.ping();
    const key = `lockstep-test:coalesce:${process.pid}`;
    const counter = countSocketWrites(redis);
    const answers = await Promise.all([redis.set(key, '1'), redis.incr(key), redis.incr(key), redis.get(key), redis.del(key)]);
    expect(answers).toEqual(['OK', 2, 3, '3', 1]);
    expect(counter.writes).toBe(1);

    // Commands issued in promise continuations of the same turn join the same write.
    counter.writes = 0;
    const chained = await Promise.all([redis.ping().then(() => redis!.echo('a')), redis.echo('b')]);
    expect(chained).toEqual(['a', 'b']);
    expect(counter.writes).toBeLessThanOrEqual(2);
  });

  it('without it, each command is a write of its own (the baseline the test above beats)', async () => {
    redis = new Redis(URL, { maxRetriesPerRequest: null });
    await redis.ping();
    const counter = countSocketWrites(redis);
    await Promise.all([redis.ping(), redis.ping(), redis.ping()]);
    expect(counter.writes).toBe(3);
  });

  it('keeps coalescing on the new socket after a reconnect', async () => {
    redis = coalesceWrites(new Redis(URL, { maxRetriesPerRequest: null }));
    await redis.ping();
    const first = redis.stream;
    await new Promise<void>((resolve) => {
      redis!.once('ready', () => resolve());
      first.destroy();
    });
    expect(redis.stream).not.toBe(first);
    const counter = countSocketWrites(redis);
    expect(await Promise.all([redis.ping(), redis.echo('x'), redis.ping()])).toEqual(['PONG', 'x', 'PONG']);
    expect(counter.writes).toBe(1);
  });
});
