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
    // The admin API is the console's listener's, never the public intake's.
    let on_intake = app.http.get(app.intake_url("/v1/admin/tenants")).bearer_auth(&vic).send().await.expect("send");
    assert_eq!(on_intake.status(), StatusCode::NOT_FOUND, "the public port does not serve the admin API");

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

/// The rest of the admin API: the bulk move of every Starter tenant, dry run first,
/// through a runbook run queued on the fleet; queues, a dead job with its secrets redacted,
/// dead letters retried and discarded (dry run unless execute); operators managed by admins;
/// an override and a support session taken back — each audited with the operator's name.
#[tokio::test]
async fn runbooks_jobs_dead_letters_and_operators_through_the_admin_api_held_to_roles_and_audited() {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let small = subscribe(&app, &sim, "Small", STARTER).await;
    subscribe(&app, &sim, "Tiny", STARTER).await;
    subscribe(&app, &sim, "Big", PRO).await;
    let pool = &app.state.system_pool;
    let (_, grace) = operators::add(pool, "grace", Role::Admin, "test").await.expect("admin");
    let (_, otto) = operators::add(pool, "otto", Role::Operator, "test").await.expect("operator");
    let (_, vic) = operators::add(pool, "vic", Role::Viewer, "test").await.expect("viewer");

    // Every Starter tenant to Pro: a dry run first (a viewer may ask for one), then executed.
    let move_run = |execute: bool| json!({"params": {"plan": "starter", "to_price": "price_pro_monthly"}, "execute": execute});
    let (status, queued) = app.call(Method::POST, "/v1/admin/runbooks/billing-bulk-move/runs", &vic, Some(move_run(false))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    app.drain().await;
    let (_, dry) = app.call(Method::GET, &format!("/v1/admin/runs/{}", queued["run"].as_str().expect("run")), &vic, None).await;
    assert_eq!((dry["state"].as_str(), dry["executed"].as_bool(), dry["report"]["cohort"].as_u64()), (Some("done"), Some(false), Some(2)), "{dry}");
    let (status, refused) = app.call(Method::POST, "/v1/admin/runbooks/billing-bulk-move/runs", &vic, Some(move_run(true))).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_role")));
    let (status, queued) = app.call(Method::POST, "/v1/admin/runbooks/billing-bulk-move/runs", &otto, Some(move_run(true))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    app.drain().await;
    let (_, done) = app.call(Method::GET, &format!("/v1/admin/runs/{}", queued["run"].as_str().expect("run")), &vic, None).await;
    assert_eq!((done["executed"].as_bool(), done["report"]["done"].as_u64(), done["actor"].as_str()), (Some(true), Some(2), Some("otto")), "{done}");
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
    let (_, starters) = app.call(Method::GET, "/v1/admin/tenants?plan=starter", &vic, None).await;
    assert_eq!(starters["customers"], json!([]), "no Starter tenant left");
    let (_, timeline) = app.call(Method::GET, &format!("/v1/admin/tenants/{small}/timeline?limit=50"), &vic, None).await;
    let moved = timeline["entries"].as_array().and_then(|e| e.iter().find(|e| e["summary"] == "bulk.move_price").cloned()).expect("in the timeline");
    assert_eq!(moved["actor"], "otto");
    let (_, runs) = app.call(Method::GET, "/v1/admin/runs?kind=billing.bulk_move", &vic, None).await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(2));
    let (_, pages) = app.call(Method::GET, "/v1/admin/runbooks", &vic, None).await;
    assert!(pages["runbooks"].as_array().is_some_and(|p| p.iter().any(|p| p["page"]["admin_job"] == "billing.bulk_move")), "{pages}");

    // A job that can never run, dead, its secret redacted; retried and discarded.
    let payload = json!({"sleep_ms": "not a number", "api_token": "s3cret-value", "nested": {"password": "hunter2"}});
    let dead_job = app.state.queue.enqueue(ballast::queue::EnqueueRequest::new("noop", payload)).await.expect("enqueue").id;
    app.drain().await;
    let (_, kinds) = app.call(Method::GET, "/v1/admin/queues", &vic, None).await;
    let noop = kinds["kinds"].as_array().and_then(|k| k.iter().find(|k| k["queue"]["kind"] == "noop").cloned()).expect("noop");
    assert_eq!(noop["dead"], 1, "{kinds}");
    let (status, shown) = app.call(Method::GET, &format!("/v1/admin/jobs/{}", dead_job.0), &vic, None).await;
    assert_eq!((status, shown["where"].as_str()), (StatusCode::OK, Some("dead")), "{shown}");
    // Its one attempt: when, how long, why.
    let attempt = &shown["history"][0];
    assert_eq!((shown["history"].as_array().map(Vec::len), attempt["attempt"].as_u64()), (Some(1), Some(1)), "{shown}");
    assert!(attempt["took_ms"].is_u64() && attempt["started_at"].is_string() && attempt["error"] == shown["last_error"], "{shown}");
    assert_eq!((shown["payload"]["api_token"].as_str(), shown["payload"]["nested"]["password"].as_str()), (Some("[redacted]"), Some("[redacted]")));
    let (_, listed) = app.call(Method::GET, "/v1/admin/dead-letters?kind=noop", &vic, None).await;
    assert!(!listed.to_string().contains("s3cret-value") && !listed.to_string().contains("hunter2"), "{listed}");
    assert_eq!(listed["total"], 1);
    let (status, _) = app.call(Method::POST, "/v1/admin/dead-letters/discard", &vic, Some(json!({"all": true, "kind": "noop", "execute": true}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "viewers do not act");
    let (_, would) = app.call(Method::POST, "/v1/admin/dead-letters/discard", &otto, Some(json!({"all": true, "kind": "noop"}))).await;
    assert_eq!((would["executed"].as_bool(), would["dead_letters"].as_array().map(Vec::len)), (Some(false), Some(1)), "{would}");
    let (_, still) = app.call(Method::GET, "/v1/admin/dead-letters?kind=noop", &vic, None).await;
    assert_eq!(still["total"], 1, "a dry run touches nothing");
    let (_, discarded) = app.call(Method::POST, "/v1/admin/dead-letters/discard", &otto, Some(json!({"all": true, "kind": "noop", "execute": true}))).await;
    assert_eq!(discarded["discarded"], 1, "{discarded}");
    let (_, bad) = app.call(Method::POST, "/v1/admin/dead-letters/retry", &otto, Some(json!({"execute": true}))).await;
    assert_eq!(bad["error"]["code"], "invalid_selection");

    // Operators: admins only.
    let (status, _) = app.call(Method::GET, "/v1/admin/operators", &otto, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, added) = app.call(Method::POST, "/v1/admin/operators", &grace, Some(json!({"name": "newbie", "role": "viewer"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let newbie = added["token"].as_str().expect("token").to_owned();
    let (status, _) = app.call(Method::GET, "/v1/admin/queues", &newbie, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.call(Method::POST, "/v1/admin/operators", &grace, Some(json!({"name": "newbie", "role": "admin"}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.call(Method::POST, "/v1/admin/operators/newbie/disable", &grace, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.call(Method::GET, "/v1/admin/queues", &newbie, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a disabled operator's token stops working");

    // An override and a support session taken back.
    let grant = json!({"kind": "grant", "target": "sso", "reason": "pilot"});
    let (_, set) = app.call(Method::POST, &format!("/v1/admin/tenants/{small}/overrides"), &otto, Some(grant)).await;
    let (status, ended) = app.call(Method::DELETE, &format!("/v1/admin/tenants/{small}/overrides/{}", set["id"].as_str().expect("id")), &otto, None).await;
    assert_eq!((status, ended["ended_by"].as_str()), (StatusCode::OK, Some("otto")), "{ended}");
    let (_, opened) = app.call(Method::POST, &format!("/v1/admin/tenants/{small}/support-sessions"), &otto, Some(json!({"reason": "ticket 7"}))).await;
    let (_, sessions) = app.call(Method::GET, &format!("/v1/admin/support-sessions?tenant={small}"), &vic, None).await;
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(1));
    let (status, _) = app.call(Method::DELETE, &format!("/v1/admin/support-sessions/{}", opened["session"]["id"].as_str().expect("id")), &otto, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.call(Method::GET, "/v1/entitlements", opened["token"].as_str().expect("token"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked session reads nothing");

    let audited: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, actor FROM audit_log WHERE action IN ('jobs.discard', 'operators.add', 'operators.disable', 'overrides.revoke', 'support.revoke') ORDER BY id",
    )
    .fetch_all(&pool.0)
    .await
    .expect("audit");
    let actors: Vec<(&str, &str)> = audited.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert!(actors.contains(&("jobs.discard", "otto")) && actors.contains(&("operators.disable", "grace")) && actors.contains(&("support.revoke", "otto")), "{actors:?}");
}
