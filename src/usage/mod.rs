//! Usage metering. App services post batches of usage. Each item is counted once per
//! idempotency key (24 h) into its calendar month's counter in Redis (the limit check, one Lua
//! call per batch), then stored in PostgreSQL's `usage_items` before the answer: PostgreSQL,
//! not Redis, is the copy of money. The flush (`flush`) moves stored items into the ledger
//! exactly once and reports ledger rows to Stripe as billing meter events.

pub mod flush;
pub mod ledger;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::billing::plans::UsageLimit;
use crate::newtypes::TenantId;
use crate::redis_keys::RedisKeys;

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
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageItem {
    /// A metric of the tenant's plan.
    pub metric: String,
    /// Units, positive.
    pub quantity: i64,
    /// When the usage happened: RFC 3339, or Unix seconds as Stripe's meter events take it.
    #[serde(deserialize_with = "rfc3339_or_unix")]
    #[schema(schema_with = rfc3339_or_unix_schema)]
    pub timestamp: DateTime<Utc>,
    /// Counted once per key for 24 hours.
    pub idempotency_key: String,
}

/// What [`rfc3339_or_unix`] reads, for the OpenAPI document.
fn rfc3339_or_unix_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, SchemaFormat, KnownFormat, Type};
    AnyOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))))
        .item(ObjectBuilder::new().schema_type(Type::Integer).description(Some("Unix seconds")))
        .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]+$")).description(Some("Unix seconds as digits")))
        .build()
        .into()
}

/// A time as RFC 3339 text or as Unix seconds (a JSON integer or digits in a string).
fn rfc3339_or_unix<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(i64),
        Text(String),
    }
    let unix = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).ok_or_else(|| serde::de::Error::custom(format!("{s}: not a time in Unix seconds")));
    match Raw::deserialize(d)? {
        Raw::Seconds(s) => unix(s),
        Raw::Text(t) => match t.parse::<i64>() {
            Ok(s) => unix(s),
            Err(_) => DateTime::parse_from_rfc3339(&t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| serde::de::Error::custom(format!("{t:?}: expected RFC 3339 (2026-12-01T09:00:00Z) or Unix seconds: {e}"))),
        },
    }
}

/// The body of `POST /v1/usage`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// The tenant's plan's metered limits (from its entitlements' plan), each raised or lowered by
/// a live usage-limit override.
pub async fn limits_of(state: &Deps, tenant: TenantId) -> Result<Option<std::collections::BTreeMap<String, UsageLimit>>, UsageError> {
    let mut tx = state.tenant_pool.begin(tenant).await?;
    let plan: Option<String> = sqlx::query_scalar("SELECT plan_id FROM entitlements WHERE plan_id IS NOT NULL LIMIT 1").fetch_optional(&mut *tx).await?;
    let overrides = crate::billing::overrides::live(&mut tx).await?;
    tx.commit().await?;
    let mut limits = plan.and_then(|p| state.plans.plans.get(&p)).map(|p| p.usage.clone());
    if let Some(limits) = &mut limits {
        for (metric, value) in crate::billing::overrides::usage_limits(&overrides) {
            if let Some(l) = limits.get_mut(metric) {
                l.limit = value;
            }
        }
    }
    Ok(limits)
}

