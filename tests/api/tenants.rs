//! Tenant provisioning: `POST /v1/tenants` creates the tenant and its Stripe customer once
//! (whatever the repeats, concurrent or after a crash), reads and changes go through the
//! service-wide key's scopes, the welcome email arrives over SMTP once, and an event that
//! names a tenant binds its customer, releasing what waited for it.

use std::collections::BTreeSet;

use ballast::auth::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::TestApp;
use crate::support::smtp::SmtpServer;
use crate::support::stripe_sim::{STARTER, StripeSim};

async fn post(app: &TestApp, key: &str, body: &Value) -> (StatusCode, Value) {
    app.call(reqwest::Method::POST, "/v1/tenants", key, Some(body.clone())).await
}

async fn get(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    app.call(reqwest::Method::GET, path, key, None).await
}

/// The customers the simulator created (one per Stripe create call that was not a repeat).
fn customers_created(sim: &StripeSim) -> BTreeSet<String> {
    sim.api_calls().into_iter().filter(|(what, _, _)| what == "create_customer").map(|(_, id, _)| id).collect()
}

#[tokio::test]
async fn provisioning_creates_the_tenant_and_its_customer_once_sends_the_welcome_email_once_and_reads_its_standing() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = crate::dunning::app_with(&sim, &smtp).await;
    let (_, key) = app.key(None, &[Scope::TenantsWrite]).await;

    let body = json!({"name": "Acme", "external_id": "acme-1", "billing_email": "billing@acme.test"});
    let (status, created) = post(&app, &key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let customer = created["stripe_customer_id"].as_str().expect("a customer").to_owned();
    assert_eq!((created["external_id"].as_str(), created["status"].as_str(), created["plan"].is_null()), (Some("acme-1"), Some("active"), true));
    // Stripe holds the customer with the tenant's name, email and id.
    let at_stripe = sim.customer_json(&customer).expect("customer at Stripe");
    assert_eq!((at_stripe["name"].as_str(), at_stripe["email"].as_str()), (Some("Acme"), Some("billing@acme.test")));
    assert_eq!(at_stripe["metadata"]["tenant_id"].as_str(), Some(id.as_str()));

    // A repeat, and five at once for another tenant: one tenant and one customer each.
    let (status, again) = post(&app, &key, &json!({"name": "Acme renamed", "external_id": "acme-1"})).await;
    assert_eq!((status, again["id"].as_str(), again["name"].as_str()), (StatusCode::OK, Some(id.as_str()), Some("Acme")));
    let racing = json!({"name": "Globex", "external_id": "globex", "billing_email": "ap@globex.test"});
    let answers = futures::future::join_all((0..5).map(|_| post(&app, &key, &racing))).await;
    let ids: BTreeSet<String> = answers.iter().map(|(s, b)| {
        assert!(s.is_success(), "{s} {b}");
        b["id"].as_str().expect("id").to_owned()
    }).collect();
    assert_eq!(ids.len(), 1, "concurrent repeats made one tenant: {ids:?}");
    assert_eq!(answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).count(), 1, "one of them created it");
    assert_eq!(customers_created(&sim).len(), 2, "one Stripe customer per tenant");

    // The welcome emails, once each, over SMTP.
    app.drain().await;
    for to in ["billing@acme.test", "ap@globex.test"] {
        let got = smtp.messages().iter().filter(|m| m.to.iter().any(|t| t.contains(to)) && m.data.contains("Welcome")).count();
        assert_eq!(got, 1, "{to}: one welcome email");
    }

    // Reads: by id and by external id; a tenant's own key and a read-only key where they belong.
    let (status, shown) = get(&app, &key, &format!("/v1/tenants/{id}")).await;
    assert_eq!((status, shown["stripe_customer_id"].as_str()), (StatusCode::OK, Some(customer.as_str())));
    let (status, found) = get(&app, &key, "/v1/tenants?external_id=acme-1").await;
    assert_eq!((status, found["data"][0]["id"].as_str(), found["data"].as_array().map(Vec::len)), (StatusCode::OK, Some(id.as_str()), Some(1)));
    let (_, reader) = app.key(None, &[Scope::TenantsRead]).await;
    assert_eq!(get(&app, &reader, &format!("/v1/tenants/{id}")).await.0, StatusCode::OK);
    let (status, refused) = post(&app, &reader, &json!({"name": "X", "external_id": "x"})).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_scope")));
    let (_, tenant_key) = app.key(Some(Uuid::parse_str(&id).expect("uuid")), &Scope::ALL).await;
    let (status, refused) = get(&app, &tenant_key, &format!("/v1/tenants/{id}")).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("service_key_required")));
    assert_eq!(get(&app, &key, &format!("/v1/tenants/{}", Uuid::new_v4())).await.0, StatusCode::NOT_FOUND);

    // Bad input: a precise error naming the field, and nothing created.
    for (bad, field) in [
        (json!({"external_id": "y"}), None),
        (json!({"name": "Y", "external_id": "y", "billing_email": "not an address"}), Some("billing_email")),
        (json!({"name": " ", "external_id": "y"}), Some("name")),
        (json!({"name": "Y", "external_id": "y", "plan": "pro"}), None),
    ] {
        let (status, e) = post(&app, &key, &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {e}");
        if let Some(field) = field {
            assert_eq!(e["error"]["field"].as_str(), Some(field), "{e}");
        }
    }
    assert_eq!(customers_created(&sim).len(), 2, "no customer for refused input");

    // A change reaches Stripe and the record.
    let resp = app.http.patch(app.url(&format!("/v1/tenants/{id}"))).bearer_auth(&key).json(&json!({"billing_email": "finance@acme.test"})).send().await.expect("patch");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(sim.customer_json(&customer).expect("customer")["email"].as_str(), Some("finance@acme.test"));
    assert_eq!(get(&app, &key, &format!("/v1/tenants/{id}")).await.1["billing_email"].as_str(), Some("finance@acme.test"));

    // A checkout for the customer (which saves its card): the tenant's plan, subscription
    // and entitlements show.
    sim.card_on_customer(&customer);
    sim.checkout(Uuid::parse_str(&id).expect("uuid"), &customer, STARTER, None);
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
    let (_, shown) = get(&app, &key, &format!("/v1/tenants/{id}")).await;
    assert_eq!((shown["plan"].as_str(), shown["subscription"]["status"].as_str()), (Some("starter"), Some("active")), "{shown}");
    assert!(shown["entitlements"].as_array().is_some_and(|e| e.iter().any(|f| f["enabled"] == true)), "{shown}");
    // The list shows each tenant with its own standing (a page is read in one go, not per tenant).
    let globex = ids.first().expect("globex").clone();
    let (status, page) = get(&app, &key, "/v1/tenants?limit=100").await;
    let listed = |tenant: &str| page["data"].as_array().and_then(|d| d.iter().find(|t| t["id"] == tenant).cloned()).expect("listed");
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&listed(&id)["plan"], &listed(&id)["subscription"], &listed(&id)["entitlements"]), (&shown["plan"], &shown["subscription"], &shown["entitlements"]));
    assert_eq!((listed(&globex)["plan"].is_null(), listed(&globex)["subscription"].is_null()), (true, true), "{page}");

    // Audited with the key that asked.
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log WHERE tenant_id = $1 AND action LIKE 'tenants.%' ORDER BY id")
        .bind(Uuid::parse_str(&id).expect("uuid"))
        .fetch_all(&app.state.system_pool.0)
        .await
        .expect("audit");
    assert_eq!(actions, ["tenants.create", "tenants.change"]);
}

