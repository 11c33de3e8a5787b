//! Calls to the Stripe API through async-stripe: its client (auth, API version, base URL,
//! retries on 429/5xx) and its request types. Responses are read as JSON and parsed with the
//! same lenient views as webhook payloads, so a re-fetched object and a delivered one go
//! through one code path and an API-version field change cannot stop the mirror.

use secrecy::ExposeSecret;
use stripe::StripeRequest;
use tracing::Instrument;

mod subscription_change;
pub use subscription_change::{PauseBehavior, ProrationBehavior, SubscriptionChange};

/// A failed Stripe call.
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// No API key is configured (STRIPE_SECRET_KEY).
    #[error("STRIPE_SECRET_KEY is not set: Ballast cannot call the Stripe API")]
    NotConfigured,
    /// The client could not be built.
    #[error("Stripe client: {0}")]
    Config(String),
    /// Stripe answered with an error, or could not be reached.
    #[error("{0}")]
    Call(String),
    /// The answer was not the JSON expected.
    #[error("Stripe API answer: {0}")]
    Decode(String),
    /// Stripe refused the request (4xx): retrying the same request will not help.
    #[error("Stripe refused ({status}): {code} {message}")]
    Refused {
        /// HTTP status (402 for a declined payment).
        status: u16,
        /// Stripe's error code (`card_declined`, …).
        code: String,
        /// The card's decline code, when a card was declined.
        decline_code: Option<String>,
        /// Stripe's message.
        message: String,
    },
}

impl StripeApiError {
    fn from_call(e: stripe::StripeError) -> Self {
        match e {
            stripe::StripeError::Stripe(err, status) if (400..500).contains(&status) && status != 429 => StripeApiError::Refused {
                status,
                code: err.code.as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default(),
                decline_code: err.decline_code.clone(),
                message: err.message.clone().unwrap_or_default(),
            },
            other => StripeApiError::Call(describe(&other)),
        }
    }
}

/// A failed call in one sentence for people: Stripe's own message, code and request id, never
/// async-stripe's debug dump of the error object, and a cause said once.
pub fn describe(e: &stripe::StripeError) -> String {
    match e {
        stripe::StripeError::Stripe(err, status) => {
            let message = err.message.as_deref().unwrap_or("no message");
            let mut detail = Vec::new();
            if let Some(code) = &err.code {
                detail.push(format!("code {}", code.as_str()));
            }
            if let Some(request) = err.request_log_url.as_deref().and_then(request_id) {
                detail.push(format!("request {request}"));
            }
            let detail = if detail.is_empty() { String::new() } else { format!(" ({})", detail.join(", ")) };
            format!("Stripe answered {status}: {message}{detail}")
        }
        stripe::StripeError::ClientError(cause) => format!("could not reach Stripe: {}", said_once(cause)),
        stripe::StripeError::Timeout => "Stripe did not answer in time".into(),
        stripe::StripeError::JSONDeserialize(cause) => format!("Stripe's answer did not parse: {}", said_once(cause)),
        stripe::StripeError::ConfigError(cause) => format!("the Stripe client is misconfigured: {}", said_once(cause)),
    }
}

/// The `req_…` id in a Stripe request log URL.
fn request_id(url: &str) -> Option<&str> {
    let start = url.find("req_")?;
    let id = &url[start..];
    Some(id.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or(id))
}

