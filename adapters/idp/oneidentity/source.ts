import {
  IdentitySourceError,
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
import { NO_MAINTENANCE, unsupported } from '../shared/changes.ts';
import { isObj, rejected } from '../shared/hook.ts';
import { JsonHttpClient, basicAuth, oauthClientCredentials, resolveDeps, type ResolvedDeps, type SourceDeps } from '../shared/http.ts';
import { getPath, mapAttributes, roleList, str } from '../shared/mapping.ts';
import { ONEIDENTITY_DEFAULT_ATTRIBUTES, oneIdentitySourceSchema, type OneIdentitySourceConfig, type OneIdentitySourceConfigInput } from './config.ts';

type Obj = Record<string, unknown>;

const SCIM_ACCEPT = 'application/scim+json, application/json';

/** SCIM ListResponse pages: `startIndex` (1-based) / `count` until `totalResults`. */
interface ListResponse {
  totalResults?: unknown;
  itemsPerPage?: unknown;
  startIndex?: unknown;
  Resources?: unknown;
}

function primaryEmail(emails: unknown): string | undefined {
  if (!Array.isArray(emails)) return undefined;
  const list = emails.filter(isObj);
  const pick = list.find((e) => e.primary === true) ?? list.find((e) => String(e.type ?? '').toLowerCase() === 'work') ?? list[0];
  return str(pick?.value);
}

/**
 * One Identity Manager through its SCIM 2.0 service provider — pull only:
 * `GET {base}/ApiServer/scim/v2/Users` and `/Groups`, paged with startIndex/count until
 * totalResults; `GET /Users/{id}` to confirm (groups from the user's `groups` attribute, or
 * `GET /Groups?filter=members.value eq "{id}"` when the server does not return it).
 */
export class OneIdentitySource implements IdentitySource {
  readonly kind = 'oneidentity' as const;
  readonly id: string;
  readonly capabilities: SourceCapabilities = { hooks: false, delta: false, maintenance: false, recheckAfterMs: 0 };
  readonly config: OneIdentitySourceConfig;
  private readonly deps: ResolvedDeps;
  private readonly http: JsonHttpClient;
  private readonly attributeMap: Record<string, string>;

  constructor(config: OneIdentitySourceConfig, deps: ResolvedDeps) {
    this.config = config;
    this.deps = deps;
    this.id = deps.sourceId;
    const a = config.auth;
    const auth =
      a.type === 'basic'
        ? basicAuth(a.userName, a.password)
        : oauthClientCredentials({
            tokenUrl: a.tokenUrl,
            clientId: a.clientId,
            clientSecret: a.clientSecret,
            ...(a.scope ? { scope: a.scope } : {}),
            basicClientAuth: a.basicClientAuth,
            deps,
            timeoutMs: config.http.timeoutMs,
          });
    this.http = new JsonHttpClient({
      name: 'oneidentity',
      baseUrl: `${config.baseUrl.replace(/\/+$/, '')}${config.scimPath.replace(/\/+$/, '')}`,
      policy: config.http,
      deps,
      auth,
      headers: { accept: SCIM_ACCEPT },
    });
    this.attributeMap = { ...ONEIDENTITY_DEFAULT_ATTRIBUTES, ...config.attributes };
  }

  async start(): Promise<void> {}
  async close(): Promise<void> {}

  async ping(): Promise<void> {
    await this.list('/Users', { count: 1, attributes: 'id' }).next();
  }

  /** One Identity Manager sends no webhooks: nothing is mounted for it. */
  handleHook(_req: HookRequest): HookResult {
    return rejected(404, 'oneidentity sources have no webhook');
  }

  async readUser(userId: string): Promise<SourceUser | null> {
    const res = await this.http.request('GET', `/Users/${encodeURIComponent(userId)}`);
    if (res.status === 404 || !isObj(res.body)) return null;
    const user = res.body;
    let groups: Array<{ id: string; displayName: string }>;
    if (Array.isArray(user.groups)) groups = this.userGroups(user.groups);
    else {
      groups = [];
      const filter = `members.value eq "${userId.replace(/["\\]/g, '')}"`;
      for await (const g of this.list('/Groups', { filter, attributes: 'id,displayName' })) groups.push(this.groupRef(g));
    }
    return this.toUser(user, groups);
  }

  async readGroup(groupId: string): Promise<SourceGroup | null> {
    const res = await this.http.request('GET', `/Groups/${encodeURIComponent(groupId)}`, { query: { excludedAttributes: 'members' } });
    if (res.status === 404 || !isObj(res.body)) return null;
    return this.toGroup(res.body);
  }

  async *readGroupMembers(groupId: string): AsyncIterable<string[]> {
    const res = await this.http.request('GET', `/Groups/${encodeURIComponent(groupId)}`, { query: { attributes: 'members' } });
    if (res.status === 404 || !isObj(res.body)) return;
    yield* this.memberPages(res.body.members);
  }

  /** Users (without `groups`), then groups with their members; memberships come as members records. */
  async *readSnapshot(): AsyncIterable<SnapshotRecord> {
    let users = 0;
    let groups = 0;
    for await (const u of this.list('/Users', this.config.userFilter ? { filter: this.config.userFilter } : {})) {
      if (typeof u.id !== 'string') continue;
      users++;
      yield { type: 'user', user: this.toUser(u, undefined) };
    }
    for await (const g of this.list('/Groups', this.config.groupFilter ? { filter: this.config.groupFilter } : {})) {
      if (typeof g.id !== 'string') continue;
      groups++;
      yield { type: 'group', group: this.toGroup(g) };
      for await (const userIds of this.memberPages(g.members)) yield { type: 'members', groupId: g.id, userIds };
    }
    yield { type: 'complete', users, groups, membership: 'members' };
  }

  async readDelta(_cursor: string): Promise<DeltaResult> {
    throw unsupported('oneidentity: no delta; reconcile with readSnapshot');
  }

  async maintain(): Promise<MaintenanceResult> {
    return NO_MAINTENANCE;
  }

  async runTask(task: SourceTask): Promise<MaintenanceResult> {
    throw new IdentitySourceError('permanent', `oneidentity: unknown task ${task.type}`);
  }

  /** All resources of a SCIM list, page by page (startIndex/count until totalResults). */
  private async *list(path: string, params: Record<string, string | number>): AsyncGenerator<Obj> {
    let startIndex = 1;
    let seen = 0;
    for (let guard = 0; guard < 1_000_000; guard++) {
      const res = await this.http.request('GET', path, { query: { ...params, startIndex, count: params.count ?? this.config.pageSize } });
      if (res.status === 404) throw new IdentitySourceError('permanent', `oneidentity: ${path} not found (check baseUrl/scimPath)`);
      const body = res.body as ListResponse;
      if (!isObj(body) || (body.Resources !== undefined && !Array.isArray(body.Resources)))
        throw new IdentitySourceError('permanent', `oneidentity: ${path} answered without a SCIM ListResponse`);
      const resources = ((body.Resources as unknown[] | undefined) ?? []).filter(isObj);
      for (const r of resources) yield r;
      seen += resources.length;
      const total = Number(body.totalResults);
      if (resources.length === 0 || !Number.isFinite(total) || seen >= total) return;
      startIndex += resources.length;
    }
  }

  private *memberPages(members: unknown): Iterable<string[]> {
    if (!Array.isArray(members)) return;
    const users = members
      .filter(isObj)
      .filter((m) => typeof m.value === 'string' && (m.type === undefined || String(m.type).toLowerCase() === 'user'))
      .map((m) => String(m.value));
    for (let i = 0; i < users.length; i += this.config.pageSize) yield users.slice(i, i + this.config.pageSize);
  }

  private userGroups(groups: unknown[]): Array<{ id: string; displayName: string }> {
    return groups
      .filter(isObj)
      .filter((g) => typeof g.value === 'string')
      .map((g) => ({ id: String(g.value), displayName: str(g.display) ?? String(g.value) }));
  }

  private groupRef(g: Obj): { id: string; displayName: string } {
    return { id: String(g.id), displayName: str(g.displayName) ?? String(g.id) };
  }

  private toGroup(g: Obj): SourceGroup {
    const id = String(g.id);
    const externalId = str(g.externalId);
    const { members: _m, ...raw } = g;
    return { sourceId: this.id, id, displayName: str(g.displayName) ?? id, ...(externalId ? { externalId } : {}), raw };
  }

  private toUser(u: Obj, groups: Array<{ id: string; displayName: string }> | undefined): SourceUser {
    const id = String(u.id);
    const name = isObj(u.name) ? u.name : {};
    const email = primaryEmail(u.emails);
    const givenName = str(name.givenName);
    const familyName = str(name.familyName);
    const displayName = str(u.displayName) ?? str(name.formatted);
    const externalId = str(getPath(u, this.config.externalIdFrom));
    const { groups: _g, password: _p, ...raw } = u;
    return {
      sourceId: this.id,
      id,
      userName: str(u.userName) ?? id,
      ...(externalId !== undefined ? { externalId } : {}),
      // As lockstep's SCIM server reads pushes: a missing `active` is active, only false is not.
      active: u.active !== false && String(u.active).toLowerCase() !== 'false',
      ...(email !== undefined ? { email } : {}),
      ...(givenName !== undefined ? { givenName } : {}),
      ...(familyName !== undefined ? { familyName } : {}),
      ...(displayName !== undefined ? { displayName } : {}),
      roles: roleList(u.roles),
      attributes: mapAttributes(u, this.attributeMap),
      ...(groups ? { groups } : {}),
      raw,
    };
  }
}

/**
 * One Identity Manager's SCIM service provider as a (pull-only) IdentitySource. `config` is the
 * `sources[].oneidentity` section; `deps.sourceId` is the source's id; `deps.fetch` carries calls.
 */
export function createOneIdentitySource(config: OneIdentitySourceConfigInput, deps: SourceDeps): OneIdentitySource {
  return new OneIdentitySource(oneIdentitySourceSchema.parse(config), resolveDeps(deps));
}
