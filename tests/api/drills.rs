//! Fault drills against real `ballast` processes on the real PostgreSQL and Redis: a worker
//! killed in the middle of each job kind (a named fault point aborts the process the way
//! `kill -9` would: no destructors, no acknowledgement), then a second worker that must
//! recover the job once the first one's heartbeat lapses, with the job's effect exactly once.
//! Each drill prints its recovery time (docs/reliability.md, "Fault drills").

use std::time::{Duration, Instant};

use ballast::app::Role;
use ballast::auth::Scope;
use ballast::queue::EnqueueRequest;
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::fleet::{completed_ids, count, queue_drained};
use crate::support::procs::{LogsOnPanic, Proc, RECOVERY_BOUND, until};
use crate::support::smtp::SmtpServer;
use crate::support::stripe_sim::{PRO, STARTER, StripeSim};

/// Runs the drill: a worker with `fault` set must die at it; a second worker must then finish
/// the work (`done` holds) within [`RECOVERY_BOUND`]. Returns the recovery time.
async fn kill_and_recover<F: std::future::Future<Output = bool>>(
    app: &TestApp,
    fault: &str,
    extra: &[(&str, &str)],
    done: impl FnMut() -> F,
) -> Duration {
    let mut env: Vec<(&str, &str)> = extra.to_vec();
    env.push(("BALLAST_FAULT", fault));
    let mut doomed = Proc::start(app, "worker", &env);
    let status = doomed.exited(Duration::from_secs(30)).await;
    assert!(!status.success(), "{fault}: the worker should have died");
    assert!(doomed.log().contains(fault), "{fault}: died elsewhere: {}", doomed.log());
    let died = Instant::now();
    let rescuer = Proc::start(app, "worker", extra);
    let _logs = LogsOnPanic(vec![doomed.log_path(), rescuer.log_path()]);
    let mut done = done;
    until(&format!("{fault}: the job recovered"), RECOVERY_BOUND, || {
        let effect = done();
        async move { effect.await && queue_drained(app).await }
    })
    .await;
    let recovered = died.elapsed();
    eprintln!("drill {fault}: recovered {:.1} s after the kill", recovered.as_secs_f64());
    let (status, log) = rescuer.terminate().await;
    assert!(status.success(), "{fault}: the rescuer's exit: {log}");
    recovered
}

async fn enqueue(app: &TestApp, kind: &str, payload: Value) {
    app.state.queue.enqueue(EnqueueRequest::new(kind, payload)).await.expect("enqueue");
}

/// An app that takes webhooks (no workers of its own) and talks to the simulator.
async fn intake_app(sim: &StripeSim, smtp: Option<&SmtpServer>) -> TestApp {
    let mut b = TestApp::builder().roles(&[Role::Api]).env("STRIPE_API_BASE", &sim.base_url);
    if let Some(smtp) = smtp {
        b = b
            .env("BALLAST_SMTP_HOST", "127.0.0.1")
            .env("BALLAST_SMTP_PORT", &smtp.port.to_string())
            .env("BALLAST_SMTP_SECURITY", "none")
            .env("BALLAST_EMAIL_FROM", "Billing <billing@example.com>");
    }
    b.spawn().await
}

/// A new tenant whose new customer (with a card) subscribed to `price` through checkout.
async fn subscriber(app: &TestApp, sim: &StripeSim, price: (&'static str, &'static str, i64)) -> (uuid::Uuid, String) {
    let tenant = app.tenant("drill").await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, price, None);
    (tenant, customer)
}

