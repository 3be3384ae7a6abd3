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
import { isObj } from '../shared/hook.ts';
import { JsonHttpClient, oauthClientCredentials, resolveDeps, type ResolvedDeps, type SourceDeps } from '../shared/http.ts';
import { getPath, mapAttributes, str } from '../shared/mapping.ts';
import { SAILPOINT_DEFAULT_ATTRIBUTES, sailpointSourceSchema, type SailpointSourceConfig, type SailpointSourceConfigInput } from './config.ts';
import { expectedAuthorization, handleSailpointHook } from './triggers.ts';

type Obj = Record<string, unknown>;

/**
 * SailPoint ISC through the v3 API (OAuth client credentials, `POST /oauth/token`):
 * - confirmation: `GET /v3/search/identities/{id}` — the identity document with attributes
 *   (incl. `cloudLifecycleState`), `inactive` and `access` (roles, access profiles, entitlements);
 * - reconciliation: `POST /v3/search` over the `identities` index, sorted by id and paged with
 *   `searchAfter` (beyond the 10,000-offset limit), `limit` ≤ 250.
 * The search index is eventually consistent, hence `capabilities.recheckAfterMs`.
 * There is no delta: fire-and-forget triggers have no resend, so run snapshots periodically.
 */
export class SailpointSource implements IdentitySource {
  readonly kind = 'sailpoint' as const;
  readonly id: string;
  readonly capabilities: SourceCapabilities;
  readonly config: SailpointSourceConfig;
  private readonly deps: ResolvedDeps;
  private readonly http: JsonHttpClient;
  private readonly expectedAuth: string;
  private readonly attributeMap: Record<string, string>;

  constructor(config: SailpointSourceConfig, deps: ResolvedDeps) {
    this.config = config;
    this.deps = deps;
    this.id = deps.sourceId;
    const apiUrl = config.apiUrl.replace(/\/+$/, '');
    const auth = oauthClientCredentials({
      tokenUrl: config.tokenUrl ?? `${apiUrl}/oauth/token`,
      clientId: config.clientId,
      clientSecret: config.clientSecret,
      deps,
      timeoutMs: config.http.timeoutMs,
    });
    this.http = new JsonHttpClient({ name: 'sailpoint', baseUrl: apiUrl, policy: config.http, deps, auth });
    this.expectedAuth = expectedAuthorization(config.hookAuth);
    this.attributeMap = { ...SAILPOINT_DEFAULT_ATTRIBUTES, ...config.attributes };
    this.capabilities = { hooks: true, delta: false, maintenance: false, recheckAfterMs: config.recheckAfterMs };
  }

  async start(): Promise<void> {}
  async close(): Promise<void> {}

  async ping(): Promise<void> {
    await this.search(this.config.searchQuery, undefined, 1);
  }

  handleHook(req: HookRequest): HookResult {
    return handleSailpointHook(req, {
      sourceId: this.id,
      expectedAuthorization: this.expectedAuth,
      lifecycleAttribute: this.config.lifecycleAttribute,
      activeLifecycleStates: this.config.activeLifecycleStates,
      now: this.deps.now,
    });
  }

  async readUser(userId: string): Promise<SourceUser | null> {
    const res = await this.http.request('GET', `/v3/search/identities/${encodeURIComponent(userId)}`);
    if (res.status === 404 || !isObj(res.body)) return null;
    return this.toUser(res.body);
  }

  async readGroup(groupId: string): Promise<SourceGroup | null> {
    const res = await this.http.request('GET', `/v3/access-profiles/${encodeURIComponent(groupId)}`);
    if (res.status === 404 || !isObj(res.body)) return null;
    const id = String(res.body.id ?? groupId);
    return { sourceId: this.id, id, displayName: str(res.body.name) ?? id, raw: res.body };
  }

  /** Identities holding the access item (`@access(id:…)`), one search page per item. */
  async *readGroupMembers(groupId: string): AsyncIterable<string[]> {
    const query = `@access(id:"${groupId.replace(/["\\]/g, '')}")`;
    for await (const page of this.pages(query, ['id'])) {
      const ids = page.map((d) => d.id).filter((id): id is string => typeof id === 'string');
      if (ids.length) yield ids;
    }
  }

