/** One Identity Manager: its SCIM 2.0 service provider, read for reconciliation. */
export { createOneIdentitySource, OneIdentitySource } from './source.ts';
export {
  oneIdentitySourceSchema,
  ONEIDENTITY_DEFAULT_ATTRIBUTES,
  SCIM_ENTERPRISE_USER,
  type OneIdentitySourceConfig,
  type OneIdentitySourceConfigInput,
} from './config.ts';
