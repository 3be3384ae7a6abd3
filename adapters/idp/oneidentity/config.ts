import { z } from 'zod';
import { httpPolicySchema } from '../shared/http.ts';

export const SCIM_ENTERPRISE_USER = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';

/** Defaults for `attributes` (lockstep attribute → path in the SCIM User), as the SCIM server maps pushes. */
export const ONEIDENTITY_DEFAULT_ATTRIBUTES: Record<string, string> = {
  department: `${SCIM_ENTERPRISE_USER}.department`,
  division: `${SCIM_ENTERPRISE_USER}.division`,
  organization: `${SCIM_ENTERPRISE_USER}.organization`,
  costCenter: `${SCIM_ENTERPRISE_USER}.costCenter`,
  employeeNumber: `${SCIM_ENTERPRISE_USER}.employeeNumber`,
  title: 'title',
  userType: 'userType',
  employeeType: 'userType',
};

/**
 * `sources[].oneidentity`: One Identity Manager's SCIM 2.0 service provider (API Server plugin,
 * `https://<host>/ApiServer/scim/v2`), read for reconciliation only (OneIM has no outbound
 * webhooks; pushes arrive through lockstep's SCIM server). Basic or OAuth 2.0 client credentials.
 */
export const oneIdentitySourceSchema = z
  .object({
    /** OneIM API Server host, e.g. https://oneim.acme.example */
    baseUrl: z.url(),
    /** Path of the SCIM service provider below baseUrl. */
    scimPath: z.string().startsWith('/').default('/ApiServer/scim/v2'),
    auth: z.discriminatedUnion('type', [
      z.object({ type: z.literal('basic'), userName: z.string().min(1), password: z.string().min(1) }).strict(),
      z
        .object({
          type: z.literal('oauth'),
          tokenUrl: z.url(),
          clientId: z.string().min(1),
          clientSecret: z.string().min(1),
          scope: z.string().min(1).optional(),
          /** Send client id/secret as HTTP Basic (client_secret_basic) instead of form fields. */
          basicClientAuth: z.boolean().default(false),
        })
        .strict(),
    ]),
    /** SCIM `count` per page. */
    pageSize: z.number().int().min(1).max(1000).default(100),
    /** SCIM filter limiting the users read (e.g. `active eq true` is NOT advisable: inactive users must be seen to be revoked). */
    userFilter: z.string().min(1).optional(),
    /** SCIM filter limiting the groups read. */
    groupFilter: z.string().min(1).optional(),
    /** Extra/overriding attribute mappings: lockstep attribute → SCIM path (`urn:…:enterprise:2.0:User.department`). */
    attributes: z.record(z.string(), z.string()).default({}),
    /** What `externalId` carries: a SCIM path (`externalId`, `userName`, `urn:…:enterprise:2.0:User.employeeNumber`). */
    externalIdFrom: z.string().min(1).default('externalId'),
    http: httpPolicySchema.default(httpPolicySchema.parse({})),
  })
  .strict();

export type OneIdentitySourceConfig = z.infer<typeof oneIdentitySourceSchema>;
export type OneIdentitySourceConfigInput = z.input<typeof oneIdentitySourceSchema>;