/// Delivers what the simulator emitted and lets a plain worker process it.
async fn deliver_and_process(app: &TestApp, sim: &StripeSim) {
    let worker = Proc::start(app, "worker", &[]);
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200, "{e}");
    }
    until("setup events processed", Duration::from_secs(30), || async {
        count(app, "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')").await == 0
            && count(app, "SELECT count(*) FROM email_outbox WHERE status = 'pending'").await == 0
    })
    .await;
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn a_worker_killed_after_a_stripe_event_committed_is_recovered_and_the_event_applies_once() {
    let _machine = crate::support::MACHINE.read().await;
    let sim = StripeSim::start().await;
    let app = intake_app(&sim, None).await;
    let (tenant, _) = subscriber(&app, &sim, STARTER).await;
    let events = sim.take_events();
    for e in &events {
        assert_eq!(app.deliver(e).await, 200);
    }
    let handled = count(&app, "SELECT count(*) FROM stripe_events WHERE status <> 'ignored'").await;
    assert!(handled >= 3, "{handled} handled events");
    kill_and_recover(&app, "stripe.event.after_commit", &[], || async {
        count(&app, "SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')").await == 0
    })
    .await;
    // Exactly once: every handled event was applied by one committed run.
    assert_eq!(count(&app, "SELECT count(*) FROM stripe_events WHERE status = 'processed' AND attempts = 1").await, handled);
    assert_eq!(count(&app, "SELECT count(*) FROM subscriptions").await, 1);
    let enabled: bool = sqlx::query_scalar("SELECT enabled FROM entitlements WHERE tenant_id = $1 AND feature = 'api_access'")
        .bind(tenant)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("entitlement");
    assert!(enabled);
}

