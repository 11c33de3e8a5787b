//! The simulator as a local Stripe beside a development fleet (`ballast dev stripe serve`):
//! it serves the API Ballast calls, delivers every event it emits to the fleet's webhook URL
//! signed with the fleet's secret — in order, retried with backoff until the fleet answers
//! 2xx, as Stripe retries — and takes a few commands of its own under `/_dev/` (the
//! Dashboard's part: a checkout, a saved card, a declining card, the test clock).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use backon::{ExponentialBuilder, Retryable};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::handle::StripeSim;
use super::server::signature_header;
use super::terms::{PRO, STARTER};

/// Why the local Stripe could not run.
#[derive(Debug, thiserror::Error)]
pub enum DevStripeError {
    /// The listen address is taken or not ours.
    #[error("listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The HTTP client for deliveries could not be built.
    #[error("webhook client: {0}")]
    Client(String),
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] super::snapshot::SnapshotError),
}

/// Where the local Stripe listens and delivers.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The API's address (point `STRIPE_API_BASE` at it).
    pub listen: SocketAddr,
    /// The fleet's webhook route.
    pub webhook_url: String,
    /// The fleet's `STRIPE_WEBHOOK_SECRET`, which the deliveries are signed with.
    pub webhook_secret: SecretString,
    /// Where the state is kept across restarts (read at start, written after each change);
    /// none: forgotten when it stops.
    pub state_file: Option<std::path::PathBuf>,
}

fn refused(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"type": "invalid_request_error", "message": message.into()}}))).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkout {
    customer: String,
    #[serde(default)]
    price: Option<String>,
    #[serde(default)]
    trial_days: Option<i64>,
}

/// `POST /_dev/checkout`: the customer completes a Checkout session for a subscription.
async fn checkout(State(sim): State<StripeSim>, body: Result<Json<Checkout>, axum::extract::rejection::JsonRejection>) -> Response {
    let Ok(Json(c)) = body else { return refused(StatusCode::BAD_REQUEST, "send {\"customer\": \"cus_…\", \"price\"?: …, \"trial_days\"?: n}") };
    let price = match c.price.as_deref() {
        None => STARTER,
        Some(p) => match [STARTER, PRO].into_iter().find(|x| x.0 == p) {
            Some(x) => x,
            None => return refused(StatusCode::BAD_REQUEST, format!("no price {p:?}: {} or {}", STARTER.0, PRO.0)),
        },
    };
    if c.trial_days.is_some_and(|d| !(1..=730).contains(&d)) {
        return refused(StatusCode::BAD_REQUEST, "trial_days: 1 to 730 (Stripe's limit)");
    }
    let Some(tenant) = sim.tenant_of(&c.customer) else {
        return refused(StatusCode::NOT_FOUND, format!("no customer {:?} with metadata.tenant_id (create it through POST /v1/tenants)", c.customer));
    };
    let from = sim.event_log_len();
    let subscription = sim.checkout(tenant, &c.customer, price, c.trial_days);
    Json(json!({"subscription": subscription, "events": sim.event_ids_since(from)})).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    #[serde(default)]
    days: i64,
    #[serde(default)]
    hours: i64,
}

