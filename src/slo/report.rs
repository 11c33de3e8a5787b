//! Counts reported by app services (`POST /v1/slo/events`), so the SLOs cover the product and
//! not only Ballast's intake. Each item is one source's totals so far for one SLO and minute; a
//! later report of the same (SLO, minute, source) replaces the earlier one, so a retried
//! request never double-counts.

use chrono::{DateTime, Duration, Timelike, Utc};
use serde::Deserialize;

use super::Slos;

/// Most items in one request.
pub const MAX_ITEMS: usize = 1000;

/// One reported minute.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportedMinute {
    /// An SLO of policy/slos.toml.
    pub slo: String,
    /// The minute's start (seconds and below zero).
    pub minute: DateTime<Utc>,
    /// Who counted: a service and instance, e.g. `checkout/pod-3`.
    pub source: String,
    /// Good events in that minute.
    pub good: i64,
    /// Valid events in that minute.
    pub valid: i64,
}

/// The first bad item and why.
#[derive(Debug, thiserror::Error)]
#[error("item {item}: {field}: {message}")]
pub struct InvalidReport {
    /// Its index.
    pub item: usize,
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// Checks every item: a known SLO, a whole minute inside the SLO's window and not ahead of
/// `now`, a plain source name, 0 ≤ good ≤ valid ≤ 10¹².
pub fn validate(items: &[ReportedMinute], slos: &Slos, now: DateTime<Utc>) -> Result<(), InvalidReport> {
    let bad = |item, field, message: String| Err(InvalidReport { item, field, message });
    if items.is_empty() || items.len() > MAX_ITEMS {
        return bad(0, "events", format!("send 1 to {MAX_ITEMS} items"));
    }
    for (i, it) in items.iter().enumerate() {
        let Some(slo) = slos.get(&it.slo) else { return bad(i, "slo", format!("no SLO named {:?} in the definitions", crate::newtypes::truncated(&it.slo, 80))) };
        if it.minute.second() != 0 || it.minute.nanosecond() != 0 {
            return bad(i, "minute", "must be the start of a minute (seconds zero)".into());
        }
        if it.minute > now {
            return bad(i, "minute", "is in the future".into());
        }
        if it.minute < now - Duration::from_std(slo.window).unwrap_or(Duration::days(90)) {
            return bad(i, "minute", "is older than the SLO's window".into());
        }
        let source_ok = !it.source.is_empty() && it.source.len() <= 100 && it.source.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
        if !source_ok || it.source.starts_with("intake:") {
            return bad(i, "source", "1 to 100 of A-Z a-z 0-9 . _ : / - (and not intake:, which is Ballast's own)".into());
        }
        if it.good < 0 || it.valid < it.good || it.valid > 1_000_000_000_000 {
            return bad(i, "good", "needs 0 <= good <= valid <= 10^12".into());
        }
    }
    Ok(())
}

/// Stores validated items in one statement (the last item wins for a repeated key).
pub async fn store(pool: &sqlx::PgPool, items: &[ReportedMinute]) -> Result<(), sqlx::Error> {
    let mut latest: std::collections::BTreeMap<(&str, DateTime<Utc>, &str), (i64, i64)> = std::collections::BTreeMap::new();
    for it in items {
        latest.insert((it.slo.as_str(), it.minute, it.source.as_str()), (it.good, it.valid));
    }
    let (mut slo, mut minute, mut source, mut good, mut valid) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((s, m, src), (g, v)) in latest {
        slo.push(s);
        minute.push(m);
        source.push(src);
        good.push(g);
        valid.push(v);
    }
    sqlx::query(
        "INSERT INTO slo_minutes (slo, minute, source, good, valid)
         SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::bigint[], $5::bigint[])
         ON CONFLICT (slo, minute, source) DO UPDATE SET good = EXCLUDED.good, valid = EXCLUDED.valid, updated_at = now()",
    )
    .bind(&slo)
    .bind(&minute)
    .bind(&source)
    .bind(&good)
    .bind(&valid)
    .execute(pool)
    .await?;
    Ok(())
}
