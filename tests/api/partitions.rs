//! Time partitions: the audit log is partitioned by month, a month past its retention is retired
//! whole (detached, archived with a checksum, dropped), a retirement a crash interrupted is
//! finished, and the conversion from the old heap runs while writers write, losing nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast::db::partitions::{self, Partition, RetirementState};
use ballast::db::{SystemPool, TenantPool};
use ballast::newtypes::TenantId;
use chrono::{TimeDelta, Utc};
use sha2::Digest;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::TestDb;

pub(crate) async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new().max_connections(4).connect(url).await.expect("connect")
}

pub(crate) async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.expect(sql)
}

/// Runs `writers` writers while `convert` runs: each writes a round at a time (`write(writer,
/// round)` answers how many of the round's rows were new), at least 20 rounds and on until the
/// conversion is done. Fails on any write that failed; answers the new rows and the most rounds
/// a writer ran (the rounds of a key the writers share).
pub(crate) async fn write_while<W, F>(writers: usize, convert: impl std::future::Future<Output = ()>, write: W) -> (i64, i64)
where
    W: Fn(usize, i64) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Result<i64, String>> + Send + 'static,
{
    let stop = tokio_util::sync::CancellationToken::new();
    let running: Vec<_> = (0..writers)
        .map(|w| {
            let (write, stop) = (write.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut new, mut failed, mut round) = (0, Vec::new(), 0);
                while !stop.is_cancelled() || round < 20 {
                    round += 1;
                    match write(w, round).await {
                        Ok(n) => new += n,
                        Err(e) => failed.push(e),
                    }
                }
                (new, round, failed)
            })
        })
        .collect();
    convert.await;
    stop.cancel();
    let (mut written, mut rounds) = (0, 0);
    for writer in running {
        let (n, r, failed) = writer.await.expect("writer");
        assert!(failed.is_empty(), "writes failed during the conversion: {failed:?}");
        written += n;
        rounds = rounds.max(r);
    }
    (written, rounds)
}

/// Inserts `n` audit rows for `tenant` at `at`.
async fn audit_at(pool: &PgPool, tenant: Uuid, at: chrono::DateTime<Utc>, n: i64) {
    sqlx::query("INSERT INTO audit_log (tenant_id, actor, action, outcome, at) SELECT $1, 'test', 'seed', 'ok', $2 FROM generate_series(1, $3)")
        .bind(tenant)
        .bind(at)
        .bind(n)
        .execute(pool)
        .await
        .expect("audit rows");
}

