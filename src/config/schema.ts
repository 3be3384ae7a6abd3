import { z } from 'zod';
import { entraSourceSchema } from '../../adapters/idp/entra/config.ts';
import { oktaSourceSchema } from '../../adapters/idp/okta/config.ts';
import { oneIdentitySourceSchema } from '../../adapters/idp/oneidentity/config.ts';
import { sailpointSourceSchema } from '../../adapters/idp/sailpoint/config.ts';
import { DEFAULT_PACING } from '../queue/pacing.ts';

/**
 * The one configuration file, validated at start. Every section has defaults that make
 * `npm start` work on a fresh clone; pointing lockstep at real systems only changes values here.
 * docs/configuration.md documents each key; keep the two in step.
 */

const sha256Hex = z
  .string()
  .regex(/^[0-9a-f]{64}$/, 'must be a lowercase hex SHA-256 digest (64 characters); see `lockstep hash-token`');

const id = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'must be 1-63 characters of a-z, 0-9, "-" or "_", starting with a letter or digit');

const duration = z.number().int().nonnegative();

/** A duration as milliseconds or a string such as "90s", "15m", "6h", "1d" (identity-source schedules). */
export const every = z.union([
  duration,
  z
    .string()
    .regex(/^\d+(ms|s|m|h|d)$/, 'a duration such as "90s", "15m", "6h" or "1d" (or milliseconds as a number)')
    .transform((v) => {
      const [, n, unit] = /^(\d+)(ms|s|m|h|d)$/.exec(v)!;
      return Number(n) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit as 'ms' | 's' | 'm' | 'h' | 'd'];
    }),
]);

export const serverSchema = z
  .object({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8080),
    /** Absolute base URL clients reach lockstep at; used for SCIM meta.location and Location headers. */
    publicBaseUrl: z.url().optional(),
    /** Largest accepted request body. Bigger bodies answer 413 in the protocol's error format. */
    bodyLimitBytes: z.number().int().min(1024).max(50 * 1024 * 1024).default(1024 * 1024),
    /** Milliseconds to wait for running jobs on SIGTERM before handing them back to the queue. */
    shutdownGraceMs: duration.default(10_000),
  })
  .strict();

export const storeSchema = z
  .object({
    driver: z.enum(['sqlite', 'postgres']).default('sqlite'),
    sqlite: z
      .object({
        path: z.string().min(1).default('./data/lockstep.db'),
        /** SQLite's page cache, MiB. The OS caches the file too; more only helps stores far larger than the indexes. */
        cacheMB: z.number().int().min(2).max(4096).default(8),
      })
      .strict()
      .default({ path: './data/lockstep.db', cacheMB: 8 }),
    postgres: z
      .object({
        /** Falls back to the DATABASE_URL environment variable. */
        url: z.string().optional(),
        poolSize: z.number().int().min(1).max(200).default(10),
      })
      .strict()
      .default({ poolSize: 10 }),
  })
  .strict();

export const redisSchema = z
  .object({
    url: z.string().default('redis://127.0.0.1:6379'),
    /** Key prefix for every BullMQ queue, so that several deployments can share one Redis. */
    prefix: z.string().regex(/^[A-Za-z0-9_-]+$/).default('lockstep'),
  })
  .strict();

