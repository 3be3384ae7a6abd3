import type { Client, GraphRequest } from '@microsoft/microsoft-graph-client';
import {
  IdentitySourceError,
  type Change,
  type DeltaResult,
  type HookRequest,
  type HookResult,
  type IdentitySource,
  type MaintenanceResult,
  type SnapshotRecord,
  type SourceCapabilities,
  type SourceGroup,
  type SourceTask,
  type SourceUser,
} from '../../../src/ports/identity-source.ts';
import { NO_MAINTENANCE, makeChange } from '../shared/changes.ts';
import { isObj, sha256Hex } from '../shared/hook.ts';
import { resolveDeps, type ResolvedDeps, type SourceDeps } from '../shared/http.ts';
import { getPath, mapAttributes, str } from '../shared/mapping.ts';
import { ENTRA_DEFAULT_ATTRIBUTES, ENTRA_USER_SELECT, entraSourceSchema, type EntraSourceConfig, type EntraSourceConfigInput } from './config.ts';
import { GraphTokenProvider, createGraphClient, graphCode, graphStatus, makeCredential, mapGraphError, type GraphPage } from './graph.ts';
import { TASK_ENSURE, TASK_REAUTHORIZE, handleEntraHook } from './notifications.ts';

type Obj = Record<string, unknown>;

/** A Graph subscription as listed/created. */
export interface GraphSubscription {
  id: string;
  resource: string;
  changeType?: string;
  notificationUrl?: string;
  lifecycleNotificationUrl?: string | null;
  expirationDateTime: string;
}

/** The delta cursor: one link per tracked collection. */
interface EntraCursor {
  v: 1;
  users: string;
  groups: string;
}

const normResource = (r: string) => r.replace(/^\/+/, '').toLowerCase();

export class EntraSource implements IdentitySource {
  readonly kind = 'entra' as const;
  readonly id: string;
  readonly capabilities: SourceCapabilities;
  readonly config: EntraSourceConfig;
  /** The Graph client (exposed for tooling). */
  readonly graph: Client;
  private readonly deps: ResolvedDeps;
  private readonly auth: GraphTokenProvider;
  private readonly select: string[];
  private readonly attributeMap: Record<string, string>;
  private readonly graphOrigin: string;

  constructor(config: EntraSourceConfig, deps: ResolvedDeps) {
    this.config = config;
    this.deps = deps;
    this.id = deps.sourceId;
    this.graphOrigin = new URL(config.graphBaseUrl).origin;
    this.auth = new GraphTokenProvider(() => makeCredential(config), config.graphBaseUrl);
    this.graph = createGraphClient(config, deps, this.auth);
    this.attributeMap = { ...ENTRA_DEFAULT_ATTRIBUTES, ...config.attributes };
    const extra = [...Object.values(config.attributes), config.externalIdFrom, ...config.userSelect].map((p) => p.split('.')[0]!);
    this.select = [...new Set([...ENTRA_USER_SELECT, ...extra])];
    this.capabilities = { hooks: true, delta: true, maintenance: Boolean(config.subscriptions?.enabled), recheckAfterMs: 0 };
  }

  async start(): Promise<void> {}
  async close(): Promise<void> {}

  async ping(): Promise<void> {
    await this.call('ping', () => this.api('/users').select('id').top(1).get());
  }

  handleHook(req: HookRequest): HookResult {
    return handleEntraHook(req, {
      sourceId: this.id,
      clientStates: [this.config.hook.clientState, ...this.config.hook.previousClientStates],
      now: this.deps.now,
    });
  }

  // ---------- confirmation ----------

  /** GET /users/{id} and its direct groups (GET /users/{id}/memberOf/microsoft.graph.group, paged); null on 404. */
  async readUser(userId: string): Promise<SourceUser | null> {
    const path = `/users/${encodeURIComponent(userId)}`;
    const user = await this.getOrNull(`get user ${userId}`, () => this.api(path).select(this.select).get());
    if (user === null) return null;
    const groups: Array<{ id: string; displayName: string }> = [];
    let next: string | undefined;
    let first = true;
    while (first || next) {
      const page = await this.getOrNull<GraphPage<Obj>>(`groups of ${userId}`, () =>
        first ? this.api(`${path}/memberOf/microsoft.graph.group`).select(['id', 'displayName']).top(999).get() : this.api(next!).get(),
      );
      if (page === null) return null; // deleted between the two reads
      first = false;
      for (const g of page.value ?? []) if (typeof g.id === 'string') groups.push({ id: g.id, displayName: str(g.displayName) ?? g.id });
      next = this.sameHost(page['@odata.nextLink']);
    }
    return this.toUser(user, groups);
  }

