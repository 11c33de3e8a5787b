//! `GET /v1/entitlements` and `GET /v1/entitlements/{feature}`: what the caller's tenant may
//! do (`isFeatureEnabled(tenant, feature)` for app services). Authentication: API key with
//! scope entitlements:read. Answered from the cache (short TTL, invalidated after every
//! change); a miss reads PostgreSQL inside the tenant's transaction.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, get};
use chrono::Utc;
use crate::newtypes::TenantId;

use super::guard::Caller;
use super::errors::ApiError;
use super::route::{Auth, RouteSpec};
use crate::state::AppState;
use crate::auth::Scope;
use crate::billing::entitlements::{self, Entitlement};

/// Entitlement routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![
        (RouteSpec::new(Method::GET, "/v1/entitlements", Auth::Key(Scope::EntitlementsRead)), get(list)),
        (RouteSpec::new(Method::GET, "/v1/entitlements/{feature}", Auth::Key(Scope::EntitlementsRead)), get(one)),
    ]
}

/// One feature as the API answers it: `enabled` already accounts for a grant that has ended.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct FeatureEntitlement {
    /// The catalogue's feature id.
    feature: String,
    /// Whether the tenant may use it now.
    enabled: bool,
    /// Its limit, for counted features.
    limit: Option<i64>,
    /// Where it comes from: `plan`, `restricted` (dunning), `none`, or `override` (an
    /// operator's, until `expires_at`).
    source: String,
    /// The granting plan.
    plan_id: Option<String>,
    /// When this value ends by itself (grace period, cancel at period end); another
    /// subscription's grant may follow it.
    expires_at: Option<chrono::DateTime<Utc>>,
}

/// `GET /v1/entitlements`' answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Entitlements {
    /// The caller's tenant.
    tenant: TenantId,
    /// Every feature the tenant has a row for.
    entitlements: Vec<FeatureEntitlement>,
}

/// `GET /v1/entitlements/{feature}`' answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct OneEntitlement {
    /// The caller's tenant.
    tenant: TenantId,
    /// The feature.
    entitlement: FeatureEntitlement,
}

fn shown(e: &Entitlement, now: chrono::DateTime<Utc>) -> FeatureEntitlement {
    let (enabled, limit) = e.value_at(now);
    // The end of the value shown now: the first tier not over.
    let expires_at = [e.expires_at].into_iter().chain(e.later.iter().map(|t| t.until)).find(|end| end.is_none_or(|end| end > now)).flatten();
    FeatureEntitlement { feature: e.feature.clone(), enabled, limit, source: e.source_at(now).to_owned(), plan_id: e.plan_id.clone(), expires_at }
}

async fn read(state: &AppState, caller: &Caller) -> Result<Vec<Entitlement>, ApiError> {
    entitlements::cached(&state.cache, &state.tenant_pool, caller.tenant).await.map_err(|e| {
        tracing::error!(message = "Entitlements unreadable.", error = %e);
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "entitlements cannot be read now; retry later")
    })
}

async fn list(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Result<Json<Entitlements>, ApiError> {
    let now = Utc::now();
    let entitlements = read(&state, &caller).await?.iter().map(|e| shown(e, now)).collect();
    Ok(Json(Entitlements { tenant: caller.tenant, entitlements }))
}

async fn one(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    feature: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<OneEntitlement>, ApiError> {
    // axum's own rejection is plain text; the API answers in its one JSON shape (found by the
    // arbitrary-input test: a feature segment that is not UTF-8).
    let Path(feature) = feature.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", super::errors::cleaned(&e.body_text())))?;
    if !state.plans.features.contains_key(&feature) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_feature", "no such feature in the plan catalogue"));
    }
    let rows = read(&state, &caller).await?;
    state.tenant_activity.checked(caller.tenant, &feature);
    // A catalogued feature the tenant has no row for (no subscription yet) is simply off.
    let entitlement = match rows.iter().find(|e| e.feature == feature) {
        Some(e) => shown(e, Utc::now()),
        None => FeatureEntitlement { feature, enabled: false, limit: None, source: "none".into(), plan_id: None, expires_at: None },
    };
    Ok(Json(OneEntitlement { tenant: caller.tenant, entitlement }))
}
