//! The `admin_runs` table: every admin job run and its report, kept for a while so a run
//! queued on the fleet (`ballast runbook run NAME --enqueue`) can be read once it is done.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::SystemPool;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// On the fleet's queue, not finished.
    Queued,
    /// Finished with a report.
    Done,
    /// Its last attempt failed.
    Failed,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Done => "done",
            RunState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "done" => RunState::Done,
            "failed" => RunState::Failed,
            _ => RunState::Queued,
        }
    }
}

/// One run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminRun {
    /// The job's id.
    pub id: String,
    /// The admin job's kind.
    pub kind: String,
    /// Who ran it.
    pub actor: String,
    /// It acted (false: a dry run).
    pub executed: bool,
    /// Where it is.
    pub state: RunState,
    /// How many things its report found failing.
    pub failing: i32,
    /// The report (done runs).
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    /// The last error (failed runs).
    pub error: Option<String>,
    /// When it was queued or started.
    pub queued_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a report counts as failing: the length of its `failing` list, by convention the
/// findings an operator must act on (a dependency down, an object Stripe would not return).
pub fn failing_of(report: &serde_json::Value) -> usize {
    report.get("failing").and_then(|f| f.as_array()).map_or(0, Vec::len)
}

/// A run about to be queued on the fleet.
pub async fn queued(pool: &SystemPool, id: &str, kind: &str, actor: &str, executed: bool) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO admin_runs (id, kind, actor, executed, state) VALUES ($1, $2, $3, $4, 'queued') ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(kind)
        .bind(actor)
        .bind(executed)
        .execute(&pool.0)
        .await?;
    Ok(())
}

/// A run's end: its report, or its error. Runs older than `retention` are deleted meanwhile.
pub async fn finished(
    pool: &SystemPool,
    id: &str,
    kind: &str,
    actor: &str,
    executed: bool,
    outcome: Result<&serde_json::Value, &str>,
    retention: std::time::Duration,
) -> Result<(), sqlx::Error> {
    let (state, report, error) = match outcome {
        Ok(report) => (RunState::Done, Some(report), None),
        Err(e) => (RunState::Failed, None, Some(e)),
    };
    let failing = report.map_or(0, |r| failing_of(r)) as i32;
    sqlx::query(
        "INSERT INTO admin_runs (id, kind, actor, executed, state, failing, report, error, finished_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now()) \
         ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, failing = EXCLUDED.failing, report = EXCLUDED.report, \
         error = EXCLUDED.error, finished_at = now()",
    )
    .bind(id)
    .bind(kind)
    .bind(actor)
    .bind(executed)
    .bind(state.as_str())
    .bind(failing)
    .bind(report)
    .bind(error)
    .execute(&pool.0)
    .await?;
    let secs = retention.as_secs() as f64;
    sqlx::query("DELETE FROM admin_runs WHERE queued_at < now() - make_interval(secs => $1)").bind(secs).execute(&pool.0).await?;
    Ok(())
}

type Row = (String, String, String, bool, String, i32, Option<serde_json::Value>, Option<String>, DateTime<Utc>, Option<DateTime<Utc>>);

fn from_row(r: Row) -> AdminRun {
    AdminRun { id: r.0, kind: r.1, actor: r.2, executed: r.3, state: RunState::parse(&r.4), failing: r.5, report: r.6, error: r.7, queued_at: r.8, finished_at: r.9 }
}

/// How many runs [`list`] chooses from (for "N more not shown").
pub async fn count(pool: &SystemPool, kind: Option<&str>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM admin_runs WHERE ($1::text IS NULL OR kind = $1)").bind(kind).fetch_one(&pool.0).await
}

/// Runs, newest first, of one kind or all, at most `limit`.
pub async fn list(pool: &SystemPool, kind: Option<&str>, limit: i64) -> Result<Vec<AdminRun>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, kind, actor, executed, state, failing, report, error, queued_at, finished_at FROM admin_runs \
         WHERE ($1::text IS NULL OR kind = $1) ORDER BY queued_at DESC LIMIT $2",
    )
    .bind(kind)
    .bind(limit)
    .fetch_all(&pool.0)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// One run.
pub async fn find(pool: &SystemPool, id: &str) -> Result<Option<AdminRun>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as("SELECT id, kind, actor, executed, state, failing, report, error, queued_at, finished_at FROM admin_runs WHERE id = $1").bind(id).fetch_optional(&pool.0).await?;
    Ok(row.map(from_row))
}
