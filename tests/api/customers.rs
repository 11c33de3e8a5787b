//! The customer list (issue 39): each tenant's plan, subscription status, MRR per currency from
//! its mirrored items (monthly, yearly, several items, two currencies — through the Stripe
//! simulator's real events), dunning state and last API call; filters, sorts and a cursor that
//! pages without OFFSET; from the CLI with --json.

use ballast::auth::Scope;
use serde_json::Value;

use crate::support::TestApp;
use crate::support::stripe_sim::{EXTRA_SEATS, PRO, PRO_EUR, STARTER, STARTER_YEARLY, StripeSim};

async fn subscribe(app: &TestApp, sim: &StripeSim, name: &str, price: (&'static str, &'static str, i64)) -> (uuid::Uuid, String) {
    let tenant = app.tenant(name).await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, price, None);
    deliver(app, sim).await;
    (tenant, customer)
}

async fn deliver(app: &TestApp, sim: &StripeSim) {
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
}

fn list(app: &TestApp, args: &[&str]) -> Value {
    let mut all = vec!["--json", "tenants", "list"];
    all.extend_from_slice(args);
    let out = app.cli(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

fn names(page: &Value) -> Vec<String> {
    page["customers"].as_array().expect("customers").iter().map(|c| c["name"].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn the_list_shows_each_tenants_mrr_in_its_currency_and_pages_filters_and_sorts() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let (monthly, _) = subscribe(&app, &sim, "Monthly", STARTER).await;
    subscribe(&app, &sim, "Yearly", STARTER_YEARLY).await;
    subscribe(&app, &sim, "Euro", PRO_EUR).await;
    let (_, seats_customer) = subscribe(&app, &sim, "Seats", PRO).await;
    let sub = sim.subscriptions_of(&seats_customer).pop().expect("subscription");
    sim.add_addon(&sub, EXTRA_SEATS, 3, false);
    deliver(&app, &sim).await;
    let (dunned, _) = subscribe(&app, &sim, "Dunned", STARTER).await;
    app.tenant("Prospect").await;
    // An open dunning case that restricts (dunning's own table; its lifecycle is tested there).
    sqlx::query("INSERT INTO dunning_cases (tenant_id, invoice_id, customer_id, opened_at, restricted) VALUES ($1, 'in_dunned', 'cus_dunned', now(), true)")
        .bind(dunned)
        .execute(&app.state.system_pool.0)
        .await
        .expect("case");

    let all = list(&app, &[]);
    let by_name = |n: &str| all["customers"].as_array().expect("list").iter().find(|c| c["name"] == n).cloned().unwrap_or(Value::Null);
    assert_eq!(by_name("Monthly")["mrr"], serde_json::json!({"usd": 2000}));
    assert_eq!(by_name("Yearly")["mrr"], serde_json::json!({"usd": 1667}), "20,000 a year is 1,666.67 a month");
    assert_eq!(by_name("Euro")["mrr"], serde_json::json!({"eur": 4500}));
    assert_eq!(by_name("Seats")["mrr"], serde_json::json!({"usd": 5000 + 3 * 500}), "the plan and three add-on units");
    assert_eq!(by_name("Prospect")["mrr"], serde_json::json!({}));
    assert_eq!((by_name("Seats")["plan_id"].as_str(), by_name("Seats")["subscription_status"].as_str()), (Some("pro"), Some("active")));
    assert_eq!((by_name("Dunned")["dunning"].as_str(), by_name("Monthly")["dunning"].as_str()), (Some("restricted"), Some("none")));
    assert_eq!(by_name("Prospect")["subscription_status"], Value::Null);
    // Highest MRR first (the largest currency's amount; equal amounts by id), no revenue last.
    let order = names(&all);
    assert_eq!(&order[..2], ["Seats", "Euro"]);
    let mut tied = order[2..4].to_vec();
    tied.sort();
    assert_eq!(tied, ["Dunned", "Monthly"]);
    assert_eq!(&order[4..], ["Yearly", "Prospect"]);

    // Filters: plan, status, dunning, text.
    assert_eq!(names(&list(&app, &["--plan", "pro"])), ["Seats", "Euro"]);
    assert_eq!(names(&list(&app, &["--dunning", "open"])), ["Dunned"], "open includes restricted");
    assert_eq!(names(&list(&app, &["--status", "none"])), ["Prospect"]);
    assert_eq!(names(&list(&app, &["--search", "year"])), ["Yearly"]);
    assert_eq!(names(&list(&app, &["--search", "%"])), Vec::<String>::new(), "a LIKE wildcard is taken literally");
    assert_eq!(names(&list(&app, &["--search", &monthly.to_string()])), ["Monthly"]);

    // Pages of two, each after the last: every tenant once, in order, and how many are left.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["--limit", "2"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = list(&app, &args);
        seen.extend(names(&page));
        assert_eq!(page["more"].as_i64(), Some(6 - seen.len() as i64), "{page}");
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, order);
    let out = app.cli(&["tenants", "list", "--sort", "activity", "--cursor", cursor.as_deref().unwrap_or("x")]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cursor"), "a cursor of another sort is refused");

    // Last activity: an API call, written by the api role in a batch.
    let (_, key) = app.key(Some(monthly), &[Scope::EntitlementsRead]).await;
    let (status, _) = app.call(reqwest::Method::GET, "/v1/entitlements", &key, None).await;
    assert!(status.is_success());
    assert_eq!(app.state.tenant_activity.write(&app.state.system_pool).await.expect("write"), 1);
    let recent = list(&app, &["--sort", "activity", "--limit", "1"]);
    assert_eq!(names(&recent), ["Monthly"]);
    let at: chrono::DateTime<chrono::Utc> = recent["customers"][0]["last_activity_at"].as_str().expect("time").parse().expect("rfc3339");
    assert!((chrono::Utc::now() - at).num_seconds().abs() < 60);
    let text = String::from_utf8_lossy(&app.cli(&["tenants", "list", "--limit", "1"]).stdout).into_owned();
    assert!(text.contains("usd 65.00") && text.contains("5 more not shown: --cursor"), "{text}");
}

/// A tenant's timeline merges what happened to it, newest first, with who did it, and pages
/// by its cursor.
#[tokio::test]
async fn a_tenants_timeline_merges_events_usage_dunning_and_audited_actions_with_who_did_them() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let (tenant, _) = subscribe(&app, &sim, "Timely", STARTER).await;
    let id = tenant.to_string();
    let as_ada = [("BALLAST_ACTOR", "ada")];
    let key = app.cli_with(&["--json", "keys", "create", "--tenant", &id, "--scopes", "usage:write", "--name", "app"], &as_ada);
    assert!(key.status.success(), "{}", String::from_utf8_lossy(&key.stderr));
    let key: Value = serde_json::from_slice(&key.stdout).expect("json");
    let key = key["key"].as_str().expect("key").to_owned();
    let body = serde_json::json!({"items": [{"metric": "api_calls", "quantity": 42, "timestamp": (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339(), "idempotency_key": "t1"}]});
    let (status, _) = app.call(reqwest::Method::POST, "/v1/usage", &key, Some(body)).await;
    assert!(status.is_success());
    // Served beside: the flush reports to the simulator in this process.
    let flushed = app.cli_async(&["usage", "flush", "--all"], &[]).await;
    assert!(flushed.status.success(), "{}", String::from_utf8_lossy(&flushed.stderr));
    let overridden = app.cli_with(&["overrides", "set", "--tenant", &id, "--grant", "sso", "--for", "14d", "--reason", "pilot"], &as_ada);
    assert!(overridden.status.success(), "{}", String::from_utf8_lossy(&overridden.stderr));
    sqlx::query("INSERT INTO dunning_cases (tenant_id, invoice_id, customer_id, opened_at) VALUES ($1, 'in_late', 'cus_late', now())")
        .bind(tenant)
        .execute(&app.state.system_pool.0)
        .await
        .expect("case");

    let timeline = |args: &[&str]| -> Value {
        let mut all = vec!["--json", "tenants", "show", id.as_str(), "--timeline"];
        all.extend_from_slice(args);
        let out = app.cli(&all);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let all = timeline(&["--limit", "500"]);
    let entries = all["entries"].as_array().expect("entries").clone();
    let find = |kind: &str, summary: &str| entries.iter().find(|e| e["kind"] == kind && e["summary"].as_str().is_some_and(|s| s.contains(summary))).cloned();
    assert!(find("stripe_event", "customer.subscription.created").is_some(), "{all}");
    let created = find("action", "keys.create").expect("the key's creation");
    assert_eq!(created["actor"], "local:ada");
    let set = find("action", "overrides.set").expect("the override");
    assert_eq!((set["actor"].as_str(), set["detail"]["reason"].as_str()), (Some("local:ada"), Some("pilot")));
    let usage = find("usage", "api_calls").expect("the day's usage");
    assert_eq!(usage["detail"]["quantity"], 42);
    assert!(find("dunning", "dunning case opened for invoice in_late").is_some(), "{all}");
    let times: Vec<&str> = entries.iter().filter_map(|e| e["at"].as_str()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");

    // Pages of three, each after the last, add up to the whole.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["--limit", "3"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let page = timeline(&args);
        paged.extend(page["entries"].as_array().expect("entries").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, entries);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(timeline(&["--since", &later])["entries"], serde_json::json!([]));
}
