//! Usage metering end to end: idempotent intake under concurrency, limits at 80 % and 100 %,
//! the flush into the ledger and Stripe meter events (through the simulator), and a crash at
//! each flush step in a real `ballast` process.

use ballast::auth::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::stripe_sim::{PRO, STARTER, StripeSim};

/// policy/plans.toml's shape with small limits: starter refuses past 10, pro bills overage.
const PLANS: &str = r#"
[features]
api_access = "API"
read_only = "Read"
[metrics.api_calls]
description = "API calls"
stripe_event = "api_calls"
[plans.starter]
name = "Starter"
prices = ["price_starter_monthly"]
features = { api_access = true, read_only = true }
usage = { api_calls = { limit = 10 } }
[plans.pro]
name = "Pro"
prices = ["price_pro_monthly"]
features = { api_access = true, read_only = true }
usage = { api_calls = { limit = 10, overage = true } }
[restricted]
name = "Restricted"
features = { read_only = true }
"#;

struct Setup {
    app: TestApp,
    sim: StripeSim,
    key: String,
    tenant: Uuid,
    _plans: tempfile::NamedTempFile,
}

/// A tenant subscribed to `price` through the simulator, and a usage key for it.
async fn setup(price: (&'static str, &'static str, i64)) -> Setup {
    let sim = StripeSim::start().await;
    let plans = tempfile::NamedTempFile::new().expect("plans file");
    std::fs::write(plans.path(), PLANS).expect("write plans");
    let app = TestApp::builder()
        .env("STRIPE_API_BASE", &sim.base_url)
        .env("BALLAST_PLANS_FILE", &plans.path().display().to_string())
        .spawn()
        .await;
    let tenant = app.tenant("T").await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, price, None);
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
    let (_, key) = app.key(Some(tenant), &[Scope::UsageWrite]).await;
    Setup { app, sim, key, tenant, _plans: plans }
}

fn item(qty: i64, key: &str) -> Value {
    json!({"metric": "api_calls", "quantity": qty, "timestamp": chrono::Utc::now().to_rfc3339(), "idempotency_key": key})
}

async fn post(s: &Setup, items: Vec<Value>) -> crate::support::checked_http::CheckedResponse {
    s.app.http.post(s.app.url("/v1/usage")).bearer_auth(&s.key).json(&json!({"items": items})).send().await.expect("post")
}

async fn used(s: &Setup) -> Value {
    let r = s.app.http.get(s.app.url("/v1/usage")).bearer_auth(&s.key).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    body["metrics"]["api_calls"].clone()
}

async fn ledger_total(s: &Setup) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(sum(quantity), 0)::bigint FROM usage_ledger WHERE tenant_id = $1")
        .bind(s.tenant)
        .fetch_one(&s.app.state.system_pool.0)
        .await
        .expect("ledger")
}

fn stripe_total(s: &Setup) -> i64 {
    s.sim.meter_events().values().map(|(_, _, v)| v).sum()
}

#[tokio::test]
async fn fifty_concurrent_posts_with_one_idempotency_key_count_once() {
    let s = setup(PRO).await;
    let sends = (0..50).map(|_| post(&s, vec![item(3, "same-key")]));
    let answers = futures::future::join_all(sends).await;
    assert!(answers.iter().all(|r| r.status() == StatusCode::OK), "{:?}", answers.iter().map(|r| r.status()).collect::<Vec<_>>());
    let counted: i64 = {
        let mut n = 0;
        for r in answers {
            let b: Value = r.json().await.expect("json");
            n += b["counted"].as_i64().unwrap_or(0);
        }
        n
    };
    assert_eq!(counted, 1);
    assert_eq!(used(&s).await["used"], 3);
    let report = ballast::usage::flush::run(&s.app.state.usage_deps(), chrono::Utc::now(), true).await.expect("flush");
    assert_eq!(report.reported, 1);
    assert_eq!((ledger_total(&s).await, stripe_total(&s)), (3, 3));
    let after = used(&s).await;
    assert_eq!((after["used"].as_i64(), after["flushed"].as_i64(), after["unflushed"].as_i64()), (Some(3), Some(3), Some(0)));
}

