/**
 * SCIM 2.0 server (RFC 7643/7644) for IdP provisioning: Users and Groups per source.
 * Register as `app.register(scimRoutes, { prefix: '/scim/v2', identities, sources, publicBaseUrl })`.
 */
export { scimRoutes, type ScimOptions } from './routes.ts';
export { hashToken } from './auth.ts';
export { ENTERPRISE_USER, LOCKSTEP_USER } from './schema.ts';
