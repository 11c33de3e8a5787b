//! Job kinds that exist only in tests: one that fails on demand, one that hangs, one that is slow.

use std::time::Duration;

use ballast::jobs::{Job, JobContext, JobError, JobReport};
use ballast::state::{AppState, Registry};
use redis::AsyncCommands;
use serde::Deserialize;

/// Job catalogue entries for the test kinds.
pub const ENTRIES: &[(&str, &str)] = &[
    (
        "test.flaky",
        r#"kind = "test.flaky"
description = "Fails while a Redis key exists."
concurrency = 4
timeout_secs = 5
max_attempts = 3
backoff = { base_secs = 30, max_secs = 60, jitter = 0.2 }
"#,
    ),
    (
        "test.hang",
        r#"kind = "test.hang"
description = "Never returns."
concurrency = 4
timeout_secs = 0.2
max_attempts = 2
backoff = { base_secs = 60, max_secs = 60, jitter = 0.0 }
"#,
    ),
    (
        "test.slow",
        r#"kind = "test.slow"
description = "Takes a while."
concurrency = 4
timeout_secs = 10
max_attempts = 1
backoff = { base_secs = 1, max_secs = 1, jitter = 0.0 }
"#,
    ),
];

/// The standard registry plus the test kinds.
pub fn registry() -> Registry {
    Registry::standard().with(Flaky).with(Hang).with(Slow)
}

pub struct Flaky;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlakyArgs {
    /// The job fails while this Redis key exists.
    pub fail_while_key: String,
}

impl Job for Flaky {
    const KIND: &'static str = "test.flaky";
    type Args = FlakyArgs;
    type Report = JobReport;
    type Deps = AppState;
    async fn run(&self, args: FlakyArgs, ctx: JobContext<AppState>) -> Result<JobReport, JobError> {
        let mut conn = ctx.state.redis.clone();
        let exists: bool = conn.exists(&args.fail_while_key).await?;
        if exists {
            return Err(JobError::Retry(format!("asked to fail (attempt {})", ctx.attempt)));
        }
        Ok(serde_json::json!({"ok": true}))
    }
}

pub struct Hang;

impl Job for Hang {
    const KIND: &'static str = "test.hang";
    type Args = serde_json::Value;
    type Report = JobReport;
    type Deps = ();
    async fn run(&self, _args: serde_json::Value, _ctx: JobContext<()>) -> Result<JobReport, JobError> {
        std::future::pending::<()>().await;
        Ok(serde_json::Value::Null)
    }
}

pub struct Slow;

#[derive(Deserialize)]
pub struct SlowArgs {
    pub ms: u64,
}

impl Job for Slow {
    const KIND: &'static str = "test.slow";
    type Args = SlowArgs;
    type Report = JobReport;
    type Deps = ();
    async fn run(&self, args: SlowArgs, _ctx: JobContext<()>) -> Result<JobReport, JobError> {
        // Simulated work, not synchronisation: the test waits on run events.
        tokio::time::sleep(Duration::from_millis(args.ms)).await;
        Ok(serde_json::json!({"slept_ms": args.ms}))
    }
}
