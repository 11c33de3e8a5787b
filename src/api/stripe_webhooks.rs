//! `POST /webhooks/stripe`. Authentication: the Stripe-Signature header.
//!
//! The least work that makes an event durable: cap the body, verify the signature over the
//! raw bytes, parse the envelope, insert once into the inbox, queue, answer 200. PostgreSQL
//! down → 503 and Stripe retries; Redis down after the insert → still 200, because the row
//! is durable and the scheduler's sweep queues it.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};

use super::errors::ApiError;
use super::route::{Auth, RouteSpec};
use crate::state::AppState;
use crate::stripe::event::StripeEvent;
use crate::stripe::inbox::batch::{NotStored, Row};
use crate::stripe::inbox::{self, Inserted};
use crate::stripe::signature;

/// Webhook routes. Exempt from rate limits: shedding a legitimate Stripe event is worse than
/// answering a forged one 400, and the signature is checked before anything is stored.
pub fn routes() -> Vec<(RouteSpec, MethodRouter<AppState>)> {
    // The guard is the one body limit (axum's 2 MB default would cap a larger setting).
    vec![(RouteSpec::new(Method::POST, "/webhooks/stripe", Auth::StripeSignature), post(receive).layer(axum::extract::DefaultBodyLimit::disable()))]
}

/// Rejected webhooks are logged at most once per this period, with the count left out.
static REJECTED_LOG: crate::telemetry::Sampled = crate::telemetry::Sampled::new(std::time::Duration::from_secs(10));
/// Events in another API version: logged at most once per period, each counted.
static OTHER_VERSION_LOG: crate::telemetry::Sampled = crate::telemetry::Sampled::new(std::time::Duration::from_secs(60));

/// What checking a body found: the verified event and its JSON, or the answer to give.
type Checked = Result<(StripeEvent, serde_json::Value), ApiError>;

/// The body arrives already read whole by the route guard, within `BALLAST_WEBHOOK_MAX_BYTES`
/// and the body timeout (413 / 408 there).
async fn receive(State(state): State<AppState>, headers: HeaderMap, bytes: Bytes) -> Result<Response, ApiError> {
    if state.settings.stripe_webhook_secrets.is_empty() {
        tracing::error!(message = "Webhook refused: STRIPE_WEBHOOK_SECRET is not configured.");
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_configured", "webhook signing secret is not configured"));
    }
    let mut signatures = headers.get_all("stripe-signature").iter();
    let header = match (signatures.next(), signatures.next()) {
        (Some(v), None) => Some(v.to_str().unwrap_or("").to_owned()),
        (None, _) => None,
        (Some(_), Some(_)) => return Err(rejected(signature::SignatureError::Malformed("more than one Stripe-Signature header"))),
    };
    let len = bytes.len();
    let settings = state.settings.clone();
    let check = move || -> Checked {
        let now = chrono::Utc::now().timestamp();
        let verified = signature::verify(header.as_deref(), &bytes, &settings.stripe_webhook_secrets, now, settings.webhook_tolerance_secs)
            .map_err(rejected)?;
        parse_event(&bytes, verified.timestamp)
    };
    // Hashing and parsing a large body would hold a runtime thread: it runs on the blocking
    // pool instead (typical events are a few KiB and are cheaper to check inline).
    let (event, raw) = if crate::cpu::worth_offloading(len) {
        crate::cpu::offload(check).await.map_err(|e| {
            tracing::error!(message = "Webhook check did not run.", error = %e);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the event could not be checked now; retry later")
        })??
    } else {
        check()?
    };

    if let Some(version) = event.api_version.as_deref().filter(|v| *v != state.settings.stripe_api_version) {
        // Stored and applied where the shape allows; the endpoint should be set to the pinned
        // version so that every object arrives in the shape the handlers read.
        state.metrics.other_api_version(version);
        if let Some(left_out) = OTHER_VERSION_LOG.admit(chrono::Utc::now().timestamp_millis()) {
            tracing::warn!(message = "Webhook event in another Stripe API version; set the endpoint's version to the pinned one.",
                api_version = version, pinned = %state.settings.stripe_api_version, event_id = %event.id, others_since_last_line = left_out);
        }
    }
    // Stored with the events of concurrent requests in one commit; answered once durable.
    let stored = state.inbox.insert(Row::of(&event, raw)).await.map_err(|e| match e {
        NotStored::Unavailable(e) => {
            tracing::error!(message = "Webhook not stored: PostgreSQL unavailable; Stripe will retry.", event_id = %event.id, error = %e);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "the event could not be stored; retry later")
        }
        // Not an outage: the database refused this event. Stripe retries a 500 too, and
        // the error is logged for the fix.
        NotStored::Refused(e) => {
            tracing::error!(message = "Webhook not stored: PostgreSQL refused it.", event_id = %event.id, error = %e);
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "event_not_stored", "the event could not be stored")
        }
    })?;
    let inserted = stored.inserted;
    if inserted == Inserted::New {
        // The row stays `received` (no second write per event): the scheduler's sweep pushes
        // a row still unprocessed 30 s on again, which the job's idempotency key turns into a
        // no-op while the job waits in Redis, and marks it `queued`.
        // The event's month rides with the job once no member of a release that would refuse
        // it is left (a rolling upgrade from 0.11).
        let created = state.fleet_releases.all_at_least(&inbox::JOBS_CARRY_CREATED_SINCE).then_some(event.created);
        if let Err(e) = inbox::push(&state.queue, &event.id, stored.tenant, created, None).await {
            // Durable already: the scheduler's inbox sweep queues it when Redis is back.
            tracing::warn!(message = "Webhook stored but not queued; the inbox sweep will queue it.", event_id = %event.id, error = %e)
        }
    }
    let body = StripeEventReceipt { received: true, id: event.id.to_string(), duplicate: inserted == Inserted::Duplicate, ignored: inserted == Inserted::Ignored };
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

/// What Stripe is answered for a stored event.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct StripeEventReceipt {
    /// Always true: the event is stored (or was already).
    received: bool,
    /// The event's `evt_…` id.
    id: String,
    /// It had been received before (Stripe retried or re-sent it).
    duplicate: bool,
    /// Its type is not one Ballast handles; it is kept, not processed.
    ignored: bool,
}

/// A refused signature: 400, logged at most once per period whatever the rate of forgeries.
fn rejected(e: signature::SignatureError) -> ApiError {
    if let Some(left_out) = REJECTED_LOG.admit(chrono::Utc::now().timestamp_millis()) {
        tracing::warn!(message = "Webhook rejected.", reason = %e, rejected_since_last_line = left_out);
    }
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", e.to_string())
}

/// The verified body as an event, ready to store.
fn parse_event(bytes: &[u8], signed_at: i64) -> Checked {
    let mut raw: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("body is not JSON: {}", crate::api::errors::json_error_text(&e))))?;
    let event = StripeEvent::from_stripe(&mut raw, signed_at).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_event", e.to_string()))?;
    Ok((event, raw))
}