#[tokio::test]
async fn a_worker_killed_around_an_email_send_is_recovered_and_each_email_goes_out_once() {
    let _machine = crate::support::MACHINE.read().await;
    let sim = StripeSim::start().await;
    let smtp = SmtpServer::start().await;
    let app = intake_app(&sim, Some(&smtp)).await;
    let tenant = app.tenant("drill").await;
    let smtp_env = [
        ("BALLAST_SMTP_HOST", "127.0.0.1"),
        ("BALLAST_SMTP_PORT", &*smtp.port.to_string()),
        ("BALLAST_SMTP_SECURITY", "none"),
        ("BALLAST_EMAIL_FROM", "Billing <billing@example.com>"),
    ]
    .map(|(k, v)| (k, v.to_owned()));
    let smtp_env: Vec<(&str, &str)> = smtp_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Before the SMTP conversation (row locked, nothing sent) and after the commit (sent and
    // recorded, not acknowledged): either way the recipient gets it once.
    for (n, fault) in ["email.send.before_send", "email.send.after_commit"].into_iter().enumerate() {
        let mut tx = app.state.tenant_pool.begin(ballast::newtypes::TenantId(tenant)).await.expect("tx");
        let email = ballast::email::NewEmail {
            dedup_key: format!("drill:{fault}"),
            template: ballast::email::Template::PaymentFailed,
            to: "owner@example.com".into(),
            vars: json!({"amount": "USD 20.00", "invoice": "in_drill", "days_left": 3}),
        };
        let id = ballast::email::queue(&mut tx, ballast::newtypes::TenantId(tenant), &email).await.expect("queue").expect("new row");
        tx.commit().await.expect("commit");
        ballast::email::push(&app.state.queue, ballast::newtypes::TenantId(tenant), &[id]).await.expect("push");
        kill_and_recover(&app, fault, &smtp_env, || async { count(&app, "SELECT count(*) FROM email_outbox WHERE status = 'sent'").await == n as i64 + 1 }).await;
        let received = smtp.messages();
        assert_eq!(received.len(), n + 1, "{fault}: one message per email");
    }
    let ids: std::collections::BTreeSet<String> = smtp.messages().iter().filter_map(|m| m.header("message-id")).collect();
    assert_eq!(ids.len(), 2, "distinct Message-IDs");
}

#[tokio::test]
async fn a_worker_killed_after_a_dunning_step_committed_is_recovered_and_the_invoice_is_retried_once() {
    let _machine = crate::support::MACHINE.read().await;
    const DAY: i64 = 86_400;
    let sim = StripeSim::start().await;
    let smtp = SmtpServer::start().await;
    let app = intake_app(&sim, Some(&smtp)).await;
    let (_, customer) = subscriber(&app, &sim, STARTER).await;
    deliver_and_process(&app, &sim).await;
    sim.set_declining(&customer, true);
    sim.advance_days(30);
    // The renewal invoice is a draft for an hour, then finalized and charged.
    sim.advance_hours(1);
    let failed_at = sim.now();
    deliver_and_process(&app, &sim).await;
    let invoice = sim.open_invoices_of(&customer).pop().expect("the declined invoice");
    assert_eq!(count(&app, "SELECT count(*) FROM dunning_cases WHERE status = 'open'").await, 1);
    sim.advance_days(1);
    let as_of = chrono::DateTime::from_timestamp(sim.now(), 0).expect("time");
    let pays = || sim.api_calls().iter().filter(|(what, id, at)| what == "pay" && *id == invoice && (at - failed_at) / DAY == 1).count();
    assert_eq!(pays(), 0);
    let actions_before = count(&app, "SELECT count(*) FROM dunning_actions").await;
    enqueue(&app, "dunning.run", json!({"execute": true, "actor": "drill", "params": {"as_of": as_of}})).await;
    let smtp_env = [("BALLAST_SMTP_HOST", "127.0.0.1".to_owned()), ("BALLAST_SMTP_PORT", smtp.port.to_string()), ("BALLAST_SMTP_SECURITY", "none".to_owned())];
    let smtp_env: Vec<(&str, &str)> = smtp_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    kill_and_recover(&app, "dunning.run.after_commit", &smtp_env, || async {
        let audited = count(&app, "SELECT count(*) FROM audit_log WHERE action = 'runbook.dunning.run' AND outcome = 'ok'").await;
        audited == 1
    })
    .await;
    assert_eq!(pays(), 1, "the day-1 retry reached Stripe once");
    let actions = count(&app, "SELECT count(*) FROM dunning_actions").await;
    let stages = count(&app, "SELECT count(DISTINCT (case_id, stage)) FROM dunning_actions").await;
    assert_eq!(actions, stages, "no step recorded twice");
    assert!(actions > actions_before, "the day-1 step was recorded");
}

#[tokio::test]
async fn a_worker_killed_after_a_usage_flush_committed_is_recovered_and_every_unit_is_billed_once() {
    let _machine = crate::support::MACHINE.read().await;
    let sim = StripeSim::start().await;
    let app = intake_app(&sim, None).await;
    let (tenant, _) = subscriber(&app, &sim, PRO).await;
    deliver_and_process(&app, &sim).await;
    let (_, key) = app.key(Some(tenant), &[Scope::UsageWrite]).await;
    let items: Vec<Value> = (1..=6)
        .map(|i| json!({"metric": "api_calls", "quantity": i, "timestamp": chrono::Utc::now().to_rfc3339(), "idempotency_key": format!("drill-{i}")}))
        .collect();
    let resp = app.http.post(app.url("/v1/usage")).bearer_auth(&key).json(&json!({"items": items})).send().await.expect("post");
    assert_eq!(resp.status(), 200);
    enqueue(&app, "usage.flush", json!({"include_open": true})).await;
    let stripe_total = || sim.meter_events().values().map(|(_, _, v)| *v).sum::<i64>();
    kill_and_recover(&app, "usage.flush.after_commit", &[], || async { stripe_total() == 21 }).await;
    assert_eq!(count(&app, "SELECT coalesce(sum(quantity), 0)::bigint FROM usage_ledger").await, 21);
    assert_eq!(count(&app, "SELECT count(*) FROM usage_ledger WHERE report_status <> 'reported'").await, 0);
    assert_eq!(stripe_total(), 21, "Stripe holds every unit once");
}

#[tokio::test]
async fn a_worker_killed_in_the_middle_of_a_cache_warm_is_recovered_and_every_tenant_is_warm() {
    let _machine = crate::support::MACHINE.read().await;
    let sim = StripeSim::start().await;
    let app = intake_app(&sim, None).await;
    let mut tenants = Vec::new();
    for i in 0..5 {
        tenants.push(ballast::newtypes::TenantId(app.tenant(&format!("warm-{i}")).await));
    }
    let mut redis = app.state.redis.clone();
    let keys: Vec<String> = tenants.iter().map(|t| app.state.keys.tenant_entitlements(*t)).collect();
    enqueue(&app, "cache.warm", json!({})).await;
    kill_and_recover(&app, "cache.warm.before_tenants", &[], || {
        let (keys, mut redis) = (keys.clone(), redis.clone());
        async move {
            let mut p = redis::pipe();
            for k in &keys {
                p.exists(k);
            }
            let present: Vec<bool> = p.query_async(&mut redis).await.expect("exists");
            present.iter().all(|p| *p)
        }
    })
    .await;
    let locks: Vec<bool> = {
        let mut p = redis::pipe();
        for k in &keys {
            p.exists(app.state.keys.cache_lock(k));
        }
        p.query_async(&mut redis).await.expect("locks")
    };
    assert!(locks.iter().all(|l| !l), "no load lock outlives the warm");
    assert!(redis::cmd("EXISTS").arg(app.state.keys.plan_catalogue()).query_async::<bool>(&mut redis).await.expect("exists"));
}

#[tokio::test]
async fn a_worker_killed_after_an_slo_alert_committed_is_recovered_and_notifies_once() {
    let _machine = crate::support::MACHINE.read().await;
    use axum::extract::State;
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let router = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(|State(r): State<Arc<Mutex<Vec<Value>>>>, body: axum::Json<Value>| async move {
                r.lock().expect("lock").push(body.0);
                axum::http::StatusCode::OK
            }),
        )
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.expect("receiver") });

    let app = TestApp::builder().roles(&[]).spawn().await;
    let now = chrono::Utc::now();
    let minute = chrono::DurationRound::duration_trunc(now, chrono::Duration::minutes(1)).expect("minute");
    // A healthy day, then ten minutes of nothing but 5xx up to the evaluation minute.
    for (from, minutes, good) in [(minute - chrono::Duration::days(1), 24 * 60 - 10, 1000), (minute - chrono::Duration::minutes(10), 10, 0)] {
        sqlx::query(
            "INSERT INTO slo_minutes (slo, minute, source, good, valid)
             SELECT 'intake-availability', m, 'synthetic', $3, 1000 FROM generate_series($1::timestamptz, $2::timestamptz, interval '1 minute') AS m
             ON CONFLICT (slo, minute, source) DO UPDATE SET good = EXCLUDED.good, valid = EXCLUDED.valid",
        )
        .bind(from)
        .bind(from + chrono::Duration::minutes(minutes - 1))
        .bind(good)
        .execute(&app.state.system_pool.0)
        .await
        .expect("counts");
    }
    enqueue(&app, "slo.evaluate", json!({"as_of": minute})).await;
    let env = [("BALLAST_SLO_WEBHOOK_URL", hook.as_str())];
    kill_and_recover(&app, "slo.evaluate.after_commit", &env, || async {
        count(&app, "SELECT count(*) FROM slo_notifications WHERE status = 'pending'").await == 0
            && count(&app, "SELECT count(*) FROM slo_notifications").await > 0
    })
    .await;
    let firing = count(&app, "SELECT count(*) FROM slo_alerts WHERE state = 'firing'").await;
    assert!(firing >= 1, "the outage pages");
    let notes = received.lock().expect("lock").clone();
    assert_eq!(notes.len() as i64, count(&app, "SELECT count(*) FROM slo_notifications").await, "one notification per transition: {notes:?}");
    assert_eq!(notes.len() as i64, firing, "{notes:?}");
}

