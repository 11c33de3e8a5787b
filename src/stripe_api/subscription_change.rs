//! `POST /v1/subscriptions/{id}`: the changes Ballast's bulk operations make to one
//! subscription, form-encoded as Stripe reads them. Hand-built rather than async-stripe's
//! `UpdateSubscription`, whose typed fields cannot send `pause_collection=` (an empty value is
//! how Stripe's API unsets a field: resuming collection).

use stripe_client_core::{RequestBuilder, StripeMethod};

/// `proration_behavior`: what Stripe bills for a price changed mid-period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProrationBehavior {
    /// Stripe's default: proration items wait for the next invoice.
    CreateProrations,
    /// No proration: the new price from the next renewal.
    None,
    /// The prorated difference invoiced now.
    AlwaysInvoice,
}

impl ProrationBehavior {
    /// Stripe's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProrationBehavior::CreateProrations => "create_prorations",
            ProrationBehavior::None => "none",
            ProrationBehavior::AlwaysInvoice => "always_invoice",
        }
    }
}

/// `pause_collection[behavior]`: what happens to invoices while collection is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PauseBehavior {
    /// Invoices stay drafts until collection resumes.
    KeepAsDraft,
    /// Invoices are finalized and marked uncollectible.
    MarkUncollectible,
    /// Invoices are voided.
    Void,
}

impl PauseBehavior {
    /// Stripe's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseBehavior::KeepAsDraft => "keep_as_draft",
            PauseBehavior::MarkUncollectible => "mark_uncollectible",
            PauseBehavior::Void => "void",
        }
    }
}

/// One change to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// The item `item` (`si_…`) to `price`, keeping its `quantity` (Stripe resets it to 1
    /// when a price changes without one).
    MovePrice {
        /// `si_…`
        item: String,
        /// `price_…`
        price: String,
        /// The item's quantity now.
        quantity: i64,
        /// What Stripe bills for the change.
        proration: ProrationBehavior,
    },
    /// Pauses collection.
    PauseCollection(PauseBehavior),
    /// Resumes collection.
    ResumeCollection,
    /// Sets or clears `cancel_at_period_end`.
    CancelAtPeriodEnd(bool),
}

impl SubscriptionChange {
    /// The form fields Stripe reads.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        match self {
            SubscriptionChange::MovePrice { item, price, quantity, proration } => vec![
                ("items[0][id]", item.clone()),
                ("items[0][price]", price.clone()),
                ("items[0][quantity]", quantity.to_string()),
                ("proration_behavior", proration.as_str().to_owned()),
            ],
            SubscriptionChange::PauseCollection(behavior) => vec![("pause_collection[behavior]", behavior.as_str().to_owned())],
            SubscriptionChange::ResumeCollection => vec![("pause_collection", String::new())],
            SubscriptionChange::CancelAtPeriodEnd(on) => vec![("cancel_at_period_end", on.to_string())],
        }
    }

    /// The request for subscription `id`.
    pub(super) fn request(&self, id: &str) -> RequestBuilder {
        let form: std::collections::BTreeMap<&str, String> = self.form().into_iter().collect();
        RequestBuilder::new(StripeMethod::Post, format!("/subscriptions/{id}")).form(&form)
    }
}
