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

use crate::partitions::{count, pool, write_while};
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

/// The conversion's last step (release 0.9.0).
const CONVERTED: i64 = 72;

#[tokio::test]
async fn the_conversion_waits_for_the_backfill_then_runs_under_writers_and_a_month_leaves_keeping_unfinished_jobs() {
    let (db, owner, system, tenant) = at(TIMES_WRITTEN).await;
    let jobs = SystemPool(system.clone());
    let made = ids(60);
    for id in &made {
        queue(&system, tenant, id.clone()).await.expect("queue");
    }
    // Forty finished; twenty not.
    for id in &made[20..] {
        status::record(&jobs, id, JobState::Done, 1, None, None).await.expect("done");
    }
    // A status from before 0.8.0 whose time the backfill has not filled yet: refused, changing
    // nothing. (A pool of its own: sqlx's migrator keeps its lock after a failed migration.)
    sqlx::query("UPDATE job_status SET id_at = NULL WHERE id = $1").bind(&made[0]).execute(&system).await.expect("as before 0.8.0");
    let refusing = pool(&db.url("ballast_owner")).await;
    let refused = ballast::db::MIGRATOR.run_to(CONVERTED, &refusing).await.expect_err("refused while a time is missing");
    assert!(refused.to_string().contains("without the time their id carries"), "{refused}");
    refusing.close().await;
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'job_status'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "r", "nothing converted");
    assert_eq!(status::fill_missing_times(&jobs, 1000).await.expect("backfill"), 1);

    // Writers queue jobs and record their progress while the conversion runs.
    let convert = async { ballast::db::MIGRATOR.run_to(CONVERTED, &owner).await.expect("convert") };
    let writer = system.clone();
    let (written, _) = write_while(3, convert, move |_, _| {
        let system = writer.clone();
        async move {
            let jobs = SystemPool(system.clone());
            for id in ids(3) {
                let id = queue(&system, tenant, id).await?;
                status::record(&jobs, &id, JobState::Running, 1, None, None).await.map_err(|e| e.to_string())?;
                status::record(&jobs, &id, JobState::Done, 1, None, None).await.map_err(|e| e.to_string())?;
            }
            Ok(3)
        }
    })
    .await;
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'job_status'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p");
    let all = 60 + written;
    assert_eq!(count(&system, "SELECT count(*) FROM job_status").await, all, "every status there once");
    assert_eq!(count(&system, "SELECT count(*) FROM job_status WHERE state = 'done'").await, 40 + written, "every progress recorded");
    assert_eq!(count(&system, "SELECT count(*) FROM job_status_legacy").await, all, "written before the first month: in the old heap");

    // A worker's update by id reaches one partition; the operator's lookup finds the tenant.
    let id = &made[0];
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN UPDATE job_status SET state = 'running' WHERE id = '{id}' AND id_at = ballast_job_id_time('{id}')")))
        .fetch_all(&system)
        .await
        .expect("explain");
    let plan = plan.join("\n");
    assert_eq!(plan.matches("Index Scan using job_status_").count(), 1, "{plan}");
    assert!(!plan.contains("Append"), "{plan}");
    assert_eq!(status::owner(&jobs, id).await.expect("owner"), Some(tenant));

    // The first partition retired: the unfinished statuses are kept, in the DEFAULT partition.
    ballast::db::partitions::ensure_all_ahead(&system, Utc::now()).await.expect("ahead");
    let parts = ballast::db::partitions::list(&system, "job_status").await.expect("list");
    assert_eq!(parts[0].name, "job_status_legacy");
    let later = parts[0].range_to + chrono::TimeDelta::from_std(status::RETENTION).expect("delta");
    let keep = ballast::maintenance::kept_on_retirement("job_status");
    let gone = ballast::db::partitions::retire(&system, "job_status", later, status::RETENTION, None, keep).await.expect("retire");
    assert_eq!((gone.partitions, gone.rows, gone.kept), (1, all as u64, 20), "{gone:?}");
    assert_eq!(count(&system, "SELECT count(*) FROM job_status_default").await, 20);

    // A kept job goes on: finished, then pruned past the retention.
    for id in &made[..20] {
        status::record(&jobs, id, JobState::Done, 2, None, None).await.expect("done at last");
    }
    assert_eq!(count(&system, "SELECT count(*) FROM job_status WHERE state = 'done' AND attempts = 2").await, 20, "found where they were kept");
    assert_eq!(status::prune(&jobs, std::time::Duration::ZERO).await.expect("prune"), 20);
    assert_eq!(count(&system, "SELECT count(*) FROM job_status").await, 0);
}