export const sourceSchema = z
  .object({
    id,
    /** Which IdP is on the other end; selects its dialect quirks. */
    idp: z.enum(['entra', 'okta', 'sailpoint', 'oneidentity', 'generic']),
    displayName: z.string().optional(),
    scim: z
      .object({
        /** SHA-256 (hex) of the bearer token this source presents on /scim/v2. Never the token itself. */
        tokenSha256: sha256Hex,
        /** Requests per second a single token may make; excess answers 429 with Retry-After. */
        rateLimitPerSecond: z.number().int().min(1).default(200),
      })
      .strict()
      .optional(),
    /**
     * API connection of the source (webhooks, confirmation reads, delta, snapshots): the section
     * named like `idp`. Absent: the source is SCIM push only. See src/sources/README.md.
     */
    okta: oktaSourceSchema.optional(),
    entra: entraSourceSchema.optional(),
    sailpoint: sailpointSourceSchema.optional(),
    oneidentity: oneIdentitySourceSchema.optional(),
    /** Full reconciliation (snapshot) interval. Default: 24h for delta-capable sources (Okta, Entra), 1h otherwise. */
    reconcileEvery: every.optional(),
    /** Delta round interval (Okta System Log, Graph delta). Entra delta tokens expire after 7 days. */
    deltaEvery: every.default(300_000),
    /** Run a full reconciliation when the daemon starts. */
    reconcileAtStart: z.boolean().default(true),
    /** What happens to a person the source no longer has (confirmation read null, or absent from a complete snapshot). */
    onMissing: z.enum(['delete', 'deactivate']).default('delete'),
  })
  .strict();

export const retrySchema = z
  .object({
    /**
     * Total attempts of one apply job before it is dead-lettered. The defaults ride out a lock
     * system outage of about 40 minutes: a leaver must not be dead-lettered by a short outage.
     */
    attempts: z.number().int().min(1).max(100).default(20),
    /** Exponential backoff: min(maxMs, baseMs * 2^(attempt-1)), half of it random ("equal jitter"); Retry-After wins when longer. */
    baseMs: duration.default(500),
    maxMs: duration.default(300_000),
  })
  .strict();

/** Operations in flight at one lock system, per process, unless `apply.concurrency` says otherwise. */
export const DEFAULT_APPLY_CONCURRENCY = 16;

const applySchema = z
  .object({
    /** Operations in flight at this lock system at once (each for one person), per process. */
    concurrency: z.number().int().min(1).max(256).default(DEFAULT_APPLY_CONCURRENCY),
    /** At most `max` apply jobs start per `durationMs` (BullMQ limiter, per lock system). */
    rateLimit: z
      .object({ max: z.number().int().min(1), durationMs: z.number().int().min(1) })
      .strict()
      .optional(),
    retry: retrySchema.default({ attempts: 20, baseMs: 500, maxMs: 300_000 }),
    /** Timeout of one HTTP call to the lock system. */
    requestTimeoutMs: z.number().int().min(100).default(15_000),
  })
  .strict();

const iloqSchema = z
  .object({
    /** Service address, e.g. https://s5.iloq.com/iloqws; resolved through Url/GetUrl first. */
    serverUrl: z.url(),
    customerCode: z.string().min(1),
    userName: z.string().min(1),
    password: z.string().min(1),
    /** x-api-key when going through the iLOQ API Gateway. */
    apiKey: z.string().optional(),
    /** LockGroup_ID to select; when absent the only locking system the user sees is used. */
    lockGroupId: z.string().optional(),
    /** Zone (type 4, default zone for keys and persons) used when lockstep creates a person. */
    personZoneId: z.string().optional(),
    /**
     * iLOQ webhooks to /hooks/iloq/{id}: the subscription's SignKey (HMAC-SHA256 of the raw body in
     * Webhook-Signature) and how old a delivery's CreationTimeUtc may be.
     */
    webhook: z
      .object({
        signKey: z.string().min(8),
        maxAgeSeconds: z.number().int().min(10).max(7 * 24 * 3600).default(300),
      })
      .strict()
      .optional(),
  })
  .strict();

