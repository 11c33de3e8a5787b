//! The admin API's people and exceptions: operators managed by admins (list, add, disable,
//! rotate: a token shown once), and what operators opened taken back — a tenant's override
//! revoked, a support session ended — each audited with the operator's name by the owning
//! module, as from the CLI.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};

use super::admin::{bad_query, tenant, unavailable};
use super::errors::ApiError;
use super::guard::OperatorCaller;
use super::route::{Auth, RouteSpec};
use crate::auth::operators::{self, Operator, OperatorError, Role};
use crate::auth::support::{self, Session, SupportError};
use crate::billing::overrides::{self, OverrideError};
use crate::state::AppState;

/// People and exception routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![
        (RouteSpec::new(Method::GET, "/v1/admin/operators", Auth::Operator(Role::Admin)), get(list_operators)),
        (RouteSpec::new(Method::POST, "/v1/admin/operators", Auth::Operator(Role::Admin)).write(), post(add_operator)),
        (RouteSpec::new(Method::POST, "/v1/admin/operators/{name}/disable", Auth::Operator(Role::Admin)).write(), post(disable_operator)),
        (RouteSpec::new(Method::POST, "/v1/admin/operators/{name}/rotate", Auth::Operator(Role::Admin)).write(), post(rotate_operator)),
        (RouteSpec::new(Method::DELETE, "/v1/admin/tenants/{id}/overrides/{override}", Auth::Operator(Role::Operator)).write(), delete(revoke_override)),
        (RouteSpec::new(Method::GET, "/v1/admin/support-sessions", Auth::Operator(Role::Viewer)), get(list_sessions)),
        (RouteSpec::new(Method::DELETE, "/v1/admin/support-sessions/{id}", Auth::Operator(Role::Operator)).write(), delete(revoke_session)),
    ]
}

fn not_found(message: String) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", message).into_response()
}

fn operator_error(e: &OperatorError) -> Response {
    match e {
        OperatorError::BadName(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_operator", e.to_string()).into_response(),
        OperatorError::Exists(_) => ApiError::new(StatusCode::CONFLICT, "operator_exists", e.to_string()).into_response(),
        OperatorError::NoOperator(_) => not_found(e.to_string()),
        OperatorError::Db(db) => unavailable(db),
    }
}

/// Every operator, never a token.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct OperatorList {
    /// By name.
    operators: Vec<Operator>,
}

async fn list_operators(State(state): State<AppState>) -> Response {
    match operators::list(&state.system_pool).await {
        Ok(operators) => Json(OperatorList { operators }).into_response(),
        Err(e) => unavailable(&e),
    }
}

/// An operator to add.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewOperator {
    /// A short lowercase handle (a-z, 0-9, '.', '_', '@', '-').
    name: String,
    /// `viewer`, `operator` or `admin`.
    role: Role,
}

/// An operator with its new token: in this answer only.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct OperatorWithToken {
    /// The operator.
    operator: Operator,
    /// `bo_…`: stored only as its hash.
    token: String,
}

async fn add_operator(State(state): State<AppState>, Extension(caller): Extension<OperatorCaller>, body: Result<Json<NewOperator>, JsonRejection>) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e).into_response(),
    };
    match operators::add(&state.system_pool, &b.name, b.role, &caller.name).await {
        Ok((operator, token)) => (StatusCode::CREATED, Json(OperatorWithToken { operator, token })).into_response(),
        Err(e) => operator_error(&e),
    }
}

async fn disable_operator(State(state): State<AppState>, Extension(caller): Extension<OperatorCaller>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(name)) = path else { return not_found("no such operator".into()) };
    match operators::disable(&state.system_pool, &name, &caller.name).await {
        Ok(op) => Json(op).into_response(),
        Err(e) => operator_error(&e),
    }
}

async fn rotate_operator(State(state): State<AppState>, Extension(caller): Extension<OperatorCaller>, path: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(name)) = path else { return not_found("no such operator".into()) };
    match operators::rotate(&state.system_pool, &name, &caller.name).await {
        Ok((operator, token)) => Json(OperatorWithToken { operator, token }).into_response(),
        Err(e) => operator_error(&e),
    }
}

async fn revoke_override(State(state): State<AppState>, Extension(caller): Extension<OperatorCaller>, path: Result<Path<(String, String)>, PathRejection>) -> Response {
    let Ok(Path((tenant_raw, override_raw))) = path else { return not_found("no such override".into()) };
    let id = match tenant(&state, Ok(Path(tenant_raw))).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Ok(override_id) = override_raw.parse::<uuid::Uuid>() else { return not_found("no such override".into()) };
    match overrides::revoke(&state.system_pool, id, override_id, &caller.name).await {
        Ok(ended) => {
            crate::billing::entitlements::invalidate(&state.cache, id).await;
            Json(ended).into_response()
        }
        Err(e @ (OverrideError::NoOverride(_) | OverrideError::NoTenant(_))) => not_found(e.to_string()),
        Err(e) => unavailable(&e),
    }
}

/// Which support sessions.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SessionsQuery {
    /// Only this tenant's.
    tenant: Option<uuid::Uuid>,
    /// At most this many, 1 to 500 (default 50).
    limit: Option<i64>,
}

/// Support sessions, newest first, never their tokens.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct SessionList {
    /// The sessions.
    sessions: Vec<Session>,
}

async fn list_sessions(State(state): State<AppState>, query: Result<Query<SessionsQuery>, QueryRejection>) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad_query(&e),
    };
    match support::list(&state.system_pool, q.tenant.map(crate::newtypes::TenantId), q.limit.unwrap_or(50).clamp(1, 500)).await {
        Ok(sessions) => Json(SessionList { sessions }).into_response(),
        Err(e) => unavailable(&e),
    }
}

async fn revoke_session(State(state): State<AppState>, Extension(caller): Extension<OperatorCaller>, path: Result<Path<String>, PathRejection>) -> Response {
    let Some(id) = path.ok().and_then(|Path(raw)| raw.parse::<uuid::Uuid>().ok()) else { return not_found("no such support session".into()) };
    match support::revoke(&state.system_pool, id, &caller.name).await {
        Ok(session) => Json(session).into_response(),
        Err(e @ SupportError::NoSession(_)) => not_found(e.to_string()),
        Err(e) => unavailable(&e),
    }
}