/// `POST /_dev/advance`: moves the test clock, performing what falls due on the way.
async fn advance(State(sim): State<StripeSim>, body: Result<Json<Advance>, axum::extract::rejection::JsonRejection>) -> Response {
    let Ok(Json(a)) = body else { return refused(StatusCode::BAD_REQUEST, "send {\"days\"?: n, \"hours\"?: n}") };
    if !(0..=400).contains(&a.days) || !(0..=24 * 400).contains(&a.hours) || a.days + a.hours == 0 {
        return refused(StatusCode::BAD_REQUEST, "days 0 to 400, hours 0 to 9600, not both 0");
    }
    let from = sim.event_log_len();
    sim.advance_days(a.days);
    sim.advance_hours(a.hours);
    Json(json!({"now": sim.now(), "events": sim.event_ids_since(from)})).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CardChange {
    customer: String,
    /// Declines every payment from now on (`true`), or pays again (`false`); absent: save a
    /// working card as the customer's default.
    #[serde(default)]
    declining: Option<bool>,
}

/// `POST /_dev/card`: the customer saves a card, or their card starts (or stops) declining.
async fn card(State(sim): State<StripeSim>, body: Result<Json<CardChange>, axum::extract::rejection::JsonRejection>) -> Response {
    let Ok(Json(c)) = body else { return refused(StatusCode::BAD_REQUEST, "send {\"customer\": \"cus_…\", \"declining\"?: bool}") };
    if sim.tenant_of(&c.customer).is_none() {
        return refused(StatusCode::NOT_FOUND, format!("no customer {:?}", c.customer));
    }
    let from = sim.event_log_len();
    match c.declining {
        Some(d) => sim.set_declining(&c.customer, d),
        None => sim.card_on_customer(&c.customer),
    }
    Json(json!({"customer": c.customer, "events": sim.event_ids_since(from)})).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Undelivered {
    ids: Vec<String>,
}

/// `POST /_dev/undelivered`: which of these events the fleet has not accepted yet.
async fn undelivered(State(sim): State<StripeSim>, body: Result<Json<Undelivered>, axum::extract::rejection::JsonRejection>) -> Response {
    let Ok(Json(u)) = body else { return refused(StatusCode::BAD_REQUEST, "send {\"ids\": [\"evt_…\"]}") };
    Json(json!({"undelivered": sim.undelivered(&u.ids)})).into_response()
}

/// `POST /_dev/meter-events`: the billing meter events the local Stripe accepted (what the
/// usage flush reported), optionally one customer's: `{"customer": "cus_…"}` or `{}`.
async fn meter_events(State(sim): State<StripeSim>, body: Result<Json<Value>, axum::extract::rejection::JsonRejection>) -> Response {
    let customer = body.ok().and_then(|Json(b)| b["customer"].as_str().map(str::to_owned));
    let events: Vec<Value> = sim
        .meter_events()
        .into_iter()
        .filter(|(_, (_, c, _))| customer.as_ref().is_none_or(|want| want == c))
        .map(|(identifier, (event_name, customer, value))| json!({"identifier": identifier, "event_name": event_name, "customer": customer, "value": value}))
        .collect();
    Json(json!({"meter_events": events})).into_response()
}

/// `GET /_dev/clock`: the test clock.
async fn clock(State(sim): State<StripeSim>) -> Json<Value> {
    Json(json!({"now": sim.now()}))
}

/// Writes the state file when the state moved since the last write.
fn save_if_changed(sim: &StripeSim, opts: &DevOptions, saved: &mut Option<(u64, i64, usize, usize, usize)>) -> Result<(), DevStripeError> {
    let Some(path) = &opts.state_file else { return Ok(()) };
    let (version, snapshot) = sim.with(|s| (s.version(), (Some(s.version()) != *saved).then(|| s.snapshot())));
    if let Some(snapshot) = snapshot {
        super::snapshot::save(path, &snapshot)?;
        *saved = Some(version);
    }
    Ok(())
}

/// Delivers one event until the fleet answers 2xx (backing off up to a minute between tries).
async fn deliver(http: &reqwest::Client, opts: &DevOptions, event: &Value) {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let post = || async {
        let signature = signature_header(opts.webhook_secret.expose_secret(), chrono::Utc::now().timestamp(), &body);
        let resp = http.post(&opts.webhook_url).header("stripe-signature", signature).header("content-type", "application/json").body(body.clone()).send().await;
        match resp {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{}", r.status())),
            Err(e) => Err(e.without_url().to_string()),
        }
    };
    let backoff = ExponentialBuilder::default().with_min_delay(Duration::from_millis(200)).with_max_delay(Duration::from_secs(60)).without_max_times();
    let _ = post
        .retry(backoff)
        .notify(|e, wait| tracing::warn!(message = "Webhook not accepted; retrying.", event = %event["id"], error = %e, retry_in_ms = wait.as_millis() as u64))
        .await;
}

impl StripeSim {
    /// Runs the local Stripe until `shutdown`: the API (and `/_dev/`) on `opts.listen`, and
    /// every event delivered to `opts.webhook_url`.
    pub async fn serve(opts: DevOptions, shutdown: CancellationToken) -> Result<(), DevStripeError> {
        let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|e| DevStripeError::Listen(opts.listen, e))?;
        let addr = listener.local_addr().map_err(|e| DevStripeError::Listen(opts.listen, e))?;
        let sim = StripeSim::unstarted(addr);
        if let Some(path) = &opts.state_file
            && let Some(kept) = super::snapshot::load(path)?
        {
            sim.with(|s| s.restore(kept));
            tracing::info!(message = "Local Stripe state restored.", file = %path.display(), customers = sim.with(|s| s.customers.len()));
        }
        let control = axum::Router::new()
            .route("/_dev/checkout", post(checkout))
            .route("/_dev/advance", post(advance))
            .route("/_dev/card", post(card))
            .route("/_dev/clock", get(clock))
            .route("/_dev/undelivered", post(undelivered))
            .route("/_dev/meter-events", post(meter_events))
            .with_state(sim.clone());
        sim.spawn(listener, control);
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| DevStripeError::Client(e.to_string()))?;
        tracing::info!(message = "Local Stripe listening.", addr = %opts.listen, webhooks = %opts.webhook_url);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut saved = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return save_if_changed(&sim, &opts, &mut saved),
                _ = tick.tick() => {}
            }
            save_if_changed(&sim, &opts, &mut saved)?;
            for event in sim.take_events() {
                tokio::select! {
                    () = shutdown.cancelled() => return save_if_changed(&sim, &opts, &mut saved),
                    () = deliver(&http, &opts, &event) => sim.mark_delivered(std::slice::from_ref(&event)),
                }
                save_if_changed(&sim, &opts, &mut saved)?;
            }
        }
    }
}