#[tokio::test]
async fn a_month_past_its_retention_is_retired_whole_archived_and_checksummed() {
    let db = TestDb::create().await;
    let system = pool(&db.url("ballast_system")).await;
    let now = Utc::now();

    // The converted heap is the first partition (no lower bound); months follow it, covering
    // three months ahead.
    let parts = partitions::list(&system, "audit_log").await.expect("partitions");
    assert_eq!(parts[0].name, "audit_log_legacy");
    assert_eq!(parts[0].range_from, None);
    assert!(parts.last().expect("some").range_to >= now + partitions::AHEAD, "{parts:?}");
    assert!(parts.windows(2).all(|w| w[0].range_to == w[1].range_from.expect("bounded")), "contiguous: {parts:?}");

    // Half a year on: the months ahead are created, and each month holds its own rows.
    let later = now + TimeDelta::days(200);
    let created = partitions::ensure_ahead(&system, "audit_log", later).await.expect("ahead");
    assert!(!created.is_empty());
    let parts = partitions::list(&system, "audit_log").await.expect("partitions");
    let tenant = Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'partitioned')").bind(tenant).execute(&system).await.expect("tenant");
    let mut rows_in: BTreeMap<String, i64> = BTreeMap::new();
    for (i, p) in parts.iter().take(4).enumerate() {
        let at = p.range_from.unwrap_or(p.range_to - TimeDelta::days(40)) + TimeDelta::hours(1);
        let n = 100 * (i as i64 + 1);
        audit_at(&system, tenant, at, n).await;
        rows_in.insert(p.name.clone(), n);
    }
    // Rows are where their month is.
    for (name, n) in &rows_in {
        assert_eq!(count(&system, &format!("SELECT count(*) FROM {name} WHERE tenant_id = '{tenant}'")).await, *n, "{name}");
    }

    // Retire with a retention that ends exactly at the second partition's end.
    let retention = Duration::from_secs(40 * 86_400);
    let at = parts[1].range_to + TimeDelta::from_std(retention).expect("delta");
    let archive = tempfile::tempdir().expect("dir");
    let retired = partitions::retire(&system, "audit_log", at, retention, Some(archive.path()), None).await.expect("retire");
    assert_eq!(retired.partitions, 2, "{retired:?}");
    assert_eq!(retired.rows, (rows_in[&parts[0].name] + rows_in[&parts[1].name]) as u64);
    assert_eq!(retired.archived, 2);

    // Gone from the table, whole; the next months untouched.
    let after = partitions::list(&system, "audit_log").await.expect("partitions");
    assert_eq!(after.first().map(|p| p.name.clone()), Some(parts[2].name.clone()));
    assert_eq!(count(&system, &format!("SELECT count(*) FROM audit_log WHERE tenant_id = '{tenant}'")).await, rows_in[&parts[2].name] + rows_in[&parts[3].name]);
    for gone in [&parts[0].name, &parts[1].name] {
        assert_eq!(count(&system, &format!("SELECT count(*) FROM pg_class WHERE relname = '{gone}'")).await, 0, "{gone} dropped");
    }

    // Each retirement is recorded, and its archive holds its rows under the recorded checksum.
    let record = partitions::retirements(&system, "audit_log", 10).await.expect("retirements");
    assert_eq!(record.len(), 2);
    for r in &record {
        assert_eq!(r.state(), RetirementState::Dropped);
        let path = r.archive_path.as_deref().expect("archived");
        let bytes = std::fs::read(path).expect("archive file");
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), r.archive_sha256.clone().expect("sha"));
        let lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count() as i64;
        assert_eq!(lines, r.rows + 1, "{path}: a header and every row");
        assert_eq!(r.rows, rows_in[&r.partition]);
        let sums = std::fs::read_to_string(format!("{path}.sha256")).expect("sha256 file");
        assert!(sums.starts_with(r.archive_sha256.as_deref().expect("sha")), "{sums}");
    }
}

#[tokio::test]
async fn a_retirement_a_crash_interrupted_is_finished_and_the_functions_refuse_anything_else() {
    let db = TestDb::create().await;
    let system = pool(&db.url("ballast_system")).await;
    let app = pool(&db.url("ballast_app")).await;
    let tenant = Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'crash')").bind(tenant).execute(&system).await.expect("tenant");
    let now = Utc::now();
    audit_at(&system, tenant, now, 25).await;

    // A member detached this month's partition and died before archiving and dropping it.
    let parts = partitions::list(&system, "audit_log").await.expect("list");
    let first: &Partition = parts.iter().find(|p| p.range_to > now && p.range_from.is_none_or(|f| f <= now)).expect("this month's");
    let _: i64 = sqlx::query_scalar("SELECT ballast_partition_detach('audit_log', $1, 25)").bind(&first.name).fetch_one(&system).await.expect("detach");
    let open = partitions::retirements(&system, "audit_log", 1).await.expect("record");
    assert_eq!(open[0].state(), RetirementState::Detached);
    assert_eq!(count(&system, &format!("SELECT count(*) FROM {}", first.name)).await, 25, "its rows wait in the detached table");

    // The next run (nothing else due yet) archives and drops it.
    let archive = tempfile::tempdir().expect("dir");
    let retired = partitions::retire(&system, "audit_log", now, Duration::from_secs(400 * 86_400), Some(archive.path()), None).await.expect("retire");
    assert_eq!((retired.partitions, retired.rows, retired.archived), (1, 25, 1));
    let done = partitions::retirements(&system, "audit_log", 1).await.expect("record");
    assert_eq!(done[0].state(), RetirementState::Dropped);

    // The owner's functions touch partitions and nothing else, and only the system role has them.
    for (sql, why) in [
        ("SELECT ballast_partition_create('tenants', now(), now() + interval '1 day')", "not a partitioned table"),
        ("SELECT ballast_partition_detach('audit_log', 'tenants', 0)", "is not a partition of"),
        ("SELECT ballast_partition_drop(424242)", "is not open"),
    ] {
        let err = sqlx::query(sql).execute(&system).await.expect_err(sql).to_string();
        assert!(err.contains(why), "{sql}: {err}");
    }
    let err = sqlx::query("SELECT ballast_partition_drop(1)").execute(&app).await.expect_err("app role").to_string();
    assert!(err.contains("permission denied"), "{err}");
    let err = sqlx::query("SELECT 1 FROM partition_retirements").execute(&app).await.expect_err("app role").to_string();
    assert!(err.contains("permission denied"), "{err}");
}

