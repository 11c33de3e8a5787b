//! The capacity load test (`ballast loadtest`): an open-model arrival rate against a target,
//! latency in HDR histograms counted from each request's *scheduled* time (a slow target shows
//! as latency, not as a client that quietly sent less), a report (table and JSON) with a chart,
//! and every run stored so `ballast loadtest history` can draw the baselines over time.

pub mod chart;
mod report;

pub use report::{Expect, Report, Second, Statuses, StoredRun};

use std::collections::BTreeMap;
use crate::assets::ConfigFile;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use hdrhistogram::Histogram;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

/// A load test that could not run or be stored.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// The levels file.
    #[error("{path}: {problem}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// A bad request of the operator (level, target, key).
    #[error("{0}")]
    Invalid(String),
    /// The HTTP client.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// PostgreSQL (storing or reading runs).
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// Writing the report or chart.
    #[error("writing {path}: {problem}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        problem: String,
    },
}

/// How a request authenticates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestAuth {
    /// Anonymous.
    #[default]
    None,
    /// `BALLAST_LOADTEST_KEY`.
    Key,
    /// A well-formed key that does not exist.
    Bogus,
}

/// One weighted request of a level.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// GET this path.
    pub path: String,
    /// How it authenticates.
    #[serde(default)]
    pub auth: RequestAuth,
    /// Share of the arrivals.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// One level.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Arrivals per second.
    pub rate: u32,
    /// How long.
    #[serde(with = "crate::config::duration_text")]
    pub duration: Duration,
    /// What passing means.
    pub expect: Expect,
    /// The mix.
    pub requests: Vec<RequestSpec>,
}

/// The scheduled run.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Base URL of the target; empty: the scheduled run is skipped.
    #[serde(default)]
    pub target: String,
    /// Which level.
    #[serde(default)]
    pub level: String,
}

/// deploy/loadtest.toml.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadtestConfig {
    /// The quarterly run.
    #[serde(default)]
    pub schedule: Schedule,
    /// Levels by name.
    pub levels: BTreeMap<String, Level>,
}

impl LoadtestConfig {
    /// Reads and validates the file.
    pub fn load(file: &ConfigFile) -> Result<Self, LoadtestError> {
        let err = |problem: String| LoadtestError::Config { path: file.shown(), problem };
        let text = file.read().map_err(|e| err(format!("cannot read: {e}")))?;
        let config: Self = toml::from_str(&text).map_err(|e| err(e.message().to_owned()))?;
        for (name, level) in &config.levels {
            if level.rate == 0 || level.rate > 100_000 {
                return Err(err(format!("level {name:?}: rate must be 1 to 100000 per second")));
            }
            if level.duration < Duration::from_secs(1) || level.duration > Duration::from_secs(3600) {
                return Err(err(format!("level {name:?}: duration must be 1s to 1h")));
            }
            if level.requests.is_empty() || level.requests.iter().all(|r| r.weight == 0) {
                return Err(err(format!("level {name:?}: needs at least one request with a weight")));
            }
        }
        Ok(config)
    }
}

/// Most requests in flight before the client stops sending (reported as dropped).
const MAX_IN_FLIGHT: usize = 20_000;

struct Tally {
    all: Option<Histogram<u64>>,
    seconds: Vec<(u64, Statuses, Option<Histogram<u64>>)>,
    statuses: Statuses,
}

fn histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 120_000_000, 3).ok()
}

fn ms(h: Option<&Histogram<u64>>, q: f64) -> f64 {
    h.filter(|h| !h.is_empty()).map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
}

