//! An SLO's recent history for people: good and valid events per day (UTC), oldest first,
//! summed over every source; the console charts it against the target.

use chrono::{DateTime, NaiveDate, Utc};

/// One day of an SLO.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Day {
    /// The day (UTC).
    pub day: NaiveDate,
    /// Good events.
    pub good: i64,
    /// Valid events.
    pub valid: i64,
}

/// The last `days` days of `slo` up to `now`, a row for each day that had events.
pub async fn daily(pool: &sqlx::PgPool, slo: &str, days: i64, now: DateTime<Utc>) -> Result<Vec<Day>, sqlx::Error> {
    let rows: Vec<(NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT (minute AT TIME ZONE 'UTC')::date AS day, sum(good)::bigint, sum(valid)::bigint FROM slo_minutes
         WHERE slo = $1 AND minute > $2 - make_interval(days => $3::int) AND minute <= $2
         GROUP BY 1 ORDER BY 1",
    )
    .bind(slo)
    .bind(now)
    .bind(i32::try_from(days).unwrap_or(7))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(day, good, valid)| Day { day, good, valid }).collect())
}

/// Good and valid events of `slo` over the last `minutes` minutes up to `now`.
pub async fn window(pool: &sqlx::PgPool, slo: &str, minutes: i64, now: DateTime<Utc>) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT coalesce(sum(good), 0)::bigint, coalesce(sum(valid), 0)::bigint FROM slo_minutes WHERE slo = $1 AND minute > $2 - make_interval(mins => $3::int) AND minute <= $2")
        .bind(slo)
        .bind(now)
        .bind(i32::try_from(minutes).unwrap_or(5))
        .fetch_one(pool)
        .await
}