  async readGroup(groupId: string): Promise<SourceGroup | null> {
    const g = await this.getOrNull<Obj>(`get group ${groupId}`, () => this.api(`/groups/${encodeURIComponent(groupId)}`).select(['id', 'displayName']).get());
    return g === null ? null : this.toGroup(g);
  }

  async *readGroupMembers(groupId: string): AsyncIterable<string[]> {
    let url: string | undefined = `/groups/${encodeURIComponent(groupId)}/members/microsoft.graph.user`;
    let first = true;
    while (url) {
      const u: string = url;
      const page = await this.getOrNull<GraphPage<Obj>>(`members of ${groupId}`, () =>
        first ? this.api(u).select('id').top(999).get() : this.api(u).get(),
      );
      if (page === null) return;
      first = false;
      const ids = (page.value ?? []).map((m) => m.id).filter((id): id is string => typeof id === 'string');
      if (ids.length) yield ids;
      url = this.sameHost(page['@odata.nextLink']);
    }
  }

  // ---------- reconciliation ----------

  /**
   * The initial round of users/delta and groups/delta (`$select=displayName,members`): current
   * state of every user, every group and its direct user members; the final deltaLinks become
   * the cursor of the `complete` record. Users carry no `groups` (members come per group). A
   * large group's `members@delta` spans several pages, possibly interleaved with other groups.
   */
  async *readSnapshot(): AsyncIterable<SnapshotRecord> {
    let users = 0;
    const seenGroups = new Set<string>();
    let usersLink = '';
    for await (const page of this.pages('/users/delta', this.select)) {
      for (const u of page.value ?? []) {
        if (u['@removed'] !== undefined || typeof u.id !== 'string') continue;
        users++;
        yield { type: 'user', user: this.toUser(u, undefined) };
      }
      if (page['@odata.deltaLink']) usersLink = page['@odata.deltaLink'];
    }
    let groupsLink = '';
    for await (const page of this.pages('/groups/delta', ['displayName', 'members'])) {
      for (const g of page.value ?? []) {
        if (g['@removed'] !== undefined || typeof g.id !== 'string') continue;
        if (!seenGroups.has(g.id)) {
          seenGroups.add(g.id);
          yield { type: 'group', group: this.toGroup(g) };
        }
        const members = userMembers(g['members@delta']).filter((m) => !m.removed);
        if (members.length) yield { type: 'members', groupId: g.id, userIds: members.map((m) => m.id) };
      }
      if (page['@odata.deltaLink']) groupsLink = page['@odata.deltaLink'];
    }
    if (!usersLink || !groupsLink) throw new IdentitySourceError('retryable', 'entra: delta round ended without a deltaLink');
    const cursor: EntraCursor = { v: 1, users: usersLink, groups: groupsLink };
    yield { type: 'complete', cursor: JSON.stringify(cursor), users, groups: seenGroups.size, membership: 'members' };
  }

  /**
   * Follows the stored users and groups delta links: changed users → user-upsert /
   * user-deactivated (accountEnabled false) / user-deleted (`@removed`); groups →
   * group-changed, plus membership-added/removed from `members@delta`. 410 Gone or an expired
   * token (`syncStateNotFound`, …) → resync.
   */
  async readDelta(cursor: string): Promise<DeltaResult> {
    let c: EntraCursor;
    try {
      c = JSON.parse(cursor) as EntraCursor;
    } catch {
      return { status: 'resync', reason: 'unreadable cursor' };
    }
    if (c?.v !== 1 || !this.isDeltaLink(c.users, 'users') || !this.isDeltaLink(c.groups, 'groups'))
      return { status: 'resync', reason: 'cursor is not a delta link pair of this Graph endpoint' };
    const changes: Change[] = [];
    try {
      const users = await this.followDelta(c.users, changes, (item, key) => this.userChange(item, key));
      const groups = await this.followDelta(c.groups, changes, (item, key) => this.groupChanges(item, key));
      return { status: 'ok', changes, cursor: JSON.stringify({ v: 1, users: users.link, groups: groups.link }), more: users.more || groups.more };
    } catch (err) {
      const status = graphStatus(err) ?? (err instanceof IdentitySourceError ? err.status : undefined);
      const code = graphCode(err) || (err instanceof IdentitySourceError ? err.message : '');
      if (status === 410 || /syncStateNotFound|syncStateInvalid|resyncRequired|badRequest.*token/i.test(code))
        return { status: 'resync', reason: `delta token no longer valid (${status ?? ''} ${code})`.trim() };
      throw mapGraphError(err, 'delta', this.deps.now());
    }
  }

