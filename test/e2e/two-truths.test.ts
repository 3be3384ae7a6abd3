import { afterEach, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.ts';
import { newGroup, newUser, patch } from './scim-user.ts';

describe('two truths of revocation on iLOQ: accepted, then effective', () => {
  let s: Stack;
  afterEach(async () => s?.stop());

  it('a leaver is exposed until the key is programmed, raises a collect task, then becomes effective', async () => {
    s = await startStack({ sim: { programDelayMs: null }, config: { reconcile: { effectiveCheckIntervalMs: 300 } } });
    const id = (await s.scim('POST', '/Users', newUser('ada@example.com'))).body.id as string;
    await s.scim('POST', '/Groups', newGroup('Control Room', [id]));
    const grant = async () => (await s.admin('GET', `/persons/${id}`)).body.operations.find((o: { kind: string }) => o.kind === 'grant');
    // Wait for lockstep's acceptance, not the simulator's state: the access lands in the
    // simulator one call before programming is ordered, and programming an unordered key is a no-op.
    await waitFor(async () => s.keyAccess(id)[0]?.includes('Control room') && (await grant())?.acceptedAt, { what: 'grant accepted' });
    expect((await grant()).effectiveAt).toBeNull();
    s.sim.programOrderedKeys();
    await waitFor(async () => (await grant()).effectiveAt !== null, { what: 'grant effective after programming' });

    await s.scim('PATCH', `/Users/${id}`, patch({ op: 'replace', value: { active: false } }));
    await waitFor(async () => (await s.admin('GET', `/persons/${id}`)).body.actual?.iloq?.left === true, { what: 'leave accepted' });

    // Accepted is not effective: the key still carries its old programming.
    const exposure = (await s.admin('GET', '/exposure')).body;
    expect(exposure.keys).toBe(1);
    expect(exposure.items[0]).toMatchObject({ lockSystem: 'iloq', personId: id, kind: 'leave', keyId: s.keys(id)[0]!.FNKey_ID });
    const metrics = await fetch(`${s.url}/metrics`, { headers: { authorization: `Bearer ${s.auditorToken}` } }).then((r) => r.text());
    expect(metrics).toMatch(/lockstep_exposure_keys\{lock_system="iloq"\} 1/);

    // A physical key the leaver still holds: someone must collect it.
    const tasks = (await s.admin('GET', '/tasks', undefined, s.auditorToken)).body.items;
    expect(tasks).toEqual([expect.objectContaining({ kind: 'collect_key', personId: id, keyId: s.keys(id)[0]!.FNKey_ID, overdue: false })]);

    s.sim.programOrderedKeys();
    await waitFor(async () => (await s.admin('GET', '/exposure')).body.keys === 0, { what: 'exposure cleared' });
    const leave = (await s.admin('GET', `/persons/${id}`)).body.operations.find((o: { kind: string }) => o.kind === 'leave');
    expect(leave.effectiveAt).not.toBeNull();
    expect(Date.parse(leave.effectiveAt)).toBeGreaterThanOrEqual(Date.parse(leave.acceptedAt));
    const effective = (await s.admin('GET', `/audit?person=${id}&action=operation.effective`)).body.items;
    expect(effective.map((e: { detail: { kind: string } }) => e.detail.kind)).toEqual(['grant', 'leave']);

    // Closing the task: auditors may not, admins may, once.
    expect((await s.admin('POST', `/tasks/${tasks[0].id}/done`, { note: 'x' }, s.auditorToken)).status).toBe(403);
    expect((await s.admin('POST', `/tasks/${tasks[0].id}/done`, { note: 'key returned to the locksmith' })).status).toBe(200);
    expect((await s.admin('POST', `/tasks/${tasks[0].id}/done`, {})).status).toBe(409);
    expect((await s.admin('GET', '/tasks')).body.items).toEqual([]);
    const done = (await s.admin('GET', '/tasks?state=done')).body.items[0];
    expect(done).toMatchObject({ doneBy: 'ops', note: 'key returned to the locksmith' });
    expect((await s.admin('GET', '/audit?action=task.*')).body.items.map((a: { action: string }) => a.action)).toEqual(['task.raised', 'task.done']);
  });
});