  async *readSnapshot(): AsyncIterable<SnapshotRecord> {
    let users = 0;
    const groups = new Set<string>();
    for await (const page of this.pages(this.config.searchQuery)) {
      for (const doc of page) {
        if (typeof doc.id !== 'string') continue;
        const user = this.toUser(doc);
        for (const g of user.groups ?? []) groups.add(g.id);
        users++;
        yield { type: 'user', user };
      }
    }
    yield { type: 'complete', users, groups: groups.size, membership: 'user-groups' };
  }

  async readDelta(_cursor: string): Promise<DeltaResult> {
    throw unsupported('sailpoint: no delta API; reconcile with readSnapshot');
  }

  async maintain(): Promise<MaintenanceResult> {
    return NO_MAINTENANCE;
  }

  async runTask(task: SourceTask): Promise<MaintenanceResult> {
    throw new IdentitySourceError('permanent', `sailpoint: unknown task ${task.type}`);
  }

  /** Search pages sorted by id, continued with `searchAfter: [lastId]`. */
  private async *pages(query: string, includes?: string[]): AsyncIterable<Obj[]> {
    let after: string | undefined;
    for (;;) {
      const page = await this.search(query, after, this.config.pageSize, includes);
      if (page.length > 0) yield page;
      if (page.length < this.config.pageSize) return;
      const last = page[page.length - 1]!.id;
      if (typeof last !== 'string' || last === after) throw new IdentitySourceError('permanent', 'sailpoint: search paging did not advance');
      after = last;
    }
  }

  private async search(query: string, after: string | undefined, limit: number, includes?: string[]): Promise<Obj[]> {
    const res = await this.http.request('POST', '/v3/search', {
      query: { limit },
      json: {
        indices: ['identities'],
        query: { query },
        sort: ['id'],
        ...(after !== undefined ? { searchAfter: [after] } : {}),
        ...(includes ? { queryResultFilter: { includes } } : {}),
      },
    });
    if (res.status === 404) throw new IdentitySourceError('permanent', 'sailpoint: /v3/search not found (check apiUrl)');
    if (!Array.isArray(res.body)) throw new IdentitySourceError('permanent', 'sailpoint: search answered without an array');
    return res.body.filter(isObj);
  }

  private toUser(doc: Obj): SourceUser {
    const id = String(doc.id);
    const attrs = isObj(doc.attributes) ? doc.attributes : {};
    const state = str(attrs[this.config.lifecycleAttribute]);
    const inactive = doc.inactive === true || String(doc.inactive).toLowerCase() === 'true';
    const active = !inactive && (state === undefined || this.config.activeLifecycleStates.includes(state));
    const access = Array.isArray(doc.access) ? doc.access.filter(isObj) : [];
    const ofType = (types: readonly string[]) => access.filter((a) => types.includes(String(a.type)));
    const roles = [...new Set(ofType(this.config.rolesFrom).map((a) => str(a.name) ?? str(a.displayName)).filter((n): n is string => n !== undefined))];
    const groups = ofType(this.config.groupsFrom)
      .filter((a) => typeof a.id === 'string')
      .map((a) => ({ id: String(a.id), displayName: str(a.name) ?? str(a.displayName) ?? String(a.id) }));
    const externalId = str(getPath(doc, this.config.externalIdFrom));
    const email = str(doc.email) ?? str(attrs.email);
    const givenName = str(doc.firstName) ?? str(attrs.firstname);
    const familyName = str(doc.lastName) ?? str(attrs.lastname);
    const displayName = str(doc.displayName) ?? str(attrs.displayName);
    return {
      sourceId: this.id,
      id,
      userName: str(doc.name) ?? id,
      ...(externalId !== undefined ? { externalId } : {}),
      active,
      ...(email !== undefined ? { email } : {}),
      ...(givenName !== undefined ? { givenName } : {}),
      ...(familyName !== undefined ? { familyName } : {}),
      ...(displayName !== undefined ? { displayName } : {}),
      roles,
      attributes: mapAttributes(doc, this.attributeMap),
      groups,
      raw: doc,
    };
  }
}

/**
 * A SailPoint ISC tenant as an IdentitySource. `config` is the `sources[].sailpoint` section;
 * `deps.sourceId` is the source's id; `deps.fetch` carries all calls (token and API).
 */
export function createSailpointSource(config: SailpointSourceConfigInput, deps: SourceDeps): SailpointSource {
  return new SailpointSource(sailpointSourceSchema.parse(config), resolveDeps(deps));
}
