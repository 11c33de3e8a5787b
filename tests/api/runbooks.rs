//! Each runbook's admin job against seeded state: the dry run reports the seeded problem and
//! changes nothing; --execute fixes it; every run is audited. The CLI lists, shows and runs
//! pages.

use ballast::auth::Scope;
use ballast::runbook::Progress;
use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::stripe_sim::{STARTER, StripeSim};

async fn run(app: &TestApp, kind: &str, execute: bool, params: Value) -> Value {
    ballast::runbook::run_here(&app.state, &ballast::state::Registry::standard(), kind, execute, params, "test", Progress::default())
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}"))
}

async fn audited(app: &TestApp, kind: &str) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT actor, params FROM audit_log WHERE action = $1 ORDER BY id")
        .bind(format!("runbook.{kind}"))
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("audit")
}

#[tokio::test]
async fn webhook_backlog_requeues_stuck_rows_replays_dead_letters_and_backfills_from_stripe() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let tenant = app.tenant("backlog").await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, None);
    let events = sim.take_events();
    // The first two reached us; the rest never did (Stripe gave up).
    for e in &events[..2] {
        assert_eq!(app.deliver(e).await, 200);
    }
    sim.mark_delivered(&events[..2]);
    app.drain().await;
    let system = &app.state.system_pool.0;
    // A row that reached the inbox while Redis was down: received, never queued.
    let stuck = json!({"id": "evt_stuck_1", "object": "event", "type": "customer.updated", "created": Utc::now().timestamp(),
        "livemode": false, "data": {"object": {"id": customer, "object": "customer", "email": "new@example.com", "metadata": {}}}});
    sqlx::query("INSERT INTO stripe_events (id, type, stripe_created, payload, status, customer_id, object_id, received_at) VALUES ('evt_stuck_1', 'customer.updated', now(), $1, 'received', $2, $2, now() - interval '10 minutes')")
        .bind(&stuck)
        .bind(&customer)
        .execute(system)
        .await
        .expect("stuck row");
    // An event whose job keeps failing: its row keeps the last error while it retries.
    sqlx::query("UPDATE stripe_events SET attempts = 2, last_error = 'stripe: re-fetch timed out' WHERE id = 'evt_stuck_1'")
        .execute(system)
        .await
        .expect("failing row");
    // A dead letter of stripe.event.
    let envelope = json!({"id": "job-dead-1", "kind": "stripe.event", "payload": {"event_id": "evt_stuck_1"}, "attempt": 5, "enqueued_at_us": 0});
    ballast::queue::dead::record(&app.state.system_pool, "job-dead-1", "stripe.event", None, &envelope, 5, "postgres: connection refused").await.expect("dead");

    let since = Utc::now() - Duration::days(1);
    let params = json!({"replay_dead": "all", "backfill_since": since});
    let dry = run(&app, "stripe.backlog", false, params.clone()).await;
    assert_eq!(dry["stuck_rows"], 1, "{dry}");
    assert_eq!(dry["dead_letters_matching"], 1, "{dry}");
    assert_eq!(dry["undelivered_missing_from_inbox"].as_u64(), Some((events.len() - 2) as u64), "{dry}");
    assert!(dry["top_failures"].to_string().contains("connection refused"), "{dry}");
    assert!(dry["top_failures"].to_string().contains("re-fetch timed out"), "a failing event is among the reasons: {dry}");
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE status = 'received'").fetch_one(system).await.expect("count");
    assert_eq!(received, 1, "a dry run changes nothing");

    let done = run(&app, "stripe.backlog", true, params).await;
    assert_eq!(done["done"], json!({"requeued": 1, "replayed": 1, "backfilled": events.len() - 2}), "{done}");
    app.drain().await;
    let unprocessed: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')").fetch_one(system).await.expect("count");
    assert_eq!(unprocessed, 0, "every row processed after the backlog run");
    let plan: Option<String> = sqlx::query_scalar("SELECT plan_id FROM entitlements WHERE tenant_id = $1 AND feature = 'projects'")
        .bind(tenant)
        .fetch_optional(system)
        .await
        .expect("entitlements")
        .flatten();
    assert_eq!(plan.as_deref(), Some("starter"), "the backfilled subscription events granted the plan");
    let audit = audited(&app, "stripe.backlog").await;
    assert_eq!(audit.len(), 2);
    assert_eq!((audit[1].0.as_str(), &audit[1].1["execute"]), ("test", &json!(true)));
}

