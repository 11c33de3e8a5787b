//! `POST /v1/jobs`: app services queue a job for their tenant, and `GET /v1/jobs/{id}` says
//! where it is (queued, running, retrying with the next attempt's time, done, dead with the
//! last error) to that tenant only. Authentication: API key with
//! scope jobs:write. Only kinds whose catalogue entry says `intake = true` are accepted; the
//! payload must fit the kind's `max_payload_bytes` (413) and parse into the kind's arguments
//! (400), so a bad job is refused to its sender instead of dead-lettered later. The
//! idempotency key is scoped to the tenant, so tenants cannot collide (or probe each other).

use axum::extract::{Extension, State};
use axum::http::{Method, StatusCode};
use axum::extract::Path;
use axum::routing::{MethodRouter, get, post};
use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::guard::Caller;
use super::errors::ApiError;
use super::route::{Auth, RouteSpec};
use crate::state::AppState;
use crate::auth::Scope;
use crate::state::Registry;
use crate::jobs::intake::{IntakeError, IntakeRequest, Intakes};
use crate::queue::{EnqueueRequest, status};

/// Job intake routes; `registry` checks payloads against each kind's arguments, and the
/// kinds with an intake hook ([`crate::jobs::intake`]) accept their own.
pub fn routes(registry: &Registry) -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let registry = registry.clone();
    let intakes = Intakes::standard();
    let hooks = intakes.clone();
    let create = move |state: State<AppState>, caller: Extension<Caller>, body: Result<Json<NewJob>, axum::extract::rejection::JsonRejection>| {
        create(state, caller, body, registry.clone(), hooks.clone())
    };
    let show = move |state: State<AppState>, caller: Extension<Caller>, id: Result<Path<String>, axum::extract::rejection::PathRejection>| {
        show(state, caller, id, intakes.clone())
    };
    vec![
        (RouteSpec::new(Method::POST, "/v1/jobs", Auth::Key(Scope::JobsWrite)).write(), post(create)),
        (RouteSpec::new(Method::GET, "/v1/jobs/{id}", Auth::Key(Scope::JobsWrite)), get(show)),
    ]
}

/// The request body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewJob {
    /// A kind with `intake = true`: noop, email.send, webhook.deliver, cache.warm.
    kind: String,
    /// The kind's arguments. email.send: {template, to, variables}; webhook.deliver: {type, data}.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload: Option<serde_json::Value>,
    /// Repeats with the same key (per tenant) answer with the first request's job.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    idempotency_key: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewJob>, axum::extract::rejection::JsonRejection>,
    registry: Registry,
    intakes: Intakes<AppState>,
) -> Result<Response, ApiError> {
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
    if job.idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", "idempotency_key must be 1 to 200 characters"));
    }
    if intakes.has(&job.kind) {
        let req = IntakeRequest { tenant: caller.tenant, payload, idempotency_key: job.idempotency_key };
        return match intakes.accept(&job.kind, &state, req).await {
            Some(Ok(body)) => Ok((StatusCode::ACCEPTED, Json(body)).into_response()),
            Some(Err(e)) => intake_refused(&job.kind, e),
            None => Err(ApiError::new(StatusCode::BAD_REQUEST, "unknown_kind", "no job kind of that name accepts intake")),
        };
    }
    let idempotency_key = job.idempotency_key;
    if let Err(e) = handler.check(&payload) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            format!("the payload does not fit the arguments of {}: {}", job.kind, super::errors::json_error_text(&e)),
        ));
    }
    let mut req = EnqueueRequest::new(job.kind.as_str(), payload);
    req.tenant = Some(caller.tenant);
    req.idempotency_key = idempotency_key.map(|k| format!("tenant:{}:{k}", caller.tenant));
    // Its status row first, so the worker always finds it (GET /v1/jobs/{id}).
    let id = crate::newtypes::JobId::new();
    req.id = Some(id.clone());
    req.tracked = true;
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::error!(message = "Job not queued.", error = %e);
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", "the job could not be queued; retry later")
    };
    let mut tx = state.tenant_pool.begin(caller.tenant).await.map_err(|e| unavailable(&e))?;
    status::queued(&mut tx, caller.tenant, &id.0, &job.kind).await.map_err(|e| unavailable(&e))?;
    tx.commit().await.map_err(|e| unavailable(&e))?;
    let done = match state.queue.enqueue(req).await {
        Ok(done) => done,
        Err(e) => {
            let _ = status::forget(&state.tenant_pool, caller.tenant, &id.0).await;
            return Err(unavailable(&e));
        }
    };
    if done.duplicate {
        // The key's first job is the one to follow; this attempt's row is not a job.
        let _ = status::forget(&state.tenant_pool, caller.tenant, &id.0).await;
    }
    Ok((StatusCode::ACCEPTED, Json(crate::jobs::intake::Accepted::job(done.id.0, &job.kind, done.duplicate))).into_response())
}

/// The answer to an intake hook's refusal.
fn intake_refused(kind: &str, e: IntakeError) -> Result<Response, ApiError> {
    match e {
        IntakeError::Invalid { code, message, field } => {
            let err = ApiError::new(StatusCode::BAD_REQUEST, code, message);
            Err(match field {
                Some((name, value)) => err.with_field(name, value),
                None => err,
            })
        }
        IntakeError::Payload { kind, expected, error } => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", format!("{kind} takes {expected}: {}", super::errors::json_error_text(&error))))
        }
        IntakeError::Limited(verdict) => Ok(super::guard::refused(verdict)),
        IntakeError::Busy { code, message, retry_after_secs } => {
            let mut answer = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message).into_response();
            answer.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(retry_after_secs));
            Ok(answer)
        }
        IntakeError::Unavailable(e) => {
            tracing::error!(message = "Job not accepted.", kind = %kind, error = %e);
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the job could not be accepted now; retry with the same idempotency key"))
        }
    }
}

/// `GET /v1/jobs/{id}`: a job this tenant queued, where it is. Another tenant's job is a 404,
/// the same as one that never existed.
async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    intakes: Intakes<AppState>,
) -> Result<Json<status::JobStatus>, ApiError> {
    // A path that is no job id at all is answered like an unknown job.
    let id = id.map(|Path(id)| id).unwrap_or_default();
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no job with that id"));
    }
    let found = match intakes.status(&state, caller.tenant, &id).await {
        Some(kept_by_kind) => kept_by_kind,
        None => status::get(&state.tenant_pool, caller.tenant, &id).await,
    };
    match found {
        Ok(Some(s)) => Ok(Json(s)),
        Ok(None) => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no job with that id (statuses are kept 7 days after a job finishes)")),
        Err(e) => {
            tracing::error!(message = "Job status not read.", error = %e);
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the job's status cannot be read now; retry later"))
        }
    }
}
