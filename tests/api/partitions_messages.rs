//! Outbound webhook messages partitioned by month of their UUIDv7 id (0073–0076): the conversion
//! runs while messages are written, each tenant's idempotency key kept once by this release's
//! transaction lock (no unique index spans the months); a message month leaves after its
//! deliveries' month keeping the messages a delivery still names; `deliveries.prune` deletes
//! the rest where no month does.

use std::time::Duration;

use ballast::db::partitions;
use ballast::db::{SystemPool, TenantPool};
use ballast::newtypes::TenantId;
use ballast::webhooks_out::messages::{Incoming, NewMessage, accept_many};
use chrono::{TimeDelta, Utc};
use uuid::Uuid;

use crate::partitions::{count, pool, write_while};
use crate::support::TestDb;

/// Release 0.10.0's schema, and the conversion's last step.
const BEFORE_CONVERSION: i64 = 72;
const CONVERTED: i64 = 76;

/// One message as the intake accepts it (with `key` as its idempotency key): its id and
/// whether it repeated an accepted one.
async fn send(app: &TenantPool, tenant: TenantId, key: Option<&str>) -> Result<(Uuid, bool), String> {
    let message = NewMessage { event_type: "invoice.paid".into(), data: serde_json::Map::from_iter([("n".to_owned(), serde_json::json!(1))]) };
    let incoming = Incoming { tenant, message, idempotency_key: key.map(str::to_owned), at: Utc::now() };
    let accepted = accept_many(app, &[incoming]).await.map_err(|e| e.to_string())?;
    let first = accepted.first().ok_or("no answer")?;
    Ok((first.message_id, first.duplicate))
}

