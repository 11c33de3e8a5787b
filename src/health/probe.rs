//! Uptime checks (`probe.uptime`, every minute from the scheduler): a signed test webhook and
//! an entitlement read sent through each public listener (`BALLAST_PROBE_URLS`: the load
//! balancer, or each member), timed end to end. Each result is kept in `probe_results` (this
//! module owns it); a failing check feeds the `probe` fleet alert and the `synthetic-probe`
//! SLO's minutes (when policy/slos.toml defines it).

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};

use crate::db::SystemPool;

/// What is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// A Stripe-signed test event posted to `/webhooks/stripe` (type `ballast.probe`: stored as
    /// ignored and acknowledged, so nothing downstream acts on it).
    Webhook,
    /// `GET /v1/entitlements` with the probe's API key.
    Entitlements,
}

impl Check {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Webhook => "webhook",
            Check::Entitlements => "entitlements",
        }
    }
}

/// Where and how to probe.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Public base URLs.
    pub urls: Vec<String>,
    /// The secret the test webhook is signed with (the intake's first).
    pub webhook_secret: Option<secrecy::SecretString>,
    /// An API key with `entitlements:read`; without one, the read is not checked.
    pub api_key: Option<secrecy::SecretString>,
}

/// One check's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeResult {
    /// The base URL.
    pub target: String,
    /// What was checked.
    pub check: Check,
    /// Answered as expected (200).
    pub ok: bool,
    /// How long it took, end to end.
    pub ms: f64,
    /// The HTTP status, when one came.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The SLO the probes' results count for, when policy/slos.toml defines it.
pub const SLO: &str = "synthetic-probe";

/// Runs every check at `now`, keeps the results and the SLO minute.
pub async fn run(config: &ProbeConfig, pool: &SystemPool, slos: &crate::slo::Slos, now: DateTime<Utc>) -> Result<Vec<ProbeResult>, sqlx::Error> {
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(message = "Probe client not built.", error = %e);
            return Ok(Vec::new());
        }
    };
    let mut results = Vec::new();
    for url in &config.urls {
        let base = url.trim_end_matches('/');
        if let Some(secret) = &config.webhook_secret {
            let body = serde_json::json!({
                "id": format!("evt_probe_{}", uuid::Uuid::new_v4().simple()), "object": "event", "type": "ballast.probe",
                "created": now.timestamp(), "livemode": false, "data": {"object": {"id": "probe", "object": "probe"}},
            })
            .to_string();
            let signature = format!("t={},v1={}", now.timestamp(), crate::stripe::signature::sign(secrecy::ExposeSecret::expose_secret(secret), now.timestamp(), body.as_bytes()));
            let request = http.post(format!("{base}/webhooks/stripe")).header("content-type", "application/json").header("stripe-signature", signature).body(body);
            results.push(timed(base, Check::Webhook, request).await);
        }
        if let Some(key) = &config.api_key {
            let request = http.get(format!("{base}/v1/entitlements")).bearer_auth(secrecy::ExposeSecret::expose_secret(key));
            results.push(timed(base, Check::Entitlements, request).await);
        }
    }
    for r in &results {
        sqlx::query("INSERT INTO probe_results (target, check_name, ok, ms, status, error, at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&r.target)
            .bind(r.check.as_str())
            .bind(r.ok)
            .bind(r.ms)
            .bind(r.status.map(i32::from))
            .bind(&r.error)
            .bind(now)
            .execute(&pool.0)
            .await?;
    }
    sqlx::query("DELETE FROM probe_results WHERE at < $1 - interval '7 days'").bind(now).execute(&pool.0).await?;
    if slos.get(SLO).is_some() && !results.is_empty() {
        let minute = now.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(now);
        let good = results.iter().filter(|r| r.ok).count() as i64;
        let item = crate::slo::report::ReportedMinute { slo: SLO.into(), minute, source: "probe".into(), good, valid: results.len() as i64 };
        crate::slo::report::store(&pool.0, std::slice::from_ref(&item)).await?;
    }
    Ok(results)
}

async fn timed(target: &str, check: Check, request: reqwest::RequestBuilder) -> ProbeResult {
    let clock = std::time::Instant::now();
    let answer = request.send().await;
    let ms = clock.elapsed().as_secs_f64() * 1000.0;
    let (ok, status, error) = match answer {
        Ok(a) if a.status().as_u16() == 200 => (true, Some(200), None),
        Ok(a) => (false, Some(a.status().as_u16()), Some(format!("answered {}", a.status()))),
        Err(e) => (false, None, Some(e.to_string())),
    };
    ProbeResult { target: target.to_owned(), check, ok, ms, status, error }
}

/// The newest result of each target and check: (target, check, ok, at).
pub async fn latest(pool: &SystemPool) -> Result<Vec<(String, String, bool, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT DISTINCT ON (target, check_name) target, check_name, ok, at FROM probe_results ORDER BY target, check_name, at DESC").fetch_all(&pool.0).await
}
