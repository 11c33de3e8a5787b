//! Billing effects (`billing_effects`): what an applied Stripe event means beyond the mirror
//! — a failed payment to dun, a reminder to send, a dispute to look at — written once per key
//! by the Stripe handlers in the event's tenant transaction, consumed by dunning in the
//! tenant's own. This module owns the table: its kinds, its SQL.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::newtypes::TenantId;

/// What an effect is about. The stored spelling is [`EffectKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EffectKind {
    /// A checkout session completed.
    CheckoutCompleted,
    /// A customer was deleted in Stripe.
    CustomerDeleted,
    /// A refund was recorded on a charge.
    RefundRecorded,
    /// A dispute was opened on a charge.
    DisputeCreated,
    /// A dispute was closed.
    DisputeClosed,
    /// An invoice payment failed: dunning opens (or continues) a case.
    PaymentFailed,
    /// An invoice was paid: dunning closes its case.
    InvoicePaid,
    /// Stripe gave up on an invoice (voided, marked uncollectible): dunning writes its case off.
    InvoiceClosed,
    /// The customer must confirm a payment (3-D Secure).
    PaymentActionRequired,
    /// A renewal is coming: reminder email.
    UpcomingRenewal,
    /// A sent invoice falls due soon (invoice.will_be_due): reminder email.
    InvoiceDueSoon,
    /// A trial ends soon: reminder email.
    TrialWillEnd,
    /// A subscription was canceled.
    SubscriptionCanceled,
    /// A subscription was paused.
    SubscriptionPaused,
    /// A subscription was resumed.
    SubscriptionResumed,
}

impl EffectKind {
    /// Every kind.
    pub const ALL: [EffectKind; 15] = [
        EffectKind::CheckoutCompleted,
        EffectKind::CustomerDeleted,
        EffectKind::RefundRecorded,
        EffectKind::DisputeCreated,
        EffectKind::DisputeClosed,
        EffectKind::PaymentFailed,
        EffectKind::InvoicePaid,
        EffectKind::InvoiceClosed,
        EffectKind::PaymentActionRequired,
        EffectKind::UpcomingRenewal,
        EffectKind::InvoiceDueSoon,
        EffectKind::TrialWillEnd,
        EffectKind::SubscriptionCanceled,
        EffectKind::SubscriptionPaused,
        EffectKind::SubscriptionResumed,
    ];

    /// The kinds dunning consumes.
    pub const DUNNING: [EffectKind; 12] = [
        EffectKind::SubscriptionCanceled,
        EffectKind::SubscriptionPaused,
        EffectKind::CustomerDeleted,
        EffectKind::DisputeCreated,
        EffectKind::DisputeClosed,
        EffectKind::PaymentFailed,
        EffectKind::InvoicePaid,
        EffectKind::InvoiceClosed,
        EffectKind::PaymentActionRequired,
        EffectKind::UpcomingRenewal,
        EffectKind::InvoiceDueSoon,
        EffectKind::TrialWillEnd,
    ];

    /// The stored spelling (also the prefix of the effect's key).
    pub fn as_str(self) -> &'static str {
        match self {
            EffectKind::CheckoutCompleted => "checkout.completed",
            EffectKind::CustomerDeleted => "customer.deleted",
            EffectKind::RefundRecorded => "refund.recorded",
            EffectKind::DisputeCreated => "dispute.created",
            EffectKind::DisputeClosed => "dispute.closed",
            EffectKind::PaymentFailed => "dunning.payment_failed",
            EffectKind::InvoicePaid => "dunning.invoice_paid",
            EffectKind::InvoiceClosed => "dunning.invoice_closed",
            EffectKind::PaymentActionRequired => "email.payment_action_required",
            EffectKind::UpcomingRenewal => "email.upcoming_renewal",
            EffectKind::InvoiceDueSoon => "email.invoice_due_soon",
            EffectKind::TrialWillEnd => "email.trial_will_end",
            EffectKind::SubscriptionCanceled => "subscription.canceled",
            EffectKind::SubscriptionPaused => "subscription.paused",
            EffectKind::SubscriptionResumed => "subscription.resumed",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether dunning consumes effects of this kind.
    pub fn is_for_dunning(self) -> bool {
        Self::DUNNING.contains(&self)
    }
}

/// One effect to write.
#[derive(Debug)]
pub struct NewEffect<'a> {
    /// Unique per tenant: a second write of the same key is a no-op.
    pub key: String,
    /// What it is about.
    pub kind: EffectKind,
    /// The Stripe object it concerns.
    pub subject: &'a str,
    /// What the consumer needs.
    pub payload: serde_json::Value,
    /// The event that announced it.
    pub event_id: &'a str,
}

