//! `billing.drift` (admin job, runbook billing-drift): compares the mirror with Stripe for one
//! tenant or all — every mirrored subscription and invoice is re-read from the Stripe API and
//! its status, price, cancellation and amounts compared. Executing re-syncs each drifted object
//! by putting Stripe's current state into the inbox as a Ballast-made event
//! (`evt_ballast_resync_…`), so it goes through the same handlers as a delivered event:
//! mirror, entitlements, cache invalidation, dunning.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::kind::{JobContext, JobError};
use super::admin::AdminJob;
use crate::stripe_api::ObjectKind;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct BillingDriftJob;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingDriftParams {
    /// Only this tenant (default: every tenant).
    #[serde(default)]
    pub tenant: Option<uuid::Uuid>,
    /// At most this many objects compared (default 1000).
    #[serde(default)]
    pub limit: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct Mirrored {
    kind: String,
    id: String,
    tenant_id: uuid::Uuid,
    status: String,
    price_id: Option<String>,
    cancel_at_period_end: Option<bool>,
    cancel_at: Option<i64>,
    amount_paid: Option<i64>,
    /// When the mirror's state was Stripe's (`stripe_updated_at`, unix seconds).
    held_at: i64,
}

/// The fields that differ: (field, mirror, Stripe).
fn differences(m: &Mirrored, s: &Value, plans: &crate::billing::plans::Plans) -> Vec<(&'static str, Value, Value)> {
    let mut out = Vec::new();
    let mut check = |field: &'static str, mine: Value, theirs: Value| {
        if mine != theirs {
            out.push((field, mine, theirs));
        }
    };
    check("status", json!(m.status), s["status"].clone());
    if m.kind == "subscription" {
        // The plan's price, read as the handler reads it (an add-on or a metered item may be
        // listed first).
        let plan_price = crate::stripe::objects::object::<crate::stripe::objects::SubscriptionObject>(s).ok().and_then(|o| o.plan_price(plans).map(|p| p.id.clone()));
        check("price", json!(m.price_id), json!(plan_price));
        check("cancel_at_period_end", json!(m.cancel_at_period_end), s["cancel_at_period_end"].clone());
        // A flexible-mode cancel shows only here (cancel_at_period_end stays false).
        check("cancel_at", json!(m.cancel_at), s["cancel_at"].clone());
    } else {
        check("amount_paid", json!(m.amount_paid), s["amount_paid"].clone());
    }
    out
}

/// The event that carries Stripe's current state of `object` through the handlers. It is
/// stamped with the time the mirror already holds, not with Ballast's clock: Ballast's clock
/// can be behind Stripe's (an event seconds old would then look newer than the re-sync, and the
/// re-sync would be dropped as stale). The tie sends it through `stripe.refetch`, which applies
/// the object Stripe holds when the event is applied, unless a newer event got there first.
fn resync_event(kind: &str, object: &Value, held_at: i64, now: DateTime<Utc>) -> Value {
    let event_type = match (kind, object["status"].as_str()) {
        ("subscription", _) => "customer.subscription.updated",
        (_, Some("paid")) => "invoice.paid",
        _ => "invoice.finalized",
    };
    let id = format!("evt_ballast_resync_{}_{}", object["id"].as_str().unwrap_or("unknown"), now.timestamp_millis());
    json!({
        "id": id, "object": "event", "type": event_type, "created": held_at, "livemode": object["livemode"],
        "api_version": null, "data": {"object": object}, "request": {"id": null, "idempotency_key": null},
    })
}

/// Where the mirror and Stripe disagree (and what was re-synced).
#[derive(Debug, serde::Serialize)]
pub struct BillingDriftReport {
    /// Where the listing was read from, when a replica is set (`replica (lag 0.2 s)`, or
    /// `primary: ` and why not the replica).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_from: Option<String>,
    /// Objects compared.
    pub compared: usize,
    /// Objects that differ, with the fields.
    pub drifted: Vec<serde_json::Value>,
    /// Objects Stripe did not return.
    pub unreadable: Vec<serde_json::Value>,
    /// What needs an operator: objects Stripe did not return, and (in a dry run) objects that
    /// differ. Non-empty makes `ballast runbook run` exit with status 3.
    pub failing: Vec<String>,
    /// Whether re-sync events were stored.
    pub executed: bool,
    /// Re-sync events stored and queued.
    pub resynced: usize,
}

