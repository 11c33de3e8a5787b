//! `dunning.run` (admin job, runbook dunning-or-email-backlog): advances every open dunning case
//! to today. The daily schedule executes it; from a runbook it reports the due steps unless
//! told to execute. Each action happens once however often it runs.

use serde::{Deserialize, Serialize};

use super::kind::{JobContext, JobError};
use crate::newtypes::TenantId;
use super::admin::AdminJob;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct DunningRunJob;

/// Parameters, all optional.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DunningRunParams {
    /// Act as of this time instead of now.
    #[serde(default)]
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this tenant.
    #[serde(default)]
    pub tenant: Option<TenantId>,
}

impl From<crate::dunning::DunningError> for JobError {
    fn from(e: crate::dunning::DunningError) -> Self {
        JobError::Retry(e.to_string())
    }
}

impl AdminJob for DunningRunJob {
    const KIND: &'static str = "dunning.run";
    type Params = DunningRunParams;
    type Report = crate::dunning::RunReport;
    type Deps = crate::dunning::Deps;

    async fn run(&self, params: &DunningRunParams, execute: bool, ctx: &JobContext<crate::dunning::Deps>) -> Result<crate::dunning::RunReport, JobError> {
        let as_of = params.as_of.unwrap_or_else(chrono::Utc::now);
        Ok(crate::dunning::run(&ctx.state, as_of, params.tenant, !execute).await?)
    }
}
