//! Outbound webhook deliveries partitioned by month of their UUIDv7 id, their attempts by their
//! delivery's (0058–0062): the ids carry their time, the conversion runs while the intake
//! accepts messages and attempts are recorded, losing nothing; a statement by id reaches one
//! partition; a month leaves with its attempts, keeping what is still pending; and the
//! conversion refuses, changing nothing, while deliveries with random ids (before 0.4.0) are
//! kept.

use std::time::Duration;

use ballast::db::partitions;
use ballast::db::TenantPool;
use ballast::newtypes::TenantId;
use ballast::webhooks_out::deliveries::{self, Attempt, DeliveryStatus, Outcome};
use ballast::webhooks_out::messages::{self, Incoming, NewMessage};
use chrono::{TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::partitions::{count, pool, write_while};
use crate::support::TestDb;

/// Release 0.4.0's schema (delivery ids made as UUIDv7s), and the conversion's last step.
const BEFORE_CONVERSION: i64 = 58;
const CONVERTED: i64 = 62;

/// A database at `version`, its owner, system and app pools, and a tenant with one endpoint
/// subscribed to every type.
async fn at(version: i64) -> (TestDb, PgPool, PgPool, TenantPool, TenantId, Uuid) {
    let db = TestDb::create_empty().await;
    let owner = pool(&db.url("ballast_owner")).await;
    ballast::db::MIGRATOR.run_to(version, &owner).await.expect("migrate to the release before");
    let system = pool(&db.url("ballast_system")).await;
    let app = TenantPool::new(pool(&db.url("ballast_app")).await);
    let (tenant, endpoint) = (Uuid::new_v4(), Uuid::now_v7());
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'sends webhooks')").bind(tenant).execute(&system).await.expect("tenant");
    sqlx::query("INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret) VALUES ($1, $2, 'https://hooks.example.com/in', ARRAY['*'], 'sealed')")
        .bind(endpoint)
        .bind(tenant)
        .execute(&system)
        .await
        .expect("endpoint");
    (db, owner, system, app, TenantId(tenant), endpoint)
}

/// `n` messages accepted as the intake accepts them; their deliveries' ids.
async fn accept(app: &TenantPool, tenant: TenantId, n: usize) -> Result<Vec<Uuid>, String> {
    let incoming: Vec<Incoming> = (0..n)
        .map(|_| Incoming { tenant, message: NewMessage { event_type: "invoice.paid".into(), data: serde_json::Map::new() }, idempotency_key: None, at: Utc::now() })
        .collect();
    let accepted = messages::accept_many(app, &incoming).await.map_err(|e| e.to_string())?;
    Ok(accepted.iter().flat_map(|a| a.deliveries.iter().map(|(d, _)| *d)).collect())
}

