//! The admin API (issue 39): the "done when" through `/v1/admin/…` with operator
//! tokens — the ten highest-MRR tenants in dunning, a tenant's timeline and daily usage, a
//! read-only support session, a feature granted for 14 days with a reason — each change
//! audited with the operator's name and in the tenant's timeline; roles held; no API key
//! reaches it. Every answer is checked against the OpenAPI document by the test client.

use ballast::auth::Scope;
use ballast::auth::operators::{self, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::TestApp;
use crate::support::stripe_sim::{PRO, STARTER, StripeSim};

async fn subscribe(app: &TestApp, sim: &StripeSim, name: &str, price: (&'static str, &'static str, i64)) -> uuid::Uuid {
    let tenant = app.tenant(name).await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, price, None);
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
    tenant
}

#[tokio::test]
async fn an_operator_finds_reads_supports_and_grants_through_the_admin_api_audited_by_name() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let pro = subscribe(&app, &sim, "Big", PRO).await;
    let starter = subscribe(&app, &sim, "Small", STARTER).await;
    subscribe(&app, &sim, "Calm", PRO).await;
    for (tenant, invoice) in [(pro, "in_big"), (starter, "in_small")] {
        sqlx::query("INSERT INTO dunning_cases (tenant_id, invoice_id, customer_id, opened_at) VALUES ($1, $2, 'cus_x', now())")
            .bind(tenant)
            .bind(invoice)
            .execute(&app.state.system_pool.0)
            .await
            .expect("case");
    }
    let pool = &app.state.system_pool;
    let (_, otto) = operators::add(pool, "otto", Role::Operator, "test").await.expect("operator");
    let (_, vic) = operators::add(pool, "vic", Role::Viewer, "test").await.expect("viewer");
    let (_, tenant_key) = app.key(Some(pro), &[Scope::EntitlementsRead]).await;

    // The ten highest-MRR tenants in dunning.
    let (status, page) = app.call(Method::GET, "/v1/admin/tenants?dunning=open&limit=10", &vic, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let names: Vec<&str> = page["customers"].as_array().expect("customers").iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["Big", "Small"], "{page}");
    assert_eq!(page["customers"][0]["mrr"], json!({"usd": PRO.2}));

    // Its timeline and daily usage.
    let (status, timeline) = app.call(Method::GET, &format!("/v1/admin/tenants/{pro}/timeline?limit=50"), &vic, None).await;
    assert_eq!(status, StatusCode::OK, "{timeline}");
    assert!(timeline["entries"].as_array().is_some_and(|e| e.iter().any(|e| e["kind"] == "stripe_event")), "{timeline}");
    let (status, usage) = app.call(Method::GET, &format!("/v1/admin/tenants/{pro}/usage?days=7"), &vic, None).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert!(usage["limits"]["api_calls"]["limit"].is_i64(), "{usage}");

    // A viewer reads but may not act; an API key never reaches the admin API.
    let grant = json!({"kind": "grant", "target": "sso", "reason": "sales-assist pilot", "expires_at": (chrono::Utc::now() + chrono::Duration::days(14)).to_rfc3339()});
    let (status, refused) = app.call(Method::POST, &format!("/v1/admin/tenants/{pro}/overrides"), &vic, Some(grant.clone())).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_role")), "{refused}");
    let (status, _) = app.call(Method::GET, "/v1/admin/tenants", &tenant_key, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A read-only support session as the tenant.
    let (status, opened) = app.call(Method::POST, &format!("/v1/admin/tenants/{pro}/support-sessions"), &otto, Some(json!({"reason": "ticket 4711", "ttl_secs": 600}))).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let session = opened["token"].as_str().expect("token").to_owned();
    let (status, seen) = app.call(Method::GET, "/v1/entitlements", &session, None).await;
    assert_eq!((status, seen["tenant"].as_str()), (StatusCode::OK, Some(pro.to_string().as_str())));

    // A feature for 14 days with a reason: the tenant's app sees it at once.
    let (status, set) = app.call(Method::POST, &format!("/v1/admin/tenants/{pro}/overrides"), &otto, Some(grant)).await;
    assert_eq!(status, StatusCode::CREATED, "{set}");
    let (_, sso) = app.call(Method::GET, "/v1/entitlements/sso", &tenant_key, None).await;
    assert_eq!((sso["entitlement"]["enabled"].as_bool(), sso["entitlement"]["source"].as_str()), (Some(true), Some("override")), "{sso}");
    let (status, bad) = app.call(Method::POST, &format!("/v1/admin/tenants/{pro}/overrides"), &otto, Some(json!({"kind": "grant", "target": "teleport", "reason": "x y z"}))).await;
    assert_eq!((status, bad["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_override")));
    let (_, listed) = app.call(Method::GET, &format!("/v1/admin/tenants/{pro}/overrides"), &vic, None).await;
    assert_eq!(listed["overrides"][0]["created_by"], "otto", "{listed}");

    // Every change is audited with the operator's name, and in the tenant's timeline.
    let audited: Vec<(String, String)> =
        sqlx::query_as("SELECT action, actor FROM audit_log WHERE tenant_id = $1 AND action IN ('overrides.set', 'support.open', 'support.read') ORDER BY at")
            .bind(pro)
            .fetch_all(&pool.0)
            .await
            .expect("audit");
    let expected = [("support.open", "otto"), ("support.read", "otto"), ("overrides.set", "otto")].map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(audited, expected);
    let (_, timeline) = app.call(Method::GET, &format!("/v1/admin/tenants/{pro}/timeline?limit=5"), &vic, None).await;
    let summaries: Vec<&str> = timeline["entries"].as_array().expect("entries").iter().filter_map(|e| e["summary"].as_str()).collect();
    assert_eq!(&summaries[..3], ["overrides.set", "support.read", "support.open"], "{timeline}");
    let _: Value = timeline;
}
