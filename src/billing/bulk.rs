//! The `bulk_operations` and `bulk_targets` tables: an operator's change to a cohort of
//! subscriptions (by plan, by price, or a list of tenants), the cohort chosen from the mirror
//! and written down before anything is sent to Stripe, and each subscription's outcome. The
//! run that acts on them is [`super::bulk_run`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::access::Item;
use super::plans::Plans;
use crate::db::SystemPool;

/// Why a bulk operation cannot be chosen or recorded.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// The database.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// What was asked does not make an operation (no cohort, an unknown plan, a price in no plan).
    #[error("{0}")]
    Asked(String),
}

/// What an operation does to each subscription of its cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    /// The plan's item to another price.
    MovePrice,
    /// Collection paused.
    PauseCollection,
    /// Collection resumed.
    ResumeCollection,
    /// Cancels when the period ends.
    CancelAtPeriodEnd,
    /// A cancel at period end taken back.
    KeepAfterPeriodEnd,
}

impl OperationKind {
    /// The stored spelling (also the audit action's suffix: `bulk.move_price`).
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::MovePrice => "move_price",
            OperationKind::PauseCollection => "pause_collection",
            OperationKind::ResumeCollection => "resume_collection",
            OperationKind::CancelAtPeriodEnd => "cancel_at_period_end",
            OperationKind::KeepAfterPeriodEnd => "keep_after_period_end",
        }
    }
}

/// Where one subscription of a cohort is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Not acted on yet (or acted on at Stripe by a run that crashed before recording it:
    /// the next run sends the same idempotency key and Stripe answers the first result).
    Pending,
    /// Stripe made the change.
    Done,
    /// Stripe refused it (the error says why); not retried.
    Failed,
}

impl TargetState {
    fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Done => "done",
            TargetState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "done" => TargetState::Done,
            "failed" => TargetState::Failed,
            _ => TargetState::Pending,
        }
    }
}

/// Which subscriptions: every condition given must hold; at least one must be given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cohort {
    /// A plan of policy/plans.toml (`starter`): subscriptions whose plan item is that plan's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// A price (`price_…`) on any item of the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// Tenants, by id or external id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
}

/// A live subscription as the mirror holds it: what a dry run shows and a target keeps.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct Subscription {
    /// `sub_…`
    #[sqlx(rename = "id")]
    pub subscription: String,
    /// Its tenant.
    #[sqlx(rename = "tenant_id")]
    pub tenant: Uuid,
    /// The tenant's name.
    pub tenant_name: String,
    /// Stripe status.
    pub status: String,
    /// The plan's price.
    pub price_id: Option<String>,
    /// The plan's product.
    pub product_id: Option<String>,
    /// Monthly recurring revenue, minor units.
    pub mrr_minor: i64,
    /// Its currency.
    pub mrr_currency: Option<String>,
    /// `pause_collection.behavior`, while paused.
    pub pause_collection: Option<String>,
    /// Cancels when the period ends.
    pub cancel_at_period_end: bool,
    /// Every item.
    #[serde(skip)]
    #[sqlx(json)]
    pub items: Vec<Item>,
}

/// Live subscriptions (not canceled, not expired) in `cohort`, at most `limit` + 1 (so the
/// caller can say the cohort is larger than it will act on).
pub async fn choose(pool: &SystemPool, plans: &Plans, cohort: &Cohort, limit: i64) -> Result<Vec<Subscription>, BulkError> {
    if cohort.plan.is_none() && cohort.price.is_none() && cohort.tenants.is_empty() {
        return Err(BulkError::Asked("no cohort: give plan=…, price=… or tenants=… (comma-separated ids or external ids)".into()));
    }
    let plan = match &cohort.plan {
        Some(key) => Some(plans.plans.get(key).ok_or_else(|| BulkError::Asked(format!("no plan {key:?} in policy/plans.toml (plans: {})", plans.plans.keys().cloned().collect::<Vec<_>>().join(", "))))?),
        None => None,
    };
    let tenants = (!cohort.tenants.is_empty()).then_some(&cohort.tenants);
    // The plan's prices and products narrow the scan; which plan an item is in is then decided
    // by the catalogue itself (a price names the more specific entry than its product).
    let mut tx = pool.begin_planned_per_call().await?;
    let rows: Vec<Subscription> = sqlx::query_as(
        "SELECT s.id, s.tenant_id, t.name AS tenant_name, s.status, s.price_id, s.product_id, s.mrr_minor, s.mrr_currency,
                s.pause_collection, s.cancel_at_period_end, s.items
         FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id
         WHERE s.status NOT IN ('canceled', 'incomplete_expired')
           AND ($1::text[] IS NULL OR s.price_id = ANY ($1) OR s.product_id = ANY ($2))
           AND ($3::text IS NULL OR s.price_id = $3 OR s.items @> jsonb_build_array(jsonb_build_object('price', $3::text)))
           AND ($4::text[] IS NULL OR t.id::text = ANY ($4) OR t.external_id = ANY ($4))
         ORDER BY t.name, s.id LIMIT $5",
    )
    .bind(plan.map(|p| &p.prices))
    .bind(plan.map(|p| &p.products))
    .bind(&cohort.price)
    .bind(tenants)
    .bind(limit.saturating_add(1))
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .filter(|s| cohort.plan.as_deref().is_none_or(|key| plans.plan_for(s.price_id.as_deref(), s.product_id.as_deref()).is_some_and(|(k, _)| k == key)))
        .collect())
}

