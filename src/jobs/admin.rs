//! Admin jobs: the jobs behind runbooks (runbooks/). Each is a dry run that reports unless
//! told to execute, and every run — from the fleet or from `ballast runbook run` — is written
//! to the audit log with who asked, its parameters and its outcome.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::deps::{Mirror, Records};
use super::kind::{Job, JobContext, JobError, Provides};
use crate::stripe::event::StripeEvent;
use crate::stripe::inbox;

/// Parameters of an admin job that takes none.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// What every admin job takes: whether to act, who asked, and the job's own parameters.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, bound(deserialize = "P: DeserializeOwned + Default"))]
pub struct AdminArgs<P> {
    /// Act; without it, report only.
    #[serde(default)]
    pub execute: bool,
    /// Who asked (the CLI's user, or "schedule").
    #[serde(default)]
    pub actor: Option<String>,
    /// The job's parameters (`--param k=v`).
    #[serde(default)]
    pub params: P,
}

impl AdminArgs<serde_json::Value> {
    /// The payload of a run of any admin job: whether to act, who asked, and its parameters
    /// (checked against the job's own parameter type when the run starts).
    pub fn payload(execute: bool, actor: &str, params: serde_json::Value) -> serde_json::Value {
        let args = AdminArgs { execute, actor: Some(actor.to_owned()), params };
        // Booleans, strings and a JSON value: serialising them cannot fail.
        serde_json::to_value(&args).unwrap_or_default()
    }
}

/// Puts a Ballast-made event (Stripe's state of an object, as `raw`) into the inbox and queues
/// it, so the same handlers as a delivered webhook apply it; false when it was stored before.
pub(super) async fn inject_event(deps: &Mirror, mut raw: serde_json::Value, received_at: i64) -> Result<bool, JobError> {
    let pool = &deps.system_pool;
    let event = StripeEvent::from_stripe(&mut raw, received_at).map_err(|e| JobError::Cancel(format!("Ballast-made event: {e}")))?;
    if inbox::insert(pool, &event, &raw).await? != inbox::Inserted::New {
        return Ok(false);
    }
    inbox::enqueue(pool, &deps.queue, &event.id).await?;
    Ok(true)
}

/// An admin job: a dry run that reports unless told to execute.
pub trait AdminJob: Send + Sync + 'static {
    /// The kind's name in jobs/.
    const KIND: &'static str;
    /// Its parameters.
    /// Its parameters; their schema (field docs included) is the console's form.
    type Params: DeserializeOwned + Serialize + Default + utoipa::ToSchema + Send + Sync + 'static;
    /// What a run reports, a type of the job's own (its top level; nested rows may be JSON).
    type Report: Serialize + Send + 'static;
    /// The handles the job uses.
    type Deps: Send + Sync + 'static;
    /// Reports (and with `execute`, acts). The report says what it touched or would touch.
    fn run(&self, params: &Self::Params, execute: bool, ctx: &JobContext<Self::Deps>) -> impl Future<Output = Result<Self::Report, JobError>> + Send;
    /// [`AdminJob::run`], told who asked: a job that audits each tenant it changes names the
    /// operator on each row. Most jobs need only the run's own audit row.
    fn run_as(&self, params: &Self::Params, execute: bool, actor: &str, ctx: &JobContext<Self::Deps>) -> impl Future<Output = Result<Self::Report, JobError>> + Send {
        let _ = actor;
        self.run(params, execute, ctx)
    }
}

/// An admin job's handles, with what the wrapper records each run with.
pub struct AdminDeps<D> {
    /// The audit log and the admin runs.
    pub records: Records,
    /// The job's own.
    pub job: D,
}

impl<S: Provides<Records> + Provides<D>, D> Provides<AdminDeps<D>> for S {
    fn provide(&self) -> AdminDeps<D> {
        AdminDeps { records: <S as Provides<Records>>::provide(self), job: <S as Provides<D>>::provide(self) }
    }
}

/// Runs an [`AdminJob`] as a job, writing every run to the audit log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Admin<J>(pub J);

impl<J: AdminJob> Job for Admin<J> {
    const KIND: &'static str = J::KIND;
    type Args = AdminArgs<J::Params>;
    type Report = J::Report;
    type Deps = AdminDeps<J::Deps>;

    async fn run(&self, args: AdminArgs<J::Params>, ctx: JobContext<AdminDeps<J::Deps>>) -> Result<J::Report, JobError> {
        let JobContext { job_id, attempt, tenant, state: AdminDeps { records, job }, progress } = ctx;
        let ctx = JobContext { job_id, attempt, tenant, state: job, progress };
        let actor = args.actor.clone().unwrap_or_else(|| "fleet".to_owned());
        let outcome = self.0.run_as(&args.params, args.execute, &actor, &ctx).await;
        let (result, error) = match &outcome {
            Ok(_) => (crate::audit::Outcome::Ok, None),
            Err(e) => (crate::audit::Outcome::Failed, Some(e.to_string())),
        };
        let params = serde_json::json!({"job": J::KIND, "execute": args.execute, "params": args.params, "error": error});
        // System pool: the audit log is the operators' record across tenants.
        let audited = match records.system_pool.0.acquire().await {
            Ok(mut conn) => crate::audit::record(&mut conn, None, &actor, &format!("runbook.{}", J::KIND), params, result).await,
            Err(e) => Err(e),
        };
        if let Err(e) = audited {
            tracing::error!(message = "Admin job ran but its audit row was not written.", job = J::KIND, error = %e);
        }
        // Kept for `ballast runbook runs`: the report of a run queued on the fleet is read there.
        let report = outcome.as_ref().ok().and_then(|r| serde_json::to_value(r).ok());
        let ended = match (&report, &error) {
            (Some(r), _) => Ok(r),
            (None, e) => Err(e.as_deref().unwrap_or("report not serialisable")),
        };
        let retention = records.settings.admin_run_retention;
        if let Err(e) = super::admin_runs::finished(&records.system_pool, &ctx.job_id.0, J::KIND, &actor, args.execute, ended, retention).await {
            tracing::error!(message = "Admin job ran but its run was not kept.", job = J::KIND, error = %e);
        }
        outcome
    }

    fn args_schema() -> Option<serde_json::Value> {
        // The parameters only: `execute` and the actor are the console's buttons and session.
        let mut schema = serde_json::to_value(<J::Params as utoipa::PartialSchema>::schema()).ok()?;
        schema["default"] = serde_json::to_value(J::Params::default()).ok()?;
        Some(schema)
    }
}

