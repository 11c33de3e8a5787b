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

/// A scheduled capacity test, as the job needs it: run the levels file's `[schedule]` level
/// against its target and store the run. The load generator is performance tooling, which
/// builds on the whole member and so sits with the edges (`perf::loadtest`); the member's
/// state hands the job an implementation, so the job layer imports nothing above it.
pub trait CapacityTest: Send + Sync {
    /// Runs the scheduled level and stores it.
    fn run_scheduled(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<LoadtestRunReport, CapacityError>> + Send + '_>>;
}

/// Why a scheduled capacity test did not run or was not kept.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// The levels file or the run itself is wrong: running again will not help.
    #[error("{0}")]
    Refused(String),
    /// The run could not be stored: try again.
    #[error("{0}")]
    Store(String),
}

/// What the job uses.
#[derive(Clone)]
pub struct LoadtestDeps {
    /// The capacity test of this member's settings.
    pub capacity: std::sync::Arc<dyn CapacityTest>,
}

impl Job for LoadtestRunJob {
    const KIND: &'static str = "loadtest.run";
    type Args = LoadtestRunArgs;
    type Report = LoadtestRunReport;
    type Deps = LoadtestDeps;

    async fn run(&self, _args: LoadtestRunArgs, ctx: JobContext<LoadtestDeps>) -> Result<LoadtestRunReport, JobError> {
        ctx.state.capacity.run_scheduled().await.map_err(|e| match e {
            CapacityError::Refused(why) => JobError::Cancel(why),
            CapacityError::Store(why) => JobError::Retry(why),
        })
    }
}