/// Checks a batch against the plan and the time window; the first bad item refuses it all.
pub fn validate(items: &[UsageItem], limits: &std::collections::BTreeMap<String, UsageLimit>, now: DateTime<Utc>) -> Result<(), InvalidItem> {
    let bad = |item, field, message: String| InvalidItem { item, field, message };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(bad(0, "items", format!("a batch holds 1 to {MAX_BATCH} items, not {}", items.len())));
    }
    for (i, it) in items.iter().enumerate() {
        if !limits.contains_key(&it.metric) {
            return Err(bad(i, "metric", format!("{:?} is not metered by the tenant's plan", crate::newtypes::truncated(&it.metric, 80))));
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

/// Records a validated batch: its units are counted against the month's limits in Redis (one
/// script call, atomic), then every item is written to PostgreSQL's `usage_items` before the
/// caller answers — the durable copy the flush bills from, so a Redis crash loses no unit.
/// An item already stored (the same idempotency key) is not stored again; `counted` and
/// `duplicates` are what PostgreSQL found. If the write fails the caller answers 503 and the
/// client's retry stores what is missing (Redis then skips the items it already counted).
pub async fn record(deps: &Deps, tenant: TenantId, items: &[UsageItem], limits: &BTreeMap<String, UsageLimit>, now: DateTime<Utc>) -> Result<Recorded, UsageError> {
    let warned = match count(deps, tenant, items, limits, false).await? {
        Counted::Seed(missing) => {
            seed_counters(deps, tenant, missing.iter().filter_map(|i| items.get(*i))).await?;
            match count(deps, tenant, items, limits, true).await? {
                Counted::Ok(warned) => warned,
                Counted::Seed(_) => Vec::new(),
            }
        }
        Counted::Ok(warned) => warned,
    };
    let stored = store(deps, tenant, items, now).await?;
    Ok(Recorded { counted: stored as i64, duplicates: (items.len() - stored) as i64, warned })
}

enum Counted {
    /// Counted; the metrics that crossed 80 % with it.
    Ok(Vec<String>),
    /// Month counters are missing for these items (indexes): seed them and count again.
    Seed(Vec<usize>),
}

/// The limit counters' script: one round trip, every key the tenant's (one Cluster slot).
async fn count(deps: &Deps, tenant: TenantId, items: &[UsageItem], limits: &BTreeMap<String, UsageLimit>, seeded: bool) -> Result<Counted, UsageError> {
    let mut inv = RECORD.prepare_invoke();
    inv.arg(RedisKeys::USAGE_DEDUP_TTL.as_secs()).arg(RedisKeys::USAGE_PERIOD_TTL.as_secs()).arg(items.len()).arg(if seeded { "1" } else { "0" });
    for it in items {
        let m = month(it.timestamp);
        let limit = limits.get(&it.metric).copied().unwrap_or(UsageLimit { limit: -1, overage: true });
        inv.key(deps.keys.usage_dedup(tenant, &it.idempotency_key))
            .key(deps.keys.usage_period(tenant, &it.metric, &m))
            .key(deps.keys.usage_warned(tenant, &it.metric, &m));
        inv.arg(it.quantity).arg(limit.limit).arg(if limit.overage { "1" } else { "0" }).arg(&it.metric);
    }
    let mut conn = deps.redis.clone();
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
    match text(out.first()).as_str() {
        "limit" => Err(UsageError::Limit { metric: text(out.get(1)), limit: int(out.get(2)), used: int(out.get(3)) }),
        "seed" => Ok(Counted::Seed(out.iter().skip(1).map(|v| int(Some(v)) as usize - 1).collect())),
        _ => Ok(Counted::Ok(out.iter().skip(3).map(|v| text(Some(v))).collect())),
    }
}

/// Sets missing month counters from PostgreSQL (the ledger plus items not flushed yet), so a
/// new month starts at what is stored and a Redis that lost its data counts on from the truth.
/// `SET NX`: a counter another request seeded meanwhile is kept.
async fn seed_counters<'i>(deps: &Deps, tenant: TenantId, items: impl Iterator<Item = &'i UsageItem>) -> Result<(), UsageError> {
    let mut tx = deps.tenant_pool.begin(tenant).await?;
    let mut seeds = Vec::new();
    for it in items {
        let start = month_start(it.timestamp);
        let used: i64 = sqlx::query_scalar(
            "SELECT ((SELECT coalesce(sum(quantity), 0) FROM usage_ledger WHERE metric = $1 AND usage_minute >= $2 AND usage_minute < $3)
                  + (SELECT coalesce(sum(quantity), 0) FROM usage_items WHERE flush_id IS NULL AND metric = $1 AND usage_minute >= $2 AND usage_minute < $3))::bigint",
        )
        .bind(&it.metric)
        .bind(start)
        .bind(next_period(it.timestamp))
        .fetch_one(&mut *tx)
        .await?;
        seeds.push((deps.keys.usage_period(tenant, &it.metric, &month(it.timestamp)), used));
    }
    tx.commit().await?;
    let mut conn = deps.redis.clone();
    for (key, used) in seeds {
        // One key per command: each may live on a different shard only if tenants differ,
        // and these are one tenant's, but the command stays single-key anyway.
        let _: Option<String> = redis::cmd("SET").arg(&key).arg(used).arg("NX").arg("EX").arg(RedisKeys::USAGE_PERIOD_TTL.as_secs()).query_async(&mut conn).await?;
    }
    Ok(())
}

