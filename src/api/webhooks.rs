//! `POST /webhooks/stripe`. Authentication: the Stripe-Signature header.
//!
//! The least work that makes an event durable: cap the body, verify the signature over the
//! raw bytes, parse the envelope, insert once into the inbox, queue, answer 200. PostgreSQL
//! down → 503 and Stripe retries; Redis down after the insert → still 200, because the row
//! is durable and the scheduler's sweep queues it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};

use super::{ApiError, Auth, RouteSpec};
use crate::app::AppState;
use crate::stripe::event::StripeEvent;
use crate::stripe::inbox::{self, Inserted};
use crate::stripe::signature;

/// Webhook routes. Exempt from rate limits: shedding a legitimate Stripe event is worse than
/// answering a forged one 400, and the signature is checked before anything is stored.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    vec![(RouteSpec::new(Method::POST, "/webhooks/stripe", Auth::StripeSignature), post(receive))]
}

async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let cap = state.settings.webhook_max_bytes;
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("webhook bodies are limited to {cap} bytes"));
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, cap).await.map_err(|_| too_large())?;

    if state.settings.stripe_webhook_secrets.is_empty() {
        tracing::error!(message = "Webhook refused: STRIPE_WEBHOOK_SECRET is not configured.");
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_configured", "webhook signing secret is not configured"));
    }
    let header = headers.get("stripe-signature").map(|v| v.to_str().unwrap_or(""));
    let now = chrono::Utc::now().timestamp();
    let verified = signature::verify(header, &bytes, &state.settings.stripe_webhook_secrets, now, state.settings.webhook_tolerance_secs)
        .map_err(|e| {
            tracing::warn!(message = "Webhook rejected.", reason = %e);
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", e.to_string())
        })?;

    let raw: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("body is not JSON: {e}")))?;
    let event = StripeEvent::from_value(&raw, verified.timestamp)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()))?;

    let inserted = inbox::insert(&state.system_pool, &event, &raw).await.map_err(|e| {
        tracing::error!(message = "Webhook not stored: PostgreSQL unavailable; Stripe will retry.", event_id = %event.id, error = %e);
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "the event could not be stored; retry later")
    })?;
    if inserted == Inserted::New {
        match inbox::push(&state.queue, &event.id, None).await {
            Ok(()) => {
                // Marking the row queued is bookkeeping for the sweep, so it runs after the
                // answer. If it never runs (crash, PostgreSQL gone), the sweep pushes the row
                // again after 30 s, which the job's idempotency key turns into a no-op.
                let (pool, id) = (state.system_pool.clone(), event.id.clone());
                tokio::spawn(async move {
                    if let Err(e) = inbox::mark_queued(&pool, &id).await {
                        tracing::debug!(message = "Inbox row not marked queued; the sweep will.", event_id = %id, error = %e);
                    }
                });
            }
            // Durable already: the scheduler's inbox sweep queues it when Redis is back.
            Err(e) => {
                tracing::warn!(message = "Webhook stored but not queued; the inbox sweep will queue it.", event_id = %event.id, error = %e)
            }
        }
    }
    let body = serde_json::json!({
        "received": true,
        "id": event.id,
        "duplicate": inserted == Inserted::Duplicate,
        "ignored": inserted == Inserted::Ignored,
    });
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}
