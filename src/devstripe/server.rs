//! The simulator's HTTP side: the API endpoints Ballast calls, answered from the simulated
//! state, idempotent per `Idempotency-Key` as Stripe's are, and refused without the pinned
//! `Stripe-Version` (the simulator speaks only that version's shapes).

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use crate::stripe::signature;
use serde_json::{Value, json};

use super::state::{Sim, idempotency_key};
use super::terms::{EXTRA_SEATS, PRO, PRO_EUR, SSO_ADDON, STARTER, STARTER_YEARLY};

/// The API endpoints Ballast calls, behind the version gate.
pub(super) fn router(sim: Arc<Mutex<Sim>>) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/customers", post(create_customer))
        .route("/v1/customers/{id}", get(|s, p| fetch(s, p, "customers")).post(update_customer))
        .route("/v1/subscriptions", get(list_subscriptions))
        .route("/v1/subscriptions/{id}", get(|s, p| fetch(s, p, "subscriptions")).post(super::subscription_update::update).delete(cancel_now))
        .route("/v1/invoices/{id}/pay", post(pay_now))
        .route("/v1/billing/meter_events", post(meter_event))
        .route("/v1/invoices/{id}", get(|s, p| fetch(s, p, "invoices")))
        .route("/v1/charges/{id}", get(|s, p| fetch(s, p, "charges")))
        .route("/v1/prices/{id}", get(price))
        .route("/v1/events", get(list_events))
        .route("/v2/core/accounts/{id}", get(account))
        .layer(axum::middleware::from_fn_with_state(sim.clone(), gate))
        .with_state(sim)
}

