//! `bench scale`'s scratch database and its volume: a database of the run's own (created by
//! the owner role, migrated, dropped afterwards: millions of rows leave no bloat behind in the
//! configured one), filled server-side with `generate_series` in batches.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

use secrecy::{ExposeSecret, SecretString};
use sqlx::Connection;

use super::BenchError;
use crate::config::Settings;
use crate::db::SystemPool;

/// Rows written per statement while filling (one transaction each, progress logged between).
const BATCH: i64 = 500_000;

/// A Stripe event as Stripe sends it (a subscription update, about 1.3 kB of JSON), with `__N__`
/// for the row's number: the inbox's size per million events is measured on real-sized rows.
const EVENT: &str = r#"{"id":"evt___N__","object":"event","type":"customer.subscription.updated","api_version":"2025-09-30.clover","created":1764900000,"livemode":false,"pending_webhooks":1,"request":{"id":null,"idempotency_key":null},"data":{"object":{"id":"sub___N__","object":"subscription","customer":"cus___N__","status":"active","created":1764800000,"start_date":1764800000,"billing_cycle_anchor":1764800000,"cancel_at":null,"cancel_at_period_end":false,"canceled_at":null,"ended_at":null,"trial_end":null,"trial_start":null,"default_payment_method":null,"currency":"usd","livemode":false,"metadata":{},"collection_method":"charge_automatically","latest_invoice":"in___N__","items":{"object":"list","has_more":false,"data":[{"id":"si___N__","object":"subscription_item","created":1764800000,"quantity":2,"subscription":"sub___N__","current_period_start":1764800000,"current_period_end":1767392000,"metadata":{},"price":{"id":"price_pro_monthly","object":"price","product":"prod_pro","unit_amount":5000,"currency":"usd","type":"recurring","active":true,"recurring":{"interval":"month","interval_count":1}}}]}},"previous_attributes":{"items":{"data":[{"quantity":1}]}}}}"#;

/// The scratch database: its name and the settings that point at it.
pub(super) struct Scratch {
    pub(super) name: String,
    owner_url: SecretString,
    /// The owner's URL of the scratch database itself (ANALYZE is the owner's).
    own_url: String,
}

/// `url` with its database (path) replaced by `database`.
fn with_database(url: &str, database: &str) -> Result<String, BenchError> {
    let mut parsed = reqwest::Url::parse(url).map_err(|_| BenchError::NotReady("a PostgreSQL URL could not be parsed".into()))?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
}

/// Creates and migrates the scratch database, gives the inbox and the ledger a partition for
/// each of the last `months` months ([`months_as_partitions`]), and points `settings` at it.
pub(super) async fn create(settings: &mut Settings, run_id: &str, months: i64) -> Result<Scratch, BenchError> {
    let Some(owner) = settings.owner_database_url.clone() else {
        return Err(BenchError::NotReady("bench scale works in a database of its own: set BALLAST_OWNER_DATABASE_URL (the owner role creates and drops it)".into()));
    };
    let name = format!("ballast_scale_{run_id}");
    let mut admin = sqlx::PgConnection::connect(owner.expose_secret()).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await?;
    admin.close().await?;
    let own_url = with_database(owner.expose_secret(), &name)?;
    let scratch = Scratch { name: name.clone(), owner_url: owner.clone(), own_url: own_url.clone() };
    let migrated = crate::db::migrate(&own_url).await;
    if let Err(e) = migrated {
        scratch.drop_database().await;
        return Err(BenchError::NotReady(format!("migrating the scratch database: {e}")));
    }
    if let Err(e) = super::as_owner(&own_url, &[&months_as_partitions(months)]).await {
        scratch.drop_database().await;
        return Err(BenchError::NotReady(format!("partitioning the scratch database by month: {e}")));
    }
    settings.database_url = SecretString::from(with_database(settings.database_url.expose_secret(), &name)?);
    settings.system_database_url = SecretString::from(with_database(settings.system_database_url.expose_secret(), &name)?);
    settings.owner_database_url = Some(SecretString::from(own_url));
    settings.replica.url = None;
    Ok(scratch)
}

