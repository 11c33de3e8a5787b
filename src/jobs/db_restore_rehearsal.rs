//! `db.restore_rehearsal` (admin job, runbook database-restore; weekly): the newest dump
//! restored into the scratch database and checked against production, the scratch database
//! emptied after — and, where pgBackRest is configured, its backup restored to the newest
//! archived WAL or to `target_time` into a scratch instance, checked, and removed
//! (crate::backup::rehearsal). Each run is recorded in `backup_runs`. A dry run says what it
//! would restore, and where.

use serde::{Deserialize, Serialize};

use super::admin::AdminJob;
use super::kind::{JobContext, JobError};
use crate::backup::runs::{self, Source};
use crate::backup::{self, BackupError};

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbRestoreRehearsalJob;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RehearsalParams {
    /// `dump` or `pgbackrest`; none: every source that is configured (only pgBackRest with a
    /// `target_time`).
    #[serde(default)]
    #[schema(inline)]
    pub source: Option<Source>,
    /// pgBackRest: the time to restore to (RFC 3339), such as just before a bad migration;
    /// none: the newest archived WAL.
    #[serde(default)]
    pub target_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the rehearsal found (or would restore).
#[derive(Debug, Serialize)]
pub struct RehearsalReport {
    /// The dump it restores: the newest.
    pub dump: Option<String>,
    /// What the dump's checks found.
    pub rehearsal: Option<backup::rehearsal::Rehearsal>,
    /// pgBackRest's stanza it restores from.
    pub stanza: Option<String>,
    /// The time it restores pgBackRest's backup to; none: the newest archived WAL.
    pub target_time: Option<chrono::DateTime<chrono::Utc>>,
    /// What the point-in-time restore's checks found.
    pub pitr: Option<backup::rehearsal::Rehearsal>,
    /// What failed a threshold (the command exits 3 when not empty).
    pub failing: Vec<String>,
    /// Whether it restored.
    pub executed: bool,
}

impl AdminJob for DbRestoreRehearsalJob {
    const KIND: &'static str = "db.restore_rehearsal";
    type Params = RehearsalParams;
    type Report = RehearsalReport;
    type Deps = super::deps::Records;

    async fn run(&self, p: &RehearsalParams, execute: bool, ctx: &JobContext<super::deps::Records>) -> Result<RehearsalReport, JobError> {
        let settings = &ctx.state.settings;
        let b = &settings.backups;
        if p.target_time.is_some() && p.source == Some(Source::Dump) {
            return Err(JobError::Cancel("a dump restores to the time it was taken: target_time needs source=pgbackrest".into()));
        }
        let wants = |s: Source| p.source.is_none_or(|w| w == s) && (s == Source::Pgbackrest || p.target_time.is_none());
        let dump_setup = match (b.dir.clone(), b.rehearsal_database_url.clone()) {
            (Some(dir), Some(url)) if wants(Source::Dump) => Some((dir, url)),
            _ => None,
        };
        let pgbackrest = b.pgbackrest.clone().filter(|_| wants(Source::Pgbackrest));
        if dump_setup.is_none() && pgbackrest.is_none() {
            let missing = match (p.source, p.target_time) {
                (Some(Source::Pgbackrest), _) | (_, Some(_)) => "BALLAST_PGBACKREST_STANZA",
                _ if b.dir.is_none() => "BALLAST_BACKUP_DIR",
                _ => "BALLAST_REHEARSAL_DATABASE_URL",
            };
            return Err(cancel(BackupError::NotConfigured(missing)));
        }
        let mut report =
            RehearsalReport { dump: None, rehearsal: None, stanza: pgbackrest.as_ref().map(|c| c.stanza.clone()), target_time: p.target_time, pitr: None, failing: Vec::new(), executed: execute };
        if let Some((dir, _)) = &dump_setup {
            report.dump = backup::dump::list(dir).await.map_err(cancel)?.into_iter().next().map(|p| p.display().to_string());
            if report.dump.is_none() {
                report.failing.push(format!("no dump in {} to restore", dir.display()));
            }
        }
        if !execute {
            return Ok(report);
        }
        report.failing.clear();
        let limits = backup::rehearsal::Thresholds::default();
        if let Some((dir, scratch)) = &dump_setup {
            let started_at = chrono::Utc::now();
            let result = backup::rehearsal::run(&ctx.state.system_pool, scratch, dir, limits, started_at).await;
            report.rehearsal = record(ctx, Source::Dump, started_at, result, &mut report.failing).await?;
        }
        if let Some(cfg) = &pgbackrest {
            let started_at = chrono::Utc::now();
            let result = backup::rehearsal::run_pitr(&ctx.state.system_pool, &settings.system_database_url, cfg, p.target_time, limits, started_at).await;
            report.pitr = record(ctx, Source::Pgbackrest, started_at, result, &mut report.failing).await?;
        }
        Ok(report)
    }
}

/// Keeps a rehearsal's run; what failed joins `failing`, prefixed with its source.
async fn record(
    ctx: &JobContext<super::deps::Records>,
    source: Source,
    started_at: chrono::DateTime<chrono::Utc>,
    result: Result<backup::rehearsal::Rehearsal, BackupError>,
    failing: &mut Vec<String>,
) -> Result<Option<backup::rehearsal::Rehearsal>, JobError> {
    let found = match &result {
        Ok(r) => r.failing.clone(),
        Err(e) => vec![e.to_string()],
    };
    let r = result.as_ref().ok();
    let run = runs::NewRun {
        ok: found.is_empty(),
        error: (!found.is_empty()).then(|| found.join("; ")),
        file: r.map(|r| r.restored.clone()),
        sha256: r.and_then(|r| r.sha256.clone()),
        restore_secs: r.map(|r| r.restore_secs),
        data_age_secs: r.and_then(|r| r.data_age_secs),
        ..runs::NewRun::of(runs::RunKind::Rehearsal, source, started_at, &result)
    };
    runs::record(&ctx.state.system_pool, &run).await?;
    let prefix = source.as_str();
    failing.extend(found.into_iter().map(|f| if source == Source::Dump { f } else { format!("{prefix}: {f}") }));
    Ok(result.ok())
}

fn cancel(e: BackupError) -> JobError {
    JobError::Cancel(e.to_string())
}
