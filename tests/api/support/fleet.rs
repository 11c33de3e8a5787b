//! Helpers of the drills that run a fleet of real `ballast` processes: counting rows, waiting
//! for members and queues, delivering webhooks the way Stripe retries them, reading members'
//! logs.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestApp;
use super::procs::{Proc, free_port};
use super::stripe_sim::{STARTER, StripeSim};

pub async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.state.system_pool.0).await.expect(sql)
}

/// Nothing ready, scheduled soon or in flight (a dead worker's runs count as in flight until
/// they are recovered).
pub async fn queue_drained(app: &TestApp) -> bool {
    app.state.queue.stats().await.expect("queue stats").iter().all(|s| s.ready == 0 && s.running == 0)
}

/// Events of types Ballast stores but does not act on.
pub fn ignored(events: &[Value]) -> usize {
    events.iter().filter(|e| !ballast::stripe::handlers::handles(e["type"].as_str().unwrap_or_default())).count()
}

/// The events of `n` new customers of new tenants, every `checkout_every`-th subscribing.
pub async fn signups(app: &TestApp, sim: &StripeSim, n: usize, checkout_every: usize) -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..n {
        let tenant = app.tenant(&format!("t{i}")).await;
        let customer = sim.customer(tenant, true);
        if i % checkout_every == 0 {
            sim.checkout(tenant, &customer, STARTER, None);
        }
        events.extend(sim.take_events());
    }
    events
}

/// A member with `roles` on a port of its own, once it answers; and its base URL.
pub async fn listening_member(app: &TestApp, roles: &str) -> (Proc, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut member = Proc::start(app, roles, &[("BALLAST_LISTEN", &format!("127.0.0.1:{port}"))]);
    until_listening(&mut member, &base).await;
    (member, base)
}

/// Waits until a member answers /healthz.
pub async fn until_listening(member: &mut Proc, base: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
        let early = member.try_exited();
        assert!(early.is_none() && Instant::now() < deadline, "the member did not listen ({early:?}): {}", member.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Delivers one event the way Stripe does: signed, and sent again after any failure (Stripe
/// retries for days) until it is acknowledged. Returns how many tries were refused.
pub async fn deliver_until_accepted(http: &reqwest::Client, base: &str, event: &Value) -> u32 {
    let body = serde_json::to_vec(event).expect("json");
    let mut refused = 0;
    loop {
        let sig = crate::support::stripe_sim::signature_header(crate::support::stripe_sim::SECRET, chrono::Utc::now().timestamp(), &body);
        let sent = http
            .post(format!("{base}/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("stripe-signature", sig)
            .body(body.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return refused,
            Ok(r) => assert!(r.status().is_server_error(), "a refusal Stripe would not retry: {}", r.status()),
            Err(_) => {}
        }
        refused += 1;
        assert!(refused < 2_000, "never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tenant on the plan with metered usage billed as overage, bound to a Stripe customer of
/// the simulator (its plan set here, not by a subscription: the customer's own events are
/// taken from the simulator, undelivered); returns it and an API key for usage and jobs.
pub async fn usage_tenant(app: &TestApp, sim: &StripeSim) -> (uuid::Uuid, String) {
    let tenant = app.tenant("usage").await;
    let customer = sim.customer(tenant, true);
    sim.take_events();
    sqlx::query("UPDATE tenants SET stripe_customer_id = $2 WHERE id = $1").bind(tenant).bind(&customer).execute(&app.state.system_pool.0).await.expect("bind");
    sqlx::query("INSERT INTO entitlements (tenant_id, feature, enabled, source, plan_id) VALUES ($1, 'api_access', true, 'plan', 'pro')")
        .bind(tenant)
        .execute(&app.state.system_pool.0)
        .await
        .expect("plan");
    let (_, key) = app.key(Some(tenant), &[ballast::auth::Scope::UsageWrite, ballast::auth::Scope::JobsWrite]).await;
    (tenant, key)
}

/// Runs `ballast usage flush --all` as its own process, awaited (the simulator it reports to
/// runs on the test's runtime), and fails the test if it fails.
pub async fn flush_all_usage(app: &TestApp) {
    let flushed = tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(["usage", "flush", "--all"])
        .env_clear()
        .envs(&app.env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .expect("ballast usage flush");
    assert!(flushed.status.success(), "{}", String::from_utf8_lossy(&flushed.stderr));
}

/// The units of `tenant` in the ledger.
pub async fn ledger_units(app: &TestApp, tenant: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(quantity), 0)::bigint FROM usage_ledger WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("ledger")
}

/// Ids of the runs a member's JSON log says completed, in order.
pub fn completed_ids(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "Job completed.")
        .filter_map(|v| v["span"]["job_id"].as_str().map(str::to_owned))
        .collect()
}

/// Every processed event was applied by exactly one run, by the members' logs (a run that
/// applies reports the event's type, and the tenant's events it applied with it; repeats report
/// "already ..."; an event that tied with the mirror is applied by its `stripe.refetch` run).
pub async fn assert_applied_once(app: &TestApp, logs: &[String]) {
    let mut applied: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    // Events a job found already processed when it ran.
    let mut found_done = std::collections::BTreeSet::new();
    for line in logs.iter().flat_map(|l| l.lines()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        if v["message"] != "Job completed." || !matches!(v["span"]["kind"].as_str(), Some("stripe.event" | "stripe.refetch")) {
            continue;
        }
        let report: Value = serde_json::from_str(v["report"].as_str().unwrap_or("null")).unwrap_or_default();
        if report["outcome"] == "already done" {
            found_done.insert(report["event"].as_str().unwrap_or_default().to_owned());
        }
        if report.get("type").is_some() {
            *applied.entry(report["event"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
            // The tenant's waiting events its transaction applied with it.
            for other in report["with"].as_array().into_iter().flatten() {
                *applied.entry(other.as_str().unwrap_or_default().to_owned()).or_default() += 1;
            }
        }
    }
    let processed: Vec<String> = sqlx::query_scalar("SELECT id FROM stripe_events WHERE status = 'processed' ORDER BY id")
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("processed");
    assert!(!processed.is_empty());
    for id in &processed {
        // A row is marked processed in its apply's transaction, so a processed row was applied
        // exactly once; the reports must agree, and none may claim it twice. One exception
        // carries no report: an apply whose COMMIT went through while its answer was lost (a
        // drill stopping PostgreSQL mid-commit) fails its job, and the retry finds the row done.
        match applied.get(id) {
            None => assert!(found_done.contains(id), "event {id} processed, but no job applied it or found it done"),
            Some(n) => assert_eq!(*n, 1, "event {id} applied once"),
        }
    }
    let unknown: Vec<_> = applied.keys().filter(|id| !processed.contains(id)).collect();
    assert!(unknown.is_empty(), "reported applied but not processed: {unknown:?}");
}