impl AdminJob for BillingDriftJob {
    const KIND: &'static str = "billing.drift";
    type Params = BillingDriftParams;
    type Report = BillingDriftReport;
    type Deps = super::deps::Mirror;

    async fn run(&self, p: &BillingDriftParams, execute: bool, ctx: &JobContext<super::deps::Mirror>) -> Result<BillingDriftReport, JobError> {
        // System pool: drift is checked across tenants (or for the one named). The listing may lag: read from the replica while
        // it keeps up; what is fixed goes through the inbox on the primary.
        let reads = crate::db::replica::reads(ctx.state.replica.as_ref(), &ctx.state.system_pool).await;
        let pool = &reads.pool;
        let mirrored: Vec<Mirrored> = sqlx::query_as(
            "SELECT * FROM (
                 SELECT 'subscription' AS kind, id, tenant_id, status, price_id, cancel_at_period_end,
                        extract(epoch FROM cancel_at)::bigint AS cancel_at, NULL::bigint AS amount_paid,
                        extract(epoch FROM stripe_updated_at)::bigint AS held_at
                 FROM subscriptions WHERE $1::uuid IS NULL OR tenant_id = $1
                 UNION ALL
                 SELECT 'invoice', id, tenant_id, status, NULL, NULL, NULL, amount_paid, extract(epoch FROM stripe_updated_at)::bigint
                 FROM invoices WHERE $1::uuid IS NULL OR tenant_id = $1) o
             ORDER BY tenant_id, kind, id LIMIT $2",
        )
        .bind(p.tenant)
        .bind(p.limit.unwrap_or(1000).max(1))
        .fetch_all(&pool.0)
        .await?;
        let now = Utc::now();
        let mut drifted = Vec::new();
        let mut unreadable = Vec::new();
        for (i, m) in mirrored.iter().enumerate() {
            let kind = if m.kind == "subscription" { ObjectKind::Subscription } else { ObjectKind::Invoice };
            match ctx.state.stripe.retrieve(kind, &m.id).await {
                Ok(object) => {
                    let diff = differences(m, &object, &ctx.state.plans);
                    if !diff.is_empty() {
                        drifted.push((m, object, diff));
                    }
                }
                Err(e) => unreadable.push(json!({"object": m.id, "error": e.to_string()})),
            }
            ctx.progress.report("compare with Stripe", i as u64 + 1, Some(mirrored.len() as u64));
        }
        let mut resynced = 0;
        if execute {
            for (m, object, _) in &drifted {
                if super::admin::inject_event(&ctx.state, resync_event(&m.kind, object, m.held_at, now), now.timestamp()).await? {
                    resynced += 1;
                }
            }
        }
        let mut failing: Vec<String> = unreadable.iter().map(|u| format!("object {} could not be read from Stripe ({})", u["object"].as_str().unwrap_or("?"), u["error"].as_str().unwrap_or("?"))).collect();
        if !execute {
            failing.extend(drifted.iter().map(|(m, _, diff)| {
                format!("object {} differs from Stripe in {} (--execute re-syncs it)", m.id, diff.iter().map(|d| d.0).collect::<Vec<_>>().join(", "))
            }));
        }
        Ok(BillingDriftReport {
            read_from: reads.source.note(),
            failing,
            compared: mirrored.len(),
            drifted: drifted.iter().map(|(m, _, diff)| json!({
                "tenant": m.tenant_id, "object": m.id, "kind": m.kind,
                "fields": diff.iter().map(|(f, mine, theirs)| json!({"field": f, "mirror": mine, "stripe": theirs})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            unreadable,
            executed: execute,
            resynced,
        })
    }
}
