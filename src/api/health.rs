//! `GET /healthz` (the process is alive) and `GET /readyz` (it can do its work: PostgreSQL
//! and Redis reachable, migrations current). Authentication: none.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use axum::http::Method;
use axum::routing::{MethodRouter, get};
use serde_json::json;

use super::route::{Auth, RouteSpec};
use crate::state::AppState;

/// Health routes. Liveness is never limited (a throttled probe restarts a healthy member);
/// readiness does real work (a PostgreSQL and a Redis round trip), so it is limited per IP.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![
        (RouteSpec::new(Method::GET, "/healthz", Auth::None), get(healthz)),
        (RouteSpec::new(Method::GET, "/readyz", Auth::None).limited(), get(readyz)),
        // Scraped by Prometheus inside the network; the ingress does not route it.
        (RouteSpec::new(Method::GET, "/metrics", Auth::None), get(metrics)),
    ]
}

async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    // Best effort: a scrape answers with what it could read.
    let fleet_alerts = crate::health::alerts::firing(&state.system_pool).await.unwrap_or_default();
    let slos = crate::slo::evaluate::latest(&state.system_pool.0).await.unwrap_or_default();
    let maintenance = crate::maintenance::status::last_ok(&state.system_pool).await.unwrap_or_default();
    let scrape = crate::metrics::Scrape {
        queue: &state.queue,
        app_pool: state.tenant_pool.raw(),
        system_pool: &state.system_pool.0,
        limiter: &state.limiter.stats,
        cache: state.cache.stats(),
        unknown_price_items: crate::billing::access::UNKNOWN_PRICE_ITEMS.load(std::sync::atomic::Ordering::Relaxed),
        fleet_alerts: &fleet_alerts,
        slos: &slos,
        maintenance: &maintenance,
        scheduler_led: crate::scheduler::current_leader(&state.redis, &state.keys).await.ok().map(|l| l.is_some()),
    };
    let body = state.metrics.render(scrape).await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

/// `GET /healthz`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Liveness {
    /// Always `ok`.
    status: &'static str,
}

/// `GET /readyz`'s answer when ready (a 503 has the error shape with the same `checks`).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Readiness {
    /// Always `ready`.
    status: &'static str,
    /// Each dependency: `ok` or what is wrong.
    checks: ReadinessChecks,
}

/// What readiness checked.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct ReadinessChecks {
    /// PostgreSQL answers and its migrations are current: `ok`, or why not.
    postgres: String,
    /// Redis answers: `ok`, or why not.
    redis: String,
}

async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let (postgres, redis) = tokio::join!(check_postgres(&state), check_redis(&state));
    let mut problems = Vec::new();
    if let Err(e) = &postgres {
        problems.push(e.clone());
    }
    if let Err(e) = &redis {
        problems.push(e.clone());
    }
    let checks = ReadinessChecks { postgres: postgres.err().unwrap_or_else(|| "ok".into()), redis: redis.err().unwrap_or_else(|| "ok".into()) };
    if problems.is_empty() {
        (StatusCode::OK, Json(json!(Readiness { status: "ready", checks })))
    } else {
        let body = json!({
            "error": {"code": "not_ready", "message": problems.join("; ")},
            "checks": checks,
        });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}

async fn check_postgres(state: &AppState) -> Result<(), String> {
    // System pool: reading the migrations table is not tenant data.
    let pool = &state.system_pool.0;
    match tokio::time::timeout(CHECK_TIMEOUT, crate::db::migrations_current(pool)).await {
        Err(_) => Err("postgres: no answer within 2s".into()),
        Ok(Err(e)) => Err(format!("postgres: {e}")),
        Ok(Ok(false)) => Err("postgres: migrations pending (run `ballast migrate`)".into()),
        Ok(Ok(true)) => Ok(()),
    }
}

async fn check_redis(state: &AppState) -> Result<(), String> {
    let mut conn = state.redis.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut conn);
    match tokio::time::timeout(CHECK_TIMEOUT, ping).await {
        Err(_) => Err("redis: no answer within 2s".into()),
        Ok(Err(e)) => Err(format!("redis: {e}")),
        Ok(Ok(_)) => Ok(()),
    }
}