/// The owner's statement that replaces the inbox's and the ledger's first partition with one
/// partition per month from `months` months ago. On a database migrated today that partition
/// (the heap from before the conversion) is bound from MINVALUE to a month or two ahead, so
/// a year of loaded rows would all land in it and the run would measure one big partition,
/// not the twelve months a database a year old has. The scratch database is empty here, so
/// the detach and the drop move nothing.
fn months_as_partitions(months: i64) -> String {
    format!(
        "DO $$
         DECLARE
             t text; first text; upto timestamptz; m timestamptz;
         BEGIN
             PERFORM set_config('timezone', 'UTC', true);
             FOREACH t IN ARRAY ARRAY['stripe_events', 'usage_ledger'] LOOP
                 SELECT partition, range_to INTO first, upto FROM ballast_partitions(t) WHERE range_from IS NULL;
                 CONTINUE WHEN first IS NULL;
                 EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', t, first);
                 EXECUTE format('DROP TABLE %I', first);
                 -- The load spans `months` × 30 days back from now.
                 m := date_trunc('month', now() - make_interval(days => {days}));
                 WHILE m < upto LOOP
                     PERFORM ballast_partition_create(t, m, least(m + interval '1 month', upto));
                     m := m + interval '1 month';
                 END LOOP;
             END LOOP;
         END $$",
        days = months.saturating_mul(30)
    )
}

impl Scratch {
    /// Statistics for the planner, as the owner (only a table's owner may ANALYZE it), and the
    /// customer list's tables as autovacuum leaves them (the row versions the seed's own list
    /// refreshes left behind gone, the visibility map set); the big tables are insert-only.
    pub(super) async fn analyze(&self) -> Result<(), sqlx::Error> {
        super::as_owner(&self.own_url, &["VACUUM customer_list, tenants, subscriptions, dunning_cases, tenant_activity", "ANALYZE"]).await
    }

    /// The months about to be retired as a month past its retention is in service: vacuumed
    /// (autovacuum's insert threshold, PostgreSQL 13 on, and the vacuums after its rows were
    /// settled), so its visibility map is set and a retirement's count of its rows reads the
    /// key's index, not the month. The load wrote them just now and nothing vacuumed them.
    pub(super) async fn vacuum(&self, partitions: &[String]) -> Result<(), sqlx::Error> {
        let statements: Vec<String> = partitions.iter().map(|p| format!("VACUUM \"{}\"", p.replace('"', "\"\""))).collect();
        super::as_owner(&self.own_url, &statements.iter().map(String::as_str).collect::<Vec<_>>()).await
    }

    /// Drops the database once the run's connections have ended (their server processes exit
    /// a moment after the pools close, and only a superuser may end another role's); a failure
    /// is logged, not returned: the figures are still worth printing.
    pub(super) async fn drop_database(&self) {
        let drop_once = || async {
            let mut admin = sqlx::PgConnection::connect(self.owner_url.expose_secret()).await?;
            let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {}", self.name))).execute(&mut admin).await;
            admin.close().await?;
            dropped.map(|_| ())
        };
        // 55006: object in use (a connection not gone yet).
        let in_use = |e: &sqlx::Error| e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "55006");
        let backoff = ExponentialBuilder::default().with_min_delay(Duration::from_millis(50)).with_max_delay(Duration::from_secs(1)).with_max_times(20);
        if let Err(e) = drop_once.retry(backoff).when(in_use).await {
            tracing::warn!(message = "The scratch database was not dropped; drop it by hand.", database = %self.name, error = %e);
        }
    }
}

