//! The admin API (`/v1/admin/…`), for the operator console and operators' own tools: the same
//! operations as the CLI — the customer list, a tenant's timeline and usage, overrides and
//! support sessions — authenticated by operator tokens only (no API key reaches it), held to
//! the operator's role, and audited with the operator's name.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use super::errors::{ApiError, MAX_ECHO};
use super::guard::OperatorCaller;
use super::route::{Auth, RouteSpec};
use crate::auth::operators::Role;
use crate::billing::overrides::{self, NewOverride, OverrideError, OverrideKind};
use crate::newtypes::TenantId;
use crate::state::AppState;
use crate::tenants::customers::{self, Dunning, Filter, Sort};

/// Says where a read that can lag was served from (`X-Ballast-Read-From`: `replica (lag 0.2 s)`,
/// or `primary: ` and why the replica was not used); nothing when no replica is set.
fn read_from(mut response: Response, source: &crate::db::replica::ReadSource) -> Response {
    if let Some(note) = source.note() {
        let printable: String = note.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' }).take(300).collect();
        if let Ok(value) = axum::http::HeaderValue::from_str(&printable) {
            response.headers_mut().insert("x-ballast-read-from", value);
        }
    }
    response
}

/// Admin routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![
        (RouteSpec::new(Method::GET, "/v1/admin/tenants", Auth::Operator(Role::Viewer)), get(list)),
        (RouteSpec::new(Method::GET, "/v1/admin/tenants/{id}/timeline", Auth::Operator(Role::Viewer)), get(timeline)),
        (RouteSpec::new(Method::GET, "/v1/admin/tenants/{id}/usage", Auth::Operator(Role::Viewer)), get(usage)),
        (RouteSpec::new(Method::GET, "/v1/admin/tenants/{id}/overrides", Auth::Operator(Role::Viewer)), get(list_overrides)),
        (RouteSpec::new(Method::POST, "/v1/admin/tenants/{id}/overrides", Auth::Operator(Role::Operator)).write(), post(set_override)),
        (RouteSpec::new(Method::POST, "/v1/admin/tenants/{id}/support-sessions", Auth::Operator(Role::Operator)).write(), post(open_session)),
    ]
}

pub(super) fn bad_query(e: &QueryRejection) -> Response {
    let message: String = e.body_text().chars().take(MAX_ECHO * 2).collect();
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message).into_response()
}

pub(super) fn unavailable(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(message = "Admin request failed.", error = %e);
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "cannot be read or stored now; retry later").into_response()
}

fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such tenant").into_response()
}

/// The tenant a path names, if it exists.
pub(super) async fn tenant(state: &AppState, path: Result<Path<String>, PathRejection>) -> Result<TenantId, Response> {
    let Some(id) = path.ok().and_then(|Path(raw)| raw.parse::<uuid::Uuid>().ok()).map(TenantId) else { return Err(not_found()) };
    match crate::tenants::get(&state.system_pool, id).await {
        Ok(Some(t)) => Ok(t.id),
        Ok(None) => Err(not_found()),
        Err(e) => Err(unavailable(&e)),
    }
}

/// A read route's query and the tenant its path names.
async fn query_for_tenant<T>(state: &AppState, path: Result<Path<String>, PathRejection>, query: Result<Query<T>, QueryRejection>) -> Result<(T, TenantId), Response> {
    let Query(q) = query.map_err(|e| bad_query(&e))?;
    Ok((q, tenant(state, path).await?))
}

/// A body route's JSON and the tenant its path names.
async fn body_for_tenant<T>(state: &AppState, path: Result<Path<String>, PathRejection>, body: Result<Json<T>, JsonRejection>) -> Result<(T, TenantId), Response> {
    let Json(b) = body.map_err(|e| super::errors::json_rejection(&e).into_response())?;
    Ok((b, tenant(state, path).await?))
}

/// The customer list's filters, sort and page.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only tenants on this plan (or price id).
    plan: Option<String>,
    /// Only this subscription status (`none`: no subscription).
    status: Option<String>,
    /// Only this dunning state.
    dunning: Option<Dunning>,
    /// Part of the name, external id or billing email; or a whole tenant or Stripe customer id.
    search: Option<String>,
    /// `mrr` (default), `activity` or `created`.
    sort: Option<Sort>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
}

async fn list(State(state): State<AppState>, query: Result<Query<ListQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    let filter = Filter { plan: q.plan, status: q.status, dunning: q.dunning, text: q.search };
    let reads = state.reads().await;
    match customers::page(&reads.pool, &filter, q.sort.unwrap_or_default(), q.cursor.as_deref(), q.limit.unwrap_or(50)).await {
        Ok(page) => read_from(Json(page).into_response(), &reads.source),
        Err(customers::ListError::BadCursor) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor is not one this list gave out for this sort").into_response(),
        Err(e) => unavailable(&e),
    }
}