/// Writes the batch to `usage_items` (one statement); returns how many were new.
async fn store(deps: &Deps, tenant: TenantId, items: &[UsageItem], now: DateTime<Utc>) -> Result<usize, UsageError> {
    let keys: Vec<&str> = items.iter().map(|i| i.idempotency_key.as_str()).collect();
    let metrics: Vec<&str> = items.iter().map(|i| i.metric.as_str()).collect();
    let quantities: Vec<i64> = items.iter().map(|i| i.quantity).collect();
    let minutes: Vec<DateTime<Utc>> = items.iter().map(|i| minute_of(i.timestamp)).collect();
    let mut tx = deps.tenant_pool.begin(tenant).await?;
    let stored = sqlx::query(
        "INSERT INTO usage_items (tenant_id, idempotency_key, metric, quantity, usage_minute, received_at)
         SELECT $1, k, m, q, u, $6 FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::timestamptz[]) AS r (k, m, q, u)
         ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
    )
    .bind(tenant.0)
    .bind(&keys)
    .bind(&metrics)
    .bind(&quantities)
    .bind(&minutes)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(stored as usize)
}

/// The minute a usage item is billed in (Stripe aggregates meter events; the ledger keeps
/// one row per minute).
fn minute_of(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp().div_euclid(60) * 60, 0).unwrap_or(t)
}

/// The start of `t`'s month (UTC).
fn month_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)).map(|d| d.and_utc()).unwrap_or(t)
}

/// This month's units of every metered metric of the tenant, from PostgreSQL: flushed (the
/// ledger) and stored but not flushed yet (`usage_items`).
pub async fn current(state: &Deps, tenant: TenantId, now: DateTime<Utc>) -> Result<CurrentUsage, UsageError> {
    let limits = limits_of(state, tenant).await?.ok_or(UsageError::NoPlan)?;
    let m = month(now);
    let (start, end) = (month_start(now), next_period(now));
    let mut tx = state.tenant_pool.begin(tenant).await?;
    let sums: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT metric, sum(flushed)::bigint, sum(unflushed)::bigint FROM (
             SELECT metric, quantity AS flushed, 0 AS unflushed FROM usage_ledger WHERE usage_minute >= $1 AND usage_minute < $2
             UNION ALL
             SELECT metric, 0, quantity FROM usage_items WHERE flush_id IS NULL AND usage_minute >= $1 AND usage_minute < $2
         ) u GROUP BY metric",
    )
    .bind(start)
    .bind(end)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let metrics = limits.iter().map(|(metric, limit)| {
        let (flushed, unflushed) = sums.iter().find(|(x, _, _)| x == metric).map(|(_, f, u)| (*f, *u)).unwrap_or((0, 0));
        (metric.clone(), MetricUsage { used: flushed + unflushed, flushed, unflushed, limit: limit.limit, overage: limit.overage })
    });
    Ok(CurrentUsage { tenant, month: format!("{}-{}", &m[..4], &m[4..]), metrics: metrics.collect() })
}

/// This month's usage of a tenant (`GET /v1/usage`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CurrentUsage {
    /// The tenant.
    pub tenant: TenantId,
    /// The calendar month (UTC), `2026-12`.
    pub month: String,
    /// Every metric of the tenant's plan.
    pub metrics: std::collections::BTreeMap<String, MetricUsage>,
}

/// One metric's units this month.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MetricUsage {
    /// Flushed plus not yet flushed.
    pub used: i64,
    /// In the ledger (reported to Stripe or about to be).
    pub flushed: i64,
    /// Recorded, waiting for the next flush.
    pub unflushed: i64,
    /// The plan's monthly limit.
    pub limit: i64,
    /// Past the limit, usage is billed as overage instead of refused.
    pub overage: bool,
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

/// What usage intake, reads and the flush use (handles: cheap to clone, so a job holds them).
#[derive(Clone)]
pub struct Deps {
    /// Tenant transactions (plan, reads).
    pub tenant_pool: crate::db::TenantPool,
    /// The ledger, written by the flush across tenants.
    pub system_pool: crate::db::SystemPool,
    /// The counters.
    pub redis: crate::redis_conn::RedisConn,
    /// The counters' key names.
    pub keys: crate::redis_keys::RedisKeys,
    /// Metered limits and meter event names.
    pub plans: std::sync::Arc<crate::billing::plans::Plans>,
    /// Meter events.
    pub stripe: crate::stripe_api::StripeApi,
}
