//! `GET /v1/plans`: the public plan catalogue with Stripe's prices (no authentication, limited
//! per client IP), and `GET /v1/flags`: every feature flag as it stands for the caller's tenant
//! (API key, scope entitlements:read). Both answer from the cache.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, get};

use super::guard::Caller;
use super::errors::ApiError;
use super::route::{Auth, RouteSpec};
use crate::state::AppState;
use crate::auth::Scope;

/// The plan catalogue's and the flags' routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![
        (RouteSpec::new(Method::GET, "/v1/plans", Auth::None).limited(), get(plans)),
        (RouteSpec::new(Method::GET, "/v1/flags", Auth::Key(Scope::EntitlementsRead)), get(flags)),
    ]
}

fn unavailable(what: &'static str, e: impl std::fmt::Display) -> ApiError {
    tracing::error!(message = "Cached value unavailable.", what, error = %e);
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{what} cannot be read now; retry later"))
}

async fn plans(State(state): State<AppState>) -> Result<Json<crate::billing::public_plans::PublicCatalogue>, ApiError> {
    crate::billing::public_plans::cached(&state.cache, &state.plans, &state.stripe).await.map(Json).map_err(|e| unavailable("the plan catalogue", e))
}

/// `GET /v1/flags`' answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Flags {
    /// The caller's tenant.
    tenant: crate::newtypes::TenantId,
    /// Every flag: on or off for this tenant.
    flags: BTreeMap<String, bool>,
}

async fn flags(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Result<Json<Flags>, ApiError> {
    let flags = crate::flags::cached(&state.cache, state.tenant_pool.raw()).await.map_err(|e| unavailable("feature flags", e))?;
    let on = flags.iter().map(|f| (f.name.clone(), f.is_on_for(caller.tenant))).collect();
    Ok(Json(Flags { tenant: caller.tenant, flags: on }))
}
