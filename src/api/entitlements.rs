//! `GET /v1/entitlements` and `GET /v1/entitlements/{feature}`: what the caller's tenant may
//! do (`isFeatureEnabled(tenant, feature)` for app services). Authentication: API key with
//! scope entitlements:read. Read inside the tenant's transaction, so row-level security is
//! the last word on whose rows these are.

use axum::extract::{Extension, Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, get};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::guard::Caller;
use super::{ApiError, Auth, RouteSpec};
use crate::app::AppState;
use crate::auth::Scope;

/// Entitlement routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![
        (RouteSpec::new(Method::GET, "/v1/entitlements", Auth::Key(Scope::EntitlementsRead)), get(list)),
        (RouteSpec::new(Method::GET, "/v1/entitlements/{feature}", Auth::Key(Scope::EntitlementsRead)), get(one)),
    ]
}

/// One feature as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Entitlement {
    feature: String,
    enabled: bool,
    #[sqlx(rename = "limit_value")]
    limit: Option<i64>,
    source: String,
    plan_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

fn storage_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(message = "Entitlements unreadable.", error = %e);
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "entitlements cannot be read now; retry later")
}

async fn read(state: &AppState, caller: &Caller, feature: Option<&str>) -> Result<Vec<Entitlement>, ApiError> {
    let mut tx = state.tenant_pool.begin(caller.tenant).await.map_err(storage_unavailable)?;
    let rows: Vec<Entitlement> = sqlx::query_as(
        "SELECT feature, enabled, limit_value, source, plan_id, expires_at FROM entitlements
         WHERE ($1::text IS NULL OR feature = $1) ORDER BY feature",
    )
    .bind(feature)
    .fetch_all(&mut *tx)
    .await
    .map_err(storage_unavailable)?;
    tx.commit().await.map_err(storage_unavailable)?;
    Ok(rows)
}

async fn list(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = read(&state, &caller, None).await?;
    Ok(Json(serde_json::json!({"tenant": caller.tenant, "entitlements": rows})))
}

async fn one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(feature): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.plans.features.contains_key(&feature) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_feature", "no such feature in the plan catalogue"));
    }
    let row = read(&state, &caller, Some(&feature)).await?.into_iter().next();
    // A catalogued feature the tenant has no row for (no subscription yet) is simply off.
    let body = match row {
        Some(e) => serde_json::to_value(e).unwrap_or_default(),
        None => serde_json::json!({"feature": feature, "enabled": false, "limit": null, "source": "none", "plan_id": null, "expires_at": null}),
    };
    Ok(Json(serde_json::json!({"tenant": caller.tenant, "entitlement": body})))
}
