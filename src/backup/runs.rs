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

/// What a run backed up with or restored from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A logical dump (pg_dump, custom format).
    Dump,
    /// A physical backup with archived WAL (pgBackRest): restorable to a point in time.
    Pgbackrest,
}

impl Source {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Dump => "dump",
            Source::Pgbackrest => "pgbackrest",
        }
    }
}

/// One run to keep.
#[derive(Debug)]
pub struct NewRun {
    /// What ran.
    pub kind: RunKind,
    /// With what.
    pub source: Source,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Whether it passed.
    pub ok: bool,
    /// The dump written or restored (pgBackRest: the backup's label).
    pub file: Option<String>,
    /// Its size.
    pub bytes: Option<i64>,
    /// Its checksum.
    pub sha256: Option<String>,
    /// A rehearsal's restore time.
    pub restore_secs: Option<f64>,
    /// A rehearsal's newest restored row's age.
    pub data_age_secs: Option<f64>,
    /// The report.
    pub report: serde_json::Value,
    /// Why it failed.
    pub error: Option<String>,
}

impl NewRun {
    /// A run of `kind` from `source` that ended in `result`: passed when it is `Ok`, its
    /// report what it holds or the error; the figures are the caller's to fill.
    pub fn of<T: serde::Serialize, E: std::fmt::Display>(kind: RunKind, source: Source, started_at: DateTime<Utc>, result: &Result<T, E>) -> Self {
        let (report, error) = match result {
            Ok(r) => (serde_json::to_value(r).unwrap_or_default(), None),
            Err(e) => (serde_json::json!({"error": e.to_string()}), Some(e.to_string())),
        };
        Self { kind, source, started_at, ok: result.is_ok(), file: None, bytes: None, sha256: None, restore_secs: None, data_age_secs: None, report, error }
    }
}

/// Keeps `run`.
pub async fn record(pool: &SystemPool, run: &NewRun) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO backup_runs (id, kind, source, started_at, finished_at, ok, file, bytes, sha256, restore_secs, data_age_secs, report, error)
         VALUES ($1, $2, $3, $4, now(), $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(run.kind.as_str())
    .bind(run.source.as_str())
    .bind(run.started_at)
    .bind(run.ok)
    .bind(run.file.as_deref())
    .bind(run.bytes)
    .bind(run.sha256.as_deref())
    .bind(run.restore_secs)
    .bind(run.data_age_secs)
    .bind(&run.report)
    .bind(run.error.as_deref())
    .execute(&pool.0)
    .await?;
    Ok(())
}

/// The newest run of `kind` from `source`: when it finished and whether it passed.
pub async fn newest(pool: &SystemPool, kind: RunKind, source: Source) -> Result<Option<(DateTime<Utc>, bool)>, sqlx::Error> {
    sqlx::query_as("SELECT finished_at, ok FROM backup_runs WHERE kind = $1 AND source = $2 ORDER BY finished_at DESC LIMIT 1")
        .bind(kind.as_str())
        .bind(source.as_str())
        .fetch_optional(&pool.0)
        .await
}

/// The newest run of `kind` from `source` that passed.
pub async fn newest_ok(pool: &SystemPool, kind: RunKind, source: Source) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT max(finished_at) FROM backup_runs WHERE kind = $1 AND source = $2 AND ok")
        .bind(kind.as_str())
        .bind(source.as_str())
        .fetch_one(&pool.0)
        .await
}
