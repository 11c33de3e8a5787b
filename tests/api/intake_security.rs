//! Intake security end to end: API keys and scopes on every key route, the tenant-isolation
//! suite over every route the router has (routes from `ballast::api::routes()`, tables from
//! the PostgreSQL catalogue), injection-shaped inputs, and the rate limiter on a manual clock.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast::api::{Auth, RouteSpec};
use ballast::auth::Scope;
use ballast::ratelimit::{Override, PolicyName, Subject};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

use crate::rls::{GLOBAL_TABLES, seed, tenant_column};
use crate::support::TestApp;

const ALL_SCOPES: [Scope; 8] = Scope::ALL;

async fn call(app: &TestApp, method: Method, path: &str, key: Option<&str>, tenant_header: Option<&str>, body: Option<serde_json::Value>) -> crate::support::checked_http::CheckedResponse {
    let mut req = app.http.request(method, app.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(t) = tenant_header {
        req = req.header("ballast-tenant", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("request")
}

async fn json_error(resp: crate::support::checked_http::CheckedResponse) -> (StatusCode, serde_json::Value) {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_else(|e| panic!("{status}: body is not JSON: {e}"));
    assert!(body.pointer("/error/code").is_some(), "{status}: not the error shape: {body}");
    (status, body)
}

#[tokio::test]
async fn key_routes_answer_401_403_404_as_json() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).spawn().await;
    let (a, b) = (app.tenant("A").await, app.tenant("B").await);
    let (_, read_key) = app.key(Some(a), &[Scope::EntitlementsRead]).await;
    let (revoked_id, revoked) = app.key(Some(a), &[Scope::EntitlementsRead]).await;
    let (_, service) = app.key(None, &[Scope::EntitlementsRead]).await;

    let (s, _) = json_error(call(&app, Method::GET, "/v1/entitlements", None, None, None).await).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "missing key");
    let forged = format!("bk_{}_{}", "a".repeat(12), "b".repeat(32));
    let (s, _) = json_error(call(&app, Method::GET, "/v1/entitlements", Some(&forged), None, None).await).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "unknown key");
    let out = app.cli(&["keys", "revoke", &revoked_id.to_string()]);
    assert!(out.status.success(), "revoke: {}", String::from_utf8_lossy(&out.stderr));
    let (s, _) = json_error(call(&app, Method::GET, "/v1/entitlements", Some(&revoked), None, None).await).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "revoked key");

    // Right key, wrong scope.
    let (s, body) = json_error(call(&app, Method::POST, "/v1/jobs", Some(&read_key), None, Some(serde_json::json!({"kind": "noop"}))).await).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "insufficient_scope");

    // A tenant key naming another tenant, or one that does not exist: the same 404.
    for other in [b, Uuid::new_v4()] {
        let (s, body) = json_error(call(&app, Method::GET, "/v1/entitlements", Some(&read_key), Some(&other.to_string()), None).await).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    }
    // A service-wide key must name a tenant; with one, it acts for it.
    let (s, _) = json_error(call(&app, Method::GET, "/v1/entitlements", Some(&service), None, None).await).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let resp = call(&app, Method::GET, "/v1/entitlements", Some(&service), Some(&b.to_string()), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["tenant"], b.to_string());

    // The CLI prints the key once and lists only prefixes; the audit log has both actions.
    let out = app.cli(&["keys", "create", "--tenant", &a.to_string(), "--scopes", "usage:write,jobs:write"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(printed.starts_with("bk_"), "{printed}");
    let listed = app.cli(&["keys", "list", "--json"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(!listed.contains(&printed) && !listed.contains(&read_key), "a key leaked into the listing");
    let bad = app.cli(&["keys", "create", "--scopes", "admin"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("unknown scope"));
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action IN ('keys.create', 'keys.revoke')")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("audit");
    assert!(audited >= 5, "{audited}");
}

/// Every tenant row of every tenant-scoped table, as JSON, for one tenant (system role). A
/// partition's rows are its table's: read through the table.
async fn snapshot(app: &TestApp, tenant: Uuid) -> BTreeMap<String, Vec<String>> {
    let system = &app.state.system_pool.0;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
    )
    .fetch_all(system)
    .await
    .expect("catalogue");
    let mut out = BTreeMap::new();
    for table in tables.into_iter().filter(|t| !GLOBAL_TABLES.iter().any(|(g, _)| g == t)) {
        let col = tenant_column(&table);
        let rows: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT to_jsonb(t)::text FROM {table} t WHERE {col} = $1 ORDER BY 1")))
                .bind(tenant)
                .fetch_all(system)
                .await
                .expect("rows");
        out.insert(table, rows);
    }
    out
}

/// What the suite sends to one route with A's key. A route missing here fails the test.
fn probe(spec: &RouteSpec) -> Option<(String, Option<serde_json::Value>)> {
    match (spec.method.as_str(), spec.path) {
        ("GET", "/healthz") | ("GET", "/readyz") | ("GET", "/metrics") => Some((spec.path.to_owned(), None)),
        ("POST", "/webhooks/stripe") => Some((spec.path.to_owned(), Some(serde_json::json!({"id": "evt_x", "type": "invoice.paid"})))),
        ("GET", "/v1/entitlements") => Some((spec.path.to_owned(), None)),
        ("GET", "/v1/entitlements/{feature}") => Some(("/v1/entitlements/feature_b".to_owned(), None)),
        ("POST", "/v1/usage") => Some((spec.path.to_owned(), Some(serde_json::json!({"items": [
            {"metric": "api_calls", "quantity": 1, "timestamp": chrono::Utc::now().to_rfc3339(), "idempotency_key": "iso-1"}]})))),
        ("GET", "/v1/usage") => Some((spec.path.to_owned(), None)),
        ("GET", "/v1/plans") | ("GET", "/v1/flags") | ("GET", "/openapi.json") => Some((spec.path.to_owned(), None)),
        ("POST", "/v1/slo/events") => Some((spec.path.to_owned(), Some(serde_json::json!({"events": []})))),
        ("POST", "/v1/webhook-endpoints") => Some((spec.path.to_owned(), Some(serde_json::json!({"url": "https://a.example/in", "event_types": ["x"]})))),
        ("GET", "/v1/webhook-endpoints") => Some((spec.path.to_owned(), None)),
        // B's endpoint has B's tenant id for its id (see the RLS seed).
        // B's delivery too (a message to that endpoint).
        ("DELETE", "/v1/webhook-endpoints/{id}")
        | ("POST", "/v1/webhook-endpoints/{id}/rotate")
        | ("POST", "/v1/webhook-endpoints/{id}/enable")
        | ("GET", "/v1/webhook-endpoints/{id}/deliveries")
        | ("POST", "/v1/webhook-endpoints/{id}/deliveries/{delivery}/resend") => Some((spec.path.replace("{id}", "%B%").replace("{delivery}", "%B%"), None)),
        ("GET", "/v1/jobs/{id}") => Some(("/v1/jobs/job_b".to_owned(), None)),
        ("POST", "/v1/jobs") => Some((spec.path.to_owned(), Some(serde_json::json!({"kind": "noop", "payload": {"sleep_ms": 0}})))),
        // Service-wide routes: a tenant's key is refused, naming B or not.
        ("POST", "/v1/tenants") => Some((spec.path.to_owned(), Some(serde_json::json!({"name": "x", "external_id": "iso-x"})))),
        ("GET", "/v1/tenants") => Some(("/v1/tenants?external_id=b".to_owned(), None)),
        ("GET", "/v1/tenants/{id}") | ("PATCH", "/v1/tenants/{id}") => Some(("/v1/tenants/%B%".to_owned(), Some(serde_json::json!({"name": "taken"})))),
        // The admin API: no API key reaches it, a tenant's least of all.
        ("GET", "/v1/admin/tenants") => Some((spec.path.to_owned(), None)),
        ("GET", "/v1/admin/tenants/{id}/timeline") | ("GET", "/v1/admin/tenants/{id}/usage") | ("GET", "/v1/admin/tenants/{id}/overrides") => {
            Some((spec.path.replace("{id}", "%B%"), None))
        }
        ("POST", "/v1/admin/tenants/{id}/overrides") => {
            Some((spec.path.replace("{id}", "%B%"), Some(serde_json::json!({"kind": "grant", "target": "sso", "reason": "iso probe"}))))
        }
        ("POST", "/v1/admin/tenants/{id}/support-sessions") => Some((spec.path.replace("{id}", "%B%"), Some(serde_json::json!({"reason": "iso probe"})))),
        ("GET", "/v1/admin/queues") | ("GET", "/v1/admin/dead-letters") | ("GET", "/v1/admin/runbooks") | ("GET", "/v1/admin/runs") | ("GET", "/v1/admin/operators") | ("GET", "/v1/admin/support-sessions") => {
            Some((spec.path.to_owned(), None))
        }
        ("POST", "/v1/admin/queues/{kind}/pause") | ("POST", "/v1/admin/queues/{kind}/resume") => Some((spec.path.replace("{kind}", "noop"), None)),
        ("GET", "/v1/admin/jobs/{id}") | ("GET", "/v1/admin/runs/{id}") => Some((spec.path.replace("{id}", "job_b"), None)),
        ("POST", "/v1/admin/dead-letters/retry") | ("POST", "/v1/admin/dead-letters/discard") => Some((spec.path.to_owned(), Some(serde_json::json!({"all": true, "execute": true})))),
        ("POST", "/v1/admin/runbooks/{name}/runs") => Some((spec.path.replace("{name}", "site-down"), Some(serde_json::json!({"execute": true})))),
        ("POST", "/v1/admin/operators") => Some((spec.path.to_owned(), Some(serde_json::json!({"name": "iso", "role": "admin"})))),
        ("POST", "/v1/admin/operators/{name}/disable") | ("POST", "/v1/admin/operators/{name}/rotate") => Some((spec.path.replace("{name}", "iso"), None)),
        ("DELETE", "/v1/admin/tenants/{id}/overrides/{override}") => Some((spec.path.replace("{id}", "%B%").replace("{override}", "%B%"), None)),
        ("DELETE", "/v1/admin/support-sessions/{id}") => Some((spec.path.replace("{id}", "%B%"), None)),
        _ => None,
    }
}

/// An api-only app with tenants A and B seeded in every table; returns B and a key of A's
/// with every scope.
async fn two_seeded_tenants() -> (TestApp, Uuid, String) {
    // The simulator answers the plan catalogue's price reads.
    let sim = crate::support::stripe_sim::StripeSim::start().await;
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).env("STRIPE_API_BASE", &sim.base_url).spawn().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    seed(&app.state.system_pool.0, a, "a").await;
    seed(&app.state.system_pool.0, b, "b").await;
    // Both on a priced plan with usage this month, so the usage route reads rows rather than
    // answering `no_plan` first: A has A_UNITS, B far more.
    for (tenant, units) in [(a, A_UNITS), (b, B_UNITS)] {
        sqlx::query("UPDATE entitlements SET plan_id = 'pro' WHERE tenant_id = $1").bind(tenant).execute(&app.state.system_pool.0).await.expect("plan");
        sqlx::query(
            "INSERT INTO usage_items (tenant_id, idempotency_key, metric, quantity, usage_minute, received_at) VALUES ($1, 'iso-units', 'api_calls', $2, now(), now())",
        )
        .bind(tenant)
        .bind(units)
        .execute(&app.state.system_pool.0)
        .await
        .expect("usage");
    }
    let (_, key_a) = app.key(Some(a), &ALL_SCOPES).await;
    (app, b, key_a)
}

/// This month's api_calls of A and of B in the isolation seed.
const A_UNITS: i64 = 3;
const B_UNITS: i64 = 7_000;

#[tokio::test]
async fn no_route_shows_or_changes_another_tenants_data() {
    let (app, b, key_a) = two_seeded_tenants().await;
    let b_before = snapshot(&app, b).await;
    assert!(b_before.values().all(|rows| !rows.is_empty()), "the seed must cover every table: {b_before:?}");
    let b_marks = [b.to_string(), "feature_b".to_owned(), "cus_b".to_owned(), "b@example.com".to_owned(), "evt_b".to_owned()];

    let routes = ballast::api::routes();
    assert!(routes.len() >= 5, "{routes:?}");
    for spec in &routes {
        let (path, body) = probe(spec).unwrap_or_else(|| panic!("route {} {} is not in the isolation suite: add a probe", spec.method, spec.path));
        let path = path.replace("%B%", &b.to_string());
        // A service-wide route is tried with A's key too: it must refuse a tenant's key; so
        // must every admin route.
        let key = matches!(spec.auth, Auth::Key(_) | Auth::ServiceKey(_) | Auth::Operator(_)).then_some(key_a.as_str());
        // As A, and as A trying to name B.
        for naming_b in [None, Some(b.to_string())] {
            let resp = call(&app, spec.method.clone(), &path, key, naming_b.as_deref(), body.clone()).await;
            let status = resp.status();
            let text = resp.text().await.expect("body");
            assert!(status != StatusCode::INTERNAL_SERVER_ERROR, "{} {path}: 500: {text}", spec.method);
            for mark in &b_marks {
                assert!(!text.contains(mark.as_str()), "{} {path} (naming B: {naming_b:?}) leaked {mark}: {text}", spec.method);
            }
            if naming_b.is_some() && matches!(spec.auth, Auth::Key(_)) {
                assert_eq!(status, StatusCode::NOT_FOUND, "{} {path}: a tenant key naming B must get 404", spec.method);
            }
            // A path naming one of B's objects (a job status, an endpoint) is not A's, with the
            // tenant header or without: such an answer carries no mark of B to catch otherwise.
            if matches!(spec.auth, Auth::Key(_)) && (path.contains(&b.to_string()) || path.contains("job_b")) {
                assert_eq!(status, StatusCode::NOT_FOUND, "{} {path} (naming B: {naming_b:?}): B's object must be 404 to A: {text}", spec.method);
            }
            // A's usage is A's rows only (a sum over every tenant's rows carries no mark either).
            if naming_b.is_none() && spec.method == Method::GET && spec.path == "/v1/usage" {
                let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                // (The POST probe's one unit of A's may have come first.)
                let used = body["metrics"]["api_calls"]["used"].as_i64();
                assert!(used.is_some_and(|u| (A_UNITS..=A_UNITS + 1).contains(&u)), "GET /v1/usage as A counts A's units only: {text}");
            }
            if matches!(spec.auth, Auth::ServiceKey(_)) {
                assert_eq!(status, StatusCode::FORBIDDEN, "{} {path}: a tenant's key on a service-wide route", spec.method);
            }
            if matches!(spec.auth, Auth::Operator(_)) {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{} {path}: an API key on an admin route", spec.method);
            }
        }
    }
    assert_eq!(snapshot(&app, b).await, b_before, "B's data changed");
}

#[tokio::test]
async fn injection_shaped_inputs_get_4xx_never_500_never_a_leak() {
    let (app, b, key_a) = two_seeded_tenants().await;
    let system = app.state.system_pool.0.clone();
    let nasty = ["' OR '1'='1", "1; DROP TABLE tenants;--", "%27%20OR%201%3D1--", "../../etc/passwd", "\\x00", "feature_b' --"];
    for spec in ballast::api::routes() {
        let key = matches!(spec.auth, Auth::Key(_)).then_some(key_a.as_str());
        for n in nasty {
            let path = spec.path.replace("{feature}", &urlencode(n));
            let body = (spec.method == Method::POST).then(|| serde_json::json!({"kind": n, "payload": {"x": n}, "idempotency_key": n}));
            for header in [None, Some(n)] {
                let resp = call(&app, spec.method.clone(), &path, key, header, body.clone()).await;
                let status = resp.status();
                let text = resp.text().await.expect("body");
                assert!(
                    status.is_client_error() || status.is_success() || (spec.path == "/readyz" && status == StatusCode::SERVICE_UNAVAILABLE),
                    "{} {path} header {header:?}: {status} {text}",
                    spec.method
                );
                assert!(!text.contains(&b.to_string()) && !text.contains("feature_b\""), "{} {path}: leak: {text}", spec.method);
            }
        }
    }
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&system).await.expect("tenants");
    assert_eq!(tenants, 2);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

const TIGHT: &str = "[key]\nlimit = 10\nwindow_secs = 60\n[tenant_writes]\nlimit = 3\nwindow_secs = 60\n[anonymous]\nlimit = 100\nwindow_secs = 60\n";

#[tokio::test]
async fn a_key_gets_exactly_its_limit_under_50_concurrent_requests_and_retry_after_is_right() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).manual_clock().limits(TIGHT).spawn().await;
    let a = app.tenant("A").await;
    let (_, key) = app.key(Some(a), &[Scope::EntitlementsRead]).await;
    let sends = (0..50).map(|_| call(&app, Method::GET, "/v1/entitlements", Some(&key), None, None));
    let answers = futures::future::join_all(sends).await;
    let ok = answers.iter().filter(|r| r.status() == StatusCode::OK).count();
    let limited: Vec<&crate::support::checked_http::CheckedResponse> = answers.iter().filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!((ok, limited.len()), (10, 40), "exactly the limit is admitted");
    let r = limited[0];
    // The clock did not move: the oldest admitted request leaves the window in exactly 60 s.
    assert_eq!(r.headers()["retry-after"], "60");
    assert_eq!(r.headers()["ratelimit-policy"], "\"key\";q=10;w=60");
    assert_eq!(r.headers()["ratelimit"], "\"key\";r=0;t=60");

    app.clock().advance(Duration::from_secs(59));
    let resp = call(&app, Method::GET, "/v1/entitlements", Some(&key), None, None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["policy"], "key");
    app.clock().advance(Duration::from_secs(1));
    assert_eq!(call(&app, Method::GET, "/v1/entitlements", Some(&key), None, None).await.status(), StatusCode::OK);

    // Writes also count per tenant, across the tenant's keys.
    let (_, w1) = app.key(Some(a), &[Scope::JobsWrite]).await;
    let (_, w2) = app.key(Some(a), &[Scope::JobsWrite]).await;
    let job = || Some(serde_json::json!({"kind": "noop"}));
    let statuses = [
        call(&app, Method::POST, "/v1/jobs", Some(&w1), None, job()).await.status(),
        call(&app, Method::POST, "/v1/jobs", Some(&w2), None, job()).await.status(),
        call(&app, Method::POST, "/v1/jobs", Some(&w1), None, job()).await.status(),
    ];
    assert_eq!(statuses, [StatusCode::ACCEPTED; 3]);
    let resp = call(&app, Method::POST, "/v1/jobs", Some(&w2), None, job()).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["policy"], "tenant_writes");

    // Blocks are aggregated per subject, not stored per request.
    let top = app.state.limiter.top_blocked(5).await.expect("blocks");
    let key_blocks: u64 = top.iter().filter(|(k, _)| k.starts_with("key|")).map(|(_, n)| *n).sum();
    assert_eq!(key_blocks, 41);
}

