//! Operators and overrides (issue 39): operators added with a role and a token shown once,
//! each CLI command signed in by its token and held to its role, audited by name (a shell
//! without one as `local:`), disabled and rotated tokens refused; overrides of what billing
//! grants — a feature for 14 days with a reason, a usage limit raised — visible in entitlement
//! reads with their source and expiry, revoked, and ended by the expiry sweep, which drops the
//! cached answer.

use ballast::auth::Scope;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::TestApp;
use crate::support::stripe_sim::{STARTER, StripeSim};

fn run(app: &TestApp, token: Option<&str>, args: &[&str]) -> (bool, Value, String) {
    let mut extra = vec![("BALLAST_ACTOR", "ada")];
    if let Some(t) = token {
        extra.push(("BALLAST_OPERATOR_TOKEN", t));
    }
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = app.cli_with(&all, &extra);
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), value, String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn actors(app: &TestApp, action: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT actor FROM audit_log WHERE action = $1 ORDER BY at").bind(action).fetch_all(&app.state.system_pool.0).await.expect("audit")
}

#[tokio::test]
async fn operators_sign_in_by_token_are_held_to_their_role_and_audited_by_name() {
    let app = TestApp::builder().roles(&[]).spawn().await;
    // A local shell (the database's credentials, no token) adds the first admin.
    let (ok, added, err) = run(&app, None, &["operators", "add", "grace", "--role", "admin"]);
    assert!(ok, "{err}");
    let admin = added["token"].as_str().expect("token shown once").to_owned();
    assert!(admin.starts_with("bo_"), "{admin}");
    assert_eq!(actors(&app, "operators.add").await, ["local:ada"]);
    // The admin adds a viewer and an operator, audited by its own name.
    let (ok, viewer, err) = run(&app, Some(&admin), &["operators", "add", "vic", "--role", "viewer"]);
    assert!(ok, "{err}");
    let viewer = viewer["token"].as_str().expect("token").to_owned();
    let (_, op, _) = run(&app, Some(&admin), &["operators", "add", "otto", "--role", "operator"]);
    let op = op["token"].as_str().expect("token").to_owned();
    assert_eq!(actors(&app, "operators.add").await, ["local:ada", "grace", "grace"]);
    // Stored as hashes only.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM operators WHERE position(convert_to($1, 'UTF8') IN token_hash) > 0 OR token_prefix = $1")
        .bind(&admin)
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("count");
    assert_eq!(stored, 0);

    // A viewer reads but may not manage operators or act.
    let (ok, listed, _) = run(&app, Some(&viewer), &["operators", "list"]);
    assert!(ok);
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    assert!(!listed.to_string().contains(&admin[3..]), "never a token in a list");
    let (ok, _, err) = run(&app, Some(&viewer), &["operators", "add", "mallory", "--role", "admin"]);
    assert!(!ok && err.contains("vic is a viewer") && err.contains("admin role"), "{err}");
    let (ok, _, err) = run(&app, Some(&op), &["operators", "disable", "grace"]);
    assert!(!ok && err.contains("admin role"), "{err}");

    // Disabled: refused at once; rotated: the new token works, the old one does not.
    let (ok, _, _) = run(&app, Some(&admin), &["operators", "disable", "vic"]);
    assert!(ok);
    let (ok, _, err) = run(&app, Some(&viewer), &["operators", "list"]);
    assert!(!ok && err.contains("BALLAST_OPERATOR_TOKEN"), "{err}");
    let (ok, rotated, _) = run(&app, Some(&admin), &["operators", "rotate", "vic"]);
    assert!(ok);
    let renewed = rotated["token"].as_str().expect("token").to_owned();
    assert!(run(&app, Some(&renewed), &["operators", "list"]).0);
    assert!(!run(&app, Some(&viewer), &["operators", "list"]).0);
    let (ok, _, err) = run(&app, Some("bo_nottherightshape"), &["operators", "list"]);
    assert!(!ok && err.contains("not a live operator token"), "{err}");
}

struct Subscribed {
    app: TestApp,
    _sim: StripeSim,
    tenant: uuid::Uuid,
    key: String,
    operator: String,
}

