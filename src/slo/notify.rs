//! Delivering alert transitions: one `slo_notifications` row per transition, sent once to
//! `BALLAST_SLO_WEBHOOK_URL` by `slo.notify` in the configured shape (generic JSON, PagerDuty
//! Events v2, Slack incoming webhook). A send is retried with backoff in the job (backon) and
//! then by the queue; the row's status makes a re-run after success a no-op, and every request
//! carries the notification id (`Idempotency-Key`) and the alert key (PagerDuty `dedup_key`)
//! so a receiver can drop a repeat.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::NotifyFormat;
use super::Deps;

/// The job kind that sends one notification.
pub const JOB_KIND: &str = "slo.notify";

/// A delivery that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    /// The receiver failed or could not be reached; worth retrying later.
    #[error("webhook: {0}")]
    Transient(String),
    /// The receiver refused the request (4xx other than 408/429): retrying the same body will
    /// not help. The row is marked dead.
    #[error("webhook refused: {0}")]
    Refused(String),
}

/// What a send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sent {
    /// Delivered now.
    Delivered,
    /// Delivered before (a repeated job).
    AlreadySent,
    /// No webhook configured: recorded and logged only.
    Unconfigured,
}

/// The `slo.notify` job's arguments: the notification row to deliver.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyArgs {
    /// The `slo_notifications` row.
    pub notification_id: uuid::Uuid,
}

impl crate::queue::job::JobArgs for NotifyArgs {
    const KIND: &'static str = JOB_KIND;
}

/// Queues the send of notification `id` (idempotent per notification).
pub async fn enqueue(state: &Deps, id: uuid::Uuid) -> Result<(), crate::queue::QueueError> {
    push(&state.queue, id).await
}

/// Queues the send of notification `id` on `queue` (idempotent per notification).
pub async fn push(queue: &crate::queue::JobQueue, id: uuid::Uuid) -> Result<(), crate::queue::QueueError> {
    let mut req = crate::queue::EnqueueRequest::typed(&NotifyArgs { notification_id: id });
    req.idempotency_key = Some(format!("{JOB_KIND}:{id}"));
    queue.enqueue(req).await.map(|_| ())
}

/// A notice for operators that is not an SLO's (a dispute opening and closing), sent through
/// the same webhook: `summary` is what people read, `alert_key` pairs a firing notice with its
/// resolution (PagerDuty's `dedup_key`).
#[derive(Debug, Clone)]
pub struct OperatorNotice {
    /// Pairs a firing notice with its resolution: `dispute:{id}`.
    pub alert_key: String,
    /// 1 for the first notice of the key, 2 for the next: each is recorded once.
    pub transition: i64,
    /// Firing or resolved.
    pub firing: bool,
    /// Where it comes from (`dispute`): the group receivers see.
    pub source: &'static str,
    /// What happened, for people.
    pub summary: String,
    /// The rest, for the receiver's details.
    pub details: Value,
}

