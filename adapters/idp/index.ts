import type { z } from 'zod';
import type { IdentitySource, IdpKind } from '../../src/ports/identity-source.ts';
import { createEntraSource, entraSourceSchema } from './entra/index.ts';
import { createOktaSource, oktaSourceSchema } from './okta/index.ts';
import { createOneIdentitySource, oneIdentitySourceSchema } from './oneidentity/index.ts';
import { createSailpointSource, sailpointSourceSchema } from './sailpoint/index.ts';
import type { SourceDeps } from './shared/http.ts';

/**
 * The IdentitySource adapters in one place, for the daemon's composition root:
 * config schemas to plug under `sources[].<idp>`, one factory, and the hook routes to mount.
 * See adapters/idp/README.md.
 */

export { IdentitySourceError } from '../../src/ports/identity-source.ts';
export type * from '../../src/ports/identity-source.ts';
export type { SourceDeps } from './shared/http.ts';
export { httpPolicySchema } from './shared/http.ts';
export { createOktaSource, oktaSourceSchema, type OktaSourceConfig } from './okta/index.ts';
export { createEntraSource, entraSourceSchema, type EntraSourceConfig } from './entra/index.ts';
export { createSailpointSource, sailpointSourceSchema, type SailpointSourceConfig } from './sailpoint/index.ts';
export { createOneIdentitySource, oneIdentitySourceSchema, type OneIdentitySourceConfig } from './oneidentity/index.ts';

/** Config schema per IdP: the section under `sources[].<idp>`. */
export const identitySourceSchemas = {
  okta: oktaSourceSchema,
  entra: entraSourceSchema,
  sailpoint: sailpointSourceSchema,
  oneidentity: oneIdentitySourceSchema,
} as const satisfies Record<IdpKind, z.ZodType>;

/** Builds the adapter for `kind` from its (unvalidated or validated) config section. Throws a ZodError on bad config. */
export function createIdentitySource(kind: IdpKind, config: unknown, deps: SourceDeps): IdentitySource {
  switch (kind) {
    case 'okta':
      return createOktaSource(config as never, deps);
    case 'entra':
      return createEntraSource(config as never, deps);
    case 'sailpoint':
      return createSailpointSource(config as never, deps);
    case 'oneidentity':
      return createOneIdentitySource(config as never, deps);
  }
}

/**
 * Webhook routes per IdP (Fastify path syntax) and the methods to accept on them. Every route
 * hands the request to the source's `handleHook`; the body must reach it as the raw Buffer.
 */
export const HOOK_ROUTES: Record<IdpKind, Array<{ path: string; methods: string[] }>> = {
  okta: [{ path: '/hooks/okta/:sourceId', methods: ['GET', 'POST'] }],
  entra: [
    { path: '/hooks/entra/:sourceId', methods: ['POST'] },
    { path: '/hooks/entra/:sourceId/lifecycle', methods: ['POST'] },
  ],
  sailpoint: [{ path: '/hooks/sailpoint/:sourceId', methods: ['POST'] }],
  oneidentity: [],
};