/// `ballast tenants create` as its own process (async: the simulator runs on this test's
/// runtime), optionally dying at a fault point as `kill -9` would leave it.
async fn create_process(app: &TestApp, external_id: &str, fault: Option<&str>) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"));
    cmd.args(["tenants", "create", "--name", "Initech", "--external-id", external_id, "--email", "ops@initech.test", "--json"])
        .env_clear()
        .envs(&app.env)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(f) = fault {
        cmd.env("BALLAST_FAULT", f);
    }
    cmd.output().await.expect("run ballast")
}

#[tokio::test]
async fn a_crash_at_each_provisioning_step_neither_makes_a_second_customer_nor_loses_the_tenant() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = crate::dunning::app_with(&sim, &smtp).await;
    for (n, fault) in ["tenants.provision.after_insert", "tenants.provision.after_stripe"].iter().enumerate() {
        let external_id = format!("initech-{n}");
        let out = create_process(&app, &external_id, Some(fault)).await;
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains(fault), "{fault}: {}", String::from_utf8_lossy(&out.stderr));
        let kept: Option<(Uuid, Option<String>)> = sqlx::query_as("SELECT id, stripe_customer_id FROM tenants WHERE external_id = $1")
            .bind(&external_id)
            .fetch_optional(&app.state.system_pool.0)
            .await
            .expect("tenant");
        let (tenant, bound) = kept.unwrap_or_else(|| panic!("{fault}: the tenant was lost"));
        assert_eq!(bound, None, "{fault}: died before binding");

        let out = create_process(&app, &external_id, None).await;
        assert!(out.status.success(), "{fault}: the repeat: {}", String::from_utf8_lossy(&out.stderr));
        let shown: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(shown["id"].as_str(), Some(tenant.to_string().as_str()), "{fault}: the same tenant");
        let customer = shown["stripe_customer_id"].as_str().expect("bound").to_owned();
        assert_eq!(sim.customer_json(&customer).expect("at Stripe")["metadata"]["tenant_id"].as_str(), Some(tenant.to_string().as_str()));
    }
    assert_eq!(customers_created(&sim).len(), 2, "one Stripe customer per tenant, crash or not");
    // Operators find them by external id, and in the list.
    let cli = |args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ballast"));
        cmd.args(args).env_clear().envs(&app.env).env("PATH", std::env::var("PATH").unwrap_or_default());
        async move { cmd.output().await.expect("run ballast") }
    };
    let shown = cli(&["tenants", "show", "initech-1"]).await;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success() && text.contains("initech-1") && text.contains("plan: none"), "{text}");
    let listed = cli(&["tenants", "list", "--json"]).await;
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed["customers"].as_array().map(|l| l.iter().filter(|t| t["stripe_customer_id"].is_string()).count()), Some(2));
    let unknown = cli(&["tenants", "show", "nobody"]).await;
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("no tenant"), "{unknown:?}");
    app.drain().await;
    let welcomes = smtp.messages().iter().filter(|m| m.data.contains("Welcome")).count();
    assert_eq!(welcomes, 2, "one welcome email per tenant");
}

