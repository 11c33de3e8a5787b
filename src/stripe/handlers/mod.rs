//! Event handlers, one file per event family. Each applies one event inside the caller's
//! tenant transaction: it locks the object's row, decides whether the payload is newer than
//! what the mirror holds (Stripe neither orders nor deduplicates deliveries), applies it or
//! the re-fetched object, and writes side-effect rows keyed so that each exists once.
//!
//! Newer is judged by the event's `created` against the `stripe_updated_at` we hold: older →
//! the mirror is left alone (a replay never rolls state back); same second → the payload
//! cannot tell, so the object is re-fetched from the Stripe API; newer → applied. Side
//! effects are written for every delivery of an event, older or not, under keys derived from
//! what they are about, so the set of effects does not depend on delivery order.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::client::{ObjectKind, StripeApi, StripeApiError};
use super::event::StripeEvent;
use crate::domain::TenantId;

mod charge;
mod checkout;
mod customer;
mod dispute;
mod invoice;
mod subscription;

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// PostgreSQL: transient, retried.
    #[error("postgres: {0}")]
    Sql(#[from] sqlx::Error),
    /// The Stripe API: transient, retried.
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    /// The payload does not have the shape the handler needs: never succeeds.
    #[error("{0}")]
    Shape(String),
}

/// Every event type Ballast acts on. Others are stored, marked ignored and acknowledged.
pub const HANDLED: &[&str] = &[
    "checkout.session.completed",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.upcoming",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
];

/// Whether Ballast acts on `event_type`.
pub fn handles(event_type: &str) -> bool {
    HANDLED.contains(&event_type)
}

/// What the caller needs to know after an event was applied.
#[derive(Debug, Default)]
pub struct Applied {
    /// A customer whose tenant mapping this event established: its parked events can run now.
    pub mapped_customer: Option<String>,
}

/// One event being applied for one tenant.
pub struct EventCtx<'a> {
    /// The tenant transaction (row-level security applies).
    pub tx: &'a mut PgConnection,
    /// The tenant the event was routed to.
    pub tenant: TenantId,
    /// The event.
    pub event: &'a StripeEvent,
    /// For re-fetching objects.
    pub stripe: &'a StripeApi,
    /// Set when the event wrote an effect that dunning acts on (see [`crate::dunning::CONSUMED_KINDS`]).
    pub wrote_dunning_effect: bool,
}

impl EventCtx<'_> {
    /// The event's time on Stripe's clock.
    pub fn created(&self) -> DateTime<Utc> {
        ts(self.event.created).unwrap_or_else(Utc::now)
    }

    /// The event's object id; an event of a family that always has one is malformed without it.
    fn object_id(&self) -> Result<String, HandlerError> {
        self.event.object_id().map(str::to_owned).ok_or_else(|| HandlerError::Shape(format!("{} without an object id", self.event.event_type)))
    }

    /// The object state to apply, or None when the mirror holds something newer. Locks the
    /// row (when present) until the transaction ends.
    async fn state_to_apply(&mut self, table: Table, kind: ObjectKind, id: &str) -> Result<Option<serde_json::Value>, HandlerError> {
        let held: Option<DateTime<Utc>> = sqlx::query_scalar(table.lock_sql()).bind(id).fetch_optional(&mut *self.tx).await?;
        let created = self.created();
        match held {
            Some(h) if h > created => Ok(None),
            Some(h) if h == created => Ok(Some(self.stripe.retrieve(kind, id).await?)),
            _ => Ok(Some(self.event.object.clone())),
        }
    }

    /// Records a side effect once per key.
    async fn effect(&mut self, key: String, kind: &str, subject: &str, payload: serde_json::Value) -> Result<(), HandlerError> {
        self.wrote_dunning_effect |= crate::dunning::CONSUMED_KINDS.contains(&kind);
        sqlx::query(
            "INSERT INTO billing_effects (tenant_id, effect_key, kind, subject_id, payload, event_id)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, effect_key) DO NOTHING",
        )
        .bind(self.tenant.0)
        .bind(key)
        .bind(kind)
        .bind(subject)
        .bind(payload)
        .bind(&self.event.id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Makes sure a customer row exists (a placeholder older than any event) so objects that
    /// arrive before their customer can reference it.
    async fn ensure_customer(&mut self, customer: &str) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO customers (id, tenant_id, stripe_updated_at) VALUES ($1, $2, 'epoch') ON CONFLICT (id) DO NOTHING")
            .bind(customer)
            .bind(self.tenant.0)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Maps the tenant to `customer` when it has no customer yet; true when this set it.
    async fn map_customer(&mut self, customer: &str) -> Result<bool, HandlerError> {
        let done = sqlx::query("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1 AND stripe_customer_id IS NULL")
            .bind(self.tenant.0)
            .bind(customer)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Mirror tables whose rows carry `stripe_updated_at`.
#[derive(Debug, Clone, Copy)]
enum Table {
    Customers,
    Subscriptions,
    Invoices,
    Charges,
}

impl Table {
    fn lock_sql(self) -> &'static str {
        match self {
            Table::Customers => "SELECT stripe_updated_at FROM customers WHERE id = $1 FOR UPDATE",
            Table::Subscriptions => "SELECT stripe_updated_at FROM subscriptions WHERE id = $1 FOR UPDATE",
            Table::Invoices => "SELECT stripe_updated_at FROM invoices WHERE id = $1 FOR UPDATE",
            Table::Charges => "SELECT stripe_updated_at FROM charges WHERE id = $1 FOR UPDATE",
        }
    }
}

/// Unix seconds → time.
pub fn ts(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

fn shape<T>(r: Result<T, String>) -> Result<T, HandlerError> {
    r.map_err(HandlerError::Shape)
}

/// Applies `ctx.event` (a handled type) to the mirror.
pub async fn apply(ctx: &mut EventCtx<'_>) -> Result<Applied, HandlerError> {
    let t = ctx.event.event_type.clone();
    match t.as_str() {
        "checkout.session.completed" => checkout::completed(ctx).await,
        "customer.created" | "customer.updated" | "customer.deleted" => customer::changed(ctx).await,
        s if s.starts_with("customer.subscription.") => subscription::changed(ctx).await.map(|()| Applied::default()),
        "invoice.upcoming" => invoice::upcoming(ctx).await.map(|()| Applied::default()),
        s if s.starts_with("invoice.") => invoice::changed(ctx).await.map(|()| Applied::default()),
        "charge.refunded" => charge::refunded(ctx).await.map(|()| Applied::default()),
        s if s.starts_with("charge.dispute.") => dispute::changed(ctx).await.map(|()| Applied::default()),
        other => Err(HandlerError::Shape(format!("no handler for {other}"))),
    }
}
