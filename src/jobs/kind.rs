//! What a Ballast job kind is: the runtime's contract ([`crate::queue::job`]) with the
//! dependencies the kind declares ([`Job::Deps`], one of [`super::deps`] or a domain's own),
//! handed to it by whatever state the member was assembled with ([`Provides`]).

use std::future::Future;

use serde::de::DeserializeOwned;

pub use super::deps::Provides;
pub use crate::queue::job::{JobError, JobReport, Progress};

/// What one of Ballast's handlers knows about its run: the runtime's context, with the kind's
/// declared dependencies as `ctx.state`.
pub type JobContext<D> = crate::queue::job::JobContext<D>;

/// A Ballast job kind: a stable name, typed arguments, the dependencies it uses and an async
/// handler. Every one is a job of the runtime ([`crate::queue::job::Job`]) for any member
/// state that [`Provides`] its dependencies.
pub trait Job: Send + Sync + 'static {
    /// The kind's name, as written in jobs/ (`noop`, `stripe.event`).
    const KIND: &'static str;
    /// Arguments, parsed from the job's JSON payload.
    type Args: DeserializeOwned + Send + 'static;
    /// What a run reports (for operators, and `--json`): a type of the kind's own.
    type Report: serde::Serialize + Send + 'static;
    /// The handles the kind uses, and nothing more.
    type Deps: Send + Sync + 'static;
    /// Does the work once. Must be safe to run again with the same arguments.
    fn run(&self, args: Self::Args, ctx: JobContext<Self::Deps>) -> impl Future<Output = Result<Self::Report, JobError>> + Send;
    /// The arguments people fill in, as a JSON Schema with their `default` values (admin
    /// jobs publish their parameters; other kinds none).
    fn args_schema() -> Option<serde_json::Value> {
        None
    }
}

impl<S, J> crate::queue::job::Job<S> for J
where
    J: Job,
    S: Provides<J::Deps> + Send + 'static,
{
    const KIND: &'static str = <J as Job>::KIND;
    type Args = <J as Job>::Args;
    type Report = <J as Job>::Report;

    fn run(&self, args: Self::Args, ctx: crate::queue::job::JobContext<S>) -> impl Future<Output = Result<Self::Report, JobError>> + Send {
        let crate::queue::job::JobContext { job_id, attempt, tenant, state, progress } = ctx;
        let ctx = JobContext { job_id, attempt, tenant, state: state.provide(), progress };
        <J as Job>::run(self, args, ctx)
    }

    fn args_schema() -> Option<serde_json::Value> {
        <J as Job>::args_schema()
    }
}
