//! Bulk operations (issue 39): an operator moves every Starter tenant to another price with a
//! dry run first; the executing run is killed half-way (after Stripe made the third change but
//! before it was recorded) and the same command resumes it — every subscription changed once
//! at Stripe, each tenant's change audited with the operator's name and in its timeline, the
//! mirror following through Stripe's events. Collection paused and resumed and a cancel at
//! period end set and taken back for a cohort, with a subscription Stripe refuses reported
//! as failing; a viewer cannot execute.

use ballast::auth::operators::{self, Role};
use serde_json::Value;

use crate::support::TestApp;
use crate::support::stripe_sim::{PRO, STARTER, StripeSim};

async fn subscribe(app: &TestApp, sim: &StripeSim, name: &str, price: (&'static str, &'static str, i64)) -> (uuid::Uuid, String) {
    let tenant = app.tenant(name).await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, price, None);
    deliver(app, sim).await;
    let sub = sim.subscriptions_of(&customer).pop().expect("subscription");
    (tenant, sub)
}

async fn deliver(app: &TestApp, sim: &StripeSim) {
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
}

/// `ballast --json runbook run NAME --param …` as `token`'s operator: (exit code, report, stderr).
async fn runbook(app: &TestApp, token: &str, name: &str, params: &[&str], execute: bool, fault: Option<&str>) -> (Option<i32>, Value, String) {
    let mut args = vec!["--json", "runbook", "run", name];
    for p in params {
        args.extend(["--param", p]);
    }
    if execute {
        args.push("--execute");
    }
    let mut env = vec![("BALLAST_OPERATOR_TOKEN", token)];
    if let Some(f) = fault {
        env.push(("BALLAST_FAULT", f));
    }
    let out = app.cli_async(&args, &env).await;
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn updates(sim: &StripeSim) -> Vec<String> {
    sim.api_calls().into_iter().filter(|c| c.0 == "update_subscription").map(|c| c.1).collect()
}

async fn mirrored(app: &TestApp, sub: &str) -> (Option<String>, Option<String>, bool) {
    sqlx::query_as("SELECT price_id, pause_collection, cancel_at_period_end FROM subscriptions WHERE id = $1")
        .bind(sub)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("mirrored")
}

#[tokio::test]
async fn starter_tenants_move_to_a_new_price_after_a_dry_run_and_a_run_killed_half_way_resumes_without_acting_twice() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let mut starters = Vec::new();
    for name in ["Alpha", "Bravo", "Charlie", "Delta"] {
        starters.push(subscribe(&app, &sim, name, STARTER).await);
    }
    let (_, pro_sub) = subscribe(&app, &sim, "Echo", PRO).await;
    let (_, otto) = operators::add(&app.state.system_pool, "otto", Role::Operator, "test").await.expect("operator");
    let params = ["plan=starter", "to_price=price_pro_monthly"];

    // The dry run lists each Starter tenant and what would change; nothing is sent or written.
    let (code, dry, err) = runbook(&app, &otto, "billing-bulk-move", &params, false, None).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!((dry["cohort"].as_u64(), dry["pending"].as_u64(), dry["operation"].is_null()), (Some(4), Some(4), true), "{dry}");
    let rows = dry["targets"].as_array().expect("targets");
    let names: Vec<&str> = rows.iter().filter_map(|t| t["tenant_name"].as_str()).collect();
    assert_eq!(names, ["Alpha", "Bravo", "Charlie", "Delta"]);
    assert!(rows.iter().all(|t| t["change"].as_str().is_some_and(|c| c.contains("price_starter_monthly -> price_pro_monthly (create_prorations)") && c.contains("MRR 2000 usd -> 5000 usd"))), "{dry}");
    assert!(updates(&sim).is_empty(), "a dry run sends nothing");
    let operations: i64 = sqlx::query_scalar("SELECT count(*) FROM bulk_operations").fetch_one(&app.state.system_pool.0).await.expect("count");
    assert_eq!(operations, 0, "a dry run writes nothing");

    // Killed after Stripe made the third change and before it was recorded.
    let (code, _, err) = runbook(&app, &otto, "billing-bulk-move", &params, true, Some("billing.bulk.after_stripe@3")).await;
    assert!(code != Some(0) && err.contains("billing.bulk.after_stripe"), "{code:?} {err}");
    assert_eq!(updates(&sim).len(), 3);
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM bulk_targets ORDER BY state").fetch_all(&app.state.system_pool.0).await.expect("states");
    assert_eq!(states, ["done", "done", "pending", "pending"]);

    // The same command resumes: the third is sent again with its key and Stripe answers the
    // first result; the fourth is made. Each subscription changed once.
    let (code, done, err) = runbook(&app, &otto, "billing-bulk-move", &params, true, None).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!((done["resumed"].as_bool(), done["done"].as_u64(), done["pending"].as_u64(), done["failed"].as_u64()), (Some(true), Some(4), Some(0), Some(0)), "{done}");
    let mut changed = updates(&sim);
    changed.sort();
    let mut expected: Vec<String> = starters.iter().map(|(_, s)| s.clone()).collect();
    expected.sort();
    assert_eq!(changed, expected, "one change per Starter subscription, none twice, Pro untouched");

    // The mirror follows Stripe's events: every one is on Pro now.
    deliver(&app, &sim).await;
    for (_, sub) in &starters {
        assert_eq!(mirrored(&app, sub).await.0.as_deref(), Some("price_pro_monthly"));
    }
    assert_eq!(mirrored(&app, &pro_sub).await.0.as_deref(), Some("price_pro_monthly"));

    // Audited per tenant with the operator's name, and in the tenant's timeline.
    let audited: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT tenant_id, actor FROM audit_log WHERE action = 'bulk.move_price' ORDER BY id")
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("audit");
    let mut tenants: Vec<uuid::Uuid> = audited.iter().map(|a| a.0).collect();
    tenants.sort();
    let mut want: Vec<uuid::Uuid> = starters.iter().map(|s| s.0).collect();
    want.sort();
    assert_eq!(tenants, want);
    assert!(audited.iter().all(|a| a.1 == "otto"), "{audited:?}");
    let alpha = starters[0].0.to_string();
    let out = app.cli(&["--json", "tenants", "show", &alpha, "--timeline", "--limit", "200"]);
    let timeline: Value = serde_json::from_slice(&out.stdout).expect("timeline");
    let entry = timeline["entries"].as_array().and_then(|e| e.iter().find(|e| e["summary"].as_str().is_some_and(|s| s.contains("bulk.move_price"))).cloned());
    assert_eq!(entry.expect("in the timeline")["actor"], "otto");

    // Run again: the operation is finished, and no Starter tenant is left to move.
    let (_, again, _) = runbook(&app, &otto, "billing-bulk-move", &params, false, None).await;
    assert_eq!((again["cohort"].as_u64(), again["resumed"].as_bool()), (Some(0), Some(false)), "{again}");
}