/// Runs `sql` (with `{from}` and `{to}` filled in) over 1..=n in batches; returns the seconds.
async fn in_batches(conn: &mut sqlx::PgConnection, what: &str, n: i64, sql: &str) -> Result<f64, sqlx::Error> {
    let started = Instant::now();
    let mut from = 1;
    while from <= n {
        let to = (from + BATCH - 1).min(n);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.replace("{from}", &from.to_string()).replace("{to}", &to.to_string()))).execute(&mut *conn).await?;
        tracing::info!(message = "Filling.", what, rows = to, of = n);
        from = to + 1;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Fills the scratch database: `tenants` tenants with a subscription, entitlements and a key
/// each; `inbox` Stripe events over the last `months` months (one in a thousand still waiting);
/// `ledger` usage ledger rows over the same months; `audit` audit rows in the audit log's
/// oldest partition (the month the retention figure retires). Returns the seconds it took.
/// The waiting events are picked by a hash of their number, not a stride, so they fall on many
/// tenants (a stride shared with the tenant count put them all on a few).
pub(super) async fn fill(pool: &SystemPool, prefix: &str, tenants: usize, inbox: i64, ledger: i64, audit: i64, months: i64) -> Result<f64, sqlx::Error> {
    let started = Instant::now();
    super::customers::seed(pool, prefix, tenants).await?;
    // One connection throughout: the tenants' numbering is a temporary table of its session.
    let mut conn = pool.0.acquire().await?;
    let conn = &mut *conn;
    let span_secs = months * 30 * 86_400;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE bench_tenants AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS i FROM tenants WHERE name LIKE '{prefix}%';
         CREATE UNIQUE INDEX ON bench_tenants (i);
         INSERT INTO entitlements (tenant_id, feature, enabled, limit_value, source, plan_id)
           SELECT id, f, true, 10, 'plan', 'pro' FROM bench_tenants, unnest(ARRAY['projects', 'seats', 'sso', 'api_calls', 'exports']) f;"
    )))
    .execute(&mut *conn)
    .await?;
    let spread = i64::try_from(tenants.max(1)).unwrap_or(1);
    let template = EVENT.replace('\'', "''");
    // Stripe's creation times are whole seconds, as the intake stores them: a job's month names
    // its row exactly (a fractional one would miss, and the claim fall back to the id).
    in_batches(conn, "stripe_events", inbox, &format!(
        "INSERT INTO stripe_events (id, type, tenant_id, stripe_created, payload, status, customer_id, object_id, received_at, queued_at, processed_at)
         SELECT 'evt_' || g, 'customer.subscription.updated', t.id, date_trunc('second', now() - make_interval(secs => (g * {span_secs} / {inbox})::float8)),
                replace('{template}', '__N__', g::text)::jsonb,
                CASE WHEN abs(hashtext(g::text)) % 1000 = 0 THEN 'received' ELSE 'processed' END, 'cus_' || (g % {spread}), 'sub_' || g,
                now() - make_interval(secs => (g * {span_secs} / {inbox})::float8), NULL,
                CASE WHEN abs(hashtext(g::text)) % 1000 = 0 THEN NULL ELSE now() - make_interval(secs => (g * {span_secs} / {inbox})::float8) END
         FROM generate_series({{from}}::bigint, {{to}}::bigint) g JOIN bench_tenants t ON t.i = g % {spread}"
    ))
    .await?;
    in_batches(conn, "usage_ledger", ledger, &format!(
        "INSERT INTO usage_ledger (id, tenant_id, metric, usage_minute, flush_id, quantity, report_status, reported_at)
         SELECT gen_random_uuid(), t.id, (ARRAY['api_calls', 'storage_gb', 'seats'])[1 + g % 3],
                date_trunc('minute', now() - make_interval(secs => (g * {span_secs} / {ledger})::float8)), 'bench', 1 + g % 50, 'reported', now()
         FROM generate_series({{from}}::bigint, {{to}}::bigint) g JOIN bench_tenants t ON t.i = g % {spread}"
    ))
    .await?;
    // The audit log's oldest partition (its first, converted one) ends at the start of a month
    // ahead: its rows go in the month before that end.
    in_batches(conn, "audit_log", audit, &format!(
        "INSERT INTO audit_log (tenant_id, actor, action, params, outcome, at)
         SELECT t.id, 'ops', 'overrides.set', jsonb_build_object('feature', 'seats', 'n', g), 'ok',
                (SELECT range_to FROM ballast_partitions('audit_log') LIMIT 1) - make_interval(secs => (1 + g % 2500000)::float8)
         FROM generate_series({{from}}::bigint, {{to}}::bigint) g JOIN bench_tenants t ON t.i = g % {spread}"
    ))
    .await?;
    sqlx::raw_sql("DROP TABLE bench_tenants").execute(&mut *conn).await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Fills outbound webhook deliveries in their first partition's last month (the month the
