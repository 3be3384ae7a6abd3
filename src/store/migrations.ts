import { sql, type Kysely } from 'kysely';
import type { Migration, MigrationProvider } from 'kysely/migration';
import type { Dialect } from './db.ts';

/**
 * One ordered list of migrations for both backends. The only dialect difference is the
 * auto-increment column type; everything else is portable SQL.
 */
export function migrations(dialect: Dialect): MigrationProvider {
  const serial = dialect === 'postgres' ? 'bigserial' : 'integer';
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  const list: Record<string, Migration> = {
    '0001_identity_queue_audit': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('persons')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('source_id', 'text', (c) => c.notNull())
          .addColumn('external_id', 'text')
          .addColumn('user_name', 'text', (c) => c.notNull())
          .addColumn('user_name_lc', 'text', (c) => c.notNull())
          .addColumn('email_lc', 'text')
          .addColumn('display_name', 'text')
          .addColumn('active', 'integer', (c) => c.notNull())
          .addColumn('profile', 'text', (c) => c.notNull())
          .addColumn('resource', 'text', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .execute();
        await db.schema.createIndex('persons_source_username').unique().on('persons').columns(['source_id', 'user_name_lc']).execute();
        await db.schema.createIndex('persons_source_external').on('persons').columns(['source_id', 'external_id']).execute();
        await db.schema.createIndex('persons_source_email').on('persons').columns(['source_id', 'email_lc']).execute();
        await db.schema.createIndex('persons_source_created').on('persons').columns(['source_id', 'created_at', 'id']).execute();

        await db.schema
          .createTable('groups')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('source_id', 'text', (c) => c.notNull())
          .addColumn('external_id', 'text')
          .addColumn('display_name', 'text', (c) => c.notNull())
          .addColumn('display_name_lc', 'text', (c) => c.notNull())
          .addColumn('resource', 'text', (c) => c.notNull())
          .addColumn('version', 'integer', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .execute();
        await db.schema.createIndex('groups_source_name').on('groups').columns(['source_id', 'display_name_lc']).execute();
        await db.schema.createIndex('groups_source_external').on('groups').columns(['source_id', 'external_id']).execute();
        await db.schema.createIndex('groups_source_created').on('groups').columns(['source_id', 'created_at', 'id']).execute();

        await db.schema
          .createTable('memberships')
          .addColumn('group_id', 'text', (c) => c.notNull().references('groups.id').onDelete('cascade'))
          .addColumn('person_id', 'text', (c) => c.notNull().references('persons.id').onDelete('cascade'))
          .addPrimaryKeyConstraint('memberships_pk', ['group_id', 'person_id'])
          .execute();
        await db.schema.createIndex('memberships_person').on('memberships').column('person_id').execute();

        await db.schema
          .createTable('dirty')
          .addColumn('person_id', 'text', (c) => c.primaryKey())
          .addColumn('generation', 'integer', (c) => c.notNull())
          .addColumn('priority', 'integer', (c) => c.notNull())
          .addColumn('marked_at', bigint, (c) => c.notNull())
          .addColumn('reason', 'text', (c) => c.notNull())
          .addColumn('correlation_id', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('dirty_marked').on('dirty').column('marked_at').execute();

        await db.schema
          .createTable('lock_state')
          .addColumn('lock_system_id', 'text', (c) => c.notNull())
          .addColumn('person_id', 'text', (c) => c.notNull())
          .addColumn('access', 'text', (c) => c.notNull())
          .addColumn('departed', 'integer', (c) => c.notNull())
          .addColumn('remote_person_id', 'text')
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('lock_state_pk', ['lock_system_id', 'person_id'])
          .execute();
        await db.schema.createIndex('lock_state_person').on('lock_state').column('person_id').execute();

        await db.schema
          .createTable('operations')
          .addColumn('seq', serial, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('id', 'text', (c) => c.notNull().unique())
          .addColumn('person_id', 'text', (c) => c.notNull())
          .addColumn('lock_system_id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('access', 'text', (c) => c.notNull())
          .addColumn('priority', 'integer', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull())
          .addColumn('correlation_id', 'text', (c) => c.notNull())
          .addColumn('requested_at', bigint, (c) => c.notNull())
          .addColumn('started_at', bigint)
          .addColumn('accepted_at', bigint)
          .addColumn('effective_at', bigint)
          .addColumn('last_error', 'text')
          .addColumn('result', 'text')
          .execute();
        await db.schema.createIndex('operations_work').on('operations').columns(['lock_system_id', 'person_id', 'state', 'seq']).execute();
        await db.schema.createIndex('operations_person').on('operations').columns(['person_id', 'seq']).execute();
        await db.schema.createIndex('operations_state').on('operations').columns(['state', 'requested_at']).execute();

        await db.schema
          .createTable('failed_jobs')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('queue', 'text', (c) => c.notNull())
          .addColumn('lock_system_id', 'text', (c) => c.notNull())
          .addColumn('person_id', 'text', (c) => c.notNull())
          .addColumn('error', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull())
          .addColumn('failed_at', bigint, (c) => c.notNull())
          .addColumn('retried_at', bigint)
          .execute();
        await db.schema.createIndex('failed_jobs_open').on('failed_jobs').columns(['retried_at', 'failed_at']).execute();

        await db.schema
          .createTable('audit')
          .addColumn('seq', bigint, (c) => c.primaryKey())
          .addColumn('at', bigint, (c) => c.notNull())
          .addColumn('actor', 'text', (c) => c.notNull())
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('subject', 'text', (c) => c.notNull())
          .addColumn('person_id', 'text')
          .addColumn('detail', 'text', (c) => c.notNull())
          .addColumn('correlation_id', 'text', (c) => c.notNull())
          .addColumn('prev_hash', 'text', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('audit_person').on('audit').columns(['person_id', 'seq']).execute();
        await db.schema.createIndex('audit_action').on('audit').columns(['action', 'seq']).execute();
        await db.schema.createIndex('audit_at').on('audit').columns(['at']).execute();

        await db.schema
          .createTable('audit_head')
          .addColumn('id', 'integer', (c) => c.primaryKey())
          .addColumn('seq', bigint, (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .execute();
        await sql`insert into audit_head (id, seq, hash) values (1, 0, ${GENESIS_HASH})`.execute(db);
      },
    },
    '0002_scim_filters': {
      /**
       * What the SCIM server filters on, as indexed columns: case-folded display, given and
       * family names, every e-mail address (not only the primary one) in person_emails, the
       * display a client gave a group member, and indexes for `active`, `meta.lastModified`
       * and paging. Existing rows are backfilled from their stored profile and resource.
       */
      async up(db: Kysely<any>) {
        for (const col of ['display_name_lc', 'given_name_lc', 'family_name_lc'])
          await db.schema.alterTable('persons').addColumn(col, 'text').execute();
        await db.schema.alterTable('memberships').addColumn('display', 'text').execute();
        await db.schema
          .createTable('person_emails')
          .addColumn('person_id', 'text', (c) => c.notNull().references('persons.id').onDelete('cascade'))
          .addColumn('source_id', 'text', (c) => c.notNull())
          .addColumn('position', 'integer', (c) => c.notNull())
          .addColumn('value_lc', 'text', (c) => c.notNull())
          .addColumn('type_lc', 'text')
          .addColumn('is_primary', 'integer', (c) => c.notNull())
          .addPrimaryKeyConstraint('person_emails_pk', ['person_id', 'position'])
          .execute();
        await db.schema.createIndex('person_emails_value').on('person_emails').columns(['source_id', 'value_lc']).execute();

        // Backfill in id order, a batch at a time, with the same case folding the repository uses.
        let after = '';
        for (;;) {
          const rows = await db.selectFrom('persons').select(['id', 'source_id', 'display_name', 'profile', 'resource', 'email_lc']).where('id', '>', after).orderBy('id').limit(500).execute();
          if (rows.length === 0) break;
          for (const r of rows as Array<{ id: string; source_id: string; display_name: string | null; profile: string; resource: string; email_lc: string | null }>) {
            const profile = JSON.parse(r.profile) as { givenName?: string; familyName?: string };
            await db
              .updateTable('persons')
              .set({
                display_name_lc: r.display_name?.toLowerCase() ?? null,
                given_name_lc: profile.givenName?.toLowerCase() ?? null,
                family_name_lc: profile.familyName?.toLowerCase() ?? null,
              })
              .where('id', '=', r.id)
              .execute();
            const resource = JSON.parse(r.resource) as { emails?: Array<{ value?: unknown; type?: unknown; primary?: unknown }> };
            const emails = Array.isArray(resource.emails) ? resource.emails.filter((e) => typeof e?.value === 'string' && e.value !== '') : [];
            const list = emails.length > 0 ? emails : r.email_lc ? [{ value: r.email_lc }] : [];
            if (list.length > 0)
              await db
                .insertInto('person_emails')
                .values(
                  list.map((e, position) => ({
                    person_id: r.id,
                    source_id: r.source_id,
                    position,
                    value_lc: String(e.value).toLowerCase(),
                    type_lc: typeof e.type === 'string' ? e.type.toLowerCase() : null,
                    is_primary: e.primary === true ? 1 : 0,
                  })),
                )
                .execute();
          }
          after = rows[rows.length - 1]!.id as string;
        }

        await db.schema.createIndex('persons_source_display').on('persons').columns(['source_id', 'display_name_lc']).execute();
        await db.schema.createIndex('persons_source_given').on('persons').columns(['source_id', 'given_name_lc']).execute();
        await db.schema.createIndex('persons_source_family').on('persons').columns(['source_id', 'family_name_lc']).execute();
        await db.schema.createIndex('persons_source_active').on('persons').columns(['source_id', 'active', 'created_at', 'id']).execute();
        await db.schema.createIndex('persons_source_updated').on('persons').columns(['source_id', 'updated_at']).execute();
        await db.schema.createIndex('groups_source_updated').on('groups').columns(['source_id', 'updated_at']).execute();
        // Superseded by person_emails, which holds every address rather than one per person.
        await db.schema.dropIndex('persons_source_email').execute();

        if (dialect === 'sqlite') {
          // Without statistics SQLite assumes every index prefix is selective, so for
          // `familyName eq` or an e-mail lookup it walks the whole source through the
          // creation-order index (to skip sorting) instead of the selective index. Measure the
          // SCIM tables (bounded), and where a table is still empty state what the schema means
          // (few sources, selective names and addresses) as documented for sqlite_stat1. A later
          // ANALYZE replaces these with measured figures. PostgreSQL keeps its own statistics.
          await sql`pragma analysis_limit = 1000`.execute(db);
          for (const t of ['persons', 'person_emails', 'groups', 'memberships']) await sql.raw(`analyze ${t}`).execute(db);
          for (const [tbl, idx, stat] of SQLITE_TYPICAL_STATS) {
            const have = await sql<{ n: number }>`select count(*) as n from sqlite_stat1 where tbl = ${tbl} and idx = ${idx}`.execute(db);
            if (Number(have.rows[0]?.n ?? 0) === 0) await sql`insert into sqlite_stat1 (tbl, idx, stat) values (${tbl}, ${idx}, ${stat})`.execute(db);
          }
          await sql`analyze sqlite_schema`.execute(db);
        }
      },
    },
    '0003_meta_and_dead_letter_link': {
      /**
       * `meta` holds daemon facts that outlive a process (the policy fingerprint, so a policy
       * change re-reconciles everyone at start). Operations name the dead letter they belong to.
       */
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('meta')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute();
        await db.schema.alterTable('operations').addColumn('failed_job_id', 'text').execute();
        await db.schema.createIndex('operations_failed_job').on('operations').column('failed_job_id').execute();
      },
    },
    '0004_two_truths_tasks_schedule': {
      /**
       * The second truth of revocation: per key, when a change was accepted and when it became
       * physically effective, with the latest moment the key could still open a door meanwhile.
       * Manual tasks (collect a key, blocklist it) and the time-based schedule (termination
       * dates, access windows) live beside them; inbound_events dedupes webhook deliveries.
       */
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('key_changes')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('operation_id', 'text', (c) => c.notNull())
          .addColumn('lock_system_id', 'text', (c) => c.notNull())
          .addColumn('person_id', 'text', (c) => c.notNull())
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('revocation', 'integer', (c) => c.notNull())
          .addColumn('job_id', 'text')
          .addColumn('accepted_at', bigint, (c) => c.notNull())
          .addColumn('effective_at', bigint)
          .addColumn('horizon', bigint)
          .addColumn('checked_at', bigint)
          .execute();
        await db.schema.createIndex('key_changes_open').on('key_changes').columns(['effective_at', 'lock_system_id', 'person_id']).execute();
        await db.schema.createIndex('key_changes_key').on('key_changes').columns(['lock_system_id', 'key_id']).execute();
        await db.schema.createIndex('key_changes_operation').on('key_changes').column('operation_id').execute();

        await db.schema
          .createTable('tasks')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('lock_system_id', 'text', (c) => c.notNull())
          .addColumn('person_id', 'text', (c) => c.notNull())
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('description', 'text', (c) => c.notNull())
          .addColumn('reason', 'text', (c) => c.notNull())
          .addColumn('correlation_id', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('deadline', bigint, (c) => c.notNull())
          .addColumn('done_at', bigint)
          .addColumn('done_by', 'text')
          .addColumn('note', 'text')
          .execute();
        await db.schema.createIndex('tasks_open').on('tasks').columns(['done_at', 'deadline']).execute();
        await db.schema.createIndex('tasks_subject').on('tasks').columns(['lock_system_id', 'person_id', 'key_id', 'kind']).execute();

        await db.schema
          .createTable('schedule')
          .addColumn('person_id', 'text', (c) => c.primaryKey())
          .addColumn('due_at', bigint, (c) => c.notNull())
          .addColumn('reason', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('schedule_due').on('schedule').column('due_at').execute();

        await db.schema
          .createTable('inbound_events')
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('event_id', 'text', (c) => c.notNull())
          .addColumn('received_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('inbound_events_pk', ['source', 'event_id'])
          .execute();
        await db.schema.createIndex('inbound_events_received').on('inbound_events').column('received_at').execute();
      },
    },
    '0005_identity_sources': {
      /**
       * API-connected identity sources (src/sources): which lockstep person and group each source
       * record feeds (and, with identity.matchOn, which records of several sources are one
       * person), webhook/delta hints deduplicated on their key and kept as the confirmation
       * outbox, tasks hooks ask for, per-source cursor and schedule, and lock-system drift checks.
       */
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('source_users')
          .addColumn('source_id', 'text', (c) => c.notNull())
          .addColumn('remote_id', 'text', (c) => c.notNull())
          .addColumn('person_id', 'text', (c) => c.notNull())
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('match_key', 'text')
          .addColumn('present', 'integer', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .addColumn('written_hash', 'text')
          .addColumn('record', 'text')
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('confirmed_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('source_users_pk', ['source_id', 'remote_id'])
          .execute();
        await db.schema.createIndex('source_users_person').on('source_users').column('person_id').execute();
        await db.schema.createIndex('source_users_match').on('source_users').columns(['match_key', 'role']).execute();

        await db.schema
          .createTable('source_groups')
          .addColumn('source_id', 'text', (c) => c.notNull())
          .addColumn('remote_id', 'text', (c) => c.notNull())
          .addColumn('group_id', 'text', (c) => c.notNull())
          .addColumn('hash', 'text', (c) => c.notNull())
          .addColumn('members_hash', 'text')
          .addColumn('confirmed_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('source_groups_pk', ['source_id', 'remote_id'])
          .execute();
        await db.schema.createIndex('source_groups_group').on('source_groups').column('group_id').execute();

        await db.schema
          .createTable('source_hints')
          .addColumn('seq', serial, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('source_id', 'text', (c) => c.notNull())
          .addColumn('dedupe_key', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('target', 'text', (c) => c.notNull())
          .addColumn('target_id', 'text', (c) => c.notNull())
          .addColumn('group_id', 'text')
          .addColumn('event_id', 'text', (c) => c.notNull())
          .addColumn('event_type', 'text', (c) => c.notNull())
          .addColumn('occurred_at', 'text', (c) => c.notNull())
          .addColumn('revocation', 'integer', (c) => c.notNull())
          .addColumn('received_at', bigint, (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull())
          .addColumn('done_at', bigint)
          .addColumn('error', 'text')
          .execute();
        await db.schema.createIndex('source_hints_dedupe').unique().on('source_hints').columns(['source_id', 'dedupe_key']).execute();
        await db.schema.createIndex('source_hints_target').on('source_hints').columns(['source_id', 'target', 'target_id', 'state']).execute();
        await db.schema.createIndex('source_hints_state').on('source_hints').columns(['state', 'received_at']).execute();

        await db.schema
          .createTable('source_tasks')
          .addColumn('seq', serial, (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('source_id', 'text', (c) => c.notNull())
          .addColumn('dedupe_key', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('data', 'text', (c) => c.notNull())
          .addColumn('received_at', bigint, (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull())
          .addColumn('done_at', bigint)
          .addColumn('error', 'text')
          .execute();
        await db.schema.createIndex('source_tasks_dedupe').unique().on('source_tasks').columns(['source_id', 'dedupe_key']).execute();
        await db.schema.createIndex('source_tasks_state').on('source_tasks').columns(['state', 'received_at']).execute();

        await db.schema
          .createTable('source_state')
          .addColumn('source_id', 'text', (c) => c.primaryKey())
          .addColumn('cursor', 'text')
          .addColumn('cursor_at', bigint)
          .addColumn('resync', 'text')
          .addColumn('resync_at', bigint)
          .addColumn('last_delta_at', bigint)
          .addColumn('last_snapshot_at', bigint)
          .addColumn('last_snapshot_done_at', bigint)
          .addColumn('last_snapshot', 'text')
          .addColumn('next_maintain_at', bigint)
          .addColumn('last_error', 'text')
          .addColumn('last_error_at', bigint)
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('drift_checks')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('system_id', 'text', (c) => c.notNull())
          .addColumn('started_at', bigint, (c) => c.notNull())
          .addColumn('finished_at', bigint)
          .addColumn('summary', 'text')
          .execute();
        await db.schema.createIndex('drift_checks_system').on('drift_checks').columns(['kind', 'system_id', 'started_at']).execute();
        await db.schema
          .createTable('drift_findings')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('check_id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('system_id', 'text', (c) => c.notNull())
          .addColumn('person_id', 'text', (c) => c.notNull())
          .addColumn('detail', 'text', (c) => c.notNull())
          .addColumn('found_at', bigint, (c) => c.notNull())
          .addColumn('repaired_at', bigint)
          .execute();
        await db.schema.createIndex('drift_findings_check').on('drift_findings').column('check_id').execute();
      },
    },
    '0006_lockdowns': {
      /**
       * Emergency lockdowns: scope, reason, who started and lifted them (two principals under dual
       * control), the per-lock-system targets counted at start, and exemptions added while running.
       */
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('lockdowns')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('scope', 'text', (c) => c.notNull())
          .addColumn('scope_key', 'text', (c) => c.notNull())
          .addColumn('reason', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('correlation_id', 'text', (c) => c.notNull())
          .addColumn('targets', 'text', (c) => c.notNull())
          .addColumn('started_by', 'text', (c) => c.notNull())
          .addColumn('started_at', bigint, (c) => c.notNull())
          .addColumn('expires_at', bigint)
          .addColumn('lift_requested_by', 'text')
          .addColumn('lift_requested_at', bigint)
          .addColumn('lifted_by', 'text')
          .addColumn('lifted_at', bigint)
          .addColumn('lift_correlation_id', 'text')
          .execute();
        await db.schema.createIndex('lockdowns_state').on('lockdowns').columns(['state', 'scope_key']).execute();
        await db.schema
          .createTable('lockdown_exemptions')
          .addColumn('lockdown_id', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('value', 'text', (c) => c.notNull())
          .addColumn('added_by', 'text', (c) => c.notNull())
          .addColumn('added_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('lockdown_exemptions_pk', ['lockdown_id', 'kind', 'value'])
          .execute();
      },
    },
    '0007_correlation_index': {
      /** Lockdown progress counts operations by correlation id; without an index that is a scan per poll. */
      async up(db: Kysely<any>) {
        await db.schema.createIndex('operations_correlation').on('operations').columns(['correlation_id', 'kind']).execute();
        await db.schema.createIndex('tasks_correlation').on('tasks').column('correlation_id').execute();
      },
    },
    '0008_lock_state_end_date': {
      /**
       * The termination date lockstep last put on the person's keys there: NULL unknown (rows from
       * before this column), '' none, else an ISO date. A changed terminationDate is compared with it.
       */
      async up(db: Kysely<any>) {
        await db.schema.alterTable('lock_state').addColumn('end_date', 'text').execute();
      },
    },
    '0009_lockdown_progress_covering': {
      /**
       * A lockdown's progress (GET /api/v1/lockdowns/{id}, polled by dashboards while it runs)
       * counts its operations by lock system and state and sums the exposure of its open
       * revocations. With indexes that hold every column those counts read, each is a walk of one
       * index range instead of a table lookup per operation (10,000 operations: ~15 ms a poll).
       * The new operations index starts with the columns of the one it replaces and ends with the
       * id the exposure count joins on.
       */
      async up(db: Kysely<any>) {
        await db.schema.createIndex('operations_progress').on('operations').columns(['correlation_id', 'kind', 'lock_system_id', 'state', 'effective_at', 'id']).execute();
        await db.schema.dropIndex('operations_correlation').execute();
        await db.schema.createIndex('key_changes_exposure').on('key_changes').columns(['operation_id', 'revocation', 'effective_at', 'horizon']).execute();
        await db.schema.dropIndex('key_changes_operation').execute();
      },
    },
    '0010_lock_state_unsure': {
      /**
       * Access that may be on the keys without an accepted grant (a grant dead-lettered after it
       * started): JSON array, NULL for none. The planner revokes it when unwanted.
       */
      async up(db: Kysely<any>) {
        await db.schema.alterTable('lock_state').addColumn('unsure', 'text').execute();
      },
    },
    '0011_lockdown_marked_at': {
      /**
       * When every target of a lockdown had been marked dirty and counted. A lockdown now starts
       * with its row and a first few persons, and marks and counts the rest right after (see
       * LockdownService.start); NULL while that is still to do, which a restart picks up.
       * Lockdowns of earlier versions were marked in full when they started.
       */
      async up(db: Kysely<any>) {
        await db.schema.alterTable('lockdowns').addColumn('marked_at', bigint).execute();
        await db.updateTable('lockdowns').set({ marked_at: sql`started_at` }).execute();
      },
    },
    '0012_lockdown_lift_marked_at': {
      /**
       * The same for the lift (or expiry): it now marks a first few persons with it and everyone
       * right after (see LockdownService.lift); NULL while that is still to do. Lockdowns lifted
       * by earlier versions marked everyone with the lift.
       */
      async up(db: Kysely<any>) {
        await db.schema.alterTable('lockdowns').addColumn('lift_marked_at', bigint).execute();
        await db.updateTable('lockdowns').set({ lift_marked_at: sql`lifted_at` }).where('lifted_at', 'is not', null).execute();
      },
    },
    '0013_operations_failed_job_partial': {
      /**
       * Only a dead-lettered operation has a failed job. The index held a NULL entry for every
       * other operation: one more index write with each insert (1 in 70 of the WAL pages the
       * pipeline benchmark writes) and entries kept for as long as the operations are. Both
       * lookups (the dead letters of a failed job, of a page of them) name the job, which implies
       * NOT NULL, so SQLite and PostgreSQL use the partial index for them.
       */
      async up(db: Kysely<any>) {
        await db.schema.dropIndex('operations_failed_job').execute();
        await db.schema.createIndex('operations_failed_job').on('operations').column('failed_job_id').where('failed_job_id', 'is not', null).execute();
      },
    },
  };
  return { getMigrations: async () => list };
}

/**
 * sqlite_stat1 rows for empty SCIM tables: "rows, then rows per distinct value of each index
 * prefix" for a source of 200,000 users among a few sources (see migration 0002).
 */
const SQLITE_TYPICAL_STATS: Array<[string, string, string]> = [
  ['persons', 'sqlite_autoindex_persons_1', '1000000 1'],
  ['persons', 'persons_source_username', '1000000 200000 1'],
  ['persons', 'persons_source_external', '1000000 200000 1'],
  ['persons', 'persons_source_created', '1000000 200000 1 1'],
  ['persons', 'persons_source_display', '1000000 200000 2'],
  ['persons', 'persons_source_given', '1000000 200000 50'],
  ['persons', 'persons_source_family', '1000000 200000 10'],
  ['persons', 'persons_source_active', '1000000 200000 100000 1 1'],
  ['persons', 'persons_source_updated', '1000000 200000 2'],
  ['person_emails', 'sqlite_autoindex_person_emails_1', '1200000 1 1'],
  ['person_emails', 'person_emails_value', '1200000 240000 1'],
  ['groups', 'sqlite_autoindex_groups_1', '10000 1'],
  ['groups', 'groups_source_name', '10000 2000 1'],
  ['groups', 'groups_source_external', '10000 2000 1'],
  ['groups', 'groups_source_created', '10000 2000 1 1'],
  ['groups', 'groups_source_updated', '10000 2000 2'],
  ['memberships', 'sqlite_autoindex_memberships_1', '2000000 1000 1'],
  ['memberships', 'memberships_person', '2000000 10'],
];

/** The chain starts from a fixed, documented value so that deleting the first row is detectable. */
export const GENESIS_HASH = '0'.repeat(64);