/// A Starter tenant (through the simulator), a key reading its entitlements and reporting
/// usage, and an operator's token.
async fn subscribed() -> Subscribed {
    let sim = StripeSim::start().await;
    let app = TestApp::builder().env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let tenant = app.tenant("Acme").await;
    let customer = sim.customer(tenant, true);
    sim.checkout(tenant, &customer, STARTER, None);
    for e in sim.take_events() {
        assert_eq!(app.deliver(&e).await, 200);
    }
    app.drain().await;
    let (_, key) = app.key(Some(tenant), &[Scope::EntitlementsRead, Scope::UsageWrite]).await;
    let (_, added, err) = run(&app, None, &["operators", "add", "otto", "--role", "operator"]);
    let operator = added["token"].as_str().unwrap_or_else(|| panic!("{err}")).to_owned();
    Subscribed { app, _sim: sim, tenant, key, operator }
}

async fn feature(s: &Subscribed, name: &str) -> Value {
    let (status, body) = s.app.call(reqwest::Method::GET, &format!("/v1/entitlements/{name}"), &s.key, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entitlement"].clone()
}

#[tokio::test]
async fn a_feature_granted_for_14_days_shows_as_an_override_until_revoked_or_expired() {
    let s = subscribed().await;
    let tenant = s.tenant.to_string();
    // Starter has no SSO: read once, so the cache holds the plan's answer.
    assert_eq!((feature(&s, "sso").await["enabled"].as_bool(), feature(&s, "sso").await["source"].as_str()), (Some(false), Some("plan")));
    let (ok, set, err) = run(&s.app, Some(&s.operator), &["overrides", "set", "--tenant", &tenant, "--grant", "sso", "--for", "14d", "--reason", "sales-assist pilot"]);
    assert!(ok, "{err}");
    let sso = feature(&s, "sso").await;
    assert_eq!((sso["enabled"].as_bool(), sso["source"].as_str()), (Some(true), Some("override")), "the cache was dropped: {sso}");
    let expires: chrono::DateTime<chrono::Utc> = sso["expires_at"].as_str().expect("expiry").parse().expect("time");
    assert!((expires - (chrono::Utc::now() + chrono::Duration::days(14))).num_seconds().abs() < 60, "{expires}");
    assert_eq!(set["reason"], "sales-assist pilot");
    let audit: (String, Value) = sqlx::query_as("SELECT actor, params FROM audit_log WHERE action = 'overrides.set'").fetch_one(&s.app.state.system_pool.0).await.expect("audit");
    assert_eq!((audit.0.as_str(), audit.1["reason"].as_str(), audit.1["target"].as_str()), ("otto", Some("sales-assist pilot"), Some("sso")));
    // A viewer may not set one; a reason is required; a feature must exist.
    let (ok, _, err) = run(&s.app, None, &["overrides", "set", "--tenant", &tenant, "--grant", "teleport", "--reason", "why not"]);
    assert!(!ok && err.contains("\"teleport\" is no feature"), "{err}");
    let (ok, _, err) = run(&s.app, None, &["overrides", "set", "--tenant", &tenant, "--grant", "sso", "--reason", ""]);
    assert!(!ok && err.contains("reason"), "{err}");

    // Revoked: the plan's answer again, at once.
    let id = set["id"].as_str().expect("id").to_owned();
    let (ok, _, err) = run(&s.app, Some(&s.operator), &["overrides", "revoke", "--tenant", &tenant, &id]);
    assert!(ok, "{err}");
    assert_eq!(feature(&s, "sso").await["source"], "plan");

    // Expired: the sweep ends it (as `expiry`, audited) and drops the cached answer.
    let (_, again, _) = run(&s.app, Some(&s.operator), &["overrides", "set", "--tenant", &tenant, "--grant", "sso", "--for", "1h", "--reason", "one more hour"]);
    assert_eq!(feature(&s, "sso").await["source"], "override");
    sqlx::query("UPDATE entitlement_overrides SET expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(again["id"].as_str().expect("id"))
        .execute(&s.app.state.system_pool.0)
        .await
        .expect("age it");
    assert_eq!(feature(&s, "sso").await["source"], "override", "cached until the sweep (or the cached expiry) ends it");
    let out = s.app.cli(&["maintenance", "run", "overrides.expiry"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sso = feature(&s, "sso").await;
    assert_eq!((sso["enabled"].as_bool(), sso["source"].as_str()), (Some(false), Some("plan")), "{sso}");
    assert_eq!(actors(&s.app, "overrides.expire").await, ["expiry"]);
    let (_, listed, _) = run(&s.app, Some(&s.operator), &["overrides", "list", "--tenant", &tenant, "--all"]);
    let ended_by: Vec<&str> = listed.as_array().expect("list").iter().filter_map(|o| o["ended_by"].as_str()).collect();
    assert_eq!(ended_by, ["expiry", "otto"], "{listed}");
}

#[tokio::test]
async fn a_raised_usage_limit_admits_what_the_plan_would_refuse() {
    let s = subscribed().await;
    let tenant = s.tenant.to_string();
    let post = |qty: i64, key: &str| {
        let body = serde_json::json!({"items": [{"metric": "api_calls", "quantity": qty, "timestamp": chrono::Utc::now().to_rfc3339(), "idempotency_key": key}]});
        let req = s.app.http.post(s.app.url("/v1/usage")).bearer_auth(&s.key).json(&body);
        async move { req.send().await.expect("post").status() }
    };
    // Starter allows 10,000 calls a month.
    assert_eq!(post(10_000, "a").await, StatusCode::OK);
    assert_eq!(post(1, "b").await, StatusCode::TOO_MANY_REQUESTS);
    let (ok, _, err) = run(&s.app, Some(&s.operator), &["overrides", "set", "--tenant", &tenant, "--usage-limit", "api_calls=20000", "--reason", "launch week"]);
    assert!(ok, "{err}");
    assert_eq!(post(1, "c").await, StatusCode::OK);
    let (ok, _, err) = run(&s.app, Some(&s.operator), &["overrides", "set", "--tenant", &tenant, "--usage-limit", "api_calls=ten", "--reason", "typo"]);
    assert!(!ok && err.contains("not a whole number"), "{err}");
}

/// Support access: an operator opens a read-only session as the tenant; its token reads the
/// tenant's entitlements and usage, never writes, never reaches another tenant, is audited at
/// every use under the operator's name (and shows in the timeline), and stops at its revoke.
#[tokio::test]
async fn a_support_session_reads_as_the_tenant_never_writes_and_every_use_is_audited() {
    let s = subscribed().await;
    let tenant = s.tenant.to_string();
    let (_, viewer, _) = run(&s.app, None, &["operators", "add", "vic", "--role", "viewer"]);
    let viewer = viewer["token"].as_str().expect("token").to_owned();
    let (ok, _, err) = run(&s.app, Some(&viewer), &["tenants", "view-as", &tenant, "--reason", "ticket 4711"]);
    assert!(!ok && err.contains("operator role"), "a viewer may not open one: {err}");
    let (ok, opened, err) = run(&s.app, Some(&s.operator), &["tenants", "view-as", &tenant, "--reason", "ticket 4711", "--ttl", "30m"]);
    assert!(ok, "{err}");
    let token = opened["token"].as_str().expect("token").to_owned();
    let session = opened["session"]["id"].as_str().expect("id").to_owned();
    assert!(token.starts_with("bs_"));

    let (status, body) = s.app.call(reqwest::Method::GET, "/v1/entitlements", &token, None).await;
    assert_eq!((status, body["tenant"].as_str()), (StatusCode::OK, Some(tenant.as_str())), "{body}");
    let (status, _) = s.app.call(reqwest::Method::GET, "/v1/usage", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    // Never a write, whatever the route.
    let item = serde_json::json!({"items": [{"metric": "api_calls", "quantity": 1, "timestamp": chrono::Utc::now().to_rfc3339(), "idempotency_key": "s"}]});
    let (status, body) = s.app.call(reqwest::Method::POST, "/v1/usage", &token, Some(item)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let endpoint = serde_json::json!({"url": "https://example.com/hook", "event_types": ["x"]});
    let (status, _) = s.app.call(reqwest::Method::POST, "/v1/webhook-endpoints", &token, Some(endpoint)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Not another tenant's data.
    let other = s.app.tenant("Other").await;
    let r = s.app.http.get(s.app.url("/v1/entitlements")).bearer_auth(&token).header("Ballast-Tenant", other.to_string()).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let reads: Vec<(String, Value)> = sqlx::query_as("SELECT actor, params FROM audit_log WHERE action = 'support.read' ORDER BY at")
        .fetch_all(&s.app.state.system_pool.0)
        .await
        .expect("audit");
    assert!(reads.len() >= 2 && reads.iter().all(|(actor, p)| actor == "otto" && p["session"] == session.as_str()), "{reads:?}");
    assert_eq!(reads[0].1["route"], "/v1/entitlements");
    let out = s.app.cli(&["--json", "tenants", "show", &tenant, "--timeline"]);
    let timeline: Value = serde_json::from_slice(&out.stdout).expect("json");
    let summaries: Vec<&str> = timeline["entries"].as_array().expect("entries").iter().filter_map(|e| e["summary"].as_str()).collect();
    assert!(summaries.contains(&"support.open") && summaries.contains(&"support.read"), "{summaries:?}");

    // Revoked: refused at once.
    let (ok, _, err) = run(&s.app, Some(&s.operator), &["tenants", "view-as-revoke", &session]);
    assert!(ok, "{err}");
    let (status, _) = s.app.call(reqwest::Method::GET, "/v1/entitlements", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, listed, _) = run(&s.app, None, &["tenants", "view-as-sessions", "--tenant", &tenant]);
    assert_eq!(listed[0]["revoked_by"], "otto", "{listed}");
}

/// What a tenant actually does: units per metric per day (flushed and not yet flushed) with the
/// month's running total against its limit (an override's when raised), and its app's feature
/// checks per day, counted in memory and written in one statement.
#[tokio::test]
async fn a_tenants_usage_per_day_shows_against_its_limit_with_the_features_it_checked() {
    let s = subscribed().await;
    let tenant = s.tenant.to_string();
    let now = chrono::Utc::now();
    let yesterday = now - chrono::Duration::days(1);
    let post = |qty: i64, at: chrono::DateTime<chrono::Utc>, key: &str| {
        let body = serde_json::json!({"items": [{"metric": "api_calls", "quantity": qty, "timestamp": at.to_rfc3339(), "idempotency_key": key}]});
        let req = s.app.http.post(s.app.url("/v1/usage")).bearer_auth(&s.key).json(&body);
        async move { req.send().await.expect("post").status() }
    };
    assert_eq!(post(5, yesterday, "y").await, StatusCode::OK);
    let flushed = s.app.cli_async(&["usage", "flush", "--all"], &[]).await;
    assert!(flushed.status.success(), "{}", String::from_utf8_lossy(&flushed.stderr));
    // Today's units are not flushed yet: they count all the same.
    assert_eq!(post(7, now, "t").await, StatusCode::OK);
    for _ in 0..3 {
        feature(&s, "sso").await;
    }
    feature(&s, "api_access").await;
    assert_eq!(s.app.state.tenant_activity.write_checks(&s.app.state.system_pool).await.expect("write"), 2);
    let (ok, _, err) = run(&s.app, Some(&s.operator), &["overrides", "set", "--tenant", &tenant, "--usage-limit", "api_calls=20000", "--reason", "launch week"]);
    assert!(ok, "{err}");

    let (ok, report, err) = run(&s.app, None, &["tenants", "usage", &tenant, "--days", "7"]);
    assert!(ok, "{err}");
    let day = |d: chrono::DateTime<chrono::Utc>| d.date_naive().to_string();
    let usage = report["usage"].as_array().expect("usage");
    let on = |d: &str| usage.iter().find(|u| u["day"] == d && u["metric"] == "api_calls").cloned().unwrap_or(Value::Null);
    assert_eq!(on(&day(yesterday))["quantity"], 5, "{report}");
    assert_eq!(on(&day(now))["quantity"], 7, "{report}");
    let same_month = yesterday.date_naive().format("%Y%m").to_string() == now.date_naive().format("%Y%m").to_string();
    assert_eq!(on(&day(now))["month_to_date"], if same_month { 12 } else { 7 }, "{report}");
    assert_eq!(report["limits"]["api_calls"]["limit"], 20000, "the override's limit: {report}");
    let checks: Vec<(String, i64)> = report["features"].as_array().expect("features").iter().map(|f| (f["feature"].as_str().unwrap_or_default().to_owned(), f["checks"].as_i64().unwrap_or(0))).collect();
    assert_eq!(checks, [("api_access".to_owned(), 1), ("sso".to_owned(), 3)]);
}
