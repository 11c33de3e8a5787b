//! `ballast bench scale`: the hot statements at a large SaaS's volume. In a scratch database of
//! its own (created, migrated, dropped; see `scale_seed`) it loads tenants, Stripe events over
//! twelve months, usage ledger rows, an audit month and queued jobs, then reports each hot
//! statement's p50 and p99 (and whether its plan reads a growing table whole), what retiring
//! one month of each partitioned table (the audit log, the inbox, the outbound deliveries and
//! their attempts, the email outbox and job statuses) costs while a writer
//! writes, and the size on disk per million rows. Figures for README and
//! docs/performance.md; never a timed test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::{BenchError, scale_seed};
use crate::app::AppState;
use crate::config::Settings;
use crate::newtypes::{EventId, TenantId};

/// What to load.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleParams {
    /// Tenants (each with a subscription and five entitlements).
    pub tenants: usize,
    /// Stripe events in the inbox, spread over `months`.
    pub inbox: i64,
    /// Usage ledger rows, spread over `months`.
    pub ledger: i64,
    /// Audit rows in the month that is retired.
    pub audit: i64,
    /// Outbound webhook deliveries (two attempts each) in the month that is retired.
    pub deliveries: i64,
    /// Emails in the outbox, and their send jobs' statuses, in the month that is retired.
    pub emails: i64,
    /// Queued jobs (a paused `noop`).
    pub jobs: usize,
    /// Months the inbox and ledger span.
    pub months: i64,
    /// Timed runs of each statement.
    pub samples: u64,
}

/// One statement's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StatementFigure {
    /// What it is.
    pub statement: String,
    /// p50 (ms).
    pub p50_ms: f64,
    /// p99 (ms).
    pub p99_ms: f64,
    /// Growing tables its plan reads whole (empty: index-bound); none when not explained.
    pub whole_scans: Option<Vec<String>>,
}

/// Retiring one month of a partitioned table.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionFigure {
    /// The table.
    pub table: String,
    /// Rows the month held.
    pub rows: u64,
    /// Of them, moved to the DEFAULT partition because they were still to be handled.
    pub kept: u64,
    /// The whole retirement: count, detach, drop (ms).
    pub total_ms: f64,
    /// How long the detach held (and waited for) the parent's lock (ms).
    pub detach_ms: u64,
    /// Rows a writer wrote meanwhile, into the next month.
    pub writes_meanwhile: u64,
    /// The writer's slowest insert meanwhile (ms).
    pub writer_max_ms: f64,
}

/// A table's size on disk.
#[derive(Debug, Clone, Serialize)]
pub struct SizeFigure {
    /// The table (with its partitions, indexes and TOAST).
    pub table: String,
    /// Its rows.
    pub rows: i64,
    /// Bytes on disk.
    pub bytes: i64,
    /// Bytes per million rows.
    pub bytes_per_million: i64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// What was loaded.
    pub params: ScaleParams,
    /// How long loading took (s).
    pub fill_secs: f64,
    /// The hot statements.
    pub statements: Vec<StatementFigure>,
    /// One month of the audit log, the inbox, the deliveries and their attempts retired.
    pub retentions: Vec<RetentionFigure>,
    /// Sizes on disk.
    pub sizes: Vec<SizeFigure>,
}

/// Runs the benchmark in a scratch database, dropped afterwards whatever happened.
pub async fn run(mut settings: Settings, params: ScaleParams) -> Result<ScaleReport, BenchError> {
    let run_id = super::isolate(&mut settings);
    let scratch = scale_seed::create(&mut settings, &run_id, params.months).await?;
    let outcome = async {
        let state = AppState::build(settings)?;
        // An interrupted load (it runs for half an hour at the volume) still drops
        // its tens of gigabytes: the measurement stops, the cleanup below runs.
        let measured = tokio::select! {
            measured = measure(&state, &scratch, &params, &run_id) => measured,
            () = crate::app::wait_for_signal() => Err(BenchError::Interrupted),
        };
        super::delete_namespace(&state.redis, &state.keys).await?;
        state.system_pool.0.close().await;
        state.tenant_pool.raw().close().await;
        measured
    }
    .await;
    scratch.drop_database().await;
    outcome
}