#[tokio::test]
async fn scheduler_inspect_reports_a_dead_leader_and_missed_ticks_then_releases_the_lease() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let mut conn = app.state.redis.clone();
    let _: () = redis::cmd("SET").arg(app.state.keys.scheduler_leader()).arg("ghost-host-1-abc").arg("PX").arg(60_000).query_async(&mut conn).await.expect("lease");
    let ten_minutes_ago = (Utc::now() - Duration::minutes(10)).timestamp_millis();
    let _: () = redis::AsyncCommands::set(&mut conn, app.state.keys.scheduler_last_tick("usage.flush"), ten_minutes_ago).await.expect("tick");

    let dry = run(&app, "scheduler.inspect", false, json!({})).await;
    assert_eq!((dry["leader"].as_str(), &dry["leader_alive"]), (Some("ghost-host-1-abc"), &json!(false)), "{dry}");
    let flush = dry["entries"].as_array().and_then(|a| a.iter().find(|e| e["kind"] == "usage.flush")).expect("usage.flush entry");
    assert!(flush["missed_ticks"].as_u64().is_some_and(|n| n >= 9), "{flush}");
    let held: Option<String> = redis::AsyncCommands::get(&mut conn, app.state.keys.scheduler_leader()).await.expect("get");
    assert!(held.is_some(), "a dry run leaves the lease");

    let done = run(&app, "scheduler.inspect", true, json!({})).await;
    assert_eq!(done["released_lease"], true);
    let held: Option<String> = redis::AsyncCommands::get(&mut conn, app.state.keys.scheduler_leader()).await.expect("get");
    assert!(held.is_none(), "the stuck lease is gone");
}

#[tokio::test]
async fn db_sessions_finds_a_session_idle_in_a_transaction_and_terminates_it() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let url = app.env.get("DATABASE_URL").expect("DATABASE_URL").clone();
    let mut stuck = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut stuck).await.expect("pid");
    sqlx::query("BEGIN").execute(&mut stuck).await.expect("begin");
    sqlx::query("SELECT 1").execute(&mut stuck).await.expect("select");

    let params = json!({"idle_in_transaction_secs": 0});
    let dry = run(&app, "db.sessions", false, params.clone()).await;
    let listed = dry["idle_in_transaction"].as_array().expect("list");
    assert!(listed.iter().any(|s| s["pid"] == pid), "{dry}");
    assert!(dry["by_application_and_state"].to_string().contains("idle in transaction"), "{dry}");

    let done = run(&app, "db.sessions", true, params).await;
    assert!(done["terminated"].as_u64().is_some_and(|n| n >= 1), "{done}");
    assert!(sqlx::query("SELECT 1").execute(&mut stuck).await.is_err(), "the stuck session was terminated");
}

#[tokio::test]
async fn rate_limit_spike_names_the_blocked_key_and_route_and_lifts_it_with_a_ttl() {
    let limits = "[key]\nlimit = 2\nwindow_secs = 60\n";
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).limits(limits).spawn().await;
    let tenant = app.tenant("spike").await;
    let (key_id, key) = app.key(Some(tenant), &[Scope::EntitlementsRead]).await;
    let get = || app.http.get(app.url("/v1/entitlements")).bearer_auth(&key).send();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get().await.expect("get").status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 429, 429, 429]);

    let subject = format!("key:{key_id}");
    let params = json!({"policy": "key", "subject": subject, "allow": true, "ttl": "10m"});
    let dry = run(&app, "limits.spike", false, params.clone()).await;
    let top = &dry["top_subjects"][0];
    assert_eq!((top["subject"].as_str(), &top["blocks"]), (Some(subject.as_str()), &json!(3)), "{dry}");
    assert_eq!(dry["top_routes"][0]["route"], "/v1/entitlements", "{dry}");
    assert_eq!(get().await.expect("get").status(), 429, "a dry run changes nothing");

    run(&app, "limits.spike", true, params).await;
    assert_eq!(get().await.expect("get").status(), 200, "the override lifts the limit");
    run(&app, "limits.spike", true, json!({"policy": "key", "subject": subject, "revert": true})).await;
    assert_eq!(get().await.expect("get").status(), 429, "reverted");
    let bad = ballast::runbook::run_here(&app.state, &ballast::state::Registry::standard(), "limits.spike", true, json!({"policy": "key", "subject": subject}), "t", Progress::default()).await;
    assert!(bad.is_err_and(|e| e.to_string().contains("limit=N or allow=true")));
}

