//! `limits.spike` (admin job, runbook rate-limit-spike). Reports the most blocked subjects
//! (policy and key, tenant or IP) and routes over the last minutes. Executing applies the
//! override named by the parameters — a raised limit (`limit`) or no limit (`allow`) for one
//! subject until `ttl` ends — or removes it (`revert`). Overrides end by themselves.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::kind::{JobContext, JobError};
use crate::ratelimit::{Override, PolicyName, Subject};
use super::admin::AdminJob;

/// The job.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitsSpikeJob;

/// Parameters.
#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpikeParams {
    /// Minutes to look back (default 15).
    #[serde(default)]
    pub minutes: Option<i64>,
    /// The override's policy: anonymous, key, tenant_writes, tenant_emails or tenant_webhooks.
    #[serde(default)]
    pub policy: Option<String>,
    /// Its subject: ip:ADDR, key:UUID or tenant:UUID.
    #[serde(default)]
    pub subject: Option<String>,
    /// The raised limit.
    #[serde(default)]
    pub limit: Option<u32>,
    /// No limit at all.
    #[serde(default)]
    pub allow: bool,
    /// How long (`30m`, `2h`; default 1h, at most 7 days).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Remove the override instead.
    #[serde(default)]
    pub revert: bool,
}

/// What `execute` would do, checked before anything is reported as planned.
/// An override to set (what, for how long), or `None`: remove it.
type Action = Option<(Override, std::time::Duration)>;

fn planned(p: &LimitsSpikeParams) -> Result<Option<(PolicyName, Subject, Action)>, JobError> {
    let (Some(policy), Some(subject)) = (&p.policy, &p.subject) else {
        return if p.limit.is_some() || p.allow || p.revert {
            Err(JobError::Cancel("an override needs policy=… and subject=…".into()))
        } else {
            Ok(None)
        };
    };
    let policy = PolicyName::parse(policy)
        .filter(|x| *x != PolicyName::AuthFailures)
        .ok_or_else(|| JobError::Cancel(format!("policy {policy:?}: expected anonymous, key, tenant_writes, tenant_emails or tenant_webhooks")))?;
    let subject: Subject = subject.parse().map_err(|e: String| JobError::Cancel(format!("subject: {e}")))?;
    if p.revert {
        return Ok(Some((policy, subject, None)));
    }
    let what = match (p.allow, p.limit) {
        (true, None) => Override::Allow,
        (false, Some(n)) => Override::Limit(n),
        _ => return Err(JobError::Cancel("give exactly one of limit=N or allow=true (or revert=true)".into())),
    };
    let ttl = humantime::parse_duration(p.ttl.as_deref().unwrap_or("1h")).map_err(|e| JobError::Cancel(format!("ttl: {e}")))?;
    if ttl.is_zero() || ttl > std::time::Duration::from_secs(7 * 86_400) {
        return Err(JobError::Cancel("ttl: between 1 s and 7 days".into()));
    }
    Ok(Some((policy, subject, Some((what, ttl)))))
}

/// Where the 429s come from (and the override set or reverted).
#[derive(Debug, serde::Serialize)]
pub struct LimitsSpikeReport {
    /// The window looked at.
    pub minutes: i64,
    /// The most-blocked subjects.
    pub top_subjects: Vec<serde_json::Value>,
    /// The most-blocked routes.
    pub top_routes: Vec<serde_json::Value>,
    /// The override the parameters ask for.
    pub planned: Option<serde_json::Value>,
    /// Whether it was applied.
    pub executed: bool,
    /// What applying it did.
    pub done: serde_json::Value,
}

impl AdminJob for LimitsSpikeJob {
    const KIND: &'static str = "limits.spike";
    type Params = LimitsSpikeParams;
    type Report = LimitsSpikeReport;
    type Deps = crate::ratelimit::Limiter;

    async fn run(&self, p: &LimitsSpikeParams, execute: bool, ctx: &JobContext<crate::ratelimit::Limiter>) -> Result<LimitsSpikeReport, JobError> {
        let limiter = &ctx.state;
        let minutes = p.minutes.unwrap_or(15).clamp(1, 24 * 60);
        let plan = planned(p)?;
        let top = limiter.top_blocked(minutes).await?;
        let (routes, subjects): (Vec<_>, Vec<_>) = top.iter().partition(|(k, _)| k.starts_with("route|"));
        let row = |(k, n): &&(String, u64)| {
            let (kind, what) = k.split_once('|').unwrap_or(("?", k));
            json!({"policy": kind, "subject": what, "blocks": n})
        };
        let mut done = serde_json::Value::Null;
        if execute && let Some((policy, subject, what)) = &plan {
            done = match what {
                None => json!({"reverted": limiter.revert_override(*policy, subject).await?}),
                Some((what, ttl)) => {
                    let until = limiter.set_override(*policy, subject, *what, *ttl).await?;
                    json!({"override": what, "until": chrono::DateTime::from_timestamp_millis(until)})
                }
            };
        }
        Ok(LimitsSpikeReport {
            minutes,
            top_subjects: subjects.iter().take(10).map(row).collect::<Vec<_>>(),
            top_routes: routes.iter().take(10).map(|(k, n)| json!({"route": k.trim_start_matches("route|"), "blocks": n})).collect::<Vec<_>>(),
            planned: plan.as_ref().map(|(policy, subject, what)| json!({
                "policy": policy.as_str(), "subject": subject.to_string(),
                "action": match what { None => json!("revert"), Some((w, ttl)) => json!({"override": w, "ttl_secs": ttl.as_secs()}) },
            })),
            executed: execute,
            done,
        })
    }
}
