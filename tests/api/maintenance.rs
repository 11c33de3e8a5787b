//! Maintenance services (issue 38): each service, driven to do its work against real
//! PostgreSQL and Redis, reports what it did; its status is kept and shown by
//! `ballast maintenance`, and one that has not completed within three periods is overdue.

use ballast::maintenance::{self, Report, status};
use uuid::Uuid;

use crate::support::TestApp;

/// Runs the service named `name` once, records its status, and returns what it did.
async fn run(app: &TestApp, name: &str) -> Report {
    let services = maintenance::services();
    let service = services.iter().find(|s| s.name() == name).unwrap_or_else(|| panic!("no service {name}"));
    let outcome = maintenance::run_one(service.as_ref(), &app.state.maintenance_deps()).await;
    status::record(&app.state.system_pool, &outcome).await.expect("record");
    outcome.result.unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn count(report: &Report, what: &str) -> u64 {
    report.0.get(what).copied().unwrap_or_else(|| panic!("{what} in {report:?}"))
}

async fn exec(app: &TestApp, sql: &str, tenant: Uuid) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).bind(tenant).execute(&app.state.system_pool.0).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn the_inbox_sweep_requeues_a_stale_received_event_once() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    exec(&app, "INSERT INTO stripe_events (id, type, livemode, stripe_created, payload, status, received_at)
                VALUES ('evt_stale_' || $1::text, 'invoice.paid', false, now(), '{}', 'received', now() - interval '1 minute')", Uuid::new_v4()).await;
    assert_eq!(count(&run(&app, "inbox.sweep").await, "requeued"), 1);
    assert_eq!(count(&run(&app, "inbox.sweep").await, "requeued"), 0, "queued once");
}

#[tokio::test]
async fn the_inbox_prune_deletes_settled_events_past_retention() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    exec(&app, "INSERT INTO stripe_events (id, type, livemode, stripe_created, payload, status, received_at)
                VALUES ('evt_old_' || $1::text, 'invoice.paid', false, now(), '{}', 'processed', now() - interval '400 days')", Uuid::new_v4()).await;
    assert!(count(&run(&app, "inbox.prune").await, "pruned") >= 1);
}

#[tokio::test]
async fn the_partitions_service_keeps_months_ahead_and_retires_nothing_within_retention() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let pool = &app.state.system_pool.0;
    let before = ballast::db::partitions::list(pool, "audit_log").await.expect("list");
    // The furthest month goes (as if the leader had been away for a month).
    let last = before.last().expect("months ahead").name.clone();
    let id: i64 = sqlx::query_scalar("SELECT ballast_partition_detach('audit_log', $1, 0)").bind(&last).fetch_one(pool).await.expect("detach");
    sqlx::query("SELECT ballast_partition_drop($1)").bind(id).execute(pool).await.expect("drop");
    let report = run(&app, "partitions").await;
    assert!(count(&report, "created") >= 1, "{report:?}");
    assert_eq!(count(&report, "audit_log.retired"), 0, "nothing is 400 days old");
    let after = ballast::db::partitions::list(pool, "audit_log").await.expect("list");
    assert!(after.iter().any(|p| p.name == last), "{last} is back: {after:?}");
    assert_eq!(after[0], before[0]);
}

#[tokio::test]
async fn one_inbox_prune_drains_more_than_a_batch_so_it_keeps_up_with_the_intake() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let due = (ballast::stripe::inbox::PRUNE_BATCH * 2 + 500) as i64;
    sqlx::query(
        "INSERT INTO stripe_events (id, type, livemode, stripe_created, payload, status, received_at)
         SELECT 'evt_due_' || g, 'invoice.paid', false, now(), '{}', 'processed', now() - interval '400 days' FROM generate_series(1, $1) g",
    )
    .bind(due)
    .execute(&app.state.system_pool.0)
    .await
    .expect("due rows");
    assert_eq!(count(&run(&app, "inbox.prune").await, "pruned"), due as u64, "every due row in one run");
}

#[tokio::test]
async fn the_outbox_sweep_queues_an_email_whose_job_was_lost() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let t = app.tenant("outbox").await;
    exec(&app, "INSERT INTO email_outbox (id, tenant_id, dedup_key, template, to_address, subject, body_text, body_html, message_id, created_at)
                VALUES (ballast_uuid_v7(), $1, 'lost_' || $1::text, 'welcome', 'a@example.com', 's', 'x', 'x', '<lost_' || $1::text || '@x>', now() - interval '1 minute')", t).await;
    assert!(count(&run(&app, "outbox.sweep").await, "queued") >= 1);
}

async fn delivery(app: &TestApp, t: Uuid, status: &str, age: &str) {
    exec(app, "INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret) VALUES ($1, $1, 'https://example.com/in', ARRAY['x'], 'whsec_x') ON CONFLICT DO NOTHING", t).await;
    exec(app, "INSERT INTO webhook_messages (id, tenant_id, event_type, body) VALUES ($1, $1, 'x', '{}') ON CONFLICT DO NOTHING", t).await;
    let sql = format!(
        "INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id, status, created_at, finished_at)
         VALUES (gen_random_uuid(), $1, $1, $1, '{status}', now() - interval '{age}', CASE WHEN '{status}' = 'pending' THEN NULL ELSE now() - interval '{age}' END)"
    );
    exec(app, &sql, t).await;
}

