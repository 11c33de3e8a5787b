//! "What are they actually doing": a tenant's usage per metric per day with the month's running
//! total against its monthly limit (the plan's, or an override's), and which features its app
//! checked per day — as JSON for a chart. A read model over `usage_ledger` (flushed every
//! minute), `usage_items` not flushed yet, and `feature_checks`.

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};

use crate::billing::plans::UsageLimit;
use crate::db::SystemPool;
use crate::newtypes::TenantId;

/// One metric's units on one day.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MetricDay {
    /// The day (UTC).
    pub day: NaiveDate,
    /// The metric.
    pub metric: String,
    /// Units used that day.
    pub quantity: i64,
    /// Units used in that day's calendar month up to and including it (what the limit counts).
    pub month_to_date: i64,
}

/// One feature's checks on one day.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FeatureDay {
    /// The day (UTC).
    pub day: NaiveDate,
    /// The feature.
    pub feature: String,
    /// How many times the tenant's app asked whether it may use it.
    pub checks: i64,
}

/// A metric's monthly limit, as it applies now.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct MetricLimit {
    /// Units per calendar month.
    pub limit: i64,
    /// Past it, usage is billed as overage instead of refused.
    pub overage: bool,
}

/// The report.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// The tenant.
    pub tenant_id: uuid::Uuid,
    /// The first day reported.
    pub from: NaiveDate,
    /// Each metered metric's monthly limit now (overrides applied); empty without a plan.
    pub limits: BTreeMap<String, MetricLimit>,
    /// Units per metric per day, oldest first.
    pub usage: Vec<MetricDay>,
    /// Entitlement checks per feature per day, oldest first.
    pub features: Vec<FeatureDay>,
}

/// The last `days` days of `tenant`'s usage and feature checks, with `limits` (the plan's, an
/// override applied).
pub async fn report(pool: &SystemPool, tenant: TenantId, days: u32, limits: Option<&BTreeMap<String, UsageLimit>>) -> Result<UsageReport, sqlx::Error> {
    let today = Utc::now().date_naive();
    let from = today - chrono::Duration::days(i64::from(days.clamp(1, 400)) - 1);
    // Counted from the first day's month, so the running total is the month's.
    let usage: Vec<MetricDay> = sqlx::query_as(
        "SELECT day, metric, quantity, month_to_date FROM (
             SELECT day, metric, quantity,
                    sum(quantity) OVER (PARTITION BY metric, date_trunc('month', day) ORDER BY day)::bigint AS month_to_date
             FROM (SELECT (date_trunc('day', usage_minute AT TIME ZONE 'UTC'))::date AS day, metric, sum(quantity)::bigint AS quantity
                   FROM (SELECT usage_minute, metric, quantity FROM usage_ledger WHERE tenant_id = $1 AND usage_minute >= date_trunc('month', $2::date)
                         UNION ALL
                         SELECT usage_minute, metric, quantity FROM usage_items
                         WHERE tenant_id = $1 AND flush_id IS NULL AND usage_minute >= date_trunc('month', $2::date)) units
                   GROUP BY 1, 2) per_day
         ) running
         WHERE day >= $2 ORDER BY day, metric",
    )
    .bind(tenant.0)
    .bind(from)
    .fetch_all(&pool.0)
    .await?;
    let features: Vec<FeatureDay> =
        sqlx::query_as("SELECT day, feature, checks FROM feature_checks WHERE tenant_id = $1 AND day >= $2 ORDER BY day, feature")
            .bind(tenant.0)
            .bind(from)
            .fetch_all(&pool.0)
            .await?;
    let limits = limits.map(|l| l.iter().map(|(m, u)| (m.clone(), MetricLimit { limit: u.limit, overage: u.overage })).collect()).unwrap_or_default();
    Ok(UsageReport { tenant_id: tenant.0, from, limits, usage, features })
}