#[tokio::test]
async fn limits_warn_once_at_80_percent_and_refuse_at_100_exactly() {
    let s = setup(STARTER).await;
    let bad = post(&s, vec![item(1, "a"), json!({"metric": "api_calls", "quantity": -1, "timestamp": chrono::Utc::now().to_rfc3339(), "idempotency_key": "b"})]).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.expect("json");
    assert_eq!((body["error"]["item"].as_i64(), body["error"]["field"].as_str()), (Some(1), Some("quantity")));
    assert_eq!(used(&s).await["used"], 0, "a refused batch counts nothing");

    let r: Value = post(&s, (0..7).map(|i| item(1, &format!("k{i}"))).collect()).await.json().await.expect("json");
    assert_eq!(r["warned"], json!([]), "70 %: no warning");
    let r: Value = post(&s, vec![item(1, "k7")]).await.json().await.expect("json");
    assert_eq!(r["warned"], json!(["api_calls"]), "80 %: the warning");
    let r: Value = post(&s, vec![item(2, "k8")]).await.json().await.expect("json");
    assert_eq!(r["warned"], json!([]), "once per period");
    assert_eq!(used(&s).await["used"], 10);
    let warnings: i64 = sqlx::query_scalar("SELECT count(*) FROM email_outbox WHERE template = 'usage_warning' AND tenant_id = $1")
        .bind(s.tenant)
        .fetch_one(&s.app.state.system_pool.0)
        .await
        .expect("outbox");
    assert_eq!(warnings, 1);

    // At 10 of 10: one more unit is refused, naming the metric and the limit; a replay is not.
    let over = post(&s, vec![item(1, "k9")]).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    // Not a rate limit: told apart by its code, and Retry-After is the next month, not seconds.
    let retry_after: i64 = over.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    let body: Value = over.json().await.expect("json");
    assert_eq!((body["error"]["metric"].as_str(), body["error"]["limit"].as_i64()), (Some("api_calls"), Some(10)));
    assert_eq!(body["error"]["code"], "usage_limit");
    let resets_at: chrono::DateTime<chrono::Utc> = body["error"]["resets_at"].as_str().expect("resets_at").parse().expect("time");
    assert_eq!(resets_at, ballast::usage::next_period(chrono::Utc::now()));
    assert!((retry_after - (resets_at - chrono::Utc::now()).num_seconds()).abs() <= 5, "{retry_after}");
    let replay = post(&s, vec![item(2, "k8")]).await;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(used(&s).await["used"], 10);
}

#[tokio::test]
async fn overage_plans_count_past_the_limit() {
    let s = setup(PRO).await;
    assert_eq!(post(&s, vec![item(10, "x")]).await.status(), StatusCode::OK);
    assert_eq!(post(&s, vec![item(5, "y")]).await.status(), StatusCode::OK);
    assert_eq!(used(&s).await["used"], 15);
}

