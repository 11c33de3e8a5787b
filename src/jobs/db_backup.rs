//! `db.backup` (admin job, runbook database-backup; daily): a logical backup of the database
//! into `BALLAST_BACKUP_DIR` with its checksum, the newest `BALLAST_BACKUP_KEEP` kept, each run
//! recorded in `backup_runs` (the backup alert reads it). A dry run says where it would write
//! and which dumps are there.

use super::admin::{AdminJob, NoParams};
use super::kind::{JobContext, JobError};
use crate::backup::{self, BackupError, runs};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbBackupJob;

/// What the backup wrote (or would).
#[derive(Debug, serde::Serialize)]
pub struct DbBackupReport {
    /// The directory.
    pub dir: String,
    /// The dumps there now, newest first.
    pub dumps: Vec<String>,
    /// What this run wrote: file, size, checksum, the dumps it removed.
    pub written: Option<backup::dump::Dump>,
    /// Whether it wrote.
    pub executed: bool,
}

impl AdminJob for DbBackupJob {
    const KIND: &'static str = "db.backup";
    type Params = NoParams;
    type Report = DbBackupReport;
    type Deps = super::deps::Records;

    async fn run(&self, _p: &NoParams, execute: bool, ctx: &JobContext<super::deps::Records>) -> Result<DbBackupReport, JobError> {
        let settings = &ctx.state.settings;
        let dir = settings.backup_dir.clone().ok_or(BackupError::NotConfigured("BALLAST_BACKUP_DIR")).map_err(cancel)?;
        let mut written = None;
        if execute {
            let started_at = chrono::Utc::now();
            let result = backup::dump::write(&settings.system_database_url, &dir, settings.backup_keep, started_at).await;
            let report = match &result {
                Ok(d) => serde_json::to_value(d).unwrap_or_default(),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            let d = result.as_ref().ok();
            let error = result.as_ref().err().map(ToString::to_string);
            let file = d.map(|d| d.file.display().to_string());
            let run = runs::NewRun {
                kind: runs::RunKind::Backup,
                started_at,
                ok: result.is_ok(),
                file: file.as_deref(),
                bytes: d.map(|d| i64::try_from(d.bytes).unwrap_or(i64::MAX)),
                sha256: d.map(|d| d.sha256.as_str()),
                restore_secs: None,
                data_age_secs: None,
                report: &report,
                error: error.as_deref(),
            };
            runs::record(&ctx.state.system_pool, &run).await?;
            written = Some(result.map_err(|e| JobError::Retry(e.to_string()))?);
        }
        let dumps = backup::dump::list(&dir).await.map_err(cancel)?.iter().map(|p| p.display().to_string()).collect();
        Ok(DbBackupReport { dir: dir.display().to_string(), dumps, written, executed: execute })
    }
}

fn cancel(e: BackupError) -> JobError {
    JobError::Cancel(e.to_string())
}