/// retention figure retires): `deliveries` deliveries to one endpoint each of up to 1,000 of
/// the run's tenants, a message for every four, and two attempts each. Their ids carry times in
/// that month, as a UUIDv7 does (time first, random after). Returns the seconds it took.
pub(super) async fn fill_deliveries(pool: &SystemPool, prefix: &str, deliveries: i64) -> Result<f64, sqlx::Error> {
    let started = Instant::now();
    let mut conn = pool.0.acquire().await?;
    let conn = &mut *conn;
    // An id of the millisecond `$ms` expression, time first as a UUIDv7, the rest random.
    let id_at = |ms: &str| format!("(lpad(to_hex({ms}), 12, '0') || substr(md5(random()::text || g::text), 1, 20))::uuid");
    // The first partition ends at a month's start: its last month is the 30 days before.
    let month_end = "(SELECT (extract(epoch FROM range_to) * 1000)::bigint FROM ballast_partitions('webhook_deliveries') LIMIT 1)";
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE bench_endpoints AS
           SELECT id AS tenant_id, gen_random_uuid() AS id, row_number() OVER (ORDER BY id) - 1 AS i
           FROM (SELECT id FROM tenants WHERE name LIKE '{prefix}%' ORDER BY id LIMIT 1000) t;
         CREATE UNIQUE INDEX ON bench_endpoints (i);
         INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret)
           SELECT id, tenant_id, 'https://hooks.example.com/in', ARRAY['*'], 'sealed' FROM bench_endpoints;"
    )))
    .execute(&mut *conn)
    .await?;
    let endpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_endpoints").fetch_one(&mut *conn).await?;
    let endpoints = endpoints.max(1);
    let at = format!("{month_end} - 1 - (g * 2592000000 / {deliveries})");
    in_batches(conn, "webhook_messages", deliveries / 4 + 1, &format!(
        "INSERT INTO webhook_messages (id, tenant_id, event_type, body, created_at)
         SELECT {id}, e.tenant_id, 'invoice.paid', '{{\"type\":\"invoice.paid\"}}', now()
         FROM generate_series({{from}}::bigint, {{to}}::bigint) g JOIN bench_endpoints e ON e.i = g % {endpoints}",
        id = id_at(&format!("{month_end} - 1 - (g * 4 * 2592000000 / {deliveries})")),
    ))
    .await?;
    sqlx::raw_sql("CREATE TEMP TABLE bench_messages AS SELECT id, tenant_id, row_number() OVER (ORDER BY id) - 1 AS i FROM webhook_messages; CREATE UNIQUE INDEX ON bench_messages (i);")
        .execute(&mut *conn)
        .await?;
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_messages").fetch_one(&mut *conn).await?;
    in_batches(conn, "webhook_deliveries", deliveries, &format!(
        "INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id, status, attempts, created_at, finished_at)
         SELECT {id}, e.tenant_id, m.id, e.id, 'delivered', 2, now(), now()
         FROM generate_series({{from}}::bigint, {{to}}::bigint) g JOIN bench_endpoints e ON e.i = g % {endpoints}
              JOIN bench_messages m ON m.i = g % {messages}",
        id = id_at(&at),
    ))
    .await?;
    in_batches(conn, "webhook_attempts", deliveries, &format!(
        "INSERT INTO webhook_attempts (id, tenant_id, delivery_id, attempt, attempted_at, duration_ms, status_code)
         SELECT gen_random_uuid(), d.tenant_id, d.id, a, now(), 40, CASE WHEN a = 1 THEN 503 ELSE 200 END
         FROM (SELECT id, tenant_id FROM webhook_deliveries ORDER BY id OFFSET {{from}} - 1 LIMIT {{to}} - {{from}} + 1) d, generate_series(1, 2) a"
    ))
    .await?;
    sqlx::raw_sql("DROP TABLE bench_endpoints; DROP TABLE bench_messages").execute(&mut *conn).await?;
    Ok(started.elapsed().as_secs_f64())
}