async fn measure(state: &AppState, scratch: &scale_seed::Scratch, params: &ScaleParams, run_id: &str) -> Result<ScaleReport, BenchError> {
    let prefix = format!("scale-{run_id}-");
    let fill_secs = scale_seed::fill(&state.system_pool, &prefix, params.tenants, params.inbox, params.ledger, params.audit, params.months).await?
        + scale_seed::fill_deliveries(&state.system_pool, &prefix, params.deliveries).await?
        + scale_seed::fill_outbox(&state.system_pool, &prefix, params.emails).await?;
    state.queue.set_paused("noop", true).await?;
    let kind = crate::newtypes::JobKind("noop".into());
    let mut queued = Vec::with_capacity(params.jobs);
    for chunk in (0..params.jobs).collect::<Vec<_>>().chunks(5_000) {
        queued.extend(state.queue.enqueue_many(&kind, chunk.iter().map(|_| serde_json::json!({"sleep_ms": 0})).collect()).await?);
    }
    scratch.analyze().await?;
    let mut statements = vec![claim(state, params.samples).await?, apply(state, params.samples).await?];
    statements.extend(entitlements(state, params.samples).await?);
    statements.extend(lists(state, params.samples).await?);
    let middle = queued.get(queued.len() / 2).map(|j| j.0.clone()).unwrap_or_default();
    statements.push(timed("a queued job found by id (queue.find)", params.samples, || async { state.queue.find(&middle).await.map(|_| ()).map_err(BenchError::from) }).await?);
    let sizes = sizes(state).await?;
    let mut oldest = Vec::new();
    for r in &RETIREMENTS {
        oldest.extend(crate::db::partitions::list(&state.system_pool.0, r.table).await?.into_iter().next().map(|p| p.name));
    }
    scratch.vacuum(&oldest).await?;
    let mut retentions = Vec::new();
    for r in &RETIREMENTS {
        retentions.push(retire_one_month(state, r).await?);
    }
    state.queue.set_paused("noop", false).await?;
    Ok(ScaleReport { params: params.clone(), fill_secs, statements, retentions, sizes })
}

/// Times `samples` runs of `one`.
async fn timed<F, Fut>(statement: &str, samples: u64, mut one: F) -> Result<StatementFigure, BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), BenchError>>,
{
    let mut h = super::latency_histogram().ok_or_else(|| BenchError::NotReady("histogram".into()))?;
    for _ in 0..samples {
        let started = Instant::now();
        one().await?;
        let _ = h.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
    }
    let (p50_ms, p99_ms) = super::p50_p99_ms(&h);
    Ok(StatementFigure { statement: statement.to_owned(), p50_ms, p99_ms, whole_scans: None })
}

/// The growing tables (and their partitions) no hot statement may read whole.
const GROWING: [&str; 7] = ["stripe_events", "usage_ledger", "audit_log", "entitlements", "tenants", "subscriptions", "customer_list"];

/// The growing tables a JSON plan reads with a sequential scan.
fn whole_scans(plan: &Value) -> Vec<String> {
    fn walk(node: &Value, out: &mut Vec<String>) {
        let rel = node.get("Relation Name").and_then(Value::as_str).unwrap_or_default();
        if node.get("Node Type").and_then(Value::as_str) == Some("Seq Scan") && GROWING.iter().any(|g| rel == *g || rel.starts_with(&format!("{g}_"))) {
            out.push(rel.to_owned());
        }
        for child in node.get("Plans").and_then(Value::as_array).into_iter().flatten() {
            walk(child, out);
        }
    }
    let mut out = Vec::new();
    walk(&plan[0]["Plan"], &mut out);
    out
}

