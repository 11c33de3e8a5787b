//! One job found by its id wherever it is — queued on Redis, dead in PostgreSQL, or finished
//! with a tracked status — for the three surfaces that show one: `ballast jobs show`,
//! `GET /v1/admin/jobs/{id}` and the console's job page.

use serde_json::Value;

use super::intake::Intakes;
use crate::db::{SystemPool, TenantPool};
use crate::queue::attempts::Attempt;
use crate::queue::dead;
use crate::queue::status::{self, JobStatus};
use crate::queue::JobQueue;
use crate::newtypes::TenantId;

/// Why a lookup could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// Redis could not be read.
    #[error("the queue could not be read: {0}")]
    Queue(#[from] crate::queue::QueueError),
    /// PostgreSQL could not be read.
    #[error("the database could not be read: {0}")]
    Db(#[from] crate::db::DbError),
}

impl From<sqlx::Error> for LookupError {
    fn from(e: sqlx::Error) -> Self {
        LookupError::Db(e.into())
    }
}

/// Where a found job is.
#[derive(Debug, Clone)]
pub enum Place {
    /// Ready, scheduled or running on Redis.
    Queued,
    /// Out of attempts (or never runnable): a dead letter an operator may retry or discard.
    Dead {
        /// What retry and discard take.
        dead_letter: uuid::Uuid,
    },
    /// No longer queued; its tenant's status row says how it ended.
    Tracked(JobStatus),
}

impl Place {
    /// The place as people read it.
    pub fn word(&self) -> &'static str {
        match self {
            Place::Queued => "queued",
            Place::Dead { .. } => "dead",
            Place::Tracked(s) => s.state.word(),
        }
    }
}

/// A job as an operator sees it.
#[derive(Debug, Clone)]
pub struct FoundJob {
    /// Where it is.
    pub place: Place,
    /// Its id.
    pub job_id: String,
    /// Its kind.
    pub kind: String,
    /// The tenant it acts for.
    pub tenant: Option<uuid::Uuid>,
    /// Attempts made (a queued job: the attempt it waits to make).
    pub attempt: i64,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// The handler's arguments, unredacted (each surface redacts); none once a tracked job
    /// has left the queue.
    pub payload: Option<Value>,
    /// Each attempt that ended, oldest first.
    pub history: Vec<Attempt>,
}

/// Finds job `id` (or a dead letter's id): the queue first, then dead letters, then tracked
/// statuses (kinds that keep their own table answer for their ids through `intakes`).
pub async fn find<S: 'static>(
    queue: &JobQueue,
    system: &SystemPool,
    tenants: &TenantPool,
    intakes: (&Intakes<S>, &S),
    id: &str,
) -> Result<Option<FoundJob>, LookupError> {
    if let Some(q) = queue.find(id).await? {
        return Ok(Some(FoundJob {
            place: Place::Queued,
            job_id: q.id.0,
            kind: q.kind.0,
            tenant: q.tenant.map(|t| t.0),
            attempt: i64::from(q.attempt),
            last_error: q.last_error,
            payload: Some(q.payload),
            history: q.history,
        }));
    }
    if let Some(d) = dead::find(system, id).await? {
        return Ok(Some(FoundJob {
            history: crate::queue::attempts::of_envelope(&d.envelope),
            payload: Some(d.envelope.get("payload").cloned().unwrap_or(d.envelope)),
            place: Place::Dead { dead_letter: d.id },
            job_id: d.job_id,
            kind: d.kind,
            tenant: d.tenant_id,
            attempt: i64::from(d.attempts),
            last_error: Some(d.error),
        }));
    }
    let owner = match status::owner(system, id).await? {
        Some(t) => Some(t),
        None => crate::webhooks_out::job_status::owner(system, id).await?,
    };
    let Some(tenant) = owner else { return Ok(None) };
    let found = match intakes.0.status(intakes.1, tenant, id).await {
        Some(kept_by_kind) => kept_by_kind,
        None => status::get(tenants, tenant, id).await,
    }?;
    Ok(found.map(|s| tracked(tenant, s)))
}

fn tracked(tenant: TenantId, s: JobStatus) -> FoundJob {
    FoundJob {
        job_id: s.id.clone(),
        kind: s.kind.clone(),
        tenant: Some(tenant.0),
        attempt: i64::from(s.attempts),
        last_error: s.last_error.clone(),
        payload: None,
        history: s.history.clone(),
        place: Place::Tracked(s),
    }
}
