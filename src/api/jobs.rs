//! `POST /v1/jobs`: app services queue a job for their tenant. Authentication: API key with
//! scope jobs:write. Only kinds whose catalogue entry says `intake = true` are accepted; the
//! payload must fit the kind's `max_payload_bytes` (413) and parse into the kind's arguments
//! (400), so a bad job is refused to its sender instead of dead-lettered later. The
//! idempotency key is scoped to the tenant, so tenants cannot collide (or probe each other).

use axum::extract::{Extension, State};
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, post};
use axum::Json;
use serde::Deserialize;

use super::guard::Caller;
use super::errors::ApiError;
use super::route::{Auth, RouteSpec};
use crate::state::AppState;
use crate::auth::Scope;
use crate::jobs::Registry;
use crate::queue::EnqueueRequest;

/// Job intake routes; `registry` checks payloads against each kind's arguments.
pub fn routes(registry: &Registry) -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let registry = registry.clone();
    let create = move |state: State<AppState>, caller: Extension<Caller>, body: Result<Json<NewJob>, axum::extract::rejection::JsonRejection>| {
        create(state, caller, body, registry.clone())
    };
    vec![(RouteSpec::new(Method::POST, "/v1/jobs", Auth::Key(Scope::JobsWrite)).write(), post(create))]
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewJob {
    kind: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewJob>, axum::extract::rejection::JsonRejection>,
    registry: Registry,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(job) = body.map_err(|e| super::errors::json_rejection(&e))?;
    let policy = state.queue.catalogue().get(&job.kind).filter(|p| p.intake);
    let (Some(policy), Some(handler)) = (policy, registry.get(&job.kind)) else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "unknown_kind", "no job kind of that name accepts intake"));
    };
    let payload = job.payload.unwrap_or_else(|| serde_json::json!({}));
    let size = serde_json::to_vec(&payload).map_or(usize::MAX, |v| v.len());
    if size > policy.max_payload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{} payloads are limited to {} bytes of JSON; this one has {size}", job.kind, policy.max_payload_bytes),
        ));
    }
    if let Err(e) = handler.check(&payload) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            format!("the payload does not fit the arguments of {}: {}", job.kind, super::errors::json_error_text(&e)),
        ));
    }
    if job.idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", "idempotency_key must be 1 to 200 characters"));
    }
    let mut req = EnqueueRequest::new(job.kind.as_str(), payload);
    req.tenant = Some(caller.tenant);
    req.idempotency_key = job.idempotency_key.map(|k| format!("tenant:{}:{k}", caller.tenant));
    let done = state.queue.enqueue(req).await.map_err(|e| {
        tracing::error!(message = "Job not queued.", error = %e);
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", "the job could not be queued; retry later")
    })?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"id": done.id, "kind": job.kind, "duplicate": done.duplicate}))))
}