#[tokio::test]
async fn a_subscription_naming_its_tenant_binds_the_customer_and_releases_parked_events_and_held_usage() {
    let (sim, smtp) = (StripeSim::start().await, SmtpServer::start().await);
    let app = crate::dunning::app_with(&sim, &smtp).await;
    let tenant = app.tenant("unbound").await;
    // Usage counted while the tenant had no customer (its ledger rows wait to be reported).
    sqlx::query(
        "INSERT INTO usage_ledger (id, tenant_id, metric, usage_minute, quantity, flush_id, report_status)
         VALUES ($1, $2, 'api_calls', date_trunc('minute', now()), 7, 'held-test', 'pending')",
    )
    .bind(Uuid::now_v7())
    .bind(tenant)
    .execute(&app.state.system_pool.0)
    .await
    .expect("ledger row");
    let report = ballast::usage::flush::run(&app.state.usage_deps(), chrono::Utc::now(), true).await.expect("flush");
    assert_eq!((report.held, report.dead, report.reported), (1, 0, 0), "held back, not dead: {report:?}");

    // Only the invoice and subscription events arrive (the customer and checkout ones were
    // lost): the invoice, naming only the customer, waits; the subscription names the tenant.
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, None);
    let events = sim.take_events();
    let invoices: Vec<&Value> = events.iter().filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("invoice."))).collect();
    for e in &invoices {
        assert_eq!(app.deliver(e).await, 200);
    }
    app.drain().await;
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE status = 'unmatched'").fetch_one(&app.state.system_pool.0).await.expect("count");
    assert_eq!(parked as usize, invoices.len(), "the invoice events wait for the customer");
    let created = events.iter().find(|e| e["type"] == "customer.subscription.created").expect("subscription event");
    assert_eq!(app.deliver(created).await, 200);
    app.drain().await;

    let bound: Option<String> = sqlx::query_scalar("SELECT stripe_customer_id FROM tenants WHERE id = $1").bind(tenant).fetch_one(&app.state.system_pool.0).await.expect("tenant");
    assert_eq!(bound.as_deref(), Some(customer.as_str()), "the subscription's metadata bound the customer");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE status NOT IN ('processed', 'ignored')").fetch_one(&app.state.system_pool.0).await.expect("count");
    assert_eq!(left, 0, "the parked invoice events were released and applied");
    let paid: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices WHERE customer_id = $1 AND status = 'paid'").bind(&customer).fetch_one(&app.state.system_pool.0).await.expect("count");
    assert_eq!(paid, 1);

    // The held usage is reported once, now that there is a customer to bill.
    let report = ballast::usage::flush::run(&app.state.usage_deps(), chrono::Utc::now(), true).await.expect("flush");
    assert_eq!((report.held, report.reported), (0, 1), "{report:?}");
    ballast::usage::flush::run(&app.state.usage_deps(), chrono::Utc::now(), true).await.expect("flush");
    let at_stripe: Vec<(String, i64)> = sim.meter_events().into_values().map(|(_, c, v)| (c, v)).collect();
    assert_eq!(at_stripe, [(customer, 7)], "reported once, to the bound customer");
}
