import SCIMMY from 'scimmy';

/**
 * scimmy declarations: which resource types and schema extensions lockstep serves.
 *
 * scimmy keeps resource types, schemas and config in process-wide singletons. Everything here
 * is the same for every app instance and every tenant, so it is declared once per process;
 * per-request facts (tenant, store, base URL) travel in the `ctx` argument of read/write/
 * patch/dispose and never in scimmy's statics (see resources.ts).
 */

export const ENTERPRISE_USER = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';
export const LOCKSTEP_USER = 'urn:ietf:params:scim:schemas:extension:lockstep:2.0:User';
export const CORE_USER = 'urn:ietf:params:scim:schemas:core:2.0:User';
export const CORE_GROUP = 'urn:ietf:params:scim:schemas:core:2.0:Group';
export const LIST_RESPONSE = 'urn:ietf:params:scim:api:messages:2.0:ListResponse';
export const PATCH_OP = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';

/** Largest page we serve; also advertised as filter.maxResults. */
export const MAX_RESULTS = 1000;
/** Page size when the client sends no `count` (Okta and SailPoint always send one). */
export const DEFAULT_COUNT = 100;

const { Attribute, SchemaDefinition } = SCIMMY.Types;

/** lockstep's own attributes: facts about a person that access policy needs and no standard schema carries. */
export const lockstepUserExtension = new SchemaDefinition(
  'LockstepUser',
  LOCKSTEP_USER,
  'Attributes lockstep uses for physical access policy (site, end of employment or contract).',
  [
    new Attribute('dateTime', 'terminationDate', {
      description: 'Date and time employment ends; physical access is revoked at this time even if no deprovisioning arrives.',
    }),
    new Attribute('dateTime', 'contractEndDate', {
      description: 'Date and time a fixed-term contract ends; physical access is revoked at this time unless extended.',
    }),
    new Attribute('string', 'site', {
      description: 'Site or location code the person works at; access policy rules may grant per site.',
    }),
    new Attribute('string', 'employeeType', {
      description: 'Employment type for access policy (e.g. Employee, Contractor). Defaults to the core userType when absent.',
    }),
  ],
);

let declared = false;

/** Declares User (with enterprise and lockstep extensions), Group and the service provider config. Idempotent. */
export function declareScimmy(handlers: { user: UserHandlers; group: GroupHandlers }): void {
  if (declared) return;
  declared = true;
  // scimmy's typings do not accept a SchemaDefinition extension or context-typed handlers (scimmy#45); the runtime does.
  const User = SCIMMY.Resources.User as unknown as Declarable;
  const Group = SCIMMY.Resources.Group as unknown as Declarable;
  User.extend(SCIMMY.Schemas.EnterpriseUser, false).extend(lockstepUserExtension, false);
  SCIMMY.Resources.declare(SCIMMY.Resources.User);
  SCIMMY.Resources.declare(SCIMMY.Resources.Group);
  User.ingress(handlers.user.ingress).egress(handlers.user.egress).degress(handlers.user.degress);
  Group.ingress(handlers.group.ingress).egress(handlers.group.egress).degress(handlers.group.degress);
  SCIMMY.Config.set({
    patch: { supported: true },
    // Filters are translated to SQL; only eq (and `and`) on indexed attributes is served.
    filter: { supported: true, maxResults: MAX_RESULTS },
    bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
    changePassword: { supported: false },
    sort: { supported: false },
    etag: { supported: false },
    authenticationSchemes: [
      {
        type: 'oauthbearertoken',
        name: 'Bearer token',
        description: 'Long-lived bearer token configured per source (sources[].scim.tokenSha256).',
        specUri: 'https://www.rfc-editor.org/info/rfc6750',
        primary: true,
      },
    ],
  });
}

interface Declarable {
  extend(extension: unknown, required?: boolean): Declarable;
  ingress(handler: unknown): Declarable;
  egress(handler: unknown): Declarable;
  degress(handler: unknown): Declarable;
}

export interface UserHandlers {
  ingress: (...args: never[]) => Promise<Record<string, unknown>>;
  egress: (...args: never[]) => Promise<Record<string, unknown>>;
  degress: (...args: never[]) => Promise<void>;
}
export type GroupHandlers = UserHandlers;
