//! `billing.reconcile` (admin job, runbook billing-reconcile): lists every bound customer's
//! subscriptions from Stripe (`status=all`, cancelled ones included, every page) and reports
//! those the mirror does not hold — a subscription whose events were all missed (Stripe keeps
//! events 30 days and retries deliveries for 3), which `billing.drift`, re-reading only what
//! the mirror holds, can never find. Executing brings each one in as a Ballast-made event
//! (`evt_ballast_reconcile_…`) through the inbox, so the same handlers apply it: mirror,
//! entitlements, cache, effects.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::admin::AdminJob;
use super::kind::{JobContext, JobError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct BillingReconcileJob;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BillingReconcileParams {
    /// Only this tenant (default: every tenant with a Stripe customer).
    #[serde(default)]
    pub tenant: Option<uuid::Uuid>,
    /// At most this many customers listed (default 1000).
    #[serde(default)]
    pub limit: Option<i64>,
}

/// What the mirror lacks (and what was brought in).
#[derive(Debug, Serialize)]
pub struct BillingReconcileReport {
    /// Where the listing was read from, when a replica is set (`replica (lag 0.2 s)`, or
    /// `primary: ` and why not the replica).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_from: Option<String>,
    /// Customers whose subscriptions were listed.
    pub customers: usize,
    /// Subscriptions Stripe listed.
    pub listed: usize,
    /// Subscriptions the mirror does not hold: tenant, customer, subscription, status.
    pub missing: Vec<Value>,
    /// Customers Stripe could not list, with the error.
    pub unreadable: Vec<Value>,
    /// Whether events were stored.
    pub executed: bool,
    /// Events stored and queued.
    pub brought_in: usize,
}

/// The event that carries a subscription the mirror never saw through the handlers. Stamped
/// with the subscription's own creation time on Stripe's clock, never Ballast's: any event
/// Stripe sends about it later is newer and applies over it.
fn reconcile_event(subscription: &Value, now_ms: i64) -> Value {
    let id = format!("evt_ballast_reconcile_{}_{now_ms}", subscription["id"].as_str().unwrap_or("unknown"));
    json!({
        "id": id, "object": "event", "type": "customer.subscription.updated", "created": subscription["created"],
        "livemode": subscription["livemode"], "api_version": null, "data": {"object": subscription},
        "request": {"id": null, "idempotency_key": null},
    })
}

impl AdminJob for BillingReconcileJob {
    const KIND: &'static str = "billing.reconcile";
    type Params = BillingReconcileParams;
    type Report = BillingReconcileReport;
    type Deps = super::deps::Mirror;

    async fn run(&self, p: &BillingReconcileParams, execute: bool, ctx: &JobContext<super::deps::Mirror>) -> Result<BillingReconcileReport, JobError> {
        // System pool: every tenant's customer, and the mirror across tenants. The listing may lag: read from the replica while
        // it keeps up; what is fixed goes through the inbox on the primary.
        let reads = crate::db::replica::reads(ctx.state.replica.as_ref(), &ctx.state.system_pool).await;
        let pool = &reads.pool;
        let customers: Vec<(uuid::Uuid, String)> = sqlx::query_as(
            "SELECT id, stripe_customer_id FROM tenants WHERE stripe_customer_id IS NOT NULL AND ($1::uuid IS NULL OR id = $1)
             ORDER BY id LIMIT $2",
        )
        .bind(p.tenant)
        .bind(p.limit.unwrap_or(1000).max(1))
        .fetch_all(&pool.0)
        .await?;
        let mut listed = 0;
        let mut missing: Vec<(uuid::Uuid, String, Value)> = Vec::new();
        let mut unreadable = Vec::new();
        for (i, (tenant, customer)) in customers.iter().enumerate() {
            match ctx.state.stripe.customer_subscriptions(customer).await {
                Ok(subs) => {
                    listed += subs.len();
                    let ids: Vec<String> = subs.iter().filter_map(|s| s["id"].as_str().map(str::to_owned)).collect();
                    let held: Vec<String> = sqlx::query_scalar("SELECT id FROM subscriptions WHERE id = ANY ($1)").bind(&ids).fetch_all(&pool.0).await?;
                    missing.extend(subs.into_iter().filter(|s| s["id"].as_str().is_some_and(|id| !held.iter().any(|h| h == id))).map(|s| (*tenant, customer.clone(), s)));
                }
                Err(e) => unreadable.push(json!({"tenant": tenant, "customer": customer, "error": e.to_string()})),
            }
            ctx.progress.report("list subscriptions at Stripe", i as u64 + 1, Some(customers.len() as u64));
        }
        let mut brought_in = 0;
        if execute {
            let now = chrono::Utc::now();
            for (_, _, subscription) in &missing {
                if super::admin::inject_event(&ctx.state, reconcile_event(subscription, now.timestamp_millis()), now.timestamp()).await? {
                    brought_in += 1;
                }
            }
        }
        Ok(BillingReconcileReport {
            read_from: reads.source.note(),
            customers: customers.len(),
            listed,
            missing: missing
                .iter()
                .map(|(tenant, customer, s)| json!({"tenant": tenant, "customer": customer, "subscription": s["id"], "status": s["status"]}))
                .collect(),
            unreadable,
            executed: execute,
            brought_in,
        })
    }
}
