import { afterEach, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.ts';
import { newGroup, newUser, patch } from './scim-user.ts';

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

  it('a terminationDate moved later, moved earlier or removed reaches the keys without any change of access', async () => {
    s = await startStack();
    const EXT = 'urn:ietf:params:scim:schemas:extension:lockstep:2.0:User';
    const day = 86_400_000;
    const at = (days: number) => new Date(Math.floor((Date.now() + days * day) / 60_000) * 60_000);
    const first = at(30);
    const id = (await s.scim('POST', '/Users', newUser('contractor@example.com', { schemas: ['urn:ietf:params:scim:schemas:core:2.0:User', EXT], [EXT]: { terminationDate: first.toISOString() } }))).body
      .id as string;
    await s.scim('POST', '/Groups', newGroup('Control Room', [id]));
    await waitFor(() => s.keyAccess(id)[0]?.includes('Control room'), { what: 'grant' });
    const keyText = () => JSON.stringify(s.sim.state.describeKey(s.keys(id)[0]!.FNKey_ID));
    const minute = (d: Date) => d.toISOString().slice(0, 16);
    await waitFor(() => keyText().includes(minute(first)), { what: 'the first end date on the key' });

    for (const next of [at(90), at(10)]) {
      expect((await s.scim('PATCH', `/Users/${id}`, patch({ op: 'replace', path: `${EXT}:terminationDate`, value: next.toISOString() }))).status).toBe(200);
      await waitFor(() => keyText().includes(minute(next)), { what: `end date ${next.toISOString()} on the key` });
      expect(keyText()).not.toContain(minute(first));
      expect(s.keyAccess(id)[0]).toEqual(['Control room']);
      await waitFor(async () => (await s.admin('GET', `/persons/${id}`)).body.actual.iloq.endDate === next.toISOString(), { what: 'end date recorded' });
    }
    expect((await s.scim('PATCH', `/Users/${id}`, patch({ op: 'remove', path: `${EXT}:terminationDate` }))).status).toBe(200);
    await waitFor(() => !/T\d\d:\d\d/.test(JSON.stringify((s.sim.state.describeKey(s.keys(id)[0]!.FNKey_ID) as { timeLimitSlots: unknown }).timeLimitSlots)), { what: 'end date cleared' });
    expect(s.keyAccess(id)[0]).toEqual(['Control room']);

    // Each change was one reinstate (no access) through the reconciler, audited; a settled person plans nothing.
    const ops = (await s.admin('GET', `/persons/${id}`)).body.operations as Array<{ kind: string; access: string[]; state: string }>;
    expect(ops.filter((o) => o.kind === 'reinstate').map((o) => [o.access, o.state])).toEqual([
      [[], 'accepted'],
      [[], 'accepted'],
      [[], 'accepted'],
    ]);
    const view = (await s.admin('GET', `/persons/${id}`)).body;
    expect(view.pendingPlan).toEqual([]);
    expect(view.actual.iloq.endDate).toBeNull();
  });
});
