import type { Client } from '@okta/okta-sdk-nodejs';
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
import { NO_MAINTENANCE } from '../shared/changes.ts';
import { resolveDeps, type ResolvedDeps, type SourceDeps } from '../shared/http.ts';
import { parseLinkHeader } from '../shared/link.ts';
import { chunked, getPath, mapAttributes, roleList, str } from '../shared/mapping.ts';
import { OKTA_DEFAULT_ATTRIBUTES, oktaSourceSchema, type OktaSourceConfig, type OktaSourceConfigInput } from './config.ts';
import { createOktaClient, mapOktaError, oktaStatus, type OktaRateLimitExecutor } from './client.ts';
import { OKTA_EVENT_TYPES, changesFromLogEvents, handleOktaHook } from './events.ts';

type Plain = Record<string, unknown>;

/** SDK model instance → plain JSON (dates as ISO strings, undefined dropped). */
const plain = (v: unknown): Plain => JSON.parse(JSON.stringify(v ?? {})) as Plain;

interface NodeFetchLike {
  status: number;
  headers: { get(name: string): string | null };
  json(): Promise<unknown>;
}

export class OktaSource implements IdentitySource {
  readonly kind = 'okta' as const;
  readonly id: string;
  readonly capabilities: SourceCapabilities;
  readonly config: OktaSourceConfig;
  /** The SDK client (exposed for event-hook management by tooling). */
  readonly client: Client;
  readonly executor: OktaRateLimitExecutor;
  private readonly deps: ResolvedDeps;
  private readonly orgUrl: string;
  private readonly attributeMap: Record<string, string>;

  constructor(config: OktaSourceConfig, deps: ResolvedDeps) {
    this.config = config;
    this.deps = deps;
    this.id = deps.sourceId;
    this.orgUrl = config.orgUrl.replace(/\/+$/, '');
    this.attributeMap = { ...OKTA_DEFAULT_ATTRIBUTES, ...config.attributes };
    this.capabilities = { hooks: true, delta: config.delta.enabled, maintenance: false, recheckAfterMs: 0 };
    const { client, executor } = createOktaClient(config, deps);
    this.client = client;
    this.executor = executor;
  }

  async start(): Promise<void> {}
  async close(): Promise<void> {}

  async ping(): Promise<void> {
    await this.get(`${this.orgUrl}/api/v1/users?limit=1`, 'ping');
  }

  handleHook(req: HookRequest): HookResult {
    return handleOktaHook(req, {
      sourceId: this.id,
      secrets: [this.config.hook.secret, ...this.config.hook.previousSecrets],
      headerName: this.config.hook.headerName,
      now: this.deps.now,
    });
  }

  /** The user (GET /api/v1/users/{id}) with all groups (GET /api/v1/users/{id}/groups, paged), or null on 404. */
  async readUser(userId: string): Promise<SourceUser | null> {
    let user: unknown;
    try {
      user = await this.client.userApi.getUser({ userId });
    } catch (err) {
      if (oktaStatus(err) === 404) return null;
      throw mapOktaError(err, `get user ${userId}`, this.deps.now());
    }
    const groups: Array<{ id: string; displayName: string }> = [];
    try {
      const col = await this.client.userApi.listUserGroups({ userId });
      for await (const g of col) {
        const gp = plain(g);
        if (typeof gp.id === 'string') groups.push({ id: gp.id, displayName: str(getPath(gp, 'profile.name')) ?? gp.id });
      }
    } catch (err) {
      // Deleted between the two reads: the user is gone.
      if (oktaStatus(err) === 404) return null;
      throw mapOktaError(err, `list groups of ${userId}`, this.deps.now());
    }
    return this.toUser(plain(user), groups);
  }

  async readGroup(groupId: string): Promise<SourceGroup | null> {
    try {
      return this.toGroup(plain(await this.client.groupApi.getGroup({ groupId })));
    } catch (err) {
      if (oktaStatus(err) === 404) return null;
      throw mapOktaError(err, `get group ${groupId}`, this.deps.now());
    }
  }

  async *readGroupMembers(groupId: string): AsyncIterable<string[]> {
    const self = this;
    async function* ids(): AsyncIterable<string> {
      try {
        const col = await self.client.groupApi.listGroupUsers({ groupId, limit: self.config.pageSize });
        for await (const u of col) {
          const id = (u as { id?: unknown } | null)?.id;
          if (typeof id === 'string') yield id;
        }
      } catch (err) {
        throw mapOktaError(err, `list members of ${groupId}`, self.deps.now());
      }
    }
    yield* chunked(ids(), this.config.pageSize);
  }

  /**
   * Users (GET /api/v1/users, paged by `Link: rel=next`), then each group with its members. Users
   * carry no `groups` here (memberships come as `members` records). Okta's list omits
   * DEPROVISIONED users unless `userSearch` asks for them: they are then absent, i.e. gone.
   */
  async *readSnapshot(): AsyncIterable<SnapshotRecord> {
    const cursor = this.config.delta.enabled ? `since:${new Date(this.deps.now() - this.config.delta.overlapMs).toISOString()}` : undefined;
    let users = 0;
    let groups = 0;
    try {
      const userCol = await this.client.userApi.listUsers({
        limit: this.config.pageSize,
        ...(this.config.userSearch ? { search: this.config.userSearch } : {}),
      });
      for await (const u of userCol) {
        if (!u) continue;
        users++;
        yield { type: 'user', user: this.toUser(plain(u), undefined) };
      }
      const groupCol = await this.client.groupApi.listGroups({
        limit: this.config.pageSize,
        ...(this.config.groupSearch ? { search: this.config.groupSearch } : {}),
      });
      for await (const g of groupCol) {
        if (!g) continue;
        const group = this.toGroup(plain(g));
        groups++;
        yield { type: 'group', group };
        for await (const userIds of this.readGroupMembers(group.id)) yield { type: 'members', groupId: group.id, userIds };
      }
    } catch (err) {
      throw mapOktaError(err, 'snapshot', this.deps.now());
    }
    yield { type: 'complete', ...(cursor ? { cursor } : {}), users, groups, membership: 'members' };
  }