#[tokio::test]
async fn site_slow_reports_routes_queue_lag_cache_and_slos() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let tenant = app.tenant("slow").await;
    let (_, key) = app.key(Some(tenant), &[Scope::EntitlementsRead]).await;
    for _ in 0..4 {
        app.http.get(app.url("/v1/entitlements/projects")).bearer_auth(&key).send().await.expect("get");
    }
    app.state.slo_recorder.publish(&app.state.redis, &app.state.keys, &app.state.cache.stats()).await.expect("publish");
    let report = run(&app, "site.slow", false, json!({})).await;
    let route = report["slowest_routes"].as_array().and_then(|a| a.iter().find(|r| r["route"] == "/v1/entitlements/{feature}")).expect("route");
    assert_eq!(route["requests"], 4, "{report}");
    assert!(route["mean_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert_eq!(report["cache"]["reads"], 4, "{report}");
    assert!((report["cache"]["hit_ratio"].as_f64().expect("ratio") - 0.75).abs() < 1e-9, "one miss, then hits: {report}");
    // One per SLO of policy/slos.toml (the intake's two and the uptime checks').
    assert!(report["slos"].as_array().is_some_and(|s| s.len() == 3), "{report}");
    assert!(report["queue_lag"].as_array().is_some_and(|q| q.iter().any(|k| k["kind"] == "stripe.event")));
}

#[tokio::test]
async fn site_down_checks_every_dependency_and_names_the_failing_one() {
    let app = TestApp::builder().roles(&[]).env("BALLAST_SMTP_HOST", "127.0.0.1").env("BALLAST_SMTP_PORT", "9").env("BALLAST_SMTP_SECURITY", "none").spawn().await;
    let report = run(&app, "site.down", false, json!({})).await;
    for ok in ["postgres_app", "postgres_system", "redis"] {
        assert_eq!(report["checks"][ok]["ok"], true, "{ok}: {report}");
        assert!(report["checks"][ok]["ms"].as_f64().is_some());
    }
    assert_eq!(report["checks"]["smtp"]["ok"], false, "{report}");
    assert_eq!(report["checks"]["stripe_api"]["ok"], false, "the tests' Stripe base refuses: {report}");
    assert_eq!(report["checks"]["otlp"], json!({"status": "not configured"}), "an optional part, not an error: {report}");
    let mut failing: Vec<&str> = report["failing"].as_array().expect("failing").iter().filter_map(Value::as_str).collect();
    failing.sort_unstable();
    assert_eq!(failing, vec!["smtp", "stripe_api"]);
}

#[tokio::test]
async fn billing_drift_finds_a_change_stripe_never_told_us_and_resyncs_it() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let tenant = app.tenant("drift").await;
    let customer = sim.customer(tenant, true);
    let sub = sim.checkout(tenant, &customer, STARTER, None);
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
    // Canceled at Stripe; the webhook never arrives.
    sim.cancel(&sub, false);
    sim.take_events();

    let params = json!({"tenant": tenant});
    let dry = run(&app, "billing.drift", false, params.clone()).await;
    let drifted = dry["drifted"].as_array().expect("drifted");
    assert_eq!(drifted.len(), 1, "{dry}");
    assert_eq!(drifted[0]["object"], sub.as_str());
    assert_eq!(drifted[0]["fields"][0], json!({"field": "status", "mirror": "active", "stripe": "canceled"}));

    let done = run(&app, "billing.drift", true, params.clone()).await;
    assert_eq!(done["resynced"], 1);
    app.drain().await;
    let status: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1").bind(&sub).fetch_one(&app.state.system_pool.0).await.expect("status");
    assert_eq!(status, "canceled");
    let again = run(&app, "billing.drift", false, params).await;
    assert_eq!(again["drifted"], json!([]), "no drift after the re-sync");
}

