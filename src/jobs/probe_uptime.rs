//! `probe.uptime` (every minute, from the scheduler): the uptime checks of
//! crate::health::probe against each public listener in `BALLAST_PROBE_URLS` (nothing to do
//! when none is set): a signed test webhook and an entitlement read, timed end to end.

use serde::Deserialize;

use super::kind::{Job, JobContext, JobError};
use crate::health::probe::{self, ProbeConfig, ProbeResult};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeUptimeJob;

/// Arguments: none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeArgs {}

/// What one round found.
#[derive(Debug, serde::Serialize)]
pub struct ProbeReport {
    /// Every check's result.
    pub results: Vec<ProbeResult>,
}

impl Job for ProbeUptimeJob {
    const KIND: &'static str = "probe.uptime";
    type Args = ProbeArgs;
    type Report = ProbeReport;
    type Deps = crate::slo::Deps;

    async fn run(&self, _args: ProbeArgs, ctx: JobContext<crate::slo::Deps>) -> Result<ProbeReport, JobError> {
        let s = &ctx.state.settings;
        let config = ProbeConfig { urls: s.probe_urls.clone(), webhook_secret: s.stripe_webhook_secrets.first().cloned(), api_key: s.probe_api_key.clone() };
        let results = probe::run(&config, &ctx.state.system_pool, &ctx.state.slos, chrono::Utc::now()).await?;
        Ok(ProbeReport { results })
    }
}