  // ---------- subscriptions ----------

  /**
   * Keeps one subscription per configured resource alive: creates missing ones (→ resync, since
   * notifications were not flowing), renews those with less than `renewBeforeMinutes` left to
   * `lifetimeMinutes` (≤ 41,760), recreates ones without the configured lifecycle URL (it cannot
   * be added later) and deletes duplicates.
   */
  async maintain(): Promise<MaintenanceResult> {
    const s = this.config.subscriptions;
    if (!s?.enabled) return NO_MAINTENANCE;
    const actions: string[] = [];
    let resync: 'delta' | undefined;
    const now = this.deps.now();
    const all = await this.listSubscriptions();
    for (const resource of s.resources) {
      const mine = all
        .filter((x) => normResource(x.resource) === normResource(resource) && x.notificationUrl === s.notificationUrl)
        .sort((a, b) => Date.parse(b.expirationDateTime) - Date.parse(a.expirationDateTime));
      let keep = mine.find((x) => x.lifecycleNotificationUrl === s.lifecycleNotificationUrl && Date.parse(x.expirationDateTime) > now);
      for (const x of mine) {
        if (x === keep) continue;
        await this.deleteSubscription(x.id);
        actions.push(`deleted subscription ${x.id} (${resource}): ${x.lifecycleNotificationUrl === s.lifecycleNotificationUrl ? 'duplicate or expired' : 'lifecycle URL differs'}`);
      }
      if (!keep) {
        keep = await this.createSubscription(resource);
        actions.push(`created subscription ${keep.id} (${resource}) until ${keep.expirationDateTime}`);
        resync = 'delta';
        continue;
      }
      if (Date.parse(keep.expirationDateTime) - now < s.renewBeforeMinutes * 60_000) {
        const renewed = await this.renewSubscription(keep.id);
        if (renewed) actions.push(`renewed subscription ${keep.id} (${resource}) until ${renewed}`);
        else {
          const created = await this.createSubscription(resource);
          actions.push(`recreated subscription ${created.id} (${resource}): ${keep.id} was gone`);
          resync = 'delta';
        }
      }
    }
    if (actions.length) this.deps.log.info({ source: this.id, actions }, 'entra: subscriptions maintained');
    return { actions, ...(resync ? { resync } : {}), nextInMs: s.checkEveryMinutes * 60_000 };
  }

  /**
   * `entra.reauthorize`: POST /subscriptions/{id}/reauthorize (falls back to a renewing PATCH,
   * which also reauthorizes; recreates when the subscription is gone). Notifications may have
   * paused, so it always asks for a delta round. `entra.ensure-subscriptions`: maintain().
   */
  async runTask(task: SourceTask): Promise<MaintenanceResult> {
    const nextInMs = (this.config.subscriptions?.checkEveryMinutes ?? 60) * 60_000;
    if (task.type === TASK_ENSURE) {
      const r = await this.maintain();
      return { ...r, resync: 'delta' };
    }
    if (task.type !== TASK_REAUTHORIZE) throw new IdentitySourceError('permanent', `entra: unknown task ${task.type}`);
    const id = task.data.subscriptionId ?? '';
    if (!id) throw new IdentitySourceError('permanent', 'entra: reauthorize task without subscriptionId');
    try {
      await this.api(`/subscriptions/${encodeURIComponent(id)}/reauthorize`).post({});
      return { actions: [`reauthorized subscription ${id}`], resync: 'delta', nextInMs };
    } catch (err) {
      const status = graphStatus(err);
      if (status !== 404 && status !== 400 && status !== 405) throw mapGraphError(err, `reauthorize ${id}`, this.deps.now());
    }
    const renewed = await this.renewSubscription(id);
    if (renewed) return { actions: [`renewed subscription ${id} until ${renewed} (reauthorize)`], resync: 'delta', nextInMs };
    const r = await this.maintain();
    return { ...r, actions: [`subscription ${id} was gone`, ...r.actions], resync: 'delta' };
  }

