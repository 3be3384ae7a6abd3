import { afterEach, describe, expect, it } from 'vitest';
import { verifyAudit } from '../../src/audit/audit.ts';
import { startStack, waitFor, type Stack } from '../helpers/stack.ts';
import { BACKENDS } from '../helpers/stores.ts';
import { newGroup, newUser, patch } from './scim-user.ts';

describe.each(BACKENDS)('joiner / mover / leaver end to end on %s', (backend) => {
  let s: Stack;
  afterEach(async () => s?.stop());

  // The adapters run on their own thread by default (lockSystemThread); the flow must hold on the
  // event loop too.
  it.each([
    ['on their thread', true],
    ['on the event loop', false],
  ])('SCIM group membership drives iLOQ access; deactivation removes it and end-dates the keys (adapters %s)', async (_where, thread) => {
    s = await startStack({ backend, config: { lockSystemThread: thread } });
    expect(s.rt.lockSystems.get('iloq')!.constructor.name).toBe(thread ? 'ThreadLockSystem' : 'IloqLockSystem');
    const created = await s.scim('POST', '/Users', newUser('ada@example.com'));
    expect(created.status).toBe(201);
    const id: string = created.body.id;
    const group = await s.scim('POST', '/Groups', newGroup('Control Room', [id]));
    expect(group.status).toBe(201);

    await waitFor(() => s.keyAccess(id).length === 1 && s.keyAccess(id)[0]!.includes('Control room'), { what: 'grant on the key' });
    expect(s.keyAccess(id)).toEqual([['Control room']]);

    // Mover: out of the group.
    const removed = await s.scim('PATCH', `/Groups/${group.body.id}`, patch({ op: 'Remove', path: 'members', value: [{ value: id }] }));
    expect(removed.status).toBeLessThan(300);
    await waitFor(() => s.keyAccess(id)[0]!.length === 0, { what: 'revoke on the key' });

    // Back in, then leaver.
    await s.scim('PATCH', `/Groups/${group.body.id}`, patch({ op: 'Add', path: 'members', value: [{ value: id }] }));
    await waitFor(() => s.keyAccess(id)[0]!.includes('Control room'), { what: 're-grant' });
    const off = await s.scim('PATCH', `/Users/${id}`, patch({ op: 'replace', value: { active: false } }));
    expect(off.status).toBe(200);
    await waitFor(
      async () => {
        const view = await s.admin('GET', `/persons/${id}`);
        return view.body.actual?.iloq?.left === true;
      },
      { what: 'leave accepted' },
    );
    expect(s.keyAccess(id)).toEqual([[]]);
    const keyId = s.keys(id)[0]!.FNKey_ID;
    const detail = s.sim.state.describeKey(keyId) as { endDate?: unknown; ordered?: unknown };
    expect(JSON.stringify(detail)).toMatch(/\d{4}-\d{2}-\d{2}T/); // an end date was set

    // The person view tells the story, and every step is in an intact audit chain.
    const view = await s.admin('GET', `/persons/${id}`);
    expect(view.status).toBe(200);
    expect(view.body.identity.active).toBe(false);
    expect(view.body.operations.map((o: { kind: string; state: string }) => `${o.kind}:${o.state}`).reverse()).toEqual([
      'grant:accepted',
      'revoke:accepted',
      'grant:accepted',
      'leave:accepted',
    ]);
    const actions = new Set(((await s.admin('GET', `/audit?person=${id}&limit=1000`)).body.items as Array<{ action: string }>).map((a) => a.action));
    for (const a of ['identity.user.create', 'identity.membership.add', 'identity.membership.remove', 'identity.user.deactivate', 'plan', 'operation.attempt', 'operation.accepted'])
      expect(actions).toContain(a);
    expect((await verifyAudit(s.t.store.db)).ok).toBe(true);
  });

  it('attribute rules map too, and a re-activated person gets access back', async () => {
    s = await startStack({ backend });
    const created = await s.scim('POST', '/Users', newUser('grace@example.com', {
      schemas: ['urn:ietf:params:scim:schemas:core:2.0:User', 'urn:ietf:params:scim:schemas:extension:lockstep:2.0:User'],
      'urn:ietf:params:scim:schemas:extension:lockstep:2.0:User': { site: 'Plant A' },
    }));
    expect(created.status).toBe(201);
    const id = created.body.id as string;
    await waitFor(() => s.keyAccess(id)[0]?.includes('Main entrance'), { what: 'attribute grant' });
    await s.scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'False' }));
    await waitFor(async () => (await s.admin('GET', `/persons/${id}`)).body.actual?.iloq?.left === true, { what: 'leave' });
    expect(s.keyAccess(id)).toEqual([[]]);
    await s.scim('PATCH', `/Users/${id}`, patch({ op: 'Replace', path: 'active', value: 'True' }));
    await waitFor(() => s.keyAccess(id)[0]?.includes('Main entrance'), { what: 'access back after reinstate' });
    const ops = (await s.admin('GET', `/persons/${id}`)).body.operations.map((o: { kind: string }) => o.kind).reverse();
    expect(ops).toEqual(['grant', 'leave', 'reinstate', 'grant']);
  });
});
