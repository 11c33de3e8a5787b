//! Reads that can lag (the admin API's lists, the console) go to a streaming replica while it
//! keeps up, to the primary past the lag bound or once the replica stops, and say which.
//! `dev.sh test` starts the replica (pg_basebackup); this test stops it at its end.

use std::time::Duration;

use ballast::auth::operators::{self, Role};
use ballast::db::replica::{ReadSource, Replica};
use sqlx::{Connection, PgConnection};

use crate::support::TestApp;
use crate::support::procs::until;

fn replica_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name}: run tests with deploy/dev.sh test (it starts the replica)"))
}

/// `GET /v1/admin/tenants` as `token`: the tenants' names, and where they were read from.
async fn listed(app: &TestApp, token: &str) -> (Vec<String>, String) {
    let res = app.http.get(app.url("/v1/admin/tenants?limit=500")).bearer_auth(token).send().await.expect("list");
    assert!(res.status().is_success(), "{}", res.status());
    let from = res.headers().get("x-ballast-read-from").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body: serde_json::Value = res.json().await.expect("json");
    let names = body["customers"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect();
    (names, from)
}

#[tokio::test]
async fn lists_read_from_the_replica_while_it_keeps_up_and_from_the_primary_past_its_lag_or_once_it_stops() {
    let app = TestApp::builder().replica(3600).spawn().await;
    let replica_url = app.env.get("BALLAST_REPLICA_DATABASE_URL").expect("the replica's URL").clone();
    let (_, token) = operators::add(&app.state.system_pool, "vic", Role::Viewer, "test").await.expect("operator");
    app.tenant("Before").await;
    // Streaming: the replica has it shortly.
    until("the replica replays the tenant", Duration::from_secs(30), || {
        let url = replica_url.clone();
        async move {
            // Until the replica has replayed the test's database, it refuses the connection.
            let Ok(mut c) = PgConnection::connect(&url).await else { return false };
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tenants WHERE name = 'Before'").fetch_one(&mut c).await.unwrap_or(0) == 1
        }
    })
    .await;

    // The reconcile report's listing, read from the replica once it has the database (it says so).
    let report = ballast::runbook::run_here(&app.state, &ballast::state::Registry::standard(), "billing.reconcile", false, serde_json::json!({}), "test", Default::default())
        .await
        .expect("billing.reconcile");
    assert!(report["read_from"].as_str().is_some_and(|f| f.starts_with("replica")), "{report}");

    // Replay paused: what the primary writes now is not on the replica, and the list (read from
    // the replica, within its bound) does not show it yet.
    let mut replica_admin = PgConnection::connect(&replica_env("BALLAST_TEST_PG_REPLICA_ADMIN_URL")).await.expect("replica admin");
    sqlx::query("SELECT pg_wal_replay_pause()").execute(&mut replica_admin).await.expect("pause replay");
    app.tenant("After").await;
    let (names, from) = listed(&app, &token).await;
    assert!(from.starts_with("replica"), "{from}");
    assert!(names.contains(&"Before".to_owned()) && !names.contains(&"After".to_owned()), "read from the paused replica: {names:?}");
    // Past a bound it does not meet, the primary serves, and says why.
    let strict = Replica::new(&replica_url, Duration::from_millis(1), 2).expect("replica");
    match strict.reads(&app.state.system_pool).await.source {
        ReadSource::Fallback { why } => assert!(why.contains("lags"), "{why}"),
        other => panic!("a replica paused behind the primary is past a 1 ms bound: {other:?}"),
    }
    sqlx::query("SELECT pg_wal_replay_resume()").execute(&mut replica_admin).await.expect("resume replay");

    // The replica stops: the same list comes from the primary, with the tenant, and says so.
    let pid_file = std::path::Path::new(&replica_env("BALLAST_TEST_PG_REPLICA_DATA")).join("postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("the replica's pid file").lines().next().unwrap_or_default().trim().to_owned();
    drop(replica_admin.close().await);
    let stopped = std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill");
    assert!(stopped.success());
    until("the replica stops", Duration::from_secs(30), || {
        let url = replica_url.clone();
        async move { PgConnection::connect(&url).await.is_err() }
    })
    .await;
    let (names, from) = listed(&app, &token).await;
    assert!(from.starts_with("primary") && from.contains("cannot be read"), "{from}");
    assert!(names.contains(&"After".to_owned()), "{names:?}");
}