  /**
   * System Log polling (GET /api/v1/logs, ascending, filtered to the hook's event types). The
   * cursor is `since:<ISO>` or the `rel=next` link Okta returns for polling; the same LogEvent
   * parser as the hook produces the hints, so their dedupe keys match hook deliveries.
   */
  async readDelta(cursor: string): Promise<DeltaResult> {
    if (!this.config.delta.enabled) throw new IdentitySourceError('unsupported', 'okta: delta (System Log polling) is disabled');
    let url: string;
    if (cursor.startsWith('since:')) {
      const since = Date.parse(cursor.slice(6));
      if (Number.isNaN(since)) return { status: 'resync', reason: 'unreadable cursor' };
      const u = new URL(`${this.orgUrl}/api/v1/logs`);
      u.searchParams.set('since', new Date(since).toISOString());
      u.searchParams.set('sortOrder', 'ASCENDING');
      u.searchParams.set('limit', String(this.config.delta.pageLimit));
      u.searchParams.set('filter', OKTA_EVENT_TYPES.map((t) => `eventType eq "${t}"`).join(' or '));
      url = u.toString();
    } else if (cursor.startsWith(`${this.orgUrl}/api/v1/logs?`)) {
      url = cursor; // never follow a cursor to another host or path
    } else return { status: 'resync', reason: 'cursor is not a System Log link of this org' };

    const changes: Change[] = [];
    let more = false;
    for (let page = 0; page < this.config.delta.maxPages; page++) {
      let res: NodeFetchLike;
      try {
        res = await this.get(url, 'system log');
      } catch (err) {
        if (err instanceof IdentitySourceError && err.status === 400) return { status: 'resync', reason: `System Log rejected the cursor: ${err.message}` };
        throw err;
      }
      const events = await res.json();
      if (!Array.isArray(events)) throw new IdentitySourceError('permanent', 'okta: System Log answered without an array');
      changes.push(...changesFromLogEvents(events, this.id, new Date(this.deps.now()).toISOString(), `log:${url}`).changes);
      const next = parseLinkHeader(res.headers.get('link')).next;
      if (!next || !next.startsWith(`${this.orgUrl}/api/v1/logs?`)) break; // keep polling the same link
      url = next;
      if (events.length < this.config.delta.pageLimit) break;
      if (page === this.config.delta.maxPages - 1) more = true;
    }
    return { status: 'ok', changes, cursor: url, more };
  }

  async maintain(): Promise<MaintenanceResult> {
    return NO_MAINTENANCE;
  }

  async runTask(task: SourceTask): Promise<MaintenanceResult> {
    throw new IdentitySourceError('permanent', `okta: unknown task ${task.type}`);
  }

  private async get(url: string, what: string): Promise<NodeFetchLike> {
    try {
      const http = (this.client as unknown as { http: { http(u: string, r: Record<string, unknown>): Promise<NodeFetchLike> } }).http;
      return await http.http(url, { method: 'get', headers: { Accept: 'application/json' } });
    } catch (err) {
      throw mapOktaError(err, what, this.deps.now());
    }
  }

  private toUser(u: Plain, groups: Array<{ id: string; displayName: string }> | undefined): SourceUser {
    const id = String(u.id);
    const profile = (u.profile ?? {}) as Plain;
    const givenName = str(profile.firstName);
    const familyName = str(profile.lastName);
    const displayName = str(profile.displayName) ?? ([givenName, familyName].filter(Boolean).join(' ') || undefined);
    const externalId = this.config.externalIdFrom === 'id' ? id : str(getPath(u, this.config.externalIdFrom));
    const email = str(profile.email);
    const { credentials: _c, _links: _l, ...raw } = u;
    return {
      sourceId: this.id,
      id,
      userName: str(profile.login) ?? id,
      ...(externalId !== undefined ? { externalId } : {}),
      active: this.config.activeStatuses.includes(String(u.status)),
      ...(email !== undefined ? { email } : {}),
      ...(givenName !== undefined ? { givenName } : {}),
      ...(familyName !== undefined ? { familyName } : {}),
      ...(displayName !== undefined ? { displayName } : {}),
      roles: this.config.rolesAttribute ? roleList(getPath(u, this.config.rolesAttribute)) : [],
      attributes: mapAttributes(u, this.attributeMap),
      ...(groups ? { groups } : {}),
      raw,
    };
  }

  private toGroup(g: Plain): SourceGroup {
    const id = String(g.id);
    const { _links: _l, ...raw } = g;
    return { sourceId: this.id, id, displayName: str(getPath(g, 'profile.name')) ?? id, raw };
  }
}

/**
 * An Okta org as an IdentitySource. `config` is the `sources[].okta` section (validated again
 * here); `deps.sourceId` is the source's id. The API side uses @okta/okta-sdk-nodejs (its own
 * node-fetch transport: `deps.fetch` is not used; tests mock it with nock).
 */
export function createOktaSource(config: OktaSourceConfigInput, deps: SourceDeps): OktaSource {
  return new OktaSource(oktaSourceSchema.parse(config), resolveDeps(deps));
}
