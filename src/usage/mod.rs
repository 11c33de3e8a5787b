//! Usage metering. App services post batches of usage; each item is counted once per
//! idempotency key (24 h) into Redis — the minute it arrived (the flush window) and its
//! calendar month (the limit check) — in one Lua call per batch. The flush (`flush`) moves
//! closed windows into the PostgreSQL ledger exactly once and reports ledger rows to Stripe
//! as billing meter events.

pub mod flush;

use std::sync::LazyLock;

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::billing::plans::UsageLimit;
use crate::domain::TenantId;
use crate::keys::Keys;

/// Largest quantity of one item.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// Most items in one batch.
pub const MAX_BATCH: usize = 1000;
/// How far ahead a timestamp may be (Stripe's meter-event window).
pub const MAX_AHEAD: Duration = Duration::minutes(5);
/// How old a timestamp may be (Stripe's meter-event window).
pub const MAX_AGE: Duration = Duration::days(35);

static RECORD: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(include_str!("lua/record.lua")));

/// One usage item as posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageItem {
    /// A metric of the tenant's plan.
    pub metric: String,
    /// Units, positive.
    pub quantity: i64,
    /// When the usage happened (RFC 3339).
    pub timestamp: DateTime<Utc>,
    /// Counted once per key for 24 hours.
    pub idempotency_key: String,
}

/// The body of `POST /v1/usage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// 1 to [`MAX_BATCH`] items, refused together if one is bad.
    pub items: Vec<UsageItem>,
}