/// The conversion (0045–0048) applied to a database of the previous release while writers of
/// that release keep writing: no write fails or is lost, the old rows are the first partition,
/// and its key is the index built concurrently before the swap (no index built, no row scanned
/// under the swap's lock).
#[tokio::test]
async fn the_audit_log_conversion_runs_under_writers_and_loses_nothing() {
    let db = TestDb::create_empty().await;
    let owner = pool(&db.url("ballast_owner")).await;
    ballast::db::MIGRATOR.run_to(44, &owner).await.expect("the previous release's schema");
    let system = pool(&db.url("ballast_system")).await;
    let tenant = Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'writer')").bind(tenant).execute(&system).await.expect("tenant");
    audit_at(&system, tenant, Utc::now() - TimeDelta::days(3), 20_000).await;

    // Writers of the previous release: the audit module's own insert, in tenant transactions.
    let stop = tokio_util::sync::CancellationToken::new();
    let tenants = TenantPool::new(pool(&db.url("ballast_app")).await);
    let mut writers = Vec::new();
    for w in 0..4 {
        let (tenants, stop) = (tenants.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.is_cancelled() || ok < 20 {
                let mut tx = tenants.begin(TenantId(tenant)).await.expect("begin");
                let wrote = ballast::audit::record(&mut tx, Some(TenantId(tenant)), "writer", "write", serde_json::json!({"w": w}), ballast::audit::Outcome::Ok).await;
                match wrote.and(Ok(())) {
                    Ok(()) => match tx.commit().await {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(e.to_string()),
                    },
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }

    // Each step as its own migration, as a deploy runs them; the concurrently built index is
    // noted before the swap.
    ballast::db::MIGRATOR.run_to(47, &owner).await.expect("expand steps");
    let validated: bool = sqlx::query_scalar("SELECT convalidated FROM pg_constraint WHERE conname = 'audit_log_legacy_bound'").fetch_one(&owner).await.expect("bound");
    assert!(validated, "the bound is validated before the swap");
    let key_index: i64 = sqlx::query_scalar("SELECT 'audit_log_id_at_idx'::regclass::oid::bigint").fetch_one(&owner).await.expect("index");
    let migrated = ballast::db::migrate(&db.url("ballast_owner")).await.expect("swap and the rest");
    assert!(migrated >= 1);
    stop.cancel();
    let mut written = 0;
    for w in writers {
        let (ok, failed) = w.await.expect("writer");
        assert!(failed.is_empty(), "writes failed during the conversion: {failed:?}");
        written += ok;
    }

    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'audit_log'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p", "audit_log is partitioned");
    let total = count(&system, "SELECT count(*) FROM audit_log").await;
    assert_eq!(total, 20_000 + written as i64, "every row seeded and written is there");
    assert_eq!(count(&system, "SELECT count(DISTINCT id) FROM audit_log").await, total, "ids stay unique");
    assert!(count(&system, "SELECT count(*) FROM audit_log_legacy").await >= 20_000);
    let legacy_key: i64 = sqlx::query_scalar("SELECT conindid::oid::bigint FROM pg_constraint WHERE conname = 'audit_log_legacy_pkey'").fetch_one(&owner).await.expect("key");
    assert_eq!(legacy_key, key_index, "the first partition's key is the index built before the swap");

    // The converted table takes the fleet's writes in its months and serves tenants as before.
    let system_pool = SystemPool(system.clone());
    let mut conn = system_pool.0.acquire().await.expect("conn");
    ballast::audit::record(&mut conn, Some(TenantId(tenant)), "after", "write", serde_json::json!({}), ballast::audit::Outcome::Ok).await.expect("write after");
    let mut tx = tenants.begin(TenantId(Uuid::new_v4())).await.expect("other tenant");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(&mut *tx).await.expect("count");
    assert_eq!(seen, 0, "another tenant sees none of these rows");
}

/// The last migration before the usage ledger's conversion (0051–0053), and before the
/// inbox's (0054–0057).
const BEFORE_LEDGER: i64 = 50;
const BEFORE_INBOX: i64 = 53;

/// A database migrated up to `version` only, and its owner and system pools.
async fn migrated_to(version: i64) -> (TestDb, PgPool, PgPool) {
    let db = TestDb::create_empty().await;
    let owner = pool(&db.url("ballast_owner")).await;
    ballast::db::MIGRATOR.run_to(version, &owner).await.expect("migrate to the release before");
    let system = pool(&db.url("ballast_system")).await;
    (db, owner, system)
}

/// Applies the embedded migrations after `after`, up to `to`, as `ballast migrate` does; their
/// versions.
async fn migrate(owner: &PgPool, after: i64, to: i64) -> Vec<i64> {
    ballast::db::MIGRATOR.run_to(to, owner).await.expect("migrate");
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE version > $1 AND success ORDER BY version")
        .bind(after)
        .fetch_all(owner)
        .await
        .expect("applied")
}

fn ledger_rows(tenant: Uuid, minutes: impl Iterator<Item = chrono::DateTime<Utc>>) -> Vec<ballast::usage::ledger::LedgerRow> {
    minutes.map(|minute| ballast::usage::ledger::LedgerRow { tenant, metric: "api_calls".into(), minute, quantity: 3 }).collect()
}

/// The usage ledger's conversion (0051–0053), applied while the flush writes: no write fails or
/// is lost, the old rows are the first partition (its key the index 0049 built), a repeated
/// flush still writes nothing twice, and the ledger then takes part in partition maintenance
/// like the audit log.
#[tokio::test]
async fn the_ledger_conversion_runs_under_the_flush() {
    let (_db, owner, system) = migrated_to(BEFORE_LEDGER).await;
    let tenant = Uuid::new_v4();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'metered')").bind(tenant).execute(&system).await.expect("tenant");
    let now = Utc::now();
    let earlier = ledger_rows(tenant, (0..1000).map(|i| now - TimeDelta::minutes(60 * 24 * 40) + TimeDelta::minutes(i)));
    let mut tx = system.begin().await.expect("tx");
    assert_eq!(ballast::usage::ledger::write_ledger(&mut tx, "flush-earlier", 1, &earlier).await.expect("earlier"), 1000);
    tx.commit().await.expect("commit");
    let key_index: i64 = sqlx::query_scalar("SELECT 'usage_ledger_id_minute_idx'::regclass::oid::bigint").fetch_one(&owner).await.expect("index of 0049");

    // This release's flush, writing a flush after another while the conversion runs.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut writers = Vec::new();
    for w in 0..3 {
        let (system, stop) = (system.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let (mut written, mut failed, mut flush) = (0usize, Vec::new(), 0);
            while !stop.is_cancelled() || flush < 20 {
                flush += 1;
                let rows = ledger_rows(tenant, (0..10).map(|i| now - TimeDelta::minutes(i)));
                let mut tx = system.begin().await.expect("tx");
                match ballast::usage::ledger::write_ledger(&mut tx, &format!("flush-{w}-{flush}"), 2, &rows).await {
                    Ok(n) => match tx.commit().await {
                        Ok(()) => written += n,
                        Err(e) => failed.push(e.to_string()),
                    },
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (written, failed)
        }));
    }
    let applied = migrate(&owner, BEFORE_LEDGER, BEFORE_INBOX).await;
    assert_eq!(applied, [51, 52, 53]);
    stop.cancel();
    let mut written = 0;
    for w in writers {
        let (n, failed) = w.await.expect("writer");
        assert!(failed.is_empty(), "flushes failed during the conversion: {failed:?}");
        written += n;
    }

    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'usage_ledger'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p");
    assert_eq!(count(&system, "SELECT count(*) FROM usage_ledger").await, 1000 + written as i64, "every row written is there once");
    let legacy_key: i64 = sqlx::query_scalar("SELECT conindid::oid::bigint FROM pg_constraint WHERE conname = 'usage_ledger_legacy_pkey'").fetch_one(&owner).await.expect("key");
    assert_eq!(legacy_key, key_index, "the first partition's key is the index built before");

    // A flush repeated after a crash (its flush record lost with the transaction that did not
    // commit elsewhere) conflicts on the partitioned key and writes nothing twice.
    sqlx::query("DELETE FROM usage_flushes WHERE flush_id = 'flush-earlier'").execute(&system).await.expect("forget the flush");
    let mut tx = system.begin().await.expect("tx");
    assert_eq!(ballast::usage::ledger::write_ledger(&mut tx, "flush-earlier", 1, &earlier).await.expect("again"), 0);
    tx.commit().await.expect("commit");

    // Months ahead and retirement, as for the audit log.
    partitions::ensure_all_ahead(&system, now).await.expect("ahead");
    let parts = partitions::list(&system, "usage_ledger").await.expect("list");
    assert!(parts.last().expect("some").range_to >= now + partitions::AHEAD, "{parts:?}");
    let retention = Duration::from_secs(760 * 86_400);
    let later = parts[0].range_to + TimeDelta::from_std(retention).expect("delta");
    let retired = partitions::retire(&system, "usage_ledger", later, retention, None, None).await.expect("retire");
    assert_eq!(retired.partitions, 1);
    assert_eq!(retired.rows, 1000 + written as u64);
    assert_eq!(count(&system, "SELECT count(*) FROM usage_ledger").await, 0);
}

/// A signed-shape Stripe event created at `created` for `customer`, as the intake stores it.
fn inbox_row(id: &str, created: i64, customer: &str) -> ballast::stripe::inbox::batch::Row {
    let raw = serde_json::json!({"id": id, "object": "event", "type": "invoice.paid", "created": created, "livemode": false,
        "api_version": "2025-09-30.clover", "data": {"object": {"id": format!("in_{id}"), "object": "invoice", "customer": customer}}});
    let event = ballast::stripe::event::StripeEvent::from_value(&raw, created).expect("event");
    ballast::stripe::inbox::batch::Row::of(&event, raw)
}

/// The Stripe inbox's conversion (0054–0057), applied while the intake stores events: none
/// fails or is lost and a redelivery is still a duplicate; then a month is retired and its events still to handle move to the DEFAULT partition,
/// where the prune (and only there) deletes once they are settled.
#[tokio::test]
async fn the_inbox_conversion_runs_under_the_intake_and_keeps_what_is_still_to_handle() {
    let (_db, owner, system) = migrated_to(BEFORE_INBOX).await;
    let system_pool = SystemPool(system.clone());
    let now = Utc::now();
    let earlier = now.timestamp() - 10 * 86_400;
    let stored = ballast::stripe::inbox::batch::insert_many(&system_pool, &(0..300).map(|i| inbox_row(&format!("evt_before_{i}"), earlier + i, "cus_nobody")).collect::<Vec<_>>())
        .await
        .expect("before");
    assert_eq!(stored.len(), 300);
    // Settled, most of them; a tenth still to handle (parked for a customer no tenant has).
    sqlx::query("UPDATE stripe_events SET status = CASE WHEN right(id, 1) = '7' THEN 'unmatched' ELSE 'processed' END, received_at = now() - interval '10 days'")
        .execute(&system)
        .await
        .expect("settle");

    let stop = tokio_util::sync::CancellationToken::new();
    let mut writers = Vec::new();
    for w in 0..3 {
        let (system_pool, stop) = (system_pool.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let (mut new, mut failed, mut n) = (0usize, Vec::new(), 0);
            while !stop.is_cancelled() || n < 20 {
                n += 1;
                let rows: Vec<_> = (0..5).map(|i| inbox_row(&format!("evt_w{w}_{n}_{i}"), now.timestamp(), "cus_nobody")).collect();
                match ballast::stripe::inbox::batch::insert_many(&system_pool, &rows).await {
                    Ok(s) => new += s.iter().filter(|s| s.inserted == ballast::stripe::inbox::Inserted::New).count(),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (new, failed)
        }));
    }
    let applied = migrate(&owner, BEFORE_INBOX, 57).await;
    assert_eq!(applied, [54, 55, 56, 57]);
    stop.cancel();
    let mut written = 0;
    for w in writers {
        let (n, failed) = w.await.expect("writer");
        assert!(failed.is_empty(), "stores failed during the conversion: {failed:?}");
        written += n;
    }
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'stripe_events'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p");
    assert_eq!(count(&system, "SELECT count(*) FROM stripe_events").await, 300 + written as i64, "every event stored once");
    // A redelivery after the conversion is a duplicate, not a second row.
    let again = ballast::stripe::inbox::batch::insert_many(&system_pool, &[inbox_row("evt_before_7", earlier + 7, "cus_nobody")]).await.expect("again");
    assert_eq!(again[0].inserted, ballast::stripe::inbox::Inserted::Duplicate);

    // The first partition retired: its settled events go, the ones still to handle stay.
    let parts = partitions::list(&system, "stripe_events").await.expect("list");
    assert_eq!(parts[0].name, "stripe_events_legacy");
    assert!(parts.iter().all(|p| p.name != "stripe_events_default"), "the DEFAULT partition is never listed for retirement");
    let retention = Duration::from_secs(30 * 86_400);
    let later = parts[0].range_to + TimeDelta::from_std(retention).expect("delta");
    // Its rows still to handle are read through the waiting and parked indexes, not by
    // scanning the month (a gigabyte at a large SaaS's volume).
    let plan = kept_read_plan(&system, &parts[0].name).await;
    assert!(plan.contains("BitmapOr") && !plan.contains("Seq Scan") && !plan.contains("Filter:"), "{plan}");
    let retired = partitions::retire(&system, "stripe_events", later, retention, None, Some(ballast::stripe::inbox::STILL_TO_HANDLE)).await.expect("retire");
    // Kept: the parked tenth, and every event the writers stored (received, not yet applied).
    assert_eq!(retired.partitions, 1);
    assert_eq!(retired.kept, 30 + written as u64, "{retired:?}");
    assert_eq!(count(&system, "SELECT count(*) FROM stripe_events_default").await, 30 + written as i64);
    assert_eq!(count(&system, "SELECT count(*) FROM stripe_events WHERE status = 'unmatched'").await, 30, "still to handle, still there");
    assert_eq!(count(&system, "SELECT count(*) FROM stripe_events WHERE id LIKE 'evt_before_%' AND status = 'processed'").await, 0);

    // Settled at last and past the retention: the prune takes them from the DEFAULT partition.
    sqlx::query("UPDATE stripe_events SET status = 'processed' WHERE status = 'unmatched'").execute(&system).await.expect("settle");
    assert_eq!(ballast::stripe::inbox::prune(&system_pool, Duration::from_secs(86_400)).await.expect("prune"), 30);
    assert_eq!(count(&system, "SELECT count(*) FROM stripe_events_default").await, written as i64, "the received ones stay");
}

/// The plan of a retirement's read of `partition`'s rows still to handle, sequential scans
/// priced out (a test's month is small enough that one would win on cost alone).
async fn kept_read_plan(system: &PgPool, partition: &str) -> String {
    let mut tx = system.begin().await.expect("begin");
    sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.expect("set");
    let sql = format!("EXPLAIN SELECT * FROM \"{partition}\" WHERE {}", ballast::stripe::inbox::STILL_TO_HANDLE);
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *tx).await.expect("explain");
    plan.join("\n")
}