/// One attempt of each delivery recorded as the worker records it: delivered, or failed with
/// a retry to come (still pending).
async fn attempt(system: &PgPool, tenant: TenantId, endpoint: Uuid, ids: &[Uuid], status: DeliveryStatus) -> Result<(), String> {
    let outcomes: Vec<Outcome> = ids
        .iter()
        .map(|id| Outcome {
            delivery_id: *id,
            tenant_id: tenant.0,
            endpoint_id: endpoint,
            attempt: 1,
            made: Some(Attempt { at: Utc::now(), duration_ms: 12, status_code: Some(if status == DeliveryStatus::Delivered { 200 } else { 503 }), response_body: None, error: None }),
            status,
            next_attempt_at: (status == DeliveryStatus::Pending).then(|| Utc::now() + TimeDelta::minutes(5)),
            error: None,
        })
        .collect();
    let mut tx = system.begin().await.map_err(|e| e.to_string())?;
    deliveries::record_many(&mut tx, &outcomes, TimeDelta::days(5)).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_deliveries_conversion_runs_under_the_intake_and_a_month_leaves_with_its_attempts() {
    let (_db, owner, system, app, tenant, endpoint) = at(BEFORE_CONVERSION).await;
    let made = accept(&app, tenant, 200).await.expect("accept");
    assert_eq!(made.len(), 200);
    // Their ids are UUIDv7s of now (0058): the time is in the id.
    assert!(made.iter().all(|id| id.get_version_num() == 7), "{:?}", &made[..3]);
    let (secs, _) = made[0].get_timestamp().expect("a v7 id has a time").to_unix();
    assert!((Utc::now().timestamp() - secs as i64).abs() < 60, "made now: {secs}");
    let (pending, finished) = made.split_at(20);
    attempt(&system, tenant, endpoint, pending, DeliveryStatus::Pending).await.expect("pending");
    attempt(&system, tenant, endpoint, finished, DeliveryStatus::Delivered).await.expect("delivered");

    // This release's intake and workers, accepting and delivering while the conversion runs.
    let convert = async { ballast::db::MIGRATOR.run_to(CONVERTED, &owner).await.expect("convert") };
    let (writer_system, writer_app) = (system.clone(), app.clone());
    let (written, _) = write_while(3, convert, move |_, _| {
        let (system, app) = (writer_system.clone(), writer_app.clone());
        async move {
            let ids = accept(&app, tenant, 5).await?;
            attempt(&system, tenant, endpoint, &ids, DeliveryStatus::Delivered).await?;
            Ok(ids.len() as i64)
        }
    })
    .await;
    let kinds: Vec<String> = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname IN ('webhook_deliveries', 'webhook_attempts')").fetch_all(&owner).await.expect("kinds");
    assert_eq!(kinds, ["p", "p"]);
    let all = 200 + written;
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_deliveries").await, all, "every delivery there once");
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_attempts").await, all, "every attempt there once");
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_deliveries_legacy").await, all, "made before the first month: in the old heap");

    // A delivery by id is looked for in one partition only.
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN SELECT status FROM webhook_deliveries WHERE id = '{}'", made[0])))
        .fetch_all(&system)
        .await
        .expect("explain");
    let plan = plan.join("\n");
    assert_eq!(plan.matches(" on webhook_deliveries_").count(), 1, "{plan}");

    // The months are listed by time, the first partition's bound the smallest id of a month.
    let parts = partitions::list(&system, "webhook_deliveries").await.expect("list");
    assert_eq!(parts[0].name, "webhook_deliveries_legacy");
    assert_eq!(parts[1].range_from, Some(parts[0].range_to));
    assert_eq!(parts[0].range_to, partitions::next_month_start(parts[0].range_to - TimeDelta::days(1)), "{parts:?}");
    partitions::ensure_all_ahead(&system, Utc::now()).await.expect("ahead");
    assert!(partitions::list(&system, "webhook_attempts").await.expect("list").last().expect("some").range_to >= Utc::now() + partitions::AHEAD);

    // The first month retired, deliveries first: the pending ones and their attempts are kept.
    let retention = Duration::from_secs(30 * 86_400);
    let later = parts[0].range_to + TimeDelta::from_std(retention).expect("delta");
    // What the `partitions` service keeps.
    let keep = ballast::maintenance::kept_on_retirement;
    let gone = partitions::retire(&system, "webhook_deliveries", later, retention, None, keep("webhook_deliveries")).await.expect("retire deliveries");
    let gone_attempts = partitions::retire(&system, "webhook_attempts", later, retention, None, keep("webhook_attempts")).await.expect("retire attempts");
    assert_eq!((gone.partitions, gone.rows, gone.kept), (1, all as u64, 20), "{gone:?}");
    assert_eq!((gone_attempts.partitions, gone_attempts.rows, gone_attempts.kept), (1, all as u64, 20), "{gone_attempts:?}");
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_deliveries_default WHERE status = 'pending'").await, 20);
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_attempts_default").await, 20);

    // A kept delivery goes on: delivered, then pruned with its attempt past the retention.
    attempt(&system, tenant, endpoint, pending, DeliveryStatus::Delivered).await.expect("delivered at last");
    let pool = ballast::db::SystemPool(system.clone());
    assert_eq!(deliveries::prune(&pool, Duration::ZERO).await.expect("prune"), 20);
    assert_eq!(count(&system, "SELECT (SELECT count(*) FROM webhook_deliveries) + (SELECT count(*) FROM webhook_attempts)").await, 0);
}

#[tokio::test]
async fn the_conversion_refuses_and_changes_nothing_while_deliveries_with_random_ids_are_kept() {
    let (db, owner, system, app, tenant, _) = at(BEFORE_CONVERSION).await;
    accept(&app, tenant, 3).await.expect("accept");
    // A delivery of a release before 0.4.0: a random (version 4) id.
    let old = Uuid::parse_str("f1e2d3c4-b5a6-4978-8a6b-5c4d3e2f1a0b").expect("uuid");
    sqlx::query("INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id) SELECT $1, tenant_id, message_id, endpoint_id FROM webhook_deliveries LIMIT 1")
        .bind(old)
        .execute(&system)
        .await
        .expect("an old delivery");

    // `ballast migrate` is a process of its own: its migrator's session lock goes with it.
    let migrate = pool(&db.url("ballast_owner")).await;
    let refused = ballast::db::MIGRATOR.run_to(CONVERTED, &migrate).await.expect_err("refused");
    migrate.close().await;
    assert!(refused.to_string().contains("made before release 0.4.0"), "{refused}");
    let applied: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&owner).await.expect("applied");
    assert_eq!(applied, BEFORE_CONVERSION);
    assert_eq!(count(&owner, "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'webhook_%_legacy_bound'").await, 0, "no bound declared");
    assert_eq!(
        count(&owner, "SELECT count(*) FROM pg_class WHERE relname IN ('webhook_deliveries', 'webhook_attempts') AND relforcerowsecurity").await,
        2,
        "row security forced again"
    );

    // Once it is gone (pruned past its retention), the conversion runs.
    sqlx::query("DELETE FROM webhook_deliveries WHERE id = $1").bind(old).execute(&system).await.expect("pruned");
    ballast::db::MIGRATOR.run_to(CONVERTED, &owner).await.expect("convert");
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_deliveries").await, 3);
}
