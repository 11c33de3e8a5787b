//! `slo.evaluate` (every minute): burn rates of every SLO over its scaled window pairs, alert
//! transitions stored and their notifications queued, old minute counts removed.

use serde::Deserialize;

use super::kind::{Job, JobContext, JobError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct SloEvaluateJob;

/// Arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloEvaluateArgs {
    /// Evaluate as of this time instead of now.
    #[serde(default)]
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
}

/// What an evaluation did.
#[derive(Debug, serde::Serialize)]
pub struct SloEvaluateReport {
    /// SLOs evaluated.
    pub slos: usize,
    /// Alerts that changed state (each queued a notification).
    pub changed: Vec<String>,
}

impl Job for SloEvaluateJob {
    const KIND: &'static str = "slo.evaluate";
    type Args = SloEvaluateArgs;
    type Report = SloEvaluateReport;
    type Deps = crate::slo::Deps;

    async fn run(&self, args: SloEvaluateArgs, ctx: JobContext<crate::slo::Deps>) -> Result<SloEvaluateReport, JobError> {
        let now = args.as_of.unwrap_or_else(chrono::Utc::now);
        let statuses = crate::slo::evaluate::run(&ctx.state, now, true).await.map_err(|e| JobError::Retry(e.to_string()))?;
        let changed = statuses.iter().flat_map(|s| s.alerts.iter()).filter(|a| a.changed).map(|a| a.alert_key.clone()).collect();
        Ok(SloEvaluateReport { slos: statuses.len(), changed })
    }
}
