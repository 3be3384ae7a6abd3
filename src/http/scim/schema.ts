import SCIMMY from 'scimmy';

/**
 * scimmy declarations: which resource types and schema extensions lockstep serves.
 *
 * scimmy is used for its schema definitions (published on /Schemas and /ResourceTypes, and the
 * source of the compiled request coercers in coerce.ts), the ServiceProviderConfig, and for
 * applying general PATCH operations (patch.ts). Requests are not routed through scimmy's
 * Resource classes: reads, filters, paging and membership changes go straight to the store.
 *
 * scimmy keeps definitions and config in process-wide singletons. Everything here is the same
 * for every app instance and every tenant, so it is declared once per process.
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
      description: 'Date and time employment ends; physical access is revoked at this time even if no deprovisioning arrives. Policy attribute "terminationDate".',
    }),
    new Attribute('dateTime', 'contractEndDate', {
      description: 'Date and time a fixed-term contract ends; physical access is revoked at this time unless extended. Policy attribute "contractEndDate".',
    }),
    new Attribute('string', 'site', {
      description: 'Site or location code the person works at; access policy rules may grant per site. Policy attribute "site".',
    }),
    new Attribute('string', 'employeeType', {
      description: 'Employment type for access policy (e.g. Employee, Contractor). Defaults to the core userType when absent. Policy attribute "employeeType".',
    }),
  ],
);

/**
 * canonicalValues as scimmy's definitions list them, per "Schema:attribute.sub". They are
 * published on /Schemas but not enforced (see coerce.ts): scimmy would otherwise refuse Entra's
 * role type, and could not even load a stored user that carries one to apply a PATCH.
 */
const canonical = new Map<string, unknown[]>();

let declared = false;

interface ConfigurableAttribute {
  name: string;
  config: { canonicalValues: unknown };
  subAttributes?: ConfigurableAttribute[];
}

function relaxCanonicalValues(schema: string, attributes: ConfigurableAttribute[], prefix = ''): void {
  for (const a of attributes) {
    if (Array.isArray(a.config.canonicalValues)) {
      canonical.set(`${schema}:${prefix}${a.name}`, a.config.canonicalValues);
      a.config.canonicalValues = false;
    }
    if (a.subAttributes) relaxCanonicalValues(schema, [...a.subAttributes], `${prefix}${a.name}.`);
  }
}

/** Puts the canonical values back into a /Schemas document (only non-empty lists). */
export function withCanonicalValues(schema: Record<string, unknown>): Record<string, unknown> {
  const id = String(schema.id);
  const visit = (attrs: unknown, prefix: string): unknown =>
    Array.isArray(attrs)
      ? attrs.map((a: Record<string, unknown>) => {
          const key = `${id}:${prefix}${String(a.name)}`;
          const values = canonical.get(key);
          return {
            ...a,
            ...(values && values.length > 0 ? { canonicalValues: values } : {}),
            ...(a.subAttributes ? { subAttributes: visit(a.subAttributes, `${prefix}${String(a.name)}.`) } : {}),
          };
        })
      : attrs;
  return { ...schema, attributes: visit(schema.attributes, '') };
}

/** Declares User (with enterprise and lockstep extensions), Group and the service provider config. Idempotent. */
export function declareScimmy(): void {
  if (declared) return;
  declared = true;
  // scimmy's typings do not accept a SchemaDefinition extension (scimmy#45); the runtime does.
  const User = SCIMMY.Resources.User as unknown as { extend(extension: unknown, required?: boolean): unknown };
  User.extend(SCIMMY.Schemas.EnterpriseUser, false);
  User.extend(lockstepUserExtension, false);
  SCIMMY.Resources.declare(SCIMMY.Resources.User);
  SCIMMY.Resources.declare(SCIMMY.Resources.Group);
  const defs = [SCIMMY.Schemas.User.definition, SCIMMY.Schemas.Group.definition] as unknown as Array<{ id: string; attributes: unknown[] }>;
  for (const def of defs) {
    for (const a of def.attributes) {
      const ext = a as { id?: string; attributes?: ConfigurableAttribute[] };
      if (ext.id && Array.isArray(ext.attributes)) relaxCanonicalValues(ext.id, ext.attributes);
      else relaxCanonicalValues(def.id, [a as ConfigurableAttribute]);
    }
  }
  SCIMMY.Config.set({
    patch: { supported: true },
    // Filters are translated to SQL over indexed attributes (see query.ts and README.md).
    filter: { supported: true, maxResults: MAX_RESULTS },
    bulk: { supported: false, maxOperations: 0, maxPayloadSize: 0 },
    changePassword: { supported: false },
    sort: { supported: false },
    // meta.version is a weak ETag; If-Match is honoured on PUT, PATCH and DELETE.
    etag: { supported: true },
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