/// The unfinished operation of `kind` with exactly these parameters: a run that stopped.
pub async fn unfinished(pool: &SystemPool, kind: OperationKind, params: &Value) -> Result<Option<Uuid>, BulkError> {
    Ok(sqlx::query_scalar("SELECT id FROM bulk_operations WHERE kind = $1 AND md5(params::text) = md5($2::jsonb::text) AND finished_at IS NULL")
        .bind(kind.as_str())
        .bind(params)
        .fetch_optional(&pool.0)
        .await?)
}

/// Writes a new operation with its cohort, in one transaction, before anything is sent. When
/// another run wrote the same unfinished operation meanwhile, that one is returned.
pub async fn create(pool: &SystemPool, kind: OperationKind, params: &Value, actor: &str, cohort: &[Subscription]) -> Result<Uuid, BulkError> {
    let mut tx = pool.0.begin().await?;
    let created: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO bulk_operations (id, kind, params, actor) VALUES ($1, $2, $3, $4)
         ON CONFLICT (kind, md5(params::text)) WHERE finished_at IS NULL DO NOTHING RETURNING id",
    )
    .bind(Uuid::now_v7())
    .bind(kind.as_str())
    .bind(params)
    .bind(actor)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = created else {
        tx.rollback().await?;
        return unfinished(pool, kind, params).await?.ok_or_else(|| BulkError::Asked("the same operation finished meanwhile; run it again to choose a new cohort".into()));
    };
    let subscriptions: Vec<&str> = cohort.iter().map(|s| s.subscription.as_str()).collect();
    let tenants: Vec<Uuid> = cohort.iter().map(|s| s.tenant).collect();
    let before: Vec<Value> = cohort.iter().map(|s| serde_json::to_value(s).unwrap_or_default()).collect();
    sqlx::query(
        "INSERT INTO bulk_targets (operation_id, subscription_id, tenant_id, before)
         SELECT $1, s, t, b FROM UNNEST ($2::text[], $3::uuid[], $4::jsonb[]) AS u (s, t, b)",
    )
    .bind(id)
    .bind(&subscriptions)
    .bind(&tenants)
    .bind(&before)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// One subscription of an operation.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// `sub_…`
    pub subscription: String,
    /// Its tenant.
    pub tenant: Uuid,
    /// Where it is.
    pub state: TargetState,
    /// The subscription when the cohort was chosen.
    pub before: Subscription,
    /// What Stripe answered, in brief.
    pub after: Option<Value>,
    /// Why Stripe refused.
    pub error: Option<String>,
    /// When Stripe's answer was recorded.
    pub acted_at: Option<DateTime<Utc>>,
}

/// Every target of operation `id`, in the cohort's order.
pub async fn targets(pool: &SystemPool, id: Uuid) -> Result<Vec<Target>, BulkError> {
    type Row = (String, Uuid, String, sqlx::types::Json<Subscription>, Option<Value>, Option<String>, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT subscription_id, tenant_id, state, before, after, error, acted_at FROM bulk_targets
         WHERE operation_id = $1 ORDER BY before->>'tenant_name', subscription_id",
    )
    .bind(id)
    .fetch_all(&pool.0)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Target { subscription: r.0, tenant: r.1, state: TargetState::parse(&r.2), before: r.3.0, after: r.4, error: r.5, acted_at: r.6 })
        .collect())
}

/// Records Stripe's answer for one target, in the caller's transaction (with its audit row).
pub async fn settle(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    subscription: &str,
    state: TargetState,
    after: Option<&Value>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE bulk_targets SET state = $3, after = $4, error = $5, acted_at = now() WHERE operation_id = $1 AND subscription_id = $2")
        .bind(id)
        .bind(subscription)
        .bind(state.as_str())
        .bind(after)
        .bind(error)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks the operation finished when no target is pending: a later run with the same
/// parameters chooses its cohort again.
pub async fn finish(pool: &SystemPool, id: Uuid) -> Result<bool, BulkError> {
    let done = sqlx::query(
        "UPDATE bulk_operations SET finished_at = now() WHERE id = $1 AND finished_at IS NULL
           AND NOT EXISTS (SELECT 1 FROM bulk_targets WHERE operation_id = $1 AND state = 'pending')",
    )
    .bind(id)
    .execute(&pool.0)
    .await?;
    Ok(done.rows_affected() == 1)
}
