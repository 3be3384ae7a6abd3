import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { RECONCILE_QUEUE, reconcileJobId } from '../../src/queue/queues.ts';
import { REDIS_URL, startStack, waitFor, type Stack } from '../helpers/stack.ts';

describe('workers fetch on Redis connections of their own', () => {
  let s: Stack;
  afterEach(async () => s?.stop());

  it('a job is picked up while the connection the queues add on is busy', async () => {
    s = await startStack();
    const started: number[] = [];
    const rec = s.rt.engine.reconciler;
    const original = rec.reconcile.bind(rec);
    rec.reconcile = async (personId: string) => {
      started.push(Date.now());
      return original(personId);
    };
    // Hold the queues' connection for 3 s, as a lockdown's thousands of adds would.
    const busy = s.rt.engine.redis.blpop(`${s.config.redis.prefix}:nothing`, 3);
    const t0 = Date.now();
    const conn = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    const q = new Queue(RECONCILE_QUEUE, { connection: conn, prefix: s.config.redis.prefix });
    try {
      await q.add('reconcile', { personId: 'nobody' }, { jobId: reconcileJobId('nobody'), priority: 10 });
      await waitFor(() => started.length > 0, { what: 'reconcile picked up', timeoutMs: 10_000 });
      expect(started[0]! - t0).toBeLessThan(2_000);
    } finally {
      await busy;
      await q.close();
      conn.disconnect();
    }
  });
});
