//! `db.backup` (admin job, runbook database-backup; daily): a logical backup of the database
//! into `BALLAST_BACKUP_DIR` with its checksum, the newest `BALLAST_BACKUP_KEEP` kept, and —
//! where the database archives its WAL through pgBackRest (`BALLAST_PGBACKREST_STANZA`) — a
//! physical backup, restorable to any point in time the archive covers. Each run is recorded
//! in `backup_runs` (the backup alert reads it). A dry run says where it would write and which
//! backups are there.

use serde::{Deserialize, Serialize};

use super::admin::AdminJob;
use super::kind::{JobContext, JobError};
use crate::backup::runs::{self, Source};
use crate::backup::{self, BackupError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbBackupJob;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DbBackupParams {
    /// `dump` or `pgbackrest`; none: every source that is configured.
    #[serde(default)]
    #[schema(inline)]
    pub source: Option<Source>,
    /// pgBackRest: a full backup instead of an incremental one after the newest.
    #[serde(default)]
    pub full: bool,
}

/// What the backup wrote (or would).
#[derive(Debug, Serialize)]
pub struct DbBackupReport {
    /// The dumps' directory.
    pub dir: Option<String>,
    /// The dumps there now, newest first.
    pub dumps: Vec<String>,
    /// What this run wrote: file, size, checksum, the dumps it removed.
    pub written: Option<backup::dump::Dump>,
    /// pgBackRest's stanza.
    pub stanza: Option<String>,
    /// pgBackRest's backups now, newest first.
    pub physical: Vec<backup::pitr::PhysicalBackup>,
    /// The pgBackRest backup this run took.
    pub physical_written: Option<backup::pitr::PhysicalBackup>,
    /// What failed (the command exits 3 when not empty).
    pub failing: Vec<String>,
    /// Whether it wrote.
    pub executed: bool,
}

impl AdminJob for DbBackupJob {
    const KIND: &'static str = "db.backup";
    type Params = DbBackupParams;
    type Report = DbBackupReport;
    type Deps = super::deps::Records;

    async fn run(&self, p: &DbBackupParams, execute: bool, ctx: &JobContext<super::deps::Records>) -> Result<DbBackupReport, JobError> {
        let settings = &ctx.state.settings;
        let b = &settings.backups;
        let wants = |s: Source| p.source.is_none_or(|w| w == s);
        let dir = b.dir.clone().filter(|_| wants(Source::Dump));
        let pgbackrest = b.pgbackrest.clone().filter(|_| wants(Source::Pgbackrest));
        if dir.is_none() && pgbackrest.is_none() {
            let missing = match p.source {
                Some(Source::Dump) => "BALLAST_BACKUP_DIR",
                Some(Source::Pgbackrest) => "BALLAST_PGBACKREST_STANZA",
                None => "BALLAST_BACKUP_DIR (or BALLAST_PGBACKREST_STANZA)",
            };
            return Err(cancel(BackupError::NotConfigured(missing)));
        }
        let mut report = DbBackupReport {
            dir: dir.as_ref().map(|d| d.display().to_string()),
            dumps: Vec::new(),
            written: None,
            stanza: pgbackrest.as_ref().map(|c| c.stanza.clone()),
            physical: Vec::new(),
            physical_written: None,
            failing: Vec::new(),
            executed: execute,
        };
        if let (Some(dir), true) = (&dir, execute) {
            let started_at = chrono::Utc::now();
            let result = backup::dump::write(&settings.system_database_url, dir, b.keep, started_at).await;
            let d = result.as_ref().ok();
            let run = runs::NewRun {
                file: d.map(|d| d.file.display().to_string()),
                bytes: d.map(|d| i64::try_from(d.bytes).unwrap_or(i64::MAX)),
                sha256: d.map(|d| d.sha256.clone()),
                ..runs::NewRun::of(runs::RunKind::Backup, Source::Dump, started_at, &result)
            };
            runs::record(&ctx.state.system_pool, &run).await?;
            match result {
                Ok(d) => report.written = Some(d),
                Err(e) => report.failing.push(format!("dump: {e}")),
            }
        }
        if let (Some(cfg), true) = (&pgbackrest, execute) {
            let started_at = chrono::Utc::now();
            let result = backup::pitr::backup(cfg, !p.full).await;
            let d = result.as_ref().ok();
            let run = runs::NewRun {
                file: d.map(|d| d.label.clone()),
                bytes: d.map(|d| d.repository_bytes),
                ..runs::NewRun::of(runs::RunKind::Backup, Source::Pgbackrest, started_at, &result)
            };
            runs::record(&ctx.state.system_pool, &run).await?;
            match result {
                Ok(d) => report.physical_written = Some(d),
                Err(e) => report.failing.push(format!("pgbackrest: {e}")),
            }
        }
        if let Some(dir) = &dir {
            report.dumps = backup::dump::list(dir).await.map_err(cancel)?.iter().map(|p| p.display().to_string()).collect();
        }
        if let Some(cfg) = &pgbackrest {
            match backup::pitr::list(cfg).await {
                Ok(l) => report.physical = l,
                Err(e) if !execute => report.failing.push(format!("pgbackrest: {e}")),
                Err(_) => {}
            }
        }
        // A scheduled run that failed is tried again; a runbook run reports it.
        if execute && !report.failing.is_empty() && report.written.is_none() && report.physical_written.is_none() {
            return Err(JobError::Retry(report.failing.join("; ")));
        }
        Ok(report)
    }
}

fn cancel(e: BackupError) -> JobError {
    JobError::Cancel(e.to_string())
}
