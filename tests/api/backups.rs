//! Backups and the rehearsed restore (issue 38), against real PostgreSQL and its own client
//! tools: a pg_dump with its checksum, the newest N kept, a rehearsal that restores the newest
//! into a scratch database and checks it against production, and the backup alert.

use serde_json::Value;

use crate::support::TestApp;
use crate::support::db::TestDb;

struct Setup {
    app: TestApp,
    dir: tempfile::TempDir,
    _scratch: TestDb,
    scratch_url: String,
}

async fn setup(keep: u32) -> Setup {
    setup_notifying(keep, "http://127.0.0.1:9/").await
}

/// Like `setup`, the fleet's alerts notifying `notify_url`.
async fn setup_notifying(keep: u32, notify_url: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = TestDb::create_empty().await;
    let scratch_url = scratch.url("ballast_owner");
    // A worker sends the notifications the evaluations queue.
    let app = TestApp::builder()
        .roles(&[ballast::app::Role::Worker])
        .env("BALLAST_SLO_WEBHOOK_URL", notify_url)
        .env("BALLAST_BACKUP_DIR", &dir.path().display().to_string())
        .env("BALLAST_BACKUP_KEEP", &keep.to_string())
        .env("BALLAST_REHEARSAL_DATABASE_URL", &scratch_url)
        .spawn()
        .await;
    Setup { app, dir, _scratch: scratch, scratch_url }
}

