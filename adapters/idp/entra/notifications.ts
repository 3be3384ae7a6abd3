import type { Change, HookRequest, HookResult, SourceTask } from '../../../src/ports/identity-source.ts';
import { makeChange } from '../shared/changes.ts';
import { REJECT_BODY, isObj, parseJsonBody, queryParam, rejected, safeEqualAny, sha256Hex } from '../shared/hook.ts';

/**
 * Microsoft Graph change notifications (reference §4.2–4.4) for `/hooks/entra/{sourceId}` and
 * its lifecycle URL (both may be mounted on this one handler: the payload says which it is).
 *
 * - `?validationToken=…` → 200 `text/plain` with the (URL-decoded) token, within 10 s. The HTTP
 *   layer decodes query strings; the token is echoed verbatim as plain text with `nosniff`.
 * - notifications: every item's `clientState` is compared in constant time; items that do not
 *   match are dropped; if none match the request is rejected (401) and nothing is parsed.
 * - accepted → 202 (empty) after the core persisted the hints.
 * - user/group notifications are basic (no resource data): they become hints to re-read.
 *   Group notifications do not say which member changed unless `members@delta` is present,
 *   so they ask for a (coalesced) delta round.
 * - lifecycle events: `reauthorizationRequired` → task `entra.reauthorize`;
 *   `subscriptionRemoved` → task `entra.ensure-subscriptions`; both, and `missed`, ask for a
 *   delta round because notifications may have been lost.
 */

export const TASK_REAUTHORIZE = 'entra.reauthorize';
export const TASK_ENSURE = 'entra.ensure-subscriptions';

export interface EntraHookOptions {
  sourceId: string;
  clientStates: readonly string[];
  now: () => number;
}

const MAX_TOKEN_LENGTH = 4096;

function kindOfResource(item: Record<string, unknown>): 'user' | 'group' | undefined {
  const rd = isObj(item.resourceData) ? item.resourceData : {};
  const type = String(rd['@odata.type'] ?? '').toLowerCase();
  if (type.endsWith('.user')) return 'user';
  if (type.endsWith('.group')) return 'group';
  const res = String(item.resource ?? '').toLowerCase();
  if (/^\/?users\//.test(res)) return 'user';
  if (/^\/?groups\//.test(res)) return 'group';
  return undefined;
}

function resourceId(item: Record<string, unknown>): string | undefined {
  const rd = isObj(item.resourceData) ? item.resourceData : {};
  if (typeof rd.id === 'string' && rd.id) return rd.id;
  const m = /^\/?(?:users|groups)\/([^/?]+)/i.exec(String(item.resource ?? ''));
  return m?.[1];
}

export function handleEntraHook(req: HookRequest, opts: EntraHookOptions): HookResult {
  const method = req.method.toUpperCase();
  const token = queryParam(req, 'validationToken');
  if (token !== undefined) {
    if (method !== 'POST' && method !== 'GET') return rejected(405, `validation with method ${method}`);
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) return rejected(400, 'validationToken empty or too long');
    return {
      outcome: 'handshake',
      status: 200,
      headers: { 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff' },
      body: token,
      changes: [],
      tasks: [],
    };
  }
  if (method !== 'POST') return { ...rejected(405, `method ${method} not allowed`), headers: { allow: 'POST' } };
  const body = parseJsonBody(req.rawBody);
  if (!isObj(body) || !Array.isArray(body.value)) return rejected(400, 'not a Graph notification collection (value[] missing)');

  const receivedAt = opts.now();
  const occurredAt = new Date(receivedAt).toISOString();
  const minute = Math.floor(receivedAt / 60_000);
  const changes: Change[] = [];
  const tasks: SourceTask[] = [];
  let resync: 'delta' | undefined;
  let bad = 0;
  let ignored = 0;
  const items = body.value.filter(isObj);

  for (const item of items) {
    if (!safeEqualAny(typeof item.clientState === 'string' ? item.clientState : undefined, opts.clientStates)) {
      bad++;
      continue;
    }
    const subscriptionId = typeof item.subscriptionId === 'string' ? item.subscriptionId : '';
    if (typeof item.lifecycleEvent === 'string') {
      const ev = item.lifecycleEvent;
      const at = typeof item.subscriptionExpirationDateTime === 'string' ? item.subscriptionExpirationDateTime : String(minute);
      if (ev === 'reauthorizationRequired' && subscriptionId) {
        tasks.push({ type: TASK_REAUTHORIZE, data: { subscriptionId }, dedupeKey: `entra:${opts.sourceId}:reauthorize:${subscriptionId}:${at}` });
        resync = 'delta';
      } else if (ev === 'subscriptionRemoved') {
        tasks.push({ type: TASK_ENSURE, data: { subscriptionId }, dedupeKey: `entra:${opts.sourceId}:ensure:${subscriptionId}:${minute}` });
        resync = 'delta';
      } else if (ev === 'missed') resync = 'delta';
      else ignored++;
      continue;
    }
    const kind = kindOfResource(item);
    const id = resourceId(item);
    const changeType = String(item.changeType ?? '').toLowerCase();
    if (!kind || !id || !changeType) {
      ignored++;
      continue;
    }
    // Graph's notification id when it sends one; otherwise derived (content + receipt minute),
    // which dedupes replays of the same delivery but not Graph's retries minutes later.
    const eventId = typeof item.id === 'string' && item.id ? item.id : `n-${sha256Hex(JSON.stringify(item)).slice(0, 24)}-${minute}`;
    const base = { idp: 'entra' as const, sourceId: opts.sourceId, eventId, eventType: `${kind}.${changeType}`, occurredAt };
    if (kind === 'user') {
      changes.push(makeChange({ ...base, kind: changeType === 'deleted' ? 'user-deleted' : 'user-upsert', userId: id }));
      continue;
    }
    changes.push(makeChange({ ...base, kind: 'group-changed', groupId: id, revocation: changeType === 'deleted' }));
    const rd = isObj(item.resourceData) ? item.resourceData : {};
    const members = rd['members@delta'];
    if (Array.isArray(members) && changeType !== 'deleted') {
      for (const m of members.filter(isObj)) {
        if (typeof m.id !== 'string') continue;
        const type = String(m['@odata.type'] ?? '#microsoft.graph.user').toLowerCase();
        if (!type.endsWith('.user')) continue;
        changes.push(makeChange({ ...base, kind: m['@removed'] !== undefined ? 'membership-removed' : 'membership-added', userId: m.id, groupId: id }));
      }
    } else resync = 'delta';
  }

  if (items.length > 0 && bad === items.length) return rejected(401, `clientState mismatch on all ${bad} notification(s)`, REJECT_BODY);
  return {
    outcome: 'accepted',
    status: 202,
    changes,
    tasks,
    ...(resync ? { resync } : {}),
    ...(bad > 0 ? { reason: `dropped ${bad} notification(s) with a wrong clientState` } : {}),
    ignored,
  };
}
