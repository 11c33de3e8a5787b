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

    /// The state of object `id` this event offers: Stripe's current object when it was
    /// re-fetched for this event (its tie with the mirror then applies), else the event's own.
    /// For a guarded upsert ([`newer_guard`]), which takes the row's lock and applies the state
    /// only when newer in one statement; [`Self::held_newer`] tells what writing nothing meant.
    pub(super) fn offered_state(&mut self, id: &str) -> Offered {
        match self.fetched.take() {
            Some((fetched_id, object)) if fetched_id == id => Offered { state: object, tie_applies: true },
            other => {
                self.fetched = other;
                Offered { state: self.event.object.clone(), tie_applies: false }
            }
        }
    }

    /// After a guarded upsert of `id` wrote nothing (its conflict locked the row): the mirror
    /// holds the object as of this event's time or later. Later: the event is older, nothing to
    /// apply. The same second, undecided: Stripe's current object must decide
    /// ([`HandlerError::NeedsFetch`]), as in [`Self::state_to_apply`].
    pub(super) async fn held_newer(&mut self, table: Table, kind: ObjectKind, id: &str, offered: &Offered) -> Result<(), HandlerError> {
        let held: Option<DateTime<Utc>> = sqlx::query_scalar(table.lock_sql()).bind(id).fetch_optional(&mut *self.tx).await?;
        match held {
            Some(h) if h == self.created() && !offered.tie_applies => Err(HandlerError::NeedsFetch(kind, id.to_owned())),
            _ => Ok(()),
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

/// An object state an event offers ([`EventCtx::offered_state`]).
pub(super) struct Offered {
    /// The object.
    pub state: serde_json::Value,
    /// Stripe's current object, re-fetched after a tie: applied on the same second too.
    pub tie_applies: bool,
}

/// The end of a guarded upsert's `DO UPDATE` on `table` ($`tie` a bool parameter:
/// [`Offered::tie_applies`]): the row is rewritten only by a newer state, or by Stripe's
/// current object on a tie. A conflict locks the row whether or not it is rewritten, so the
/// statement is the lock and the write in one round trip (a tenant's webhook events change
/// existing rows far more often than they find them newer).
pub(super) fn newer_guard(table: &str, tie: &str) -> String {
    format!(
        "WHERE {table}.stripe_updated_at < EXCLUDED.stripe_updated_at
               OR ({tie} AND {table}.stripe_updated_at = EXCLUDED.stripe_updated_at)
         RETURNING 1"
    )
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

