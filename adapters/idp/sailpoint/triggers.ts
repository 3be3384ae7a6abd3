import type { Change, HookRequest, HookResult } from '../../../src/ports/identity-source.ts';
import { makeChange } from '../shared/changes.ts';
import { REJECT_BODY, header, isObj, parseJsonBody, queryParam, rejected, safeEqual, sha256Hex } from '../shared/hook.ts';

/**
 * SailPoint ISC event triggers (reference §5.1) for `/hooks/sailpoint/{sourceId}`: fire-and-forget
 * HTTP subscriptions to `idn:identity-created`, `idn:identity-attributes-changed` and
 * `idn:identity-deleted`, authenticated with Basic or Bearer (no payload signature exists).
 *
 * Created and Deleted share one payload shape (`identity` + `attributes`), so the subscription
 * URL should say which trigger it is: `?trigger=idn:identity-created` / `?trigger=idn:identity-deleted`
 * (Attributes Changed is recognised by its `changes`). Without it the hint is `user-upsert` with
 * leaver priority, which is safe because every hint is confirmed through the API.
 * Payloads carry no event id or time: the dedupe key is trigger + identity id + SHA-256 of the
 * body, and `occurredAt` is the receipt time.
 */

export interface SailpointHookOptions {
  sourceId: string;
  /** The exact Authorization header value expected (`Basic …` or `Bearer …`). */
  expectedAuthorization: string;
  lifecycleAttribute: string;
  activeLifecycleStates: readonly string[];
  now: () => number;
}

const TRIGGERS: Record<string, string> = {
  'idn:identity-created': 'idn:identity-created',
  'identity-created': 'idn:identity-created',
  'idn:identity-deleted': 'idn:identity-deleted',
  'identity-deleted': 'idn:identity-deleted',
  'idn:identity-attributes-changed': 'idn:identity-attributes-changed',
  'identity-attributes-changed': 'idn:identity-attributes-changed',
};

export function expectedAuthorization(auth: { type: 'basic'; userName: string; password: string } | { type: 'bearer'; token: string }): string {
  return auth.type === 'basic' ? `Basic ${Buffer.from(`${auth.userName}:${auth.password}`, 'utf8').toString('base64')}` : `Bearer ${auth.token}`;
}

export function handleSailpointHook(req: HookRequest, opts: SailpointHookOptions): HookResult {
  if (req.method.toUpperCase() !== 'POST') return { ...rejected(405, `method ${req.method} not allowed`), headers: { allow: 'POST' } };
  const presented = header(req, 'authorization');
  // Scheme names are case-insensitive; the credentials are not.
  const normalised = presented?.replace(/^(basic|bearer)\s+/i, (_m, s: string) => `${s[0]!.toUpperCase()}${s.slice(1).toLowerCase()} `);
  if (!safeEqual(normalised, opts.expectedAuthorization)) return rejected(401, 'missing or wrong Authorization', REJECT_BODY);
  const body = parseJsonBody(req.rawBody);
  if (!isObj(body) || !isObj(body.identity) || typeof body.identity.id !== 'string' || body.identity.id === '')
    return rejected(400, 'not an identity trigger payload (identity.id missing)');
  const identityId = body.identity.id;
  const param = queryParam(req, 'trigger');
  const named = param !== undefined ? TRIGGERS[param] : undefined;
  if (param !== undefined && named === undefined) return rejected(400, `unknown trigger ${param}`);
  const trigger = Array.isArray(body.changes) ? 'idn:identity-attributes-changed' : (named ?? 'idn:identity-created-or-deleted');
  const occurredAt = new Date(opts.now()).toISOString();
  const eventId = `${trigger}:${identityId}:${sha256Hex(req.rawBody).slice(0, 24)}`;
  const base = { idp: 'sailpoint' as const, sourceId: opts.sourceId, userId: identityId, eventId, eventType: trigger, occurredAt };
  let change: Change;
  if (trigger === 'idn:identity-attributes-changed') {
    const changes = (body.changes as unknown[]).filter(isObj);
    const lifecycle = changes.find((c) => c.attribute === opts.lifecycleAttribute);
    const leaving = lifecycle !== undefined && !opts.activeLifecycleStates.includes(String(lifecycle.newValue));
    change = makeChange({ ...base, kind: leaving ? 'user-deactivated' : 'user-upsert', revocation: leaving || lifecycle !== undefined });
  } else if (trigger === 'idn:identity-deleted') change = makeChange({ ...base, kind: 'user-deleted' });
  else if (trigger === 'idn:identity-created') change = makeChange({ ...base, kind: 'user-upsert' });
  else change = makeChange({ ...base, kind: 'user-upsert', revocation: true });
  return { outcome: 'accepted', status: 200, changes: [change], tasks: [] };
}
