//! `backup_runs`: every backup and rehearsal, and the newest of each for the backup alert.

use chrono::{DateTime, Utc};

use crate::db::SystemPool;

/// What was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// `db.backup`.
    Backup,
    /// `db.restore_rehearsal`.
    Rehearsal,
}

impl RunKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Backup => "backup",
            RunKind::Rehearsal => "rehearsal",
        }
    }
}

/// One run to keep.
#[derive(Debug)]
pub struct NewRun<'a> {
    /// What ran.
    pub kind: RunKind,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Whether it passed.
    pub ok: bool,
    /// The dump written or restored.
    pub file: Option<&'a str>,
    /// Its size.
    pub bytes: Option<i64>,
    /// Its checksum.
    pub sha256: Option<&'a str>,
    /// A rehearsal's restore time.
    pub restore_secs: Option<f64>,
    /// A rehearsal's newest restored row's age.
    pub data_age_secs: Option<f64>,
    /// The report.
    pub report: &'a serde_json::Value,
    /// Why it failed.
    pub error: Option<&'a str>,
}

/// Keeps `run`.
pub async fn record(pool: &SystemPool, run: &NewRun<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO backup_runs (id, kind, started_at, finished_at, ok, file, bytes, sha256, restore_secs, data_age_secs, report, error)
         VALUES ($1, $2, $3, now(), $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(run.kind.as_str())
    .bind(run.started_at)
    .bind(run.ok)
    .bind(run.file)
    .bind(run.bytes)
    .bind(run.sha256)
    .bind(run.restore_secs)
    .bind(run.data_age_secs)
    .bind(run.report)
    .bind(run.error)
    .execute(&pool.0)
    .await?;
    Ok(())
}

/// The newest run of `kind`: when it finished and whether it passed.
pub async fn newest(pool: &SystemPool, kind: RunKind) -> Result<Option<(DateTime<Utc>, bool)>, sqlx::Error> {
    sqlx::query_as("SELECT finished_at, ok FROM backup_runs WHERE kind = $1 ORDER BY finished_at DESC LIMIT 1").bind(kind.as_str()).fetch_optional(&pool.0).await
}

/// The newest run of `kind` that passed.
pub async fn newest_ok(pool: &SystemPool, kind: RunKind) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(finished_at) FROM backup_runs WHERE kind = $1 AND ok").bind(kind.as_str()).fetch_one(&pool.0).await
}
