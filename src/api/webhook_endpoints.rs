//! Outbound webhook endpoints, registered by a tenant's app (scope webhooks:write):
//! `POST /v1/webhook-endpoints` (the signing secret is in this answer only), `GET` to list,
//! `DELETE /v1/webhook-endpoints/{id}`, and `POST /v1/webhook-endpoints/{id}/rotate` for a new
//! secret while the previous one keeps signing for a day. Another tenant's endpoint is a 404.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};

use super::errors::ApiError;
use super::guard::Caller;
use super::route::{Auth, RouteSpec};
use crate::auth::Scope;
use crate::webhooks_out::endpoints::{self, EndpointError, NewEndpoint};
use crate::state::AppState;

/// The endpoint routes.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let auth = || Auth::Key(Scope::WebhooksWrite);
    vec![
        (RouteSpec::new(Method::POST, "/v1/webhook-endpoints", auth()).write(), post(create)),
        (RouteSpec::new(Method::GET, "/v1/webhook-endpoints", auth()), get(list)),
        (RouteSpec::new(Method::DELETE, "/v1/webhook-endpoints/{id}", auth()).write(), delete(remove)),
        (RouteSpec::new(Method::POST, "/v1/webhook-endpoints/{id}/rotate", auth()).write(), post(rotate)),
    ]
}

fn error(e: EndpointError) -> Response {
    match e {
        EndpointError::Invalid { field, message } => ApiError::new(StatusCode::BAD_REQUEST, "invalid_endpoint", message).with_field("field", field).into_response(),
        EndpointError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response(),
        EndpointError::Db(e) => {
            tracing::error!(message = "Webhook endpoint request failed.", error = %e);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "endpoints cannot be changed now; retry later").into_response()
        }
    }
}

fn endpoint_id(path: Result<Path<String>, PathRejection>) -> Result<uuid::Uuid, Response> {
    path.ok().and_then(|Path(raw)| raw.parse().ok()).ok_or_else(|| error(EndpointError::NotFound))
}

async fn create(State(state): State<AppState>, Extension(caller): Extension<Caller>, body: Result<Json<NewEndpoint>, JsonRejection>) -> Response {
    let Json(new) = match body {
        Ok(b) => b,
        Err(e) => return super::errors::json_rejection(&e).into_response(),
    };
    match endpoints::create(&state.tenant_pool, caller.tenant, &new).await {
        Ok(made) => (StatusCode::CREATED, Json(made)).into_response(),
        Err(e) => error(e),
    }
}

async fn list(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    match endpoints::list(&state.tenant_pool, caller.tenant).await {
        Ok(all) => Json(serde_json::json!({"object": "list", "data": all})).into_response(),
        Err(e) => error(e),
    }
}

async fn remove(State(state): State<AppState>, Extension(caller): Extension<Caller>, path: Result<Path<String>, PathRejection>) -> Response {
    let id = match endpoint_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match endpoints::delete(&state.tenant_pool, caller.tenant, id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e),
    }
}

async fn rotate(State(state): State<AppState>, Extension(caller): Extension<Caller>, path: Result<Path<String>, PathRejection>) -> Response {
    let id = match endpoint_id(path) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match endpoints::rotate(&state.tenant_pool, caller.tenant, id).await {
        Ok(rotated) => Json(rotated).into_response(),
        Err(e) => error(e),
    }
}
