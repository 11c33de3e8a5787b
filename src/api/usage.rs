//! `POST /v1/usage` (a batch of usage items) and `GET /v1/usage` (this month's counts, flushed
//! and unflushed). Authentication: API key with scope usage:write. A bad item refuses the
//! batch (400, naming the item and field); a month's limit reached answers 429 naming the
//! metric and the limit, unless the plan bills the metric as overage.

use axum::extract::{Extension, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::Json;

use super::guard::Caller;
use super::errors::ApiError;
use super::route::{Auth, RouteSpec};
use crate::state::AppState;
use crate::auth::Scope;
use crate::newtypes::TenantId;
use crate::email::{self, NewEmail, Template};
use crate::usage::{self, UsageError};

/// Usage routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![
        (RouteSpec::new(Method::POST, "/v1/usage", Auth::Key(Scope::UsageWrite)).write(), post(record)),
        (RouteSpec::new(Method::GET, "/v1/usage", Auth::Key(Scope::UsageRead)), get(current)),
    ]
}

fn error(e: UsageError) -> Response {
    match e {
        UsageError::Invalid(i) => {
            let body = serde_json::json!({"error": {"code": "invalid_item", "message": i.to_string(), "item": i.item, "field": i.field}});
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        UsageError::NoPlan => ApiError::new(StatusCode::FORBIDDEN, "no_plan", "the tenant has no plan with metered usage").into_response(),
        UsageError::Limit { metric, limit, used } => {
            // Not a rate limit: retrying sooner cannot succeed, so Retry-After names the
            // next period and the code tells it apart from `rate_limited`.
            let now = chrono::Utc::now();
            let resets_at = usage::next_period(now);
            let retry_secs = (resets_at - now).num_seconds().max(1);
            let body = serde_json::json!({"error": {"code": "usage_limit", "message": format!("the monthly limit of {metric} ({limit}) is reached: {used} used; it resets at {}", resets_at.to_rfc3339()),
                "metric": metric, "limit": limit, "used": used, "resets_at": resets_at, "retry_after_secs": retry_secs}});
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(retry_secs));
            response
        }
        other => {
            tracing::error!(message = "Usage not recorded.", error = %other);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "usage_unavailable", "usage cannot be recorded now; retry with the same idempotency keys")
                .into_response()
        }
    }
}

async fn record(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<usage::UsageBatch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(batch) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e).into_response(),
    };
    let now = chrono::Utc::now();
    let limits = match usage::limits_of(&state.usage_deps(), caller.tenant).await {
        Ok(Some(l)) => l,
        Ok(None) => return error(UsageError::NoPlan),
        Err(e) => return error(e),
    };
    if let Err(e) = usage::validate(&batch.items, &limits, now) {
        return error(e.into());
    }
    match usage::record(&state.usage_deps(), caller.tenant, &batch.items, &limits, now).await {
        Ok(done) => {
            for metric in &done.warned {
                warn_once(&state, caller.tenant, metric, &limits, now).await;
            }
            (StatusCode::OK, Json(done)).into_response()
        }
        Err(e) => error(e),
    }
}

/// The 80 % warning: an event in the log and an outbox email, once per metric and month (the
/// Redis mark makes this rare; the outbox dedup key makes it once).
async fn warn_once(state: &AppState, tenant: TenantId, metric: &str, limits: &std::collections::BTreeMap<String, crate::billing::plans::UsageLimit>, now: chrono::DateTime<chrono::Utc>) {
    let month = usage::month(now);
    let limit = limits.get(metric).copied();
    tracing::info!(message = "Usage passed 80% of its monthly limit.", tenant = %tenant, metric = %metric, month = %month);
    let result: Result<Option<uuid::Uuid>, Box<dyn std::error::Error + Send + Sync>> = async {
        let mut tx = state.tenant_pool.begin(tenant).await?;
        let to: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT c.email, c.name FROM customers c JOIN tenants t ON t.stripe_customer_id = c.id WHERE t.id = $1")
                .bind(tenant.0)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((Some(address), name)) = to else { return Ok(None) };
        let lim = limit.map(|l| l.limit).unwrap_or(0);
        let vars = serde_json::json!({"name": name, "metric": metric, "limit": lim, "used": lim * 8 / 10, "percent": 80,
            "month": format!("{}-{}", &month[..4], &month[4..]), "overage": limit.is_some_and(|l| l.overage)});
        let new = NewEmail { dedup_key: format!("usage80:{tenant}:{metric}:{month}"), template: Template::UsageWarning, to: address, vars };
        let id = email::queue(&mut tx, tenant, &new).await?;
        tx.commit().await?;
        Ok(id)
    }
    .await;
    match result {
        Ok(Some(id)) => {
            if let Err(e) = email::push(&state.queue, tenant, &[id]).await {
                tracing::warn!(message = "Usage warning email not queued; the outbox sweep will.", error = %e);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(message = "Usage warning email not written.", tenant = %tenant, error = %e),
    }
}

async fn current(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    match usage::current(&state.usage_deps(), caller.tenant, chrono::Utc::now()).await {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(e) => error(e),
    }
}
