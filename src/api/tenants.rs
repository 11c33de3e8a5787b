//! Tenant provisioning for the SaaS's own services: `POST /v1/tenants` creates a tenant and
//! its Stripe customer (a repeat with the same `external_id` answers with the same tenant),
//! `GET /v1/tenants/{id}` and `GET /v1/tenants?external_id=` read one with its plan,
//! subscription and entitlements, `PATCH /v1/tenants/{id}` changes its name and billing email
//! (on Stripe too). Service-wide API keys only: scope tenants:write, or tenants:read to read.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use super::errors::{ApiError, MAX_ECHO};
use super::guard::ServiceCaller;
use super::route::{Auth, RouteSpec};
use crate::auth::Scope;
use crate::newtypes::TenantId;
use crate::state::AppState;
use crate::stripe_api::StripeApiError;
use crate::tenants::provision::{self, NewTenant, TenantChange};
use crate::tenants::{self, TenantError, view};

/// Tenant routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![
        (RouteSpec::new(Method::POST, "/v1/tenants", Auth::ServiceKey(Scope::TenantsWrite)), post(create)),
        (RouteSpec::new(Method::GET, "/v1/tenants", Auth::ServiceKey(Scope::TenantsRead)), get(list)),
        (RouteSpec::new(Method::GET, "/v1/tenants/{id}", Auth::ServiceKey(Scope::TenantsRead)), get(show)),
        (RouteSpec::new(Method::PATCH, "/v1/tenants/{id}", Auth::ServiceKey(Scope::TenantsWrite)), axum::routing::patch(change)),
    ]
}

fn actor(caller: &ServiceCaller) -> String {
    format!("api-key:{}", caller.principal.key_id)
}

fn error(e: TenantError) -> Response {
    match e {
        TenantError::Invalid { field, message } => {
            let body = serde_json::json!({"error": {"code": "invalid_field", "message": format!("{field}: {message}"), "field": field}});
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        TenantError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such tenant").into_response(),
        TenantError::Stripe(StripeApiError::Refused { code, message, .. }) => {
            let message: String = format!("Stripe refused the customer: {code} {message}").chars().take(MAX_ECHO * 3).collect();
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "stripe_refused", message).into_response()
        }
        TenantError::Stripe(e) => {
            tracing::warn!(message = "Tenant not finished: Stripe unavailable.", error = %e);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stripe_unavailable", "Stripe cannot be reached now; the tenant is kept: repeat the request (same external_id) to finish")
                .into_response()
        }
        other => {
            tracing::error!(message = "Tenant request failed.", error = %other);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "tenants cannot be stored or read now; repeat the request").into_response()
        }
    }
}

async fn answer(state: &AppState, status: StatusCode, tenant: tenants::Tenant) -> Response {
    match view::view(&state.system_pool, tenant).await {
        Ok(v) => (status, Json(v)).into_response(),
        Err(e) => error(e),
    }
}

async fn create(State(state): State<AppState>, Extension(caller): Extension<ServiceCaller>, body: Result<Json<NewTenant>, JsonRejection>) -> Response {
    let Json(new) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e).into_response(),
    };
    match state.provision_tenant(&new, &actor(&caller)).await {
        Ok(done) => answer(&state, if done.created { StatusCode::CREATED } else { StatusCode::OK }, done.tenant).await,
        Err(e) => error(e),
    }
}

/// A tenant id in a path: anything that is not a UUID names no tenant.
fn tenant_id(path: Result<Path<String>, PathRejection>) -> Result<TenantId, Response> {
    path.ok().and_then(|Path(raw)| raw.parse::<uuid::Uuid>().ok()).map(TenantId).ok_or_else(|| error(TenantError::NotFound))
}

async fn show(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> Response {
    let id = match tenant_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match tenants::get(&state.system_pool, id).await {
        Ok(Some(t)) => answer(&state, StatusCode::OK, t).await,
        Ok(None) => error(TenantError::NotFound),
        Err(e) => error(e.into()),
    }
}

/// `?external_id=` or `?limit=&starting_after=`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only the tenant with this external id.
    external_id: Option<String>,
    /// Page size, 1 to 100 (default 20).
    limit: Option<i64>,
    /// The last id of the previous page.
    starting_after: Option<uuid::Uuid>,
}

async fn list(State(state): State<AppState>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            let message: String = e.body_text().chars().take(MAX_ECHO * 2).collect();
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).into_response();
        }
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "limit: between 1 and 100").into_response();
    }
    let found = match &q.external_id {
        Some(external) => tenants::by_external_id(&state.system_pool, external).await.map(|t| t.into_iter().collect()),
        None => tenants::list(&state.system_pool, q.starting_after.map(TenantId), limit + 1).await,
    };
    let mut found: Vec<tenants::Tenant> = match found {
        Ok(f) => f,
        Err(e) => return error(e.into()),
    };
    let has_more = found.len() as i64 > limit;
    found.truncate(limit as usize);
    let data = match view::view_many(&state.system_pool, found).await {
        Ok(views) => views,
        Err(e) => return error(e),
    };
    Json(super::lists::TenantList { object: super::lists::ListObject::List, url: "/v1/tenants", has_more, data }).into_response()
}

async fn change(
    State(state): State<AppState>,
    Extension(caller): Extension<ServiceCaller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<TenantChange>, JsonRejection>,
) -> Response {
    let id = match tenant_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Json(change) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e).into_response(),
    };
    match provision::change(state.tenant_deps(), id, &change, &actor(&caller)).await {
        Ok(t) => answer(&state, StatusCode::OK, t).await,
        Err(e) => error(e),
    }
}
