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
use serde::Deserialize;

use super::guard::Caller;
use super::errors::ApiError;
use super::route::{Auth, RouteSpec};
use crate::state::AppState;
use crate::auth::Scope;
use crate::jobs::Registry;
use crate::queue::{EnqueueRequest, status};

/// Job intake routes; `registry` checks payloads against each kind's arguments.
pub fn routes(registry: &Registry) -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    let registry = registry.clone();
    let create = move |state: State<AppState>, caller: Extension<Caller>, body: Result<Json<NewJob>, axum::extract::rejection::JsonRejection>| {
        create(state, caller, body, registry.clone())
    };
    vec![
        (RouteSpec::new(Method::POST, "/v1/jobs", Auth::Key(Scope::JobsWrite)).write(), post(create)),
        (RouteSpec::new(Method::GET, "/v1/jobs/{id}", Auth::Key(Scope::JobsWrite)), get(show)),
    ]
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
    if job.idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", "idempotency_key must be 1 to 200 characters"));
    }
    if job.kind == crate::email::JOB_KIND {
        return email(&state, caller.tenant, payload, job.idempotency_key).await;
    }
    if let Err(e) = handler.check(&payload) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            format!("the payload does not fit the arguments of {}: {}", job.kind, super::errors::json_error_text(&e)),
        ));
    }
    let mut req = EnqueueRequest::new(job.kind.as_str(), payload);
    req.tenant = Some(caller.tenant);
    req.idempotency_key = job.idempotency_key.map(|k| format!("tenant:{}:{k}", caller.tenant));
    // Its status row first, so the worker always finds it (GET /v1/jobs/{id}).
    let id = crate::domain::JobId::new();
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
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({"id": done.id, "kind": job.kind, "duplicate": done.duplicate}))))
}

/// `GET /v1/jobs/{id}`: a job this tenant queued, where it is. Another tenant's job is a 404,
/// the same as one that never existed.
async fn show(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<status::JobStatus>, ApiError> {
    // A path that is no job id at all is answered like an unknown job.
    let id = id.map(|Path(id)| id).unwrap_or_default();
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no job with that id"));
    }
    match status::get(&state.tenant_pool, caller.tenant, &id).await {
        Ok(Some(s)) => Ok(Json(s)),
        Ok(None) => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no job with that id (statuses are kept 7 days after a job finishes)")),
        Err(e) => {
            tracing::error!(message = "Job status not read.", error = %e);
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the job's status cannot be read now; retry later"))
        }
    }
}

/// `email.send` from an app: checked and written to the outbox, with its job's status row,
/// before the answer (`email::compose::accept`), then queued as every outbox row is.
async fn email(
    state: &AppState,
    tenant: crate::domain::TenantId,
    payload: serde_json::Value,
    idempotency_key: Option<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    use crate::email::compose::{AcceptError, Compose};
    let compose: Compose = serde_json::from_value(payload).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", format!("email.send takes {{template, to, variables}}: {}", super::errors::json_error_text(&e)))
    })?;
    let accepted = match crate::email::compose::accept(&state.tenant_pool, &state.email_templates, tenant, &compose, idempotency_key.as_deref()).await {
        Ok(a) => a,
        Err(AcceptError::Invalid(e)) => {
            let err = ApiError::new(StatusCode::BAD_REQUEST, "invalid_email", e.to_string());
            return Err(match e.variable() {
                Some(v) => err.with_field("variable", v),
                None => err,
            });
        }
        Err(AcceptError::Db(e)) => {
            tracing::error!(message = "Email not accepted.", error = %e);
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the email could not be accepted now; retry with the same idempotency key"));
        }
    };
    // Committed: a lost push is queued by the outbox sweep, under the same job id.
    if let Err(e) = crate::email::push(&state.queue, tenant, &[accepted.outbox_id]).await {
        tracing::warn!(message = "Email accepted; its send job is queued by the outbox sweep.", error = %e);
    }
    let body = serde_json::json!({"id": accepted.job_id, "kind": crate::email::JOB_KIND, "duplicate": accepted.duplicate, "outbox_id": accepted.outbox_id});
    Ok((StatusCode::ACCEPTED, Json(body)))
}
