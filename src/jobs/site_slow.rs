//! `site.slow` (admin job, runbook site-slow): where the time goes. Reports the SLOs (SLI,
//! budget, burn), the slowest routes over the last minutes (mean latency and share over the
//! latency threshold, from the fleet's per-minute route statistics), queue lag per job kind,
//! the fleet's cache hit ratio, and the slowest statements when pg_stat_statements is
//! installed. It only reports: the pages it points to act.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::kind::{JobContext, JobError};
use super::admin::AdminJob;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct SiteSlowJob;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteSlowParams {
    /// Minutes of route statistics to read (default 15).
    #[serde(default)]
    pub minutes: Option<i64>,
}

impl From<crate::slo::evaluate::SloError> for JobError {
    fn from(e: crate::slo::evaluate::SloError) -> Self {
        JobError::Retry(e.to_string())
    }
}

/// Route → (requests, total µs, slow) over the last `minutes`, from the per-minute hashes.
async fn routes(ctx: &JobContext<super::deps::Fleet>, minutes: i64) -> Result<BTreeMap<String, (i64, i64, i64)>, redis::RedisError> {
    crate::slo::record::route_totals(&ctx.state.redis, &ctx.state.keys, chrono::Utc::now().timestamp().div_euclid(60), minutes).await
}

/// The fleet's cache counters, summed over every member that published in the last minutes.
async fn cache_totals(ctx: &JobContext<super::deps::Fleet>) -> Result<BTreeMap<String, u64>, redis::RedisError> {
    let members = ctx.state.redis.scan(&ctx.state.keys.member_cache_stats_pattern()).await?;
    let mut conn = ctx.state.redis.clone();
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for key in members {
        let hash: BTreeMap<String, u64> = redis::AsyncCommands::hgetall(&mut conn, &key).await?;
        for (k, v) in hash {
            *totals.entry(k).or_default() += v;
        }
    }
    Ok(totals)
}

/// Where the time goes: SLO burn, slow routes, queue lag, cache, statements.
#[derive(Debug, serde::Serialize)]
pub struct SiteSlowReport {
    /// Each SLO with its burn rates.
    pub slos: Vec<serde_json::Value>,
    /// The window looked at.
    pub minutes: i64,
    /// The slowest routes.
    pub slowest_routes: Vec<serde_json::Value>,
    /// Ready jobs and the oldest one's age per kind.
    pub queue_lag: Vec<serde_json::Value>,
    /// Cache reads and hit ratio.
    pub cache: serde_json::Value,
    /// The slowest statements, when pg_stat_statements is installed.
    pub slowest_statements: serde_json::Value,
    /// Always false: the job only looks.
    pub executed: bool,
}

impl AdminJob for SiteSlowJob {
    const KIND: &'static str = "site.slow";
    type Params = SiteSlowParams;
    type Report = SiteSlowReport;
    type Deps = super::deps::Fleet;

    async fn run(&self, p: &SiteSlowParams, _execute: bool, ctx: &JobContext<super::deps::Fleet>) -> Result<SiteSlowReport, JobError> {
        let minutes = p.minutes.unwrap_or(15).clamp(1, 24 * 60);
        let slos = crate::slo::evaluate::run(&ctx.state.slo(), chrono::Utc::now(), false).await?;
        let mut slowest: Vec<_> = routes(ctx, minutes)
            .await?
            .into_iter()
            .filter(|(_, (n, _, _))| *n > 0)
            .map(|(route, (n, us, slow))| (route, n, us as f64 / n as f64 / 1000.0, slow as f64 / n as f64))
            .collect();
        slowest.sort_by(|a, b| b.2.total_cmp(&a.2));
        let queues = ctx.state.queue.stats().await?;
        let cache = cache_totals(ctx).await?;
        let (hits, misses, stale) = (cache.get("hits").copied().unwrap_or(0), cache.get("misses").copied().unwrap_or(0), cache.get("stale_served").copied().unwrap_or(0));
        let reads = hits + misses + stale;
        // System pool: statement statistics are server-wide.
        let pool = &ctx.state.system_pool.0;
        let has_pgss: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')").fetch_one(pool).await?;
        let statements = if has_pgss {
            let rows: Vec<(String, i64, f64)> = sqlx::query_as(
                "SELECT left(query, 200), calls, mean_exec_time FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT 5",
            )
            .fetch_all(pool)
            .await?;
            json!(rows.iter().map(|(q, c, ms)| json!({"query": q, "calls": c, "mean_ms": ms})).collect::<Vec<_>>())
        } else {
            json!("pg_stat_statements is not installed (CREATE EXTENSION pg_stat_statements, with it in shared_preload_libraries)")
        };
        Ok(SiteSlowReport {
            slos: slos.iter().map(|s| json!({
                "slo": s.name, "sli": s.sli, "budget_remaining": s.budget_remaining,
                "burn": s.rules.iter().map(|r| json!({"severity": r.rule.severity, "long": r.long_burn, "short": r.short_burn, "firing": r.firing})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            minutes,
            slowest_routes: slowest.iter().take(10).map(|(route, n, mean_ms, slow)| json!({"route": route, "requests": n, "mean_ms": mean_ms, "slow_share": slow})).collect::<Vec<_>>(),
            queue_lag: queues.iter().map(|q| json!({"kind": q.kind, "ready": q.ready, "oldest_ready_age_secs": q.oldest_ready_age_secs})).collect::<Vec<_>>(),
            cache: json!({"reads": reads, "hit_ratio": if reads == 0 { None } else { Some(hits as f64 / reads as f64) }, "counters": cache}),
            slowest_statements: statements,
            executed: false,
        })
    }
}