/// The repo's catalogue with `noop` replaced by `entry`.
fn catalogue_with_noop(entry: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in std::fs::read_dir(crate::support::repo_path("jobs")).expect("jobs/") {
        let path = file.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    std::fs::write(dir.path().join("noop.toml"), entry).expect("write noop");
    dir
}

#[tokio::test]
async fn sigterm_under_load_loses_no_job_leaves_none_locked_and_runs_none_twice() {
    let _machine = crate::support::MACHINE.read().await;
    let app = TestApp::builder().roles(&[]).spawn().await;
    let mut ids = std::collections::BTreeSet::new();
    // 400 short jobs, and 8 that outlast the one-second grace.
    for i in 0..408 {
        let sleep_ms = if i % 51 == 50 { 4_000 } else { 100 };
        let e = app.state.queue.enqueue(EnqueueRequest::new("noop", json!({"sleep_ms": sleep_ms}))).await.expect("enqueue");
        ids.insert(e.id.0);
    }
    let first = Proc::start(&app, "worker", &[("BALLAST_SHUTDOWN_GRACE_SECS", "1")]);
    let _logs = LogsOnPanic(vec![first.log_path()]);
    until("some jobs completed", Duration::from_secs(30), || async { completed_ids(&first.log()).len() >= 100 }).await;
    let (status, log) = first.terminate().await;
    assert!(status.success(), "graceful exit: {log}");
    let done_first = completed_ids(&log);
    assert!(done_first.len() < ids.len(), "the load was still running at SIGTERM");
    let running: u64 = app.state.queue.stats().await.expect("stats").iter().map(|s| s.running).sum();
    assert_eq!(running, 0, "the stopped member left runs locked in its in-flight set");
    let stopped = Instant::now();
    let second = Proc::start(&app, "worker", &[]);
    until("the rest completed", Duration::from_secs(30), || async { queue_drained(&app).await }).await;
    eprintln!("drill sigterm: {} of {} done before the exit, the rest {:.1} s after it", done_first.len(), ids.len(), stopped.elapsed().as_secs_f64());
    let (status, log) = second.terminate().await;
    assert!(status.success(), "{log}");
    let mut all = done_first.clone();
    all.extend(completed_ids(&log));
    let unique: std::collections::BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(all.len(), unique.len(), "a job ran to completion twice");
    assert_eq!(unique, ids, "every job completed");
}

#[tokio::test]
async fn a_hung_job_is_timed_out_and_retried_without_holding_up_the_queue() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    let jobs = catalogue_with_noop(
        "kind = \"noop\"\ndescription = \"drill\"\nconcurrency = 10\ntimeout_secs = 3\nmax_attempts = 2\nbackoff = { base_secs = 1, max_secs = 1, jitter = 0.0 }\n",
    );
    let hung = app.state.queue.enqueue(EnqueueRequest::new("noop", json!({"sleep_ms": 3_600_000}))).await.expect("enqueue").id.0;
    let mut quick = std::collections::BTreeSet::new();
    for _ in 0..100 {
        quick.insert(app.state.queue.enqueue(EnqueueRequest::new("noop", json!({"sleep_ms": 5}))).await.expect("enqueue").id.0);
    }
    let worker = Proc::start_in(&app, "worker", jobs.path().to_owned(), &[]);
    let _logs = LogsOnPanic(vec![worker.log_path()]);
    until("the hung job dead-lettered", Duration::from_secs(30), || async {
        count(&app, "SELECT count(*) FROM job_dead_letters").await == 1
    })
    .await;
    let (error, attempts): (String, i32) = sqlx::query_as("SELECT error, attempts FROM job_dead_letters WHERE job_id = $1")
        .bind(&hung)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("the hung job's dead letter");
    assert!(error.contains("timed out"), "{error}");
    assert_eq!(attempts, 2, "timed out, retried once, timed out again");
    let log = worker.log();
    let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let first_timeout = lines
        .iter()
        .position(|v| v["message"] == "Job failed; retrying." && v["span"]["job_id"] == hung.as_str())
        .expect("the first timeout was logged");
    let done_before: std::collections::BTreeSet<String> = completed_ids(
        &lines[..first_timeout].iter().map(|v| v.to_string()).collect::<Vec<_>>().join("\n"),
    )
    .into_iter()
    .collect();
    assert!(done_before == quick, "every other job finished while the hung one still held its slot: {} of {}", done_before.len(), quick.len());
    let (status, log) = worker.terminate().await;
    assert!(status.success(), "{log}");
}

