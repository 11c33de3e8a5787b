//! The runtime's contract with what it runs: a [`Job`] (a stable kind name, typed arguments,
//! an async handler), the [`Registry`] of handlers, the [`JobContext`] of one run, how a run
//! reports [`Progress`], and how it can end ([`JobError`]: retry, cancel, snooze).
//!
//! The runtime knows nothing of the application: a handler's dependencies are a type `D`
//! that the application chooses (Ballast's job adapters use the application state) and the
//! worker hands to each run as it was given.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::newtypes::{JobId, TenantId};

/// What a job reports when it finishes: a small JSON summary operators can read.
pub type JobReport = serde_json::Value;

/// How a run ended when it did not succeed. The runtime decides what happens next from this.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Transient: retried with the kind's backoff until attempts run out.
    #[error("{0}")]
    Retry(String),
    /// Transient, and the handler chose when to try again (it told someone when: a delivery
    /// log's next attempt). Counts as an attempt like [`JobError::Retry`].
    #[error("{0}")]
    RetryIn(String, Duration),
    /// Will never succeed: dead-lettered now, no more attempts.
    #[error("{0}")]
    Cancel(String),
    /// Not yet: run again after the delay without spending an attempt.
    #[error("snoozed for {0:?}")]
    Snooze(Duration),
    /// The payload does not parse into the kind's arguments: dead-lettered with the parse error.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Retry(format!("postgres: {e}"))
    }
}

impl From<redis::RedisError> for JobError {
    fn from(e: redis::RedisError) -> Self {
        JobError::Retry(format!("redis: {e}"))
    }
}

impl From<crate::db::DbError> for JobError {
    fn from(e: crate::db::DbError) -> Self {
        JobError::Retry(e.to_string())
    }
}

/// Reports how far a long run is, on a terminal (the fleet runs it silently).
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<ProgressLine>>);

/// Shows `done` of `total` units of `what`.
type ProgressLine = dyn Fn(&str, u64, Option<u64>) + Send + Sync;

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Progress(terminal)" } else { "Progress(silent)" })
    }
}

impl Progress {
    /// Progress lines on stderr when it is a terminal; silent otherwise.
    pub fn terminal() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::default();
        }
        Self(Some(Arc::new(|what: &str, done: u64, total: Option<u64>| match total {
            Some(t) => eprint!("\r{what}: {done}/{t}   "),
            None => eprint!("\r{what}: {done}   "),
        })))
    }

    /// `done` of `total` units of `what`.
    pub fn report(&self, what: &str, done: u64, total: Option<u64>) {
        if let Some(f) = &self.0 {
            f(what, done, total);
        }
    }
}

/// The arguments of a job kind that code queues: the producer builds them and the handler
/// takes them as its `Args`, so the two cannot disagree on the payload without a compile
/// error. Queue one with [`crate::queue::EnqueueRequest::typed`].
pub trait JobArgs: serde::Serialize + DeserializeOwned + Send + 'static {
    /// The kind these arguments are for.
    const KIND: &'static str;
}

/// What a handler knows about the run it is in.
#[derive(Debug, Clone)]
pub struct JobContext<D> {
    /// The job's identity (stable across retries).
    pub job_id: JobId,
    /// 1 for the first run.
    pub attempt: u32,
    /// The tenant the job acts for, if any.
    pub tenant: Option<TenantId>,
    /// The handler's dependencies.
    pub state: D,
    /// Where a long run reports how far it is (a terminal for `ballast runbook run`).
    pub progress: Progress,
}

/// A job kind: a stable name, typed arguments and an async handler.
pub trait Job<D>: Send + Sync + 'static {
    /// The kind's name, as written in jobs/ (`noop`, `stripe.event`).
    const KIND: &'static str;
    /// Arguments, parsed from the job's JSON payload.
    type Args: DeserializeOwned + Send + 'static;
    /// What a run reports (for operators, and `--json`).
    type Report: serde::Serialize + Send + 'static;
    /// Does the work once. Must be safe to run again with the same arguments.
    fn run(&self, args: Self::Args, ctx: JobContext<D>) -> impl Future<Output = Result<Self::Report, JobError>> + Send;
    /// The arguments people fill in, as a JSON Schema with their `default` values, for kinds
    /// that publish one (admin jobs: the console's runbook form).
    fn args_schema() -> Option<serde_json::Value> {
        None
    }
}

/// The boxed future a type-erased handler returns.
pub type JobFuture = Pin<Box<dyn Future<Output = Result<JobReport, JobError>> + Send>>;

/// A handler with its argument type erased, as the runtime holds it.
pub trait ErasedJob<D>: Send + Sync {
    /// Parses the payload and runs the handler.
    fn call(self: Arc<Self>, payload: serde_json::Value, ctx: JobContext<D>) -> JobFuture;
    /// Whether `payload` parses into the kind's arguments (checked at intake, so a malformed
    /// payload is a 400 to its sender, not a dead letter later); the error says why not.
    fn check(&self, payload: &serde_json::Value) -> Result<(), serde_json::Error>;
    /// The kind's published argument schema ([`Job::args_schema`]).
    fn args_schema(&self) -> Option<serde_json::Value>;
}

struct Typed<J>(J);

impl<D: Send + 'static, J: Job<D>> ErasedJob<D> for Typed<J> {
    fn call(self: Arc<Self>, payload: serde_json::Value, ctx: JobContext<D>) -> JobFuture {
        Box::pin(async move {
            let args: J::Args = serde_json::from_value(payload).map_err(|e| JobError::Malformed(e.to_string()))?;
            let report = self.0.run(args, ctx).await?;
            // A report is plain data (ids, counts, text): serialising it cannot fail.
            Ok(serde_json::to_value(report).unwrap_or_default())
        })
    }

    fn check(&self, payload: &serde_json::Value) -> Result<(), serde_json::Error> {
        <J::Args as serde::Deserialize>::deserialize(payload).map(drop)
    }

    fn args_schema(&self) -> Option<serde_json::Value> {
        J::args_schema()
    }
}

/// Every job kind a binary can run, by name.
pub struct Registry<D> {
    handlers: BTreeMap<&'static str, Arc<dyn ErasedJob<D>>>,
}

impl<D> Clone for Registry<D> {
    fn clone(&self) -> Self {
        Self { handlers: self.handlers.clone() }
    }
}

impl<D> Default for Registry<D> {
    fn default() -> Self {
        Self { handlers: BTreeMap::new() }
    }
}

impl<D> std::fmt::Debug for Registry<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

impl<D: Send + 'static> Registry<D> {
    /// Adds (or replaces) the handler for `J::KIND`.
    pub fn with<J: Job<D>>(mut self, job: J) -> Self {
        self.handlers.insert(J::KIND, Arc::new(Typed(job)));
        self
    }

    /// The handler of `kind` (or of the kind it was renamed to).
    pub fn get(&self, kind: &str) -> Option<Arc<dyn ErasedJob<D>>> {
        self.handlers.get(crate::job_catalogue::current_kind(kind)).cloned()
    }

    /// Every registered kind.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }
}
