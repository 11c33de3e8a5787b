//! A bulk operation's run: the cohort chosen from the mirror (those already as asked left
//! out), written down with the operation ([`super::bulk`]) before anything is sent, then one
//! Stripe call per subscription with the idempotency key `bulk_{operation}_{subscription}`,
//! each answer recorded with its audit row in one transaction. A run that stopped (a crash,
//! Stripe down) is resumed by running the same operation again: the pending targets are sent
//! again with the same keys, so a call that reached Stripe before the crash is answered with
//! its first result and acts once. The mirror follows through Stripe's own events.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::access::Item;
use super::bulk::{self, BulkError, Cohort, OperationKind, Subscription, Target, TargetState};
use super::plans::{Plans, PriceRole};
use crate::db::SystemPool;
use crate::newtypes::TenantId;
use crate::queue::job::Progress;
use crate::stripe_api::{ObjectKind, PauseBehavior, ProrationBehavior, StripeApi, StripeApiError, SubscriptionChange};

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum BulkRunError {
    /// The operation, or the database.
    #[error(transparent)]
    Bulk(#[from] BulkError),
    /// Stripe could not be reached or failed (not a refusal): running again resumes.
    #[error("Stripe: {0}; the operation is kept: run it again to resume")]
    Stripe(StripeApiError),
}

impl From<sqlx::Error> for BulkRunError {
    fn from(e: sqlx::Error) -> Self {
        BulkRunError::Bulk(BulkError::Db(e))
    }
}

/// The change asked of every subscription in the cohort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "do")]
pub enum Change {
    /// The plan's item to `to_price`.
    MovePrice {
        /// `price_…`: a price of a plan in policy/plans.toml.
        to_price: String,
        /// What Stripe bills for the change.
        proration: ProrationBehavior,
    },
    /// Pauses collection.
    PauseCollection {
        /// What happens to invoices meanwhile.
        behavior: PauseBehavior,
    },
    /// Resumes collection.
    ResumeCollection,
    /// Cancels when the period ends.
    CancelAtPeriodEnd,
    /// Takes a cancel at period end back.
    KeepAfterPeriodEnd,
}

impl Change {
    fn kind(&self) -> OperationKind {
        match self {
            Change::MovePrice { .. } => OperationKind::MovePrice,
            Change::PauseCollection { .. } => OperationKind::PauseCollection,
            Change::ResumeCollection => OperationKind::ResumeCollection,
            Change::CancelAtPeriodEnd => OperationKind::CancelAtPeriodEnd,
            Change::KeepAfterPeriodEnd => OperationKind::KeepAfterPeriodEnd,
        }
    }

    /// Already as asked: left out of a new cohort.
    fn holds_for(&self, s: &Subscription) -> bool {
        match self {
            Change::MovePrice { to_price, .. } => s.price_id.as_deref() == Some(to_price),
            Change::PauseCollection { behavior } => s.pause_collection.as_deref() == Some(behavior.as_str()),
            Change::ResumeCollection => s.pause_collection.is_none(),
            Change::CancelAtPeriodEnd => s.cancel_at_period_end,
            Change::KeepAfterPeriodEnd => !s.cancel_at_period_end,
        }
    }

    /// What it does to `s`, for people.
    fn describe(&self, s: &Subscription, new_mrr: Option<&(String, i64)>) -> String {
        match self {
            Change::MovePrice { to_price, proration } => {
                let from = s.price_id.as_deref().unwrap_or("(no plan price)");
                let mrr = |m: i64, c: Option<&str>| format!("{m} {}", c.unwrap_or("?"));
                let after = new_mrr.map_or_else(|| "?".to_owned(), |(c, m)| mrr(*m, Some(c)));
                format!("{from} -> {to_price} ({}); MRR {} -> {after}", proration.as_str(), mrr(s.mrr_minor, s.mrr_currency.as_deref()))
            }
            Change::PauseCollection { behavior } => format!("collection paused ({})", behavior.as_str()),
            Change::ResumeCollection => format!("collection resumed (was paused: {})", s.pause_collection.as_deref().unwrap_or("?")),
            Change::CancelAtPeriodEnd => "cancels at the period's end".into(),
            Change::KeepAfterPeriodEnd => "no longer cancels at the period's end".into(),
        }
    }
}

/// What a run needs.
pub struct BulkRun<'a> {
    /// The mirror and the operations, across tenants.
    pub pool: &'a SystemPool,
    /// Where the changes are made.
    pub stripe: &'a StripeApi,
    /// Which item of a subscription is its plan; which prices are plans'.
    pub plans: &'a Plans,
    /// Who asked: written on each tenant's audit row.
    pub actor: &'a str,
    /// The terminal's progress line.
    pub progress: &'a Progress,
}

