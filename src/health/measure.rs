//! What each rule sees now: one [`Finding`] per alert key, whether its condition holds, the
//! value against its threshold, and what people read.

use std::time::Duration;

use chrono::Utc;

use super::deps::{Deps, HealthError};

/// One alert key's condition as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `queue_age:stripe.event`, `no_leader`, …
    pub key: String,
    /// The rule (`queue_age`).
    pub rule: &'static str,
    /// Whether the condition holds now.
    pub holds: bool,
    /// What was measured (seconds, or a count).
    pub value: f64,
    /// What it is held against.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires.
    pub hold_for: Duration,
    /// For people.
    pub summary: String,
    /// The runbook page to open.
    pub runbook: String,
}

/// Every rule's findings, now.
pub async fn all(deps: &Deps) -> Result<Vec<Finding>, HealthError> {
    let r = &deps.rules;
    let pool = &deps.system_pool.0;
    let mut out = Vec::new();
    let finding = |key: String, rule: &'static str, value: f64, threshold: f64, summary: String, runbook: &str| Finding {
        key,
        rule,
        holds: value > threshold,
        value,
        threshold,
        hold_for: Duration::ZERO,
        summary,
        runbook: runbook.to_owned(),
    };
    for q in deps.queue.stats().await? {
        let limit = r.queue_age.threshold(&q.kind) as f64;
        let age = q.oldest_ready_age_secs.unwrap_or(0.0);
        let summary = format!("the oldest ready {} job has waited {age:.0} s (threshold {limit:.0} s, {} ready)", q.kind, q.ready);
        out.push(finding(format!("queue_age:{}", q.kind), "queue_age", age, limit, summary, &r.queue_age.runbook));
    }
    // Each count is read by the module that owns its table.
    let sys = &deps.system_pool;
    let window = |minutes: u32| Duration::from_secs(u64::from(minutes) * 60);
    let w = r.dead_letters.window_minutes;
    let n = crate::queue::dead::new_within(sys, window(w)).await? as f64;
    out.push(finding("dead_letters".into(), "dead_letters", n, 0.0, format!("{n:.0} new dead letters in {w} min (`ballast jobs dead`)"), &r.dead_letters.runbook));
    let w = r.dead_emails.window_minutes;
    let n = crate::email::outbox::dead_within(sys, window(w)).await? as f64;
    out.push(finding("dead_emails".into(), "dead_emails", n, 0.0, format!("{n:.0} emails dead in {w} min (`ballast emails list --status dead`)"), &r.dead_emails.runbook));
    let w = r.dead_deliveries.window_minutes;
    let n = crate::webhooks_out::deliveries::failed_within(sys, window(w)).await? as f64;
    out.push(finding("dead_deliveries".into(), "dead_deliveries", n, 0.0, format!("{n:.0} outbound webhook deliveries failed for good in {w} min"), &r.dead_deliveries.runbook));
    let w = r.dead_usage_reports.window_minutes;
    let n = crate::usage::ledger::dead_within(sys, window(w)).await? as f64;
    let summary = format!("{n:.0} usage rows refused by Stripe in {w} min: not billed (`ballast usage ledger --tenant ID`)");
    out.push(finding("dead_usage_reports".into(), "dead_usage_reports", n, 0.0, summary, &r.dead_usage_reports.runbook));
    let oldest = crate::stripe::inbox::oldest_unprocessed_secs(sys).await?;
    let (age, limit) = (oldest.unwrap_or(0.0), r.inbox_unprocessed.threshold_secs as f64);
    let summary = format!("a Stripe event has waited {age:.0} s unprocessed (threshold {limit:.0} s)");
    out.push(finding("inbox_unprocessed".into(), "inbox_unprocessed", age, limit, summary, &r.inbox_unprocessed.runbook));
    // Server side, so every member's pools count (the system role reads every session's).
    let (used, max): (i64, i64) =
        sqlx::query_as("SELECT count(*), current_setting('max_connections')::bigint FROM pg_stat_activity WHERE backend_type = 'client backend'").fetch_one(pool).await?;
    let share = used as f64 / max.max(1) as f64;
    let limit = r.db_connections.max_share;
    let summary = format!("PostgreSQL has {used} of its {max} connections in use ({:.0} %, at most {:.0} %)", share * 100.0, limit * 100.0);
    out.push(finding("db_connections".into(), "db_connections", share, limit, summary, &r.db_connections.runbook));
    let s = &r.stripe_api;
    let (answered, failed) = crate::stripe_api::calls_in_window(&deps.redis, &deps.keys, Utc::now().timestamp().div_euclid(60), s.window_minutes).await?;
    let total = answered + failed;
    let share = if total >= s.min_calls.max(1) { failed as f64 / total as f64 } else { 0.0 };
    let summary = format!("{failed} of the fleet's {total} Stripe API calls failed in {} min ({:.0} %, at most {:.0} %)", s.window_minutes, share * 100.0, s.max_failed_share * 100.0);
    out.push(finding("stripe_api".into(), "stripe_api", share, s.max_failed_share, summary, &s.runbook));
    let leader = crate::scheduler::current_leader(&deps.redis, &deps.keys).await?;
    out.push(Finding {
        key: "no_leader".into(),
        rule: "no_leader",
        holds: leader.is_none(),
        value: if leader.is_none() { 1.0 } else { 0.0 },
        threshold: 0.0,
        hold_for: deps.lease * r.no_leader.lease_periods,
        summary: format!("no scheduler leader for over {} lease periods: no cron tick, no sweep", r.no_leader.lease_periods),
        runbook: r.no_leader.runbook.clone(),
    });
    let now = Utc::now();
    for s in crate::maintenance::status::all(&deps.system_pool, &crate::maintenance::services(), now).await? {
        let since = s.last_ok_at.map_or(-1.0, |t| (now - t).num_seconds() as f64);
        let summary = format!("maintenance service {} has not completed for {} (it runs every {} s; `ballast maintenance`)",
            s.service, if since < 0.0 { "ever".to_owned() } else { format!("{since:.0} s") }, s.period_secs);
        out.push(Finding {
            key: format!("maintenance_overdue:{}", s.service),
            rule: "maintenance_overdue",
            holds: s.overdue,
            value: since,
            threshold: f64::from(s.period_secs) * f64::from(crate::maintenance::OVERDUE_AFTER),
            hold_for: Duration::ZERO,
            summary,
            runbook: r.maintenance_overdue.runbook.clone(),
        });
    }
    out.extend(backups(deps, now).await?);
    for (target, check, ok, at) in super::probe::latest(&deps.system_pool).await? {
        let summary = format!("the {check} check of {target} {} (at {at})", if ok { "answered" } else { "failed" });
        out.push(Finding {
            key: format!("probe:{check}:{target}"),
            rule: "probe",
            holds: !ok,
            value: if ok { 0.0 } else { 1.0 },
            threshold: 0.0,
            hold_for: Duration::from_secs(r.probe.for_secs),
            summary,
            runbook: r.probe.runbook.clone(),
        });
    }
    Ok(out)
}

