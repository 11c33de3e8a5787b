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