/// Records `notice` once (per alert key and transition) in the caller's transaction; the id to
/// [`push`] after the commit, or `None` when it was recorded before.
pub async fn record(conn: &mut sqlx::PgConnection, notice: &OperatorNotice) -> Result<Option<uuid::Uuid>, sqlx::Error> {
    let mut details = notice.details.clone();
    details["source"] = json!(notice.source);
    details["summary"] = json!(notice.summary);
    details["severity"] = json!("warning");
    sqlx::query_scalar(
        "INSERT INTO slo_notifications (id, alert_key, transition, state, details) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (alert_key, transition) DO NOTHING RETURNING id",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(&notice.alert_key)
    .bind(notice.transition)
    .bind(if notice.firing { "firing" } else { "resolved" })
    .bind(details)
    .fetch_optional(conn)
    .await
}

#[derive(sqlx::FromRow)]
struct Row {
    alert_key: String,
    state: String,
    details: Value,
    status: String,
    created_at: DateTime<Utc>,
}

/// The request body for `format`.
pub fn body(format: NotifyFormat, routing_key: Option<&str>, alert_key: &str, state: &str, details: &Value, at: DateTime<Utc>) -> Value {
    let slo = details["slo"].as_str().unwrap_or(alert_key);
    let severity = details["severity"].as_str().unwrap_or("page");
    let budget = details["budget_remaining"].as_f64().unwrap_or(1.0) * 100.0;
    let sli = details["sli"].as_f64().unwrap_or(1.0) * 100.0;
    let worst = details["rules"]
        .as_array()
        .and_then(|rules| rules.iter().filter_map(|r| r["long_burn"].as_f64().map(|b| (b, r["rule"]["long_minutes"].as_i64().unwrap_or(0)))).max_by(|a, b| a.0.total_cmp(&b.0)))
        .unwrap_or((0.0, 0));
    // An operator notice carries its own summary and source; an SLO's is computed.
    let group = details["source"].as_str().unwrap_or("slo");
    let summary = if let Some(own) = details["summary"].as_str() {
        own.to_owned()
    } else if state == "firing" {
        format!("SLO {slo}: {} — burning {:.1}x its error budget over {} min (SLI {sli:.3} %, budget left {budget:.1} %)", severity.to_uppercase(), worst.0, worst.1)
    } else {
        format!("SLO {slo}: {} resolved (SLI {sli:.3} %, budget left {budget:.1} %)", severity.to_uppercase())
    };
    match format {
        NotifyFormat::Generic => json!({
            "alert_key": alert_key, "source": group, "slo": slo, "severity": severity, "state": state, "at": at, "summary": summary, "details": details,
        }),
        NotifyFormat::Pagerduty if state == "firing" => json!({
            "routing_key": routing_key, "event_action": "trigger", "dedup_key": alert_key,
            "payload": {
                "summary": summary, "source": "ballast", "severity": if severity == "page" { "critical" } else { "warning" },
                "timestamp": at, "component": slo, "group": group, "class": severity, "custom_details": details,
            },
        }),
        NotifyFormat::Pagerduty => json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": alert_key}),
        NotifyFormat::Slack => {
            let icon = if state == "resolved" { ":white_check_mark:" } else if severity == "page" { ":rotating_light:" } else { ":warning:" };
            json!({"text": format!("{icon} {summary}")})
        }
    }
}

/// Sends notification `id` once.
pub async fn send(state: &Deps, id: uuid::Uuid) -> Result<Sent, NotifyError> {
    // System pool: SLO tables are global.
    let pool = &state.system_pool.0;
    let row: Option<Row> = sqlx::query_as("SELECT alert_key, state, details, status, created_at FROM slo_notifications WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Err(NotifyError::Refused(format!("notification {id} does not exist"))) };
    if row.status != "pending" {
        return Ok(Sent::AlreadySent);
    }
    let Some(url) = state.settings.slo_webhook_url.as_ref() else {
        tracing::warn!(message = "SLO alert changed state; no BALLAST_SLO_WEBHOOK_URL to notify.", alert = %row.alert_key, state = %row.state);
        sqlx::query("UPDATE slo_notifications SET status = 'unconfigured' WHERE id = $1").bind(id).execute(pool).await?;
        return Ok(Sent::Unconfigured);
    };
    let routing_key = state.settings.slo_pagerduty_routing_key.as_ref().map(|k| k.expose_secret().to_owned());
    let payload = body(state.slos.notify.format, routing_key.as_deref(), &row.alert_key, &row.state, &row.details, row.created_at);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| NotifyError::Transient(e.to_string()))?;
    let post = || async {
        let resp = client
            .post(url.expose_secret())
            .header("Idempotency-Key", id.to_string())
            .json(&payload)
            .send()
            .await
            .map_err(|e| NotifyError::Transient(e.without_url().to_string()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS && status != reqwest::StatusCode::REQUEST_TIMEOUT {
            Err(NotifyError::Refused(format!("{status}")))
        } else {
            Err(NotifyError::Transient(format!("{status}")))
        }
    };
    let backoff = ExponentialBuilder::default().with_min_delay(Duration::from_millis(200)).with_max_delay(Duration::from_secs(5)).with_max_times(3).with_jitter();
    let outcome = post.retry(backoff).when(|e| matches!(e, NotifyError::Transient(_))).await;
    match outcome {
        Ok(()) => {
            sqlx::query("UPDATE slo_notifications SET status = 'sent', sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await?;
            Ok(Sent::Delivered)
        }
        Err(e) => {
            let status = if matches!(e, NotifyError::Refused(_)) { "dead" } else { "pending" };
            sqlx::query("UPDATE slo_notifications SET status = $2, attempts = attempts + 1, last_error = $3 WHERE id = $1")
                .bind(id)
                .bind(status)
                .bind(e.to_string())
                .execute(pool)
                .await?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details() -> Value {
        json!({"slo": "intake-availability", "severity": "page", "sli": 0.9, "budget_remaining": -0.5,
               "rules": [{"rule": {"long_minutes": 15}, "long_burn": 26.7}]})
    }

    #[test]
    fn each_format_has_its_receivers_shape() {
        let at = Utc::now();
        let generic = body(NotifyFormat::Generic, None, "intake-availability:page", "firing", &details(), at);
        assert_eq!((generic["alert_key"].as_str(), generic["state"].as_str()), (Some("intake-availability:page"), Some("firing")));
        assert!(generic["summary"].as_str().is_some_and(|s| s.contains("26.7x") && s.contains("15 min")), "{generic}");

        let trigger = body(NotifyFormat::Pagerduty, Some("rk"), "intake-availability:page", "firing", &details(), at);
        assert_eq!((trigger["event_action"].as_str(), trigger["dedup_key"].as_str()), (Some("trigger"), Some("intake-availability:page")));
        assert_eq!((trigger["routing_key"].as_str(), trigger["payload"]["severity"].as_str()), (Some("rk"), Some("critical")));
        assert!(trigger["payload"]["summary"].is_string() && trigger["payload"]["source"] == "ballast");
        let resolve = body(NotifyFormat::Pagerduty, Some("rk"), "intake-availability:page", "resolved", &details(), at);
        assert_eq!(resolve, json!({"routing_key": "rk", "event_action": "resolve", "dedup_key": "intake-availability:page"}));

        let slack = body(NotifyFormat::Slack, None, "intake-availability:page", "firing", &details(), at);
        assert!(slack["text"].as_str().is_some_and(|t| t.starts_with(":rotating_light:")), "{slack}");
        assert_eq!(slack.as_object().map(|o| o.len()), Some(1), "Slack's incoming webhook takes text");
    }
}