/// `emails` outbox rows of the load's tenants (one in a thousand not sent yet, an email's usual
/// size) and their send jobs' statuses (one in a thousand not finished), each spread over the
/// last 30 days of its table's first partition, the month a retirement takes. Returns the
/// seconds it took.
pub(super) async fn fill_outbox(pool: &SystemPool, prefix: &str, emails: i64) -> Result<f64, sqlx::Error> {
    let started = Instant::now();
    let mut conn = pool.0.acquire().await?;
    let conn = &mut *conn;
    // A UUIDv7 of the millisecond `$ms` expression in the last 30 days of `table`'s first
    // partition, the rest random.
    let id_in = |table: &str| {
        format!(
            "(lpad(to_hex((SELECT (extract(epoch FROM range_to) * 1000)::bigint FROM ballast_partitions('{table}') LIMIT 1) - 1 - (g * 2592000000 / {emails})), 12, '0')
              || '7' || substr(md5(random()::text || g::text), 1, 19))::uuid"
        )
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE bench_senders AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS i FROM tenants WHERE name LIKE '{prefix}%';
         CREATE UNIQUE INDEX ON bench_senders (i);"
    )))
    .execute(&mut *conn)
    .await?;
    let senders: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_senders").fetch_one(&mut *conn).await?;
    let senders = senders.max(1);
    in_batches(conn, "email_outbox", emails, &format!(
        "INSERT INTO email_outbox (id, tenant_id, dedup_key, template, to_address, subject, body_text, body_html, message_id, status, attempts, sent_at)
         SELECT {id}, t.id, 'bench:' || g, 'usage_warning', 'user' || g || '@example.com', 'You have used 80% of your api_calls this month',
                repeat('Your usage this month, and what it costs. ', 20), '<html><body>' || repeat('<p>Your usage this month, and what it costs.</p>', 30) || '</body></html>',
                '<bench' || g || '@ballast>', CASE WHEN g % 1000 = 0 THEN 'pending' ELSE 'sent' END, 1, CASE WHEN g % 1000 = 0 THEN NULL ELSE now() END
         FROM generate_series({{from}}::bigint, {{to}}::bigint) g JOIN bench_senders t ON t.i = g % {senders}",
        id = id_in("email_outbox"),
    ))
    .await?;
    in_batches(conn, "job_status", emails, &format!(
        "INSERT INTO job_status (id, tenant_id, kind, state, attempts, started_at, finished_at, id_at)
         SELECT s.id, s.tenant_id, 'email.send', CASE WHEN s.g % 1000 = 0 THEN 'queued' ELSE 'done' END, 1, now(),
                CASE WHEN s.g % 1000 = 0 THEN NULL ELSE now() END, ballast_job_id_time(s.id)
         FROM (SELECT 'email_' || {id} AS id, t.id AS tenant_id, g
               FROM generate_series({{from}}::bigint, {{to}}::bigint) g JOIN bench_senders t ON t.i = g % {senders}) s",
        id = id_in("job_status"),
    ))
    .await?;
    sqlx::raw_sql("DROP TABLE bench_senders").execute(&mut *conn).await?;
    Ok(started.elapsed().as_secs_f64())
}