#[tokio::test]
async fn collection_is_paused_and_resumed_and_a_cancel_set_and_taken_back_with_refusals_reported_and_viewers_kept_out() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let (_, kept) = subscribe(&app, &sim, "Kept", PRO).await;
    let (_, gone) = subscribe(&app, &sim, "Gone", PRO).await;
    let pool = &app.state.system_pool;
    let (_, otto) = operators::add(pool, "otto", Role::Operator, "test").await.expect("operator");
    let (_, vic) = operators::add(pool, "vic", Role::Viewer, "test").await.expect("viewer");
    // Cancelled at Stripe, its event not delivered yet: the mirror still shows it live.
    sim.cancel(&gone, false);
    let late = sim.take_events();

    // A viewer reads the dry run but cannot act.
    let cohort = "tenants=Kept,Gone";
    let (code, dry, err) = runbook(&app, &vic, "billing-bulk-collection", &[cohort, "behavior=void"], false, None).await;
    assert_eq!((code, dry["cohort"].as_u64()), (Some(0), Some(0)), "tenant names are not ids: {dry} {err}");
    let ids = {
        let ids: Vec<String> = sqlx::query_scalar("SELECT id::text FROM tenants WHERE name IN ('Kept', 'Gone') ORDER BY name DESC").fetch_all(&pool.0).await.expect("ids");
        format!("tenants={}", ids.join(","))
    };
    let (code, dry, _) = runbook(&app, &vic, "billing-bulk-collection", &[&ids, "behavior=void"], false, None).await;
    assert_eq!((code, dry["cohort"].as_u64()), (Some(0), Some(2)), "{dry}");
    let (code, _, err) = runbook(&app, &vic, "billing-bulk-collection", &[&ids, "behavior=void"], true, None).await;
    assert!(code != Some(0) && err.contains("operator"), "a viewer cannot execute: {err}");
    assert!(updates(&sim).is_empty());

    // Paused: one done, the cancelled one refused by Stripe and reported as failing (exit 3).
    let (code, paused, _) = runbook(&app, &otto, "billing-bulk-collection", &[&ids, "behavior=void"], true, None).await;
    assert_eq!(code, Some(3), "{paused}");
    assert_eq!((paused["done"].as_u64(), paused["failed"].as_u64()), (Some(1), Some(1)), "{paused}");
    assert_eq!(paused["failing"][0]["subscription"].as_str(), Some(gone.as_str()));
    assert!(paused["failing"][0]["error"].as_str().is_some_and(|e| e.contains("canceled")), "{paused}");
    for e in &late {
        assert_eq!(app.deliver(e).await, 200);
    }
    deliver(&app, &sim).await;
    assert_eq!(mirrored(&app, &kept).await.1.as_deref(), Some("void"));
    let failed: Vec<String> = sqlx::query_scalar("SELECT outcome FROM audit_log WHERE action = 'bulk.pause_collection' ORDER BY outcome").fetch_all(&pool.0).await.expect("audit");
    assert_eq!(failed, ["failed", "ok"], "each tenant's change audited, the refusal too");

    // The same pause again: already paused (unchanged), the cancelled one no longer live.
    let (_, again, _) = runbook(&app, &otto, "billing-bulk-collection", &[&ids, "behavior=void"], false, None).await;
    assert_eq!((again["cohort"].as_u64(), again["unchanged"].as_u64()), (Some(0), Some(1)), "{again}");

    // Resumed; then cancelled at period end, and taken back.
    let (code, resumed, _) = runbook(&app, &otto, "billing-bulk-collection", &[&ids, "action=resume"], true, None).await;
    assert_eq!((code, resumed["done"].as_u64()), (Some(0), Some(1)), "{resumed}");
    deliver(&app, &sim).await;
    assert_eq!(mirrored(&app, &kept).await.1, None);
    let (code, cancelled, _) = runbook(&app, &otto, "billing-bulk-cancel", &[&ids], true, None).await;
    assert_eq!((code, cancelled["done"].as_u64()), (Some(0), Some(1)), "{cancelled}");
    deliver(&app, &sim).await;
    assert!(mirrored(&app, &kept).await.2, "cancels at period end");
    let (code, undone, _) = runbook(&app, &otto, "billing-bulk-cancel", &[&ids, "undo=true"], true, None).await;
    assert_eq!((code, undone["done"].as_u64()), (Some(0), Some(1)), "{undone}");
    deliver(&app, &sim).await;
    assert!(!mirrored(&app, &kept).await.2, "taken back");

    // A move to a price in no plan is refused before anything is chosen or sent.
    let (code, _, err) = runbook(&app, &otto, "billing-bulk-move", &[&ids, "to_price=price_seats_monthly"], false, None).await;
    assert!(code != Some(0) && err.contains("in no plan"), "{err}");
}
