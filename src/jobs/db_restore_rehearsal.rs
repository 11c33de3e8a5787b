//! `db.restore_rehearsal` (admin job, runbook database-restore; weekly): the newest backup
//! restored into the scratch database and checked against production (crate::backup::
//! rehearsal), the scratch database emptied after, the run recorded in `backup_runs`. A dry
//! run says which dump it would restore, and where.

use super::admin::{AdminJob, NoParams};
use super::kind::{JobContext, JobError};
use crate::backup::{self, BackupError, runs};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbRestoreRehearsalJob;

/// What the rehearsal found (or would restore).
#[derive(Debug, serde::Serialize)]
pub struct RehearsalReport {
    /// The dump it restores: the newest.
    pub dump: Option<String>,
    /// What the checks found.
    pub rehearsal: Option<backup::rehearsal::Rehearsal>,
    /// What failed a threshold (the command exits 3 when not empty).
    pub failing: Vec<String>,
    /// Whether it restored.
    pub executed: bool,
}

impl AdminJob for DbRestoreRehearsalJob {
    const KIND: &'static str = "db.restore_rehearsal";
    type Params = NoParams;
    type Report = RehearsalReport;
    type Deps = super::deps::Records;

    async fn run(&self, _p: &NoParams, execute: bool, ctx: &JobContext<super::deps::Records>) -> Result<RehearsalReport, JobError> {
        let settings = &ctx.state.settings;
        let dir = settings.backup_dir.clone().ok_or(BackupError::NotConfigured("BALLAST_BACKUP_DIR")).map_err(cancel)?;
        let scratch = settings.rehearsal_database_url.clone().ok_or(BackupError::NotConfigured("BALLAST_REHEARSAL_DATABASE_URL")).map_err(cancel)?;
        let dump = backup::dump::list(&dir).await.map_err(cancel)?.into_iter().next().map(|p| p.display().to_string());
        if !execute {
            let failing = if dump.is_none() { vec![format!("no dump in {} to restore", dir.display())] } else { Vec::new() };
            return Ok(RehearsalReport { dump, rehearsal: None, failing, executed: false });
        }
        let started_at = chrono::Utc::now();
        let result = backup::rehearsal::run(&ctx.state.system_pool, &scratch, &dir, backup::rehearsal::Thresholds::default(), started_at).await;
        let (failing, report) = match &result {
            Ok(r) => (r.failing.clone(), serde_json::to_value(r).unwrap_or_default()),
            Err(e) => (vec![e.to_string()], serde_json::json!({"error": e.to_string()})),
        };
        let r = result.as_ref().ok();
        let file = r.map(|r| r.file.display().to_string());
        let error = (!failing.is_empty()).then(|| failing.join("; "));
        let run = runs::NewRun {
            kind: runs::RunKind::Rehearsal,
            started_at,
            ok: failing.is_empty(),
            file: file.as_deref(),
            bytes: None,
            sha256: r.map(|r| r.sha256.as_str()),
            restore_secs: r.map(|r| r.restore_secs),
            data_age_secs: r.and_then(|r| r.data_age_secs),
            report: &report,
            error: error.as_deref(),
        };
        runs::record(&ctx.state.system_pool, &run).await?;
        Ok(RehearsalReport { dump, rehearsal: result.ok(), failing, executed: true })
    }
}

fn cancel(e: BackupError) -> JobError {
    JobError::Cancel(e.to_string())
}