/// Runs `level` against `target` (a base URL) with the load-test key, if any.
pub async fn run(name: &str, level: &Level, target: &str, key: Option<&secrecy::SecretString>) -> Result<Report, LoadtestError> {
    let base = reqwest::Url::parse(target).map_err(|e| LoadtestError::Invalid(format!("--target {target:?}: {e}")))?;
    if level.requests.iter().any(|r| r.auth == RequestAuth::Key) && key.is_none() {
        return Err(LoadtestError::Invalid(format!("level {name:?} sends authenticated requests: set BALLAST_LOADTEST_KEY")));
    }
    let key = key.map(|k| k.expose_secret().to_owned());
    let bogus = format!("bk_{}_{}", "l".repeat(12), "0".repeat(32));
    // The weighted mix as a repeating list of request indexes.
    let mix: Vec<usize> = level.requests.iter().enumerate().flat_map(|(i, r)| std::iter::repeat_n(i, r.weight as usize)).collect();
    let urls: Vec<reqwest::Url> =
        level.requests.iter().map(|r| base.join(&r.path)).collect::<Result<_, _>>().map_err(|e| LoadtestError::Invalid(format!("a request path: {e}")))?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(1024).build()?;
    let total = (f64::from(level.rate) * level.duration.as_secs_f64()).round() as u64;
    let secs = level.duration.as_secs_f64().ceil() as usize;
    let tally = Arc::new(Mutex::new(Tally {
        all: histogram(),
        seconds: (0..secs).map(|_| (0, Statuses::default(), histogram())).collect(),
        statuses: Statuses::default(),
    }));
    let started_at = Utc::now();
    let start = tokio::time::Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut dropped = 0u64;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / f64::from(level.rate));
        tokio::time::sleep_until(due).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let spec = &level.requests[mix[(i as usize) % mix.len()]];
        let mut req = client.get(urls[mix[(i as usize) % mix.len()]].clone());
        match spec.auth {
            RequestAuth::None => {}
            RequestAuth::Key => req = req.bearer_auth(key.as_deref().unwrap_or_default()),
            RequestAuth::Bogus => req = req.bearer_auth(&bogus),
        }
        let (tally, second) = (tally.clone(), ((i as f64 / f64::from(level.rate)) as usize).min(secs.saturating_sub(1)));
        let due_std: Instant = due.into_std();
        tasks.spawn(async move {
            let outcome = req.send().await;
            let latency_us = due_std.elapsed().as_micros().max(1) as u64;
            drop(permit);
            let Ok(mut t) = tally.lock() else { return };
            let class = |s: &mut Statuses| match &outcome {
                Ok(r) if r.status().as_u16() == 429 => s.limited += 1,
                Ok(r) if r.status().is_server_error() => s.server_error += 1,
                Ok(r) if r.status().is_client_error() => s.client_error += 1,
                Ok(_) => s.ok += 1,
                Err(_) => s.failed += 1,
            };
            class(&mut t.statuses);
            if let Some(h) = t.all.as_mut() {
                let _ = h.record(latency_us);
            }
            if let Some((sent, statuses, h)) = t.seconds.get_mut(second) {
                *sent += 1;
                class(statuses);
                if let Some(h) = h.as_mut() {
                    let _ = h.record(latency_us);
                }
            }
        });
        // Reap finished requests as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let t = tally.lock().map_err(|_| LoadtestError::Invalid("a request task panicked".into()))?;
    let s = t.statuses;
    let answered = s.ok + s.limited + s.client_error + s.server_error;
    let (passed, verdict) = match level.expect {
        _ if s.server_error + s.failed > 0 => (false, format!("{} answers were 5xx and {} got no answer", s.server_error, s.failed)),
        Expect::Limited if s.limited == 0 => (false, "the limiter never answered 429".to_owned()),
        Expect::Limited => (true, format!("the limiter answered {} requests with 429 and nothing failed", s.limited)),
        Expect::No5xx => (true, "no 5xx, every request answered".to_owned()),
    };
    Ok(Report {
        level: name.to_owned(),
        target: target.to_owned(),
        started_at,
        rate: level.rate,
        duration_secs: level.duration.as_secs_f64(),
        sent: total - dropped,
        dropped,
        throughput: answered as f64 / elapsed.max(f64::EPSILON),
        p50_ms: ms(t.all.as_ref(), 0.5),
        p90_ms: ms(t.all.as_ref(), 0.9),
        p99_ms: ms(t.all.as_ref(), 0.99),
        max_ms: t.all.as_ref().filter(|h| !h.is_empty()).map_or(0.0, |h| h.max() as f64 / 1000.0),
        statuses: s,
        expect: level.expect,
        passed,
        verdict,
        timeline: t
            .seconds
            .iter()
            .enumerate()
            .map(|(i, (sent, statuses, h))| Second { second: i as u64, sent: *sent, statuses: *statuses, p50_ms: ms(h.as_ref(), 0.5), p99_ms: ms(h.as_ref(), 0.99) })
            .collect(),
    })
}

