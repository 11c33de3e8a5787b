//! `POST /v1/subscriptions/{id}` as Stripe answers it, for what Ballast's bulk operations send:
//! an item's price changed (`items[0][id]`, `items[0][price]`, `proration_behavior`),
//! `pause_collection[behavior]` set or `pause_collection=` unset, `cancel_at_period_end`.
//! Idempotent per key; one `customer.subscription.updated` per change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::state::Sim;
use super::terms::{PRO, PRO_EUR, Proration, STARTER, STARTER_YEARLY};

fn invalid(status: StatusCode, code: &str, message: String) -> (StatusCode, Value) {
    (status, json!({"error": {"type": "invalid_request_error", "code": code, "message": message}}))
}

/// What the form asks, checked before anything changes (Stripe applies all or nothing).
struct Asked {
    price: Option<((&'static str, &'static str, i64), Proration)>,
    pause: Option<Option<&'static str>>,
    cancel_at_period_end: Option<bool>,
}

fn read_form(sim: &Sim, id: &str, form: &HashMap<String, String>) -> Result<Asked, (StatusCode, Value)> {
    let sub = sim.subs.get(id).ok_or_else(|| invalid(StatusCode::NOT_FOUND, "resource_missing", format!("No such subscription: '{id}'")))?;
    if sub.status == "canceled" {
        return Err(invalid(StatusCode::BAD_REQUEST, "resource_invalid", "A canceled subscription can only update its cancellation_details and metadata.".into()));
    }
    let price = match form.get("items[0][price]") {
        None => None,
        Some(asked) => {
            let item = form.get("items[0][id]").map(String::as_str).unwrap_or_default();
            if item != format!("si_{id}") {
                return Err(invalid(StatusCode::BAD_REQUEST, "resource_missing", format!("No such subscription item: '{item}'")));
            }
            let price = [STARTER, PRO, STARTER_YEARLY, PRO_EUR].into_iter().find(|p| p.0 == asked);
            let price = price.ok_or_else(|| invalid(StatusCode::BAD_REQUEST, "resource_missing", format!("No such price: '{asked}'")))?;
            let proration = match form.get("proration_behavior").map(String::as_str) {
                None | Some("create_prorations") => Proration::CreateProrations,
                Some("none") => Proration::None,
                Some("always_invoice") => Proration::AlwaysInvoice,
                Some(other) => return Err(invalid(StatusCode::BAD_REQUEST, "parameter_invalid_string", format!("Invalid proration_behavior: {other}"))),
            };
            Some((price, proration))
        }
    };
    let pause = match (form.get("pause_collection[behavior]").map(String::as_str), form.get("pause_collection").map(String::as_str)) {
        (Some("keep_as_draft"), _) => Some(Some("keep_as_draft")),
        (Some("mark_uncollectible"), _) => Some(Some("mark_uncollectible")),
        (Some("void"), _) => Some(Some("void")),
        (Some(other), _) => return Err(invalid(StatusCode::BAD_REQUEST, "parameter_invalid_string", format!("Invalid pause_collection[behavior]: {other}"))),
        (None, Some("")) => Some(None),
        (None, _) => None,
    };
    let cancel_at_period_end = match form.get("cancel_at_period_end").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => return Err(invalid(StatusCode::BAD_REQUEST, "parameter_invalid_boolean", format!("Invalid boolean: {other}"))),
    };
    Ok(Asked { price, pause, cancel_at_period_end })
}

/// The handler.
pub(super) async fn update(
    State(sim): State<Arc<Mutex<Sim>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = super::state::idempotency_key(&headers);
    if let Some(done) = key.as_ref().and_then(|k| s.idempotent.get(k)) {
        return (done.0, Json(done.1.clone()));
    }
    let answer = match read_form(&s, &id, &form) {
        Err(refused) => refused,
        Ok(asked) => {
            let clock = s.clock;
            s.calls.push(("update_subscription".into(), id.clone(), clock));
            if let Some(x) = s.subs.get_mut(&id) {
                if let Some(pause) = asked.pause {
                    x.pause_collection = pause;
                }
                if let Some(on) = asked.cancel_at_period_end {
                    x.cancel_at_period_end = on;
                }
            }
            match asked.price {
                Some((price, proration)) => {
                    s.reprice(&id, price, proration);
                }
                None => s.emit_sub("customer.subscription.updated", &id),
            }
            let sub = s.subs[&id].clone();
            (StatusCode::OK, s.sub_json(&sub))
        }
    };
    if let Some(k) = key {
        s.idempotent.insert(k, answer.clone());
    }
    (answer.0, Json(answer.1))
}
