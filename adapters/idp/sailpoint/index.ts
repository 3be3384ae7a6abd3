/** SailPoint Identity Security Cloud: event triggers + v3 search as an IdentitySource. */
export { createSailpointSource, SailpointSource } from './source.ts';
export { sailpointSourceSchema, SAILPOINT_DEFAULT_ATTRIBUTES, type SailpointSourceConfig, type SailpointSourceConfigInput } from './config.ts';
export { handleSailpointHook, expectedAuthorization } from './triggers.ts';