  async listSubscriptions(): Promise<GraphSubscription[]> {
    const out: GraphSubscription[] = [];
    let next: string | undefined = '/subscriptions';
    while (next) {
      const u: string = next;
      const page = await this.call<GraphPage<GraphSubscription>>('list subscriptions', () => this.api(u).get());
      out.push(...(page.value ?? []).filter((x) => typeof x?.id === 'string'));
      next = this.sameHost(page['@odata.nextLink']);
    }
    return out;
  }

  private expiration(): string {
    const s = this.config.subscriptions!;
    return new Date(this.deps.now() + s.lifetimeMinutes * 60_000).toISOString();
  }

  private async createSubscription(resource: string): Promise<GraphSubscription> {
    const s = this.config.subscriptions!;
    return this.call<GraphSubscription>(`create subscription ${resource}`, () =>
      this.api('/subscriptions').post({
        changeType: s.changeType,
        notificationUrl: s.notificationUrl,
        lifecycleNotificationUrl: s.lifecycleNotificationUrl,
        resource,
        expirationDateTime: this.expiration(),
        clientState: this.config.hook.clientState,
        latestSupportedTlsVersion: 'v1_2',
      }),
    );
  }

  /** New expiration, or undefined when the subscription no longer exists. */
  private async renewSubscription(id: string): Promise<string | undefined> {
    const expirationDateTime = this.expiration();
    const r = await this.getOrNull<GraphSubscription>(`renew subscription ${id}`, () =>
      this.api(`/subscriptions/${encodeURIComponent(id)}`).patch({ expirationDateTime }),
    );
    return r === null ? undefined : (r?.expirationDateTime ?? expirationDateTime);
  }

  private async deleteSubscription(id: string): Promise<void> {
    await this.getOrNull(`delete subscription ${id}`, () => this.api(`/subscriptions/${encodeURIComponent(id)}`).delete());
  }

