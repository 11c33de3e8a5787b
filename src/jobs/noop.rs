//! `noop`: does nothing. Smoke tests and the job-engine benchmark run it.

use serde::Deserialize;

use super::kind::{Job, JobContext, JobError};

/// The no-op job.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

/// Arguments: none are needed; unknown fields are refused so a typo is caught, not ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopArgs {
    /// Sleep this long first: drills use it to have jobs in flight (shutdown) or hung (timeouts).
    #[serde(default)]
    pub sleep_ms: u64,
}

impl Job for Noop {
    const KIND: &'static str = "noop";
    type Args = NoopArgs;
    type Report = ();
    type Deps = ();

    async fn run(&self, args: NoopArgs, _ctx: JobContext<()>) -> Result<(), JobError> {
        if args.sleep_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(args.sleep_ms)).await;
        }
        Ok(())
    }
}