/// `plan`'s whole-table reads of relations that hold rows (a month ahead is empty, and any
/// planner reads an empty table whole, for nothing).
async fn filled_scans(pool: &sqlx::PgPool, plan: &Value) -> Result<Vec<String>, sqlx::Error> {
    let scans = whole_scans(plan);
    sqlx::query_scalar("SELECT relname::text FROM pg_class WHERE relname = ANY($1) AND relpages > 0").bind(&scans).fetch_all(pool).await
}

/// The webhook claim with the grouped apply's waiting events, on events still waiting, each in
/// its tenant's transaction, rolled back (the rows stay waiting for the next sample).
async fn claim(state: &AppState, samples: u64) -> Result<StatementFigure, BenchError> {
    let waiting: Vec<(uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT tenant_id, id, stripe_created FROM (SELECT DISTINCT ON (tenant_id) tenant_id, id, stripe_created FROM stripe_events WHERE status = 'received' ORDER BY tenant_id, id) w LIMIT $1",
    )
    .bind(i64::try_from(samples).unwrap_or(i64::MAX))
    .fetch_all(&state.system_pool.0)
    .await?;
    let Some(first) = waiting.first().cloned() else { return Err(BenchError::NotReady("no waiting events were loaded".into())) };
    let mut next = waiting.iter().cycle();
    let mut figure = timed("webhook claim with the tenant's waiting events (stripe::inbox::claim)", samples, || {
        let (tenant, id, created) = next.next().cloned().unwrap_or_else(|| first.clone());
        async move {
            // As a `stripe.event` job claims: its transaction's plans generic, its row's month known.
            let mut tx = state.tenant_pool.begin_planned_once(TenantId(tenant)).await.map_err(|e| BenchError::NotReady(e.to_string()))?;
            crate::stripe::inbox::claim(&mut tx, &EventId(id), Some(created), 100).await?;
            tx.rollback().await?;
            Ok(())
        }
    })
    .await?;
    let mut tx = state.tenant_pool.begin(TenantId(first.0)).await.map_err(|e| BenchError::NotReady(e.to_string()))?;
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {}", crate::stripe::inbox::claim_statement(true))))
        .bind(&first.1)
        .bind(100i64)
        .bind(first.2)
        .fetch_one(&mut *tx)
        .await?;
    tx.rollback().await?;
    figure.whole_scans = Some(filled_scans(&state.system_pool.0, &plan).await?);
    Ok(figure)
}

/// The grouped apply end to end on events still waiting, each for real (committed): the claim
/// with the tenant's other waiting events, the mirror's writes, the entitlements recomputed,
/// the commit and the cache key deleted (`stripe::apply::apply`, what a `stripe.event` job runs).
async fn apply(state: &AppState, samples: u64) -> Result<StatementFigure, BenchError> {
    let deps: crate::stripe::apply::ApplyDeps = crate::jobs::deps::Provides::provide(state);
    // One event of each tenant: each apply is its own, not one found done by another's group.
    let waiting: Vec<(uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT tenant_id, id, stripe_created FROM (SELECT DISTINCT ON (tenant_id) tenant_id, id, stripe_created FROM stripe_events WHERE status = 'received' ORDER BY tenant_id, id DESC) w LIMIT $1",
    )
    .bind(i64::try_from(samples).unwrap_or(i64::MAX))
    .fetch_all(&state.system_pool.0)
    .await?;
    let mut next = waiting.into_iter();
    timed("webhook apply end to end: claim, mirror, entitlements, commit (stripe::apply::apply)", samples, || {
        let one = next.next();
        let deps = &deps;
        async move {
            let Some((tenant, id, created)) = one else { return Err(BenchError::NotReady("fewer waiting events than samples".into())) };
            crate::stripe::apply::apply(deps, &EventId(id), Some(TenantId(tenant)), Some(created.timestamp())).await.map(|_| ()).map_err(|e| BenchError::NotReady(e.to_string()))
        }
    })
    .await
}