#[tokio::test]
async fn the_email_prune_deletes_sent_emails_past_the_retention_and_keeps_unsent_ones() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let t = app.tenant("old mail").await;
    for (status, days) in [("sent", 40), ("dead", 41), ("pending", 42), ("sent", 1)] {
        let sql = format!(
            "INSERT INTO email_outbox (id, tenant_id, dedup_key, template, to_address, subject, body_text, body_html, message_id, status)
             VALUES (ballast_uuid_v7_floor(now() - interval '{days} days'), $1, 'old_{days}', 'welcome', 'a@example.com', 's', 'x', 'x', '<old_{days}@x>', '{status}')"
        );
        exec(&app, &sql, t).await;
    }
    assert_eq!(count(&run(&app, "email.prune").await, "pruned"), 2);
    let left: Vec<String> = sqlx::query_scalar("SELECT dedup_key FROM email_outbox WHERE tenant_id = $1 ORDER BY 1").bind(t).fetch_all(&app.state.system_pool.0).await.expect("left");
    assert_eq!(left, ["old_1", "old_42"], "the recent one, and the one not sent yet");
}

#[tokio::test]
async fn the_delivery_sweep_queues_a_lost_delivery_and_the_prune_deletes_old_finished_ones() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let t = app.tenant("deliveries").await;
    delivery(&app, t, "pending", "1 hour").await;
    delivery(&app, t, "delivered", "40 days").await;
    assert!(count(&run(&app, "deliveries.sweep").await, "queued") >= 1);
    assert!(count(&run(&app, "deliveries.prune").await, "pruned") >= 1);
}

#[tokio::test]
async fn the_job_status_prune_deletes_statuses_past_retention() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let t = app.tenant("statuses").await;
    exec(&app, "INSERT INTO job_status (id, tenant_id, kind, state, finished_at, id_at) VALUES ('job_old_' || $1::text, $1, 'noop', 'done', now() - interval '8 days', ballast_job_id_time('job_old_' || $1::text))", t).await;
    assert!(count(&run(&app, "job_status.prune").await, "pruned") >= 1);
}

#[tokio::test]
async fn the_console_session_prune_deletes_sessions_ended_over_a_day_ago() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let (op, _) = ballast::auth::operators::add(&app.state.system_pool, "otto", ballast::auth::operators::Role::Viewer, "test").await.expect("operator");
    let (_, live) = ballast::auth::console_sessions::open(&app.state.system_pool, &op, std::time::Duration::from_secs(3600)).await.expect("session");
    sqlx::query("INSERT INTO console_sessions (id, operator_id, token_prefix, token_hash, csrf, expires_at) VALUES ($1, $2, 'old', '\\x00', 'x', now() - interval '2 days')")
        .bind(Uuid::new_v4())
        .bind(op.id)
        .execute(&app.state.system_pool.0)
        .await
        .expect("old session");
    assert_eq!(count(&run(&app, "console_sessions.prune").await, "pruned"), 1);
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM console_sessions").fetch_all(&app.state.system_pool.0).await.expect("left");
    assert_eq!(left, [live.id], "the live session stays");
}

#[tokio::test]
async fn the_queue_recovery_refills_a_queue_whose_redis_data_was_lost() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    // The first run sets the epochs (a fresh Redis looks like one that lost its data).
    run(&app, "queue.recovery").await;
    assert_eq!(count(&run(&app, "queue.recovery").await, "queues_lost"), 0);
    exec(&app, "INSERT INTO stripe_events (id, type, livemode, stripe_created, payload, status, received_at)
                VALUES ('evt_unapplied_' || $1::text, 'invoice.paid', false, now(), '{}', 'queued', now())", Uuid::new_v4()).await;
    // Redis restarts empty: the stripe.event queue's epoch is gone with its jobs.
    let queue = app.state.queue.catalogue().iter().find(|p| p.kind.as_str() == "stripe.event").map(|p| p.queue.clone()).expect("kind");
    let mut redis = app.state.redis.clone();
    let _: () = redis::AsyncCommands::del(&mut redis, app.state.keys.queue_epoch(queue.as_str())).await.expect("del");
    let report = run(&app, "queue.recovery").await;
    assert!(count(&report, "queues_lost") >= 1 && count(&report, "events_requeued") >= 1, "{report:?}");
}

/// Every service's last run is kept and shown; one that has not completed within three of its
/// periods is overdue, and `ballast maintenance` exits 3 for it.
#[tokio::test]
async fn statuses_are_kept_shown_and_an_overdue_service_fails_the_status_command() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    for service in maintenance::services() {
        run(&app, service.name()).await;
    }
    let now = chrono::Utc::now();
    let all = status::all(&app.state.system_pool, &maintenance::services(), now).await.expect("statuses");
    assert_eq!(all.len(), maintenance::services().len());
    assert!(all.iter().all(|s| s.runs >= 1 && s.last_report.is_some() && !s.overdue), "{all:?}");
    let shown = app.cli(&["maintenance", "--json"]);
    assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(all.len()));
    // The inbox sweep (every 5 s) last completed a minute ago: overdue.
    sqlx::query("UPDATE maintenance_status SET last_ok_at = now() - interval '1 minute' WHERE service = 'inbox.sweep'")
        .execute(&app.state.system_pool.0).await.expect("age");
    let all = status::all(&app.state.system_pool, &maintenance::services(), chrono::Utc::now()).await.expect("statuses");
    let overdue: Vec<&str> = all.iter().filter(|s| s.overdue).map(|s| s.service.as_str()).collect();
    assert_eq!(overdue, ["inbox.sweep"]);
    let shown = app.cli(&["maintenance"]);
    assert_eq!(shown.status.code(), Some(3), "{}", String::from_utf8_lossy(&shown.stdout));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("OVERDUE"));
}
