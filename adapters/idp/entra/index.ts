/** Microsoft Entra ID: Graph change notifications, subscriptions and delta as an IdentitySource. */
export { createEntraSource, EntraSource, type GraphSubscription } from './source.ts';
export {
  entraSourceSchema,
  GRAPH_MAX_SUBSCRIPTION_MINUTES,
  ENTRA_DEFAULT_ATTRIBUTES,
  ENTRA_USER_SELECT,
  type EntraSourceConfig,
  type EntraSourceConfigInput,
} from './config.ts';
export { handleEntraHook, TASK_REAUTHORIZE, TASK_ENSURE } from './notifications.ts';
export { GraphTokenProvider, makeCredential } from './graph.ts';