/// The entitlement read through the cache: hits, then misses (the tenant's key dropped first).
async fn entitlements(state: &AppState, samples: u64) -> Result<Vec<StatementFigure>, BenchError> {
    let tenants: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM entitlements GROUP BY tenant_id LIMIT 1000").fetch_all(&state.system_pool.0).await?;
    if tenants.is_empty() {
        return Err(BenchError::NotReady("no entitlements were loaded".into()));
    }
    let read = |i: usize| crate::billing::entitlements::cached(&state.cache, &state.tenant_pool, TenantId(tenants[i % tenants.len()]));
    for i in 0..tenants.len() {
        read(i).await.map_err(|e| BenchError::NotReady(e.to_string()))?;
    }
    let mut i = 0;
    let hit = timed("entitlement read, cache hit", samples, || {
        i += 1;
        let read = read(i);
        async move { read.await.map(|_| ()).map_err(|e| BenchError::NotReady(e.to_string())) }
    })
    .await?;
    let mut i = 0;
    let mut miss = timed("entitlement read, cache miss (PostgreSQL)", samples, || {
        i += 1;
        let tenant = TenantId(tenants[i % tenants.len()]);
        async move {
            crate::billing::entitlements::invalidate(&state.cache, tenant).await;
            crate::billing::entitlements::cached(&state.cache, &state.tenant_pool, tenant).await.map(|_| ()).map_err(|e| BenchError::NotReady(e.to_string()))
        }
    })
    .await?;
    let mut tx = state.tenant_pool.begin(TenantId(tenants[0])).await.map_err(|e| BenchError::NotReady(e.to_string()))?;
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {}", crate::billing::entitlements::read_statement()))).fetch_one(&mut *tx).await?;
    tx.rollback().await?;
    miss.whole_scans = Some(filled_scans(&state.system_pool.0, &plan).await?);
    Ok(vec![hit, miss])
}

/// `GET /v1/tenants`' reads (a page of tenants with their views), the admin list's page (first
/// and 51st), and a tenant's timeline.
async fn lists(state: &AppState, samples: u64) -> Result<Vec<StatementFigure>, BenchError> {
    let pool = &state.system_pool;
    let db = |e: crate::tenants::TenantError| BenchError::NotReady(e.to_string());
    let tenant_page = |after: Option<TenantId>| async move {
        let found = crate::tenants::list(pool, after, 21).await?;
        crate::tenants::view::view_many(pool, found).await.map(|_| ()).map_err(db)
    };
    let middle: Option<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM tenants ORDER BY id OFFSET (SELECT count(*) / 2 FROM tenants) LIMIT 1").fetch_optional(&pool.0).await?;
    let mut out = vec![
        timed("GET /v1/tenants, first page of 20", samples, || tenant_page(None)).await?,
        timed("GET /v1/tenants, a page half-way through", samples, || tenant_page(middle.map(TenantId))).await?,
    ];
    use crate::tenants::customers::{Filter, Sort, page};
    let list_error = |e: crate::tenants::customers::ListError| BenchError::NotReady(e.to_string());
    let mut cursor: Option<String> = None;
    for _ in 0..50 {
        cursor = page(pool, &Filter::default(), Sort::Mrr, cursor.as_deref(), 50).await.map_err(list_error)?.next_cursor;
    }
    let filter = Filter::default();
    let in_dunning = Filter { dunning: Some(crate::tenants::customers::Dunning::Open), ..Filter::default() };
    let pages = [
        ("admin customer list, first page by MRR (50)", &filter, None, 50),
        ("admin customer list, page 51 through the cursor", &filter, cursor.as_deref(), 50),
        ("admin customer list, the ten highest-MRR tenants in dunning", &in_dunning, None, 10),
    ];
    for (name, filter, at, limit) in pages {
        let mut figure = timed(name, samples, || async { page(pool, filter, Sort::Mrr, at, limit).await.map(|_| ()).map_err(list_error) }).await?;
        let plan = crate::tenants::customers::explain(pool, filter, Sort::Mrr, at, limit).await.map_err(list_error)?;
        figure.whole_scans = Some(filled_scans(&pool.0, &plan).await?);
        out.push(figure);
    }
    let busy: Option<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM audit_log LIMIT 1").fetch_optional(&pool.0).await?;
    if let Some(tenant) = busy {
        let timeline_error = |e: crate::tenants::timeline::TimelineError| BenchError::NotReady(e.to_string());
        let mut figure = timed("a tenant's timeline, first page (50)", samples, || async {
            crate::tenants::timeline::page(pool, TenantId(tenant), None, None, 50).await.map(|_| ()).map_err(timeline_error)
        })
        .await?;
        let none: Option<chrono::DateTime<chrono::Utc>> = None;
        let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {}", crate::tenants::timeline::QUERY)))
            .bind(tenant)
            .bind(none)
            .bind(none)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(50i64)
            .fetch_one(&pool.0)
            .await?;
        figure.whole_scans = Some(filled_scans(&pool.0, &plan).await?);
        out.push(figure);
    }
    Ok(out)
}

