//! Job statuses partitioned by month of the time their id carries (0067–0072): each writer
//! fills `id_at` from the id (0.8.0), the backfills service fills the rows from before, the
//! conversion refuses, changing nothing, while one is still without, and runs under writers;
//! a worker's update by id reaches one partition; a month leaves keeping unfinished jobs.

use ballast::db::SystemPool;
use ballast::newtypes::{JobId, TenantId};
use ballast::queue::status::{self, JobState};
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use crate::partitions::{count, pool};
use crate::support::TestDb;

/// Release 0.8.0's schema.
const TIMES_WRITTEN: i64 = 67;

/// A database at `version`, its owner and system pools, and a tenant.
async fn at(version: i64) -> (TestDb, PgPool, PgPool, TenantId) {
    let db = TestDb::create_empty().await;
    let owner = pool(&db.url("ballast_owner")).await;
    ballast::db::MIGRATOR.run_to(version, &owner).await.expect("migrate");
    let system = pool(&db.url("ballast_system")).await;
    let tenant = TenantId(Uuid::new_v4());
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'queues jobs')").bind(tenant.0).execute(&system).await.expect("tenant");
    (db, owner, system, tenant)
}

/// A tracked job's status row as the intake writes it; its id.
async fn queue(system: &PgPool, tenant: TenantId, id: String) -> Result<String, String> {
    let mut tx = system.begin().await.map_err(|e| e.to_string())?;
    status::queued(&mut tx, tenant, &id, "noop").await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(id)
}

/// The ids of the three shapes Ballast makes: a bare UUIDv7 (POST /v1/jobs), an email's send
/// and an outbound delivery's.
fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 3 {
            0 => JobId::new().0,
            1 => format!("email_{}", Uuid::now_v7()),
            _ => format!("whd_{}", Uuid::now_v7().simple()),
        })
        .collect()
}

#[tokio::test]
async fn each_status_carries_the_time_of_its_id_and_the_backfill_fills_older_ones() {
    let (_db, _owner, system, tenant) = at(TIMES_WRITTEN).await;
    let made = ids(30);
    for id in &made {
        queue(&system, tenant, id.clone()).await.expect("queue");
    }
    // The time is the id's UUIDv7's millisecond, whatever the id's shape.
    let times: Vec<(String, chrono::DateTime<Utc>)> = sqlx::query_as("SELECT id, id_at FROM job_status").fetch_all(&system).await.expect("times");
    for (id, at) in &times {
        let hex: String = id.chars().filter(char::is_ascii_hexdigit).collect();
        let uuid = Uuid::parse_str(&hex[hex.len() - 32..]).expect("a trailing uuid");
        let (secs, nanos) = uuid.get_timestamp().expect("v7").to_unix();
        assert_eq!(at.timestamp_millis(), secs as i64 * 1000 + i64::from(nanos / 1_000_000), "{id}");
    }
    // A second write for a job is no second row.
    queue(&system, tenant, made[0].clone()).await.expect("again");
    assert_eq!(count(&system, "SELECT count(*) FROM job_status").await, 30);
    // An id without a time (none Ballast makes) has one all the same.
    queue(&system, tenant, "not-a-uuid".into()).await.expect("odd id");
    assert_eq!(count(&system, "SELECT count(*) FROM job_status WHERE id_at = '-infinity'").await, 1);

    // Rows written before 0.8.0 have none; the backfills service fills them.
    sqlx::query("UPDATE job_status SET id_at = NULL").execute(&system).await.expect("as before 0.8.0");
    let pool = SystemPool(system.clone());
    assert_eq!(status::fill_missing_times(&pool, 20).await.expect("fill"), 20);
    assert_eq!(status::fill_missing_times(&pool, 20).await.expect("fill"), 11);
    assert_eq!(count(&system, "SELECT count(*) FROM job_status WHERE id_at IS NULL").await, 0);
    let again: Vec<(String, chrono::DateTime<Utc>)> = sqlx::query_as("SELECT id, id_at FROM job_status WHERE id_at > '-infinity'").fetch_all(&system).await.expect("times");
    let mut again = again;
    let mut times = times;
    again.sort();
    times.sort();
    assert_eq!(again, times, "the same time as the writer's");
    // The worker's progress is recorded as before.
    status::record(&pool, &made[1], JobState::Done, 1, None, None).await.expect("record");
    assert_eq!(count(&system, "SELECT count(*) FROM job_status WHERE state = 'done'").await, 1);
}
