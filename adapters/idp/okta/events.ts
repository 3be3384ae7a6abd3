import type { Change, ChangeKind, HookRequest, HookResult } from '../../../src/ports/identity-source.ts';
import { isoOr, makeChange } from '../shared/changes.ts';
import { REJECT_BODY, header, isObj, parseJsonBody, rejected, safeEqualAny } from '../shared/hook.ts';

/**
 * Okta Event Hooks (reference §3.1): the one-time verification GET, the static header secret and
 * the CloudEvents envelope whose `data.events[]` are System Log LogEvents. Also used for System
 * Log polling (`readDelta`), which returns the same LogEvent objects.
 */

/** Event types lockstep subscribes to and how each is read. Others are ignored (counted). */
const USER_UPSERT = new Set([
  'user.lifecycle.create',
  'user.lifecycle.activate',
  'user.lifecycle.reactivate',
  'user.lifecycle.unsuspend',
  'user.lifecycle.unlock',
  'user.account.update_profile',
]);
const USER_DEACTIVATED = new Set(['user.lifecycle.deactivate', 'user.lifecycle.suspend']);
const USER_DELETED = new Set(['user.lifecycle.delete.initiated', 'user.lifecycle.delete.completed']);
const GROUP_CHANGED = new Set(['group.lifecycle.create', 'group.lifecycle.delete', 'group.profile.update']);

/** The event types to subscribe the hook to (and to poll in the System Log). */
export const OKTA_EVENT_TYPES = [
  ...USER_UPSERT,
  ...USER_DEACTIVATED,
  ...USER_DELETED,
  'group.user_membership.add',
  'group.user_membership.remove',
  'application.user_membership.add',
  'application.user_membership.remove',
  'application.user_membership.change_username',
  ...GROUP_CHANGED,
];

interface Target {
  id?: unknown;
  type?: unknown;
}

function targetId(targets: unknown, type: string): string | undefined {
  if (!Array.isArray(targets)) return undefined; // Admin-console "Preview" payloads carry target: null.
  const t = targets.find((x): x is Target => isObj(x) && x.type === type);
  return t && typeof t.id === 'string' && t.id.length > 0 ? t.id : undefined;
}

export interface ParsedEvents {
  changes: Change[];
  ignored: number;
}

/**
 * LogEvents → hints. Targets are chosen by `type` (their order is not guaranteed). Failed or
 * denied outcomes changed nothing and are ignored. `fallbackId` names events without `uuid`
 * (`<envelope eventId>#<index>`), which is still stable across redelivery.
 */
export function changesFromLogEvents(events: unknown[], sourceId: string, receivedAt: string, fallbackId: string): ParsedEvents {
  const changes: Change[] = [];
  let ignored = 0;
  events.forEach((ev, i) => {
    if (!isObj(ev) || typeof ev.eventType !== 'string') {
      ignored++;
      return;
    }
    const type = ev.eventType;
    const result = isObj(ev.outcome) ? ev.outcome.result : undefined;
    if (result === 'FAILURE' || result === 'DENY') {
      ignored++;
      return;
    }
    const eventId = typeof ev.uuid === 'string' && ev.uuid.length > 0 ? ev.uuid : `${fallbackId}#${i}`;
    const occurredAt = isoOr(ev.published, receivedAt);
    const user = targetId(ev.target, 'User');
    const group = targetId(ev.target, 'UserGroup');
    const add = (kind: ChangeKind, ids: { userId?: string | undefined; groupId?: string | undefined }, revocation?: boolean) =>
      changes.push(
        makeChange({ idp: 'okta', sourceId, kind, ...ids, eventId, eventType: type, occurredAt, ...(revocation !== undefined ? { revocation } : {}) }),
      );
    let kind: ChangeKind | undefined;
    if (USER_UPSERT.has(type)) kind = 'user-upsert';
    else if (USER_DEACTIVATED.has(type)) kind = 'user-deactivated';
    else if (USER_DELETED.has(type)) kind = 'user-deleted';
    if (kind !== undefined) {
      if (user) add(kind, { userId: user });
      else ignored++;
      return;
    }
    if (type === 'group.user_membership.add' || type === 'group.user_membership.remove') {
      if (user && group) add(type.endsWith('.add') ? 'membership-added' : 'membership-removed', { userId: user, groupId: group });
      else ignored++;
      return;
    }
    if (type.startsWith('application.user_membership.')) {
      // App assignment is not modelled as a membership; the user is re-read (removal may revoke).
      if (user) add('user-upsert', { userId: user }, type.endsWith('.remove'));
      else ignored++;
      return;
    }
    if (GROUP_CHANGED.has(type)) {
      if (group) add('group-changed', { groupId: group }, type === 'group.lifecycle.delete');
      else ignored++;
      return;
    }
    ignored++;
  });
  return { changes, ignored };
}

export interface OktaHookOptions {
  sourceId: string;
  secrets: readonly string[];
  headerName: string;
  now: () => number;
}

/**
 * `/hooks/okta/{sourceId}`:
 * - GET with `X-Okta-Verification-Challenge` (any case) → 200 `{"verification": value}`.
 * - POST with the configured secret header → 200 (empty) after the core persisted the hints.
 *   A wrong/missing secret → 401 (Okta does not retry 4xx); a malformed body → 400.
 */
export function handleOktaHook(req: HookRequest, opts: OktaHookOptions): HookResult {
  const method = req.method.toUpperCase();
  if (method === 'GET') {
    const challenge = header(req, 'x-okta-verification-challenge');
    if (challenge === undefined || challenge === '') return rejected(400, 'GET without X-Okta-Verification-Challenge');
    return {
      outcome: 'handshake',
      status: 200,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ verification: challenge }),
      changes: [],
      tasks: [],
    };
  }
  if (method !== 'POST') return { ...rejected(405, `method ${method} not allowed`), headers: { allow: 'GET, POST' } };
  if (!safeEqualAny(header(req, opts.headerName), opts.secrets)) return rejected(401, `missing or wrong ${opts.headerName} secret`, REJECT_BODY);
  const body = parseJsonBody(req.rawBody);
  if (!isObj(body) || !isObj(body.data) || !Array.isArray(body.data.events)) return rejected(400, 'not an Okta event hook envelope (data.events[] missing)');
  if (body.eventType !== undefined && body.eventType !== 'com.okta.event_hook') return rejected(400, `unexpected envelope eventType ${String(body.eventType)}`);
  const receivedAt = new Date(opts.now()).toISOString();
  const envelopeId = typeof body.eventId === 'string' && body.eventId ? body.eventId : `okta-envelope-${receivedAt}`;
  const { changes, ignored } = changesFromLogEvents(body.data.events, opts.sourceId, isoOr(body.eventTime, receivedAt), envelopeId);
  return { outcome: 'accepted', status: 200, changes, tasks: [], ignored };
}