/// What a run reports.
#[derive(Debug, Serialize)]
pub struct BulkReport {
    /// The operation (none for a dry run of a new one, or an empty cohort).
    pub operation: Option<Uuid>,
    /// An earlier run of the same operation had stopped; this one went on from there.
    pub resumed: bool,
    /// Whether it acted.
    pub executed: bool,
    /// The change asked.
    pub change: Change,
    /// Subscriptions in the cohort.
    pub cohort: usize,
    /// Live subscriptions matched but already as asked (left out).
    pub unchanged: usize,
    /// Changed at Stripe.
    pub done: usize,
    /// Not acted on yet: a dry run's whole cohort, or what a stopped run left.
    pub pending: usize,
    /// Refused by Stripe.
    pub failed: usize,
    /// The refused ones: tenant, subscription, error (the run's exit status says so).
    pub failing: Vec<Value>,
    /// Each subscription: tenant, what changes, state.
    pub targets: Vec<Value>,
}

/// The price moved to: in a plan of the catalogue (or tenants would be left without one),
/// known to Stripe; its terms, to show each tenant's MRR after the move.
async fn checked_price(r: &BulkRun<'_>, to_price: &str) -> Result<Item, BulkRunError> {
    let price = match r.stripe.retrieve(ObjectKind::Price, to_price).await {
        Ok(p) => p,
        Err(StripeApiError::Refused { message, .. }) => return Err(BulkError::Asked(format!("to_price {to_price}: Stripe refused: {message}")).into()),
        Err(e) => return Err(BulkRunError::Stripe(e)),
    };
    let product = price["product"].as_str().map(str::to_owned);
    if !matches!(r.plans.role_of(Some(to_price), product.as_deref()), PriceRole::Plan(_)) {
        return Err(BulkError::Asked(format!("to_price {to_price} is in no plan of policy/plans.toml: tenants moved to it would have no plan")).into());
    }
    Ok(Item {
        price: to_price.to_owned(),
        product,
        quantity: 1,
        metered: false,
        unit_amount: price["unit_amount"].as_i64(),
        currency: price["currency"].as_str().map(str::to_owned),
        interval: price["recurring"]["interval"].as_str().map(str::to_owned),
        interval_count: price["recurring"]["interval_count"].as_i64(),
    })
}

/// `s`'s MRR with its plan item at `price`, its quantity kept.
fn mrr_after(s: &Subscription, price: &Item) -> Option<(String, i64)> {
    let items: Vec<Item> = s
        .items
        .iter()
        .map(|i| if Some(&i.price) == s.price_id.as_ref() { Item { quantity: i.quantity, ..price.clone() } } else { i.clone() })
        .collect();
    super::revenue::monthly(&items)
}

/// Runs `change` on `cohort`: a dry run lists each subscription and what would change;
/// `execute` acts, resuming an unfinished run of the same operation.
pub async fn run(r: &BulkRun<'_>, cohort: &Cohort, change: &Change, execute: bool, limit: i64) -> Result<BulkReport, BulkRunError> {
    let kind = change.kind();
    let params = json!({"cohort": cohort, "change": change});
    let new_price = match change {
        Change::MovePrice { to_price, .. } => Some(checked_price(r, to_price).await?),
        _ => None,
    };
    let describe = |s: &Subscription| change.describe(s, new_price.as_ref().and_then(|p| mrr_after(s, p)).as_ref());
    let mut unchanged = 0;
    let (operation, resumed, mut targets) = match bulk::unfinished(r.pool, kind, &params).await? {
        Some(id) => (Some(id), true, bulk::targets(r.pool, id).await?),
        None => {
            let chosen = bulk::choose(r.pool, r.plans, cohort, limit).await?;
            if chosen.len() as i64 > limit {
                return Err(BulkError::Asked(format!("the cohort has more than {limit} subscriptions: narrow it, or raise limit=")).into());
            }
            let (already, cohort): (Vec<Subscription>, Vec<Subscription>) = chosen.into_iter().partition(|s| change.holds_for(s));
            unchanged = already.len();
            if execute && !cohort.is_empty() {
                let id = bulk::create(r.pool, kind, &params, r.actor, &cohort).await?;
                (Some(id), false, bulk::targets(r.pool, id).await?)
            } else {
                let pending = cohort.into_iter().map(|s| Target { subscription: s.subscription.clone(), tenant: s.tenant, state: TargetState::Pending, before: s, after: None, error: None, acted_at: None });
                (None, false, pending.collect())
            }
        }
    };
    if let (true, Some(id)) = (execute, operation) {
        let total = targets.len() as u64;
        for (n, target) in targets.iter().enumerate() {
            if target.state == TargetState::Pending {
                act(r, id, target, change, &describe(&target.before)).await?;
            }
            r.progress.report("bulk operation: subscriptions", n as u64 + 1, Some(total));
        }
        bulk::finish(r.pool, id).await?;
        targets = bulk::targets(r.pool, id).await?;
    }
    let count = |state: TargetState| targets.iter().filter(|t| t.state == state).count();
    let failing = targets
        .iter()
        .filter(|t| t.state == TargetState::Failed)
        .map(|t| json!({"tenant": t.tenant, "tenant_name": t.before.tenant_name, "subscription": t.subscription, "error": t.error}))
        .collect();
    let rows = targets
        .iter()
        .map(|t| json!({"tenant": t.tenant, "tenant_name": t.before.tenant_name, "subscription": t.subscription, "change": describe(&t.before), "state": t.state, "error": t.error}))
        .collect();
    Ok(BulkReport {
        operation,
        resumed,
        executed: execute,
        change: change.clone(),
        cohort: targets.len(),
        unchanged,
        done: count(TargetState::Done),
        pending: count(TargetState::Pending),
        failed: count(TargetState::Failed),
        failing,
        targets: rows,
    })
}

