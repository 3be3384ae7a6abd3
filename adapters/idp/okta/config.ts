import { z } from 'zod';
import { httpPolicySchema } from '../shared/http.ts';

/** Okta defaults for `attributes` (lockstep attribute → path in the Okta user object). */
export const OKTA_DEFAULT_ATTRIBUTES: Record<string, string> = {
  department: 'profile.department',
  division: 'profile.division',
  organization: 'profile.organization',
  costCenter: 'profile.costCenter',
  employeeNumber: 'profile.employeeNumber',
  title: 'profile.title',
  userType: 'profile.userType',
  employeeType: 'profile.userType',
  status: 'status',
};

/** User statuses that count as active. SUSPENDED, DEPROVISIONED and STAGED are not active. */
export const OKTA_DEFAULT_ACTIVE_STATUSES = ['ACTIVE', 'PROVISIONED', 'RECOVERY', 'PASSWORD_EXPIRED', 'LOCKED_OUT'];

/**
 * `sources[].okta`: an Okta org as an event-hook + API source.
 * The API side needs read scopes on users, groups and (for `delta`) the System Log.
 */
export const oktaSourceSchema = z
  .object({
    /** Okta org URL, e.g. https://acme.okta.com (no path). */
    orgUrl: z.url(),
    /** API credentials: an SSWS API token, or an OAuth service app (private_key_jwt). */
    auth: z.discriminatedUnion('type', [
      z.object({ type: z.literal('ssws'), token: z.string().min(1) }).strict(),
      z
        .object({
          type: z.literal('privateKey'),
          clientId: z.string().min(1),
          /** PEM or JWK (JSON string) of the service app's key. */
          privateKey: z.string().min(1),
          keyId: z.string().optional(),
          scopes: z.array(z.string().min(1)).min(1).default(['okta.users.read', 'okta.groups.read', 'okta.logs.read']),
        })
        .strict(),
    ]),
    /** The event hook: Okta sends `secret` in `headerName` on every delivery (hook `authScheme`). */
    hook: z
      .object({
        secret: z.string().min(16, 'use a long random secret (at least 16 characters)'),
        /** Header Okta puts the secret in (`channel.config.authScheme.key`). */
        headerName: z.string().min(1).default('authorization'),
        /** Secrets still accepted while rotating (constant-time compared, like `secret`). */
        previousSecrets: z.array(z.string().min(16)).default([]),
      })
      .strict(),
    /** Okta user statuses that count as active. */
    activeStatuses: z.array(z.string().min(1)).min(1).default(OKTA_DEFAULT_ACTIVE_STATUSES),
    /** Profile attribute holding role names (string or string[]), e.g. `profile.lockstepRoles`. */
    rolesAttribute: z.string().min(1).optional(),
    /** Extra/overriding attribute mappings: lockstep attribute → path (`profile.site`, `status`). */
    attributes: z.record(z.string(), z.string()).default({}),
    /** What `externalId` carries: `id` (the Okta user id, as Okta's SCIM client sends it) or a path (`profile.employeeNumber`). */
    externalIdFrom: z.string().min(1).default('id'),
    /** Okta `search` expression limiting the users a snapshot reads (default: all but DEPROVISIONED). */
    userSearch: z.string().min(1).optional(),
    /** Okta `search` expression limiting the groups a snapshot reads, e.g. `type eq "OKTA_GROUP"`. */
    groupSearch: z.string().min(1).optional(),
    /** Page size for users/groups (Okta maximum 200 for users). */
    pageSize: z.number().int().min(1).max(200).default(200),
    /** System Log polling for `readDelta` (the backstop for lost hook deliveries). */
    delta: z
      .object({
        enabled: z.boolean().default(true),
        /** Events per System Log page (max 1000). */
        pageLimit: z.number().int().min(1).max(1000).default(1000),
        /** Pages per `readDelta` call; `more: true` when there is more. */
        maxPages: z.number().int().min(1).max(100).default(10),
        /** A snapshot's cursor starts this long before the snapshot (clock skew, in-flight events). */
        overlapMs: z.number().int().min(0).default(60_000),
      })
      .strict()
      .default({ enabled: true, pageLimit: 1000, maxPages: 10, overlapMs: 60_000 }),
    http: httpPolicySchema.default(httpPolicySchema.parse({})),
  })
  .strict();

export type OktaSourceConfig = z.infer<typeof oktaSourceSchema>;
export type OktaSourceConfigInput = z.input<typeof oktaSourceSchema>;