#[tokio::test]
async fn stripe_failing_then_accepting_reports_each_row_once_and_a_4xx_is_dead() {
    let s = setup(PRO).await;
    assert_eq!(post(&s, vec![item(4, "a"), item(5, "b")]).await.status(), StatusCode::OK);
    s.sim.fail_meter_events(1, 500);
    let err = ballast::usage::flush::run(&s.app.state.usage_deps(), chrono::Utc::now(), true).await.expect_err("Stripe down: the job retries");
    assert!(err.to_string().contains("Stripe"), "{err}");
    assert_eq!(ledger_total(&s).await, 9, "the ledger committed before reporting");
    let report = ballast::usage::flush::run(&s.app.state.usage_deps(), chrono::Utc::now(), true).await.expect("flush");
    assert_eq!(report.reported, 1);
    assert_eq!(stripe_total(&s), 9);
    // Flushing again changes nothing anywhere.
    ballast::usage::flush::run(&s.app.state.usage_deps(), chrono::Utc::now(), true).await.expect("flush");
    assert_eq!((ledger_total(&s).await, stripe_total(&s)), (9, 9));

    assert_eq!(post(&s, vec![item(2, "c")]).await.status(), StatusCode::OK);
    s.sim.fail_meter_events(1, 400);
    let report = ballast::usage::flush::run(&s.app.state.usage_deps(), chrono::Utc::now(), true).await.expect("flush");
    assert_eq!(report.dead, 1);
    let (status, reason, answered): (String, Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT report_status, report_error, reported_at FROM usage_ledger WHERE tenant_id = $1 AND quantity = 2")
            .bind(s.tenant)
            .fetch_one(&s.app.state.system_pool.0)
            .await
            .expect("row");
    assert_eq!(status, "dead");
    assert!(reason.unwrap_or_default().contains("400"));
    assert!(answered.is_some(), "when Stripe refused it is kept (the dead usage-report alert counts by it)");

    // The operator reads the same ledger without SQL: what Stripe has, and what it refused.
    let out = s.app.cli_async(&["--json", "usage", "ledger", "--tenant", &s.tenant.to_string()], &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ledger: Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = ledger["rows"].as_array().expect("rows");
    let units = |state: &str| rows.iter().filter(|r| r["report_status"] == state).map(|r| r["quantity"].as_i64().unwrap_or(0)).sum::<i64>();
    assert_eq!((units("reported"), units("dead"), ledger["total"].as_i64()), (9, 2, Some(rows.len() as i64)), "{ledger}");
    let text = s.app.cli_async(&["usage", "ledger", "--tenant", &s.tenant.to_string()], &[]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("dead (") && text.contains("reported"), "{text}");
}

/// `ballast usage flush --all` as its own process (async: the simulator it calls runs on this
/// test's runtime), optionally dying at a fault point like `kill -9` would leave it.
async fn flush_process(s: &Setup, fault: Option<&str>) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"));
    cmd.args(["usage", "flush", "--all"]).env_clear().envs(&s.app.env).env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(f) = fault {
        cmd.env("BALLAST_FAULT", f);
    }
    cmd.output().await.expect("run ballast")
}

#[tokio::test]
async fn a_crash_at_each_flush_step_neither_loses_nor_doubles_a_unit() {
    let s = setup(PRO).await;
    let mut posted = 0;
    for (round, fault) in ["usage.flush.after_read", "usage.flush.after_commit", "usage.flush.after_report"].iter().enumerate() {
        let items: Vec<Value> = (0..5).map(|i| item(i + 1 + round as i64, &format!("{fault}-{i}"))).collect();
        posted += (0..5).map(|i| i + 1 + round as i64).sum::<i64>();
        assert_eq!(post(&s, items).await.status(), StatusCode::OK);
        let out = flush_process(&s, Some(fault)).await;
        assert!(!out.status.success(), "{fault}: the process should have died: {}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stderr).contains(fault), "{fault}: {}", String::from_utf8_lossy(&out.stderr));
        let out = flush_process(&s, None).await;
        assert!(out.status.success(), "{fault}: recovery flush: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(ledger_total(&s).await, posted, "{fault}: the ledger holds every unit once");
        assert_eq!(stripe_total(&s), posted, "{fault}: Stripe holds every unit once");
    }
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_ledger WHERE report_status <> 'reported'")
        .fetch_one(&s.app.state.system_pool.0)
        .await
        .expect("pending");
    assert_eq!(pending, 0);
}

/// Redis losing every key (a crash without persistence, a failover to a lagging replica) loses
/// no acknowledged unit: each is in PostgreSQL before the 200, the flush bills from there, and
/// the month's counter is rebuilt from it, so the limit still holds at exactly 10.
#[tokio::test]
async fn redis_losing_its_data_loses_no_acknowledged_unit_and_the_limit_still_holds() {
    let s = setup(STARTER).await;
    assert_eq!(post(&s, (0..7).map(|i| item(1, &format!("before-{i}"))).collect()).await.status(), StatusCode::OK);
    let lost = ballast::perf::bench::delete_namespace(&s.app.state.redis, &s.app.state.keys).await.expect("wipe");
    assert!(lost > 0, "the namespace held the counters");
    assert_eq!(used(&s).await["used"], 7, "read from PostgreSQL");

    // A client retrying a batch it already sent (say its answer was lost with the crash) is not
    // billed twice; new units count on from 7 and the 11th is refused.
    let r: Value = post(&s, vec![item(1, "before-0")]).await.json().await.expect("json");
    assert_eq!((r["counted"].as_i64(), r["duplicates"].as_i64()), (Some(0), Some(1)));
    assert_eq!(post(&s, vec![item(2, "after-0")]).await.status(), StatusCode::OK);
    assert_eq!(post(&s, vec![item(2, "after-1")]).await.status(), StatusCode::TOO_MANY_REQUESTS, "7 + 2 + 2 > 10");

    ballast::usage::flush::run(&s.app.state.usage_deps(), chrono::Utc::now(), true).await.expect("flush");
    assert_eq!((ledger_total(&s).await, stripe_total(&s)), (9, 9), "every acknowledged unit billed once");
}

/// Two priced tenants with usage this month: each reads its own units and nothing of the
/// other's (the read runs in the tenant's transaction, under row-level security).
#[tokio::test]
async fn two_priced_tenants_each_read_only_their_own_usage() {
    let s = setup(PRO).await;
    let other = s.app.tenant("Other").await;
    let customer = s.sim.customer(other, true);
    s.sim.checkout(other, &customer, STARTER, None);
    for e in s.sim.take_events() {
        assert_eq!(s.app.deliver(&e).await, 200);
    }
    s.app.drain().await;
    let (_, other_key) = s.app.key(Some(other), &[Scope::UsageWrite]).await;
    assert_eq!(post(&s, vec![item(3, "mine")]).await.status(), StatusCode::OK);
    let theirs = s.app.http.post(s.app.url("/v1/usage")).bearer_auth(&other_key).json(&json!({"items": [item(5, "theirs")]})).send().await.expect("post");
    assert_eq!(theirs.status(), StatusCode::OK);

    assert_eq!(used(&s).await["used"], 3, "the first tenant's units only");
    let read = s.app.http.get(s.app.url("/v1/usage")).bearer_auth(&other_key).send().await.expect("get");
    assert_eq!(read.status(), StatusCode::OK);
    let body: Value = read.json().await.expect("json");
    assert_eq!(body["metrics"]["api_calls"]["used"], 5, "the other tenant's units only: {body}");
    assert_eq!(body["metrics"]["api_calls"]["limit"], 10, "on its own plan (starter)");
}

#[tokio::test]
async fn usage_takes_unix_seconds_as_stripe_meter_events_do_and_a_read_key_reads_it() {
    let s = setup(PRO).await;
    let now = chrono::Utc::now().timestamp();
    let items = vec![
        json!({"metric": "api_calls", "quantity": 2, "timestamp": now, "idempotency_key": "unix-int"}),
        json!({"metric": "api_calls", "quantity": 3, "timestamp": now.to_string(), "idempotency_key": "unix-text"}),
    ];
    let r = post(&s, items).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap_or_default());
    let bad = post(&s, vec![json!({"metric": "api_calls", "quantity": 1, "timestamp": "yesterday", "idempotency_key": "k"})]).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap_or_default().contains("Unix seconds"), "the error names both forms");

    // usage:read reads without being able to write.
    let (_, reader) = s.app.key(Some(s.tenant), &[Scope::UsageRead]).await;
    let read = s.app.http.get(s.app.url("/v1/usage")).bearer_auth(&reader).send().await.expect("get");
    assert_eq!(read.status(), StatusCode::OK);
    let body: Value = read.json().await.expect("json");
    assert_eq!(body["metrics"]["api_calls"]["used"], 5);
    let write = s.app.http.post(s.app.url("/v1/usage")).bearer_auth(&reader).json(&json!({"items": [item(1, "r")]})).send().await.expect("post");
    assert_eq!(write.status(), StatusCode::FORBIDDEN);
}