/// A cause chain ("a: b: a: b") with each part said once, without the client's own prefix.
fn said_once(chain: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in chain.split(": ").map(str::trim).filter(|p| !p.is_empty() && *p != "error communicating with stripe") {
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

/// A client span per Stripe API call: method and path (object ids, never the key or body).
fn api_span(request: &stripe_client_core::RequestBuilder) -> tracing::Span {
    let method = format!("{:?}", request.method).to_uppercase();
    let path = format!("/v1{}", request.path);
    tracing::info_span!(
        "stripe api",
        otel.name = %format!("{method} {path}"),
        otel.kind = "client",
        http.request.method = %method,
        url.path = %path,
        server.address = "api.stripe.com",
    )
}

/// async-stripe answers in miniserde; the rest of Ballast reads serde_json.
fn to_json(raw: &miniserde::json::Value) -> Result<serde_json::Value, StripeApiError> {
    serde_json::from_str(&miniserde::json::to_string(raw)).map_err(|e| StripeApiError::Decode(e.to_string()))
}

/// Objects Ballast re-fetches when a webhook cannot tell which state is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// `cus_…`
    Customer,
    /// `sub_…`
    Subscription,
    /// `in_…`
    Invoice,
    /// `ch_…`
    Charge,
    /// `price_…` (read for the public plan catalogue)
    Price,
    /// `acct_…`: an Account v2 used as a customer (its thin events carry no object).
    Account,
}

/// Reads of API v2 objects (<https://docs.stripe.com/api-v2-overview>): JSON over HTTPS with
/// the secret key as a bearer token and the pinned `Stripe-Version`, as async-stripe's v1
/// calls are made; one try, the caller's job retries.
#[derive(Clone)]
struct V2Reader {
    http: reqwest::Client,
    base: String,
    key: secrecy::SecretString,
}

impl V2Reader {
    async fn get(&self, path_and_query: &str) -> Result<serde_json::Value, StripeApiError> {
        let url = format!("{}{path_and_query}", self.base);
        let answer = self
            .http
            .get(&url)
            .bearer_auth(self.key.expose_secret())
            .header("Stripe-Version", StripeApi::api_version())
            .send()
            .instrument(tracing::info_span!("stripe api", otel.name = %format!("GET {}", path_and_query.split('?').next().unwrap_or_default()), otel.kind = "client"))
            .await
            .map_err(|e| StripeApiError::Call(format!("GET {path_and_query}: {e}")))?;
        let status = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.map_err(|e| StripeApiError::Decode(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let error = &body["error"];
        let text = |k: &str| error[k].as_str().unwrap_or_default().to_owned();
        if (400..500).contains(&status) && status != 429 {
            return Err(StripeApiError::Refused { status, code: text("code"), decline_code: None, message: text("message") });
        }
        Err(StripeApiError::Call(format!("GET {path_and_query}: {status} {}", text("message"))))
    }
}

/// A customer to create for a tenant.
#[derive(Debug, Clone, Copy)]
pub struct NewCustomer<'a> {
    /// The tenant, written into the customer's metadata.
    pub tenant_id: uuid::Uuid,
    /// The customer's name (the tenant's).
    pub name: &'a str,
    /// Where Stripe sends receipts and invoices.
    pub email: Option<&'a str>,
}

/// Where Stripe calls' outcomes are counted: per minute in Redis for the whole fleet (the
/// Stripe API alert reads it) and in this process's `/metrics`.
#[derive(Clone)]
pub struct CallTally {
    /// The fleet's per-minute hashes.
    pub redis: crate::redis_conn::RedisConn,
    /// Their keys.
    pub keys: crate::redis_keys::RedisKeys,
    /// `ballast_stripe_api_calls_total{outcome}`.
    pub counter: prometheus::IntCounterVec,
}

impl CallTally {
    /// Counts one call. Diagnostics: Redis down loses the count, never the call.
    async fn record<V>(&self, result: &Result<V, StripeApiError>) {
        let outcome = match result {
            Ok(_) => "answered",
            // A wrong or revoked key, or a key without the permission: every call will fail.
            Err(StripeApiError::Refused { status: 401 | 403, .. }) => "failed",
            // A decline or an invalid request is Stripe answering.
            Err(StripeApiError::Refused { .. }) => "answered",
            Err(StripeApiError::Call(_) | StripeApiError::Decode(_)) => "failed",
            Err(StripeApiError::NotConfigured | StripeApiError::Config(_)) => return,
        };
        self.counter.with_label_values(&[outcome]).inc();
        let key = self.keys.stripe_api_calls(chrono::Utc::now().timestamp().div_euclid(60));
        let ttl = i64::try_from(crate::redis_keys::RedisKeys::STRIPE_CALLS_TTL.as_secs()).unwrap_or(i64::MAX);
        let mut pipe = redis::pipe();
        pipe.hincr(&key, outcome, 1).ignore().expire(&key, ttl).ignore();
        let mut conn = self.redis.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::debug!(error = %e, "Stripe call not counted in Redis");
        }
    }
}

/// The fleet's Stripe calls in the last `minutes` unix minutes up to `now_minute` (inclusive):
/// (answered, failed).
pub async fn calls_in_window(redis: &crate::redis_conn::RedisConn, keys: &crate::redis_keys::RedisKeys, now_minute: i64, minutes: u32) -> Result<(u64, u64), redis::RedisError> {
    let mut pipe = redis::pipe();
    for m in (now_minute - i64::from(minutes) + 1)..=now_minute {
        pipe.hgetall(keys.stripe_api_calls(m));
    }
    let mut conn = redis.clone();
    let minutes: Vec<std::collections::HashMap<String, u64>> = pipe.query_async(&mut conn).await?;
    Ok(minutes.iter().fold((0, 0), |(a, f), m| (a + m.get("answered").copied().unwrap_or(0), f + m.get("failed").copied().unwrap_or(0))))
}

/// A Stripe API client, or the reason there is none.
#[derive(Clone)]
pub struct StripeApi {
    client: Option<stripe::Client>,
    /// API v2 reads, which async-stripe does not speak.
    v2: Option<V2Reader>,
    /// One call's limit, its retries included.
    timeout: std::time::Duration,
    /// Where outcomes are counted; none in tools that only read.
    tally: Option<CallTally>,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi").field("configured", &self.client.is_some()).finish()
    }
}