/// Writes `effect` once per key, in the caller's tenant transaction.
pub async fn record(tx: &mut PgConnection, tenant: TenantId, effect: NewEffect<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO billing_effects (tenant_id, effect_key, kind, subject_id, payload, event_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, effect_key) DO NOTHING",
    )
    .bind(tenant.0)
    .bind(effect.key)
    .bind(effect.kind.as_str())
    .bind(effect.subject)
    .bind(effect.payload)
    .bind(effect.event_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// An unconsumed effect, as its consumer reads it.
#[derive(Debug, sqlx::FromRow)]
pub struct Effect {
    /// Row id.
    pub id: uuid::Uuid,
    /// Its key.
    pub effect_key: String,
    kind: String,
    /// The Stripe object it concerns.
    pub subject_id: String,
    /// What the consumer needs.
    pub payload: serde_json::Value,
    /// When Stripe created the event that announced it.
    pub stripe_created: DateTime<Utc>,
}

impl Effect {
    /// Its kind (`None` for a spelling this build does not know).
    pub fn kind(&self) -> Option<EffectKind> {
        EffectKind::parse(&self.kind)
    }
}

fn spellings(kinds: &[EffectKind]) -> Vec<&'static str> {
    kinds.iter().map(|k| k.as_str()).collect()
}

/// The tenant's unconsumed effects of `kinds`, in the order Stripe created their events, in
/// the caller's tenant transaction.
pub async fn unconsumed(tx: &mut PgConnection, kinds: &[EffectKind]) -> Result<Vec<Effect>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, e.effect_key, e.kind, e.subject_id, e.payload, s.stripe_created
         FROM billing_effects e JOIN stripe_events s ON s.id = e.event_id
         WHERE e.consumed_at IS NULL AND e.kind = ANY($1) ORDER BY s.stripe_created, e.created_at",
    )
    .bind(spellings(kinds))
    .fetch_all(tx)
    .await
}

/// Marks effect `id` consumed, in the consumer's transaction.
pub async fn mark_consumed(tx: &mut PgConnection, id: uuid::Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE billing_effects SET consumed_at = now() WHERE id = $1").bind(id).execute(tx).await?;
    Ok(())
}

/// Tenants with unconsumed effects of `kinds` (one tenant, or all). System pool: the daily
/// run looks across tenants for work.
pub async fn tenants_pending(pool: &crate::db::SystemPool, kinds: &[EffectKind], tenant: Option<TenantId>) -> Result<Vec<TenantId>, sqlx::Error> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT tenant_id FROM billing_effects WHERE consumed_at IS NULL AND kind = ANY($1) AND ($2::uuid IS NULL OR tenant_id = $2)",
    )
    .bind(spellings(kinds))
    .bind(tenant.map(|t| t.0))
    .fetch_all(&pool.0)
    .await?;
    Ok(ids.into_iter().map(TenantId).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_spelling() {
        for k in EffectKind::ALL {
            assert_eq!(EffectKind::parse(k.as_str()), Some(k));
        }
        assert!(EffectKind::PaymentFailed.is_for_dunning() && EffectKind::DisputeCreated.is_for_dunning());
        assert!(!EffectKind::RefundRecorded.is_for_dunning());
    }
}
