//! Disputes (chargebacks and inquiries): operators hear of each one when it opens and when it
//! closes, through the notifier the SLO alerts use (PagerDuty pairs the two by the alert key
//! `dispute:{id}`); a dispute the policy restricts for holds the tenant restricted while it is
//! open, and access comes back when it closes, won or lost.

use serde_json::json;
use sqlx::PgConnection;

use super::policy::DisputePolicy;
use crate::billing::effects::Effect;
use crate::newtypes::{Money, TenantId};
use crate::slo::notify::{self, OperatorNotice};

/// Statuses after which a dispute is over.
const CLOSED: &[&str] = &["won", "lost", "warning_closed", "prevented"];

/// What consuming a dispute effect asks of the caller after its commit.
#[derive(Debug, Default)]
pub(super) struct Consumed {
    /// The operator notice to send.
    pub notice: Option<uuid::Uuid>,
    /// The tenant's entitlements must be recomputed (a restriction began or ended).
    pub entitlements_changed: bool,
}

#[derive(sqlx::FromRow)]
struct Dispute {
    status: String,
    amount: i64,
    currency: String,
    reason: Option<String>,
    charge_id: String,
}

async fn load(tx: &mut PgConnection, id: &str) -> Result<Option<Dispute>, sqlx::Error> {
    sqlx::query_as("SELECT status, amount, currency, reason, charge_id FROM disputes WHERE id = $1").bind(id).fetch_optional(tx).await
}

/// `charge.dispute.created`: notify, and restrict where the policy says so.
pub(super) async fn opened(tx: &mut PgConnection, tenant: TenantId, e: &Effect, policy: DisputePolicy) -> Result<Consumed, sqlx::Error> {
    let Some(d) = load(tx, &e.subject_id).await? else { return Ok(Consumed::default()) };
    // Delivered after its close: nothing is open to page anyone about.
    if CLOSED.contains(&d.status.as_str()) {
        return Ok(Consumed::default());
    }
    let inquiry = d.status.starts_with("warning_");
    let what = if inquiry { "Inquiry" } else { "Dispute" };
    let summary = format!(
        "{what} {} opened on charge {}: {}, reason {}, status {} (tenant {})",
        e.subject_id,
        d.charge_id,
        Money::new(d.amount, &d.currency),
        d.reason.as_deref().unwrap_or("none given"),
        d.status,
        tenant
    );
    let details = json!({"dispute": e.subject_id, "charge": d.charge_id, "tenant": tenant.0, "amount": d.amount, "currency": d.currency,
        "reason": d.reason, "status": d.status});
    let notice = OperatorNotice { alert_key: format!("dispute:{}", e.subject_id), transition: 1, firing: true, source: "dispute", summary, details };
    let notice = notify::record(tx, &notice).await?;
    let restrict = policy.restrict && !inquiry;
    if restrict {
        sqlx::query("UPDATE disputes SET restricts = true WHERE id = $1").bind(&e.subject_id).execute(&mut *tx).await?;
    }
    Ok(Consumed { notice, entitlements_changed: restrict })
}

/// `charge.dispute.closed`: resolve the notice and lift any restriction it held.
pub(super) async fn closed(tx: &mut PgConnection, tenant: TenantId, e: &Effect) -> Result<Consumed, sqlx::Error> {
    let Some(d) = load(tx, &e.subject_id).await? else { return Ok(Consumed::default()) };
    let summary = format!("Dispute {} closed: {} (tenant {})", e.subject_id, d.status, tenant);
    let details = json!({"dispute": e.subject_id, "charge": d.charge_id, "tenant": tenant.0, "status": d.status});
    let notice = OperatorNotice { alert_key: format!("dispute:{}", e.subject_id), transition: 2, firing: false, source: "dispute", summary, details };
    let notice = notify::record(tx, &notice).await?;
    let lifted = sqlx::query("UPDATE disputes SET restricts = false WHERE id = $1 AND restricts").bind(&e.subject_id).execute(&mut *tx).await?;
    Ok(Consumed { notice, entitlements_changed: lifted.rows_affected() > 0 })
}