impl StripeApi {
    /// The API version every call is made in (the client pins it; `Stripe-Version` header).
    pub fn api_version() -> &'static str {
        stripe_client_core::VERSION.as_str()
    }

    /// Refuses a configured version other than the one the client speaks: objects would come
    /// back in shapes the handlers were not written for.
    pub fn check_version(configured: &str) -> Result<(), StripeApiError> {
        if configured == Self::api_version() {
            return Ok(());
        }
        Err(StripeApiError::Config(format!(
            "BALLAST_STRIPE_API_VERSION: {configured:?} is not the version this build speaks ({}); set the webhook endpoint to that version",
            Self::api_version()
        )))
    }

    /// A client for `base_url` (Stripe's, or the simulator's in tests) with `secret_key`.
    pub fn new(secret_key: Option<&secrecy::SecretString>, base_url: &str, timeout: std::time::Duration) -> Result<Self, StripeApiError> {
        let Some(key) = secret_key else { return Ok(Self { client: None, v2: None, timeout, tally: None }) };
        let client = stripe::ClientBuilder::new(key.expose_secret())
            .url(base_url)
            .request_strategy(stripe::RequestStrategy::ExponentialBackoff(3))
            .build()
            .map_err(|e| StripeApiError::Config(e.to_string()))?;
        // reqwest is built without a default TLS provider; the binary installs ring at start,
        // and so does this, for a library user that did not.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| StripeApiError::Config(e.to_string()))?;
        let v2 = V2Reader { http, base: base_url.trim_end_matches('/').to_owned(), key: key.clone() };
        Ok(Self { client: Some(client), v2: Some(v2), timeout, tally: None })
    }

    /// This client, counting every call's outcome in `tally`.
    pub fn with_tally(mut self, tally: CallTally) -> Self {
        self.tally = Some(tally);
        self
    }

    /// Attempts payment of an open invoice now. `idempotency_key` makes a repeated call (a job
    /// retried after a crash) the same call at Stripe.
    pub async fn pay_invoice(&self, id: &str, idempotency_key: &str) -> Result<serde_json::Value, StripeApiError> {
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        self.send(client, &stripe_billing::invoice::PayInvoice::new(id), idempotency_key).await
    }

    /// Reports usage as a billing meter event. `identifier` (also the idempotency key) makes a
    /// repeated report the same event at Stripe.
    pub async fn meter_event(
        &self,
        event_name: &str,
        customer: &str,
        value: i64,
        timestamp: i64,
        identifier: &str,
    ) -> Result<serde_json::Value, StripeApiError> {
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        let payload = std::collections::HashMap::from([
            ("stripe_customer_id".to_owned(), customer.to_owned()),
            ("value".to_owned(), value.to_string()),
        ]);
        let request = stripe_billing::billing_meter_event::CreateBillingMeterEvent::new(event_name, payload)
            .identifier(identifier)
            .timestamp(timestamp);
        self.send(client, &request, identifier).await
    }

    /// Cancels a subscription now.
    /// Creates the customer of a new tenant: `tenant_id` in its metadata (so its events name
    /// the tenant), `idempotency_key` derived from the tenant's external id (so a repeated
    /// provisioning gets the same customer back within Stripe's 24 h key lifetime).
    pub async fn create_customer(&self, customer: &NewCustomer<'_>, idempotency_key: &str) -> Result<serde_json::Value, StripeApiError> {
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        let metadata = std::collections::HashMap::from([("tenant_id".to_owned(), customer.tenant_id.to_string())]);
        let mut request = stripe_core::customer::CreateCustomer::new().name(customer.name).metadata(metadata);
        if let Some(email) = customer.email {
            request = request.email(email);
        }
        self.send(client, &request, idempotency_key).await
    }

    /// Changes a customer's name and billing email (what the tenant's own record changed).
    pub async fn update_customer(&self, id: &str, name: &str, email: Option<&str>, idempotency_key: &str) -> Result<serde_json::Value, StripeApiError> {
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        let mut request = stripe_core::customer::UpdateCustomer::new(id).name(name);
        if let Some(email) = email {
            request = request.email(email);
        }
        self.send(client, &request, idempotency_key).await
    }

    pub async fn cancel_subscription(&self, id: &str, idempotency_key: &str) -> Result<serde_json::Value, StripeApiError> {
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        self.send(client, &stripe_billing::subscription::CancelSubscription::new(id), idempotency_key).await
    }

    /// Changes one subscription (a bulk operation's step). `idempotency_key` makes a repeat
    /// after a crash the same call at Stripe: it answers the first call's result again.
    pub async fn update_subscription(&self, id: &str, change: &SubscriptionChange, idempotency_key: &str) -> Result<serde_json::Value, StripeApiError> {
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        self.send_built(client, change.request(id), idempotency_key).await
    }

    async fn send(
        &self,
        client: &stripe::Client,
        request: &impl StripeRequest,
        idempotency_key: &str,
    ) -> Result<serde_json::Value, StripeApiError> {
        self.send_built(client, request.build(), idempotency_key).await
    }

    async fn send_built(
        &self,
        client: &stripe::Client,
        built: stripe_client_core::RequestBuilder,
        idempotency_key: &str,
    ) -> Result<serde_json::Value, StripeApiError> {
        let key = stripe::IdempotencyKey::new(idempotency_key).map_err(|e| StripeApiError::Config(e.to_string()))?;
        let span = api_span(&built);
        let call = built.customize().request_strategy(stripe::RequestStrategy::Idempotent(key)).send(client).instrument(span);
        let raw: miniserde::json::Value = self.limited(async { call.await.map_err(StripeApiError::from_call) }).await?;
        to_json(&raw)
    }

    /// Runs one call within the configured limit (past it the call is a transient failure),
    /// and counts its outcome.
    async fn limited<T>(&self, call: impl std::future::Future<Output = Result<T, StripeApiError>>) -> Result<T, StripeApiError> {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(StripeApiError::Call(format!("no answer from Stripe within {} s", self.timeout.as_secs()))),
        };
        if let Some(t) = &self.tally {
            t.record(&result).await;
        }
        result
    }

    /// The object's current state at Stripe, as JSON.
    pub async fn retrieve(&self, kind: ObjectKind, id: &str) -> Result<serde_json::Value, StripeApiError> {
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        if kind == ObjectKind::Account {
            let v2 = self.v2.as_ref().ok_or(StripeApiError::NotConfigured)?;
            // The customer configuration and the identity are left out unless asked for.
            return self.limited(v2.get(&format!("/v2/core/accounts/{id}?include=configuration.customer&include=identity"))).await;
        }
        let request = match kind {
            ObjectKind::Customer => stripe_core::customer::RetrieveCustomer::new(id).build(),
            ObjectKind::Subscription => stripe_billing::subscription::RetrieveSubscription::new(id).build(),
            ObjectKind::Invoice => stripe_billing::invoice::RetrieveInvoice::new(id).build(),
            ObjectKind::Charge => stripe_core::charge::RetrieveCharge::new(id).build(),
            ObjectKind::Price => stripe_client_core::RequestBuilder::new(stripe_client_core::StripeMethod::Get, format!("/prices/{id}")),
            ObjectKind::Account => return Err(StripeApiError::Config("an account is read through API v2".into())),
        };
        // A price is read for a cache whose readers serve the last answer on failure: one try.
        let strategy = if kind == ObjectKind::Price { stripe::RequestStrategy::Once } else { stripe::RequestStrategy::ExponentialBackoff(3) };
        let span = api_span(&request);
        let call = request.customize().request_strategy(strategy).send(client).instrument(span);
        let raw: miniserde::json::Value = self.limited(async { call.await.map_err(StripeApiError::from_call) }).await?;
        to_json(&raw)
    }

    /// Events Stripe failed to deliver (`delivery_success=false`) created since `since`, oldest
    /// first, every page. Stripe keeps events 30 days; the caller bounds `since`.
    pub async fn undelivered_events(&self, since: i64) -> Result<Vec<serde_json::Value>, StripeApiError> {
        #[derive(serde::Serialize)]
        struct Created {
            gte: i64,
        }
        #[derive(serde::Serialize)]
        struct Params {
            delivery_success: bool,
            created: Created,
            limit: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            starting_after: Option<String>,
        }
        let mut out = self
            .every_page("/events", |after| Params { delivery_success: false, created: Created { gte: since }, limit: 100, starting_after: after.map(str::to_owned) })
            .await?;
        // Stripe lists newest first; replay in the order things happened.
        out.reverse();
        Ok(out)
    }

    /// Every subscription of `customer`, cancelled ones included (`status=all`), every page.
    pub async fn customer_subscriptions(&self, customer: &str) -> Result<Vec<serde_json::Value>, StripeApiError> {
        #[derive(serde::Serialize)]
        struct Params<'a> {
            customer: &'a str,
            status: &'static str,
            limit: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            starting_after: Option<String>,
        }
        self.every_page("/subscriptions", |after| Params { customer, status: "all", limit: 100, starting_after: after.map(str::to_owned) }).await
    }

    /// Every page of a list endpoint, following `starting_after` while Stripe says `has_more`;
    /// `params` builds a page's query from the last id of the page before.
    async fn every_page<P: serde::Serialize>(&self, path: &str, params: impl Fn(Option<&str>) -> P) -> Result<Vec<serde_json::Value>, StripeApiError> {
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        let mut out: Vec<serde_json::Value> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let request = stripe_client_core::RequestBuilder::new(stripe_client_core::StripeMethod::Get, path).query(&params(after.as_deref()));
            let span = api_span(&request);
            let call = request.customize().send(client).instrument(span);
            let raw: miniserde::json::Value = self.limited(async { call.await.map_err(StripeApiError::from_call) }).await?;
            let page = to_json(&raw)?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            after = data.last().and_then(|o| o["id"].as_str()).map(str::to_owned);
            out.extend(data);
            if page["has_more"] != true || after.is_none() {
                return Ok(out);
            }
        }
    }

    /// One cheap authenticated read (the newest event): is the API reachable with our key?
    pub async fn ping(&self) -> Result<(), StripeApiError> {
        #[derive(serde::Serialize)]
        struct Params {
            limit: u32,
        }
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        let request = stripe_client_core::RequestBuilder::new(stripe_client_core::StripeMethod::Get, "/events").query(&Params { limit: 1 });
        let span = api_span(&request);
        let call = request.customize().request_strategy(stripe::RequestStrategy::Once).send(client).instrument(span);
        let _: miniserde::json::Value = self.limited(async { call.await.map_err(StripeApiError::from_call) }).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripe_error_reads_as_stripes_message_code_and_request_never_a_debug_dump() {
        let body = r#"{"type": "api_error", "message": "simulated outage", "code": "rate_limit", "request_log_url": "https://dashboard.stripe.com/test/logs/req_abc123?t=1"}"#;
        let err = miniserde::json::from_str(body).expect("Stripe's error shape");
        let text = describe(&stripe::StripeError::Stripe(Box::new(err), 500));
        assert_eq!(text, "Stripe answered 500: simulated outage (code rate_limit, request req_abc123)");
        let doubled = stripe::StripeError::ClientError("error communicating with stripe: connection refused: error communicating with stripe: connection refused".into());
        assert_eq!(describe(&doubled), "could not reach Stripe: connection refused");
        for shown in [text, describe(&doubled), describe(&stripe::StripeError::Timeout)] {
            assert!(!shown.contains("{ ") && !shown.contains("None") && !shown.contains("Some("), "{shown}");
        }
    }
}
