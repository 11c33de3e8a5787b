//! Calls to the Stripe API through async-stripe: its client (auth, API version, base URL,
//! retries on 429/5xx) and its request types. Responses are read as JSON and parsed with the
//! same lenient views as webhook payloads, so a re-fetched object and a delivered one go
//! through one code path and an API-version field change cannot stop the mirror.

use secrecy::ExposeSecret;
use stripe::StripeRequest;

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
    #[error("Stripe API: {0}")]
    Call(String),
    /// The answer was not the JSON expected.
    #[error("Stripe API answer: {0}")]
    Decode(String),
}

/// Objects Ballast re-fetches when a webhook cannot tell which state is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `cus_…`
    Customer,
    /// `sub_…`
    Subscription,
    /// `in_…`
    Invoice,
    /// `ch_…`
    Charge,
}

/// A Stripe API client, or the reason there is none.
#[derive(Clone)]
pub struct StripeApi {
    client: Option<stripe::Client>,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi").field("configured", &self.client.is_some()).finish()
    }
}

impl StripeApi {
    /// A client for `base_url` (Stripe's, or the simulator's in tests) with `secret_key`.
    pub fn new(secret_key: Option<&secrecy::SecretString>, base_url: &str) -> Result<Self, StripeApiError> {
        let Some(key) = secret_key else { return Ok(Self { client: None }) };
        let client = stripe::ClientBuilder::new(key.expose_secret())
            .url(base_url)
            .request_strategy(stripe::RequestStrategy::ExponentialBackoff(3))
            .build()
            .map_err(|e| StripeApiError::Config(e.to_string()))?;
        Ok(Self { client: Some(client) })
    }

    /// The object's current state at Stripe, as JSON.
    pub async fn retrieve(&self, kind: ObjectKind, id: &str) -> Result<serde_json::Value, StripeApiError> {
        let client = self.client.as_ref().ok_or(StripeApiError::NotConfigured)?;
        let request = match kind {
            ObjectKind::Customer => stripe_core::customer::RetrieveCustomer::new(id).build(),
            ObjectKind::Subscription => stripe_billing::subscription::RetrieveSubscription::new(id).build(),
            ObjectKind::Invoice => stripe_billing::invoice::RetrieveInvoice::new(id).build(),
            ObjectKind::Charge => stripe_core::charge::RetrieveCharge::new(id).build(),
        };
        let raw: miniserde::json::Value =
            request.customize().send(client).await.map_err(|e| StripeApiError::Call(e.to_string()))?;
        serde_json::from_str(&miniserde::json::to_string(&raw)).map_err(|e| StripeApiError::Decode(e.to_string()))
    }
}