const cliqSchema = z
  .object({
    /** Base URL of the CLIQ Web Manager integration API, e.g. https://cwm.example.com/cliq-api/v1 (contract assumed; see docs). */
    baseUrl: z.url(),
    /** CWM domain lockstep administers; persons are created there. */
    domainId: z.string().min(1),
    /** Bearer token (for a gateway in front of CWM). Either this or tls (or both). */
    bearerToken: z.string().min(1).optional(),
    /** Mutual TLS: client certificate and key (PEM files), and the CA bundle that signs CWM's certificate. */
    tls: z
      .object({
        certFile: z.string().min(1),
        keyFile: z.string().min(1),
        caFile: z.string().min(1).optional(),
        passphrase: z.string().optional(),
      })
      .strict()
      .optional(),
    /**
     * Revalidation period lockstep enforces on every key it manages (hours). Bounds how long a
     * revoked key that is never updated can keep working. Unset: keys keep their own setting.
     */
    maxRevalidationHours: z.number().int().min(1).max(24 * 365).optional(),
  })
  .strict()
  .refine((c) => c.bearerToken || c.tls, { message: 'configure bearerToken, tls (mutual TLS), or both' });

const lockSystemBase = {
  id,
  displayName: z.string().optional(),
  /** Manual work the lock system hands to people (collect a key a leaver still holds). */
  tasks: z
    .object({
      /** Days a locksmith has to collect a leaver's key before the task is overdue. */
      collectDeadlineDays: z.number().int().min(0).max(365).default(14),
      /**
       * The same deadline in hours (decimals allowed, e.g. 0.5); when set, it replaces
       * collectDeadlineDays. For sites that need hours, not days, and for drills.
       */
      collectDeadlineHours: z.number().min(0).max(365 * 24).optional(),
      /**
       * A key not collected by the deadline is reported lost (put on the lock system's
       * blocklist) automatically, and the collect task is closed by `system:overdue`.
       */
      blocklistOverdue: z.boolean().default(false),
    })
    .strict()
    .default({ collectDeadlineDays: 14, blocklistOverdue: false }),
  apply: applySchema.default({ concurrency: DEFAULT_APPLY_CONCURRENCY, retry: { attempts: 20, baseMs: 500, maxMs: 300_000 }, requestTimeoutMs: 15_000 }),
};

export const lockSystemSchema = z.discriminatedUnion('kind', [
  z.object({ ...lockSystemBase, kind: z.literal('iloq'), iloq: iloqSchema }).strict(),
  z.object({ ...lockSystemBase, kind: z.literal('cliq'), cliq: cliqSchema }).strict(),
]);

const attributeMatch = z.union([z.string(), z.array(z.string()).min(1)]);

export const ruleSchema = z
  .object({
    name: z.string().min(1),
    description: z.string().optional(),
    /**
     * All listed conditions must hold. `groups`: member of any (display name or id, case-insensitive).
     * `roles`: holds any of these SCIM roles. `attributes`: each key equals one of the values.
     */
    when: z
      .object({
        groups: z.array(z.string().min(1)).min(1).optional(),
        roles: z.array(z.string().min(1)).min(1).optional(),
        attributes: z.record(z.string(), attributeMatch).optional(),
        sources: z.array(z.string()).min(1).optional(),
      })
      .strict()
      .refine((w) => w.groups || w.roles || (w.attributes && Object.keys(w.attributes).length > 0) || w.sources, {
        // A rule that matches everyone must say so through a real condition, never by accident.
        message: 'a rule needs at least one condition: groups, roles, sources or a non-empty attributes map',
      }),
    /**
     * Time-bound access: the rule only grants until the date in `untilAttribute` (e.g.
     * contractEndDate from the lockstep SCIM extension) and, with `maxDays`, for at most that many
     * days after the person first appeared in lockstep. A missing or unreadable date grants nothing.
     */
    window: z
      .object({ untilAttribute: z.string().min(1).optional(), maxDays: z.number().int().min(1).max(3650).optional() })
      .strict()
      .refine((w) => w.untilAttribute || w.maxDays, { message: 'a window needs untilAttribute, maxDays or both' })
      .optional(),
    grant: z
      .array(
        z
          .object({
            lockSystem: id,
            /** Access names as in the lock system's catalogue (iLOQ: SecurityAccess names of type API access). */
            access: z.array(z.string().min(1)).min(1),
          })
          .strict(),
      )
      .min(1),
  })
  .strict();

