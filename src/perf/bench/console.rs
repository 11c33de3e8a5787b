//! `ballast bench console`: each console page's render time at a large SaaS's volume. Seeds
//! `tenants` tenants (as `bench customers` does), `inbox` Stripe events spread over them, and
//! `jobs` queued runs of a paused `noop` (resumed afterwards: a fleet then runs them), signs an
//! operator of the run's own in, and times `n` renders of every page through the console's
//! own router in this process (the HTTP framing and the browser are not in the figure). The
//! seeded rows and the operator are removed afterwards.

use std::time::Instant;

use serde::Serialize;
use tower::ServiceExt;

use super::BenchError;
use super::customers::PageLatency;
use crate::config::Settings;

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleBenchReport {
    /// Tenants seeded.
    pub tenants: usize,
    /// Inbox rows seeded.
    pub inbox: usize,
    /// Jobs queued.
    pub jobs: usize,
    /// Renders per page.
    pub reads: u64,
    /// Each page's render time.
    pub pages: Vec<PageLatency>,
}

/// Runs the benchmark.
pub async fn run(settings: Settings, tenants: usize, inbox: usize, jobs: usize, n: u64) -> Result<ConsoleBenchReport, BenchError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("bench-{}-", &run_id[..8]);
    let state = crate::app::AppState::build(settings)?;
    let pool = &state.system_pool;
    super::customers::seed(pool, &prefix, tenants).await?;
    let seeded = seed_inbox(pool, &prefix, inbox, tenants).await;
    let result = match seeded {
        Ok(()) => measure(&state, &prefix, jobs, n).await,
        Err(e) => Err(e.into()),
    };
    let cleaned = remove_inbox(pool, &prefix).await;
    super::customers::remove(pool, &prefix).await?;
    cleaned?;
    Ok(ConsoleBenchReport { tenants, inbox, jobs, reads: n, pages: result? })
}

async fn seed_inbox(pool: &crate::db::SystemPool, prefix: &str, rows: usize, tenants: usize) -> Result<(), sqlx::Error> {
    let n = i64::try_from(rows).unwrap_or(i64::MAX);
    let spread = tenants.max(1);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "WITH t AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS i FROM tenants WHERE name LIKE '{prefix}%')
         INSERT INTO stripe_events (id, type, tenant_id, stripe_created, payload, status, received_at, processed_at)
         SELECT 'evt_{prefix}' || g, 'invoice.paid', t.id, now() - make_interval(secs => g), '{{}}', 'processed',
                now() - make_interval(secs => g), now() - make_interval(secs => g)
         FROM generate_series(1, {n}) g JOIN t ON t.i = g % {spread};
         ANALYZE stripe_events;"
    )))
    .execute(&pool.0)
    .await?;
    Ok(())
}

async fn remove_inbox(pool: &crate::db::SystemPool, prefix: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM stripe_events WHERE id LIKE $1").bind(format!("evt_{prefix}%")).execute(&pool.0).await?;
    Ok(())
}

async fn measure(state: &crate::app::AppState, prefix: &str, jobs: usize, n: u64) -> Result<Vec<PageLatency>, BenchError> {
    let operator_name = format!("bench-{}", &prefix[6..14]);
    let (operator, _) = crate::auth::operators::add(&state.system_pool, &operator_name, crate::auth::operators::Role::Admin, "bench").await.map_err(|e| incomplete(&e))?;
    let (cookie, _) = crate::auth::console_sessions::open(&state.system_pool, &operator, std::time::Duration::from_secs(3600)).await?;
    // The queued runs wait (paused) so the queue figures read a full queue.
    state.queue.set_paused("noop", true).await?;
    let kind = crate::newtypes::JobKind("noop".into());
    let mut queued = Vec::with_capacity(jobs);
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(5_000) {
        queued.extend(state.queue.enqueue_many(&kind, chunk.iter().map(|_| serde_json::json!({"sleep_ms": 0})).collect()).await?);
    }
    // A job in the middle of the queue: found by its id among all the others.
    let middle = queued.get(jobs / 2).map(|j| j.0.clone()).unwrap_or_default();
    let tenant: Option<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1").bind(format!("{prefix}42")).fetch_optional(&state.system_pool.0).await?;
    let tenant = tenant.map(|t| t.to_string()).unwrap_or_default();
    let pages = [
        ("overview", "/".to_owned()),
        ("queues", "/queues".into()),
        ("jobs search (dead, by kind)", "/jobs?state=dead&kind=noop".into()),
        ("dead letters", "/dead".into()),
        ("schedules", "/schedules".into()),
        ("runbooks", "/runbooks".into()),
        ("a runbook with its form", "/runbooks/db-pool-exhaustion".into()),
        ("a queued job, by id", format!("/jobs/{middle}")),
        ("SLOs", "/slos".into()),
        ("maintenance and alerts", "/maintenance".into()),
        ("customers, first page by MRR", "/customers".into()),
        ("customers in dunning", "/customers?dunning=open".into()),
        ("a customer's page", format!("/customers/{tenant}")),
    ];
    let router = crate::console::router(state.clone());
    let mut out = Vec::new();
    for (name, path) in pages {
        let mut h = super::latency_histogram().ok_or_else(|| incomplete(&"histogram"))?;
        for _ in 0..n {
            let request = axum::http::Request::get(&path)
                .header(axum::http::header::COOKIE, format!("{}={cookie}", crate::console::COOKIE))
                .body(axum::body::Body::empty())
                .map_err(|e| incomplete(&e))?;
            let started = Instant::now();
            let response = router.clone().oneshot(request).await.map_err(|e| incomplete(&e))?;
            let status = response.status();
            let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await.map_err(|e| incomplete(&e))?;
            let _ = h.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1));
            if !status.is_success() {
                return Err(incomplete(&format!("{path} answered {status}")));
            }
        }
        let (p50_ms, p99_ms) = super::p50_p99_ms(&h);
        out.push(PageLatency { page: name.to_owned(), p50_ms, p99_ms });
    }
    state.queue.set_paused("noop", false).await?;
    sqlx::query("DELETE FROM console_sessions WHERE operator_id = $1").bind(operator.id).execute(&state.system_pool.0).await?;
    sqlx::query("DELETE FROM operators WHERE id = $1").bind(operator.id).execute(&state.system_pool.0).await?;
    Ok(out)
}

fn incomplete(e: &dyn std::fmt::Display) -> BenchError {
    BenchError::Incomplete { done: 0, n: 0, secs: 0, detail: e.to_string() }
}
