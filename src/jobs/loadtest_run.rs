//! `loadtest.run` (quarterly): the capacity baseline against the staging target named in
//! deploy/loadtest.toml `[schedule]`, stored for `ballast loadtest history`. No target: skipped.

use serde::Deserialize;

use super::kind::{Job, JobContext, JobError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadtestRunJob;

/// No arguments: the schedule is in the levels file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadtestRunArgs {}

/// What a scheduled load test did.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub enum LoadtestRunReport {
    /// Nothing to test.
    Skipped {
        /// Why.
        skipped: &'static str,
    },
    /// A run, stored.
    Ran {
        /// The stored run's id.
        run: uuid::Uuid,
        /// The level run.
        level: String,
        /// Latency p99 (ms).
        p99_ms: f64,
        /// Requests/s achieved.
        throughput: f64,
        /// Within the level's thresholds.
        passed: bool,
    },
}

impl Job for LoadtestRunJob {
    const KIND: &'static str = "loadtest.run";
    type Args = LoadtestRunArgs;
    type Report = LoadtestRunReport;
    type Deps = super::deps::Records;

    async fn run(&self, _args: LoadtestRunArgs, ctx: JobContext<super::deps::Records>) -> Result<LoadtestRunReport, JobError> {
        let settings = &ctx.state.settings;
        let config = crate::perf::loadtest::LoadtestConfig::load(&settings.loadtest_file).map_err(|e| JobError::Cancel(e.to_string()))?;
        if config.schedule.target.is_empty() {
            return Ok(LoadtestRunReport::Skipped { skipped: "no [schedule] target in the load-test file" });
        }
        let name = config.schedule.level.clone();
        let level = config.levels.get(&name).ok_or_else(|| JobError::Cancel(format!("[schedule] level {name:?} is not defined")))?;
        let report = crate::perf::loadtest::run(&name, level, &config.schedule.target, settings.loadtest_key.as_ref())
            .await
            .map_err(|e| JobError::Cancel(e.to_string()))?;
        // System pool: runs are the fleet's record.
        let id = crate::perf::loadtest::store(&ctx.state.system_pool.0, &report).await.map_err(|e| JobError::Retry(e.to_string()))?;
        Ok(LoadtestRunReport::Ran { run: id, level: name, p99_ms: report.p99_ms, throughput: report.throughput, passed: report.passed })
    }
}