/// `GET /v1/subscriptions`: a customer's, oldest first by id, `status` (`all` includes
/// cancelled ones; the default leaves them out, as Stripe does), `limit`, `starting_after`.
async fn list_subscriptions(
    State(sim): State<Arc<Mutex<Sim>>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(10).clamp(1, 100);
    let status = q.get("status").map(String::as_str);
    let matching: Vec<Value> = s
        .subs
        .values()
        .filter(|x| q.get("customer").is_none_or(|c| *c == x.customer))
        .filter(|x| match status {
            Some("all") => true,
            Some(st) => x.status == st,
            None => x.status != "canceled",
        })
        .map(|x| s.sub_json(x))
        .collect();
    let start = match q.get("starting_after") {
        Some(after) => matching.iter().position(|x| x["id"] == after.as_str()).map_or(matching.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<Value> = matching.iter().skip(start).take(limit).cloned().collect();
    let has_more = start + page.len() < matching.len();
    (StatusCode::OK, Json(json!({"object": "list", "url": "/v1/subscriptions", "has_more": has_more, "data": page})))
}

async fn fetch(State(sim): State<Arc<Mutex<Sim>>>, Path(id): Path<String>, collection: &'static str) -> (StatusCode, Json<Value>) {
    let s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let found = match collection {
        "customers" => s.customers.get(&id).cloned(),
        "subscriptions" => s.subs.get(&id).map(|x| s.sub_json(x)),
        "invoices" => s.invoices.get(&id).cloned(),
        _ => s.charges.get(&id).cloned(),
    };
    match found {
        Some(v) => (StatusCode::OK, Json(Sim::rendered(v))),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": format!("No such object: '{id}'")}})),
        ),
    }
}

/// `GET /v2/core/accounts/{id}` (API v2: errors as `{"error": {"type", "code", "message"}}`).
async fn account(State(sim): State<Arc<Mutex<Sim>>>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    let s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match s.account_json(&id) {
        Some(v) => (StatusCode::OK, Json(v)),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": {"type": "invalid_request_error", "code": "not_found", "message": format!("No such account: '{id}'")}}))),
    }
}

/// `GET /v1/events`: newest first, `delivery_success`, `created[gte]`, `limit`, `starting_after`.
async fn list_events(
    State(sim): State<Arc<Mutex<Sim>>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let gte: i64 = q.get("created[gte]").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit: usize = q.get("limit").and_then(|v| v.parse().ok()).unwrap_or(10).clamp(1, 100);
    let only_undelivered = q.get("delivery_success").map(String::as_str) == Some("false");
    let matching: Vec<&Value> = s
        .log
        .iter()
        .rev()
        .filter(|e| e["created"].as_i64().unwrap_or(0) >= gte)
        .filter(|e| !only_undelivered || !s.delivered.contains(e["id"].as_str().unwrap_or("")))
        .collect();
    let start = match q.get("starting_after") {
        Some(after) => matching.iter().position(|e| e["id"] == after.as_str()).map_or(matching.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<Value> = matching.iter().skip(start).take(limit).map(|e| (*e).clone()).collect();
    let has_more = start + page.len() < matching.len();
    (StatusCode::OK, Json(json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": page})))
}

/// A price the simulator sells, in the fixture shape (../shared/stripe `price`).
async fn price(State(sim): State<Arc<Mutex<Sim>>>, Path(id): Path<String>) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    s.price_reads += 1;
    if s.prices_down {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": {"type": "api_error", "message": "simulated outage", "request_log_url": format!("https://dashboard.stripe.com/test/logs/req_sim{}", s.price_reads)}})));
    }
    match [STARTER, PRO, STARTER_YEARLY, PRO_EUR, EXTRA_SEATS, SSO_ADDON].into_iter().find(|p| p.0 == id) {
        Some((price, product, amount)) => (
            StatusCode::OK,
            Json(json!({
                "id": price, "object": "price", "active": true, "billing_scheme": "per_unit", "created": s.clock, "currency": super::terms::terms_of(price).0,
                "livemode": false, "lookup_key": null, "metadata": {}, "nickname": null, "product": product,
                "recurring": {"interval": super::terms::terms_of(price).1, "interval_count": 1, "meter": null, "usage_type": "licensed", "trial_period_days": null},
                "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null, "type": "recurring",
                "unit_amount": amount, "unit_amount_decimal": amount.to_string(),
            })),
        ),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": format!("No such price: '{id}'")}})),
        ),
    }
}

/// Signs `body` as Stripe does, at `timestamp`, with `secret`.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", signature::sign(secret, timestamp, body))
}


/// `POST /v1/invoices/{id}/pay`: pays now, or answers 402 with the card's decline.
async fn pay_now(State(sim): State<Arc<Mutex<Sim>>>, Path(id): Path<String>, headers: axum::http::HeaderMap) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = idempotency_key(&headers);
    if let Some(done) = key.as_ref().and_then(|k| s.idempotent.get(k)) {
        return (done.0, Json(done.1.clone()));
    }
    let Some(inv) = s.invoices.get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such invoice"}})));
    };
    let clock = s.clock;
    s.calls.push(("pay".into(), id.clone(), clock));
    let answer = if inv["status"] == "open" {
        s.pay(&id);
        let inv = s.invoices[&id].clone();
        if inv["status"] == "paid" {
            (StatusCode::OK, inv)
        } else {
            let customer = inv["customer"].as_str().unwrap_or("").to_owned();
            if s.needs_action.contains(&customer) {
                // Paying an invoice whose payment intent needs the customer (3-D Secure):
                // https://docs.stripe.com/error-codes#invoice-payment-intent-requires-action
                // (Stripe also embeds the whole payment intent; async-stripe parses it as a
                // typed PaymentIntent, so a partial one here would not parse: it is left out.)
                (StatusCode::PAYMENT_REQUIRED, json!({"error": {"type": "invalid_request_error", "code": "invoice_payment_intent_requires_action",
                    "message": "This payment requires additional user action before it can be completed successfully."}}))
            } else {
                let code = s.decline_codes.get(&customer).cloned().unwrap_or_else(|| "insufficient_funds".into());
                (StatusCode::PAYMENT_REQUIRED, json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": code, "message": "Your card was declined."}}))
            }
        }
    } else {
        (StatusCode::BAD_REQUEST, json!({"error": {"type": "invalid_request_error", "code": "invoice_not_open", "message": "Invoice is not open"}}))
    };
    if let Some(k) = key {
        s.idempotent.insert(k, answer.clone());
    }
    (answer.0, Json(answer.1))
}

/// `DELETE /v1/subscriptions/{id}`: cancels now.
async fn cancel_now(State(sim): State<Arc<Mutex<Sim>>>, Path(id): Path<String>, headers: axum::http::HeaderMap) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = idempotency_key(&headers);
    if let Some(done) = key.as_ref().and_then(|k| s.idempotent.get(k)) {
        return (done.0, Json(done.1.clone()));
    }
    if !s.subs.contains_key(&id) {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription"}})));
    }
    let clock = s.clock;
    s.calls.push(("cancel".into(), id.clone(), clock));
    s.end_sub(&id, "cancellation_requested");
    s.emit_sub("customer.subscription.deleted", &id);
    let answer = (StatusCode::OK, s.sub_json(&s.subs[&id].clone()));
    if let Some(k) = key {
        s.idempotent.insert(k, answer.clone());
    }
    (answer.0, Json(answer.1))
}

