//! `fleet_alerts` and `fleet_health_rounds`: each alert key's state and its transitions, and
//! which member claimed the latest round. This module owns both tables.
//!
//! A condition that holds makes its key `pending` (from then on), then `firing` once it has
//! held for its hold time (at once for most rules); a firing key whose condition no longer
//! holds goes back to `ok`. Opening and resolving each record one notification (the SLO
//! notifier's outbox, key `fleet:{alert_key}`), in the transaction that made the transition.

use chrono::{DateTime, Utc};

use super::measure::Finding;
use crate::db::SystemPool;

/// An alert key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Its condition does not hold.
    Ok,
    /// Its condition holds, not yet for its hold time.
    Pending,
    /// Open: notified.
    Firing,
}

impl State {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Pending => "pending",
            State::Firing => "firing",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "pending" => State::Pending,
            "firing" => State::Firing,
            _ => State::Ok,
        }
    }
}

/// One alert key after a round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertState {
    /// `queue_age:stripe.event`.
    pub key: String,
    /// Its state.
    pub state: State,
    /// What was measured, against what.
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// For people.
    pub summary: String,
    /// The page to open.
    pub runbook: String,
}

/// One alert as the operators' pages list it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AlertRow {
    /// `queue_age:stripe.event`.
    pub alert_key: String,
    /// The rule.
    pub rule: String,
    /// `ok` (resolved), `pending` or `firing`.
    pub state: String,
    /// Since when it is in that state.
    pub since: DateTime<Utc>,
    /// What was measured.
    pub value: f64,
    /// Against what.
    pub threshold: f64,
    /// For people.
    pub summary: String,
    /// When it was last evaluated.
    pub evaluated_at: DateTime<Utc>,
}

/// Every alert, firing first, then pending, then the resolved ones, newest change first.
pub async fn all(pool: &SystemPool) -> Result<Vec<AlertRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT alert_key, rule, state, since, value, threshold, summary, evaluated_at FROM fleet_alerts
         ORDER BY CASE state WHEN 'firing' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, since DESC",
    )
    .fetch_all(&pool.0)
    .await
}

/// Every alert key with its rule and whether it fires, as last evaluated (for `/metrics`).
pub async fn firing(pool: &SystemPool) -> Result<Vec<(String, String, bool)>, sqlx::Error> {
    sqlx::query_as("SELECT alert_key, rule, state = 'firing' FROM fleet_alerts ORDER BY alert_key").fetch_all(&pool.0).await
}

/// Claims the round at `now` for `member` when the last one is at least `every` old: true
/// when this member evaluates. One statement, so two members never both win.
pub async fn claim_round(pool: &SystemPool, member: &str, now: DateTime<Utc>, every: std::time::Duration) -> Result<bool, sqlx::Error> {
    let claimed: Option<bool> = sqlx::query_scalar(
        "INSERT INTO fleet_health_rounds (one, claimed_at, claimed_by) VALUES (true, $1, $2)
         ON CONFLICT (one) DO UPDATE SET claimed_at = EXCLUDED.claimed_at, claimed_by = EXCLUDED.claimed_by
         WHERE fleet_health_rounds.claimed_at <= EXCLUDED.claimed_at - make_interval(secs => $3)
         RETURNING true",
    )
    .bind(now)
    .bind(member)
    // A little early is still this round: members' clocks and loops drift by milliseconds.
    .bind(every.as_secs_f64() * 0.9)
    .fetch_optional(&pool.0)
    .await?;
    Ok(claimed.unwrap_or(false))
}

#[derive(sqlx::FromRow)]
struct Stored {
    alert_key: String,
    state: String,
    pending_since: Option<DateTime<Utc>>,
    transitions: i64,
}