export const adminTokenSchema = z
  .object({
    name: z.string().min(1),
    sha256: sha256Hex,
    role: z.enum(['admin', 'cro', 'auditor']),
  })
  .strict();

export const configSchema = z
  .object({
    server: serverSchema.default(serverSchema.parse({})),
    store: storeSchema.default(storeSchema.parse({})),
    redis: redisSchema.default(redisSchema.parse({})),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .default({ level: 'info' }),
    sources: z.array(sourceSchema).default([]),
    /**
     * API-connected identity sources as a whole: linking records of several sources into one
     * person (`matchOn`, `authoritativeSource`), worker concurrency and the lock-system drift check.
     */
    identity: z
      .object({
        /** `email`, `userName`, `externalId`, or the name of a mapped attribute (`employeeNumber`). Absent: no linking. */
        matchOn: z.string().min(1).optional(),
        /** Source whose leaver wins over the other linked records (see src/sources/README.md). */
        authoritativeSource: id.optional(),
        /** Parallel source jobs (confirmations, deltas, snapshots) per process. */
        concurrency: z.number().int().min(1).max(256).default(8),
        /** Lock-system drift check interval (0 = only on request: POST /api/v1/drift/check). */
        driftCheckEvery: every.default(86_400_000),
        /** How long processed hints are kept (their dedupe keys with them). */
        hintRetention: every.default(7 * 86_400_000),
      })
      .strict()
      .default({ concurrency: 8, driftCheckEvery: 86_400_000, hintRetention: 7 * 86_400_000 }),
    lockSystems: z.array(lockSystemSchema).default([]),
    /**
     * Lock-system adapters run on a thread of their own (src/lock-thread/): their HTTP exchanges
     * and JSON use the machine's next core instead of the event loop that answers requests.
     */
    lockSystemThread: z.boolean().default(true),
    policy: z.object({ rules: z.array(ruleSchema).default([]) }).strict().default({ rules: [] }),
    admin: z.object({ tokens: z.array(adminTokenSchema).default([]) }).strict().default({ tokens: [] }),
    reconcile: z
      .object({
        /** Parallel person reconciles. */
        concurrency: z.number().int().min(1).max(512).default(32),
        /** How often the sweeper re-enqueues work Redis may have lost. */
        sweepIntervalMs: z.number().int().min(100).default(5_000),
        /** A dirty mark or pending operation older than this without progress is re-enqueued. */
        sweepAfterMs: z.number().int().min(0).default(5_000),
        /**
         * How long a worker holds a job before others may assume it crashed and run it again
         * (BullMQ lockDuration and stalledInterval; the lock is renewed while the job runs). Lower
         * means faster recovery after a crash, at the cost of more Redis traffic.
         */
        jobLockMs: z.number().int().min(1_000).default(30_000),
        /**
         * How often lockstep asks lock systems whether accepted changes have physically reached
         * the keys (the second truth of revocation). Webhooks, where configured, trigger it at once.
         */
        effectiveCheckIntervalMs: z.number().int().min(100).default(15_000),
      })
      .strict()
      .default({ concurrency: 32, sweepIntervalMs: 5_000, sweepAfterMs: 5_000, jobLockMs: 30_000, effectiveCheckIntervalMs: 15_000 }),
    /**
     * Background work yields to requests (src/queue/pacing.ts): while requests arrive and the
     * event loop's delay is above target, every worker's concurrency is scaled down, then back up.
     */
    pacing: z
      .object({
        enabled: z.boolean().default(true),
        /** Event-loop delay (p99 per 250 ms) the pacer keeps request handling under. */
        targetDelayMs: z.number().int().min(1).max(1_000).default(DEFAULT_PACING.targetDelayMs),
        /** Smallest share of each worker's configured concurrency (at least one job always runs). */
        minShare: z.number().min(0.01).max(1).default(DEFAULT_PACING.minShare),
        /** Below this many requests per second the pacer stands aside. */
        minRequestsPerSecond: z.number().min(0).default(DEFAULT_PACING.minRequestsPerSecond),
      })
      .strict()
      .default({ enabled: true, targetDelayMs: DEFAULT_PACING.targetDelayMs, minShare: DEFAULT_PACING.minShare, minRequestsPerSecond: DEFAULT_PACING.minRequestsPerSecond }),
    /** Emergency lockdown (the CRO's "revoke all") settings. */
    lockdown: z
      .object({
        /** Break-glass: people (person id or userName) and groups (id or display name) who keep their access in every lockdown. */
        exemptions: z
          .object({ persons: z.array(z.string().min(1)).default([]), groups: z.array(z.string().min(1)).default([]) })
          .strict()
          .default({ persons: [], groups: [] }),
        /** When true, lifting needs a second cro principal to confirm (starting never waits). */
        dualControl: z.boolean().default(false),
        /** Named sites and the access that opens their doors, for site-scoped lockdowns. */
        sites: z.record(z.string(), z.array(z.object({ lockSystem: id, access: z.array(z.string().min(1)).min(1) }).strict()).min(1)).default({}),
        /** Told on start and lift (JSON POST), besides the log and the audit trail. */
        notify: z
          .object({
            webhookUrl: z.url().optional(),
            /** Extra headers, e.g. an Authorization for the receiving system (secrets via ${VAR}). */
            headers: z.record(z.string(), z.string()).default({}),
            timeoutMs: z.number().int().min(100).max(60_000).default(5_000),
          })
          .strict()
          .default({ headers: {}, timeoutMs: 5_000 }),
        /** Lockdown starts and lifts accepted per principal per minute. */
        maxActionsPerMinute: z.number().int().min(1).max(1000).default(10),
      })
      .strict()
      .default({ exemptions: { persons: [], groups: [] }, dualControl: false, sites: {}, notify: { headers: {}, timeoutMs: 5_000 }, maxActionsPerMinute: 10 }),
    /** Lock-system simulators started in-process (for the quick start and demos only). */
    simulators: z
      .array(
        z.discriminatedUnion('kind', [
          z
            .object({
              kind: z.literal('iloq'),
              port: z.number().int().min(0).max(65535),
              /** 'demo' seeds a small access catalogue (Main entrance, Control room, ...). */
              seed: z.enum(['demo', 'none']).default('demo'),
              /** Ordered keys report "programmed" after this delay, as if a phone key synced. */
              programDelayMs: z.number().int().min(0).default(2_000),
            })
            .strict(),
          z
            .object({
              kind: z.literal('cliq'),
              port: z.number().int().min(0).max(65535),
              seed: z.enum(['demo', 'none']).default('demo'),
              /** Bearer token the simulator requires (configure the same as cliq.bearerToken). */
              token: z.string().min(1),
              /** Programming jobs complete after this delay, as if keys were updated at a wall device. */
              jobDelayMs: z.number().int().min(0).default(2_000),
            })
            .strict(),
        ]),
      )
      .default([]),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const dup = <T>(items: T[], key: (t: T) => string, path: string) => {
      const seen = new Set<string>();
      items.forEach((item, i) => {
        const k = key(item);
        if (seen.has(k)) ctx.addIssue({ code: 'custom', path: [path, i, 'id'], message: `duplicate id "${k}"` });
        seen.add(k);
      });
    };
    dup(cfg.sources, (s) => s.id, 'sources');
    cfg.sources.forEach((s, i) => {
      for (const k of ['okta', 'entra', 'sailpoint', 'oneidentity'] as const)
        if (s[k] && s.idp !== k) ctx.addIssue({ code: 'custom', path: ['sources', i, k], message: `a "${k}" section needs idp: ${k} (this source is idp: ${s.idp})` });
    });
    if (cfg.identity.authoritativeSource && !cfg.sources.some((s) => s.id === cfg.identity.authoritativeSource))
      ctx.addIssue({ code: 'custom', path: ['identity', 'authoritativeSource'], message: `unknown source "${cfg.identity.authoritativeSource}"` });
    dup(cfg.lockSystems, (l) => l.id, 'lockSystems');
    const tokens = new Set<string>();
    cfg.sources.forEach((s, i) => {
      if (!s.scim) return;
      if (tokens.has(s.scim.tokenSha256))
        ctx.addIssue({ code: 'custom', path: ['sources', i, 'scim', 'tokenSha256'], message: 'two sources share one token; each source needs its own' });
      tokens.add(s.scim.tokenSha256);
    });
    const adminNames = new Set<string>();
    const adminHashes = new Set<string>();
    cfg.admin.tokens.forEach((t, i) => {
      if (adminNames.has(t.name)) ctx.addIssue({ code: 'custom', path: ['admin', 'tokens', i, 'name'], message: `duplicate token name "${t.name}"` });
      if (adminHashes.has(t.sha256) || tokens.has(t.sha256))
        ctx.addIssue({ code: 'custom', path: ['admin', 'tokens', i, 'sha256'], message: 'this token is already configured (every admin and source token must be distinct)' });
      adminNames.add(t.name);
      adminHashes.add(t.sha256);
    });
    const sourceIds = new Set(cfg.sources.map((s) => s.id));
    cfg.policy.rules.forEach((r, i) =>
      (r.when.sources ?? []).forEach((sid, j) => {
        if (!sourceIds.has(sid))
          ctx.addIssue({ code: 'custom', path: ['policy', 'rules', i, 'when', 'sources', j], message: `unknown source "${sid}" (configured: ${[...sourceIds].join(', ') || 'none'})` });
      }),
    );
    const systems = new Set(cfg.lockSystems.map((l) => l.id));
    for (const [site, doors] of Object.entries(cfg.lockdown.sites))
      doors.forEach((d, j) => {
        if (!systems.has(d.lockSystem))
          ctx.addIssue({ code: 'custom', path: ['lockdown', 'sites', site, j, 'lockSystem'], message: `unknown lock system "${d.lockSystem}" (configured: ${[...systems].join(', ') || 'none'})` });
      });
    cfg.policy.rules.forEach((r, i) =>
      r.grant.forEach((g, j) => {
        if (!systems.has(g.lockSystem))
          ctx.addIssue({
            code: 'custom',
            path: ['policy', 'rules', i, 'grant', j, 'lockSystem'],
            message: `unknown lock system "${g.lockSystem}" (configured: ${[...systems].join(', ') || 'none'})`,
          });
      }),
    );
    if (cfg.store.driver === 'postgres' && !cfg.store.postgres.url && !process.env.DATABASE_URL)
      ctx.addIssue({ code: 'custom', path: ['store', 'postgres', 'url'], message: 'required when store.driver is postgres (or set DATABASE_URL)' });
  });

export type Config = z.infer<typeof configSchema>;
export type SourceConfig = z.infer<typeof sourceSchema>;
export type LockSystemConfig = z.infer<typeof lockSystemSchema>;
export type IloqConfig = z.infer<typeof iloqSchema>;
export type CliqConfig = z.infer<typeof cliqSchema>;
export type IloqLockSystemConfig = Extract<LockSystemConfig, { kind: 'iloq' }>;
export type CliqLockSystemConfig = Extract<LockSystemConfig, { kind: 'cliq' }>;
export type RuleConfig = z.infer<typeof ruleSchema>;
export type RetryConfig = z.infer<typeof retrySchema>;
export type AdminRole = z.infer<typeof adminTokenSchema>['role'];