/// `POST /v1/billing/meter_events`: identifier unique (as Stripe enforces over 24 h), answers
/// repeated per idempotency key.
async fn meter_event(
    State(sim): State<Arc<Mutex<Sim>>>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = idempotency_key(&headers);
    if let Some(done) = key.as_ref().and_then(|k| s.idempotent.get(k)) {
        return (done.0, Json(done.1.clone()));
    }
    if s.meter_failures.0 > 0 {
        s.meter_failures.0 -= 1;
        let status = StatusCode::from_u16(s.meter_failures.1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, Json(json!({"error": {"type": "api_error", "code": "simulated", "message": format!("simulated {status}")}})));
    }
    let identifier = form.get("identifier").cloned().unwrap_or_default();
    let customer = form.get("payload[stripe_customer_id]").cloned().unwrap_or_default();
    let value: i64 = form.get("payload[value]").and_then(|v| v.parse().ok()).unwrap_or(0);
    let answer = if s.meter_events.contains_key(&identifier) {
        (StatusCode::BAD_REQUEST, json!({"error": {"type": "invalid_request_error", "code": "duplicate_meter_event",
            "message": format!("An event with identifier {identifier} already exists")}}))
    } else {
        let name = form.get("event_name").cloned().unwrap_or_default();
        s.meter_events.insert(identifier.clone(), (name.clone(), customer.clone(), value));
        (StatusCode::OK, json!({"object": "billing.meter_event", "event_name": name, "identifier": identifier,
            "payload": {"stripe_customer_id": customer, "value": value.to_string()}, "livemode": false, "created": s.clock,
            "timestamp": form.get("timestamp").and_then(|t| t.parse::<i64>().ok()).unwrap_or(s.clock)}))
    };
    if let Some(k) = key {
        s.idempotent.insert(k, answer.clone());
    }
    (answer.0, Json(answer.1))
}

/// Refuses a request without the pinned `Stripe-Version` (the simulator answers only in
/// that version's shapes), delays every API request by the simulator's latency, and drops
/// every n-th unanswered.
async fn gate(State(sim): State<Arc<Mutex<Sim>>>, request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let version = request.headers().get("stripe-version").and_then(|v| v.to_str().ok()).unwrap_or("(none)").to_owned();
    let (latency, hang) = {
        let mut s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.requests += 1;
        if version != crate::stripe_api::StripeApi::api_version() {
            s.wrong_versions.push(version.clone());
            let error = json!({"error": {"type": "invalid_request_error", "message": format!("Invalid Stripe API version: {version}")}});
            return axum::response::IntoResponse::into_response((StatusCode::BAD_REQUEST, Json(error)));
        }
        (s.latency, s.hang_every > 0 && s.requests % s.hang_every == 0)
    };
    if hang {
        // Longer than any client waits; the client gives up and the request never runs.
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    next.run(request).await
}

/// `POST /v1/customers` (create) and `POST /v1/customers/{id}` (update): name, email and
/// metadata from the form, idempotent per key, each emitting its event as Stripe does.
async fn create_customer(
    State(sim): State<Arc<Mutex<Sim>>>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    save_customer(&sim, None, &headers, &form)
}

async fn update_customer(
    State(sim): State<Arc<Mutex<Sim>>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    axum::extract::Form(form): axum::extract::Form<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    save_customer(&sim, Some(id), &headers, &form)
}

fn save_customer(sim: &Mutex<Sim>, id: Option<String>, headers: &axum::http::HeaderMap, form: &std::collections::HashMap<String, String>) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = idempotency_key(headers);
    if let Some(done) = key.as_ref().and_then(|k| s.idempotent.get(k)) {
        return (done.0, Json(done.1.clone()));
    }
    let (id, mut customer, event) = match id {
        Some(id) => match s.customers.get(&id) {
            Some(c) if c["deleted"] != true => (id, c.clone(), "customer.updated"),
            _ => {
                let error = json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": format!("No such customer: '{id}'")}});
                return (StatusCode::NOT_FOUND, Json(error));
            }
        },
        None => {
            let id = s.id("cus");
            let customer = json!({"id": id, "object": "customer", "email": null, "name": null, "metadata": {}, "created": s.clock,
                "livemode": false, "delinquent": false, "balance": 0, "invoice_settings": {"default_payment_method": null}});
            (id, customer, "customer.created")
        }
    };
    if let Some(name) = form.get("name") {
        customer["name"] = json!(name);
    }
    if let Some(email) = form.get("email") {
        customer["email"] = json!(email);
    }
    for (field, value) in form {
        if let Some(k) = field.strip_prefix("metadata[").and_then(|k| k.strip_suffix(']')) {
            customer["metadata"][k] = json!(value);
        }
    }
    let clock = s.clock;
    s.calls.push((if event == "customer.created" { "create_customer" } else { "update_customer" }.into(), id.clone(), clock));
    s.customers.insert(id.clone(), customer.clone());
    s.emit(event, customer.clone());
    let answer = (StatusCode::OK, customer);
    if let Some(k) = key {
        s.idempotent.insert(k, answer.clone());
    }
    (answer.0, Json(answer.1))
}
