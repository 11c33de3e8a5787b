//! `maintenance_status`: the last run of each maintenance service. This module owns the table.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::SystemPool;

/// What one run came to, as [`record`] keeps it.
#[derive(Debug)]
pub struct Outcome {
    /// The service.
    pub service: &'static str,
    /// Its period.
    pub period: Duration,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub took: Duration,
    /// What it did, or its error.
    pub result: Result<super::service::Report, String>,
}

/// Keeps `outcome` as its service's last status.
pub async fn record(pool: &SystemPool, outcome: &Outcome) -> Result<(), sqlx::Error> {
    let (report, error) = match &outcome.result {
        Ok(r) => (Some(sqlx::types::Json(r)), None),
        Err(e) => (None, Some(e.as_str())),
    };
    sqlx::query(
        "INSERT INTO maintenance_status (service, period_secs, last_started_at, last_finished_at, last_duration_ms, last_report,
             last_error, last_ok_at, runs, failures)
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $7::text IS NULL THEN $4 END, 1, CASE WHEN $7::text IS NULL THEN 0 ELSE 1 END)
         ON CONFLICT (service) DO UPDATE SET period_secs = EXCLUDED.period_secs, last_started_at = EXCLUDED.last_started_at,
             last_finished_at = EXCLUDED.last_finished_at, last_duration_ms = EXCLUDED.last_duration_ms,
             last_report = EXCLUDED.last_report, last_error = EXCLUDED.last_error,
             last_ok_at = COALESCE(EXCLUDED.last_ok_at, maintenance_status.last_ok_at),
             runs = maintenance_status.runs + 1, failures = maintenance_status.failures + EXCLUDED.failures",
    )
    .bind(outcome.service)
    .bind(i32::try_from(outcome.period.as_secs()).unwrap_or(i32::MAX))
    .bind(outcome.started_at)
    .bind(outcome.started_at + chrono::Duration::from_std(outcome.took).unwrap_or_default())
    .bind(outcome.took.as_secs_f64() * 1000.0)
    .bind(report)
    .bind(error)
    .execute(&pool.0)
    .await?;
    Ok(())
}

/// Each service's latest completed run (unix seconds), for `/metrics`.
pub async fn last_ok(pool: &SystemPool) -> Result<Vec<(String, Option<f64>)>, sqlx::Error> {
    sqlx::query_as("SELECT service, EXTRACT(EPOCH FROM last_ok_at)::float8 FROM maintenance_status ORDER BY service").fetch_all(&pool.0).await
}

/// One service's last status, as `ballast maintenance` shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct ServiceStatus {
    /// The service.
    pub service: String,
    /// How often it runs (seconds).
    pub period_secs: i32,
    /// Its latest run.
    pub last_started_at: Option<DateTime<Utc>>,
    /// How long that took.
    pub last_duration_ms: Option<f64>,
    /// What it did.
    pub last_report: Option<sqlx::types::Json<super::service::Report>>,
    /// Its error, if it failed.
    pub last_error: Option<String>,
    /// The latest run that completed.
    pub last_ok_at: Option<DateTime<Utc>>,
    /// Runs recorded.
    pub runs: i64,
    /// Of which failed.
    pub failures: i64,
    /// Not completed within [`super::service::OVERDUE_AFTER`] periods (or never, where it should have).
    #[sqlx(default)]
    pub overdue: bool,
}

/// The status at `now` of each of `services`, those that never ran included: overdue once
/// their periods have passed since the fleet first ran any (never, when none ever ran: no
/// leader yet is the leader alert's case).
pub async fn all(pool: &SystemPool, services: &[Box<dyn super::service::Service>], now: DateTime<Utc>) -> Result<Vec<ServiceStatus>, sqlx::Error> {
    let first: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT min(last_started_at) FROM maintenance_status").fetch_one(&pool.0).await?;
    let since = first.unwrap_or(now);
    let stored: Vec<ServiceStatus> = sqlx::query_as(
        "SELECT service, period_secs, last_started_at, last_duration_ms, last_report, last_error, last_ok_at, runs, failures
         FROM maintenance_status",
    )
    .fetch_all(&pool.0)
    .await?;
    let mut out = Vec::new();
    for service in services {
        let period = i32::try_from(service.period().as_secs()).unwrap_or(i32::MAX);
        let mut s = stored.iter().find(|s| s.service == service.name()).cloned().unwrap_or(ServiceStatus {
            service: service.name().to_owned(),
            period_secs: period,
            last_started_at: None,
            last_duration_ms: None,
            last_report: None,
            last_error: None,
            last_ok_at: None,
            runs: 0,
            failures: 0,
            overdue: false,
        });
        s.period_secs = period;
        s.overdue = overdue(s.last_ok_at, since, service.period(), now);
        out.push(s);
    }
    Ok(out)
}

/// Whether a service whose last completed run was `last_ok` (none: never, counted from `since`)
/// is overdue at `now`.
pub fn overdue(last_ok: Option<DateTime<Utc>>, since: DateTime<Utc>, period: Duration, now: DateTime<Utc>) -> bool {
    let allowed = chrono::Duration::from_std(period * super::service::OVERDUE_AFTER).unwrap_or(chrono::Duration::MAX);
    now - last_ok.unwrap_or(since) > allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_overdue_past_three_periods_without_completing() {
        let now = Utc::now();
        let minute = Duration::from_secs(60);
        assert!(!overdue(Some(now - chrono::Duration::seconds(179)), now, minute, now));
        assert!(overdue(Some(now - chrono::Duration::seconds(181)), now, minute, now));
        // Never completed: counted from when the fleet could first have run it.
        assert!(!overdue(None, now - chrono::Duration::seconds(60), minute, now));
        assert!(overdue(None, now - chrono::Duration::seconds(200), minute, now));
    }
}