/// A timeline page.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TimelineQuery {
    /// Only entries at or after this time (RFC 3339).
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
}

async fn timeline(State(state): State<AppState>, path: Result<Path<String>, PathRejection>, query: Result<Query<TimelineQuery>, QueryRejection>) -> Response {
    let (q, id) = match query_for_tenant(&state, path, query).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let reads = state.reads().await;
    match crate::tenants::timeline::page(&reads.pool, id, q.since, q.cursor.as_deref(), q.limit.unwrap_or(50)).await {
        Ok(page) => read_from(Json(page).into_response(), &reads.source),
        Err(crate::tenants::timeline::TimelineError::BadCursor) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_cursor", "the cursor is not one this timeline gave out").into_response(),
        Err(e) => unavailable(&e),
    }
}

/// How many days of usage.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct UsageQuery {
    /// Days back, today included, 1 to 400 (default 30).
    days: Option<u32>,
}

async fn usage(State(state): State<AppState>, path: Result<Path<String>, PathRejection>, query: Result<Query<UsageQuery>, QueryRejection>) -> Response {
    let (q, id) = match query_for_tenant(&state, path, query).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let limits = match crate::usage::limits_of(&state.usage_deps(), id).await {
        Ok(l) => l,
        Err(e) => return unavailable(&e),
    };
    let reads = state.reads().await;
    match crate::tenants::usage_report::report(&reads.pool, id, q.days.unwrap_or(30), limits.as_ref()).await {
        Ok(r) => read_from(Json(r).into_response(), &reads.source),
        Err(e) => unavailable(&e),
    }
}

/// A tenant's overrides.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct OverrideList {
    /// Live ones first, then the newest ended.
    overrides: Vec<overrides::Override>,
}

async fn list_overrides(State(state): State<AppState>, path: Result<Path<String>, PathRejection>) -> Response {
    let id = match tenant(&state, path).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    // The primary: an operator reads the overrides they have just set.
    match overrides::list(&state.system_pool, id, true, 100).await {
        Ok(list) => Json(OverrideList { overrides: list }).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// An override to set.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewOverrideBody {
    /// `grant`, `revoke`, `feature_limit` or `usage_limit`.
    kind: OverrideKind,
    /// The feature, or the usage metric.
    target: String,
    /// The limit (feature_limit, usage_limit).
    value: Option<i64>,
    /// Why (3 to 500 characters).
    reason: String,
    /// When it ends by itself; none: until revoked.
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

async fn set_override(
    State(state): State<AppState>,
    Extension(caller): Extension<OperatorCaller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<NewOverrideBody>, JsonRejection>,
) -> Response {
    let (b, id) = match body_for_tenant(&state, path, body).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let new = NewOverride { kind: b.kind, target: &b.target, value: b.value, reason: &b.reason, expires_at: b.expires_at };
    let features: Vec<&str> = state.plans.features.keys().map(String::as_str).collect();
    let metrics: Vec<&str> = state.plans.metrics.keys().map(String::as_str).collect();
    if let Err(e) = overrides::check(&new, &features, &metrics, chrono::Utc::now()) {
        let message: String = e.to_string().chars().take(MAX_ECHO * 3).collect();
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_override", message).into_response();
    }
    match overrides::set(&state.system_pool, id, &new, &caller.name).await {
        Ok(row) => {
            crate::billing::entitlements::invalidate(&state.cache, id).await;
            (StatusCode::CREATED, Json(row)).into_response()
        }
        Err(OverrideError::NoTenant(_)) => not_found(),
        Err(e) => unavailable(&e),
    }
}

/// A support session to open.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewSession {
    /// Why (3 to 500 characters).
    reason: String,
    /// How long it lasts, in seconds (default 1,800; at most 28,800).
    ttl_secs: Option<u64>,
}

/// An opened session: its token is in this answer only.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct OpenedSession {
    /// The session.
    session: crate::auth::support::Session,
    /// `bs_…`: reads the tenant's entitlements and usage as its app does, never writes.
    token: String,
}

async fn open_session(
    State(state): State<AppState>,
    Extension(caller): Extension<OperatorCaller>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<NewSession>, JsonRejection>,
) -> Response {
    let (b, id) = match body_for_tenant(&state, path, body).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let ttl = std::time::Duration::from_secs(b.ttl_secs.unwrap_or(1800));
    match crate::auth::support::open(&state.system_pool, id, &caller.name, &b.reason, ttl).await {
        Ok((session, token)) => (StatusCode::CREATED, Json(OpenedSession { session, token })).into_response(),
        Err(crate::auth::support::SupportError::Invalid(m)) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_session", m).into_response(),
        Err(crate::auth::support::SupportError::NoTenant(_)) => not_found(),
        Err(e) => unavailable(&e),
    }
}
