//! The email outbox partitioned by month of its UUIDv7 id (0063–0066): the conversion runs while
//! emails are written, each dedup key kept once by this release's advisory lock (no unique
//! index spans the months); a send's lookup by id reaches one partition; a month leaves keeping
//! its emails not yet sent; and `email.prune` deletes sent ones past the retention where no
//! month does, on the heap before the conversion as after it.

use std::time::Duration;

use ballast::db::partitions;
use ballast::db::{SystemPool, TenantPool};
use ballast::email::{NewEmail, Template};
use ballast::newtypes::TenantId;
use chrono::{TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::partitions::{count, pool, write_while};
use crate::support::TestDb;

/// Release 0.6.0's schema, and the conversion's last step.
const BEFORE_CONVERSION: i64 = 62;
const CONVERTED: i64 = 66;

/// An email as Ballast's own code queues one, in a tenant transaction; its row, or `None`
/// when its dedup key was there already.
async fn queue(app: &TenantPool, tenant: TenantId, dedup_key: &str) -> Result<Option<Uuid>, String> {
    let vars = serde_json::json!({"name": "Ann", "amount": "USD 20.00", "invoice": "in_1", "days_left": 4, "ends_on": "2026-12-01",
        "renews_on": "2026-12-01", "has_payment_method": true, "percent": 80, "metric": "api_calls", "month": "2026-12", "used": 8, "limit": 10});
    let email = NewEmail { dedup_key: dedup_key.to_owned(), template: Template::UsageWarning, to: "ann@example.com".into(), vars };
    let mut tx = app.begin(tenant).await.map_err(|e| e.to_string())?;
    let id = ballast::email::queue(&mut tx, tenant, &email).await.map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(id)
}

/// Emails with `key` (there must be one).
async fn with_key(system: &PgPool, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE dedup_key = $1").bind(key).fetch_one(system).await.expect("count")
}

#[tokio::test]
async fn the_outbox_conversion_runs_under_writers_keeps_each_dedup_key_once_and_a_month_leaves_keeping_what_is_unsent() {
    let db = TestDb::create_empty().await;
    let owner = pool(&db.url("ballast_owner")).await;
    ballast::db::MIGRATOR.run_to(BEFORE_CONVERSION, &owner).await.expect("migrate to the release before");
    let system = pool(&db.url("ballast_system")).await;
    let system_pool = SystemPool(system.clone());
    let app = TenantPool::new(pool(&db.url("ballast_app")).await);
    let tenant = TenantId(Uuid::new_v4());
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, 'sends email')").bind(tenant.0).execute(&system).await.expect("tenant");

    // Release 0.6.0 on the heap: the outbox has a retention at last. A sent email written 40
    // days ago goes; a pending one as old stays until it is sent.
    for (key, status, days) in [("old-sent", "sent", 40), ("old-pending", "pending", 41)] {
        queue(&app, tenant, key).await.expect("queue").expect("new");
        sqlx::query("UPDATE email_outbox SET id = ballast_uuid_v7_floor(now() - make_interval(days => $3)), status = $2 WHERE dedup_key = $1")
            .bind(key)
            .bind(status)
            .bind(days)
            .execute(&system)
            .await
            .expect("age");
    }
    let retention = Duration::from_secs(30 * 86_400);
    assert_eq!(ballast::email::outbox::prune(&system_pool, retention).await.expect("prune"), 1);
    assert_eq!((with_key(&system, "old-sent").await, with_key(&system, "old-pending").await), (0, 1));
    sqlx::query("DELETE FROM email_outbox WHERE dedup_key = 'old-pending'").execute(&system).await.expect("clear");

    let mut made = Vec::new();
    for n in 0..200 {
        made.push(queue(&app, tenant, &format!("before-{n}")).await.expect("queue").expect("new"));
    }
    // Twenty not sent yet; the rest sent.
    sqlx::query("UPDATE email_outbox SET status = 'sent', sent_at = now() WHERE NOT (id = ANY($1))").bind(&made[..20]).execute(&system).await.expect("sent");

    // Writers queue emails while the conversion runs, three of them racing for one key a round.
    let convert = async { ballast::db::MIGRATOR.run_to(CONVERTED, &owner).await.expect("convert") };
    let writer = app.clone();
    let (written, rounds) = write_while(3, convert, move |w, round| {
        let app = writer.clone();
        async move {
            let mut new = 0;
            for key in [format!("w{w}-{round}"), format!("shared-{round}")] {
                new += i64::from(queue(&app, tenant, &key).await?.is_some());
            }
            Ok(new)
        }
    })
    .await;
    let kind: String = sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE relname = 'email_outbox'").fetch_one(&owner).await.expect("kind");
    assert_eq!(kind, "p");
    let all = 200 + written;
    assert_eq!(count(&system, "SELECT count(*) FROM email_outbox").await, all, "every email there once");
    assert_eq!(count(&system, "SELECT count(*) FROM (SELECT dedup_key FROM email_outbox GROUP BY 1 HAVING count(*) > 1) d").await, 0, "a dedup key twice");
    assert_eq!(count(&system, "SELECT count(*) FROM email_outbox WHERE dedup_key LIKE 'shared-%'").await, rounds, "one per shared key");
    assert_eq!(count(&system, "SELECT count(*) FROM email_outbox_legacy").await, all, "made before the first month: in the old heap");
    let unique: i64 = count(&owner, "SELECT count(*) FROM pg_index WHERE indisunique AND indrelid = 'email_outbox'::regclass AND NOT indisprimary").await;
    assert_eq!(unique, 0, "no unique index but the key");

    // A send's lookup by id is looked for in one partition only.
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN SELECT status FROM email_outbox WHERE id = '{}'", made[0])))
        .fetch_all(&system)
        .await
        .expect("explain");
    let plan = plan.join("\n");
    assert_eq!(plan.matches(" on email_outbox_").count(), 1, "{plan}");

    // A key is kept once across months, and when eight writers race for a new one: the
    // advisory lock, not a unique index, makes the second wait and find the first.
    assert_eq!(queue(&app, tenant, "before-7").await.expect("again"), None, "a key from the old heap");
    let racers: Vec<_> = (0..8).map(|_| tokio::spawn({ let app = app.clone(); async move { queue(&app, tenant, "raced").await } })).collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.expect("racer").expect("queue").is_some());
    }
    assert_eq!((won, with_key(&system, "raced").await), (1, 1));

    // The first partition retired: what is not sent yet is kept, in the DEFAULT partition.
    partitions::ensure_all_ahead(&system, Utc::now()).await.expect("ahead");
    let parts = partitions::list(&system, "email_outbox").await.expect("list");
    assert_eq!(parts[0].name, "email_outbox_legacy");
    let unsent = count(&system, "SELECT count(*) FROM email_outbox_legacy WHERE status = 'pending'").await;
    assert_eq!(unsent, 20 + written + 1, "the writers' emails and the raced one are not sent yet");
    let later = parts[0].range_to + TimeDelta::from_std(retention).expect("delta");
    let keep = ballast::maintenance::kept_on_retirement("email_outbox");
    let gone = partitions::retire(&system, "email_outbox", later, retention, None, keep).await.expect("retire");
    assert_eq!((gone.partitions, gone.rows, gone.kept), (1, all as u64 + 1, unsent as u64), "{gone:?}");
    assert_eq!(count(&system, "SELECT count(*) FROM email_outbox_default").await, unsent);
    assert_eq!(queue(&app, tenant, "shared-1").await.expect("again"), None, "a kept email's key is still kept");

    // Sent at last and past the retention: the prune takes them from the DEFAULT partition.
    sqlx::query("UPDATE email_outbox SET status = 'sent' WHERE status = 'pending'").execute(&system).await.expect("sent");
    assert_eq!(ballast::email::outbox::prune(&system_pool, Duration::ZERO).await.expect("prune"), unsent as u64);
    assert_eq!(count(&system, "SELECT count(*) FROM email_outbox_default").await, 0);
}