#[tokio::test]
async fn billing_reconcile_brings_in_subscriptions_whose_events_never_arrived_cancelled_ones_included() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let tenant = app.tenant("reconciled").await;
    let customer = sim.customer(tenant, true);
    // Only the customer's own event arrives; a first subscription (cancelled since) and the
    // current one exist only at Stripe.
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
    let first = sim.checkout(tenant, &customer, STARTER, None);
    sim.cancel(&first, false);
    let current = sim.checkout(tenant, &customer, STARTER, None);
    sim.take_events();
    let access = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM subscriptions WHERE id = $1").bind(&current).fetch_optional(&app.state.system_pool.0).await.expect("status")
    };
    assert_eq!(access().await, None);

    let params = json!({"tenant": tenant});
    let dry = run(&app, "billing.reconcile", false, params.clone()).await;
    assert_eq!((dry["customers"].as_i64(), dry["listed"].as_i64()), (Some(1), Some(2)), "status=all lists the cancelled one: {dry}");
    let missing: Vec<&str> = dry["missing"].as_array().expect("missing").iter().filter_map(|m| m["subscription"].as_str()).collect();
    assert_eq!(missing.len(), 2, "{dry}");
    assert!(missing.contains(&first.as_str()) && missing.contains(&current.as_str()));
    app.drain().await;
    assert_eq!(access().await, None, "a dry run changes nothing");

    let done = run(&app, "billing.reconcile", true, params.clone()).await;
    assert_eq!(done["brought_in"], 2, "{done}");
    app.drain().await;
    assert_eq!(access().await.as_deref(), Some("active"));
    let cancelled: String = sqlx::query_scalar("SELECT status FROM subscriptions WHERE id = $1").bind(&first).fetch_one(&app.state.system_pool.0).await.expect("status");
    assert_eq!(cancelled, "canceled");
    let plan: Option<String> = sqlx::query_scalar("SELECT plan_id FROM entitlements WHERE tenant_id = $1 AND source = 'plan' LIMIT 1")
        .bind(tenant)
        .fetch_optional(&app.state.system_pool.0)
        .await
        .expect("entitlements");
    assert_eq!(plan.as_deref(), Some("starter"), "the same handlers granted the plan");
    let again = run(&app, "billing.reconcile", false, params).await;
    assert_eq!(again["missing"], json!([]), "nothing missing after the run");
    assert_eq!(audited(&app, "billing.reconcile").await.len(), 3, "every run audited");
}

#[tokio::test]
async fn the_cli_lists_shows_and_runs_pages_and_refuses_unknown_ones() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let out = app.cli(&["runbook", "list", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pages: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(pages.as_array().is_some_and(|p| p.len() >= 9 && p.iter().any(|x| x["name"] == "site-down" && x["admin_job"] == "site.down")));
    let shown = app.cli(&["runbook", "show", "site-down"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("## Rollback"));
    let ran = app.cli(&["runbook", "run", "scheduler-no-leader", "--json"]);
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let report: Value = serde_json::from_slice(&ran.stdout).expect("json");
    assert_eq!(report["executed"], false);
    let unknown = app.cli(&["runbook", "run", "no-such-page"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("ballast runbook list"));
    let bad_param = app.cli(&["runbook", "run", "db-pool-exhaustion", "--param", "idle_secs=5"]);
    assert!(!bad_param.status.success());
    assert!(String::from_utf8_lossy(&bad_param.stderr).contains("idle_secs"), "{}", String::from_utf8_lossy(&bad_param.stderr));
    let queued = app.cli(&["runbook", "run", "site-down", "--enqueue"]);
    assert!(queued.status.success() && String::from_utf8_lossy(&queued.stdout).contains("queued site.down"));
    let audit = audited(&app, "scheduler.inspect").await;
    assert_eq!(audit.len(), 1, "the CLI run is audited");
}

/// The rollback page's report: on a schema this binary migrated, nothing stands in the way; a
/// migration the binary does not know (a newer release's) is flagged for a person, exit 3.
#[tokio::test]
async fn the_release_report_names_this_release_and_flags_a_schema_newer_than_the_binary() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let ran = app.cli(&["runbook", "run", "release-rollback", "--json"]);
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
    let report: Value = serde_json::from_slice(&ran.stdout).expect("json");
    assert_eq!(report["release"], ballast::RELEASE);
    assert_eq!(report["binary_schema_version"], report["database_schema_version"]);
    assert_eq!(report["failing"], serde_json::json!([]), "{report}");
    sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'from a newer release', true, '\\x00', 1)")
        .execute(&app.state.system_pool.0)
        .await
        .expect("a newer release's migration");
    let ran = app.cli(&["runbook", "run", "release-rollback", "--json"]);
    assert_eq!(ran.status.code(), Some(3), "{}", String::from_utf8_lossy(&ran.stderr));
    let report: Value = serde_json::from_slice(&ran.stdout).expect("json");
    assert!(report["failing"].to_string().contains("9999"), "{report}");
    assert_eq!(report["unknown_applied"][0]["version"], 9999);
}