fn run(app: &TestApp, page: &str, execute: bool) -> (Option<i32>, Value) {
    let mut args = vec!["runbook", "run", page, "--json"];
    if execute {
        args.push("--execute");
    }
    let out = app.cli(&args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{page}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

async fn seed(app: &TestApp) {
    let t = app.tenant("backed up").await;
    for n in 0..25 {
        sqlx::query("INSERT INTO stripe_events (id, type, tenant_id, stripe_created, payload, status) VALUES ($1, 'invoice.paid', $2, now(), '{}', 'processed')")
            .bind(format!("evt_backup_{n}"))
            .bind(t)
            .execute(&app.state.system_pool.0)
            .await
            .expect("event");
    }
}

#[tokio::test]
async fn a_backup_restores_into_the_scratch_database_and_checks_out_against_production() {
    let s = setup(2).await;
    seed(&s.app).await;
    let (code, dry) = run(&s.app, "database-backup", false);
    assert_eq!((code, &dry["executed"], &dry["written"]), (Some(0), &Value::Bool(false), &Value::Null), "{dry}");
    let (code, report) = run(&s.app, "database-backup", true);
    assert_eq!(code, Some(0), "{report}");
    let file = report["written"]["file"].as_str().expect("file").to_owned();
    let dump = std::fs::read(&file).expect("the dump");
    assert!(dump.starts_with(b"PGDMP"), "pg_dump's custom format");
    let sum = std::fs::read_to_string(format!("{file}.sha256")).expect("checksum file");
    assert!(sum.starts_with(report["written"]["sha256"].as_str().expect("sha")), "{sum}");

    // A bad migration drops a table after the backup: the restored copy still has its rows.
    let owner = s.app.state.settings.owner_database_url.as_ref().expect("owner URL");
    let owner = sqlx::PgPool::connect(secrecy::ExposeSecret::expose_secret(owner)).await.expect("owner");
    sqlx::query("DROP TABLE refunds").execute(&owner).await.expect("drop");
    let (code, rehearsal) = run(&s.app, "database-restore", true);
    assert_eq!(code, Some(0), "{rehearsal}");
    assert_eq!(rehearsal["failing"], serde_json::json!([]), "{rehearsal}");
    let r = &rehearsal["rehearsal"];
    assert_eq!(r["source_version"], r["restored_version"]);
    assert_eq!(r["rls_missing"], serde_json::json!([]));
    let tables = r["tables"].as_array().expect("tables");
    let count = |name: &str| tables.iter().find(|t| t["table"] == name).map(|t| (t["source"].as_i64(), t["restored"].as_i64()));
    assert_eq!(count("stripe_events"), Some((Some(25), Some(25))));
    assert!(count("refunds").is_some(), "the table dropped after the backup is in the restored copy");
    assert!(r["restore_secs"].as_f64().is_some_and(|s| s > 0.0));
    // The scratch database is emptied after.
    let scratch = sqlx::PgPool::connect(&s.scratch_url).await.expect("scratch");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetch_one(&scratch).await.expect("tables");
    assert_eq!(left, 0, "no copy of production's data stays behind");
    let kept: Vec<(String, bool)> = sqlx::query_as("SELECT kind, ok FROM backup_runs ORDER BY started_at").fetch_all(&s.app.state.system_pool.0).await.expect("runs");
    assert_eq!(kept, [("backup".to_owned(), true), ("rehearsal".to_owned(), true)]);
}

#[tokio::test]
async fn the_newest_n_dumps_are_kept_and_a_changed_dump_fails_its_rehearsal_loudly() {
    let s = setup(2).await;
    for _ in 0..3 {
        let (code, report) = run(&s.app, "database-backup", true);
        assert_eq!(code, Some(0), "{report}");
    }
    let (_, listed) = run(&s.app, "database-backup", false);
    let dumps = listed["dumps"].as_array().expect("dumps");
    assert_eq!(dumps.len(), 2, "{listed}");
    let newest = dumps[0].as_str().expect("newest").to_owned();
    let mut bytes = std::fs::read(&newest).expect("dump");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&newest, bytes).expect("tamper");
    let (code, rehearsal) = run(&s.app, "database-restore", true);
    assert_eq!(code, Some(3), "{rehearsal}");
    assert!(rehearsal["failing"].to_string().contains("checksum"), "{rehearsal}");
    let _ = &s.dir;
}

/// The backup alert: stale (none yet) opens, a backup and a passing rehearsal resolve it; a
/// failed rehearsal opens it again — each change one notification to the real receiver.
#[tokio::test]
async fn the_backup_alert_opens_without_a_recent_backup_and_resolves_after_one() {
    let (receiver, url) = crate::slo::Receiver::start(0).await;
    let s = setup_notifying(3, &url).await;
    let sent = |key: &str| -> Vec<String> {
        receiver.accepted().iter().filter(|(_, b)| b["alert_key"] == format!("fleet:{key}")).map(|(_, b)| b["state"].as_str().unwrap_or_default().to_owned()).collect()
    };
    let state = |states: &[ballast::health::alerts::AlertState], key: &str| states.iter().find(|a| a.key == key).map(|a| a.state);
    let states = ballast::health::evaluate(&s.app.state.health_deps()).await.expect("evaluate");
    use ballast::health::alerts::State;
    assert_eq!(state(&states, "backups:backup"), Some(State::Firing));
    assert_eq!(state(&states, "backups:rehearsal"), Some(State::Firing));
    assert_eq!(run(&s.app, "database-backup", true).0, Some(0));
    assert_eq!(run(&s.app, "database-restore", true).0, Some(0));
    let states = ballast::health::evaluate(&s.app.state.health_deps()).await.expect("evaluate");
    assert_eq!(state(&states, "backups:backup"), Some(State::Ok));
    assert_eq!(state(&states, "backups:rehearsal"), Some(State::Ok));
    s.app.drain().await;
    assert_eq!(sent("backups:backup"), ["firing", "resolved"]);
    assert_eq!(sent("backups:rehearsal"), ["firing", "resolved"]);
    // A dump removed by hand leaves nothing to restore: the rehearsal fails, the alert opens.
    for entry in std::fs::read_dir(s.dir.path()).expect("dir").flatten() {
        std::fs::remove_file(entry.path()).expect("remove");
    }
    assert_eq!(run(&s.app, "database-restore", true).0, Some(3));
    let states = ballast::health::evaluate(&s.app.state.health_deps()).await.expect("evaluate");
    assert_eq!(state(&states, "backups:rehearsal"), Some(State::Firing));
    s.app.drain().await;
    assert_eq!(sent("backups:rehearsal"), ["firing", "resolved", "firing"]);
}

/// Point in time (pgBackRest, WAL archived): a backup, a known time, then a bad change drops a
/// table and deletes rows; the rehearsal restored to that time has them (rows written after the
/// backup, from the archived WAL), one restored to the newest WAL does not, neither leaves its
/// scratch instance behind, and a time before the backup is refused plainly.
#[tokio::test]
async fn a_point_in_time_restore_brings_back_a_table_dropped_after_a_known_time() {
    use crate::support::procs::PrivatePostgres;
    let pg = PrivatePostgres::start_archiving().await;
    let scratch = pg.scratch_dir();
    let mut builder = TestApp::builder()
        .roles(&[])
        .env("DATABASE_URL", &pg.url("ballast_app"))
        .env("BALLAST_SYSTEM_DATABASE_URL", &pg.url("ballast_system"))
        .env("BALLAST_OWNER_DATABASE_URL", &pg.url("ballast_owner"));
    for (k, v) in pg.pgbackrest_env(&scratch) {
        builder = builder.env(k, &v);
    }
    let app = builder.spawn().await;
    let migrated = app.cli(&["migrate"]);
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));
    let runbook = |page: &str, params: &[&str]| {
        let mut args = vec!["runbook", "run", page, "--json", "--execute"];
        for p in params {
            args.extend(["--param", p]);
        }
        let out = app.cli(&args);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{page}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };

    let (code, backup) = runbook("database-backup", &[]);
    assert_eq!(code, Some(0), "{backup}");
    let label = backup["physical_written"]["label"].as_str().expect("a pgBackRest backup").to_owned();
    assert_eq!(backup["physical"][0]["label"], label.as_str(), "{backup}");
    let stopped: chrono::DateTime<chrono::Utc> = backup["physical_written"]["stopped_at"].as_str().expect("stop").parse().expect("time");

    // A time before the backup stopped has nothing to restore from, said plainly.
    let (code, early) = runbook("database-restore", &["source=pgbackrest", &format!("target_time={}", stopped.to_rfc3339())]);
    assert_eq!(code, Some(3), "{early}");
    assert!(early["failing"][0].as_str().is_some_and(|f| f.contains("earliest time")), "{early}");

    // pgBackRest keeps stop times in whole seconds: the rows that only the archived WAL holds
    // are written once the database's clock has left the backup's last second.
    let pool = &app.state.system_pool.0;
    sqlx::query("SELECT pg_sleep(GREATEST(0, extract(epoch FROM $1::timestamptz + interval '1 second' - clock_timestamp()))::float8)")
        .bind(stopped)
        .execute(pool)
        .await
        .expect("past the backup's second");
    seed(&app).await;

    // The known time, on the database's own clock, after the seed committed.
    let before: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await.expect("now");
    let owner = sqlx::PgPool::connect(&pg.url("ballast_owner")).await.expect("owner");
    sqlx::raw_sql("DROP TABLE refunds").execute(&owner).await.expect("the bad change");
    // The system role deletes: row-level security, forced on the owner, would hide the rows.
    sqlx::raw_sql("DELETE FROM stripe_events").execute(pool).await.expect("the bad change");
    // The WAL past the bad change reaches the archive (a switch, waited for).
    pg.pgbackrest(&["check"]);

    let target = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (code, report) = runbook("database-restore", &["source=pgbackrest", &format!("target_time={target}")]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["failing"], serde_json::json!([]), "{report}");
    let r = &report["pitr"];
    assert_eq!(r["restored"], label.as_str());
    assert_eq!(r["target_time"].as_str().map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().expect("time")), Some(before));
    assert_eq!(r["rls_missing"], serde_json::json!([]));
    assert_eq!(r["source_version"], r["restored_version"]);
    let count = |r: &Value, name: &str| r["tables"].as_array().expect("tables").iter().find(|t| t["table"] == name).map(|t| (t["source"].as_i64(), t["restored"].as_i64()));
    assert_eq!(count(r, "stripe_events"), Some((Some(0), Some(25))), "the rows deleted after the target are restored");
    assert!(count(r, "refunds").is_some(), "the table dropped after the target is restored");

    // Restored to the newest WAL, the copy holds the bad change too.
    let (code, latest) = runbook("database-restore", &["source=pgbackrest"]);
    assert_eq!(code, Some(0), "{latest}");
    assert_eq!(count(&latest["pitr"], "stripe_events"), Some((Some(0), Some(0))));
    assert!(count(&latest["pitr"], "refunds").is_none(), "{latest}");

    let left: Vec<_> = std::fs::read_dir(&scratch).expect("scratch").flatten().collect();
    assert!(left.is_empty(), "no restored copy stays behind: {left:?}");
    let kept: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT kind, source, ok FROM backup_runs ORDER BY started_at").fetch_all(pool).await.expect("runs");
    let pgbackrest = |kind: &str| (kind.to_owned(), "pgbackrest".to_owned(), true);
    let refused = (String::from("rehearsal"), String::from("pgbackrest"), false);
    assert_eq!(kept, [pgbackrest("backup"), refused, pgbackrest("rehearsal"), pgbackrest("rehearsal")]);
    use ballast::health::alerts::State;
    let states = ballast::health::evaluate(&app.state.health_deps()).await.expect("evaluate");
    let state = |key: &str| states.iter().find(|a| a.key == key).map(|a| a.state);
    assert_eq!((state("backups:pgbackrest-backup"), state("backups:pgbackrest-rehearsal")), (Some(State::Ok), Some(State::Ok)));
}
