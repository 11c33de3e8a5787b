//! `slo.evaluate` (every minute) and `ballast slo status`: each SLO's SLI over its window, the
//! budget left, every scaled rule's burn over its two windows, and the alert state. With
//! `apply`, alert transitions are stored and each one gets a notification row (delivered by
//! `slo.notify`); minute counts older than the longest window plus a day are removed.
//!
//! Windows end at the start of the current minute: they hold whole minutes only, so an
//! evaluation a few milliseconds into a minute does not see that minute's first requests as
//! its whole traffic.

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use serde::Serialize;

use super::{Counts, RuleState, Severity, Slo, judge, rules_for};
use super::Deps;

/// An evaluation that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum SloError {
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// Redis failed (queueing a notification).
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
}

/// One alert's state.
#[derive(Debug, Clone, Serialize)]
pub struct AlertStatus {
    /// `{slo}:{severity}`.
    pub alert_key: String,
    /// Page or ticket.
    pub severity: Severity,
    /// `firing` or `resolved`.
    pub state: String,
    /// Since when.
    pub since: Option<DateTime<Utc>>,
    /// Whether this evaluation changed it (only with `apply`).
    pub changed: bool,
}

/// One SLO at one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct SloStatus {
    /// The SLO.
    pub name: String,
    /// Its target.
    pub target: f64,
    /// Its window, minutes.
    pub window_minutes: i64,
    /// Counts over the window.
    pub window: Counts,
    /// Good / valid over the window (1 with no events).
    pub sli: f64,
    /// Share of the window's error budget left (negative when overspent).
    pub budget_remaining: f64,
    /// Every rule.
    pub rules: Vec<RuleState>,
    /// Page and ticket.
    pub alerts: Vec<AlertStatus>,
}

/// The evaluation instant: the start of `now`'s minute.
fn window_end(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(ChronoDuration::minutes(1)).unwrap_or(now)
}

/// Counts of `slo` over windows of `minutes` ending at `end`, in one query. Two rules may share
/// a window length (6 h × 7/28 and 6 h short of the ticket rule): each length is summed once.
async fn counts(pool: &sqlx::PgPool, slo: &str, minutes: &[i64], end: DateTime<Utc>) -> Result<Vec<Counts>, sqlx::Error> {
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT w.minutes, COALESCE(sum(s.good), 0)::bigint, COALESCE(sum(s.valid), 0)::bigint
         FROM (SELECT DISTINCT UNNEST($2::bigint[]) AS minutes) AS w
         LEFT JOIN slo_minutes s ON s.slo = $1 AND s.minute >= $3 - make_interval(mins => w.minutes::int) AND s.minute < $3
         GROUP BY w.minutes",
    )
    .bind(slo)
    .bind(minutes)
    .bind(end)
    .fetch_all(pool)
    .await?;
    Ok(minutes
        .iter()
        .map(|m| rows.iter().find(|r| r.0 == *m).map(|r| Counts { good: r.1, valid: r.2 }).unwrap_or_default())
        .collect())
}

/// Evaluates every SLO at `now`. With `apply`, stores alert transitions and queues their
/// notifications (System pool: SLO tables are global, not tenant data.)
pub async fn run(state: &Deps, now: DateTime<Utc>, apply: bool) -> Result<Vec<SloStatus>, SloError> {
    let pool = &state.system_pool.0;
    let end = window_end(now);
    let mut out = Vec::with_capacity(state.slos.slos.len());
    for slo in &state.slos.slos {
        let status = evaluate_one(pool, slo, end).await?;
        let mut alerts = Vec::new();
        for severity in [Severity::Page, Severity::Ticket] {
            let firing = status.rules.iter().any(|r| r.rule.severity == severity && r.firing);
            let alert = if apply { transition(state, &status, severity, firing, end).await? } else { stored(pool, &status.name, severity).await? };
            alerts.push(alert);
        }
        if apply {
            sqlx::query(
                "INSERT INTO slo_status (slo, sli, budget_remaining, evaluated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (slo) DO UPDATE SET sli = EXCLUDED.sli, budget_remaining = EXCLUDED.budget_remaining, evaluated_at = EXCLUDED.evaluated_at",
            )
            .bind(&status.name)
            .bind(status.sli)
            .bind(status.budget_remaining)
            .bind(end)
            .execute(pool)
            .await?;
        }
        out.push(SloStatus { alerts, ..status });
    }
    if apply {
        let keep = ChronoDuration::from_std(state.slos.longest_window()).unwrap_or(ChronoDuration::days(90)) + ChronoDuration::days(1);
        sqlx::query("DELETE FROM slo_minutes WHERE minute < $1").bind(end - keep).execute(pool).await?;
        requeue_pending(state).await?;
    }
    Ok(out)
}