#[tokio::test]
async fn five_failed_credentials_ban_the_address_for_fifteen_minutes() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).manual_clock().spawn().await;
    let a = app.tenant("A").await;
    let (_, good) = app.key(Some(a), &[Scope::EntitlementsRead]).await;
    let bad = format!("bk_{}_{}", "z".repeat(12), "z".repeat(32));
    for i in 1..=5 {
        let resp = call(&app, Method::GET, "/v1/entitlements", Some(&bad), None, None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "failure {i}");
    }
    // Banned now, even with a valid key (the ban is on the address that was guessing).
    let resp = call(&app, Method::GET, "/v1/entitlements", Some(&good), None, None).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "900");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["policy"], "auth_failures");
    // The webhook route never checks the ban: Stripe's events are not shed.
    let webhook = app.post_webhook(b"{}".to_vec(), None).await;
    assert_eq!(webhook.status(), StatusCode::BAD_REQUEST);

    app.clock().advance(Duration::from_secs(899));
    assert_eq!(call(&app, Method::GET, "/v1/entitlements", Some(&good), None, None).await.status(), StatusCode::TOO_MANY_REQUESTS);
    app.clock().advance(Duration::from_secs(1));
    assert_eq!(call(&app, Method::GET, "/v1/entitlements", Some(&good), None, None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_override_raises_a_limit_and_expires_by_itself() {
    let limits = "[key]\nlimit = 2\nwindow_secs = 60\n";
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).manual_clock().limits(limits).spawn().await;
    let a = app.tenant("A").await;
    let (key_id, key) = app.key(Some(a), &[Scope::EntitlementsRead]).await;
    app.state
        .limiter
        .set_override(PolicyName::Key, &Subject::Key(key_id), Override::Allow, Duration::from_secs(60))
        .await
        .expect("override");
    for _ in 0..5 {
        assert_eq!(call(&app, Method::GET, "/v1/entitlements", Some(&key), None, None).await.status(), StatusCode::OK);
    }
    // Past the override (and the window): the policy's 2 apply again.
    app.clock().advance(Duration::from_secs(61));
    let statuses: Vec<StatusCode> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(call(&app, Method::GET, "/v1/entitlements", Some(&key), None, None).await.status());
        }
        v
    };
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);

    // The CLI sets and reverts overrides, audited.
    let subject = format!("key:{key_id}");
    let out = app.cli(&["limits", "override", "--policy", "key", "--subject", &subject, "--limit", "100", "--ttl", "10m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = app.cli(&["limits", "revert", "--policy", "key", "--subject", &subject]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("removed"));
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action IN ('limits.override', 'limits.revert')")
        .fetch_one(&app.state.system_pool.0)
        .await
        .expect("audit");
    assert_eq!(audited, 2);
}

#[tokio::test]
async fn with_redis_down_credential_routes_fail_closed_and_the_rest_fail_open() {
    let app = TestApp::builder().roles(&[ballast::app::Role::Api]).env("REDIS_URL", "redis://127.0.0.1:1/0").spawn().await;
    let a = app.tenant("A").await;
    let (_, key) = app.key(Some(a), &[Scope::EntitlementsRead]).await;
    let (s, body) = json_error(call(&app, Method::GET, "/v1/entitlements", Some(&key), None, None).await).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("rate_limiter_unavailable")));
    // Readiness is limited per IP and fails open: it answers, and says Redis is down.
    let resp = call(&app, Method::GET, "/readyz", None, None, None).await;
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    let stats = &app.state.limiter.stats;
    assert!(stats.failed_closed.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(stats.failed_open.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}
