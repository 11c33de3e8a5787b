//! How app services queue a kind through `POST /v1/jobs` when queuing its payload as it
//! stands is not enough: an [`Intake`] turns the app's payload into the kind's jobs with the
//! writes they need before the answer (an email's outbox row, a webhook message and one
//! delivery per subscribed endpoint), so what Ballast answers 202 for survives a Redis crash.
//! A kind with `intake = true` and no hook is queued as it stands, its payload checked against
//! its arguments. A kind whose jobs keep their state in a table of their own also answers
//! `GET /v1/jobs/{id}` for its job ids ([`Intake::status`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::newtypes::TenantId;
use crate::queue::status::JobStatus;
use super::kind::{Job, Provides};

/// One intake request, checked for size and key shape by the API.
#[derive(Debug, Clone)]
pub struct IntakeRequest {
    /// The caller's tenant.
    pub tenant: TenantId,
    /// The app's payload.
    pub payload: serde_json::Value,
    /// The tenant's idempotency key, if it sent one.
    pub idempotency_key: Option<String>,
}

/// What `POST /v1/jobs` answers (202) for an accepted request.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = JobAccepted)]
pub struct Accepted {
    /// The job's id (`GET /v1/jobs/{id}`); a webhook message's `msg_…` id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// The idempotency key had been used: this is the first request's job.
    pub duplicate: bool,
    /// email.send: the outbox row that will be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbox_id: Option<uuid::Uuid>,
    /// webhook.deliver: one job per subscribed endpoint (none when no endpoint subscribes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<DeliveryJob>>,
}

/// One delivery a webhook message became.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryJob {
    /// The delivery's job id (`whd_…`).
    pub id: String,
    /// The delivery (`GET /v1/webhook-endpoints/{id}/deliveries`).
    pub delivery_id: uuid::Uuid,
    /// The endpoint it goes to.
    pub endpoint_id: uuid::Uuid,
}

impl Accepted {
    /// A job queued as one job.
    pub fn job(id: impl Into<String>, kind: &str, duplicate: bool) -> Self {
        Self { id: id.into(), kind: kind.to_owned(), duplicate, outbox_id: None, jobs: None }
    }
}

/// Why an intake request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The request is wrong (400): a stable code, a message, and the field at fault.
    #[error("{message}")]
    Invalid {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// An error field naming what was wrong (`"variable": "name"`).
        field: Option<(&'static str, String)>,
    },
    /// The payload does not parse (400 `invalid_payload`); `expected` says what the kind takes.
    #[error("{kind} takes {expected}: {error}")]
    Payload {
        /// The kind.
        kind: &'static str,
        /// Its payload's shape, for people (`{template, to, variables}`).
        expected: &'static str,
        /// serde's error (the API cuts quoted input before answering it).
        error: serde_json::Error,
    },
    /// Over a per-tenant limit of the kind (429).
    #[error("rate limited")]
    Limited(crate::ratelimit::Verdict),
    /// Over a per-tenant bound that frees up as work finishes, not as a window slides (429
    /// with `code`, the message, and Retry-After).
    #[error("{message}")]
    Busy {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is full, and when to come back.
        message: String,
        /// Retry-After, in seconds.
        retry_after_secs: u64,
    },
    /// Nothing was accepted; the sender should retry with the same key (503). The text is
    /// for the log only.
    #[error("{0}")]
    Unavailable(String),
}

impl IntakeError {
    /// A 400 with `code` and `message`.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        IntakeError::Invalid { code, message: message.into(), field: None }
    }
}

/// A kind's intake hook, with the kind's own dependencies.
pub trait Intake: Job {
    /// Checks the payload, writes what must be durable, queues the jobs; the 202's body.
    fn accept(&self, deps: Self::Deps, req: IntakeRequest) -> impl Future<Output = Result<Accepted, IntakeError>> + Send;
    /// The status of job `id` when it is one of this kind's (its id says so), read from the
    /// kind's own table; `None` when the id is not this kind's.
    fn status(&self, _deps: Self::Deps, _tenant: TenantId, _id: &str) -> Option<impl Future<Output = Result<Option<JobStatus>, crate::db::DbError>> + Send> {
        None::<std::future::Ready<Result<Option<JobStatus>, crate::db::DbError>>>
    }
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A hook as [`Intakes`] holds it: its dependencies provided by the member's state `S`.
trait ErasedIntake<S>: Send + Sync {
    fn accept<'a>(&'a self, state: &'a S, req: IntakeRequest) -> Boxed<'a, Result<Accepted, IntakeError>>;
    fn status<'a>(&'a self, state: &'a S, tenant: TenantId, id: &'a str) -> Option<Boxed<'a, Result<Option<JobStatus>, crate::db::DbError>>>;
}

impl<S: Provides<I::Deps>, I: Intake> ErasedIntake<S> for I {
    fn accept<'a>(&'a self, state: &'a S, req: IntakeRequest) -> Boxed<'a, Result<Accepted, IntakeError>> {
        Box::pin(Intake::accept(self, state.provide(), req))
    }

    fn status<'a>(&'a self, state: &'a S, tenant: TenantId, id: &'a str) -> Option<Boxed<'a, Result<Option<JobStatus>, crate::db::DbError>>> {
        Intake::status(self, state.provide(), tenant, id).map(|f| Box::pin(f) as Boxed<'a, _>)
    }
}

/// The intake hooks, by kind, for a member whose state is `S`.
pub struct Intakes<S> {
    hooks: BTreeMap<&'static str, Arc<dyn ErasedIntake<S>>>,
}

impl<S> Clone for Intakes<S> {
    fn clone(&self) -> Self {
        Self { hooks: self.hooks.clone() }
    }
}

impl<S> Default for Intakes<S> {
    fn default() -> Self {
        Self { hooks: BTreeMap::new() }
    }
}

impl<S> std::fmt::Debug for Intakes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.hooks.keys()).finish()
    }
}

impl<S: 'static> Intakes<S> {
    /// Adds the hook of `I::KIND`.
    pub fn with<I: Intake>(mut self, hook: I) -> Self
    where
        S: Provides<I::Deps>,
    {
        self.hooks.insert(<I as Job>::KIND, Arc::new(hook));
        self
    }

    /// Whether `kind` has a hook.
    pub fn has(&self, kind: &str) -> bool {
        self.hooks.contains_key(kind)
    }

    /// Accepts `req` through `kind`'s hook; `None` when it has none.
    pub async fn accept(&self, kind: &str, state: &S, req: IntakeRequest) -> Option<Result<Accepted, IntakeError>> {
        let hook = self.hooks.get(kind)?;
        Some(hook.accept(state, req).await)
    }

    /// The status of job `id`, from the table of the kind whose id it is; `None` when no
    /// kind keeps it (then `job_status` does).
    pub async fn status(&self, state: &S, tenant: TenantId, id: &str) -> Option<Result<Option<JobStatus>, crate::db::DbError>> {
        for hook in self.hooks.values() {
            if let Some(f) = hook.status(state, tenant, id) {
                return Some(f.await);
            }
        }
        None
    }
}
