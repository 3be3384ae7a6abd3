import { afterEach, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.ts';
import { newGroup, newUser } from './scim-user.ts';

describe('scheduled leavers', () => {
  let s: Stack;
  afterEach(async () => s?.stop());

  it('a terminationDate end-dates the key ahead of time and revokes when it passes, with no event', async () => {
    s = await startStack({ config: { reconcile: { sweepIntervalMs: 200, sweepAfterMs: 500 } } });
    const leaveAt = new Date(Date.now() + 2500);
    const created = await s.scim(
      'POST',
      '/Users',
      newUser('temp@example.com', {
        schemas: ['urn:ietf:params:scim:schemas:core:2.0:User', 'urn:ietf:params:scim:schemas:extension:lockstep:2.0:User'],
        'urn:ietf:params:scim:schemas:extension:lockstep:2.0:User': { terminationDate: leaveAt.toISOString() },
      }),
    );
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    await s.scim('POST', '/Groups', newGroup('Control Room', [id]));
    await waitFor(() => s.keyAccess(id)[0]?.includes('Control room'), { what: 'grant' });
    // Even a key that is never updated again stops on that date: iLOQ's end-date slot carries it.
    expect(JSON.stringify(s.sim.state.describeKey(s.keys(id)[0]!.FNKey_ID))).toContain(leaveAt.toISOString().slice(0, 16).replace('T', 'T'));
    const scheduled = await s.t.store.db.selectFrom('schedule').selectAll().where('person_id', '=', id).executeTakeFirst();
    expect(Number(scheduled?.due_at)).toBe(leaveAt.getTime());

    await waitFor(async () => (await s.admin('GET', `/persons/${id}`)).body.actual?.iloq?.left === true, { what: 'leave when the date passes', timeoutMs: 15_000 });
    expect(s.keyAccess(id)).toEqual([[]]);
    const plan = ((await s.admin('GET', `/audit?person=${id}&action=plan`)).body.items as Array<{ detail: { active: boolean } }>).at(-1)!;
    expect(plan.detail.active).toBe(false);
    expect(Date.now()).toBeGreaterThanOrEqual(leaveAt.getTime());
  });
});