impl UsageBatch {
    /// Parses a posted body (the API does the same through axum's JSON extractor).
    pub fn parse(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// A refused batch: which item and field, and why.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("item {item}: {field}: {message}")]
pub struct InvalidItem {
    /// Index in the batch.
    pub item: usize,
    /// The field at fault.
    pub field: &'static str,
    /// Why.
    pub message: String,
}

/// Errors of recording usage.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The batch is malformed.
    #[error(transparent)]
    Invalid(#[from] InvalidItem),
    /// The tenant has no plan with metered usage.
    #[error("the tenant has no plan with metered usage")]
    NoPlan,
    /// A month's limit would be passed.
    #[error("limit of {metric} reached: {used} of {limit} used this month")]
    Limit {
        /// Metric.
        metric: String,
        /// The plan's limit.
        limit: i64,
        /// Units used this month.
        used: i64,
    },
    /// Redis failed (nothing was recorded).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// The tenant transaction could not start.
    #[error(transparent)]
    Tx(#[from] crate::db::DbError),
}

/// What a batch did.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// Items counted now.
    pub counted: i64,
    /// Items whose idempotency key was already counted.
    pub duplicates: i64,
    /// Metrics that crossed 80 % of their limit with this batch.
    pub warned: Vec<String>,
}

/// The start of the month after `t`'s (UTC): when monthly limits reset.
pub fn next_period(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::TimeZone;
    let (year, month) = if t.month() == 12 { (t.year() + 1, 1) } else { (t.year(), t.month() + 1) };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().unwrap_or(t)
}

/// `YYYYMM` of a time.
pub fn month(t: DateTime<Utc>) -> String {
    format!("{:04}{:02}", t.year(), t.month())
}

/// The tenant's plan's metered limits (from its entitlements' plan).
pub async fn limits_of(state: &Deps<'_>, tenant: TenantId) -> Result<Option<std::collections::BTreeMap<String, UsageLimit>>, UsageError> {
    let mut tx = state.tenant_pool.begin(tenant).await?;
    let plan: Option<String> = sqlx::query_scalar("SELECT plan_id FROM entitlements WHERE plan_id IS NOT NULL LIMIT 1").fetch_optional(&mut *tx).await?;
    tx.commit().await?;
    Ok(plan.and_then(|p| state.plans.plans.get(&p)).map(|p| p.usage.clone()))
}

/// Checks a batch against the plan and the time window; the first bad item refuses it all.
pub fn validate(items: &[UsageItem], limits: &std::collections::BTreeMap<String, UsageLimit>, now: DateTime<Utc>) -> Result<(), InvalidItem> {
    let bad = |item, field, message: String| InvalidItem { item, field, message };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(bad(0, "items", format!("a batch holds 1 to {MAX_BATCH} items, not {}", items.len())));
    }
    for (i, it) in items.iter().enumerate() {
        if !limits.contains_key(&it.metric) {
            return Err(bad(i, "metric", format!("{:?} is not metered by the tenant's plan", crate::domain::truncated(&it.metric, 80))));
        }
        if it.quantity <= 0 || it.quantity > MAX_QUANTITY {
            return Err(bad(i, "quantity", format!("must be between 1 and {MAX_QUANTITY}")));
        }
        if it.timestamp > now + MAX_AHEAD {
            return Err(bad(i, "timestamp", "more than 5 minutes in the future".into()));
        }
        if it.timestamp < now - MAX_AGE {
            return Err(bad(i, "timestamp", "older than 35 days (Stripe's meter-event window)".into()));
        }
        if it.idempotency_key.is_empty() || it.idempotency_key.len() > 200 {
            return Err(bad(i, "idempotency_key", "must be 1 to 200 characters".into()));
        }
    }
    Ok(())
}

/// Records a validated batch in one Redis round trip.
pub async fn record(
    keys: &Keys,
    redis: &redis::aio::ConnectionManager,
    tenant: TenantId,
    items: &[UsageItem],
    limits: &std::collections::BTreeMap<String, UsageLimit>,
    now: DateTime<Utc>,
) -> Result<Recorded, UsageError> {
    let arrival = now.timestamp().div_euclid(60);
    let mut inv = RECORD.prepare_invoke();
    inv.key(keys.usage_windows())
        .key(keys.usage_window(arrival))
        .arg(arrival)
        .arg(Keys::USAGE_DEDUP_TTL.as_secs())
        .arg(Keys::USAGE_PERIOD_TTL.as_secs())
        .arg(items.len());
    for it in items {
        let m = month(it.timestamp);
        let limit = limits.get(&it.metric).copied().unwrap_or(UsageLimit { limit: -1, overage: true });
        inv.arg(keys.usage_dedup(tenant, &it.idempotency_key))
            .arg(format!("{tenant}|{}|{}", it.metric, it.timestamp.timestamp().div_euclid(60)))
            .arg(keys.usage_period(tenant, &it.metric, &m))
            .arg(it.quantity)
            .arg(limit.limit)
            .arg(if limit.overage { "1" } else { "0" })
            .arg(keys.usage_warned(tenant, &it.metric, &m))
            .arg(&it.metric);
    }
    let mut conn = redis.clone();
    let out: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
    let text = |v: Option<&redis::Value>| -> String {
        match v {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        }
    };
    let int = |v: Option<&redis::Value>| -> i64 {
        match v {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        }
    };
    if text(out.first()) == "limit" {
        return Err(UsageError::Limit { metric: text(out.get(1)), limit: int(out.get(2)), used: int(out.get(3)) });
    }
    Ok(Recorded { counted: int(out.get(1)), duplicates: int(out.get(2)), warned: out.iter().skip(3).map(|v| text(Some(v))).collect() })
}

/// This month's units of every metered metric of the tenant: total (flushed or not, from
/// Redis) and flushed (the ledger).
pub async fn current(state: &Deps<'_>, tenant: TenantId, now: DateTime<Utc>) -> Result<serde_json::Value, UsageError> {
    let limits = limits_of(state, tenant).await?.ok_or(UsageError::NoPlan)?;
    let m = month(now);
    let start = now.date_naive().with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc()).unwrap_or(now);
    let mut tx = state.tenant_pool.begin(tenant).await?;
    let flushed: Vec<(String, i64)> = sqlx::query_as(
        "SELECT metric, sum(quantity)::bigint FROM usage_ledger WHERE usage_minute >= $1 GROUP BY metric",
    )
    .bind(start)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut conn = state.redis.clone();
    let mut out = serde_json::Map::new();
    for (metric, limit) in &limits {
        let total: Option<i64> = redis::cmd("GET").arg(state.keys.usage_period(tenant, metric, &m)).query_async(&mut conn).await?;
        let flushed = flushed.iter().find(|(x, _)| x == metric).map(|(_, n)| *n).unwrap_or(0);
        let total = total.unwrap_or(0).max(flushed);
        out.insert(
            metric.clone(),
            serde_json::json!({"used": total, "flushed": flushed, "unflushed": total - flushed, "limit": limit.limit, "overage": limit.overage}),
        );
    }
    Ok(serde_json::json!({"tenant": tenant, "month": format!("{}-{}", &m[..4], &m[4..]), "metrics": out}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_item_and_field() {
        let now = Utc::now();
        let limits = std::collections::BTreeMap::from([("api_calls".to_owned(), UsageLimit { limit: 10, overage: false })]);
        let item = |metric: &str, q: i64, t: DateTime<Utc>| UsageItem { metric: metric.into(), quantity: q, timestamp: t, idempotency_key: "k".into() };
        assert!(validate(&[item("api_calls", 1, now)], &limits, now).is_ok());
        let cases = [
            (item("nope", 1, now), "metric"),
            (item("api_calls", 0, now), "quantity"),
            (item("api_calls", 1, now + Duration::minutes(6)), "timestamp"),
            (item("api_calls", 1, now - Duration::days(36)), "timestamp"),
        ];
        for (bad, field) in cases {
            let e = validate(&[item("api_calls", 1, now), bad], &limits, now).expect_err(field);
            assert_eq!((e.item, e.field), (1, field));
        }
        assert_eq!(month(DateTime::parse_from_rfc3339("2026-03-09T10:00:00Z").expect("t").with_timezone(&Utc)), "202603");
    }
}

/// What usage intake, reads and the flush use.
#[derive(Clone, Copy)]
pub struct Deps<'a> {
    /// Tenant transactions (plan, reads).
    pub tenant_pool: &'a crate::db::TenantPool,
    /// The ledger, written by the flush across tenants.
    pub system_pool: &'a crate::db::SystemPool,
    /// The counters.
    pub redis: &'a redis::aio::ConnectionManager,
    /// The counters' key names.
    pub keys: &'a crate::keys::Keys,
    /// Metered limits and meter event names.
    pub plans: &'a crate::billing::plans::Plans,
    /// Meter events.
    pub stripe: &'a crate::stripe::client::StripeApi,
}