/// Stores a run (system pool: runs are the fleet's, not a tenant's).
pub async fn store(pool: &sqlx::PgPool, r: &Report) -> Result<uuid::Uuid, LoadtestError> {
    let id = uuid::Uuid::now_v7();
    let report = serde_json::to_value(r).map_err(|e| LoadtestError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO loadtest_runs (id, level, target, started_at, rate, duration_secs, sent, throughput, p50_ms, p99_ms, max_ms, passed, report)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(id)
    .bind(&r.level)
    .bind(&r.target)
    .bind(r.started_at)
    .bind(i32::try_from(r.rate).unwrap_or(i32::MAX))
    .bind(r.duration_secs)
    .bind(i64::try_from(r.sent).unwrap_or(i64::MAX))
    .bind(r.throughput)
    .bind(r.p50_ms)
    .bind(r.p99_ms)
    .bind(r.max_ms)
    .bind(r.passed)
    .bind(report)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Stored runs, oldest first, of one level or all.
pub async fn history(pool: &sqlx::PgPool, level: Option<&str>) -> Result<Vec<StoredRun>, LoadtestError> {
    Ok(sqlx::query_as(
        "SELECT id, level, target, started_at, rate, throughput, p50_ms, p99_ms, passed FROM loadtest_runs
         WHERE $1::text IS NULL OR level = $1 ORDER BY started_at",
    )
    .bind(level)
    .fetch_all(pool)
    .await?)
}

/// Writes `{dir}/{started}-{level}.json` and `.svg`; returns both paths.
pub fn write_report(dir: &Path, r: &Report) -> Result<(std::path::PathBuf, std::path::PathBuf), LoadtestError> {
    let fail = |path: &Path, e: String| LoadtestError::Write { path: path.display().to_string(), problem: e };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, e.to_string()))?;
    let stem = format!("{}-{}", r.started_at.format("%Y%m%dT%H%M%SZ"), r.level);
    let json_path = dir.join(format!("{stem}.json"));
    let svg_path = dir.join(format!("{stem}.svg"));
    let text = serde_json::to_string_pretty(r).map_err(|e| fail(&json_path, e.to_string()))?;
    std::fs::write(&json_path, text).map_err(|e| fail(&json_path, e.to_string()))?;
    chart::run_chart(&svg_path, r).map_err(|e| fail(&svg_path, e))?;
    Ok((json_path, svg_path))
}

/// The scheduled capacity test the `loadtest.run` job runs (`jobs::loadtest_run::CapacityTest`):
/// the levels file's `[schedule]` level against its target, stored for `ballast loadtest history`.
pub struct Scheduled {
    /// The member's settings: the levels file and the key authenticated levels send.
    pub settings: std::sync::Arc<crate::config::Settings>,
    /// Where runs are stored (the fleet's record, across tenants).
    pub pool: crate::db::SystemPool,
}

impl crate::jobs::loadtest_run::CapacityTest for Scheduled {
    fn run_scheduled(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::jobs::loadtest_run::LoadtestRunReport, crate::jobs::loadtest_run::CapacityError>> + Send + '_>> {
        use crate::jobs::loadtest_run::{CapacityError, LoadtestRunReport};
        Box::pin(async move {
            let config = LoadtestConfig::load(&self.settings.loadtest_file).map_err(|e| CapacityError::Refused(e.to_string()))?;
            if config.schedule.target.is_empty() {
                return Ok(LoadtestRunReport::Skipped { skipped: "no [schedule] target in the load-test file" });
            }
            let name = config.schedule.level.clone();
            let level = config.levels.get(&name).ok_or_else(|| CapacityError::Refused(format!("[schedule] level {name:?} is not defined")))?;
            let report = run(&name, level, &config.schedule.target, self.settings.loadtest_key.as_ref()).await.map_err(|e| CapacityError::Refused(e.to_string()))?;
            let id = store(&self.pool.0, &report).await.map_err(|e| CapacityError::Store(e.to_string()))?;
            Ok(LoadtestRunReport::Ran { run: id, level: name, p99_ms: report.p99_ms, throughput: report.throughput, passed: report.passed })
        })
    }
}

/// The member's state hands the `loadtest.run` job this module's capacity test. (Written here,
/// beside what it provides, rather than in state.rs with the other `Provides`: the state would
/// otherwise import perf/, which imports the state to build members for its benchmarks.)
impl crate::jobs::Provides<crate::jobs::loadtest_run::LoadtestDeps> for crate::state::AppState {
    fn provide(&self) -> crate::jobs::loadtest_run::LoadtestDeps {
        let scheduled = Scheduled { settings: self.settings.clone(), pool: self.system_pool.clone() };
        crate::jobs::loadtest_run::LoadtestDeps { capacity: std::sync::Arc::new(scheduled) }
    }
}
