import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics. One registry per process instance, so tests can build several apps. */
export class Metrics {
  readonly registry = new Registry();
  readonly operations = new Counter({
    name: 'lockstep_operations_total',
    help: 'Lock-system operation attempts by outcome (accepted, retry, rate_limited, dead).',
    labelNames: ['lock_system', 'kind', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly operationSeconds = new Histogram({
    name: 'lockstep_operation_duration_seconds',
    help: 'Duration of one operation attempt against the lock system.',
    labelNames: ['lock_system', 'kind'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly endToEndSeconds = new Histogram({
    name: 'lockstep_change_to_accept_seconds',
    help: 'From the operation being planned to the lock system accepting it.',
    labelNames: ['lock_system', 'kind'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly reconciles = new Counter({
    name: 'lockstep_reconciles_total',
    help: 'Person reconciles, by whether they produced operations.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly deadLettered = new Counter({
    name: 'lockstep_dead_lettered_jobs_total',
    help: 'Apply jobs dead-lettered after their last attempt (or a permanent error).',
    labelNames: ['lock_system'] as const,
    registers: [this.registry],
  });
  readonly sweptJobs = new Counter({
    name: 'lockstep_sweeper_requeued_total',
    help: 'Jobs the sweeper offered to the queues from the database; an offer for a job still queued is a no-op, so this counts offers, not losses.',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });
  readonly backgroundShare = new Gauge({
    name: 'lockstep_background_concurrency_share',
    help: 'Share of configured worker concurrency in use: below 1 while the pacer slows background work so that requests stay fast.',
    registers: [this.registry],
  });
  readonly planningHeld = new Gauge({
    name: 'lockstep_planning_held',
    help: '1 while reconciles wait because every lock system at work (apply jobs ready or running) already has more ready than it can start; 0 otherwise.',
    registers: [this.registry],
  });
  readonly sourceHooks = new Counter({
    name: 'lockstep_source_hooks_total',
    help: 'IdP webhook deliveries by outcome: accepted (stored), handshake, rejected (authentication or format), unavailable (could not be stored; 503, the IdP retries).',
    labelNames: ['source', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly sourcePendingHints = new Gauge({
    name: 'lockstep_source_hints_pending',
    help: 'Hints (webhook or delta) stored but not yet confirmed through the IdP API, per source (database, at scrape time).',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly sourceOldestPendingHint = new Gauge({
    name: 'lockstep_source_oldest_pending_hint_timestamp_seconds',
    help: 'When the oldest unconfirmed hint of the source arrived (Unix time; absent when none is pending).',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly sourceLastSnapshot = new Gauge({
    name: 'lockstep_source_last_full_reconciliation_timestamp_seconds',
    help: 'When the last full reconciliation (snapshot) of the source finished (Unix time).',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly sourceLastDelta = new Gauge({
    name: 'lockstep_source_last_delta_timestamp_seconds',
    help: 'When the last delta round of the source finished (Unix time; sources with deltas only).',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly sourceLastError = new Gauge({
    name: 'lockstep_source_last_error_timestamp_seconds',
    help: 'When the source last failed (confirmation, delta or snapshot), Unix time; see GET /api/v1/drift for the message.',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly walRewinds = new Counter({
    name: 'lockstep_sqlite_wal_rewinds_total',
    help: 'Times the SQLite WAL was rewound after growing under sustained writes; complete="false": another connection still read from it, and it was not.',
    labelNames: ['complete'] as const,
    registers: [this.registry],
  });
  readonly walRewindHoldSeconds = new Histogram({
    name: 'lockstep_sqlite_wal_rewind_hold_seconds',
    help: 'How long writes were held for one rewind of the SQLite WAL.',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({
    name: 'lockstep_queue_jobs',
    help: 'Jobs per queue and state, read at scrape time.',
    labelNames: ['queue', 'state'] as const,
    registers: [this.registry],
  });
  readonly openDeadLetters = new Gauge({
    name: 'lockstep_dead_letters_open',
    help: 'Dead-lettered jobs not yet retried, read from the database at scrape time.',
    registers: [this.registry],
  });
  readonly pendingOperations = new Gauge({
    name: 'lockstep_operations_pending',
    help: 'Operations planned but not yet accepted, read from the database at scrape time.',
    registers: [this.registry],
  });

  readonly exposedKeys = new Gauge({
    name: 'lockstep_exposure_keys',
    help: 'Keys whose revocation was accepted but has not reached the key yet (second truth pending).',
    labelNames: ['lock_system'] as const,
    registers: [this.registry],
  });
  readonly unboundedKeys = new Gauge({
    name: 'lockstep_exposure_unbounded_keys',
    help: 'Revoked-but-not-effective keys with no known horizon: nothing stops them until reprogrammed or blocklisted.',
    labelNames: ['lock_system'] as const,
    registers: [this.registry],
  });
  readonly oldestHorizon = new Gauge({
    name: 'lockstep_exposure_oldest_horizon_timestamp_seconds',
    help: 'Earliest horizon (Unix time) among revoked-but-not-effective keys: the next one due to stop working on its own.',
    labelNames: ['lock_system'] as const,
    registers: [this.registry],
  });
  readonly latestHorizon = new Gauge({
    name: 'lockstep_exposure_latest_horizon_timestamp_seconds',
    help: 'Latest horizon (Unix time) among bounded revoked-but-not-effective keys: until then a revoked key may still open a door.',
    labelNames: ['lock_system'] as const,
    registers: [this.registry],
  });
  readonly openTasks = new Gauge({
    name: 'lockstep_tasks_open',
    help: 'Manual tasks not yet done, and how many are past their deadline.',
    labelNames: ['overdue'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'lockstep_' });
  }
}
