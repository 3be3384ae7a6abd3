/** Okta: event hooks + API (users, groups, System Log) as an IdentitySource. */
export { createOktaSource, OktaSource } from './source.ts';
export { oktaSourceSchema, OKTA_DEFAULT_ATTRIBUTES, OKTA_DEFAULT_ACTIVE_STATUSES, type OktaSourceConfig, type OktaSourceConfigInput } from './config.ts';
export { handleOktaHook, changesFromLogEvents, OKTA_EVENT_TYPES } from './events.ts';
export { OktaRateLimitExecutor } from './client.ts';
