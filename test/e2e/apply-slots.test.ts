import { afterEach, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.ts';
import { newGroup, newUser } from './scim-user.ts';

describe('apply concurrency', () => {
  let s: Stack;
  afterEach(async () => s?.stop());

  it('keeps exactly apply.concurrency operations in flight at the lock system, though the worker runs more jobs', async () => {
    s = await startStack({ config: { apply: { concurrency: 2 } } });
    s.sim.setFaults({ latencyMs: 30 });
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) ids.push((await s.scim('POST', '/Users', newUser(`slot${i}@example.com`))).body.id);
    // Requests arrived at the simulator and not yet answered, sampled while the grants run.
    let most = 0;
    const sampler = setInterval(() => (most = Math.max(most, s.sim.requestsReceived - s.sim.requestTotal)), 1);
    try {
      await s.scim('POST', '/Groups', newGroup('Control Room', ids));
      await waitFor(() => ids.every((id) => s.keyAccess(id)[0]?.includes('Control room')), { what: 'every grant applied' });
    } finally {
      clearInterval(sampler);
    }
    expect(most).toBe(2);
  });
});
