//! Job kinds: the [`Job`] trait, the dependencies each kind declares ([`deps`]), the standard
//! registry of handlers, and one file per kind.
//!
//! A job is idempotent and takes no input it cannot recompute (the reconciler rule): the
//! queue delivers at least once, so a handler may see the same job twice. Adding a kind is
//! one file here, one line in `Registry::standard` and one entry in jobs/.

pub mod admin;
pub mod admin_runs;
pub mod billing_bulk;
pub mod billing_bulk_cancel;
pub mod billing_bulk_collection;
pub mod billing_bulk_move;
pub mod billing_drift;
pub mod billing_reconcile;
pub mod cache_reshape;
pub mod cache_warm;
pub mod db_sessions;
pub mod deps;
pub mod dunning_run;
pub mod email_send;
pub mod intake;
pub mod kind;
pub mod limits_spike;
pub mod loadtest_run;
pub mod lookup;
pub mod noop;
pub mod queue_control;
pub mod db_backup;
pub mod db_restore_rehearsal;
pub mod probe_uptime;
pub mod release_inspect;
pub mod scheduler_inspect;
pub mod schedules;
pub mod search;
pub mod site_down;
pub mod site_slow;
pub mod slo_evaluate;
pub mod slo_notify;
pub mod stripe_event;
pub mod stripe_refetch;
pub mod usage_flush;
pub mod webhook_deliver;
pub mod stripe_backlog;

pub use kind::{Job, JobContext, JobError, JobReport, Progress, Provides};

/// A member's state that hands every standard kind the dependencies it declares (the state
/// says so where members are assembled, in `state.rs`).
pub trait StandardDeps:
    Provides<()>
    + Provides<crate::stripe::apply::ApplyDeps>
    + Provides<crate::dunning::Deps>
    + Provides<crate::ratelimit::Limiter>
    + Provides<deps::Email>
    + Provides<crate::usage::Deps>
    + Provides<crate::billing::warm::WarmSources>
    + Provides<crate::slo::Deps>
    + Provides<deps::Outbound>
    + Provides<deps::Mirror>
    + Provides<deps::Fleet>
    + Provides<deps::Records>
    + Provides<loadtest_run::LoadtestDeps>
    + Send
    + Sync
    + 'static
{
}

impl<S: StandardDeps> crate::queue::job::Registry<S> {
    /// The production registry: one line per job kind.
    pub fn standard() -> Self {
        Self::default()
            .with(noop::Noop)
            .with(stripe_event::StripeEventJob)
            .with(stripe_refetch::StripeRefetchJob)
            .with(email_send::EmailSendJob)
            .with(admin::Admin(dunning_run::DunningRunJob))
            .with(usage_flush::UsageFlushJob)
            .with(cache_warm::CacheWarmJob)
            .with(admin::Admin(cache_reshape::CacheReshapeJob))
            .with(slo_evaluate::SloEvaluateJob)
            .with(slo_notify::SloNotifyJob)
            .with(probe_uptime::ProbeUptimeJob)
            .with(loadtest_run::LoadtestRunJob)
            .with(admin::Admin(stripe_backlog::StripeBacklogJob))
            .with(admin::Admin(scheduler_inspect::SchedulerInspectJob))
            .with(admin::Admin(db_sessions::DbSessionsJob))
            .with(admin::Admin(limits_spike::LimitsSpikeJob))
            .with(admin::Admin(site_slow::SiteSlowJob))
            .with(admin::Admin(site_down::SiteDownJob))
            .with(admin::Admin(release_inspect::ReleaseInspectJob))
            .with(admin::Admin(db_backup::DbBackupJob))
            .with(admin::Admin(db_restore_rehearsal::DbRestoreRehearsalJob))
            .with(admin::Admin(billing_drift::BillingDriftJob))
            .with(admin::Admin(billing_reconcile::BillingReconcileJob))
            .with(admin::Admin(billing_bulk::Bulk(billing_bulk_move::BillingBulkMove)))
            .with(admin::Admin(billing_bulk::Bulk(billing_bulk_collection::BillingBulkCollection)))
            .with(admin::Admin(billing_bulk::Bulk(billing_bulk_cancel::BillingBulkCancel)))
            .with(webhook_deliver::WebhookDeliverJob)
    }
}

impl<S: StandardDeps> intake::Intakes<S> {
    /// The kinds that accept app payloads through a hook of their own: one line per kind.
    pub fn standard() -> Self {
        Self::default().with(email_send::EmailSendJob).with(webhook_deliver::WebhookDeliverJob)
    }
}
