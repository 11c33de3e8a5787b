//! The `job_status` table: what happened to each job an app service queued through
//! `POST /v1/jobs`, for `GET /v1/jobs/{id}`. Intake writes the row before it queues the job;
//! the worker moves it through running, retrying (with the next attempt's time), done or dead.
//! Only envelopes marked `tracked` are written, so the fleet's own jobs pay nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::attempts::Attempt;
use crate::db::{SystemPool, TenantPool};
use crate::newtypes::TenantId;

/// Where a tracked job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// An attempt failed; another is scheduled (`next_attempt_at`).
    Retrying,
    /// It succeeded.
    Done,
    /// Its attempts ran out or it failed for good (`last_error`); an operator may retry it.
    Dead,
}

impl JobState {
    /// The state as people read it (and as stored).
    pub fn word(self) -> &'static str {
        self.as_str()
    }

    fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Self {
        [JobState::Queued, JobState::Running, JobState::Retrying, JobState::Done, JobState::Dead].into_iter().find(|v| v.as_str() == s).unwrap_or(JobState::Queued)
    }
}

/// A tracked job, as its tenant reads it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobStatus {
    /// The job's id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Where it is.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: i32,
    /// The last failed attempt's error (retrying, dead).
    pub last_error: Option<String>,
    /// When the next attempt runs (retrying).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished (done, dead).
    pub finished_at: Option<DateTime<Utc>>,
    /// The jobs one accepted request became, when it became several (a webhook message's
    /// deliveries); this status sums them up.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(no_recursion)]
    pub jobs: Vec<JobStatus>,
    /// Each attempt that ended: when it started, how long it ran, its error and its trace id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
}

/// The row of a job about to be queued for `tenant`, in the caller's tenant transaction
/// (committed before the push, so the worker always finds it). `id_at` is the time the id
/// carries (`ballast_job_id_time`, 0067), the key job statuses are partitioned by (0.9.0); it
/// is a function of the id, so the table's key, `id` now and `(id, id_at)` once partitioned,
/// refuses a second row for a job either way (`ON CONFLICT` names no key for that reason).
pub async fn queued(tx: &mut sqlx::PgConnection, tenant: TenantId, id: &str, kind: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO job_status (id, tenant_id, kind, state, id_at) VALUES ($1, $2, $3, 'queued', ballast_job_id_time($1)) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(tenant.0)
        .bind(kind)
        .execute(tx)
        .await?;
    Ok(())
}

/// Forgets the row of a job that could not be queued after all.
pub async fn forget(pool: &TenantPool, tenant: TenantId, id: &str) -> Result<(), crate::db::DbError> {
    let mut tx = pool.begin(tenant).await?;
    sqlx::query("DELETE FROM job_status WHERE id = $1 AND id_at = ballast_job_id_time($1) AND state = 'queued' AND attempts = 0").bind(id).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A worker's progress on a tracked job, with the attempt that just ended (retrying, done,
/// dead) added to its timeline. System pool: the worker holds no tenant context (as for dead
/// letters); the row is found by the job's id. The timeline needs no trimming: a kind's
/// attempts are bounded by its catalogue entry.
pub async fn record(
    pool: &SystemPool,
    id: &str,
    state: JobState,
    attempt: u32,
    ended: Option<&Attempt>,
    next_attempt_at: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    let finished = matches!(state, JobState::Done | JobState::Dead);
    let entry = ended.map(|a| serde_json::to_value([a])).transpose().map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "UPDATE job_status SET state = $2, attempts = GREATEST(attempts, $3), last_error = COALESCE($4, last_error), \
         next_attempt_at = $5, started_at = CASE WHEN $2 = 'running' THEN now() ELSE started_at END, \
         finished_at = CASE WHEN $6 THEN now() ELSE NULL END, attempt_log = attempt_log || COALESCE($7, '[]'::jsonb) WHERE id = $1 AND id_at = ballast_job_id_time($1)",
    )
    .bind(id)
    .bind(state.as_str())
    .bind(attempt as i32)
    .bind(ended.and_then(|a| a.error.clone()))
    .bind(next_attempt_at)
    .bind(finished)
    .bind(entry)
    .execute(&pool.0)
    .await?;
    Ok(())
}

/// A job of `tenant`'s, or None (also for another tenant's: RLS hides it).
pub async fn get(pool: &TenantPool, tenant: TenantId, id: &str) -> Result<Option<JobStatus>, crate::db::DbError> {
    type Row = (String, String, String, i32, Option<String>, Option<DateTime<Utc>>, DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>, sqlx::types::Json<Vec<Attempt>>);
    let mut tx = pool.begin(tenant).await?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, kind, state, attempts, last_error, next_attempt_at, created_at, started_at, finished_at, attempt_log FROM job_status WHERE id = $1 AND id_at = ballast_job_id_time($1)",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(|r| JobStatus {
        id: r.0,
        kind: r.1,
        state: JobState::parse(&r.2),
        attempts: r.3,
        last_error: r.4,
        next_attempt_at: r.5,
        created_at: r.6,
        started_at: r.7,
        finished_at: r.8,
        jobs: Vec::new(),
        history: r.9.0,
    }))
}

/// The tenant a tracked job belongs to, across tenants (the operator's `ballast jobs show`).
/// System pool: the caller is on-call, not a tenant.
pub async fn owner(pool: &crate::db::SystemPool, id: &str) -> Result<Option<TenantId>, sqlx::Error> {
    let tenant: Option<uuid::Uuid> = sqlx::query_scalar("SELECT tenant_id FROM job_status WHERE id = $1 AND id_at = ballast_job_id_time($1)").bind(id).fetch_optional(&pool.0).await?;
    Ok(tenant.map(TenantId))
}

/// Fills `id_at` of up to `batch` rows written before 0.8.0 (the backfills service); returns
/// how many. Once statuses are partitioned (0072) every row has it: nothing is read then, not
/// the whole table at each new leader's first round.
pub async fn fill_missing_times(pool: &SystemPool, batch: i64) -> Result<u64, sqlx::Error> {
    let heap: bool = sqlx::query_scalar("SELECT relkind = 'r' FROM pg_class WHERE oid = 'job_status'::regclass").fetch_one(&pool.0).await?;
    if !heap {
        return Ok(0);
    }
    let filled = sqlx::query("UPDATE job_status SET id_at = ballast_job_id_time(id) WHERE id IN (SELECT id FROM job_status WHERE id_at IS NULL LIMIT $1)")
        .bind(batch)
        .execute(&pool.0)
        .await?;
    Ok(filled.rows_affected())
}

/// How long a finished job's status stays readable, at least: statuses are partitioned by
/// month of the time their id carries (0072), and a month leaves whole once its last day is
/// this old, so a status is readable for up to a month more.
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// The statuses a month's retirement keeps, as an SQL condition (the unfinished index's
/// predicate): jobs not finished, moved to the DEFAULT partition before their month is dropped.
pub const UNFINISHED: &str = "finished_at IS NULL";

/// Rows one [`prune`] deletes (the `job_status.prune` service calls it again while batches
/// come back full).
pub const PRUNE_BATCH: u64 = 5_000;

/// Deletes up to [`PRUNE_BATCH`] statuses finished before `retention` ago where no month's
/// retirement takes them ([`crate::db::partitions::outside_months`]: the DEFAULT partition
/// and the heap from before the conversion, or the whole table before it); returns how many.
pub async fn prune(pool: &SystemPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let cutoff = crate::db::partitions::cutoff(Utc::now(), retention);
    crate::db::partitions::delete_outside_months(&pool.0, "job_status", "finished_at < $1", cutoff, PRUNE_BATCH).await
}