/// Applies `findings` at `now`: the new states, and the notifications to push after the commit.
pub async fn apply(pool: &SystemPool, findings: &[Finding], now: DateTime<Utc>) -> Result<(Vec<AlertState>, Vec<uuid::Uuid>), sqlx::Error> {
    let mut tx = pool.0.begin().await?;
    let stored: Vec<Stored> = sqlx::query_as("SELECT alert_key, state, pending_since, transitions FROM fleet_alerts FOR UPDATE").fetch_all(&mut *tx).await?;
    let mut states = Vec::with_capacity(findings.len());
    let mut notices = Vec::new();
    for f in findings {
        let held = stored.iter().find(|s| s.alert_key == f.key);
        let was = held.map_or(State::Ok, |s| State::parse(&s.state));
        let pending_since = if f.holds { held.and_then(|s| s.pending_since).or(Some(now)) } else { None };
        let long_enough = pending_since.is_some_and(|t| now - t >= chrono::Duration::from_std(f.hold_for).unwrap_or_default());
        let state = match (f.holds, long_enough) {
            (true, true) => State::Firing,
            (true, false) if was == State::Firing => State::Firing,
            (true, false) => State::Pending,
            (false, _) => State::Ok,
        };
        let mut transitions = held.map_or(0, |s| s.transitions);
        let opened = state == State::Firing && was != State::Firing;
        let resolved = state != State::Firing && was == State::Firing;
        if opened || resolved {
            transitions += 1;
            let notice = crate::slo::notify::OperatorNotice {
                alert_key: format!("fleet:{}", f.key),
                transition: transitions,
                firing: opened,
                source: "fleet",
                summary: if opened { format!("Fleet: {} — runbook {}", f.summary, f.runbook) } else { format!("Fleet: resolved — {}", f.summary) },
                details: serde_json::json!({"rule": f.rule, "value": f.value, "threshold": f.threshold, "runbook": f.runbook}),
            };
            notices.extend(crate::slo::notify::record(&mut tx, &notice).await?);
        }
        let since = if state == was { None } else { Some(now) };
        sqlx::query(
            "INSERT INTO fleet_alerts (alert_key, rule, state, pending_since, since, transitions, value, threshold, summary, evaluated_at)
             VALUES ($1, $2, $3, $4, COALESCE($5, $10), $6, $7, $8, $9, $10)
             ON CONFLICT (alert_key) DO UPDATE SET state = EXCLUDED.state, pending_since = EXCLUDED.pending_since,
                 since = COALESCE($5, fleet_alerts.since), transitions = EXCLUDED.transitions, value = EXCLUDED.value,
                 threshold = EXCLUDED.threshold, summary = EXCLUDED.summary, evaluated_at = EXCLUDED.evaluated_at",
        )
        .bind(&f.key)
        .bind(f.rule)
        .bind(state.as_str())
        .bind(pending_since)
        .bind(since)
        .bind(transitions)
        .bind(f.value)
        .bind(f.threshold)
        .bind(&f.summary)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        states.push(AlertState { key: f.key.clone(), state, value: f.value, threshold: f.threshold, summary: f.summary.clone(), runbook: f.runbook.clone() });
    }
    // A key no rule measures any more (a job kind removed) cannot stay open.
    let gone: Vec<&Stored> = stored.iter().filter(|s| s.state == "firing" && !findings.iter().any(|f| f.key == s.alert_key)).collect();
    for s in gone {
        let notice = crate::slo::notify::OperatorNotice {
            alert_key: format!("fleet:{}", s.alert_key),
            transition: s.transitions + 1,
            firing: false,
            source: "fleet",
            summary: format!("Fleet: resolved — {} is no longer measured", s.alert_key),
            details: serde_json::json!({}),
        };
        notices.extend(crate::slo::notify::record(&mut tx, &notice).await?);
        sqlx::query("UPDATE fleet_alerts SET state = 'ok', pending_since = NULL, since = $2, transitions = transitions + 1, evaluated_at = $2 WHERE alert_key = $1")
            .bind(&s.alert_key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((states, notices))
}
