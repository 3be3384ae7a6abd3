import { z } from 'zod';
import { httpPolicySchema } from '../shared/http.ts';

/** ISC defaults for `attributes` (lockstep attribute → path in the identity search document). */
export const SAILPOINT_DEFAULT_ATTRIBUTES: Record<string, string> = {
  department: 'attributes.department',
  site: 'attributes.location',
  employeeNumber: 'employeeNumber',
  employeeType: 'attributes.employeeType',
  title: 'attributes.title',
  costCenter: 'attributes.costCenter',
  lifecycleState: 'attributes.cloudLifecycleState',
  terminationDate: 'attributes.endDate',
};

const accessType = z.enum(['ROLE', 'ACCESS_PROFILE', 'ENTITLEMENT']);

/**
 * `sources[].sailpoint`: SailPoint Identity Security Cloud (IdentityNow) event triggers
 * (`idn:identity-created`, `idn:identity-attributes-changed`, `idn:identity-deleted`) plus the
 * v3 search API for confirmation and reconciliation. The API client (personal access token or
 * OAuth client) needs read access to identities, search and access profiles.
 */
export const sailpointSourceSchema = z
  .object({
    /** API base, e.g. https://acme.api.identitynow.com */
    apiUrl: z.url(),
    clientId: z.string().min(1),
    clientSecret: z.string().min(1),
    /** OAuth token endpoint; default `{apiUrl}/oauth/token`. */
    tokenUrl: z.url().optional(),
    /** What the trigger subscription sends (`httpAuthenticationType`); NO_AUTH is not accepted. */
    hookAuth: z.discriminatedUnion('type', [
      z.object({ type: z.literal('basic'), userName: z.string().min(1), password: z.string().min(16, 'use a long random password (at least 16 characters)') }).strict(),
      z.object({ type: z.literal('bearer'), token: z.string().min(32, 'use a long random token (at least 32 characters)') }).strict(),
    ]),
    /** Identity attribute holding the lifecycle state (technical name). */
    lifecycleAttribute: z.string().min(1).default('cloudLifecycleState'),
    /** Lifecycle states that count as active; any other state is inactive. Identities without a state fall back to `!inactive`. */
    activeLifecycleStates: z.array(z.string().min(1)).min(1).default(['active']),
    /** Access item types reported as `roles` (names). */
    rolesFrom: z.array(accessType).default(['ROLE']),
    /** Access item types reported as `groups` ({id, displayName}). */
    groupsFrom: z.array(accessType).default(['ACCESS_PROFILE']),
    /** Search query selecting the identities lockstep reconciles (ISC search syntax). */
    searchQuery: z.string().min(1).default('*'),
    /** Search page size (ISC maximum 250 with searchAfter paging). */
    pageSize: z.number().int().min(1).max(250).default(250),
    /** Extra/overriding attribute mappings: lockstep attribute → identity document path (`attributes.site`). */
    attributes: z.record(z.string(), z.string()).default({}),
    /** What `externalId` carries: an identity document path. */
    externalIdFrom: z.string().min(1).default('employeeNumber'),
    /** The search index lags behind identity changes: the core re-confirms a hint after this delay. */
    recheckAfterMs: z.number().int().min(0).default(60_000),
    http: httpPolicySchema.default(httpPolicySchema.parse({})),
  })
  .strict();

export type SailpointSourceConfig = z.infer<typeof sailpointSourceSchema>;
export type SailpointSourceConfigInput = z.input<typeof sailpointSourceSchema>;
