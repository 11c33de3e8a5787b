//! What a Ballast job kind is: the runtime's contract ([`crate::queue::job`]) with the
//! application state as every handler's dependencies.

use std::future::Future;

use serde::de::DeserializeOwned;

use crate::state::AppState;

pub use crate::queue::job::{JobError, JobReport, Progress};

/// What one of Ballast's handlers knows about its run: the runtime's context, with the
/// application state as the handler's dependencies.
pub type JobContext = crate::queue::job::JobContext<AppState>;

/// Every job kind this binary can run, by name.
pub type Registry = crate::queue::job::Registry<AppState>;

/// A Ballast job kind: a stable name, typed arguments and an async handler that gets the
/// application state. Every one is a job of the runtime ([`crate::queue::job::Job`]).
pub trait Job: Send + Sync + 'static {
    /// The kind's name, as written in jobs/ (`noop`, `stripe.event`).
    const KIND: &'static str;
    /// Arguments, parsed from the job's JSON payload.
    type Args: DeserializeOwned + Send + 'static;
    /// What a run reports (for operators, and `--json`): a type of the kind's own.
    type Report: serde::Serialize + Send + 'static;
    /// Does the work once. Must be safe to run again with the same arguments.
    fn run(&self, args: Self::Args, ctx: JobContext) -> impl Future<Output = Result<Self::Report, JobError>> + Send;
}

impl<J: Job> crate::queue::job::Job<AppState> for J {
    const KIND: &'static str = <J as Job>::KIND;
    type Args = <J as Job>::Args;
    type Report = <J as Job>::Report;

    fn run(&self, args: Self::Args, ctx: JobContext) -> impl Future<Output = Result<Self::Report, JobError>> + Send {
        <J as Job>::run(self, args, ctx)
    }
}