#[tokio::test]
async fn the_message_conversion_runs_under_writers_keeps_each_key_once_and_a_month_keeps_the_messages_deliveries_name() {
    let db = TestDb::create_empty().await;
    let owner = pool(&db.url("ballast_owner")).await;
    ballast::db::MIGRATOR.run_to(BEFORE_CONVERSION, &owner).await.expect("migrate to the release before");
    let system = pool(&db.url("ballast_system")).await;
    let app = TenantPool::new(pool(&db.url("ballast_app")).await);
    let tenant = TenantId(Uuid::new_v4());
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'sends webhooks')").bind(tenant.0).execute(&system).await.expect("tenant");
    sqlx::query("INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret) VALUES ($1, $1, 'https://example.com/in', ARRAY['*'], 'whsec_x')")
        .bind(tenant.0)
        .execute(&system)
        .await
        .expect("endpoint");
    let mut made = Vec::new();
    for n in 0..100 {
        made.push(send(&app, tenant, Some(&format!("before-{n}"))).await.expect("send").0);
    }

    // Writers send while the conversion runs, three of them racing for one key a round.
    let convert = async { ballast::db::MIGRATOR.run_to(CONVERTED, &owner).await.expect("convert") };
    let writer = app.clone();
    let (written, rounds) = write_while(3, convert, move |w, round| {
        let app = writer.clone();
        async move {
            let mut new = 0;
            for key in [Some(format!("w{w}-{round}")), Some(format!("shared-{round}")), None] {
                new += i64::from(!send(&app, tenant, key.as_deref()).await?.1);
            }
            Ok(new)
        }
    })
    .await;
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'webhook_messages'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p");
    let all = 100 + written;
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_messages").await, all, "every message there once");
    assert_eq!(count(&system, "SELECT count(*) FROM (SELECT idempotency_key FROM webhook_messages WHERE idempotency_key IS NOT NULL GROUP BY 1 HAVING count(*) > 1) d").await, 0, "a key twice");
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_messages WHERE idempotency_key LIKE 'shared-%'").await, rounds, "one per shared key");
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_deliveries").await, all, "one delivery each, to the one endpoint");
    let unique: i64 = count(&owner, "SELECT count(*) FROM pg_index WHERE indisunique AND indrelid = 'webhook_messages'::regclass AND NOT indisprimary").await;
    assert_eq!(unique, 0, "no unique index but the key");

    // A delivery's read of its message by id is looked for in one partition only.
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN SELECT body FROM webhook_messages WHERE id = '{}'", made[0])))
        .fetch_all(&system)
        .await
        .expect("explain");
    let plan = plan.join("\n");
    assert_eq!(plan.matches(" on webhook_messages_").count(), 1, "{plan}");

    // A key is kept once across months, and when eight writers race for each of 30 new ones:
    // the transaction lock, not a unique index, makes the second wait and find the first.
    assert_eq!(send(&app, tenant, Some("before-7")).await.expect("again"), (made[7], true), "a key from the old heap");
    let racing = TenantPool::new(sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&db.url("ballast_app")).await.expect("racers' pool"));
    let racers: Vec<_> = (0..240).map(|n| tokio::spawn({ let app = racing.clone(); async move { send(&app, tenant, Some(&format!("raced-{}", n / 8))).await } })).collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(!r.await.expect("racer").expect("send").1);
    }
    let doubled = count(&system, "SELECT count(*) FROM (SELECT 1 FROM webhook_messages WHERE idempotency_key LIKE 'raced-%' GROUP BY idempotency_key HAVING count(*) > 1) d").await;
    assert_eq!((won, doubled), (30, 0), "each raced key once");

    // The first month of deliveries, then of messages, retired: the messages of the deliveries
    // still pending (the writers', and the raced ones) are kept, the rest go with their month.
    sqlx::query("UPDATE webhook_deliveries SET status = 'delivered', finished_at = now() WHERE message_id = ANY($1)").bind(&made).execute(&system).await.expect("delivered");
    // A re-send of an old message: a new delivery naming it, in a month not retiring.
    let later_month = partitions::list(&system, "webhook_deliveries").await.expect("list")[1].range_from.expect("a month");
    sqlx::query("INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id, status) VALUES (ballast_uuid_v7_floor($1), $2, $3, $2, 'delivered')")
        .bind(later_month)
        .bind(tenant.0)
        .bind(made[3])
        .execute(&system)
        .await
        .expect("re-send");
    let pending = count(&system, "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'").await;
    assert_eq!(pending, written + 30);
    let retention = Duration::from_secs(30 * 86_400);
    let first = partitions::list(&system, "webhook_messages").await.expect("list")[0].clone();
    assert_eq!(first.name, "webhook_messages_legacy");
    let when = first.range_to + TimeDelta::from_std(retention).expect("delta");
    for table in ["webhook_deliveries", "webhook_messages"] {
        partitions::retire(&system, table, when, retention, None, ballast::maintenance::kept_on_retirement(table)).await.expect("retire");
    }
    let kept: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM webhook_messages_default ORDER BY id").fetch_all(&system).await.expect("kept");
    assert_eq!(kept.len() as i64, pending + 1, "the pending deliveries' messages and the re-sent one");
    assert!(kept.contains(&made[3]) && !kept.contains(&made[4]));
    assert_eq!(count(&system, "SELECT count(*) FROM webhook_deliveries d WHERE NOT EXISTS (SELECT 1 FROM webhook_messages m WHERE m.id = d.message_id)").await, 0, "every delivery's message is there");
    assert_eq!(send(&app, tenant, Some("shared-1")).await.expect("again").1, true, "a kept message's key is still kept");

    // Delivered at last and past the retention: the prune takes the kept deliveries and then
    // their messages from the DEFAULT partitions. The re-sent message stays while its re-send,
    // in a month of its own, does.
    sqlx::query("UPDATE webhook_deliveries SET status = 'delivered', finished_at = now() - interval '40 days'").execute(&system).await.expect("delivered");
    sqlx::query("UPDATE webhook_messages SET created_at = now() - interval '40 days'").execute(&system).await.expect("aged");
    ballast::webhooks_out::deliveries::prune(&SystemPool(system.clone()), retention).await.expect("prune");
    let left: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM webhook_messages_default").fetch_all(&system).await.expect("left");
    assert_eq!(left, [made[3]], "only the message a delivery still names");
}