/// The backup and rehearsal findings, for each source that is configured.
async fn backups(deps: &Deps, now: chrono::DateTime<Utc>) -> Result<Vec<Finding>, HealthError> {
    use crate::backup::runs::Source;
    let mut out = Vec::new();
    let sources = [(Source::Dump, "", deps.backups_configured, deps.rehearsals_configured), (Source::Pgbackrest, "pgbackrest-", deps.pgbackrest_configured, deps.pgbackrest_configured)];
    for (source, prefix, backups, rehearsals) in sources {
        if backups {
            out.push(backup_age(deps, now, source, prefix).await?);
        }
        if rehearsals {
            out.push(rehearsal_state(deps, now, source, prefix).await?);
        }
    }
    Ok(out)
}

fn age_of(now: chrono::DateTime<Utc>, t: Option<chrono::DateTime<Utc>>) -> f64 {
    t.map_or(f64::INFINITY, |t| (now - t).num_seconds() as f64)
}

async fn backup_age(deps: &Deps, now: chrono::DateTime<Utc>, source: crate::backup::runs::Source, prefix: &str) -> Result<Finding, HealthError> {
    use crate::backup::runs::{self, RunKind};
    let r = &deps.rules.backups;
    let last = age_of(now, runs::newest_ok(&deps.system_pool, RunKind::Backup, source).await?);
    let limit = f64::from(r.backup_max_age_hours) * 3600.0;
    let what = source.as_str();
    let summary = if last.is_finite() { format!("the newest {what} backup is {:.1} h old (at most {} h)", last / 3600.0, r.backup_max_age_hours) } else { format!("no {what} backup has completed") };
    Ok(Finding { key: format!("backups:{prefix}backup"), rule: "backups", holds: last > limit, value: last.min(f64::MAX), threshold: limit, hold_for: Duration::ZERO, summary, runbook: r.runbook.clone() })
}

async fn rehearsal_state(deps: &Deps, now: chrono::DateTime<Utc>, source: crate::backup::runs::Source, prefix: &str) -> Result<Finding, HealthError> {
    use crate::backup::runs::{self, RunKind};
    let r = &deps.rules.backups;
    let newest = runs::newest(&deps.system_pool, RunKind::Rehearsal, source).await?;
    let last_ok = age_of(now, runs::newest_ok(&deps.system_pool, RunKind::Rehearsal, source).await?);
    let limit = f64::from(r.rehearsal_max_age_days) * 86_400.0;
    let failed = newest.is_some_and(|(_, ok)| !ok);
    let what = source.as_str();
    let summary = if failed {
        format!("the newest {what} restore rehearsal failed (`ballast runbook runs`)")
    } else if last_ok.is_finite() {
        format!("the newest passing {what} restore rehearsal is {:.1} days old (at most {})", last_ok / 86_400.0, r.rehearsal_max_age_days)
    } else {
        format!("no {what} restore rehearsal has passed")
    };
    Ok(Finding { key: format!("backups:{prefix}rehearsal"), rule: "backups", holds: failed || last_ok > limit, value: if failed { 1.0 } else { last_ok.min(f64::MAX) }, threshold: limit, hold_for: Duration::ZERO, summary, runbook: r.runbook.clone() })
}
