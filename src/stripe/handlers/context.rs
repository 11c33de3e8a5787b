//! What every event handler works with: the event being applied for one tenant
//! ([`EventCtx`]), what applying it tells the caller ([`Applied`]), why it could not be
//! ([`HandlerError`]), and the small helpers the handlers share.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::stripe_api::{ObjectKind, StripeApiError};
use super::super::event::StripeEvent;
use crate::billing::effects::{self, EffectKind, NewEffect};
use crate::newtypes::TenantId;

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// PostgreSQL: transient, retried.
    #[error("postgres: {0}")]
    Sql(#[from] sqlx::Error),
    /// The tenant transaction could not start: transient, retried.
    #[error(transparent)]
    Tx(#[from] crate::db::DbError),
    /// The Stripe API: transient, retried.
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    /// The payload does not have the shape the handler needs: never succeeds.
    #[error("{0}")]
    Shape(String),
    /// The event cannot tell whether it is newer than the mirror (same second): the object
    /// must be re-fetched from Stripe, which is done outside the transaction, and the event
    /// applied again with it ([`EventCtx::fetched`]).
    #[error("{0:?} {1} must be re-fetched from Stripe")]
    NeedsFetch(ObjectKind, String),
}

/// What the caller needs to know after an event was applied.
#[derive(Debug, Default)]
pub struct Applied {
    /// A customer whose tenant mapping this event established: its parked events can run now.
    pub mapped_customer: Option<String>,
    /// A customer Stripe deleted, unbound from the tenant by this event: events parked that
    /// name the tenant (a new customer's checkout) can bind now, and its own parked events run.
    pub unbound_customer: Option<String>,
}

/// One event being applied for one tenant.
pub struct EventCtx<'a> {
    /// The tenant transaction (row-level security applies).
    pub tx: &'a mut PgConnection,
    /// The tenant the event was routed to.
    pub tenant: TenantId,
    /// The event.
    pub event: &'a StripeEvent,
    /// An object re-fetched from Stripe before this transaction began (its id and state), for
    /// an event that tied with the mirror on the previous try. Never fetched inside it.
    pub fetched: Option<(String, serde_json::Value)>,
    /// Set when the event wrote an effect that dunning acts on (see [`EffectKind::is_for_dunning`]).
    pub wrote_dunning_effect: bool,
    /// The plan catalogue: which item of a subscription is its plan.
    pub plans: &'a crate::billing::plans::Plans,
}

impl EventCtx<'_> {
    /// The event's time on Stripe's clock.
    pub fn created(&self) -> DateTime<Utc> {
        ts(self.event.created).unwrap_or_else(Utc::now)
    }

    /// The event's object id; an event of a family that always has one is malformed without it.
    pub(super) fn object_id(&self) -> Result<String, HandlerError> {
        self.event.object_id().map(str::to_owned).ok_or_else(|| HandlerError::Shape(format!("{} without an object id", self.event.event_type)))
    }

    /// The object state to apply, or None when the mirror holds something newer. Locks the
    /// row (when present) until the transaction ends. On a same-second tie the event cannot
    /// say which is newer: Stripe's current object decides, re-fetched outside the
    /// transaction ([`HandlerError::NeedsFetch`]) and handed back in [`EventCtx::fetched`].
    pub(super) async fn state_to_apply(&mut self, table: Table, kind: ObjectKind, id: &str) -> Result<Option<serde_json::Value>, HandlerError> {
        let held: Option<DateTime<Utc>> = sqlx::query_scalar(table.lock_sql()).bind(id).fetch_optional(&mut *self.tx).await?;
        let created = self.created();
        match held {
            Some(h) if h > created => Ok(None),
            Some(h) if h == created => match self.fetched.take() {
                Some((fetched_id, object)) if fetched_id == id => Ok(Some(object)),
                _ => Err(HandlerError::NeedsFetch(kind, id.to_owned())),
            },
            _ => Ok(Some(self.event.object.clone())),
        }
    }

    /// Records a side effect once per key.
    pub(super) async fn effect(&mut self, key: String, kind: EffectKind, subject: &str, payload: serde_json::Value) -> Result<(), HandlerError> {
        self.wrote_dunning_effect |= kind.is_for_dunning();
        let effect = NewEffect { key, kind, subject, payload, event_id: self.event.id.as_str() };
        effects::record(self.tx, self.tenant, effect).await?;
        Ok(())
    }

    /// Makes sure a customer row exists (a placeholder older than any event) so objects that
    /// arrive before their customer can reference it.
    pub(super) async fn ensure_customer(&mut self, customer: &str) -> Result<(), HandlerError> {
        static ENSURE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| customer_placeholder("$1", "$2"));
        sqlx::query(ENSURE.as_str())
            .bind(customer)
            .bind(self.tenant.0)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Maps the tenant to `customer` when it has no customer yet; true when this set it.
    pub(super) async fn map_customer(&mut self, customer: &str) -> Result<bool, HandlerError> {
        Ok(crate::tenants::bind_customer(&mut *self.tx, self.tenant, customer).await?)
    }

    /// Unbinds `customer`, which Stripe deleted, if it is the tenant's current one, and audits
    /// it; true when it was.
    pub(super) async fn unbind_deleted_customer(&mut self, customer: &str) -> Result<bool, HandlerError> {
        let unbound = crate::tenants::unbind_deleted_customer(&mut *self.tx, self.tenant, customer).await?;
        if unbound {
            let params = serde_json::json!({"customer": customer, "event": self.event.id});
            crate::audit::record(&mut *self.tx, Some(self.tenant), "stripe", "tenant.customer_unbound", params, crate::audit::Outcome::Ok).await?;
        }
        Ok(unbound)
    }
}

/// The statement writing customer `id`'s placeholder row for tenant `tenant` (SQL parameters):
/// older than any event, so the customer's own event overwrites it, and left alone if the row
/// exists.
pub(super) fn customer_placeholder(id: &str, tenant: &str) -> String {
    format!("INSERT INTO customers (id, tenant_id, stripe_updated_at) VALUES ({id}, {tenant}, 'epoch') ON CONFLICT (id) DO NOTHING")
}

/// Mirror tables whose rows carry `stripe_updated_at`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Table {
    Customers,
    Subscriptions,
    Invoices,
    Charges,
}

impl Table {
    pub(super) fn lock_sql(self) -> &'static str {
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

pub(super) fn shape<T>(r: Result<T, String>) -> Result<T, HandlerError> {
    r.map_err(HandlerError::Shape)
}