/// A table whose oldest month the bench retires, keeping what the `partitions` service keeps:
/// its retention, and a writer's insert into the next month (`$1` the time, `$2` the writer's
/// count).
struct Retirement {
    table: &'static str,
    retention_days: u64,
    insert: &'static str,
}

/// The audit log's oldest month (where the load put its audit rows), the inbox's (a month of
/// the load's events, one in a thousand still to handle and kept), and the deliveries' and
/// their attempts' (the load's deliveries, all delivered) and their messages', the email
/// outbox's and its send jobs' statuses (one in a thousand not sent or finished, kept).
const RETIREMENTS: [Retirement; 7] = [
    Retirement { table: "audit_log", retention_days: 400, insert: "INSERT INTO audit_log (actor, action, params, outcome, at) VALUES ('bench', 'write', jsonb_build_object('n', $2::bigint), 'ok', $1)" },
    Retirement {
        table: "stripe_events",
        retention_days: 30,
        insert: "INSERT INTO stripe_events (id, type, stripe_created, payload, status) VALUES ('evt_bench_writer_' || $2, 'bench.write', $1, '{}', 'processed')",
    },
    Retirement {
        table: "webhook_deliveries",
        retention_days: 30,
        insert: "INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id)
                 SELECT ballast_uuid_v7_floor($1 + make_interval(secs => $2::float8 / 1000)), e.tenant_id, m.id, e.id
                 FROM webhook_endpoints e JOIN LATERAL (SELECT id FROM webhook_messages WHERE tenant_id = e.tenant_id LIMIT 1) m ON true LIMIT 1",
    },
    Retirement {
        table: "webhook_attempts",
        retention_days: 30,
        insert: "INSERT INTO webhook_attempts (id, tenant_id, delivery_id, attempt, attempted_at, duration_ms)
                 SELECT gen_random_uuid(), tenant_id, ballast_uuid_v7_floor($1 + make_interval(secs => $2::float8 / 1000)), 1, now(), 40
                 FROM webhook_endpoints LIMIT 1",
    },
    Retirement {
        table: "webhook_messages",
        retention_days: 30,
        insert: "INSERT INTO webhook_messages (id, tenant_id, event_type, body)
                 SELECT ballast_uuid_v7_floor($1 + make_interval(secs => $2::float8 / 1000)), tenant_id, 'bench.write', '{}'
                 FROM webhook_endpoints LIMIT 1",
    },
    Retirement {
        table: "email_outbox",
        retention_days: 30,
        insert: "INSERT INTO email_outbox (id, tenant_id, dedup_key, template, to_address, subject, body_text, body_html, message_id)
                 SELECT ballast_uuid_v7_floor($1 + make_interval(secs => $2::float8 / 1000)), id, 'bench:writer:' || $2, 'welcome', 'a@example.com', 's', 'x', 'x', '<w@x>'
                 FROM tenants LIMIT 1",
    },
    Retirement {
        table: "job_status",
        retention_days: 7,
        insert: "INSERT INTO job_status (id, tenant_id, kind, state, id_at)
                 SELECT s.id, t.id, 'email.send', 'queued', ballast_job_id_time(s.id)
                 FROM (SELECT 'email_' || overlay(ballast_uuid_v7_floor($1 + make_interval(secs => $2::float8 / 1000))::text PLACING '7' FROM 15 FOR 1) AS id) s,
                      (SELECT id FROM tenants LIMIT 1) t",
    },
];

