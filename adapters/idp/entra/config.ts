import { z } from 'zod';
import { httpPolicySchema } from '../shared/http.ts';

/** Graph's documented maximum subscription lifetime for user, group and other directory resources (< 29 days). */
export const GRAPH_MAX_SUBSCRIPTION_MINUTES = 41_760;

/** Properties read for users (delta `$select`, GET /users/{id}). */
export const ENTRA_USER_SELECT = [
  'id',
  'userPrincipalName',
  'mailNickname',
  'displayName',
  'givenName',
  'surname',
  'mail',
  'accountEnabled',
  'department',
  'jobTitle',
  'employeeId',
  'employeeType',
  'companyName',
  'officeLocation',
  'userType',
];

/** Entra defaults for `attributes` (lockstep attribute → Graph user property path). */
export const ENTRA_DEFAULT_ATTRIBUTES: Record<string, string> = {
  department: 'department',
  title: 'jobTitle',
  employeeNumber: 'employeeId',
  employeeType: 'employeeType',
  organization: 'companyName',
  site: 'officeLocation',
  userType: 'userType',
};

const resource = z.string().regex(/^\/(users|groups)(\/[^/]+(\/members)?)?$/, 'a users/groups resource such as /users or /groups');

/**
 * `sources[].entra`: a Microsoft Entra ID tenant through Microsoft Graph (change notifications +
 * delta). The app registration needs application permissions User.Read.All and
 * GroupMember.Read.All (or Group.Read.All / Directory.Read.All).
 */
export const entraSourceSchema = z
  .object({
    tenantId: z.string().min(1),
    clientId: z.string().min(1),
    /** App credential: a client secret or a certificate (PEM with the private key). */
    credential: z.discriminatedUnion('type', [
      z.object({ type: z.literal('secret'), clientSecret: z.string().min(1) }).strict(),
      z
        .object({
          type: z.literal('certificate'),
          /** Path to a PEM file holding the certificate and its private key. */
          certificatePath: z.string().min(1).optional(),
          /** The same PEM inline (e.g. from an environment variable). */
          certificate: z.string().min(1).optional(),
          /** Passphrase of an encrypted private key. */
          password: z.string().optional(),
          /** Send the x5c chain (subject name/issuer authentication). */
          sendCertificateChain: z.boolean().default(false),
        })
        .strict()
        .refine((c) => Boolean(c.certificatePath) !== Boolean(c.certificate), { message: 'give exactly one of certificatePath or certificate' }),
    ]),
    /** Entra authority (national clouds: https://login.microsoftonline.us, …). */
    authorityHost: z.url().default('https://login.microsoftonline.com'),
    /** Graph endpoint (national clouds: https://graph.microsoft.us, …). */
    graphBaseUrl: z.url().default('https://graph.microsoft.com'),
    /** Change notifications for `/hooks/entra/{sourceId}` (and its lifecycle URL). */
    hook: z
      .object({
        /** The `clientState` lockstep puts in every subscription and checks on every notification (≤ 128 chars). */
        clientState: z.string().min(16, 'use a long random clientState (at least 16 characters)').max(128),
        /** clientStates of subscriptions still alive while rotating (constant-time compared). */
        previousClientStates: z.array(z.string().min(16).max(128)).default([]),
      })
      .strict(),
    /** Subscriptions lockstep creates and keeps alive through `maintain()`. */
    subscriptions: z
      .object({
        enabled: z.boolean().default(true),
        /** Public URL of `/hooks/entra/{sourceId}` (HTTPS; query strings are preserved by Graph). */
        notificationUrl: z.url(),
        /** Public URL of `/hooks/entra/{sourceId}/lifecycle`. Cannot be added to a subscription later. */
        lifecycleNotificationUrl: z.url(),
        resources: z.array(resource).min(1).default(['/users', '/groups']),
        changeType: z.string().default('updated,deleted'),
        /** Requested lifetime; Graph's maximum for directory resources is 41,760 minutes. */
        lifetimeMinutes: z.number().int().min(60).max(GRAPH_MAX_SUBSCRIPTION_MINUTES).default(GRAPH_MAX_SUBSCRIPTION_MINUTES - 60),
        /** Renew when less than this remains (maintain() runs well within it). */
        renewBeforeMinutes: z.number().int().min(30).default(3 * 24 * 60),
        /** How often the core should call maintain(). */
        checkEveryMinutes: z.number().int().min(1).default(60),
      })
      .strict()
      .optional(),
    /** Extra user properties to read (e.g. employeeLeaveDateTime, which needs User-LifeCycleInfo.Read.All). */
    userSelect: z.array(z.string().min(1)).default([]),
    /** Extra/overriding attribute mappings: lockstep attribute → Graph user property (`employeeLeaveDateTime`, `onPremisesExtensionAttributes.extensionAttribute1`). */
    attributes: z.record(z.string(), z.string()).default({}),
    /** What `externalId` carries: a Graph user property; `mailNickname` is what Entra provisioning sends as SCIM externalId by default. */
    externalIdFrom: z.string().min(1).default('mailNickname'),
    delta: z
      .object({
        /** Pages per resource per `readDelta` call; `more: true` when there is more. */
        maxPages: z.number().int().min(1).max(1000).default(50),
      })
      .strict()
      .default({ maxPages: 50 }),
    http: httpPolicySchema.default(httpPolicySchema.parse({})),
  })
  .strict()
  .superRefine((c, ctx) => {
    const s = c.subscriptions;
    if (s && s.renewBeforeMinutes >= s.lifetimeMinutes)
      ctx.addIssue({ code: 'custom', path: ['subscriptions', 'renewBeforeMinutes'], message: 'must be shorter than lifetimeMinutes' });
    if (s && s.enabled && (!s.notificationUrl.startsWith('https://') || !s.lifecycleNotificationUrl.startsWith('https://')))
      ctx.addIssue({ code: 'custom', path: ['subscriptions', 'notificationUrl'], message: 'Graph delivers only to https:// URLs' });
  });

export type EntraSourceConfig = z.infer<typeof entraSourceSchema>;
export type EntraSourceConfigInput = z.input<typeof entraSourceSchema>;
