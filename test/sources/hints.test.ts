import { afterEach, describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.ts';
import { HintStore } from '../../src/sources/hints.ts';
import { BACKENDS, freshStore, type TestStore } from '../helpers/stores.ts';
import { FakeSource } from './helpers.ts';

describe.each(BACKENDS)('hint store (%s)', (backend) => {
  let t: TestStore;
  afterEach(async () => t?.cleanup());

  it('dedupes on the key, within a delivery, across deliveries and across concurrent requests', async () => {
    t = await freshStore(backend);
    const hints = new HintStore(t.store);
    const src = new FakeSource('okta');
    const a = src.change('user-deactivated', 'u1', undefined, 'ev-1');
    const b = src.change('membership-added', 'u1', 'g1', 'ev-2');
    const first = await hints.persist('okta', [a, b, a], [], undefined);
    expect(first.hints.map((h) => [h.target, h.targetId, h.revocation])).toEqual([
      ['user', 'u1', true],
      ['user', 'u1', false],
    ]);
    expect(first.duplicates).toBe(1);
    // 50 concurrent redeliveries plus 50 new events in one event-loop turn: one commit, exact dedupe.
    const fresh = Array.from({ length: 50 }, (_, i) => src.change('user-upsert', `n${i}`, undefined, `new-${i}`));
    const results = await Promise.all([...Array.from({ length: 50 }, () => hints.persist('okta', [a, b], [], undefined)), ...fresh.map((c) => hints.persist('okta', [c], [], undefined))]);
    expect(results.reduce((n, r) => n + r.hints.length, 0)).toBe(50);
    const rows = await t.store.db.selectFrom('source_hints').select(['dedupe_key']).execute();
    expect(rows).toHaveLength(52);
    expect(await hints.pendingFor('okta', 'user', 'u1')).toMatchObject({ count: 2, revocation: true, eventId: 'ev-2' });
  });

  it('a group-only hint targets the group; tasks dedupe; resync only escalates', async () => {
    t = await freshStore(backend);
    const hints = new HintStore(t.store);
    const src = new FakeSource('entra', 'entra');
    const g = src.change('group-changed', undefined, 'g9');
    const task = { type: 'entra.reauthorize', data: { subscriptionId: 's' }, dedupeKey: 'entra:x:reauth:s:1' };
    const p = await hints.persist('entra', [g], [task, task], 'delta');
    expect(p.hints).toEqual([expect.objectContaining({ target: 'group', targetId: 'g9' })]);
    expect(p.tasks).toHaveLength(1);
    expect((await hints.persist('entra', [], [task], 'full')).tasks).toEqual([]);
    await hints.persist('entra', [], [], 'delta');
    const st = await t.store.db.selectFrom('source_state').selectAll().executeTakeFirstOrThrow();
    expect(st.resync).toBe('full');
  });

  it('finishing marks pending hints up to a seq; stale hints are found; processed ones are pruned', async () => {
    t = await freshStore(backend);
    const hints = new HintStore(t.store);
    const src = new FakeSource('okta');
    const p = await hints.persist('okta', [src.change('user-upsert', 'u1'), src.change('user-upsert', 'u2')], [], undefined);
    await hints.finish('okta', 'user', 'u1', p.hints[0]!.seq, 'done');
    expect(await hints.hasPendingAfter('okta', 'user', 'u1', 0)).toBe(false);
    expect(await hints.stale(Date.now() + 1, 10)).toEqual([{ sourceId: 'okta', target: 'user', targetId: 'u2', revocation: false }]);
    expect(await hints.counts('okta')).toMatchObject({ pending: 1, failed: 0 });
    expect(await hints.prune(Date.now() + 1)).toBe(1);
    expect(await t.store.db.selectFrom('source_hints').select('target_id').execute()).toEqual([{ target_id: 'u2' }]);
  });
});

describe('configuration of identity sources', () => {
  const okta = { orgUrl: 'https://acme.okta.com', auth: { type: 'ssws', token: 't' }, hook: { secret: 'okta-hook-secret-0123456789abcdef' } };

  it('takes the adapter section named like idp, schedules as durations, and identity linking', () => {
    const c = configSchema.parse({
      sources: [
        { id: 'okta-prod', idp: 'okta', okta, reconcileEvery: '6h', deltaEvery: '90s', onMissing: 'deactivate' },
        { id: 'hr', idp: 'sailpoint', sailpoint: { apiUrl: 'https://acme.api.identitynow.com', clientId: 'c', clientSecret: 's', hookAuth: { type: 'bearer', token: 'trigger-token-0123456789abcdef0123456789' } } },
      ],
      identity: { matchOn: 'employeeNumber', authoritativeSource: 'hr', driftCheckEvery: '12h' },
    });
    expect(c.sources[0]).toMatchObject({ reconcileEvery: 21_600_000, deltaEvery: 90_000, onMissing: 'deactivate', reconcileAtStart: true });
    expect(c.sources[0]!.okta?.pageSize).toBe(200);
    expect(c.sources[1]).toMatchObject({ onMissing: 'delete', deltaEvery: 300_000 });
    expect(c.sources[1]!.reconcileEvery).toBeUndefined();
    expect(c.identity).toMatchObject({ matchOn: 'employeeNumber', authoritativeSource: 'hr', driftCheckEvery: 43_200_000, concurrency: 8 });
    expect(configSchema.parse({}).identity).toMatchObject({ driftCheckEvery: 86_400_000, hintRetention: 604_800_000 });
  });

  it('refuses a section of another idp, a bad duration, an unknown authoritative source and a bad adapter section', () => {
    const issues = (v: unknown) => {
      const r = configSchema.safeParse(v);
      return r.success ? [] : r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    };
    expect(issues({ sources: [{ id: 'x', idp: 'entra', okta }] }).join('\n')).toMatch(/sources\.0\.okta: a "okta" section needs idp: okta/);
    expect(issues({ sources: [{ id: 'x', idp: 'okta', okta, reconcileEvery: 'soon' }] }).join('\n')).toMatch(/sources\.0\.reconcileEvery/);
    expect(issues({ sources: [{ id: 'x', idp: 'okta', okta }], identity: { authoritativeSource: 'nope' } }).join('\n')).toMatch(/identity\.authoritativeSource: unknown source "nope"/);
    expect(issues({ sources: [{ id: 'x', idp: 'okta', okta: { ...okta, hook: { secret: 'short' } } }] }).join('\n')).toMatch(/sources\.0\.okta\.hook\.secret/);
  });
});
