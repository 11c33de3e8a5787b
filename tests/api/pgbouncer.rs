//! Ballast behind PgBouncer in transaction pooling (the local one `deploy/dev.sh test` starts):
//! what a pooler that hands each transaction whichever server connection is free asks of the
//! client. The fleet drills run through it on the suite's second pass; these check the parts a
//! drill would only hit by chance.

use std::time::Duration;

use ballast::db::{SystemPool, TenantPool};
use ballast::newtypes::TenantId;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::support::TestDb;
use crate::support::db::pgbouncer_url;

async fn pooled(role: &str, db: &TestDb, size: u32) -> PgPool {
    PgPoolOptions::new().max_connections(size).acquire_timeout(Duration::from_secs(10)).connect(&pgbouncer_url(role, &db.name)).await.expect("connect through PgBouncer")
}

/// Server connections PostgreSQL has for `db` in `role` (PgBouncer's, as the clients never
/// reach it themselves).
async fn server_connections(db: &TestDb, role: &str) -> i64 {
    let admin = PgPoolOptions::new().max_connections(1).connect(&db.url("ballast_system")).await.expect("direct");
    let n = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2 AND pid <> pg_backend_pid()")
        .bind(&db.name)
        .bind(role)
        .fetch_one(&admin)
        .await
        .expect("count");
    admin.close().await;
    n
}

/// Other clients' transactions, each taking whichever server connection is free between this
/// test's exchanges, until `stop`.
fn traffic(pool: &PgPool, stop: &tokio_util::sync::CancellationToken) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..12)
        .map(|i| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.is_cancelled() {
                    let mut tx = pool.begin().await.expect("begin");
                    let one: i64 = sqlx::query_scalar("SELECT $1::bigint * 2 + $2::bigint").persistent(false).bind(i).bind(1_i64).fetch_one(&mut *tx).await.expect("noise");
                    assert_eq!(one, i * 2 + 1);
                    tx.commit().await.expect("commit");
                    n += 1;
                }
                n
            })
        })
        .collect()
}

/// The customer list, the timeline and the job search are planned for each call's own values:
/// sqlx sends such an unnamed statement's parse and its bind in two exchanges, and PgBouncer
/// may hand the server connection to another client in between, whose own unnamed statement
/// the bind would then run (or none at all). Each read keeps one server connection throughout.
#[tokio::test]
async fn reads_planned_per_call_keep_their_server_connection_through_pgbouncer() {
    let db = TestDb::create().await;
    let system = SystemPool(pooled("ballast_system", &db, 24).await);
    let noise = pooled("ballast_system", &db, 12).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let others = traffic(&noise, &stop);
    let tenant = TenantId(Uuid::new_v4());
    let reads = (0..60).map(|i| {
        let system = system.clone();
        async move {
            match i % 3 {
                0 => ballast::tenants::customers::page(&system, &Default::default(), Default::default(), None, 20).await.map(|_| ()).map_err(|e| e.to_string()),
                1 => ballast::tenants::timeline::page(&system, tenant, None, None, 20).await.map(|_| ()).map_err(|e| e.to_string()),
                _ => ballast::jobs::search::search(&system, &Default::default(), None, 20).await.map(|_| ()).map_err(|e| e.to_string()),
            }
        }
    });
    let failed: Vec<String> = futures::future::join_all(reads).await.into_iter().filter_map(Result::err).collect();
    stop.cancel();
    let mut noise_runs = 0;
    for t in others {
        noise_runs += t.await.expect("traffic");
    }
    assert!(noise_runs > 0, "the other clients ran");
    assert!(failed.is_empty(), "{} of 60 reads failed through PgBouncer: {:?}", failed.len(), &failed[..failed.len().min(3)]);
}

/// The tenant context is set per transaction (`SET LOCAL`): through a pooler that gives each
/// transaction another server connection, a transaction sees its own tenant's rows only, and a
/// statement outside any transaction sees none, however the tenants' work interleaves on the
/// pooler's few server connections.
#[tokio::test]
async fn the_tenant_context_lives_in_the_transaction_through_pgbouncer() {
    let db = TestDb::create().await;
    let direct = PgPoolOptions::new().max_connections(2).connect(&db.url("ballast_system")).await.expect("direct");
    let tenants: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
    for (i, t) in tenants.iter().enumerate() {
        crate::rls::seed(&direct, *t, &format!("p{i}")).await;
    }
    let app = pooled("ballast_app", &db, 32).await;
    let pool = TenantPool::new(app.clone());
    let checks = (0..400).map(|i| {
        let (pool, tenant) = (pool.clone(), tenants[i % tenants.len()]);
        async move {
            let mut tx = pool.begin(TenantId(tenant)).await.expect("begin");
            let seen: Vec<Uuid> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM audit_log").fetch_all(&mut *tx).await.expect("read");
            tx.commit().await.expect("commit");
            seen
        }
    });
    for (i, seen) in futures::future::join_all(checks).await.into_iter().enumerate() {
        assert_eq!(seen, vec![tenants[i % tenants.len()]], "check {i} saw another tenant's rows");
    }
    let outside: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(&app).await.expect("read outside");
    assert_eq!(outside, 0, "no tenant context outside a transaction");
    // 32 clients shared PgBouncer's server connections (20 per database and role).
    let servers = server_connections(&db, "ballast_app").await;
    assert!((1..=20).contains(&servers), "{servers} server connections for 32 clients");
}

/// sqlx prepares each statement once per client connection under its own name and runs it by
/// that name from then on; PgBouncer 1.21+ prepares it again on whichever server connection a
/// transaction gets. Many clients over few server connections each run the same named
/// statements, in and out of transactions, and every run answers its own values.
#[tokio::test]
async fn named_prepared_statements_run_on_whichever_server_connection_through_pgbouncer() {
    let db = TestDb::create().await;
    let app = pooled("ballast_system", &db, 40).await;
    let runs = (0..40_i64).map(|client| {
        let app = app.clone();
        async move {
            let mut conn = app.acquire().await.expect("a client connection of its own");
            for round in 0..25_i64 {
                let (a, b): (i64, String) = sqlx::query_as("SELECT $1::bigint * 3, $2::text || '!'").bind(client * 1000 + round).bind(format!("c{client}")).fetch_one(&mut *conn).await.expect("named statement");
                assert_eq!((a, b), ((client * 1000 + round) * 3, format!("c{client}!")));
                let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
                let n: i64 = sqlx::query_scalar("SELECT $1::bigint + 7").bind(round).fetch_one(&mut *tx).await.expect("in a transaction");
                assert_eq!(n, round + 7);
                tx.commit().await.expect("commit");
            }
        }
    });
    futures::future::join_all(runs).await;
    let servers = server_connections(&db, "ballast_system").await;
    assert!((1..=20).contains(&servers), "{servers} server connections served 40 clients");
}