/// The call for one target. A price move finds the plan's item at Stripe (the mirror keeps no
/// item ids): the item with the price the cohort was chosen on, or already the new one (a
/// call that reached Stripe before a crash).
async fn request_for(r: &BulkRun<'_>, target: &Target, change: &Change) -> Result<Result<SubscriptionChange, String>, BulkRunError> {
    Ok(Ok(match change {
        Change::MovePrice { to_price, proration } => {
            let current = match r.stripe.retrieve(ObjectKind::Subscription, &target.subscription).await {
                Ok(s) => s,
                Err(StripeApiError::Refused { status, message, .. }) => return Ok(Err(format!("Stripe refused ({status}): {message}"))),
                Err(e) => return Err(BulkRunError::Stripe(e)),
            };
            let items = current["items"]["data"].as_array().cloned().unwrap_or_default();
            let with = |price: Option<&str>| items.iter().find(|i| price.is_some() && i["price"]["id"].as_str() == price).cloned();
            let Some(item) = with(target.before.price_id.as_deref()).or_else(|| with(Some(to_price))) else {
                return Ok(Err(format!("no item with price {} at Stripe any more", target.before.price_id.as_deref().unwrap_or("?"))));
            };
            SubscriptionChange::MovePrice {
                item: item["id"].as_str().unwrap_or_default().to_owned(),
                price: to_price.clone(),
                quantity: item["quantity"].as_i64().unwrap_or(1),
                proration: *proration,
            }
        }
        Change::PauseCollection { behavior } => SubscriptionChange::PauseCollection(*behavior),
        Change::ResumeCollection => SubscriptionChange::ResumeCollection,
        Change::CancelAtPeriodEnd => SubscriptionChange::CancelAtPeriodEnd(true),
        Change::KeepAfterPeriodEnd => SubscriptionChange::CancelAtPeriodEnd(false),
    }))
}

/// Acts on one target and records the answer with the tenant's audit row.
async fn act(r: &BulkRun<'_>, id: Uuid, target: &Target, change: &Change, described: &str) -> Result<(), BulkRunError> {
    let key = format!("bulk_{id}_{}", target.subscription);
    let answer = match request_for(r, target, change).await? {
        Err(refused) => Err(refused),
        Ok(request) => match r.stripe.update_subscription(&target.subscription, &request, &key).await {
            Ok(s) => Ok(json!({"status": s["status"], "pause_collection": s["pause_collection"], "cancel_at_period_end": s["cancel_at_period_end"],
                "prices": s["items"]["data"].as_array().map(|d| d.iter().map(|i| i["price"]["id"].clone()).collect::<Vec<_>>())})),
            Err(StripeApiError::Refused { status, code, message, .. }) => Err(format!("Stripe refused ({status}): {code} {message}")),
            Err(e) => return Err(BulkRunError::Stripe(e)),
        },
    };
    // A crash here leaves the target pending with Stripe's change made: the next run's call
    // carries the same key and is answered with this result.
    crate::fault::point("billing.bulk.after_stripe");
    let (state, after, error, outcome) = match &answer {
        Ok(after) => (TargetState::Done, Some(after), None, crate::audit::Outcome::Ok),
        Err(e) => (TargetState::Failed, None, Some(e.as_str()), crate::audit::Outcome::Failed),
    };
    let params = json!({"operation": id, "subscription": target.subscription, "change": described, "idempotency_key": key, "error": error});
    let mut tx = r.pool.0.begin().await?;
    bulk::settle(&mut tx, id, &target.subscription, state, after, error).await?;
    crate::audit::record(&mut tx, Some(TenantId(target.tenant)), r.actor, kind_action(change.kind()), params, outcome).await?;
    tx.commit().await?;
    Ok(())
}

/// The audit action of each tenant's change.
fn kind_action(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::MovePrice => "bulk.move_price",
        OperationKind::PauseCollection => "bulk.pause_collection",
        OperationKind::ResumeCollection => "bulk.resume_collection",
        OperationKind::CancelAtPeriodEnd => "bulk.cancel_at_period_end",
        OperationKind::KeepAfterPeriodEnd => "bulk.keep_after_period_end",
    }
}