/// Retires `r.table`'s oldest month as the maintenance service would once the month is past
/// its retention, while a writer writes into the next.
async fn retire_one_month(state: &AppState, r: &Retirement) -> Result<RetentionFigure, BenchError> {
    let pool = state.system_pool.0.clone();
    let parts = crate::db::partitions::list(&pool, r.table).await?;
    let (Some(oldest), Some(next)) = (parts.first().cloned(), parts.get(1).cloned()) else {
        return Err(BenchError::NotReady(format!("{} has fewer than two partitions", r.table)));
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (pool, stop, insert) = (pool.clone(), stop.clone(), r.insert);
        let at = next.range_from.unwrap_or(next.range_to) + chrono::TimeDelta::hours(1);
        tokio::spawn(async move {
            let (mut n, mut slowest) = (0u64, Duration::ZERO);
            while !stop.load(Ordering::Acquire) {
                let started = Instant::now();
                sqlx::query(insert).bind(at).bind(n as i64).execute(&pool).await?;
                slowest = slowest.max(started.elapsed());
                n += 1;
            }
            Ok::<_, sqlx::Error>((n, slowest))
        })
    };
    let retention = Duration::from_secs(r.retention_days * 86_400);
    let now = oldest.range_to + chrono::TimeDelta::from_std(retention).unwrap_or(chrono::TimeDelta::zero());
    let started = Instant::now();
    let retired = crate::db::partitions::retire(&pool, r.table, now, retention, None, crate::maintenance::kept_on_retirement(r.table)).await;
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    stop.store(true, Ordering::Release);
    let (writes_meanwhile, slowest) = writer.await.map_err(|e| BenchError::NotReady(e.to_string()))??;
    let retired = retired.map_err(|e| BenchError::NotReady(e.to_string()))?;
    Ok(RetentionFigure {
        table: r.table.to_owned(),
        rows: retired.rows,
        kept: retired.kept,
        total_ms,
        detach_ms: retired.longest_detach_ms,
        writes_meanwhile,
        writer_max_ms: slowest.as_secs_f64() * 1000.0,
    })
}

/// Size on disk per table (partitions, indexes and TOAST included).
async fn sizes(state: &AppState) -> Result<Vec<SizeFigure>, BenchError> {
    let mut out = Vec::new();
    for table in ["stripe_events", "usage_ledger", "audit_log", "webhook_deliveries", "webhook_attempts", "webhook_messages", "email_outbox", "job_status"] {
        let (rows, bytes): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT (SELECT count(*) FROM {table}),
                    CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree(c.oid))::bigint
                         ELSE pg_total_relation_size(c.oid) END
             FROM pg_class c WHERE c.oid = '{table}'::regclass"
        )))
        .fetch_one(&state.system_pool.0)
        .await?;
        out.push(SizeFigure { table: table.to_owned(), rows, bytes, bytes_per_million: if rows > 0 { bytes.saturating_mul(1_000_000) / rows } else { 0 } });
    }
    Ok(out)
}