  // ---------- internals ----------

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw mapGraphError(err, what, this.deps.now());
    }
  }

  private async getOrNull<T = Obj>(what: string, fn: () => Promise<T>): Promise<T | null> {
    try {
      return await fn();
    } catch (err) {
      if (graphStatus(err) === 404) return null;
      throw mapGraphError(err, what, this.deps.now());
    }
  }

  /** Only follow paging links on the configured Graph host. */
  /**
   * A request for a path or for a link Graph gave us (nextLink, deltaLink). Links are split into
   * version and path here rather than handed to the SDK whole: the SDK strips the origin only from
   * `https://` links, so on an `http://` graphBaseUrl (a local fake, a proxy) it would append the
   * whole link to the base URL.
   */
  private api(pathOrLink: string): GraphRequest {
    if (!pathOrLink.startsWith(`${this.graphOrigin}/`)) return this.graph.api(pathOrLink);
    const rest = pathOrLink.slice(this.graphOrigin.length + 1);
    const slash = rest.indexOf('/');
    return slash < 0 ? this.graph.api(`/${rest}`) : this.graph.api(rest.slice(slash)).version(rest.slice(0, slash));
  }

  private sameHost(link: unknown): string | undefined {
    if (typeof link !== 'string' || !link) return undefined;
    if (!link.startsWith(`${this.graphOrigin}/`)) throw new IdentitySourceError('permanent', `entra: refusing to follow a link to another host: ${new URL(link).host}`);
    return link;
  }

  private isDeltaLink(link: unknown, what: 'users' | 'groups'): link is string {
    return typeof link === 'string' && link.startsWith(`${this.graphOrigin}/v1.0/${what}/delta?`);
  }

  /** All pages of an initial delta round (errors mapped). */
  private async *pages(path: string, select: string[]): AsyncIterable<GraphPage<Obj>> {
    let next: string | undefined = path;
    let first = true;
    while (next) {
      const u: string = next;
      const page: GraphPage<Obj> = await this.call(`delta ${path}`, () => (first ? this.api(u).select(select).get() : this.api(u).get()));
      first = false;
      yield page;
      next = this.sameHost(page['@odata.nextLink']);
    }
  }

  private async followDelta(start: string, into: Change[], toChanges: (item: Obj, pageKey: string) => Change[]): Promise<{ link: string; more: boolean }> {
    let url = start;
    for (let i = 0; i < this.config.delta.maxPages; i++) {
      const u = url;
      const page = (await this.api(u).get()) as GraphPage<Obj>;
      const pageKey = `delta-${sha256Hex(u).slice(0, 24)}`;
      for (const item of page.value ?? []) if (isObj(item) && typeof item.id === 'string') into.push(...toChanges(item, pageKey));
      const delta = page['@odata.deltaLink'];
      if (typeof delta === 'string' && delta) return { link: this.sameHost(delta)!, more: false };
      const next = this.sameHost(page['@odata.nextLink']);
      if (!next) throw new IdentitySourceError('retryable', 'entra: delta page without nextLink or deltaLink');
      url = next;
    }
    return { link: url, more: true }; // a nextLink resumes the round later
  }

  private userChange(u: Obj, eventId: string): Change[] {
    const kind = u['@removed'] !== undefined ? 'user-deleted' : u.accountEnabled === false ? 'user-deactivated' : 'user-upsert';
    const occurredAt = new Date(this.deps.now()).toISOString();
    return [makeChange({ idp: 'entra', sourceId: this.id, kind, userId: String(u.id), eventId, eventType: 'users/delta', occurredAt })];
  }

  private groupChanges(g: Obj, eventId: string): Change[] {
    const occurredAt = new Date(this.deps.now()).toISOString();
    const base = { idp: 'entra' as const, sourceId: this.id, eventId, eventType: 'groups/delta', occurredAt };
    const groupId = String(g.id);
    const out = [makeChange({ ...base, kind: 'group-changed', groupId, revocation: g['@removed'] !== undefined })];
    if (g['@removed'] === undefined)
      for (const m of userMembers(g['members@delta']))
        out.push(makeChange({ ...base, kind: m.removed ? 'membership-removed' : 'membership-added', userId: m.id, groupId }));
    return out;
  }

  private toUser(u: Obj, groups: Array<{ id: string; displayName: string }> | undefined): SourceUser {
    const id = String(u.id);
    const givenName = str(u.givenName);
    const familyName = str(u.surname);
    const displayName = str(u.displayName);
    const email = str(u.mail);
    const externalId = str(getPath(u, this.config.externalIdFrom));
    const { '@odata.context': _ctx, ...raw } = u;
    return {
      sourceId: this.id,
      id,
      userName: str(u.userPrincipalName) ?? id,
      ...(externalId !== undefined ? { externalId } : {}),
      // Only an explicit accountEnabled: true is active (a missing value never grants).
      active: u.accountEnabled === true,
      ...(email !== undefined ? { email } : {}),
      ...(givenName !== undefined ? { givenName } : {}),
      ...(familyName !== undefined ? { familyName } : {}),
      ...(displayName !== undefined ? { displayName } : {}),
      roles: [],
      attributes: mapAttributes(u, this.attributeMap),
      ...(groups ? { groups } : {}),
      raw,
    };
  }

  private toGroup(g: Obj): SourceGroup {
    const id = String(g.id);
    const { 'members@delta': _m, '@odata.context': _c, ...raw } = g;
    return { sourceId: this.id, id, displayName: str(g.displayName) ?? id, raw };
  }
}

/** User entries of a `members@delta` array (other directory object types are skipped). */
function userMembers(v: unknown): Array<{ id: string; removed: boolean }> {
  if (!Array.isArray(v)) return [];
  return v
    .filter(isObj)
    .filter((m) => typeof m.id === 'string' && String(m['@odata.type'] ?? '#microsoft.graph.user').toLowerCase().endsWith('.user'))
    .map((m) => ({ id: String(m.id), removed: m['@removed'] !== undefined }));
}

/**
 * An Entra ID tenant as an IdentitySource. `config` is the `sources[].entra` section (validated
 * again here); `deps.sourceId` is the source's id; `deps.fetch` carries Graph calls (the token
 * endpoint is called by @azure/identity's own HTTP pipeline).
 */
export function createEntraSource(config: EntraSourceConfigInput, deps: SourceDeps): EntraSource {
  return new EntraSource(entraSourceSchema.parse(config), resolveDeps(deps));
}