async fn evaluate_one(pool: &sqlx::PgPool, slo: &Slo, end: DateTime<Utc>) -> Result<SloStatus, SloError> {
    let rules = rules_for(slo.window);
    let window_minutes = i64::try_from(slo.window.as_secs() / 60).unwrap_or(i64::MAX);
    let mut minutes = vec![window_minutes];
    for r in &rules {
        minutes.push(r.long_minutes);
        minutes.push(r.short_minutes);
    }
    let found = counts(pool, &slo.name, &minutes, end).await?;
    let window = found[0];
    let states = rules.iter().enumerate().map(|(i, r)| judge(*r, found[1 + 2 * i], found[2 + 2 * i], slo.target, slo.min_events)).collect();
    Ok(SloStatus {
        name: slo.name.clone(),
        target: slo.target,
        window_minutes,
        window,
        sli: window.ratio(),
        budget_remaining: 1.0 - window.burn_rate(slo.target),
        rules: states,
        alerts: Vec::new(),
    })
}

fn alert_key(slo: &str, severity: Severity) -> String {
    format!("{slo}:{}", severity.as_str())
}

async fn stored(pool: &sqlx::PgPool, slo: &str, severity: Severity) -> Result<AlertStatus, sqlx::Error> {
    let key = alert_key(slo, severity);
    let row: Option<(String, DateTime<Utc>)> = sqlx::query_as("SELECT state, since FROM slo_alerts WHERE alert_key = $1").bind(&key).fetch_optional(pool).await?;
    Ok(AlertStatus {
        alert_key: key,
        severity,
        state: row.as_ref().map_or_else(|| "resolved".to_owned(), |r| r.0.clone()),
        since: row.map(|r| r.1),
        changed: false,
    })
}

/// Stores the alert's state; a change writes a notification row in the same transaction and
/// queues its delivery after the commit.
async fn transition(state: &Deps, status: &SloStatus, severity: Severity, firing: bool, at: DateTime<Utc>) -> Result<AlertStatus, SloError> {
    let pool = &state.system_pool.0;
    let key = alert_key(&status.name, severity);
    let new_state = if firing { "firing" } else { "resolved" };
    let mut tx = pool.begin().await?;
    // Serialises concurrent evaluations of the same alert (a manual run beside the cron one).
    sqlx::query("INSERT INTO slo_alerts (alert_key, slo, severity, state, since, evaluated_at) VALUES ($1, $2, $3, 'resolved', $4, $4) ON CONFLICT (alert_key) DO NOTHING")
        .bind(&key)
        .bind(&status.name)
        .bind(severity.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await?;
    let (old, since, transitions): (String, DateTime<Utc>, i64) =
        sqlx::query_as("SELECT state, since, transitions FROM slo_alerts WHERE alert_key = $1 FOR UPDATE").bind(&key).fetch_one(&mut *tx).await?;
    if old == new_state {
        sqlx::query("UPDATE slo_alerts SET evaluated_at = $2 WHERE alert_key = $1").bind(&key).bind(at).execute(&mut *tx).await?;
        tx.commit().await?;
        return Ok(AlertStatus { alert_key: key, severity, state: old, since: Some(since), changed: false });
    }
    let transition = transitions + 1;
    sqlx::query("UPDATE slo_alerts SET state = $2, since = $3, transitions = $4, evaluated_at = $3 WHERE alert_key = $1")
        .bind(&key)
        .bind(new_state)
        .bind(at)
        .bind(transition)
        .execute(&mut *tx)
        .await?;
    let rules: Vec<&RuleState> = status.rules.iter().filter(|r| r.rule.severity == severity).collect();
    let details = serde_json::json!({
        "slo": status.name, "severity": severity, "state": new_state, "at": at, "target": status.target,
        "sli": status.sli, "budget_remaining": status.budget_remaining, "window_minutes": status.window_minutes, "rules": rules,
    });
    let id = uuid::Uuid::new_v4();
    sqlx::query("INSERT INTO slo_notifications (id, alert_key, transition, state, details) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(&key)
        .bind(transition)
        .bind(new_state)
        .bind(&details)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    crate::fault::point("slo.evaluate.after_commit");
    tracing::warn!(message = "SLO alert changed state.", alert = %key, state = new_state, sli = status.sli, budget_remaining = status.budget_remaining);
    if let Err(e) = super::notify::enqueue(state, id).await {
        // The row is durable; the next evaluation queues it again.
        tracing::warn!(message = "SLO notification not queued yet; the next evaluation retries.", alert = %key, error = %e);
    }
    Ok(AlertStatus { alert_key: key, severity, state: new_state.to_owned(), since: Some(at), changed: true })
}

/// Queues every pending notification again (the enqueue is idempotent per notification), so a
/// queue outage between a commit and its enqueue delays a notification, never drops it.
async fn requeue_pending(state: &Deps) -> Result<(), SloError> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM slo_notifications WHERE status = 'pending' ORDER BY created_at LIMIT 100")
        .fetch_all(&state.system_pool.0)
        .await?;
    for id in ids {
        super::notify::enqueue(state, id).await?;
    }
    Ok(())
}

/// Each SLO's SLI and budget left as the latest evaluation stored them (for `/metrics`).
pub async fn latest(pool: &sqlx::PgPool) -> Result<Vec<(String, f64, f64)>, sqlx::Error> {
    sqlx::query_as("SELECT slo, sli, budget_remaining FROM slo_status ORDER BY slo").fetch_all(pool).await
}
